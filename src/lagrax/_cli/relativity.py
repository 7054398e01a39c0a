"""The relativistic particle of Cranmer et al., L = (1 − q̇²)^(−1/2) − 1 + g·q with
g = 1 (c = m = 1): its canonical momentum p = q̇ (1 − q̇²)^(−3/2) is not q̇.

Three models learn the dynamics from exact accelerations (and, for the Hamiltonian
networks, velocities) of states with |q| < 10 and |q̇| < 0.95: an LNN, which needs
no momenta; a Hamiltonian network given p := q̇, which cannot represent the dynamics
(Hamilton's equations force q̇ = ∂H/∂p, so H = ½p² + V(q) and q̈ cannot depend on
q̇); and a Hamiltonian network given the canonical momentum, which can. Each is
rolled out from rest at q = 0 for t ∈ [0, 10] (Tsit5, rtol = atol = 1e-8, float64)
and compared with the true motion.

Extra `results.json` metrics per model: `rollout_error` (mean over time of
‖x̂ − x‖ / (‖x̂‖ + ‖x‖) with x = (q, q̇)), `final_velocity` and `true_final_velocity`.
"""

import functools

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .. import systems
from .._baselines import HamiltonianNN
from .._lagrangian import MLPLagrangian
from .._mechanics import momentum
from .._train.data import acceleration_data, sample_states
from .._train.metrics import rollout_error
from .._train.rollout import rollout
from .common import (
    fmt,
    FORWARD_ONLY,
    initial_states,
    loss_figure,
    markdown_table,
    to_float64,
    train,
)


HELP = "relativistic particle: LNN vs Hamiltonian networks, canonical or not"
DEFAULT_STEPS = 20_000
DEFAULT_BATCH = 256
PAPER = {
    "lnn": {"learns": True},
    "hnn_noncanonical": {"learns": False},
    "hnn_canonical": {"learns": True},
}
NAMES = {
    "lnn": "LNN",
    "hnn_noncanonical": "HNN, p := q̇",
    "hnn_canonical": "HNN, canonical p",
}


def add_arguments(parser) -> None:
    parser.add_argument("--width", type=int, default=128, help="hidden units (128)")
    parser.add_argument("--train-size", type=int, default=20_000, help="states (2e4)")
    parser.add_argument("--t1", type=float, default=10.0, help="rollout horizon (10)")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")


def run(args):
    system = systems.RelativisticParticle(g=1.0)
    keys = jr.split(jr.key(args.seed), 6)
    # q must cover the rollout (q(10) ≈ 6): L depends on q, and a network only
    # knows it where it was trained.
    box = dict(
        q_box=(-10 * jnp.ones(1), 10 * jnp.ones(1)),
        qdot_box=(-0.95 * jnp.ones(1), 0.95 * jnp.ones(1)),
    )
    cast = functools.partial(jax.tree_util.tree_map, lambda x: x.astype(jnp.float32))
    train_data = cast(
        acceleration_data(
            system,
            *sample_states(args.train_size, **box, key=keys[0], dtype=jnp.float64),
        )
    )
    test_data = cast(
        acceleration_data(
            system, *sample_states(2_000, **box, key=keys[1], dtype=jnp.float64)
        )
    )
    canonical = functools.partial(momentum, system)
    models = {
        "lnn": MLPLagrangian(
            1, width=args.width, depth=2, dtype=jnp.float32, key=keys[2]
        ),
        "hnn_noncanonical": HamiltonianNN(
            1, width=args.width, depth=2, dtype=jnp.float32, key=keys[3]
        ),
        "hnn_canonical": HamiltonianNN(
            1,
            width=args.width,
            depth=2,
            momentum=canonical,
            dtype=jnp.float32,
            key=keys[4],
        ),
    }
    ts = jnp.linspace(0.0, args.t1, 201)
    start = initial_states(ts, jnp.zeros((1, 1)), jnp.zeros((1, 1)))
    truth = rollout(system, start, rtol=1e-10, atol=1e-10, adjoint=FORWARD_ONLY)
    results, histories, predictions = {}, {}, {}
    for name, model in models.items():
        model, histories[name], results[name] = train(
            model, train_data, test_data, args=args, name=name
        )
        predicted = rollout(
            to_float64(model),
            start,
            rtol=1e-8,
            atol=1e-8,
            throw=False,
            max_steps=20_000,
            adjoint=FORWARD_ONLY,
        )
        predictions[name] = predicted
        error = np.asarray(rollout_error(predicted, truth))
        results[name].update(
            rollout_error=float(np.mean(error)) if np.isfinite(error).all() else None,
            final_velocity=float(predicted.qdot[0, -1, 0]),
            true_final_velocity=float(truth.qdot[0, -1, 0]),
        )
    rows = [
        [
            NAMES[name],
            fmt(r["test_l1_acceleration_error"]),
            fmt(r["rollout_error"]),
            fmt(r["final_velocity"], ".4f"),
            fmt(r["true_final_velocity"], ".4f"),
            "learns" if PAPER[name]["learns"] else "fails",
        ]
        for name, r in results.items()
    ]
    table = "Relativistic particle (g = 1), float32 training, float64 rollouts\n\n" + (
        markdown_table(
            [
                "model",
                "test L1 q̈ error",
                "rollout error",
                "q̇(t₁)",
                "true q̇(t₁)",
                "paper",
            ],
            rows,
        )
    )

    def velocity(fig):
        ax = fig.add_subplot()
        ax.plot(ts, np.asarray(truth.qdot[0, :, 0]), "k", label="truth")
        for i, (name, predicted) in enumerate(predictions.items()):
            ax.plot(
                ts, np.asarray(predicted.qdot[0, :, 0]), f"C{i}--", label=NAMES[name]
            )
        ax.axhline(1.0, color="gray", lw=0.5)
        ax.set(xlabel="t", ylabel="q̇", title="Relativistic particle from rest (c = 1)")
        ax.legend()

    return results, table, [("velocity.png", velocity), loss_figure(histories, NAMES)]
