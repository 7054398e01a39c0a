import functools as ft

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import lagrax
from lagrax.systems import HarmonicOscillator, RelativisticParticle


class RelativisticHamiltonian(eqx.Module):
    """H(q, p) = √(1 + p²) − 1 − g q, the true Hamiltonian of the relativistic
    particle, as a stand-in for the HNN's MLP (input concat(q, p))."""

    g: float

    def __call__(self, x):
        q, p = x[0], x[1]
        return jnp.sqrt(1 + p**2) - 1 - self.g * q


def _with_hamiltonian(hnn, g):
    return eqx.tree_at(lambda m: m.mlp, hnn, RelativisticHamiltonian(g))


def test_hamiltonian_nn_canonical_and_non_canonical():
    g = 2.0
    system = RelativisticParticle(g=g)
    canonical = _with_hamiltonian(
        lagrax.HamiltonianNN(
            1,
            width=4,
            depth=1,
            momentum=ft.partial(lagrax.momentum, system),
            key=jr.key(0),
        ),
        g,
    )
    velocities = lagrax.HamiltonianNN(1, width=4, depth=1, key=jr.key(0))
    velocities = _with_hamiltonian(velocities, g)
    q = jnp.array([0.3])
    for v in (0.0, 0.5, -0.9):
        qdot = jnp.array([v])
        truth = g * (1 - v**2) ** 2.5 / (1 + 2 * v**2)
        # canonical momenta + the true H give the true motion
        np.testing.assert_allclose(canonical.acceleration(q, qdot), [truth], rtol=1e-12)
        # p := q̇ gives q̈ = −∂H/∂q = g whatever the speed: the paper's failure
        np.testing.assert_allclose(velocities.acceleration(q, qdot), [g], rtol=1e-12)


def test_neural_ode_baseline_rollout_closed_form():
    # q̈ = −4q − 0.4q̇ through a linear "MLP": a damped oscillator, which no
    # Lagrangian without forces can represent.
    model = lagrax.NeuralODEBaseline(1, width=4, depth=1, key=jr.key(0))
    linear = eqx.nn.MLP(2, 1, 4, 0, key=jr.key(1))
    linear = eqx.tree_at(
        lambda m: (m.layers[0].weight, m.layers[0].bias),
        linear,
        (jnp.array([[-4.0, -0.4]]), jnp.zeros(1)),
    )
    model = eqx.tree_at(lambda m: m.mlp, model, linear)
    ts = jnp.linspace(0.0, 3.0, 7)
    start = lagrax.TrajectoryData(ts, jnp.ones((1, 7, 1)), jnp.zeros((1, 7, 1)))
    pred = lagrax.rollout(model, start, rtol=1e-10, atol=1e-10)
    zeta, omega0 = 0.1, 2.0
    omega = omega0 * np.sqrt(1 - zeta**2)
    t = np.asarray(ts)
    expected = np.exp(-zeta * omega0 * t) * (
        np.cos(omega * t) + zeta * omega0 / omega * np.sin(omega * t)
    )
    np.testing.assert_allclose(pred.q[0, :, 0], expected, atol=1e-8)


@pytest.mark.parametrize("cls", [lagrax.NeuralODEBaseline, lagrax.HamiltonianNN])
def test_baselines_train_with_fit_and_both_losses(cls):
    box = ([-1.0], [1.0])
    q, qdot = lagrax.sample_states(128, q_box=box, qdot_box=box, key=jr.key(0))
    data = lagrax.acceleration_data(HarmonicOscillator(), q, qdot)
    model = cls(1, width=16, depth=1, key=jr.key(1))
    before = lagrax.acceleration_error(model, data)
    model, history = lagrax.fit(
        model,
        lagrax.acceleration_loss,
        data,
        optimizer=optax.adam(1e-2),
        steps=300,
        batch_size=32,
        key=jr.key(2),
        progress=False,
    )
    after = lagrax.acceleration_error(model, data)
    assert after < 0.1 * before and after < 0.05
    # the rollout loss takes baselines too, and is differentiable
    trajectories = lagrax.trajectory_data(
        HarmonicOscillator(), q[:4], qdot[:4], jnp.arange(5.0) * 0.1
    )
    loss = ft.partial(
        lagrax.rollout_loss,
        solver=diffrax.Midpoint(),
        dt0=0.1,
        stepsize_controller=diffrax.ConstantStepSize(),
        max_steps=8,
    )
    value, grads = eqx.filter_value_and_grad(loss)(model, trajectories)
    assert 0 < value < 1e-3
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(grads))
