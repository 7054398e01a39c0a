"""Simulate the double pendulum with its analytic Lagrangian and print, per solver,
how far the energy drifts.

Run: python examples/double_pendulum_energy.py [--t1 100] [--dt 0.01]
"""

import argparse
import time

import diffrax
import jax
import jax.numpy as jnp

import lagrax


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--t1", type=float, default=100.0, help="final time")
    parser.add_argument(
        "--dt", type=float, default=0.01, help="step of fixed-step solvers"
    )
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)

    system = lagrax.systems.DoublePendulum()
    q0 = jnp.array([2.0, 1.0])
    qdot0 = jnp.array([0.0, 0.0])
    ts = jnp.linspace(0.0, args.t1, 1001)
    energy = jax.vmap(lagrax.energy, in_axes=(None, 0, 0))
    e_scale = 29.4  # max potential energy, the paper's normalization

    runs = [
        ("Tsit5 rtol=atol=1e-6", dict(solver=diffrax.Tsit5())),
        ("Tsit5 rtol=atol=1e-10", dict(solver=diffrax.Tsit5(), rtol=1e-10, atol=1e-10)),
        (
            "Dopri8 rtol=atol=1e-10",
            dict(solver=diffrax.Dopri8(), rtol=1e-10, atol=1e-10),
        ),
    ]
    runs += [
        (f"{name} dt={args.dt}", dict(solver=solver, dt0=args.dt))
        for name, solver in lagrax_fixed_step_solvers()
    ]
    print(f"Double pendulum, float64, t in [0, {args.t1}], q0={q0.tolist()}")
    print(f"{'solver':<28} {'max |ΔE|/29.4':>14} {'final |ΔE|/29.4':>16} {'wall s':>8}")
    for name, kwargs in runs:
        kwargs.setdefault("max_steps", 1_000_000)
        run = jax.jit(lambda: lagrax.simulate(system, q0, qdot0, ts, **kwargs))
        jax.block_until_ready(run())  # compile
        start = time.perf_counter()
        traj = jax.block_until_ready(run())
        wall = time.perf_counter() - start
        drift = (
            jnp.abs(
                energy(system, traj.q, traj.qdot) - lagrax.energy(system, q0, qdot0)
            )
            / e_scale
        )
        max_drift, final_drift = float(drift.max()), float(drift[-1])
        print(f"{name:<28} {max_drift:>14.3e} {final_drift:>16.3e} {wall:>8.3f}")


def lagrax_fixed_step_solvers():
    """The structure-preserving solvers lagrax ships."""
    names = ("VelocityVerlet", "VariationalMidpoint", "Yoshida4")
    return [(name, getattr(lagrax, name)()) for name in names if hasattr(lagrax, name)]


if __name__ == "__main__":
    main()
