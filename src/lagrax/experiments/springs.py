"""A mass–spring chain in the plane, the many-body benchmark of the graph-network
literature: a Lagrangian Graph Network learns it on a few masses and runs,
zero-shot, on four times as many.

The system is `lagrax.systems.SpringNetwork.chain(num_masses, stiffness=10)`:
unit masses, unit rest lengths, no gravity, free ends. Two models learn it from
exact accelerations at states around rest (positions displaced by N(0, 0.1²) per
coordinate, velocities N(0, 0.5²), the chain turned by a uniform random angle),
with the L1 loss (for the LGN plus the definiteness penalty on each node's
diagonal block of its mass matrix, margin `definiteness`) and Adam on a
one-cycle schedule, float64:

- `lgn`: a `GraphLagrangian` on the chain (`node_dim = 2`), translation-invariant,
  with position-only edges (densities of `ẋᵢ` and of `x_r − x_s`: a per-node
  kinetic energy, so a block-diagonal mass matrix that the penalty covers whole),
  2 hidden layers of `width` softplus units;
- `baseline`: a `MessagePassingBaseline` of the same width on the same graph.

Evaluation: from rest positions displaced and set moving as the training states
(seeded; along the x axis, unturned), for `t1` time units (the fastest normal
mode has period ≈ 1), on the training chain and, zero-shot, on a chain of `4 ·
num_masses` masses. The truth is the system under Tsit5 (rtol = atol = 1e-10);
the LGN runs under `GaussLegendre` (dt = 0.01), the baseline under Tsit5 (rtol =
atol = 1e-8). Metrics, per model and chain: `rollout_error` (the mean over time
of ‖x̂ − x‖ / (‖x̂‖ + ‖x‖), with `x` the displacement from rest and the
velocity) and `energy_error` (the largest over time of |E(x̂(t)) − E(x̂(0))| /
E(x̂(0)), with `E` the true energy).
"""

import dataclasses
import functools
import math
import os
from typing import Any

import jax.numpy as jnp
import jax.random as jr
import numpy as np

import lagrax

from ._common import (
    check_settings,
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


NAME = "springs"
STIFFNESS = 10.0
POSITION_NOISE = 0.1
VELOCITY_NOISE = 0.5
TEST_SIZE = 512
SAMPLES = 201
ZERO_SHOT = 4
GAUSS_LEGENDRE_DT = 0.01
NAMES = {"lgn": "LGN", "baseline": "message passing"}
PAPER: dict = {}
ENERGY_FIGURE = "energy_error.png"
FIGURES = (ENERGY_FIGURE, LOSS_FIGURE)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The settings of the springs experiment (the command line's options,
    `--name-with-dashes`). Checked on construction: a `ValueError` (or a
    `TypeError`) names a bad one."""

    steps: int = 30_000
    """Training steps per model."""
    batch_size: int = 32
    """Minibatch size."""
    seed: int = 0
    """PRNG seed of the data, the initializations and the minibatches."""
    width: int = 64
    """Hidden units per layer of both models (2 hidden layers)."""
    train_size: int = 4_096
    """Training states."""
    num_masses: int = 8
    """Masses of the training chain."""
    t1: float = 10.0
    """Horizon of the evaluation rollouts."""
    lr: float = 3e-3
    """Peak learning rate of the one-cycle schedule."""
    definiteness: float = 0.5
    """Margin of the LGN's mass-matrix penalty on each node's 2 × 2 diagonal block,
    which is the whole (block-diagonal) mass matrix here (0 turns it off; see
    `lagrax.acceleration_loss`)."""

    def __post_init__(self):
        check_settings(
            self,
            positive=("steps", "batch_size", "width", "train_size", "t1", "lr"),
            choices={},
        )
        if self.num_masses < 2:
            raise ValueError(f"`num_masses` must be at least 2, got {self.num_masses}.")
        if self.batch_size > self.train_size:
            raise ValueError(
                f"`batch_size` ({self.batch_size}) must be at most `train_size` "
                f"({self.train_size})."
            )


def files_written(settings: Settings) -> tuple[str, ...]:
    """The names of the files that `run` and `Report.save` write into `out`."""
    return output_files(list(NAMES), FIGURES)


def memory_estimate(settings: Settings) -> tuple[Memory, ...]:
    """What a run holds in memory at once, from below (float64): the training
    states with their accelerations, the two models and their Adam states, a
    training step's activations (a node and an edge per mass), the evaluation's
    trajectories on the longer chain (the truth's and each model's) and the
    training histories. `lagrax reproduce` refuses settings whose estimate this
    machine cannot hold."""
    coordinates = settings.num_masses * 2
    nodes_and_edges = 2 * settings.num_masses
    return (
        Memory(
            "the training data",
            ("train_size", "num_masses"),
            settings.train_size * coordinates * 3 * FLOAT64,
        ),
        parameters_memory(2 * 2 * mlp_parameters(4, settings.width, 2), FLOAT64),
        Memory(
            "a training step's activations",
            ("batch_size", "num_masses", "width"),
            settings.batch_size * nodes_and_edges * settings.width * 2 * FLOAT64,
        ),
        Memory(
            "the evaluation's trajectories",
            ("num_masses",),
            3 * SAMPLES * ZERO_SHOT * coordinates * 2 * FLOAT64,
        ),
        Memory(
            "the training histories", ("steps",), 2 * settings.steps * HISTORY_BYTES
        ),
    )


def chain(num_masses: int) -> lagrax.systems.SpringNetwork:
    """The chain of `num_masses` unit masses on springs of stiffness 10."""
    return lagrax.systems.SpringNetwork.chain(num_masses, stiffness=STIFFNESS)


def states(system: lagrax.systems.SpringNetwork, num: int, key, *, turn: bool = True):
    """`num` states around rest: displaced positions, random velocities and, with
    `turn`, the whole chain turned about its centroid by a uniform random angle (a
    free chain turns as it moves: a model that saw one orientation only meets new
    ones within a rollout)."""
    q_key, v_key, angle_key = jr.split(key, 3)
    shape = (num, system.num_nodes, 2)
    rest = system.rest_positions().reshape(-1, 2)
    x = rest - jnp.mean(rest, axis=0) + POSITION_NOISE * jr.normal(q_key, shape)
    v = VELOCITY_NOISE * jr.normal(v_key, shape)
    angle = jr.uniform(angle_key, (num,), maxval=2 * jnp.pi if turn else 0.0)
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    rotation = jnp.stack([jnp.stack([cos, -sin], -1), jnp.stack([sin, cos], -1)], -2)
    x = jnp.einsum("nab,nib->nia", rotation, x) + jnp.mean(rest, axis=0)
    v = jnp.einsum("nab,nib->nia", rotation, v)
    return x.reshape(num, -1), v.reshape(num, -1)


def _keys(settings: Settings):
    return jr.split(jr.key(settings.seed), 6)


def data(settings: Settings):
    """`(system, train, test)`: the true chain and acceleration samples."""
    system = chain(settings.num_masses)
    keys = _keys(settings)
    train = lagrax.acceleration_data(
        system, *states(system, settings.train_size, keys[0])
    )
    test = lagrax.acceleration_data(system, *states(system, TEST_SIZE, keys[1]))
    return system, train, test


def models(settings: Settings) -> dict:
    """The untrained LGN and baseline on the training chain."""
    keys = _keys(settings)
    nodes = np.arange(settings.num_masses - 1)
    options: dict[str, Any] = dict(
        num_nodes=settings.num_masses,
        node_dim=2,
        width=settings.width,
        depth=2,
        translation_invariant=True,
    )
    return {
        "lgn": lagrax.GraphLagrangian(
            nodes, nodes + 1, **options, edge_velocities=False, key=keys[2]
        ),
        "baseline": lagrax.MessagePassingBaseline(
            nodes, nodes + 1, **options, key=keys[3]
        ),
    }


def train(settings: Settings, train_data, test_data, *, out=None, progress=True):
    """Train both models on accelerations, checkpointed in `out` if given. Returns
    `(trained, histories, results)`."""
    return train_each(
        models(settings),
        train_data,
        test_data,
        settings,
        definiteness=settings.definiteness,
        out=out,
        progress=progress,
    )


def evaluate(settings: Settings, trained: dict):
    """Roll the models and the truth out on both chains. Returns `(metrics, runs)`:
    per model `{num_masses: metrics}`, and per chain the times and each model's
    energy error over time."""
    metrics = {name: {} for name in trained}
    runs = {}
    ts = jnp.linspace(0.0, settings.t1, SAMPLES)
    for num_masses in (settings.num_masses, ZERO_SHOT * settings.num_masses):
        system = chain(num_masses)
        q0, qdot0 = states(system, 1, _keys(settings)[4], turn=False)
        # The step budget grows with the horizon, so that a long --t1 is not
        # refused only after training.
        max_steps = 100 * SAMPLES * math.ceil(settings.t1 / 10)
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
        nodes = np.arange(num_masses - 1)
        energies = {}
        for name, model in trained.items():
            model = model.with_graph(nodes, nodes + 1, num_nodes=num_masses)
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
            # The scale from the true initial state: a rollout that failed in its
            # first step has no finite state to take it from.
            energy = lagrax.energy(system, q0[0], qdot0[0])
            drift = lagrax.energy_error(system, predicted, scale=float(energy))[0]
            energies[name] = drift
            rest = system.rest_positions()
            error = lagrax.rollout_error(
                _displaced(predicted, rest), _displaced(truth, rest)
            )
            metrics[name][str(num_masses)] = dict(
                rollout_error=_finite(jnp.mean(error)),
                energy_error=_finite(jnp.max(drift)),
            )
        runs[num_masses] = (ts, energies)
    return metrics, runs


def _displaced(trajectories: lagrax.TrajectoryData, rest) -> lagrax.TrajectoryData:
    return lagrax.TrajectoryData(
        trajectories.ts, trajectories.q - rest[None, None, :], trajectories.qdot
    )


def _finite(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def table(settings: Settings, results: dict) -> str:
    """The results as a Markdown table with a caption."""
    chains = (settings.num_masses, ZERO_SHOT * settings.num_masses)
    rows = []
    for name, r in results.items():
        row = [NAMES[name], fmt(r["test_l1_acceleration_error"])]
        for n in chains:
            row += [fmt(r[str(n)]["rollout_error"]), fmt(r[str(n)]["energy_error"])]
        rows.append(row)
    header = ["model", "test L1 q̈ error"]
    for n in chains:
        header += [f"rollout error, {n} masses", f"energy error, {n} masses"]
    caption = (
        f"Spring chain, trained on {settings.num_masses} masses, evaluated over "
        f"t ∈ [0, {settings.t1:g}] ({chains[1]} masses: zero-shot), float64."
    )
    return caption + "\n\n" + markdown_table(header, rows)


def _draw_energy(runs, fig) -> None:
    ax = fig.add_subplot()
    for num_masses, (ts, energies) in runs.items():
        for i, (name, drift) in enumerate(energies.items()):
            style = "-" if num_masses == min(runs) else "--"
            ax.semilogy(
                np.asarray(ts),
                np.asarray(drift) + 1e-16,
                f"C{i}{style}",
                label=f"{NAMES[name]}, {num_masses} masses",
            )
    ax.set(
        xlabel="t",
        ylabel="|E(t) − E(0)| / E(0) (true energy)",
        title="Energy error of the predicted chain",
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
    _, train_data, test_data = data(settings)
    trained, histories, results = train(
        settings, train_data, test_data, out=out, progress=progress
    )
    metrics, runs = evaluate(settings, trained)
    for name in results:
        results[name].update(metrics[name])
    return Report(
        experiment=NAME,
        settings=settings,
        models=results,
        paper=PAPER,
        table=table(settings, results),
        figures=(
            (ENERGY_FIGURE, functools.partial(_draw_energy, runs)),
            loss_figure(histories, NAMES),
        ),
    )
