import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import lagrax
from lagrax.systems import DoublePendulum, HarmonicOscillator


def test_energy_discrepancy_known_values():
    system = DoublePendulum()
    q0 = jnp.array([[2.0, -1.0], [0.5, 0.3]])
    qdot0 = jnp.array([[0.5, 3.0], [-1.0, 0.0]])
    true = lagrax.trajectory_data(system, q0, qdot0, jnp.linspace(0.0, 5.0, 11))
    assert lagrax.energy_discrepancy(system, true, scale=29.4) < 1e-8
    # E = ½ q̇² + ½ q²: from (0, 1) (E = ½) to (2, 0) (E = 2): |2 − ½| / 3 = 0.5
    fake = lagrax.TrajectoryData(
        jnp.array([0.0, 1.0]), jnp.array([[[0.0], [2.0]]]), jnp.array([[[1.0], [0.0]]])
    )
    np.testing.assert_allclose(
        lagrax.energy_discrepancy(HarmonicOscillator(), fake, scale=3.0), 0.5
    )


def test_rollout_error_known_values():
    ts = jnp.linspace(0.0, 1.0, 11)
    q = jr.normal(jr.key(0), (3, 11, 2))
    qdot = jr.normal(jr.key(1), (3, 11, 2))
    target = lagrax.TrajectoryData(ts, q, qdot)
    assert jnp.all(lagrax.rollout_error(target, target) == 0)
    np.testing.assert_allclose(
        lagrax.rollout_error(lagrax.TrajectoryData(ts, 2 * q, 2 * qdot), target), 1 / 3
    )
    np.testing.assert_allclose(
        lagrax.rollout_error(lagrax.TrajectoryData(ts, -q, -qdot), target), 1.0
    )
    # constant error 1/3 from t = 0.1 to 1: ∫ log(1/3) dt = 0.9 log(1/3)
    doubled = lagrax.TrajectoryData(ts, 2 * q, 2 * qdot)
    np.testing.assert_allclose(
        lagrax.integrated_log_rollout_error(doubled, target),
        0.9 * np.log(1 / 3),
        rtol=1e-12,
    )
    with pytest.raises(ValueError, match="shape"):
        lagrax.rollout_error(target[jnp.array([0])], target)


def test_rollout_of_true_model_matches_data():
    system = HarmonicOscillator()
    q0, qdot0 = jnp.array([[1.0], [0.2]]), jnp.array([[0.0], [-0.5]])
    data = lagrax.trajectory_data(system, q0, qdot0, jnp.linspace(0.0, 4.0, 9))
    pred = lagrax.rollout(system, data, rtol=1e-10, atol=1e-10)
    assert jnp.max(lagrax.rollout_error(pred, data)) < 1e-8
    wrong = lagrax.rollout(HarmonicOscillator(stiffness=2.0), data)
    error = lagrax.rollout_error(wrong, data)
    assert error[0] == 0 and error[-1] > 0.1


def test_rollout_long_fixed_step_horizon_fits_its_default_budget():
    """6,000 VelocityVerlet steps (more than the old default budget of 4,096) from
    initial states: the default budget counts the grid's steps, and the
    oscillator's q(t) = cos t comes out to Verlet's O(h²) error."""
    system = HarmonicOscillator()
    q0, qdot0 = jnp.array([[1.0]]), jnp.array([[0.0]])
    ts = jnp.linspace(0.0, 6.0, 4)
    pred = lagrax.rollout(
        system, q0, qdot0, ts, solver=lagrax.VelocityVerlet(), dt0=1e-3
    )
    np.testing.assert_allclose(pred.q[0, :, 0], np.cos(ts), atol=1e-5)
