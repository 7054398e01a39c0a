from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import lagrax
from lagrax.systems import DoublePendulum


M1, M2, L1, L2, G = 1.3, 0.7, 1.1, 0.8, 9.8


def _cartesian_lagrangian(q, qdot):
    """Two point masses in the plane, gravity along −y: no constraint in `L`."""
    masses = jnp.array([M1, M1, M2, M2])
    return 0.5 * jnp.sum(masses * qdot**2) - G * (M1 * q[1] + M2 * q[3])


def _links(q):
    """The two rods: `(|x₁|² − l₁²)/2` and `(|x₂ − x₁|² − l₂²)/2`."""
    x1, x2 = q[:2], q[2:]
    return 0.5 * jnp.stack([x1 @ x1 - L1**2, (x2 - x1) @ (x2 - x1) - L2**2])


def _positions(theta):
    x1 = L1 * jnp.stack([jnp.sin(theta[0]), -jnp.cos(theta[0])])
    x2 = x1 + L2 * jnp.stack([jnp.sin(theta[1]), -jnp.cos(theta[1])])
    return jnp.concatenate([x1, x2])


def _states(num, key):
    theta = jr.uniform(key, (num, 2), minval=-np.pi, maxval=np.pi)
    omega = jr.normal(jr.fold_in(key, 1), (num, 2))
    return theta, omega


def test_cartesian_double_pendulum_moves_as_in_angles():
    # The constrained Cartesian accelerations are the second derivative of the
    # map θ ↦ x along the angle formulation's motion: ẍ = J θ̈ + (d/dt J) θ̇.
    angles = DoublePendulum(m1=M1, m2=M2, l1=L1, l2=L2, g=G)

    def compare(theta, omega):
        q, qdot = jax.jvp(_positions, (theta,), (omega,))
        qddot = lagrax.acceleration(_cartesian_lagrangian, q, qdot, constraint=_links)
        alpha = lagrax.acceleration(angles, theta, omega)

        def velocity(theta):
            return jax.jvp(_positions, (theta,), (omega,))[1]

        curvature = jax.jvp(velocity, (theta,), (omega,))[1]
        expected = jax.jvp(_positions, (theta,), (alpha,))[1] + curvature
        # The motion keeps the constraints to second order: d²g/dt² = 0.
        _, jacobian_rate = jax.jvp(jax.jacfwd(_links), (q,), (qdot,))
        second = jax.jacfwd(_links)(q) @ qddot + jacobian_rate @ qdot
        return qddot, expected, second

    qddot, expected, second = jax.jit(jax.vmap(compare))(*_states(16, jr.key(0)))
    np.testing.assert_allclose(qddot, expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(second, 0.0, atol=1e-10)


def test_multipliers_are_the_rod_tension():
    # A bob of mass m on a rod of length l: m ẍ = −m g ŷ − λ x with
    # λ = (m|v|² − m g y)/l², so the tension λ·l is m g hanging at rest.
    mass, length = 2.0, 1.5

    def lagrangian(q, qdot):
        return 0.5 * mass * qdot @ qdot - mass * G * q[1]

    def rod(q):
        return 0.5 * jnp.atleast_1d(q @ q - length**2)

    for angle, speed in ((0.0, 0.0), (0.4, 1.3), (2.5, -0.7)):
        q = length * jnp.array([np.sin(angle), -np.cos(angle)])
        qdot = speed * jnp.array([np.cos(angle), np.sin(angle)])
        (multiplier,) = lagrax.constraint_multipliers(
            lagrangian, q, qdot, constraint=rod
        )
        expected = mass * (speed**2 - G * q[1]) / length**2
        np.testing.assert_allclose(multiplier, expected, rtol=1e-12)
    np.testing.assert_allclose(
        lagrax.constraint_multipliers(
            lagrangian, jnp.array([0.0, -length]), jnp.zeros(2), constraint=rod
        )
        * length,
        mass * G,
        rtol=1e-12,
    )


def test_redundant_constraints_are_singular():
    theta, omega = jnp.array([0.3, -0.2]), jnp.array([0.1, 0.5])
    q, qdot = jax.jvp(_positions, (theta,), (omega,))

    def twice(q):
        return jnp.concatenate([_links(q), _links(q)[:1]])

    with pytest.raises(Exception, match="constrained system .* is singular"):
        lagrax.acceleration(_cartesian_lagrangian, q, qdot, constraint=twice)
    qddot = lagrax.acceleration(
        _cartesian_lagrangian, q, qdot, constraint=twice, throw=False
    )
    assert bool(jnp.all(jnp.isnan(qddot)))


def test_a_state_off_the_constraints_is_refused_until_projected():
    theta, omega = jnp.array([0.3, -0.2]), jnp.array([0.1, 0.5])
    q, qdot = jax.jvp(_positions, (theta,), (omega,))
    off_q, off_qdot = q + 1e-3, qdot + jnp.array([0.0, 1e-3, 0.0, 0.0])
    for state in ((off_q, qdot), (q, off_qdot)):
        with pytest.raises(Exception, match="violates its constraint"):
            lagrax.acceleration(_cartesian_lagrangian, *state, constraint=_links)
        assert bool(
            jnp.all(
                jnp.isnan(
                    lagrax.acceleration(
                        _cartesian_lagrangian, *state, constraint=_links, throw=False
                    )
                )
            )
        )
    projected_q, projected_qdot = lagrax.project_on_constraint(_links, off_q, off_qdot)
    assert float(jnp.max(jnp.abs(_links(projected_q)))) < 1e-14
    velocity = jax.jvp(_links, (projected_q,), (projected_qdot,))[1]
    assert float(jnp.max(jnp.abs(velocity))) < 1e-14
    assert float(jnp.max(jnp.abs(projected_q - off_q))) < 2e-3
    lagrax.acceleration(
        _cartesian_lagrangian, projected_q, projected_qdot, constraint=_links
    )


def test_constraint_argument_errors():
    q = _positions(jnp.array([0.3, -0.2]))
    qdot = jnp.zeros(4)
    # (Bad on purpose, the first one's type included.)
    cases: list[tuple[Any, str]] = [
        ("not a function", "constraint"),  # (the type checker may speak first)
        (lambda q: q[0], "1-D array"),
        (lambda q: q.astype(jnp.float32)[:2], "dtype"),
    ]
    for bad, match in cases:
        with pytest.raises((TypeError, ValueError), match=match):
            lagrax.acceleration(_cartesian_lagrangian, q, qdot, constraint=bad)


def test_a_cartesian_chain_moves_as_its_angles():
    # Three bodies: the Cartesian ChainPendulum under its own link constraints
    # against its angle form, through the time derivative of `to_cartesian`.
    masses, lengths = [1.1, 0.9, 1.3], [0.8, 1.2, 1.0]
    cartesian = lagrax.systems.ChainPendulum(masses, lengths)
    angles = lagrax.systems.ChainPendulum(masses, lengths, coordinates="angles")

    def compare(theta, omega):
        alpha = lagrax.acceleration(angles, theta, omega)
        q, qdot = cartesian.to_cartesian(theta, omega)

        def velocity(theta, omega):
            return cartesian.to_cartesian(theta, omega)[1]

        _, expected = jax.jvp(velocity, (theta, omega), (omega, alpha))
        qddot = lagrax.acceleration(cartesian, q, qdot, constraint=cartesian.constraint)
        return qddot, expected

    theta = jr.normal(jr.key(3), (8, 3))
    omega = jr.normal(jr.key(4), (8, 3))
    qddot, expected = jax.jit(jax.vmap(compare))(theta, omega)
    np.testing.assert_allclose(qddot, expected, rtol=1e-10, atol=1e-10)


def test_a_constrained_solve_tracks_the_angle_solution():
    # Tsit5 on the index-1 field: it keeps d²g/dt² = 0, not g = 0, so its error
    # accumulates as drift off the constraints; at tight tolerances over 3 time
    # units the drift and the distance to the angle solution stay small.
    angles = DoublePendulum(m1=M1, m2=M2, l1=L1, l2=L2, g=G)
    theta0, omega0 = jnp.array([1.2, -0.4]), jnp.array([0.3, 0.9])
    ts = jnp.linspace(0.0, 3.0, 31)
    options: dict[str, Any] = dict(rtol=1e-10, atol=1e-10)
    reference = lagrax.simulate(angles, theta0, omega0, ts, **options)
    q0, qdot0 = jax.jvp(_positions, (theta0,), (omega0,))
    traj = lagrax.simulate(
        _cartesian_lagrangian, q0, qdot0, ts, constraint=_links, **options
    )
    expected = jax.vmap(_positions)(reference.q)
    np.testing.assert_allclose(traj.q, expected, atol=1e-7)
    drift = jnp.max(jnp.abs(jax.vmap(_links)(traj.q)))
    assert 0 < float(drift) < 1e-8

    # VelocityVerlet does not enforce constraints: refused, not drifted.
    with pytest.raises(TypeError, match="constrained LagrangianTerm"):
        lagrax.simulate(
            _cartesian_lagrangian,
            q0,
            qdot0,
            ts,
            constraint=_links,
            solver=lagrax.VelocityVerlet(),
            dt0=0.01,
        )
    # An initial state off the constraints is refused.
    with pytest.raises(Exception, match="violates its constraint"):
        lagrax.simulate(_cartesian_lagrangian, q0 + 1e-3, qdot0, ts, constraint=_links)


def _rattle_solve(dt, ts, max_steps):
    theta0, omega0 = jnp.array([1.2, -0.4]), jnp.array([0.3, 0.9])
    q0, qdot0 = jax.jvp(_positions, (theta0,), (omega0,))
    return lagrax.simulate(
        _cartesian_lagrangian,
        q0,
        qdot0,
        ts,
        constraint=_links,
        solver=lagrax.Rattle(),
        dt0=dt,
        max_steps=max_steps,
    )


def test_rattle_is_second_order_and_stays_on_the_constraints():
    angles = DoublePendulum(m1=M1, m2=M2, l1=L1, l2=L2, g=G)
    reference = lagrax.simulate(
        angles,
        jnp.array([1.2, -0.4]),
        jnp.array([0.3, 0.9]),
        jnp.array([0.0, 1.0]),
        rtol=1e-12,
        atol=1e-12,
    )
    expected = _positions(reference.q[-1])
    errors = []
    ts = jnp.linspace(0.0, 1.0, 51)  # on every step grid: one compilation
    for dt in (0.02, 0.01, 0.005):
        traj = _rattle_solve(dt, ts, max_steps=256)
        errors.append(float(jnp.max(jnp.abs(traj.q[-1] - expected))))
        # The steps end on the constraints and their tangent space.
        position = jnp.max(jnp.abs(jax.vmap(_links)(traj.q)))
        velocity = jax.vmap(lambda q, v: jax.jvp(_links, (q,), (v,))[1])(
            traj.q, traj.qdot
        )
        assert float(position) < 1e-12 and float(jnp.max(jnp.abs(velocity))) < 1e-12
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    np.testing.assert_allclose(orders, 2.0, atol=0.15)


def test_rattle_energy_stays_bounded():
    # Symplectic on a constant mass matrix: the energy error oscillates, it does
    # not grow, over 20,000 steps (t = 200, some 150 periods of the fast mode).
    ts = 0.01 * jnp.arange(20_001, dtype=float)
    traj = _rattle_solve(0.01, ts, max_steps=20_001)
    energies = jax.vmap(lagrax.energy, in_axes=(None, 0, 0))(
        _cartesian_lagrangian, traj.q, traj.qdot
    )
    error = jnp.abs(energies - energies[0])
    first, second = error[: error.size // 2], error[error.size // 2 :]
    # (measured: 0.029 in each half, of a potential-energy scale of 27; 0.006 at
    # half the step, the method's h²)
    assert float(jnp.max(error)) < 0.05
    assert float(jnp.max(second)) < 1.2 * float(jnp.max(first))


def test_rattle_refuses_a_term_without_a_constraint():
    q = _positions(jnp.array([0.3, -0.2]))
    with pytest.raises(TypeError, match="Rattle integrates a constrained"):
        lagrax.simulate(
            _cartesian_lagrangian,
            q,
            jnp.zeros(4),
            jnp.array([0.0, 0.1]),
            solver=lagrax.Rattle(),
            dt0=0.01,
        )


class _Bodies(eqx.Module):
    """`_cartesian_lagrangian` with a trainable first mass."""

    mass: jax.Array

    def __call__(self, q, qdot):
        masses = jnp.stack([self.mass, self.mass, jnp.asarray(M2), jnp.asarray(M2)])
        return 0.5 * jnp.sum(masses * qdot**2) - G * (self.mass * q[1] + M2 * q[3])


def test_rollout_loss_through_rattle_has_exact_gradients():
    # Observations on the constraints (a uniform rotation of both rods); the
    # loss's gradient with respect to a mass against central differences.
    dt = 0.05
    ts = dt * jnp.arange(9, dtype=float)
    theta = jnp.array([[1.2, -0.4]]) + ts[:, None] * jnp.array([[0.3, 0.9]])
    q, qdot = jax.vmap(lambda t: jax.jvp(_positions, (t,), (jnp.array([0.3, 0.9]),)))(
        theta
    )
    data = lagrax.TrajectoryData(ts, q[None], qdot[None])
    options: dict[str, Any] = dict(constraint=_links, solver=lagrax.Rattle(), dt0=dt)

    def loss(mass, adjoint=None):
        model = _Bodies(mass)
        return lagrax.rollout_loss(model, data, window=5, adjoint=adjoint, **options)

    mass, step = jnp.asarray(1.6), 1e-6
    difference = (jax.jit(loss)(mass + step) - jax.jit(loss)(mass - step)) / (2 * step)
    # Rattle is symmetric: ReversibleAdjoint runs it backwards, in memory
    # independent of the steps, to the same gradient.
    for adjoint in (None, lagrax.ReversibleAdjoint()):
        gradient = jax.jit(jax.grad(loss))(mass, adjoint)
        np.testing.assert_allclose(gradient, difference, rtol=1e-6)
    with pytest.raises(TypeError, match="needs a Lagrangian"):
        lagrax.rollout_loss(
            lagrax.NeuralODEBaseline(4, width=4, depth=1, key=jr.key(0)),
            data,
            **options,
        )


def test_energy_and_momentum_check_the_state():
    q, qdot = jax.jvp(_positions, (jnp.array([0.3, -0.2]),), (jnp.array([0.1, 0.5]),))
    on = lagrax.energy(_cartesian_lagrangian, q, qdot, constraint=_links)
    assert on == lagrax.energy(_cartesian_lagrangian, q, qdot)
    np.testing.assert_array_equal(
        lagrax.momentum(_cartesian_lagrangian, q, qdot, constraint=_links),
        lagrax.momentum(_cartesian_lagrangian, q, qdot),
    )
    for function in (lagrax.energy, lagrax.momentum):
        with pytest.raises(Exception, match="violates its constraint"):
            function(_cartesian_lagrangian, q + 1e-3, qdot, constraint=_links)


def test_compare_solvers_measures_the_drift_off_the_constraints():
    q0, qdot0 = jax.jvp(_positions, (jnp.array([1.2, -0.4]),), (jnp.array([0.3, 0.9]),))
    settings = [
        lagrax.SolverSetting("Rattle", lagrax.Rattle(), dt0=0.01),
        lagrax.SolverSetting("Tsit5", diffrax.Tsit5(), tolerance=1e-6),
    ]
    rattle, tsit5 = lagrax.compare_solvers(
        _cartesian_lagrangian, q0, qdot0, 1.0, settings, repeats=1, constraint=_links
    )
    assert rattle.successful and tsit5.successful
    assert rattle.constraint_error < 1e-12 < tsit5.constraint_error < 1e-3
    assert rattle.final_error < 1e-2 and tsit5.final_error < 1e-3
