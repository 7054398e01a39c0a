"""Speed of `lagrax.acceleration`, for inference and for one training step.

Compares, in one run, with compilation excluded and medians over interleaved repeats:

- lagrax against a faithful re-implementation of the paper's formula on the same
  model, `q̈ = pinv(∇²_q̇ L) (∇_q L − ∇²_q̇q L q̇)` with `jax.hessian` for the full
  `2n × 2n` Hessian (Cranmer et al.'s released code), on the paper's double-pendulum
  network (dof 2, width 600, depth 3, softplus, float32);
- lagrax against the fastest PyTorch LNN we know of (when torch is installed): the
  batched autograd of torchdyn's LNN tutorial, one gradient with `create_graph`, one
  extra backward pass per velocity coordinate for the Hessian rows, then a batched
  `torch.linalg.solve`, on an MLP 4-500-500-1 with the very same weights;
- FLOPs per state from XLA's cost analysis, as multiples of one forward pass, and
  the achieved FLOP/s as a fraction of a large matmul's, timed in the same run.

The training step is the L1 acceleration loss plus one Adam update (same loss, same
optimizer, same learning rate on both sides). Run `python benchmarks/acceleration.py`
(`--quick` for a short smoke run with reduced sizes, whose targets are not
judged); the machines here are shared, so only same-run ratios mean anything.
"""

import argparse
import dataclasses
import functools
import os
import sys
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

import lagrax


try:
    from ._common import (
        compiled_flops,
        environment,
        load_average,
        markdown_table,
        matmul_reference,
        median,
        time_interleaved,
    )
except ImportError:  # run as a script: `python benchmarks/acceleration.py`
    from _common import (
        compiled_flops,
        environment,
        load_average,
        markdown_table,
        matmul_reference,
        median,
        time_interleaved,
    )


LEARNING_RATE = 1e-3
# Issue 16's goals against PyTorch, same run, medians.
ACCELERATION_GOAL = 2.5
TRAIN_STEP_GOAL = 1.5


def paper_acceleration(lagrangian, q, qdot):
    """The paper's formula, as in Cranmer et al.'s code: pinv of the full Hessian."""
    n = q.shape[0]
    x = jnp.concatenate([q, qdot])

    def full(x):
        return lagrangian(x[:n], x[n:])

    grad = jax.grad(full)(x)
    hess = jax.hessian(full)(x)
    return jnp.linalg.pinv(hess[n:, n:]) @ (grad[:n] - hess[n:, :n] @ qdot)


def lagrax_acceleration(lagrangian, q, qdot):
    return lagrax.acceleration(lagrangian, q, qdot)


# ---------------------------------------------------------------------------- JAX


def jax_accelerations(accel: Callable, model: eqx.Module):
    """A jitted `(params, q, qdot) -> q̈` over a batch, and the model's params.

    The model is split once into arrays and static structure so that every call
    dispatches the same plain `jax.jit` function for either implementation.
    """
    params, static = eqx.partition(model, eqx.is_array)

    def batched(params, q, qdot):
        model = eqx.combine(params, static)
        return jax.vmap(accel, in_axes=(None, 0, 0))(model, q, qdot)

    return jax.jit(batched), params


def jax_forward(model: eqx.Module):
    params, static = eqx.partition(model, eqx.is_array)

    def batched(params, q, qdot):
        return jax.vmap(eqx.combine(params, static), in_axes=(0, 0))(q, qdot)

    return batched, params


def jax_train_step(accel: Callable, model: eqx.Module):
    """A jitted L1-acceleration-loss + Adam step, and its initial `(params, state)`.

    lagrax's step uses its training loss, `lagrax.acceleration_loss` (the same
    L1 loss, evaluated through the batched pass whose gradient is hand-written);
    the paper's formula is `vmap`ped per state.
    """
    params, static = eqx.partition(model, eqx.is_inexact_array)
    optimizer = optax.adam(LEARNING_RATE)

    def loss(params, q, qdot, qddot):
        model = eqx.combine(params, static)
        if accel is lagrax_acceleration:
            data = lagrax.AccelerationData(q=q, qdot=qdot, qddot=qddot)
            return lagrax.acceleration_loss(model, data)
        pred = jax.vmap(accel, in_axes=(None, 0, 0))(model, q, qdot)
        return jnp.mean(jnp.abs(pred - qddot))

    @jax.jit
    def step(params, opt_state, q, qdot, qddot):
        value, grads = jax.value_and_grad(loss)(params, q, qdot, qddot)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return step, (params, optimizer.init(params))


# ------------------------------------------------------------------------ PyTorch


def torch_modules(model: lagrax.MLPLagrangian):
    """`torch.nn.Sequential` with `model`'s weights, and the acceleration function."""
    import torch

    layers = []
    for i, layer in enumerate(model.layers):
        weight = np.array(layer.weight)
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(weight))
            linear.bias.copy_(torch.from_numpy(np.atleast_1d(np.array(layer.bias))))
        layers.append(linear)
        if i < len(model.layers) - 1:
            layers.append(torch.nn.Softplus())
    net = torch.nn.Sequential(*layers)

    def acceleration(q, qdot, *, create_graph: bool):
        # torchdyn's LNN: ∇L with a graph, then row i of the Hessian's velocity rows
        # as the gradient of ∂L/∂q̇_i (summed over the batch, whose states are
        # independent), then one batched solve. Without `create_graph` (inference)
        # the Hessian rows keep no graph, which is the fastest faithful variant.
        n = q.shape[1]
        x = torch.cat([q, qdot], dim=1).requires_grad_(True)
        (grad,) = torch.autograd.grad(net(x).sum(), x, create_graph=True)
        rows = [
            torch.autograd.grad(
                grad[:, n + i].sum(),
                x,
                create_graph=create_graph,
                retain_graph=create_graph or i < n - 1,
            )[0]
            for i in range(n)
        ]
        hess_rows = torch.stack(rows, dim=1)  # (batch, n, 2n): ∂/∂x of ∂L/∂q̇_i
        mass, mixed = hess_rows[:, :, n:], hess_rows[:, :, :n]
        rhs = grad[:, :n] - (mixed @ qdot[:, :, None])[:, :, 0]
        qddot = torch.linalg.solve(mass, rhs)
        return qddot if create_graph else qddot.detach()

    return net, acceleration


def torch_train_step(net, acceleration, norm: str = "l1"):
    """One Adam step on the mean L1 (or, `norm="l2"`, squared) acceleration error."""
    import torch

    optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)

    def step(q, qdot, qddot):
        optimizer.zero_grad(set_to_none=True)
        pred = acceleration(q, qdot, create_graph=True)
        error = pred - qddot
        loss = (error.abs() if norm == "l1" else error.square()).mean()
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def torch_matmul_flops(fn: Callable[[], Any]) -> float:
    """FLOPs of the matrix products one call of `fn` runs in PyTorch (forward and
    backward alike), multiply-add = 2 as in XLA's cost analysis.

    Counted by intercepting every ATen operator (`TorchDispatchMode`);
    `torch.utils.flop_counter.FlopCounterMode` cannot be used here, as its backward
    hooks reject `torch.autograd.grad` with respect to a leaf. Elementwise work is
    not counted; in XLA's count for the same networks it is under 1%.
    """
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    aten = torch.ops.aten
    # Operator -> index of its first matrix operand (addmm and baddbmm lead with
    # the term they add).
    products = {aten.mm: 0, aten.bmm: 0, aten.addmm: 1, aten.baddbmm: 1}

    class Count(TorchDispatchMode):
        flops = 0.0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            first = products.get(func.overloadpacket)
            if first is not None:
                a, b = args[first], args[first + 1]
                self.flops += 2.0 * a.numel() * b.shape[-1]
            return func(*args, **(kwargs or {}))

    with Count() as count:
        fn()
    return count.flops


# -------------------------------------------------------------------------- runs


@dataclasses.dataclass
class Row:
    case: str
    implementation: str
    samples: list[float]
    batch: int
    baseline: "Row | None" = None
    target: float | None = None
    goal: float | None = None
    cpu: list[float] | None = None

    @property
    def seconds(self) -> float:
        return median(self.samples)

    @property
    def ratio(self) -> float:
        return 1.0 if self.baseline is None else self.baseline.seconds / self.seconds

    @property
    def best_ratio(self) -> float:
        """The ratio of the fastest rounds: less sensitive to outside load."""
        if self.baseline is None:
            return 1.0
        return min(self.baseline.samples) / min(self.samples)


def states(batch: int, dof: int, key):
    kq, kv = jr.split(key)
    q = jr.uniform(kq, (batch, dof), jnp.float32, -np.pi, np.pi)
    qdot = jr.normal(kv, (batch, dof), jnp.float32)
    # Targets from the true double pendulum, as in the paper's experiment.
    qddot = jax.vmap(lagrax.acceleration, in_axes=(None, 0, 0))(
        lagrax.systems.DoublePendulum(), q, qdot
    )
    return q, qdot, qddot


def relative_error(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def make_model(width: int, depth: int, seed: int) -> lagrax.MLPLagrangian:
    return lagrax.MLPLagrangian(
        2, width=width, depth=depth, dtype=jnp.float32, key=jr.key(seed)
    )


def paper_cases(args, rows: list[Row], flops_rows: list[list]) -> float:
    """lagrax vs the paper's formula: accelerations, one training step, FLOPs."""
    model = make_model(args.width, args.depth, 0)
    arch = f"4-{'-'.join([str(args.width)] * args.depth)}-1"
    q, qdot, qddot = states(args.batch, 2, jr.key(1))
    lagrax_fn, params = jax_accelerations(lagrax_acceleration, model)
    paper_fn, _ = jax_accelerations(paper_acceleration, model)
    forward_fn, _ = jax_forward(model)
    matmul, matmul_flops = matmul_reference(args.matmul_size)
    err = relative_error(lagrax_fn(params, q, qdot), paper_fn(params, q, qdot))
    print(f"[{arch}] lagrax vs paper formula, relative difference: {err:.1e}")

    cpu: dict[str, list[float]] = {}
    samples = time_interleaved(
        {
            "paper": lambda: paper_fn(params, q, qdot),
            "lagrax": lambda: lagrax_fn(params, q, qdot),
            "matmul": matmul,
        },
        repeats=args.repeats,
        cpu_seconds=cpu,
    )
    case = f"accelerations, {arch}, batch {args.batch}"
    base = Row(
        case,
        "paper formula (pinv ∘ jax.hessian)",
        samples["paper"],
        args.batch,
        cpu=cpu["paper"],
    )
    rows += [
        base,
        Row(
            case, "lagrax", samples["lagrax"], args.batch, base, 1.2, cpu=cpu["lagrax"]
        ),
    ]
    rate = matmul_flops / median(samples["matmul"])
    forward = compiled_flops(forward_fn, params, q, qdot)
    for name, fn in (("paper formula", paper_fn), ("lagrax", lagrax_fn)):
        flops = compiled_flops(fn, params, q, qdot)
        achieved = flops / median(
            samples["paper" if name == "paper formula" else "lagrax"]
        )
        flops_rows.append(
            [
                arch,
                name,
                f"{flops / args.batch / 1e6:.2f}",
                f"{flops / forward:.2f}",
                f"{achieved / 1e9:.1f}",
                f"{achieved / rate:.0%}",
                "≤ 6 fwd, ≥ 70%" if name == "lagrax" else "",
            ]
        )
    print(
        f"[{arch}] forward pass: {forward / args.batch / 1e6:.2f} MFLOP/state; "
        f"{args.matmul_size}³ float32 matmul: {rate / 1e9:.1f} GFLOP/s (same run)"
    )

    tq, tv, ta = states(args.train_batch, 2, jr.key(4))
    lagrax_step, lagrax_state = jax_train_step(lagrax_acceleration, model)
    paper_step, paper_state = jax_train_step(paper_acceleration, model)
    samples = time_interleaved(
        {
            "paper": lambda: paper_step(*paper_state, tq, tv, ta),
            "lagrax": lambda: lagrax_step(*lagrax_state, tq, tv, ta),
        },
        repeats=args.repeats,
        cpu_seconds=cpu,
    )
    case = f"train step (L1 loss + Adam), {arch}, batch {args.train_batch}"
    base = Row(
        case,
        "paper formula (pinv ∘ jax.hessian)",
        samples["paper"],
        args.train_batch,
        cpu=cpu["paper"],
    )
    rows += [
        base,
        Row(
            case,
            "lagrax",
            samples["lagrax"],
            args.train_batch,
            base,
            1.7,
            cpu=cpu["lagrax"],
        ),
    ]
    return rate


def torch_device(choice: str) -> str:
    """PyTorch's device: `choice`, or for "auto" CUDA when JAX runs on a GPU and
    PyTorch sees one (so that both sides run on the same hardware), else the CPU."""
    import torch

    if choice != "auto":
        return choice
    if jax.default_backend() == "gpu" and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def _waited(device: str, fn: Callable[[], Any]) -> Callable[[], Any]:
    """`fn`, returning only when its work is done (CUDA runs asynchronously)."""
    if device == "cpu":
        return fn
    import torch

    def call():
        out = fn()
        torch.cuda.synchronize()
        return out

    return call


def torch_cases(args, rows: list[Row], flops_rows: list[list], rate: float):
    """lagrax vs torchdyn-style batched autograd in PyTorch, same weights."""
    try:
        import torch
    except ImportError:
        print(
            "PyTorch is not installed: skipping the PyTorch rows "
            "(pip install -e '.[bench]' installs the pinned CPU build)."
        )
        return
    device = torch_device(args.torch_device)
    if device == "cpu":
        threads = (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count()
        )
        torch.set_num_threads(threads)
        print(
            f"PyTorch {torch.__version__}: {torch.get_num_threads()} intra-op "
            f"thread(s); JAX/XLA: {threads} thread(s) (its default pool, one per "
            "available core)"
        )
    else:
        print(f"PyTorch {torch.__version__} on {torch.cuda.get_device_name()}")
    model = make_model(args.torch_width, 2, 5)
    arch = f"4-{args.torch_width}-{args.torch_width}-1"
    q, qdot, qddot = states(args.batch, 2, jr.key(6))
    tq, tv, ta = (torch.from_numpy(np.array(x)).to(device) for x in (q, qdot, qddot))
    net, torch_accel = torch_modules(model)
    net.to(device)
    waited = functools.partial(_waited, device)
    lagrax_fn, params = jax_accelerations(lagrax_acceleration, model)
    forward_fn, _ = jax_forward(model)
    err = relative_error(
        lagrax_fn(params, q, qdot),
        torch_accel(tq, tv, create_graph=False).cpu().numpy(),
    )
    print(f"[{arch}] lagrax vs PyTorch, relative difference: {err:.1e}")

    forward = compiled_flops(forward_fn, params, q, qdot)
    torch_step = torch_train_step(net, torch_accel)
    lagrax_step, lagrax_state = jax_train_step(lagrax_acceleration, model)
    cases = (
        (
            f"accelerations, {arch}, batch {args.batch}",
            "",
            waited(lambda: torch_accel(tq, tv, create_graph=False)),
            lambda: lagrax_fn(params, q, qdot),
            compiled_flops(lagrax_fn, params, q, qdot),
            ACCELERATION_GOAL,
        ),
        (
            f"train step (L1 loss + Adam), {arch}, batch {args.batch}",
            " train step",
            waited(lambda: torch_step(tq, tv, ta)),
            lambda: lagrax_step(*lagrax_state, q, qdot, qddot),
            compiled_flops(lagrax_step, *lagrax_state, q, qdot, qddot),
            TRAIN_STEP_GOAL,
        ),
    )
    for case, what, torch_fn, lagrax_call, flops, goal in cases:
        cpu: dict[str, list[float]] = {}
        samples = time_interleaved(
            {"torch": torch_fn, "lagrax": lagrax_call},
            repeats=args.repeats,
            cpu_seconds=cpu,
        )
        base = Row(
            case,
            "PyTorch (torchdyn-style autograd)",
            samples["torch"],
            args.batch,
            cpu=cpu["torch"],
        )
        rows += [
            base,
            Row(
                case,
                "lagrax",
                samples["lagrax"],
                args.batch,
                base,
                1.0,
                goal,
                cpu["lagrax"],
            ),
        ]
        # The rate lagrax would need for the goal: its FLOPs in 1/goal of PyTorch's
        # time. Above the matmul rate, this algorithm cannot reach the goal here.
        needed = goal * flops / base.seconds
        torch_flops = torch_matmul_flops(torch_fn)
        for name, count, seconds, note in (
            ("PyTorch" + what, torch_flops, base.seconds, ""),
            (
                "lagrax" + what,
                flops,
                median(samples["lagrax"]),
                f"{goal:.1f}× PyTorch needs {needed / 1e9:.3g} GFLOP/s "
                f"= {needed / rate:.0%}",
            ),
        ):
            flops_rows.append(
                [
                    arch,
                    name,
                    f"{count / args.batch / 1e6:.2f}",
                    f"{count / forward:.2f}",
                    f"{count / seconds / 1e9:.1f}",
                    f"{count / seconds / rate:.0%}",
                    note + (", ≥ 70%" if name == "lagrax train step" else ""),
                ]
            )


def format_rows(rows: list[Row], judge: bool) -> str:
    table = []
    for row in rows:
        if row.baseline is None:
            target, met = "baseline", ""
        else:
            target = f"≥ {row.target:.1f}×" + (
                f" (goal {row.goal:.1f}×)" if row.goal else ""
            )
            met = ("yes" if row.ratio >= row.target else "no") if judge else "n/a"
            if judge and row.goal is not None and row.ratio >= row.target:
                met += " (goal met)" if row.ratio >= row.goal else " (goal missed)"
        table.append(
            [
                row.case,
                row.implementation,
                f"{row.seconds * 1e3:.1f}",
                f"{min(row.samples) * 1e3:.1f}",
                "" if row.cpu is None else f"{median(row.cpu) * 1e3:.1f}",
                f"{row.batch / row.seconds:,.0f}",
                f"{row.ratio:.2f}× ({row.best_ratio:.2f}×)",
                target,
                met,
            ]
        )
    headers = [
        "case",
        "implementation",
        "median ms",
        "min ms",
        "CPU ms",
        "states/s",
        "vs baseline (of mins)",
        "target",
        "met?",
    ]
    return markdown_table(headers, table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="short smoke run (reduced sizes)"
    )
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--train-batch", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--width", type=int, default=600)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--torch-width", type=int, default=500)
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch rows")
    parser.add_argument(
        "--torch-device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="PyTorch's device (auto: CUDA when JAX runs on a GPU, else the CPU)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.train_batch, args.repeats = 32, 32, 2
        args.width, args.torch_width, args.matmul_size = 32, 32, 128

    print(environment())
    print(f"load average at start: {load_average()}")
    print(
        f"repeats: {args.repeats} interleaved rounds per case; medians; "
        "compile excluded"
    )
    rows: list[Row] = []
    flops_rows: list[list] = []
    rate = paper_cases(args, rows, flops_rows)
    if not args.no_torch:
        torch_cases(args, rows, flops_rows, rate)
    judge = not args.quick
    if not judge:
        print("(--quick: reduced sizes, targets not judged)")
    print(f"load average at end: {load_average()}")
    print()
    print(format_rows(rows, judge))
    print()
    headers = [
        "model",
        "implementation",
        "MFLOP/state",
        "forward passes",
        "GFLOP/s",
        "of matmul rate",
        "goal (what it needs)",
    ]
    print(markdown_table(headers, flops_rows))
    print(
        "\nmedian/min: wall clock over the interleaved rounds; 'vs baseline' and "
        "'met?' use medians, the ratio of the minima is in parentheses. "
        "PyTorch's OpenMP threads slow down far more than XLA's when another process "
        "takes a core, so on a loaded machine its median inflates: compare min too. "
        "CPU ms: median CPU time of the process per call, summed over its threads "
        "(not counting time the machine gave to others, but counting pools that "
        "spin while they wait)."
    )
    print(
        "FLOPs: XLA cost analysis of the jitted batch (multiply-add = 2); "
        "'forward passes' divides by the same model's forward pass. PyTorch: its "
        "matrix products, counted per ATen call. 'needs': the FLOP/s lagrax's own "
        "FLOPs would need to run at for the goal against PyTorch's median, and that "
        "as a share of the matmul rate (over 100%: out of reach for this algorithm "
        "on this machine)."
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
