"""Mechanical Lagrangians `½ q̇ᵀM(q)q̇ − V(q)`: the structured mechanics path
against lagrax's generic autodiff path, the mass matrix of `MechanicalLagrangian`,
the DFKI double pendulum against its closed-form equations, and saving."""

import functools
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import lagrax
from lagrax.systems import ActuatedDoublePendulum

from .helpers import random_like, tree_allclose


# The DFKI lab's double pendulum, roughly: 0.6 kg links of 0.3 m.
DFKI = dict(m1=0.6, m2=0.6, l1=0.3, r1=0.3, r2=0.2, I1=0.054, I2=0.024)


def _generic(lagrangian):
    """The same Lagrangian as a plain function, which lagrax differentiates by
    generic forward-over-reverse autodiff (no structure, no jet)."""
    return lambda q, qdot: lagrangian(q, qdot)


@functools.cache
def _models():
    k1, k2, k3 = jr.split(jr.key(1), 3)
    # One hidden layer: the paths are the same at any depth, and compile faster.
    small: dict[str, Any] = dict(width=16, depth=1)
    return {
        "angles": lagrax.MechanicalLagrangian(3, angles=(0, 2), **small, key=k1),
        # A grey box: the identified model plus a small learned correction.
        "identified+learned": ActuatedDoublePendulum(**DFKI, Ir=7e-5, gr=6.0)
        + 0.1 * lagrax.MechanicalLagrangian(2, angles=(0, 1), **small, key=k2),
        # A sum whose second term has no mechanical structure (it takes its jet).
        "mechanical+mlp": lagrax.MechanicalLagrangian(2, **small, key=k2)
        + 0.05 * lagrax.MLPLagrangian(2, **small, key=k3),
    }


def _dof(name):
    return 3 if name == "angles" else 2


def _states(key, num, dof):
    q_key, v_key = jr.split(key)
    return jr.normal(q_key, (num, dof)), 2 * jr.normal(v_key, (num, dof))


def _force(dof):
    """Friction and a constant torque: the forces of a measured machine."""
    return lagrax.with_input(
        lagrax.RayleighDissipation(jnp.full(dof, 0.3))
        + lagrax.CoulombFriction(jnp.full(dof, 0.2))
        + lagrax.Actuation(),
        jnp.linspace(-1.0, 1.0, dof),
    )


@eqx.filter_jit
def _both_paths(model, force, q, qdot):
    """Accelerations under `force` by the structured path under `vmap` and by the
    generic path one state at a time (`lax.map`); and the force that the
    structured and the generic `generalized_force` recover from them."""
    plain = _generic(model)
    applied = jax.vmap(lambda a, b: force(jnp.zeros(()), a, b))(q, qdot)

    def structured(q, qdot, f):
        return lagrax.acceleration(model, q, qdot, force=f)

    def generic(state):
        q, qdot, f = state
        return lagrax.acceleration(plain, q, qdot, force=f)

    def recovered(lagrangian):
        return jax.vmap(lambda *s: lagrax.generalized_force(lagrangian, *s))

    qddot = jax.vmap(structured)(q, qdot, applied)
    generic_qddot = jax.lax.map(generic, (q, qdot, applied))
    return (
        (qddot, generic_qddot),
        (applied, recovered(model)(q, qdot, qddot), recovered(plain)(q, qdot, qddot)),
    )


@pytest.mark.parametrize("name", list(_models()))
def test_structured_path_equals_generic_autodiff(name, getkey):
    from lagrax._mechanics import _structured

    model = _models()[name]
    # Else the comparison below would compare the generic path with itself.
    assert _structured(model) and not _structured(_generic(model))
    q, qdot = _states(getkey(), 6, _dof(name))
    (qddot, generic), forces = _both_paths(model, _force(_dof(name)), q, qdot)
    # The same equations evaluated in another order: round-off, amplified by the
    # mass matrix's condition number (below 20 at these states).
    scale = 1 + float(jnp.abs(generic).max())
    np.testing.assert_allclose(qddot, generic, rtol=0, atol=1e-13 * scale)
    # Inverse dynamics inverts the forward dynamics, by either path: q̈ = M⁻¹(…)
    # then M q̈ + …, forces of order 1 to round-off amplified by cond(M).
    applied, structured, generic = forces
    np.testing.assert_allclose(structured, applied, rtol=0, atol=1e-13)
    np.testing.assert_allclose(generic, applied, rtol=0, atol=1e-13)


@eqx.filter_jit
def _loss_gradients(model, data):
    """Parameter gradients of the `l2` acceleration loss: lagrax's (the batched
    structured pass) and one through the generic path."""

    def generic(model):
        plain = _generic(model)
        acc = jax.vmap(lambda a, b: lagrax.acceleration(plain, a, b))(data.q, data.qdot)
        return jnp.mean((acc - data.qddot) ** 2)

    structured = eqx.filter_grad(
        lambda m: lagrax.acceleration_loss(m, data, norm="l2")
    )(model)
    return structured, eqx.filter_grad(generic)(model)


def test_structured_parameter_gradients_equal_generic(getkey):
    # The grey box: gradients reach both the identified parameters (0-d arrays)
    # and the learned network, through the structured parts of each term.
    model = _models()["identified+learned"]
    q, qdot = _states(getkey(), 6, 2)
    data = lagrax.AccelerationData(q, qdot, jr.normal(getkey(), (6, 2)))
    structured, generic = _loss_gradients(model, data)
    # Every parameter but the potential's constant (the last bias) moves q̈.
    leaves = jax.tree.leaves(structured)
    assert len(leaves) == len(jax.tree.leaves(generic))
    assert sum(float(jnp.abs(x).max()) == 0 for x in leaves) == 1
    assert tree_allclose(structured, generic, rtol=1e-9, atol=1e-12)


@eqx.filter_jit
def _mass_spectrum(model, scale, key, q):
    """Eigenvalues and asymmetry of `M(q)` for random parameters (all leaves
    `N(0, scale²)`) at each state of `q`."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    params = jax.tree.map(lambda x: scale * x, random_like(key, params))
    model = eqx.combine(params, static)
    mass = jax.vmap(model.mass)(q)
    asymmetry = jnp.max(jnp.abs(mass - jnp.swapaxes(mass, 1, 2)), axis=(1, 2))
    return jnp.linalg.eigvalsh(mass), asymmetry


@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_mass_matrix_symmetric_positive_definite(scale, getkey):
    model = _models()["angles"]
    q = 3 * jr.normal(getkey(), (16, 3))
    for _ in range(4):
        eigenvalues, asymmetry = _mass_spectrum(model, scale, getkey(), q)
        largest = float(jnp.max(eigenvalues))
        # eigvalsh is backward stable: its error is a few ulps of the largest
        # eigenvalue, which must stay far below ε for the check to mean anything.
        roundoff = 64 * np.finfo(np.float64).eps * largest
        assert roundoff < 0.1 * model.epsilon, largest
        assert float(jnp.min(eigenvalues)) >= model.epsilon - roundoff
        assert float(jnp.max(asymmetry)) <= roundoff


def _closed_form_qddot(p, b, cf, tau, q, qdot):
    """`M q̈ + C q̇ = G + τ − b q̇ − cf·atan(100 q̇)` of the DFKI double pendulum
    (relative angles; rotor inertia `Ir` behind a gear ratio `gr`), written out."""
    q1, q2 = q
    w1, w2 = qdot
    m1, m2, l1, r1, r2 = p["m1"], p["m2"], p["l1"], p["r1"], p["r2"]
    i1, i2, ir, gr, g = p["I1"], p["I2"], p["Ir"], p["gr"], p["g"]
    coupling = m2 * l1 * r2 * np.cos(q2)
    mass = np.array(
        [
            [
                i1 + i2 + m2 * l1**2 + 2 * coupling + gr**2 * ir + ir,
                i2 + coupling - gr * ir,
            ],
            [i2 + coupling - gr * ir, i2 + gr**2 * ir],
        ]
    )
    h = m2 * l1 * r2 * np.sin(q2)
    coriolis = np.array([[-2 * h * w2, -h * w2], [h * w1, 0.0]])
    gravity = np.array(
        [
            -m1 * g * r1 * np.sin(q1)
            - m2 * g * (l1 * np.sin(q1) + r2 * np.sin(q1 + q2)),
            -m2 * g * r2 * np.sin(q1 + q2),
        ]
    )
    rhs = gravity + tau - b * qdot - cf * np.arctan(100 * qdot) - coriolis @ qdot
    return np.linalg.solve(mass, rhs)


@eqx.filter_jit
def _forced_accelerations(model, force, q, qdot):
    return jax.vmap(
        lambda a, b: lagrax.acceleration(model, a, b, force=force(0.0, a, b))
    )(q, qdot)


@pytest.mark.parametrize("rotor", [dict(), dict(Ir=7e-5, gr=6.0, g=9.7)])
def test_actuated_double_pendulum_closed_form(rotor, getkey):
    params = dict(DFKI, Ir=0.0, gr=1.0, g=9.81) | rotor
    system = ActuatedDoublePendulum(**params)
    b, cf, tau = np.array([0.08, 0.05]), np.array([0.1, 0.07]), np.array([0.4, -0.9])
    force = lagrax.with_input(
        lagrax.RayleighDissipation(b) + lagrax.CoulombFriction(cf) + lagrax.Actuation(),
        jnp.asarray(tau),
    )
    q, qdot = _states(getkey(), 8, 2)
    # Some velocities inside the friction's smooth zone |q̇| < 0.06.
    qdot = qdot.at[:2].multiply(0.01)
    got = _forced_accelerations(system, force, q, qdot)
    expected = np.stack(
        [
            _closed_form_qddot(params, b, cf, tau, a, v)
            for a, v in zip(np.asarray(q), np.asarray(qdot))
        ]
    )
    # Different but exact formulas: round-off of accelerations up to ~200 rad/s².
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_save_load_round_trip(tmp_path):
    model = lagrax.MechanicalLagrangian(
        2, angles=(0,), width=8, depth=1, epsilon=0.01, key=jr.key(3)
    )
    path = tmp_path / "mechanical.lagrax"
    lagrax.save(path, model)
    assert eqx.tree_equal(lagrax.load(path, like=model), model)
    # Registered: rebuilt from its settings (angles and ε included) unaided.
    assert eqx.tree_equal(lagrax.load(path), model)
