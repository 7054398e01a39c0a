from typing import Any

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import lagrax
from lagrax.systems import DoublePendulum, HarmonicOscillator


PAPER_BOX: dict[str, Any] = dict(
    q_box=([0.0, 0.0], [2 * np.pi, 2 * np.pi]), qdot_box=([-10.0, -10.0], [10.0, 10.0])
)


def test_sample_states_box_and_determinism():
    q, qdot = lagrax.sample_states(2000, key=jr.key(0), **PAPER_BOX)
    assert q.shape == qdot.shape == (2000, 2) and q.dtype == jnp.float64
    assert jnp.all((q >= 0) & (q < 2 * np.pi)) and jnp.all((qdot >= -10) & (qdot < 10))
    # uniform: the mean of U[0, 2π) is π, its std π/√3; 2000 samples → ~0.04 std error
    np.testing.assert_allclose(jnp.mean(q, axis=0), [np.pi, np.pi], atol=0.2)
    np.testing.assert_allclose(jnp.std(qdot, axis=0), [20 / np.sqrt(12)] * 2, rtol=0.05)
    again = lagrax.sample_states(2000, key=jr.key(0), **PAPER_BOX)
    other = lagrax.sample_states(2000, key=jr.key(1), **PAPER_BOX)
    assert jnp.array_equal(q, again[0]) and jnp.array_equal(qdot, again[1])
    assert not jnp.array_equal(q, other[0])


def test_sample_states_energy_cut_is_uniform_in_the_allowed_region():
    # E = ½(q² + q̇²) ≤ 1/8 is the disk of radius ½ in the (q, q̇) box; uniform
    # states in a disk of radius R have mean r² = R²/2.
    system = HarmonicOscillator()
    box: dict[str, Any] = dict(q_box=([-1.0], [1.0]), qdot_box=([-1.0], [1.0]))
    q, qdot = lagrax.sample_states(
        4000, key=jr.key(0), max_energy=0.125, lagrangian=system, **box
    )
    assert q.shape == qdot.shape == (4000, 1)
    r2 = np.asarray(q[:, 0] ** 2 + qdot[:, 0] ** 2)
    assert r2.max() <= 0.25
    np.testing.assert_allclose(r2.mean(), 0.125, rtol=0.03)
    again = lagrax.sample_states(
        4000, key=jr.key(0), max_energy=0.125, lagrangian=system, **box
    )
    assert jnp.array_equal(q, again[0])
    with pytest.raises(ValueError, match="together"):
        lagrax.sample_states(10, key=jr.key(0), max_energy=0.1, **box)
    with pytest.raises(ValueError, match="max_energy"):
        lagrax.sample_states(
            10, key=jr.key(0), max_energy=-1.0, lagrangian=system, **box
        )


def test_acceleration_data_exact_and_noise():
    system = HarmonicOscillator(mass=2.0, stiffness=8.0)
    q, qdot = lagrax.sample_states(
        500, q_box=([-1.0], [1.0]), qdot_box=([-1.0], [1.0]), key=jr.key(0)
    )
    data = lagrax.acceleration_data(system, q, qdot)
    np.testing.assert_allclose(data.qddot, -4.0 * q, rtol=1e-12)
    noisy = lagrax.acceleration_data(system, q, qdot, noise=0.1, key=jr.key(1))
    residual = jnp.concatenate(
        [noisy.q - q, noisy.qdot - qdot, noisy.qddot - data.qddot]
    )
    assert abs(float(jnp.std(residual)) - 0.1) < 0.01
    assert abs(float(jnp.mean(residual))) < 0.01
    same = lagrax.acceleration_data(system, q, qdot, noise=0.1, key=jr.key(1))
    assert jnp.array_equal(noisy.qddot, same.qddot)
    with pytest.raises(ValueError, match="key"):
        lagrax.acceleration_data(system, q, qdot, noise=0.1)


def test_trajectory_data_closed_form():
    system = HarmonicOscillator(mass=2.0, stiffness=8.0)  # ω = 2
    q0 = jnp.array([[1.0], [0.0]])
    qdot0 = jnp.array([[0.5], [2.0]])
    ts = jnp.linspace(0.0, 3.0, 13)
    data = lagrax.trajectory_data(system, q0, qdot0, ts)
    assert data.q.shape == (2, 13, 1) and len(data) == 2
    t = np.asarray(ts)[None, :]
    a, b = np.asarray(q0), np.asarray(qdot0) / 2
    np.testing.assert_allclose(
        data.q[..., 0], a * np.cos(2 * t) + b * np.sin(2 * t), atol=1e-8
    )
    np.testing.assert_allclose(
        data.qdot[..., 0], 2 * (-a * np.sin(2 * t) + b * np.cos(2 * t)), atol=1e-8
    )


def test_split_and_indexing():
    q, qdot = lagrax.sample_states(50, key=jr.key(0), **PAPER_BOX)
    data = lagrax.acceleration_data(DoublePendulum(), q, qdot)
    train, test = lagrax.train_test_split(data, test_fraction=0.2, key=jr.key(3))
    assert (len(train), len(test)) == (40, 10)
    # a partition of the samples: every sample in exactly one part
    merged = np.sort(np.concatenate([train.q[:, 0], test.q[:, 0]]))
    np.testing.assert_array_equal(merged, np.sort(np.asarray(q[:, 0])))
    again = lagrax.train_test_split(data, test_fraction=0.2, key=jr.key(3))
    assert jnp.array_equal(train.q, again[0].q)
    sub = data[jnp.array([3, 1])]
    assert jnp.array_equal(sub.qddot, data.qddot[jnp.array([3, 1])])


def test_shape_errors():
    q = jnp.zeros((5, 2))
    with pytest.raises(ValueError, match="qddot"):
        lagrax.AccelerationData(q, q, jnp.zeros((5, 3)))
    with pytest.raises(ValueError, match="qdot"):
        lagrax.AccelerationData(q, jnp.zeros((4, 2)), q)
    with pytest.raises(ValueError, match="`q`"):
        lagrax.AccelerationData(jnp.zeros(5), q, q)
    with pytest.raises(ValueError, match="`q`"):
        lagrax.TrajectoryData(
            jnp.linspace(0, 1, 4), jnp.zeros((2, 3, 1)), jnp.zeros((2, 3, 1))
        )
    with pytest.raises(ValueError, match="qdot_box"):
        lagrax.sample_states(
            3, q_box=([0.0], [1.0]), qdot_box=([0.0, 0.0], [1.0, 1.0]), key=jr.key(0)
        )
    with pytest.raises(ValueError, match="num"):
        lagrax.sample_states(-1, key=jr.key(0), **PAPER_BOX)
