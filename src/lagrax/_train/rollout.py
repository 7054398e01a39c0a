"""Integrating any model from observed states: the engine of rollout losses and
rollout metrics."""

import diffrax
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from .data import TrajectoryData
from .dynamics import check_model, DynamicsTerm


# THE ADJOINT TRAP, and why lagrax's default adjoint checkpoints every step.
#
# `diffrax.RecursiveCheckpointAdjoint` (Diffrax's default) stores only some of the
# solver's steps on the forward pass and recomputes the others on the backward
# pass. A `SaveAt(ts=...)` time is written during the step whose end `tnext`
# satisfies `ts[j] <= tnext` (diffrax/_integrate.py, `save_ts_impl`), into a
# write-once output buffer whose writes the checkpointed loop does not re-check on
# the backward pass (equinox/internal/_loop/checkpointed.py: "completely
# unchecked ... you will get incorrect gradients"). With a fixed step, the step
# ends are computed as `t0 + (t1 - t0) * k / n` (diffrax/_step_size_controller/
# constant.py), while data times such as `0.1 * arange(n)` differ from them in the
# last bit at some `k`. A save time one ulp *after* a step end is written by the
# next step, interpolated at its very start, and with fewer checkpoints than steps
# that save's cotangent comes back wrong: measured with diffrax 0.7.2 / jax 0.10.2,
# float64, 20 steps of 0.1 and 5 checkpoints, save times equal to the step ends
# (or one ulp before) give the right gradient, one ulp after gives one 2% off;
# binary-exact grids (dt = 0.125), off-grid times, `DirectAdjoint` and as many
# checkpoints as steps are right. Values are right in every case, so nothing
# signals the error. Sampled data integrated with a fixed step equal to (or
# dividing) the sampling interval is exactly this configuration.
#
# The default here, `RecursiveCheckpointAdjoint(checkpoints=max_steps)`, stores
# every step, so the backward pass never replays a step from an earlier checkpoint
# and every gradient we measured is right. Memory is `max_steps` solver states per
# solve: small for the short windows of rollout training, which is why the losses
# default to a small `max_steps`. tests/test_train_losses.py checks the gradient
# against finite differences in exactly this configuration.
def default_adjoint(max_steps: int) -> diffrax.AbstractAdjoint:
    """`RecursiveCheckpointAdjoint` with one checkpoint per step (see above)."""
    return diffrax.RecursiveCheckpointAdjoint(checkpoints=max_steps)


def check_solve_options(
    solver, dt0, rtol, atol, stepsize_controller, adjoint, max_steps
):
    """Validate and fill in the solve options shared by `rollout` and the losses.

    Returns `(solver, stepsize_controller, adjoint)`.
    """
    if solver is None:
        solver = diffrax.Tsit5()
    if not isinstance(solver, diffrax.AbstractSolver):
        raise TypeError(f"`solver` must be a diffrax.AbstractSolver, got {solver!r}.")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"`max_steps` must be a positive int, got {max_steps!r}.")
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
    if dt0 is None and not isinstance(stepsize_controller, diffrax.PIDController):
        raise ValueError(
            f"`dt0` is required with {type(solver).__name__} and fixed steps: it is "
            "the step size."
        )
    if dt0 is not None and not dt0 > 0:
        raise ValueError(f"`dt0` must be positive, got {dt0!r}.")
    if adjoint is None:
        adjoint = default_adjoint(max_steps)
    if not isinstance(adjoint, diffrax.AbstractAdjoint):
        raise TypeError(
            f"`adjoint` must be a diffrax.AbstractAdjoint, got {adjoint!r}."
        )
    return solver, stepsize_controller, adjoint


def solve_from(
    model: PyTree,
    q0: Float[Array, "batch dof"],
    qdot0: Float[Array, "batch dof"],
    ts: Float[Array, "batch times"],
    *,
    solver: diffrax.AbstractSolver,
    dt0: float | None,
    stepsize_controller: diffrax.AbstractStepSizeController,
    adjoint: diffrax.AbstractAdjoint,
    max_steps: int,
    throw: bool,
) -> tuple[Float[Array, "batch times dof"], Float[Array, "batch times dof"]]:
    """Integrate `model` from each `(q0[i], qdot0[i])` and save at `ts[i]`."""
    term = DynamicsTerm(model)

    def one(q, qdot, times):
        sol = diffrax.diffeqsolve(
            term,
            solver,
            t0=times[0],
            t1=times[-1],
            dt0=None if dt0 is None else jnp.asarray(dt0, times.dtype),
            y0=(q, qdot),
            saveat=diffrax.SaveAt(ts=times),
            stepsize_controller=stepsize_controller,
            adjoint=adjoint,
            max_steps=max_steps,
            throw=throw,
        )
        return sol.ys

    return jax.vmap(one)(q0, qdot0, ts)


def rollout(
    model: PyTree,
    data: TrajectoryData,
    *,
    solver: diffrax.AbstractSolver | None = None,
    dt0: float | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-6,
    stepsize_controller: diffrax.AbstractStepSizeController | None = None,
    adjoint: diffrax.AbstractAdjoint | None = None,
    max_steps: int = 4096,
    throw: bool = True,
) -> TrajectoryData:
    """Integrate a model from the initial states of observed trajectories.

    Each trajectory of `data` is re-predicted from its first state `(q[:, 0],
    qdot[:, 0])` over `data.ts`; compare with `lagrax.rollout_error` or
    `lagrax.energy_discrepancy`. Works for Lagrangians and for `AbstractDynamics`
    baselines alike (see `lagrax.rollout_loss` for how).

    **Arguments:**

    - `model`: a Lagrangian or an `AbstractDynamics`.
    - `data`: a `TrajectoryData`; only its initial states and times are used.
    - `solver`: any Diffrax or lagrax solver. Default `diffrax.Tsit5()`.
    - `dt0`: the fixed step (solvers without an error estimate, such as the lagrax
        solvers; required), or the initial step of an adaptive solve (optional).
    - `rtol`, `atol`: tolerances of the default `diffrax.PIDController`, used with
        adaptive solvers.
    - `stepsize_controller`: overrides the default controller (a `PIDController`
        for adaptive solvers, `ConstantStepSize` otherwise); for example
        `diffrax.ConstantStepSize()` runs `Tsit5` with fixed steps.
    - `adjoint`: how to differentiate the solve; the default checkpoints every step
        (`max_steps` solver states per trajectory when differentiated), which gives
        correct gradients where Diffrax's default does not (see
        `lagrax.rollout_loss`).
    - `max_steps`: the step budget of each trajectory.
    - `throw`: whether a failed solve raises; with `False` its unreached times are
        `inf`.

    **Returns:**

    A `TrajectoryData` of the predicted trajectories at `data.ts`.
    """
    check_model(model)
    if not isinstance(data, TrajectoryData):
        raise TypeError(f"`data` must be a TrajectoryData, got {type(data).__name__}.")
    solver, stepsize_controller, adjoint = check_solve_options(
        solver, dt0, rtol, atol, stepsize_controller, adjoint, max_steps
    )
    ts = jnp.broadcast_to(data.ts[None, :], (len(data), data.ts.shape[0]))
    q, qdot = solve_from(
        model,
        data.q[:, 0],
        data.qdot[:, 0],
        ts,
        solver=solver,
        dt0=dt0,
        stepsize_controller=stepsize_controller,
        adjoint=adjoint,
        max_steps=max_steps,
        throw=throw,
    )
    return TrajectoryData(data.ts, q, qdot)
