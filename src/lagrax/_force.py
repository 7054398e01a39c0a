"""Generalized (non-conservative) forces `Q(t, q, q̇)` as modules: dissipation,
friction, actuation by a measured input, and learned forces.

A force enters the Euler–Lagrange equations as `H q̈ = ∂L/∂q − (∂²L/∂q̇∂q) q̇ + Q`
(for an `AbstractDynamics` baseline, which has no mass matrix, `q̈ = a(q, q̇) + Q`).
Pass one as `force=` to `LagrangianTerm`, `simulate`, `rollout` and the losses; the
variational solvers apply it at their stages (the discrete Lagrange–d'Alembert
principle). Forces add (`RayleighDissipation(b) + CoulombFriction(c)`), hold their
parameters as arrays, train jointly with a Lagrangian under `lagrax.fit` and save
with `lagrax.save`.
"""

import abc
from collections.abc import Callable, Sequence

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jax.typing import ArrayLike, DTypeLike
from jaxtyping import Array, Float, PRNGKeyArray

from ._custom_types import Position, Velocity
from ._misc import (
    angle_features,
    check_angles,
    check_dtype,
    check_int,
    check_real,
    check_real_values,
    check_state,
    lower_triangular,
    num_lower_entries,
)


Force = Float[Array, " dof"]


class AbstractForce(eqx.Module):
    """A generalized force `Q(t, q, q̇)` of shape `(dof,)`, for one state.

    Subclasses implement `__call__`. Forces add: `f + g` is a `ForceSum`. Any
    plain callable `(t, q, qdot) -> Q` is accepted wherever a force is; subclass
    this to get a pytree of parameters (for training), a sum, and a documented,
    saveable model.
    """

    def __add__(self, other):
        if not callable(other):
            return NotImplemented
        return ForceSum.of(self, other)

    def __radd__(self, other):
        if not callable(other):
            return NotImplemented
        return ForceSum.of(other, self)

    @abc.abstractmethod
    def __call__(self, t, q: Position, qdot: Velocity) -> Force:
        """**Arguments:**

        - `t`: the time (forces that do not depend on it ignore it).
        - `q`, `qdot`: the state, each of shape `(dof,)`.

        **Returns:**

        The generalized force `Q`, of shape `(dof,)`.
        """


class ForceSum(AbstractForce):
    """`Q = Σ_i Q_i`: the sum of several forces, built by `+` (nested sums flatten).

    **Fields:**

    - `forces`: the forces, `AbstractForce`s or plain callables `(t, q, qdot) -> Q`.
    """

    forces: tuple[Callable, ...]

    def __check_init__(self):
        if not self.forces:
            raise ValueError("`forces` must hold at least one force.")
        for force in self.forces:
            if not callable(force):
                raise TypeError(f"`forces` must be callables, got {force!r}.")

    @classmethod
    def of(cls, *forces: Callable) -> "ForceSum":
        """The sum of `forces`, a `ForceSum` among them contributing its own."""
        flat = []
        for force in forces:
            flat += force.forces if isinstance(force, ForceSum) else [force]
        return cls(tuple(flat))

    def __call__(self, t, q: Position, qdot: Velocity) -> Force:
        total = self.forces[0](t, q, qdot)
        for force in self.forces[1:]:
            total = total + force(t, q, qdot)
        return total


def _check_vector(name: str, x, dtype) -> Array:
    """`x` as a vector of `dtype`, checked on the host to be finite and ≥ 0."""
    check_real_values(x, name)
    values = np.asarray(x, dtype=float)
    if values.ndim != 1:
        raise ValueError(f"`{name}` must have shape (dof,), got {values.shape}.")
    if not np.all(values >= 0):
        raise ValueError(f"`{name}` must be finite and non-negative, got {values}.")
    return jnp.asarray(values, dtype)


class RayleighDissipation(AbstractForce):
    r"""Linear (viscous) damping `Q = −D q̇` with a constant positive semidefinite
    `D`: the force of the Rayleigh dissipation function `R = ½ q̇ᵀ D q̇`. Energy
    decays at the rate `dE/dt = −q̇ᵀ D q̇ ≤ 0`.

    `D = F Fᵀ` is held through a square factor `F`, so it stays positive
    semidefinite whatever training does to `F`.

    **Fields:**

    - `factor`: `F`, of shape `(dof, dof)` (trainable).
    """

    factor: Float[Array, "dof dof"]

    def __init__(self, damping: ArrayLike, *, dtype: DTypeLike | None = None):
        """**Arguments:**

        - `damping`: the coefficients `b ≥ 0` of `D = diag(b)`, shape `(dof,)`,
            or a symmetric positive semidefinite `D` of shape `(dof, dof)`.
        - `dtype`: the parameters' dtype; default JAX's default float dtype.
        """
        dtype = jnp.result_type(float) if dtype is None else check_dtype(dtype)
        check_real_values(damping, "damping")
        d = np.asarray(damping, dtype=float)
        if d.ndim == 1:
            factor = jnp.diag(jnp.sqrt(_check_vector("damping", d, dtype)))
        elif d.ndim == 2 and d.shape[0] == d.shape[1]:
            values, vectors = np.linalg.eigh(d)
            if not np.allclose(d, d.T):
                raise ValueError(f"`damping` must be symmetric, got {d}.")
            if values.min() < -1e-12 * max(1.0, abs(values).max()):
                raise ValueError(
                    "`damping` must be positive semidefinite, got eigenvalues "
                    f"{values}."
                )
            factor = jnp.asarray(vectors * np.sqrt(np.clip(values, 0, None)), dtype)
        else:
            raise ValueError(
                f"`damping` must have shape (dof,) or (dof, dof), got {d.shape}."
            )
        self.factor = factor

    @property
    def damping(self) -> Float[Array, "dof dof"]:
        """`D = F Fᵀ`."""
        return self.factor @ self.factor.T

    def __call__(self, t, q: Position, qdot: Velocity) -> Force:
        _check_size(self, q, qdot, self.factor.shape[0])
        return -(self.factor @ (self.factor.T @ qdot))


class CoulombFriction(AbstractForce):
    r"""Smooth Coulomb (dry) friction `Q_i = −c_i atan(k q̇_i)`, per coordinate.

    `atan(k q̇)` is a smooth sign: with the default sharpness `k = 100` (the DFKI
    lab's model) it reaches 90% of its limit `π/2` above `|q̇| ≈ 0.06`; the force's
    largest magnitude is `c π/2`. Smooth, so every solver and gradient sees a
    differentiable vector field.

    **Fields:**

    - `coefficient`: `c ≥ 0`, shape `(dof,)` (trainable).
    - `sharpness`: `k > 0` (static).
    """

    coefficient: Float[Array, " dof"]
    sharpness: float = eqx.field(static=True)

    def __init__(
        self,
        coefficient: ArrayLike,
        *,
        sharpness: float = 100.0,
        dtype: DTypeLike | None = None,
    ):
        """**Arguments:**

        - `coefficient`: `c ≥ 0`, shape `(dof,)`.
        - `sharpness`: `k > 0`, the slope of `atan(k q̇)` at rest.
        - `dtype`: the parameters' dtype; default JAX's default float dtype.
        """
        dtype = jnp.result_type(float) if dtype is None else check_dtype(dtype)
        self.coefficient = _check_vector("coefficient", coefficient, dtype)
        sharpness = check_real(sharpness, "sharpness")
        if not sharpness > 0:
            raise ValueError(f"`sharpness` must be positive, got {sharpness!r}.")
        self.sharpness = sharpness

    def __call__(self, t, q: Position, qdot: Velocity) -> Force:
        _check_size(self, q, qdot, self.coefficient.shape[0])
        k = jnp.asarray(self.sharpness, qdot.dtype)
        return -self.coefficient * jnp.arctan(k * qdot)


class Actuation(AbstractForce):
    r"""Actuation by an input signal: `Q = B(q) u(t)`.

    `u(t)` is a Diffrax path, usually the linear interpolation of measured
    samples, `diffrax.LinearInterpolation(ts, us)` with `us` of shape
    `(times, inputs)`. Training data that carry an input (`TrajectoryData.u`,
    `AccelerationData.u`) set it for each sample through `lagrax.with_input`, so
    a model's `Actuation` is usually built without one.

    `B(q)` is the identity by default (each input drives its own coordinate, as
    joint torques do), a constant matrix (trainable), or any callable
    `q -> (dof, inputs)` array (an `eqx.Module` trains).

    **Fields:**

    - `input`: the path `u`, or `None` until `with_input` sets it.
    - `matrix`: `None` (identity), an array `(dof, inputs)`, or a callable.
    """

    input: diffrax.AbstractPath | None = None
    matrix: Float[Array, "dof inputs"] | Callable | None = None

    def __check_init__(self):
        if self.input is not None and not isinstance(self.input, diffrax.AbstractPath):
            raise TypeError(
                "`input` must be a diffrax.AbstractPath (such as "
                "diffrax.LinearInterpolation(ts, us)) or None, got "
                f"{type(self.input).__name__}."
            )
        m = self.matrix
        if m is not None and not callable(m):
            if not (isinstance(m, jax.Array | np.ndarray) and np.ndim(m) == 2):
                raise TypeError(
                    "`matrix` must be None, an array of shape (dof, inputs) or a "
                    f"callable q -> (dof, inputs), got {m!r}."
                )
            check_real_values(m, "matrix")

    def with_input(self, input: diffrax.AbstractPath) -> "Actuation":
        """This actuation driven by the path `input`."""
        return Actuation(input, self.matrix)

    def __call__(self, t, q: Position, qdot: Velocity) -> Force:
        check_state(q, qdot)
        if self.input is None:
            raise ValueError(
                "This Actuation has no input: build it with `input=` (a diffrax path "
                "such as LinearInterpolation(ts, us)), or pass data that carry `u` "
                "to the loss (it calls lagrax.with_input)."
            )
        u = jnp.asarray(self.input.evaluate(t), q.dtype)
        if self.matrix is None:
            if u.shape != q.shape:
                raise ValueError(
                    f"An Actuation without `matrix` drives each coordinate by its own "
                    f"input: the input must have shape {q.shape}, got {u.shape}."
                )
            return u
        b = self.matrix(q) if callable(self.matrix) else self.matrix
        if b.shape != q.shape + u.shape:
            raise ValueError(
                f"`matrix` must be of shape {q.shape + u.shape} (dof, inputs), got "
                f"{b.shape}."
            )
        return b @ u


class _Held(diffrax.AbstractPath):
    """A constant input: the value of one sample, for per-sample losses."""

    value: Float[Array, " inputs"]

    @property
    def t0(self):
        return -jnp.inf

    @property
    def t1(self):
        return jnp.inf

    def evaluate(self, t0, t1=None, left=True):
        if t1 is not None:
            return jnp.zeros_like(self.value)
        return self.value

    def derivative(self, t, left=True):
        return jnp.zeros_like(self.value)


def with_input(force, input: diffrax.AbstractPath | Float[Array, " inputs"]):
    """`force` with every `Actuation` in it driven by `input`.

    The losses call this with each sample's input; call it yourself to simulate
    a trained model under a new input.

    **Arguments:**

    - `force`: a force (or any pytree) holding one or more `Actuation`s.
    - `input`: a Diffrax path `u(t)` such as `diffrax.LinearInterpolation(ts,
        us)`, or an array of shape `(inputs,)`: a constant input.

    **Returns:**

    The force, of the same structure, with the new input.

    **Raises:**

    `ValueError` if `force` holds no `Actuation` (the input would be ignored).
    """
    if not isinstance(input, diffrax.AbstractPath):
        input = _Held(jnp.asarray(input))
        if input.value.ndim != 1:
            raise ValueError(
                "`input` must be a diffrax path or an array of shape (inputs,), got "
                f"shape {input.value.shape}."
            )

    def is_actuation(x):
        return isinstance(x, Actuation)

    if not any(map(is_actuation, jtu.tree_leaves(force, is_leaf=is_actuation))):
        raise ValueError(
            "The data carry an input `u`, but the force holds no lagrax.Actuation to "
            f"take it (got {type(force).__name__}); add one: force + "
            "lagrax.Actuation()."
        )
    return jtu.tree_map(
        lambda x: x.with_input(input) if is_actuation(x) else x,
        force,
        is_leaf=is_actuation,
    )


def _learned_network(
    dof, angles, width, depth, *, velocities: bool, out_size, bias, dtype, key
) -> tuple[eqx.nn.MLP, tuple[int, ...]]:
    """A learned force's checked angles and its softplus MLP of `features(q)`
    (and `q̇`, with `velocities`), whose last layer starts at zero weight and
    `bias` (zero if `None`): a learned correction that starts at a known value."""
    for name, value in (("dof", dof), ("width", width), ("depth", depth)):
        check_int(value, name)
    angles = check_angles(angles, dof)
    dtype = check_dtype(dtype)
    in_size = (2 if velocities else 1) * dof + len(angles)
    mlp = eqx.nn.MLP(
        in_size,
        out_size,
        width,
        depth,
        activation=jax.nn.softplus,
        dtype=dtype,
        key=key,
    )
    last = mlp.layers[-1]
    assert last.bias is not None  # `eqx.nn.MLP` layers have biases by default
    bias = jnp.zeros_like(last.bias) if bias is None else bias.astype(last.bias.dtype)
    mlp = eqx.tree_at(
        lambda m: (m.layers[-1].weight, m.layers[-1].bias),
        mlp,
        (jnp.zeros_like(last.weight), bias),
    )
    return mlp, angles


class LearnedDissipation(AbstractForce):
    r"""Learned viscous damping `Q = −D(q) q̇` with `D(q) = C(q) C(q)ᵀ` positive
    definite, `C` lower-triangular from an MLP of `q` (softplus diagonal): the
    position-dependent Rayleigh dissipation `R = ½ q̇ᵀ D(q) q̇`, so the learned
    force can only take energy out (`dE/dt = −q̇ᵀ D q̇`).

    Starts small: the last layer is zero and the diagonal of `C` starts at
    `softplus(−5) ≈ 0.0067` (`D ≈ 4.5·10⁻⁵ I`).

    **Fields:**

    - `mlp`: the network `features(q) → entries of C`.
    - `dof`, `angles`: as in `MechanicalLagrangian`.
    """

    mlp: eqx.nn.MLP
    dof: int = eqx.field(static=True)
    angles: tuple[int, ...] = eqx.field(static=True)

    def __init__(
        self,
        dof: int,
        *,
        angles: Sequence[int] = (),
        width: int = 32,
        depth: int = 2,
        dtype: DTypeLike | None = None,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `dof`: the number of coordinates.
        - `angles`: indices of angle coordinates, fed as `(cos q_i, sin q_i)`.
        - `width`, `depth`: the hidden layers of the MLP.
        - `dtype`: the parameters' dtype.
        - `key`: a JAX PRNG key.
        """
        rows, cols = np.tril_indices(dof)
        self.mlp, self.angles = _learned_network(
            dof,
            angles,
            width,
            depth,
            velocities=False,
            out_size=num_lower_entries(dof),
            bias=jnp.where(rows == cols, -5.0, 0.0),
            dtype=dtype,
            key=key,
        )
        self.dof = dof

    def damping(self, q: Position) -> Float[Array, "dof dof"]:
        """`D(q)`."""
        c = self._factor(q)
        return c @ c.T

    def _factor(self, q: Position) -> Float[Array, "dof dof"]:
        return lower_triangular(self.mlp(_position_features(q, self.angles)), self.dof)

    def __call__(self, t, q: Position, qdot: Velocity) -> Force:
        _check_dof(self, q, qdot)
        c = self._factor(q)
        return -(c @ (c.T @ qdot))


class MLPForce(AbstractForce):
    """A black-box learned force `Q = MLP(q, q̇)`, for what no structured force
    captures (it may add or remove energy). Its last layer starts at zero, so a
    model starts from its other forces alone.

    **Fields:**

    - `mlp`: the network `features(q, q̇) → Q`.
    - `dof`, `angles`: as in `MechanicalLagrangian`.
    """

    mlp: eqx.nn.MLP
    dof: int = eqx.field(static=True)
    angles: tuple[int, ...] = eqx.field(static=True)

    def __init__(
        self,
        dof: int,
        *,
        angles: Sequence[int] = (),
        width: int = 32,
        depth: int = 2,
        dtype: DTypeLike | None = None,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `dof`: the number of coordinates.
        - `angles`: indices of angle coordinates, fed as `(cos q_i, sin q_i)`.
        - `width`, `depth`: the hidden layers of the MLP.
        - `dtype`: the parameters' dtype.
        - `key`: a JAX PRNG key.
        """
        self.mlp, self.angles = _learned_network(
            dof,
            angles,
            width,
            depth,
            velocities=True,
            out_size=dof,
            bias=None,
            dtype=dtype,
            key=key,
        )
        self.dof = dof

    def __call__(self, t, q: Position, qdot: Velocity) -> Force:
        _check_dof(self, q, qdot)
        return self.mlp(angle_features(q, qdot, self.angles))


def _position_features(q, angles):
    """`concat(cos q_A, sin q_A, q_R)`: a network's input for a function of `q`."""
    return angle_features(q, q[:0], angles)


def _check_dof(model, q, qdot) -> None:
    _check_size(model, q, qdot, model.dof)


def _check_size(force, q, qdot, dof: int) -> None:
    check_state(q, qdot)
    if q.shape != (dof,):
        raise ValueError(
            f"This {type(force).__name__} acts on {dof} coordinates: `q` and `qdot` "
            f"must have shape ({dof},), got {q.shape}."
        )
