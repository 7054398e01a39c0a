import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._graph import Graph
from .._graph_lagrangian import AbstractGraphLagrangian
from .._misc import check_int, check_positive, check_real


class Wave1D(AbstractGraphLagrangian):
    r"""The periodic discrete wave: `num_nodes` values `φᵢ` of a field on a ring of
    length `length`, spacing `Δx = length / num_nodes`,

        L = Σᵢ Δx [½ φ̇ᵢ² − ½ c² ((φᵢ₊₁ − φᵢ)/Δx)²]      (indices mod num_nodes),

    so that exactly `φ̈ᵢ = c² (φᵢ₊₁ − 2φᵢ + φᵢ₋₁) / Δx²`: the wave equation
    `φ_tt = c² φ_xx` discretized with central differences. A graph Lagrangian on
    the ring `i → i + 1`, so it takes lagrax's linear-cost path; the mass matrix is
    `Δx·I`.

    The discrete normal modes `cos(2π k i / N + θ)` oscillate at
    `ω_k = (2c/Δx) sin(π k / N)` (`frequency`); the energy
    `Σᵢ Δx [½ φ̇ᵢ² + ½ c² ((φᵢ₊₁ − φᵢ)/Δx)²]` is conserved.

    **Fields:**

    - `num_nodes`: the number of grid points `N ≥ 3`.
    - `length`: the ring's length (default 1).
    - `wave_speed`: `c > 0` (default 1).
    """

    length: float
    wave_speed: float
    graph: Graph = eqx.field(static=True)
    node_dim: int = eqx.field(static=True)

    def __init__(self, num_nodes: int, *, length: float = 1.0, wave_speed: float = 1.0):
        """**Arguments:**

        - `num_nodes`: the number of grid points, at least 3.
        - `length`: the ring's length.
        - `wave_speed`: the wave speed `c`.
        """
        num_nodes = check_int(num_nodes, "num_nodes", low=3)
        nodes = np.arange(num_nodes)
        self.graph = Graph(nodes, (nodes + 1) % num_nodes, num_nodes)
        self.node_dim = 1
        self.length = check_real(length, "length")
        self.wave_speed = check_real(wave_speed, "wave_speed")

    def __check_init__(self):
        check_positive(self, "length", "wave_speed")

    @property
    def mass_graph(self) -> Graph:
        """No edge density depends on velocities: the mass matrix is diagonal."""
        return self.graph.isolated

    @property
    def spacing(self) -> float:
        """The grid spacing `Δx = length / num_nodes`."""
        return self.length / self.num_nodes

    @property
    def grid(self) -> Float[Array, " nodes"]:
        """The positions `xᵢ = i·Δx` of the grid points."""
        return jnp.arange(self.num_nodes, dtype=float) * self.spacing

    def frequency(self, k: int) -> float:
        """`ω_k = (2c/Δx) sin(π k / N)`, the frequency of the `k`-th normal mode."""
        return float(
            2 * self.wave_speed / self.spacing * np.sin(np.pi * k / self.num_nodes)
        )

    def __call__(
        self, q: Float[Array, " nodes"], qdot: Float[Array, " nodes"]
    ) -> Float[Array, ""]:
        self.check_input(q, qdot)
        dx = self.spacing
        gradient = (jnp.roll(q, -1) - q) / dx
        return dx * jnp.sum(0.5 * qdot**2 - 0.5 * self.wave_speed**2 * gradient**2)
