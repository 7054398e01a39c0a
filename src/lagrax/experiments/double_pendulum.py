"""The double pendulum of Cranmer et al.: an LNN and a black-box baseline learn
q̈(q, q̇) from exact accelerations of states drawn from the paper's box
q ∈ [0, 2π)², q̇ ∈ [−10, 10)² (`states` "box") or, by default, from those of its
states with energy at most the largest potential energy, 29.4, the ones reachable
from rest (`states` "reachable") (m₁ = m₂ = l₁ = l₂ = 1, g = 9.8, absolute
angles). Evaluation as in the paper: the held-out L1 acceleration error, and the
energy discrepancy at t = 100 (`t1`; samples 0.1 apart) from 40 initial
conditions (`ics`) near rest (θ ~ U[0, 2π)², ω ~ U[0, 0.1)²), normalized by the
maximum potential energy 29.4. Both models see the angles as (cos q, sin q)
(`angles=(0, 1)`): a motion from rest at q ∈ [0, 2π) swings out of that box at
once, and a network of raw angles meets inputs it never trained on. Both are
rolled out with adaptive Tsit5 (rtol = atol = 1e-8, float64), as in the paper.

Beyond the paper, two settings add rows; both are off by default, so that the
default run is the paper's protocol alone:

- `solvers` (default tsit5): naming variational-midpoint or gauss-legendre as well
  also rolls the LNN out with lagrax's structure-preserving VariationalMidpoint
  (2nd order) or GaussLegendre(stages=2) (4th order) at dt = 0.01, saved every 0.1.
  (dt = 0.1 is too coarse for the fast swings of the second arm: even on the true
  system, VariationalMidpoint at dt = 0.1 runs away on 29 of the 40 rollouts,
  GaussLegendre on 28, and at dt = 0.05 on 9 and 6.)
- `rollout_steps` (default 0: off; the documented results used 300): a copy of the
  trained LNN is trained further with the rollout loss as well: the loss is the
  acceleration loss above + 100 × `lagrax.rollout_loss` on 256 trajectories from
  near rest (the evaluation's distribution, other draws), t ∈ [0, 2] sampled every
  0.1, cut into windows of 5 samples (0.4 time units) integrated from observed
  states by Tsit5 at a fixed dt = 0.05 (mean squared error of q and q̇). Each step
  takes 16 trajectories and 16 × 64 acceleration samples; Adam, learning rate
  `rollout_lr` decaying to 0 on a cosine. It is evaluated like the LNN, with Tsit5
  and (where `solvers` names it) GaussLegendre(stages=2). (The rollout loss alone,
  measured with seed 0, halves the test rollout error but doubles the acceleration
  error away from rest.)

The baseline trains and is evaluated in a second thread while the LNN (and its
copy) do in the first: each keeps one core busy, so on two cores a run takes about
the LNN's time rather than the sum, with the same numbers.

Extra `results.json` metrics per model: `energy_discrepancy` (Tsit5) and
`test_rollout_error` (that rollout loss on 32 held-out trajectories from near
rest, mean over the trajectories whose rollouts did not fail, counted in
`failed_test_rollouts`); with `solvers` naming them, for the LNN
`energy_discrepancy_variational_midpoint` and, for it and `lnn_rollout`,
`energy_discrepancy_gauss_legendre`; `failed_rollouts` (Tsit5) and
`failed_rollouts_SOLVER` (ints) count the initial conditions whose rollout failed
(a singular learned mass matrix or a solver failure); they are left out of the
means.
"""

import dataclasses
import functools
import os
from typing import Any, Literal, NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, Float

import lagrax

from ._common import (
    check_settings,
    clipped,
    comma_separated,
    fit_checkpointed,
    FLOAT32,
    FLOAT64,
    fmt,
    FORWARD_ONLY,
    HISTORY_BYTES,
    in_background,
    LOSS_FIGURE,
    loss_figure,
    markdown_table,
    Memory,
    mlp_parameters,
    output_files,
    parameters_memory,
    Report,
    require_x64,
    train as train_on_accelerations,
)


NAME = "double-pendulum"
# The sampling step of every trajectory: the evaluation's and the rollout loss's.
SAMPLING_STEP = 0.1
SYMPLECTIC_DT = 0.01
TEST_SIZE = 10_000
# The rollout fine-tuning stage (see the module docstring).
ROLLOUT_TRAJECTORIES = 256
ROLLOUT_TEST_TRAJECTORIES = 32
ROLLOUT_HORIZON = 2.0
ROLLOUT_WINDOW = 5
ROLLOUT_DT = 0.05
ROLLOUT_BATCH = 16
ROLLOUT_BLOCK = 64
ROLLOUT_WEIGHT = 100.0
PAPER = {
    "lnn": {"energy_discrepancy": 0.0043, "test_l1_acceleration_error": 0.069},
    "baseline": {"energy_discrepancy": 0.074, "test_l1_acceleration_error": 0.074},
    "training_samples": 600_000 * 512,
}
LABELS = {"lnn": "LNN", "lnn_rollout": "LNN + rollout loss", "baseline": "Baseline"}


class Solver(NamedTuple):
    """A solver of the energy evaluation."""

    label: str
    """Its name in the table and the plot."""
    suffix: str
    """Of its metrics' names: `energy_discrepancy` + suffix, `failed_rollouts` +
    suffix."""
    options: dict[str, Any]
    """Of `lagrax.rollout`."""
    models: tuple[str, ...]
    """The models it rolls out, where they are trained."""


# The solvers `Settings.solvers` chooses among.
SOLVERS = {
    "tsit5": Solver(
        "Tsit5", "", dict(rtol=1e-8, atol=1e-8), ("lnn", "lnn_rollout", "baseline")
    ),
    "variational-midpoint": Solver(
        f"VariationalMidpoint, dt {SYMPLECTIC_DT:g}",
        "_variational_midpoint",
        dict(solver=lagrax.VariationalMidpoint(), dt0=SYMPLECTIC_DT),
        ("lnn",),
    ),
    "gauss-legendre": Solver(
        f"GaussLegendre(stages=2), dt {SYMPLECTIC_DT:g}",
        "_gauss_legendre",
        dict(solver=lagrax.GaussLegendre(stages=2), dt0=SYMPLECTIC_DT),
        ("lnn", "lnn_rollout"),
    ),
}
THETA_FIGURE = "theta1.png"
ENERGY_FIGURE = "energy_error.png"
FIGURES = (THETA_FIGURE, ENERGY_FIGURE, LOSS_FIGURE)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The settings of the double-pendulum experiment (the command line's options,
    `--name-with-dashes`). Checked on construction: a `ValueError` (or a
    `TypeError`) names a bad one."""

    steps: int = 20_000
    """Training steps per model."""
    batch_size: int = 256
    """Minibatch size."""
    seed: int = 0
    """PRNG seed of the data, the initializations and the minibatches."""
    width: int = 128
    """Hidden units per layer of both models (3 hidden layers)."""
    train_size: int = 100_000
    """Training states."""
    ics: int = 40
    """Initial conditions of the energy evaluation."""
    t1: float = 100.0
    """Horizon of the energy evaluation, at least one sampling step (0.1)."""
    lr: float = 3e-3
    """Peak learning rate of the one-cycle schedule."""
    clip: float = 0.1
    """Clip gradients to this global norm (0 turns it off): without it Adam's steps
    flip the sign of the learned mass matrix in places and training stalls."""
    definiteness: float = 0.1
    """Margin of the LNN's mass-matrix definiteness penalty (0 turns it off; see
    `lagrax.acceleration_loss`): without it some seeds settle on an indefinite mass
    matrix."""
    states: Literal["reachable", "box"] = "reachable"
    """Training and test states: "box" is the paper's box; "reachable" keeps the box
    states with energy at most the largest potential energy, those reachable from
    rest, where the evaluation trajectories run."""
    rollout_steps: int = 0
    """Steps of further training of a copy of the LNN on the acceleration loss +
    100 × the rollout loss, beyond the paper (0 skips it; the documented results
    used 300)."""
    rollout_lr: float = 3e-4
    """Initial learning rate of that stage, decaying to 0."""
    solvers: str = "tsit5"
    """Comma-separated solvers of the energy evaluation, among tsit5 (adaptive, the
    paper's, for every model; required), variational-midpoint and
    gauss-legendre (the LNNs also with these structure-preserving solvers at
    dt = 0.01, beyond the paper)."""

    def __post_init__(self):
        check_settings(
            self,
            positive=("steps", "batch_size", "width", "train_size", "ics", "t1")
            + ("lr", "rollout_lr"),
            choices={"states": ("reachable", "box")},
        )
        if "tsit5" not in comma_separated(self.solvers, tuple(SOLVERS), "solvers"):
            raise ValueError(
                "`solvers` must include tsit5, the paper's evaluation (of every "
                f"model), got {self.solvers!r}."
            )
        if self.batch_size > self.train_size:
            raise ValueError(
                f"`batch_size` ({self.batch_size}) must be at most `train_size` "
                f"({self.train_size})."
            )
        if self.rollout_steps and self.train_size < ROLLOUT_TRAJECTORIES:
            raise ValueError(
                f"`train_size` must be at least {ROLLOUT_TRAJECTORIES} (a block of "
                "accelerations for each rollout trajectory) when `rollout_steps` is "
                f"not 0, got {self.train_size}."
            )
        if self.t1 < SAMPLING_STEP:
            raise ValueError(
                f"`t1` must be at least the sampling step {SAMPLING_STEP}, got "
                f"{self.t1}."
            )


@dataclasses.dataclass(frozen=True)
class Data:
    """The experiment's data, float32 for training, float64 for evaluation.

    **Fields:**

    - `system`: the true double pendulum.
    - `train`, `test`: acceleration samples (float32).
    - `rollout_train`, `rollout_test`: trajectories from near rest for the rollout
        loss (float32).
    - `q0`, `qdot0`: the initial conditions of the energy evaluation (float64).
    - `ts`: its save times, 0 to `t1` every `SAMPLING_STEP`.
    """

    system: lagrax.systems.DoublePendulum
    train: lagrax.AccelerationData
    test: lagrax.AccelerationData
    rollout_train: lagrax.TrajectoryData
    rollout_test: lagrax.TrajectoryData
    q0: Float[Array, "ics 2"]
    qdot0: Float[Array, "ics 2"]
    ts: Float[Array, " times"]


def files_written(settings: Settings) -> tuple[str, ...]:
    """The names of the files that `run` and `Report.save` write into `out`: a
    checkpoint per trained model, `results.json` and the figures."""
    names = ["lnn", "baseline"] + (["lnn_rollout"] if settings.rollout_steps else [])
    return output_files(names, FIGURES)


def memory_estimate(settings: Settings) -> tuple[Memory, ...]:
    """What a run holds in memory at once, from below: the training states with
    their accelerations (drawn in float64), the three models and their Adam
    states, a training step's activations (the LNN's gradient and its two
    forward-mode products per sample), the evaluation's trajectories (float64:
    those of each of `evaluations(settings)`, their energy errors and the truth's)
    and the training histories. `lagrax reproduce` refuses settings whose estimate
    this machine cannot hold."""
    samples = settings.t1 / SAMPLING_STEP + 1
    state = 2 * 2  # (q, q̇) of 2 degrees of freedom
    return (
        Memory(
            "the training data",
            ("train_size",),
            settings.train_size * 3 * 2 * FLOAT64,
        ),
        parameters_memory(3 * mlp_parameters(3 * 2, settings.width, 3, 2), FLOAT32),
        Memory(
            "a training step's activations",
            ("batch_size", "width"),
            settings.batch_size * settings.width * 3 * (1 + 2) * FLOAT32,
        ),
        Memory(
            "the evaluation's trajectories",
            ("ics", "t1", "solvers"),
            settings.ics
            * samples
            * (len(evaluations(settings)) * (state + 1) + state)
            * FLOAT64,
        ),
        Memory(
            "the training histories",
            ("steps", "rollout_steps"),
            (2 * settings.steps + settings.rollout_steps) * HISTORY_BYTES,
        ),
    )


def _keys(settings: Settings):
    return jr.split(jr.key(settings.seed), 6)


def near_rest(num: int, key) -> tuple[Array, Array]:
    """States near rest, the evaluation's: θ ~ U[0, 2π)², ω ~ U[0, 0.1)²."""
    return lagrax.sample_states(
        num,
        q_box=(jnp.zeros(2), 2 * jnp.pi * jnp.ones(2)),
        qdot_box=(jnp.zeros(2), 0.1 * jnp.ones(2)),
        key=key,
        dtype=jnp.float64,
    )


def accelerations(
    system: lagrax.systems.DoublePendulum,
    num: int,
    key,
    states: Literal["reachable", "box"] = "reachable",
) -> lagrax.AccelerationData:
    """`num` exact accelerations (float32) of states drawn from the paper's box
    (`states` "box") or of its states reachable from rest ("reachable")."""
    box: dict[str, Any] = dict(
        q_box=(jnp.zeros(2), 2 * jnp.pi * jnp.ones(2)),
        qdot_box=(-10 * jnp.ones(2), 10 * jnp.ones(2)),
    )
    if states == "reachable":
        box.update(max_energy=system.max_potential_energy, lagrangian=system)
    q, qdot = lagrax.sample_states(num, **box, key=key, dtype=jnp.float64)
    return lagrax.cast(lagrax.acceleration_data(system, q, qdot), jnp.float32)


def data(settings: Settings) -> Data:
    """Draw the experiment's data from `settings.seed`."""
    system = lagrax.systems.DoublePendulum()
    keys = _keys(settings)

    # Both sets of trajectories in one solve: one compilation (the same numbers).
    train_key, test_key = jr.split(keys[5])
    train_states = near_rest(ROLLOUT_TRAJECTORIES, train_key)
    test_states = near_rest(ROLLOUT_TEST_TRAJECTORIES, test_key)
    samples = int(round(ROLLOUT_HORIZON / SAMPLING_STEP)) + 1
    q0s, qdot0s = (jnp.concatenate(pair) for pair in zip(train_states, test_states))
    trajectories = lagrax.trajectory_data(
        system,
        q0s,
        qdot0s,
        SAMPLING_STEP * jnp.arange(float(samples)),
    )
    trajectories = lagrax.cast(trajectories, jnp.float32)
    total = ROLLOUT_TRAJECTORIES + ROLLOUT_TEST_TRAJECTORIES
    train_part = jnp.arange(ROLLOUT_TRAJECTORIES)
    test_part = jnp.arange(ROLLOUT_TRAJECTORIES, total)
    q0, qdot0 = near_rest(settings.ics, keys[4])
    samples = int(round(settings.t1 / SAMPLING_STEP)) + 1
    return Data(
        system=system,
        train=accelerations(system, settings.train_size, keys[0], settings.states),
        test=accelerations(system, TEST_SIZE, keys[1], settings.states),
        rollout_train=trajectories[train_part],
        rollout_test=trajectories[test_part],
        q0=q0,
        qdot0=qdot0,
        ts=jnp.linspace(0.0, settings.t1, samples),
    )


def models(settings: Settings) -> dict[str, Any]:
    """The untrained LNN and baseline (float32), initialized from `settings.seed`."""
    keys = _keys(settings)
    options: dict[str, Any] = dict(
        width=settings.width, depth=3, angles=(0, 1), dtype=jnp.float32
    )
    return {
        "lnn": lagrax.MLPLagrangian(2, **options, key=keys[2]),
        "baseline": lagrax.NeuralODEBaseline(2, **options, key=keys[3]),
    }


# The rollout loss of the fine-tuning stage and of the test rollout error.
window_loss = functools.partial(
    lagrax.rollout_loss,
    window=ROLLOUT_WINDOW,
    dt0=ROLLOUT_DT,
    stepsize_controller=diffrax.ConstantStepSize(),
    max_steps=int(round((ROLLOUT_WINDOW - 1) * SAMPLING_STEP / ROLLOUT_DT)) + 1,
)


def train(
    settings: Settings,
    data: Data,
    *,
    names: tuple[str, ...] = ("lnn", "baseline"),
    out: str | os.PathLike | None = None,
    progress: bool = True,
):
    """Train the models of `names` ("lnn", "baseline" or both) on accelerations,
    then, with the LNN and unless `settings.rollout_steps` is 0, a copy of the LNN
    on the joint loss (`fine_tune`), checkpointed in `out` if given. Returns
    `(trained, histories, results)`: the models, the `lagrax.History` of those
    trained on accelerations, and each model's training metrics."""
    trained, histories, results = {}, {}, {}
    for name, model in models(settings).items():
        if name not in names:
            continue
        trained[name], histories[name], results[name] = train_on_accelerations(
            model,
            data.train,
            data.test,
            name=name,
            steps=settings.steps,
            batch_size=settings.batch_size,
            lr=settings.lr,
            clip=settings.clip,
            definiteness=settings.definiteness,
            seed=settings.seed,
            out=out,
            progress=progress,
        )
    if "lnn" in names and settings.rollout_steps:
        model, metrics = fine_tune(
            settings, trained["lnn"], data, out=out, progress=progress
        )
        trained["lnn_rollout"] = model
        error = float(lagrax.acceleration_loss(model, data.test))
        results["lnn_rollout"] = dict(test_l1_acceleration_error=error, **metrics)
    return trained, histories, results


def joint_loss(model, batch: lagrax.MixedData, *, definiteness: float):
    """The L1 acceleration error (with the definiteness penalty) +
    ROLLOUT_WEIGHT × the rollout loss, on a `MixedData` minibatch."""
    accelerations = lagrax.acceleration_loss(
        model, batch.accelerations, definiteness=definiteness
    )
    return accelerations + ROLLOUT_WEIGHT * window_loss(model, batch.trajectories)


def fine_tune(
    settings: Settings,
    lnn,
    data: Data,
    *,
    out: str | os.PathLike | None = None,
    progress=True,
):
    """The LNN trained further on `joint_loss`, each step on ROLLOUT_BATCH
    trajectories with ROLLOUT_BLOCK accelerations each. Returns `(model,
    metrics)`."""
    model, _, metrics = fit_checkpointed(
        lnn,
        _joint_loss(settings.definiteness),
        _mixed(data.rollout_train, data.train),
        _mixed(data.rollout_test, data.test),
        optimizer=_cosine_adam(
            settings.rollout_lr, settings.rollout_steps, settings.clip
        ),
        steps=settings.rollout_steps,
        batch_size=ROLLOUT_BATCH,
        seed=settings.seed,
        name="lnn_rollout",
        out=out,
        progress=progress,
    )
    return model, metrics


# Built once per arguments, as `_common.one_cycle_adam` is.


@functools.cache
def _joint_loss(definiteness: float):
    return functools.partial(joint_loss, definiteness=definiteness)


@functools.cache
def _cosine_adam(lr: float, steps: int, clip: float) -> optax.GradientTransformation:
    return clipped(optax.adam(optax.cosine_decay_schedule(lr, steps)), clip)


def _mixed(trajectories, accelerations) -> lagrax.MixedData:
    block = min(ROLLOUT_BLOCK, len(accelerations) // len(trajectories))
    return lagrax.MixedData(trajectories, accelerations, block=block)


def evaluations(settings: Settings) -> tuple[tuple[str, str], ...]:
    """The energy discrepancies a run of `settings` reports, as `(model, solver)`
    pairs of `SOLVERS`, in the order of the table: each model that it trains, under
    each solver of `settings.solvers` that rolls that model out."""
    names = ("lnn", "lnn_rollout") if settings.rollout_steps else ("lnn",)
    chosen = comma_separated(settings.solvers, tuple(SOLVERS), "solvers")
    return tuple(
        (name, solver)
        for name in (*names, "baseline")
        for solver in SOLVERS
        if solver in chosen and name in SOLVERS[solver].models
    )


def evaluate(settings: Settings, data: Data, trained: dict[str, Any]):
    """The test rollout error of each model of `trained` and its energy
    discrepancies of `evaluations(settings)` (the paper's evaluation, in float64).
    Returns `(metrics, curves)`: per model its metrics, and per `(model, solver)`
    the energy error of each rollout over time, which rollouts did not fail, and
    the rollouts."""
    metrics = {name: rollout_errors(model, data) for name, model in trained.items()}
    # A budget of 100 steps per sample: a learned model that needs more is
    # counted as a failed rollout rather than stalling the run.
    max_steps = 100 * (data.ts.shape[0] - 1)
    curves = {}
    for name, solver in evaluations(settings):
        if name not in trained:
            continue
        suffix = SOLVERS[solver].suffix
        predicted = lagrax.rollout(
            lagrax.cast(trained[name], jnp.float64),
            data.q0,
            data.qdot0,
            data.ts,
            throw=False,
            max_steps=max_steps,
            adjoint=FORWARD_ONLY,
            **SOLVERS[solver].options,
        )
        scale = data.system.max_potential_energy
        error = np.asarray(lagrax.energy_error(data.system, predicted, scale=scale))
        ok = np.isfinite(error).all(axis=1)
        final = np.where(ok, error[:, -1], np.nan)  # failed anywhere: failed
        mean, failed = _mean_of_finite(final)
        metrics[name]["energy_discrepancy" + suffix] = mean
        metrics[name]["failed_rollouts" + suffix] = failed
        curves[(name, solver)] = (error, ok, predicted)
    return metrics, curves


def rollout_errors(model, data: Data) -> dict[str, float | int | None]:
    """`window_loss` on each held-out trajectory from near rest: the mean over
    those whose rollout did not fail, and how many failed (a singular learned mass
    matrix on the way spoils only its own trajectory)."""
    test = data.rollout_test

    def one(q, qdot):
        return window_loss(model, lagrax.TrajectoryData(test.ts, q[None], qdot[None]))

    mean, failed = _mean_of_finite(np.asarray(jax.vmap(one)(test.q, test.qdot)))
    return dict(test_rollout_error=mean, failed_test_rollouts=failed)


def _mean_of_finite(values: np.ndarray) -> tuple[float | None, int]:
    """The mean of the finite entries (None if there are none) and how many are
    not finite: the failed rollouts."""
    ok = np.isfinite(values)
    return (float(np.mean(values[ok])) if ok.any() else None), int((~ok).sum())


def run(
    settings: Settings = Settings(),
    *,
    out: str | os.PathLike | None = None,
    progress: bool = True,
) -> Report:
    """Run the experiment: data, training, evaluation, report.

    The baseline trains and is evaluated in a second thread (`in_background`)
    while the LNN does in this one; the numbers are those of one after the other.

    **Arguments:**

    - `settings`: the `Settings`.
    - `out`: a folder for the training checkpoints, `NAME.ckpt` (see
        `files_written`): an interrupted run resumes from them; `None` keeps
        nothing. `lagrax.fit` refuses a checkpoint written with other settings.
    - `progress`: show progress bars. (Each model's training is announced to the
        `lagrax.experiments` logger.)

    **Returns:**

    A `Report`; `report.save(out)` writes `results.json` and the figures.
    """
    require_x64()
    prepared = data(settings)
    baseline = in_background(
        train_and_evaluate,
        settings,
        prepared,
        names=("baseline",),
        out=out,
        progress=progress,
    )
    histories, results, curves = train_and_evaluate(
        settings, prepared, names=("lnn",), out=out, progress=progress
    )
    for merged, part in zip((histories, results, curves), baseline.result()):
        merged.update(part)
    return Report(
        experiment=NAME,
        settings=settings,
        models=results,
        paper=PAPER,
        table=table(settings, prepared.system, results),
        figures=figures(prepared, curves, histories),
    )


def train_and_evaluate(
    settings: Settings,
    data: Data,
    *,
    names: tuple[str, ...],
    out: str | os.PathLike | None = None,
    progress: bool = True,
):
    """`train` the models of `names`, then `evaluate` them (and the LNN's copy, if
    trained). Returns `(histories, results, curves)`: each model's training
    history, its metrics (of training and evaluation) and its curves."""
    trained, histories, results = train(
        settings, data, names=names, out=out, progress=progress
    )
    metrics, curves = evaluate(settings, data, trained)
    for name in results:
        results[name].update(metrics[name])
    return histories, results, curves


def table(settings: Settings, system: lagrax.systems.DoublePendulum, results) -> str:
    """The results against the paper's, as a Markdown table with a caption."""
    rows = []
    for name, solver in evaluations(settings):
        if name not in results:
            continue
        paper = PAPER.get(name, {})
        metric = "energy_discrepancy" + SOLVERS[solver].suffix
        row = [
            f"{LABELS[name]} ({SOLVERS[solver].label})",
            _percent(results[name][metric]),
            f"{100 * paper[metric]:g}%" if metric in paper else "—",
        ]
        if solver == "tsit5":  # one row per model carries its errors
            row += [
                fmt(results[name]["test_l1_acceleration_error"]),
                fmt(paper.get("test_l1_acceleration_error")),
                fmt(results[name]["test_rollout_error"]),
            ]
        rows.append(row + [""] * (6 - len(row)))
    header = [
        "model (solver)",
        "energy discrepancy",
        "paper",
        "test L1 q̈ error",
        "paper",
        "test rollout error",
    ]
    return _caption(settings, system) + "\n\n" + markdown_table(header, rows)


def _caption(settings: Settings, system: lagrax.systems.DoublePendulum) -> str:
    samples = settings.steps * settings.batch_size
    states = {
        "box": "the paper's box q ∈ [0, 2π)², q̇ ∈ [−10, 10)²",
        "reachable": f"box states with energy ≤ {system.max_potential_energy:g} "
        "(reachable from rest)",
    }[settings.states]
    caption = (
        f"Double pendulum, trained and tested on {states}; "
        f"{settings.steps} steps × batch {settings.batch_size} = {samples:.3g} "
        f"training samples per model ({samples / PAPER['training_samples']:.2%} of "
        "the paper's), float32 training, float64 evaluation"
    )
    if settings.rollout_steps:
        caption += (
            f"; LNN + rollout loss: {settings.rollout_steps} more steps, each on "
            f"{ROLLOUT_BATCH} trajectories and {ROLLOUT_BATCH * ROLLOUT_BLOCK} "
            "accelerations"
        )
    return caption + (
        ". Test rollout error: mean squared (q, q̇) error over windows of "
        f"{(ROLLOUT_WINDOW - 1) * SAMPLING_STEP:g} time units from near rest."
    )


def _percent(value) -> str:
    """An energy discrepancy as a percentage; past 1000% the rollout has diverged."""
    if value is not None and value > 10:
        return f"{value:.1e} (diverged)"
    return fmt(value, ".2%")


_STYLES = {"lnn": "C0--", "lnn_rollout": "C2-.", "baseline": "C3:"}


def figures(data: Data, curves, histories) -> tuple:
    """The plots, as `(filename, draw)` pairs: θ₁ of the first initial condition
    against the truth, the mean energy error over time, the training losses."""
    truth = lagrax.rollout(  # of the first initial condition, the one drawn
        data.system,
        data.q0[:1],
        data.qdot0[:1],
        data.ts,
        rtol=1e-10,
        atol=1e-10,
        max_steps=1_000_000,
        adjoint=FORWARD_ONLY,
    )
    tsit5 = {
        name: predicted
        for (name, solver), (_, _, predicted) in curves.items()
        if solver == "tsit5"
    }
    labels = {"lnn": "LNN", "baseline": "baseline"}
    return (
        (THETA_FIGURE, functools.partial(_draw_theta, data.ts, truth, tsit5)),
        (ENERGY_FIGURE, functools.partial(_draw_energy, data, curves)),
        loss_figure(histories, labels),
    )


def _draw_theta(ts, truth, predictions, fig) -> None:
    ts = np.asarray(ts)
    # The whole horizon, and its first 10 time units, where the models part from
    # the chaotic truth.
    zoom = ts <= min(10.0, ts[-1])
    for column, keep in enumerate((np.ones_like(zoom), zoom)):
        ax = fig.add_subplot(1, 2, column + 1)
        ax.plot(ts[keep], np.asarray(truth.q[0, keep, 0]), "k", label="truth")
        for name, predicted in predictions.items():
            ax.plot(
                ts[keep],
                np.asarray(predicted.q[0, keep, 0]),
                _STYLES[name],
                label=LABELS[name],
            )
        ax.set(xlabel="t", ylabel="θ₁", title=f"t ∈ [0, {ts[keep][-1]:g}]")
    fig.suptitle("Double pendulum, first initial condition (Tsit5)")
    fig.axes[-1].legend()


def _draw_energy(data: Data, curves, fig) -> None:
    ts = np.asarray(data.ts)
    ax = fig.add_subplot()
    for (name, solver), (error, ok, _) in curves.items():
        if ok.any():
            ax.semilogy(  # t = 0 left out: the error is 0 there
                ts[1:],
                np.mean(error[ok, 1:], axis=0),
                label=f"{LABELS[name]}, {SOLVERS[solver].label}",
            )
    ax.set(
        xlabel="t",
        ylabel=f"mean |ΔE| / {data.system.max_potential_energy:g}",
        title="Energy error of learned dynamics (true energy)",
    )
    ax.legend()
