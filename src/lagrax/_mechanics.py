"""The Euler–Lagrange equations of a Lagrangian `L(q, q̇)`, for one state.

    H q̈ = ∂L/∂q − (∂²L/∂q̇∂q) q̇ + Q,      H = ∂²L/∂q̇²

`(∂²L/∂q̇∂q) q̇` is the derivative of `∂L/∂q̇` in the direction `(q̇, 0)`, and the
columns of `H` are its derivatives in the directions `(0, e_i)`: all `n + 1` come
from one forward-over-reverse pass with a batch of `n + 1` tangents. The full
`2n × 2n` Hessian of `L` is never formed and nothing is pseudo-inverted.
"""

import functools
import operator
from typing import TypeGuard

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from ._constraint import (
    check_constraint,
    check_on_constraint,
    constraint_jacobian,
    ConstraintFn,
    kkt_solve,
)
from ._custom_types import (
    Acceleration,
    LagrangianLike,
    MassMatrix,
    Position,
    PositionLike,
    Scalar,
    Velocity,
    VelocityLike,
)
from ._graph import BlockSparseMatrix, colour_seeds, decompress
from ._graph_constraint import check_edge_constraint, edge_kkt_solve, EdgeConstraint
from ._graph_lagrangian import AbstractGraphLagrangian
from ._lagrangian import (
    AbstractJetLagrangian,
    gradient_of,
    hessian_products,
    LagrangianSum,
)
from ._linalg import solve
from ._mechanical import AbstractMechanicalLagrangian
from ._misc import as_state, check_like


def _directions(qdot: Velocity) -> Float[Array, "2*dof dof+1"]:
    """The input directions `[(0, e_1) … (0, e_n), (q̇, 0)]` as columns."""
    n = qdot.shape[0]
    velocity_dirs = jnp.concatenate(
        [jnp.zeros((n, n), qdot.dtype), jnp.eye(n, dtype=qdot.dtype)]
    )
    qdot_dir = jnp.concatenate([qdot, jnp.zeros_like(qdot)])
    return jnp.concatenate([velocity_dirs, qdot_dir[:, None]], axis=1)


def _euler_lagrange_parts(
    lagrangian: LagrangianLike, q: Position, qdot: Velocity
) -> tuple[Float[Array, " dof"], MassMatrix | BlockSparseMatrix, Float[Array, " dof"]]:
    """`(∂L/∂q, H, (∂²L/∂q̇∂q) q̇)` at one state; `H` block sparse for a graph
    Lagrangian."""
    if isinstance(lagrangian, AbstractGraphLagrangian):
        return _graph_parts(lagrangian, q, qdot)
    return _dense_parts(lagrangian, q, qdot)


def _graph_parts(
    lagrangian: AbstractGraphLagrangian, q: Position, qdot: Velocity
) -> tuple[Float[Array, " dof"], BlockSparseMatrix, Float[Array, " dof"]]:
    """`_euler_lagrange_parts` of a graph Lagrangian: `H` block sparse."""
    n = q.shape[0]
    lagrangian.check_input(q, qdot)
    # Velocity directions: the colour seeds of the graph, not all n unit vectors.
    graph, block = lagrangian.mass_graph, lagrangian.node_dim
    seeds = colour_seeds(graph, block, qdot.dtype).T
    directions = jnp.concatenate(
        [
            jnp.concatenate([jnp.zeros_like(seeds), seeds]),
            jnp.concatenate([qdot, jnp.zeros_like(qdot)])[:, None],
        ],
        axis=1,
    )
    grad, hvps = hessian_products(lagrangian, q, qdot, directions)
    return grad[:n], decompress(graph, block, hvps[:-1, n:]), hvps[-1, n:]


def _dense_parts(
    lagrangian: LagrangianLike, q: Position, qdot: Velocity
) -> tuple[Float[Array, " dof"], MassMatrix, Float[Array, " dof"]]:
    """`_euler_lagrange_parts` of any Lagrangian but a graph one: `H` dense."""
    n = q.shape[0]
    if isinstance(lagrangian, AbstractMechanicalLagrangian):
        return lagrangian.euler_lagrange_parts(q, qdot)
    if _has_mechanical_term(lagrangian):
        # The parts are linear in L: each term contributes its own, a mechanical
        # term through its structure. (Graph Lagrangians do not sum.)
        parts = [_dense_parts(term, q, qdot) for term in lagrangian.terms]
        weights = [jnp.asarray(w, q.dtype) for w in lagrangian.weights]
        dl_dq, h, mixed = (
            functools.reduce(operator.add, [w * p[i] for w, p in zip(weights, parts)])
            for i in range(3)
        )
        return dl_dq, h, mixed
    directions = _directions(qdot)
    if isinstance(lagrangian, AbstractJetLagrangian):
        grad, block = lagrangian.jet(q, qdot, directions)
        return grad[:n], block[:n, :n], block[:n, n]
    grad, hvps = hessian_products(lagrangian, q, qdot, directions)
    # H is symmetric, so the rows we hold are its columns.
    return grad[:n], hvps[:n, n:], hvps[n, n:]


def euler_lagrange_parts(
    lagrangian: LagrangianLike, q: Position, qdot: Velocity
) -> tuple[Float[Array, " dof"], MassMatrix, Float[Array, " dof"]]:
    """`(∂L/∂q, H, (∂²L/∂q̇∂q) q̇)` at one state, `H` dense (for the constrained
    equations, whose saddle-point system has no graph structure yet)."""
    dl_dq, h, mixed = _euler_lagrange_parts(lagrangian, q, qdot)
    if isinstance(h, BlockSparseMatrix):
        h = h.todense()
    return dl_dq, h, mixed


def _has_mechanical_term(lagrangian) -> TypeGuard[LagrangianSum]:
    return isinstance(lagrangian, LagrangianSum) and any(
        isinstance(term, AbstractMechanicalLagrangian) for term in lagrangian.terms
    )


def _structured(lagrangian) -> bool:
    """Whether the mechanics of `lagrangian` go through a mechanical structure
    (`AbstractMechanicalLagrangian.euler_lagrange_parts`) rather than its jet."""
    return isinstance(lagrangian, AbstractMechanicalLagrangian) or (
        _has_mechanical_term(lagrangian)
    )


class MassMatrixInfo(eqx.Module):
    """Diagnostics of the mass matrix `H = ∂²L/∂q̇²` at one state.

    **Fields:**

    - `eigenvalues`: eigenvalues of `H`, ascending.
    - `condition_number`: `max |λ| / min |λ|` (`inf` when `H` is singular).
    - `positive_definite`: whether `acceleration` solves with Cholesky (otherwise it
        falls back to LU with partial pivoting).
    - `singular`: whether `acceleration` would report the state as singular.
    """

    eigenvalues: Float[Array, " dof"]
    condition_number: Float[Array, ""]
    positive_definite: Bool[Array, ""]
    singular: Bool[Array, ""]


def acceleration(
    lagrangian: LagrangianLike,
    q: PositionLike,
    qdot: VelocityLike,
    *,
    force: Float[Array, " dof"] | None = None,
    constraint: ConstraintFn | None = None,
    tolerance: float | None = None,
    throw: bool = True,
) -> Acceleration:
    r"""The acceleration `q̈` from the Euler–Lagrange equations of `lagrangian`.

    Solves `H q̈ = ∂L/∂q − (∂²L/∂q̇∂q) q̇ + Q` with `H = ∂²L/∂q̇²`. The right-hand
    side and `H` cost one forward-over-reverse pass with `dof + 1` tangents (or a
    structured pass for an `AbstractJetLagrangian` such as `MLPLagrangian`). `H` is
    factorized with Cholesky where it is positive definite; otherwise (a learned
    Lagrangian need not be convex in `q̇`) with LU and partial pivoting. A singular
    `H` (reciprocal condition estimate below `dof·eps`, or a non-finite solve) has
    no acceleration: with `throw=True` this raises a runtime error, also under
    `jit`; with `throw=False` the result is explicitly NaN, and so is its gradient,
    for callers (such as training loops) that count and skip such states.
    `mass_matrix_info` reports the conditioning.

    Works under `jax.jit`, `jax.vmap` and `jax.grad`, in float32 and float64. A
    model holds non-array leaves (an `MLPLagrangian`'s activation function), so
    compile and differentiate with respect to one the Equinox way:
    `eqx.filter_jit(lagrax.acceleration)(model, q, qdot)`,
    `eqx.filter_grad(loss)(model, ...)`.

    **Arguments:**

    - `lagrangian`: a callable `(q, qdot) -> scalar` for one state, such as an
        `AbstractLagrangian`.
    - `q`, `qdot`: the state, each of shape `(dof,)`.
    - `force`: an optional generalized (non-conservative) force `Q`, shape `(dof,)`.
    - `constraint`: an optional holonomic constraint, a function `q -> g(q)` of
        shape `(m,)` that vanishes on the allowed configurations (a pendulum's
        link lengths in Cartesian coordinates, say). Then `q̈` and the multipliers
        `λ` solve `[[H, Gᵀ], [G, 0]] [q̈; λ] = [∂L/∂q − (∂²L/∂q̇∂q) q̇ + Q;
        −(d/dt G) q̇]` with `G = ∂g/∂q` (one forward-mode Jacobian; `(d/dt G) q̇`
        is one nested JVP): the motion that keeps `g(q(t)) = 0`. `H` need only be
        definite on the constraints' tangent space. A redundant constraint
        (rank-deficient `G`) is singular like a singular mass matrix. The state
        must lie on the constraints: `|g(q)|` and `|G q̇|` at most `tolerance`, else
        an error (NaN with `throw=False`); `lagrax.project_on_constraint` puts a
        state there. `lagrax.constraint_multipliers` gives `λ`. For an
        `AbstractGraphLagrangian` under a `lagrax.EdgeConstraint` (one constraint
        per edge) the system is solved by its block-sparse Schur complement
        `G H⁻¹ Gᵀ`, with no dense matrix and at linear cost for a block-diagonal
        mass matrix (see `EdgeConstraint`).
    - `tolerance`: the largest `|g(q)|` and `|G q̇|` accepted with a `constraint`;
        default `√eps` of the state's dtype.
    - `throw`: whether a singular mass matrix (or a state off its constraint)
        raises (default) or gives NaN.

    **Returns:**

    `q̈`, of shape `(dof,)`.

    ??? cite "Reference"

        ```bibtex
        @article{cranmer2020lagrangian,
            title={Lagrangian Neural Networks},
            author={Cranmer, Miles and Greydanus, Sam and Hoyer, Stephan and
                    Battaglia, Peter and Spergel, David and Ho, Shirley},
            journal={arXiv:2003.04630},
            year={2020}
        }
        ```
    """
    q, qdot = as_state(q, qdot)
    if force is not None:
        check_like(force, "force", q, "q")
    if constraint is None:
        return checked_acceleration(lagrangian, q, qdot, force, throw=throw)[0]
    check_constraint(constraint, q)
    qddot, _ = _checked_constrained(
        lagrangian, q, qdot, force, constraint, tolerance, throw=throw
    )
    return qddot


def constraint_multipliers(
    lagrangian: LagrangianLike,
    q: PositionLike,
    qdot: VelocityLike,
    *,
    constraint: ConstraintFn,
    force: Float[Array, " dof"] | None = None,
    tolerance: float | None = None,
    throw: bool = True,
) -> Float[Array, " m"]:
    r"""The multipliers `λ` of a holonomic constraint at one state: the constraint
    forces, which act on the coordinates as `−Gᵀλ` (`G = ∂g/∂q`), so that
    `H q̈ = ∂L/∂q − (∂²L/∂q̇∂q) q̇ + Q − Gᵀλ`.

    For `g = (|x|² − l²)/2` on a pendulum bob, `λ` is the rod's tension over `l`.
    The same solve, checks and arguments as `acceleration(..., constraint=)`.

    **Arguments:**

    - `lagrangian`: a callable `(q, qdot) -> scalar` for one state.
    - `q`, `qdot`: the state, each of shape `(dof,)`, on the constraints.
    - `constraint`: the constraint function `q -> g(q)`, shape `(m,)`.
    - `force`, `tolerance`, `throw`: as for `acceleration`.

    **Returns:**

    `λ`, of shape `(m,)`.
    """
    q, qdot = as_state(q, qdot)
    if force is not None:
        check_like(force, "force", q, "q")
    check_constraint(constraint, q)
    _, multipliers = _checked_constrained(
        lagrangian, q, qdot, force, constraint, tolerance, throw=throw
    )
    return multipliers


_SINGULAR_CONSTRAINED_MESSAGE = (
    "lagrax.acceleration: the constrained system [[H, Gᵀ], [G, 0]] is singular at "
    "this state (a redundant constraint, G = ∂g/∂q of deficient rank, or a mass "
    "matrix singular on the constraints' tangent space), so q̈ is not determined."
)


def _checked_constrained(lagrangian, q, qdot, force, constraint, tolerance, *, throw):
    """`(q̈, λ)` of the constrained equations under the error policy of
    `acceleration`, the state checked to lie on the constraints."""
    qddot, multipliers, _ = checked_constrained_acceleration(
        lagrangian, q, qdot, force, constraint, throw=throw
    )
    return tuple(
        check_on_constraint(constraint, q, qdot, x, tolerance, throw=throw)
        for x in (qddot, multipliers)
    )


def checked_constrained_acceleration(
    lagrangian: LagrangianLike,
    q: Position,
    qdot: Velocity,
    force: Float[Array, " dof"] | None,
    constraint: ConstraintFn,
    *,
    throw: bool,
) -> tuple[Acceleration, Float[Array, " m"], Bool[Array, ""]]:
    """`(q̈, λ, singular)` of the index-1 constrained equations under the
    singularity policy of `checked_acceleration`, at any state (a solve drifts off
    the constraints: its field is not checked against them). A graph Lagrangian
    under an `EdgeConstraint` takes the sparse Schur-complement path
    (`edge_kkt_solve`); everything else the dense saddle-point solve."""
    if isinstance(constraint, EdgeConstraint) and isinstance(
        lagrangian, AbstractGraphLagrangian
    ):
        check_edge_constraint(constraint, lagrangian.num_nodes, lagrangian.node_dim)
        dl_dq, h, mixed = _graph_parts(lagrangian, q, qdot)
        rhs = dl_dq - mixed if force is None else dl_dq - mixed + force
        qddot, multipliers, singular = edge_kkt_solve(constraint, h, rhs, q, qdot)
    else:
        dl_dq, h, mixed = euler_lagrange_parts(lagrangian, q, qdot)
        rhs = dl_dq - mixed if force is None else dl_dq - mixed + force
        _, jacobian, curvature = constraint_jacobian(constraint, q, qdot)
        qddot, multipliers, singular = kkt_solve(h, rhs, jacobian, curvature)
    if throw:
        qddot = eqx.error_if(qddot, singular, _SINGULAR_CONSTRAINED_MESSAGE)
    else:
        poison = jnp.where(singular, jnp.nan, 1.0).astype(qddot.dtype)
        qddot, multipliers = qddot * poison, multipliers * poison
    return qddot, multipliers, singular


_SINGULAR_MESSAGE = (
    "lagrax.acceleration: the mass matrix ∂²L/∂q̇² is singular (or not finite) at "
    "this state, so the Euler–Lagrange equations do not determine q̈ (for a graph "
    "Lagrangian: or too ill-conditioned for its sparse iterative solve to converge). "
    "Inspect it with lagrax.mass_matrix_info."
)


def checked_acceleration(
    lagrangian: LagrangianLike,
    q: Position,
    qdot: Velocity,
    force: Float[Array, " dof"] | None,
    *,
    throw: bool,
) -> tuple[Acceleration, Bool[Array, ""]]:
    """`(q̈, singular)` under the error policy of `acceleration`, without its
    trace-time checks.

    With `throw=False` a singular state's `q̈` is NaN, and so is its derivative with
    respect to anything upstream (`jnp.where` alone would give a zero gradient,
    and a loss built on a NaN acceleration would look finite to a training loop).
    """
    qddot, singular, _ = acceleration_parts(lagrangian, q, qdot, force)
    if throw:
        return eqx.error_if(qddot, singular, _SINGULAR_MESSAGE), singular
    poison = jnp.where(singular, jnp.nan, 1.0).astype(qddot.dtype)
    return qddot * poison, singular


def acceleration_parts(
    lagrangian: LagrangianLike,
    q: Position,
    qdot: Velocity,
    force: Float[Array, " dof"] | None = None,
) -> tuple[Acceleration, Bool[Array, ""], MassMatrix | BlockSparseMatrix]:
    """`(q̈, singular, H)` from one pass: `acceleration` without the checks and the
    singularity handling, and the mass matrix it solved with."""
    dl_dq, h, mixed = _euler_lagrange_parts(lagrangian, q, qdot)
    return _solve_parts(dl_dq, h, mixed, force)


def _solve_parts(dl_dq, h, mixed, force=None):
    rhs = dl_dq - mixed
    if force is not None:
        rhs = rhs + force
    if isinstance(h, BlockSparseMatrix):
        qddot, singular = h.solve(rhs)
    else:
        qddot, _, singular = solve(h, rhs)
    return qddot, singular, h


def batch_acceleration_parts(
    lagrangian: LagrangianLike,
    q: Float[Array, "batch dof"],
    qdot: Float[Array, "batch dof"],
    force: Float[Array, "batch dof"] | None = None,
) -> tuple[
    Float[Array, "batch dof"],
    Bool[Array, " batch"],
    Float[Array, "batch dof dof"] | BlockSparseMatrix,
]:
    """`acceleration_parts` at a batch of states (the leading axis): the same
    values as its `jax.vmap`, but an `AbstractJetLagrangian` evaluates the whole
    batch in one `batch_jet` (for an `MLPLagrangian`, a pass whose gradient is
    written by hand: the fast path of training on accelerations). A mechanical
    Lagrangian (or a sum with one) is the `vmap` of its structured pass."""
    if not isinstance(lagrangian, AbstractJetLagrangian) or _structured(lagrangian):
        return jax.vmap(acceleration_parts, in_axes=(None, 0, 0, 0))(
            lagrangian, q, qdot, force
        )
    n = q.shape[-1]
    grad, block = lagrangian.batch_jet(q, qdot, jax.vmap(_directions)(qdot))
    return jax.vmap(_solve_parts)(grad[:, :n], block[:, :n, :n], block[:, :n, n], force)


# `mass_matrix` builds a dense array for a graph Lagrangian up to this many
# coordinates (32 MiB in float64); beyond, it refuses and names `graph_mass_matrix`.
_DENSE_GRAPH_MAX_DOF = 2048


def mass_matrix(
    lagrangian: LagrangianLike, q: PositionLike, qdot: VelocityLike
) -> MassMatrix:
    """The mass matrix `H = ∂²L/∂q̇²` at one state.

    For an `AbstractGraphLagrangian` this is the dense form of `graph_mass_matrix`
    (computed at linear cost, then scattered into an `O(dof²)` array), for up to
    2048 coordinates; larger graphs raise a `ValueError`: use `graph_mass_matrix`.

    **Arguments:**

    - `lagrangian`: a callable `(q, qdot) -> scalar` for one state.
    - `q`, `qdot`: the state, each of shape `(dof,)`.

    **Returns:**

    `H`, of shape `(dof, dof)`.
    """
    q, qdot = as_state(q, qdot)
    if isinstance(lagrangian, AbstractGraphLagrangian):
        if q.shape[0] > _DENSE_GRAPH_MAX_DOF:
            raise ValueError(
                f"lagrax.mass_matrix: a dense ({q.shape[0]}, {q.shape[0]}) mass "
                f"matrix of a graph Lagrangian is refused above {_DENSE_GRAPH_MAX_DOF} "
                "coordinates; lagrax.graph_mass_matrix gives its nonzero blocks."
            )
        return graph_mass_matrix(lagrangian, q, qdot).todense()
    return _dense_parts(lagrangian, q, qdot)[1]


def graph_mass_matrix(
    lagrangian: AbstractGraphLagrangian, q: PositionLike, qdot: VelocityLike
) -> BlockSparseMatrix:
    """The mass matrix `H = ∂²L/∂q̇²` of a graph Lagrangian, block sparse.

    Costs `colours × node_dim` Hessian-vector products (see
    `AbstractGraphLagrangian`; `node_dim` of them where the mass matrix is block
    diagonal): linear in the number of nodes.

    **Arguments:**

    - `lagrangian`: an `AbstractGraphLagrangian`.
    - `q`, `qdot`: the state, each of shape `(num_nodes · node_dim,)`.

    **Returns:**

    A `lagrax.BlockSparseMatrix` on the Lagrangian's `mass_graph`: `node_dim ×
    node_dim` blocks, one per node and two per pair of neighbours in it; `.mv(x)`,
    `.solve(b)`, `.todense()`.
    """
    if not isinstance(lagrangian, AbstractGraphLagrangian):
        raise TypeError(
            "`lagrangian` must be a lagrax.AbstractGraphLagrangian (for any other "
            f"use lagrax.mass_matrix), got {type(lagrangian).__name__}."
        )
    q, qdot = as_state(q, qdot)
    return _graph_parts(lagrangian, q, qdot)[1]


def mass_matrix_info(
    lagrangian: LagrangianLike, q: PositionLike, qdot: VelocityLike
) -> MassMatrixInfo:
    """Conditioning of the mass matrix `H = ∂²L/∂q̇²` at one state.

    Use it to see why `acceleration` raised or returned NaN, or to monitor a learned
    Lagrangian's convexity in `q̇` during training. Costs an eigendecomposition on
    top of `mass_matrix`.

    **Arguments:**

    - `lagrangian`: a callable `(q, qdot) -> scalar` for one state.
    - `q`, `qdot`: the state, each of shape `(dof,)`.

    **Returns:**

    A `MassMatrixInfo`.
    """
    q, qdot = as_state(q, qdot)
    h = mass_matrix(lagrangian, q, qdot)
    _, positive_definite, singular = solve(h, jnp.zeros_like(q))
    # After the solve, so that LAPACK calls never overlap (see lagrax._linalg).
    h, _ = jax.lax.optimization_barrier((h, singular))
    eigenvalues = jnp.linalg.eigvalsh(h)
    magnitudes = jnp.abs(eigenvalues)
    return MassMatrixInfo(
        eigenvalues=eigenvalues,
        condition_number=jnp.max(magnitudes) / jnp.min(magnitudes),
        positive_definite=positive_definite,
        singular=singular,
    )


def momentum(
    lagrangian: LagrangianLike,
    q: PositionLike,
    qdot: VelocityLike,
    *,
    constraint: ConstraintFn | None = None,
    tolerance: float | None = None,
) -> Velocity:
    """The canonical momentum `p = ∂L/∂q̇` at one state.

    **Arguments:**

    - `lagrangian`: a callable `(q, qdot) -> scalar` for one state.
    - `q`, `qdot`: the state, each of shape `(dof,)`.
    - `constraint`, `tolerance`: an optional holonomic constraint, as for
        `acceleration`: the state must lie on it (constraint forces do no work
        and leave `p`'s formula as it is).

    **Returns:**

    `p`, of shape `(dof,)`.
    """
    q, qdot = as_state(q, qdot)
    p = gradient_of(lagrangian, q, qdot)[1]
    return _on_constraint(constraint, q, qdot, p, tolerance)


def energy(
    lagrangian: LagrangianLike,
    q: PositionLike,
    qdot: VelocityLike,
    *,
    constraint: ConstraintFn | None = None,
    tolerance: float | None = None,
) -> Scalar:
    """The energy `E = q̇·∂L/∂q̇ − L` (the Hamiltonian) at one state.

    Conserved along the motion when `L` does not depend on time and no force acts
    (holonomic constraints included: their forces do no work).

    **Arguments:**

    - `lagrangian`: a callable `(q, qdot) -> scalar` for one state.
    - `q`, `qdot`: the state, each of shape `(dof,)`.
    - `constraint`, `tolerance`: an optional holonomic constraint, as for
        `acceleration`: the state must lie on it.

    **Returns:**

    `E`, a scalar.
    """
    q, qdot = as_state(q, qdot)
    value, p = jax.value_and_grad(lagrangian, argnums=1)(q, qdot)
    return _on_constraint(constraint, q, qdot, jnp.dot(qdot, p) - value, tolerance)


def _on_constraint(constraint, q, qdot, x, tolerance):
    """`x`, with an error where a constraint is given and `(q, q̇)` is off it."""
    if constraint is None:
        return x
    check_constraint(constraint, q)
    return check_on_constraint(constraint, q, qdot, x, tolerance, throw=True)


def generalized_force(
    lagrangian: LagrangianLike, q: PositionLike, qdot: VelocityLike, qddot: Acceleration
) -> Float[Array, " dof"]:
    """Inverse dynamics: the force `Q = d/dt ∂L/∂q̇ − ∂L/∂q` along `(q, q̇, q̈)`.

    `d/dt ∂L/∂q̇` is one JVP of `∂L/∂q̇` in the direction `(q̇, q̈)`; no mass matrix
    is formed (a mechanical Lagrangian uses its structure instead:
    `Q = M q̈ + (∂M/∂q · q̇) q̇ − ∂L/∂q`). `Q` vanishes exactly when `q̈` satisfies
    the free Euler–Lagrange equations, and `acceleration(L, q, qdot, force=Q)`
    inverts this map.

    **Arguments:**

    - `lagrangian`: a callable `(q, qdot) -> scalar` for one state.
    - `q`, `qdot`, `qddot`: the state and acceleration, each of shape `(dof,)`.

    **Returns:**

    `Q`, of shape `(dof,)`.
    """
    q, qdot = as_state(q, qdot)
    check_like(qddot, "qddot", q, "q")
    if _structured(lagrangian):
        # d/dt ∂L/∂q̇ = M q̈ + (∂M/∂q · q̇) q̇: the structured parts, no autodiff of L.
        dl_dq, m, mixed = _dense_parts(lagrangian, q, qdot)
        return m @ qddot + mixed - dl_dq
    grad_fn = jax.grad(lagrangian, argnums=(0, 1))
    (dl_dq, _), (_, dp_dt) = jax.jvp(grad_fn, (q, qdot), (qdot, qddot))
    return dp_dt - dl_dq
