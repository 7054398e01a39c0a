"""Generalized forces: their values, sums and errors; damped and driven oscillators
against their closed forms under every lagrax solver (and Tsit5), with the order
of convergence; the energy balance of a dissipative system."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from jaxtyping import Array, Float

import lagrax
from lagrax.systems import ActuatedDoublePendulum, HarmonicOscillator

from .helpers import random_like


def _state(key, dof):
    q_key, v_key = jr.split(key)
    return jr.normal(q_key, (dof,)), jr.normal(v_key, (dof,))


@eqx.filter_jit
def _evaluate(forces, t, q, qdot):
    """Each force at one state, compiled together (eagerly, every small operation
    would compile on its own)."""
    return [force(t, q, qdot) for force in forces]


def test_force_values(getkey):
    q, qdot = _state(getkey(), 3)
    b, c = np.array([0.5, 0.0, 2.0]), np.array([0.3, 0.1, 0.2])
    # u(t) = (1 − t)(1, 2, 3) + t (3, 2, 1) on [0, 1].
    ramp = diffrax.LinearInterpolation(
        jnp.array([0.0, 1.0]), jnp.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    )
    # B(q) u with a constant and with a state-dependent B, two inputs.
    two = diffrax.LinearInterpolation(jnp.array([0.0, 1.0]), jnp.ones((2, 2)))
    matrix = jnp.array([[1.0, 0.0], [2.0, -1.0], [0.0, 3.0]])
    # A constant input through with_input, in a sum with a plain closure force.
    total = lagrax.with_input(
        lagrax.RayleighDissipation(b) + lagrax.Actuation() + (lambda t, q, qdot: -q),
        jnp.array([1.0, -1.0, 0.5]),
    )
    forces = (
        lagrax.RayleighDissipation(b),
        lagrax.CoulombFriction(c, sharpness=50.0),
        lagrax.Actuation(ramp),
        lagrax.Actuation(two, matrix),
        lagrax.Actuation(two, lambda q: q[:, None] * matrix),
        total,
    )
    rayleigh, coulomb, ramped, constant_b, state_b, summed = _evaluate(
        forces, jnp.asarray(0.25), q, qdot
    )
    q, qdot = np.asarray(q), np.asarray(qdot)
    np.testing.assert_allclose(rayleigh, -b * qdot, rtol=1e-15)
    np.testing.assert_allclose(coulomb, -c * np.arctan(50 * qdot), rtol=1e-14)
    np.testing.assert_allclose(ramped, [1.5, 2.0, 2.5], rtol=1e-15)
    np.testing.assert_allclose(constant_b, [1.0, 1.0, 3.0], rtol=1e-15)
    np.testing.assert_allclose(state_b, q * np.array([1.0, 1.0, 3.0]), rtol=1e-15)
    np.testing.assert_allclose(
        summed, -b * qdot + np.array([1.0, -1.0, 0.5]) - q, rtol=1e-14, atol=1e-15
    )


@eqx.filter_jit
def _learned(damping, black_box, key, q, qdot):
    t = jnp.zeros(())
    start = (damping.damping(q), damping(t, q, qdot))
    params, static = eqx.partition(damping, eqx.is_inexact_array)
    damping = eqx.combine(random_like(key, params), static)
    trained = (damping.damping(q), damping(t, q, qdot))
    return start, trained, black_box(t, q, qdot)


def test_learned_forces(getkey):
    q, qdot = _state(getkey(), 3)
    damping = lagrax.LearnedDissipation(3, angles=(1,), width=8, key=getkey())
    black_box = lagrax.MLPForce(3, width=8, key=getkey())
    (d0, f0), (d, f), black = _learned(damping, black_box, getkey(), q, qdot)
    # Starts as D = softplus(−5)² I, as documented.
    start = np.log1p(np.exp(-5.0)) ** 2
    np.testing.assert_allclose(d0, start * np.eye(3), rtol=1e-12)
    np.testing.assert_allclose(f0, -start * qdot, rtol=1e-12)
    # With random parameters, D(q) is positive semidefinite and the force is −D q̇:
    # it can only take energy out.
    assert np.linalg.eigvalsh(d)[0] >= -1e-12 * np.abs(d).max()
    np.testing.assert_allclose(f, -d @ qdot, rtol=1e-12)
    assert float(qdot @ f) < 0
    # A black-box force starts at zero (its last layer is zero).
    np.testing.assert_array_equal(black, np.zeros(3))


def test_rayleigh_dissipation_matrix(getkey):
    # A rank-2 positive semidefinite D in three coordinates.
    a = jr.normal(getkey(), (3, 2))
    d = a @ a.T
    force = lagrax.RayleighDissipation(d)
    # Rebuilt from its eigendecomposition, so to round-off of D's largest entries.
    np.testing.assert_allclose(force.damping, d, rtol=0, atol=1e-14 * np.abs(d).max())
    q, qdot = _state(getkey(), 3)
    np.testing.assert_allclose(
        force(0.0, q, qdot), -d @ qdot, rtol=0, atol=1e-14 * np.abs(d).max()
    )
    # D stays positive semidefinite whatever training does to its factor.
    trained = eqx.tree_at(lambda f: f.factor, force, jr.normal(getkey(), (3, 3)))
    assert float(jnp.linalg.eigvalsh(trained.damping)[0]) > -1e-14


def test_force_sum_flattens():
    r = lagrax.RayleighDissipation(np.array([1.0]))
    c = lagrax.CoulombFriction(np.array([1.0]))
    a = lagrax.Actuation()

    def closure(t, q, qdot):
        return -q

    total = (r + c) + (a + closure)
    assert isinstance(total, lagrax.ForceSum)
    assert total.forces == (r, c, a, closure)
    # A plain callable on the left, and a sum of a sum.
    assert (closure + r).forces == (closure, r)
    assert (total + total).forces == 2 * (r, c, a, closure)
    assert lagrax.ForceSum.of(r, total).forces == (r, r, c, a, closure)


def test_bad_forces_raise():
    with pytest.raises(ValueError, match="`damping` must be finite and non-negative"):
        lagrax.RayleighDissipation(np.array([1.0, -0.1]))
    with pytest.raises(ValueError, match="positive semidefinite"):
        lagrax.RayleighDissipation(np.array([[1.0, 0.0], [0.0, -1.0]]))
    with pytest.raises(ValueError, match="symmetric"):
        lagrax.RayleighDissipation(np.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"\(dof,\) or \(dof, dof\)"):
        lagrax.RayleighDissipation(np.ones((2, 3)))
    with pytest.raises(ValueError, match="`coefficient` must be finite"):
        lagrax.CoulombFriction(np.array([-1.0]))
    with pytest.raises(ValueError, match="`sharpness`"):
        lagrax.CoulombFriction(np.array([1.0]), sharpness=0.0)
    with pytest.raises(ValueError, match="at least one force"):
        lagrax.ForceSum(())
    # (Under the test suite's runtime type checking, jaxtyping raises these: wrong
    # types on purpose.)
    with pytest.raises(TypeError, match="input"):
        lagrax.Actuation(jnp.ones(2))  # pyright: ignore[reportArgumentType]
    with pytest.raises(TypeError, match="matrix"):
        lagrax.Actuation(matrix="identity")  # pyright: ignore[reportArgumentType]
    q = jnp.zeros(2)
    with pytest.raises(ValueError, match="has no input"):
        lagrax.Actuation()(0.0, q, q)
    three = diffrax.LinearInterpolation(jnp.array([0.0, 1.0]), jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"input must have shape \(2,\), got \(3,\)"):
        lagrax.Actuation(three)(0.0, q, q)
    with pytest.raises(ValueError, match=r"`matrix` must be of shape \(2, 3\)"):
        lagrax.Actuation(three, jnp.ones((2, 2)))(0.0, q, q)
    with pytest.raises(ValueError, match="holds no lagrax.Actuation"):
        lagrax.with_input(lagrax.RayleighDissipation(np.ones(2)), jnp.ones(2))
    with pytest.raises((ValueError, TypeError), match="input"):
        lagrax.with_input(lagrax.Actuation(), jnp.ones((2, 2)))


@pytest.mark.parametrize(
    "force",
    [
        lagrax.RayleighDissipation(np.ones(2)),
        lagrax.CoulombFriction(np.ones(2)),
    ],
    ids=["RayleighDissipation", "CoulombFriction"],
)
def test_force_of_wrong_dof_names_itself(force):
    # A force built for 2 coordinates applied to 3: a trace-time error that names
    # the force and the sizes (as LearnedDissipation's does), not one from deep
    # inside jnp.
    q = jnp.zeros(3)
    with pytest.raises((ValueError, TypeError), match=type(force).__name__):
        force(0.0, q, q)


def test_data_with_input_needs_a_force():
    system = HarmonicOscillator()
    x = jnp.ones((1, 1))
    with_u = lagrax.AccelerationData(x, x, x, u=x)
    with pytest.raises(ValueError, match="no `force` is given"):
        lagrax.acceleration_loss(system, with_u)
    with pytest.raises(ValueError, match="no `force` is given"):
        lagrax.inverse_dynamics_loss(system, with_u)
    ts = jnp.linspace(0.0, 1.0, 3)
    positions = lagrax.PositionData(ts, jnp.ones((1, 3, 1)), u=jnp.ones((1, 3, 1)))
    with pytest.raises(ValueError, match="no `force` is given"):
        lagrax.discrete_euler_lagrange_loss(system, positions)
    trajectories = lagrax.TrajectoryData(
        ts, jnp.ones((1, 3, 1)), jnp.ones((1, 3, 1)), u=jnp.ones((1, 3, 1))
    )
    with pytest.raises(ValueError, match="no `force` is given"):
        lagrax.rollout_loss(system, trajectories)
    # Without a measured input, the torque loss has no scale.
    with pytest.raises(ValueError, match="needs the measured input"):
        lagrax.inverse_dynamics_loss(
            system, lagrax.AccelerationData(x, x, x), force=lagrax.Actuation()
        )
    with pytest.raises(ValueError, match=r"`u` must have shape"):
        lagrax.AccelerationData(x, x, x, u=jnp.ones((2, 1)))


# --- Oscillators: x'' + 2γ x' + ω₀² x = F cos Ωt, with m = 1 -----------------------

OMEGA0 = 2.0  # √(k/m)
OSCILLATOR = HarmonicOscillator(mass=1.0, stiffness=OMEGA0**2)


class _Cosine(diffrax.AbstractPath):
    """The input `u(t) = amplitude · cos(frequency · t)`, smooth: the solvers keep
    their order (a linear interpolation has kinks at its knots)."""

    amplitude: Float[Array, ""]
    frequency: Float[Array, ""]

    @property
    def t0(self):
        return -jnp.inf

    @property
    def t1(self):
        return jnp.inf

    def evaluate(self, t0, t1=None, left=True):
        if t1 is not None:
            return self.evaluate(t1) - self.evaluate(t0)
        return (self.amplitude * jnp.cos(self.frequency * t0))[None]

    def derivative(self, t, left=True):
        return (-self.amplitude * self.frequency * jnp.sin(self.frequency * t))[None]


def _oscillator_force(gamma, amplitude=0.0, frequency=1.0):
    """Damping `2γ` and the drive, as one pytree of arrays: the damped and the
    driven problems share each solver's compilation."""
    return lagrax.RayleighDissipation(jnp.array([2 * gamma])) + lagrax.Actuation(
        _Cosine(_f64(amplitude), _f64(frequency))
    )


def _f64(x):
    """A float64 array that is not weakly typed, whatever `x` is: jit retraces
    when an argument's weak type changes."""
    return jnp.asarray(x, jnp.float64)


@eqx.filter_jit
def _oscillate(solver, force, y0, t0, t1, dt, ts):
    solution = diffrax.diffeqsolve(
        lagrax.LagrangianTerm(OSCILLATOR, force),
        solver,
        t0=t0,
        t1=t1,
        dt0=dt,
        y0=y0,
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.ConstantStepSize(),
        max_steps=2048,
    )
    assert solution.ys is not None
    return solution.ys[0][:, 0]


SOLVERS = {
    "VelocityVerlet": (lagrax.VelocityVerlet(), 2),
    "VariationalMidpoint": (lagrax.VariationalMidpoint(), 2),
    "Yoshida4": (lagrax.Yoshida4(), 4),
    "GaussLegendre": (lagrax.GaussLegendre(stages=2), 4),
    "Tsit5": (diffrax.Tsit5(), 5),
}
SAVES = 101  # every solve saves this many times: one compilation per solver
# Steps halved from the largest. Yoshida4's error constant nearly cancels under
# this damping at coarse steps (its error changes sign between h = 0.2 and 0.1), so
# 4th order shows from h = 0.05 down; Tsit5 needs coarse steps to stay above
# round-off.
LARGEST_STEP = {2: 0.1, 3: 0.1, 4: 0.05, 5: 0.2}


def _damped(gamma, x0, v0, t):
    """x(t) = e^{−γt}(A cos ω_d t + B sin ω_d t), ω_d = √(ω₀² − γ²), for x(0) = x0,
    ẋ(0) = v0."""
    omega = np.sqrt(OMEGA0**2 - gamma**2)
    return np.exp(-gamma * t) * (
        x0 * np.cos(omega * t) + (v0 + gamma * x0) / omega * np.sin(omega * t)
    )


def _damped_errors(solver, dts, gamma=0.3, x0=1.0, v0=0.5, t1=3.0):
    force = _oscillator_force(gamma)
    y0 = (jnp.array([x0]), jnp.array([v0]))
    ts = jnp.linspace(0.0, t1, SAVES)
    exact = _damped(gamma, x0, v0, t1)
    return np.array(
        [
            abs(
                float(_oscillate(solver, force, y0, ts[0], ts[-1], _f64(dt), ts)[-1])
                - exact
            )
            for dt in dts
        ]
    )


# Documented: for a velocity-dependent q̈ the Verlet step is not symmetric and the
# composition falls to 2nd order (Verlet's carried acceleration is taken at an
# Euler-predicted velocity; recomputing it at each step start would restore 3).
ORDERS = dict(
    SOLVERS, **{"Yoshida4[Verlet]": (lagrax.Yoshida4(base=lagrax.VelocityVerlet()), 2)}
)


@pytest.mark.parametrize("name", ORDERS)
def test_damped_oscillator_closed_form_and_order(name):
    solver, order = ORDERS[name]
    dts = LARGEST_STEP[order] / 2.0 ** np.arange(4)
    errors = _damped_errors(solver, dts)
    slope = np.polyfit(np.log(dts), np.log(errors), 1)[0]
    assert abs(slope - order) < 0.2, (slope, errors)
    # And the error is a discretization error: small at the finest step.
    assert errors[-1] < (OMEGA0 * dts[-1]) ** order, errors


def test_fixed_steps_are_invariant_under_a_time_shift():
    # The damped oscillator is autonomous: four fixed steps of h from the same
    # state end at the same state whenever they start. [0.14, 0.16000000000000003]
    # is a window of observation times np.linspace(0, 0.2, 41) (samples 28 to 32),
    # as rollout_loss cuts them; [0, 0.02] the same window at t = 0.
    # Through lagrax.simulate (the path of rollout and rollout_loss), which makes a
    # step that divides the window up to round-off divide it exactly.
    force = _oscillator_force(0.3)
    q0, v0 = jnp.array([1.0]), jnp.array([0.5])
    grid = jnp.linspace(0.0, 0.2, 41)

    def end(ts):
        return lagrax.simulate(
            OSCILLATOR,
            q0,
            v0,
            ts,
            solver=lagrax.VariationalMidpoint(),
            dt0=0.005,
            force=force,
        ).q[-1]

    # The same four steps, at times that differ by round-off: equal to round-off.
    shifted, at_zero = end(grid[28:33]), end(jnp.linspace(0.0, 0.02, 5))
    np.testing.assert_allclose(shifted, at_zero, rtol=0, atol=1e-14)


@pytest.mark.parametrize("name", SOLVERS)
def test_driven_oscillator_steady_state(name):
    solver, order = SOLVERS[name]
    gamma, force_amplitude, drive = 1.0, 0.8, 1.5
    # x_p = A cos(Ωt − φ), A = F / √((ω₀² − Ω²)² + (2γΩ)²), tan φ = 2γΩ / (ω₀² − Ω²).
    detuning = OMEGA0**2 - drive**2
    amplitude = force_amplitude / np.hypot(detuning, 2 * gamma * drive)
    phase = np.arctan2(2 * gamma * drive, detuning)
    # From rest; by t = 18 the transient has decayed by e^{−γt} ≈ 1.5e-8. Saved on
    # the step grid (linear dense output would err by O(h²) between steps), over
    # more than a period of the drive.
    dt, t1 = 0.06, 24.0
    ts = jnp.linspace(18.0, t1, SAVES)
    force = _oscillator_force(gamma, force_amplitude, drive)
    y0 = (jnp.zeros(1), jnp.zeros(1))
    x = np.asarray(_oscillate(solver, force, y0, _f64(0.0), _f64(t1), _f64(dt), ts))
    # Least squares x ≈ a cos Ωt + b sin Ωt: A = |(a, b)|, φ = atan2(b, a).
    t = np.asarray(ts)
    basis = np.stack([np.cos(drive * t), np.sin(drive * t)], axis=1)
    (a, b), residual, *_ = np.linalg.lstsq(basis, x, rcond=None)
    # A method of order p errs by O((ω h)^p) in amplitude and phase; the constant
    # is well below 1 for all of these (a wrong force errs by O(1)).
    tolerance = (OMEGA0 * dt) ** order
    assert abs(np.hypot(a, b) / amplitude - 1) < tolerance
    assert abs(np.arctan2(b, a) - phase) < tolerance
    # The motion is a pure sinusoid at the drive's frequency.
    assert np.sqrt(residual[0] / SAVES) < tolerance * amplitude


@eqx.filter_jit
def _energy_balance(system, force, damping, q0, qdot0, ts):
    trajectory = lagrax.simulate(
        system, q0, qdot0, ts, force=force, rtol=1e-12, atol=1e-12
    )
    energies = jax.vmap(lambda q, v: lagrax.energy(system, q, v))(
        trajectory.q, trajectory.qdot
    )
    power = jax.vmap(lambda q, v: v @ force(0.0, q, v))(trajectory.q, trajectory.qdot)
    dissipation = jax.vmap(lambda v: v @ damping @ v)(trajectory.qdot)
    return energies, power, dissipation


def test_energy_balance_with_dissipation(getkey):
    # A nonlinear system with a full (coupling) damping matrix.
    system = ActuatedDoublePendulum(
        m1=0.6, m2=0.6, l1=0.3, r1=0.3, r2=0.2, I1=0.054, I2=0.024
    )
    d = np.array([[0.08, 0.03], [0.03, 0.05]])
    force = lagrax.RayleighDissipation(d)
    ts = jnp.linspace(0.0, 2.0, 1601)
    energies, power, dissipation = _energy_balance(
        system, force, jnp.asarray(d), jnp.array([2.0, -1.0]), jnp.array([0.0, 3.0]), ts
    )
    # The force's power is −q̇ᵀDq̇ at every state (Rayleigh: Q = −∂R/∂q̇, R = ½q̇ᵀDq̇),
    # D as given (the force holds a factor of it, exact to round-off).
    np.testing.assert_allclose(power, -dissipation, rtol=1e-12, atol=1e-15)
    # dE/dt = q̇·Q along the motion: E(t) − E(0) = −∫ q̇ᵀDq̇ dt, by Simpson's rule
    # over pairs of save intervals (error T h⁴ max|f⁗|/180, with f⁗ ~ f ω⁴ and
    # ω ~ 10 here: 1e-10 of the energy lost).
    h = float(ts[1] - ts[0])
    pairs = np.asarray(dissipation)
    simpson = h / 3 * (pairs[:-2:2] + 4 * pairs[1:-1:2] + pairs[2::2])
    lost = np.cumsum(simpson)
    change = np.asarray(energies[2::2] - energies[0])
    assert lost[-1] > 0.1 * abs(float(energies[0]))  # the test sees real damping
    np.testing.assert_allclose(change, -lost, rtol=0, atol=1e-8 * lost[-1])
    # Hence the energy never increases.
    assert np.all(np.diff(np.asarray(energies)) <= 1e-12)
