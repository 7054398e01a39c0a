"""The 1D wave equation of Cranmer et al. (Section 6): a Lagrangian Graph Network
learns the discrete wave on a ring and conserves its energy; the same parameters
then run on a ring four times longer.

The system is `lagrax.systems.Wave1D(num_nodes, length=num_nodes)`: unit grid
spacing and wave speed, so one period (a pulse going once round the ring) lasts
`num_nodes` time units. Two models learn it from exact accelerations of random
smooth periodic fields (Fourier modes 1–6 with amplitudes N(0, 1)/k, velocities a
fifth of that), float64: the L1 loss and Adam on a one-cycle schedule, then a
full-batch finish of `finish_steps` L-BFGS iterations (`optax.lbfgs`) on the mean
squared error of `finish_size` training states, which pins the learned wave speed
far closer than minibatches can:

- `lgn`: a `GraphLagrangian` on the ring, translation-invariant, with position-only
  edges (densities of `φ̇ᵢ` and of `φ_r − φ_s`: a diagonal mass matrix, so the
  learned wave speed is the same at every wavenumber), 2 hidden layers of `width`
  softplus units;
- `baseline`: a `MessagePassingBaseline` of the same width on the same graph, which
  predicts `φ̈` directly.

(The dense `MLPLagrangian` of the double pendulum would need 100 Hessian-vector
products and a 100 × 100 factorization per state; it is left out.)

Evaluation: a right-moving Gaussian pulse (width `pulse_width` grid cells) for
`periods` periods, on the training ring and, zero-shot, on a ring of
`4 · num_nodes` nodes at the same spacing. The truth is `Wave1D` under Tsit5
(rtol = atol = 1e-10); the LGN runs under `GaussLegendre` (dt = 0.5), the baseline
under Tsit5 (rtol = atol = 1e-8). Metrics, per model and ring: `l2_error` (the
largest over time of ‖φ̂(t) − φ(t)‖ / ‖φ(t)‖) and `energy_error` (the largest
over time of |E(φ̂(t)) − E(φ̂(0))| / E(φ̂(0)), with `E` the true energy); and, with
the finish, `finish_seconds` and `finish_loss` (its mean squared error over its
last tenth).
"""

import dataclasses
import functools
import os
from typing import Any

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, Float

import lagrax

from ._common import (
    check_settings,
    fit_checkpointed,
    FLOAT64,
    fmt,
    FORWARD_ONLY,
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
    train_each,
)


NAME = "wave"
MODES = 6
TEST_SIZE = 512
SAVES_PER_PERIOD = 40
ZERO_SHOT = 4
GAUSS_LEGENDRE_DT = 0.5
NAMES = {"lgn": "LGN", "baseline": "message passing"}
# The finish: full-batch L-BFGS on the mean squared error, which pins the learned
# wave speed far closer than Adam's minibatches (one object each: `lagrax.fit`
# compiles once per loss and optimizer).
FINISH = "_finish"
FINISH_LOSS = functools.partial(lagrax.acceleration_loss, norm="l2")
FINISH_OPTIMIZER = optax.lbfgs()
PAPER = {"lgn": {"conserves_energy": True}}
SPACETIME_FIGURE = "spacetime.png"
ENERGY_FIGURE = "energy_error.png"
FIGURES = (SPACETIME_FIGURE, ENERGY_FIGURE, LOSS_FIGURE)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The settings of the wave experiment (the command line's options,
    `--name-with-dashes`). Checked on construction: a `ValueError` (or a
    `TypeError`) names a bad one."""

    steps: int = 3_000
    """Training steps per model."""
    batch_size: int = 32
    """Minibatch size."""
    seed: int = 0
    """PRNG seed of the data, the initializations and the minibatches."""
    width: int = 32
    """Hidden units per layer of both models (2 hidden layers)."""
    train_size: int = 4_096
    """Training states."""
    num_nodes: int = 100
    """Grid points of the training ring."""
    periods: float = 3.0
    """Evaluation horizon, in periods of the ring."""
    pulse_width: float = 8.0
    """Width of the test pulse, in grid cells."""
    lr: float = 3e-3
    """Peak learning rate of the one-cycle schedule."""
    finish_steps: int = 400
    """Iterations of the full-batch L-BFGS finish after Adam (0: none)."""
    finish_size: int = 256
    """Training states in the finish's batch (the first of the training set)."""

    def __post_init__(self):
        check_settings(
            self,
            positive=(
                "steps",
                "batch_size",
                "width",
                "train_size",
                "periods",
                "pulse_width",
                "lr",
                "finish_size",
            ),
            choices={},
        )
        if self.finish_size > self.train_size:
            raise ValueError(
                f"`finish_size` ({self.finish_size}) must be at most `train_size` "
                f"({self.train_size})."
            )
        if self.num_nodes < 3 * MODES:
            raise ValueError(
                f"`num_nodes` must be at least {3 * MODES} to resolve the training "
                f"fields' {MODES} modes, got {self.num_nodes}."
            )
        if self.batch_size > self.train_size:
            raise ValueError(
                f"`batch_size` ({self.batch_size}) must be at most `train_size` "
                f"({self.train_size})."
            )


@dataclasses.dataclass(frozen=True)
class Data:
    """The experiment's data.

    **Fields:**

    - `system`: the true wave on the training ring.
    - `train`, `test`: acceleration samples (float64).
    """

    system: lagrax.systems.Wave1D
    train: lagrax.AccelerationData
    test: lagrax.AccelerationData


def files_written(settings: Settings) -> tuple[str, ...]:
    """The names of the files that `run` and `Report.save` write into `out`: a
    checkpoint per model and training stage, `results.json` and the figures."""
    finished = [f"{name}{FINISH}" for name in NAMES] if settings.finish_steps else []
    return output_files([*NAMES, *finished], FIGURES)


def memory_estimate(settings: Settings) -> tuple[Memory, ...]:
    """What a run holds in memory at once, from below (float64): the training
    fields with their accelerations, the two models and their Adam states, a
    training step's activations (an edge and a node per grid point, at the larger
    of the minibatch and the finish's batch), the evaluation's trajectories on the
    larger ring (the truth's and each model's) and the training histories.
    `lagrax reproduce` refuses settings whose estimate this machine cannot
    hold."""
    batch = max(settings.batch_size, settings.finish_size * bool(settings.finish_steps))
    samples = SAVES_PER_PERIOD * settings.periods + 1
    return (
        Memory(
            "the training data",
            ("train_size", "num_nodes"),
            settings.train_size * settings.num_nodes * 3 * FLOAT64,
        ),
        parameters_memory(2 * 2 * mlp_parameters(2, settings.width, 2), FLOAT64),
        Memory(
            "a training step's activations",
            ("batch_size", "num_nodes", "width"),
            batch * 2 * settings.num_nodes * settings.width * 2 * FLOAT64,
        ),
        Memory(
            "the evaluation's trajectories",
            ("num_nodes", "periods"),
            3 * samples * ZERO_SHOT * settings.num_nodes * 2 * FLOAT64,
        ),
        Memory(
            "the training histories",
            ("steps", "finish_steps"),
            2 * (settings.steps + settings.finish_steps) * HISTORY_BYTES,
        ),
    )


def ring(num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """`(senders, receivers)` of the ring `i → i + 1 (mod num_nodes)`."""
    nodes = np.arange(num_nodes)
    return nodes, (nodes + 1) % num_nodes


def wave(num_nodes: int) -> lagrax.systems.Wave1D:
    """The wave on a ring of `num_nodes` nodes at unit spacing and speed."""
    return lagrax.systems.Wave1D(num_nodes, length=float(num_nodes))


def smooth_fields(
    system: lagrax.systems.Wave1D, num: int, key
) -> Float[Array, "num nodes"]:
    """`num` random periodic fields: Fourier modes 1 to 6 on the ring, with
    independent N(0, 1/k²) cosine and sine amplitudes."""
    k = jnp.arange(1, MODES + 1, dtype=float)
    amplitudes = jr.normal(key, (2, num, MODES)) / k[None, None, :]
    phase = 2 * jnp.pi * k[:, None] * system.grid[None, :] / system.length
    return amplitudes[0] @ jnp.cos(phase) + amplitudes[1] @ jnp.sin(phase)


def _keys(settings: Settings):
    return jr.split(jr.key(settings.seed), 6)


def data(settings: Settings) -> Data:
    """Draw the experiment's data from `settings.seed`."""
    system = wave(settings.num_nodes)
    keys = _keys(settings)

    def accelerations(num, key):
        q_key, v_key = jr.split(key)
        q = smooth_fields(system, num, q_key)
        qdot = 0.2 * smooth_fields(system, num, v_key)
        return lagrax.acceleration_data(system, q, qdot)

    return Data(
        system=system,
        train=accelerations(settings.train_size, keys[0]),
        test=accelerations(TEST_SIZE, keys[1]),
    )


def models(settings: Settings) -> dict:
    """The untrained LGN and baseline on the training ring, from `settings.seed`."""
    keys = _keys(settings)
    graph = dict(num_nodes=settings.num_nodes, node_dim=1, translation_invariant=True)
    senders, receivers = ring(settings.num_nodes)
    options: dict[str, Any] = dict(width=settings.width, depth=2, **graph)
    return {
        "lgn": lagrax.GraphLagrangian(
            senders, receivers, **options, edge_velocities=False, key=keys[2]
        ),
        "baseline": lagrax.MessagePassingBaseline(
            senders, receivers, **options, key=keys[3]
        ),
    }


def train(
    settings: Settings,
    data: Data,
    *,
    out: str | os.PathLike | None = None,
    progress: bool = True,
):
    """Train both models on accelerations, checkpointed in `out` if given: Adam on
    minibatches, then the L-BFGS finish. Returns `(trained, histories, results)`
    (the histories and `final_train_loss` are Adam's; `finish_seconds` and
    `finish_loss`, its mean squared error over its last tenth, are the finish's)."""
    trained, histories, results = train_each(
        models(settings), data.train, data.test, settings, out=out, progress=progress
    )
    if not settings.finish_steps:
        return trained, histories, results
    batch = data.train[: settings.finish_size]
    for name, model in trained.items():
        model, _, metrics = fit_checkpointed(
            model,
            FINISH_LOSS,
            batch,
            data.test,
            optimizer=FINISH_OPTIMIZER,
            steps=settings.finish_steps,
            batch_size=settings.finish_size,
            seed=settings.seed,
            name=name + FINISH,
            out=out,
            progress=progress,
        )
        trained[name] = model
        results[name].update(
            test_l1_acceleration_error=float(
                lagrax.acceleration_loss(model, data.test)
            ),
            skipped_steps=results[name]["skipped_steps"] + metrics["skipped_steps"],
            finish_seconds=metrics["train_seconds"],
            finish_loss=metrics["final_train_loss"],
        )
    return trained, histories, results


def pulse(
    system: lagrax.systems.Wave1D, width: float
) -> tuple[Float[Array, " nodes"], Float[Array, " nodes"]]:
    """A Gaussian pulse of `width` cells at the middle of the ring, moving right:
    `φ̇ = −c φ'`."""
    x = system.grid - system.length / 2
    q = jnp.exp(-((x / width) ** 2))
    return q, system.wave_speed * 2 * x / width**2 * q


def _on_ring(model, num_nodes: int):
    return model.with_graph(*ring(num_nodes), num_nodes=num_nodes)


def evaluate(settings: Settings, trained: dict):
    """Roll the models and the truth out from the pulse on both rings. Returns
    `(metrics, runs)`: per model, `{num_nodes: metrics}`; and per ring the save
    times, the truth and each model's trajectory."""
    metrics = {name: {} for name in trained}
    runs = {}
    for num_nodes in (settings.num_nodes, ZERO_SHOT * settings.num_nodes):
        system = wave(num_nodes)
        q0, qdot0 = (x[None] for x in pulse(system, settings.pulse_width))
        samples = round(SAVES_PER_PERIOD * settings.periods) + 1
        ts = jnp.linspace(0.0, settings.periods * system.length, samples)
        max_steps = 8 * samples * num_nodes
        truth = lagrax.rollout(
            system,
            q0,
            qdot0,
            ts,
            rtol=1e-10,
            atol=1e-10,
            max_steps=max_steps,
            adjoint=FORWARD_ONLY,
        )
        predictions = {}
        for name, model in trained.items():
            model = _on_ring(model, num_nodes)
            if name == "lgn":
                solver: dict[str, Any] = dict(
                    solver=lagrax.GaussLegendre(), dt0=GAUSS_LEGENDRE_DT
                )
            else:
                solver = dict(rtol=1e-8, atol=1e-8)
            predicted = lagrax.rollout(
                model,
                q0,
                qdot0,
                ts,
                **solver,
                max_steps=max_steps,
                throw=False,
                adjoint=FORWARD_ONLY,
            )
            predictions[name] = predicted
            metrics[name][str(num_nodes)] = _errors(system, predicted, truth)
        runs[num_nodes] = (ts, truth, predictions)
    return metrics, runs


def _errors(system, predicted, truth) -> dict:
    l2 = jnp.linalg.norm(predicted.q[0] - truth.q[0], axis=1) / jnp.linalg.norm(
        truth.q[0], axis=1
    )
    # The scale from the true initial state: a rollout that failed in its first
    # step has no finite state to take it from.
    energy = lagrax.energy(system, truth.q[0, 0], truth.qdot[0, 0])
    drift = lagrax.energy_error(system, predicted, scale=float(energy))[0]
    return dict(l2_error=_finite_max(l2), energy_error=_finite_max(drift))


def _finite_max(x) -> float | None:
    x = np.asarray(x)
    return float(np.max(x)) if np.isfinite(x).all() else None


def table(settings: Settings, results: dict) -> str:
    """The results as a Markdown table with a caption."""
    rings = (settings.num_nodes, ZERO_SHOT * settings.num_nodes)
    rows = []
    for name, r in results.items():
        row = [NAMES[name], fmt(r["test_l1_acceleration_error"])]
        for n in rings:
            row += [fmt(r[str(n)]["l2_error"]), fmt(r[str(n)]["energy_error"])]
        rows.append(row)
    header = ["model", "test L1 φ̈ error"]
    for n in rings:
        header += [f"L2 error, N={n}", f"energy error, N={n}"]
    caption = (
        f"1D wave, trained at N={settings.num_nodes}, evaluated over "
        f"{settings.periods:g} periods (N={rings[1]}: zero-shot), float64. "
        "Paper: the LGN conserves energy (no number given)."
    )
    return caption + "\n\n" + markdown_table(header, rows)


def figures(settings: Settings, runs, histories) -> tuple:
    """The plots: space-time images of φ on the training ring (truth and each
    model), the energy error over time on both rings, and the training losses."""
    return (
        (SPACETIME_FIGURE, functools.partial(_draw_spacetime, settings, runs)),
        (ENERGY_FIGURE, functools.partial(_draw_energy, runs)),
        loss_figure(histories, NAMES),
    )


def _draw_spacetime(settings: Settings, runs, fig) -> None:
    ts, truth, predictions = runs[settings.num_nodes]
    panels = {"truth": truth} | {NAMES[n]: p for n, p in predictions.items()}
    extent = (0, settings.num_nodes, float(ts[-1]), 0)
    for i, (label, traj) in enumerate(panels.items()):
        ax = fig.add_subplot(1, len(panels), i + 1)
        field = np.nan_to_num(np.asarray(traj.q[0]))
        ax.imshow(field, aspect="auto", extent=extent, cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set(title=label, xlabel="x (cells)", ylabel="t" if i == 0 else None)


def _draw_energy(runs, fig) -> None:
    ax = fig.add_subplot()
    for num_nodes, (ts, truth, predictions) in runs.items():
        system = wave(num_nodes)
        energy = lagrax.energy(system, truth.q[0, 0], truth.qdot[0, 0])
        for i, (name, predicted) in enumerate(predictions.items()):
            error = lagrax.energy_error(system, predicted, scale=float(energy))[0]
            style = "-" if num_nodes == min(runs) else "--"
            ax.semilogy(
                np.asarray(ts) / system.length,
                np.asarray(error) + 1e-16,
                f"C{i}{style}",
                label=f"{NAMES[name]}, N={num_nodes}",
            )
    ax.set(
        xlabel="t / period",
        ylabel="|E(t) − E(0)| / E(0) (true energy)",
        title="Energy error of the predicted wave",
    )
    ax.legend()


def run(
    settings: Settings = Settings(),
    *,
    out: str | os.PathLike | None = None,
    progress: bool = True,
) -> Report:
    """Run the experiment: data, training, evaluation, report.

    **Arguments:**

    - `settings`: the `Settings`.
    - `out`: a folder for the training checkpoints (`NAME.ckpt`, see
        `files_written`): an interrupted run resumes from them; `None` keeps
        nothing.
    - `progress`: show progress bars.

    **Returns:**

    A `Report`; `report.save(out)` writes `results.json` and the figures.
    """
    require_x64()
    prepared = data(settings)
    trained, histories, results = train(settings, prepared, out=out, progress=progress)
    metrics, runs = evaluate(settings, trained)
    for name in results:
        results[name].update(metrics[name])
    return Report(
        experiment=NAME,
        settings=settings,
        models=results,
        paper=PAPER,
        table=table(settings, results),
        figures=figures(settings, runs, histories),
    )
