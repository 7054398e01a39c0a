import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._mechanics import momentum
from .._term import LagrangianTerm, split_state
from .base import (
    AbstractVariationalSolver,
    check_stiffness,
    forces,
    lagrangian_term,
    linearized_forces,
    newton_root,
    pattern_of,
    time_direction,
)
from .constrained import constrained_init, constrained_step, is_constrained


class VariationalMidpoint(AbstractVariationalSolver):
    r"""The midpoint variational integrator, for any regular Lagrangian `L(q, q̇)`.

    Discretizes the action with `L_d(q₀, q₁) = h L((q₀ + q₁)/2, (q₁ − q₀)/h)` and
    steps the discrete Euler–Lagrange equations in position–momentum form:

        p₀ = ∂L/∂q̇(m, u) − ½ h (∂L/∂q(m, u) + Q)      solved for q₁ (Newton)
        p₁ = p₀ + h (∂L/∂q(m, u) + Q)
        p₁ = ∂L/∂q̇(q₁, q̇₁)                              solved for q̇₁ (Newton)

    with `m = (q₀ + q₁)/2`, `u = (q₁ − q₀)/h` and an optional generalized force `Q`
    at the midpoint (the discrete Lagrange–d'Alembert principle). The discrete
    momentum `p` is carried from step to step in the solver state.

    Properties: 2nd order; symmetric; symplectic in `(q, p)`; for an unforced `L`
    invariant under a symmetry, the Noether momentum is conserved to round-off
    (whatever the Newton tolerance, since `p₁ − p₀ = h ∂L/∂q`); energy error bounded
    over exponentially long times instead of drifting. Needs `∂²L/∂q̇²` invertible
    along the motion.

    Cost per step: two chord-Newton solves of size `dof`, each with one Jacobian
    that comes with the first residual (one jet of `L`: for an
    `AbstractJetLagrangian` about the cost of a gradient, otherwise `2·dof`, for
    the velocity solve `dof`, forward-over-reverse products) and typically 1–3
    further gradient evaluations: the position solve starts from a Taylor guess
    with an acceleration estimate carried in the solver state (error O(h³)); the
    velocity solve is linear, one further evaluation, when `L` is quadratic in
    `q̇`; and one gradient for `p₁`. For higher order at a similar cost
    per step see `GaussLegendre`. Gradients through the step use the implicit
    function theorem, exact for any number of iterations.

    A step is accepted only if both Newton solves converged to tolerance within
    `max_steps` iterations, their Jacobians were regular (the velocity solve's is the
    mass matrix) and the step resolves the motion (see `AbstractSymmetricSolver`);
    otherwise it fails with a code that `lagrax.simulate` reports as
    `lagrax.RESULTS.newton_failure`, `singular_mass_matrix` or `step_too_large`
    (`diffeqsolve` itself raises, or with `throw=False` returns
    `nonlinear_max_steps_reached`, `singular` or `nonlinear_divergence`). Takes a
    `lagrax.LagrangianTerm`. Fixed steps only (no error estimate); dense output is
    linear.

    **Holonomic constraints.** On a `LagrangianTerm(L, constraint=g)` (or
    `lagrax.simulate(..., constraint=g)`) the step is RATTLE's form of the rule,
    for any regular `L`:

        p₀ = p − ½h F + ½h G₀ᵀλ,   g(q₁) = 0,   p₁ = p + ½h F − ½h G₁ᵀμ,   G₁ q̇₁ = 0

    with `(F, p)` at the midpoint and `G = ∂g/∂q`: one Newton solve for `q₁` and
    `λ`, one for `q̇₁` and `μ`. Every step ends on the constraints and their
    tangent space to the Newton tolerance (below 1e-12 in float64); 2nd order,
    symmetric and symplectic on the constraint manifold (see
    `lagrax._solver.constrained` for the equations, shared with `GaussLegendre`).
    Its steps are checked as above, except for the stiffness bound.

    ??? cite "Reference"

        ```bibtex
        @article{marsden2001discrete,
            title={Discrete mechanics and variational integrators},
            author={Marsden, Jerrold E. and West, Matthew},
            journal={Acta Numerica},
            volume={10},
            pages={357--514},
            year={2001}
        }
        ```
    """

    rtol: float | None = None
    atol: float | None = None
    max_steps: int = eqx.field(default=20, static=True)

    def order(self, terms):
        return 2

    def init(self, terms, t0, t1, y0, args):
        if is_constrained(terms):
            return constrained_init(self, terms, y0)
        q0, v0 = split_state(y0, "VariationalMidpoint")
        lagrangian = lagrangian_term(terms).lagrangian
        # No acceleration estimate yet: the first guess is q₀ + h q̇₀, which costs
        # the first step an iteration or two but keeps `init` to one gradient.
        return momentum(lagrangian, q0, v0), jnp.zeros_like(v0)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        if is_constrained(terms):
            return constrained_step(self, 1, terms, t0, t1, y0, solver_state, made_jump)
        q0, v0 = split_state(y0, "VariationalMidpoint")
        term = lagrangian_term(terms)
        lagrangian = term.lagrangian
        # The state is the discrete momentum p₀ and an estimate of q̈ near t₀, which
        # only feeds the predictor.
        p0, a0 = jax.lax.cond(
            made_jump, lambda: self.init(terms, t0, t1, y0, args), lambda: solver_state
        )
        control, direction = time_direction(terms, t0, t1)
        h = jnp.asarray(control, q0.dtype)
        # Under `vmap`, a solve that has finished keeps stepping with h = 0 (its
        # result discarded) while the others go on. A zero step would divide by
        # zero and poison the others' gradients through 0 · NaN: it takes a tiny,
        # well-posed step instead, and returns its input.
        idle = h == 0
        h = jnp.where(idle, jnp.sqrt(jnp.finfo(q0.dtype).eps), h)
        t_mid = direction * (t0 + 0.5 * (t1 - t0))
        equations = MidpointEquations(term, t_mid, q0, p0, h)
        # Taylor with the carried acceleration estimate: an O(h³) guess.
        q1, q_result, jacobian, _ = newton_root(
            # custom_root hashes its function: a closure, not a bound method.
            lambda x: equations.residual(x),
            q0 + h * (v0 + 0.5 * h * a0),
            pattern=pattern_of(lagrangian),
            linearize=equations.linearize,
            **self.newton_options(q0.dtype),
        )
        p1 = p0 + h * equations.forces(q1)[0]
        u = (q1 - q0) / h
        # 2u − q̇₀ extrapolates the velocity to t₁ with an O(h²) error.
        v1, v_result, mass = self.velocity(lagrangian, q1, p1, 2 * u - v0)
        # q̇₁ − u ≈ ½ h q̈: an O(h) estimate of the acceleration for the next guess.
        a1 = 2 * (v1 - u) / h
        scaled = jax.tree.map(lambda block: h * block, jacobian)
        y1, result = self.finish(
            y0, (q1, v1), h, q_result, v_result, check_stiffness(scaled, mass)
        )
        y1, (p1, a1) = jax.tree.map(
            lambda old, new: jnp.where(idle, old, new), (y0, (p0, a0)), (y1, (p1, a1))
        )
        return y1, None, dict(y0=y0, y1=y1), (p1, a1), result


class MidpointEquations(eqx.Module):
    """The equation of one `VariationalMidpoint` step for `q₁`:
    `R = p − ½ h F − p₀ = 0`, with the force `F = ∂L/∂q + Q` and the momentum
    `p = ∂L/∂q̇` at the midpoint `(m, u) = ((q₀ + q₁)/2, (q₁ − q₀)/h)`."""

    term: LagrangianTerm
    t: Float[Array, ""]
    q0: Float[Array, " dof"]
    p0: Float[Array, " dof"]
    h: Float[Array, ""]

    def midpoint(self, q1):
        """The midpoint's time, position `m` and velocity `u`."""
        return self.t, 0.5 * (self.q0 + q1), (q1 - self.q0) / self.h

    def forces(self, q1):
        """`(F, p)` at the midpoint."""
        return forces(self.term, *self.midpoint(q1))

    def residual(self, q1):
        return self._residual(*self.forces(q1))

    def _residual(self, force, momentum):
        return momentum - 0.5 * self.h * force - self.p0

    def linearize(self, q1):
        """`(R, ∂R/∂q₁)` from one jet of `L` at the midpoint: with
        `∂m/∂q₁ = I/2` and `∂u/∂q₁ = I/h`,
        `∂R/∂q₁ = ∂p/∂q̇ / h + (∂p/∂q − ∂F/∂q̇)/2 − h ∂F/∂q / 4`."""
        (force, momentum), ((f_q, f_v), (p_q, p_v)) = linearized_forces(
            self.term, *self.midpoint(q1)
        )
        jacobian = p_v / self.h + 0.5 * (p_q - f_v) - 0.25 * self.h * f_q
        return self._residual(force, momentum), jacobian


VariationalMidpoint.__init__.__doc__ = """**Arguments:**

- `rtol`, `atol`: tolerances of the Newton solves, on the update of `q₁` and `q̇₁`
    (max norm). Default: 64 ulps of the state's dtype.
- `max_steps`: iteration budget of each Newton solve.
"""
