"""Integrating any model from a batch of initial states: the engine of rollout
losses and rollout metrics."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from .._constraint import ConstraintFn
from .._custom_types import ForceFn
from .._simulate import check_times, solve, solve_options, SolveOptions
from .._solver.base import AbstractSymmetricSolver
from .._solver.batched import batch_norm, Batched, BatchTerm
from .._solver.unrolled import unrollable, Unrolled
from .._term import as_term
from .data import TrajectoryData


def solve_batch(
    model: PyTree,
    q0: Float[Array, "batch dof"],
    qdot0: Float[Array, "batch dof"],
    ts: Float[Array, " times"],
    options: SolveOptions,
    *,
    throw: bool,
    force: ForceFn | None = None,
    u: Float[Array, "batch times inputs"] | None = None,
    constraint: ConstraintFn | None = None,
    together: bool,
) -> tuple[Float[Array, "batch times dof"], Float[Array, "batch times dof"]]:
    """Integrate `model` (under `force`) from each `(q0[i], qdot0[i])` and save at
    `ts`; with inputs `u`, the force's `Actuation` of trajectory `i` is driven by
    the linear interpolation of `u[i]` over `ts`.

    A Lagrangian is integrated with `LagrangianTerm(model, force, throw=False)`: a
    singular mass matrix is a failed solve (which raises if `throw`, else leaves
    non-finite samples), never an error from inside the vector field.

    `together=False` vmaps one solve per trajectory: its own adaptive steps, and a
    failure spoils only its trajectory (for evaluation). `together=True` is one
    solve of the whole batch (`BatchTerm`): the same values with fixed steps, and
    a gradient that costs a fraction of the vmapped solves'; the trajectories
    share their steps, and a failure of one fails all (for losses, which are
    differentiated: an explicit Diffrax Runge–Kutta solver is stepped `Unrolled`).
    """
    if u is not None and force is None:
        raise ValueError(
            "The data carry an input `u`, but no `force` is given to take it: pass "
            "force=lagrax.Actuation() (plus any friction)."
        )
    inputs = None
    if u is not None:
        inputs = jax.vmap(lambda inputs: diffrax.LinearInterpolation(ts, inputs))(u)
    batch = BatchTerm(
        as_term(model, throw=False, force=force, constraint=constraint), inputs
    )
    if not together:

        def one(q, qdot, inputs):
            term = batch.trajectory(inputs)
            q, qdot, _ = solve(term, q, qdot, ts, options, throw=throw)
            return q, qdot

        return jax.vmap(one)(q0, qdot0, inputs)
    solver = options.solver
    if isinstance(solver, AbstractSymmetricSolver):
        # A lagrax solver reads its term's Lagrangian and checks each step: it
        # steps each trajectory.
        if not isinstance(batch.term, solver.term_structure):
            raise TypeError(
                f"{type(solver).__name__} integrates a "
                f"{solver.term_structure.__name__}, not a {type(batch.term).__name__}: "
                "it needs a Lagrangian."
            )
        solver = Batched(solver)
    elif unrollable(solver) and solver.scan_kind is None:  # not the user's choice
        solver = Unrolled(solver)
    options = eqx.tree_at(
        lambda o: (o.solver, o.stepsize_controller),
        options,
        (solver, batch_norm(options.stepsize_controller)),
    )
    q, qdot, _ = solve(batch, q0, qdot0, ts, options, throw=throw)
    return jnp.swapaxes(q, 0, 1), jnp.swapaxes(qdot, 0, 1)


def rollout(
    model: PyTree,
    q0: Float[Array, "trajectories dof"] | TrajectoryData,
    qdot0: Float[Array, "trajectories dof"] | None = None,
    ts: Float[Array, " times"] | None = None,
    *,
    solver: diffrax.AbstractSolver | None = None,
    dt0: float | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-6,
    stepsize_controller: diffrax.AbstractStepSizeController | None = None,
    adjoint: diffrax.AbstractAdjoint | None = None,
    max_steps: int | None = None,
    throw: bool = True,
    force: ForceFn | None = None,
    u: Float[Array, "trajectories times inputs"] | None = None,
    constraint: ConstraintFn | None = None,
) -> TrajectoryData:
    """Integrate a model from a batch of initial states.

    `rollout(model, q0, qdot0, ts)` integrates from each `(q0[i], qdot0[i])` and
    saves at `ts`; `rollout(model, data)` re-predicts observed trajectories from
    their first states, over `data.ts`. Compare with `lagrax.rollout_error` or
    `lagrax.energy_error`. Works for Lagrangians and for `AbstractDynamics`
    baselines alike; all trajectories are integrated at once, under `jax.vmap`,
    each in its own solve: its own adaptive steps, and a failure spoils only its
    trajectory. (To train on rollouts, `lagrax.rollout_loss` is faster: it
    integrates the trajectories as one batched solve, whose gradient costs
    1.4–2.9× less.)

    **Arguments:**

    - `model`: a Lagrangian or an `AbstractDynamics`.
    - `q0`, `qdot0`: initial states, each of shape `(trajectories, dof)`; or, as
        `q0` alone, a `TrajectoryData` whose initial states and times are used.
    - `ts`: the save times, shape `(times,)`, as in `lagrax.simulate` (with
        `q0`, `qdot0`).
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
        `lagrax.rollout_loss`). `lagrax.ReversibleAdjoint()` gives the same
        gradients with a symmetric lagrax solver in memory independent of the
        number of steps: for long horizons.
    - `max_steps`: the step budget of each trajectory. Default: with fixed steps
        (the lagrax solvers), the steps from `ts[0]` to `ts[-1]` take (plus one),
        so a long horizon never runs out and a differentiated rollout keeps no
        more states than it steps; with adaptive steps, 65,536.
    - `throw`: whether a failed solve (a singular mass matrix, a solver failure)
        raises; with `False` its unreached samples are `inf`.
    - `force`: an optional generalized force `(t, q, qdot) -> Q`, such as
        `lagrax.RayleighDissipation(b) + lagrax.Actuation()`.
    - `u`: inputs at `ts`, shape `(trajectories, times, inputs)`, that drive the
        force's `Actuation` (linearly interpolated); default the `u` of a
        `TrajectoryData` passed as `q0`.
    - `constraint`: an optional holonomic constraint `q -> g(q)` of a Lagrangian
        (see `lagrax.simulate`). The initial states are not checked against it
        (observed states carry noise): lagrax's constrained solvers (`Rattle`,
        `VariationalMidpoint`, `GaussLegendre`) put the first step's end on the
        constraints, a Diffrax solver keeps an initial offset.
        `ReversibleAdjoint` needs initial states on the constraints: it cannot
        run a step back to a state off them.

    **Returns:**

    A `TrajectoryData` of the predicted trajectories at the save times.
    """
    as_term(model, throw=False, constraint=constraint)  # a clear error if not
    if isinstance(q0, TrajectoryData):
        if qdot0 is not None or ts is not None:
            raise TypeError(
                "Pass either a TrajectoryData or `q0, qdot0, ts`, not both."
            )
        u = q0.u if u is None else u
        q0, qdot0, ts = q0.q[:, 0], q0.qdot[:, 0], q0.ts
    elif qdot0 is None or ts is None:
        raise TypeError(
            "`rollout` takes initial states and times, `rollout(model, q0, qdot0, "
            "ts)`, or observed trajectories, `rollout(model, data)`."
        )
    for name, x in (("q0", q0), ("qdot0", qdot0)):
        if jnp.ndim(x) != 2:
            raise ValueError(
                f"`{name}` must have shape (trajectories, dof), got {jnp.shape(x)}."
            )
    if jnp.shape(qdot0) != jnp.shape(q0):
        raise ValueError(
            f"`qdot0` must have the shape of `q0`, {jnp.shape(q0)}; got "
            f"{jnp.shape(qdot0)}."
        )
    ts = check_times(ts, q0)
    options = solve_options(
        solver=solver,
        dt0=dt0,
        rtol=rtol,
        atol=atol,
        stepsize_controller=stepsize_controller,
        adjoint=adjoint,
        max_steps=max_steps,
        ts=ts,
    )
    if u is not None and jnp.shape(u)[:2] != (q0.shape[0], ts.shape[0]):
        raise ValueError(
            f"`u` must have shape (trajectories, times, inputs) with "
            f"{(q0.shape[0], ts.shape[0])} leading, got {jnp.shape(u)}."
        )
    q, qdot = solve_batch(
        model,
        q0,
        qdot0,
        ts,
        options,
        throw=throw,
        force=force,
        u=u,
        constraint=constraint,
        together=False,
    )
    return TrajectoryData(ts, q, qdot, u)
