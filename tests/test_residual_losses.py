"""Losses on measured machines: the discrete Euler–Lagrange loss on positions, the
torque (inverse dynamics) loss, and the acceleration and rollout losses under a
force driven by measured inputs. Each is zero on exact data, recovers what the
data determine, and has the gradient of its finite differences."""

import functools
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
import scipy.integrate
from jaxtyping import Array, Float

import lagrax
from lagrax.systems import ActuatedDoublePendulum

from .helpers import dot, finite_difference_directional, random_like


DFKI = dict(m1=0.6, m2=0.6, l1=0.3, r1=0.3, r2=0.2, I1=0.054, I2=0.024)
SYSTEM = ActuatedDoublePendulum(**DFKI)
DAMPING, FRICTION = np.array([0.08, 0.05]), np.array([0.1, 0.07])
# 5 ms steps: the lab's friction atan(100 q̇) is stiff near rest (|q̇| < 0.06), and
# at 25 ms VariationalMidpoint refuses steps there as unresolved.
STEP, TIMES = 0.005, 41


def _force(damping=DAMPING, friction=FRICTION):
    """The lab's joint model: viscous and Coulomb friction, and motor torques."""
    return (
        lagrax.RayleighDissipation(damping)
        + lagrax.CoulombFriction(friction)
        + lagrax.Actuation()
    )


@functools.cache
def _trajectories(case):
    """Two trajectories of the pendulum stepped by `VariationalMidpoint` on the
    observation grid, saved at every step: exact discrete trajectories of the
    midpoint rule. `case`: "free" (no force acts), "damped" (friction, no input)
    or "driven" (friction and measured torques)."""
    ts = jnp.linspace(0.0, STEP * (TIMES - 1), TIMES)
    torques = jnp.stack(
        [
            jnp.stack([0.3 * jnp.sin(3 * ts), -0.2 * jnp.cos(5 * ts)], axis=-1),
            jnp.stack([-0.1 + 0.4 * ts, 0.1 * jnp.sin(7 * ts)], axis=-1),
        ]
    )
    on = case != "free"
    # One force structure for every case (zeros where a force is off): one
    # compilation of the solve.
    force = _force(DAMPING * on, FRICTION * on)
    data = lagrax.rollout(
        SYSTEM,
        jnp.array([[1.0, -0.5], [-2.0, 1.5]]),
        jnp.array([[0.0, 2.0], [1.0, -3.0]]),
        ts,
        solver=lagrax.VariationalMidpoint(),
        dt0=STEP,
        force=force,
        u=torques * float(case == "driven"),
    )
    return data if case == "driven" else eqx.tree_at(lambda d: d.u, data, None)


def _positions(data):
    return lagrax.PositionData(data.ts, data.q, data.u)


@eqx.filter_jit
def _del_loss(model, data, force=None, normalize=None):
    return lagrax.discrete_euler_lagrange_loss(
        model, data, force=force, normalize=normalize
    )


@pytest.mark.parametrize("case", ["free", "damped", "driven"])
def test_discrete_euler_lagrange_loss_vanishes_on_midpoint_trajectories(case):
    data = _positions(_trajectories(case))
    force = {
        "free": None,
        "damped": lagrax.RayleighDissipation(DAMPING)
        + lagrax.CoulombFriction(FRICTION),
        "driven": _force(),
    }[case]
    # Without an input the loss is normalized by the momentum changes, with one it
    # is in squared torque units (N²m²). The trajectories satisfy the discrete
    # equations up to the Newton tolerance of the steps (64 ulps of q), which over
    # h = 0.005 leaves residuals of ~1e-12 (losses of 1e-25 to 1e-23 seen).
    loss = float(_del_loss(SYSTEM, data, force))
    assert loss < 1e-20
    # A wrong model (5% more gravity, or no friction) is far from zero.
    wrong_gravity = eqx.tree_at(lambda s: s.g, SYSTEM, SYSTEM.g * 1.05)
    assert float(_del_loss(wrong_gravity, data, force)) > 1e-6
    if case != "free":
        no_friction = lagrax.Actuation() if case == "driven" else None
        assert float(_del_loss(SYSTEM, data, no_friction)) > 1e-6


class _Gravity(lagrax.AbstractLagrangian):
    """`L = ½ θ̇² + g cos θ`: a pendulum of unit mass and length with unknown `g`
    (the mass term fixes the scale, which positions alone cannot)."""

    g: Float[Array, ""]

    def __call__(self, q, qdot):
        return 0.5 * qdot[0] ** 2 + self.g * jnp.cos(q[0])


@eqx.filter_jit
def _newton_step(model, data):
    """One Newton step on `g`: exact, as the loss is quadratic in `g` (the
    normalization, the model's momentum changes, does not depend on it)."""

    def loss(g):
        return lagrax.discrete_euler_lagrange_loss(_Gravity(g), data)

    slope, curvature = jax.grad(loss)(model.g), jax.hessian(loss)(model.g)
    return model.g - slope / curvature


def _pendulum(theta0, omega0, ts):
    """The motion of a pendulum, θ̈ = −9.8 sin θ, at `ts`: SciPy's DOP853 to 1e-13,
    independent of lagrax (the loss divides position errors by h², so they must
    stay far below the h² bias measured here)."""

    def rhs(t, y):
        return [y[1], -9.8 * np.sin(y[0])]

    solution = scipy.integrate.solve_ivp(
        rhs, (0.0, ts[-1]), [theta0, omega0], "DOP853", ts, rtol=1e-13, atol=1e-13
    )
    return solution.y[0]


def test_discrete_euler_lagrange_loss_recovers_gravity():
    # Noiseless positions of a pendulum (g = 9.8, l = 1) swinging up to 2.5 rad
    # (strongly nonlinear) and around 1.5 rad, over 1.6 s, sampled every 0.02 s
    # and every 0.01 s.
    estimates = []
    for step, samples in ((0.02, 81), (0.01, 161)):
        ts = step * np.arange(samples)
        q = np.stack([_pendulum(2.5, 0.0, ts), _pendulum(0.5, 4.0, ts)])
        positions = lagrax.PositionData(jnp.asarray(ts), jnp.asarray(q[..., None]))
        estimates.append(float(_newton_step(_Gravity(jnp.asarray(5.0)), positions)))
    errors = np.array(estimates) / 9.8 - 1
    # The midpoint rule's discrete equations hold on the exact motion up to
    # O((ωh)²), ω ≈ π: the minimiser is biased by that much (about (ωh)²/20
    # here), and the bias falls as h².
    assert abs(errors[1]) < 1e-4, estimates
    assert 3.8 < errors[0] / errors[1] < 4.2, errors


def _accelerations(model, force, key, num=48):
    """Exact accelerations of `model` under `force` with random measured torques,
    at random states, some slow enough to feel the smooth Coulomb zone."""
    q_key, v_key, u_key = jr.split(key, 3)
    q = jr.uniform(q_key, (num, 2), minval=-np.pi, maxval=np.pi)
    qdot = 3 * jr.normal(v_key, (num, 2))
    qdot = qdot.at[: num // 4].multiply(0.01)
    u = jr.normal(u_key, (num, 2))
    qddot = _driven_accelerations(model, force, q, qdot, u)
    return lagrax.AccelerationData(q, qdot, qddot, u)


@eqx.filter_jit
def _driven_accelerations(model, force, q, qdot, u):
    def one(q, qdot, u):
        applied = lagrax.with_input(force, u)(0.0, q, qdot)
        return lagrax.acceleration(model, q, qdot, force=applied)

    return jax.vmap(one)(q, qdot, u)


@eqx.filter_jit
def _torque_loss(model, force, data):
    return lagrax.inverse_dynamics_loss(model, data, force=force)


def test_inverse_dynamics_loss_vanishes_on_exact_data(getkey):
    data = _accelerations(SYSTEM, _force(), getkey())
    # Torques of order 1 N·m, reproduced to round-off.
    assert float(_torque_loss(SYSTEM, _force(), data)) < 1e-26
    assert float(_torque_loss(SYSTEM, _force(DAMPING, 0 * FRICTION), data)) > 1e-4


# The parameters fitted from torques: the inertial ones (m₁, l₁, g and the rotor
# are known), the damping factor and the friction coefficients.
def _trainable(model, force):
    return (
        model.m2,
        model.r1,
        model.r2,
        model.I1,
        model.I2,
        force.forces[0].factor,
        force.forces[1].coefficient,
    )


def _split(model, force):
    spec = jax.tree.map(lambda _: False, (model, force))
    spec = eqx.tree_at(lambda t: _trainable(*t), spec, replace=(True,) * 7)
    return eqx.partition((model, force), spec)


@eqx.filter_jit
def _lbfgs(params, static, data, steps=300):
    """`steps` iterations of L-BFGS (with its zoom line search) on the torque
    loss; the losses along the way."""
    flat, unravel = jax.flatten_util.ravel_pytree(params)

    def loss(x):
        model, force = eqx.combine(unravel(x), static)
        return lagrax.inverse_dynamics_loss(model, data, force=force)

    optimizer = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def step(carry, _):
        x, state = carry
        value, grad = value_and_grad(x, state=state)
        updates, state = optimizer.update(
            grad, state, x, value=value, grad=grad, value_fn=loss
        )
        x = optax.apply_updates(x, updates)
        # (The flat parameters stay one array, the loss a 0-d one.)
        assert isinstance(x, jax.Array) and isinstance(value, jax.Array)
        return (x, state), value

    init = (flat, optimizer.init(flat))
    (flat, _), losses = jax.lax.scan(step, init, None, length=steps)
    return unravel(flat), losses


def _identifiable(model, force, q):
    """What torques determine: M(q), the gravity torques ∂V/∂q, D and the
    friction coefficients."""
    mass = jax.vmap(model.mass)(q)
    gravity = jax.vmap(jax.grad(model.potential))(q)
    return mass, gravity, force.forces[0].damping, force.forces[1].coefficient


def test_inverse_dynamics_loss_identifies_the_pendulum(getkey):
    data = _accelerations(SYSTEM, _force(), getkey(), num=64)
    # Start 15–30% off in every fitted parameter.
    start = (
        ActuatedDoublePendulum(
            **dict(DFKI, m2=0.5, r1=0.36, r2=0.17, I1=0.07, I2=0.019)
        ),
        _force(DAMPING * 1.3, FRICTION * 0.8),
    )
    params, static = _split(*start)
    # optax's L-BFGS mixes int32 and int64 counters, which strict promotion refuses.
    with jax.numpy_dtype_promotion("standard"):
        params, losses = _lbfgs(params, static, data)
    model, force = eqx.combine(params, static)
    # From a loss of ~0.3 (N·m)², L-BFGS converges superlinearly: below 1e-18
    # after 300 iterations (torques to 1e-9 N·m).
    assert float(_torque_loss(model, force, data)) < 1e-16, losses[::50]
    # m₂ alone is not identifiable (m₂r₂, m₁r₁ + m₂l₁ and I₁ + m₂l₁² are), nor the
    # damping factor (only D = F Fᵀ): compare what the torques determine, which
    # a loss of 1e-16 pins to ~1e-7.
    q = jr.uniform(getkey(), (8, 2), minval=-np.pi, maxval=np.pi)
    got = _identifiable(model, force, q)
    expected = _identifiable(SYSTEM, _force(), q)
    for name, a, b in zip(("M", "∂V/∂q", "D", "friction"), got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9, err_msg=name)


def _perturbed():
    """The pendulum and its force with parameters a little off: a point where the
    losses have a nonzero gradient."""
    model, force = SYSTEM, _force()
    model = eqx.tree_at(lambda m: (m.I2, m.r2), model, (model.I2 * 1.2, model.r2 * 0.9))
    friction = force.forces[1]
    assert isinstance(friction, lagrax.CoulombFriction)
    force = eqx.tree_at(
        lambda f: f.forces[1].coefficient, force, friction.coefficient * 0.7
    )
    return model, force


@eqx.filter_jit
@eqx.filter_value_and_grad
def _acceleration_loss(model_and_force, data):
    model, force = model_and_force
    return lagrax.acceleration_loss(model, data, force=force, norm="l2")


# Fixed Euler steps: of all solvers, the one whose gradient compiles fastest (the
# windows, inputs and forces of rollout_loss do not depend on the solver), and a
# one-step method, so that a window restarted at an observed state continues the
# discrete motion exactly.
EULER: dict[str, Any] = dict(
    solver=diffrax.Euler(), stepsize_controller=diffrax.ConstantStepSize()
)


@eqx.filter_jit
@eqx.filter_value_and_grad
def _rollout_loss(model_and_force, data):
    model, force = model_and_force
    return lagrax.rollout_loss(
        model, data, force=force, window=5, dt0=STEP, max_steps=8, **EULER
    )


def _check_gradient(value_and_grad, data, key):
    """At a perturbed point, the gradient agrees with central differences of the
    value along a random direction of every parameter of the model and its
    force (one compilation for both)."""
    point = _perturbed()
    params, static = eqx.partition(point, eqx.is_inexact_array)
    direction = random_like(key, params)
    fd = finite_difference_directional(
        lambda p: float(value_and_grad(eqx.combine(p, static), data)[0]),
        params,
        direction,
    )
    _, grad = value_and_grad(point, data)
    # Central differences with ε = 1e-6 err by ε² ~ 1e-12 and by round-off
    # 1e-16/ε ~ 1e-10, relative to the slope.
    np.testing.assert_allclose(float(dot(grad, direction)), fd, rtol=1e-6)


def test_acceleration_loss_with_force_and_input(getkey):
    data = _accelerations(SYSTEM, _force(), getkey())
    # Accelerations up to ~200 rad/s², reproduced to round-off.
    assert float(_acceleration_loss((SYSTEM, _force()), data)[0]) < 1e-24
    _check_gradient(_acceleration_loss, data, getkey())


@functools.cache
def _euler_trajectories():
    """Two driven trajectories of fixed Euler steps, saved at every step."""
    driven = _trajectories("driven")
    return lagrax.rollout(
        SYSTEM,
        driven.q[:, 0],
        driven.qdot[:, 0],
        driven.ts,
        dt0=STEP,
        force=_force(),
        u=driven.u,
        **EULER,
    )


def test_rollout_loss_vanishes_on_exact_data():
    # Windows of 5 samples cut from trajectories of the same fixed steps, each
    # restarted at its observed first state under the same force, its Actuation
    # driven by the window's inputs: the same discrete motion, to round-off.
    loss, _ = _rollout_loss((SYSTEM, _force()), _euler_trajectories())
    assert float(loss) < 1e-26


def test_rollout_loss_gradient(getkey):
    _check_gradient(_rollout_loss, _euler_trajectories(), getkey())
