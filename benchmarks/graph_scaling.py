"""Scaling of lagrax's sparse path for graph Lagrangians with the number of nodes.

For an `AbstractGraphLagrangian`, `lagrax.acceleration` takes a sparse path: the
nonzero blocks of the mass matrix from a few colour-seeded Hessian-vector products,
then a sparse solve (block by block for `Wave1D`'s diagonal mass matrix, a direct
tridiagonal one for the learned model's on a ring), linear in the number of nodes
`N`. The baseline, measured in the same run, is the same model wrapped as a plain
function `lambda q, qdot: model(q, qdot)`, which lagrax treats like any other
Lagrangian: the dense path, `N + 1` Hessian-vector products and an `O(N³)`
Cholesky/LU factorization of the `N × N` mass matrix.

Two models on a ring of `N` nodes (`node_dim=1`), `N` in 64, 256, 1024, 4096, 16384:

- `lagrax.systems.Wave1D(N)`, the discretized wave equation;
- a learned `lagrax.GraphLagrangian` (width 32, depth 2, `translation_invariant`),
  built once at `N = 64` and moved to each ring with `with_graph` (the same
  parameters at every `N`). A random initialization often has an indefinite,
  nearly singular mass matrix, on which any solve is meaningless; the first key,
  from 0 up, whose mass matrix is positive definite at the benchmark's states is
  used, as a trained model's would be.

Measured, compile excluded (`jax.jit(...).lower(...).compile()` ahead of time),
results waited for with `jax.block_until_ready`, sparse and dense interleaved,
medians reported:

1. one batched acceleration: 8 random smooth states (a few low Fourier modes; the
   same 8 fields at every `N`, sampled at its nodes), `jax.vmap`, jitted, for both
   models, sparse vs dense;
2. one training step of the `GraphLagrangian`: `lagrax.acceleration_loss` (L1) and
   one `optax.adam` update on a batch of 8, targets from
   `lagrax.acceleration_data(Wave1D(N), q, qdot)`, sparse vs dense;
3. the memory of the compiled sparse acceleration (and training step), and of the
   dense one where it is compiled: temp + argument + output bytes of XLA's
   `compiled.memory_analysis()`;
4. the fitted scaling exponents (least-squares slope of log value vs log N over
   `N ≥ 1024`) of the sparse acceleration, training step and memory, and the
   speedup sparse/dense at `N = 4096`, or at the largest `N` where dense ran.

The dense path runs only while it fits: up to `N = 4096`, and not where one call
is estimated to take over 60 s (extrapolated from the fastest calls at the two
largest smaller sizes, with their exponent clamped to [2, 3]: the dense path does
`N` Hessian-vector products of cost `∝ N` and an `O(N³)` factorization), or where
its compiled memory exceeds half the memory available; such cells show "—" with
the reason.

The dense batch runs its states one after another (`jax.lax.map`), not with
`jax.vmap`: with jaxlib 0.10.2 on a 2-core machine a vmapped dense acceleration at
`N = 1024` hangs for ever, its batched Cholesky and LU kernels
(`lapack_spotrf_ffi`, `lapack_sgetrf_ffi`) running at once on XLA's two pool
threads and each waiting for the other's thread (XLA removes the
`optimization_barrier` that `lagrax._linalg` puts between them); unbatched kernels
run inline. Per state the dense work is the same either way. Those kernels call
scipy's OpenBLAS, whose own threads, on a loaded 2-core machine, made the dense
path 10–100× slower and erratic; the benchmark sets OpenBLAS to one thread
(`--blas-threads 0` keeps its default), the faster and steadier baseline here.

Targets (not judged under `--quick`): sparse exponents ≤ 1.1 (time and memory
linear in `N`), and sparse at least 100× faster than dense at `N = 4096`.

A second part (`--part chain` runs it alone) times the constrained accelerations
of a chain pendulum in Cartesian coordinates (issue 32): `N` bodies of unit mass
joined by `N` unit rods (the first to a pivot), `N` in 10, 100, 1000, 10000 (dense
skipped where the rule below estimates one call above `--dense-limit`), at one state
(angles and angular velocities i.i.d. N(0, 0.5²), on the constraints by
construction). Sparse: the free bodies as a graph Lagrangian
(`systems.SpringNetwork` without springs, under gravity) with the rods as a
`lagrax.EdgeConstraint`, whose KKT system lagrax solves by its Schur complement,
tridiagonal on the chain's links. Dense, the baseline: the same Lagrangian and
constraint as plain functions, so `G` by `2N` forward-mode tangents and the
`3N × 3N` saddle-point matrix factorized by LAPACK. Target: the sparse exponent
over N ≥ 1000 ≤ 1.1.

Run `python benchmarks/graph_scaling.py` (`--part ring` or `--part chain` for one
part; `--dtype float64` for double precision;
`--quick` for a short smoke run with `N` in 64, 256, 1024, whose targets are not
judged). The machines here are shared: only same-run ratios mean anything.
"""

import argparse
import math
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


try:
    from ._common import (
        environment,
        load_average,
        markdown_table,
        median,
        time_interleaved,
    )
except ImportError:  # run as a script: `python benchmarks/graph_scaling.py`
    from _common import (
        environment,
        load_average,
        markdown_table,
        median,
        time_interleaved,
    )


SIZES = (64, 256, 1024, 4096, 16384)
QUICK_SIZES = (64, 256, 1024)
BATCH = 8
WIDTH, DEPTH = 32, 2
MODES = 4  # Fourier modes of the random smooth states
STATE_SEED = 1  # the same smooth fields at every N
LEARNING_RATE = 1e-3
FIT_FROM = 1024  # exponents are fitted over N ≥ this
SPEEDUP_AT = 4096
TARGET_EXPONENT = 1.1
TARGET_SPEEDUP = 100.0
CHAIN_LINKS = (10, 100, 1000, 10000)
CHAIN_SEED = 2


# ------------------------------------------------------------------------ setup


def set_blas_threads(threads: int) -> str:
    """Set the thread count of every OpenBLAS loaded in this process (jaxlib's CPU
    LAPACK kernels, hence the dense path's factorizations, call scipy's), and say
    what was done. On a loaded 2-core machine OpenBLAS's own threads, competing
    with XLA's and with other processes for the cores, made the dense path 10–100×
    slower and its timings erratic; one thread keeps the baseline fast and steady.
    `threads = 0` leaves the libraries alone."""
    import ctypes

    import scipy.linalg  # noqa: F401  (loads the OpenBLAS that jaxlib's LAPACK uses)

    if threads <= 0:
        return "OpenBLAS threads: left at the libraries' defaults"
    try:
        with open("/proc/self/maps") as f:
            paths = {
                line.split()[-1]
                for line in f
                if "openblas" in line.rsplit("/", 1)[-1].lower()
            }
    except OSError:
        return "OpenBLAS threads: unchanged (no /proc/self/maps)"
    done = []
    for path in sorted(paths):
        library = ctypes.CDLL(path)
        for name in (
            "scipy_openblas_set_num_threads",
            "scipy_openblas_set_num_threads64_",
            "openblas_set_num_threads",
            "openblas_set_num_threads64_",
        ):
            setter = getattr(library, name, None)
            if setter is not None:
                setter(ctypes.c_int(threads))
                done.append(path.rsplit("/", 1)[-1])
                break
    return (
        f"OpenBLAS threads set to {threads} in {', '.join(done) or 'no library'} "
        "(the dense path's LAPACK; --blas-threads 0 leaves the defaults)"
    )


def ring(n: int) -> tuple[np.ndarray, np.ndarray]:
    nodes = np.arange(n)
    return nodes, (nodes + 1) % n


def smooth_states(n: int, batch: int, key, dtype) -> tuple[jax.Array, jax.Array]:
    """`batch` random smooth fields on the ring: Fourier modes 1…MODES, amplitude
    `1/k`, for `q` and `q̇` alike; for a given `key`, the same functions of
    `x = i/N` at every `N`, sampled at the `N` nodes."""
    x = np.arange(n) / n
    k = np.arange(1, MODES + 1)
    basis = np.concatenate(
        [np.cos(2 * np.pi * k[:, None] * x), np.sin(2 * np.pi * k[:, None] * x)]
    )  # (2·MODES, n)
    scale = np.concatenate([1 / k, 1 / k])
    kq, kv = jr.split(key)
    fields = []
    for kk in (kq, kv):
        amplitudes = np.asarray(jr.normal(kk, (batch, 2 * MODES), jnp.float32)) * scale
        fields.append(jnp.asarray(amplitudes @ basis, dtype))
    return fields[0], fields[1]


def learned_model(dtype, max_tries: int = 32) -> tuple[lagrax.GraphLagrangian, str]:
    """The first `GraphLagrangian` on the 64-ring, keys 0, 1, …, whose mass matrix is
    positive definite at the benchmark's states; and a line describing it."""
    senders, receivers = ring(64)
    q, qdot = smooth_states(64, BATCH, jr.key(STATE_SEED), dtype)
    for seed in range(max_tries):
        model = lagrax.GraphLagrangian(
            senders,
            receivers,
            num_nodes=64,
            node_dim=1,
            width=WIDTH,
            depth=DEPTH,
            translation_invariant=True,
            dtype=dtype,
            key=jr.key(seed),
        )
        eigenvalues = np.concatenate(
            [
                np.linalg.eigvalsh(
                    np.asarray(lagrax.graph_mass_matrix(model, a, b).todense())
                )
                for a, b in zip(q, qdot)
            ]
        )
        if eigenvalues.min() > 0:
            return model, (
                f"GraphLagrangian key {seed} (the first of keys 0–{seed} with a "
                f"positive definite mass matrix at the N = 64 states; eigenvalues "
                f"{eigenvalues.min():.3f}–{eigenvalues.max():.3f})"
            )
    raise RuntimeError(f"no key below {max_tries} gives a positive definite model")


def on_ring(model: lagrax.GraphLagrangian, n: int) -> lagrax.GraphLagrangian:
    senders, receivers = ring(n)
    return model.with_graph(senders, receivers, num_nodes=n)


# ------------------------------------------------------------------- functions


def as_plain_function(model) -> Callable:
    """The model as a plain callable: lagrax then takes its dense path."""
    return lambda q, qdot: model(q, qdot)


def batched_acceleration(model, dense: bool):
    """`(fn, params)`: `fn(params, q, qdot)` gives the batch's accelerations."""
    params, static = eqx.partition(model, eqx.is_array)

    def one(params, q, qdot):
        model = eqx.combine(params, static)
        lagrangian = as_plain_function(model) if dense else model
        return lagrax.acceleration(lagrangian, q, qdot)

    if dense:  # one state at a time: see the module docstring (LAPACK deadlock)

        def fn(params, q, qdot):
            return jax.lax.map(lambda s: one(params, *s), (q, qdot))

    else:

        def fn(params, q, qdot):
            return jax.vmap(one, in_axes=(None, 0, 0))(params, q, qdot)

    return fn, params


def training_step(model, dense: bool):
    """`(step, (params, opt_state))`: the L1 acceleration loss and one Adam update."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    optimizer = optax.adam(LEARNING_RATE)

    def loss(params, data):
        model = eqx.combine(params, static)
        if not dense:
            return lagrax.acceleration_loss(model, data)
        # The same loss, one state at a time (each a batch of one): the mean of the
        # per-state means is the batch mean, all states having N coordinates.
        plain = as_plain_function(model)
        one = jax.tree.map(lambda x: x[:, None], data)  # (batch, 1, N) leaves
        return jnp.mean(jax.lax.map(lambda d: lagrax.acceleration_loss(plain, d), one))

    def step(params, opt_state, data):
        value, grads = jax.value_and_grad(loss)(params, data)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return step, (params, optimizer.init(params))


def compile_with_memory(fn: Callable, *args):
    """`(compiled, bytes)`: `jax.jit(fn)` compiled for `args`, and its memory
    (temp + argument + output bytes of XLA's memory analysis)."""
    compiled = jax.jit(fn).lower(*args).compile()
    analysis = compiled.memory_analysis()
    size = (
        analysis.temp_size_in_bytes
        + analysis.argument_size_in_bytes
        + analysis.output_size_in_bytes
    )
    return compiled, int(size)


# ----------------------------------------------------------------- the rule


def available_memory() -> int:
    """Bytes of memory available now (MemAvailable), or a large number."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 50


def estimate_seconds(history: dict[int, float], n: int) -> float | None:
    """One dense call at `n`, extrapolated from the fastest calls at the two largest
    measured sizes with their local exponent clamped to [2, 3] (`N` Hessian-vector
    products of cost `∝ N`, an `O(N³)` factorization); from one size with exponent 3;
    `None` with none measured. The fastest calls, and the clamp, because outside load
    inflates single samples many times over."""
    sizes = sorted(history)
    if not sizes:
        return None
    last = sizes[-1]
    if len(sizes) == 1:
        exponent = 3.0
    else:
        prev = sizes[-2]
        exponent = math.log(history[last] / history[prev]) / math.log(last / prev)
        exponent = min(max(exponent, 2.0), 3.0)
    return history[last] * (n / last) ** exponent


def dense_skip_reason(
    history: dict[int, float], n: int, args, memory: int | None = None
) -> str | None:
    if n > args.dense_max_n:
        return f"N > {args.dense_max_n}"
    estimate = estimate_seconds(history, n)
    if estimate is not None and estimate > args.dense_limit:
        return f"est. {estimate:,.0f} s/call"
    if memory is not None and memory > 0.5 * available_memory():
        return f"{memory / 2**30:.1f} GiB > ½ available"
    return None


# -------------------------------------------------------------------- measuring


def relative_error(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def repeats_for(seconds: float, args) -> int:
    """Fewer rounds where the dense call is slow: about `--dense-budget` seconds of
    dense calls per cell, at least 3."""
    if args.quick:
        return args.repeats
    return int(min(args.repeats, max(3, args.dense_budget // max(seconds, 1e-9))))


def measure(
    case: dict,
    sparse: Callable,
    dense: Callable | None,
    args,
    compared: Callable = lambda out: out,
) -> None:
    """Fill `case` with timings of the zero-argument `sparse` (and `dense`), and the
    relative difference of `compared(output)` between them."""
    out_sparse = jax.block_until_ready(sparse())  # warm-up, and the reference
    fns = {"sparse": sparse}
    repeats = args.repeats
    if dense is not None:
        start = time.perf_counter()
        out_dense = jax.block_until_ready(dense())
        first_dense = time.perf_counter() - start
        case["agreement"] = relative_error(compared(out_sparse), compared(out_dense))
        fns["dense"] = dense
        repeats = repeats_for(first_dense, args)
    samples = time_interleaved(fns, repeats=repeats, warmup=0)
    case["repeats"] = repeats
    case["sparse"] = samples["sparse"]
    if dense is not None:
        case["dense"] = samples["dense"]


def record(case, sparse, dense, args, history, cases) -> None:
    """Time one case (`measure`), remember the dense time at its size for the
    next size's skip decision, and add it to `cases`."""
    measure(case, sparse, dense, args)
    if "dense" in case:
        history[case["n"]] = min(case["dense"])
    cases.append(case)


def acceleration_cases(name, model, n, dtype, args, history, cases, key):
    q, qdot = smooth_states(n, BATCH, key, dtype)
    fn, params = batched_acceleration(model, dense=False)
    compiled, memory = compile_with_memory(fn, params, q, qdot)
    case = dict(model=name, n=n, sparse_memory=memory)
    reason = dense_skip_reason(history, n, args)
    dense = None
    if n <= args.dense_max_n:
        # Compiled even where it is not run, for its memory (compiling is cheap).
        dense_fn, _ = batched_acceleration(model, dense=True)
        dense_compiled, dense_memory = compile_with_memory(dense_fn, params, q, qdot)
        case["dense_memory"] = dense_memory
        reason = reason or dense_skip_reason(history, n, args, dense_memory)
        if reason is None:
            dense = lambda: dense_compiled(params, q, qdot)  # noqa: E731
    case["dense_skip"] = reason
    record(case, lambda: compiled(params, q, qdot), dense, args, history, cases)
    print(progress(case, "acceleration"), flush=True)


def training_cases(name, model, n, dtype, args, history, cases, key):
    q, qdot = smooth_states(n, BATCH, key, dtype)
    data = lagrax.acceleration_data(lagrax.systems.Wave1D(n), q, qdot)
    step, state = training_step(model, dense=False)
    compiled, memory = compile_with_memory(step, *state, data)
    case = dict(model=name, n=n, sparse_memory=memory)
    reason = dense_skip_reason(history, n, args)
    dense = None
    if reason is None:
        dense_step, dense_state = training_step(model, dense=True)
        dense_compiled, dense_memory = compile_with_memory(
            dense_step, *dense_state, data
        )
        case["dense_memory"] = dense_memory
        reason = dense_skip_reason(history, n, args, dense_memory)
        if reason is None:
            dense = lambda: dense_compiled(*dense_state, data)  # noqa: E731
    case["dense_skip"] = reason
    # Compare the loss values: after one Adam step (≈ lr · sign(gradient)) the
    # parameters barely depend on the gradient's size.
    measure(
        case,
        lambda: compiled(*state, data),
        dense,
        args,
        compared=lambda out: out[2],
    )
    if "dense" in case:
        history[n] = min(case["dense"])
    cases.append(case)
    print(progress(case, "training step"), flush=True)


def constrained_chain(n: int, dtype):
    """`(model, links, q, qdot)`: `N` unit masses on `N` unit rods from a pivot, as
    a graph Lagrangian and an `EdgeConstraint`, at one state on the rods."""
    model = lagrax.systems.SpringNetwork([], [], num_nodes=n, gravity=9.81)
    links = lagrax.EdgeConstraint(
        np.arange(n - 1),
        np.arange(1, n),
        lagrax.rod,
        num_nodes=n,
        node_dim=2,
        data=jnp.ones(n, dtype),
        anchors=[0],
    )
    chain = lagrax.systems.ChainPendulum(jnp.ones(n), jnp.ones(n))
    theta_key, omega_key = jr.split(jr.key(CHAIN_SEED))
    theta = 0.5 * jr.normal(theta_key, (n,))
    omega = 0.5 * jr.normal(omega_key, (n,))
    q, qdot = chain.to_cartesian(theta, omega)
    model, links = jax.tree.map(
        lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, (model, links)
    )
    return model, links, q.astype(dtype), qdot.astype(dtype)


def constrained_cases(n, dtype, args, history, cases):
    model, links, q, qdot = constrained_chain(n, dtype)
    params, static = eqx.partition((model, links), eqx.is_array)

    def accelerate(params, q, qdot, dense):
        model, links = eqx.combine(params, static)
        if dense:
            return lagrax.acceleration(
                as_plain_function(model), q, qdot, constraint=lambda q: links(q)
            )
        return lagrax.acceleration(model, q, qdot, constraint=links)

    compiled, memory = compile_with_memory(
        lambda *a: accelerate(*a, False), params, q, qdot
    )
    case = dict(model="constrained chain", n=n, sparse_memory=memory)
    reason = dense_skip_reason(history, n, args)
    dense = None
    if reason is None:
        dense_compiled, dense_memory = compile_with_memory(
            lambda *a: accelerate(*a, True), params, q, qdot
        )
        case["dense_memory"] = dense_memory
        reason = dense_skip_reason(history, n, args, dense_memory)
        if reason is None:
            dense = lambda: dense_compiled(params, q, qdot)  # noqa: E731
    case["dense_skip"] = reason
    record(case, lambda: compiled(params, q, qdot), dense, args, history, cases)
    print(progress(case, "constrained acceleration"), flush=True)


def chain_summary(cases: list[dict], judge: bool) -> str:
    ns = [c["n"] for c in cases]
    exponent, used = fit_exponent(ns, [median(c["sparse"]) for c in cases])
    met = "—" if not judge else ("yes" if exponent <= TARGET_EXPONENT else "NO")
    rows = [
        [
            f"sparse time exponent (N = {', '.join(map(str, used))})",
            f"{exponent:.2f}",
            f"≤ {TARGET_EXPONENT}",
            met,
        ]
    ]
    dense = [c for c in cases if "dense" in c]
    if len(dense) >= 2:
        exponent, used = fit_exponent(
            [c["n"] for c in dense], [median(c["dense"]) for c in dense]
        )
        rows.append(
            [
                f"dense time exponent (N = {', '.join(map(str, used))})",
                f"{exponent:.2f}",
                "",
                "",
            ]
        )
    return markdown_table(["quantity", "value", "target", "met?"], rows)


def progress(case: dict, what: str) -> str:
    line = (
        f"  [{case['model']}, N = {case['n']}] {what}: sparse "
        f"{median(case['sparse']) * 1e3:.1f} ms"
    )
    if "dense" in case:
        line += f", dense {median(case['dense']) * 1e3:.1f} ms"
    else:
        line += f", dense skipped ({case['dense_skip']})"
    return line + f", {case['repeats']} rounds"


# --------------------------------------------------------------------- reporting


def fit_exponent(ns: list[int], values: list[float]) -> tuple[float, list[int]]:
    """Least-squares slope of log value vs log N over N ≥ FIT_FROM (the largest
    two sizes where fewer are that large), and the sizes used."""
    points = [(n, v) for n, v in zip(ns, values) if n >= FIT_FROM]
    if len(points) < 2:
        points = list(zip(ns, values))[-2:]
    x = np.log([n for n, _ in points])
    y = np.log([v for _, v in points])
    return float(np.polyfit(x, y, 1)[0]), [n for n, _ in points]


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f}" if seconds < 100 else f"{seconds * 1e3:,.0f}"


def mib(size: int) -> str:
    return f"{size / 2**20:,.1f}"


def time_table(cases: list[dict]) -> str:
    rows = []
    for c in cases:
        sparse = c["sparse"]
        row = [c["model"], c["n"], ms(median(sparse)), ms(min(sparse))]
        if "dense" in c:
            dense = c["dense"]
            row += [
                ms(median(dense)),
                ms(min(dense)),
                f"{median(dense) / median(sparse):,.1f}× "
                f"({min(dense) / min(sparse):,.1f}×)",
                f"{c['agreement']:.1e}",
            ]
        else:
            row += [f"— ({c['dense_skip']})", "—", "—", "—"]
        row += [f"{median(sparse) / c['n'] * 1e6:.2f}", c["repeats"]]
        rows.append(row)
    headers = [
        "model",
        "N",
        "sparse median ms",
        "sparse min ms",
        "dense median ms",
        "dense min ms",
        "speedup (of mins)",
        "rel. diff",
        "sparse µs/node",
        "rounds",
    ]
    return markdown_table(headers, rows)


def memory_table(accel: list[dict], train: list[dict]) -> str:
    steps = {(c["model"], c["n"]): c for c in train}
    rows = []
    for c in accel:
        if "dense" in c:
            dense = mib(c["dense_memory"])
        elif "dense_memory" in c:
            dense = f"— ({mib(c['dense_memory'])}, not run: {c['dense_skip']})"
        else:
            dense = f"— ({c['dense_skip']})"
        step = steps.get((c["model"], c["n"]))
        rows.append(
            [
                c["model"],
                c["n"],
                mib(c["sparse_memory"]),
                f"{c['sparse_memory'] / c['n'] / 1024:.2f}",
                dense,
                "" if step is None else mib(step["sparse_memory"]),
            ]
        )
    headers = [
        "model",
        "N",
        "sparse accel. MiB",
        "sparse KiB/node",
        "dense accel. MiB",
        "sparse train step MiB",
    ]
    return markdown_table(headers, rows)


def summary(accel: list[dict], train: list[dict], judge: bool) -> str:
    rows = []

    def verdict(ok: bool) -> str:
        return ("met" if ok else "not met") if judge else "n/a (--quick)"

    groups = [("acceleration", accel), ("training step", train)]
    for what, cases in groups:
        for model in dict.fromkeys(c["model"] for c in cases):
            mine = [c for c in cases if c["model"] == model]
            ns = [c["n"] for c in mine]
            quantities = [
                (
                    "time",
                    [median(c["sparse"]) for c in mine],
                    [min(c["sparse"]) for c in mine],
                )
            ]
            if what == "acceleration":
                memory = [c["sparse_memory"] for c in mine]
                quantities.append(("memory", memory, None))
            for label, values, minima in quantities:
                exponent, used = fit_exponent(ns, values)
                cell = f"exponent {exponent:.2f}"
                if minima is not None:
                    cell += f" (of mins {fit_exponent(ns, minima)[0]:.2f})"
                rows.append(
                    [
                        f"sparse {what} {label}, {model}",
                        cell + f", N = {', '.join(map(str, used))}",
                        f"≤ {TARGET_EXPONENT}",
                        verdict(exponent <= TARGET_EXPONENT),
                    ]
                )
            ran = [c for c in mine if "dense" in c]
            if not ran:
                rows.append([f"speedup, {what}, {model}", "dense never ran", "", ""])
                continue
            at = [c for c in ran if c["n"] == SPEEDUP_AT] or [ran[-1]]
            c = at[0]
            speedup = median(c["dense"]) / median(c["sparse"])
            note = "" if c["n"] == SPEEDUP_AT else " (largest N where dense ran)"
            cell = f"{speedup:,.1f}× at N = {c['n']}{note}"
            if c["n"] != SPEEDUP_AT:
                history = {d["n"]: min(d["dense"]) for d in ran}
                sparse_at = [d for d in mine if d["n"] == SPEEDUP_AT]
                estimate = estimate_seconds(history, SPEEDUP_AT)
                if sparse_at and estimate is not None:
                    ratio = estimate / min(sparse_at[0]["sparse"])
                    cell += (
                        f"; extrapolated dense at N = {SPEEDUP_AT}: "
                        f"{estimate:,.0f} s, {ratio:,.0f}× (of mins)"
                    )
            rows.append(
                [
                    f"speedup sparse/dense, {what}, {model}",
                    cell,
                    f"≥ {TARGET_SPEEDUP:.0f}× at N = {SPEEDUP_AT}",
                    verdict(speedup >= TARGET_SPEEDUP)
                    + ("" if c["n"] == SPEEDUP_AT else " (measured at smaller N)"),
                ]
            )
    return markdown_table(["quantity", "value", "target", "met?"], rows)


# -------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="short smoke run (N ≤ 1024), not judged"
    )
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument(
        "--part",
        choices=("all", "ring", "chain"),
        default="all",
        help="the graph Lagrangians on rings, the constrained chain, or both",
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="interleaved rounds per cell"
    )
    parser.add_argument(
        "--dense-limit",
        type=float,
        default=60.0,
        help="skip dense where one call is estimated to take longer (seconds)",
    )
    parser.add_argument(
        "--dense-max-n", type=int, default=4096, help="largest N for the dense path"
    )
    parser.add_argument(
        "--dense-budget",
        type=float,
        default=40.0,
        help="seconds of timed dense calls per cell (fewer rounds where slow)",
    )
    parser.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        help="OpenBLAS threads for the dense path's LAPACK (0: library default)",
    )
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 10
    sizes = QUICK_SIZES if args.quick else SIZES
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.dtype(args.dtype)
    started = time.perf_counter()

    print(environment())
    print(f"load average at start: {load_average()}")
    print(set_blas_threads(args.blas_threads))
    print(
        f"N = {', '.join(map(str, sizes))}; batch {BATCH}; {args.dtype}; up to "
        f"{args.repeats} interleaved rounds per cell (fewer where dense is slow); "
        "medians; compile excluded"
    )
    accel: list[dict] = []
    train: list[dict] = []
    chain: list[dict] = []
    if args.part in ("all", "chain"):
        dense_chain: dict[int, float] = {}
        for n in CHAIN_LINKS:
            constrained_cases(n, dtype, args, dense_chain, chain)
    if args.part in ("all", "ring"):
        base, description = learned_model(dtype)
        print(f"learned model: {description}")
    dense_accel = {"Wave1D": {}, "GraphLagrangian": {}}
    dense_train: dict[int, float] = {}
    key = jr.key(STATE_SEED)
    for n in sizes if args.part in ("all", "ring") else ():
        models = {"Wave1D": lagrax.systems.Wave1D(n), "GraphLagrangian": None}
        models["GraphLagrangian"] = on_ring(base, n)
        for name, model in models.items():
            acceleration_cases(
                name, model, n, dtype, args, dense_accel[name], accel, key
            )
        training_cases(
            "GraphLagrangian",
            models["GraphLagrangian"],
            n,
            dtype,
            args,
            dense_train,
            train,
            key,
        )

    judge = not args.quick
    print(f"load average at end: {load_average()}")
    print(f"total wall time: {time.perf_counter() - started:.0f} s")
    if not judge:
        print("(--quick: reduced sizes, targets not judged)")
    if chain:
        print()
        print(
            f"### Constrained chain: one acceleration, N bodies on N rods "
            f"({args.dtype})\n"
        )
        print(time_table(chain))
        print()
        print(chain_summary(chain, judge=True))
    if accel:
        print()
        print(f"### Batched acceleration (batch {BATCH}, {args.dtype})\n")
        print(time_table(accel))
        print()
        print(
            f"### Training step: L1 acceleration loss + Adam, GraphLagrangian "
            f"(batch {BATCH}, {args.dtype})\n"
        )
        print(time_table(train))
        print()
        print("### Compiled memory (XLA memory analysis: temp + arguments + outputs)\n")
        print(memory_table(accel, train))
        print()
        print("### Summary\n")
        print(summary(accel, train, judge))
    print(
        "\nmedian/min: wall clock over the interleaved rounds; speedup = dense/sparse "
        "of the medians (of the minima in parentheses). rel. diff: ‖sparse − dense‖ / "
        "‖dense‖ of the accelerations (of the loss values for the training "
        "step). —: dense not run (reason given; the memory column shows XLA's "
        "analysis where it was compiled but not run). Dense batches run state by "
        "state (jax.lax.map; see the module docstring)."
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
