"""Throughput of rollout training: the gradient of `lagrax.rollout_loss`.

A batch of short windows (each integrated from its observed first state, all at
once under `jax.vmap`) is differentiated through Diffrax's adjoint with respect to
an `MLPLagrangian`'s parameters (`1e-3 · MLP` plus a unit kinetic term
`|q̇|²/2 − |q|²/2`, so that a freshly initialized network's indefinite mass
matrix does not make windows fail; the network's jet is every pass's cost), for
several solvers:

- `diffrax.Tsit5()` with fixed steps (`ConstantStepSize`, one step per sample) and
  adaptive (`PIDController`, `rtol = atol = 1e-4`, float32), which `rollout_loss`
  steps `lagrax.Unrolled`; for comparison, both also through Diffrax's own stage
  loop (`Tsit5(scan_kind="checkpointed")`, which `rollout_loss` keeps);
- `lagrax.VariationalMidpoint()` and `lagrax.GaussLegendre()` (4th order), fixed
  steps: each step a Newton solve whose iterations take the jet and its
  forward-mode Jacobian.

`rollout_loss` integrates each window's trajectories as one solve (a batched
state; see `lagrax._solver.batched`): for Tsit5 (fixed) and VariationalMidpoint the
same loss over `lagrax.rollout`, which vmaps one solve per trajectory (stepped the
same way), is timed in the same run for comparison ("vmapped solves").

The structured `MechanicalLagrangian` (same width, depth 2) is timed the same way
with Tsit5 (fixed), against its own batched gradient of accelerations.

Reported per solver: the median time of one gradient (compilation excluded,
`block_until_ready`, interleaved repeats), the solver steps of the batch (for the
adaptive solve, the largest count in the batch: the vmapped loop runs until every
window is done), the time per step, and that time as a multiple of the baseline
measured in the same run: the gradient of `lagrax.acceleration_loss` over the same
number of states (one batched vector-field evaluation, forward and backward,
through the hand-written batched pass). `passes` is the number of Lagrangian passes
per step (a `jet`, gradient or value at one state), counted with a host callback
in a separate forward solve of one window; `overhead` = multiple / passes is what
a step costs beyond its passes: the solver's own work, the adjoint's
recomputation and bookkeeping (1.0 would be the cost of the passes alone, if each
were as cheap as the baseline's). A solver's vector field takes the per-state
path (`jax.vmap(lagrax.acceleration)`), and the default adjoint (checkpointing
every step) runs each step's forward pass again in the backward pass: the time of
that path's gradient plus its forward pass, as a multiple of the baseline, is
printed above each table, the overhead an explicit solver would have if its own
work were free (timed as separate calls, it overestimates where a call's fixed
costs matter: at width 128 it exceeds Tsit5's whole overhead).

Run `python benchmarks/rollout_training.py` (widths 128 and 500, depth 3, batch
256, windows of 10 steps, float32; about 7 minutes per width on a loaded 2-core
machine, mostly compiling),
`--steps 5` or `--steps 20` for other windows, `--width 128` (repeatable) and
`--batch` for other sizes (each width's table prints when it is done), or
`--quick` for a small smoke
run (about two minutes on 2 cores, mostly compiling).
"""

import argparse
import dataclasses
import functools
import sys

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

import lagrax


try:
    from ._common import (
        environment,
        load_average,
        markdown_table,
        median,
        time_interleaved,
    )
except ImportError:  # run as a script: `python benchmarks/rollout_training.py`
    from _common import (
        environment,
        load_average,
        markdown_table,
        median,
        time_interleaved,
    )


DT = 0.01  # sample spacing of the data, and the fixed step


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    solver: diffrax.AbstractSolver
    adaptive: bool

    def options(self) -> dict:
        if self.adaptive:
            return dict(rtol=1e-4, atol=1e-4, dt0=DT)
        return dict(dt0=DT, stepsize_controller=diffrax.ConstantStepSize())


METHODS = (
    Method("Tsit5 (fixed)", diffrax.Tsit5(), False),
    # `rollout_loss` steps an explicit Diffrax solver `lagrax.Unrolled`; a solver
    # whose `scan_kind` is set keeps Diffrax's stage loop, for comparison.
    Method(
        "Tsit5 (fixed), Diffrax's stage loop",
        diffrax.Tsit5(scan_kind="checkpointed"),
        False,
    ),
    Method("Tsit5 (adaptive)", diffrax.Tsit5(), True),
    Method(
        "Tsit5 (adaptive), Diffrax's stage loop",
        diffrax.Tsit5(scan_kind="checkpointed"),
        True,
    ),
    Method("VariationalMidpoint", lagrax.VariationalMidpoint(), False),
    Method("GaussLegendre", lagrax.GaussLegendre(), False),
)

# Timed also as the same loss over vmapped solves (`vmapped_gradient`), in the
# same run: the comparison for `rollout_loss`'s batched solve.
VMAPPED = ("Tsit5 (fixed)", "VariationalMidpoint")
VMAPPED_SUFFIX = ", vmapped solves"


def _kinetic(q, qdot):
    return 0.5 * jnp.sum(qdot**2) - 0.5 * jnp.sum(q**2)


class _Counted(lagrax.AbstractJetLagrangian):
    """A Lagrangian that reports each pass to the host (slow: counting only)."""

    inner: lagrax.AbstractJetLagrangian

    def __call__(self, q, qdot):
        jax.debug.callback(_count, q)
        return self.inner(q, qdot)

    def jet(self, q, qdot, directions):
        jax.debug.callback(_count, q)
        return self.inner.jet(q, qdot, directions)


_PASSES = [0]


def _count(_):
    _PASSES[0] += 1


def trajectories(batch: int, steps: int) -> lagrax.TrajectoryData:
    """`batch` double-pendulum windows of `steps + 1` samples, `DT` apart, from
    moderate random states (the paper's system, float32)."""
    q0, qdot0 = lagrax.sample_states(
        batch,
        key=jr.key(0),
        q_box=([-1.0, -1.0], [1.0, 1.0]),
        qdot_box=([-1.0, -1.0], [1.0, 1.0]),
        dtype=jnp.float32,
    )
    ts = jnp.arange(steps + 1, dtype=jnp.float32) * DT
    return lagrax.rollout(lagrax.systems.DoublePendulum(), q0, qdot0, ts)


def gradient(method: Method, data: lagrax.TrajectoryData, steps: int):
    """The compiled gradient of `rollout_loss` over whole windows."""
    loss = functools.partial(
        lagrax.rollout_loss,
        data=data,
        solver=method.solver,
        max_steps=steps if not method.adaptive else 16 * steps,
        **method.options(),
    )
    return eqx.filter_jit(eqx.filter_grad(lambda model: loss(model)))


def vmapped_gradient(method: Method, data: lagrax.TrajectoryData, steps: int):
    """The same loss over `lagrax.rollout`, which integrates each window in its own
    solve under `jax.vmap`: what `rollout_loss` did before it solved each window's
    trajectories as one batch (`lagrax._solver.batched`)."""
    max_steps = steps if not method.adaptive else 16 * steps
    # Stepped as `rollout_loss` steps it: the comparison is of the batching alone.
    solver = method.solver
    if isinstance(solver, diffrax.Tsit5) and solver.scan_kind is None:
        solver = lagrax.Unrolled(solver)

    def loss(model):
        predicted = lagrax.rollout(
            model, data, solver=solver, max_steps=max_steps, **method.options()
        )
        return jnp.mean((predicted.q - data.q) ** 2) + jnp.mean(
            (predicted.qdot - data.qdot) ** 2
        )

    return eqx.filter_jit(eqx.filter_grad(loss))


def solver_steps(method: Method, model, data: lagrax.TrajectoryData) -> int:
    """Steps of the batched solve: the largest count over the windows."""
    if not method.adaptive:
        return data.ts.shape[0] - 1
    options = method.options()

    @eqx.filter_jit
    def count(model, q0, qdot0):
        sol = diffrax.diffeqsolve(
            lagrax.LagrangianTerm(model, throw=False),
            method.solver,
            t0=data.ts[0],
            t1=data.ts[-1],
            dt0=options["dt0"],
            y0=(q0, qdot0),
            stepsize_controller=diffrax.PIDController(
                rtol=options["rtol"], atol=options["atol"]
            ),
            max_steps=16 * (data.ts.shape[0] - 1),
            throw=False,
        )
        return sol.stats["num_steps"]

    counts = jax.vmap(count, in_axes=(None, 0, 0))(model, data.q[:, 0], data.qdot[:, 0])
    return int(jnp.max(counts))


def passes_per_step(method: Method, model, data: lagrax.TrajectoryData) -> float:
    """Lagrangian passes per step of a forward solve of the first window."""
    one = lagrax.TrajectoryData(ts=data.ts, q=data.q[:1], qdot=data.qdot[:1])
    steps = solver_steps(method, model, one)
    _PASSES[0] = 0
    options = method.options()
    max_steps = 16 * (data.ts.shape[0] - 1)
    jax.block_until_ready(
        lagrax.rollout(
            _Counted(model), one, solver=method.solver, max_steps=max_steps, **options
        ).q
    )
    jax.effects_barrier()
    return _PASSES[0] / steps


def run(width: int, batch: int, steps: int, repeats: int) -> list[list[str]]:
    data = trajectories(batch, steps)
    mlp = lagrax.MLPLagrangian(
        2, width=width, depth=3, dtype=jnp.float32, key=jr.key(1)
    )
    # A freshly initialized network's mass matrix is indefinite, singular in
    # places: a unit kinetic term keeps every window's solve finite, and the
    # network's jet is still every pass's cost.
    model = lagrax.LagrangianSum.of((_kinetic, 1.0), (mlp, 1e-3))
    # One batched vector-field evaluation of the whole batch, with its gradient.
    states = lagrax.AccelerationData(
        q=data.q[:, 0], qdot=data.qdot[:, 0], qddot=jnp.zeros_like(data.q[:, 0])
    )
    baseline = eqx.filter_jit(eqx.filter_grad(lagrax.acceleration_loss))

    def per_state(model, states):  # the path a solver's vector field takes
        predicted = jax.vmap(lagrax.acceleration, in_axes=(None, 0, 0))(
            model, states.q, states.qdot
        )
        return jnp.mean(predicted**2)

    fns = {
        "baseline": functools.partial(baseline, model, states),
        "forward": functools.partial(eqx.filter_jit(per_state), model, states),
        "per-state": functools.partial(
            eqx.filter_jit(eqx.filter_grad(per_state)), model, states
        ),
    }
    for method in METHODS:
        fns[method.name] = functools.partial(gradient(method, data, steps), model)
        if method.name in VMAPPED:
            vmapped = vmapped_gradient(method, data, steps)
            fns[method.name + VMAPPED_SUFFIX] = functools.partial(vmapped, model)
    finite = {
        name: all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(fn()))
        for name, fn in fns.items()
    }
    samples = time_interleaved(fns, repeats=repeats)
    base = median(samples["baseline"])
    floor = (median(samples["forward"]) + median(samples["per-state"])) / base
    print(
        f"width {width}: the per-state vector field's gradient and one recomputation "
        f"of its forward pass, timed as calls of their own, take {floor:.2f}× the "
        "baseline: a checkpointing adjoint's overhead without the solver's own work "
        "(overestimated where a call's fixed costs matter, at small widths)"
    )
    rows = [
        [
            f"{width}",
            "batched fast-path gradient (baseline)",
            "1",
            f"{1e3 * base:.2f}",
            f"{1e3 * base:.2f}",
            "1.0",
            "1",
            "1.00",
        ]
    ]
    for method in METHODS:
        n = solver_steps(method, model, data)
        passes = passes_per_step(method, model, data)
        names = [method.name]
        if method.name in VMAPPED:
            names.append(method.name + VMAPPED_SUFFIX)
        for name in names:
            t = median(samples[name])
            multiple = t / n / base
            flag = "" if finite[name] else " (non-finite)"
            rows.append(
                [
                    f"{width}",
                    name + flag,
                    f"{n}",
                    f"{1e3 * t:.1f}",
                    f"{1e3 * t / n:.2f}",
                    f"{multiple:.1f}",
                    f"{passes:.1f}",
                    f"{multiple / passes:.2f}",
                ]
            )
    tsit5 = METHODS[0]
    rows += mechanical_rows(
        width, data, steps, repeats, passes_per_step(tsit5, model, data)
    )
    return rows


def mechanical_rows(width, data, steps, repeats, passes) -> list[list[str]]:
    """The structured model, `MechanicalLagrangian` (depth 2, positive definite
    mass matrix: no kinetic term needed), with Tsit5 at fixed steps: its rollout
    gradient against its own batched gradient of accelerations, and the same loss
    over vmapped solves. `passes` are Tsit5's vector-field evaluations per step."""
    model = lagrax.MechanicalLagrangian(
        2, width=width, depth=2, dtype=jnp.float32, key=jr.key(1)
    )
    states = lagrax.AccelerationData(
        q=data.q[:, 0], qdot=data.qdot[:, 0], qddot=jnp.zeros_like(data.q[:, 0])
    )
    tsit5 = METHODS[0]
    baseline = eqx.filter_jit(eqx.filter_grad(lagrax.acceleration_loss))
    fns = {
        "baseline": functools.partial(baseline, model, states),
        "batched": functools.partial(gradient(tsit5, data, steps), model),
        "vmapped": functools.partial(vmapped_gradient(tsit5, data, steps), model),
    }
    samples = time_interleaved(fns, repeats=repeats)
    base = median(samples["baseline"])
    label = f"MechanicalLagrangian, {tsit5.name}"
    rows = [
        [f"{width}", f"{label}: its accelerations' gradient"]
        + ["1", f"{1e3 * base:.2f}", f"{1e3 * base:.2f}", "1.0", "1", "1.00"]
    ]
    for name, suffix in (("batched", ""), ("vmapped", VMAPPED_SUFFIX)):
        t = median(samples[name])
        multiple = t / steps / base
        rows.append(
            [f"{width}", label + suffix, f"{steps}", f"{1e3 * t:.1f}"]
            + [f"{1e3 * t / steps:.2f}", f"{multiple:.1f}", f"{passes:.1f}"]
            + [f"{multiple / passes:.2f}"]
        )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--steps", type=int, default=10, help="steps per window")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--width", type=int, action="append", help="network width (repeatable)"
    )
    parser.add_argument("--batch", type=int, default=None, help="windows per batch")
    args = parser.parse_args(argv)
    widths, batch = ((32,), 16) if args.quick else ((128, 500), 256)
    batch = args.batch or batch
    steps = 5 if args.quick else args.steps
    repeats = args.repeats or (3 if args.quick else 7)

    print(
        f"# Gradient of lagrax.rollout_loss: batch {batch} windows of {steps} steps "
        f"(dt {DT}), MLPLagrangian dof 2, depth 3, float32"
    )
    print(environment())
    print(f"median of {repeats} interleaved repeats, compilation excluded")
    headers = [
        "width",
        "solver",
        "steps",
        "ms / gradient",
        "ms / step",
        "× baseline / step",
        "passes / step",
        "overhead",
    ]
    for width in args.width or widths:
        rows = run(width, batch, steps, repeats)
        print(f"\nload average after timing: {load_average()}\n")
        print(markdown_table(headers, rows), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
