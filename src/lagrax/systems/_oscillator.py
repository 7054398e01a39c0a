import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._lagrangian import AbstractLagrangian
from .._misc import check_dof, check_positive, real


class HarmonicOscillator(AbstractLagrangian):
    r"""A mass on a spring: `L = ½ m q̇² − ½ k q²` (one degree of freedom).

    The motion is `q(t) = q₀ cos ωt + (q̇₀/ω) sin ωt` with `ω = √(k/m)`, and the
    energy `½ m q̇² + ½ k q²` is conserved.

    **Fields:**

    - `mass`: `m > 0`.
    - `stiffness`: `k > 0`.
    """

    mass: float = eqx.field(default=1.0, converter=real("mass"))
    stiffness: float = eqx.field(default=1.0, converter=real("stiffness"))

    def __check_init__(self):
        check_positive(self, "mass", "stiffness")

    def __call__(
        self, q: Float[Array, "1"], qdot: Float[Array, "1"]
    ) -> Float[Array, ""]:
        check_dof(q, qdot, 1, "HarmonicOscillator")
        return 0.5 * self.mass * jnp.sum(qdot**2) - 0.5 * self.stiffness * jnp.sum(q**2)
