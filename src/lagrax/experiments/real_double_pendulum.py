"""A real machine: a measured, motor-driven double pendulum (the DFKI RIC
Underactuated Lab's design A.0, system-identification runs of 2022-08-15, shipped
with lagrax under their BSD-3-Clause licence), learned from noisy measured states
and torques, against the lab's own identified rigid-body models.

Models, each a Lagrangian (or black box) with forces, driven by the measured joint
torques through a `lagrax.Actuation`:

- `identified_2.0`, `identified_1.0`: the lab's identified parameters as
  `lagrax.systems.ActuatedDoublePendulum` plus `RayleighDissipation(b) +
  CoulombFriction(cf)` (no training: the anchors);
- `structured`: a `lagrax.MechanicalLagrangian` (`width` units, M positive
  definite by construction) with `LearnedDissipation` and trainable
  `CoulombFriction`, trained from scratch: first on inverse dynamics
  (`lagrax.inverse_dynamics_loss`: its torques against the measured ones, on
  finite-difference accelerations), then on rollouts;
- `grey_box`: the identified model 2.0 (frozen) plus a learned residual
  `MLPLagrangian` (starting at zero) and its friction (`b`, `cf` trainable),
  trained on rollouts;
- `black_box`: a `NeuralODEBaseline` with the torques entering through a learned
  constant matrix (`q̈ = f(q, q̇) + B τ`), trained on finite-difference
  accelerations, then on rollouts.

Training data are runs 00–04, resampled to a uniform 4 ms grid (linear
interpolation of angles, velocities and torques), their first 8 s for training
and the rest for validation. Rollout training (`lagrax.rollout_loss`, positions
only: the measured velocities are quantized and noisy, ~0.1 rad/s) integrates
`window`-sample windows with fixed-step `Tsit5` at 4 ms under the measured torque,
float64. Pretraining uses the samples at 2 ms.

The metric, the lab's protocol: from every 50th sample (every 0.1 s) of a test
run, integrate under the measured torque (linearly interpolated) from that
sample's state to the first sample at or after `t + h`, and take the RMS of the
angle error over starts and both joints (`lagrax.horizon_rms`; adaptive Tsit5,
rtol = atol = 1e-8, float64), for h ∈ {0.1, 0.25, 0.5, 1.0} s. The test runs are
05 and 11 (11: faster, larger torques — out of distribution), plus every
`*.csv`/`*.csv.gz` in the folder `test_data` (same columns). Also the RMS torque
error of inverse dynamics on the test runs (Lagrangian models; accelerations by
central differences of the measured velocities over ±5 samples).

`results.json` holds `rollout_rms[FILE][MODEL][HORIZON]` (horizons as the
strings "0.1", "0.25", "0.5", "1.0") and `torque_rms[FILE][MODEL]`; `paper`
holds the lab model's reference RMS values.
"""

import dataclasses
import functools
import os
import pathlib
from typing import Any

import diffrax
import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

import lagrax

from ._common import (
    check_settings,
    fit_checkpointed,
    FLOAT64,
    fmt,
    HISTORY_BYTES,
    LOSS_FIGURE,
    loss_figure,
    markdown_table,
    Memory,
    mlp_parameters,
    output_files,
    parameters_memory,
    Report,
    require_x64,
)


NAME = "real-double-pendulum"
DATA = pathlib.Path(__file__).parent / "data" / "dfki_double_pendulum"
TRAIN_FILES = tuple(f"trajectory_{i:02d}.csv.gz" for i in range(5))
TEST_FILES = ("trajectory_05.csv.gz", "trajectory_11.csv.gz")
HORIZONS = (0.1, 0.25, 0.5, 1.0)
DT = 0.004
SAMPLE_DT = 0.002
VALIDATION_START = 8.0
FD_SPAN = 5
NAMES = {
    "identified_2.0": "identified model 2.0 (lab)",
    "identified_1.0": "identified model 1.0 (lab)",
    "structured": "structured (MechanicalLagrangian)",
    "grey_box": "grey box (2.0 + learned residual)",
    "black_box": "black box (neural ODE + B τ)",
}
TRAINED = ("structured", "grey_box", "black_box")
# The lab model's RMS angle errors (rad) by the same protocol, from the issue.
PAPER = {
    "identified_2.0": {
        "trajectory_05.csv.gz": {
            "0.1": 0.0144,
            "0.25": 0.0491,
            "0.5": 0.199,
            "1.0": 1.30,
        },
        "trajectory_11.csv.gz": {
            "0.1": 0.0199,
            "0.25": 0.101,
            "0.5": 0.514,
            "1.0": 1.79,
        },
    },
    "identified_1.0": {
        "trajectory_05.csv.gz": {
            "0.1": 0.0461,
            "0.25": 0.193,
            "0.5": 0.404,
            "1.0": 1.12,
        },
    },
}
ANGLES_FIGURE = "angles_{}.png"
_PARAMETERS = ("m1", "m2", "l1", "r1", "r2", "I1", "I2", "Ir", "gr", "g")


@dataclasses.dataclass(frozen=True)
class Settings:
    """The settings of the real double-pendulum experiment (the command line's
    options, `--name-with-dashes`). Checked on construction: a `ValueError` (or a
    `TypeError`) names a bad one."""

    steps: int = 400
    """Rollout-training steps of each learned model. More overfit the grey box
    (measured: 800 steps end above model 2.0 at h = 0.1 s on run 05, while the
    validation loss still falls)."""
    pretrain_steps: int = 2000
    """Steps on inverse dynamics (structured) or accelerations (black box) before
    the rollouts."""
    batch_size: int = 32
    """Windows per rollout-training step (pretraining: 8× as many samples)."""
    lr: float = 1e-3
    """Initial learning rate of Adam (cosine decay to 0 in each stage)."""
    seed: int = 0
    """PRNG seed of the initializations and the minibatches."""
    width: int = 32
    """Hidden units per layer of the learned networks (2 hidden layers)."""
    window: int = 63
    """Samples per rollout-training window (at 4 ms: 63 is 0.25 s). Longer
    windows let the model's errors outgrow those of the measured initial
    velocity (measured: 0.1-s windows improved the long horizons only)."""
    test_data: str = ""
    """A folder of further measured runs (`*.csv`, `*.csv.gz`, the columns of the
    shipped ones) to evaluate beside runs 05 and 11; "" for none."""

    def __post_init__(self):
        check_settings(
            self,
            positive=("steps", "batch_size", "lr", "width", "window"),
            choices={},
        )
        if self.window < 2:
            raise ValueError(f"`window` must be at least 2, got {self.window}.")
        if self.test_data and not pathlib.Path(self.test_data).is_dir():
            raise ValueError(f"`test_data` must be a folder, got {self.test_data!r}.")


def test_files(settings: Settings) -> dict[str, pathlib.Path]:
    """The runs to evaluate, by file name: 05 and 11, then those of `test_data`."""
    files = {name: DATA / name for name in TEST_FILES}
    if settings.test_data:
        folder = pathlib.Path(settings.test_data)
        extra = sorted([*folder.glob("*.csv"), *folder.glob("*.csv.gz")])
        if not extra:
            raise ValueError(f"`test_data`: no *.csv or *.csv.gz file in {folder}.")
        files.update({path.name: path for path in extra})
    return files


def files_written(settings: Settings) -> tuple[str, ...]:
    """The names of the files that `run` and `Report.save` write into `out`."""
    checkpoints = [*TRAINED, "structured_pretrain", "black_box_pretrain"]
    figures = [angles_figure(name) for name in test_files(settings)]
    return output_files(checkpoints, (LOSS_FIGURE, *figures))


def memory_estimate(settings: Settings) -> tuple[Memory, ...]:
    """What a run holds in memory at once, from below (float64): a rollout-training
    step's activations (Tsit5's six stages at each step of each window, all kept
    for the gradient), a pretraining step's, the models and their Adam states,
    and the training histories (the measured runs are fixed). `lagrax reproduce`
    refuses settings whose estimate this machine cannot hold."""
    return (
        Memory(
            "a rollout-training step's activations",
            ("batch_size", "window", "width"),
            settings.batch_size * settings.window * 6 * settings.width * 2 * FLOAT64,
        ),
        Memory(
            "a pretraining step's activations",
            ("batch_size", "width"),
            8 * settings.batch_size * settings.width * 2 * FLOAT64,
        ),
        parameters_memory(4 * mlp_parameters(3 * 2, settings.width, 2), FLOAT64),
        Memory(
            "the training histories",
            ("steps", "pretrain_steps"),
            (3 * settings.steps + 2 * settings.pretrain_steps) * HISTORY_BYTES,
        ),
    )


def angles_figure(file_name: str) -> str:
    """The name of the angles plot of a test run."""
    return ANGLES_FIGURE.format(file_name.split(".")[0])


def identified_parameters(version: str) -> dict[str, float]:
    """The lab's identified parameters (`identified_model_VERSION.yml`, `key:
    value` lines), for `version` "1.0" or "2.0"."""
    path = DATA / f"identified_model_{version}.yml"
    if not path.is_file():
        raise ValueError(f"`version` must be '1.0' or '2.0', got {version!r}.")
    pairs = (line.split(":", 1) for line in path.read_text().splitlines() if line)
    return {key.strip(): float(value) for key, value in pairs}


def identified_model(version: str):
    """The lab's identified model as `(lagrangian, force)`: an
    `ActuatedDoublePendulum` and its friction, `RayleighDissipation(b) +
    CoulombFriction(cf)` (add a `lagrax.Actuation()` for the torques)."""
    p = identified_parameters(version)
    lagrangian = lagrax.systems.ActuatedDoublePendulum(**{k: p[k] for k in _PARAMETERS})
    friction = lagrax.RayleighDissipation(
        jnp.array([p["b1"], p["b2"]])
    ) + lagrax.CoulombFriction(jnp.array([p["cf1"], p["cf2"]]))
    return lagrangian, friction


@dataclasses.dataclass(frozen=True)
class Data:
    """The experiment's data.

    **Fields:**

    - `windows`, `validation_windows`: rollout-training windows (`TrajectoryData`
        with the torques as `u`) from the first 8 s of runs 00–04 and the rest.
    - `samples`, `validation_samples`: the same runs' samples with
        finite-difference accelerations and torques (`AccelerationData`).
    - `tests`: the test runs (`Recording`s) by file name.
    """

    windows: lagrax.TrajectoryData
    validation_windows: lagrax.TrajectoryData
    samples: lagrax.AccelerationData
    validation_samples: lagrax.AccelerationData
    tests: dict[str, lagrax.Recording]


def _split(run: lagrax.Recording) -> tuple[lagrax.Recording, lagrax.Recording]:
    """The run before `VALIDATION_START` and after."""
    cut = int(np.searchsorted(np.asarray(run.ts), VALIDATION_START))
    u = run.u
    assert u is not None  # the recordings carry their torques

    def part(s: slice) -> lagrax.Recording:
        return lagrax.Recording(run.ts[s], run.q[s], run.qdot[s], u[s])

    return part(slice(None, cut)), part(slice(cut, None))


def data(settings: Settings) -> Data:
    """Load and cut the measured runs."""
    windows, validation, samples, validation_samples = [], [], [], []
    for name in TRAIN_FILES:
        run = lagrax.load_recording(DATA / name)
        early, late = _split(run.resample(DT))
        stride = max(1, (settings.window - 1) // 5)
        windows.append(early.windows(settings.window, stride=stride))
        validation.append(late.windows(settings.window))
        early, late = _split(run.resample(SAMPLE_DT))
        samples.append(early.accelerations(span=FD_SPAN))
        validation_samples.append(late.accelerations(span=FD_SPAN))

    def joined(parts, fields):
        return [jnp.concatenate([getattr(p, k) for p in parts]) for k in fields]

    def trajectories(parts):
        return lagrax.TrajectoryData(parts[0].ts, *joined(parts, ("q", "qdot", "u")))

    def accelerations(parts):
        return lagrax.AccelerationData(*joined(parts, ("q", "qdot", "qddot", "u")))

    tests = {
        name: lagrax.load_recording(path) for name, path in test_files(settings).items()
    }
    return Data(
        trajectories(windows),
        trajectories(validation),
        accelerations(samples),
        accelerations(validation_samples),
        tests,
    )


def models(settings: Settings) -> dict[str, tuple[Any, Any]]:
    """The untrained learned models, each `(trainable, frozen)`: `trainable` is
    the pair `(dynamics, force)` that training updates (`force` holds the
    model's `Actuation` of the torques); `frozen` the identified Lagrangian that
    the grey box adds to its residual, or `None`."""
    keys = jr.split(jr.key(settings.seed), 6)
    net: dict[str, Any] = dict(width=settings.width, depth=2)
    identified, friction = identified_model("2.0")
    residual = lagrax.MLPLagrangian(
        2, **net, init="default", angles=(0, 1), key=keys[2]
    )
    # A residual that starts at exactly zero: the grey box starts as model 2.0.
    residual = eqx.tree_at(
        lambda m: m.layers[-1].weight,
        residual,
        jnp.zeros_like(residual.layers[-1].weight),
    )
    return {
        "structured": (
            (
                lagrax.MechanicalLagrangian(2, **net, angles=(0, 1), key=keys[0]),
                lagrax.LearnedDissipation(2, **net, angles=(0, 1), key=keys[1])
                + lagrax.CoulombFriction(jnp.full(2, 0.05))
                + lagrax.Actuation(),
            ),
            None,
        ),
        "grey_box": (
            (residual, friction + lagrax.Actuation()),
            identified,
        ),
        "black_box": (
            (
                lagrax.NeuralODEBaseline(2, **net, angles=(0, 1), key=keys[4]),
                lagrax.Actuation(matrix=jnp.zeros((2, 2))),
            ),
            None,
        ),
    }


def assemble(trainable, frozen):
    """`(dynamics, force)` of a model from its trained part and its frozen
    identified Lagrangian (if any)."""
    dynamics, force = trainable
    return (dynamics if frozen is None else frozen + dynamics), force


def rollout_loss(frozen, window: int):
    """The rollout loss of windows of `window` samples (positions only, fixed-step
    Tsit5 at the sampling step) of a model with this frozen part."""

    def loss(trainable, batch):
        dynamics, force = assemble(trainable, frozen)
        return lagrax.rollout_loss(
            dynamics,
            batch,
            force=force,
            solver=diffrax.Tsit5(),
            dt0=DT,
            stepsize_controller=diffrax.ConstantStepSize(),
            max_steps=window,
            velocity_weight=0.0,
        )

    return loss


def torque_loss(trainable, batch):
    """Inverse dynamics: the model's torques against the measured ones."""
    return lagrax.inverse_dynamics_loss(trainable[0], batch, force=trainable[1])


def acceleration_loss(trainable, batch):
    """The black box's accelerations (with `B τ`) against finite differences."""
    return lagrax.acceleration_loss(trainable[0], batch, force=trainable[1])


def train(
    settings: Settings,
    data: Data,
    *,
    out: str | os.PathLike | None = None,
    progress: bool = True,
):
    """Train the learned models (pretraining, then rollouts), checkpointed in
    `out` if given. Returns `(trained, histories, results)`: per model its
    `(dynamics, force)`, its rollout-training `History` and training metrics."""
    trained, histories, results = {}, {}, {}
    common: dict[str, Any] = dict(seed=settings.seed, out=out, progress=progress)
    for name, (trainable, frozen) in models(settings).items():
        metrics = {}
        pretrain = {"structured": torque_loss, "black_box": acceleration_loss}
        if name in pretrain and settings.pretrain_steps:
            trainable, _, first = fit_checkpointed(
                trainable,
                pretrain[name],
                data.samples,
                data.validation_samples,
                optimizer=_adam(settings.lr, settings.pretrain_steps),
                steps=settings.pretrain_steps,
                batch_size=8 * settings.batch_size,
                name=f"{name}_pretrain",
                **common,
            )
            metrics = {f"pretrain_{k}": v for k, v in first.items()}
        trainable, histories[name], second = fit_checkpointed(
            trainable,
            rollout_loss(frozen, settings.window),
            data.windows,
            data.validation_windows,
            optimizer=_adam(settings.lr, settings.steps),
            steps=settings.steps,
            batch_size=settings.batch_size,
            name=name,
            **common,
        )
        metrics.update(second)
        metrics["train_seconds"] = second["train_seconds"] + metrics.pop(
            "pretrain_train_seconds", 0.0
        )
        trained[name] = assemble(trainable, frozen)
        results[name] = metrics
    return trained, histories, results


@functools.cache
def _adam(lr: float, steps: int) -> optax.GradientTransformation:
    return optax.adam(optax.cosine_decay_schedule(lr, steps))


def evaluate(data: Data, trained: dict[str, tuple[Any, Any]]):
    """The metric on every test run for the identified and the trained models.
    Returns `(rollout_rms, torque_rms)`, each by file, then model."""
    everything = {
        "identified_2.0": _with_actuation(identified_model("2.0")),
        "identified_1.0": _with_actuation(identified_model("1.0")),
        **trained,
    }
    rollout_rms, torque_rms = {}, {}
    for file_name, recording in data.tests.items():
        rollout_rms[file_name], torque_rms[file_name] = {}, {}
        samples = recording.accelerations(span=FD_SPAN)
        for name, (dynamics, force) in everything.items():
            rms = lagrax.horizon_rms(dynamics, recording, HORIZONS, force=force)
            rollout_rms[file_name][name] = {str(h): rms[h] for h in HORIZONS}
            torque = None
            if not isinstance(dynamics, lagrax.AbstractDynamics):
                loss = lagrax.inverse_dynamics_loss(dynamics, samples, force=force)
                torque = float(np.sqrt(loss))
            torque_rms[file_name][name] = torque
    return rollout_rms, torque_rms


def _with_actuation(model):
    lagrangian, friction = model
    return lagrangian, friction + lagrax.Actuation()


def table(rollout_rms, torque_rms) -> str:
    """The RMS angle errors by run, model and horizon, as a Markdown table."""
    header = ["run", "model", *(f"h = {h} s" for h in HORIZONS), "torque RMS (N·m)"]
    rows = []
    for file_name, by_model in rollout_rms.items():
        for name, rms in by_model.items():
            rows.append(
                [
                    file_name,
                    NAMES[name],
                    *(fmt(rms[str(h)], ".4f") for h in HORIZONS),
                    fmt(torque_rms[file_name][name], ".3f"),
                ]
            )
    return (
        "Measured double pendulum: RMS angle error (rad) of open-loop predictions "
        "under the measured torque, float64\n\n" + markdown_table(header, rows)
    )


def segments(dynamics, force, recording: lagrax.Recording, length: float = 0.5):
    """Open-loop predictions from the measured state every `length` seconds over
    `length` seconds, under the measured torque: `(ts, q)`, each segment's times
    and predicted angles, for plotting."""
    ts = np.asarray(recording.ts)
    local = np.arange(0.0, length + SAMPLE_DT / 2, SAMPLE_DT)
    starts = np.searchsorted(ts, np.arange(ts[0], ts[-1] - length, length))
    times = ts[starts][:, None] + local[None, :]
    u = np.stack(
        [np.interp(times, ts, np.asarray(recording.u)[:, j]) for j in range(2)], -1
    )
    predicted = lagrax.rollout(
        dynamics,
        recording.q[starts],
        recording.qdot[starts],
        jnp.asarray(local),
        force=force,
        u=jnp.asarray(u),
        rtol=1e-8,
        atol=1e-8,
        throw=False,
    )
    return times, np.asarray(predicted.q)


def figures(data: Data, trained, histories) -> tuple:
    """The plots, as `(filename, draw)` pairs: per test run, the measured angles
    against 0.5-s open-loop predictions of the identified model 2.0 and the
    learned models; and the training losses."""
    shown = {"identified_2.0": _with_actuation(identified_model("2.0")), **trained}
    plots = []
    for file_name, recording in data.tests.items():
        predictions = {
            name: segments(dynamics, force, recording)
            for name, (dynamics, force) in shown.items()
        }
        draw = functools.partial(_draw_angles, file_name, recording, predictions)
        plots.append((angles_figure(file_name), draw))
    return (*plots, loss_figure(histories, NAMES))


def _draw_angles(file_name, recording, predictions, fig) -> None:
    ts, q = np.asarray(recording.ts), np.asarray(recording.q)
    for j in range(2):
        ax = fig.add_subplot(2, 1, j + 1)
        ax.plot(ts, q[:, j], "k", lw=1, label="measured")
        for i, (name, (times, predicted)) in enumerate(predictions.items()):
            for k in range(times.shape[0]):
                label = NAMES[name] if k == 0 else None
                ax.plot(times[k], predicted[k, :, j], f"C{i}", lw=0.8, label=label)
        ax.set(xlabel="t (s)", ylabel=f"q{j + 1} (rad)")
        if j == 0:
            ax.set_title(f"{file_name}: 0.5-s predictions under the measured torque")
            ax.legend(fontsize=7, ncol=2)


def run(
    settings: Settings = Settings(),
    *,
    out: str | os.PathLike | None = None,
    progress: bool = True,
) -> Report:
    """Run the experiment: data, training, evaluation, report.

    **Arguments:**

    - `settings`: the `Settings`.
    - `out`: a folder for the training checkpoints (see `files_written`): an
        interrupted run resumes from them; `None` keeps nothing.
    - `progress`: show progress bars.

    **Returns:**

    A `Report` whose `results.json` holds `rollout_rms` and `torque_rms`.
    """
    require_x64()
    prepared = data(settings)
    trained, histories, results = train(settings, prepared, out=out, progress=progress)
    rollout_rms, torque_rms = evaluate(prepared, trained)
    return Report(
        experiment=NAME,
        settings=settings,
        models=results,
        paper=PAPER,
        table=table(rollout_rms, torque_rms),
        figures=figures(prepared, trained, histories),
        extra=dict(rollout_rms=rollout_rms, torque_rms=torque_rms),
    )
