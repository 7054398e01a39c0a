"""Speed of one training step: `lagrax.train_step` with `lagrax.acceleration_loss`.

One step is the L1 acceleration loss on a batch, its gradient and an Adam update,
for the paper's double-pendulum network (an `MLPLagrangian` of dof 2, width 600,
depth 3, softplus, float32) and a batch of 512 states from the paper's box. It is
compared, in the same run and through the very same `lagrax.train_step`, with the
same loss through the per-state `vmap` of `lagrax.acceleration` (autodiff through
`MLPLagrangian.jet`: what the batched pass with its hand-written gradient replaces)
and with the paper's formula for `q̈` (`pinv` of the velocity block of
`jax.hessian`, as in Cranmer et al.'s code; imported from
`benchmarks/acceleration.py`). Compilation is excluded, results are waited for, the
three are interleaved and medians reported. Target: lagrax at least 2× faster.

Run `python benchmarks/train_step.py` (`--quick` for a seconds-long smoke run with
a small network, whose ratio is not judged).
"""

import argparse
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

import lagrax


try:
    from ._common import environment, markdown_table, median, time_interleaved
    from .acceleration import paper_acceleration
except ImportError:  # run as a script: `python benchmarks/train_step.py`
    from _common import environment, markdown_table, median, time_interleaved
    from acceleration import paper_acceleration


def per_state_loss(model, data):
    """The same loss through the `vmap` of the per-state `lagrax.acceleration`:
    autodiff through `MLPLagrangian.jet` instead of the batched pass with the
    hand-written gradient that `lagrax.acceleration_loss` uses."""
    predicted = jax.vmap(lagrax.acceleration, in_axes=(None, 0, 0))(
        model, data.q, data.qdot
    )
    return jnp.mean(jnp.abs(predicted - data.qddot))


def paper_loss(model, data):
    """The L1 acceleration loss with the paper's formula for `q̈`."""
    predicted = jax.vmap(paper_acceleration, in_axes=(None, 0, 0))(
        model, data.q, data.qdot
    )
    return jnp.mean(jnp.abs(predicted - data.qddot))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, not judged")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    width, batch = (64, 64) if args.quick else (600, 512)
    repeats = args.repeats or (5 if args.quick else 20)

    box = dict(
        q_box=([0.0, 0.0], [2 * np.pi, 2 * np.pi]),
        qdot_box=([-10.0, -10.0], [10.0, 10.0]),
    )
    q, qdot = lagrax.sample_states(batch, key=jr.key(0), dtype=jnp.float32, **box)
    data = lagrax.acceleration_data(lagrax.systems.DoublePendulum(), q, qdot)
    model = lagrax.MLPLagrangian(
        2, width=width, depth=3, dtype=jnp.float32, key=jr.key(1)
    )
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))

    def step(loss):
        return lambda: lagrax.train_step(
            model, opt_state, data, loss=loss, optimizer=optimizer
        )

    steps = {
        "lagrax": step(lagrax.acceleration_loss),
        "lagrax, per-state vmap (autodiff through jet)": step(per_state_loss),
        "paper formula (pinv ∘ jax.hessian)": step(paper_loss),
    }
    # Same losses up to float32 round-off: the comparison is like for like.
    values = {name: float(fn()[2]) for name, fn in steps.items()}
    samples = time_interleaved(steps, repeats=repeats)
    times = {name: median(s) for name, s in samples.items()}
    ratio = times["paper formula (pinv ∘ jax.hessian)"] / times["lagrax"]

    print(
        f"# One training step (L1 acceleration loss + Adam), batch {batch}, "
        f"MLPLagrangian dof 2, width {width}, depth 3, float32"
    )
    print(environment())
    print(f"median of {repeats} interleaved repeats, compilation excluded\n")
    rows = [
        [name, f"{1e3 * t:.2f}", f"{values[name]:.6g}", f"{times['lagrax'] / t:.2f}×"]
        for name, t in times.items()
    ]
    print(
        markdown_table(["implementation", "ms / step", "loss", "speed vs lagrax"], rows)
    )
    verdict = (
        ""
        if args.quick
        else ("  (target ≥ 2×: met)" if ratio >= 2 else "  (target ≥ 2×: NOT met)")
    )
    print(f"\nlagrax speed-up over the paper's formula: {ratio:.2f}×{verdict}")
    for name in steps:
        np.testing.assert_allclose(values["lagrax"], values[name], rtol=1e-3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
