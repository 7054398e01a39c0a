"""`lagrax simulate SYSTEM`: integrate an analytic system and report its energy drift.

A solve that fails (a step too large for the motion, a Newton iteration that does
not converge, the step budget spent) is an error with lagrax's reason, as is a state
or energy that is not finite; an initial state outside the system's domain
(a relativistic particle at |q̇| ≥ 1) is a bad argument.
"""

import io
import json
import pathlib
import time

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

import lagrax

from .._files import write_atomic
from .parsing import (
    check_folder,
    check_memory,
    finite_floats,
    folder,
    Integer,
    positive_float,
    tolerance,
    UsageError,
)


SYSTEMS = {
    # name: (constructor, default q0, default qdot0, energy scale for relative errors)
    "harmonic-oscillator": (lagrax.systems.HarmonicOscillator, [1.0], [0.0], 0.5),
    "pendulum": (lagrax.systems.Pendulum, [2.0], [0.0], 9.8),
    "double-pendulum": (
        lagrax.systems.DoublePendulum,
        [2.0, 1.0],
        [0.0, 0.0],
        lagrax.systems.DoublePendulum().max_potential_energy,
    ),
    "relativistic-particle": (lagrax.systems.RelativisticParticle, [0.0], [0.5], 1.0),
    "charged-particle": (
        lagrax.systems.ChargedParticle,
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.1],
        0.5,
    ),
}

SOLVERS = {
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "dopri8": diffrax.Dopri8,
    "verlet": lagrax.VelocityVerlet,
    "variational-midpoint": lagrax.VariationalMidpoint,
    "yoshida4": lagrax.Yoshida4,
    "gauss-legendre": lagrax.GaussLegendre,
}

# What `--out` receives: the trajectory, and its plot where matplotlib is installed.
TRAJECTORY = "trajectory.json"
PLOT = "trajectory.png"

# The most fixed steps a run may ask for (--t1 / --dt): past it, the step budget
# alone would not fit in memory.
MAX_STEPS = 10_000_000
# --samples: the first and last time at least, and no more than steps.
sample_count = Integer(2, MAX_STEPS)
# Bytes per number saved (floats, as the estimate is): in a float64 array, and in
# trajectory.json (a Python float in a list, and its text).
ARRAY_BYTES = 8.0
JSON_BYTES = 56.0


def add_parser(subparsers, common) -> None:
    parser = subparsers.add_parser(
        "simulate",
        parents=[common],
        help="simulate an analytic system and report its energy drift",
        description="Integrate an analytic system from lagrax.systems (float64) and "
        "print the relative energy drift. Writes trajectory.json (and trajectory.png "
        "when matplotlib is installed) to --out if given. A failed solve is an "
        "error with its reason.",
    )
    parser.add_argument("system", choices=sorted(SYSTEMS))
    parser.add_argument(
        "--solver",
        choices=sorted(SOLVERS),
        default="tsit5",
        help="tsit5, dopri5, dopri8: adaptive (Diffrax); the others fixed-step "
        "(lagrax; gauss-legendre has 2 stages, 4th order). Default tsit5",
    )
    parser.add_argument(
        "--t1", type=positive_float, default=10.0, help="final time (default 10)"
    )
    parser.add_argument(
        "--dt",
        type=positive_float,
        default=0.01,
        help="fixed step, or initial step of adaptive solvers (default 0.01)",
    )
    parser.add_argument(
        "--rtol",
        type=tolerance,
        default=1e-8,
        help="adaptive tolerance, rtol = atol, in [1e-14, 1) (default 1e-8)",
    )
    parser.add_argument(
        "--samples",
        type=sample_count,
        default=201,
        help=f"saved times, {sample_count} (default 201)",
    )
    parser.add_argument(
        "--q0", type=finite_floats, help="initial positions, comma-separated"
    )
    parser.add_argument(
        "--qdot0", type=finite_floats, help="initial velocities, comma-separated"
    )
    parser.add_argument("--out", type=folder, help="folder for trajectory.json/png")
    parser.set_defaults(run=run)


def _initial_state(args) -> tuple[list[float], list[float]]:
    """`--q0` and `--qdot0`, or the system's defaults; a `UsageError` for a wrong
    number of values."""
    _, q0, qdot0, _ = SYSTEMS[args.system]
    q0 = args.q0 if args.q0 is not None else q0
    qdot0 = args.qdot0 if args.qdot0 is not None else qdot0
    dof = len(SYSTEMS[args.system][1])
    for name, value in (("--q0", q0), ("--qdot0", qdot0)):
        if len(value) != dof:
            raise UsageError(
                f"{name}: {args.system} has {dof} degree(s) of freedom, "
                f"got {len(value)} values"
            )
    return q0, qdot0


def _check(args, system, q0, qdot0) -> None:
    """The checks that need the system: a `UsageError` for settings no solve can
    meet, or whose saved samples this machine cannot hold."""
    if args.t1 / args.dt > MAX_STEPS:
        raise UsageError(
            f"--t1 {args.t1:g} / --dt {args.dt:g} asks for more than {MAX_STEPS:,} "
            "steps: raise --dt or lower --t1"
        )
    fixed = not issubclass(SOLVERS[args.solver], diffrax.AbstractAdaptiveSolver)
    if fixed and args.dt > args.t1:
        raise UsageError(
            f"--dt {args.dt:g} is longer than --t1 {args.t1:g}: {args.solver} "
            "takes fixed steps, and not one fits; lower --dt"
        )
    check_memory([_memory_need(args, dof=q0.shape[0])])
    if not bool(jnp.isfinite(lagrax.energy(system, q0, qdot0))):
        raise UsageError(
            f"--q0 {q0.tolist()}, --qdot0 {qdot0.tolist()}: outside the domain of "
            f"{args.system} (its energy there is not finite)"
        )


def _memory_need(args, *, dof: int) -> tuple[list[str], str, float]:
    """What a run holds in memory, from below, for `check_memory`: the saved
    times, states, energies and energy drifts (float64), and with `--out`, all but
    the drifts as JSON."""
    numbers = 3 + 2 * dof
    per_sample = numbers * ARRAY_BYTES
    what = "the saved samples"
    if args.out is not None:
        per_sample += (numbers - 1) * JSON_BYTES
        what += " and trajectory.json"
    return [f"--samples {args.samples}"], what, args.samples * per_sample


def save_times(args) -> jax.Array:
    """`--samples` times from 0 to `--t1`; for a fixed-step solver, moved to the
    nearest multiples of `--dt` (repeats dropped), so that every saved state is a
    step's own and the energy drift is the solver's, not that of the linear
    interpolation between steps."""
    ts = np.linspace(0.0, args.t1, args.samples)
    if not issubclass(SOLVERS[args.solver], diffrax.AbstractAdaptiveSolver):
        ts = np.unique(np.minimum(np.round(ts / args.dt) * args.dt, args.t1))
    return jnp.asarray(ts)


def run(args) -> int:
    jax.config.update("jax_enable_x64", True)
    constructor, _, _, scale = SYSTEMS[args.system]
    q0, qdot0 = (jnp.asarray(x, dtype=jnp.float64) for x in _initial_state(args))
    system = constructor()
    _check(args, system, q0, qdot0)
    if args.out is not None:
        check_folder(args.out)
        _check_outputs(args.out)
    ts = save_times(args)
    steps = int(args.t1 / args.dt) + 2
    run_once = jax.jit(
        lambda: lagrax.simulate(
            system,
            q0,
            qdot0,
            ts,
            solver=SOLVERS[args.solver](),
            dt0=args.dt,
            rtol=args.rtol,
            atol=args.rtol,
            max_steps=max(steps, 4096) * 4,
            throw=False,
        )
    )
    traj = jax.block_until_ready(run_once())
    start = time.perf_counter()
    traj = jax.block_until_ready(run_once())
    wall = time.perf_counter() - start
    energies = jax.vmap(lagrax.energy, in_axes=(None, 0, 0))(system, traj.q, traj.qdot)
    _check_solve(args, traj, energies)
    drift = jnp.abs(energies - energies[0]) / scale
    print(f"{args.system} with {args.solver}, t in [0, {args.t1}], float64")
    print(f"  final q     = {[round(float(x), 6) for x in traj.q[-1]]}")
    print(f"  final qdot  = {[round(float(x), 6) for x in traj.qdot[-1]]}")
    print(f"  max |ΔE|/{scale:g} = {float(drift.max()):.3e}", end="")
    print(f"   final = {float(drift[-1]):.3e}")
    print(f"  wall time   = {wall:.3f} s (compiled)")
    if args.out is not None:
        _write(args, traj, energies, drift)
    return 0


def _check_solve(args, traj: lagrax.Trajectory, energies) -> None:
    """A `RuntimeError` with lagrax's reason for a failed solve, and, as a last
    guard, for a state or energy on the way that is not finite."""
    what = f"{args.system} with {args.solver} (--dt {args.dt:g})"
    finite = jnp.isfinite(traj.q).all(axis=1) & jnp.isfinite(traj.qdot).all(axis=1)
    finite = finite & jnp.isfinite(energies)
    if bool(traj.result != lagrax.RESULTS.successful):
        where = ""
        if not bool(finite.all()):
            first = int(jnp.argmin(finite))
            where = (
                f" after t = {float(traj.ts[first - 1]):g}" if first else " at t = 0"
            )
        raise RuntimeError(f"{what} failed{where}: {lagrax.RESULTS[traj.result]}")
    if not bool(finite.all()):
        first = float(traj.ts[jnp.argmin(finite)])
        raise RuntimeError(
            f"{what}: the state or its energy is not finite from t = {first:g}; "
            "reduce --dt or --rtol"
        )


def _write(args, traj: lagrax.Trajectory, energies, drift) -> None:
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
    write_atomic(args.out / TRAJECTORY, json.dumps(record).encode("utf-8"))
    _plot(args, traj, drift, args.out / PLOT)
    print(f"  wrote {args.out / TRAJECTORY}")


def _check_outputs(out: pathlib.Path) -> None:
    """A `UsageError` naming what stands where the run would write in `out` and is
    not a plain file to replace: a symbolic link (dangling or not), a folder."""
    for name in (TRAJECTORY, PLOT):
        path = out / name
        if path.is_symlink() or (path.exists() and not path.is_file()):
            what = "a symbolic link" if path.is_symlink() else "not a regular file"
            raise UsageError(
                f"--out {str(out)!r} holds {name}, {what}: lagrax replaces only "
                "regular files; move it away or choose another --out"
            )


def _plot(args, traj: lagrax.Trajectory, drift, path: pathlib.Path) -> None:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return
    fig = Figure(figsize=(7, 6))
    ax_q, ax_e = fig.subplots(2, 1, sharex=True)
    ts, q = np.asarray(traj.ts), np.asarray(traj.q)
    for i in range(q.shape[1]):
        ax_q.plot(ts, q[:, i], label=f"q{i + 1}" if q.shape[1] > 1 else "q")
    ax_q.set_ylabel("q")
    ax_q.set_title(f"{args.system}, {args.solver} (dt {args.dt:g}), float64")
    ax_q.legend(loc="upper right")
    # From the first step (the drift is 0 at t = 0), floored at float64's
    # resolution so that round-off does not stretch the axis down to 0.
    eps = np.finfo(np.float64).eps
    ax_e.semilogy(ts[1:], np.maximum(np.asarray(drift)[1:], eps), label="|E(t) − E(0)|")
    ax_e.axhline(eps, color="gray", lw=0.5, ls=":", label="float64 eps")
    ax_e.set_ylabel("relative energy error")
    ax_e.set_xlabel("t")
    ax_e.legend(loc="lower right")
    fig.tight_layout()
    # Drawn in memory and written by `write_atomic`: `savefig` to a path would
    # write through a link there, and leave half a file if stopped.
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=120)
    write_atomic(path, image.getvalue())
