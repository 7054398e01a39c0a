"""Holonomic constraints with one row (or a few) per edge of a graph, and the sparse
solve of the constrained Euler–Lagrange equations under them.

A constraint per edge — a rod between two bodies, a bond between two atoms —
touches two nodes, so its Jacobian `G = ∂g/∂q` has two nonzero blocks per row, and
the Schur complement `S = G H⁻¹ Gᵀ` of the saddle-point system

    [[H, Gᵀ], [G, 0]] [q̈; λ] = [f; −(d/dt G) q̇]

is block sparse on the *line graph* of the edges (two constraints couple where
they share a node): tridiagonal for a chain. With a block-diagonal mass matrix `H`
(bodies whose kinetic energy is their own, `AbstractGraphLagrangian.mass_graph`
without edges) `H⁻¹` is blockwise and `S` is assembled block by block; then

    S λ = G H⁻¹ f + (d/dt G) q̇,      q̈ = H⁻¹ (f − Gᵀ λ),

every step linear in the number of nodes. With a graph-sparse `H`, `S` is applied
matrix-free (`S v = G H⁻¹ Gᵀ v`, through `BlockSparseMatrix.solve`) inside
BiCGStab. No dense `G`, `H` or KKT matrix is formed.
"""

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike
from jaxtyping import Array, ArrayLike, Bool, Float

from ._custom_types import Position, Velocity
from ._graph import _bicgstab, BlockSparseMatrix, Graph, Indices
from ._linalg import inverse
from ._misc import check_int


def rod(
    start: Float[Array, " node_dim"],
    end: Float[Array, " node_dim"],
    length: Float[Array, ""],
) -> Float[Array, ""]:
    """`(|end − start|² − length²) / 2`: a rigid massless rod between two points,
    zero at its length (the squared form of `ChainPendulum.constraint`: smooth, with
    a Jacobian `±(end − start)` of full rank wherever the rod has a length)."""
    link = end - start
    return 0.5 * (jnp.dot(link, link) - length**2)


class EdgeConstraint(eqx.Module):
    r"""A holonomic constraint with one term per edge of a graph: rods between
    bodies, bonds between atoms, the links of a chain.

    With node positions `xᵢ` (`node_dim` coordinates each, node-major in `q`, as in
    an `AbstractGraphLagrangian`) the constraint is

        g(q) = [fn(p_a, x_a, d_a) for each anchor a]
               ++ [fn(x_s, x_r, d_k) for each edge k = s → r]

    where an *anchor* ties node `a` to a fixed point `p_a` (a chain's pivot) through
    the same `fn`, and `d` holds optional per-link parameters (a rod's length). `fn`
    returns a scalar or a fixed number `c` of rows per link; `g(q)` has
    `c · (anchors + edges)` rows, link-major, anchors first.

    It is an ordinary constraint callable `q -> g(q)`, accepted wherever
    `constraint=` is (`acceleration`, `LagrangianTerm`, `simulate`, `rollout`, the
    solvers). What it adds is structure: for an `AbstractGraphLagrangian`,
    `lagrax.acceleration(L, q, qdot, constraint=c)` never forms a dense matrix.
    `G`'s blocks come from one small Jacobian per link (two blocks of `c × node_dim`)
    and `(d/dt G) q̇` from a nested JVP per link; the multipliers solve the Schur
    complement `G H⁻¹ Gᵀ`, block sparse on the line graph of the links (two links
    couple where they share a node): tridiagonal, solved directly, for a chain of
    scalar constraints; otherwise as `BlockSparseMatrix.solve` does. For a
    block-diagonal mass matrix (`mass_graph` without edges: point masses, springs,
    a `GraphLagrangian` with `edge_velocities=False`) `H⁻¹` is blockwise and the
    whole solve costs `O(nodes + links)`; for a graph-sparse one `G H⁻¹ Gᵀ` is
    applied matrix-free inside BiCGStab, each product a sparse solve with `H`.
    A redundant constraint (an edge listed twice, a closed loop of rods that is
    over-determined) makes `G H⁻¹ Gᵀ` singular and is reported as the dense path
    reports it (an error, or NaN with `throw=False`); so is a singular block of
    `H` (the sparse path needs `H` itself regular, not only on the constraints'
    tangent space). `lagrax.project_on_constraint` takes the same sparse path.

    **Fields:**

    - `fn`: the constraint of one link.
    - `data`: per-link parameters, leading axis `anchors + edges`, or `None`.
    - `anchor_points`: the fixed points, shape `(anchors, node_dim)`.
    - `graph`: the edges, a `lagrax.Graph`.
    - `anchors`: the anchored nodes.
    - `node_dim`: coordinates per node.

    !!! example

        ```python
        # An N-body chain hanging from a pivot at the origin (ChainPendulum's links):
        links = lagrax.EdgeConstraint(
            range(N - 1), range(1, N), lagrax.rod, num_nodes=N, node_dim=2,
            data=lengths, anchors=[0],
        )
        free = lagrax.systems.SpringNetwork([], [], num_nodes=N, masses=masses,
                                            gravity=9.81)
        qddot = lagrax.acceleration(free, q, qdot, constraint=links)  # O(N)
        ```
    """

    fn: Callable[..., Array]
    data: Float[Array, "links ..."] | None
    anchor_points: Float[Array, "anchors node_dim"]
    graph: Graph = eqx.field(static=True)
    anchors: tuple[int, ...] = eqx.field(static=True)
    node_dim: int = eqx.field(static=True)

    def __init__(
        self,
        senders: Indices,
        receivers: Indices,
        fn: Callable[..., Array],
        *,
        num_nodes: int,
        node_dim: int,
        data: ArrayLike | None = None,
        anchors: Indices = (),
        anchor_points: ArrayLike | Sequence | None = None,
    ):
        """**Arguments:**

        - `senders`, `receivers`: the constrained edges, one entry per edge
            `senders[k] → receivers[k]`, node indices in `[0, num_nodes)`.
        - `fn`: the constraint of one link, `fn(x_start, x_end)` (or
            `fn(x_start, x_end, d)` with `data`) of two points of shape
            `(node_dim,)`, returning a scalar or a 1-D array of a fixed length;
            zero where the link is satisfied. `lagrax.rod` is a rod of length `d`.
        - `num_nodes`: the number of nodes.
        - `node_dim`: coordinates per node (2 for bodies in the plane).
        - `data`: optional per-link parameters, an array whose leading axis has one
            entry per anchor, then one per edge (`fn` gets its row).
        - `anchors`: nodes tied to fixed points; the link of anchor `a` is
            `fn(p_a, x_a, d_a)`.
        - `anchor_points`: the fixed points, shape `(len(anchors), node_dim)`;
            default the origin.
        """
        if not callable(fn):
            raise TypeError(f"`fn` must be a function of two points, got {fn!r}.")
        self.graph = Graph(senders, receivers, num_nodes)
        self.node_dim = check_int(node_dim, "node_dim")
        anchors = np.asarray(anchors)
        if anchors.ndim != 1 or (
            anchors.size and not np.issubdtype(anchors.dtype, np.integer)
        ):
            raise ValueError(
                f"`anchors` must be a sequence of node indices, got {anchors!r}."
            )
        if anchors.size and (anchors.min() < 0 or anchors.max() >= num_nodes):
            raise ValueError(
                f"`anchors` must hold node indices in [0, num_nodes={num_nodes}), "
                f"got {anchors.tolist()}."
            )
        self.anchors = tuple(int(a) for a in anchors)
        num_links = len(self.anchors) + self.graph.senders.size
        if num_links == 0:
            raise ValueError("An EdgeConstraint needs at least one edge or anchor.")
        if data is not None:
            data = jnp.asarray(data, dtype=float)
            if data.ndim == 0 or data.shape[0] != num_links:
                raise ValueError(
                    f"`data` must have one row per link ({len(self.anchors)} anchors "
                    f"then {self.graph.senders.size} edges: leading axis "
                    f"{num_links}), got shape {data.shape}."
                )
        self.data = data
        dtype = float if data is None else data.dtype
        if anchor_points is None:
            anchor_points = jnp.zeros((len(self.anchors), self.node_dim), dtype)
        anchor_points = jnp.asarray(anchor_points, dtype=dtype)
        if anchor_points.shape != (len(self.anchors), self.node_dim):
            raise ValueError(
                "`anchor_points` must have shape (len(anchors), node_dim) = "
                f"({len(self.anchors)}, {self.node_dim}), got {anchor_points.shape}."
            )
        self.anchor_points = anchor_points
        self.fn = fn
        self.rows_per_link(dtype)

    def rows_per_link(self, dtype: DTypeLike = float) -> int:
        """`c`, the rows of `fn` per link, with a clear error at trace time unless
        `fn` maps two points (and a row of `data`) to a scalar or a 1-D array."""
        point = jax.ShapeDtypeStruct((self.node_dim,), dtype)
        row = (
            None
            if self.data is None
            else jax.ShapeDtypeStruct(self.data.shape[1:], self.data.dtype)
        )
        try:
            out = jax.eval_shape(self.fn, point, point, *([] if row is None else [row]))
        except TypeError as error:
            raise TypeError(
                "`fn` must be a function fn(x_start, x_end) of two points of shape "
                "(node_dim,), or fn(x_start, x_end, d) with `data`; calling it "
                f"failed: {error}"
            ) from error
        if not (isinstance(out, jax.ShapeDtypeStruct) and out.ndim <= 1):
            raise ValueError(
                f"`fn` must return a scalar or a 1-D array per link, got {out}."
            )
        return 1 if out.ndim == 0 else out.shape[0]

    @property
    def num_nodes(self) -> int:
        return self.graph.num_nodes

    @property
    def num_links(self) -> int:
        """Anchors plus edges: the links, each contributing `fn`'s rows."""
        return len(self.anchors) + self.graph.senders.size

    def __call__(self, q: Position) -> Float[Array, " m"]:
        x = self._nodes(q)
        start, end = self._endpoints(x)
        return jax.vmap(self._link)(start, end, self.data).reshape(-1)

    def _nodes(self, q: Array) -> Array:
        size = self.num_nodes * self.node_dim
        if q.shape != (size,):
            raise ValueError(
                f"This EdgeConstraint has num_nodes={self.num_nodes} and node_dim="
                f"{self.node_dim}: `q` must have shape ({size},), node-major; got "
                f"{q.shape}."
            )
        return q.reshape(self.num_nodes, self.node_dim)

    def _endpoints(self, x: Array) -> tuple[Array, Array]:
        """Both ends of every link, anchors first: `(starts, ends)`."""
        anchors = np.asarray(self.anchors, dtype=np.int64)
        start = jnp.concatenate(
            [self.anchor_points.astype(x.dtype), x[self.graph.senders]]
        )
        end = jnp.concatenate([x[anchors], x[self.graph.receivers]])
        return start, end

    def _link(self, start: Array, end: Array, data: Array | None) -> Array:
        value = self.fn(start, end) if data is None else self.fn(start, end, data)
        return jnp.reshape(value, (-1,))

    def linearize(
        self, q: Position, qdot: Velocity
    ) -> tuple[Float[Array, " m"], Float[Array, "ends c b"], Float[Array, " m"]]:
        """`(g(q), J, (d/dt G) q̇)`: the value, the nonzero blocks of `G = ∂g/∂q`
        (one `c × node_dim` block per end of a link: `_Incidence` says which link
        and node), and the second derivative of `g` along `q̇`. One small Jacobian
        and one nested JVP per link."""
        x, v = self._nodes(q), self._nodes(qdot)
        start, end = self._endpoints(x)
        start_rate, end_rate = self._endpoints(v)
        # Anchors are fixed points: no velocity, and no coordinates to move.
        start_rate = start_rate.at[: len(self.anchors)].set(0)

        def one(start, end, start_rate, end_rate, data):
            def link(start, end):
                return self._link(start, end, data)

            def along(start, end):
                return jax.jvp(link, (start, end), (start_rate, end_rate))

            (value, _), (_, curvature) = jax.jvp(
                along, (start, end), (start_rate, end_rate)
            )
            start_jac, end_jac = jax.jacfwd(link, argnums=(0, 1))(start, end)
            return value, start_jac, end_jac, curvature

        value, start_jac, end_jac, curvature = jax.vmap(one)(
            start, end, start_rate, end_rate, self.data
        )
        anchors = len(self.anchors)
        blocks = jnp.concatenate(
            [end_jac[:anchors], start_jac[anchors:], end_jac[anchors:]]
        )
        return value.reshape(-1), blocks, curvature.reshape(-1)


class _Incidence(NamedTuple):
    """The static pattern of `G` and of `G H⁻¹ Gᵀ` for an `EdgeConstraint`.

    `G`'s nonzero blocks are the *ends* of the links: an anchor has one end (its
    node), an edge two (sender, receiver). `first`/`second` list every ordered pair
    of ends at the same node: each adds `J_first H⁻¹_node J_secondᵀ` to block
    `(link(first), link(second))` of `S = G H⁻¹ Gᵀ`, which is the diagonal block of
    that link (`kind` 0), or block `slot` of the line graph's `upper` (1) or
    `lower` (2)."""

    end_link: np.ndarray
    end_node: np.ndarray
    first: np.ndarray
    second: np.ndarray
    kind: np.ndarray
    slot: np.ndarray
    line_graph: Graph


@functools.lru_cache(maxsize=32)
def _incidence(graph: Graph, anchors: tuple[int, ...]) -> _Incidence:
    num_anchors, num_edges = len(anchors), graph.senders.size
    num_links = num_anchors + num_edges
    edges = num_anchors + np.arange(num_edges)
    end_link = np.concatenate([np.arange(num_anchors), edges, edges])
    end_node = np.concatenate(
        [np.asarray(anchors, np.int64), graph.senders, graph.receivers]
    )
    # Ordered pairs of ends sharing a node, grouped by node.
    order = np.argsort(end_node, kind="stable")
    bounds = np.searchsorted(end_node[order], np.arange(graph.num_nodes + 1))
    first, second = [], []
    for node in range(graph.num_nodes):
        ends = order[bounds[node] : bounds[node + 1]]
        first.append(np.repeat(ends, ends.size))
        second.append(np.tile(ends, ends.size))
    first, second = np.concatenate(first), np.concatenate(second)
    k, other = end_link[first], end_link[second]
    low, high = np.minimum(k, other), np.maximum(k, other)
    distinct = k != other
    keys = np.unique(low[distinct] * num_links + high[distinct])
    line_graph = Graph(keys // num_links, keys % num_links, num_links)
    slot = np.where(distinct, np.searchsorted(keys, low * num_links + high), k)
    kind = np.where(distinct, np.where(k < other, 1, 2), 0)
    return _Incidence(end_link, end_node, first, second, kind, slot, line_graph)


def _g_mv(incidence: _Incidence, blocks: Array, v: Array, num_nodes: int) -> Array:
    """`G v` from the blocks of `G` (`v` node-major, the result link-major)."""
    per_end = jnp.einsum(
        "eab,eb->ea", blocks, v.reshape(num_nodes, -1)[incidence.end_node]
    )
    num_links = incidence.line_graph.num_nodes
    return jax.ops.segment_sum(per_end, incidence.end_link, num_links).reshape(-1)


def _gt_mv(incidence: _Incidence, blocks: Array, lam: Array, num_nodes: int) -> Array:
    """`Gᵀ λ` from the blocks of `G`."""
    num_links = incidence.line_graph.num_nodes
    per_end = jnp.einsum(
        "eab,ea->eb", blocks, lam.reshape(num_links, -1)[incidence.end_link]
    )
    return jax.ops.segment_sum(per_end, incidence.end_node, num_nodes).reshape(-1)


def _schur(incidence: _Incidence, blocks: Array, inverses: Array) -> BlockSparseMatrix:
    """`G D Gᵀ` for a block-diagonal `D` (one `b × b` block per node), on the line
    graph of the links."""
    weighted = jnp.einsum(
        "eab,ebd->ead", blocks, inverses[incidence.end_node]
    )  # J_e D_node
    products = jnp.einsum(
        "pab,pcb->pac", weighted[incidence.first], blocks[incidence.second]
    )
    c = blocks.shape[1]
    graph = incidence.line_graph
    num_pairs = graph.pairs[0].size

    def gather(kind, size):
        mask = incidence.kind == kind
        return jax.ops.segment_sum(products[mask], incidence.slot[mask], size).reshape(
            size, c, c
        )

    return BlockSparseMatrix(
        diagonal=gather(0, graph.num_nodes),
        upper=gather(1, num_pairs),
        lower=gather(2, num_pairs),
        graph=graph,
    )


def check_edge_constraint(constraint: EdgeConstraint, num_nodes: int, node_dim: int):
    """A clear error at trace time unless `constraint` lives on the nodes of a graph
    Lagrangian with `num_nodes` nodes of `node_dim` coordinates."""
    if (constraint.num_nodes, constraint.node_dim) != (num_nodes, node_dim):
        raise ValueError(
            f"The EdgeConstraint has num_nodes={constraint.num_nodes} and node_dim="
            f"{constraint.node_dim}, the graph Lagrangian num_nodes={num_nodes} and "
            f"node_dim={node_dim}: they must agree."
        )


def edge_kkt_solve(
    constraint: EdgeConstraint,
    h: BlockSparseMatrix,
    rhs: Float[Array, " dof"],
    q: Position,
    qdot: Velocity,
) -> tuple[Float[Array, " dof"], Float[Array, " m"], Bool[Array, ""]]:
    """`(q̈, λ, singular)` of `[[H, Gᵀ], [G, 0]] [q̈; λ] = [rhs; −(d/dt G) q̇]` by the
    Schur complement, sparse throughout (see the module's docstring)."""
    incidence = _incidence(constraint.graph, constraint.anchors)
    _, blocks, curvature = constraint.linearize(q, qdot)
    n = constraint.num_nodes

    def g(v):
        return _g_mv(incidence, blocks, v, n)

    def gt(lam):
        return _gt_mv(incidence, blocks, lam, n)

    if h.graph.pairs[0].size == 0:
        inverses, singular_blocks = jax.vmap(inverse)(h.diagonal)

        def h_solve(v):
            x = jnp.einsum("nab,nb->na", inverses, v.reshape(n, -1))
            return x.reshape(-1)

        schur = _schur(incidence, blocks, inverses)
        free = h_solve(rhs)
        multipliers, failed = schur.solve(g(free) + curvature)
        failed = failed | jnp.any(jax.lax.stop_gradient(singular_blocks))
    else:
        free, failed_h = h.solve(rhs)
        multipliers, failed_s = _matrix_free_schur_solve(
            h, incidence, blocks, g(free) + curvature, g, gt
        )
        failed = failed_h | failed_s

        def h_solve(v):
            return h.solve(v)[0]

    qddot = free - h_solve(gt(multipliers))
    finite = jnp.all(jnp.isfinite(qddot)) & jnp.all(jnp.isfinite(multipliers))
    return qddot, multipliers, jax.lax.stop_gradient(failed | ~finite)


def _matrix_free_schur_solve(h, incidence, blocks, b, g, gt, max_steps: int = 200):
    """`S λ = b` with `S v = G H⁻¹ Gᵀ v` applied through sparse solves with `H`:
    BiCGStab, block-Jacobi preconditioned with `G D⁻¹ Gᵀ` (`D` the diagonal blocks of
    `H`). Each product carries the inner solve's round-off, so the tolerance is
    looser than a direct solve's."""
    approximate = _schur(
        incidence, blocks, jax.vmap(lambda d: inverse(d)[0])(h.diagonal)
    )
    preconditioners, _ = jax.vmap(inverse)(jax.lax.stop_gradient(approximate.diagonal))
    c = blocks.shape[1]

    def precondition(v):
        v = v.reshape(-1, c)
        return jnp.einsum("nab,nb->na", preconditioners, v).reshape(-1)

    def matvec(v):
        return g(h.solve(gt(v))[0])

    def solve(matvec, v):
        return _bicgstab(matvec, v, precondition, max_steps, relative_tolerance=1e4)

    x, converged = jax.lax.custom_linear_solve(
        matvec, b, solve, symmetric=True, has_aux=True
    )
    return x, ~converged


def edge_least_norm(
    constraint: EdgeConstraint, q: Position, residual: Float[Array, " m"]
) -> Float[Array, " dof"]:
    """`Gᵀ (G Gᵀ)⁻¹ residual`: the least-norm change of `q` that moves `g` by
    `residual` to first order, with `G G ᵀ` block sparse (the Schur complement
    of an identity mass matrix)."""
    incidence = _incidence(constraint.graph, constraint.anchors)
    _, blocks, _ = constraint.linearize(q, jnp.zeros_like(q))
    b = constraint.node_dim
    eye = jnp.broadcast_to(jnp.eye(b, dtype=q.dtype), (constraint.num_nodes, b, b))
    step, _ = _schur(incidence, blocks, eye).solve(residual)
    return _gt_mv(incidence, blocks, step, constraint.num_nodes)
