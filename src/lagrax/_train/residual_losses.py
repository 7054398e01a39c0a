"""Losses on the equations of motion themselves, with no integration and no linear
solve: inverse dynamics against measured forces, and the discrete Euler–Lagrange
equations on observed positions alone."""

import diffrax
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from .._custom_types import ForceFn
from .._force import with_input
from .._lagrangian import gradient_of
from .._mechanics import generalized_force
from .._term import is_dynamics
from .data import AccelerationData, PositionData
from .losses import penalty_of, sample_forces


def _require_lagrangian(model, loss: str) -> None:
    if is_dynamics(model):
        raise TypeError(
            f"`{loss}` needs a Lagrangian (its equations of motion), got "
            f"{type(model).__name__}, which predicts q̈ itself."
        )


def inverse_dynamics_loss(
    model: PyTree,
    data: AccelerationData,
    *,
    force: ForceFn | None = None,
    norm: str = "l2",
) -> Float[Array, ""]:
    r"""Mismatch of the equations of motion at measured states, in force units: the
    DeLaN torque loss.

    At each sample, `generalized_force(L, q, q̇, q̈) − Q(q, q̇) = 0` should hold,
    where `Q` is the force on the model; with the measured input (`data.u`) driving
    its `lagrax.Actuation`, this compares the torque the model needs for the
    measured motion with the measured torque. The loss is `mean φ(residual)` over
    samples and coordinates (`φ = (·)²` or `|·|`).

    No linear solve (unlike `acceleration_loss`): one JVP of `∂L/∂q̇` per sample
    (for a mechanical Lagrangian its structured parts, `M q̈ + Ṁ q̇ − ∂L/∂q`), so
    it neither needs nor checks a regular mass matrix, and errors are weighted by
    force rather than by `M⁻¹`.

    The measured input is what fixes the scale: the residual is linear in `(L,
    Q)`, so without an input every unforced model is fitted by `L = 0`. Such data
    are refused.

    **Arguments:**

    - `model`: a Lagrangian.
    - `data`: an `AccelerationData` with `u` (typically a minibatch); its `q̈` are
        usually finite differences of measured velocities.
    - `force`: the force on the model, holding an `Actuation` for `data.u` (plus
        any friction, dissipation or learned forces, which train with `L`).
    - `norm`: `"l2"` (default) or `"l1"`.

    **Returns:**

    The scalar loss.
    """
    penalty = penalty_of(norm)
    _require_lagrangian(model, "inverse_dynamics_loss")
    if not isinstance(data, AccelerationData):
        raise TypeError(
            f"`data` must be an AccelerationData, got {type(data).__name__}."
        )
    if data.u is None:
        raise ValueError(
            "`inverse_dynamics_loss` needs the measured input `data.u`: its residual "
            "is linear in the model, so without a measured force L = 0 fits any "
            "data. Use acceleration_loss or discrete_euler_lagrange_loss instead."
        )
    forces = sample_forces(force, data)
    assert forces is not None  # `data.u` is set: without a force it raised
    needed = jax.vmap(lambda q, v, a: generalized_force(model, q, v, a))(
        data.q, data.qdot, data.qddot
    )
    return jnp.mean(penalty(needed - forces))


def discrete_euler_lagrange_loss(
    model: PyTree,
    data: PositionData,
    *,
    force: ForceFn | None = None,
    norm: str = "l2",
    normalize: bool | None = None,
) -> Float[Array, ""]:
    r"""The forced discrete Euler–Lagrange equations on consecutive observed
    positions: a loss from positions alone, with no velocities, no accelerations
    and no integration.

    The midpoint rule's discrete Lagrangian `L_d(a, b) = h L((a + b)/2, (b − a)/h)`
    makes the motion satisfy, at every interior sample `k`,

        R_k = p_{k−½} − p_{k+½} + ½ (h_{k−1} F_{k−½} + h_k F_{k+½}) = 0

    with `p = ∂L/∂q̇` and `F = ∂L/∂q + Q` at the midpoints `((q_j + q_{j+1})/2,
    (q_{j+1} − q_j)/h_j)` and `Q` the force at the midpoint times (the discrete
    Lagrange–d'Alembert principle, the equations `lagrax.VariationalMidpoint`
    steps: its trajectories make `R = 0` exactly). The loss is the mean of
    `φ(R_k / h̄_k)`, `h̄_k = (h_{k−1} + h_k)/2`, a residual in force units.

    **Scale.** Without a measured input the residual is linear in `(L, Q)`: `L = 0`
    fits any data. With `normalize` (the default when the data carry no input)
    the loss is divided by the mean of `φ((p_{k+½} − p_{k−½})/h̄_k)` over the batch,
    the model's own momentum changes: invariant to the scale of `L` (which
    positions cannot determine, as for any Lagrangian), and infinite at
    `L = 0`. With a measured input driving an `Actuation` in `force`, the input's
    units fix the scale and the loss is the plain residual.

    **Noise.** The equations link three consecutive positions, so they difference
    the observations twice: a low-noise method. Under noise the normalization can
    also be gamed, since the model weighs each sample through its own mass matrix
    (measured on a pendulum at σ = 0.05 rad: a degenerate model scores 0.34 where
    the true one scores 0.74; `lagrax reproduce noisy-pendulum`). For noisy
    positions train on `rollout_loss`.

    **Arguments:**

    - `model`: a Lagrangian.
    - `data`: a `PositionData` (typically a minibatch of trajectories).
    - `force`: an optional force on the model; with `data.u`, its `Actuation` is
        driven by the linear interpolation of each trajectory's input.
    - `norm`: `"l2"` (default) or `"l1"`.
    - `normalize`: see Scale; default `data.u is None`.

    **Returns:**

    The scalar loss.

    ??? cite "Reference"

        ```bibtex
        @inproceedings{saemundsson2020variational,
            title={Variational Integrator Networks for Physically Structured
                   Embeddings},
            author={Saemundsson, Steindor and Terenin, Alexander and Hofmann, Katja
                    and Deisenroth, Marc},
            booktitle={AISTATS},
            year={2020}
        }
        ```
    """
    penalty = penalty_of(norm)
    _require_lagrangian(model, "discrete_euler_lagrange_loss")
    if not isinstance(data, PositionData):
        raise TypeError(f"`data` must be a PositionData, got {type(data).__name__}.")
    if data.u is not None and force is None:
        raise ValueError(
            "The data carry an input `u`, but no `force` is given to take it: pass "
            "force=lagrax.Actuation() (plus any friction)."
        )
    if normalize is None:
        normalize = data.u is None
    h = jnp.diff(data.ts)
    t_mid = data.ts[:-1] + 0.5 * h
    h_bar = 0.5 * (h[:-1] + h[1:])[None, :, None]

    def midpoint_forces(q, u):
        applied = force
        if u is not None:
            applied = with_input(force, diffrax.LinearInterpolation(data.ts, u))
        mid = 0.5 * (q[:-1] + q[1:])
        velocity = (q[1:] - q[:-1]) / h[:, None]

        def one(t, m, v):
            dl_dq, p = gradient_of(model, m, v)
            if applied is not None:
                dl_dq = dl_dq + applied(t, m, v)
            return dl_dq, p

        return jax.vmap(one)(t_mid, mid, velocity)

    forces, momenta = jax.vmap(midpoint_forces)(data.q, data.u)
    change = momenta[:, 1:] - momenta[:, :-1]
    weighted = h[None, :, None] * forces
    residual = (-change + 0.5 * (weighted[:, :-1] + weighted[:, 1:])) / h_bar
    loss = jnp.mean(penalty(residual))
    if normalize:
        loss = loss / jnp.mean(penalty(change / h_bar))
    return loss
