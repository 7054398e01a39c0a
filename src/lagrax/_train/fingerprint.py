"""What defines a training run, so that `fit` resumes only the same run: a
description of the loss, and fingerprints of the optimizer and the data."""

import hashlib
import json
import math
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import optax
from jaxtyping import PyTree

from .._callables import (
    describe as describe,
    qualified_name as _name,
    UNVERIFIABLE,
)


def _pattern(shape: tuple[int, ...], phase: int) -> np.ndarray:
    """Varied probe values, exact in every float dtype (quarters from -1.5 to 1.5),
    so the same on every machine."""
    cycle = (7 * np.arange(math.prod(shape)) + phase) % 13
    return ((cycle - 6) / 4).reshape(shape)


def _summary(x, digits: int) -> list:
    """A few statistics of one leaf of updates, rounded: `digits` significant
    digits of its mean magnitude, and its mean and a weighted mean to the same
    absolute precision. Statistics rather than the elements themselves: among
    thousands of float32 elements, some would round the other way after a last-bit
    change (another jax, another device) and refuse a resume."""
    x = np.asarray(x, dtype=np.float64).ravel()
    if not np.all(np.isfinite(x)):
        return ["not finite"]
    scale = float(np.mean(np.abs(x)))
    if scale == 0:
        return [0]
    quantum = scale * 10.0**-digits
    stats = (np.mean(x), np.mean(x * _pattern(x.shape, 5)))
    return [f"{scale:.{digits - 1}e}", *(round(float(s) / quantum) for s in stats)]


# The probe's optimizer calls, compiled: run op by op they cost a compilation per
# operation and leaf shape, 10–18 s at the first checkpointed `fit` of a process
# on a 2-core machine. They run nine times on small arrays, so XLA is told to
# compile them quickly rather than well. (The optimizer is static: Optax
# transformations are closures, hashed by identity; another one compiles anew.)
_QUICK = {
    "xla_backend_optimization_level": 0,
    "xla_cpu_use_fusion_emitters": False,
}
_P = ParamSpec("_P")
_T = TypeVar("_T")


def _quick_jit(fn: Callable[_P, _T]) -> Callable[_P, _T]:
    """`eqx.filter_jit` compiling with `_QUICK`."""
    # Equinox's overloads of `filter_jit` leave out the `**jitkwargs` it passes on.
    return eqx.filter_jit(fn, compiler_options=_QUICK)  # pyright: ignore[reportCallIssue]


@_quick_jit
def _init(optimizer: optax.GradientTransformation, params):
    with jax.numpy_dtype_promotion("standard"):
        return optimizer.init(params)


def _optimizer_update(
    optimizer: optax.GradientTransformation, grads, opt_state, params
):
    with jax.numpy_dtype_promotion("standard"):
        # An optimizer with a line search also takes a loss: the quadratic
        # `⟨g, p⟩ + ½|p − params|²`, whose gradient at `params` is `grads`.
        extra = {}
        if isinstance(optimizer, optax.GradientTransformationExtraArgs):

            def value_fn(p):
                terms = jtu.tree_map(
                    lambda g, x, x0: jnp.vdot(g, x) + 0.5 * jnp.sum((x - x0) ** 2),
                    grads,
                    p,
                    params,
                )
                return sum(jtu.tree_leaves(terms))

            extra = dict(value=value_fn(params), grad=grads, value_fn=value_fn)
        return optimizer.update(grads, opt_state, params, **extra)


_update = _quick_jit(_optimizer_update)


@_quick_jit
def _apply(params, updates):
    with jax.numpy_dtype_promotion("standard"):
        return optax.apply_updates(params, updates)


def optimizer_fingerprint(optimizer: optax.GradientTransformation, params) -> str:
    """A SHA-256 of what `optimizer` does: Optax transformations are closures, so
    they are told apart by their behaviour. From probe parameters shaped like
    `params`, three updates on probe gradients that differ each call; then one
    more as if after 10, 10², ..., 10⁶ steps (the state's integer scalars, Optax's
    step counts, set to that), since schedules over different numbers of steps
    barely differ in their first steps. The updates are hashed rounded (to fewer
    digits for lower-precision dtypes), with the optimizer state's structure.
    Another learning rate, schedule or transformation gives another fingerprint;
    the model's own parameter values do not enter it."""
    leaves, treedef = jtu.tree_flatten(params)

    def probe(phase):
        arrays = [
            jnp.asarray(_pattern(x.shape, phase + 3 * k), dtype=x.dtype)
            for k, x in enumerate(leaves)
        ]
        return jtu.tree_unflatten(treedef, arrays)

    def summaries(updates):
        return [
            _summary(u, int(np.clip(jnp.finfo(u.dtype).precision - 3, 1, 6)))
            for u in jtu.tree_leaves(updates)
        ]

    def after(steps, opt_state):
        return jtu.tree_map(
            lambda x: jnp.full_like(x, steps) if _is_counter(x) else x, opt_state
        )

    record = []
    probe_params = probe(0)
    gradients = [probe(1 + call) for call in range(3)]
    opt_state = _init(optimizer, probe_params)
    for grads in gradients:
        updates, opt_state = _update(optimizer, grads, opt_state, probe_params)
        probe_params = _apply(probe_params, updates)
        record.append(summaries(updates))
    for power in range(1, 7):
        later = after(10**power, opt_state)
        updates, _ = _update(optimizer, gradients[-1], later, probe_params)
        record.append(summaries(updates))
    for path, leaf in jtu.tree_flatten_with_path(opt_state)[0]:
        kind = f"{leaf.dtype}{list(leaf.shape)}" if eqx.is_array(leaf) else ""
        record.append([jtu.keystr(path), kind or describe(leaf)])
    return hashlib.sha256(json.dumps(record).encode()).hexdigest()


# Prefix sums of the schedule sweep recorded in a checkpoint, and how closely a
# resumed run's must agree: every step's update enters them, while last-bit
# differences between machines stay far below the tolerance.
_SWEEP_POINTS = 256
_SWEEP_RTOL = 1e-5


@_quick_jit
def _sweep(optimizer: optax.GradientTransformation, grads, opt_state, params, counts):
    """The size of the update of `grads` at each step count of `counts`."""

    def size(count):
        later = jtu.tree_map(
            lambda x: jnp.full_like(x, count) if _is_counter(x) else x, opt_state
        )
        updates, _ = _optimizer_update(optimizer, grads, later, params)
        leaves = [jnp.sum(jnp.abs(u.astype(float))) for u in jtu.tree_leaves(updates)]
        return sum(leaves, jnp.zeros((), float))

    return jax.lax.map(size, counts, batch_size=1024)


def _is_counter(x) -> bool:
    """An integer scalar of an optimizer state: Optax's step counts."""
    return eqx.is_array(x) and x.ndim == 0 and jnp.issubdtype(x.dtype, jnp.integer)


def schedule_fingerprint(
    optimizer: optax.GradientTransformation, params, steps: int
) -> list[float]:
    """What `optimizer` does at every step up to `steps`, for a schedule that
    differs anywhere (even between `optimizer_fingerprint`'s probe steps) to be
    told apart: the size of its update of a probe gradient with its step counts
    set to each of `0, …, steps − 1`, summed up to `min(steps, 256)` points
    spread evenly over the steps. The probe is one element per leaf of `params`
    (the same tree, so masks and labels still fit), which makes the sweep a few
    microseconds a step; an optimizer that needs the full shapes gets them."""
    if steps == 0:
        return []
    leaves, treedef = jtu.tree_flatten(params)
    try:
        tiny = [jnp.zeros((1,) * x.ndim, x.dtype) for x in leaves]
        sizes = _sweep_sizes(optimizer, jtu.tree_unflatten(treedef, tiny), steps)
    except Exception:  # an optimizer that depends on the shapes themselves
        sizes = _sweep_sizes(optimizer, params, steps)
    sums = np.cumsum(sizes)
    points = np.ceil(
        np.arange(1, min(steps, _SWEEP_POINTS) + 1) * steps / min(steps, _SWEEP_POINTS)
    ).astype(int)
    return [float(x) for x in sums[points - 1]]


def _sweep_sizes(optimizer, params, steps: int) -> np.ndarray:
    leaves, treedef = jtu.tree_flatten(params)
    probe = jtu.tree_unflatten(
        treedef,
        [jnp.asarray(_pattern(x.shape, 3 * k), x.dtype) for k, x in enumerate(leaves)],
    )
    grads = jtu.tree_unflatten(
        treedef,
        [
            jnp.asarray(_pattern(x.shape, 1 + 3 * k), x.dtype)
            for k, x in enumerate(leaves)
        ],
    )
    opt_state = _init(optimizer, probe)
    updates, opt_state = _update(optimizer, grads, opt_state, probe)
    probe = _apply(probe, updates)
    counts = jnp.arange(steps, dtype=jnp.int32)
    return np.asarray(_sweep(optimizer, grads, opt_state, probe, counts), np.float64)


def check_close(where: str, name: str, saved, value, what: str) -> None:
    """Raise unless the recorded numbers `saved` of the checkpoint's `name` agree
    with this run's `value` to `_SWEEP_RTOL` of their largest magnitude (NaN
    agrees with NaN)."""
    saved = np.asarray(saved, dtype=np.float64)
    value = np.asarray(value, dtype=np.float64)
    if saved.shape == value.shape:
        scale = np.max(np.abs(np.nan_to_num(value)), initial=0.0)
        same_nan = np.isnan(saved) == np.isnan(value)
        close = np.abs(np.nan_to_num(saved) - np.nan_to_num(value)) <= (
            _SWEEP_RTOL * scale
        )
        if np.all(same_nan & close):
            return
    raise ValueError(
        f"The checkpoint {where} was written by a run with a different "
        f"{_SETTINGS[name]} ({what}), so it cannot be resumed exactly. Delete it, "
        "or pass another `checkpoint`, to start afresh."
    )


def data_fingerprint(data: PyTree) -> str:
    """A SHA-256 of a pytree's (a dataset's) structure and the bytes of its
    arrays."""
    digest = hashlib.sha256(_name(type(data)).encode())
    for path, leaf in jtu.tree_flatten_with_path(data)[0]:
        digest.update(jtu.keystr(path).encode())
        if eqx.is_array(leaf):
            leaf = np.asarray(leaf)
            digest.update(f"{leaf.dtype}{list(leaf.shape)}".encode())
            digest.update(leaf.tobytes())
        else:
            digest.update(describe(leaf).encode())
    return digest.hexdigest()


# How a mismatch names each setting a checkpoint records.
_SETTINGS = {
    "steps": "`steps`",
    "batch_size": "`batch_size`",
    "num_samples": "`len(data)`",
    "data": "`data` (the same number of samples, other values)",
    "key": "`key`",
    "optimizer": (
        "`optimizer` (it updates probe gradients differently: another learning "
        "rate, schedule or transformation)"
    ),
    "loss": "`loss`",
    "test_data": "`test_data`",
    "schedule": "`optimizer` schedule",
    "loss_probe": "`loss`",
}
# Fingerprints, whose values say nothing to a reader.
_OPAQUE = ("data", "key", "optimizer", "test_data")


def _mismatch(where: str, name: str, saved, value, note: str = "") -> ValueError:
    if name in _OPAQUE:
        difference = f"a different {_SETTINGS[name]}"
    else:
        verb = "asks for" if name in ("steps", "batch_size") else "has"
        difference = f"{_SETTINGS[name]}={saved!r}; this run {verb} {value!r}"
    return ValueError(
        f"The checkpoint {where} was written by a run with {difference}{note}, so "
        "it cannot be resumed exactly. Delete it, or pass another `checkpoint`, to "
        "start afresh."
    )


def check_run(
    where: str, info: dict, run: dict, *, recorded: tuple[str, ...] = ()
) -> None:
    """Raise unless the checkpoint records `run`'s settings and those `recorded`
    (compared by the caller), and its run is this one, or a finished run that this
    one extends to more steps."""
    for name, value in run.items():
        if isinstance(value, str) and value.startswith(UNVERIFIABLE):
            raise ValueError(
                f"Cannot tell whether this run's {_SETTINGS[name]} is the one that "
                f"wrote the checkpoint {where}: "
                f"{value.removeprefix(UNVERIFIABLE)}. Use a function defined at the "
                "top level of a module (or a functools.partial of one), or delete "
                "the checkpoint to start afresh."
            )
    for name in (*run, *recorded):
        if name not in info:
            raise ValueError(
                f"The checkpoint {where} does not record its {_SETTINGS[name]} "
                "(an older lagrax wrote it), so it cannot be resumed exactly. Delete "
                "it, or pass another `checkpoint`, to start afresh."
            )
    saved_steps, done, steps = info["steps"], info["step"], run["steps"]
    if steps != saved_steps:
        if done < saved_steps:
            note = (
                f" (it stopped after step {done} of {saved_steps}; only a finished "
                "run can be extended, to more steps)"
            )
            raise _mismatch(where, "steps", saved_steps, steps, note)
        if steps < done:
            raise _mismatch(
                where, "steps", saved_steps, steps, " (fewer than it has done)"
            )
    for name, value in run.items():
        if name != "steps" and info[name] != value:
            note = ""
            if name == "optimizer" and steps != saved_steps:
                note = (
                    "; a schedule over the total number of steps is another "
                    "schedule for other `steps`, so such a run cannot be extended"
                )
            raise _mismatch(where, name, info[name], value, note)
