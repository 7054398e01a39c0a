"""`lagrax simulate SYSTEM`: integrate an analytic system and report energy drift."""

import argparse
import json
import pathlib
import time

import diffrax

from .. import systems
from .._solver.variational import VariationalMidpoint
from .._solver.verlet import VelocityVerlet
from .._solver.yoshida import Yoshida4


SYSTEMS = {
    # name: (constructor, default q0, default qdot0, energy scale for relative errors)
    "harmonic-oscillator": (systems.HarmonicOscillator, [1.0], [0.0], 0.5),
    "pendulum": (systems.Pendulum, [2.0], [0.0], 9.8),
    "double-pendulum": (systems.DoublePendulum, [2.0, 1.0], [0.0, 0.0], 29.4),
    "relativistic-particle": (systems.RelativisticParticle, [0.0], [0.5], 1.0),
    "charged-particle": (
        systems.ChargedParticle,
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.1],
        0.5,
    ),
}

SOLVERS = {
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "dopri8": diffrax.Dopri8,
    "verlet": VelocityVerlet,
    "variational-midpoint": VariationalMidpoint,
    "yoshida4": Yoshida4,
}


def floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        )


def positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="simulate an analytic system and report its energy drift",
        description="Integrate an analytic system from lagrax.systems (float64) and "
        "print the relative energy drift. Writes trajectory.json (and trajectory.png "
        "when matplotlib is installed) to --out if given.",
    )
    parser.add_argument("system", choices=sorted(SYSTEMS))
    parser.add_argument("--solver", choices=sorted(SOLVERS), default="tsit5")
    parser.add_argument(
        "--t1", type=positive, default=10.0, help="final time (default 10)"
    )
    parser.add_argument(
        "--dt",
        type=positive,
        default=0.01,
        help="fixed step, or initial step of adaptive solvers (default 0.01)",
    )
    parser.add_argument(
        "--rtol", type=positive, default=1e-8, help="adaptive tolerance"
    )
    parser.add_argument(
        "--samples", type=int, default=201, help="saved times (default 201)"
    )
    parser.add_argument("--q0", type=floats, help="initial positions, comma-separated")
    parser.add_argument(
        "--qdot0", type=floats, help="initial velocities, comma-separated"
    )
    parser.add_argument(
        "--out", type=pathlib.Path, help="folder for trajectory.json/png"
    )
    parser.set_defaults(run=run, parser=parser)


def run(args, parser) -> int:
    import jax
    import jax.numpy as jnp

    from .._mechanics import energy
    from .._simulate import simulate

    jax.config.update("jax_enable_x64", True)
    constructor, q0, qdot0, scale = SYSTEMS[args.system]
    q0 = args.q0 if args.q0 is not None else q0
    qdot0 = args.qdot0 if args.qdot0 is not None else qdot0
    dof = len(SYSTEMS[args.system][1])
    for name, value in (("--q0", q0), ("--qdot0", qdot0)):
        if len(value) != dof:
            parser.error(
                f"{name}: {args.system} has {dof} degree(s) of freedom, "
                f"got {len(value)} values"
            )
    if args.samples < 2:
        parser.error("--samples must be at least 2")
    system = constructor()
    solver = SOLVERS[args.solver]()
    ts = jnp.linspace(0.0, args.t1, args.samples)
    steps = int(args.t1 / args.dt) + 2
    run_once = jax.jit(
        lambda: simulate(
            system,
            jnp.asarray(q0),
            jnp.asarray(qdot0),
            ts,
            solver=solver,
            dt0=args.dt,
            rtol=args.rtol,
            atol=args.rtol,
            max_steps=max(steps, 4096) * 4,
        )
    )
    traj = jax.block_until_ready(run_once())
    start = time.perf_counter()
    traj = jax.block_until_ready(run_once())
    wall = time.perf_counter() - start
    energies = jax.vmap(energy, in_axes=(None, 0, 0))(system, traj.q, traj.qdot)
    drift = jnp.abs(energies - energies[0]) / scale
    print(f"{args.system} with {args.solver}, t in [0, {args.t1}], float64")
    print(f"  final q     = {[round(float(x), 6) for x in traj.q[-1]]}")
    print(f"  final qdot  = {[round(float(x), 6) for x in traj.qdot[-1]]}")
    print(f"  max |ΔE|/{scale} = {float(drift.max()):.3e}", end="")
    print(f"   final = {float(drift[-1]):.3e}")
    print(f"  wall time   = {wall:.3f} s (compiled)")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        record = dict(
            system=args.system,
            solver=args.solver,
            dt=args.dt,
            rtol=args.rtol,
            ts=traj.ts.tolist(),
            q=traj.q.tolist(),
            qdot=traj.qdot.tolist(),
            energy=energies.tolist(),
        )
        (args.out / "trajectory.json").write_text(json.dumps(record))
        _plot(args, traj, drift, args.out / "trajectory.png")
        print(f"  wrote {args.out / 'trajectory.json'}")
    return 0


def _plot(args, traj, drift, path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, (ax_q, ax_e) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    ax_q.plot(traj.ts, traj.q)
    ax_q.set_ylabel("q")
    ax_q.set_title(f"{args.system}, {args.solver}")
    ax_e.semilogy(traj.ts, drift + 1e-18)
    ax_e.set_ylabel("relative |ΔE|")
    ax_e.set_xlabel("t")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
