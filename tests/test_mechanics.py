import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from jaxtyping import Array, Float

import lagrax
from lagrax.systems import (
    ChargedParticle,
    DoublePendulum,
    HarmonicOscillator,
    Pendulum,
    RelativisticParticle,
)

from .helpers import (
    double_pendulum_qddot,
    finite_difference_directional,
    indefinite,
    random_like,
    singular,
    translation_invariant,
)


def _paper_acceleration(lagrangian, q, qdot):
    """The paper's formula: pinv of the velocity block of the full Hessian."""
    n = q.shape[0]
    x = jnp.concatenate([q, qdot])
    full = lambda x: lagrangian(x[:n], x[n:])  # noqa: E731
    grad = jax.grad(full)(x)
    hess = jax.hessian(full)(x)
    return jnp.linalg.pinv(hess[n:, n:]) @ (grad[:n] - hess[n:, :n] @ qdot)


def test_double_pendulum_matches_closed_form(getkey):
    params = dict(m1=1.3, m2=0.7, l1=0.9, l2=1.4, g=9.8)
    system = DoublePendulum(**params)
    for _ in range(5):
        q = jr.uniform(getkey(), (2,), minval=0, maxval=2 * np.pi, dtype=jnp.float64)
        qdot = jr.uniform(getkey(), (2,), minval=-10, maxval=10, dtype=jnp.float64)
        expected = double_pendulum_qddot(np.asarray(q), np.asarray(qdot), **params)
        np.testing.assert_allclose(
            lagrax.acceleration(system, q, qdot), expected, rtol=1e-10, atol=1e-10
        )


def test_relativistic_particle_matches_closed_form():
    system = RelativisticParticle(g=2.0)
    q = jnp.array([0.3])
    for v in (0.0, 0.5, -0.9, 0.99):
        qdot = jnp.array([v])
        expected = 2.0 * (1 - v**2) ** 2.5 / (1 + 2 * v**2)
        np.testing.assert_allclose(
            lagrax.acceleration(system, q, qdot), [expected], rtol=1e-10
        )
        p = v * (1 - v**2) ** -1.5
        np.testing.assert_allclose(lagrax.momentum(system, q, qdot), [p], rtol=1e-12)


def test_lorentz_force(getkey):
    b = np.array([0.3, -1.2, 2.0])
    e = np.array([0.5, 0.1, -0.4])
    # Tuples, the fields' declared type (Equinox 0.13.0, the floor, checks the
    # argument against it before the converter runs).
    system = ChargedParticle(
        mass=1.7, charge=-0.8, magnetic_field=tuple(b), electric_field=tuple(e)
    )
    q = jr.normal(getkey(), (3,), jnp.float64)
    qdot = jr.normal(getkey(), (3,), jnp.float64)
    expected = -0.8 * (e + np.cross(np.asarray(qdot), b)) / 1.7
    np.testing.assert_allclose(
        lagrax.acceleration(system, q, qdot), expected, rtol=1e-10
    )
    # The canonical momentum carries the vector potential: p = m v + e A(r).
    p = 1.7 * np.asarray(qdot) - 0.8 * 0.5 * np.cross(b, np.asarray(q))
    np.testing.assert_allclose(lagrax.momentum(system, q, qdot), p, rtol=1e-12)


def test_one_dof_systems():
    q = jnp.array([0.7])
    qdot = jnp.array([-0.4])
    osc = HarmonicOscillator(mass=2.0, stiffness=3.0)
    np.testing.assert_allclose(
        lagrax.acceleration(osc, q, qdot), [-1.5 * 0.7], rtol=1e-12
    )
    np.testing.assert_allclose(
        lagrax.energy(osc, q, qdot), 0.5 * 2.0 * 0.16 + 0.5 * 3.0 * 0.49, rtol=1e-12
    )
    pend = Pendulum(mass=0.5, length=2.0, g=9.8)
    np.testing.assert_allclose(
        lagrax.acceleration(pend, q, qdot), [-9.8 / 2.0 * np.sin(0.7)], rtol=1e-12
    )


def test_energy_is_kinetic_plus_potential(getkey):
    system = DoublePendulum()
    q = jr.normal(getkey(), (2,), jnp.float64)
    qdot = jr.normal(getkey(), (2,), jnp.float64)
    t1, t2 = np.asarray(q)
    w1, w2 = np.asarray(qdot)
    kinetic = w1**2 + 0.5 * w2**2 + w1 * w2 * np.cos(t1 - t2)
    potential = -2 * 9.8 * np.cos(t1) - 9.8 * np.cos(t2)
    np.testing.assert_allclose(
        lagrax.energy(system, q, qdot), kinetic + potential, rtol=1e-12
    )
    expected_h = np.array([[2.0, np.cos(t1 - t2)], [np.cos(t1 - t2), 1.0]])
    np.testing.assert_allclose(
        lagrax.mass_matrix(system, q, qdot), expected_h, rtol=1e-12
    )


@pytest.mark.parametrize("dof", [1, 2, 3])
def test_mlp_fast_path_matches_autodiff_and_paper_formula(dof, getkey):
    model = lagrax.MLPLagrangian(
        dof, width=48, depth=3, dtype=jnp.float64, key=getkey()
    )
    q = jr.normal(getkey(), (dof,), jnp.float64)
    qdot = jr.normal(getkey(), (dof,), jnp.float64)
    plain = lambda q, qdot: model(q, qdot)  # noqa: E731 (not an AbstractJetLagrangian)
    fast = lagrax.acceleration(model, q, qdot, throw=False)
    generic = lagrax.acceleration(plain, q, qdot, throw=False)
    np.testing.assert_allclose(fast, generic, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(fast, _paper_acceleration(model, q, qdot), rtol=1e-7)
    hess = jax.hessian(lambda v: model(q, v))(qdot)
    np.testing.assert_allclose(
        lagrax.mass_matrix(model, q, qdot), hess, rtol=1e-10, atol=1e-12
    )


def test_mlp_fast_path_other_activation(getkey):
    model = lagrax.MLPLagrangian(
        2,
        width=16,
        depth=2,
        activation=jnp.tanh,
        init="default",
        dtype=jnp.float64,
        key=getkey(),
    )
    q = jr.normal(getkey(), (2,), jnp.float64)
    qdot = jr.normal(getkey(), (2,), jnp.float64)
    fast = lagrax.acceleration(model, q, qdot, throw=False)
    np.testing.assert_allclose(fast, _paper_acceleration(model, q, qdot), rtol=1e-7)


def test_indefinite_mass_matrix_uses_lu():
    q = jnp.array([0.5, -0.25])
    qdot = jnp.array([1.0, 2.0])
    # L = ½ q̇₀² − q̇₁² − ½ q₀² − 1.5 q₁²  ⇒  q̈₀ = −q₀, −2 q̈₁ = −3 q₁.
    np.testing.assert_allclose(
        lagrax.acceleration(indefinite, q, qdot), [-0.5, 1.5 * -0.25], rtol=1e-12
    )
    info = lagrax.mass_matrix_info(indefinite, q, qdot)
    assert not info.positive_definite
    assert not info.singular
    np.testing.assert_allclose(info.eigenvalues, [-2.0, 1.0])
    np.testing.assert_allclose(info.condition_number, 2.0)


class _Quadratic(lagrax.AbstractLagrangian):
    """L = ½ q̇ᵀ M q̇ − ½ qᵀ K q, with M and K as leaves: one compilation per size."""

    m: Float[Array, "dof dof"]
    k: Float[Array, "dof dof"]

    def __call__(self, q, qdot):
        return 0.5 * qdot @ self.m @ qdot - 0.5 * q @ self.k @ q


@eqx.filter_jit
def _quadratic_checks(lagrangian, q, qdot):
    info = lagrax.mass_matrix_info(lagrangian, q, qdot)
    grads = jax.grad(lambda q: lagrax.acceleration(lagrangian, q, qdot).sum())(q)
    return lagrax.acceleration(lagrangian, q, qdot), info, grads


# 8 and 9 sit on both sides of the unrolled/looped switch (`_UNROLLED_MAX_DOF`), 65
# above the looped/LAPACK one (`_LOOPED_MAX_DOF`); other sizes run the same code as
# their neighbours, and each size is a compilation.
@pytest.mark.parametrize("dof", [1, 2, 8, 9, 65])
@pytest.mark.parametrize("kind", ["definite", "indefinite"])
def test_quadratic_lagrangian_any_size(dof, kind, getkey):
    # L = ½ q̇ᵀ M q̇ − ½ qᵀ K q has q̈ = −M⁻¹ K q: checked against numpy for mass
    # matrices on every side of the size switches, definite or not,
    # one whose leading entry is tiny so that the elimination must pivot.
    a = jr.normal(getkey(), (dof, dof))
    if kind == "definite":
        m = a @ a.T + dof * jnp.eye(dof)
    else:
        # A zero-ish diagonal entry with a nonzero row: never semi-definite.
        m = (a + a.T).at[0, 0].set(1e-9) if dof > 1 else -jnp.eye(1)
    k = jnp.diag(jnp.arange(1.0, dof + 1))
    q = jr.normal(getkey(), (dof,))
    qdot = jr.normal(getkey(), (dof,))
    qddot, info, grads = _quadratic_checks(_Quadratic(m, k), q, qdot)
    expected = -np.linalg.solve(np.asarray(m), np.asarray(k @ q))
    np.testing.assert_allclose(qddot, expected, rtol=1e-8, atol=1e-10)
    assert bool(info.positive_definite) == (kind == "definite")
    assert not info.singular
    np.testing.assert_allclose(grads, -np.linalg.solve(m, k).sum(0), rtol=1e-8)


def test_batched_accelerations_do_not_deadlock(getkey):
    # jaxlib's LAPACK kernels could deadlock XLA's CPU pool when two ran at once
    # in a large vmapped solve; the mass-matrix solve has no custom calls for small
    # dof. A hang here would show as a test timeout.
    system = DoublePendulum()
    q = jr.uniform(getkey(), (100_000, 2), maxval=2 * jnp.pi)
    qdot = jr.uniform(getkey(), (100_000, 2), minval=-10, maxval=10)
    for _ in range(3):
        qddot = lagrax.acceleration_data(system, q, qdot).qddot
        assert np.isfinite(np.asarray(qddot)).all()


def test_singular_mass_matrix_fails_loudly():
    q = jnp.array([0.5, -0.25])
    qdot = jnp.array([1.0, 2.0])
    with pytest.raises(Exception, match="singular"):
        lagrax.acceleration(singular, q, qdot)
    with pytest.raises(Exception, match="singular"):
        jax.jit(jax.vmap(lagrax.acceleration, in_axes=(None, 0, 0)), static_argnums=0)(
            singular, q[None], qdot[None]
        )
    assert np.all(np.isnan(lagrax.acceleration(singular, q, qdot, throw=False)))
    info = lagrax.mass_matrix_info(singular, q, qdot)
    assert info.singular
    assert not info.positive_definite
    assert np.isinf(info.condition_number)


def test_shape_mismatch_raises_before_computing():
    calls = []

    def lagrangian(q, qdot):
        calls.append(None)
        return jnp.sum(qdot**2) - jnp.sum(q**2)

    q, qdot = jnp.zeros(3), jnp.zeros(2)
    for fn in (lagrax.acceleration, lagrax.energy, lagrax.momentum, lagrax.mass_matrix):
        with pytest.raises((TypeError, ValueError), match="qdot|dof"):
            fn(lagrangian, q, qdot)
    with pytest.raises((TypeError, ValueError)):
        lagrax.acceleration(lagrangian, jnp.zeros(2), jnp.zeros(2), force=jnp.zeros(3))
    with pytest.raises((TypeError, ValueError)):
        lagrax.acceleration(lagrangian, jnp.zeros((4, 2)), jnp.zeros((4, 2)))
    assert calls == []


def test_generalized_force_inverts_acceleration(getkey):
    model = lagrax.MLPLagrangian(2, width=32, depth=2, dtype=jnp.float64, key=getkey())
    q = jr.normal(getkey(), (2,), jnp.float64)
    qdot = jr.normal(getkey(), (2,), jnp.float64)
    free = lagrax.acceleration(model, q, qdot, throw=False)
    np.testing.assert_allclose(
        lagrax.generalized_force(model, q, qdot, free), 0.0, atol=1e-9
    )
    force = jr.normal(getkey(), (2,), jnp.float64)
    forced = lagrax.acceleration(model, q, qdot, force=force, throw=False)
    np.testing.assert_allclose(
        lagrax.generalized_force(model, q, qdot, forced), force, rtol=1e-8, atol=1e-9
    )


def test_translation_invariance_gives_zero_total_force(getkey):
    q = jr.normal(getkey(), (4,), jnp.float64)
    qdot = jr.normal(getkey(), (4,), jnp.float64)
    qddot = lagrax.acceleration(translation_invariant, q, qdot)
    # dP/dt = d/dt (p₁ + p₂) = Σ ∂L/∂x = 0 for a translation-invariant L.
    dp_dt = jax.jvp(
        lambda q, qdot: lagrax.momentum(translation_invariant, q, qdot),
        (q, qdot),
        (qdot, qddot),
    )[1]
    np.testing.assert_allclose(dp_dt[:2] + dp_dt[2:], 0.0, atol=1e-12)


def test_jit_vmap_match_loop(getkey):
    model = lagrax.MLPLagrangian(2, width=32, depth=2, dtype=jnp.float64, key=getkey())
    qs = jr.normal(getkey(), (8, 2), jnp.float64)
    qdots = jr.normal(getkey(), (8, 2), jnp.float64)
    batched = eqx.filter_jit(jax.vmap(lagrax.acceleration, in_axes=(None, 0, 0)))(
        model, qs, qdots
    )
    looped = jnp.stack([lagrax.acceleration(model, q, v) for q, v in zip(qs, qdots)])
    np.testing.assert_allclose(batched, looped, rtol=1e-12)


def test_gradients_match_finite_differences(getkey):
    model = lagrax.MLPLagrangian(2, width=24, depth=2, dtype=jnp.float64, key=getkey())
    qs = jr.normal(getkey(), (4, 2), jnp.float64)
    qdots = jr.normal(getkey(), (4, 2), jnp.float64)
    targets = jr.normal(getkey(), (4, 2), jnp.float64)

    params, static = eqx.partition(model, eqx.is_inexact_array)

    def loss(params, qs):
        model = eqx.combine(params, static)
        pred = jax.vmap(lagrax.acceleration, in_axes=(None, 0, 0))(model, qs, qdots)
        return jnp.mean((pred - targets) ** 2)

    # Both gradients from one backward pass, and the finite differences from the
    # value of the same compiled function: one compilation.
    value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    _, (grads, grad_q) = value_and_grad(params, qs)
    direction = random_like(getkey(), params)
    fd = finite_difference_directional(
        lambda p: value_and_grad(p, qs)[0], params, direction
    )
    analytic = sum(
        jnp.vdot(g, d)
        for g, d in zip(
            jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(direction)
        )
    )
    np.testing.assert_allclose(analytic, fd, rtol=1e-6)
    # and with respect to the state
    dq = jr.normal(getkey(), (4, 2), jnp.float64)
    fd_q = finite_difference_directional(lambda x: value_and_grad(params, x)[0], qs, dq)
    np.testing.assert_allclose(jnp.vdot(grad_q, dq), fd_q, rtol=1e-6)


def test_float32(getkey):
    model64 = lagrax.MLPLagrangian(
        2, width=32, depth=3, dtype=jnp.float64, key=getkey()
    )
    model32 = jax.tree_util.tree_map(
        lambda x: x.astype(jnp.float32) if eqx.is_inexact_array(x) else x, model64
    )
    q = jr.normal(getkey(), (2,), jnp.float64)
    qdot = jr.normal(getkey(), (2,), jnp.float64)
    a64 = lagrax.acceleration(model64, q, qdot, throw=False)
    a32 = lagrax.acceleration(
        model32, q.astype(jnp.float32), qdot.astype(jnp.float32), throw=False
    )
    assert a32.dtype == jnp.float32
    np.testing.assert_allclose(a32, a64, rtol=1e-3, atol=1e-3)
    e32 = lagrax.energy(
        DoublePendulum(), q.astype(jnp.float32), qdot.astype(jnp.float32)
    )
    assert e32.dtype == jnp.float32


def test_numpy_float64_inputs_with_x64_disabled_are_cast_as_jax_casts():
    """With x64 off, NumPy float64 states become float32, as `jnp.asarray` makes
    them, with no truncation warning from inside lagrax; lists are refused with
    what to pass."""
    system = DoublePendulum()
    q, qdot = np.array([0.3, -0.2]), np.array([0.1, 0.4])
    expected = lagrax.acceleration(system, jnp.asarray(q), jnp.asarray(qdot))
    # (`jax.enable_x64` is JAX ≥ 0.7's name; the lowest tested JAX has only the
    # experimental one, which the checker, seeing a newer JAX, does not know.)
    enable_x64 = getattr(jax, "enable_x64", None)
    if enable_x64 is None:
        from jax.experimental import enable_x64  # pyright: ignore[reportAttributeAccessIssue]
    with enable_x64(False), warnings.catch_warnings():
        warnings.simplefilter("error")
        qddot = lagrax.acceleration(system, q, qdot)
        energy = lagrax.energy(system, q, qdot)
        traj = lagrax.simulate(system, q, qdot, np.linspace(0.0, 0.5, 3))
    assert qddot.dtype == energy.dtype == traj.q.dtype == jnp.float32
    np.testing.assert_allclose(qddot, expected, rtol=1e-5)
    # (lagrax's own message names jnp.asarray(q); under the test suite's runtime
    # type checker, the checker's names the parameter first.) A list on purpose.
    with pytest.raises(TypeError, match=r"jnp.asarray\(q\)|parameter 'q'"):
        lagrax.acceleration(system, [0.3, -0.2], qdot)  # pyright: ignore[reportArgumentType]
