"""Shared pieces of the `lagrax reproduce` experiments."""

import functools
import pathlib
import time

import diffrax
import numpy as np
import optax


# Evaluation rollouts are never differentiated: Diffrax's default adjoint keeps
# only O(log max_steps) checkpoints, where lagrax's training default keeps one per
# step.
FORWARD_ONLY = diffrax.RecursiveCheckpointAdjoint()


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value, spec: str = ".3g") -> str:
    if value is None:
        return "—"
    return format(value, spec)


def final_train_loss(history) -> float:
    losses = np.asarray(history.loss)
    tail = losses[-max(1, len(losses) // 10) :]
    tail = tail[np.isfinite(tail)]
    return float(np.mean(tail)) if tail.size else float("nan")


def save_figures(figures, out: pathlib.Path) -> list[pathlib.Path]:
    """Draw each `(filename, draw)` with matplotlib, if it is installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no plots; pip install matplotlib)")
        return []
    paths = []
    for filename, draw in figures:
        fig = plt.figure(figsize=(9, 4.5))
        draw(fig)
        fig.tight_layout()
        fig.savefig(out / filename, dpi=120)
        plt.close(fig)
        paths.append(out / filename)
    return paths


def _number(text: str, kind, name: str):
    import argparse

    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}") from None


def non_negative_int(text: str) -> int:
    """An argparse type: an int ≥ 0."""
    import argparse

    value = _number(text, int, "an integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: an int ≥ 1."""
    import argparse

    value = non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be positive, got 0")
    return value


def non_negative_float(text: str) -> float:
    """An argparse type: a finite float ≥ 0."""
    import argparse
    import math

    value = _number(text, float, "a number")
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number ≥ 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite float > 0."""
    import argparse

    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def train(model, data, test_data, *, args, name: str):
    """`lagrax.fit` on the L1 acceleration loss with Adam on a one-cycle schedule
    (as the paper; gradients clipped to global norm `args.clip` and, for a
    Lagrangian, the mass-matrix penalty `args.definiteness`, where set),
    checkpointed in the output folder so an interrupted run resumes. Returns
    `(model, history, metrics)` with the metrics every experiment reports."""
    from .._baselines import AbstractDynamics
    from .._train.losses import acceleration_loss

    loss = acceleration_loss
    definiteness = getattr(args, "definiteness", 0.0)
    if definiteness and not isinstance(model, AbstractDynamics):
        loss = functools.partial(acceleration_loss, definiteness=definiteness)
    optimizer = clipped(
        optax.adam(optax.cosine_onecycle_schedule(args.steps, args.lr)), args
    )
    model, history, metrics = checkpointed_fit(
        model,
        loss,
        data,
        test_data,
        optimizer=optimizer,
        steps=args.steps,
        batch_size=args.batch_size,
        args=args,
        name=name,
    )
    metrics = dict(
        test_l1_acceleration_error=float(acceleration_loss(model, test_data)),
        **metrics,
    )
    return model, history, metrics


def clipped(optimizer, args):
    """`optimizer` after clipping gradients to global norm `args.clip`, if set."""
    clip = getattr(args, "clip", None)
    if clip:
        return optax.chain(optax.clip_by_global_norm(clip), optimizer)
    return optimizer


def checkpointed_fit(
    model, loss, data, test_data, *, optimizer, steps, batch_size, args, name
):
    """`lagrax.fit`, checkpointed as `NAME.ckpt` in the output folder and resumed
    from there, with minibatches drawn from the seed and `name`. Returns
    `(model, history, metrics)`: the wall time, skipped steps and final loss."""
    import jax.random as jr

    from .._train.fit import fit

    start = time.perf_counter()
    print(f"training {name}: {steps} steps of batch {batch_size}", flush=True)
    model, history = fit(
        model,
        loss,
        data,
        optimizer=optimizer,
        steps=steps,
        batch_size=batch_size,
        key=jr.fold_in(jr.key(args.seed), name_key(name)),
        test_data=test_data,
        checkpoint=pathlib.Path(args.out) / f"{name}.ckpt",
        resume=True,
        progress=not args.no_progress,
    )
    metrics = dict(
        train_seconds=time.perf_counter() - start,
        skipped_steps=history.num_skipped,
        final_train_loss=final_train_loss(history),
    )
    return model, history, metrics


def loss_figure(histories, labels):
    """A `(filename, draw)` plot of the smoothed training losses."""

    def draw(fig):
        ax = fig.add_subplot()
        for name, history in histories.items():
            loss = np.nan_to_num(np.asarray(history.loss))
            window = max(1, len(loss) // 100)
            smooth = np.convolve(loss, np.ones(window) / window, "valid")
            ax.semilogy(smooth, label=f"{labels[name]} (train)")
            ax.semilogy(
                history.eval_step,
                history.eval_loss,
                "o",
                ms=3,
                label=f"{labels[name]} (test)",
            )
        ax.set(
            xlabel="step",
            ylabel="training loss (L1 q̈ error + any penalty)",
            title="Training",
        )
        ax.legend()

    return "losses.png", draw


def to_float64(model):
    """A copy of `model` with float64 parameters, for accurate evaluation."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    return jax.tree_util.tree_map(
        lambda x: x.astype(jnp.float64) if eqx.is_inexact_array(x) else x, model
    )


@functools.cache
def name_key(name: str) -> int:
    return sum(ord(c) * 31**i for i, c in enumerate(name)) % (2**31)


def initial_states(ts, q0, qdot0):
    """A `TrajectoryData` whose trajectories hold only their initial states (each
    repeated over `ts`), for `lagrax.rollout`."""
    import jax.numpy as jnp

    from .._train.data import TrajectoryData

    shape = (q0.shape[0], ts.shape[0], q0.shape[1])
    return TrajectoryData(
        ts=ts,
        q=jnp.broadcast_to(q0[:, None], shape),
        qdot=jnp.broadcast_to(qdot0[:, None], shape),
    )
