"""Speed of one training step: `lagrax.train_step` with `lagrax.acceleration_loss`.

One step is the acceleration loss on a batch, its gradient and an Adam update, for
an `MLPLagrangian` of dof 2 (softplus, float32) and a batch of states from the
paper's double-pendulum box. Compared in the same run, through the very same
`lagrax.train_step`:

- `lagrax.acceleration_loss` (the batched pass, `MLPLagrangian.batch_jet`, whose
  reverse pass is written by hand over the batch);
- the same loss as a user writes it, `jnp.mean(φ(jax.vmap(lagrax.acceleration,
  (None, 0, 0))(model, q, qdot) − q̈))`: the per-state `MLPLagrangian.jet`, whose
  derivative is a hand-written `custom_jvp` (target: within 10% of
  `acceleration_loss` in the `--pytorch` setting);
- that user-written loss through plain autodiff of the same per-state pass (a
  jet Lagrangian defined here, whose `jet` is the undifferentiated pass): what
  the `custom_jvp` replaced;
- the paper's formula for `q̈` (`pinv` of the velocity block of `jax.hessian`, as
  in Cranmer et al.'s code; from `benchmarks/acceleration.py`). Target: lagrax at
  least 2× faster;
- with `--pytorch`, when PyTorch is installed (`pip install ".[bench]"`), the
  fastest PyTorch LNN we know of (torchdyn-style batched autograd, from
  `benchmarks/acceleration.py`) with the very same weights, loss and Adam step, on
  the same threads (or on the GPU JAX runs on). Target: `acceleration_loss` and the
  user-written loss both faster.

Compilation is excluded, results are waited for, the implementations are
interleaved and medians reported (wall and process CPU time: the machines here
are shared, and CPU time does not count what other processes took).

Run `python benchmarks/train_step.py` (the paper's width 600, depth 3, batch 512,
L1); `--pytorch` for the PyTorch comparison's setting (a 4-500-500-1 network,
batch 1024, the L2 loss); `--quick` for a seconds-long smoke run with a small
network, whose ratios are not judged.
"""

import argparse
import functools
import os
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

import lagrax
from lagrax._mlp_jet import _state_forward


try:
    from ._common import (
        environment,
        load_average,
        markdown_table,
        median,
        time_interleaved,
    )
    from .acceleration import (
        _waited,
        paper_acceleration,
        torch_device,
        torch_modules,
        torch_train_step,
    )
except ImportError:  # run as a script: `python benchmarks/train_step.py`
    from _common import (
        environment,
        load_average,
        markdown_table,
        median,
        time_interleaved,
    )
    from acceleration import (
        _waited,
        paper_acceleration,
        torch_device,
        torch_modules,
        torch_train_step,
    )


class PlainAutodiffJet(lagrax.AbstractJetLagrangian):
    """An `MLPLagrangian` whose `jet` is the same structured pass without its
    hand-written derivative: JAX differentiates the pass itself (the per-state
    path before its `custom_jvp`)."""

    mlp: lagrax.MLPLagrangian

    def __call__(self, q, qdot):
        return self.mlp(q, qdot)

    def jet(self, q, qdot, directions):
        hidden = self.mlp.layers[:-1]
        return _state_forward(
            self.mlp.activation,
            tuple(layer.weight for layer in hidden),
            tuple(layer.bias for layer in hidden),
            self.mlp.layers[-1].weight[0],
            jnp.concatenate([q, qdot]),
            directions.T,
        )[0]


def user_loss(norm):
    """The loss as a user writes it: the `vmap` of the per-state
    `lagrax.acceleration`."""
    penalty = jnp.abs if norm == "l1" else jnp.square

    def loss(model, data):
        predicted = jax.vmap(lagrax.acceleration, in_axes=(None, 0, 0))(
            model, data.q, data.qdot
        )
        return jnp.mean(penalty(predicted - data.qddot))

    return loss


def paper_loss(norm):
    """The acceleration loss with the paper's formula for `q̈`."""
    penalty = jnp.abs if norm == "l1" else jnp.square

    def loss(model, data):
        predicted = jax.vmap(paper_acceleration, in_axes=(None, 0, 0))(
            model, data.q, data.qdot
        )
        return jnp.mean(penalty(predicted - data.qddot))

    return loss


FAST = "lagrax.acceleration_loss"
USER = "user-written vmap(lagrax.acceleration) loss"
PLAIN = "user-written loss, autodiff through the per-state pass"
PAPER = "paper formula (pinv ∘ jax.hessian)"
TORCH = "PyTorch batched LNN (torchdyn-style autograd)"


def torch_step(model, data, norm):
    """PyTorch's training step on `model`'s weights and `data`, or `None` without
    PyTorch; its loss at the first call."""
    try:
        import torch
    except ImportError:
        print("PyTorch is not installed: no PyTorch row (pip install '.[bench]').")
        return None, None
    device = torch_device("auto")
    if device == "cpu":
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    net, acceleration = torch_modules(model)
    net.to(device)
    tensors = [
        torch.from_numpy(np.array(x)).to(device)
        for x in (data.q, data.qdot, data.qddot)
    ]
    step = torch_train_step(net, acceleration, norm)
    call = _waited(device, lambda: step(*tensors))
    return call, float(call())


def _verdict(target: str, met: bool) -> str:
    return f"  (target {target}: {'met' if met else 'NOT met'})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, not judged")
    parser.add_argument(
        "--pytorch",
        action="store_true",
        help="the PyTorch comparison: 4-500-500-1, batch 1024, L2 loss, PyTorch's LNN",
    )
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    width, depth, batch, norm = 600, 3, 512, "l1"
    if args.pytorch:
        width, depth, batch, norm = 500, 2, 1024, "l2"
    if args.quick:
        width, batch = 64, 64
    repeats = args.repeats or (5 if args.quick else 20)

    box = dict(
        q_box=([0.0, 0.0], [2 * np.pi, 2 * np.pi]),
        qdot_box=([-10.0, -10.0], [10.0, 10.0]),
    )
    q, qdot = lagrax.sample_states(batch, key=jr.key(0), dtype=jnp.float32, **box)
    data = lagrax.acceleration_data(lagrax.systems.DoublePendulum(), q, qdot)
    model = lagrax.MLPLagrangian(
        2, width=width, depth=depth, dtype=jnp.float32, key=jr.key(1)
    )
    optimizer = optax.adam(1e-3)

    def step(loss, model=model):
        opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
        return lambda: lagrax.train_step(
            model, opt_state, data, loss=loss, optimizer=optimizer
        )

    steps = {
        FAST: step(functools.partial(lagrax.acceleration_loss, norm=norm)),
        USER: step(user_loss(norm)),
        PLAIN: step(
            lambda plain, data: user_loss(norm)(plain, data), PlainAutodiffJet(model)
        ),
        PAPER: step(paper_loss(norm)),
    }
    # Same losses up to float32 round-off: the comparison is like for like.
    values = {name: float(fn()[2]) for name, fn in steps.items()}
    if args.pytorch:
        torch_call, torch_value = torch_step(model, data, norm)
        if torch_call is not None:
            steps[TORCH], values[TORCH] = torch_call, torch_value
    cpu: dict[str, list[float]] = {}
    samples = time_interleaved(steps, repeats=repeats, cpu_seconds=cpu)
    times = {name: median(s) for name, s in samples.items()}
    cpu_times = {name: median(s) for name, s in cpu.items()}

    print(
        f"# One training step ({norm.upper()} acceleration loss + Adam), batch "
        f"{batch}, MLPLagrangian dof 2, width {width}, depth {depth}, float32"
    )
    print(environment())
    print(f"load average before timing ended: {load_average()}")
    print(f"median of {repeats} interleaved repeats, compilation excluded\n")
    rows = [
        [
            name,
            f"{1e3 * t:.2f}",
            f"{t / times[FAST]:.2f}×",
            f"{1e3 * cpu_times[name]:.2f}",
            f"{cpu_times[name] / cpu_times[FAST]:.2f}×",
            f"{values[name]:.6g}",
        ]
        for name, t in times.items()
    ]
    headers = ["implementation", "ms / step", "× fast", "CPU ms", "CPU × fast"]
    print(markdown_table(headers + ["loss"], rows))
    judged = not args.quick
    ratio = times[PAPER] / times[FAST]
    verdict = _verdict("≥ 2×", ratio >= 2) if judged else ""
    print(f"\nlagrax speed-up over the paper's formula: {ratio:.2f}×{verdict}")
    user = times[USER] / times[FAST]
    verdict = _verdict("≤ 1.10", user <= 1.1) if judged else ""
    print(f"user-written loss / acceleration_loss: {user:.2f}× wall{verdict}")
    print(f"(CPU time: {cpu_times[USER] / cpu_times[FAST]:.2f}×)")
    if TORCH in times:
        ahead = times[TORCH] / max(times[FAST], times[USER])
        verdict = _verdict("both > 1×", ahead > 1) if judged else ""
        print(f"PyTorch / the slower lagrax loss: {ahead:.2f}×{verdict}")
    for name in steps:
        np.testing.assert_allclose(values[FAST], values[name], rtol=1e-3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
