"""A pendulum learned from noisy angles: which loss recovers the physics as the
observation noise grows, the study of Saemundsson et al. ("Variational Integrator
Networks", 2020).

**Data.** A pendulum (`lagrax.systems.Pendulum`, m = l = 1, g = 9.82) observed in
angle only, every 0.1 time units: `observations` angles per trajectory (default 30
and 150) on `trajectories` trajectories (1, 3 and 5), with independent Gaussian
noise of standard deviation `noise` (0, 0.05 and 0.33 rad) on each angle. The
initial states are random, of moderate energy: an amplitude A uniform in
[0.5, 2] rad (no motion over the top), q₀ uniform in [−A, A] and q̇₀ of either sign
with the energy of amplitude A. The data are nested, so that the grid compares
methods, data sizes and noise levels rather than draws: a run on K trajectories of
N angles sees the first N angles of the first K trajectories of one pool, with one
draw of standard normal noise scaled by σ.

**Methods** (`methods`), each training the same initial model on the same noisy
angles with its L2 loss:

- `acceleration`: `lagrax.acceleration_loss` on finite-difference targets at every
  interior sample, q̇ₖ ≈ (qₖ₊₁ − qₖ₋₁)/2h and q̈ₖ ≈ (qₖ₊₁ − 2qₖ + qₖ₋₁)/h².
- `del`: `lagrax.discrete_euler_lagrange_loss` on the angles themselves (the
  residual of the midpoint rule's discrete Euler–Lagrange equations,
  scale-normalized).
- `rollout`: `lagrax.rollout_loss` on consecutive windows of `window` samples of
  each trajectory's interior samples (Tsit5, rtol = atol = 1e-6), each started
  from its observed angle and its finite-difference velocity; the loss compares
  angles and finite-difference velocities along the window.

**Model.** `lagrax.MechanicalLagrangian(1, angles=(0,), width=width, depth=2)`,
L = ½ M(q) q̇² − V(q) with M = C² + ε > 0 and M, V networks of (cos q, sin q): the
structure of the true Lagrangian (quadratic kinetic energy, periodic in the
angle), and an acceleration that exists for every parameter value, so no run
fails for a singular mass matrix and the study compares losses, not failure
modes. Float64, one initialization for every run, Adam on a one-cycle schedule of
peak `lr` for `steps` full-batch steps. The held-out loss is that of the method on
noisy angles (the run's σ) of the held-out trajectories' first
min(`observations`) samples.

**Evaluation.** From the true initial states of `held_out` held-out trajectories
(drawn as the training ones), each model's own flow (Tsit5, rtol = atol = 1e-8)
saved every 0.1 for 100 steps (t ≤ 10, about five periods). Metrics per run:
`angle_rms`, the root mean square over held-out trajectories and saved times of
the angle error (wrapped into [−π, π)); `energy_rms`, that of the true energy's
drift along the predicted motion, (E(q̂, q̂̇) − E(q₀, q̇₀)) / mgl (the model's own
energy is conserved by its flow, up to the solver's error, so it tells nothing);
`failed_rollouts` (left out of both); `held_out_loss`, `final_train_loss`,
`skipped_steps`, `train_seconds` and `wall_seconds` (training and evaluation).
For scale, `results.json`'s `reference` holds the same metrics for the untrained
model and the angle error of a pendulum at rest (q̂ ≡ 0).

`results.json` holds `runs`, one per method × observations × trajectories ×
noise, with those keys, and `reference`.
"""

import dataclasses
import functools
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

import lagrax

from ._common import (
    check_settings,
    fit_checkpointed,
    FLOAT64,
    fmt,
    FORWARD_ONLY,
    HISTORY_BYTES,
    markdown_table,
    Memory,
    mlp_parameters,
    one_cycle_adam,
    output_files,
    parameters_memory,
    Report,
    require_x64,
    RUN_BYTES,
)


NAME = "noisy-pendulum"
METHODS = {
    "acceleration": "acceleration (finite differences)",
    "del": "discrete Euler–Lagrange",
    "rollout": "rollout",
}
SAMPLING_STEP = 0.1
HORIZON_STEPS = 100
AMPLITUDES = (0.5, 2.0)
DEPTH = 2
PAPER = {
    "protocol": "pendulum (m = l = 1, g = 9.82) observed in angle every 0.1; 30 and "
    "150 observations per trajectory, 1, 3 and 5 trajectories, noise σ ∈ {0, 0.05, "
    "0.33}",
    "claim": "a model trained as a variational integrator on positions predicts "
    "long-term motion from few, noisy observations",
}
ERRORS_FIGURE = "errors.png"
TRAJECTORIES_FIGURE = "trajectories.png"
FIGURES = (ERRORS_FIGURE, TRAJECTORIES_FIGURE)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The settings of the noisy-pendulum study (the command line's options,
    `--name-with-dashes`). Checked on construction: a `ValueError` (or a
    `TypeError`) names a bad one."""

    steps: int = 500
    """Adam steps per run, each on the run's whole data."""
    lr: float = 1e-2
    """Peak learning rate of the one-cycle schedule."""
    seed: int = 0
    """PRNG seed of the initial states, the noise and the initialization."""
    width: int = 16
    """Hidden units per layer of the mass and potential networks (2 hidden
    layers each). 16 learns the pendulum as well as 32 at 0.6 times the cost of
    a rollout step."""
    window: int = 10
    """Samples per window of the rollout loss (0.9 time units at 10)."""
    held_out: int = 16
    """Held-out trajectories of the evaluation."""
    observations: str = "30,150"
    """Comma-separated angles per trajectory, each at least `window` + 2 when
    `methods` has `rollout` (else 3)."""
    trajectories: str = "1,3,5"
    """Comma-separated numbers of training trajectories."""
    noise: str = "0,0.05,0.33"
    """Comma-separated standard deviations of the angles' noise, in radians."""
    methods: str = ",".join(METHODS)
    """Comma-separated methods, among acceleration, del and rollout."""

    def __post_init__(self):
        check_settings(
            self,
            positive=("steps", "lr", "width", "window", "held_out"),
            choices={},
        )
        if self.window < 2:
            raise ValueError(f"`window` must be at least 2, got {self.window}.")
        methods = _methods(self.methods)
        noise = _floats(self.noise, "noise")
        if any(not (math.isfinite(s) and s >= 0) for s in noise):
            raise ValueError(
                f"`noise` must hold finite numbers at least 0, got {self.noise!r}."
            )
        _ints(self.trajectories, "trajectories")
        if "rollout" in methods:
            least, why = self.window + 2, "a rollout window between the end samples"
        else:
            least, why = 3, "finite differences need a sample on each side"
        if min(_ints(self.observations, "observations")) < least:
            raise ValueError(
                f"`observations` must each be at least {least} ({why}), got "
                f"{self.observations!r}."
            )

    @property
    def batch_size(self) -> int:
        """1: each step is one full batch of its run's data, so `results.json`'s
        `training_samples` (steps × batch size) counts full-batch steps."""
        return 1


def _parsed(text: str, setting: str, parse, kind: str) -> tuple:
    """The comma-separated items of `text`, each parsed, without repeats."""
    try:
        values = tuple(parse(item.strip()) for item in text.split(","))
    except ValueError:
        raise ValueError(
            f"`{setting}` must be comma-separated {kind}, got {text!r}."
        ) from None
    if len(set(values)) != len(values):
        raise ValueError(f"`{setting}` names one twice: {text!r}.")
    return values


def _methods(text: str) -> tuple[str, ...]:
    methods = _parsed(text, "methods", str, "names")
    for method in methods:
        if method not in METHODS:
            raise ValueError(
                f"`methods` must be comma-separated names among "
                f"{', '.join(METHODS)}; got {method!r}."
            )
    return methods


def _floats(text: str, setting: str) -> tuple[float, ...]:
    return _parsed(text, setting, float, "numbers")


def _ints(text: str, setting: str) -> tuple[int, ...]:
    values = _parsed(text, setting, int, "integers")
    if min(values) < 1:
        raise ValueError(f"`{setting}` must hold integers above 0, got {text!r}.")
    return values


def configurations(settings: Settings) -> list[tuple[str, int, int, float]]:
    """The runs, as `(method, observations, trajectories, noise)`, in order."""
    return [
        (method, n, k, sigma)
        for n in _ints(settings.observations, "observations")
        for k in _ints(settings.trajectories, "trajectories")
        for sigma in _floats(settings.noise, "noise")
        for method in _methods(settings.methods)
    ]


def run_name(method: str, observations: int, trajectories: int, noise: float) -> str:
    """A run's name, that of its checkpoint `NAME.ckpt`."""
    return f"{method}-n{observations}-k{trajectories}-noise{noise:g}"


def files_written(settings: Settings) -> tuple[str, ...]:
    """The names of the files that `run` and `Report.save` write into `out`: a
    checkpoint per run, `results.json` and the figures."""
    return output_files([run_name(*c) for c in configurations(settings)], FIGURES)


def memory_estimate(settings: Settings) -> tuple[Memory, ...]:
    """What a run holds in memory at once, from below (float64): the training
    and held-out trajectories with their noise, a full-batch training step's
    activations (the mass and potential networks at every observation), the model
    and its Adam state, a run's training history and every run's entry.
    `lagrax reproduce` refuses settings whose estimate this machine cannot
    hold."""
    observations = max(_ints(settings.observations, "observations"))
    trajectories = max(_ints(settings.trajectories, "trajectories"))
    runs = (
        len(_ints(settings.observations, "observations"))
        * len(_ints(settings.trajectories, "trajectories"))
        * len(_floats(settings.noise, "noise"))
        * len(_methods(settings.methods))
    )
    samples = max(observations, HORIZON_STEPS + 1)
    return (
        Memory(
            "the trajectories",
            ("observations", "trajectories", "held_out"),
            (trajectories + settings.held_out) * samples * 3 * FLOAT64,
        ),
        Memory(
            "a training step's activations",
            ("observations", "trajectories", "width"),
            trajectories * observations * 2 * settings.width * DEPTH * FLOAT64,
        ),
        parameters_memory(2 * mlp_parameters(2, settings.width, DEPTH), FLOAT64),
        Memory("a training history", ("steps",), settings.steps * HISTORY_BYTES),
        Memory(
            "the runs' entries",
            ("observations", "trajectories", "noise", "methods"),
            runs * RUN_BYTES,
        ),
    )


@dataclasses.dataclass(frozen=True)
class Data:
    """The study's data, noise-free; `observed` adds the noise.

    **Fields:**

    - `system`: the true pendulum.
    - `pool`: the training trajectories, as many as the largest of
        `trajectories`.
    - `held_out`: the held-out trajectories.
    - `pool_noise`, `held_out_noise`: standard normal noise of the shape of
        their angles.

    Both sets are sampled every 0.1 from t = 0, over the largest of
    `observations` or the evaluation's 101 samples, whichever is more.
    """

    system: lagrax.systems.Pendulum
    pool: lagrax.TrajectoryData
    held_out: lagrax.TrajectoryData
    pool_noise: Float[Array, "pool samples 1"]
    held_out_noise: Float[Array, "held_out samples 1"]


def initial_states(
    system: lagrax.systems.Pendulum, *, key: PRNGKeyArray
) -> tuple[Float[Array, "1"], Float[Array, "1"]]:
    """A random state of `system` of moderate energy: an amplitude A uniform in
    `AMPLITUDES`, `q₀` uniform in [−A, A] and `q̇₀` of random sign with the
    energy of amplitude A."""
    amplitude_key, q_key, sign_key = jr.split(key, 3)
    amplitude = jr.uniform(amplitude_key, (1,), jnp.float64, *AMPLITUDES)
    q0 = amplitude * jr.uniform(q_key, (1,), jnp.float64, -1.0, 1.0)
    speed = jnp.sqrt(2 * system.g / system.length * (jnp.cos(q0) - jnp.cos(amplitude)))
    sign = jnp.where(jr.bernoulli(sign_key, 0.5, (1,)), 1.0, -1.0)
    return q0, sign * speed


def _each(draw, num: int, key: PRNGKeyArray):
    """`draw(key_i)` for `i < num`, stacked: trajectory `i`'s draw does not depend
    on `num`, so a smaller study sees the first trajectories of a larger one."""
    return jax.vmap(lambda i: draw(jr.fold_in(key, i)))(jnp.arange(num))


def data(settings: Settings) -> Data:
    """Simulate the pool and the held-out trajectories (Tsit5, rtol = atol =
    1e-10, float64) and draw the noise, from `settings.seed`."""
    system = lagrax.systems.Pendulum(mass=1.0, length=1.0, g=9.82)
    keys = jr.split(jr.key(settings.seed), 4)
    num_pool = max(_ints(settings.trajectories, "trajectories"))
    states = functools.partial(initial_states, system)
    pool_q0, pool_qdot0 = _each(lambda k: states(key=k), num_pool, keys[0])
    held_q0, held_qdot0 = _each(lambda k: states(key=k), settings.held_out, keys[1])
    samples = max(*_ints(settings.observations, "observations"), HORIZON_STEPS + 1)
    ts = SAMPLING_STEP * jnp.arange(samples, dtype=jnp.float64)
    # One solve for both sets: one compilation.
    truth = lagrax.trajectory_data(
        system,
        jnp.concatenate([pool_q0, held_q0]),
        jnp.concatenate([pool_qdot0, held_qdot0]),
        ts,
    )

    def noise(key):
        return jr.normal(key, (samples, 1), jnp.float64)

    return Data(
        system=system,
        pool=truth[jnp.arange(num_pool)],
        held_out=truth[num_pool + jnp.arange(settings.held_out)],
        pool_noise=_each(noise, num_pool, keys[2]),
        held_out_noise=_each(noise, settings.held_out, keys[3]),
    )


def observed(
    truth: lagrax.TrajectoryData,
    noise: Float[Array, "pool samples 1"],
    observations: int,
    trajectories: int,
    sigma: float,
) -> tuple[Float[Array, " times"], Float[Array, "trajectories times 1"]]:
    """The first `observations` times and the noisy angles of the first
    `trajectories` trajectories there."""
    index = jnp.arange(trajectories)
    angles = truth.q[index, :observations] + sigma * noise[index, :observations]
    return truth.ts[:observations], angles


def method_data(
    method: str,
    ts: Float[Array, " times"],
    angles: Float[Array, "trajectories times 1"],
    window: int,
) -> lagrax.AbstractDataset:
    """The dataset a method trains on, from noisy angles alone.

    **Arguments:**

    - `method`: one of `METHODS`.
    - `ts`: the observation times, evenly spaced.
    - `angles`: the noisy angles at `ts`.
    - `window`: the rollout loss's window.

    **Returns:**

    For `acceleration`, an `AccelerationData` of the interior samples with
    central-difference velocities and accelerations; for `del`, a `PositionData`
    of the angles; for `rollout`, a `TrajectoryData` of the interior samples
    with central-difference velocities, cut to the most samples whole windows
    cover.
    """
    h = ts[1] - ts[0]
    if method == "del":
        return lagrax.PositionData(ts, angles)
    interior = angles[:, 1:-1]
    velocity = (angles[:, 2:] - angles[:, :-2]) / (2 * h)
    if method == "acceleration":
        acceleration = (angles[:, 2:] - 2 * interior + angles[:, :-2]) / h**2
        return lagrax.AccelerationData(
            *(x.reshape(-1, 1) for x in (interior, velocity, acceleration))
        )
    # Windows share their end samples: (samples − 1) must be a multiple of
    # (window − 1).
    samples = interior.shape[1]
    samples -= (samples - 1) % (window - 1)
    return lagrax.TrajectoryData(
        ts[1 : 1 + samples], interior[:, :samples], velocity[:, :samples]
    )


@functools.cache
def loss_of(method: str, window: int):
    """A method's loss, one function per method and window (`lagrax.fit`
    compiles once per loss)."""
    if method == "acceleration":
        return functools.partial(lagrax.acceleration_loss, norm="l2")
    if method == "del":
        return lagrax.discrete_euler_lagrange_loss
    # Tsit5 takes about one step per sample at rtol 1e-6. A budget of 16 costs no
    # more (the windows run until the last is done) and leaves room for the stiff
    # models that very noisy data train: a window out of steps skips the step.
    return functools.partial(
        lagrax.rollout_loss, window=window, max_steps=16 * (window - 1)
    )


def model(settings: Settings) -> lagrax.MechanicalLagrangian:
    """The untrained model every run starts from (float64)."""
    return lagrax.MechanicalLagrangian(
        1,
        angles=(0,),
        width=settings.width,
        depth=DEPTH,
        dtype=jnp.float64,
        key=jr.fold_in(jr.key(settings.seed), 1),
    )


def train(
    settings: Settings,
    data: Data,
    method: str,
    observations: int,
    trajectories: int,
    sigma: float,
    *,
    out: str | os.PathLike | None,
    progress: bool,
):
    """Train the model with one method on one noisy dataset, checkpointed in
    `out` if given. Returns `(model, metrics)`: the trained model and its
    training metrics."""
    ts, angles = observed(data.pool, data.pool_noise, observations, trajectories, sigma)
    shortest = min(_ints(settings.observations, "observations"))
    held_ts, held_angles = observed(
        data.held_out, data.held_out_noise, shortest, settings.held_out, sigma
    )
    train_data = method_data(method, ts, angles, settings.window)
    trained, history, metrics = fit_checkpointed(
        model(settings),
        loss_of(method, settings.window),
        train_data,
        method_data(method, held_ts, held_angles, settings.window),
        optimizer=one_cycle_adam(settings.steps, settings.lr, None),
        steps=settings.steps,
        batch_size=len(train_data),
        seed=settings.seed,
        name=run_name(method, observations, trajectories, sigma),
        out=out,
        progress=progress,
    )
    return trained, dict(held_out_loss=float(history.eval_loss[-1]), **metrics)


def evaluate(
    data: Data, model
) -> tuple[dict[str, Any], Float[np.ndarray, "trajectories times"]]:
    """Integrate `model` from the held-out initial states and compare with the
    truth. Returns `(metrics, angles)`: `angle_rms`, `energy_rms` and
    `failed_rollouts`, and the predicted angles."""
    truth = data.held_out
    ts = truth.ts[: HORIZON_STEPS + 1]
    predicted = lagrax.rollout(
        model,
        truth.q[:, 0],
        truth.qdot[:, 0],
        ts,
        rtol=1e-8,
        atol=1e-8,
        throw=False,
        max_steps=100 * HORIZON_STEPS,
        adjoint=FORWARD_ONLY,
    )
    angles = np.asarray(predicted.q[..., 0])
    ok = np.isfinite(angles).all(axis=1)
    system = data.system
    drift = np.asarray(
        lagrax.energy_error(
            system, predicted, scale=system.mass * system.g * system.length
        )
    )
    error = wrapped(angles[ok] - np.asarray(truth.q[ok, : HORIZON_STEPS + 1, 0]))
    metrics = dict(
        angle_rms=_rms(error[:, 1:]),
        energy_rms=_rms(drift[ok, 1:]),
        failed_rollouts=int((~ok).sum()),
    )
    return metrics, angles


def wrapped(angle: np.ndarray) -> np.ndarray:
    """Angles wrapped into [−π, π)."""
    return np.remainder(angle + np.pi, 2 * np.pi) - np.pi


def _rms(x: np.ndarray) -> float | None:
    return float(np.sqrt(np.mean(x**2))) if x.size else None


def reference(data: Data, untrained) -> dict[str, Any]:
    """The metrics of the untrained model, and the angle error of a pendulum at
    rest (q̂ ≡ 0): the scale of a model that learned nothing."""
    metrics, _ = evaluate(data, untrained)
    at_rest = _rms(np.asarray(data.held_out.q[:, 1 : HORIZON_STEPS + 1, 0]))
    return dict(untrained=metrics, at_rest=dict(angle_rms=at_rest))


def run(
    settings: Settings = Settings(),
    *,
    out: str | os.PathLike | None = None,
    progress: bool = True,
) -> Report:
    """Run the study: data, one training and evaluation per configuration, report.

    **Arguments:**

    - `settings`: the `Settings`.
    - `out`: a folder for the training checkpoints, one `NAME.ckpt` per run (see
        `files_written`): an interrupted study resumes from them; `None` keeps
        nothing.
    - `progress`: show progress bars.

    **Returns:**

    A `Report` with `runs` (and `reference` among its `extra` entries);
    `report.save(out)` writes `results.json` and the figures.
    """
    require_x64()
    prepared = data(settings)
    runs, predictions = [], {}
    for config in configurations(settings):
        start = time.perf_counter()
        trained, metrics = train(
            settings, prepared, *config, out=out, progress=progress
        )
        evaluation, predictions[config] = evaluate(prepared, trained)
        method, observations, trajectories, sigma = config
        runs.append(
            dict(
                method=method,
                observations=observations,
                trajectories=trajectories,
                noise=sigma,
                **evaluation,
                **metrics,
                wall_seconds=time.perf_counter() - start,
            )
        )
    references = reference(prepared, model(settings))
    return Report(
        experiment=NAME,
        settings=settings,
        models=None,
        runs=runs,
        paper=PAPER,
        table=table(settings, runs, references),
        figures=figures(settings, prepared, runs, predictions, references),
        extra=dict(reference=references),
    )


def _groups(runs: list[dict[str, Any]]) -> dict[tuple, dict[str, dict[str, Any]]]:
    """The runs by `(observations, trajectories, noise)`, then by method."""
    groups: dict[tuple, dict[str, dict[str, Any]]] = {}
    for r in runs:
        key = (r["observations"], r["trajectories"], r["noise"])
        groups.setdefault(key, {})[r["method"]] = r
    return groups


def _cells(by_method: dict[str, dict[str, Any]], metric: str) -> list[str]:
    """A metric per method, the smallest in bold."""
    values = {m: r[metric] for m, r in by_method.items()}
    finite = [v for v in values.values() if v is not None]
    best = min(finite) if len(finite) > 1 else None
    return [
        f"**{fmt(v)}**" if v is not None and v == best else fmt(v)
        for v in values.values()
    ]


def table(settings: Settings, runs: list[dict[str, Any]], references) -> str:
    """The angle and energy errors of every run, as a Markdown table with a
    caption; the best method of each row in bold."""
    methods = _methods(settings.methods)
    header = ["N", "K", "σ"]
    header += [f"angle RMS, {m}" for m in methods]
    header += [f"energy RMS, {m}" for m in methods]
    rows = [
        [str(n), str(k), f"{sigma:g}"]
        + _cells(by_method, "angle_rms")
        + _cells(by_method, "energy_rms")
        for (n, k, sigma), by_method in _groups(runs).items()
    ]
    failed = sum(r["failed_rollouts"] for r in runs)
    untrained = references["untrained"]
    caption = (
        "Pendulum from N noisy angles (σ rad, every 0.1) on K trajectories; "
        f"MechanicalLagrangian (width {settings.width}), {settings.steps} full-batch "
        f"Adam steps, float64. Held-out: {settings.held_out} trajectories from "
        "their true initial states, 100 steps of 0.1 (Tsit5, rtol = atol = 1e-8): "
        "RMS angle error (rad) and RMS drift of the true energy (/ mgl). "
        f"For scale: untrained {fmt(untrained['angle_rms'])} rad, "
        f"{fmt(untrained['energy_rms'])} mgl; at rest "
        f"{fmt(references['at_rest']['angle_rms'])} rad. "
        f"Failed rollouts (left out): {failed}."
    )
    return caption + "\n\n" + markdown_table(header, rows)


def figures(settings: Settings, data: Data, runs, predictions, references) -> tuple:
    """The plots, as `(filename, draw)` pairs: the angle error of every run
    against the noise, and one held-out trajectory as each method predicts it
    from the most data."""
    at_rest = references["at_rest"]["angle_rms"]
    return (
        (ERRORS_FIGURE, functools.partial(_draw_errors, settings, runs, at_rest)),
        (
            TRAJECTORIES_FIGURE,
            functools.partial(_draw_trajectories, settings, data, predictions),
        ),
    )


def _draw_errors(settings: Settings, runs, at_rest: float, fig) -> None:
    groups = _groups(runs)
    observations = _ints(settings.observations, "observations")
    noise = _floats(settings.noise, "noise")
    styles = ("-", "--", ":", "-.")
    axes = fig.subplots(1, len(observations), sharey=True, squeeze=False)[0]
    for ax, n in zip(axes, observations):
        for i, method in enumerate(_methods(settings.methods)):
            for j, k in enumerate(_ints(settings.trajectories, "trajectories")):
                errors = [groups[(n, k, s)][method]["angle_rms"] for s in noise]
                ax.semilogy(
                    range(len(noise)),
                    [np.nan if e is None else e for e in errors],
                    f"C{i}{styles[j % len(styles)]}o",
                    ms=3,
                    label=f"{method}, K = {k}",
                )
        ax.axhline(at_rest, color="gray", lw=0.8, ls="--", label="at rest, q̂ ≡ 0")
        ax.set_xticks(range(len(noise)), [f"{s:g}" for s in noise])
        ax.set(xlabel="noise σ (rad)", title=f"N = {n} angles per trajectory")
    axes[0].set(ylabel="held-out angle RMS error (rad), t ≤ 10")
    axes[-1].legend(fontsize="small")


def _draw_trajectories(settings: Settings, data: Data, predictions, fig) -> None:
    ts = np.asarray(data.held_out.ts[: HORIZON_STEPS + 1])
    truth = np.asarray(data.held_out.q[0, : HORIZON_STEPS + 1, 0])
    n = max(_ints(settings.observations, "observations"))
    k = max(_ints(settings.trajectories, "trajectories"))
    noise = _floats(settings.noise, "noise")
    axes = fig.subplots(1, len(noise), sharey=True, squeeze=False)[0]
    for ax, sigma in zip(axes, noise):
        ax.plot(ts, truth, "k", lw=2, label="truth")
        for i, method in enumerate(_methods(settings.methods)):
            angle = predictions[(method, n, k, sigma)][0]
            # A model that swings over the top shows as a sawtooth.
            angle = wrapped(np.where(np.isfinite(angle), angle, np.nan))
            ax.plot(ts, angle, f"C{i}--", label=method)
        ax.set(xlabel="t", title=f"σ = {sigma:g}, N = {n}, K = {k}")
        ax.set_ylim(-np.pi, np.pi)
    axes[0].set(ylabel="angle of held-out trajectory 1, wrapped (rad)")
    axes[-1].legend(fontsize="small")
