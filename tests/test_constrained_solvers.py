"""`VariationalMidpoint` and `GaussLegendre` on constrained terms: a Cartesian
double pendulum whose bobs carry a charge in a magnetic field, so that `q̈` depends
on `q̇` (the case `Rattle` does not cover), against the same system in angles."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lagrax

from .test_constraints import _links, _positions, G, M1, M2


FIELD = 1.7  # charge × magnetic field, along z


def _charged(q, qdot):
    """Two point masses in the plane under gravity, with the Lorentz force of a
    uniform field: the vector potential `½B(−y, x)` at each bob."""
    masses = jnp.array([M1, M1, M2, M2])
    x, y = q[0::2], q[1::2]
    xdot, ydot = qdot[0::2], qdot[1::2]
    magnetic = 0.5 * FIELD * jnp.sum(x * ydot - y * xdot)
    return 0.5 * jnp.sum(masses * qdot**2) + magnetic - G * (M1 * q[1] + M2 * q[3])


def _charged_angles(theta, omega):
    """The same Lagrangian in the angles, through `θ ↦ x`: no constraint left."""
    return _charged(*jax.jvp(_positions, (theta,), (omega,)))


THETA0, OMEGA0 = jnp.array([1.2, -0.4]), jnp.array([0.3, 0.9])


def _solve(solver, dt, ts, **kwargs):
    q0, qdot0 = jax.jvp(_positions, (THETA0,), (OMEGA0,))
    return lagrax.simulate(
        _charged, q0, qdot0, ts, constraint=_links, solver=solver, dt0=dt, **kwargs
    )


def _residuals(traj):
    """The largest `|g(q)|` and `|G q̇|` over a trajectory's samples."""
    position = jax.vmap(_links)(traj.q)
    velocity = jax.vmap(lambda q, v: jax.jvp(_links, (q,), (v,))[1])(traj.q, traj.qdot)
    return float(jnp.max(jnp.abs(position))), float(jnp.max(jnp.abs(velocity)))


@pytest.mark.parametrize(
    "solver, steps, order",
    [
        (lagrax.VariationalMidpoint(), (20, 40, 80), 2),
        (lagrax.GaussLegendre(), (20, 40, 80), 4),
        (lagrax.GaussLegendre(stages=3), (20, 40), 6),
        (lagrax.Yoshida4(base=lagrax.VariationalMidpoint()), (40, 80, 160), 4),
    ],
)
def test_order_and_the_constraints_at_every_step(solver, steps, order):
    reference = lagrax.simulate(
        _charged_angles, THETA0, OMEGA0, jnp.array([0.0, 1.0]), rtol=1e-13, atol=1e-13
    )
    expected = jax.jvp(_positions, (reference.q[-1],), (reference.qdot[-1],))
    errors = []
    for num_steps in steps:
        # Saved at every step: the residuals are those of every step's end.
        ts = jnp.linspace(0.0, 1.0, num_steps + 1)
        traj = _solve(solver, 1.0 / num_steps, ts, max_steps=num_steps)
        assert traj.result == lagrax.RESULTS.successful
        position, velocity = _residuals(traj)
        assert position < 1e-12 and velocity < 1e-12
        errors.append(
            max(
                float(jnp.max(jnp.abs(traj.q[-1] - expected[0]))),
                float(jnp.max(jnp.abs(traj.qdot[-1] - expected[1]))),
            )
        )
    # (measured: 2.02, 2.01; 4.00, 4.00; 5.97; 4.09, 4.02)
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    np.testing.assert_allclose(orders, order, atol=0.2)


@pytest.mark.parametrize(
    "solver, dt", [(lagrax.VariationalMidpoint(), 0.01), (lagrax.GaussLegendre(), 0.02)]
)
def test_energy_stays_bounded_over_100_000_steps(solver, dt):
    # Symplectic and symmetric: the energy error oscillates without drifting, and
    # the constraints hold to round-off, over 10⁵ steps (hundreds of periods).
    num_steps = 100_000
    ts = dt * jnp.arange(0, num_steps + 1, 50, dtype=float)
    traj = _solve(solver, dt, ts, max_steps=num_steps)
    assert traj.result == lagrax.RESULTS.successful
    energies = jax.vmap(lagrax.energy, in_axes=(None, 0, 0))(
        _charged, traj.q, traj.qdot
    )
    error = np.abs(np.asarray(energies - energies[0]))
    first, second = error[: error.size // 2], error[error.size // 2 :]
    # (measured without the field: 0.025 in each half for the midpoint, 6e-5 then
    # 8e-5 for Gauss–Legendre, of a potential-energy scale of 27)
    assert error.max() < (0.05 if solver.order(None) == 2 else 2e-4)
    assert second.max() < 2 * first.max()
    assert max(_residuals(traj)) < 1e-11


class _Charged(eqx.Module):
    """`_charged` with a trainable field."""

    field: jax.Array

    def __call__(self, q, qdot):
        extra = 0.5 * jnp.sum(q[0::2] * qdot[1::2] - q[1::2] * qdot[0::2])
        return _charged(q, qdot) + (self.field - FIELD) * extra


def test_gradients_through_a_constrained_solve_are_exact():
    # Observations on the constraints (ReversibleAdjoint cannot run a step back to
    # a state off them); the rollout loss's gradient with respect to the field,
    # away from the observations' own, against central differences, with the
    # default adjoint and with ReversibleAdjoint, which runs the symmetric step
    # backwards. (GaussLegendre takes the same constrained step, more stages.)
    solver, dt = lagrax.VariationalMidpoint(), 0.05
    ts = dt * jnp.arange(9, dtype=float)
    traj = _solve(solver, dt, ts)
    data = lagrax.TrajectoryData(ts, traj.q[None], traj.qdot[None])

    def loss(field, adjoint=None):
        return lagrax.rollout_loss(
            _Charged(field),
            data,
            window=5,
            constraint=_links,
            solver=solver,
            dt0=dt,
            adjoint=adjoint,
        )

    field, step = jnp.asarray(2.3), 1e-6
    difference = (jax.jit(loss)(field + step) - jax.jit(loss)(field - step)) / (
        2 * step
    )
    assert abs(float(difference)) > 1e-3
    for adjoint in (None, lagrax.ReversibleAdjoint()):
        gradient = jax.jit(jax.grad(loss))(field, adjoint)
        np.testing.assert_allclose(gradient, difference, rtol=1e-6)


def test_a_redundant_constraint_fails_the_step():
    def twice(q):
        return jnp.concatenate([_links(q), _links(q)[:1]])

    q0, qdot0 = jax.jvp(_positions, (THETA0,), (OMEGA0,))
    traj = lagrax.simulate(
        _charged,
        q0,
        qdot0,
        jnp.array([0.0, 0.1]),
        constraint=twice,
        solver=lagrax.VariationalMidpoint(),
        dt0=0.05,
        throw=False,
    )
    assert traj.result == lagrax.RESULTS.singular_mass_matrix


def test_acceleration_loss_with_a_constraint():
    # Data from the charged chain's constrained motion: the true model's loss is
    # round-off, a wrong field's is not, and its gradient points back to the truth.
    theta = jnp.array([[1.2, -0.4], [0.3, 0.8], [-0.5, 2.0]])
    omega = jnp.array([[0.3, 0.9], [-1.0, 0.2], [0.4, -0.6]])
    q, qdot = jax.vmap(lambda t, w: jax.jvp(_positions, (t,), (w,)))(theta, omega)
    qddot = jax.vmap(
        lambda q, v: lagrax.acceleration(_charged, q, v, constraint=_links)
    )(q, qdot)
    data = lagrax.AccelerationData(q, qdot, qddot)

    def loss(field):
        return lagrax.acceleration_loss(
            _Charged(field), data, norm="l2", constraint=_links
        )

    assert float(loss(jnp.asarray(FIELD))) < 1e-24
    assert float(loss(jnp.asarray(FIELD + 0.5))) > 1e-3
    assert float(jax.grad(loss)(jnp.asarray(FIELD + 0.5))) > 0
    with pytest.raises(ValueError, match="definiteness"):
        lagrax.acceleration_loss(
            _Charged(jnp.asarray(FIELD)), data, constraint=_links, definiteness=0.1
        )
