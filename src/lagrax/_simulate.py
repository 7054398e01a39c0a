"""Integrating second-order systems: the one path from a term to `diffeqsolve`.

`simulate` (one Lagrangian, one initial state) and `lagrax.rollout` and the rollout
losses (any model, a batch of initial states) validate their solve options with
`solve_options` and integrate with `solve`, so defaults, checks and failure
reporting are written once.
"""

import math

import diffrax
import equinox as eqx
import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._constraint import check_constraint, check_on_constraint, ConstraintFn
from ._custom_types import (
    ForceFn,
    LagrangianLike,
    PositionLike,
    VelocityLike,
)
from ._misc import as_state, check_int, is_real_number
from ._results import from_diffrax, RESULTS
from ._term import LagrangianTerm


# THE ADJOINT TRAP, and why lagrax's default adjoint checkpoints every step.
#
# `diffrax.RecursiveCheckpointAdjoint` (Diffrax's default) stores only some of the
# solver's steps on the forward pass and recomputes the others on the backward
# pass, assuming a recomputed step computes bit for bit what the forward step did
# (equinox/internal/_loop/checkpointed.py, `checkpointed_while_loop`). With fixed
# steps that assumption fails. `ConstantStepSize` computes each step's end as
# `t0 + (t1 - t0) * (k / n)` (diffrax/_step_size_controller/constant.py). In the
# forward loop `n` is loop-invariant and XLA multiplies by `1/n`; in the backward
# pass's recomputation, under `jax.vjp`, it divides by `n`. The two differ in the
# last bit at some `k` (0.7000000000000001 forward, 0.7 backward, for
# `n = 20` steps of 0.1). A `SaveAt(ts=...)` time is written by the step whose end
# satisfies `ts[j] <= tnext` (diffrax/_integrate.py, `save_ts_impl`), an exact
# comparison, so a save time equal to a step end (data sampled every `dt`, the
# usual set-up) is written by one step forward and by none when recomputed: its
# cotangent is dropped, the gradient is silently wrong (5–13% in our
# measurements, float32 and float64, with or without `jit`), and the values are
# right. Measured with diffrax 0.7.2 / equinox 0.13.8 / jax 0.10.2: wrapping `n`
# in `lax.optimization_barrier` inside the controller makes it exact, as do
# `checkpoints` ≥ the steps taken, `DirectAdjoint`, `StepTo`, off-grid save times
# and binary-exact steps (dt = 0.125).
#
# The default here, `RecursiveCheckpointAdjoint(checkpoints=max_steps)`, stores
# every step, so the backward pass never replays a step and every gradient we
# measured is right. Memory is `max_steps` solver states per solve, when
# differentiated (a forward solve allocates nothing for them): small for the short
# windows of rollout training, which is why the losses default to a small
# `max_steps`, and `rollout` sizes it to the steps a fixed-step solve takes.
# tests/test_train_losses.py and tests/test_simulate.py check gradients against
# finite differences in exactly this configuration.
def default_adjoint(max_steps: int) -> diffrax.AbstractAdjoint:
    """`RecursiveCheckpointAdjoint` with one checkpoint per step (see above)."""
    return diffrax.RecursiveCheckpointAdjoint(checkpoints=max_steps)


class SolveOptions(eqx.Module):
    """Validated options of one `diffeqsolve` (see `solve_options`)."""

    solver: diffrax.AbstractSolver
    dt0: float | Array | None
    stepsize_controller: diffrax.AbstractStepSizeController
    adjoint: diffrax.AbstractAdjoint
    max_steps: int = eqx.field(static=True)


def _check_tolerance(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        raise TypeError(f"`{name}` must be a number, got {value!r}.")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"`{name}` must be a finite number ≥ 0, got {value!r}.")


def _check_dt0(dt0):
    """`dt0` as given if it is usable: a positive finite scalar (a traced one is
    checked at run time)."""
    if not is_real_number(dt0):
        raise TypeError(f"`dt0` must be a real number (a scalar), got {dt0!r}.")
    if isinstance(dt0, jax.core.Tracer):
        return eqx.error_if(
            dt0,
            ~(jnp.isfinite(dt0) & (dt0 > 0)),
            "`dt0` must be a positive, finite step size.",
        )
    value = float(np.asarray(dt0))
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"`dt0` must be a positive, finite step size, got {value!r} (it is the "
            "step's magnitude: integrating backwards in time needs no sign)."
        )
    return dt0


DEFAULT_MAX_STEPS = 65536


def step_budget(ts, dt0, stepsize_controller) -> int:
    """A default `max_steps` for a solve over `ts`: with fixed steps of a known
    `dt0` over concrete times, the steps the grid takes (plus one); otherwise
    `DEFAULT_MAX_STEPS`. The default adjoint keeps `max_steps` solver states when
    differentiated, so a budget that fits costs no more memory than needed."""
    fixed = isinstance(stepsize_controller, diffrax.ConstantStepSize)
    if not fixed or dt0 is None or isinstance(ts, jax.core.Tracer):
        return DEFAULT_MAX_STEPS
    span = abs(float(ts[-1]) - float(ts[0]))
    return max(1, int(np.ceil(span / float(dt0) * (1 + 1e-9)))) + 1


def solve_options(
    *,
    solver: diffrax.AbstractSolver | None,
    dt0,
    rtol: float,
    atol: float,
    stepsize_controller: diffrax.AbstractStepSizeController | None,
    adjoint: diffrax.AbstractAdjoint | None,
    max_steps: int | None,
    ts=None,
) -> SolveOptions:
    """Validate and fill in the solve options of `simulate`, `rollout` and the
    rollout losses: the solver (default `Tsit5`), a step-size controller
    (`PIDController(rtol, atol)` for adaptive solvers, `ConstantStepSize` for the
    others, which then need `dt0`), the step budget (`None`: `step_budget` over
    `ts`) and the adjoint (default `default_adjoint`)."""
    if solver is None:
        solver = diffrax.Tsit5()
    if not isinstance(solver, diffrax.AbstractSolver):
        raise TypeError(f"`solver` must be a diffrax.AbstractSolver, got {solver!r}.")
    if max_steps is not None:
        max_steps = check_int(max_steps, "max_steps")
    _check_tolerance(rtol, "rtol")
    _check_tolerance(atol, "atol")
    if rtol == 0 and atol == 0:
        raise ValueError("`rtol` and `atol` cannot both be 0.")
    if stepsize_controller is None:
        if isinstance(solver, diffrax.AbstractAdaptiveSolver):
            stepsize_controller = diffrax.PIDController(rtol=rtol, atol=atol)
        else:
            stepsize_controller = diffrax.ConstantStepSize()
    if not isinstance(stepsize_controller, diffrax.AbstractStepSizeController):
        raise TypeError(
            "`stepsize_controller` must be a diffrax.AbstractStepSizeController, got "
            f"{stepsize_controller!r}."
        )
    if dt0 is None:
        if not isinstance(stepsize_controller, diffrax.PIDController):
            raise ValueError(
                f"`dt0` is required with {type(solver).__name__} and "
                f"{type(stepsize_controller).__name__}: it is the fixed step size."
            )
    else:
        dt0 = _check_dt0(dt0)
    if max_steps is None:
        max_steps = step_budget(ts, dt0, stepsize_controller)
    if adjoint is None:
        adjoint = default_adjoint(max_steps)
    if not isinstance(adjoint, diffrax.AbstractAdjoint):
        raise TypeError(
            f"`adjoint` must be a diffrax.AbstractAdjoint, got {adjoint!r}."
        )
    return SolveOptions(solver, dt0, stepsize_controller, adjoint, max_steps)


def check_times(ts, q0, *, name: str = "ts"):
    """`ts` as an array, if it is a usable time grid for states like `q0`: 1-D, at
    least two times, of `q0`'s floating dtype, finite and strictly monotonic
    (increasing, or decreasing to integrate backwards in time)."""
    if not isinstance(ts, jax.Array | np.ndarray):
        raise TypeError(
            f"`{name}` must be a JAX or NumPy array, got {type(ts).__name__}; pass "
            f"jnp.asarray({name}, dtype=q0.dtype)."
        )
    ts = jnp.asarray(ts)
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(
            f"`{name}` must be a 1-D array of at least two times, got shape {ts.shape}."
        )
    dtype = jnp.result_type(q0)
    if ts.dtype != dtype:
        raise TypeError(
            f"`{name}` has dtype {ts.dtype} but the state has dtype {dtype}: pass "
            f"times of the state's dtype ({name}.astype({dtype.name}))."
        )
    message = (
        f"`{name}` must be finite and strictly monotonic (increasing, or decreasing "
        "to integrate backwards in time)."
    )
    step = jnp.diff(ts)
    bad = ~jnp.all(jnp.isfinite(ts)) | ~(jnp.all(step > 0) | jnp.all(step < 0))
    if isinstance(bad, jax.core.Tracer):  # under jit: checked at run time
        return eqx.error_if(ts, bad, message)
    if bool(bad):
        raise ValueError(f"{message} Got {ts}.")
    return ts


def solve(
    term: diffrax.AbstractTerm,
    q0: Float[Array, "*batch dof"],
    qdot0: Float[Array, "*batch dof"],
    ts: Float[Array, " times"],
    options: SolveOptions,
    *,
    throw: bool,
) -> tuple[Float[Array, "times *batch dof"], Float[Array, "times *batch dof"], RESULTS]:
    """Integrate `term` from `(q0, qdot0)` and save at `ts`: `(q, qdot, result)`.
    (A batch of states is integrated by a `Batched` solver.)

    The one `diffeqsolve` call of lagrax. Failures come back as `lagrax.RESULTS`
    (see `lagrax._results`) and raise with their message when `throw`; samples the
    solve did not reach are `inf`, as in Diffrax.
    """
    dt0 = options.dt0
    if dt0 is not None:
        # Diffrax wants the step signed like `t1 - t0`; lagrax takes its magnitude.
        dt0 = jnp.asarray(dt0, ts.dtype) * jnp.sign(ts[-1] - ts[0])
        if isinstance(options.stepsize_controller, diffrax.ConstantStepSize):
            dt0 = _snapped(dt0, ts[-1] - ts[0])
    sol = diffrax.diffeqsolve(
        term,
        options.solver,
        t0=ts[0],
        t1=ts[-1],
        dt0=dt0,
        y0=(q0, qdot0),
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=options.stepsize_controller,
        adjoint=options.adjoint,
        max_steps=options.max_steps,
        throw=False,
    )
    result = from_diffrax(sol.result)
    assert sol.ys is not None  # `SaveAt(ts=ts)` saves the states
    q, qdot = sol.ys
    # A solve that checks nothing (a fixed step of an explicit Diffrax solver)
    # reports success over motion that blew up: said here, not left as NaNs.
    finite = jnp.all(jnp.isfinite(q)) & jnp.all(jnp.isfinite(qdot))
    result = RESULTS.where(
        (result == RESULTS.successful) & ~finite, RESULTS.diverged, result
    )
    if throw:
        q = result.error_if(q, result != RESULTS.successful)
    return q, qdot, result


def _snapped(dt0, span):
    """`dt0`, or `span / n` where `span` is within a few ulps of `n` steps of it.

    `ConstantStepSize` takes `ceil(span / dt0)` steps: a window such as
    `[0.14, 0.16000000000000003]` at `dt0 = 0.005` (4.000000000000006 steps)
    would take a fifth, tiny step and every step after its first would leave the
    data's grid (observed: errors of 2.6e-4 rad in such windows). A step that
    divides the span up to round-off is made to divide it exactly."""
    steps = jnp.maximum(jnp.round(span / dt0), 1)
    close = jnp.abs(span / dt0 - steps) <= 1e-6 * steps
    return jnp.where(close, span / steps, dt0)


class Trajectory(eqx.Module):
    """A simulated trajectory, sampled at the requested times.

    **Fields:**

    - `ts`: the times, shape `(times,)`.
    - `q`: positions, shape `(times, dof)`.
    - `qdot`: velocities, shape `(times, dof)`.
    - `result`: a `lagrax.RESULTS`: `RESULTS.successful`, or why the solve stopped
        (with `simulate(..., throw=False)`; the samples after that are `inf`).
    """

    ts: Float[Array, " times"]
    q: Float[Array, "times dof"]
    qdot: Float[Array, "times dof"]
    result: RESULTS = eqx.field(default_factory=lambda: RESULTS.successful)


def simulate(
    lagrangian: LagrangianLike,
    q0: PositionLike,
    qdot0: VelocityLike,
    ts: Float[Array | np.ndarray, " times"],
    *,
    solver: diffrax.AbstractSolver | None = None,
    dt0: float | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-6,
    force: ForceFn | None = None,
    stepsize_controller: diffrax.AbstractStepSizeController | None = None,
    max_steps: int = 65536,
    adjoint: diffrax.AbstractAdjoint | None = None,
    constraint: ConstraintFn | None = None,
    throw: bool = True,
) -> Trajectory:
    """Integrate the Euler–Lagrange equations of `lagrangian` from `(q0, qdot0)`.

    A thin layer over `diffrax.diffeqsolve` with `LagrangianTerm`: the solve runs
    from `ts[0]` to `ts[-1]` and saves at every entry of `ts`. Decreasing `ts`
    integrate backwards in time, with every solver.

    **Arguments:**

    - `lagrangian`: a callable `(q, qdot) -> scalar` for one state.
    - `q0`, `qdot0`: the initial state, each of shape `(dof,)`.
    - `ts`: save times, shape `(times,)`, at least two, in the state's dtype,
        finite and strictly increasing (or decreasing, to integrate backwards).
    - `solver`: any Diffrax ODE solver or lagrax solver. Default `diffrax.Tsit5()`.
    - `dt0`: the size of the initial step (adaptive solvers; optional) or of the
        fixed step (solvers without an error estimate, such as the lagrax solvers;
        required): positive and finite, whichever way time runs.
    - `rtol`, `atol`: tolerances of the default `diffrax.PIDController`, used with
        adaptive solvers.
    - `force`: optional generalized force, a callable `(t, q, qdot) -> Q`.
    - `stepsize_controller`: overrides the default controller (a `PIDController`
        for adaptive solvers, `ConstantStepSize` otherwise); for example
        `diffrax.ConstantStepSize()` runs `Tsit5` with fixed steps.
    - `max_steps`: the solver's step budget, as in `diffrax.diffeqsolve`.
    - `adjoint`: how to differentiate the solve. The default,
        `diffrax.RecursiveCheckpointAdjoint(checkpoints=max_steps)`, is exact where
        Diffrax's default is not (save times on a fixed step grid; see
        `lagrax.rollout_loss`), at a memory cost of `max_steps` solver states when
        differentiated. For long horizons with a symmetric lagrax solver,
        `lagrax.ReversibleAdjoint()` gives the same gradients in memory independent
        of the number of steps.
    - `constraint`: an optional holonomic constraint `q -> g(q)` of shape `(m,)`
        (see `lagrax.acceleration`): the solve integrates the index-1 constrained
        motion from an initial state that must lie on the constraints (to `√eps`;
        `lagrax.project_on_constraint` puts it there). A Diffrax solver drifts off
        the constraints as its error accumulates; `lagrax.Rattle()`,
        `lagrax.VariationalMidpoint()` and `lagrax.GaussLegendre()` keep them
        exactly (to round-off at every step); `VelocityVerlet` refuses one.
    - `throw`: with `True` a failed solve raises, with the reason (a singular mass
        matrix, a Newton iteration that did not converge, a step too large for the
        motion, ...); with `False` nothing raises at run time: the trajectory up to
        the failure comes back with the reason in `Trajectory.result`.

    **Returns:**

    A `Trajectory`.
    """
    q0, qdot0 = as_state(q0, qdot0, q_name="q0", qdot_name="qdot0")
    ts = check_times(ts, q0)
    options = solve_options(
        solver=solver,
        dt0=dt0,
        rtol=rtol,
        atol=atol,
        stepsize_controller=stepsize_controller,
        adjoint=adjoint,
        max_steps=max_steps,
    )
    if constraint is not None:
        check_constraint(constraint, q0)
        q0 = check_on_constraint(constraint, q0, qdot0, q0, None, throw=throw)
    term = LagrangianTerm(lagrangian, force, throw=throw, constraint=constraint)
    q, qdot, result = solve(term, q0, qdot0, ts, options, throw=throw)
    return Trajectory(ts=ts, q=q, qdot=qdot, result=result)
