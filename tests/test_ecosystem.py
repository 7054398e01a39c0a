"""lagrax's pieces as the ecosystem's abstractions: `BlockSparseMatrix` is a
`lineax.AbstractLinearOperator`, `PivotedLU` a `lineax.AbstractLinearSolver`,
`Yoshida4` a `diffrax.AbstractWrappedSolver`."""

import diffrax
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest

import lagrax


def _random_blocks(graph: lagrax.Graph, block: int, seed: int):
    rng = np.random.default_rng(seed)
    pairs = graph.pairs[0].size
    diagonal = rng.normal(size=(graph.num_nodes, block, block)) + 4 * np.eye(block)
    return lagrax.BlockSparseMatrix(
        jnp.asarray(diagonal),
        jnp.asarray(rng.normal(size=(pairs, block, block))),
        jnp.asarray(rng.normal(size=(pairs, block, block))),
        graph,
    )


def test_lineax_solves_a_block_sparse_matrix():
    """On a ring of 2-blocks (not symmetric): Lineax's default solver (dense LU)
    and BiCGStab (matrix-vector products only) agree with the dense solve and with
    `BlockSparseMatrix.solve`; gradients in the blocks match the dense ones."""
    ring = lagrax.Graph(np.arange(5), (np.arange(5) + 1) % 5, 5)
    matrix = _random_blocks(ring, 2, seed=0)
    rhs = jnp.sin(jnp.arange(10.0))
    expected = np.linalg.solve(np.asarray(matrix.as_matrix()), np.asarray(rhs))
    assert matrix.in_structure() == jax.ShapeDtypeStruct((10,), matrix.diagonal.dtype)
    default = lx.linear_solve(matrix, rhs).value
    iterative = lx.linear_solve(
        matrix, rhs, lx.BiCGStab(rtol=1e-12, atol=1e-12, max_steps=100)
    ).value
    own, failed = matrix.solve(rhs)
    assert not failed
    for x in (default, iterative, own):
        np.testing.assert_allclose(x, expected, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(matrix.T.mv(rhs), matrix.as_matrix().T @ rhs)

    def loss(matrix):
        return jnp.sum(lx.linear_solve(matrix, rhs).value ** 2)

    def dense_loss(dense):
        return jnp.sum(jnp.linalg.solve(dense, rhs) ** 2)

    # The gradient in the blocks is the dense gradient on the pattern.
    got = jax.grad(loss)(matrix)
    want = jax.grad(dense_loss)(matrix.as_matrix()).reshape(5, 2, 5, 2)
    nodes = np.arange(5)
    i, j = ring.pairs
    np.testing.assert_allclose(got.diagonal, want[nodes, :, nodes, :], rtol=1e-9)
    np.testing.assert_allclose(got.upper, want[i, :, j, :], rtol=1e-9)
    np.testing.assert_allclose(got.lower, want[j, :, i, :], rtol=1e-9)


def test_lineax_sees_the_static_pattern():
    """Scalar blocks on a chain in node order are tridiagonal, without edges
    diagonal (and Lineax then picks its solver for that structure); a ring or a
    larger block is neither. `lineax.tridiagonal` reads the blocks."""
    chain = _random_blocks(lagrax.Graph(np.arange(5), np.arange(1, 6), 6), 1, 1)
    assert lx.is_tridiagonal(chain) and not lx.is_diagonal(chain)
    auto = lx.AutoLinearSolver(well_posed=True)
    assert isinstance(auto.select_solver(chain), lx.Tridiagonal)
    dense = chain.as_matrix()
    for got, offset in zip(lx.tridiagonal(chain), (0, -1, 1)):
        np.testing.assert_array_equal(got, jnp.diagonal(dense, offset))
    np.testing.assert_allclose(
        lx.linear_solve(chain, jnp.ones(6)).value,
        np.linalg.solve(np.asarray(dense), np.ones(6)),
        rtol=1e-12,
    )
    none = np.zeros(0, np.int64)
    isolated = _random_blocks(lagrax.Graph(none, none, 4), 1, 2)
    assert lx.is_diagonal(isolated)
    assert isinstance(auto.select_solver(isolated), lx.Diagonal)
    ring = _random_blocks(lagrax.Graph(np.arange(4), (np.arange(4) + 1) % 4, 4), 1, 3)
    blocks = _random_blocks(lagrax.Graph(np.arange(2), np.arange(1, 3), 3), 2, 4)
    for matrix in (ring, blocks):
        assert not lx.is_tridiagonal(matrix) and not lx.is_diagonal(matrix)
        assert not lx.is_symmetric(matrix)  # claims nothing of its values
    np.testing.assert_array_equal(
        lx.tridiagonal(blocks)[2], jnp.diagonal(blocks.as_matrix(), 1)
    )


@pytest.mark.parametrize("n", [3, 12])  # unrolled and looped elimination
def test_pivoted_lu_is_a_lineax_solver(n):
    """`lagrax.PivotedLU` solves like `jnp.linalg.solve`, gradients included, and
    reports a matrix singular by lagrax's criterion (`mass_matrix_info`'s) as
    `lineax.RESULTS.singular`."""
    rng = np.random.default_rng(n)
    matrix = jnp.asarray(rng.normal(size=(n, n)))
    rhs = jnp.asarray(rng.normal(size=n))

    def solve(matrix, rhs):
        operator = lx.MatrixLinearOperator(matrix)
        return lx.linear_solve(operator, rhs, lagrax.PivotedLU()).value

    np.testing.assert_allclose(
        solve(matrix, rhs), np.linalg.solve(matrix, rhs), rtol=1e-9
    )
    got = jax.grad(lambda m, b: jnp.sum(jnp.sin(solve(m, b))), argnums=(0, 1))(
        matrix, rhs
    )
    want = jax.grad(
        lambda m, b: jnp.sum(jnp.sin(jnp.linalg.solve(m, b))), argnums=(0, 1)
    )(matrix, rhs)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-8, atol=1e-12)

    # Rank-deficient to round-off: the last row a combination of the others.
    singular = matrix.at[-1].set(matrix[0] + 0.5 * matrix[1])
    solution = lx.linear_solve(
        lx.MatrixLinearOperator(singular), rhs, lagrax.PivotedLU(), throw=False
    )
    assert solution.result == lx.RESULTS.singular


def test_pivoted_lu_refuses_what_it_cannot_solve():
    wide = lx.MatrixLinearOperator(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="PivotedLU.*square"):
        lx.linear_solve(wide, jnp.ones(2), lagrax.PivotedLU())


def test_yoshida4_is_a_wrapped_solver():
    """Diffrax's `isinstance` checks see the base method through `Yoshida4`, and
    `.solver` is its `base`."""
    verlet = lagrax.VelocityVerlet()
    composed = lagrax.Yoshida4(base=verlet)
    assert isinstance(composed, diffrax.AbstractWrappedSolver)
    assert composed.solver is composed.base is verlet
    assert isinstance(composed, lagrax.VelocityVerlet)
    assert isinstance(lagrax.Yoshida4(), lagrax.AbstractVariationalSolver)
    assert not isinstance(lagrax.Yoshida4(), lagrax.VelocityVerlet)
