"""Small dense linear algebra for mass matrices and Newton Jacobians.

Every solve here reports whether its matrix is singular by one criterion: the
reciprocal condition estimate of its factorization (smallest over largest pivot)
below `n·eps`, or a non-finite result. `lagrax.acceleration`, the implicit solvers'
Newton iterations and `mass_matrix_info` all use it, so no path integrates a system
that another calls singular.
"""

from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import lineax as lx
from jaxtyping import Array, Bool, Float


# jaxlib's batched LAPACK kernels (getrf, potrf, trsm, ...) spread their batch over
# XLA's CPU intra-op thread pool and block the calling pool worker until it is done;
# two such kernels running at once can deadlock the pool (seen with jax 0.10.2 on
# two cores: a vmapped `acceleration` hung in getrf and trsm forever, and XLA drops
# the `optimization_barrier`s meant to keep them apart). Mass matrices are small, so
# up to this size they are factorized with unrolled elementwise jnp operations
# instead: no custom calls at all, fused by XLA, and faster besides;
_UNROLLED_MAX_DOF = 8
# and up to this size by the same elimination written as loops over the columns
# (still no custom calls; `n` sequential steps, each a rank-one update). LAPACK
# only above it.
_LOOPED_MAX_DOF = 64


def solve(
    h: Float[Array, "n n"], rhs: Float[Array, " n"]
) -> tuple[Float[Array, " n"], Bool[Array, ""], Bool[Array, ""]]:
    """Solve `H x = rhs`, reporting whether `H` is positive definite and singular.

    Returns `(x, positive_definite, singular)`. `singular` is set when the
    factorization's reciprocal condition estimate (smallest over largest pivot)
    falls below `n·eps` or the result is not finite.

    Not `lineax.linear_solve` with `PivotedLU` (the same elimination), although
    that differentiates faster: Lineax solves the tangent and transposed systems
    of its derivatives with `throw=True` whatever the primal's `throw`, so the
    gradient at a singular mass matrix would raise, where lagrax's `throw=False`
    promises a NaN (which `lagrax.fit` skips). The elimination is differentiated
    as it stands.
    """
    n = h.shape[0]
    if n <= _UNROLLED_MAX_DOF:
        positive_definite = _is_positive_definite(jax.lax.stop_gradient(h))
        x, pivots = _pivoted_solve(h, rhs)
    elif n <= _LOOPED_MAX_DOF:
        positive_definite = _looped_is_positive_definite(jax.lax.stop_gradient(h))
        x, pivots = _looped_pivoted_solve(h, rhs)
    else:
        x, positive_definite, pivots = _lapack_solve(h, rhs)
    return x, positive_definite, _singular(pivots, x)


def _is_positive_definite(h: Float[Array, "n n"]) -> Bool[Array, ""]:
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


def inverse(
    matrix: Float[Array, "n n"],
) -> tuple[Float[Array, "n n"], Bool[Array, ""]]:
    """`(matrix⁻¹, singular)`, with `singular` by the criterion of `solve`.

    For the Newton iterations of the implicit solvers, which apply one Jacobian's
    inverse to several residuals: their systems have a few unknowns, where a LAPACK
    triangular solve per iteration costs far more in call overhead than in
    arithmetic.
    """
    eye = jnp.eye(matrix.shape[0], dtype=matrix.dtype)
    inv, pivots = _eliminate(matrix, eye)
    return inv, _singular(pivots, inv)


def _eliminate(
    matrix: Float[Array, "n n"], rhs: Float[Array, "n ..."]
) -> tuple[Float[Array, "n ..."], Float[Array, " n"]]:
    """Gaussian elimination with partial pivoting: `(matrix⁻¹ rhs, |pivots|)`;
    unrolled, looped or LAPACK's by size (see `_UNROLLED_MAX_DOF`)."""
    n = matrix.shape[0]
    if n <= _UNROLLED_MAX_DOF:
        return _pivoted_solve(matrix, rhs)
    if n <= _LOOPED_MAX_DOF:
        return _looped_pivoted_solve(matrix, rhs)
    lu, piv = jsl.lu_factor(matrix)
    return jsl.lu_solve((lu, piv), rhs), jnp.abs(jnp.diag(lu))


class PivotedLU(lx.AbstractLinearSolver):
    """lagrax's dense linear solve as a `lineax` linear solver: Gaussian
    elimination with partial pivoting in plain `jnp` operations, with lagrax's
    singularity criterion.

    Up to 8 rows the elimination is unrolled, up to 64 it is a loop over the
    columns; neither calls a LAPACK kernel, which on CPU avoids the deadlock of
    concurrent batched LAPACK calls (see `lagrax._linalg`) and, for the small
    matrices of mechanics under `vmap`, is 2–7× faster than `lineax.LU` at 2–4
    rows and comparable at 8 (float32, a batch of 1024); at 20 rows LAPACK is
    2.6× faster. Above 64 rows it is LAPACK's LU, as `lineax.LU`. The result is
    `lineax.RESULTS.singular` when the reciprocal condition estimate (smallest over
    largest pivot) is below `n·eps` or the solution is not finite: the criterion
    of `lagrax.acceleration` and `lagrax.mass_matrix_info`. Nothing is factorized
    ahead (`init` keeps the matrix): each solve eliminates once, with the
    right-hand side alongside. Square operators on one flat array only.

    Derivatives are Lineax's: a second solve, 2–5× faster under `vmap` than
    autodiff through the elimination. lagrax's own `acceleration` still uses the
    latter, because Lineax's derivative solves raise at a singular matrix even
    under `throw=False` (measurements: the graphs guide, "With Lineax").

    ```python
    operator = lineax.MatrixLinearOperator(h)
    x = lineax.linear_solve(operator, b, lagrax.PivotedLU()).value
    ```
    """

    def init(self, operator: lx.AbstractLinearOperator, options: dict[str, Any]):
        del options
        structures = (operator.in_structure(), operator.out_structure())
        if not all(
            isinstance(s, jax.ShapeDtypeStruct) and len(s.shape) == 1
            for s in structures
        ) or (operator.in_size() != operator.out_size()):
            raise ValueError(
                "lagrax.PivotedLU solves square systems on flat vectors: the "
                "operator's input and output must be single 1-D arrays of one size, "
                f"got {structures[0]} and {structures[1]}."
            )
        return operator.as_matrix()

    def compute(
        self, state: Float[Array, "n n"], vector: Float[Array, " n"], options
    ) -> tuple[Float[Array, " n"], lx.RESULTS, dict[str, Any]]:
        del options
        x, pivots = _eliminate(state, vector)
        result = lx.RESULTS.where(
            _singular(pivots, x),
            lx.RESULTS.singular,
            lx.RESULTS.successful,
        )
        return x, result, {}

    def transpose(self, state: Float[Array, "n n"], options: dict[str, Any]):
        return state.T, options

    def conj(self, state: Float[Array, "n n"], options: dict[str, Any]):
        return state.conj(), options

    def assume_full_rank(self) -> bool:
        return True

    # What Lineax 0.0.8 (pyproject's floor) asks instead of `assume_full_rank`.
    def allow_dependent_columns(self, operator: lx.AbstractLinearOperator) -> bool:
        return False

    def allow_dependent_rows(self, operator: lx.AbstractLinearOperator) -> bool:
        return False


PivotedLU.__init__.__doc__ = """**Arguments:** None"""


def _singular(pivots: Float[Array, " n"], x: Array) -> Bool[Array, ""]:
    rcond = jnp.min(pivots) / jnp.max(pivots)
    tolerance = pivots.shape[0] * float(jnp.finfo(pivots.dtype).eps)
    return ~(rcond > tolerance) | ~jnp.all(jnp.isfinite(x))


def _pivoted_solve(
    h: Float[Array, "n n"], rhs: Float[Array, "n ..."]
) -> tuple[Float[Array, "n ..."], Float[Array, " n"]]:
    """Gaussian elimination with partial pivoting, unrolled over the columns.

    Returns the solution and the magnitudes of the pivots (the diagonal of `U`).
    """
    n = h.shape[0]
    rows = jnp.arange(n)
    augmented = jnp.concatenate([h, rhs.reshape(n, -1)], axis=1)
    for k in range(n):
        pivot = k + jnp.argmax(jnp.abs(augmented[k:, k]))
        order = jnp.where(rows == k, pivot, jnp.where(rows == pivot, k, rows))
        augmented = augmented[order]
        factors = jnp.where(rows > k, augmented[:, k] / augmented[k, k], 0.0)
        augmented = augmented - factors[:, None] * augmented[k][None, :]
    x: dict[int, Array] = {}
    for i in reversed(range(n)):
        known = sum((augmented[i, j] * x[j] for j in range(i + 1, n)), start=0.0)
        x[i] = (augmented[i, n:] - known) / augmented[i, i]
    solution = jnp.stack([x[i] for i in range(n)]).reshape(rhs.shape)
    return solution, jnp.abs(jnp.diagonal(augmented[:, :n]))


def _looped_pivoted_solve(
    h: Float[Array, "n n"], rhs: Float[Array, "n ..."]
) -> tuple[Float[Array, "n ..."], Float[Array, " n"]]:
    """`_pivoted_solve` as loops over the columns (the same elimination, the same
    pivots), for matrices too large to unroll: elementwise operations only, so
    batches of them (under `vmap`) need no LAPACK kernels either."""
    n = h.shape[0]
    rows = jnp.arange(n)
    augmented = jnp.concatenate([h, rhs.reshape(n, -1)], axis=1)

    def eliminate(k, augmented):
        below = jnp.where(rows >= k, jnp.abs(augmented[:, k]), -1)
        pivot = jnp.argmax(below)
        row, pivot_row = augmented[k], augmented[pivot]
        augmented = augmented.at[pivot].set(row).at[k].set(pivot_row)
        factors = jnp.where(rows > k, augmented[:, k] / pivot_row[k], 0.0)
        return augmented - factors[:, None] * pivot_row[None, :]

    augmented = jax.lax.fori_loop(0, n, eliminate, augmented)
    upper, reduced = augmented[:, :n], augmented[:, n:]

    def substitute(step, x):
        i = n - 1 - step
        known = jnp.where(rows > i, upper[i], 0.0) @ x
        return x.at[i].set((reduced[i] - known) / upper[i, i])

    x = jax.lax.fori_loop(0, n, substitute, jnp.zeros_like(reduced))
    return x.reshape(rhs.shape), jnp.abs(jnp.diagonal(upper))


def _looped_is_positive_definite(h: Float[Array, "n n"]) -> Bool[Array, ""]:
    """Whether symmetric elimination without pivoting keeps every pivot positive
    (which, for a symmetric matrix, is positive definiteness), as loops."""
    n = h.shape[0]
    rows = jnp.arange(n)

    def eliminate(k, carry):
        a, ok = carry
        d = a[k, k]
        ok = ok & (d > 0)
        factors = jnp.where(rows > k, a[:, k] / jnp.where(d > 0, d, 1.0), 0.0)
        return a - factors[:, None] * a[k][None, :], ok

    _, ok = jax.lax.fori_loop(0, n, eliminate, (h, jnp.array(True)))
    return ok


def _lapack_solve(
    h: Float[Array, "n n"], rhs: Float[Array, " n"]
) -> tuple[Float[Array, " n"], Bool[Array, ""], Float[Array, " n"]]:
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


def definiteness_shortfall(h: Float[Array, "n n"], margin: float) -> Float[Array, ""]:
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
    return jnp.asarray(sum((jax.nn.relu(margin - d) for d in pivots), start=0.0))
