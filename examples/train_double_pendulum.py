"""Train a Lagrangian Neural Network on double-pendulum accelerations, then compare
its rollout, and the true energy along it, with the real motion.

The data are states drawn uniformly from a box with exact accelerations of
`lagrax.systems.DoublePendulum`. The defaults, a box of moderate swings and an
`MLPLagrangian` of width 128, train in about a minute on a laptop CPU to a few
percent. The paper's experiment, on full swings, is `lagrax reproduce
double-pendulum`: there the network needs the angles as angles
(`MLPLagrangian(..., angles=(0, 1))`), training states reachable from rest, and
`acceleration_loss(..., definiteness=0.1)` to keep its mass matrix definite (see the
README). Training is `lagrax.fit` with the paper's L1 acceleration loss and Adam on
a one-cycle schedule. Prints the held-out
acceleration error, the rollout error and the paper's energy discrepancy; with
matplotlib installed, also plots the true energy along the true and the learned
trajectories.

Run: python examples/train_double_pendulum.py [--steps 5000] [--plot energy.png]
"""

import argparse
import time

import jax
import jax.numpy as jnp
import jax.random as jr
import optax

import lagrax


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000, help="training steps")
    parser.add_argument("--width", type=int, default=128, help="hidden units per layer")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-2, help="peak learning rate")
    parser.add_argument(
        "--max-angle",
        type=float,
        default=1.0,
        help="angle box half-width (the paper's: π, angles mod 2π)",
    )
    parser.add_argument(
        "--max-speed",
        type=float,
        default=2.0,
        help="velocity box half-width (the paper's: 10)",
    )
    parser.add_argument("--samples", type=int, default=20000, help="training states")
    parser.add_argument("--t1", type=float, default=5.0, help="rollout horizon")
    parser.add_argument(
        "--plot",
        default="double_pendulum_energy.png",
        help="where to save the figure (needs matplotlib)",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)

    system = lagrax.systems.DoublePendulum()
    a, v = args.max_angle, args.max_speed
    box = dict(q_box=([-a, -a], [a, a]), qdot_box=([-v, -v], [v, v]))
    data_key, test_key, model_key, fit_key = jr.split(jr.key(0), 4)
    train = lagrax.acceleration_data(
        system, *lagrax.sample_states(args.samples, key=data_key, **box)
    )
    test = lagrax.acceleration_data(
        system, *lagrax.sample_states(2000, key=test_key, **box)
    )

    model = lagrax.MLPLagrangian(2, width=args.width, depth=3, key=model_key)
    optimizer = optax.adam(optax.cosine_onecycle_schedule(args.steps, args.lr))
    start = time.perf_counter()
    model, history = lagrax.fit(
        model,
        lagrax.acceleration_loss,
        train,
        optimizer=optimizer,
        steps=args.steps,
        batch_size=args.batch_size,
        key=fit_key,
        test_data=test,
        metrics={"relative acceleration error": lagrax.acceleration_error},
        progress=not args.no_progress,
    )
    print(
        f"trained {args.steps} steps in {time.perf_counter() - start:.1f} s "
        f"({history.num_skipped} skipped)"
    )
    for step, loss, error in zip(
        history.eval_step,
        history.eval_loss,
        history.metrics["relative acceleration error"],
    ):
        print(
            f"  step {step:6d}   held-out L1 loss {loss:9.4f}   "
            f"relative error {error:.4f}"
        )

    # Rollouts from rest, inside the training box.
    q0 = jnp.array([[0.6, -0.4], [0.3, 0.7], [-0.5, 0.2]])
    ts = jnp.linspace(0.0, args.t1, 201)
    truth = lagrax.trajectory_data(system, q0, jnp.zeros_like(q0), ts)
    learned = lagrax.rollout(model, truth, rtol=1e-8, atol=1e-8, throw=False)
    error = lagrax.rollout_error(learned, truth)
    energy = jax.vmap(jax.vmap(lambda q, v: lagrax.energy(system, q, v)))
    scale = 29.4  # the maximum potential energy: the paper's normalization
    print(
        f"rollout error at t = 1, {args.t1 / 2:g}, {args.t1:g}: "
        f"{float(error[40]):.2e}, {float(error[100]):.2e}, {float(error[-1]):.2e}"
    )
    log_error = lagrax.integrated_log_rollout_error(learned, truth)
    print(f"integrated log rollout error: {float(log_error):.2f}")
    print(
        f"energy discrepancy at t = {args.t1:g} (/29.4): "
        f"true model {float(lagrax.energy_discrepancy(system, truth, scale=scale)):.2e}"
        f", LNN {float(lagrax.energy_discrepancy(system, learned, scale=scale)):.2e}"
    )

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    axes[0].plot(ts, energy(truth.q, truth.qdot)[0], label="true trajectory")
    axes[0].plot(ts, energy(learned.q, learned.qdot)[0], "--", label="LNN trajectory")
    axes[0].set(
        xlabel="t", ylabel="true energy", title=f"q0 = {q0[0].tolist()}, q̇0 = 0"
    )
    axes[0].legend()
    axes[1].plot(ts, truth.q[0, :, 1], label="true θ₂")
    axes[1].plot(ts, learned.q[0, :, 1], "--", label="LNN θ₂")
    axes[1].set(xlabel="t", ylabel="θ₂")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(args.plot, dpi=120)
    print(f"saved {args.plot}")


if __name__ == "__main__":
    main()
