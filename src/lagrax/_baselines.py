"""Non-Lagrangian models of `q̈(q, q̇)`, the baselines of Cranmer et al."""

import abc
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.typing import DTypeLike
from jaxtyping import Array, Float, PRNGKeyArray

from ._graph import Graph, Indices, local_features, replace_graph
from ._misc import (
    angle_features,
    check_angles,
    check_curvature,
    check_dtype,
    check_int,
    check_state,
)


class AbstractDynamics(eqx.Module):
    """A model that predicts the acceleration `q̈(q, q̇)` of a second-order system
    directly, rather than through the Euler–Lagrange equations of a Lagrangian.

    The training losses, `lagrax.rollout` and the metrics accept these and
    Lagrangians alike: a Lagrangian's acceleration comes from `lagrax.acceleration`,
    an `AbstractDynamics`' from its `acceleration` method. Subclass it to train your
    own baseline with `lagrax.fit`.
    """

    @abc.abstractmethod
    def acceleration(
        self, q: Float[Array, " dof"], qdot: Float[Array, " dof"]
    ) -> Float[Array, " dof"]:
        """**Arguments:**

        - `q`, `qdot`: the state, each of shape `(dof,)`.

        **Returns:**

        The predicted `q̈`, of shape `(dof,)`.
        """

    @abc.abstractmethod
    def velocity(
        self, q: Float[Array, " dof"], qdot: Float[Array, " dof"]
    ) -> Float[Array, " dof"]:
        """The rate of change of `q` that the model's equations give at `(q, q̇)`.

        `q̇` itself for a model of `q̈` alone; a Hamiltonian network's `∂H/∂p`, which
        its training must make agree with the observed `q̇`. `acceleration_loss`
        penalizes the mismatch and rollouts integrate `(velocity, acceleration)`.

        **Arguments:**

        - `q`, `qdot`: the state, each of shape `(dof,)`.

        **Returns:**

        The predicted `q̇`, of shape `(dof,)`.
        """


def _check_sizes(**sizes) -> None:
    for name, value in sizes.items():
        check_int(value, name)


def _check_input(model, q, qdot) -> None:
    check_state(q, qdot)
    if q.shape != (model.dof,):
        raise ValueError(
            f"This {type(model).__name__} has dof={model.dof}: `q` and `qdot` must "
            f"have shape ({model.dof},), got {q.shape}."
        )


class NeuralODEBaseline(AbstractDynamics):
    """The black-box baseline of Cranmer et al.: an MLP maps `concat(q, q̇)` to `q̈`.

    It can fit any dynamics but has no built-in conservation law, so its rollouts
    drift in energy; it is what a Lagrangian Neural Network is compared against.
    One MLP evaluation per acceleration. Coordinates listed in `angles` enter as
    `(cos q_i, sin q_i)`, as in `lagrax.MLPLagrangian`.

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

    mlp: eqx.nn.MLP
    dof: int = eqx.field(static=True)
    angles: tuple[int, ...] = eqx.field(static=True)

    def __init__(
        self,
        dof: int,
        *,
        width: int = 128,
        depth: int = 3,
        activation: Callable[[Array], Array] = jax.nn.softplus,
        angles: Sequence[int] = (),
        dtype: DTypeLike | None = None,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `dof`: number of degrees of freedom `n`: the MLP maps `2n` inputs to `n`.
        - `width`: units per hidden layer.
        - `depth`: number of hidden layers.
        - `activation`: elementwise activation.
        - `angles`: indices of the coordinates that are angles (period 2π), fed to
            the MLP as `(cos q_i, sin q_i)`. Default: none.
        - `dtype`: parameter dtype; defaults to JAX's default float dtype.
        - `key`: a JAX PRNG key.
        """
        _check_sizes(dof=dof, width=width, depth=depth)
        if not callable(activation):
            raise TypeError(f"`activation` must be callable, got {activation!r}.")
        self.angles = check_angles(angles, dof)
        dtype = check_dtype(dtype)
        self.mlp = eqx.nn.MLP(
            2 * dof + len(self.angles),
            dof,
            width,
            depth,
            activation=activation,
            dtype=dtype,
            key=key,
        )
        self.dof = dof

    def acceleration(
        self, q: Float[Array, " dof"], qdot: Float[Array, " dof"]
    ) -> Float[Array, " dof"]:
        """**Arguments:**

        - `q`, `qdot`: the state, each of shape `(dof,)`.

        **Returns:**

        `q̈ = MLP(concat(q, q̇))` (with angles as cosines and sines), of shape
        `(dof,)`.
        """
        _check_input(self, q, qdot)
        return self.mlp(angle_features(q, qdot, self.angles))

    def velocity(
        self, q: Float[Array, " dof"], qdot: Float[Array, " dof"]
    ) -> Float[Array, " dof"]:
        """**Returns:** `qdot`: the baseline models `q̈` only."""
        return qdot


class HamiltonianNN(AbstractDynamics):
    r"""A Hamiltonian Neural Network: an MLP `H(q, p)` and Hamilton's equations
    `q̇ = ∂H/∂p`, `ṗ = −∂H/∂q`.

    Data come as `(q, q̇)`, so the network is told how to form the momentum `p`:

    - `momentum=None` (non-canonical, `p := q̇`): `q̈ = ṗ = −∂H/∂q(q, q̇)`. This is
        the baseline of Cranmer et al. that fails when `q̇` is not the canonical
        momentum (the relativistic particle, the double pendulum in angles).
    - `momentum=P`, a callable `(q, q̇) -> p` giving the canonical momentum (for
        instance `functools.partial(lagrax.momentum, system)` when the true system
        is known, as Greydanus et al. assume): `p = P(q, q̇)`, `ṗ = −∂H/∂q(q, p)`
        and, differentiating `p = P(q, q̇)` in time,

            (∂P/∂q̇) q̈ = ṗ − (∂P/∂q) ∂H/∂p.

    Both of Hamilton's equations are used, as by Greydanus et al.: `velocity`
    returns `∂H/∂p`, `lagrax.acceleration_loss` fits it to the observed `q̇` as well
    as `q̈` to the observed acceleration, and rollouts integrate both. This is what
    makes the non-canonical network fail where `q̇` is not the momentum: fitting
    `∂H/∂p = q̇` forces `H = ½q̇² + V(q)`, whose `q̈ = −V'(q)` cannot depend on `q̇`.
    Cost per evaluation: one gradient of `H`; canonical momenta add a `dof × dof`
    Jacobian of `P` and a linear solve.

    ??? cite "Reference"

        ```bibtex
        @inproceedings{greydanus2019hamiltonian,
            title={Hamiltonian Neural Networks},
            author={Greydanus, Samuel and Dzamba, Misko and Yosinski, Jason},
            booktitle={Advances in Neural Information Processing Systems},
            year={2019}
        }
        ```
    """

    mlp: eqx.nn.MLP
    momentum: Callable[[Array, Array], Array] | None
    dof: int = eqx.field(static=True)

    def __init__(
        self,
        dof: int,
        *,
        width: int = 128,
        depth: int = 3,
        activation: Callable[[Array], Array] = jax.nn.softplus,
        momentum: Callable[[Array, Array], Array] | None = None,
        dtype: DTypeLike | None = None,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `dof`: number of degrees of freedom `n`: `H` is an MLP of `2n` inputs.
        - `width`: units per hidden layer.
        - `depth`: number of hidden layers.
        - `activation`: a smooth elementwise activation (training differentiates
            `∂H/∂q` again: ReLU is refused).
        - `momentum`: `None` for `p := q̇`, or a callable `(q, qdot) -> p` giving
            canonical momenta.
        - `dtype`: parameter dtype; defaults to JAX's default float dtype.
        - `key`: a JAX PRNG key.
        """
        _check_sizes(dof=dof, width=width, depth=depth)
        if not callable(activation):
            raise TypeError(f"`activation` must be callable, got {activation!r}.")
        check_curvature(activation)
        if momentum is not None and not callable(momentum):
            raise TypeError(
                "`momentum` must be None or a callable (q, qdot) -> p, got "
                f"{momentum!r}."
            )
        dtype = check_dtype(dtype)
        self.mlp = eqx.nn.MLP(
            2 * dof, "scalar", width, depth, activation=activation, dtype=dtype, key=key
        )
        self.momentum = momentum
        self.dof = dof

    def hamiltonian(
        self, q: Float[Array, " dof"], p: Float[Array, " dof"]
    ) -> Float[Array, ""]:
        """**Arguments:**

        - `q`: positions, shape `(dof,)`.
        - `p`: momenta (or velocities, when `momentum=None`), shape `(dof,)`.

        **Returns:**

        The scalar `H(q, p)`.
        """
        return self.mlp(jnp.concatenate([q, p]))

    def acceleration(
        self, q: Float[Array, " dof"], qdot: Float[Array, " dof"]
    ) -> Float[Array, " dof"]:
        """**Arguments:**

        - `q`, `qdot`: the state, each of shape `(dof,)`.

        **Returns:**

        The `q̈` implied by Hamilton's equations, of shape `(dof,)`.
        """
        _check_input(self, q, qdot)
        if self.momentum is None:
            return -jax.grad(self.hamiltonian)(q, qdot)
        momentum = self.momentum
        p = momentum(q, qdot)
        # d/dt P(q, q̇) = (∂P/∂q) q̇_H + (∂P/∂q̇) q̈ with q̇_H = ∂H/∂p, Hamilton's
        # velocity.
        _, dp_dq_velocity = jax.jvp(
            lambda x: momentum(x, qdot), (q,), (jax.grad(self.hamiltonian, 1)(q, p),)
        )
        pdot = -jax.grad(self.hamiltonian)(q, p)
        dp_dqdot = jax.jacfwd(lambda v: momentum(q, v))(qdot)
        return jnp.linalg.solve(dp_dqdot, pdot - dp_dq_velocity)

    def velocity(
        self, q: Float[Array, " dof"], qdot: Float[Array, " dof"]
    ) -> Float[Array, " dof"]:
        """**Arguments:**

        - `q`, `qdot`: the state, each of shape `(dof,)`.

        **Returns:**

        Hamilton's `q̇ = ∂H/∂p` at `p = qdot` (non-canonical) or `p = P(q, qdot)`.
        """
        _check_input(self, q, qdot)
        p = qdot if self.momentum is None else self.momentum(q, qdot)
        return jax.grad(self.hamiltonian, argnums=1)(q, p)


class MessagePassingBaseline(AbstractDynamics):
    r"""A black-box graph network for `q̈`: one round of message passing, no
    Lagrangian, the baseline of the graph experiments.

    Each edge `s → r` computes a message `m = MLP_edge(q_s, q̇_s, q_r, q̇_r)` (or
    `MLP_edge(q_r − q_s, q̇_s, q̇_r)` with `translation_invariant=True`) of
    `2·message_dim` entries, the first half sent to `r` and the second to `s`;
    each node sums what it receives and predicts its own acceleration,
    `q̈_i = MLP_node(q_i, q̇_i, Σ messages)` (without `q_i` when translation
    invariant). Shared MLPs make it permutation-equivariant and let it run on any
    graph (`with_graph`), like `lagrax.GraphLagrangian`, and its cost is one
    evaluation per node and edge; but nothing in it conserves energy.
    """

    edge_mlp: eqx.nn.MLP
    node_mlp: eqx.nn.MLP
    graph: Graph = eqx.field(static=True)
    node_dim: int = eqx.field(static=True)
    message_dim: int = eqx.field(static=True)
    translation_invariant: bool = eqx.field(static=True)

    def __init__(
        self,
        senders: Indices,
        receivers: Indices,
        *,
        num_nodes: int,
        node_dim: int,
        width: int = 64,
        depth: int = 2,
        message_dim: int = 16,
        activation: Callable[[Array], Array] = jax.nn.softplus,
        translation_invariant: bool = False,
        dtype: DTypeLike | None = None,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `senders`, `receivers`, `num_nodes`, `node_dim`: the graph, as for
            `lagrax.GraphLagrangian`.
        - `width`, `depth`: units per hidden layer and hidden layers of each MLP.
        - `message_dim`: entries of a message to each end of an edge.
        - `activation`: elementwise activation.
        - `translation_invariant`: whether the MLPs see only position differences
            along edges.
        - `dtype`: parameter dtype; defaults to JAX's default float dtype.
        - `key`: a JAX PRNG key.
        """
        _check_sizes(
            node_dim=node_dim, width=width, depth=depth, message_dim=message_dim
        )
        if not callable(activation):
            raise TypeError(f"`activation` must be callable, got {activation!r}.")
        dtype = check_dtype(dtype)
        self.graph = Graph(senders, receivers, num_nodes)
        edge_key, node_key = jax.random.split(key)
        edge_in = (3 if translation_invariant else 4) * node_dim
        node_in = (1 if translation_invariant else 2) * node_dim + message_dim
        self.edge_mlp = eqx.nn.MLP(
            edge_in,
            2 * message_dim,
            width,
            depth,
            activation=activation,
            dtype=dtype,
            key=edge_key,
        )
        self.node_mlp = eqx.nn.MLP(
            node_in,
            node_dim,
            width,
            depth,
            activation=activation,
            dtype=dtype,
            key=node_key,
        )
        self.node_dim = node_dim
        self.message_dim = message_dim
        self.translation_invariant = translation_invariant

    def acceleration(
        self, q: Float[Array, " dof"], qdot: Float[Array, " dof"]
    ) -> Float[Array, " dof"]:
        """**Arguments:**

        - `q`, `qdot`: the state, flat `(num_nodes · node_dim,)`, node-major.

        **Returns:**

        The predicted `q̈`, of the same shape.
        """
        check_state(q, qdot)
        size = self.graph.num_nodes * self.node_dim
        if q.shape != (size,):
            raise ValueError(
                f"This MessagePassingBaseline has {self.graph.num_nodes} nodes of "
                f"dimension {self.node_dim}: `q` and `qdot` must have shape "
                f"({size},), got {q.shape}."
            )
        node_features, edge_features = local_features(
            self.graph, self.node_dim, q, qdot, self.translation_invariant
        )
        messages = jax.vmap(self.edge_mlp)(edge_features)
        received = jnp.zeros((self.graph.num_nodes, self.message_dim), q.dtype)
        received = received.at[self.graph.receivers].add(
            messages[:, : self.message_dim]
        )
        received = received.at[self.graph.senders].add(messages[:, self.message_dim :])
        inputs = jnp.concatenate([node_features, received], axis=1)
        return jax.vmap(self.node_mlp)(inputs).reshape(-1)

    def velocity(
        self, q: Float[Array, " dof"], qdot: Float[Array, " dof"]
    ) -> Float[Array, " dof"]:
        """**Returns:** `qdot`: the baseline models `q̈` only."""
        return qdot

    def with_graph(
        self, senders: Indices, receivers: Indices, *, num_nodes: int
    ) -> "MessagePassingBaseline":
        """The same MLPs (the same parameters) on another graph, as
        `lagrax.GraphLagrangian.with_graph`."""
        return replace_graph(self, Graph(senders, receivers, num_nodes))
