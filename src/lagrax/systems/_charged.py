from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._lagrangian import AbstractLagrangian
from .._misc import check_dof, check_positive, check_real, real


def _vector3(name: str) -> Callable[[object], tuple[float, float, float]]:
    """A field converter: the field `name` as a 3-tuple of finite real numbers."""

    def convert(value) -> tuple[float, float, float]:
        if np.ndim(value) != 1 or len(value) != 3:
            raise ValueError(f"`{name}` must be a 3-vector, got {value!r}.")
        return tuple(check_real(v, name) for v in value)  # pyright: ignore[reportReturnType]

    return convert


class ChargedParticle(AbstractLagrangian):
    r"""A charged particle in uniform electric and magnetic fields (three degrees of
    freedom, Cartesian position `r`):

        L = ½ m |ṙ|² + e ṙ·A(r) + e E·r,     A(r) = ½ B × r  (symmetric gauge)

    The Euler–Lagrange equations give the Lorentz force `m r̈ = e (E + ṙ × B)`. The
    Lagrangian depends on velocity through `A`, and the canonical momentum
    `p = m ṙ + e A(r)` is not `m ṙ`.

    **Fields:**

    - `mass`: `m > 0`.
    - `charge`: `e`.
    - `magnetic_field`: `B`, a 3-vector (default along z).
    - `electric_field`: `E`, a 3-vector (default zero).
    """

    mass: float = eqx.field(default=1.0, converter=real("mass"))
    charge: float = eqx.field(default=1.0, converter=real("charge"))
    magnetic_field: tuple[float, float, float] = eqx.field(
        default=(0.0, 0.0, 1.0), converter=_vector3("magnetic_field")
    )
    electric_field: tuple[float, float, float] = eqx.field(
        default=(0.0, 0.0, 0.0), converter=_vector3("electric_field")
    )

    def __check_init__(self):
        check_positive(self, "mass")

    def __call__(
        self, q: Float[Array, "3"], qdot: Float[Array, "3"]
    ) -> Float[Array, ""]:
        check_dof(q, qdot, 3, "ChargedParticle")
        b = jnp.asarray(self.magnetic_field, dtype=q.dtype)
        e = jnp.asarray(self.electric_field, dtype=q.dtype)
        vector_potential = 0.5 * jnp.cross(b, q)
        return (
            0.5 * self.mass * jnp.dot(qdot, qdot)
            + self.charge * jnp.dot(qdot, vector_potential)
            + self.charge * jnp.dot(e, q)
        )
