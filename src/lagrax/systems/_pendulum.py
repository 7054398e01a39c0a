import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._lagrangian import AbstractLagrangian
from .._misc import check_dof, check_positive, real


class Pendulum(AbstractLagrangian):
    r"""A simple pendulum: `L = ½ m l² θ̇² + m g l cos θ`, `θ` from the downward
    vertical (one degree of freedom).

    The equation of motion is `θ̈ = −(g/l) sin θ`.

    **Fields:**

    - `mass`: bob mass `m > 0`.
    - `length`: rod length `l > 0`.
    - `g`: gravitational acceleration.
    """

    mass: float = eqx.field(default=1.0, converter=real("mass"))
    length: float = eqx.field(default=1.0, converter=real("length"))
    g: float = eqx.field(default=9.8, converter=real("g"))

    def __check_init__(self):
        check_positive(self, "mass", "length")

    def __call__(
        self, q: Float[Array, "1"], qdot: Float[Array, "1"]
    ) -> Float[Array, ""]:
        check_dof(q, qdot, 1, "Pendulum")
        kinetic = 0.5 * self.mass * self.length**2 * qdot[0] ** 2
        potential = -self.mass * self.g * self.length * jnp.cos(q[0])
        return kinetic - potential


class DoublePendulum(AbstractLagrangian):
    r"""A double pendulum of point masses on rigid massless rods (two degrees of
    freedom), the benchmark of Cranmer et al.

    `q = (θ₁, θ₂)` are absolute angles from the downward vertical, as in the paper:

        T = ½(m₁ + m₂) l₁² θ̇₁² + ½ m₂ l₂² θ̇₂² + m₂ l₁ l₂ θ̇₁ θ̇₂ cos(θ₁ − θ₂)
        V = −(m₁ + m₂) g l₁ cos θ₁ − m₂ g l₂ cos θ₂
        L = T − V

    `V` ranges over `±((m₁ + m₂) g l₁ + m₂ g l₂)`; with the defaults its maximum,
    29.4 (`max_potential_energy`), is the paper's energy normalization.

    **Fields:**

    - `m1`, `m2`: the masses, positive.
    - `l1`, `l2`: the rod lengths, positive.
    - `g`: gravitational acceleration.
    """

    m1: float = eqx.field(default=1.0, converter=real("m1"))
    m2: float = eqx.field(default=1.0, converter=real("m2"))
    l1: float = eqx.field(default=1.0, converter=real("l1"))
    l2: float = eqx.field(default=1.0, converter=real("l2"))
    g: float = eqx.field(default=9.8, converter=real("g"))

    def __check_init__(self):
        check_positive(self, "m1", "m2", "l1", "l2")

    @property
    def max_potential_energy(self) -> float:
        """`(m₁ + m₂) g l₁ + m₂ g l₂`, the largest potential energy (both arms up):
        the energy normalization of Cranmer et al., and the largest energy of a
        motion released from rest."""
        return (self.m1 + self.m2) * self.g * self.l1 + self.m2 * self.g * self.l2

    def __call__(
        self, q: Float[Array, "2"], qdot: Float[Array, "2"]
    ) -> Float[Array, ""]:
        check_dof(q, qdot, 2, "DoublePendulum")
        t1, t2 = q[0], q[1]
        w1, w2 = qdot[0], qdot[1]
        m1, m2, l1, l2, g = self.m1, self.m2, self.l1, self.l2, self.g
        kinetic = (
            0.5 * (m1 + m2) * l1**2 * w1**2
            + 0.5 * m2 * l2**2 * w2**2
            + m2 * l1 * l2 * w1 * w2 * jnp.cos(t1 - t2)
        )
        potential = -(m1 + m2) * g * l1 * jnp.cos(t1) - m2 * g * l2 * jnp.cos(t2)
        return kinetic - potential
