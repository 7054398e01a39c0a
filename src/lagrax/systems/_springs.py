from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._graph import Graph, Indices
from .._graph_lagrangian import AbstractGraphLagrangian
from .._misc import check_int, check_real, check_real_values


def _per_item(value: ArrayLike | Sequence, count: int, name: str, what: str) -> Array:
    check_real_values(value, name)
    array = jnp.asarray(value, dtype=float)
    if array.ndim == 0:
        array = jnp.full(count, array)
    if array.shape != (count,):
        raise ValueError(
            f"`{name}` must be a number or an array of shape ({count},) (one per "
            f"{what}), got shape {array.shape}."
        )
    try:
        positive = bool(np.all(np.asarray(array) > 0))
    except jax.errors.TracerArrayConversionError:  # traced (in jit or eval_shape)
        positive = True
    if not positive:
        raise ValueError(f"`{name}` must be positive, got {value!r}.")
    return array


def _check_spacing(spacing) -> float:
    spacing = check_real(spacing, "spacing")
    if not spacing > 0:
        raise ValueError(f"`spacing` must be positive, got {spacing!r}.")
    return spacing


class SpringNetwork(AbstractGraphLagrangian):
    r"""Point masses in the plane joined by springs along the edges of a graph:

        L = Σᵢ ½ mᵢ |ẋᵢ|² − Σ_(s→r) ½ k (|x_r − x_s| − ℓ)² − g Σᵢ mᵢ yᵢ

    with `xᵢ = (xᵢ, yᵢ)` the position of mass `i` (`node_dim = 2`, so `q` is the
    flat `(x₀, y₀, x₁, y₁, …)`), a stiffness `k` and rest length `ℓ` per spring and
    gravity `g` along `−y`. The standard many-body benchmark of the Lagrangian and
    Hamiltonian graph-network literature; the mass matrix is diagonal, the energy
    `Σ ½ mᵢ|ẋᵢ|² + Σ ½ k(|x_r − x_s| − ℓ)² + g Σ mᵢ yᵢ` and, without gravity, the
    total momentum `Σ mᵢ ẋᵢ` are conserved. `chain` and `lattice` build the usual
    shapes; `rest_positions` gives the configuration they are built around.

    **Fields:**

    - `masses`: shape `(num_nodes,)`.
    - `stiffness`, `rest_lengths`: shape `(num_edges,)`.
    - `gravity`: `g ≥ 0`.
    - `reference`: a configuration of shape `(2·num_nodes,)`, or `None`.
    """

    masses: Float[Array, " nodes"]
    stiffness: Float[Array, " edges"]
    rest_lengths: Float[Array, " edges"]
    gravity: float
    reference: Float[Array, " dof"] | None
    graph: Graph = eqx.field(static=True)
    node_dim: int = eqx.field(static=True)

    def __init__(
        self,
        senders: Indices,
        receivers: Indices,
        *,
        num_nodes: int,
        masses: ArrayLike | Sequence = 1.0,
        stiffness: ArrayLike | Sequence = 1.0,
        rest_lengths: ArrayLike | Sequence = 1.0,
        gravity: float = 0.0,
        reference: ArrayLike | Sequence | None = None,
    ):
        """**Arguments:**

        - `senders`, `receivers`: the springs, one entry per spring, node indices in
            `[0, num_nodes)`; list each spring once.
        - `num_nodes`: the number of masses.
        - `masses`: a positive number, or one per mass.
        - `stiffness`, `rest_lengths`: positive numbers, or one per spring.
        - `gravity`: `g ≥ 0`.
        - `reference`: an optional configuration, shape `(2·num_nodes,)`, returned
            by `rest_positions` (for sampling states around it).
        """
        self.graph = Graph(senders, receivers, num_nodes)
        edges = self.graph.senders.size
        self.masses = _per_item(masses, self.graph.num_nodes, "masses", "mass")
        self.stiffness = _per_item(stiffness, edges, "stiffness", "spring")
        self.rest_lengths = _per_item(rest_lengths, edges, "rest_lengths", "spring")
        self.gravity = check_real(gravity, "gravity")
        self.node_dim = 2
        if reference is not None:
            check_real_values(reference, "reference")
            reference = jnp.asarray(reference, dtype=float)
            if reference.shape != (2 * self.graph.num_nodes,):
                raise ValueError(
                    "`reference` must have shape (2·num_nodes,) = "
                    f"({2 * self.graph.num_nodes},), got {reference.shape}."
                )
        self.reference = reference

    def __check_init__(self):
        if not self.gravity >= 0:
            raise ValueError(f"`gravity` must be ≥ 0, got {self.gravity!r}.")

    @classmethod
    def chain(
        cls, num_masses: int, *, spacing: float = 1.0, **kwargs
    ) -> "SpringNetwork":
        """`num_masses` masses in a row along `x`, neighbours joined by springs of
        rest length `spacing`; other keyword arguments as for the constructor."""
        num_masses = check_int(num_masses, "num_masses", low=2)
        spacing = _check_spacing(spacing)
        nodes = np.arange(num_masses - 1)
        grid = np.stack([np.arange(num_masses), np.zeros(num_masses)], axis=1)
        return cls(
            nodes,
            nodes + 1,
            num_nodes=num_masses,
            rest_lengths=spacing,
            reference=spacing * grid.reshape(-1),
            **kwargs,
        )

    @classmethod
    def lattice(
        cls,
        rows: int,
        cols: int,
        *,
        spacing: float = 1.0,
        diagonals: bool = True,
        **kwargs,
    ) -> "SpringNetwork":
        """A `rows × cols` square lattice of masses (node `r·cols + c` at
        `(c, r)·spacing`) joined by springs to their horizontal and vertical
        neighbours, and with `diagonals=True` (the default, which makes the lattice
        rigid) along both diagonals of each cell, at their rest lengths; other
        keyword arguments as for the constructor."""
        rows = check_int(rows, "rows")
        cols = check_int(cols, "cols")
        spacing = _check_spacing(spacing)
        index = np.arange(rows * cols).reshape(rows, cols)
        bonds = [
            (index[:, :-1], index[:, 1:], 1.0),
            (index[:-1, :], index[1:, :], 1.0),
        ]
        if diagonals:
            bonds += [
                (index[:-1, :-1], index[1:, 1:], np.sqrt(2)),
                (index[:-1, 1:], index[1:, :-1], np.sqrt(2)),
            ]
        senders = np.concatenate([s.ravel() for s, _, _ in bonds])
        receivers = np.concatenate([r.ravel() for _, r, _ in bonds])
        lengths = np.concatenate([np.full(s.size, f * spacing) for s, _, f in bonds])
        if senders.size == 0:
            raise ValueError("A lattice needs at least two masses.")
        grid = np.stack(np.divmod(np.arange(rows * cols), cols)[::-1], axis=1)
        return cls(
            senders,
            receivers,
            num_nodes=rows * cols,
            rest_lengths=lengths,
            reference=spacing * grid.reshape(-1),
            **kwargs,
        )

    @property
    def mass_graph(self) -> Graph:
        """No edge density depends on velocities: the mass matrix is diagonal."""
        return self.graph.isolated

    def rest_positions(self) -> Float[Array, " dof"]:
        """The configuration the network was built around (every spring at rest
        for `chain` and `lattice`), flat and node-major; raises if none was
        given."""
        if self.reference is None:
            raise ValueError(
                "This SpringNetwork has no reference configuration: pass "
                "`reference=` or build it with SpringNetwork.chain or .lattice."
            )
        return self.reference

    def __call__(
        self, q: Float[Array, " dof"], qdot: Float[Array, " dof"]
    ) -> Float[Array, ""]:
        self.check_input(q, qdot)
        x = q.reshape(self.num_nodes, 2)
        v = qdot.reshape(self.num_nodes, 2)
        bond = x[self.receivers] - x[self.senders]
        length = jnp.sqrt(jnp.sum(bond**2, axis=1))
        kinetic = 0.5 * jnp.sum(self.masses * jnp.sum(v**2, axis=1))
        elastic = 0.5 * jnp.sum(self.stiffness * (length - self.rest_lengths) ** 2)
        return kinetic - elastic - self.gravity * jnp.sum(self.masses * x[:, 1])
