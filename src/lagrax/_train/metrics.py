"""Evaluation metrics: accelerations, rollouts and energy, as in Cranmer et al."""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from .._custom_types import LagrangianLike
from .._mechanics import energy
from .._term import model_dynamics
from .data import AccelerationData, TrajectoryData


def _check_trajectories(x, name: str) -> None:
    if not isinstance(x, TrajectoryData):
        raise TypeError(f"`{name}` must be a TrajectoryData, got {type(x).__name__}.")


def acceleration_error(model: PyTree, data: AccelerationData) -> Float[Array, ""]:
    """Relative error of a model's accelerations, `‖q̈_pred − q̈‖ / ‖q̈‖`.

    The norms are over all samples and coordinates (Frobenius), so the result is
    scale-free: `1e-2` means one percent. Unlike a Lagrangian itself (defined up to
    scale and total derivatives), accelerations are unique, so this compares any
    two models.

    **Arguments:**

    - `model`: a Lagrangian or an `AbstractDynamics`.
    - `data`: an `AccelerationData`, typically held out.

    **Returns:**

    The scalar relative error.
    """
    if not isinstance(data, AccelerationData):
        raise TypeError(
            f"`data` must be an AccelerationData, got {type(data).__name__}."
        )
    _, predicted = jax.vmap(model_dynamics, in_axes=(None, 0, 0))(
        model, data.q, data.qdot
    )
    return jnp.linalg.norm(predicted - data.qddot) / jnp.linalg.norm(data.qddot)


def energy_error(
    system: LagrangianLike, predicted: TrajectoryData, *, scale: float = 1.0
) -> Float[Array, "trajectories times"]:
    """How far each predicted trajectory drifts from the true energy of its initial
    state, over time:

        |E(x̂(t)) − E(x̂(t_0))| / scale

    with `E` the true energy (`lagrax.energy` of `system`). The true motion scores
    0 (up to the solver's error). A failed rollout's unreached samples are `inf`,
    so their errors are not finite.

    **Arguments:**

    - `system`: the true Lagrangian.
    - `predicted`: a model's trajectories, such as `lagrax.rollout(model, q0,
        qdot0, ts)`.
    - `scale`: the normalizing energy, positive (see `energy_discrepancy`).

    **Returns:**

    The errors, shape `(trajectories, times)`.
    """
    _check_trajectories(predicted, "predicted")
    if not scale > 0:
        raise ValueError(f"`scale` must be positive, got {scale!r}.")
    energies = jax.vmap(jax.vmap(lambda q, v: energy(system, q, v)))(
        predicted.q, predicted.qdot
    )
    return jnp.abs(energies - energies[:, :1]) / scale


def energy_discrepancy(
    system: LagrangianLike, predicted: TrajectoryData, *, scale: float = 1.0
) -> Float[Array, ""]:
    """The energy discrepancy of Cranmer et al.: how far predicted trajectories drift
    from the true energy of their initial states by the last time, the mean over
    trajectories of `lagrax.energy_error` at `t_end`,

        mean over trajectories of |E(x̂(t_end)) − E(x̂(t_0))| / scale

    with `E` the true energy and `x̂(t_0)` the observed initial state that every
    rollout starts from. The paper normalizes by the maximum potential energy:
    `scale=lagrax.systems.DoublePendulum().max_potential_energy` (29.4 for the
    default pendulum). The true motion scores 0.

    **Arguments:**

    - `system`: the true Lagrangian.
    - `predicted`: a model's trajectories, such as `lagrax.rollout(model, data)`.
    - `scale`: the normalizing energy, positive.

    **Returns:**

    The scalar discrepancy.
    """
    _check_trajectories(predicted, "predicted")
    ends = jnp.array([0, -1])
    predicted = TrajectoryData(
        predicted.ts[ends], predicted.q[:, ends], predicted.qdot[:, ends]
    )
    return jnp.mean(energy_error(system, predicted, scale=scale)[:, -1])


def _check_pair(predicted: TrajectoryData, target: TrajectoryData) -> None:
    _check_trajectories(predicted, "predicted")
    _check_trajectories(target, "target")
    if predicted.q.shape != target.q.shape:
        raise ValueError(
            f"`predicted` and `target` must hold trajectories of one shape, got "
            f"{predicted.q.shape} and {target.q.shape}."
        )


def rollout_error(
    predicted: TrajectoryData, target: TrajectoryData
) -> Float[Array, " times"]:
    """Relative rollout error over time, `‖x̂ − x‖ / (‖x̂‖ + ‖x‖)` with
    `x = (q, q̇)`, averaged over trajectories.

    Bounded in `[0, 1]` whatever the scale of the state, it is 0 at the first
    sample of rollouts that start from the observed state, and about 1 once a
    prediction is unrelated to the truth.

    **Arguments:**

    - `predicted`: a model's trajectories, such as `lagrax.rollout(model, target)`.
    - `target`: the observed trajectories at the same times.

    **Returns:**

    The error at each time, shape `(times,)`.
    """
    _check_pair(predicted, target)
    x_hat = jnp.concatenate([predicted.q, predicted.qdot], axis=-1)
    x = jnp.concatenate([target.q, target.qdot], axis=-1)
    numerator = jnp.linalg.norm(x_hat - x, axis=-1)
    denominator = jnp.linalg.norm(x_hat, axis=-1) + jnp.linalg.norm(x, axis=-1)
    safe = jnp.where(denominator > 0, denominator, 1)
    return jnp.mean(jnp.where(denominator > 0, numerator / safe, 0), axis=0)


def integrated_log_rollout_error(
    predicted: TrajectoryData, target: TrajectoryData
) -> Float[Array, ""]:
    """The time integral of `log rollout_error(t)`, a one-number summary of a
    rollout: lower is better, and it rewards accuracy over the whole horizon rather
    than at one time.

    The trapezoidal rule over the observation times, leaving out the first sample
    (where rollouts from observed states have error 0, and log 0 = −∞).

    **Arguments:**

    - `predicted`: a model's trajectories, such as `lagrax.rollout(model, target)`.
    - `target`: the observed trajectories at the same times, at least three.

    **Returns:**

    The scalar `∫ log e(t) dt` from `ts[1]` to `ts[-1]`.
    """
    _check_pair(predicted, target)
    if target.ts.shape[0] < 3:
        raise ValueError(
            f"`target` needs at least three times, got {target.ts.shape[0]}."
        )
    log_error = jnp.log(rollout_error(predicted, target))[1:]
    dt = jnp.diff(target.ts[1:])
    return jnp.sum(dt * (log_error[1:] + log_error[:-1]) / 2)
