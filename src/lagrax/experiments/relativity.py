"""The relativistic particle of Cranmer et al., L = (1 − q̇²)^(−1/2) − 1 + g·q with
g = 1 (c = m = 1): its canonical momentum p = q̇ (1 − q̇²)^(−3/2) is not q̇.

Three models learn the dynamics from exact accelerations (and, for the Hamiltonian
networks, velocities) of states with |q| < 10 and |q̇| < 0.95, with a loss
(`norm`: "l1" the paper's, "l2" the squared error) weighted by 1 + γ,
γ = (1 − q̇²)^(−1/2), as the paper (`weighting` "gamma"; "none" for none),
gradients clipped to global norm `clip`: an LNN, which needs
no momenta; a Hamiltonian network given p := q̇, which cannot represent the dynamics
(Hamilton's equations force q̇ = ∂H/∂p, so H = ½p² + V(q) and q̈ cannot depend on
q̇); and a Hamiltonian network given the canonical momentum, which can. Each is
rolled out from rest at q = 0 for t ∈ [0, 10] (`t1`; Tsit5, rtol = atol = 1e-8,
float64) and compared with the true motion.

The LNN sees q / `q_scale` (`lagrax.Rescaled`; the paper fed q / 10).

Extra `results.json` metrics per model: `test_weighted_l1` (the held-out L1 error
weighted by 1 + γ, the paper's measure, beside the plain
`test_l1_acceleration_error`), `rollout_error` (mean over time of
‖x̂ − x‖ / (‖x̂‖ + ‖x‖) with x = (q, q̇)), `final_velocity`, `true_final_velocity`
and `final_velocity_error` (|q̂̇(t₁) / q̇(t₁) − 1|).
"""

import dataclasses
import functools
import math
import os
from typing import Any, Literal

import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float

import lagrax

from ._common import (
    check_settings,
    FLOAT32,
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


NAME = "relativity"
TEST_SIZE = 2_000
ROLLOUT_SAMPLES = 201
PAPER = {
    "lnn": {"learns": True, "test_weighted_l1": 7.9e-4},
    "hnn_noncanonical": {"learns": False},
    "hnn_canonical": {"learns": True},
}
NAMES = {
    "lnn": "LNN",
    "hnn_noncanonical": "HNN, p := q̇",
    "hnn_canonical": "HNN, canonical p",
}
VELOCITY_FIGURE = "velocity.png"
FIGURES = (VELOCITY_FIGURE, LOSS_FIGURE)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The settings of the relativity experiment (the command line's options,
    `--name-with-dashes`). Checked on construction: a `ValueError` (or a
    `TypeError`) names a bad one."""

    steps: int = 120_000
    """Training steps of the LNN (120,000 × 128 is 10% of the paper's samples)."""
    hnn_steps: int = 10_000
    """Training steps of each Hamiltonian network, at most `steps`: enough for
    the canonical one to learn and for the other to plateau."""
    batch_size: int = 128
    """Minibatch size. At the same samples, 128 is more accurate than 256 (twice
    the updates; measured: weighted error 0.00044–0.00059 over five model keys
    against 0.00058–0.00098 over three)."""
    seed: int = 0
    """PRNG seed of the data, the initializations and the minibatches."""
    width: int = 128
    """Hidden units per layer of the three models (2 hidden layers). 128 trains
    the LNN three times as fast as 256 and as accurately (measured at peak
    learning rate 1e-2, batch 256, two model keys: weighted error 0.00070 and
    0.00098 against 0.00098 and 0.00083)."""
    train_size: int = 20_000
    """Training states."""
    t1: float = 10.0
    """Horizon of the rollout from rest."""
    lr: float = 1e-2
    """Peak learning rate of the one-cycle schedule. The LNN's error falls with it
    up to 1e-2 (measured, batch 256, one model key: 0.00153 at 3e-3, 0.00093 at
    6e-3, 0.00070 at 1e-2, 0.00093 at 2e-2)."""
    clip: float = 0.1
    """Clip gradients to this global norm (0 turns it off): without it the LNN's
    training stalls or diverges for some seeds and step counts."""
    weighting: Literal["gamma", "none"] = "gamma"
    """Sample weights of the loss: "gamma" is the paper's 1 + γ, "none" none."""
    norm: Literal["l1", "l2"] = "l1"
    """The training loss: "l1" the paper's mean absolute error, "l2" the mean
    squared error (the evaluation reports the L1 errors either way)."""
    q_scale: float = 1.0
    """The LNN sees q / q_scale (the paper: 10)."""

    def __post_init__(self):
        check_settings(
            self,
            positive=("steps", "batch_size", "width", "train_size", "t1", "lr")
            + ("q_scale", "hnn_steps"),
            choices={"weighting": ("gamma", "none"), "norm": ("l1", "l2")},
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

    - `system`: the true particle, `RelativisticParticle(g=1.0)`.
    - `train`, `test`: acceleration samples (float32).
    - `ts`: the save times of the rollout from rest (float64).
    """

    system: lagrax.systems.RelativisticParticle
    train: lagrax.AccelerationData
    test: lagrax.AccelerationData
    ts: Float[Array, " times"]


def files_written(settings: Settings) -> tuple[str, ...]:
    """The names of the files that `run` and `Report.save` write into `out`: a
    checkpoint per model, `results.json` and the figures."""
    return output_files(list(NAMES), FIGURES)


def memory_estimate(settings: Settings) -> tuple[Memory, ...]:
    """What a run holds in memory at once, from below: the training states with
    their accelerations (drawn in float64), the three models and their Adam
    states, a training step's activations and the training histories (the
    rollouts have a fixed number of samples). `lagrax reproduce` refuses
    settings whose estimate this machine cannot hold."""
    hnn_steps = min(settings.hnn_steps, settings.steps)
    return (
        Memory("the training data", ("train_size",), settings.train_size * 3 * FLOAT64),
        parameters_memory(3 * mlp_parameters(2, settings.width, 2), FLOAT32),
        Memory(
            "a training step's activations",
            ("batch_size", "width"),
            settings.batch_size * settings.width * 2 * 2 * FLOAT32,
        ),
        Memory(
            "the training histories",
            ("steps", "hnn_steps"),
            (settings.steps + 2 * hnn_steps) * HISTORY_BYTES,
        ),
    )


def _keys(settings: Settings):
    return jr.split(jr.key(settings.seed), 6)


def data(settings: Settings) -> Data:
    """Draw the experiment's data from `settings.seed`."""
    system = lagrax.systems.RelativisticParticle(g=1.0)
    keys = _keys(settings)
    # q must cover the rollout (q(10) ≈ 6): L depends on q, and a network only
    # knows it where it was trained.
    box: dict[str, Any] = dict(
        q_box=(-10 * jnp.ones(1), 10 * jnp.ones(1)),
        qdot_box=(-0.95 * jnp.ones(1), 0.95 * jnp.ones(1)),
    )

    def accelerations(num, key):
        states = lagrax.sample_states(num, **box, key=key, dtype=jnp.float64)
        return lagrax.cast(lagrax.acceleration_data(system, *states), jnp.float32)

    return Data(
        system=system,
        train=accelerations(settings.train_size, keys[0]),
        test=accelerations(TEST_SIZE, keys[1]),
        ts=jnp.linspace(0.0, settings.t1, ROLLOUT_SAMPLES),
    )


@functools.cache
def _momentum(system: lagrax.systems.RelativisticParticle):
    """The canonical momentum of `system`, one function per system: a model holds
    it as a static field, so a new function would compile everything anew."""
    return functools.partial(lagrax.momentum, system)


def lorentz_weight(q: Float[Array, " 1"], qdot: Float[Array, " 1"]) -> Array:
    """The paper's sample weight `1 + γ`, `γ = (1 − q̇²)^(−1/2)`."""
    return 1 + 1 / jnp.sqrt(1 - jnp.sum(qdot**2))


def models(settings: Settings, system: lagrax.systems.RelativisticParticle):
    """The untrained LNN and Hamiltonian networks (float32), initialized from
    `settings.seed`; the canonical one is given `system`'s momentum."""
    keys = _keys(settings)
    options: dict[str, Any] = dict(width=settings.width, depth=2, dtype=jnp.float32)
    canonical = _momentum(system)
    lnn = lagrax.MLPLagrangian(1, **options, key=keys[2])
    if settings.q_scale != 1:
        lnn = lagrax.Rescaled(lnn, q_scale=settings.q_scale)
    return {
        "lnn": lnn,
        "hnn_noncanonical": lagrax.HamiltonianNN(1, **options, key=keys[3]),
        "hnn_canonical": lagrax.HamiltonianNN(
            1, **options, momentum=canonical, key=keys[4]
        ),
    }


def training_steps(settings: Settings) -> dict[str, int]:
    """The training steps of each model: `steps` for the LNN, `hnn_steps` (at
    most `steps`) for the Hamiltonian networks."""
    hnn = min(settings.hnn_steps, settings.steps)
    return {"lnn": settings.steps, "hnn_noncanonical": hnn, "hnn_canonical": hnn}


def train(
    settings: Settings,
    data: Data,
    *,
    out: str | os.PathLike | None = None,
    progress: bool = True,
):
    """Train the three models on accelerations, checkpointed in `out` if given.
    Returns `(trained, histories, results)`: the models, their `lagrax.History`
    and their training metrics."""
    trained, histories, results = train_each(
        models(settings, data.system),
        data.train,
        data.test,
        settings,
        clip=settings.clip or None,
        weight=lorentz_weight if settings.weighting == "gamma" else None,
        norm=settings.norm,
        steps=training_steps(settings),
        out=out,
        progress=progress,
    )
    for name, model in trained.items():
        weighted = lagrax.acceleration_loss(model, data.test, weight=lorentz_weight)
        results[name]["test_weighted_l1"] = float(weighted)
        results[name]["training_steps"] = training_steps(settings)[name]
    return trained, histories, results


def evaluate(data: Data, trained: dict[str, Any]):
    """Roll each model out from rest (float64) and compare with the truth. Returns
    `(metrics, truth, predictions)`: per model its metrics, and the trajectories."""
    start = jnp.zeros((1, 1))
    truth = lagrax.rollout(
        data.system, start, start, data.ts, rtol=1e-10, atol=1e-10, adjoint=FORWARD_ONLY
    )
    metrics, predictions = {}, {}
    for name, model in trained.items():
        predicted = lagrax.rollout(
            lagrax.cast(model, jnp.float64),
            start,
            start,
            data.ts,
            rtol=1e-8,
            atol=1e-8,
            throw=False,
            max_steps=20_000 * math.ceil(float(data.ts[-1]) / 10),  # grows with t1
            adjoint=FORWARD_ONLY,
        )
        predictions[name] = predicted
        error = np.asarray(lagrax.rollout_error(predicted, truth))
        final, true_final = float(predicted.qdot[0, -1, 0]), float(truth.qdot[0, -1, 0])
        metrics[name] = dict(
            rollout_error=float(np.mean(error)) if np.isfinite(error).all() else None,
            final_velocity=final,
            true_final_velocity=true_final,
            final_velocity_error=abs(final / true_final - 1),
        )
    return metrics, truth, predictions


def table(results) -> str:
    """The results against the paper's, as a Markdown table with a caption."""
    rows = []
    for name, r in results.items():
        paper = PAPER[name]
        verdict = "learns" if paper["learns"] else "fails"
        if "test_weighted_l1" in paper:
            verdict += f" (weighted L1 {paper['test_weighted_l1']:g})"
        rows.append(
            [
                NAMES[name],
                fmt(r["test_l1_acceleration_error"]),
                fmt(r["test_weighted_l1"]),
                fmt(r["rollout_error"]),
                fmt(r["final_velocity"], ".4f"),
                fmt(r["final_velocity_error"], ".2%"),
                verdict,
            ]
        )
    true_final = next(iter(results.values()))["true_final_velocity"]
    header = [
        "model",
        "test L1 q̈ error",
        "weighted by 1 + γ",
        "rollout error",
        f"q̇(t₁) (truth {true_final:.4f})",
        "its error",
        "paper",
    ]
    return "Relativistic particle (g = 1), float32 training, float64 rollouts\n\n" + (
        markdown_table(header, rows)
    )


def figures(data: Data, truth, predictions, histories) -> tuple:
    """The plots, as `(filename, draw)` pairs: the velocity from rest of each model
    against the truth, and the training losses."""
    return (
        (VELOCITY_FIGURE, functools.partial(_draw_velocity, data, truth, predictions)),
        loss_figure(histories, NAMES),
    )


def _draw_velocity(data: Data, truth, predictions, fig) -> None:
    ts = np.asarray(data.ts)
    ax = fig.add_subplot()
    ax.plot(ts, np.asarray(truth.qdot[0, :, 0]), "k", label="truth")
    for i, (name, predicted) in enumerate(predictions.items()):
        ax.plot(ts, np.asarray(predicted.qdot[0, :, 0]), f"C{i}--", label=NAMES[name])
    ax.axhline(1.0, color="gray", lw=0.5)
    ax.set(xlabel="t", ylabel="q̇", title="Relativistic particle from rest (c = 1)")
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
    trained, histories, results = train(settings, prepared, out=out, progress=progress)
    metrics, truth, predictions = evaluate(prepared, trained)
    for name in results:
        results[name].update(metrics[name])
    return Report(
        experiment=NAME,
        settings=settings,
        models=results,
        paper=PAPER,
        table=table(results),
        figures=figures(prepared, truth, predictions, histories),
    )
