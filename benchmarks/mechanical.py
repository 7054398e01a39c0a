"""Speed and training reliability of `MechanicalLagrangian` against `MLPLagrangian`.

`lagrax.MechanicalLagrangian` (`L = ½ q̇ᵀ M(q) q̇ − V(q)`, `M = C Cᵀ + εI` from an
MLP) takes a structured path to `q̈`: `M` and its JVP along `q̇`, one gradient of
`L` in `q`, one small solve. `lagrax.MLPLagrangian` (the paper's black box) goes
through its hand-written batched jet. Both on the double pendulum (dof 2, angles
fed as `(cos q, sin q)`, softplus), four sizes in two parameter-matched pairs:
Mechanical 64×2 (9.2k parameters) with MLP 64×3 (8.8k), and Mechanical 128×2
(34.8k) with MLP 128×3 (34.0k: the width and depth of `lagrax reproduce
double-pendulum`'s LNN; the paper's own network was 600 wide).

Measured, in one run:

- accelerations per second: `eqx.filter_jit(jax.vmap(lagrax.acceleration,
  (None, 0, 0)))` on a batch of 1024 states (`--batch`), float32 and float64;
- one training step: `eqx.filter_value_and_grad(lagrax.acceleration_loss)` under
  `eqx.filter_jit` (value and gradient, no optimizer update) at batches 256 and
  1024 (`--train-batches`), float32 and float64;
- FLOPs per state from XLA's cost analysis, also as multiples of the same model's
  forward pass `L(q, q̇)`;
- training reliability: the double-pendulum experiment's defaults
  (`lagrax.experiments.double_pendulum.Settings()`: its states, data sizes, batch,
  learning rate and one-cycle Adam) but WITHOUT the mass-matrix definiteness
  penalty and WITHOUT gradient clipping, for `--seeds` seeds each of MLP 128×3
  (the experiment's LNN, initialized as there) and Mechanical 128×2, both on the
  same data and minibatches per seed. A seed trains when its held-out L1
  acceleration error (10 000 test states drawn as the experiment draws them) is
  below 0.2; a run that `lagrax.fit` stops after 100 consecutive non-finite steps
  counts as failed. The table also gives the error of predicting `q̈ = 0` (what a
  stuck model scores) and each run's held-out error at every tenth of training.
  `--reliability-steps` (default the experiment's 20 000; about 5 minutes per run
  on 2 loaded cores) shortens it; the one-cycle schedule spans whatever steps are
  run, so a shortened run is a complete but shorter schedule.

Speed: all models of one case are timed in the same `time_interleaved` call
(compilation and warm-up excluded, `jax.block_until_ready`, shuffled rounds),
reporting the median and the minimum over `--repeats` rounds; the machines here are
shared, so only same-run ratios mean anything, and on a loaded machine the
minimum is the steadier number. States are drawn as in the experiment (energy at
most the largest potential energy) with exact accelerations.

Run `python benchmarks/mechanical.py` (or `lagrax bench mechanical`; the speed part
takes about 5 minutes on 2 cores, the reliability part 10 runs of
`--reliability-steps`); `--quick` is a smoke run of a few minutes, mostly
compilation, with small models, one seed and 30 training steps, whose numbers are
not judged. Tables go to stdout and to `--out` (`mechanical.md`,
`mechanical.json`).
"""

import argparse
import dataclasses
import json
import math
import pathlib
import sys
import time
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

import lagrax
from lagrax.experiments import double_pendulum


try:
    from ._common import (
        compiled_flops,
        environment,
        load_average,
        markdown_table,
        median,
        time_interleaved,
    )
except ImportError:  # run as a script: `python benchmarks/mechanical.py`
    from _common import (
        compiled_flops,
        environment,
        load_average,
        markdown_table,
        median,
        time_interleaved,
    )


ANGLES = (0, 1)
THRESHOLD = 0.2
DTYPES = {"float32": jnp.float32, "float64": jnp.float64}


def mechanical(width: int, depth: int) -> Callable:
    def make(dtype, key):
        return lagrax.MechanicalLagrangian(
            2, angles=ANGLES, width=width, depth=depth, dtype=dtype, key=key
        )

    return make


def mlp(width: int, depth: int) -> Callable:
    def make(dtype, key):
        return lagrax.MLPLagrangian(
            2, angles=ANGLES, width=width, depth=depth, dtype=dtype, key=key
        )

    return make


# Each model with its parameter-matched counterpart of the other kind.
MODELS = {
    "Mechanical 64×2": mechanical(64, 2),
    "Mechanical 128×2": mechanical(128, 2),
    "MLP 64×3": mlp(64, 3),
    "MLP 128×3": mlp(128, 3),
}
MATCHED = {
    "Mechanical 64×2": "MLP 64×3",
    "MLP 64×3": "Mechanical 64×2",
    "Mechanical 128×2": "MLP 128×3",
    "MLP 128×3": "Mechanical 128×2",
}
QUICK_MODELS = {
    "Mechanical 16×2": mechanical(16, 2),
    "MLP 16×3": mlp(16, 3),
}
QUICK_MATCHED = {"Mechanical 16×2": "MLP 16×3", "MLP 16×3": "Mechanical 16×2"}


def finite_or_none(tree):
    """`tree` with NaN and infinities replaced by None (JSON has neither)."""
    if isinstance(tree, dict):
        return {k: finite_or_none(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [finite_or_none(v) for v in tree]
    if isinstance(tree, float) and not math.isfinite(tree):
        return None
    return tree


def parameter_count(model) -> int:
    leaves = jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))
    return sum(leaf.size for leaf in leaves)


def states(num: int, seed: int) -> lagrax.AccelerationData:
    """`num` double-pendulum states reachable from rest and their exact
    accelerations (float32), drawn as the experiment draws its data."""
    system = lagrax.systems.DoublePendulum()
    return double_pendulum.accelerations(system, num, jr.key(seed), "reachable")


# ------------------------------------------------------------------------- speed


def flops_per_state(fn, model, data: lagrax.AccelerationData) -> float:
    """FLOPs per state of `fn(params, static, data)` (XLA's cost analysis)."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    flops = compiled_flops(lambda p, d: fn(p, static, d), params, data)
    return flops / data.q.shape[0]


def batched_acceleration(params, static, data):
    model = eqx.combine(params, static)
    return jax.vmap(lagrax.acceleration, (None, 0, 0))(model, data.q, data.qdot)


def batched_forward(params, static, data):
    return jax.vmap(eqx.combine(params, static))(data.q, data.qdot)


def loss_and_grad(params, static, data):
    def loss(params):
        return lagrax.acceleration_loss(eqx.combine(params, static), data)

    return jax.value_and_grad(loss)(params)


_accelerate = eqx.filter_jit(jax.vmap(lagrax.acceleration, (None, 0, 0)))
_loss_and_grad = eqx.filter_jit(eqx.filter_value_and_grad(lagrax.acceleration_loss))
# case: (what is timed, the same computation for XLA's FLOP count)
CASES = {
    "accelerations": (
        lambda model, data: _accelerate(model, data.q, data.qdot),
        batched_acceleration,
    ),
    "train step": (_loss_and_grad, loss_and_grad),
}


def speed_rows(
    case: str, models, matched, data, dtype_name: str, repeats: int, flops: dict
) -> list[dict]:
    """Time `case` for every model on the batch `data`, interleaved. FLOPs per
    state do not depend on the dtype or the batch: counted once per model and
    case, into `flops`."""
    call, cost = CASES[case]
    data = lagrax.cast(data, DTYPES[dtype_name])
    batch = data.q.shape[0]
    built = {name: make(DTYPES[dtype_name], jr.key(1)) for name, make in models.items()}
    fns = {name: (lambda m=m: call(m, data)) for name, m in built.items()}
    for name, fn in fns.items():
        leaves = jax.tree.leaves(fn())
        if not all(bool(jnp.all(jnp.isfinite(x))) for x in leaves):
            raise RuntimeError(f"{name}: non-finite {case} at these states")
    samples = time_interleaved(fns, repeats=repeats)
    times = {name: median(s) for name, s in samples.items()}
    best = {name: min(s) for name, s in samples.items()}
    rows = []
    for name, model in built.items():
        if (case, name) not in flops:
            flops[case, name] = flops_per_state(cost, model, data)
            flops["forward", name] = flops_per_state(batched_forward, model, data)
        rows.append(
            dict(
                case=case,
                dtype=dtype_name,
                batch=batch,
                model=name,
                parameters=parameter_count(model),
                median_s=times[name],
                min_s=best[name],
                states_per_s=batch / times[name],
                flops_per_state=flops[case, name],
                forward_passes=flops[case, name] / flops["forward", name],
                vs_matched=times[matched[name]] / times[name],
                vs_matched_min=best[matched[name]] / best[name],
            )
        )
    return rows


def speed_table(rows: list[dict]) -> str:
    headers = [
        "case",
        "dtype",
        "batch",
        "model",
        "params",
        "median ms",
        "min ms",
        "states/s (median)",
        "kFLOP/state",
        "× forward",
        "vs matched (of mins)",
    ]
    table = [
        [
            r["case"],
            r["dtype"],
            r["batch"],
            r["model"],
            f"{r['parameters']:,}",
            f"{1e3 * r['median_s']:.2f}",
            f"{1e3 * r['min_s']:.2f}",
            f"{r['states_per_s']:,.0f}",
            f"{r['flops_per_state'] / 1e3:.0f}",
            f"{r['forward_passes']:.1f}",
            f"{r['vs_matched']:.2f}× ({r['vs_matched_min']:.2f}×)",
        ]
        for r in rows
    ]
    return markdown_table(headers, table)


# ------------------------------------------------------------------- reliability


def reliability_models(settings, quick: bool) -> dict[str, eqx.Module]:
    """The experiment's LNN (as `double_pendulum.models` initializes it) and a
    parameter-matched `MechanicalLagrangian`, float32, from `settings.seed`."""
    width = 16 if quick else 128
    lnn = double_pendulum.models(settings)["lnn"]
    key = jr.fold_in(jr.key(settings.seed), 2)
    return {
        f"MLP {width}×3": lnn,
        f"Mechanical {width}×2": mechanical(width, 2)(jnp.float32, key),
    }


def train_once(model, train, test, settings, optimizer) -> dict:
    """The experiment's training (`lagrax.fit` on the L1 acceleration loss, Adam on
    a one-cycle schedule) without the definiteness penalty or clipping."""
    start = time.perf_counter()
    try:
        model, history = lagrax.fit(
            model,
            lagrax.acceleration_loss,
            train,
            optimizer=optimizer,
            steps=settings.steps,
            batch_size=settings.batch_size,
            key=jr.fold_in(jr.key(settings.seed), 1),
            test_data=test,
            progress=False,
        )
    except RuntimeError as error:  # 100 consecutive non-finite steps
        return dict(
            test_l1=float("nan"),
            skipped=None,
            eval_loss=[],
            seconds=time.perf_counter() - start,
            error=str(error).splitlines()[0],
        )
    return dict(
        test_l1=float(lagrax.acceleration_loss(model, test)),
        skipped=int(history.num_skipped),
        eval_loss=[float(x) for x in np.asarray(history.eval_loss)],
        seconds=time.perf_counter() - start,
        error=None,
    )


def reliability_runs(seeds: int, steps: int, quick: bool) -> list[dict]:
    base = double_pendulum.Settings(rollout_steps=0, steps=steps)
    if quick:
        base = double_pendulum.Settings(
            rollout_steps=0, steps=steps, width=16, train_size=2048, batch_size=64
        )
    test_size = 1024 if quick else double_pendulum.TEST_SIZE
    system = lagrax.systems.DoublePendulum()
    # One optimizer object for every run: `lagrax.fit` compiles its step once per
    # loss and optimizer, so the seeds after the first reuse the compilation.
    optimizer = optax.adam(optax.cosine_onecycle_schedule(steps, base.lr))
    runs = []
    for seed in range(seeds):
        settings = dataclasses.replace(base, seed=seed, clip=0.0, definiteness=0.0)
        train_key, test_key = jr.split(jr.key(seed))
        train = double_pendulum.accelerations(
            system, settings.train_size, train_key, settings.states
        )
        test = double_pendulum.accelerations(
            system, test_size, test_key, settings.states
        )
        # The error of predicting q̈ = 0: what a stuck model scores.
        zero = float(jnp.mean(jnp.abs(test.qddot)))
        for name, model in reliability_models(settings, quick).items():
            run = dict(model=name, seed=seed, steps=steps, zero_predictor_l1=zero)
            run.update(train_once(model, train, test, settings, optimizer))
            run["trained"] = bool(run["test_l1"] < THRESHOLD)
            print(
                f"  {name}, seed {seed}: test L1 {run['test_l1']:.4g}, "
                f"{run['seconds']:.0f} s"
                + (f" ({run['error']})" if run["error"] else ""),
                flush=True,
            )
            runs.append(run)
    return runs


def reliability_tables(runs: list[dict]) -> str:
    seeds = sorted({r["seed"] for r in runs})
    names = list(dict.fromkeys(r["model"] for r in runs))
    by = {(r["model"], r["seed"]): r for r in runs}

    def cell(r):
        text = f"{r['test_l1']:.3g}" + (" ✓" if r["trained"] else " ✗")
        if r["error"]:
            text += " (stopped: non-finite)"
        elif r["skipped"]:
            text += f" ({r['skipped']} skipped)"
        return text

    per_seed = markdown_table(
        ["model", *(f"seed {s}" for s in seeds), f"trained (< {THRESHOLD})"],
        [
            [
                name,
                *(cell(by[name, s]) for s in seeds),
                f"{sum(by[name, s]['trained'] for s in seeds)} / {len(seeds)}",
            ]
            for name in names
        ]
        + [
            [
                "(predicting q̈ = 0)",
                *(f"{by[names[0], s]['zero_predictor_l1']:.3g}" for s in seeds),
                "",
            ]
        ],
    )
    curves = markdown_table(
        ["model", "seed", "held-out L1 error at each tenth of training", "s"],
        [
            [
                r["model"],
                r["seed"],
                " ".join(f"{x:.3g}" for x in r["eval_loss"]) or "—",
                f"{r['seconds']:.0f}",
            ]
            for r in runs
        ],
    )
    return per_seed + "\n\n" + curves


# -------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, not judged")
    parser.add_argument("--batch", type=int, default=1024, help="acceleration batch")
    parser.add_argument(
        "--train-batches", default="256,1024", help="training-step batches"
    )
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds")
    parser.add_argument("--seeds", type=int, default=5, help="reliability seeds")
    parser.add_argument(
        "--reliability-steps",
        type=int,
        default=double_pendulum.Settings().steps,
        help="training steps per reliability run (default the experiment's)",
    )
    parser.add_argument(
        "--no-speed", action="store_true", help="skip the speed measurements"
    )
    parser.add_argument(
        "--no-reliability", action="store_true", help="skip the training runs"
    )
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path("results/bench"),
        help="folder for mechanical.md and mechanical.json (default results/bench)",
    )
    args = parser.parse_args(argv)
    # The experiment draws its states in float64; every model here has an
    # explicit dtype, so this changes none of the float32 computations.
    jax.config.update("jax_enable_x64", True)
    models, matched = (QUICK_MODELS, QUICK_MATCHED) if args.quick else (MODELS, MATCHED)
    batch = 64 if args.quick else args.batch
    train_batches = (
        (32,) if args.quick else tuple(map(int, args.train_batches.split(",")))
    )
    dtypes = args.dtypes.split(",")
    repeats = args.repeats or (3 if args.quick else 30)
    steps = 30 if args.quick else args.reliability_steps
    seeds = 1 if args.quick else args.seeds

    header = [environment(), f"load average at start: {load_average()}"]
    print("\n".join(header), flush=True)
    sections = []
    record: dict = dict(environment=environment(), argv=sys.argv[1:])
    if not args.no_speed:
        rows, flops = [], {}
        for dtype in dtypes:
            rows += speed_rows(
                "accelerations",
                models,
                matched,
                states(batch, 10),
                dtype,
                repeats,
                flops,
            )
        for dtype in dtypes:
            for size in train_batches:
                data = states(size, 20)
                rows += speed_rows(
                    "train step", models, matched, data, dtype, repeats, flops
                )
        record["speed"] = rows
        sections.append(
            (
                f"Speed (medians over {repeats} interleaved rounds, compile "
                "excluded; 'vs matched': the parameter-matched counterpart's time "
                "over this model's, > 1 = this one faster)",
                speed_table(rows),
            )
        )
    if not args.no_reliability:
        print(
            f"reliability: {seeds} seed(s) × 2 models × {steps} steps, no "
            "definiteness penalty, no clipping",
            flush=True,
        )
        runs = reliability_runs(seeds, steps, args.quick)
        record["reliability"] = dict(threshold=THRESHOLD, steps=steps, runs=runs)
        sections.append(
            (
                f"Training reliability: double-pendulum defaults, {steps} steps, "
                f"no definiteness penalty, no gradient clipping (✓: held-out L1 "
                f"acceleration error < {THRESHOLD})",
                reliability_tables(runs),
            )
        )
    header.append(f"load average at end: {load_average()}")
    print(header[-1])
    text = "\n\n".join(f"## {title}\n\n{table}" for title, table in sections)
    print("\n" + text, flush=True)
    if args.quick:
        print("\n(--quick: small models and sizes, numbers not judged)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mechanical.md").write_text("\n".join(header) + "\n\n" + text + "\n")
    (args.out / "mechanical.json").write_text(
        json.dumps(finite_or_none(record), indent=2) + "\n"
    )
    print(f"wrote {args.out / 'mechanical.md'} and {args.out / 'mechanical.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
