"""Lagrangians that are sums of local densities over a static graph."""

from collections.abc import Callable
from typing import ClassVar, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.typing import DTypeLike
from jaxtyping import Array, Float, PRNGKeyArray

from ._custom_types import Position, Scalar, Velocity
from ._graph import Graph, Indices, local_features, replace_graph
from ._lagrangian import AbstractLagrangian, scalar_mlp
from ._misc import check_curvature, check_dtype, check_int, check_state


class AbstractGraphLagrangian(AbstractLagrangian):
    """A Lagrangian that is a sum of local densities over a static `graph`:

        L(q, q̇) = Σ_i φ_i(q_i, q̇_i) + Σ_(s→r) ψ(q_s, q̇_s, q_r, q̇_r)

    over the nodes `i` and the edges `s → r`, each node owning `node_dim`
    coordinates. `q` and `q̇` are flat arrays of shape `(num_nodes · node_dim,)`,
    node-major (node `i` owns `q[i·node_dim : (i+1)·node_dim]`), so every lagrax
    function takes them unchanged.

    Because a density touches only a node and its neighbours, the mass matrix
    `∂²L/∂q̇²` is block sparse, and `lagrax.acceleration` (with everything built on
    it: terms, losses, `simulate`, the lagrax solvers' Newton solves) recognises a
    graph Lagrangian and takes a linear-cost path: the nonzero blocks from a few
    Hessian-vector products (one per colour of a distance-2 colouring of the
    `mass_graph` and coordinate of a node), then a sparse solve (see
    `BlockSparseMatrix.solve`). When the solve fails the state is reported as
    singular, like a singular dense mass matrix.

    Where the velocities couple only within a node — the edge densities depend on
    positions alone, as for springs and the discrete wave, `L = Σ_i T_i(q_i, q̇_i)
    − Σ_(s→r) V(q_s, q_r)` — the mass matrix is block diagonal: a subclass says so
    by returning `self.graph.isolated` from `mass_graph`, and then `node_dim`
    Hessian-vector products give `H` and its solve is exact, block by block.

    Subclasses hold `graph` (a `lagrax.Graph`) and `node_dim` as static fields and
    implement `__call__`; the densities' pattern must not reach beyond the graph's
    edges, and their velocity coupling not beyond `mass_graph`'s (the sparse and
    dense paths then agree to round-off).
    """

    _summable: ClassVar[bool] = False
    graph: eqx.AbstractVar[Graph]
    node_dim: eqx.AbstractVar[int]

    @property
    def num_nodes(self) -> int:
        return self.graph.num_nodes

    @property
    def mass_graph(self) -> Graph:
        """The block pattern of the mass matrix `∂²L/∂q̇²`: by default `graph`;
        `graph.isolated` (block diagonal) where no density couples the velocities
        of two nodes."""
        return self.graph

    @property
    def senders(self):
        return self.graph.senders

    @property
    def receivers(self):
        return self.graph.receivers

    def check_input(self, q: Position, qdot: Velocity) -> None:
        """Raise a clear error unless `(q, qdot)` is one state of this graph."""
        check_state(q, qdot)
        size = self.num_nodes * self.node_dim
        if q.shape != (size,):
            raise ValueError(
                f"This {type(self).__name__} has num_nodes={self.num_nodes} and "
                f"node_dim={self.node_dim}: `q` and `qdot` must be flat arrays of "
                f"shape ({size},), node-major; got {q.shape}."
            )


class GraphLagrangian(AbstractGraphLagrangian):
    """A learned Lagrangian Graph Network (Cranmer et al., Section 6): the
    Lagrangian is a sum of a node density and an edge density, each a scalar MLP
    shared over all nodes or edges,

        L = Σ_i φ(q_i, q̇_i) + Σ_(s→r) ψ(q_s, q̇_s, q_r, q̇_r).

    Sharing makes it permutation-equivariant (relabelling the nodes permutes the
    accelerations) and lets the same parameters run on any graph (`with_graph`).
    With `translation_invariant=True` the densities see position differences only,
    `φ(q̇_i)` and `ψ(q_r − q_s, q̇_s, q̇_r)`, so that a chain, lattice or discretized
    field learned on one size generalises to others. With `edge_velocities=False`
    the edge density sees positions only, `ψ(q_s, q_r)` (or `ψ(q_r − q_s)`): the
    kinetic energy is then a sum over nodes, as in springs and fields, the mass
    matrix is block diagonal (`mass_graph`), solved exactly block by block, and
    the `definiteness` penalty of `lagrax.acceleration_loss`, which sees each
    node's block, covers the whole mass matrix. Each edge is a density term once:
    list an undirected bond in one direction only.

    See `AbstractGraphLagrangian` for the linear-cost mechanics.
    """

    node_layers: tuple[eqx.nn.Linear, ...]
    edge_layers: tuple[eqx.nn.Linear, ...]
    activation: Callable[[Array], Array]
    graph: Graph = eqx.field(static=True)
    node_dim: int = eqx.field(static=True)
    translation_invariant: bool = eqx.field(static=True)
    edge_velocities: bool = eqx.field(static=True)

    def __init__(
        self,
        senders: Indices,
        receivers: Indices,
        *,
        num_nodes: int,
        node_dim: int,
        width: int = 64,
        depth: int = 2,
        activation: Callable[[Array], Array] = jax.nn.softplus,
        translation_invariant: bool = False,
        edge_velocities: bool = True,
        init: Literal["lnn", "default"] = "lnn",
        dtype: DTypeLike | None = None,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `senders`, `receivers`: integer arrays of the same length, one entry per
            edge `senders[k] → receivers[k]`, node indices in `[0, num_nodes)`.
        - `num_nodes`: the number of nodes.
        - `node_dim`: coordinates per node (1 for a scalar field, 2 for masses in
            the plane).
        - `width`, `depth`: units per hidden layer and number of hidden layers of
            each density's MLP.
        - `activation`: a smooth, elementwise activation (default softplus); one
            whose second derivative vanishes (ReLU) raises a `ValueError`.
        - `translation_invariant`: whether the densities see only position
            differences along edges (see above). Default `False`.
        - `edge_velocities`: whether the edge density sees the velocities (see
            above). Default `True`; `False` for a per-node kinetic energy.
        - `init`: `"lnn"` (the paper's initialization) or `"default"`, as for
            `MLPLagrangian`.
        - `dtype`: parameter dtype; defaults to JAX's default float dtype.
        - `key`: a JAX PRNG key.
        """
        for name, value in (("node_dim", node_dim), ("width", width), ("depth", depth)):
            check_int(value, name)
        if init not in ("lnn", "default"):
            raise ValueError(f"`init` must be 'lnn' or 'default', got {init!r}.")
        if not callable(activation):
            raise TypeError(f"`activation` must be callable, got {activation!r}.")
        check_curvature(activation)
        for name, flag in (
            ("translation_invariant", translation_invariant),
            ("edge_velocities", edge_velocities),
        ):
            if not isinstance(flag, bool):
                raise TypeError(f"`{name}` must be a bool, got {flag!r}.")
        dtype = check_dtype(dtype)
        self.graph = Graph(senders, receivers, num_nodes)
        node_key, edge_key = jax.random.split(key)
        node_in, edge_in = (1, 3) if translation_invariant else (2, 4)
        if not edge_velocities:
            edge_in = 1 if translation_invariant else 2
        self.node_layers = scalar_mlp(
            node_in * node_dim, width, depth, init=init, dtype=dtype, key=node_key
        )
        self.edge_layers = scalar_mlp(
            edge_in * node_dim, width, depth, init=init, dtype=dtype, key=edge_key
        )
        self.activation = activation
        self.node_dim = node_dim
        self.translation_invariant = translation_invariant
        self.edge_velocities = edge_velocities

    @property
    def mass_graph(self) -> Graph:
        return self.graph if self.edge_velocities else self.graph.isolated

    def __call__(self, q: Position, qdot: Velocity) -> Scalar:
        self.check_input(q, qdot)
        dtype = self.node_layers[0].weight.dtype
        if q.dtype != dtype or qdot.dtype != dtype:
            raise TypeError(
                f"`q` and `qdot` must have the parameters' dtype {dtype}, got "
                f"{q.dtype} and {qdot.dtype}; cast them or the model."
            )
        node_features, edge_features = local_features(
            self.graph,
            self.node_dim,
            q,
            qdot,
            self.translation_invariant,
            self.edge_velocities,
        )
        return self._density(self.node_layers, node_features) + self._density(
            self.edge_layers, edge_features
        )

    def _density(
        self, layers: tuple[eqx.nn.Linear, ...], features: Float[Array, "items f"]
    ) -> Scalar:
        """The sum over rows of a scalar MLP, as batched matrix products."""
        h = features
        # `scalar_mlp`'s layers have biases.
        for layer in layers[:-1]:
            assert layer.bias is not None
            h = self.activation(h @ layer.weight.T + layer.bias[None, :])
        output = layers[-1]
        assert output.bias is not None
        return jnp.sum(h @ output.weight[0]) + features.shape[0] * jnp.sum(output.bias)

    def with_graph(
        self,
        senders: Indices,
        receivers: Indices,
        *,
        num_nodes: int,
    ) -> "GraphLagrangian":
        """The same densities (the same parameters) on another graph.

        **Arguments:**

        - `senders`, `receivers`, `num_nodes`: the new graph, as for the
            constructor.

        **Returns:**

        A `GraphLagrangian`.
        """
        return replace_graph(self, Graph(senders, receivers, num_nodes))
