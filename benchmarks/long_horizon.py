"""Memory and time of a gradient through a long rollout, for each adjoint and solver.

The loss is the mean squared final state of `batch` trajectories of `steps` fixed
steps (dt = 0.01) of a learned-like Lagrangian (the double pendulum plus 0.1 × an MLP
2-64-64-1, float32), differentiated with respect to the network's parameters, with
`diffrax.diffeqsolve` and `SaveAt(t1=True)`. Adjoints:

- `recursive`: Diffrax's default, `RecursiveCheckpointAdjoint()` (about log₂(steps)
  checkpoints, steps recomputed on the backward pass);
- `every step`: `RecursiveCheckpointAdjoint(checkpoints=steps + 1)`, lagrax's
  default (every step stored);
- `backsolve`: `diffrax.BacksolveAdjoint()` (the continuous adjoint, approximate;
  with Tsit5 only: it does not apply to lagrax's solvers);
- `reversible`: `lagrax.ReversibleAdjoint()` (symmetric solvers run backwards).

Measured per configuration, each in its own process (peak RSS is per process):
XLA's memory analysis of the compiled gradient (temporary buffers, beyond its
arguments and outputs), the process's peak RSS, the median time of a gradient after a
compiling call, and the gradient's relative difference from the `every step`
adjoint's of the same solver (computed in the same process when that fits in
`--reference-limit` steps × batch).

Run `python benchmarks/long_horizon.py` (`--quick` for a smoke run); configurations
that exceed `--timeout` seconds are reported as such.
"""

import argparse
import json
import pathlib
import resource
import subprocess
import sys
import time

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import lagrax


try:
    from ._common import environment, load_average, markdown_table, median
except ImportError:  # run as a script: `python benchmarks/long_horizon.py`
    from _common import environment, load_average, markdown_table, median


DT = 0.01
SOLVERS = {
    "VariationalMidpoint": (
        lagrax.VariationalMidpoint,
        ("recursive", "every step", "reversible"),
    ),
    "GaussLegendre(2)": (
        lagrax.GaussLegendre,
        ("recursive", "every step", "reversible"),
    ),
    "Tsit5": (diffrax.Tsit5, ("recursive", "every step", "backsolve")),
}


def model():
    network = lagrax.MLPLagrangian(2, width=64, depth=2, key=jr.key(0))
    return lagrax.systems.DoublePendulum() + 0.1 * network


def adjoint_of(name: str, steps: int) -> diffrax.AbstractAdjoint:
    return {
        "recursive": lambda: diffrax.RecursiveCheckpointAdjoint(),
        "every step": lambda: diffrax.RecursiveCheckpointAdjoint(checkpoints=steps + 1),
        "backsolve": lambda: diffrax.BacksolveAdjoint(),
        "reversible": lambda: lagrax.ReversibleAdjoint(),
    }[name]()


def gradient_fn(solver_name: str, adjoint_name: str, steps: int):
    solver = SOLVERS[solver_name][0]()
    adjoint = adjoint_of(adjoint_name, steps)

    def loss(model, q0, qdot0):
        def one(q0, qdot0):
            sol = diffrax.diffeqsolve(
                lagrax.LagrangianTerm(model),
                solver,
                jnp.float32(0.0),
                jnp.float32(steps * DT),
                jnp.float32(DT),
                (q0, qdot0),
                saveat=diffrax.SaveAt(t1=True),
                stepsize_controller=diffrax.ConstantStepSize(),
                adjoint=adjoint,
                max_steps=steps + 1,
            )
            return jnp.sum(sol.ys[0] ** 2) + jnp.sum(sol.ys[1] ** 2)

        return jnp.mean(jax.vmap(one)(q0, qdot0))

    def gradient(params, static, q0, qdot0):
        return eqx.filter_grad(loss)(eqx.combine(params, static), q0, qdot0)

    return jax.jit(gradient, static_argnums=1)


def states(batch: int):
    # Regular motion near rest, where every adjoint's gradient is meaningful.
    q0 = jr.uniform(jr.key(1), (batch, 2), jnp.float32, -0.5, 0.5)
    return q0, jnp.zeros_like(q0)


def flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def measure_one(config: dict) -> dict:
    """Run one configuration in this process."""
    solver_name, adjoint_name = config["solver"], config["adjoint"]
    steps, batch = config["steps"], config["batch"]
    params, static = eqx.partition(model(), eqx.is_array)
    q0, qdot0 = states(batch)
    compiled = (
        gradient_fn(solver_name, adjoint_name, steps)
        .lower(params, static, q0, qdot0)
        .compile()
    )
    memory = compiled.memory_analysis()
    temp = None if memory is None else int(memory.temp_size_in_bytes)
    start = time.perf_counter()
    g = jax.block_until_ready(compiled(params, q0, qdot0))
    first = time.perf_counter() - start
    times = []
    for _ in range(config["repeats"]):
        start = time.perf_counter()
        jax.block_until_ready(compiled(params, q0, qdot0))
        times.append(time.perf_counter() - start)
    out = dict(
        config,
        temp_bytes=temp,
        peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        seconds=median(times) if times else first,
        finite=bool(np.all(np.isfinite(flat(g)))),
    )
    if config["reference"] and adjoint_name != "every step":
        reference = gradient_fn(solver_name, "every step", steps)(
            params, static, q0, qdot0
        )
        a, b = flat(g), flat(reference)
        out["difference"] = float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
    return out


def run_config(config: dict, timeout: float) -> dict:
    """`measure_one` in a fresh process."""
    command = [sys.executable, __file__, "--one", json.dumps(config)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return dict(config, error=f"over {timeout:.0f} s")
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["?"]
        if any("did not recover the initial state" in line for line in lines):
            return dict(config, error="raised: reconstruction check failed")
        errors = [line for line in lines if "Error" in line] or lines
        return dict(config, error=errors[-1][:120])
    return json.loads(done.stdout.strip().splitlines()[-1])


def mib(x) -> str:
    return "—" if x is None else f"{x / 2**20:,.1f}"


def table(results: list[dict]) -> str:
    rows = []
    for r in results:
        if "error" in r:
            cells = [r["error"], "", "", ""]
        else:
            difference = r.get("difference")
            cells = [
                mib(r["temp_bytes"]),
                mib(r["peak_rss_bytes"]),
                f"{r['seconds']:.3g}",
                "" if difference is None else f"{difference:.1e}",
            ]
        rows.append([r["solver"], r["adjoint"], r["steps"], r["batch"], *cells])
    headers = [
        "solver",
        "adjoint",
        "steps",
        "batch",
        "XLA temp (MiB)",
        "peak RSS (MiB)",
        "gradient (s)",
        "vs every step",
    ]
    return markdown_table(headers, rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument(
        "--steps", default=None, help="comma-separated step counts (default 1000,10000)"
    )
    parser.add_argument(
        "--batch", default=None, help="comma-separated batch sizes (default 16,1024)"
    )
    parser.add_argument(
        "--solvers", default=",".join(SOLVERS), help="comma-separated solvers"
    )
    parser.add_argument(
        "--adjoints",
        default="recursive,every step,backsolve,reversible",
        help="comma-separated adjoints (each solver runs those that apply to it)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats")
    parser.add_argument(
        "--reference-limit",
        type=int,
        default=2_000_000,
        help="compare with the every-step gradient up to this steps × batch",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="per config (s)")
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path("results/bench"),
        help="folder for long_horizon.md and long_horizon.json (default results/bench)",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one is not None:
        print(json.dumps(measure_one(json.loads(args.one))))
        return

    steps = args.steps or ("100,1000" if args.quick else "1000,10000")
    batches = args.batch or ("16" if args.quick else "16,1024")
    steps = [int(s) for s in steps.split(",")]
    batches = [int(b) for b in batches.split(",")]
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    results = []
    print(environment(), flush=True)
    for solver in args.solvers.split(","):
        for n in steps:
            for batch in batches:
                for adjoint in SOLVERS[solver][1]:
                    if adjoint not in args.adjoints.split(","):
                        continue
                    config = dict(
                        solver=solver,
                        adjoint=adjoint,
                        steps=n,
                        batch=batch,
                        repeats=repeats if n * batch <= 1_000_000 else 1,
                        reference=n * batch <= args.reference_limit,
                    )
                    result = run_config(config, args.timeout)
                    results.append(result)
                    print(json.dumps(result), flush=True)
    text = f"{environment()}\nload average {load_average()}\n\n{table(results)}\n"
    print("\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "long_horizon.md").write_text(text)
    (args.out / "long_horizon.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
