import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from .._linalg import inverse, solve
from .._mechanics import euler_lagrange_parts
from .._term import LagrangianTerm, split_state
from .base import (
    AbstractNewtonSolver,
    check_step,
    first_failure,
    newton_root,
    time_direction,
    unwrap,
)


class Rattle(AbstractNewtonSolver):
    r"""RATTLE: Störmer–Verlet on the constraint manifold `g(q) = 0` of a
    `lagrax.LagrangianTerm(L, constraint=g)`.

        q̇½ = q̇₀ + ½h (a₀ − B₀ λ),    q₁ = q₀ + h q̇½,    g(q₁) = 0
        q̇₁ = q̇½ + ½h (a₁ − B₁ μ),                        G₁ q̇₁ = 0

    with `a = H⁻¹(∂L/∂q − (∂²L/∂q̇∂q) q̇ + Q)` the unconstrained acceleration,
    `G = ∂g/∂q` and `B = H⁻¹Gᵀ`. The multipliers `λ` (a Newton solve of `m`
    unknowns, from 0) put every step's end exactly on the constraints, `μ` (one
    linear solve) puts its velocity exactly on their tangent space: no drift,
    whatever the number of steps. 2nd order, one free acceleration and one
    constraint Jacobian per step (carried to the next, as in `VelocityVerlet`);
    symplectic and symmetric when `q̈` does not depend on `q̇` — Cartesian
    coordinates with a constant mass matrix, the natural home of constraints —
    with bounded energy error. A velocity-dependent `q̈` is evaluated at `q̇½`,
    which keeps the method 2nd order but no longer symplectic.

    A step fails, rather than returning garbage, when its Newton solve does not
    converge in `max_steps` iterations (`lagrax.RESULTS.newton_failure`), when `H`
    or `G H⁻¹ Gᵀ` is singular (a redundant constraint:
    `singular_mass_matrix`), or when it does not resolve the motion (`hω ≥ 2`,
    `step_too_large`). Fixed steps only; dense output is linear.

    ??? cite "Reference"

        ```bibtex
        @article{andersen1983rattle,
            title={Rattle: A ``velocity'' version of the shake algorithm for
                   molecular dynamics calculations},
            author={Andersen, Hans C},
            journal={Journal of Computational Physics},
            volume={52},
            number={1},
            pages={24--34},
            year={1983}
        }
        ```
    """

    rtol: float | None = None
    atol: float | None = None
    max_steps: int = eqx.field(default=20, static=True)

    def order(self, terms):
        return 2

    def init(self, terms, t0, t1, y0, args):
        q0, v0 = split_state(y0, "Rattle")
        _, direction = time_direction(terms, t0, t1)
        return _parts(_constrained_term(terms), t0 * direction, q0, v0)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        q0, v0 = split_state(y0, "Rattle")
        term = _constrained_term(terms)
        constraint = term.constraint
        assert constraint is not None  # a constrained solver has a constrained term
        a0, b0, singular0 = jax.lax.cond(
            made_jump, lambda: self.init(terms, t0, t1, y0, args), lambda: solver_state
        )
        control, direction = time_direction(terms, t0, t1)
        h = jnp.asarray(control, q0.dtype)
        # Under `vmap` a finished solve keeps stepping with h = 0: a tiny,
        # well-posed step instead, its result discarded (see VariationalMidpoint).
        idle = h == 0
        h = jnp.where(idle, jnp.sqrt(jnp.finfo(q0.dtype).eps), h)
        free = q0 + h * v0 + 0.5 * h**2 * a0
        # Solved for the displacement ν = ½h²λ, in the units of q: its tolerance
        # then means what it says, where λ's own would sit below its round-off.
        displacement, lambda_result, _, _ = newton_root(
            lambda x: constraint(free - b0 @ x),
            jnp.zeros(b0.shape[1], q0.dtype),
            **self.newton_options(q0.dtype),
        )
        push0 = a0 - b0 @ displacement * (2 / h**2)
        v_half = v0 + 0.5 * h * push0
        q1 = q0 + h * v_half
        a1, b1, singular1 = _parts(term, t1 * direction, q1, v_half)
        jacobian = jax.jacfwd(constraint)(q1)
        ahead = v_half + 0.5 * h * a1
        correction, _, singular_mu = solve(0.5 * h * (jacobian @ b1), jacobian @ ahead)
        v1 = ahead - 0.5 * h * (b1 @ correction)
        push1 = a1 - b1 @ correction
        singular = singular0 | singular1 | singular_mu
        result = first_failure(
            diffrax.RESULTS.where(
                singular,
                diffrax.RESULTS.singular,  # pyright: ignore[reportArgumentType]
                diffrax.RESULTS.successful,
            ),
            lambda_result,
            check_step(y0, (q1, v1), h, (push0, push1)),
        )
        failed = result != diffrax.RESULTS.successful
        y1 = jax.tree.map(lambda y: jnp.where(failed, jnp.inf, y), (q1, v1))
        y1, state = jax.tree.map(
            lambda old, new: jnp.where(idle, old, new),
            (y0, (a0, b0, singular0)),
            (y1, (a1, b1, singular1)),
        )
        return y1, None, dict(y0=y0, y1=y1), state, result


Rattle.__init__.__doc__ = """**Arguments:**

- `rtol`, `atol`: tolerances of the multipliers' Newton solve, on the
    displacement `½h²B₀λ` they make (default: 64 ulps of the state's dtype).
- `max_steps`: iteration budget of that solve.
"""


def _constrained_term(terms) -> LagrangianTerm:
    term = unwrap(terms)
    if not isinstance(term, LagrangianTerm) or term.constraint is None:
        raise TypeError(
            "Rattle integrates a constrained LagrangianTerm(L, constraint=g) (or "
            "lagrax.simulate(..., constraint=g)); without a constraint use "
            "VelocityVerlet."
        )
    return term


def _parts(
    term: LagrangianTerm, t, q: Float[Array, " dof"], qdot: Float[Array, " dof"]
) -> tuple[Float[Array, " dof"], Float[Array, "dof m"], Bool[Array, ""]]:
    """`(a, B, singular)` at one state: the unconstrained acceleration
    `H⁻¹(∂L/∂q − (∂²L/∂q̇∂q) q̇ + Q)`, `B = H⁻¹Gᵀ` and whether `H` is singular."""
    assert term.constraint is not None  # a constrained solver has a constrained term
    dl_dq, mass, mixed = euler_lagrange_parts(term.lagrangian, q, qdot)
    rhs = dl_dq - mixed
    if term.force is not None:
        rhs = rhs + term.force(t, q, qdot)
    jacobian = jax.jacfwd(term.constraint)(q)
    mass_inverse, singular = inverse(mass)
    return mass_inverse @ rhs, mass_inverse @ jacobian.T, singular
