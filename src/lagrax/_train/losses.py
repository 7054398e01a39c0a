"""Training losses: pure functions of `(model, batch)`, for Lagrangians and
baselines alike."""

from collections.abc import Callable

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PyTree

from .._constraint import check_constraint, ConstraintFn
from .._custom_types import ForceFn
from .._force import with_input
from .._graph import BlockSparseMatrix
from .._linalg import definiteness_shortfall
from .._mechanics import batch_acceleration_parts, checked_constrained_acceleration
from .._simulate import solve_options
from .._term import as_term, is_dynamics, model_dynamics
from .data import AccelerationData, TrajectoryData
from .rollout import solve_batch


def penalty_of(norm: str):
    """The elementwise penalty of a loss's `norm`."""
    if norm == "l1":
        return jnp.abs
    if norm == "l2":
        return jnp.square
    raise ValueError(f"`norm` must be 'l1' or 'l2', got {norm!r}.")


def acceleration_loss(
    model: PyTree,
    data: AccelerationData,
    *,
    norm: str = "l1",
    definiteness: float = 0.0,
    weight: Callable[[Array, Array], Array] | None = None,
    force: ForceFn | None = None,
    constraint: ConstraintFn | None = None,
) -> Float[Array, ""]:
    """Mismatch between predicted and observed accelerations, the paper's loss.

    `mean |q̈_pred − q̈|` (`norm="l1"`, Cranmer et al.) or `mean (q̈_pred − q̈)²`
    (`norm="l2"`) over samples and coordinates; with a `weight` function, each
    sample's errors are multiplied by `weight(q, q̇)` first (Cranmer et al. weight
    the relativistic particle's by `1 + γ`). For a Lagrangian, `q̈_pred` comes
    from `lagrax.acceleration(..., throw=False)`: a sample with a singular mass
    matrix makes the loss NaN rather than raising, and `lagrax.fit` skips and counts
    such steps. For an `AbstractDynamics` it is the model's own `acceleration`, and
    where the model's `velocity` is not the observed `q̇` itself (a Hamiltonian
    network's `∂H/∂p`) the same penalty on `velocity − q̇` is added: both of
    Hamilton's equations are fitted.

    With `definiteness = ε > 0` (Lagrangians only) a penalty keeps the learned mass
    matrix `H = ∂²L/∂q̇²` definite: the batch mean of `Σ_k max(0, ε − d_k)` over the
    pivots `d_k` of an `LDLᵀ` factorization of `s·H`, where the gauge `s = ±1` is
    the sign of the batch's mean trace of `H` (the sign of `L` is free: `−L` has the
    same motion). The accelerations alone do not rule out an indefinite `H`, and a
    network can settle there, or in regions of opposite sign separated by surfaces
    where `H` is singular: either fits the data at a few states and fails in
    rollouts. The penalty is zero once every pivot is at least `ε` (mind the scale
    of `L`: `ε` is in its units). For an `AbstractGraphLagrangian` the pivots are
    those of each node's diagonal block of `H` (summed over nodes): a necessary
    condition for a definite `H`, at linear cost, which keeps each node's kinetic
    term definite.

    An `AbstractJetLagrangian` (such as `MLPLagrangian`, or a sum or rescaling of
    one) is evaluated over the whole batch in one `batch_jet`, whose gradient
    `MLPLagrangian` writes by hand (a training step 1.01–1.09× faster than the
    same loss through the per-state `jet`, whose derivative is hand-written too,
    and about 1.3× faster than plain autodiff through it; `python
    benchmarks/train_step.py --pytorch`). That gradient is reverse mode
    only: `jax.grad` and `jax.vjp` of this loss work, forward-mode derivatives
    (`jax.jvp`, `jax.jacfwd`, `jax.hessian`) raise JAX's `custom_vjp` error; for
    those, build the loss from `jax.vmap(lagrax.acceleration)`, which supports
    every transformation.

    **Arguments:**

    - `model`: a Lagrangian or an `AbstractDynamics`.
    - `data`: an `AccelerationData` (typically a minibatch).
    - `norm`: `"l1"` or `"l2"`.
    - `definiteness`: the margin `ε ≥ 0` of the mass-matrix penalty; 0 (default)
        turns it off.
    - `weight`: `None` (default), or a function `(q, qdot) -> scalar` of one
        state, the weight of its sample's errors (not differentiated: it depends
        on the data only).
    - `force`: an optional generalized force `(t, q, qdot) -> Q` acting on the
        model (evaluated at `t = 0`: forces of the state and input); with
        `data.u`, its `Actuation` is driven by each sample's input. It trains
        with the model when it is part of what `fit` optimizes.
    - `constraint`: an optional holonomic constraint `q -> g(q)` of a Lagrangian
        (see `lagrax.acceleration`): `q̈_pred` is then the constrained motion's,
        a saddle-point solve per sample (sparse for a graph Lagrangian under an
        `EdgeConstraint`). The samples are not checked against the constraint
        (measured states carry noise: `lagrax.project_on_constraint` puts them
        on it); a redundant constraint makes the loss NaN, as a singular mass
        matrix does. Not with `definiteness`.

    **Returns:**

    The scalar loss.
    """
    penalty = penalty_of(norm)
    dynamics = is_dynamics(model)
    if not isinstance(data, AccelerationData):
        raise TypeError(
            f"`data` must be an AccelerationData, got {type(data).__name__}."
        )
    forces = sample_forces(force, data)
    if not (isinstance(definiteness, (int, float)) and 0 <= definiteness < np.inf):
        raise ValueError(
            f"`definiteness` must be a finite number ≥ 0, got {definiteness!r}."
        )
    if definiteness and dynamics:
        raise ValueError(
            "`definiteness` penalizes a Lagrangian's mass matrix; "
            f"{type(model).__name__} has none."
        )
    if weight is not None and not callable(weight):
        raise TypeError(
            f"`weight` must be None or a function (q, qdot) -> scalar, got {weight!r}."
        )
    penalty = _weighted(penalty, _sample_weights(weight, data))
    if constraint is not None:
        if dynamics or definiteness:
            raise ValueError(
                "`constraint` is a Lagrangian's holonomic constraint, without "
                "`definiteness`; got "
                + ("an AbstractDynamics." if dynamics else "definiteness too.")
            )
        check_constraint(constraint, data.q[0])
        predicted = _constrained_accelerations(model, data, forces, constraint)
        return jnp.mean(penalty(predicted - data.qddot))
    if definiteness:
        return _with_definiteness(model, data, penalty, definiteness, forces)
    if not dynamics:
        predicted, _ = _lagrangian_accelerations(model, data, forces)
        return jnp.mean(penalty(predicted - data.qddot))
    velocity, predicted = jax.vmap(model_dynamics, in_axes=(None, 0, 0))(
        model, data.q, data.qdot
    )
    if forces is not None:
        predicted = predicted + forces
    return jnp.mean(penalty(predicted - data.qddot)) + jnp.mean(
        penalty(velocity - data.qdot)
    )


def _constrained_accelerations(lagrangian, data, forces, constraint):
    """The constrained `q̈` of every sample (NaN where singular)."""

    def one(q, qdot, force):
        return checked_constrained_acceleration(
            lagrangian, q, qdot, force, constraint, throw=False
        )[0]

    if forces is None:
        return jax.vmap(lambda q, v: one(q, v, None))(data.q, data.qdot)
    return jax.vmap(one)(data.q, data.qdot, forces)


def _sample_weights(weight, data: AccelerationData) -> Array | None:
    """`weight(q, q̇)` of each sample, as a column, or None."""
    if weight is None:
        return None
    weights = jax.vmap(weight)(data.q, data.qdot)
    if weights.shape != data.q.shape[:1]:
        raise ValueError(
            "`weight` must return a scalar for one state (q, qdot); it returned "
            f"shape {weights.shape[1:]}."
        )
    return jax.lax.stop_gradient(weights)[:, None]


def _weighted(penalty, weights: Array | None):
    if weights is None:
        return penalty
    return lambda error: weights * penalty(error)


def sample_forces(
    force: ForceFn | None, data: AccelerationData
) -> Float[Array, "samples dof"] | None:
    """The force at each sample of `data` (at `t = 0`), its `Actuation` driven
    by the sample's input `u`, if the data carry one; None without a force."""
    if force is None:
        if data.u is not None:
            raise ValueError(
                "The data carry an input `u`, but no `force` is given to take it: "
                "pass force=lagrax.Actuation() (plus any friction)."
            )
        return None
    if not callable(force):
        raise TypeError(
            f"`force` must be a callable (t, q, qdot) -> Q, got {type(force).__name__}."
        )
    t = jnp.zeros((), data.q.dtype)
    if data.u is None:
        return jax.vmap(lambda q, v: force(t, q, v))(data.q, data.qdot)
    return jax.vmap(lambda q, v, u: with_input(force, u)(t, q, v))(
        data.q, data.qdot, data.u
    )


def _lagrangian_accelerations(lagrangian, data: AccelerationData, forces=None):
    """`(q̈, H)` of a Lagrangian (under the per-sample `forces`) over the batch,
    from one batched pass; `q̈` is NaN in value and gradient where `H` is
    singular, as with `acceleration(throw=False)`."""
    qddot, singular, h = batch_acceleration_parts(lagrangian, data.q, data.qdot, forces)
    poison = jnp.where(singular, jnp.nan, 1.0).astype(qddot.dtype)
    return qddot * poison[:, None], h


def _with_definiteness(lagrangian, data, penalty, margin, forces):
    predicted, h = _lagrangian_accelerations(lagrangian, data, forces)
    if isinstance(h, BlockSparseMatrix):
        # The diagonal blocks of every sample, one after another, as matrices.
        h = h.diagonal.reshape(-1, *h.diagonal.shape[-2:])
    trace = jnp.mean(jnp.trace(h, axis1=1, axis2=2))
    gauge = jax.lax.stop_gradient(jnp.where(trace >= 0, 1.0, -1.0)).astype(h.dtype)
    shortfall = jax.vmap(definiteness_shortfall, in_axes=(0, None))(gauge * h, margin)
    # Summed over a sample's blocks (one for a dense H), averaged over samples.
    shortfall = jnp.sum(shortfall) / predicted.shape[0]
    return jnp.mean(penalty(predicted - data.qddot)) + shortfall


def rollout_loss(
    model: PyTree,
    data: TrajectoryData,
    *,
    window: int | None = None,
    continuity: float = 0.0,
    norm: str = "l2",
    solver: diffrax.AbstractSolver | None = None,
    dt0: float | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-6,
    stepsize_controller: diffrax.AbstractStepSizeController | None = None,
    adjoint: diffrax.AbstractAdjoint | None = None,
    max_steps: int = 256,
    throw: bool = False,
    force: ForceFn | None = None,
    velocity_weight: float = 1.0,
    constraint: ConstraintFn | None = None,
) -> Float[Array, ""]:
    """Mismatch between observed trajectories and the model's rollouts from
    observed states, over short windows; multiple shooting with `continuity > 0`.

    Each trajectory's `T` samples are cut into `K = (T − 1)/(window − 1)` windows
    of `window` samples, consecutive windows sharing an end sample. Every window is
    integrated from its observed first state with `diffrax.diffeqsolve`, and the
    loss is the mean penalty of the position and velocity errors over the window's
    samples:

        mean φ(q̂ − q) + mean φ(q̂̇ − q̇),       φ = |·| (l1) or (·)² (l2)

    With `continuity = λ > 0` this is multiple shooting in the sense of
    DiffEqFlux's `multiple_shoot`: `λ` times the same penalty between the predicted
    end of window `k` and the start of window `k + 1` (its observed state) is added,
    tying the windows into one trajectory. `window=None` is single shooting over
    whole trajectories.

    Short windows keep the loss landscape tame (errors cannot compound over long
    horizons) and need only a few solver steps each.

    **One solve per window position.** The `k`-th windows of all trajectories share
    their times, so they are integrated as one solve of a batched state (the
    windows' positions one after another): its gradient sums over the
    trajectories inside each step's matrix products, 1.4–2.9× faster than one
    solve per window under `jax.vmap`, which carries a gradient of the parameters
    per window through the solver's loops (`benchmarks/rollout_training.py`).
    With fixed steps each window computes exactly what its own solve would. An
    adaptive controller (a `diffrax.PIDController`) takes steps that every window
    accepts: its error norm is the largest of the windows', so each meets the
    tolerance and `max_steps` bounds the steps of the batch. A window that fails
    fails the loss, as it would anyway. An explicit Diffrax solver (Tsit5, Dopri5,
    ...) is stepped `lagrax.Unrolled`, the same step with its stages written out,
    whose gradient runs each evaluation forward twice rather than three times
    (unless its `scan_kind` is set).

    !!! warning "Adjoint"

        With Diffrax's default `RecursiveCheckpointAdjoint()`, fixed steps whose
        grid coincides with the observation times (the usual set-up here) give a
        silently wrong gradient. The default `adjoint` here,
        `RecursiveCheckpointAdjoint(checkpoints=max_steps)`, is right: keep
        `max_steps` near the number of steps a window needs (memory is
        `max_steps` solver states per window). `diffrax.DirectAdjoint()` is
        right too.

    **Arguments:**

    - `model`: a Lagrangian or an `AbstractDynamics`. Lagrangians are integrated
        through a term whose accelerations are NaN (not an error) where the mass
        matrix is singular, so `lagrax.fit` can skip such steps.
    - `data`: a `TrajectoryData` (typically a minibatch of trajectories).
    - `window`: samples per window, at least 2, with `window − 1` dividing
        `times − 1`; `None` for whole trajectories.
    - `continuity`: the multiple-shooting weight `λ ≥ 0`.
    - `norm`: `"l1"` or `"l2"`.
    - `solver`: any Diffrax or lagrax solver. Default `diffrax.Tsit5()`.
    - `dt0`: the fixed step (solvers without an error estimate; required), or the
        initial step of an adaptive solve.
    - `rtol`, `atol`: tolerances of the default `diffrax.PIDController`, used with
        adaptive solvers.
    - `stepsize_controller`: overrides the default controller; e.g.
        `diffrax.ConstantStepSize()` with `Tsit5` and `dt0` for fixed steps. An
        adaptive controller must be a `diffrax.PIDController`.
    - `adjoint`: how to differentiate the solves (see the warning above).
    - `max_steps`: the step budget of one window.
    - `throw`: whether a failed solve raises. By default it does not: its
        unreached samples are `inf`, the loss is not finite, and `fit` skips it.
    - `force`: an optional generalized force `(t, q, qdot) -> Q` on the model
        (friction, actuation, a learned force); with `data.u`, its `Actuation` is
        driven by each window's measured input, linearly interpolated.
    - `velocity_weight`: the weight `w ≥ 0` of the velocity terms (`w · mean
        φ(q̂̇ − q̇)`, in the windows and the continuity penalty); 0 fits positions
        only, for measured velocities that are noisier than the positions (the
        windows still start from the observed velocities).
    - `constraint`: an optional holonomic constraint `q -> g(q)` of a Lagrangian
        (see `lagrax.rollout`): the windows are integrated on it,
        exactly with `lagrax.Rattle`, `VariationalMidpoint` or `GaussLegendre`.

    **Returns:**

    The scalar loss.

    ??? cite "Reference"

        ```bibtex
        @article{turan2021multiple,
            title={Multiple shooting for training neural differential equations on
                   time series},
            author={Turan, Evren Mert and J{\\"a}schke, Johannes},
            journal={IEEE Control Systems Letters},
            volume={6},
            pages={1897--1902},
            year={2021}
        }
        ```
    """
    penalty = penalty_of(norm)
    as_term(model, throw=False, constraint=constraint)  # a clear error if not
    if not isinstance(data, TrajectoryData):
        raise TypeError(f"`data` must be a TrajectoryData, got {type(data).__name__}.")
    num_times = data.ts.shape[0]
    if window is None:
        window = num_times
    if isinstance(window, bool) or not isinstance(window, int) or window < 2:
        raise ValueError(f"`window` must be an int of at least 2, got {window!r}.")
    if window > num_times or (num_times - 1) % (window - 1) != 0:
        raise ValueError(
            f"`window - 1` must divide `times - 1` = {num_times - 1} (windows share "
            f"their end samples), got window={window}."
        )
    if not continuity >= 0:
        raise ValueError(f"`continuity` must be non-negative, got {continuity!r}.")
    if not (isinstance(velocity_weight, int | float) and velocity_weight >= 0):
        raise ValueError(
            f"`velocity_weight` must be a number ≥ 0, got {velocity_weight!r}."
        )
    options = solve_options(
        solver=solver,
        dt0=dt0,
        rtol=rtol,
        atol=atol,
        stepsize_controller=stepsize_controller,
        adjoint=adjoint,
        max_steps=max_steps,
    )

    num_windows = (num_times - 1) // (window - 1)
    # Static indices: window k holds samples k(w−1), …, k(w−1) + w − 1.
    index = np.arange(num_windows)[:, None] * (window - 1) + np.arange(window)[None, :]
    # The trajectories share each window's times: one solve of all of them per
    # window (`solve_batch(..., together=True)`), the windows one after another.
    # (Vmapped, the windows' solves would carry a gradient of the parameters each.)
    u = None if data.u is None else jnp.swapaxes(data.u[:, index], 0, 1)

    def solve_window(window):
        q0, qdot0, ts, u = window
        return solve_batch(
            model,
            q0,
            qdot0,
            ts,
            options,
            throw=throw,
            force=force,
            u=u,
            constraint=constraint,
            together=True,
        )

    q_hat, qdot_hat = jax.lax.map(
        solve_window,
        (
            jnp.swapaxes(data.q[:, index[:, 0]], 0, 1),
            jnp.swapaxes(data.qdot[:, index[:, 0]], 0, 1),
            data.ts[index],
            u,
        ),
    )
    # (windows, trajectories, window, dof) → (trajectories, windows, window, dof)
    q_hat = jnp.swapaxes(q_hat, 0, 1)
    qdot_hat = jnp.swapaxes(qdot_hat, 0, 1)
    q = data.q[:, index]
    qdot = data.qdot[:, index]
    w = velocity_weight
    loss = jnp.mean(penalty(q_hat - q)) + w * jnp.mean(penalty(qdot_hat - qdot))
    if continuity > 0 and num_windows > 1:
        gap_q = q_hat[:, :-1, -1] - q[:, 1:, 0]
        gap_qdot = qdot_hat[:, :-1, -1] - qdot[:, 1:, 0]
        loss = loss + continuity * (
            jnp.mean(penalty(gap_q)) + w * jnp.mean(penalty(gap_qdot))
        )
    return loss
