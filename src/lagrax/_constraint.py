"""Holonomic constraints `g(q) = 0`: the constrained Euler–Lagrange equations.

With `G = ∂g/∂q` (`m × n`) the motion on the constraint manifold satisfies

    [[H, Gᵀ], [G, 0]] [q̈; λ] = [∂L/∂q − (∂²L/∂q̇∂q) q̇ + Q; −(d/dt G) q̇]

the index-1 form: the second time derivative of `g(q(t)) = 0`. `G` is one
forward-mode Jacobian of `g`, and `(d/dt G) q̇`, the second derivative of `g` along
`q̇`, one nested JVP: no third-order tensor is formed. The multipliers `λ` are the
constraint forces: the constraints push on the coordinates with `−Gᵀλ`.
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from ._custom_types import Position, Velocity
from ._graph_constraint import edge_least_norm, EdgeConstraint
from ._linalg import solve


#: A holonomic constraint: `q -> g(q)` of shape `(m,)`, zero on the manifold.
ConstraintFn = Callable[[Position], Float[Array, " m"]]


def constraint_jacobian(
    constraint: ConstraintFn, q: Position, qdot: Velocity
) -> tuple[Float[Array, " m"], Float[Array, "m dof"], Float[Array, " m"]]:
    """`(g(q), G, (d/dt G) q̇)` at one state: the value, the Jacobian `∂g/∂q` (by
    forward mode, `dof` tangents) and the second derivative of `g` along `q̇`."""

    def along(q):
        return jax.jvp(constraint, (q,), (qdot,))

    (value, _), (_, curvature) = jax.jvp(along, (q,), (qdot,))
    jacobian = jax.jacfwd(constraint)(q)
    return value, jacobian, curvature


def check_constraint(constraint, q: Position) -> int:
    """The number of constraints `m`, with a clear error at trace time unless
    `constraint` maps `q` to a 1-D array of its dtype."""
    if not callable(constraint):
        raise TypeError(
            f"`constraint` must be a function q -> g(q) of shape (m,), got "
            f"{constraint!r}."
        )
    out = jax.eval_shape(constraint, q)
    if not (
        isinstance(out, jax.ShapeDtypeStruct)
        and out.ndim == 1
        and out.shape[0] >= 1
        and out.dtype == q.dtype
    ):
        raise ValueError(
            "`constraint` must map q to a 1-D array g(q) of shape (m,), m ≥ 1, in "
            f"q's dtype {q.dtype}; got {out}."
        )
    return out.shape[0]


def kkt_solve(
    h: Float[Array, "dof dof"],
    rhs: Float[Array, " dof"],
    jacobian: Float[Array, "m dof"],
    curvature: Float[Array, " m"],
) -> tuple[Float[Array, " dof"], Float[Array, " m"], Bool[Array, ""]]:
    """`(q̈, λ, singular)` of the index-1 system, by the singularity criterion of
    every lagrax solve: a redundant constraint (rank-deficient `G`), or a mass
    matrix singular on the constraints' tangent space, is singular."""
    n, m = h.shape[0], jacobian.shape[0]
    matrix = jnp.block([[h, jacobian.T], [jacobian, jnp.zeros((m, m), h.dtype)]])
    x, _, singular = solve(matrix, jnp.concatenate([rhs, -curvature]))
    return x[:n], x[n:], singular


def residuals(
    constraint: ConstraintFn, q: Position, qdot: Velocity
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """`(max |g(q)|, max |G q̇|)`: how far a state is from the constraint manifold
    and from its tangent space."""
    value, velocity = jax.jvp(constraint, (q,), (qdot,))
    return jnp.max(jnp.abs(value)), jnp.max(jnp.abs(velocity))


def default_tolerance(dtype) -> float:
    """`√eps` of the dtype: what a state projected in that precision meets."""
    return float(jnp.finfo(dtype).eps) ** 0.5


def check_on_constraint(
    constraint: ConstraintFn,
    q: Position,
    qdot: Velocity,
    x: Array,
    tolerance: float | None,
    *,
    throw: bool,
) -> Array:
    """`x`, with a runtime error (or, with `throw=False`, NaN) where `(q, q̇)` is
    farther than `tolerance` from the constraint manifold or its tangent space."""
    tolerance = default_tolerance(q.dtype) if tolerance is None else tolerance
    position, velocity = residuals(constraint, q, qdot)
    off = (position > tolerance) | (velocity > tolerance)
    if throw:
        return eqx.error_if(
            x,
            off,
            "lagrax: the state violates its constraint (|g(q)| or |G q̇| above the "
            "tolerance): project it first with lagrax.project_on_constraint.",
        )
    return x * jnp.where(off, jnp.nan, 1.0).astype(x.dtype)


def project_on_constraint(
    constraint: ConstraintFn,
    q: Position,
    qdot: Velocity,
    *,
    iterations: int = 8,
) -> tuple[Position, Velocity]:
    """The nearest state on the constraints: `q` moved onto `g(q) = 0` and `q̇` onto
    its tangent space `G q̇ = 0`.

    `q` takes `iterations` Gauss–Newton steps of the least-norm correction
    `q ← q − Gᵀ(GGᵀ)⁻¹ g(q)` (quadratically convergent from a nearby state); `q̇` is
    then projected orthogonally, `q̇ ← q̇ − Gᵀ(GGᵀ)⁻¹ G q̇`. Use it to put initial
    states, or data measured with noise, on the constraints before `acceleration`
    or a solve checks them. Works under `jit` and `vmap`. For a
    `lagrax.EdgeConstraint`, `GGᵀ` is block sparse and solved as such: linear cost
    in the number of links.

    **Arguments:**

    - `constraint`: the constraint function `q -> g(q)`, shape `(m,)`.
    - `q`, `qdot`: the state, each of shape `(dof,)`.
    - `iterations`: Gauss–Newton steps for the positions.

    **Returns:**

    `(q, qdot)` on the constraints.
    """
    q, qdot = jnp.asarray(q), jnp.asarray(qdot)
    check_constraint(constraint, q)

    def correction(q, residual):
        if isinstance(constraint, EdgeConstraint):
            return edge_least_norm(constraint, q, residual)
        jacobian = jax.jacfwd(constraint)(q)
        gram = jacobian @ jacobian.T
        step, _, _ = solve(gram, residual)
        return jacobian.T @ step

    def newton(_, q):
        return q - correction(q, constraint(q))

    q = jax.lax.fori_loop(0, iterations, newton, q)
    velocity = jax.jvp(constraint, (q,), (qdot,))[1]
    return q, qdot - correction(q, velocity)
