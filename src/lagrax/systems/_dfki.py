from collections.abc import Callable

import equinox as eqx
import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._mechanical import AbstractMechanicalLagrangian
from .._misc import check_dof, check_real_values


def _parameter(name: str) -> Callable[[ArrayLike], Array]:
    """A field converter: the physical parameter `name`, a finite real number, as
    a 0-d array of JAX's default float dtype."""

    def convert(x: ArrayLike) -> Array:
        check_real_values(x, name)
        x = jnp.asarray(x, dtype=jnp.result_type(float))
        if x.shape != ():
            raise ValueError(f"`{name}` must be a number, got shape {x.shape}.")
        return x

    return convert


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

    Each is a 0-d array in JAX's default float dtype: a trainable leaf, so `fit`
    with `lagrax.inverse_dynamics_loss` identifies them from measured torques
    (keep a parameter fixed with `eqx.partition`, or by closing over the model).
    The motion is linear in the inertial parameters, so identification from
    torques is well posed where the data excite them.
    """

    m1: Float[Array, ""] = eqx.field(converter=_parameter("m1"))
    m2: Float[Array, ""] = eqx.field(converter=_parameter("m2"))
    l1: Float[Array, ""] = eqx.field(converter=_parameter("l1"))
    r1: Float[Array, ""] = eqx.field(converter=_parameter("r1"))
    r2: Float[Array, ""] = eqx.field(converter=_parameter("r2"))
    I1: Float[Array, ""] = eqx.field(converter=_parameter("I1"))
    I2: Float[Array, ""] = eqx.field(converter=_parameter("I2"))
    Ir: Float[Array, ""] = eqx.field(default=0.0, converter=_parameter("Ir"))
    gr: Float[Array, ""] = eqx.field(default=1.0, converter=_parameter("gr"))
    g: Float[Array, ""] = eqx.field(default=9.81, converter=_parameter("g"))

    def __check_init__(self):
        for name in ("m1", "m2", "l1", "I1", "I2", "gr", "Ir", "r1", "r2", "g"):
            value = getattr(self, name)
            if isinstance(value, jax.core.Tracer):
                continue
            value = np.asarray(value)
            if not (value >= 0 if name in ("Ir", "r1", "r2") else value > 0):
                kind = "non-negative" if name in ("Ir", "r1", "r2") else "positive"
                raise ValueError(
                    f"ActuatedDoublePendulum: `{name}` must be {kind}, got "
                    f"{float(value)!r}."
                )

    def _parameters(self, q):
        check_dof(q, q, 2, "ActuatedDoublePendulum")
        names = ("m1", "m2", "l1", "r1", "r2", "I1", "I2", "Ir", "gr", "g")
        return [jnp.asarray(getattr(self, name), q.dtype) for name in names]

    def mass(self, q: Float[Array, "2"]) -> Float[Array, "2 2"]:
        _, m2, l1, _, r2, i1, i2, ir, gr, _ = self._parameters(q)
        coupling = m2 * l1 * r2 * jnp.cos(q[1])
        rotor = gr**2 * ir
        m11 = i1 + i2 + m2 * l1**2 + 2 * coupling + rotor + ir
        m12 = i2 + coupling - gr * ir
        m22 = i2 + rotor
        return jnp.stack([jnp.stack([m11, m12]), jnp.stack([m12, m22])])

    def potential(self, q: Float[Array, "2"]) -> Float[Array, ""]:
        m1, m2, l1, r1, r2, _, _, _, _, g = self._parameters(q)
        return -m1 * g * r1 * jnp.cos(q[0]) - m2 * g * (
            l1 * jnp.cos(q[0]) + r2 * jnp.cos(q[0] + q[1])
        )
