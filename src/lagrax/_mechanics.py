"""The Euler–Lagrange equations of a Lagrangian `L(q, q̇)`, for one state.

    H q̈ = ∂L/∂q − (∂²L/∂q̇∂q) q̇ + Q,      H = ∂²L/∂q̇²

`(∂²L/∂q̇∂q) q̇` is the derivative of `∂L/∂q̇` in the direction `(q̇, 0)`, and the
columns of `H` are its derivatives in the directions `(0, e_i)`: all `n + 1` come
from one forward-over-reverse pass with a batch of `n + 1` tangents. The full
`2n × 2n` Hessian of `L` is never formed and nothing is pseudo-inverted.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jaxtyping import Array, Bool, Float

from ._custom_types import (
    Acceleration,
    LagrangianLike,
    MassMatrix,
    Position,
    Scalar,
    Velocity,
)
from ._lagrangian import AbstractJetLagrangian
from ._misc import check_like, check_state


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
) -> tuple[Float[Array, " dof"], MassMatrix, Float[Array, " dof"]]:
    """`(∂L/∂q, H, (∂²L/∂q̇∂q) q̇)` at one state."""
    n = q.shape[0]
    directions = _directions(qdot)
    if isinstance(lagrangian, AbstractJetLagrangian):
        grad, block = lagrangian.jet(q, qdot, directions)
        return grad[:n], block[:n, :n], block[:n, n]

    grad_fn = jax.grad(lambda x: lagrangian(x[:n], x[n:]))
    x = jnp.concatenate([q, qdot])
    # vmap over tangents only: the primal forward and backward passes run once.
    grad, hvps = jax.vmap(lambda u: jax.jvp(grad_fn, (x,), (u,)), out_axes=(None, 0))(
        directions.T
    )
    # H is symmetric, so the rows we hold are its columns.
    return grad[:n], hvps[:n, n:], hvps[n, n:]


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


# jaxlib's batched LAPACK kernels (getrf, potrf, trsm, ...) spread their batch over
# XLA's CPU intra-op thread pool and block the calling pool worker until it is done;
# two such kernels running at once can deadlock the pool (seen with jax 0.10.2 on
# two cores: a vmapped `acceleration` hung in getrf and trsm forever). Mass matrices
# are small, so up to this size they are factorized with unrolled elementwise jnp
# operations instead: no custom calls at all, fused by XLA, and faster besides.
_UNROLLED_MAX_DOF = 8


def _solve_mass_matrix(
    h: MassMatrix, rhs: Float[Array, " dof"]
) -> tuple[Float[Array, " dof"], Bool[Array, ""], Bool[Array, ""]]:
    """Solve `H x = rhs`, reporting whether `H` is positive definite and singular.

    Returns `(x, positive_definite, singular)`. `singular` is set when the
    factorization's reciprocal condition estimate (smallest over largest pivot)
    falls below `n·eps` or the result is not finite.
    """
    n = h.shape[0]
    if n <= _UNROLLED_MAX_DOF:
        positive_definite = _is_positive_definite(jax.lax.stop_gradient(h))
        x, pivots = _pivoted_solve(h, rhs)
    else:
        x, positive_definite, pivots = _lapack_solve(h, rhs)
    rcond = jnp.min(pivots) / jnp.max(pivots)
    tolerance = n * jnp.finfo(h.dtype).eps
    singular = ~(rcond > tolerance) | ~jnp.all(jnp.isfinite(x))
    return x, positive_definite, singular


def _is_positive_definite(h: MassMatrix) -> Bool[Array, ""]:
    """Whether an unrolled Cholesky factorization of `h` succeeds."""
    n = h.shape[0]
    factor = {}
    ok = jnp.array(True)
    for j in range(n):
        d = h[j, j] - sum((factor[j, k] ** 2 for k in range(j)), start=0.0)
        ok = ok & (d > 0)
        root = jnp.sqrt(jnp.where(d > 0, d, 1.0))
        for i in range(j + 1, n):
            off = h[i, j] - sum(
                (factor[i, k] * factor[j, k] for k in range(j)), start=0.0
            )
            factor[i, j] = off / root
    return ok


def _pivoted_solve(
    h: MassMatrix, rhs: Float[Array, " dof"]
) -> tuple[Float[Array, " dof"], Float[Array, " dof"]]:
    """Gaussian elimination with partial pivoting, unrolled over the columns.

    Returns the solution and the magnitudes of the pivots (the diagonal of `U`).
    """
    n = h.shape[0]
    rows = jnp.arange(n)
    augmented = jnp.concatenate([h, rhs[:, None]], axis=1)
    for k in range(n):
        pivot = k + jnp.argmax(jnp.abs(augmented[k:, k]))
        order = jnp.where(rows == k, pivot, jnp.where(rows == pivot, k, rows))
        augmented = augmented[order]
        factors = jnp.where(rows > k, augmented[:, k] / augmented[k, k], 0.0)
        augmented = augmented - factors[:, None] * augmented[k][None, :]
    x = [None] * n
    for i in reversed(range(n)):
        known = sum((augmented[i, j] * x[j] for j in range(i + 1, n)), start=0.0)
        x[i] = (augmented[i, n] - known) / augmented[i, i]
    return jnp.stack(x), jnp.abs(jnp.diagonal(augmented[:, :n]))


def _lapack_solve(
    h: MassMatrix, rhs: Float[Array, " dof"]
) -> tuple[Float[Array, " dof"], Bool[Array, ""], Float[Array, " dof"]]:
    """Cholesky where `h` is positive definite, else LU, for larger matrices.

    The LAPACK calls are chained through `optimization_barrier` so that no two of
    them run concurrently (see `_UNROLLED_MAX_DOF`).
    """
    n = h.shape[0]
    eye = jnp.eye(n, dtype=h.dtype)
    test = jnp.linalg.cholesky(jax.lax.stop_gradient(h))
    positive_definite = jnp.all(jnp.isfinite(test))
    # Each factorization sees a harmless matrix when its branch is not taken, so
    # neither the value nor the gradient of the discarded branch can be NaN.
    chol = jnp.linalg.cholesky(jnp.where(positive_definite, h, eye))
    chol, lu_input = jax.lax.optimization_barrier(
        (chol, jnp.where(positive_definite, eye, h))
    )
    chol_x = jsl.cho_solve((chol, True), rhs)
    chol_x, lu_input = jax.lax.optimization_barrier((chol_x, lu_input))
    lu, piv = jsl.lu_factor(lu_input)
    x = jnp.where(positive_definite, chol_x, jsl.lu_solve((lu, piv), rhs))
    pivots = jnp.where(positive_definite, jnp.diag(chol) ** 2, jnp.abs(jnp.diag(lu)))
    return x, positive_definite, pivots


def acceleration(
    lagrangian: LagrangianLike,
    q: Position,
    qdot: Velocity,
    *,
    force: Float[Array, " dof"] | None = None,
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
    `jit`; with `throw=False` the result is explicitly NaN, for callers (such as
    training loops) that count and skip such states. `mass_matrix_info` reports the
    conditioning.

    Works under `jax.jit`, `jax.vmap` and `jax.grad`, in float32 and float64.

    **Arguments:**

    - `lagrangian`: a callable `(q, qdot) -> scalar` for one state, such as an
        `AbstractLagrangian`.
    - `q`, `qdot`: the state, each of shape `(dof,)`.
    - `force`: an optional generalized (non-conservative) force `Q`, shape `(dof,)`.
    - `throw`: whether a singular mass matrix raises (default) or gives NaN.

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
    check_state(q, qdot)
    if force is not None:
        check_like(force, "force", q, "q")
    qddot, singular, _ = acceleration_parts(lagrangian, q, qdot, force)
    if throw:
        return eqx.error_if(
            qddot,
            singular,
            "lagrax.acceleration: the mass matrix ∂²L/∂q̇² is singular (or not "
            "finite) at this state, so the Euler–Lagrange equations do not determine "
            "q̈. Inspect it with lagrax.mass_matrix_info.",
        )
    return jnp.where(singular, jnp.nan, qddot)


def acceleration_parts(
    lagrangian: LagrangianLike,
    q: Position,
    qdot: Velocity,
    force: Float[Array, " dof"] | None = None,
) -> tuple[Acceleration, Bool[Array, ""], MassMatrix]:
    """`(q̈, singular, H)` from one pass: `acceleration` without the checks and the
    singularity handling, and the mass matrix it solved with."""
    dl_dq, h, mixed = _euler_lagrange_parts(lagrangian, q, qdot)
    rhs = dl_dq - mixed
    if force is not None:
        rhs = rhs + force
    qddot, _, singular = _solve_mass_matrix(h, rhs)
    return qddot, singular, h


def definiteness_shortfall(h: MassMatrix, margin: float) -> Float[Array, ""]:
    """`Σ_k max(0, margin − d_k)` over the pivots `d_k` of an unrolled `LDLᵀ`
    factorization of `h` (no pivoting; each pivot divides later ones only once it is
    floored at `margin`, so the sum stays finite for any `h`). Zero exactly when every
    pivot is at least `margin`, which makes `h` positive definite; differentiable."""
    n = h.shape[0]
    lower, pivots = {}, []
    for j in range(n):
        d = h[j, j] - sum((lower[j, k] ** 2 * pivots[k] for k in range(j)), start=0.0)
        pivots.append(d)
        floored = jnp.maximum(d, margin)
        for i in range(j + 1, n):
            off = h[i, j] - sum(
                (lower[i, k] * lower[j, k] * pivots[k] for k in range(j)), start=0.0
            )
            lower[i, j] = off / floored
    return sum((jax.nn.relu(margin - d) for d in pivots), start=0.0)


def mass_matrix(lagrangian: LagrangianLike, q: Position, qdot: Velocity) -> MassMatrix:
    """The mass matrix `H = ∂²L/∂q̇²` at one state.

    **Arguments:**

    - `lagrangian`: a callable `(q, qdot) -> scalar` for one state.
    - `q`, `qdot`: the state, each of shape `(dof,)`.

    **Returns:**

    `H`, of shape `(dof, dof)`.
    """
    check_state(q, qdot)
    return _euler_lagrange_parts(lagrangian, q, qdot)[1]


def mass_matrix_info(
    lagrangian: LagrangianLike, q: Position, qdot: Velocity
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
    check_state(q, qdot)
    h = mass_matrix(lagrangian, q, qdot)
    _, positive_definite, singular = _solve_mass_matrix(h, jnp.zeros_like(q))
    # After the solve, so that LAPACK calls never overlap (see _UNROLLED_MAX_DOF).
    h, _ = jax.lax.optimization_barrier((h, singular))
    eigenvalues = jnp.linalg.eigvalsh(h)
    magnitudes = jnp.abs(eigenvalues)
    return MassMatrixInfo(
        eigenvalues=eigenvalues,
        condition_number=jnp.max(magnitudes) / jnp.min(magnitudes),
        positive_definite=positive_definite,
        singular=singular,
    )


def momentum(lagrangian: LagrangianLike, q: Position, qdot: Velocity) -> Velocity:
    """The canonical momentum `p = ∂L/∂q̇` at one state.

    **Arguments:**

    - `lagrangian`: a callable `(q, qdot) -> scalar` for one state.
    - `q`, `qdot`: the state, each of shape `(dof,)`.

    **Returns:**

    `p`, of shape `(dof,)`.
    """
    check_state(q, qdot)
    return jax.grad(lagrangian, argnums=1)(q, qdot)


def energy(lagrangian: LagrangianLike, q: Position, qdot: Velocity) -> Scalar:
    """The energy `E = q̇·∂L/∂q̇ − L` (the Hamiltonian) at one state.

    Conserved along the motion when `L` does not depend on time and no force acts.

    **Arguments:**

    - `lagrangian`: a callable `(q, qdot) -> scalar` for one state.
    - `q`, `qdot`: the state, each of shape `(dof,)`.

    **Returns:**

    `E`, a scalar.
    """
    check_state(q, qdot)
    value, p = jax.value_and_grad(lagrangian, argnums=1)(q, qdot)
    return jnp.dot(qdot, p) - value


def generalized_force(
    lagrangian: LagrangianLike, q: Position, qdot: Velocity, qddot: Acceleration
) -> Float[Array, " dof"]:
    """Inverse dynamics: the force `Q = d/dt ∂L/∂q̇ − ∂L/∂q` along `(q, q̇, q̈)`.

    `d/dt ∂L/∂q̇` is one JVP of `∂L/∂q̇` in the direction `(q̇, q̈)`; no mass matrix
    is formed. `Q` vanishes exactly when `q̈` satisfies the free Euler–Lagrange
    equations, and `acceleration(L, q, qdot, force=Q)` inverts this map.

    **Arguments:**

    - `lagrangian`: a callable `(q, qdot) -> scalar` for one state.
    - `q`, `qdot`, `qddot`: the state and acceleration, each of shape `(dof,)`.

    **Returns:**

    `Q`, of shape `(dof,)`.
    """
    check_state(q, qdot)
    check_like(qddot, "qddot", q, "q")
    grad_fn = jax.grad(lagrangian, argnums=(0, 1))
    (dl_dq, _), (_, dp_dt) = jax.jvp(grad_fn, (q, qdot), (qdot, qddot))
    return dp_dt - dl_dq
