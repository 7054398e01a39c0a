import functools
import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.core
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jax.typing import DTypeLike
from jaxtyping import Array, PyTree


def check_state(q, qdot, *, q_name: str = "q", qdot_name: str = "qdot") -> None:
    """Raise a clear error, at trace time, unless `q` and `qdot` are one state."""
    for name, x in ((q_name, q), (qdot_name, qdot)):
        if not isinstance(x, jax.Array | np.ndarray):
            raise TypeError(
                f"`{name}` must be a JAX or NumPy array, got {type(x).__name__}; pass "
                f"jnp.asarray({name}) (in the dtype of the model's parameters)."
            )
        shape = jnp.shape(x)
        if len(shape) != 1:
            raise ValueError(
                f"`{name}` must be a 1-D array of shape (dof,) for one state (batch "
                f"with jax.vmap), got shape {shape}."
            )
        if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
            raise TypeError(
                f"`{name}` must be a floating-point array, got dtype "
                f"{jnp.result_type(x)}."
            )
    if jnp.shape(q) != jnp.shape(qdot):
        raise ValueError(
            f"`{qdot_name}` must have the same shape as `{q_name}`, "
            f"{jnp.shape(q)}; got {jnp.shape(qdot)}."
        )


def as_state(
    q, qdot, *, q_name: str = "q", qdot_name: str = "qdot"
) -> tuple[Array, Array]:
    """`check_state`, then both as JAX arrays, cast as JAX casts (NumPy float64 becomes
    float32 unless x64 is enabled, without a warning). For the public entry points:
    what follows never asks for a dtype JAX does not have."""
    check_state(q, qdot, q_name=q_name, qdot_name=qdot_name)
    return jnp.asarray(q), jnp.asarray(qdot)


def check_like(x, name: str, like, like_name: str) -> None:
    """Raise unless `x` has the shape of `like`."""
    if jnp.shape(x) != jnp.shape(like):
        raise ValueError(
            f"`{name}` must have the same shape as `{like_name}`, {jnp.shape(like)}; "
            f"got {jnp.shape(x)}."
        )


def check_dof(q, qdot, dof: int, system: str) -> None:
    """Raise unless `(q, qdot)` is one state of a system with `dof` coordinates."""
    check_state(q, qdot)
    if jnp.shape(q) != (dof,):
        raise ValueError(
            f"{system} has {dof} degree(s) of freedom: `q` and `qdot` must have "
            f"shape ({dof},), got {jnp.shape(q)}."
        )


def is_real_number(x) -> bool:
    """A real scalar: a Python or NumPy int or float, or a 0-d array of one (not a
    bool, a string or a complex number)."""
    if isinstance(x, bool | np.bool_):
        return False
    if isinstance(x, int | float | np.integer | np.floating):
        return True
    return (
        isinstance(x, jax.Array | np.ndarray)
        and x.shape == ()
        and _is_real_dtype(x.dtype)
    )


def _is_real_dtype(dtype) -> bool:
    return jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)


def check_real(value, name: str) -> float:
    """`value` as a float, if it is a finite real number (see `is_real_number`);
    else a `TypeError` or `ValueError` naming the argument `name`. A setting read
    by a system's or solver's constructor: a string or a bool is a mistake, and an
    infinite or NaN setting would only surface later, misdiagnosed (an infinite
    stiffness reads as a singular mass matrix)."""
    if not is_real_number(value):
        raise TypeError(f"`{name}` must be a real number, got {value!r}.")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"`{name}` must be finite, got {number!r}.")
    return number


def real(name: str) -> Callable[[object], float]:
    """A field converter that applies `check_real` to the field `name`."""
    return functools.partial(check_real, name=name)


def check_real_values(value, name: str) -> None:
    """Raise unless `value` (a number, a nested sequence of numbers or an array)
    holds real numbers (not bools, strings or complex numbers: a `TypeError`
    naming the argument `name`) that are finite (a `ValueError`). A traced
    `value` (a model built under `jax.jit`, or by `lagrax.load` under
    `eqx.filter_eval_shape`) has no values to check: only its dtype is."""
    try:
        host = np.asarray(value)
    except jax.errors.TracerArrayConversionError:
        host = None
    dtype = jnp.result_type(value) if host is None else host.dtype
    if not _is_real_dtype(dtype):
        raise TypeError(f"`{name}` must hold real numbers, got {value!r}.")
    if host is not None and not np.all(np.isfinite(host)):
        raise ValueError(f"`{name}` must be finite, got {value!r}.")


def check_positive(system, *names: str) -> None:
    """Raise unless the named float attributes of `system` are positive."""
    for name in names:
        value = getattr(system, name)
        if not value > 0:
            raise ValueError(
                f"{type(system).__name__}: `{name}` must be positive, got {value!r}."
            )


def check_angles(angles, dof: int) -> tuple[int, ...]:
    """`angles` as a sorted tuple of distinct coordinate indices in `[0, dof)`."""
    try:
        indices = tuple(angles)
    except TypeError:
        raise TypeError(
            f"`angles` must be a sequence of coordinate indices, got {angles!r}."
        ) from None
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < dof:
            raise ValueError(
                f"`angles` must hold coordinate indices in [0, {dof}), got {angles!r}."
            )
    if len(set(indices)) != len(indices):
        raise ValueError(f"`angles` must not repeat an index, got {angles!r}.")
    return tuple(sorted(indices))


def split_angles(dof: int, angles: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Static index arrays `(A, R)`: the angle coordinates and the others."""
    rest = [i for i in range(dof) if i not in angles]
    return np.array(angles, dtype=int), np.array(rest, dtype=int)


def angle_features(q, qdot, angles: tuple[int, ...]):
    """A network's input for the state `(q, q̇)`: `concat(cos q_A, sin q_A, q_R, q̇)`
    with `A = angles` and `R` the other coordinates, so that anything computed from
    it is exactly 2π-periodic in the angles. With no angles, `concat(q, q̇)`."""
    if not angles:
        return jnp.concatenate([q, qdot])
    angle, rest = split_angles(q.shape[0], angles)
    return jnp.concatenate([jnp.cos(q[angle]), jnp.sin(q[angle]), q[rest], qdot])


def check_int(value, name: str, *, low: int = 1) -> int:
    """Raise a clear error unless `value` is an int (not a bool) of at least `low`."""
    kind = {0: "a non-negative int", 1: "a positive int"}.get(low, f"an int ≥ {low}")
    integral = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if not integral or value < low:
        raise ValueError(f"`{name}` must be {kind}, got {value!r}.")
    return int(value)


def check_dtype(dtype: DTypeLike | None) -> np.dtype | None:
    """A model's parameter `dtype` as a NumPy dtype, if it is a real floating one
    (`None`, JAX's default float dtype, passes). Models are real-valued: in a
    complex dtype a Lagrangian is no longer a real scalar, and its derivatives and
    Euler–Lagrange equations are not those of any motion."""
    if dtype is None:
        return None
    try:
        resolved = jnp.dtype(dtype)
    except TypeError:
        raise TypeError(
            f"`dtype` must be a floating dtype such as jnp.float32, got {dtype!r}."
        ) from None
    if not jnp.issubdtype(resolved, jnp.floating):
        raise TypeError(
            "`dtype` must be a real floating dtype such as jnp.float32 or "
            f"jnp.float64, got {resolved}."
        )
    return resolved


def cast(tree: PyTree, dtype: DTypeLike) -> PyTree:
    """`tree` with every floating-point array cast to `dtype`.

    Models, datasets and trajectories are pytrees: cast one to train in float32 and
    evaluate in float64, say. Integer and boolean arrays and everything that is not
    an array (activation functions, sizes) are left as they are.

    **Arguments:**

    - `tree`: any pytree, such as an `MLPLagrangian` or an `AccelerationData`.
    - `dtype`: a floating dtype, such as `jnp.float32`.

    **Returns:**

    The cast pytree, of the same structure.
    """
    floating = check_dtype(jnp.dtype(dtype))
    return jtu.tree_map(
        lambda x: x.astype(floating) if eqx.is_inexact_array(x) else x, tree
    )


def check_curvature(activation: Callable[[Array], Array]) -> None:
    """Refuse an activation whose second derivative vanishes (ReLU and other
    piecewise-linear ones): a network of it that should be differentiated twice
    (a Lagrangian's `∂²L/∂q̇²`, a Hamiltonian's mixed derivatives) is zero there
    wherever it is differentiable, so no acceleration can be solved for. Probed
    at 33 points of [−4, 4]; an activation that cannot be probed so (not
    elementwise on a vector, or only traceable) is left to its first call."""
    with jax.ensure_compile_time_eval():
        z = jnp.linspace(-4.0, 4.0, 33)
        ones = jnp.ones_like(z)

        def slope(z):
            return jax.jvp(activation, (z,), (ones,))[1]

        try:
            curvature = jax.jvp(slope, (z,), (ones,))[1]
        except Exception:
            return
        if isinstance(curvature, jax.core.Tracer) or jnp.any(curvature != 0):
            return
    name = getattr(activation, "__name__", repr(activation))
    raise ValueError(
        f"`activation` ({name}) has a zero second derivative at every point probed "
        "in [-4, 4]: the network's mass matrix (∂²L/∂q̇², or a Hamiltonian's "
        "mixed derivatives) would vanish identically and no acceleration could be "
        "solved for. Use a smooth activation such as jax.nn.softplus, jnp.tanh, "
        "jax.nn.silu or jax.nn.gelu."
    )


def num_lower_entries(n: int) -> int:
    """The number of entries of an `n × n` lower-triangular matrix."""
    return n * (n + 1) // 2


def lower_triangular(entries: Array, n: int) -> Array:
    """The lower-triangular `C` whose entries, row by row, are `entries` (of length
    `n(n + 1)/2`), with a softplus on the diagonal: `C Cᵀ` is then positive
    definite for any `entries` (the DeLaN parameterization of a mass matrix)."""
    rows, cols = np.tril_indices(n)
    c = jnp.zeros((n, n), entries.dtype).at[rows, cols].set(entries)
    diagonal = jax.nn.softplus(jnp.diagonal(c))
    return c.at[np.arange(n), np.arange(n)].set(diagonal)
