"""The double pendulum of Cranmer et al.: an LNN and a black-box baseline learn
q̈(q, q̇) from exact accelerations of states drawn from the paper's box q ∈ [0, 2π)²,
q̇ ∈ [−10, 10)² (`--states box`) or, by default, from those of its states with energy
≤ 29.4, the ones reachable from rest (`--states reachable`) (m₁ = m₂ = l₁ = l₂ = 1,
g = 9.8, absolute angles). Evaluation as in the paper: the
held-out L1 acceleration error, and the energy discrepancy at t = 100 (1000 steps of
0.1) from 40 initial conditions near rest (θ ~ U[0, 2π)², ω ~ U[0, 0.1)²),
normalized by the maximum potential energy 29.4. Both models see the angles as
(cos q, sin q) (`angles=(0, 1)`): a motion from rest at q ∈ [0, 2π) swings out of
that box at once, and a network of raw angles meets inputs it never trained on.
Both are rolled out with adaptive Tsit5 (rtol = atol = 1e-8, float64); the LNN also
with lagrax's structure-preserving VariationalMidpoint (2nd order) and
GaussLegendre(stages=2) (4th order) at dt = 0.01, saved every 0.1. (dt = 0.1 is
too coarse for the fast swings of the second arm: even on the true system,
VariationalMidpoint at dt = 0.1 runs away on 29 of the 40 rollouts, GaussLegendre
on 28, and at dt = 0.05 on 9 and 6.)

Extra `results.json` metrics per model: `energy_discrepancy` (Tsit5), and for the
LNN `energy_discrepancy_variational_midpoint`, `energy_discrepancy_gauss_legendre`;
`failed_rollouts` (Tsit5), `failed_rollouts_variational_midpoint` and
`failed_rollouts_gauss_legendre` (ints) count the initial conditions whose rollout
failed (a singular learned mass matrix or a solver failure); they are left out of
the means.
"""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .. import systems
from .._lagrangian import MLPLagrangian
from .._mechanics import energy
from .._solver.gauss_legendre import GaussLegendre
from .._solver.variational import VariationalMidpoint
from .._train.baselines import NeuralODEBaseline
from .._train.data import acceleration_data, AccelerationData, sample_states
from .._train.rollout import rollout
from .common import (
    fmt,
    FORWARD_ONLY,
    initial_states,
    loss_figure,
    markdown_table,
    non_negative_float,
    to_float64,
    train,
)


HELP = "double pendulum: LNN vs black-box baseline, energy discrepancy at t = 100"
DEFAULT_STEPS = 20_000
DEFAULT_BATCH = 256
ENERGY_SCALE = 29.4
SYMPLECTIC_DT = 0.01
PAPER = {
    "lnn": {"energy_discrepancy": 0.0043, "test_l1_acceleration_error": 0.069},
    "baseline": {"energy_discrepancy": 0.074, "test_l1_acceleration_error": 0.074},
    "training_samples": 600_000 * 512,
}


def add_arguments(parser) -> None:
    parser.add_argument("--width", type=int, default=128, help="hidden units (128)")
    parser.add_argument("--train-size", type=int, default=100_000, help="states (1e5)")
    parser.add_argument("--ics", type=int, default=40, help="initial conditions (40)")
    parser.add_argument("--t1", type=float, default=100.0, help="rollout horizon (100)")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    parser.add_argument(
        "--clip",
        type=non_negative_float,
        default=0.1,
        help="clip gradients to this global norm (0.1; 0 turns it off): without it "
        "Adam's steps flip the sign of the learned mass matrix in places and training "
        "stalls",
    )
    parser.add_argument(
        "--definiteness",
        type=non_negative_float,
        default=0.1,
        help="margin of the LNN's mass-matrix definiteness penalty (0.1; 0 turns it "
        "off; see lagrax.acceleration_loss): without it some seeds settle on an "
        "indefinite mass matrix",
    )
    parser.add_argument(
        "--states",
        choices=("reachable", "box"),
        default="reachable",
        help="training and test states: 'box' is the paper's box; 'reachable' "
        "(default) keeps the box states with energy ≤ 29.4, those reachable from "
        "rest, where the evaluation trajectories run",
    )


def run(args):
    system = systems.DoublePendulum()
    keys = jr.split(jr.key(args.seed), 6)
    box = dict(
        q_box=(jnp.zeros(2), 2 * jnp.pi * jnp.ones(2)),
        qdot_box=(-10 * jnp.ones(2), 10 * jnp.ones(2)),
    )
    if args.states == "reachable":
        box.update(max_energy=ENERGY_SCALE, lagrangian=system)
    train_data = _float32(
        acceleration_data(
            system,
            *sample_states(args.train_size, **box, key=keys[0], dtype=jnp.float64),
        )
    )
    test_data = _float32(
        acceleration_data(
            system, *sample_states(10_000, **box, key=keys[1], dtype=jnp.float64)
        )
    )

    models = {
        "lnn": MLPLagrangian(
            2, width=args.width, depth=3, angles=(0, 1), dtype=jnp.float32, key=keys[2]
        ),
        "baseline": NeuralODEBaseline(
            2, width=args.width, depth=3, angles=(0, 1), dtype=jnp.float32, key=keys[3]
        ),
    }
    results, trained, histories = {}, {}, {}
    for name, model in models.items():
        trained[name], histories[name], results[name] = train(
            model, train_data, test_data, args=args, name=name
        )

    # The paper's evaluation: 40 states near rest, t ∈ [0, 100] in steps of 0.1.
    q0, qdot0 = sample_states(
        args.ics,
        q_box=(jnp.zeros(2), 2 * jnp.pi * jnp.ones(2)),
        qdot_box=(jnp.zeros(2), 0.1 * jnp.ones(2)),
        key=keys[4],
        dtype=jnp.float64,
    )
    ts = jnp.linspace(0.0, args.t1, int(round(args.t1 / 0.1)) + 1)
    starts = initial_states(ts, q0, qdot0)
    truth = rollout(
        system,
        starts,
        rtol=1e-10,
        atol=1e-10,
        max_steps=1_000_000,
        adjoint=FORWARD_ONLY,
    )
    runs = {
        ("lnn", "energy_discrepancy"): ("lnn", dict(rtol=1e-8, atol=1e-8)),
        ("baseline", "energy_discrepancy"): ("baseline", dict(rtol=1e-8, atol=1e-8)),
        ("lnn", "energy_discrepancy_variational_midpoint"): (
            "lnn",
            dict(solver=VariationalMidpoint(), dt0=SYMPLECTIC_DT),
        ),
        ("lnn", "energy_discrepancy_gauss_legendre"): (
            "lnn",
            dict(solver=GaussLegendre(stages=2), dt0=SYMPLECTIC_DT),
        ),
    }
    # A budget of 100 steps per 0.1 of time: a learned model that needs more is
    # counted as a failed rollout rather than stalling the run.
    max_steps = 100 * (ts.shape[0] - 1)
    curves = {}
    for (name, metric), (model_name, options) in runs.items():
        predicted = rollout(
            to_float64(trained[model_name]),
            starts,
            throw=False,
            max_steps=max_steps,
            adjoint=FORWARD_ONLY,
            **options,
        )
        error = _energy_error(system, predicted, qdot0.shape[0])
        ok = np.isfinite(error).all(axis=1)
        results[name][metric] = float(np.mean(error[ok, -1])) if ok.any() else None
        suffix = metric.removeprefix("energy_discrepancy")
        results[name]["failed_rollouts" + suffix] = int((~ok).sum())
        curves[(name, metric)] = (error, ok, predicted)

    rows = [
        [
            "LNN (Tsit5)",
            _percent(results["lnn"]["energy_discrepancy"]),
            "0.43%",
            fmt(results["lnn"]["test_l1_acceleration_error"]),
            "0.069",
        ],
        [
            f"LNN (VariationalMidpoint, dt {SYMPLECTIC_DT})",
            _percent(results["lnn"]["energy_discrepancy_variational_midpoint"]),
            "—",
            "",
            "",
        ],
        [
            f"LNN (GaussLegendre(stages=2), dt {SYMPLECTIC_DT})",
            _percent(results["lnn"]["energy_discrepancy_gauss_legendre"]),
            "—",
            "",
            "",
        ],
        [
            "Baseline (Tsit5)",
            _percent(results["baseline"]["energy_discrepancy"]),
            "7.4%",
            fmt(results["baseline"]["test_l1_acceleration_error"]),
            "0.074",
        ],
    ]
    samples = args.steps * args.batch_size
    states = {
        "box": "the paper's box q ∈ [0, 2π)², q̇ ∈ [−10, 10)²",
        "reachable": "box states with energy ≤ 29.4 (reachable from rest)",
    }[args.states]
    table = (
        f"Double pendulum, trained and tested on {states}; "
        f"{args.steps} steps × batch {args.batch_size} = "
        f"{samples:.3g} "
        f"training samples per model ({samples / PAPER['training_samples']:.2%} of the "
        "paper's), float32 training, float64 evaluation\n\n"
        + markdown_table(
            ["model", "energy discrepancy", "paper", "test L1 q̈ error", "paper"], rows
        )
    )
    figures = _figures(ts, truth, curves, histories)
    return results, table, figures


def _percent(value) -> str:
    """An energy discrepancy as a percentage; past 1000% the rollout has diverged."""
    if value is not None and value > 10:
        return f"{value:.1e} (diverged)"
    return fmt(value, ".2%")


def _float32(data: AccelerationData) -> AccelerationData:
    return jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), data)


def _energy_error(system, trajectories, num) -> np.ndarray:
    """|E(x̂(t)) − E(x̂(0))| / 29.4 along each trajectory, shape (ics, times)."""
    energies = jax.vmap(jax.vmap(lambda q, v: energy(system, q, v)))(
        trajectories.q, trajectories.qdot
    )
    return np.abs(np.asarray(energies - energies[:, :1])) / ENERGY_SCALE


def _figures(ts, truth, curves, histories):
    ts = np.asarray(ts)
    lnn = curves[("lnn", "energy_discrepancy")][2]
    baseline = curves[("baseline", "energy_discrepancy")][2]

    def theta(fig):
        ax = fig.add_subplot()
        ax.plot(ts, np.asarray(truth.q[0, :, 0]), "k", label="truth")
        ax.plot(ts, np.asarray(lnn.q[0, :, 0]), "C0--", label="LNN")
        ax.plot(ts, np.asarray(baseline.q[0, :, 0]), "C3:", label="baseline")
        ax.set(
            xlabel="t", ylabel="θ₁", title="Double pendulum, first initial condition"
        )
        ax.legend()

    def energy_error(fig):
        ax = fig.add_subplot()
        labels = {
            ("lnn", "energy_discrepancy"): "LNN, Tsit5",
            (
                "lnn",
                "energy_discrepancy_variational_midpoint",
            ): "LNN, VariationalMidpoint",
            ("lnn", "energy_discrepancy_gauss_legendre"): "LNN, GaussLegendre(2)",
            ("baseline", "energy_discrepancy"): "baseline, Tsit5",
        }
        for key, label in labels.items():
            error, ok, _ = curves[key]
            if ok.any():
                ax.semilogy(ts, np.mean(error[ok], axis=0) + 1e-12, label=label)
        ax.set(
            xlabel="t",
            ylabel="mean |ΔE| / 29.4",
            title="Energy error of learned dynamics (true energy)",
        )
        ax.legend()

    return [
        ("theta1.png", theta),
        ("energy_error.png", energy_error),
        loss_figure(histories, {"lnn": "LNN", "baseline": "baseline"}),
    ]
