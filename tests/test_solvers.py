import functools
from typing import NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lagrax
from lagrax.systems import ChargedParticle, DoublePendulum, HarmonicOscillator, Pendulum

from .helpers import (
    along,
    dot,
    finite_difference_directional,
    random_like,
    SAMPLES,
    simulate_on,
    translation_invariant,
)


SYMPLECTIC = {
    "VariationalMidpoint": lagrax.VariationalMidpoint(),
    "Yoshida4": lagrax.Yoshida4(),
    "GaussLegendre": lagrax.GaussLegendre(),
}
ALL = {
    "VelocityVerlet": (lagrax.VelocityVerlet(), 2),
    "VariationalMidpoint": (lagrax.VariationalMidpoint(), 2),
    "Yoshida4": (lagrax.Yoshida4(), 4),
    "Yoshida4[Verlet]": (lagrax.Yoshida4(base=lagrax.VelocityVerlet()), 4),
    "GaussLegendre": (lagrax.GaussLegendre(), 4),
    "GaussLegendre[3]": (lagrax.GaussLegendre(stages=3), 6),
}
# Coarser steps for higher orders keep the smallest error well above round-off.
STEP_SCALE = {2: 1, 4: 2, 6: 4}


class _Solved(NamedTuple):
    ys: tuple[jax.Array, jax.Array]
    result: diffrax.RESULTS


def _solve(
    lagrangian, solver, y0, t1, dt, *, t0=0.0, saveat=None, force=None, **kwargs
) -> _Solved:
    # Times as arrays, not Python floats: diffeqsolve's jit then traces them
    # instead of compiling once per step size.
    sol = diffrax.diffeqsolve(
        lagrax.LagrangianTerm(lagrangian, force),
        solver,
        t0=jnp.asarray(t0, jnp.float64),
        t1=jnp.asarray(t1, jnp.float64),
        dt0=jnp.asarray(dt, jnp.float64),
        y0=y0,
        saveat=saveat or diffrax.SaveAt(t1=True),
        max_steps=kwargs.pop("max_steps", 200_000),
        **kwargs,
    )
    assert sol.ys is not None
    return _Solved(sol.ys, sol.result)


def _slope(dts, errors):
    return np.polyfit(np.log(dts), np.log(errors), 1)[0]


@pytest.mark.parametrize("name", ALL)
def test_order_harmonic_oscillator(name):
    solver, order = ALL[name]
    system = HarmonicOscillator(mass=1.0, stiffness=4.0)  # ω = 2
    y0 = (jnp.array([1.0]), jnp.array([0.5]))
    t1 = 3.0
    exact = np.cos(2 * t1) + 0.25 * np.sin(2 * t1)
    dts = np.array([0.1, 0.05, 0.025, 0.0125]) * STEP_SCALE[order]
    errors = [
        abs(float(_solve(system, solver, y0, t1, dt).ys[0][-1, 0]) - exact)
        for dt in dts
    ]
    assert abs(_slope(dts, errors) - order) < 0.2, errors


@functools.cache
def _charged_problem():
    """System, initial state, horizon and a tight reference solution, shared by
    every solver (computed once)."""
    system = ChargedParticle(
        magnetic_field=(0.2, -0.5, 1.5), electric_field=(0.3, 0.0, 0.1)
    )
    y0 = (jnp.array([0.1, 0.2, 0.0]), jnp.array([0.5, -0.3, 0.2]))
    t1 = 2.0
    ref = _solve(
        system,
        diffrax.Dopri8(),
        y0,
        t1,
        0.01,
        stepsize_controller=diffrax.PIDController(rtol=1e-13, atol=1e-13),
    ).ys[0][-1]
    return system, y0, t1, ref


@pytest.mark.parametrize(
    "name",
    [
        "VelocityVerlet",
        "VariationalMidpoint",
        "Yoshida4",
        "GaussLegendre",
        "GaussLegendre[3]",
    ],
)
def test_order_velocity_dependent(name):
    # A charged particle: q̈ depends on q̇, so Verlet loses symplecticity, but
    # every solver keeps its order.
    solver, order = ALL[name]
    system, y0, t1, ref = _charged_problem()
    dts = np.array([0.1, 0.05, 0.025]) * STEP_SCALE[order]
    errors = [
        float(jnp.max(jnp.abs(_solve(system, solver, y0, t1, dt).ys[0][-1] - ref)))
        for dt in dts
    ]
    assert abs(_slope(dts, errors) - order) < 0.2, errors


@eqx.filter_jit
def _qp_step_jacobian(solver, lagrangian, h, q, v):
    """Jacobian of one step as a map (q, p) → (q, p), p = ∂L/∂q̇."""
    term = lagrax.LagrangianTerm(lagrangian)
    n = q.shape[0]

    def step(y):
        y0 = (y[:n], y[n:])
        state = solver.init(term, 0.0, h, y0, None)
        (q1, v1), *_ = solver.step(term, 0.0, h, y0, None, state, False)
        return jnp.concatenate([q1, v1])

    def legendre(y):
        return jnp.concatenate([y[:n], lagrax.momentum(lagrangian, y[:n], y[n:])])

    y0 = jnp.concatenate([q, v])
    y1 = step(y0)
    return (
        jax.jacfwd(legendre)(y1)
        @ jax.jacrev(step)(y0)
        @ jnp.linalg.inv(jax.jacfwd(legendre)(y0))
    )


@pytest.mark.parametrize("name", [*SYMPLECTIC, "Tsit5"])
def test_symplectic_one_step_map(name):
    # The double pendulum is non-separable: its mass matrix depends on q.
    system = DoublePendulum()
    q, v = jnp.array([1.3, -0.4]), jnp.array([0.7, 2.1])
    solver = SYMPLECTIC.get(name, diffrax.Tsit5())
    jac = _qp_step_jacobian(solver, system, 0.1, q, v)
    omega = jnp.block(
        [[jnp.zeros((2, 2)), jnp.eye(2)], [-jnp.eye(2), jnp.zeros((2, 2))]]
    )
    defect = float(jnp.max(jnp.abs(jac.T @ omega @ jac - omega)))
    if name == "Tsit5":
        assert defect > 1e-6  # the check can fail: Runge–Kutta is not symplectic
    else:
        assert defect < 1e-11


def test_verlet_symplectic_when_separable():
    system = Pendulum()
    jac = _qp_step_jacobian(
        lagrax.VelocityVerlet(), system, 0.1, jnp.array([1.0]), jnp.array([0.5])
    )
    # In one dimension symplectic means area preserving: det = 1.
    np.testing.assert_allclose(jnp.linalg.det(jac), 1.0, atol=1e-13)


def test_verlet_stability_limit_on_both_sides():
    """Verlet is stable on a linear oscillator exactly for `hω < 2`, the limit its
    step check holds `h²|q̈₁ − q̈₀| / |q₁ − q₀|` to. With ω = 2 that is h = 1: steps
    just below it succeed and conserve Verlet's modified energy
    `I = ½q̇² + ½ω²(1 − (hω)²/4)q²`, which bounds the true energy; a step just
    above it is refused, the first one already (from this state the step's
    defect looks resolved: only the limit on `hω` can refuse it)."""
    omega = 2.0
    system = HarmonicOscillator(stiffness=omega**2)
    q0, qdot0 = jnp.array([0.0]), jnp.array([1.0])
    below, above = 0.95, 1.05  # a limit off by √10 either way flips one of them

    def solve(dt, steps):
        ts = dt * jnp.arange(steps + 1.0)
        return lagrax.simulate(
            system, q0, qdot0, ts, solver=lagrax.VelocityVerlet(), dt0=dt, throw=False
        )

    traj = solve(below, 40)
    assert traj.result == lagrax.RESULTS.successful
    shrink = 1 - (below * omega) ** 2 / 4
    modified = 0.5 * traj.qdot**2 + 0.5 * omega**2 * shrink * traj.q**2
    np.testing.assert_allclose(modified, 0.5, rtol=1e-12)
    # From q₀ = 0, E − E₀ = ½ω²(1 − shrink)q² ≤ ½(1 − shrink)/shrink by I = E₀.
    energy = 0.5 * traj.qdot**2 + 0.5 * omega**2 * traj.q**2
    assert float(jnp.max(energy)) <= 0.5 + 0.5 * (1 - shrink) / shrink + 1e-12
    assert float(jnp.max(jnp.abs(traj.q))) > 1.0  # it did swing out that far

    assert solve(above, 1).result == lagrax.RESULTS.step_too_large


def _energy_drift(system, solver, y0, dt, steps, **kwargs):
    # Through `simulate_on`: the symplectic solves compile once for this test and
    # the other double-pendulum tests below.
    q0, qdot0 = y0
    traj = simulate_on(
        system, q0, qdot0, 0.0, dt * steps, solver=solver, dt0=dt, **kwargs
    )
    energies = along(lagrax.energy, system, traj.q, traj.qdot)
    err = np.abs(np.asarray(energies - lagrax.energy(system, *y0)))
    tenth = SAMPLES // 10
    return err[:tenth].max(), err[-tenth:].max()


@pytest.mark.slow
def test_long_run_energy_double_pendulum():
    system = DoublePendulum()
    y0 = (jnp.array([1.0, 0.5]), jnp.array([0.0, 0.0]))
    dt, steps = 0.05, 100_000
    rk_first, rk_last = _energy_drift(
        system,
        diffrax.Tsit5(),
        y0,
        dt,
        steps,
        stepsize_controller=diffrax.ConstantStepSize(),
    )
    assert rk_last > 5 * rk_first  # explicit Runge–Kutta drifts ...
    for name, solver in SYMPLECTIC.items():
        first, last = _energy_drift(system, solver, y0, dt, steps)
        assert last < 2 * first, name  # ... symplectic solvers do not
        assert last < 1e-3 * 29.4, name


@pytest.mark.slow
def test_long_run_energy_verlet_separable():
    system = Pendulum()
    y0 = (jnp.array([2.5]), jnp.array([0.0]))
    first, last = _energy_drift(system, lagrax.VelocityVerlet(), y0, 0.05, 100_000)
    assert last < 2 * first
    assert last < 0.02 * 9.8  # m g l


@pytest.mark.slow
def test_noether_momentum_exact():
    y0 = (jnp.array([0.0, 0.0, 1.2, 0.3]), jnp.array([0.4, -0.1, -0.2, 0.5]))
    ts = jnp.linspace(0.0, 20.0, 41)
    total = {}
    for name, solver in [
        ("vm", lagrax.VariationalMidpoint()),
        ("gl", lagrax.GaussLegendre()),
        ("rk", diffrax.Tsit5()),
    ]:
        sol = _solve(
            translation_invariant, solver, y0, 20.0, 0.1, saveat=diffrax.SaveAt(ts=ts)
        )
        p = along(lagrax.momentum, translation_invariant, *sol.ys)
        total[name] = np.asarray(p[:, :2] + p[:, 2:])
    vm_error = np.abs(total["vm"] - total["vm"][0]).max()
    rk_error = np.abs(total["rk"] - total["rk"][0]).max()
    assert vm_error < 1e-12
    assert rk_error > 1e3 * vm_error  # a momentum-agnostic method does drift
    assert np.abs(total["gl"] - total["gl"][0]).max() < 1e-12


@pytest.mark.parametrize(
    "name", ["VariationalMidpoint", "Yoshida4", "GaussLegendre", "Verlet-separable"]
)
def test_time_reversibility(name):
    if name == "Verlet-separable":
        system, solver = Pendulum(), lagrax.VelocityVerlet()
        y0 = (jnp.array([1.0]), jnp.array([0.3]))
    else:
        system, solver = DoublePendulum(), SYMPLECTIC[name]
        y0 = (jnp.array([1.0, -0.5]), jnp.array([0.3, 1.2]))
    forward = simulate_on(system, *y0, 0.0, 5.0, solver=solver, dt0=0.05)
    y1 = (forward.q[-1], forward.qdot[-1])
    backward = simulate_on(system, *y1, 5.0, 0.0, solver=solver, dt0=0.05)
    for a, b in zip((backward.q[-1], backward.qdot[-1]), y0):
        np.testing.assert_allclose(a, b, atol=1e-10)
    # ... and the state did move.
    assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(y1, y0)) > 0.1


# The 6th-order Gauss–Legendre variant shares every code path with the default.
@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name in ALL if name != "GaussLegendre[3]"])
def test_gradient_through_solve(name, getkey):
    solver, _ = ALL[name]
    # One hidden layer: the gradient through an implicit step holds third
    # derivatives of the model, whose compilation grows with its depth.
    model = lagrax.MLPLagrangian(2, width=16, depth=1, dtype=jnp.float64, key=getkey())
    ts = jnp.linspace(0.0, 0.5, 6)  # save times on the step grid (dt = 0.05)

    @eqx.filter_jit
    def loss(params, q0):
        # A kinetic term keeps the small learned Lagrangian comfortably regular.
        def lagrangian(q, v):
            return 2.0 * jnp.dot(v, v) + 0.1 * params(q, v)

        traj = lagrax.simulate(
            lagrangian,
            q0,
            jnp.array([0.1, -0.2]),
            ts,
            solver=solver,
            dt0=0.05,
            adjoint=diffrax.RecursiveCheckpointAdjoint(),
        )
        return jnp.sum(traj.q**2) + jnp.sum(jnp.sin(traj.qdot))

    q0 = jnp.array([0.5, -0.3])
    params, static = eqx.partition(model, eqx.is_inexact_array)
    # Both gradients from one backward pass, and the finite differences from the
    # value of the same compiled function: one compilation instead of three.
    value_and_grad = jax.jit(
        jax.value_and_grad(lambda p, x: loss(eqx.combine(p, static), x), argnums=(0, 1))
    )
    _, (grads, grad_q0) = value_and_grad(params, q0)
    dq = jnp.array([0.3, 0.8])
    fd = finite_difference_directional(lambda x: value_and_grad(params, x)[0], q0, dq)
    np.testing.assert_allclose(jnp.dot(grad_q0, dq), fd, rtol=1e-6)

    direction = random_like(getkey(), params)
    fd_params = finite_difference_directional(
        lambda p: value_and_grad(p, q0)[0], params, direction
    )
    np.testing.assert_allclose(dot(grads, direction), fd_params, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["VariationalMidpoint", "GaussLegendre"])
def test_vmap_over_initial_conditions(name):
    solver = SYMPLECTIC[name]
    system = DoublePendulum()
    q0s = jnp.array([[0.5, 0.1], [1.0, -0.2], [2.0, 0.3]])

    @jax.jit
    @jax.vmap
    def run(q0):
        traj = simulate_on(system, q0, jnp.zeros(2), 0.0, 1.0, solver=solver, dt0=0.01)
        return traj.q

    batched = run(q0s)
    for i in range(3):
        single = simulate_on(
            system, q0s[i], jnp.zeros(2), 0.0, 1.0, solver=solver, dt0=0.01
        ).q
        np.testing.assert_allclose(batched[i], single, atol=1e-12)


def test_slow_chord_iteration_hands_over_to_newton():
    # At dt 0.2 the double pendulum's stage equations make the chord iteration
    # contract by about 0.2 per step: it used to spend the default budget of 20
    # and fail around t = 30 (step 148), where Newton with fresh Jacobians
    # converges in a few iterations. Forecasting the chord's error at the end of
    # the budget (Hairer & Wanner) switches to Newton in time.
    system = DoublePendulum()
    y0 = (jnp.array([1.0, 0.5]), jnp.zeros(2))
    sol = _solve(system, lagrax.GaussLegendre(), y0, 40.0, 0.2, throw=False)
    assert sol.result == diffrax.RESULTS.successful
    drift = lagrax.energy(system, sol.ys[0][-1], sol.ys[1][-1]) / lagrax.energy(
        system, *y0
    )
    assert abs(float(drift) - 1) < 1e-2


@pytest.mark.parametrize("name", ["VariationalMidpoint", "GaussLegendre"])
def test_newton_failure_reports_result_code(name):
    system = DoublePendulum()
    y0 = (jnp.array([1.0, 0.5]), jnp.array([0.0, 3.0]))
    # One Newton iteration cannot converge on a nonlinear problem.
    solver = type(SYMPLECTIC[name])(max_steps=1)
    sol = _solve(system, solver, y0, 1.0, 0.1, throw=False)
    assert sol.result == diffrax.RESULTS.nonlinear_max_steps_reached
    with pytest.raises(Exception, match="[Nn]onlinear"):
        _solve(system, solver, y0, 1.0, 0.1)


@pytest.mark.slow
def test_float32_variational():
    system = DoublePendulum()
    y0 = (jnp.array([1.0, 0.5], jnp.float32), jnp.array([0.0, 0.0], jnp.float32))
    for solver in (
        lagrax.VariationalMidpoint(),
        lagrax.Yoshida4(),
        lagrax.VelocityVerlet(),
        lagrax.GaussLegendre(),
    ):
        traj = simulate_on(system, y0[0], y0[1], 0.0, 2.0, solver=solver, dt0=0.01)
        assert traj.q.dtype == jnp.float32
        # (The float64 references are the solves other tests compile.)
        ref = simulate_on(
            system,
            y0[0].astype(jnp.float64),
            y0[1].astype(jnp.float64),
            0.0,
            2.0,
            solver=solver,
            dt0=0.01,
        )
        np.testing.assert_allclose(traj.q, ref.q, atol=1e-4)


@pytest.mark.slow
def test_gauss_legendre_one_stage_is_midpoint():
    system = DoublePendulum()
    y0 = (jnp.array([1.0, -0.5]), jnp.array([0.3, 1.2]))
    one_stage = simulate_on(
        system, *y0, 0.0, 2.0, solver=lagrax.GaussLegendre(stages=1), dt0=0.05
    )
    midpoint = simulate_on(
        system, *y0, 0.0, 2.0, solver=lagrax.VariationalMidpoint(), dt0=0.05
    )
    for a, b in [(one_stage.q, midpoint.q), (one_stage.qdot, midpoint.qdot)]:
        np.testing.assert_allclose(a, b, atol=1e-11)  # Newton tolerance, not order
    assert float(jnp.max(jnp.abs(midpoint.q[-1] - y0[0]))) > 0.1


def _forced_oscillator_exact(t, zeta):
    """q̈ = −q − 2ζq̇ + cos 2t from rest at q = 0, solved by hand."""
    amp_cos = -3 / (9 + 16 * zeta**2)
    amp_sin = -4 * zeta * amp_cos / 3
    omega = np.sqrt(1 - zeta**2)
    c = -amp_cos
    d = (zeta * c - 2 * amp_sin) / omega
    q = np.exp(-zeta * t) * (c * np.cos(omega * t) + d * np.sin(omega * t))
    qdot = np.exp(-zeta * t) * (
        (omega * d - zeta * c) * np.cos(omega * t)
        - (omega * c + zeta * d) * np.sin(omega * t)
    )
    return (
        q + amp_cos * np.cos(2 * t) + amp_sin * np.sin(2 * t),
        qdot - 2 * amp_cos * np.sin(2 * t) + 2 * amp_sin * np.cos(2 * t),
    )


@pytest.mark.parametrize("name", ["VariationalMidpoint", "GaussLegendre"])
def test_order_with_time_dependent_force(name):
    # The discrete Lagrange–d'Alembert principle: a dissipative, time-dependent
    # force keeps each method's order only if it is evaluated at the right
    # (physical) times, forward and backward in time.
    solver, order = ALL[name]
    zeta = 0.1

    def force(t, q, qdot):
        return -2 * zeta * qdot + jnp.cos(2 * t) * jnp.ones_like(q)

    t1 = 4.0
    end = tuple(jnp.array([x]) for x in _forced_oscillator_exact(t1, zeta))
    dts = np.array([0.1, 0.05, 0.025]) * STEP_SCALE[order]
    forward, backward = [], []
    for dt in dts:
        sol = _solve(
            HarmonicOscillator(),
            solver,
            (jnp.zeros(1), jnp.zeros(1)),
            t1,
            dt,
            force=force,
        )
        forward.append(abs(float(sol.ys[0][-1, 0]) - float(end[0][0])))
        sol = _solve(HarmonicOscillator(), solver, end, 0.0, -dt, t0=t1, force=force)
        backward.append(abs(float(sol.ys[0][-1, 0])))
    assert abs(_slope(dts, forward) - order) < 0.2, forward
    assert abs(_slope(dts, backward) - order) < 0.2, backward


def test_newton_jacobians_from_the_jet_match_autodiff(getkey):
    # The variational solvers assemble their Newton Jacobians from one jet of L
    # per stage: by hand from the chain rule, so checked against forward-mode
    # autodiff of the residuals, with a velocity- and time-dependent force, for
    # a network (its own jet) and for a plain Lagrangian (autodiff Hessian).
    from lagrax._solver.gauss_legendre import _gauss_legendre_tableau, StageEquations
    from lagrax._solver.variational import MidpointEquations

    network = lagrax.MLPLagrangian(2, width=16, depth=2, key=getkey())
    n = 2

    def force(t, q, qdot):
        return -0.3 * qdot * q[::-1] + jnp.sin(t) * q**2

    q0, p0, x = (random_like(getkey(), jnp.zeros(3 * n)) for _ in range(3))
    q0, p0 = q0[:n], p0[:n]
    h = jnp.asarray(0.1)
    for lagrangian in (network, DoublePendulum()):
        term = lagrax.LagrangianTerm(lagrangian, force=force)
        c, a, _ = (jnp.asarray(x) for x in _gauss_legendre_tableau(3))
        equations = [
            (StageEquations(term, 0.3 + c * h, q0, p0, h, a), x),
            (MidpointEquations(term, jnp.asarray(0.3), q0, p0, h), q0 + h * x[:n]),
        ]
        for eq, at in equations:

            @eqx.filter_jit
            def both(eq, at):
                return eq.linearize(at), (eq.residual(at), jax.jacfwd(eq.residual)(at))

            (residual, jacobian), (expected_residual, expected) = both(eq, at)
            np.testing.assert_allclose(residual, expected_residual, rtol=1e-12)
            np.testing.assert_allclose(jacobian, expected, rtol=1e-10, atol=1e-12)


def test_network_steps_through_its_jet_as_through_autodiff(getkey):
    # A network's jet (gradients and Newton Jacobians) and generic autodiff of
    # the same function must give the same steps, up to the Newton tolerance
    # (`VariationalMidpoint` shares the code paths: its Jacobian is checked above).
    network = lagrax.MLPLagrangian(2, width=16, depth=2, key=getkey())
    stable = lagrax.LagrangianSum.of(
        (network, 1.0), (lambda q, qdot: dot(qdot, qdot) - 4 * dot(q, q), 1.0)
    )
    y0 = (jnp.array([0.5, -0.2]), jnp.array([0.1, 0.3]))
    solver = lagrax.GaussLegendre()
    fast = _solve(stable, solver, y0, 1.0, 0.05)
    plain = _solve(lambda q, qdot: stable(q, qdot), solver, y0, 1.0, 0.05)
    for a, b in zip(fast.ys, plain.ys):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert float(jnp.max(jnp.abs(fast.ys[0][-1] - y0[0]))) > 0.05


def test_solver_errors():
    with pytest.raises(TypeError, match="base"):
        lagrax.Yoshida4(base=diffrax.Tsit5())  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="max_steps"):
        lagrax.VariationalMidpoint(max_steps=0)
    with pytest.raises(ValueError, match="stages"):
        lagrax.GaussLegendre(stages=0)
    term = diffrax.ODETerm(lambda t, y, args: (y[1], -y[0]))
    y0 = (jnp.array([1.0]), jnp.array([0.0]))
    with pytest.raises(ValueError, match="LagrangianTerm"):
        diffrax.diffeqsolve(term, lagrax.VariationalMidpoint(), 0.0, 1.0, 0.1, y0)
    # Verlet works with any (q̇, q̈) term
    sol = diffrax.diffeqsolve(term, lagrax.VelocityVerlet(), 0.0, 1.0, 0.001, y0)
    assert sol.ys is not None
    np.testing.assert_allclose(sol.ys[0][-1], [np.cos(1.0)], atol=1e-6)
    with pytest.raises((ValueError, RuntimeError), match="adaptive"):
        diffrax.diffeqsolve(
            lagrax.LagrangianTerm(HarmonicOscillator()),
            lagrax.VariationalMidpoint(),
            0.0,
            1.0,
            0.1,
            y0,
            stepsize_controller=diffrax.PIDController(rtol=1e-3, atol=1e-3),
        )
