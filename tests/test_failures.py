"""Failures say what happened: result codes, clear errors, no silent garbage."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lagrax
from lagrax._misc import check_state
from lagrax.systems import DoublePendulum, HarmonicOscillator

from .helpers import simulate_on


SOLVERS = {
    "VariationalMidpoint": lagrax.VariationalMidpoint(),
    "GaussLegendre": lagrax.GaussLegendre(),
    "VelocityVerlet": lagrax.VelocityVerlet(),
    "Yoshida4": lagrax.Yoshida4(),
}


@pytest.mark.parametrize("name", SOLVERS)
def test_fixed_step_far_too_large_fails(name):
    # From rest at (2, 1) (energy 2.86), dt0 = 10 gave final energies of 24 to
    # 7957 with no warning; ω ≈ 3 here, so such steps cannot follow the motion.
    # Through `simulate_on`: in a full run the raising solves below are the ones
    # tests/test_solvers.py compiles.
    q0, qdot0 = jnp.array([2.0, 1.0]), jnp.zeros(2)
    solver = SOLVERS[name]
    traj = simulate_on(
        DoublePendulum(), q0, qdot0, 0.0, 100.0, solver=solver, dt0=10.0, throw=False
    )
    assert traj.result != lagrax.RESULTS.successful
    assert traj.result in (
        lagrax.RESULTS.newton_failure,
        lagrax.RESULTS.step_too_large,
        lagrax.RESULTS.singular_mass_matrix,
    )
    # A blow-up is named as one, not as a singular mass matrix.
    if name == "VelocityVerlet":
        assert traj.result == lagrax.RESULTS.step_too_large
    with pytest.raises(Exception, match="dt0"):
        simulate_on(DoublePendulum(), q0, qdot0, 0.0, 100.0, solver=solver, dt0=10.0)


@pytest.mark.parametrize("name", ["VariationalMidpoint", "GaussLegendre"])
def test_failed_implicit_step_is_inf_and_stepping_on_is_cheap(name):
    # Under `vmap` a failed solve keeps stepping (its results discarded) while the
    # others go on. From the state it failed at, each such step spent the whole
    # Newton budget, a fresh Jacobian per iteration, and a batch of 40 rollouts
    # with one failure ran 8× slower. A failed step's state is inf instead, from
    # which the Newton solves stop at once. Counted: evaluations of L at run time.
    calls = [0]

    def lagrangian(q, qdot):
        jax.debug.callback(lambda: calls.__setitem__(0, calls[0] + 1))
        return DoublePendulum()(q, qdot)

    def step(solver, t0, t1, y0, state):
        calls[0] = 0
        out = eqx.filter_jit(solver.step)(term, t0, t1, y0, None, state, False)
        jax.effects_barrier()
        return out, calls[0]

    solver, term = SOLVERS[name], lagrax.LagrangianTerm(lagrangian)
    y0 = (jnp.array([2.0, 1.0]), jnp.zeros(2))
    state = solver.init(term, 0.0, 0.01, y0, None)
    (*_, ok), ok_calls = step(solver, 0.0, 0.01, y0, state)
    assert ok == diffrax.RESULTS.successful  # a solver's own result code
    # dt 10 where ω ≈ 3: the step fails (as in the test above).
    (y1, _, _, state, failed), _ = step(solver, 0.0, 10.0, y0, state)
    assert failed != diffrax.RESULTS.successful
    assert np.all(np.isinf(np.concatenate(y1)))
    (y2, *_), again_calls = step(solver, 10.0, 20.0, y1, state)
    assert np.all(~np.isfinite(np.concatenate(y2)))
    assert again_calls < ok_calls


def _nearly_singular(q, qdot):
    # float32: ∂²L/∂q̇² = diag(1, 1e-9), singular by lagrax's criterion.
    return (0.5 * qdot[0] ** 2 + 0.5e-9 * qdot[1] ** 2 + jnp.sum(jnp.cos(q))).astype(
        q.dtype
    )


@pytest.mark.parametrize("name", SOLVERS)
def test_one_singularity_criterion_for_every_path(name):
    q0 = jnp.array([0.3, -0.2], jnp.float32)
    qdot0 = jnp.array([0.1, 0.2], jnp.float32)
    assert bool(lagrax.mass_matrix_info(_nearly_singular, q0, qdot0).singular)
    ts = jnp.array([0.0, 1.0], jnp.float32)
    traj = lagrax.simulate(
        _nearly_singular, q0, qdot0, ts, solver=SOLVERS[name], dt0=0.1, throw=False
    )
    assert traj.result == lagrax.RESULTS.singular_mass_matrix
    assert not np.all(np.isfinite(traj.q[-1]))  # the unreached sample


def test_throw_false_never_raises_for_a_singular_mass_matrix():
    # The mass matrix 1 − q² vanishes at q = ±1, where the motion goes.
    def lagrangian(q, qdot):
        return 0.5 * jnp.sum((1 - q**2) * qdot**2) + jnp.sum(q)

    q0, qdot0 = jnp.array([0.0]), jnp.array([0.0])
    ts = jnp.linspace(0.0, 5.0, 6)
    for solver, dt0 in ((lagrax.VariationalMidpoint(), 0.01), (diffrax.Tsit5(), None)):
        traj = lagrax.simulate(
            lagrangian,
            q0,
            qdot0,
            ts,
            solver=solver,
            dt0=dt0,
            throw=False,
            max_steps=2000,
        )
        assert traj.result != lagrax.RESULTS.successful
        assert np.isfinite(traj.q[0, 0]) and not np.isfinite(traj.q[-1, 0])
    # Near the singular state the Newton iteration stops converging first.
    with pytest.raises(Exception, match="singular|Newton"):
        lagrax.simulate(
            lagrangian, q0, qdot0, ts, solver=lagrax.VariationalMidpoint(), dt0=0.01
        )


@pytest.mark.parametrize(
    "dt0", [float("inf"), float("nan"), -0.1, 0.0, jnp.array([0.1, 0.1])]
)
def test_bad_dt0_is_a_clear_error(dt0):
    # (An array dt0 is caught by the runtime type checks the tests switch on.)
    with pytest.raises((ValueError, TypeError), match="dt0"):
        lagrax.simulate(
            HarmonicOscillator(),
            jnp.ones(1),
            jnp.zeros(1),
            jnp.linspace(0, 1, 3),
            solver=lagrax.VelocityVerlet(),
            dt0=dt0,
        )


@pytest.mark.parametrize(
    "ts", [jnp.array([0.0, jnp.nan, 1.0]), jnp.array([0.0, 1.0, 0.5])]
)
def test_bad_times_are_a_clear_error(ts):
    with pytest.raises(ValueError, match="ts"):
        lagrax.simulate(HarmonicOscillator(), jnp.ones(1), jnp.zeros(1), ts)


@pytest.mark.parametrize("name", SOLVERS)
def test_backwards_in_time(name):
    # q(t) = cos t: integrating from t = 0 back to t = −1 lands on cos(−1).
    ts = jnp.linspace(0.0, -1.0, 5)
    traj = lagrax.simulate(
        HarmonicOscillator(),
        jnp.ones(1),
        jnp.zeros(1),
        ts,
        solver=SOLVERS[name],
        dt0=0.01,
    )
    np.testing.assert_allclose(traj.ts, ts)
    np.testing.assert_allclose(traj.q[:, 0], np.cos(ts), atol=1e-4)
    np.testing.assert_allclose(traj.qdot[:, 0], -np.sin(ts), atol=1e-4)


def test_nan_acceleration_has_nan_gradient():
    # L = s·q·q̇ has mass matrix 0: no acceleration, and no gradient either.
    def acceleration_sum(s, q, qdot):
        lagrangian = lambda q, qdot: s * jnp.sum(q * qdot)  # noqa: E731
        return jnp.sum(lagrax.acceleration(lagrangian, q, qdot, throw=False))

    value, grad = jax.value_and_grad(acceleration_sum)(1.0, jnp.ones(2), jnp.ones(2))
    assert np.isnan(value) and np.isnan(grad)


def test_messages_name_the_real_cause():
    system = HarmonicOscillator()
    q32 = jnp.ones(1, jnp.float32)
    with pytest.raises(TypeError, match="`ts` has dtype float64"):
        lagrax.simulate(system, q32, q32, jnp.linspace(0.0, 1.0, 3))
    # (The runtime type checks the tests switch on catch a list first.)
    with pytest.raises(TypeError, match="JAX or NumPy array"):
        check_state([1.0], jnp.zeros(1))
    with pytest.raises(ValueError, match="rtol"):
        lagrax.simulate(
            system, jnp.ones(1), jnp.zeros(1), jnp.ones(2).cumsum(), rtol=-1.0
        )
    with pytest.raises(ValueError, match="cannot both be 0"):
        lagrax.simulate(
            system, jnp.ones(1), jnp.zeros(1), jnp.ones(2).cumsum(), rtol=0.0, atol=0.0
        )
    with pytest.raises(ValueError, match="rtol"):
        lagrax.VariationalMidpoint(rtol=0.0)


def test_models_jit_and_grad_the_equinox_way(getkey):
    # An MLPLagrangian holds its activation function, a non-array leaf: compile
    # and differentiate with Equinox's filtered transformations.
    model = lagrax.MLPLagrangian(2, width=8, depth=1, key=getkey())
    q, qdot = jnp.array([0.1, 0.2]), jnp.array([0.3, -0.1])
    np.testing.assert_allclose(
        eqx.filter_jit(lagrax.acceleration)(model, q, qdot),
        lagrax.acceleration(model, q, qdot),
        rtol=1e-12,
    )
    grads = eqx.filter_grad(lambda m: jnp.sum(lagrax.acceleration(m, q, qdot)))(model)
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))


def test_from_diffrax_names_a_singular_mass_matrix_met_by_diffeqsolve():
    """Calling `diffrax.diffeqsolve` directly, a lagrax solver can only say Diffrax's
    `singular` (Lineax's message); `lagrax.from_diffrax` reads it as the singular
    mass matrix it is (twice changes nothing), and the other codes likewise."""

    def lagrangian(q, qdot):  # ∂²L/∂q̇² = diag(1, 0)
        return 0.5 * qdot[0] ** 2 + jnp.sum(jnp.cos(q))

    # The explicit solver compiles fastest; with `throw=False` its term makes the
    # acceleration NaN, which it reports as `singular`, as the implicit solvers do
    # for their Newton Jacobians.
    sol = diffrax.diffeqsolve(
        lagrax.LagrangianTerm(lagrangian, throw=False),
        lagrax.VelocityVerlet(),
        0.0,
        0.3,
        0.1,
        (jnp.array([0.3, 0.2]), jnp.array([0.1, 0.0])),
        throw=False,
    )
    assert sol.result == diffrax.RESULTS.singular
    assert "linear solver" in diffrax.RESULTS[sol.result]
    result = lagrax.from_diffrax(sol.result)
    assert result == lagrax.RESULTS.singular_mass_matrix
    assert lagrax.from_diffrax(result) == result
    with pytest.raises(Exception, match="mass matrix ∂²L/∂q̇² is singular"):
        result.error_if(sol.ys, result != lagrax.RESULTS.successful)
    # Under jit, each translation (Equinox types inherited members as their base's).
    translations = [
        (diffrax.RESULTS.successful, lagrax.RESULTS.successful),
        (diffrax.RESULTS.nonlinear_max_steps_reached, lagrax.RESULTS.newton_failure),
        (diffrax.RESULTS.nonlinear_divergence, lagrax.RESULTS.step_too_large),
        (diffrax.RESULTS.max_steps_reached, lagrax.RESULTS.max_steps_reached),
    ]
    codes, expected = zip(*translations)
    read = jax.jit(lambda codes: [lagrax.from_diffrax(code) for code in codes])(codes)
    assert all(bool(got == want) for got, want in zip(read, expected))
