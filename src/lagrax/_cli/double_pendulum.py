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

Beyond the paper, a copy of the trained LNN is trained further with the rollout
loss as well (`--rollout-steps`, default 300; 0 skips it): the loss is the
acceleration loss above + 100 × `lagrax.rollout_loss` on 256 trajectories from near
rest (the evaluation's distribution, other draws), t ∈ [0, 2] sampled every 0.1,
cut into windows of 5 samples (0.4 time units) integrated from observed states by
Tsit5 at a fixed dt = 0.05 (mean squared error of q and q̇). Each step takes 16
trajectories and 16 × 64 acceleration samples; Adam, learning rate `--rollout-lr`
decaying to 0 on a cosine. It is evaluated like the LNN, with Tsit5 and
GaussLegendre(stages=2). (The rollout loss alone, measured with seed 0, halves the
test rollout error but doubles the acceleration error away from rest.)

Extra `results.json` metrics per model: `energy_discrepancy` (Tsit5) and
`test_rollout_error` (that rollout loss on 32 held-out trajectories from near
rest, mean over the trajectories whose rollouts did not fail, counted in
`failed_test_rollouts`); for the LNN `energy_discrepancy_variational_midpoint`
and, for it and `lnn_rollout`, `energy_discrepancy_gauss_legendre`;
`failed_rollouts` (Tsit5) and `failed_rollouts_SOLVER` (ints) count the initial
conditions whose rollout failed (a singular learned mass matrix or a solver
failure); they are left out of the means.
"""

import functools

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, Float

from .. import systems
from .._baselines import NeuralODEBaseline
from .._lagrangian import MLPLagrangian
from .._mechanics import energy
from .._solver.gauss_legendre import GaussLegendre
from .._solver.variational import VariationalMidpoint
from .._train.data import (
    acceleration_data,
    AccelerationData,
    sample_states,
    trajectory_data,
    TrajectoryData,
)
from .._train.losses import acceleration_loss, rollout_loss
from .._train.rollout import rollout
from .common import (
    checkpointed_fit,
    clipped,
    fmt,
    FORWARD_ONLY,
    initial_states,
    loss_figure,
    markdown_table,
    non_negative_float,
    non_negative_int,
    positive_float,
    to_float64,
    train,
)


HELP = "double pendulum: LNN vs black-box baseline, energy discrepancy at t = 100"
DEFAULT_STEPS = 20_000
DEFAULT_BATCH = 256
ENERGY_SCALE = 29.4
SYMPLECTIC_DT = 0.01
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
    parser.add_argument(
        "--rollout-steps",
        type=non_negative_int,
        default=300,
        help="steps of further training of a copy of the LNN on the acceleration "
        "loss + 100 × the rollout loss (300; 0 skips it)",
    )
    parser.add_argument(
        "--rollout-lr",
        type=positive_float,
        default=3e-4,
        help="initial learning rate of that stage, decaying to 0 (3e-4)",
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

    near_rest = functools.partial(
        sample_states,
        q_box=(jnp.zeros(2), 2 * jnp.pi * jnp.ones(2)),
        qdot_box=(jnp.zeros(2), 0.1 * jnp.ones(2)),
        dtype=jnp.float64,
    )
    train_key, test_key = jr.split(keys[5])
    rollout_ts = 0.1 * jnp.arange(int(round(ROLLOUT_HORIZON / 0.1)) + 1.0)
    rollout_data, rollout_test = (
        _float32(trajectory_data(system, *near_rest(n, key=key), rollout_ts))
        for n, key in (
            (ROLLOUT_TRAJECTORIES, train_key),
            (ROLLOUT_TEST_TRAJECTORIES, test_key),
        )
    )
    window_loss = functools.partial(
        rollout_loss,
        window=ROLLOUT_WINDOW,
        dt0=ROLLOUT_DT,
        stepsize_controller=diffrax.ConstantStepSize(),
        max_steps=int(round((ROLLOUT_WINDOW - 1) * 0.1 / ROLLOUT_DT)) + 1,
    )
    if args.rollout_steps:
        model, metrics = _fine_tune(
            trained["lnn"],
            _Paired.of(rollout_data, train_data),
            _Paired.of(rollout_test, test_data),
            window_loss,
            args,
        )
        trained["lnn_rollout"] = model
        results["lnn_rollout"] = dict(
            test_l1_acceleration_error=float(acceleration_loss(model, test_data)),
            **metrics,
        )
    for name, model in trained.items():
        errors = _per_trajectory(window_loss, model, rollout_test)
        (
            results[name]["test_rollout_error"],
            results[name]["failed_test_rollouts"],
        ) = _mean_of_finite(errors)

    # The paper's evaluation: 40 states near rest, t ∈ [0, 100] in steps of 0.1.
    q0, qdot0 = near_rest(args.ics, key=keys[4])
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
    tsit5 = dict(rtol=1e-8, atol=1e-8)
    midpoint = dict(solver=VariationalMidpoint(), dt0=SYMPLECTIC_DT)
    gauss_legendre = dict(solver=GaussLegendre(stages=2), dt0=SYMPLECTIC_DT)
    runs = {
        ("lnn", "energy_discrepancy"): tsit5,
        ("lnn", "energy_discrepancy_variational_midpoint"): midpoint,
        ("lnn", "energy_discrepancy_gauss_legendre"): gauss_legendre,
        ("lnn_rollout", "energy_discrepancy"): tsit5,
        ("lnn_rollout", "energy_discrepancy_gauss_legendre"): gauss_legendre,
        ("baseline", "energy_discrepancy"): tsit5,
    }
    runs = {key: options for key, options in runs.items() if key[0] in trained}
    # A budget of 100 steps per 0.1 of time: a learned model that needs more is
    # counted as a failed rollout rather than stalling the run.
    max_steps = 100 * (ts.shape[0] - 1)
    curves = {}
    for (name, metric), options in runs.items():
        predicted = rollout(
            to_float64(trained[name]),
            starts,
            throw=False,
            max_steps=max_steps,
            adjoint=FORWARD_ONLY,
            **options,
        )
        error = _energy_error(system, predicted, qdot0.shape[0])
        ok = np.isfinite(error).all(axis=1)
        final = np.where(ok, error[:, -1], np.nan)  # failed anywhere: failed
        suffix = metric.removeprefix("energy_discrepancy")
        results[name][metric], results[name]["failed_rollouts" + suffix] = (
            _mean_of_finite(final)
        )
        curves[(name, metric)] = (error, ok, predicted)

    rows = []
    for (name, metric), options in runs.items():
        paper = PAPER.get(name, {})
        row = [
            f"{LABELS[name]} ({_solver_label(options)})",
            _percent(results[name][metric]),
            f"{100 * paper[metric]:g}%" if metric in paper else "—",
        ]
        if metric == "energy_discrepancy":  # one row per model carries its errors
            row += [
                fmt(results[name]["test_l1_acceleration_error"]),
                fmt(paper.get("test_l1_acceleration_error")),
                fmt(results[name]["test_rollout_error"]),
            ]
        rows.append(row + [""] * (6 - len(row)))
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
        "paper's), float32 training, float64 evaluation"
        + (
            f"; LNN + rollout loss: {args.rollout_steps} more steps, each on "
            f"{ROLLOUT_BATCH} trajectories and {ROLLOUT_BATCH * ROLLOUT_BLOCK} "
            "accelerations"
            if args.rollout_steps
            else ""
        )
        + ". Test rollout error: mean squared (q, q̇) error over windows of "
        f"{(ROLLOUT_WINDOW - 1) * 0.1:g} time units from near rest.\n\n"
        + markdown_table(
            [
                "model (solver)",
                "energy discrepancy",
                "paper",
                "test L1 q̈ error",
                "paper",
                "test rollout error",
            ],
            rows,
        )
    )
    figures = _figures(ts, truth, curves, histories)
    return results, table, figures


class _Paired(eqx.Module):
    """A dataset for `lagrax.fit` whose sample `i` is trajectory `i` together with
    a block of acceleration samples, so one minibatch feeds a joint loss."""

    trajectories: TrajectoryData
    q: Float[Array, "trajectories block dof"]
    qdot: Float[Array, "trajectories block dof"]
    qddot: Float[Array, "trajectories block dof"]

    @classmethod
    def of(cls, trajectories: TrajectoryData, accelerations: AccelerationData):
        """Pairs each trajectory with its own block of the first accelerations."""
        num = len(trajectories)
        block = min(ROLLOUT_BLOCK, len(accelerations) // num)
        if block == 0:
            raise ValueError(
                f"{len(accelerations)} acceleration samples cannot be shared among "
                f"{num} trajectories; use a larger --train-size."
            )
        blocks = [
            x[: num * block].reshape(num, block, -1)
            for x in (accelerations.q, accelerations.qdot, accelerations.qddot)
        ]
        return cls(trajectories, *blocks)

    def __len__(self) -> int:
        return len(self.trajectories)

    def __getitem__(self, index) -> "_Paired":
        return _Paired(
            self.trajectories[index],
            self.q[index],
            self.qdot[index],
            self.qddot[index],
        )

    def accelerations(self) -> AccelerationData:
        dof = self.q.shape[-1]
        return AccelerationData(
            *(x.reshape(-1, dof) for x in (self.q, self.qdot, self.qddot))
        )


def _fine_tune(lnn, data: _Paired, test_data: _Paired, window_loss, args):
    """The LNN trained further on the joint loss, the L1 acceleration error (with
    the definiteness penalty) + ROLLOUT_WEIGHT × the rollout loss. Returns
    `(model, metrics)`."""

    def loss(model, batch: _Paired):
        accelerations = acceleration_loss(
            model, batch.accelerations(), definiteness=args.definiteness
        )
        return accelerations + ROLLOUT_WEIGHT * window_loss(model, batch.trajectories)

    schedule = optax.cosine_decay_schedule(args.rollout_lr, args.rollout_steps)
    model, _, metrics = checkpointed_fit(
        lnn,
        loss,
        data,
        test_data,
        optimizer=clipped(optax.adam(schedule), args),
        steps=args.rollout_steps,
        batch_size=ROLLOUT_BATCH,
        args=args,
        name="lnn_rollout",
    )
    return model, metrics


LABELS = {
    "lnn": "LNN",
    "lnn_rollout": "LNN + rollout loss",
    "baseline": "Baseline",
}


def _solver_label(options) -> str:
    if "solver" not in options:
        return "Tsit5"
    name = type(options["solver"]).__name__
    if isinstance(options["solver"], GaussLegendre):
        name += f"(stages={options['solver'].stages})"
    return f"{name}, dt {options['dt0']}"


def _mean_of_finite(values: np.ndarray) -> tuple[float | None, int]:
    """The mean of the finite entries (None if there are none) and how many are
    not finite: the failed rollouts."""
    ok = np.isfinite(values)
    return (float(np.mean(values[ok])) if ok.any() else None), int((~ok).sum())


def _per_trajectory(loss, model, data: TrajectoryData) -> np.ndarray:
    """`loss(model, one trajectory)` for each trajectory of `data`: a failed
    rollout (a singular learned mass matrix on the way) spoils only its own."""

    def one(q, qdot):
        return loss(model, TrajectoryData(data.ts, q[None], qdot[None]))

    return np.asarray(jax.vmap(one)(data.q, data.qdot))


def _percent(value) -> str:
    """An energy discrepancy as a percentage; past 1000% the rollout has diverged."""
    if value is not None and value > 10:
        return f"{value:.1e} (diverged)"
    return fmt(value, ".2%")


def _float32(
    data: AccelerationData | TrajectoryData,
) -> AccelerationData | TrajectoryData:
    """The data in float32, the training dtype (they are generated in float64)."""
    return jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), data)


def _energy_error(system, trajectories, num) -> np.ndarray:
    """|E(x̂(t)) − E(x̂(0))| / 29.4 along each trajectory, shape (ics, times)."""
    energies = jax.vmap(jax.vmap(lambda q, v: energy(system, q, v)))(
        trajectories.q, trajectories.qdot
    )
    return np.abs(np.asarray(energies - energies[:, :1])) / ENERGY_SCALE


def _figures(ts, truth, curves, histories):
    ts = np.asarray(ts)
    tsit5 = {
        name: predicted
        for (name, metric), (_, _, predicted) in curves.items()
        if metric == "energy_discrepancy"
    }
    styles = {"lnn": "C0--", "lnn_rollout": "C2-.", "baseline": "C3:"}

    def theta(fig):
        # The whole horizon, and its first 10 time units, where the models part
        # from the chaotic truth.
        zoom = ts <= min(10.0, ts[-1])
        for column, keep in enumerate((np.ones_like(zoom), zoom)):
            ax = fig.add_subplot(1, 2, column + 1)
            ax.plot(ts[keep], np.asarray(truth.q[0, keep, 0]), "k", label="truth")
            for name, predicted in tsit5.items():
                ax.plot(
                    ts[keep],
                    np.asarray(predicted.q[0, keep, 0]),
                    styles[name],
                    label=LABELS[name],
                )
            shown = ts[keep][-1]
            ax.set(xlabel="t", ylabel="θ₁", title=f"t ∈ [0, {shown:g}]")
        fig.suptitle("Double pendulum, first initial condition (Tsit5)")
        ax.legend()

    def energy_error(fig):
        ax = fig.add_subplot()
        for (name, metric), (error, ok, _) in curves.items():
            solver = metric.removeprefix("energy_discrepancy").removeprefix("_")
            solver = {
                "": "Tsit5",
                "variational_midpoint": "VariationalMidpoint",
                "gauss_legendre": "GaussLegendre(2)",
            }[solver]
            if ok.any():
                ax.semilogy(  # t = 0 left out: the error is 0 there
                    ts[1:],
                    np.mean(error[ok, 1:], axis=0),
                    label=f"{LABELS[name]}, {solver}",
                )
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
