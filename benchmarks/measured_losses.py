"""Cost per sample of the losses for measured systems, against `acceleration_loss`.

For the double pendulum's dof (2), float64, batch 1024, each loss's value and
gradient with respect to the model (`eqx.filter_value_and_grad`, jitted) is timed
for an `MLPLagrangian` (width 128, depth 3) and a `MechanicalLagrangian` (width 64,
depth 2), with friction and an actuation driven by each sample's input:

- `acceleration_loss`: solve `H q̈ = …` per sample, the paper's loss;
- `inverse_dynamics_loss`: the torque residual, one JVP of `∂L/∂q̇` per sample
  (for the mechanical Lagrangian `M q̈ + Ṁ q̇ − ∂L/∂q`), no linear solve;
- `discrete_euler_lagrange_loss`: the midpoint rule's residual on positions,
  one gradient of `L` per interval (1024 samples as 8 trajectories of 128).

Compilation excluded, results waited for, the losses interleaved, medians.
Run `python benchmarks/measured_losses.py` (`--quick` for a smoke run).
"""

import argparse
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

import lagrax


try:
    from ._common import environment, markdown_table, median, time_interleaved
except ImportError:  # run as a script
    from _common import environment, markdown_table, median, time_interleaved


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, not judged")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    batch, repeats = (128, 3) if args.quick else (1024, 30)
    keys = jr.split(jr.key(0), 6)
    q, qdot = lagrax.sample_states(
        batch, q_box=([-3, -3], [3, 3]), qdot_box=([-5, -5], [5, 5]), key=keys[0]
    )
    qddot = jr.normal(keys[1], q.shape)
    u = jr.normal(keys[2], q.shape)
    samples = lagrax.AccelerationData(q, qdot, qddot, u)
    ts = 0.002 * jnp.arange(batch // 8, dtype=q.dtype)
    positions = lagrax.PositionData(ts, q.reshape(8, -1, 2), u.reshape(8, -1, 2))
    force = lagrax.RayleighDissipation(jnp.array([0.01, 0.01])) + (
        lagrax.CoulombFriction(jnp.array([0.1, 0.1])) + lagrax.Actuation()
    )
    models = {
        "MLPLagrangian 128×3": lagrax.MLPLagrangian(2, width=128, depth=3, key=keys[3]),
        "MechanicalLagrangian 64×2": lagrax.MechanicalLagrangian(
            2, width=64, depth=2, angles=(0, 1), key=keys[4]
        ),
    }
    losses = {
        "acceleration_loss": lambda m: lagrax.acceleration_loss(
            m, samples, force=force, norm="l2"
        ),
        "inverse_dynamics_loss": lambda m: lagrax.inverse_dynamics_loss(
            m, samples, force=force
        ),
        "discrete_euler_lagrange_loss": lambda m: lagrax.discrete_euler_lagrange_loss(
            m, positions, force=force
        ),
    }
    calls = {}
    for model_name, model in models.items():
        for loss_name, loss in losses.items():
            step = eqx.filter_jit(eqx.filter_value_and_grad(loss))
            calls[(model_name, loss_name)] = lambda step=step, model=model: step(model)
    times = time_interleaved(
        {f"{m}|{n}": fn for (m, n), fn in calls.items()}, repeats=repeats
    )
    rows = []
    for model_name in models:
        base = median(times[f"{model_name}|acceleration_loss"])
        for loss_name in losses:
            t = median(times[f"{model_name}|{loss_name}"])
            rows.append(
                [
                    model_name,
                    loss_name,
                    f"{1e6 * t / batch:.2f}",
                    f"{t / base:.2f}",
                ]
            )
    print(environment())
    print(f"float64, batch {batch}, value and gradient, median of {repeats}\n")
    header = ["model", "loss", "µs per sample", "× acceleration_loss"]
    print(markdown_table(header, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
