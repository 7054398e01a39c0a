from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lagrax
from lagrax.systems import DoublePendulum, HarmonicOscillator

from .helpers import along, finite_difference_directional, translation_invariant


@pytest.mark.parametrize(
    "solver",
    [diffrax.Tsit5(), diffrax.Dopri5(), diffrax.Dopri8(), diffrax.Kvaerno5()],
    ids=lambda s: type(s).__name__,
)
def test_harmonic_oscillator_closed_form(solver):
    system = HarmonicOscillator(mass=2.0, stiffness=8.0)  # ω = 2
    ts = jnp.linspace(0.0, 5.0, 11)
    traj = lagrax.simulate(
        system,
        jnp.array([1.0]),
        jnp.array([0.5]),
        ts,
        solver=solver,
        rtol=1e-9,
        atol=1e-9,
    )
    expected_q = np.cos(2 * ts) + 0.25 * np.sin(2 * ts)
    expected_qdot = -2 * np.sin(2 * ts) + 0.5 * np.cos(2 * ts)
    assert traj.q.shape == (11, 1) and traj.qdot.shape == (11, 1)
    np.testing.assert_allclose(traj.ts, ts)
    np.testing.assert_allclose(traj.q[:, 0], expected_q, atol=1e-6)
    np.testing.assert_allclose(traj.qdot[:, 0], expected_qdot, atol=1e-6)


def test_lagrangian_term_in_diffeqsolve():
    system = HarmonicOscillator()
    sol = diffrax.diffeqsolve(
        lagrax.LagrangianTerm(system),
        diffrax.Tsit5(),
        t0=0.0,
        t1=jnp.pi,
        dt0=0.01,
        y0=(jnp.array([1.0]), jnp.array([0.0])),
        stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-10),
    )
    assert sol.ys is not None
    q, qdot = sol.ys
    np.testing.assert_allclose(q[-1], [-1.0], atol=1e-8)
    np.testing.assert_allclose(qdot[-1], [0.0], atol=1e-8)


def test_double_pendulum_conserves_energy():
    system = DoublePendulum()
    q0, qdot0 = jnp.array([2.0, -1.0]), jnp.array([0.5, 3.0])
    ts = jnp.linspace(0.0, 10.0, 101)
    traj = lagrax.simulate(system, q0, qdot0, ts, rtol=1e-11, atol=1e-11)
    energies = along(lagrax.energy, system, traj.q, traj.qdot)
    drift = jnp.max(jnp.abs(energies - energies[0])) / 29.4
    assert drift < 1e-8
    # and the trajectory really moved (a frozen solution would conserve energy too)
    assert jnp.ptp(traj.q[:, 1]) > 1.0


def test_translation_invariant_conserves_momentum():
    q0 = jnp.array([0.0, 0.0, 1.2, 0.3])
    qdot0 = jnp.array([0.4, -0.1, -0.2, 0.5])
    ts = jnp.linspace(0.0, 5.0, 51)
    traj = lagrax.simulate(translation_invariant, q0, qdot0, ts, rtol=1e-11, atol=1e-11)
    p = along(lagrax.momentum, translation_invariant, traj.q, traj.qdot)
    total = p[:, :2] + p[:, 2:]
    np.testing.assert_allclose(
        total, jnp.broadcast_to(total[0], total.shape), atol=1e-9
    )
    assert jnp.max(jnp.abs(p[:, 0] - p[0, 0])) > 1e-2  # the parts do exchange momentum


def test_force_damped_oscillator():
    # q̈ = −q − 2ζ q̇ with ζ = 0.1; from (1, 0): q = e^{−ζt}(cos ωt + ζ/ω sin ωt).
    zeta = 0.1
    omega = np.sqrt(1 - zeta**2)
    ts = jnp.linspace(0.0, 6.0, 13)
    traj = lagrax.simulate(
        HarmonicOscillator(),
        jnp.array([1.0]),
        jnp.array([0.0]),
        ts,
        force=lambda t, q, qdot: -2 * zeta * qdot,
        rtol=1e-10,
        atol=1e-10,
    )
    expected = np.exp(-zeta * ts) * (
        np.cos(omega * ts) + zeta / omega * np.sin(omega * ts)
    )
    np.testing.assert_allclose(traj.q[:, 0], expected, atol=1e-7)


def test_time_dependent_force():
    # q̈ = −q + cos(2t) from rest at q = 0: q = (cos t − cos 2t) / 3.
    ts = jnp.linspace(0.0, 4.0, 9)
    traj = lagrax.simulate(
        HarmonicOscillator(),
        jnp.array([0.0]),
        jnp.array([0.0]),
        ts,
        force=lambda t, q, qdot: jnp.cos(2 * t) * jnp.ones_like(q),
        rtol=1e-10,
        atol=1e-10,
    )
    np.testing.assert_allclose(
        traj.q[:, 0], (np.cos(ts) - np.cos(2 * ts)) / 3, atol=1e-7
    )


def test_control_input_interpolation_and_its_gradient():
    """A control u(t) sampled on a grid enters as a generalized force through a
    Diffrax interpolation: q̈ = −q + u with u ≡ c from rest at 0 gives
    q(T) = c (1 − cos T), so ∂q(T)/∂c = 1 − cos T (lagrax's VariationalMidpoint,
    2nd order at dt = 0.01: errors ~1e-5)."""
    t1 = 2.0

    @jax.jit
    @jax.value_and_grad
    def final_position(c):
        control_times = jnp.linspace(0.0, t1, 5)
        u = diffrax.LinearInterpolation(ts=control_times, ys=c * jnp.ones((5, 1)))
        term = lagrax.LagrangianTerm(
            HarmonicOscillator(), force=lambda t, q, qdot: u.evaluate(t)
        )
        y0 = (jnp.zeros(1), jnp.zeros(1))
        solver = lagrax.VariationalMidpoint()
        solution = diffrax.diffeqsolve(term, solver, 0.0, t1, 0.01, y0, max_steps=256)
        assert solution.ys is not None
        return solution.ys[0][-1, 0]

    c = jnp.asarray(0.7)
    value, grad = final_position(c)
    expected = 1 - np.cos(t1)
    np.testing.assert_allclose(value, c * expected, rtol=1e-4)
    np.testing.assert_allclose(grad, expected, rtol=1e-4)


def test_multi_term_with_diffrax_solvers_and_a_clear_refusal_in_verlet():
    """MultiTerm(LagrangianTerm, ODETerm) adds the ODETerm's rates: the damped
    oscillator q̈ = −q − 2ζq̇ under Tsit5. VelocityVerlet refuses it by name."""
    zeta = 0.1
    damping = diffrax.ODETerm(lambda t, y, args: (jnp.zeros(1), -2 * zeta * y[1]))
    terms = diffrax.MultiTerm(lagrax.LagrangianTerm(HarmonicOscillator()), damping)
    y0 = (jnp.ones(1), jnp.zeros(1))
    solution = diffrax.diffeqsolve(
        terms,
        diffrax.Tsit5(),
        0.0,
        3.0,
        0.01,
        y0,
        stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-10),
    )
    omega = np.sqrt(1 - zeta**2)
    expected = np.exp(-zeta * 3) * (
        np.cos(omega * 3) + zeta / omega * np.sin(omega * 3)
    )
    assert solution.ys is not None
    np.testing.assert_allclose(solution.ys[0][-1, 0], expected, atol=1e-7)
    with pytest.raises(TypeError, match="force=...") as error:
        diffrax.diffeqsolve(terms, lagrax.VelocityVerlet(), 0.0, 1.0, 0.1, y0)
    assert "MultiTerm" in str(error.value)


def test_vmap_and_gradient_through_simulate():
    system = HarmonicOscillator()
    ts = jnp.linspace(0.0, 1.0, 5)

    @jax.jit
    def final_q(q0):
        traj = lagrax.simulate(system, q0, jnp.zeros(1), ts, rtol=1e-10, atol=1e-10)
        return traj.q[-1, 0]

    q0s = jnp.array([[0.5], [1.0], [2.0]])
    np.testing.assert_allclose(
        jax.vmap(final_q)(q0s), q0s[:, 0] * np.cos(1.0), rtol=1e-8
    )
    np.testing.assert_allclose(
        jax.grad(final_q)(jnp.array([1.0])), [np.cos(1.0)], rtol=1e-7
    )
    fd = finite_difference_directional(final_q, jnp.array([1.0]), jnp.array([1.0]))
    np.testing.assert_allclose(jax.grad(final_q)(jnp.array([1.0]))[0], fd, rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_gradient_with_saves_on_the_step_grid_matches_finite_differences(dtype):
    """The adjoint trap's configuration (issue 14): 20 fixed steps of 0.1 saved at
    `0.1 * arange(21)`, the steps' own ends, with `max_steps=21`, under `jit`.
    Diffrax's default adjoint drops a save's gradient there (5–13% off); lagrax's
    default must match central finite differences (taken in float64)."""
    system = lagrax.systems.Pendulum()

    def loss(q0, dtype):
        ts = 0.1 * jnp.arange(21.0, dtype=dtype)
        traj = lagrax.simulate(
            system,
            q0.astype(dtype),
            jnp.zeros(1, dtype),
            ts,
            solver=lagrax.VariationalMidpoint(),
            dt0=0.1,
            max_steps=21,
        )
        return jnp.sum(traj.q**2)

    q0 = jnp.array([1.0])
    grad = jax.jit(jax.grad(loss), static_argnums=1)(q0.astype(dtype), dtype)
    fd = finite_difference_directional(
        lambda q: loss(q, jnp.float64), q0, jnp.array([1.0])
    )
    rtol = 1e-7 if dtype == jnp.float64 else 1e-3
    np.testing.assert_allclose(grad[0], fd, rtol=rtol)


def test_bad_arguments():
    system = HarmonicOscillator()
    ts = jnp.linspace(0.0, 1.0, 5)
    with pytest.raises((TypeError, ValueError), match="qdot0|dof"):
        lagrax.simulate(system, jnp.zeros(1), jnp.zeros(2), ts)
    with pytest.raises((TypeError, ValueError), match="ts|times"):
        lagrax.simulate(system, jnp.zeros(1), jnp.zeros(1), jnp.array([0.0]))
    with pytest.raises(ValueError, match="dt0"):
        lagrax.simulate(system, jnp.zeros(1), jnp.zeros(1), ts, solver=diffrax.Euler())
    with pytest.raises(ValueError, match="dt0"):
        lagrax.simulate(
            system, jnp.zeros(1), jnp.zeros(1), ts, solver=diffrax.Euler(), dt0=-0.1
        )
    with pytest.raises(TypeError, match="lagrangian"):  # a wrong type on purpose
        lagrax.LagrangianTerm(3.0)  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="positive"):
        HarmonicOscillator(mass=-1.0)


def test_fixed_step_diffrax_solver():
    ts = jnp.linspace(0.0, 1.0, 11)
    traj = lagrax.simulate(
        HarmonicOscillator(),
        jnp.array([1.0]),
        jnp.array([0.0]),
        ts,
        solver=diffrax.Tsit5(),
        dt0=0.01,
        stepsize_controller=diffrax.ConstantStepSize(),
    )
    np.testing.assert_allclose(traj.q[:, 0], np.cos(ts), atol=1e-9)


def test_vmapped_solves_of_unequal_step_counts_have_finite_gradients():
    """Windows [0, 0.1] and [0.2, 0.3] with dt0 = 0.05 take 2 and 3 fixed steps
    (0.1 / 0.05 rounds up once). Under `vmap` the finished solve keeps stepping with
    h = 0; `VariationalMidpoint` divided by it and the gradient was NaN. It must be
    the sum of the two solves' own gradients."""
    system, key = lagrax.systems.Pendulum(), jax.random.key(1)
    network = lagrax.MLPLagrangian(1, width=4, depth=1, key=key)
    q0, qdot0 = jnp.array([0.3]), jnp.array([0.1])
    windows = 0.05 * jnp.array([[0.0, 1.0, 2.0], [4.0, 5.0, 6.0]])

    def final(scale, ts):
        traj = lagrax.simulate(
            system + scale * network,
            q0,
            qdot0,
            ts,
            solver=lagrax.VariationalMidpoint(),
            dt0=0.05,
            max_steps=8,
        )
        return jnp.sum(traj.q**2)

    scale = jnp.asarray(0.1)
    batched = jax.grad(lambda s: jnp.sum(jax.vmap(final, (None, 0))(s, windows)))
    alone = sum(jax.jit(jax.grad(final))(scale, ts) for ts in windows)
    np.testing.assert_allclose(batched(scale), alone, rtol=1e-10)


def test_a_fixed_step_solve_that_blows_up_is_a_failure():
    # Tsit5 at h·ω = 10, far past its stability limit (about 3.5): each step
    # multiplies the state by |R(10i)| ≫ 1 until it overflows, and a constant
    # step size checks nothing, so Diffrax calls it a success.
    system = HarmonicOscillator(stiffness=100.0**2)
    q0, qdot0 = jnp.array([1.0]), jnp.array([0.0])
    ts = jnp.linspace(0.0, 100.0, 11)
    options: dict[str, Any] = dict(
        solver=diffrax.Tsit5(), dt0=0.1, stepsize_controller=diffrax.ConstantStepSize()
    )
    traj = lagrax.simulate(system, q0, qdot0, ts, throw=False, **options)
    assert not bool(jnp.all(jnp.isfinite(traj.q)))
    assert traj.result == lagrax.RESULTS.diverged
    # Raising, the term's own check may speak first: H is not finite there.
    with pytest.raises(Exception, match="became NaN or infinite|not finite"):
        lagrax.simulate(system, q0, qdot0, ts, **options)
    # Within the limit the same solve succeeds.
    calm = lagrax.simulate(system, q0, qdot0, ts[:2] / 100, **dict(options, dt0=0.001))
    assert calm.result == lagrax.RESULTS.successful
