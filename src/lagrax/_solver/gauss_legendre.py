import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
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
from .constrained import (
    constrained_init,
    constrained_step,
    is_constrained,
    lagrange_basis,
)


@functools.cache
def _gauss_legendre_tableau(stages: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nodes `c`, matrix `a` and weights `b` of the `stages`-stage Gauss method."""
    nodes, _ = np.polynomial.legendre.leggauss(stages)
    c = 0.5 * (nodes + 1)
    a = np.empty((stages, stages))
    b = np.empty(stages)
    for j in range(stages):
        # The Lagrange basis polynomial of node j, integrated from 0.
        integral = lagrange_basis(c, j).integ()
        a[:, j] = integral(c) - integral(0.0)
        b[j] = integral(1.0) - integral(0.0)
    return c, a, b


def _extrapolate(nodes, values, targets):
    """The polynomial through `(nodes, values)`, evaluated at `targets`."""
    off_diagonal = ~jnp.eye(nodes.shape[0], dtype=bool)[None]
    # weights[t, j] = Π_{k≠j} (targets[t] − nodes[k]) / (nodes[j] − nodes[k])
    numer = jnp.where(off_diagonal, targets[:, None, None] - nodes[None, None, :], 1)
    denom = jnp.where(off_diagonal, nodes[None, :, None] - nodes[None, None, :], 1)
    return jnp.prod(numer / denom, axis=-1) @ values


class GaussLegendre(AbstractVariationalSolver):
    r"""The Gauss–Legendre variational integrator, for any regular Lagrangian
    `L(q, q̇)`: a symplectic partitioned Runge–Kutta method of order `2·stages`.

    Discretizes the action with `s = stages` Gauss quadrature nodes `cᵢ`,

        L_d(q₀, q₁) = h Σᵢ bᵢ L(Qᵢ, Q̇ᵢ),   Qᵢ = q₀ + h Σⱼ aᵢⱼ Q̇ⱼ,   q₁ = q₀ + h Σⱼ bⱼ Q̇ⱼ

    (`a`, `b`: the Gauss–Legendre tableau), and steps the discrete Euler–Lagrange
    equations in position–momentum form: the stage velocities `Q̇ᵢ` solve

        ∂L/∂q̇(Qᵢ, Q̇ᵢ) = p₀ + h Σⱼ aᵢⱼ (∂L/∂q(Qⱼ, Q̇ⱼ) + Qⱼ)    (Newton, size s·dof)

    then `p₁ = p₀ + h Σⱼ bⱼ (∂L/∂q(Qⱼ, Q̇ⱼ) + Qⱼ)` and `p₁ = ∂L/∂q̇(q₁, q̇₁)` gives
    `q̇₁` (Newton, size dof), with an optional generalized force `Q` at the stages
    (the discrete Lagrange–d'Alembert principle). For Gauss coefficients the
    momentum stages use the same tableau, and the method is Gauss collocation
    applied to the Hamiltonian form of the equations, without ever forming the
    Hamiltonian.

    Properties: order `2s` (4 by default); symmetric; symplectic in `(q, p)`; the
    Noether momentum of a symmetry of an unforced `L` is conserved to round-off
    (`p₁ − p₀` is `h` times a combination of `∂L/∂q`); energy error bounded over
    exponentially long times. Needs `∂²L/∂q̇²` invertible along the motion.
    `stages=1` is `VariationalMidpoint`.

    Cost per step: one chord-Newton solve of size `s·dof`, whose Jacobian (and
    first residual) comes from one jet of `L` per stage along all `2·dof` input
    directions (`StageEquations.linearize`: for an `AbstractJetLagrangian` such as
    `MLPLagrangian` about the cost of a gradient, otherwise `2·dof`
    forward-over-reverse products), then `s` gradients of `L` per iteration,
    typically three or four further iterations thanks to a predictor that
    extrapolates the previous step's stage velocities; `s` gradients for `p₁`, and
    the velocity solve of `VariationalMidpoint`. For the 4th-order default this is
    about half the cost of `Yoshida4()` with a far smaller error constant. Gradients
    use the implicit function theorem. A step is accepted only if its Newton solves
    converged with regular Jacobians and it resolves the motion, as in
    `VariationalMidpoint`. Takes a `lagrax.LagrangianTerm`. Fixed steps only (no
    error estimate); dense output is linear.

    **Holonomic constraints.** On a `LagrangianTerm(L, constraint=g)` the path over
    a step is the polynomial through its values at the `s + 1` Gauss–Lobatto
    nodes, every one of them on the constraints: the forces enter by Gauss
    quadrature as above, the constraint forces by Lobatto quadrature at the
    nodes (Gauss–Lobatto, the pairing of Jay's SPARK methods), and the step ends on the
    constraints' tangent space as in RATTLE. It keeps the order `2s` (measured:
    4.0 and 6.0 on a Cartesian double pendulum in a magnetic field), symmetric and
    symplectic, with every step's `|g(q)|` and `|G q̇|` at the Newton tolerance.
    Cost per step: a Newton solve of `s·(dof + m)` unknowns, its Jacobian by
    forward-mode autodiff (not the jet above), and a velocity solve of
    `dof + m`. The stiffness bound is not checked.

    ??? cite "References"

        ```bibtex
        @article{marsden2001discrete,
            title={Discrete mechanics and variational integrators},
            author={Marsden, Jerrold E. and West, Matthew},
            journal={Acta Numerica},
            volume={10},
            pages={357--514},
            year={2001}
        }

        @book{hairer2006geometric,
            title={Geometric Numerical Integration},
            author={Hairer, Ernst and Lubich, Christian and Wanner, Gerhard},
            publisher={Springer},
            edition={2},
            year={2006}
        }

        @article{jay2007spark,
            title={Specialized partitioned additive {R}unge--{K}utta methods for
                   systems of overdetermined {DAE}s with holonomic constraints},
            author={Jay, Laurent O.},
            journal={SIAM Journal on Numerical Analysis},
            volume={45},
            number={5},
            pages={1814--1842},
            year={2007}
        }
        ```
    """

    stages: int = eqx.field(default=2, static=True)
    rtol: float | None = None
    atol: float | None = None
    max_steps: int = eqx.field(default=20, static=True)

    def __check_init__(self):
        if isinstance(self.stages, bool) or not isinstance(self.stages, int):
            raise TypeError(f"`stages` must be an int, got {self.stages!r}.")
        if not 1 <= self.stages <= 6:
            raise ValueError(f"`stages` must be between 1 and 6, got {self.stages}.")

    def order(self, terms):
        return 2 * self.stages

    def init(self, terms, t0, t1, y0, args):
        if is_constrained(terms):
            return constrained_init(self, terms, y0)
        q0, v0 = split_state(y0, "GaussLegendre")
        lagrangian = lagrangian_term(terms).lagrangian
        h = jnp.asarray(terms.contr(t0, t1), q0.dtype)
        # A fictitious previous step at constant velocity: the first guess is
        # q̇₀ at every stage, which costs the first step an iteration or two but
        # keeps `init` to one gradient.
        stage_v = jnp.broadcast_to(v0, (self.stages, v0.shape[0]))
        return momentum(lagrangian, q0, v0), stage_v, h

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        if is_constrained(terms):
            return constrained_step(
                self, self.stages, terms, t0, t1, y0, solver_state, made_jump
            )
        q0, v0 = split_state(y0, "GaussLegendre")
        term = lagrangian_term(terms)
        lagrangian = term.lagrangian
        # The state is the discrete momentum p₀, plus the previous step's stage
        # velocities and size, which only feed the predictor.
        p0, prev_v, prev_h = jax.lax.cond(
            made_jump, lambda: self.init(terms, t0, t1, y0, args), lambda: solver_state
        )
        tableau = _gauss_legendre_tableau(self.stages)
        c, a, b = (jnp.asarray(x, q0.dtype) for x in tableau)
        control, direction = time_direction(terms, t0, t1)
        h = jnp.asarray(control, q0.dtype)
        stage_t = (c * (t1 - t0) + t0) * direction
        equations = StageEquations(term, stage_t, q0, p0, h, a)
        shape = (self.stages, q0.shape[0])

        # Extrapolate the velocity polynomial of the previous step, through its
        # stages and q̇₀, to this step's nodes (a step-size ratio far from 1 would
        # make the extrapolation wild: it is only a guess, so clip the ratio).
        ratio = jnp.clip(h / prev_h, -2.0, 2.0)
        one = jnp.ones(1, q0.dtype)
        guess = _extrapolate(
            jnp.concatenate([c, one]),
            jnp.concatenate([prev_v, v0[None]]),
            1 + ratio * c,
        )
        flat_v, stage_result, jacobian, _ = newton_root(
            # custom_root hashes its function: a closure, not a bound method.
            lambda x: equations.residual(x),
            guess.reshape(-1),
            pattern=pattern_of(lagrangian, self.stages),
            linearize=equations.linearize,
            **self.newton_options(q0.dtype),
        )
        stage_v = flat_v.reshape(shape)
        q1 = q0 + h * (b @ stage_v)
        p1 = p0 + h * (b @ equations.forces(flat_v)[0])
        # The velocity polynomial through q̇₀ and the stages, evaluated at t₁.
        zero = jnp.zeros(1, q0.dtype)
        v_guess = _extrapolate(
            jnp.concatenate([zero, c]), jnp.concatenate([v0[None], stage_v]), one
        )[0]
        v1, v_result, mass = self.velocity(lagrangian, q1, p1, v_guess)
        # The stage equations' Jacobian is blockwise H plus O(h) terms; compared
        # stage by stage with H at the step's end.
        stiffness = check_stiffness(jacobian, mass, self.stages)
        y1, result = self.finish(y0, (q1, v1), h, stage_result, v_result, stiffness)
        return y1, None, dict(y0=y0, y1=y1), (p1, stage_v, h), result


class StageEquations(eqx.Module):
    """The equations of one Gauss–Legendre step for its stage velocities `Q̇`
    (flattened stage by stage): `Rᵢ = pᵢ − p₀ − h Σⱼ aᵢⱼ Fⱼ = 0`, with the force
    `F = ∂L/∂q + Q` and the momentum `p = ∂L/∂q̇` at the stage states
    `(Qᵢ, Q̇ᵢ)`, `Qᵢ = q₀ + h Σⱼ aᵢⱼ Q̇ⱼ`."""

    term: LagrangianTerm
    times: Float[Array, " stages"]
    q0: Float[Array, " dof"]
    p0: Float[Array, " dof"]
    h: Float[Array, ""]
    a: Float[Array, "stages stages"]

    def states(self, flat_v):
        """The stage times, positions and velocities."""
        stage_v = flat_v.reshape(self.a.shape[0], self.q0.shape[0])
        return self.times, self.q0[None] + self.h * (self.a @ stage_v), stage_v

    def forces(self, flat_v):
        """`(F, p)` at every stage."""
        return jax.vmap(functools.partial(forces, self.term))(*self.states(flat_v))

    def residual(self, flat_v):
        return self._residual(*self.forces(flat_v))

    def _residual(self, force, momentum):
        return (momentum - self.p0[None] - self.h * (self.a @ force)).reshape(-1)

    def linearize(self, flat_v):
        """`(R, ∂R/∂Q̇)`, from one jet of `L` per stage (for a network far cheaper
        than `stages · dof` Jacobian products of `R` by autodiff).

        Stage i's residual depends on stage k's velocity through the positions
        `Qⱼ` and, when `i = k`, directly:
        `∂Rᵢ/∂Q̇ₖ = h aᵢₖ ∂pᵢ/∂q + δᵢₖ ∂pᵢ/∂q̇ − h² Σⱼ aᵢⱼ aⱼₖ ∂Fⱼ/∂q − h aᵢₖ ∂Fₖ/∂q̇`.
        """
        (force, momentum), ((f_q, f_v), (p_q, p_v)) = jax.vmap(
            functools.partial(linearized_forces, self.term)
        )(*self.states(flat_v))
        ha = self.h * self.a
        eye = jnp.eye(ha.shape[0], dtype=ha.dtype)
        jacobian = (
            jnp.einsum("ik,iab->iakb", ha, p_q)
            + jnp.einsum("ik,iab->iakb", eye, p_v)
            - jnp.einsum("ij,jk,jab->iakb", ha, ha, f_q)
            - jnp.einsum("ik,kab->iakb", ha, f_v)
        )
        return self._residual(force, momentum), jacobian.reshape(flat_v.size, -1)


GaussLegendre.__init__.__doc__ = """**Arguments:**

- `stages`: the number `s` of Gauss nodes, 1 to 6; the order is `2s`. Default 2.
- `rtol`, `atol`: tolerances of the Newton solves, on the update of the stage
    velocities and of `q̇₁` (max norm). Default: 64 ulps of the state's dtype.
- `max_steps`: iteration budget of each Newton solve.
"""
