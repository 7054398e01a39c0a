"""Datasets: states sampled from boxes, exact accelerations, simulated trajectories."""

import abc
from collections.abc import Sequence
from typing import TypeVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.typing import ArrayLike, DTypeLike
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import LagrangianLike
from .._mechanics import acceleration, energy
from .._misc import check_int
from .._simulate import simulate


#: One end of a box: an array of shape `(dof,)` or a sequence of floats.
BoxBound = ArrayLike | Sequence[float]


def _as_float_array(x, name: str, ndim: int, dims: str) -> Array:
    x = jnp.asarray(x)
    if x.ndim != ndim:
        raise ValueError(f"`{name}` must have shape ({dims}), got shape {x.shape}.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"`{name}` must be a floating-point array, got dtype {x.dtype}."
        )
    return x


def _check_same(x: Array, name: str, like: Array, like_name: str) -> None:
    if x.shape != like.shape or x.dtype != like.dtype:
        raise ValueError(
            f"`{name}` must have the shape and dtype of `{like_name}`, "
            f"{like.shape} {like.dtype}; got {x.shape} {x.dtype}."
        )


def _check_input(u, lead: tuple[int, ...], dtype, dims: str) -> Array | None:
    """`u` checked against the data's leading axes and dtype (or None)."""
    if u is None:
        return None
    u = _as_float_array(u, "u", len(lead) + 1, f"{dims}, inputs")
    if u.shape[:-1] != lead or u.dtype != dtype:
        raise ValueError(
            f"`u` must have shape ({dims}, inputs) = {lead + ('inputs',)} and dtype "
            f"{dtype}, got {u.shape} {u.dtype}."
        )
    return u


class AbstractDataset(eqx.Module):
    """A dataset that `lagrax.fit` can draw minibatches from.

    A dataset is a pytree of arrays whose leading axis indexes its samples:
    `len(data)` is the number of samples and `data[index]`, for an integer array
    `index`, is the dataset of those samples, also under `jax.jit`. Subclass it
    (as `AccelerationData`, `TrajectoryData` and `MixedData` do) to train on data
    of your own with `fit`; the minibatch is what your loss receives.
    """

    @abc.abstractmethod
    def __len__(self) -> int:
        """The number of samples."""

    @abc.abstractmethod
    def __getitem__(self, index) -> "AbstractDataset":
        """**Arguments:**

        - `index`: an integer array of sample indices (or anything NumPy-style
            indexing of the leading axis accepts).

        **Returns:**

        The dataset of the selected samples, of the same type.
        """


class AccelerationData(AbstractDataset):
    """Observed states and their accelerations: the paper's training data.

    `len(data)` is the number of samples and `data[index]` selects samples (as
    `fit` does to form minibatches), also under `jit`.

    **Fields:**

    - `q`: positions, shape `(samples, dof)`.
    - `qdot`: velocities, shape `(samples, dof)`.
    - `qddot`: accelerations, shape `(samples, dof)`.
    - `u`: the measured input at each sample (such as joint torques), shape
        `(samples, inputs)`, or `None`. A loss given a force with an
        `lagrax.Actuation` drives it with each sample's `u` (see
        `lagrax.inverse_dynamics_loss`).
    """

    q: Float[Array, "samples dof"]
    qdot: Float[Array, "samples dof"]
    qddot: Float[Array, "samples dof"]
    u: Float[Array, "samples inputs"] | None

    def __init__(
        self,
        q: ArrayLike,
        qdot: ArrayLike,
        qddot: ArrayLike,
        u: ArrayLike | None = None,
    ):
        """**Arguments:**

        - `q`, `qdot`, `qddot`: floating-point arrays of one shape `(samples, dof)`
            and one dtype.
        - `u`: optional inputs, shape `(samples, inputs)`, in the same dtype.
        """
        q = _as_float_array(q, "q", 2, "samples, dof")
        qdot = _as_float_array(qdot, "qdot", 2, "samples, dof")
        qddot = _as_float_array(qddot, "qddot", 2, "samples, dof")
        _check_same(qdot, "qdot", q, "q")
        _check_same(qddot, "qddot", q, "q")
        self.q = q
        self.qdot = qdot
        self.qddot = qddot
        self.u = _check_input(u, q.shape[:1], q.dtype, "samples")

    def __len__(self) -> int:
        return self.q.shape[0]

    def __getitem__(self, index) -> "AccelerationData":
        u = None if self.u is None else self.u[index]
        return AccelerationData(self.q[index], self.qdot[index], self.qddot[index], u)


class TrajectoryData(AbstractDataset):
    """Trajectories observed at common times.

    `len(data)` is the number of trajectories and `data[index]` selects
    trajectories (all keep the common `ts`), also under `jit`.

    **Fields:**

    - `ts`: the observation times, increasing, shape `(times,)`.
    - `q`: positions, shape `(trajectories, times, dof)`.
    - `qdot`: velocities, shape `(trajectories, times, dof)`.
    - `u`: the measured input (such as motor torques) at the same times, shape
        `(trajectories, times, inputs)`, or `None`. Rollouts (`rollout_loss`,
        `rollout`) drive the force's `lagrax.Actuation` with its linear
        interpolation, trajectory by trajectory.
    """

    ts: Float[Array, " times"]
    q: Float[Array, "trajectories times dof"]
    qdot: Float[Array, "trajectories times dof"]
    u: Float[Array, "trajectories times inputs"] | None

    def __init__(
        self,
        ts: ArrayLike,
        q: ArrayLike,
        qdot: ArrayLike,
        u: ArrayLike | None = None,
    ):
        """**Arguments:**

        - `ts`: increasing times, shape `(times,)` with at least two entries.
        - `q`, `qdot`: floating-point arrays of one shape `(trajectories, times,
            dof)` and the dtype of `ts`.
        - `u`: optional inputs, shape `(trajectories, times, inputs)`, in the
            dtype of `ts`.
        """
        ts = _as_float_array(ts, "ts", 1, "times,")
        q = _as_float_array(q, "q", 3, "trajectories, times, dof")
        qdot = _as_float_array(qdot, "qdot", 3, "trajectories, times, dof")
        if ts.shape[0] < 2:
            raise ValueError(f"`ts` must hold at least two times, got {ts.shape[0]}.")
        if q.shape[1] != ts.shape[0] or q.dtype != ts.dtype:
            raise ValueError(
                f"`q` must have shape (trajectories, {ts.shape[0]}, dof) and dtype "
                f"{ts.dtype} to match `ts`, got {q.shape} {q.dtype}."
            )
        _check_same(qdot, "qdot", q, "q")
        self.ts = ts
        self.q = q
        self.qdot = qdot
        self.u = _check_input(u, q.shape[:2], q.dtype, "trajectories, times")

    def __len__(self) -> int:
        return self.q.shape[0]

    def __getitem__(self, index) -> "TrajectoryData":
        u = None if self.u is None else self.u[index]
        return TrajectoryData(self.ts, self.q[index], self.qdot[index], u)


class PositionData(AbstractDataset):
    """Trajectories observed in position only, at common times: what a camera, a
    motion-capture system or an encoder without a tachometer gives. Train on them
    with `lagrax.discrete_euler_lagrange_loss`, which needs no velocities.

    `len(data)` is the number of trajectories and `data[index]` selects
    trajectories (all keep the common `ts`), also under `jit`.

    **Fields:**

    - `ts`: the observation times, increasing, shape `(times,)`.
    - `q`: positions, shape `(trajectories, times, dof)`.
    - `u`: the measured input at the same times, shape `(trajectories, times,
        inputs)`, or `None`.
    """

    ts: Float[Array, " times"]
    q: Float[Array, "trajectories times dof"]
    u: Float[Array, "trajectories times inputs"] | None

    def __init__(self, ts: ArrayLike, q: ArrayLike, u: ArrayLike | None = None):
        """**Arguments:**

        - `ts`: increasing times, shape `(times,)` with at least three entries.
        - `q`: positions, shape `(trajectories, times, dof)`, in the dtype of `ts`.
        - `u`: optional inputs, shape `(trajectories, times, inputs)`.
        """
        ts = _as_float_array(ts, "ts", 1, "times,")
        q = _as_float_array(q, "q", 3, "trajectories, times, dof")
        if ts.shape[0] < 3:
            raise ValueError(
                "`ts` must hold at least three times (the discrete Euler–Lagrange "
                f"equations link three consecutive positions), got {ts.shape[0]}."
            )
        if q.shape[1] != ts.shape[0] or q.dtype != ts.dtype:
            raise ValueError(
                f"`q` must have shape (trajectories, {ts.shape[0]}, dof) and dtype "
                f"{ts.dtype} to match `ts`, got {q.shape} {q.dtype}."
            )
        self.ts = ts
        self.q = q
        self.u = _check_input(u, q.shape[:2], q.dtype, "trajectories, times")

    def __len__(self) -> int:
        return self.q.shape[0]

    def __getitem__(self, index) -> "PositionData":
        u = None if self.u is None else self.u[index]
        return PositionData(self.ts, self.q[index], u)


class MixedData(AbstractDataset):
    """Trajectories paired with blocks of acceleration samples, to train on both at
    once: sample `i` is trajectory `i` together with its own block of `block`
    acceleration samples, so a minibatch of `MixedData` feeds a joint loss.

    `len(data)` is the number of trajectories; `data[index]` selects trajectories
    and their blocks; `data.accelerations` is the minibatch's `AccelerationData`.

    !!! example

        ```python
        data = lagrax.MixedData(trajectories, accelerations, block=64)

        def loss(model, batch):
            return lagrax.acceleration_loss(model, batch.accelerations) + (
                100.0 * lagrax.rollout_loss(model, batch.trajectories, window=5)
            )

        model, history = lagrax.fit(model, loss, data, batch_size=16, ...)
        ```

    **Fields:**

    - `trajectories`: a `TrajectoryData`.
    - `q`, `qdot`, `qddot`: the acceleration samples, shape
        `(trajectories, block, dof)`.
    """

    trajectories: TrajectoryData
    q: Float[Array, "trajectories block dof"]
    qdot: Float[Array, "trajectories block dof"]
    qddot: Float[Array, "trajectories block dof"]

    def __init__(
        self,
        trajectories: TrajectoryData,
        accelerations: AccelerationData,
        *,
        block: int | None = None,
    ):
        """**Arguments:**

        - `trajectories`: a `TrajectoryData`.
        - `accelerations`: an `AccelerationData` with at least one sample per
            trajectory; trajectory `i` gets samples `i·block` to `(i + 1)·block − 1`,
            and samples past `len(trajectories)·block` are left out.
        - `block`: acceleration samples per trajectory; default (and at most)
            `len(accelerations) // len(trajectories)`.
        """
        if not isinstance(trajectories, TrajectoryData):
            raise TypeError(
                "`trajectories` must be a TrajectoryData, got "
                f"{type(trajectories).__name__}."
            )
        if not isinstance(accelerations, AccelerationData):
            raise TypeError(
                "`accelerations` must be an AccelerationData, got "
                f"{type(accelerations).__name__}."
            )
        num = len(trajectories)
        most = len(accelerations) // num
        block = most if block is None else check_int(block, "block")
        if not 1 <= block <= most:
            raise ValueError(
                f"{len(accelerations)} acceleration samples give each of {num} "
                f"trajectories at most {most}, got block={block}; pass more "
                "accelerations or a smaller block."
            )
        if accelerations.q.shape[1] != trajectories.q.shape[2]:
            raise ValueError(
                "`trajectories` and `accelerations` must have the same dof, got "
                f"{trajectories.q.shape[2]} and {accelerations.q.shape[1]}."
            )
        self.trajectories = trajectories
        self.q, self.qdot, self.qddot = (
            x[: num * block].reshape(num, block, -1)
            for x in (accelerations.q, accelerations.qdot, accelerations.qddot)
        )

    def __len__(self) -> int:
        return len(self.trajectories)

    def __getitem__(self, index) -> "MixedData":
        return eqx.tree_at(
            lambda d: (d.trajectories, d.q, d.qdot, d.qddot),
            self,
            (
                self.trajectories[index],
                self.q[index],
                self.qdot[index],
                self.qddot[index],
            ),
        )

    @property
    def accelerations(self) -> AccelerationData:
        """The acceleration samples of all blocks, as one `AccelerationData`."""
        dof = self.q.shape[-1]
        return AccelerationData(
            *(x.reshape(-1, dof) for x in (self.q, self.qdot, self.qddot))
        )


def _box(box, name: str, dtype) -> tuple[Array, Array]:
    try:
        low, high = box
    except (TypeError, ValueError):
        raise ValueError(
            f"`{name}` must be a pair (low, high) of arrays of shape (dof,), got "
            f"{box!r}."
        ) from None
    low = jnp.asarray(low, dtype=dtype)
    high = jnp.asarray(high, dtype=dtype)
    if low.ndim != 1 or low.shape != high.shape:
        raise ValueError(
            f"`{name}` must be a pair (low, high) of arrays of shape (dof,), got "
            f"shapes {low.shape} and {high.shape}."
        )
    if not bool(jnp.all(high > low)):
        raise ValueError(f"`{name}`: every `high` must exceed its `low`, got {box!r}.")
    return low, high


def sample_states(
    num: int,
    *,
    q_box: tuple[BoxBound, BoxBound],
    qdot_box: tuple[BoxBound, BoxBound],
    key: PRNGKeyArray,
    dtype: DTypeLike | None = None,
    max_energy: float | None = None,
    lagrangian: LagrangianLike | None = None,
) -> tuple[Float[Array, "samples dof"], Float[Array, "samples dof"]]:
    """States drawn uniformly from a box, `q ∈ [q_low, q_high)`,
    `q̇ ∈ [qdot_low, qdot_high)`, independently per coordinate; optionally only
    those whose energy under `lagrangian` is at most `max_energy`.

    The energy cut gives the states that motions of bounded energy visit: for the
    double pendulum, `max_energy=29.4` (its largest potential energy) keeps exactly
    the states reachable from rest at any angles, which is where the paper's
    evaluation trajectories run. It is rejection sampling, drawn in rounds of `num`
    box states until `num` are accepted.

    The paper's double-pendulum box is
    `q_box=([0, 0], [2π, 2π])`, `qdot_box=([-10, -10], [10, 10])`. The same key
    gives the same states.

    **Arguments:**

    - `num`: number of states.
    - `q_box`: `(low, high)`, each of shape `(dof,)`.
    - `qdot_box`: `(low, high)`, each of shape `(dof,)`.
    - `key`: a JAX PRNG key.
    - `dtype`: a floating dtype; defaults to JAX's default float dtype.
    - `max_energy`: keep only states with `lagrax.energy(lagrangian, q, q̇)` at
        most this; `None` (default) keeps the whole box.
    - `lagrangian`: the Lagrangian whose energy `max_energy` bounds.

    **Returns:**

    `(q, qdot)`, each of shape `(num, dof)`.
    """
    if (max_energy is None) != (lagrangian is None):
        raise ValueError("`max_energy` and `lagrangian` must be given together.")
    if max_energy is not None:
        return _sample_below_energy(
            num, q_box, qdot_box, key, dtype, max_energy, lagrangian
        )
    check_int(num, "num")
    dtype = jnp.result_type(float) if dtype is None else jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"`dtype` must be a floating dtype, got {dtype}.")
    q_low, q_high = _box(q_box, "q_box", dtype)
    v_low, v_high = _box(qdot_box, "qdot_box", dtype)
    if q_low.shape != v_low.shape:
        raise ValueError(
            f"`q_box` and `qdot_box` must have the same dof, got {q_low.shape[0]} and "
            f"{v_low.shape[0]}."
        )
    shape = (num, q_low.shape[0])
    q_key, v_key = jr.split(key)
    q = jr.uniform(q_key, shape, dtype, q_low[None, :], q_high[None, :])
    qdot = jr.uniform(v_key, shape, dtype, v_low[None, :], v_high[None, :])
    return q, qdot


# Rounds of rejection sampling before `sample_states` gives up on an energy cut.
_MAX_ROUNDS = 1000


def _sample_below_energy(num, q_box, qdot_box, key, dtype, max_energy, lagrangian):
    energies = eqx.filter_jit(jax.vmap(lambda q, v: energy(lagrangian, q, v)))
    accepted, count = [], 0
    for round_ in range(_MAX_ROUNDS):
        q, qdot = sample_states(
            num,
            q_box=q_box,
            qdot_box=qdot_box,
            key=jr.fold_in(key, round_),
            dtype=dtype,
        )
        keep = np.flatnonzero(np.asarray(energies(q, qdot)) <= max_energy)
        accepted.append((q[keep], qdot[keep]))
        count += keep.size
        if count >= num:
            q = jnp.concatenate([a for a, _ in accepted])[:num]
            qdot = jnp.concatenate([b for _, b in accepted])[:num]
            return q, qdot
    raise ValueError(
        f"`sample_states`: only {count} of {_MAX_ROUNDS * num} states in the box "
        f"have energy at most max_energy={max_energy}; raise it or widen the box."
    )


def _noisy(arrays: tuple[Array, ...], noise: float, key: PRNGKeyArray | None):
    if not noise >= 0:
        raise ValueError(f"`noise` must be non-negative, got {noise!r}.")
    if noise == 0:
        return arrays
    if key is None:
        raise ValueError("`key` is required when `noise` is positive.")
    keys = jr.split(key, len(arrays))
    return tuple(
        x + jnp.asarray(noise, x.dtype) * jr.normal(k, x.shape, x.dtype)
        for x, k in zip(arrays, keys)
    )


@eqx.filter_jit
def _accelerations(system, q, qdot):
    return jax.vmap(lambda a, b: acceleration(system, a, b))(q, qdot)


@eqx.filter_jit
def _simulate_all(system, q0, qdot0, ts, rtol, atol):
    def one(a, b):
        traj = simulate(system, a, b, ts, rtol=rtol, atol=atol)
        return traj.q, traj.qdot

    return jax.vmap(one)(q0, qdot0)


def acceleration_data(
    system: LagrangianLike,
    q: Float[Array, "samples dof"],
    qdot: Float[Array, "samples dof"],
    *,
    noise: float = 0.0,
    key: PRNGKeyArray | None = None,
) -> AccelerationData:
    """Exact accelerations of a Lagrangian at given states, optionally noisy.

    The targets come from `lagrax.acceleration` (which raises if the mass matrix
    is singular at a sample). With `noise > 0`, independent Gaussian noise of
    standard deviation `noise` is then added to every observed array: `q`, `q̇`
    and `q̈`.

    **Arguments:**

    - `system`: the true Lagrangian, such as a `lagrax.systems` system.
    - `q`, `qdot`: states, each of shape `(samples, dof)` (see `sample_states`).
    - `noise`: standard deviation of the observation noise.
    - `key`: a JAX PRNG key, required when `noise > 0`.

    **Returns:**

    An `AccelerationData`.
    """
    q = _as_float_array(q, "q", 2, "samples, dof")
    qdot = _as_float_array(qdot, "qdot", 2, "samples, dof")
    _check_same(qdot, "qdot", q, "q")
    qddot = _accelerations(system, q, qdot)
    return AccelerationData(*_noisy((q, qdot, qddot), noise, key))


def trajectory_data(
    system: LagrangianLike,
    q0: Float[Array, "trajectories dof"],
    qdot0: Float[Array, "trajectories dof"],
    ts: Float[Array, " times"],
    *,
    noise: float = 0.0,
    key: PRNGKeyArray | None = None,
    rtol: float | None = None,
    atol: float | None = None,
) -> TrajectoryData:
    """Trajectories of a Lagrangian from given initial states, optionally noisy.

    Each trajectory is `lagrax.simulate` with the adaptive `Tsit5` at a tight
    tolerance (by default `1e-10` in float64, `1e-6` in float32), so the data are
    the exact motion up to round-off. With `noise > 0`, independent Gaussian noise
    of standard deviation `noise` is then added to the observed `q` and `q̇`.

    **Arguments:**

    - `system`: the true Lagrangian.
    - `q0`, `qdot0`: initial states, each of shape `(trajectories, dof)`.
    - `ts`: increasing observation times, shape `(times,)`, in the dtype of `q0`.
    - `noise`: standard deviation of the observation noise.
    - `key`: a JAX PRNG key, required when `noise > 0`.
    - `rtol`, `atol`: override the solver tolerances.

    **Returns:**

    A `TrajectoryData`.
    """
    q0 = _as_float_array(q0, "q0", 2, "trajectories, dof")
    qdot0 = _as_float_array(qdot0, "qdot0", 2, "trajectories, dof")
    _check_same(qdot0, "qdot0", q0, "q0")
    ts = _as_float_array(ts, "ts", 1, "times,")
    if ts.dtype != q0.dtype:
        raise ValueError(
            f"`ts` must have the dtype of `q0`, {q0.dtype}; got {ts.dtype}."
        )
    tight = 1e-10 if q0.dtype == jnp.float64 else 1e-6
    rtol = tight if rtol is None else rtol
    atol = tight if atol is None else atol

    q, qdot = _simulate_all(system, q0, qdot0, ts, rtol, atol)
    q, qdot = _noisy((q, qdot), noise, key)
    return TrajectoryData(ts, q, qdot)


_Split = TypeVar("_Split", AccelerationData, TrajectoryData)


def train_test_split(
    data: _Split,
    *,
    test_fraction: float = 0.2,
    key: PRNGKeyArray,
) -> tuple[_Split, _Split]:
    """Split a dataset at random into training and held-out parts.

    Samples (for `AccelerationData`) or whole trajectories (for `TrajectoryData`)
    are shuffled with `key` and the last `round(test_fraction · len(data))` are
    held out. The same key gives the same split.

    **Arguments:**

    - `data`: an `AccelerationData` or `TrajectoryData`.
    - `test_fraction`: the held-out fraction, in `(0, 1)`.
    - `key`: a JAX PRNG key.

    **Returns:**

    `(train, test)`, each of the type of `data`.
    """
    if not isinstance(data, AccelerationData | TrajectoryData):
        raise TypeError(
            "`data` must be an AccelerationData or a TrajectoryData, got "
            f"{type(data).__name__}."
        )
    if not 0 < test_fraction < 1:
        raise ValueError(f"`test_fraction` must lie in (0, 1), got {test_fraction!r}.")
    num = len(data)
    num_test = round(test_fraction * num)
    if not 0 < num_test < num:
        raise ValueError(
            f"`test_fraction={test_fraction}` of {num} items leaves an empty part; "
            "use more data or another fraction."
        )
    order = jr.permutation(key, num)
    return data[order[: num - num_test]], data[order[num - num_test :]]
