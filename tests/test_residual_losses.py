"""Losses on measured machines: the discrete Euler–Lagrange loss on positions, the
torque (inverse dynamics) loss, and the acceleration and rollout losses under a
force driven by measured inputs. Each is zero on exact data, recovers what the
data determine, and has the gradient of its finite differences."""

import functools

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from jaxtyping import Array, Float

import lagrax
from lagrax.systems import ActuatedDoublePendulum, Pendulum

from .helpers import dot, finite_difference_directional, random_like


DFKI = dict(m1=0.6, m2=0.6, l1=0.3, r1=0.3, r2=0.2, I1=0.054, I2=0.024)
SYSTEM = ActuatedDoublePendulum(**DFKI)
DAMPING, FRICTION = np.array([0.08, 0.05]), np.array([0.1, 0.07])
STEP, TIMES = 0.025, 41


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
    # h = 0.025 leaves residuals of ~1e-12.
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


def test_discrete_euler_lagrange_loss_recovers_gravity():
    # Noiseless positions of a pendulum swinging up to 2.5 rad (strongly
    # nonlinear), from an accurate continuous solution, at two sampling steps
    # with the same number of samples (one compilation).
    truth = Pendulum(mass=1.0, length=1.0, g=9.8)
    estimates = []
    for step in (0.02, 0.01):
        ts = jnp.linspace(0.0, 80 * step, 81)
        data = lagrax.trajectory_data(
            truth, jnp.array([[2.5], [0.5]]), jnp.array([[0.0], [4.0]]), ts
        )
        positions = lagrax.PositionData(data.ts, data.q)
        estimates.append(float(_newton_step(_Gravity(jnp.asarray(5.0)), positions)))
    errors = np.abs(np.array(estimates) / 9.8 - 1)
    # The midpoint rule's discrete equations hold on the exact motion up to
    # O((ωh)²) (ω ≈ 3): its minimiser is biased by that much, and no more.
    assert errors[1] < 1e-3, estimates
    assert 3 < errors[0] / errors[1] < 5, errors  # the bias is O(h²)


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
def _newton(params, static, data):
    """A Newton step on the torque loss, with the least-squares (minimum-norm)
    solve: the loss is flat along the combinations the torques cannot see."""
    flat, unravel = jax.flatten_util.ravel_pytree(params)

    def loss(x):
        model, force = eqx.combine(unravel(x), static)
        return lagrax.inverse_dynamics_loss(model, data, force=force)

    step = jnp.linalg.lstsq(jax.hessian(loss)(flat), jax.grad(loss)(flat))[0]
    return unravel(flat - step), loss(flat)


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
    losses = []
    for _ in range(8):
        params, loss = _newton(params, static, data)
        losses.append(float(loss))
    model, force = eqx.combine(params, static)
    assert float(_torque_loss(model, force, data)) < 1e-24, losses
    # m₂ alone is not identifiable: m₂r₂, m₁r₁ + m₂l₁ and I₁ + m₂l₁² are. The
    # combinations are recovered to the accuracy of a converged Newton iteration
    # on a well-conditioned least-squares problem.
    q = jr.uniform(getkey(), (8, 2), minval=-np.pi, maxval=np.pi)
    got = _identifiable(model, force, q)
    expected = _identifiable(SYSTEM, _force(), q)
    for name, a, b in zip(("M", "∂V/∂q", "D", "friction"), got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10, err_msg=name)


def _perturbed():
    """The pendulum and its force with every parameter a little off: a point
    where the losses have a nonzero gradient."""
    model, force = SYSTEM, _force()
    model = eqx.tree_at(lambda m: (m.I2, m.r2), model, (model.I2 * 1.2, model.r2 * 0.9))
    force = eqx.tree_at(
        lambda f: f.forces[1].coefficient, force, force.forces[1].coefficient * 0.7
    )
    return model, force


@eqx.filter_jit
def _acceleration_loss(model_and_force, data):
    model, force = model_and_force
    return lagrax.acceleration_loss(model, data, force=force, norm="l2")


@eqx.filter_jit
def _rollout_loss(model_and_force, data):
    model, force = model_and_force
    return lagrax.rollout_loss(
        model, data, force=force, window=5, solver=lagrax.VariationalMidpoint(),
        dt0=STEP,
    )


def _check_gradient(loss, data, key):
    """`loss` at the truth is zero; at a perturbed point its gradient agrees with
    central differences along a random direction of every parameter."""
    assert float(loss((SYSTEM, _force()), data)) < 1e-22
    point = _perturbed()
    params, static = eqx.partition(point, eqx.is_inexact_array)
    grad = eqx.filter_jit(eqx.filter_grad(loss))(point, data)
    direction = random_like(key, params)
    fd = finite_difference_directional(
        lambda p: float(loss(eqx.combine(p, static), data)), params, direction
    )
    # Central differences with ε = 1e-6 err by ε² ~ 1e-12 and by round-off
    # 1e-16/ε ~ 1e-10, relative to a loss of order 1e-3 and its slope.
    np.testing.assert_allclose(float(dot(grad, direction)), fd, rtol=1e-6)


def test_acceleration_loss_with_force_and_input(getkey):
    _check_gradient(_acceleration_loss, _accelerations(SYSTEM, _force(), getkey()), getkey())


def test_rollout_loss_with_force_and_input(getkey):
    # Fixed steps of the solver that made the data, restarted at each window's
    # observed state: the same discrete motion.
    _check_gradient(_rollout_loss, _trajectories("driven"), getkey())
