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
        fig = plt.figure(figsize=(7, 4.5))
        draw(fig)
        fig.tight_layout()
        fig.savefig(out / filename, dpi=120)
        plt.close(fig)
        paths.append(out / filename)
    return paths


def train(model, loss, data, test_data, *, args, name: str, learning_rate: float):
    """`lagrax.fit` with Adam on a one-cycle schedule (as the paper), checkpointed
    in the output folder so an interrupted run resumes. Returns
    `(model, history, seconds)`."""
    import jax.random as jr

    from .._train.fit import fit

    schedule = optax.cosine_onecycle_schedule(args.steps, learning_rate)
    start = time.perf_counter()
    print(f"training {name}: {args.steps} steps of batch {args.batch_size}", flush=True)
    model, history = fit(
        model,
        loss,
        data,
        optimizer=optax.adam(schedule),
        steps=args.steps,
        batch_size=args.batch_size,
        key=jr.fold_in(jr.key(args.seed), name_key(name)),
        test_data=test_data,
        checkpoint=pathlib.Path(args.out) / f"{name}.ckpt",
        resume=True,
        progress=not args.no_progress,
    )
    return model, history, time.perf_counter() - start


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
