"""Mechanical Lagrangians `L = ½ q̇ᵀ M(q) q̇ − V(q)`: the structure of every rigid-body
system, whose Euler–Lagrange equations need no Hessian of `L`."""

import abc
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.typing import DTypeLike
from jaxtyping import Array, Float, PRNGKeyArray

from ._custom_types import Position, Scalar, Velocity
from ._lagrangian import AbstractJetLagrangian, hessian_products
from ._misc import (
    angle_features,
    check_angles,
    check_curvature,
    check_dtype,
    check_int,
    check_real,
    check_state,
    lower_triangular,
    num_lower_entries,
)


class AbstractMechanicalLagrangian(AbstractJetLagrangian):
    r"""A Lagrangian `L(q, q̇) = ½ q̇ᵀ M(q) q̇ − V(q)`: kinetic energy quadratic in the
    velocities with a mass matrix `M(q)`, and a potential `V(q)`.

    Subclasses implement `mass` and `potential`. lagrax's mechanics then use the
    structure: `∂²L/∂q̇² = M(q)` exactly, the mixed term
    `(∂²L/∂q̇∂q) q̇ = (∂M/∂q · q̇) q̇` is one JVP of `M` along `q̇`, and `∂L/∂q` is one
    reverse pass through `½ q̇ᵀ M q̇ − V`: an acceleration costs `M` and its JVP, one
    gradient, and one Cholesky solve — no second derivatives of a network. In a
    `LagrangianSum` (`identified + 0.1 * learned`) each mechanical term keeps this
    path (the parts are linear in `L`, so the sum's are the weighted sum of the
    terms').

    The energy is `E = ½ q̇ᵀ M q̇ + V`.
    """

    @abc.abstractmethod
    def mass(self, q: Position) -> Float[Array, "dof dof"]:
        """The mass matrix `M(q)`, symmetric, of shape `(dof, dof)`."""

    @abc.abstractmethod
    def potential(self, q: Position) -> Scalar:
        """The potential energy `V(q)`, a scalar."""

    def __call__(self, q: Position, qdot: Velocity) -> Scalar:
        check_state(q, qdot)
        return 0.5 * qdot @ self.mass(q) @ qdot - self.potential(q)

    def jet(
        self, q: Position, qdot: Velocity, directions: Float[Array, "2*dof k"]
    ) -> tuple[Float[Array, " 2*dof"], Float[Array, "k k"]]:
        """`(∇L, Uᵀ ∇²L U)` by forward-over-reverse autodiff of `__call__` (the
        variational solvers' Newton Jacobians need every direction; accelerations
        take the structured path instead)."""
        grad, products = hessian_products(self, q, qdot, directions)
        return grad, products @ directions

    def euler_lagrange_parts(
        self, q: Position, qdot: Velocity
    ) -> tuple[Float[Array, " dof"], Float[Array, "dof dof"], Float[Array, " dof"]]:
        """`(∂L/∂q, M(q), (∂²L/∂q̇∂q) q̇)` from the structure.

        **Arguments:**

        - `q`, `qdot`: the state, each of shape `(dof,)`.

        **Returns:**

        The three parts of the Euler–Lagrange equations
        `M q̈ = ∂L/∂q − (∂²L/∂q̇∂q) q̇ + Q`.
        """
        check_state(q, qdot)
        m, m_dot = jax.jvp(self.mass, (q,), (qdot,))

        def lagrangian_of_q(x):
            return 0.5 * qdot @ self.mass(x) @ qdot - self.potential(x)

        dl_dq = jax.grad(lagrangian_of_q)(q)
        return dl_dq, m, m_dot @ qdot


class MechanicalLagrangian(AbstractMechanicalLagrangian):
    r"""A learned mechanical Lagrangian `L = ½ q̇ᵀ M(q) q̇ − V(q)` (a Deep Lagrangian
    Network): `M(q) = C(q) C(q)ᵀ + εI` with `C` lower-triangular from an MLP of
    `q` (softplus on its diagonal), and `V` an MLP of `q`.

    `M` is positive definite for every parameter value, so the acceleration always
    exists (no definiteness penalty is needed), and the mechanics take the
    structured path of `AbstractMechanicalLagrangian`: one Cholesky solve of `M`
    per state, no Hessian of a network. The price is the assumption itself: a
    kinetic energy quadratic in `q̇` (true of every rigid-body system, not of a
    relativistic particle or a velocity-dependent potential).

    Coordinates listed in `angles` enter both networks as `(cos q_i, sin q_i)`.

    ??? cite "Reference"

        ```bibtex
        @inproceedings{lutter2019deep,
            title={Deep Lagrangian Networks: Using Physics as Model Prior for Deep
                   Learning},
            author={Lutter, Michael and Ritter, Christian and Peters, Jan},
            booktitle={International Conference on Learning Representations},
            year={2019}
        }
        ```
    """

    mass_mlp: eqx.nn.MLP
    potential_mlp: eqx.nn.MLP
    epsilon: float = eqx.field(static=True)
    dof: int = eqx.field(static=True)
    angles: tuple[int, ...] = eqx.field(static=True)

    def __init__(
        self,
        dof: int,
        *,
        angles: Sequence[int] = (),
        width: int = 64,
        depth: int = 2,
        activation: Callable[[Array], Array] = jax.nn.softplus,
        epsilon: float = 1e-3,
        dtype: DTypeLike | None = None,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `dof`: the number of coordinates `n`.
        - `angles`: indices of the coordinates that are angles (period 2π).
        - `width`, `depth`: the hidden layers of each of the two MLPs.
        - `activation`: a smooth elementwise activation (the potential's gradient
            and the mass matrix's JVP need one derivative; ReLU is refused, as
            its forces would be piecewise constant).
        - `epsilon`: `ε > 0`, the floor of `M`'s eigenvalues.
        - `dtype`: the parameters' dtype; default JAX's default float dtype.
        - `key`: a JAX PRNG key.
        """
        for name, value in (("dof", dof), ("width", width), ("depth", depth)):
            check_int(value, name)
        epsilon = check_real(epsilon, "epsilon")
        if not epsilon > 0:
            raise ValueError(f"`epsilon` must be positive, got {epsilon!r}.")
        dtype = check_dtype(dtype)
        if not callable(activation):
            raise TypeError(f"`activation` must be callable, got {activation!r}.")
        check_curvature(activation)
        self.angles = check_angles(angles, dof)
        self.dof = dof
        self.epsilon = epsilon
        in_size = dof + len(self.angles)
        mass_key, potential_key = jax.random.split(key)
        self.mass_mlp = eqx.nn.MLP(
            in_size,
            num_lower_entries(dof),
            width,
            depth,
            activation=activation,
            dtype=dtype,
            key=mass_key,
        )
        self.potential_mlp = eqx.nn.MLP(
            in_size,
            "scalar",
            width,
            depth,
            activation=activation,
            dtype=dtype,
            key=potential_key,
        )

    def _features(self, q: Position) -> Array:
        if q.shape != (self.dof,):
            raise ValueError(
                f"This MechanicalLagrangian has dof={self.dof}: `q` and `qdot` must "
                f"have shape ({self.dof},), got {q.shape}."
            )
        dtype = self.potential_mlp.layers[0].weight.dtype
        if q.dtype != dtype:
            raise TypeError(
                f"`q` and `qdot` must have the parameters' dtype {dtype}, got "
                f"{q.dtype}; cast them or the model."
            )
        return angle_features(q, q[:0], self.angles)

    def mass(self, q: Position) -> Float[Array, "dof dof"]:
        """`M(q) = C(q) C(q)ᵀ + εI`."""
        c = lower_triangular(self.mass_mlp(self._features(q)), self.dof)
        return c @ c.T + self.epsilon * jnp.eye(self.dof, dtype=q.dtype)

    def potential(self, q: Position) -> Scalar:
        """`V(q)`."""
        return self.potential_mlp(self._features(q))
