"""Measured runs of a real machine: loading a CSV, turning it into training data,
and the open-loop prediction error over fixed horizons."""

import gzip
import os
import pathlib
from collections.abc import Sequence

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Float, PyTree

from .._custom_types import ForceFn
from .._force import with_input
from .._simulate import solve, solve_options
from .._term import as_term
from .data import AccelerationData, PositionData, TrajectoryData


class Recording(eqx.Module):
    """One measured run: states (and inputs) at the sample times of a real
    machine, as `lagrax.load_recording` reads them from a CSV file.

    Sample times need not be uniform. `resample` puts a run on a uniform grid,
    `windows` cuts it into short `TrajectoryData` for `rollout_loss`,
    `accelerations` gives finite-difference `AccelerationData` (for
    `inverse_dynamics_loss` or `acceleration_loss`), `positions` a `PositionData`,
    and `lagrax.horizon_rms` measures a model's open-loop predictions on it.

    **Fields:**

    - `ts`: the sample times, strictly increasing, shape `(times,)`.
    - `q`: positions, shape `(times, dof)`.
    - `qdot`: velocities, shape `(times, dof)`.
    - `u`: inputs (such as measured torques), shape `(times, inputs)`, or `None`.
    """

    ts: Float[Array, " times"]
    q: Float[Array, "times dof"]
    qdot: Float[Array, "times dof"]
    u: Float[Array, "times inputs"] | None

    def __init__(
        self,
        ts: ArrayLike,
        q: ArrayLike,
        qdot: ArrayLike,
        u: ArrayLike | None = None,
    ):
        """**Arguments:**

        - `ts`: finite, strictly increasing times, shape `(times,)`, at least 3.
        - `q`, `qdot`: finite arrays of shape `(times, dof)`.
        - `u`: optional finite inputs, shape `(times, inputs)`.

        Everything is stored in JAX's default float dtype.
        """
        dtype = jnp.result_type(float)
        ts = np.asarray(ts, dtype=float)
        if ts.ndim != 1 or ts.shape[0] < 3:
            raise ValueError(
                f"`ts` must have shape (times,) with at least 3 times, got {ts.shape}."
            )
        _check_finite("ts", ts)
        if not np.all(np.diff(ts) > 0):
            where = int(np.flatnonzero(np.diff(ts) <= 0)[0]) + 1
            raise ValueError(
                "`ts` must be strictly increasing; sample "
                f"{where} is at {ts[where]!r}, after {ts[where - 1]!r}."
            )
        arrays = {}
        for name, x in (("q", q), ("qdot", qdot), ("u", u)):
            if x is None:
                arrays[name] = None
                continue
            x = np.asarray(x, dtype=float)
            if x.ndim != 2 or x.shape[0] != ts.shape[0]:
                raise ValueError(
                    f"`{name}` must have shape ({ts.shape[0]}, ...) to match `ts`, "
                    f"got {x.shape}."
                )
            _check_finite(name, x)
            arrays[name] = jnp.asarray(x, dtype)
        if arrays["qdot"].shape != arrays["q"].shape:
            raise ValueError(
                f"`qdot` must have the shape of `q`, {arrays['q'].shape}; got "
                f"{arrays['qdot'].shape}."
            )
        self.ts = jnp.asarray(ts, dtype)
        self.q = arrays["q"]
        self.qdot = arrays["qdot"]
        self.u = arrays["u"]

    def resample(self, dt: float) -> "Recording":
        """The run on the uniform grid `ts[0], ts[0] + dt, …` (up to its last
        time), every signal linearly interpolated between samples.

        **Arguments:**

        - `dt`: the grid step, positive.

        **Returns:**

        A `Recording` with uniform times.
        """
        if not (isinstance(dt, int | float) and 0 < dt < np.inf):
            raise ValueError(f"`dt` must be a positive number, got {dt!r}.")
        ts = np.asarray(self.ts)
        grid = ts[0] + dt * np.arange(int(np.floor((ts[-1] - ts[0]) / dt)) + 1)

        def interpolate(x) -> np.ndarray:
            x = np.asarray(x)
            return np.stack(
                [np.interp(grid, ts, x[:, i]) for i in range(x.shape[1])], 1
            )

        return Recording(
            grid,
            interpolate(self.q),
            interpolate(self.qdot),
            None if self.u is None else interpolate(self.u),
        )

    def windows(self, length: int, *, stride: int | None = None) -> TrajectoryData:
        """Consecutive samples cut into windows, for `rollout_loss`.

        Window `k` holds samples `k·stride … k·stride + length − 1`, with its
        times shifted to start at 0 (the windows of a time-invariant model, whose
        input comes with each window's `u`). Resample first if the times are not
        uniform: windows share one time grid.

        **Arguments:**

        - `length`: samples per window, at least 2.
        - `stride`: samples between window starts; default `length − 1`
            (consecutive windows share an end sample).

        **Returns:**

        A `TrajectoryData` with one trajectory per window (and `u` if the run
        has inputs).
        """
        stride = length - 1 if stride is None else stride
        for name, value, low in (("length", length, 2), ("stride", stride, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(
                    f"`{name}` must be an int of at least {low}, got {value!r}."
                )
        num = (self.ts.shape[0] - length) // stride + 1
        if num < 1:
            raise ValueError(
                f"The run has {self.ts.shape[0]} samples, fewer than a window of "
                f"{length}."
            )
        ts = np.asarray(self.ts)
        steps = np.diff(ts)
        if np.ptp(steps) > 1e-9 * max(1.0, abs(ts[-1])):
            raise ValueError(
                "`windows` needs uniform sample times: call `resample(dt)` first."
            )
        index = stride * np.arange(num)[:, None] + np.arange(length)[None, :]
        u = None if self.u is None else self.u[index]
        return TrajectoryData(
            self.ts[:length] - self.ts[0], self.q[index], self.qdot[index], u
        )

    def accelerations(self, *, span: int = 5) -> AccelerationData:
        """The samples with finite-difference accelerations, for
        `inverse_dynamics_loss` or `acceleration_loss`.

        `q̈_k = (q̇_{k+s} − q̇_{k−s}) / (t_{k+s} − t_{k−s})`: the central
        difference of the measured velocities over `±s` samples (`s = span`),
        second-order accurate on any grid of nearly uniform steps. A wider span
        averages more measurement noise (velocity quantization) and smooths fast
        changes more; the `s` samples at each end are dropped.

        **Arguments:**

        - `span`: `s ≥ 1`.

        **Returns:**

        An `AccelerationData` of the interior samples (with `u`, if any).
        """
        if isinstance(span, bool) or not isinstance(span, int) or span < 1:
            raise ValueError(f"`span` must be a positive int, got {span!r}.")
        if self.ts.shape[0] <= 2 * span:
            raise ValueError(f"The run has too few samples for span={span}.")
        inner = slice(span, -span)
        dt = self.ts[2 * span :] - self.ts[: -2 * span]
        qddot = (self.qdot[2 * span :] - self.qdot[: -2 * span]) / dt[:, None]
        u = None if self.u is None else self.u[inner]
        return AccelerationData(self.q[inner], self.qdot[inner], qddot, u)

    def positions(self) -> PositionData:
        """The run's positions (and inputs) as one trajectory of `PositionData`,
        for `discrete_euler_lagrange_loss`."""
        u = None if self.u is None else self.u[None]
        return PositionData(self.ts, self.q[None], u)


def _check_finite(name: str, x: np.ndarray) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=tuple(range(1, x.ndim))))[0])
        raise ValueError(
            f"`{name}` must be finite: sample {row} holds {x[row]!r} "
            f"({int(bad.sum())} non-finite values in all)."
        )


def load_recording(
    path: str | os.PathLike,
    *,
    time: str = "time",
    q: Sequence[str] = ("q1", "q2"),
    qdot: Sequence[str] = ("qdot1", "qdot2"),
    u: Sequence[str] | None = ("tau1", "tau2"),
) -> Recording:
    """Read a measured run from a CSV file (plain or gzip-compressed, `.gz`).

    The file has a header line of column names and one row of numbers per
    sample. The column mapping names which columns are what; the defaults read
    the DFKI double-pendulum runs shipped with lagrax (`time, q1, q2, qdot1,
    qdot2, tau1, tau2, …`; further columns are ignored).

    **Arguments:**

    - `path`: the CSV file.
    - `time`: the column of sample times.
    - `q`, `qdot`: the columns of positions and of velocities, coordinate by
        coordinate (as many of each).
    - `u`: the columns of inputs (such as measured torques), or `None`.

    **Returns:**

    A `Recording`.

    **Raises:**

    `FileNotFoundError` for a missing file; `ValueError` naming the file and the
    problem for a missing column, a malformed row, a non-finite value (with its
    sample), or times that are not strictly increasing.
    """
    path = pathlib.Path(path)
    if len(q) != len(qdot) or not q:
        raise ValueError(
            f"`q` and `qdot` must name as many columns, at least one; got {q} and "
            f"{qdot}."
        )
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt") as f:
            header = f.readline().strip().split(",")
            table = np.loadtxt(f, delimiter=",", ndmin=2)
    except (OSError, ValueError, EOFError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{path}: not a readable CSV file of numbers ({e}).") from None
    header = [name.strip() for name in header]
    wanted = [time, *q, *qdot, *(u or ())]
    missing = [name for name in wanted if name not in header]
    if missing:
        raise ValueError(
            f"{path}: no column {', '.join(map(repr, missing))}; the file has "
            f"{', '.join(header)}. Name the columns with time=, q=, qdot=, u=."
        )
    if table.shape[1] != len(header):
        raise ValueError(
            f"{path}: the header names {len(header)} columns but the rows hold "
            f"{table.shape[1]}."
        )

    def columns(names):
        return table[:, [header.index(name) for name in names]]

    try:
        return Recording(
            table[:, header.index(time)],
            columns(q),
            columns(qdot),
            None if u is None else columns(u),
        )
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def horizon_rms(
    model: PyTree,
    recording: Recording,
    horizons: Sequence[float],
    *,
    force: ForceFn | None = None,
    stride: int = 50,
    rtol: float = 1e-8,
    atol: float = 1e-8,
) -> dict[float, float]:
    """The RMS angle error of open-loop predictions over fixed horizons: how far a
    model of a real machine stays on the measured motion.

    From every `stride`-th sample `i` (time `t_i`), the model is integrated under
    the measured input (the linear interpolation of `recording.u`, driving the
    force's `Actuation`) from the measured state to `t_j`, the time of the first
    sample at or after `t_i + h`; starts whose `t_i + h` passes the last sample
    are dropped. The error is the predicted `q` minus the measured `q_j`; the
    result is its root mean square over starts and coordinates, per horizon.
    Adaptive `Tsit5` at `rtol`, `atol`, in the recording's dtype.

    **Arguments:**

    - `model`: a Lagrangian or an `AbstractDynamics`.
    - `recording`: a measured run.
    - `horizons`: the horizons `h > 0`, in the units of `recording.ts`.
    - `force`: the force on the model (with an `Actuation` when the recording has
        inputs).
    - `stride`: samples between starts.
    - `rtol`, `atol`: the solver's tolerances.

    **Returns:**

    `{h: rms}` for each horizon (NaN where no start fits or a solve failed).
    """
    if recording.u is not None:
        if force is None:
            raise ValueError(
                "The recording carries an input `u`, but no `force` is given to "
                "take it: pass force=lagrax.Actuation() (plus any friction)."
            )
        force = with_input(
            force, diffrax.LinearInterpolation(recording.ts, recording.u)
        )
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"`stride` must be a positive int, got {stride!r}.")
    term = as_term(model, throw=False, force=force)
    options = solve_options(
        solver=diffrax.Tsit5(),
        dt0=None,
        rtol=rtol,
        atol=atol,
        stepsize_controller=None,
        adjoint=diffrax.RecursiveCheckpointAdjoint(),
        max_steps=None,
    )

    horizons = list(horizons)
    for h in horizons:
        if isinstance(h, bool) or not (isinstance(h, int | float) and 0 < h < np.inf):
            raise ValueError(f"`horizons` must be positive numbers, got {h!r}.")
    ts = np.asarray(recording.ts)
    last = ts.shape[0] - 1
    starts = np.arange(0, last, stride)
    # One solve per start saves at every horizon's end sample (clamped to the last
    # sample, and masked, where the horizon passes the end of the run).
    ends = np.stack(
        [np.searchsorted(ts, ts[starts] + h, side="left") for h in sorted(horizons)], 1
    )
    valid = ends <= last
    ends = np.minimum(ends, last)
    times = jnp.concatenate([recording.ts[starts][:, None], recording.ts[ends]], 1)
    predicted = _predict(
        term, options, times, recording.q[starts], recording.qdot[starts]
    )
    errors = np.asarray(predicted)[:, 1:] - np.asarray(recording.q)[ends]
    out = {}
    for k, h in enumerate(sorted(horizons)):
        error = errors[valid[:, k], k]
        out[h] = float(np.sqrt(np.mean(error**2))) if error.size else float("nan")
    return {h: out[h] for h in horizons}


@eqx.filter_jit
def _predict(term, options, times, q0, qdot0):
    """`q` at each row of `times` from `(q0, qdot0)` at its first time."""

    def one(times, q, qdot):
        return solve(term, q, qdot, times, options, throw=False)[0]

    return jax.vmap(one)(times, q0, qdot0)
