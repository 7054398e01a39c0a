import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._mechanical import AbstractMechanicalLagrangian
from .._misc import check_dof, check_positive


class ActuatedDoublePendulum(AbstractMechanicalLagrangian):
    r"""A motor-driven double pendulum of rigid links (the DFKI Underactuated Lab's
    design), in relative joint angles: `q₁` of link 1 from hanging down, `q₂` of
    link 2 relative to link 1.

        M(q) = [[I₁ + I₂ + m₂l₁² + 2m₂l₁r₂ cos q₂ + (g_r² + 1) I_r,
                 I₂ + m₂l₁r₂ cos q₂ − g_r I_r],
                [I₂ + m₂l₁r₂ cos q₂ − g_r I_r,  I₂ + g_r² I_r]]
        V(q) = −m₁ g r₁ cos q₁ − m₂ g (l₁ cos q₁ + r₂ cos(q₁ + q₂))
        L = ½ q̇ᵀ M q̇ − V

    with the rotor inertia `I_r` seen through the gear ratio `g_r`, as in the lab's
    model. Its joint friction and motor torques are forces: with the lab's
    identified coefficients, `lagrax.RayleighDissipation(b) +
    lagrax.CoulombFriction(cf) + lagrax.Actuation(u)`, which makes
    `M q̈ + C q̇ = G + τ − b q̇ − cf·atan(100 q̇)`.

    **Fields:**

    - `m1`, `m2`: link masses; `l1`: length of link 1; `r1`, `r2`: distances of
        the links' centres of mass from their joints; `I1`, `I2`: link inertias
        about their joints; `Ir`: rotor inertia; `gr`: gear ratio; `g`: gravity.
    """

    m1: float = eqx.field(converter=float)
    m2: float = eqx.field(converter=float)
    l1: float = eqx.field(converter=float)
    r1: float = eqx.field(converter=float)
    r2: float = eqx.field(converter=float)
    I1: float = eqx.field(converter=float)
    I2: float = eqx.field(converter=float)
    Ir: float = eqx.field(default=0.0, converter=float)
    gr: float = eqx.field(default=1.0, converter=float)
    g: float = eqx.field(default=9.81, converter=float)

    def __check_init__(self):
        check_positive(self, "m1", "m2", "l1", "I1", "I2", "gr")
        if not self.Ir >= 0:
            raise ValueError(f"`Ir` must be non-negative, got {self.Ir!r}.")

    def mass(self, q: Float[Array, "2"]) -> Float[Array, "2 2"]:
        check_dof(q, q, 2, "ActuatedDoublePendulum")
        coupling = self.m2 * self.l1 * self.r2 * jnp.cos(q[1])
        rotor = self.gr**2 * self.Ir
        m11 = self.I1 + self.I2 + self.m2 * self.l1**2 + 2 * coupling + rotor + self.Ir
        m12 = self.I2 + coupling - self.gr * self.Ir
        m22 = jnp.asarray(self.I2 + rotor, q.dtype)
        return jnp.stack([jnp.stack([m11, m12]), jnp.stack([m12, m22])])

    def potential(self, q: Float[Array, "2"]) -> Float[Array, ""]:
        check_dof(q, q, 2, "ActuatedDoublePendulum")
        return -self.m1 * self.g * self.r1 * jnp.cos(q[0]) - self.m2 * self.g * (
            self.l1 * jnp.cos(q[0]) + self.r2 * jnp.cos(q[0] + q[1])
        )
