from collections.abc import Sequence
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._custom_types import PositionLike, Scalar, VelocityLike
from .._mechanical import AbstractMechanicalLagrangian
from .._misc import as_state, check_real_values, real


_COORDINATES = ("cartesian", "angles")


def _per_body(value: ArrayLike | Sequence, name: str) -> Array:
    """`value`, one finite real number per body, as a 1-D float array."""
    check_real_values(value, name)
    array = jnp.asarray(value, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(
            f"`{name}` must be a sequence of one number per body (at least one), "
            f"got {value!r}."
        )
    return array


class ChainPendulum(AbstractMechanicalLagrangian):
    r"""A chain of `N` point masses on rigid massless links hanging from a fixed
    pivot at the origin, under gravity `g` along `−y`: body `i` sits at the end of
    link `i`, which joins it to body `i − 1` (to the pivot for `i = 0`).

    Two forms describe the same motion:

    - `coordinates="cartesian"` (`2N` degrees of freedom): `q` is the flat
        `(x₀, y₀, x₁, y₁, …)` of the bodies' positions `xᵢ`, and

            L = Σᵢ ½ mᵢ |ẋᵢ|² − g Σᵢ mᵢ yᵢ

        is a free particle per body: the links enter only through `constraint`,
        one length constraint per link, which a constrained solve must be given.
    - `coordinates="angles"` (`N` degrees of freedom): `q = (θ₀, …, θ_{N−1})` are
        absolute angles from the downward vertical, as in `DoublePendulum` (which
        the form equals for `N = 2`), and `xᵢ = Σ_{j≤i} lⱼ (sin θⱼ, −cos θⱼ)`; `L`
        is the same kinetic and potential energy written in the angles, with the
        mass matrix `M_jk = l_j l_k cos(θ_j − θ_k) Σ_{i ≥ max(j, k)} mᵢ`.

    Both are mechanical Lagrangians (`½ q̇ᵀ M(q) q̇ − V(q)`, with `M` in closed
    form), so an acceleration is one Cholesky solve. `to_cartesian` and `to_angles`
    map states between the forms, and `positions` gives the bodies' positions
    from either.

    **Fields:**

    - `masses`: `mᵢ > 0`, shape `(N,)`.
    - `lengths`: `lᵢ > 0`, shape `(N,)`.
    - `g`: gravitational acceleration.
    - `coordinates`: `"cartesian"` or `"angles"`.

    `masses` and `lengths` are trainable leaves, as in `SpringNetwork`.

    !!! example

        ```python
        chain = lagrax.systems.ChainPendulum([1.0, 2.0, 1.0], [1.0, 0.5, 0.5])
        q, qdot = chain.to_cartesian(theta, theta_dot)
        qddot = lagrax.acceleration(chain, q, qdot, constraint=chain.constraint)
        ```
    """

    masses: Float[Array, " bodies"]
    lengths: Float[Array, " bodies"]
    g: float = eqx.field(converter=real("g"))
    coordinates: Literal["cartesian", "angles"] = eqx.field(static=True)

    def __init__(
        self,
        masses: ArrayLike | Sequence,
        lengths: ArrayLike | Sequence,
        *,
        g: float = 9.81,
        coordinates: str = "cartesian",
    ):
        """**Arguments:**

        - `masses`: one positive number per body, from the pivot outwards.
        - `lengths`: one positive number per link, as many as `masses`.
        - `g`: gravitational acceleration, along `−y`.
        - `coordinates`: `"cartesian"` (the default) or `"angles"`, see above.
        """
        if not isinstance(coordinates, str) or coordinates not in _COORDINATES:
            raise ValueError(
                f"`coordinates` must be one of {_COORDINATES}, got {coordinates!r}."
            )
        self.masses = _per_body(masses, "masses")
        self.lengths = _per_body(lengths, "lengths")
        self.g = g
        self.coordinates = coordinates

    def __check_init__(self):
        if self.lengths.shape != self.masses.shape:
            raise ValueError(
                f"ChainPendulum: `lengths` must have one entry per body, as `masses` "
                f"has ({self.masses.shape[0]}); got {self.lengths.shape[0]}."
            )
        for name in ("masses", "lengths"):
            try:
                positive = bool(np.all(np.asarray(getattr(self, name)) > 0))
            except jax.errors.TracerArrayConversionError:  # built under jit
                continue
            if not positive:
                raise ValueError(
                    f"ChainPendulum: `{name}` must be positive, got "
                    f"{np.asarray(getattr(self, name)).tolist()!r}."
                )

    @property
    def num_bodies(self) -> int:
        """`N`, the number of bodies (and links)."""
        return self.masses.shape[0]

    @property
    def dof(self) -> int:
        """The degrees of freedom: `2N` in Cartesian coordinates, `N` in angles."""
        return self.num_bodies * (2 if self.coordinates == "cartesian" else 1)

    @property
    def max_potential_energy(self) -> float:
        """`g Σᵢ mᵢ Σ_{j≤i} lⱼ`, the largest potential energy (the chain straight
        up): the largest energy of a motion released from rest, and an energy
        scale (for `N = 2`, `DoublePendulum`'s)."""
        return float(self.g * jnp.sum(self.masses * jnp.cumsum(self.lengths)))

    def _configuration(self, q: PositionLike) -> Array:
        what = f"{self.num_bodies} bodies in {self.coordinates} coordinates"
        return _state(q, q, self.dof, ("q", "q"), what)[0]

    def _parameters(self, x: Array) -> tuple[Array, Array]:
        # Trained in one dtype and run in another: the state's dtype wins.
        return self.masses.astype(x.dtype), self.lengths.astype(x.dtype)

    def mass(self, q: PositionLike) -> Float[Array, "dof dof"]:
        """The mass matrix: `diag(m₀, m₀, m₁, m₁, …)` in Cartesian coordinates,
        `M_jk = l_j l_k cos(θ_j − θ_k) Σ_{i ≥ max(j, k)} mᵢ` in angles."""
        q = self._configuration(q)
        masses, lengths = self._parameters(q)
        if self.coordinates == "cartesian":
            return jnp.diag(jnp.repeat(masses, 2))
        # Σ_{i ≥ k} mᵢ: the mass that link k carries.
        carried = jnp.cumsum(masses[::-1])[::-1]
        outer = np.maximum.outer(np.arange(self.num_bodies), np.arange(self.num_bodies))
        return (
            jnp.outer(lengths, lengths)
            * jnp.cos(q[:, None] - q[None, :])
            * carried[outer]
        )

    def potential(self, q: PositionLike) -> Scalar:
        """`V = g Σᵢ mᵢ yᵢ`."""
        q = self._configuration(q)
        masses, _ = self._parameters(q)
        return self.g * jnp.sum(masses * self.positions(q)[:, 1])

    def positions(self, q: PositionLike) -> Float[Array, "bodies 2"]:
        """The bodies' positions `xᵢ`, one row `(xᵢ, yᵢ)` per body, from a
        configuration `q` of this system's form."""
        q = self._configuration(q)
        if self.coordinates == "cartesian":
            return q.reshape(self.num_bodies, 2)
        _, lengths = self._parameters(q)
        return jnp.cumsum(lengths[:, None] * _direction(q), axis=0)

    def constraint(self, q: PositionLike) -> Float[Array, " bodies"]:
        """The length constraints of the Cartesian form,
        `gᵢ(q) = (|xᵢ − xᵢ₋₁|² − lᵢ²) / 2` (with `x₋₁ = 0`, the pivot), zero
        exactly on the chain: the `constraint=` of `lagrax.acceleration`,
        `lagrax.simulate` and the rest for this form.

        The squared form keeps `G = ∂g/∂q` simple (row `i` holds
        `±(xᵢ − xᵢ₋₁)ᵀ`) and smooth everywhere, and of full rank wherever no link
        has length zero, so the constrained equations stay regular.

        **Arguments:**

        - `q`: a Cartesian configuration, shape `(2N,)`.

        **Returns:**

        `g(q)`, shape `(N,)`.

        Raises a `ValueError` in angles: they satisfy every link's length by
        construction, and there is no constraint to enforce.
        """
        if self.coordinates != "cartesian":
            raise ValueError(
                "ChainPendulum(coordinates='angles') has no constraints: the angles "
                "keep every link at its length by construction. Use the "
                "Cartesian form (coordinates='cartesian') for a constrained chain."
            )
        links = _links(self.positions(q))
        _, lengths = self._parameters(links)
        return 0.5 * (jnp.sum(links**2, axis=1) - lengths**2)

    def to_cartesian(
        self,
        theta: Float[Array | np.ndarray, " bodies"],
        theta_dot: Float[Array | np.ndarray, " bodies"],
    ) -> tuple[Float[Array, " 2*bodies"], Float[Array, " 2*bodies"]]:
        """The Cartesian state of the chain at absolute angles `theta` (from the
        downward vertical) and angular velocities `theta_dot`, for either form
        (it depends on the lengths only); one state, batch with `jax.vmap`.

        **Arguments:**

        - `theta`, `theta_dot`: shape `(N,)`.

        **Returns:**

        `(q, qdot)`, the flat positions `(x₀, y₀, x₁, …)` and their velocities,
        each of shape `(2N,)`, with `constraint(q) = 0` and `G(q) q̇ = 0`.
        """
        theta, theta_dot = _state(
            theta, theta_dot, self.num_bodies, ("theta", "theta_dot"), "one per link"
        )
        _, lengths = self._parameters(theta)
        direction = _direction(theta)
        # d/dt (sin θ, −cos θ) = θ̇ (cos θ, sin θ): the direction turned by 90°.
        turned = jnp.stack([-direction[:, 1], direction[:, 0]], axis=1)
        q = jnp.cumsum(lengths[:, None] * direction, axis=0)
        qdot = jnp.cumsum((lengths * theta_dot)[:, None] * turned, axis=0)
        return q.reshape(-1), qdot.reshape(-1)

    def to_angles(
        self, q: PositionLike, qdot: VelocityLike
    ) -> tuple[Float[Array, " bodies"], Float[Array, " bodies"]]:
        """The absolute angles of the links, in `(−π, π]` from the downward
        vertical, and their angular velocities, from a Cartesian state of the
        chain (for either form); one state, batch with `jax.vmap`.

        With `dᵢ = xᵢ − xᵢ₋₁` (`x₋₁ = 0`), `θᵢ = arctan2(dᵢ,x, −dᵢ,y)` and
        `θ̇ᵢ = (dᵢ × ḋᵢ) / |dᵢ|²`, the exact time derivative of that angle, so the
        map does not need the state to be on the chain; it is undefined (NaN)
        where a link has length zero.

        **Arguments:**

        - `q`, `qdot`: shape `(2N,)`.

        **Returns:**

        `(theta, theta_dot)`, each of shape `(N,)`.
        """
        q, qdot = _state(
            q, qdot, 2 * self.num_bodies, ("q", "qdot"), "(x, y) of each body"
        )
        links = _links(q.reshape(self.num_bodies, 2))
        rates = _links(qdot.reshape(self.num_bodies, 2))
        theta = jnp.arctan2(links[:, 0], -links[:, 1])
        cross = links[:, 0] * rates[:, 1] - links[:, 1] * rates[:, 0]
        return theta, cross / jnp.sum(links**2, axis=1)


def _state(
    x: PositionLike, xdot: VelocityLike, size: int, names: tuple[str, str], what: str
) -> tuple[Array, Array]:
    """`(x, xdot)` as JAX arrays, with an error naming them unless each is of shape
    `(size,)`, which `what` explains."""
    x, xdot = as_state(x, xdot, q_name=names[0], qdot_name=names[1])
    if x.shape != (size,):
        which = (
            f"`{names[0]}`" if names[0] == names[1] else "`{}` and `{}`".format(*names)
        )
        raise ValueError(f"{which} must have shape ({size},) ({what}), got {x.shape}.")
    return x, xdot


def _direction(theta: Array) -> Array:
    """Unit vectors `(sin θ, −cos θ)`, one row per angle."""
    return jnp.stack([jnp.sin(theta), -jnp.cos(theta)], axis=1)


def _links(points: Array) -> Array:
    """`xᵢ − xᵢ₋₁`, one row per body, with `x₋₁ = 0` (the pivot)."""
    return points - jnp.concatenate([jnp.zeros_like(points[:1]), points[:-1]])
