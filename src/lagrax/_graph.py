"""Sparse linear algebra on a static graph, for Lagrangians that are sums of local
densities (`AbstractGraphLagrangian`).

The Hessian of such a Lagrangian, and the Jacobian of any map whose `i`-th block
depends only on node `i` and its neighbours, is block sparse: one `b × b` block per
node and two per neighbouring pair. Three pieces keep every computation on it linear
in the number of nodes:

- `Graph`: the static pattern, with a distance-2 colouring of its nodes (two nodes
  that are neighbours, or share a neighbour, get different colours).
- `sparse_jacobian`: all nonzero blocks from `colours × b` Jacobian-vector
  products, one per colour and block component: a product with the sum of the
  unit vectors of one colour's nodes hits each row block at most once
  (Curtis, Powell & Reid, 1974). A ring needs 3–5 colours, a square lattice 5.
- `BlockSparseMatrix.solve`: for a block-diagonal matrix, each block's inverse;
  for a chain or ring of scalars, a direct tridiagonal solve; otherwise BiCGStab,
  right-preconditioned with the inverses of the diagonal blocks (block Jacobi), to
  a relative residual of `100·eps`. The last two are differentiated implicitly by
  `jax.lax.custom_linear_solve`. No dense `N × N` array is ever formed.
"""

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple, TypeVar

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float

from ._linalg import _LOOPED_MAX_DOF, inverse
from ._misc import check_int


#: Node indices: an integer array or a sequence of ints (checked by `Graph`).
Indices = ArrayLike | Sequence


class Graph:
    """A static graph on `num_nodes` nodes with directed edges `senders[k] →
    receivers[k]`: the pattern of a graph Lagrangian's densities.

    Immutable and hashable (it is a static field of the models that hold it), built
    from concrete integer arrays, and validated once here. Derived, and cached: the
    unordered pairs of distinct neighbouring nodes (`pairs`), which is the block
    pattern of the mass matrix, and a distance-2 colouring of the nodes.
    """

    senders: np.ndarray
    receivers: np.ndarray
    num_nodes: int

    def __init__(
        self,
        senders: Indices,
        receivers: Indices,
        num_nodes: int,
    ):
        num_nodes = check_int(num_nodes, "num_nodes")
        arrays = []
        for name, value in (("senders", senders), ("receivers", receivers)):
            try:
                array = np.asarray(value)
            except jax.errors.TracerArrayConversionError:
                raise TypeError(
                    f"`{name}` must be a concrete array (the graph is static), got a "
                    "traced value; build the model outside jit."
                ) from None
            if array.ndim != 1:
                raise ValueError(
                    f"`{name}` must be a 1-D array of node indices, got shape "
                    f"{array.shape}."
                )
            if array.size and not np.issubdtype(array.dtype, np.integer):
                raise TypeError(
                    f"`{name}` must hold integer node indices, got dtype {array.dtype}."
                )
            array = array.astype(np.int64)
            if array.size and (array.min() < 0 or array.max() >= num_nodes):
                bad = array[(array < 0) | (array >= num_nodes)][0]
                raise ValueError(
                    f"`{name}` must hold node indices in [0, num_nodes={num_nodes}), "
                    f"got {bad}."
                )
            array.setflags(write=False)
            arrays.append(array)
        if arrays[0].shape != arrays[1].shape:
            raise ValueError(
                "`senders` and `receivers` must have the same length (one entry per "
                f"edge), got {arrays[0].size} and {arrays[1].size}."
            )
        self.senders, self.receivers = arrays
        self.num_nodes = num_nodes

    def __repr__(self) -> str:
        return f"Graph(num_nodes={self.num_nodes}, num_edges={self.senders.size})"

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, Graph)
            and self.num_nodes == other.num_nodes
            and np.array_equal(self.senders, other.senders)
            and np.array_equal(self.receivers, other.receivers)
        )

    @functools.cached_property
    def _hash(self) -> int:
        return hash((self.num_nodes, self.senders.tobytes(), self.receivers.tobytes()))

    @functools.cached_property
    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """`(i, j)` with `i < j`: each unordered pair of distinct neighbours once."""
        distinct = self.senders != self.receivers
        low = np.minimum(self.senders, self.receivers)[distinct]
        high = np.maximum(self.senders, self.receivers)[distinct]
        unique = np.unique(low * self.num_nodes + high)
        return unique // self.num_nodes, unique % self.num_nodes

    @functools.cached_property
    def colours(self) -> np.ndarray:
        """A greedy distance-2 colouring: `colours[i]` for each node."""
        i, j = self.pairs
        neighbours = [[] for _ in range(self.num_nodes)]
        for a, b in zip(i.tolist(), j.tolist()):
            neighbours[a].append(b)
            neighbours[b].append(a)
        colours = np.full(self.num_nodes, -1, dtype=np.int64)
        for node in range(self.num_nodes):
            taken = set()
            for other in neighbours[node]:
                taken.add(colours[other])
                taken.update(colours[k] for k in neighbours[other])
            colour = 0
            while colour in taken:
                colour += 1
            colours[node] = colour
        colours.setflags(write=False)
        return colours

    @functools.cached_property
    def isolated(self) -> "Graph":
        """The same nodes without edges: the block pattern of a block-diagonal
        matrix (`AbstractGraphLagrangian.mass_graph` of a Lagrangian whose
        kinetic coupling is per node)."""
        none = np.zeros(0, np.int64)
        return Graph(none, none, self.num_nodes)

    @functools.cached_property
    def num_colours(self) -> int:
        return int(self.colours.max()) + 1

    @functools.cached_property
    def path(self) -> "_Path | None":
        """When the neighbour pairs form one chain or one ring through all nodes:
        the nodes in chain order and, for each link between consecutive nodes, its
        pair and orientation. `None` for any other graph."""
        i, j = self.pairs
        n = self.num_nodes
        links = len(i)
        if n < 3 or links not in (n - 1, n):
            return None
        neighbours = [[] for _ in range(n)]
        for a, b in zip(i.tolist(), j.tolist()):
            neighbours[a].append(b)
            neighbours[b].append(a)
        if any(len(k) > 2 for k in neighbours):
            return None
        ends = [k for k in range(n) if len(neighbours[k]) == 1]
        order, previous = [ends[0] if ends else 0], -1
        while len(order) < n:
            following = [k for k in neighbours[order[-1]] if k != previous]
            if not following or following[0] == order[0]:
                return None  # disconnected
            previous = order[-1]
            order.append(following[0])
        order = np.array(order)
        pair_of = {(a, b): k for k, (a, b) in enumerate(zip(i.tolist(), j.tolist()))}
        count = n if links == n else n - 1
        starts, stops = order[:count], np.roll(order, -1)[:count]
        link = np.array(
            [pair_of[(min(a, b), max(a, b))] for a, b in zip(starts, stops)]
        )
        # `upper[k]` is block (i, j) with i < j: the link from a to b reads it
        # when a < b.
        forward = starts < stops
        return _Path(order, link, forward, cyclic=links == n)


class _Path(NamedTuple):
    order: np.ndarray
    link: np.ndarray
    forward: np.ndarray
    cyclic: bool


def local_features(
    graph: Graph,
    node_dim: int,
    q: Float[Array, " n"],
    qdot: Float[Array, " n"],
    translation_invariant: bool,
    edge_velocities: bool = True,
) -> tuple[Float[Array, "nodes f"], Float[Array, "edges g"]]:
    """What a graph network's node and edge functions see: per node `(q_i, q̇_i)`
    and per edge `s → r` `(q_s, q̇_s, q_r, q̇_r)`; or, translation-invariant, `q̇_i`
    and `(q_r − q_s, q̇_s, q̇_r)`. Without `edge_velocities` an edge sees its
    positions only: `(q_s, q_r)`, or `q_r − q_s`."""
    x = q.reshape(graph.num_nodes, node_dim)
    v = qdot.reshape(graph.num_nodes, node_dim)
    s, r = graph.senders, graph.receivers
    if translation_invariant:
        nodes, edges = v, [x[r] - x[s], v[s], v[r]]
    else:
        nodes, edges = jnp.concatenate([x, v], axis=1), [x[s], v[s], x[r], v[r]]
    if not edge_velocities:
        edges = edges[:1] if translation_invariant else edges[::2]
    return nodes, jnp.concatenate(edges, axis=1)


_Module = TypeVar("_Module", bound=eqx.Module)


def replace_graph(module: _Module, graph: Graph) -> _Module:
    """A copy of `module` with its static field `graph` replaced. (Static fields are
    not leaves, so `eqx.tree_at` cannot swap them; the other fields are copied as
    they are, already validated.)"""
    new = object.__new__(type(module))
    for field in dataclasses.fields(module):
        object.__setattr__(new, field.name, getattr(module, field.name))
    object.__setattr__(new, "graph", graph)
    return new


# Up to this many rows, `BlockSparseMatrix.solve` (other than for a scalar chain or
# ring) is dense: within the loop-factorized sizes of `lagrax._linalg` (no LAPACK).
DENSE_SOLVE_MAX = _LOOPED_MAX_DOF


class BlockSparseMatrix(lx.AbstractLinearOperator):
    """A `(N·b) × (N·b)` matrix with the block pattern of a `Graph`: `diagonal[i]`
    is block `(i, i)`; for the `k`-th neighbouring pair `(i, j)` (`Graph.pairs`),
    `upper[k]` is block `(i, j)` and `lower[k]` block `(j, i)`. Rows and columns are
    node-major: node `i` owns entries `i·b … i·b + b − 1`.

    `lagrax.graph_mass_matrix` returns one; `todense()` builds the dense array
    (`O(N²)` memory: small graphs only).

    A `lineax.AbstractLinearOperator`, so `lineax.linear_solve` takes it: with
    `lineax.BiCGStab` or `lineax.GMRES` at linear cost per iteration (tag it with
    `lineax.TaggedLinearOperator(M, lineax.positive_semidefinite_tag)` for
    `lineax.CG` where you know it is definite); Lineax's default solver sees a
    diagonal (no edges, `b = 1`) or tridiagonal (a chain in node order, `b = 1`)
    pattern and solves it as such, and otherwise factorizes `as_matrix()`
    (dense). No symmetry or definiteness is claimed (the values decide them).
    lagrax itself solves with `solve` below: 1.3–1.6× faster than
    `lineax.BiCGStab` with the same block-Jacobi preconditioner, gradients
    included. On a chain in node order `lineax.Tridiagonal` is 1.3–1.5× faster, but
    `solve` also estimates the condition number (to report a singular matrix),
    takes chains in any order and rings, and never raises from a gradient under
    `throw=False` (Lineax's derivative solves always raise on failure).
    """

    diagonal: Float[Array, "nodes b b"]
    upper: Float[Array, "pairs b b"]
    lower: Float[Array, "pairs b b"]
    graph: Graph = eqx.field(static=True)

    @property
    def block_size(self) -> int:
        return self.diagonal.shape[-1]

    def mv(self, vector: Float[Array, " n"]) -> Float[Array, " n"]:
        """The product with a vector of shape `(N·b,)`."""
        i, j = self.graph.pairs
        blocks = vector.reshape(self.graph.num_nodes, self.block_size)
        y = jnp.einsum("nab,nb->na", self.diagonal, blocks)
        y = y.at[i].add(jnp.einsum("pab,pb->pa", self.upper, blocks[j]))
        y = y.at[j].add(jnp.einsum("pab,pb->pa", self.lower, blocks[i]))
        return y.reshape(-1)

    def transpose(self) -> "BlockSparseMatrix":
        swap = jnp.matrix_transpose
        return BlockSparseMatrix(
            swap(self.diagonal), swap(self.lower), swap(self.upper), self.graph
        )

    def in_structure(self) -> jax.ShapeDtypeStruct:
        size = self.graph.num_nodes * self.block_size
        return jax.ShapeDtypeStruct((size,), self.diagonal.dtype)

    def out_structure(self) -> jax.ShapeDtypeStruct:
        return self.in_structure()

    def as_matrix(self) -> Float[Array, "n n"]:
        """The dense matrix, as `todense()` (Lineax's name)."""
        return self.todense()

    def todense(self) -> Float[Array, "n n"]:
        """The dense matrix (`O(N²)` memory)."""
        n, b = self.graph.num_nodes, self.block_size
        i, j = self.graph.pairs
        dense = jnp.zeros((n, b, n, b), self.diagonal.dtype)
        nodes = np.arange(n)
        dense = dense.at[nodes, :, nodes, :].set(self.diagonal)
        dense = dense.at[i, :, j, :].set(self.upper)
        dense = dense.at[j, :, i, :].set(self.lower)
        return dense.reshape(n * b, n * b)

    def solve(
        self, rhs: Float[Array, " n"], *, max_steps: int = 200
    ) -> tuple[Float[Array, " n"], Bool[Array, ""]]:
        """`(x, failed)` with `x` solving `M x = rhs`.

        For a block-diagonal pattern (a graph without edges), the pivoted inverse of
        each block. For a chain or ring of scalars (`Graph.path`, block size 1), the
        direct solve of `_tridiagonal_solve`. Otherwise, up to `DENSE_SOLVE_MAX` rows,
        the pivoted inverse of `todense()` (the dense path's, with its singularity
        criterion): exact for any regular matrix, definite or not, where a Krylov method
        can stall, and cheap at that size. Above it, preconditioned BiCGStab (block
        Jacobi) to a relative residual `‖r‖ ≤ 100·eps·‖rhs‖`. `failed` is set when a
        diagonal block is singular (by the criterion of the dense solves), the iteration
        did not reach the tolerance in `max_steps` iterations (an ill-conditioned or
        singular matrix), or the result is not finite. Differentiable (implicitly) in
        `rhs` and the blocks.
        """
        if self.graph.pairs[0].size == 0:
            return self._block_diagonal_solve(rhs)
        if self.block_size == 1 and self.graph.path is not None:
            return self._tridiagonal_solve(rhs)
        if rhs.shape[0] <= DENSE_SOLVE_MAX:
            # The inverse: linear in `rhs` as written (Newton's implicit tangents
            # transpose the solve).
            inv, singular = inverse(self.todense())
            x = inv @ rhs
            return x, singular | ~jnp.all(jnp.isfinite(x))
        inverses, singular = jax.vmap(inverse)(jax.lax.stop_gradient(self.diagonal))
        b = self.block_size

        def precondition(blocks_inverse):
            def apply(v):
                v = v.reshape(-1, b)
                return jnp.einsum("nab,nb->na", blocks_inverse, v).reshape(-1)

            return apply

        def solve(matvec, v):
            return _bicgstab(matvec, v, precondition(inverses), max_steps)

        def transpose_solve(vecmat, v):
            return _bicgstab(
                vecmat, v, precondition(jnp.matrix_transpose(inverses)), max_steps
            )

        x, converged = jax.lax.custom_linear_solve(
            self.mv, rhs, solve, transpose_solve, has_aux=True
        )
        failed = jnp.any(singular) | ~converged | ~jnp.all(jnp.isfinite(x))
        return x, failed

    def _block_diagonal_solve(
        self, rhs: Float[Array, " n"]
    ) -> tuple[Float[Array, " n"], Bool[Array, ""]]:
        """`solve` for a block-diagonal matrix: each block's pivoted inverse (the
        dense path's, singular by its criterion), applied to its node. Exact; linear
        in `rhs` as written, so it differentiates and transposes as it stands."""
        inverses, singular = jax.vmap(inverse)(self.diagonal)
        blocks = rhs.reshape(self.graph.num_nodes, self.block_size)
        x = jnp.einsum("nab,nb->na", inverses, blocks).reshape(-1)
        return x, jax.lax.stop_gradient(jnp.any(singular) | ~jnp.all(jnp.isfinite(x)))

    def _tridiagonal_solve(
        self, rhs: Float[Array, " n"]
    ) -> tuple[Float[Array, " n"], Bool[Array, ""]]:
        """`solve` for a scalar chain or ring: a direct tridiagonal solve in chain
        order (LAPACK `gtsv`, partial pivoting), the ring's two corners by
        Sherman–Morrison. Exact for any regular matrix, definite or not. `failed`
        when the result is not finite, or when the solution `y` for a fixed probe
        `p` shows a condition number `‖M‖‖y‖/‖p‖` above `1/(n·eps)` (the dense
        solves' criterion, from below)."""
        path = self.graph.path
        assert path is not None
        upper, lower = self.upper[:, 0, 0], self.lower[:, 0, 0]
        # Entry (a, b) of a link read from a to b, and (b, a).
        ahead = jnp.where(path.forward, upper[path.link], lower[path.link])
        behind = jnp.where(path.forward, lower[path.link], upper[path.link])
        diagonal = self.diagonal[path.order, 0, 0]
        n = diagonal.shape[0]
        probe = jnp.cos(jnp.arange(n, dtype=rhs.dtype))

        def direct(b, transpose):
            above, below = (behind, ahead) if transpose else (ahead, behind)
            return _chain_solve(diagonal, above, below, b, path.cyclic)

        # The probe rides along as a second column of the same call: batched (under
        # `vmap`), two LAPACK calls at once can deadlock XLA's CPU pool (see
        # `lagrax._linalg`), and the two were independent.
        def solve(matvec, b):
            both = direct(jnp.stack([b[path.order], probe], axis=1), False)
            return jnp.zeros_like(b).at[path.order].set(both[:, 0]), both[:, 1]

        def transpose_solve(vecmat, b):
            x = direct(b[path.order][:, None], True)[:, 0]
            return jnp.zeros_like(b).at[path.order].set(x), jnp.zeros_like(probe)

        x, y = jax.lax.custom_linear_solve(
            self.mv, rhs, solve, transpose_solve, has_aux=True
        )
        norm = jnp.max(jnp.abs(diagonal))
        norm = (
            norm
            + jnp.max(jnp.abs(upper), initial=0)
            + jnp.max(jnp.abs(lower), initial=0)
        )
        estimate = norm * jnp.max(jnp.abs(y)) / jnp.max(jnp.abs(probe))
        singular = ~(estimate * n * jnp.finfo(rhs.dtype).eps < 1)
        failed = singular | ~jnp.all(jnp.isfinite(x))
        return x, jax.lax.stop_gradient(failed)


# What Lineax asks of an operator beyond its methods, for `BlockSparseMatrix`:
# structure known from the static pattern, and nothing claimed of the values
# (symmetry, definiteness), which `lineax.TaggedLinearOperator` can add.
def _is_diagonal(matrix: BlockSparseMatrix) -> bool:
    return matrix.block_size == 1 and matrix.graph.pairs[0].size == 0


def _is_tridiagonal(matrix: BlockSparseMatrix) -> bool:
    i, j = matrix.graph.pairs
    return matrix.block_size == 1 and bool(np.all(j - i == 1))


@lx.diagonal.register(BlockSparseMatrix)
def _(matrix: BlockSparseMatrix) -> Float[Array, " n"]:
    return jnp.diagonal(matrix.diagonal, axis1=1, axis2=2).reshape(-1)


@lx.tridiagonal.register(BlockSparseMatrix)
def _(
    matrix: BlockSparseMatrix,
) -> tuple[Float[Array, " n"], Float[Array, " n-1"], Float[Array, " n-1"]]:
    """The three central diagonals `(main, below, above)`, from the blocks: within
    a diagonal block, or at the corner of the block of the pair `(i, i + 1)`."""
    n, b = matrix.graph.num_nodes, matrix.block_size
    i, j = matrix.graph.pairs
    main = jnp.diagonal(matrix.diagonal, axis1=1, axis2=2).reshape(-1)
    # Entry (r, r + 1) and (r + 1, r) for r = node·b + a, a < b − 1: block (node, node).
    inside = jnp.diagonal(matrix.diagonal, offset=1, axis1=1, axis2=2)
    inside_below = jnp.diagonal(matrix.diagonal, offset=-1, axis1=1, axis2=2)
    above = jnp.concatenate([inside, jnp.zeros((n, 1), main.dtype)], axis=1)
    below = jnp.concatenate([inside_below, jnp.zeros((n, 1), main.dtype)], axis=1)
    # a = b − 1: the corner of the pair (node, node + 1), if it is one.
    link = j - i == 1
    above = above.at[i[link], b - 1].set(matrix.upper[link, b - 1, 0])
    below = below.at[i[link], b - 1].set(matrix.lower[link, 0, b - 1])
    return main, below.reshape(-1)[:-1], above.reshape(-1)[:-1]


@lx.linearise.register(BlockSparseMatrix)
@lx.materialise.register(BlockSparseMatrix)
@lx.conj.register(BlockSparseMatrix)  # real blocks
def _(matrix: BlockSparseMatrix) -> BlockSparseMatrix:
    return matrix


lx.is_diagonal.register(BlockSparseMatrix, _is_diagonal)
lx.is_tridiagonal.register(BlockSparseMatrix, _is_tridiagonal)
lx.is_lower_triangular.register(BlockSparseMatrix, _is_diagonal)
lx.is_upper_triangular.register(BlockSparseMatrix, _is_diagonal)


def _claims_nothing(matrix: BlockSparseMatrix) -> bool:
    return False


lx.is_symmetric.register(BlockSparseMatrix, _claims_nothing)
lx.has_unit_diagonal.register(BlockSparseMatrix, _claims_nothing)
lx.is_positive_semidefinite.register(BlockSparseMatrix, _claims_nothing)
lx.is_negative_semidefinite.register(BlockSparseMatrix, _claims_nothing)


def _chain_solve(diagonal, above, below, b, cyclic: bool):
    """Solve the tridiagonal system with `diagonal`, `above[k]` = entry (k, k+1),
    `below[k]` = entry (k+1, k), for the columns of `b`; for a ring the last of
    `above` and `below` are the corners (n−1, 0) and (0, n−1)."""
    n = diagonal.shape[0]
    zero = jnp.zeros(1, diagonal.dtype)
    if not cyclic:
        du = jnp.concatenate([above, zero])
        dl = jnp.concatenate([zero, below])
        return jax.lax.linalg.tridiagonal_solve(dl, diagonal, du, b)
    # Ring: M = T + u vᵀ with T tridiagonal (Sherman–Morrison, γ = −M₀₀).
    corner_low, corner_high = above[-1], below[-1]
    gamma = jnp.where(diagonal[0] != 0, -diagonal[0], 1)
    d = diagonal.at[0].add(-gamma).at[n - 1].add(-corner_low * corner_high / gamma)
    du = jnp.concatenate([above[:-1], zero])
    dl = jnp.concatenate([zero, below[:-1]])
    u = jnp.zeros(n, diagonal.dtype).at[0].set(gamma).at[n - 1].set(corner_low)
    both = jax.lax.linalg.tridiagonal_solve(
        dl, d, du, jnp.concatenate([b, u[:, None]], axis=1)
    )
    y, z = both[:, :-1], both[:, -1]
    v_y = y[0] + corner_high / gamma * y[n - 1]
    v_z = z[0] + corner_high / gamma * z[n - 1]
    return y - (v_y / (1 + v_z))[None, :] * z[:, None]


def _bicgstab(
    matvec: Callable,
    rhs: Array,
    precondition: Callable,
    max_steps: int,
    relative_tolerance: float = 100.0,
) -> tuple[Array, Bool[Array, ""]]:
    """Right-preconditioned BiCGStab from the preconditioned guess `P rhs`; returns
    `(x, converged)`. Stops at `‖r‖₂ ≤ relative_tolerance·eps·‖rhs‖₂` (the
    recursive residual, confirmed by the true one)."""
    tolerance = relative_tolerance * jnp.finfo(rhs.dtype).eps * jnp.linalg.norm(rhs)
    x = precondition(rhs)
    r = rhs - matvec(x)
    shadow = r
    one = jnp.ones((), rhs.dtype)
    zero = jnp.zeros_like(rhs)

    def going(carry):
        _, r, _, _, _, _, _, step, broke = carry
        return (jnp.linalg.norm(r) > tolerance) & (step < max_steps) & ~broke

    def iterate(carry):
        x, r, p, v, rho, alpha, omega, step, _ = carry
        rho_new = jnp.vdot(shadow, r)
        beta = (rho_new / rho) * (alpha / omega)
        p = r + beta * (p - omega * v)
        p_hat = precondition(p)
        v = matvec(p_hat)
        alpha = rho_new / jnp.vdot(shadow, v)
        s = r - alpha * v
        s_hat = precondition(s)
        t = matvec(s_hat)
        tt = jnp.vdot(t, t)
        omega = jnp.where(tt > 0, jnp.vdot(t, s) / jnp.where(tt > 0, tt, 1), 0)
        x = x + alpha * p_hat + omega * s_hat
        r = s - omega * t
        broke = (rho_new == 0) | (omega == 0) | ~jnp.isfinite(alpha)
        # A breakdown with s already small is convergence, not failure.
        broke = broke & (jnp.linalg.norm(s) > tolerance)
        return x, r, p, v, rho_new, alpha, omega, step + 1, broke

    carry = (x, r, zero, zero, one, one, one, jnp.array(0), jnp.array(False))
    x, *_ = jax.lax.while_loop(going, iterate, carry)
    # The recursive residual drifts from the true one: judge by the latter.
    converged = jnp.linalg.norm(rhs - matvec(x)) <= 10 * tolerance
    return x, converged


def colour_seeds(graph: Graph, block: int, dtype) -> Float[Array, "seeds n"]:
    """The `colours × block` seed vectors of `sparse_jacobian`: seed `(c, k)` is the
    sum of the unit vectors of component `k` of every node of colour `c`."""
    onehot = graph.colours[None, :] == np.arange(graph.num_colours)[:, None]
    seeds = onehot[:, None, :, None] & np.eye(block, dtype=bool)[None, :, None, :]
    return jnp.asarray(seeds.reshape(graph.num_colours * block, -1), dtype)


def decompress(
    graph: Graph, block: int, products: Float[Array, "seeds n"]
) -> BlockSparseMatrix:
    """The blocks of `M` from its products `M @ seed` with `colour_seeds`."""
    # products[c, k, i, a] = M[(i, a), (j, k)] for the node j of colour c next to i.
    products = products.reshape(graph.num_colours, block, graph.num_nodes, block)
    colours = graph.colours
    nodes = np.arange(graph.num_nodes)
    i, j = graph.pairs
    # Gathering [colour, :, node, :] gives (…, k, a): swap to (…, a, k).
    swap = jnp.matrix_transpose
    return BlockSparseMatrix(
        diagonal=swap(products[colours, :, nodes, :]),
        upper=swap(products[colours[j], :, i, :]),
        lower=swap(products[colours[i], :, j, :]),
        graph=graph,
    )


def sparse_jacobian(
    fn: Callable[[Float[Array, " n"]], Float[Array, " n"]],
    x: Float[Array, " n"],
    graph: Graph,
    block: int,
) -> tuple[Float[Array, " n"], BlockSparseMatrix]:
    """`fn(x)` and the Jacobian of `fn` at `x`, for a map whose node-major block `i`
    depends only on nodes `i` and its neighbours in `graph`: `colours × block`
    JVPs, which compute the value once on the way."""
    seeds = colour_seeds(graph, block, x.dtype)
    value, products = jax.vmap(lambda u: jax.jvp(fn, (x,), (u,)), out_axes=(None, 0))(
        seeds
    )
    return value, decompress(graph, block, products)
