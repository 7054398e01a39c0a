"""Timing helpers shared by the benchmarks.

Every speed claim in lagrax is a ratio against a baseline measured in the same run,
because the machines we run on are shared and noisy. The rules, applied here once:
compile (and warm up) before timing, wait with `jax.block_until_ready`, interleave
the implementations being compared so that a burst of outside load hits all of them,
and report medians.
"""

import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr


def time_interleaved(
    fns: Mapping[str, Callable[[], Any]],
    *,
    repeats: int,
    warmup: int = 2,
    seed: int = 0,
    cpu_seconds: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Wall-clock seconds of each zero-argument `fn`, sampled `repeats` times.

    Each function is first called `warmup` times (the first call compiles) and
    then timed once per round, in a freshly shuffled order each round, so that
    outside load and cache effects are spread evenly over all of them. Results are
    waited for with `jax.block_until_ready`; for non-JAX code (PyTorch) the function
    itself must return only when its work is done.

    With `cpu_seconds` (a dict, filled in place), each call's CPU time is recorded
    too: the process's, summed over all its threads (`time.process_time`). Unlike
    wall time it does not count time the machine gave to other processes or
    virtual machines, but it does count thread pools spinning while they wait.
    """
    for fn in fns.values():
        for _ in range(warmup):
            jax.block_until_ready(fn())
    samples: dict[str, list[float]] = {name: [] for name in fns}
    cpu = {name: [] for name in fns} if cpu_seconds is None else cpu_seconds
    cpu.update({name: [] for name in fns})
    order = list(fns)
    rng = random.Random(seed)
    for _ in range(repeats):
        rng.shuffle(order)
        for name in order:
            start, start_cpu = time.perf_counter(), time.process_time()
            jax.block_until_ready(fns[name]())
            samples[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return samples


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def compiled_flops(fn: Callable, *args) -> float:
    """FLOPs of one call of `jax.jit(fn)(*args)`, from XLA's cost analysis.

    XLA counts a multiply-add as two FLOPs and transcendental functions separately
    (they are not included here).
    """
    compiled = jax.jit(fn).lower(*args).compile()
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list):  # older jaxlibs return one dict per device
        analysis = analysis[0]
    return float(analysis["flops"])


def matmul_reference(
    size: int = 2048, *, dtype=jnp.float32
) -> tuple[Callable[[], jax.Array], float]:
    """A zero-argument jitted `size × size` matmul and its FLOPs.

    The reference for "achieved FLOP/s": time it in the same `time_interleaved`
    call as the code it is compared with, so both see the same machine load.
    """
    ka, kb = jr.split(jr.key(0))
    a = jr.normal(ka, (size, size), dtype)
    b = jr.normal(kb, (size, size), dtype)
    matmul = jax.jit(jnp.matmul)
    return lambda: matmul(a, b), 2.0 * size**3


def environment() -> str:
    """One line saying what produced the numbers."""
    devices = jax.devices()
    return (
        f"jax {jax.__version__}, backend {jax.default_backend()} "
        f"({devices[0].device_kind}), {os.cpu_count()} CPU core(s), "
        f"python {platform.python_version()}, "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
    )


def load_average() -> str:
    """The 1/5/15-minute load averages, to judge how busy a shared machine was."""
    if not hasattr(os, "getloadavg"):
        return "n/a"
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table; floats are printed as given (format first)."""
    cells = [list(map(str, headers))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"
        for row in cells
    ]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)
