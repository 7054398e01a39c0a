"""`lagrax.ReversibleAdjoint`: gradients through symmetric solvers run backwards,
against the checkpointed adjoint that stores every step."""

from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lagrax


class _Pendulum(lagrax.AbstractLagrangian):
    """A pendulum with a differentiable stiffness g/l."""

    stiffness: jax.Array

    def __call__(self, q, qdot):
        return 0.5 * jnp.sum(qdot**2) + self.stiffness * jnp.sum(jnp.cos(q))


def _model(key):
    # A regular Lagrangian with parameters everywhere: the double pendulum plus a
    # small network (alone, an untrained network's mass matrix may be singular).
    network = lagrax.MLPLagrangian(2, width=8, depth=1, key=key)
    return lagrax.systems.DoublePendulum() + 0.1 * network


def _flat(tree):
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def test_gradients_match_the_checkpointed_adjoint(getkey):
    """Saves at t0, on the step grid, between steps and at t1: the reversed
    solve's gradients (parameters and initial state) are those of storing every
    step, to round-off."""
    model, q0, qdot0 = _model(getkey()), jnp.array([0.4, -0.3]), jnp.array([0.2, 0.5])
    steps, dt = 30, 0.05
    saveat = diffrax.SaveAt(t0=True, t1=True, ts=jnp.array([0.013, 0.5, 0.77, 1.0]))
    weights = jnp.sin(jnp.arange(1.0, 13.0)).reshape(6, 2)

    def loss(adjoint):
        def scalar(model_q0):
            model, q0 = model_q0
            sol = diffrax.diffeqsolve(
                lagrax.LagrangianTerm(model),
                lagrax.VariationalMidpoint(),
                0.0,
                steps * dt,
                dt,
                (q0, qdot0),
                saveat=saveat,
                adjoint=adjoint,
                max_steps=steps + 1,
            )
            assert sol.ys is not None
            return jnp.sum(weights * sol.ys[0]) + jnp.sum(sol.ys[1] ** 3)

        return eqx.filter_jit(eqx.filter_grad(scalar))((model, q0))

    expected = _flat(loss(diffrax.RecursiveCheckpointAdjoint(checkpoints=steps + 1)))
    got = _flat(loss(lagrax.ReversibleAdjoint()))
    # every parameter moves the motion but the network's output bias
    assert np.count_nonzero(expected) == expected.size - 1
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_composition_and_the_reconstruction_check():
    """Yoshida4 over VelocityVerlet (symmetric for the pendulum's q̈(q)) in float32:
    the gradient matches the checkpointed one. A tolerance below what the
    reconstruction can reach makes the backward pass raise or, with `throw=False`,
    return NaN gradients: never a wrong number."""
    solver = lagrax.Yoshida4(base=lagrax.VelocityVerlet())
    ts = jnp.linspace(0.0, 5.0, 51, dtype=jnp.float32)
    qdot0 = jnp.zeros(1, jnp.float32)

    def loss(adjoint, argnums=(0, 1)):
        def final(stiffness, q0):
            system = _Pendulum(stiffness)
            traj = lagrax.simulate(
                system,
                q0,
                qdot0,
                ts,
                solver=solver,
                dt0=0.1,
                adjoint=adjoint,
            )
            return jnp.sum(traj.q**2)

        return jax.jit(jax.grad(final, argnums))

    x = (jnp.asarray(1.3, jnp.float32), jnp.array([1.0], jnp.float32))
    expected = _flat(loss(diffrax.RecursiveCheckpointAdjoint(checkpoints=51))(*x))
    got = _flat(loss(lagrax.ReversibleAdjoint())(*x))
    np.testing.assert_allclose(got, expected, rtol=2e-4)
    # The parameters' gradient alone (the initial state's, where the check could
    # also sit, is then never computed).
    strict = lagrax.ReversibleAdjoint(tolerance=1e-30)
    with pytest.raises(Exception, match="did not recover the initial state"):
        jax.block_until_ready(loss(strict, argnums=0)(*x))
    quiet = lagrax.ReversibleAdjoint(tolerance=1e-30, throw=False)
    assert np.all(np.isnan(_flat(loss(quiet)(*x))))


def test_refuses_what_it_cannot_reverse():
    system = lagrax.systems.Pendulum()
    ts = jnp.linspace(0.0, 1.0, 11)
    adjoint = lagrax.ReversibleAdjoint()

    def run(**kwargs):
        lagrax.simulate(
            system, jnp.ones(1), jnp.zeros(1), ts, adjoint=adjoint, **kwargs
        )

    with pytest.raises(ValueError, match="symmetric lagrax solver.*Tsit5"):
        run()
    with pytest.raises(ValueError, match="ConstantStepSize.*PIDController"):
        run(
            solver=lagrax.VariationalMidpoint(),
            dt0=0.1,
            stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-6),
        )
    with pytest.raises(ValueError, match="steps"):
        diffrax.diffeqsolve(
            lagrax.LagrangianTerm(system),
            lagrax.VariationalMidpoint(),
            0.0,
            1.0,
            0.1,
            (jnp.ones(1), jnp.zeros(1)),
            saveat=diffrax.SaveAt(steps=True),
            adjoint=adjoint,
        )
    with pytest.raises(ValueError, match="tolerance"):
        lagrax.ReversibleAdjoint(tolerance=0.0)


def _trace_reversed_solve(lagrangian, solver, dof, force=None):
    """Trace (`jax.eval_shape`: nothing compiles or runs) a solve under
    `ReversibleAdjoint`, whose checks run when it is traced."""

    def final(q0):
        sol = diffrax.diffeqsolve(
            lagrax.LagrangianTerm(lagrangian, force=force),
            solver,
            0.0,
            1.0,
            0.1,
            (q0, jnp.zeros(dof)),
            adjoint=lagrax.ReversibleAdjoint(),
        )
        assert sol.ys is not None
        return sol.ys[0]

    return jax.eval_shape(final, jnp.full(dof, 0.3))


def test_refuses_verlet_where_its_step_is_not_reversible():
    """VelocityVerlet is symmetric only where q̈ does not depend on q̇: refused with
    a ValueError when the solve is traced, for a Coriolis term (the double
    pendulum, under Yoshida4), a relativistic one and a dissipative force;
    accepted for L = ½q̇ᵀMq̇ − V(q) (the pendulum above; a spring network here)."""
    verlet = lagrax.VelocityVerlet()
    refused = [
        (lagrax.systems.DoublePendulum(), lagrax.Yoshida4(base=verlet), 2, None),
        (lagrax.systems.RelativisticParticle(g=1.0), verlet, 1, None),
        (
            _Pendulum(jnp.asarray(1.0)),
            verlet,
            1,
            lagrax.RayleighDissipation(jnp.ones(1)),
        ),
    ]
    for lagrangian, solver, dof, force in refused:
        with pytest.raises(ValueError, match="VelocityVerlet is symmetric.*q̇"):
            _trace_reversed_solve(lagrangian, solver, dof, force)
    springs = lagrax.systems.SpringNetwork.chain(3)
    assert _trace_reversed_solve(springs, verlet, 6).shape == (1, 6)

    # The same test through rollout_loss's batched solve (a BatchTerm).
    ts = jnp.linspace(0.0, 0.2, 3)
    data = lagrax.TrajectoryData(ts, jnp.ones((2, 3, 1)), jnp.zeros((2, 3, 1)))
    options: dict[str, Any] = dict(
        solver=verlet, dt0=0.1, adjoint=lagrax.ReversibleAdjoint()
    )
    oscillator = lagrax.systems.HarmonicOscillator()
    loss = jax.eval_shape(lambda: lagrax.rollout_loss(oscillator, data, **options))
    assert loss.shape == ()
    relativistic = lagrax.systems.RelativisticParticle(g=1.0)
    with pytest.raises(ValueError, match="VelocityVerlet is symmetric.*q̇"):
        jax.eval_shape(lambda: lagrax.rollout_loss(relativistic, data, **options))


def test_the_diffrax_internals_reversible_adjoint_reads():
    """What lagrax reads of Diffrax without a public API: `ConstantStepSize`'s
    controller state `(steps done, steps, t0, t1)` (`ReversibleAdjoint`'s step
    times) and the wrapped term's `.term` (`_solver.base.unwrap`). A Diffrax that
    changes them fails here (pyproject.toml caps the tested minor version); the
    solve state's `save_state.ys`, the third, fails the gradient tests above."""
    controller = diffrax.ConstantStepSize()
    # A ConstantStepSize reads neither the terms nor the vector field (`func`).
    t_next, state = controller.init(
        None,
        jnp.asarray(0.0),  # arrays: Equinox 0.13.0's `nextafter` takes no float
        jnp.asarray(1.0),
        None,
        jnp.asarray(0.3),
        None,
        None,  # pyright: ignore[reportArgumentType]
        None,
    )
    done, steps, t0, t1 = state
    assert (int(done), int(steps), float(t0), float(t1)) == (1, 4, 0.0, 1.0)
    assert float(t_next) == 0.3

    seen = []

    class Recording(lagrax.VariationalMidpoint):
        def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
            seen.append(terms)
            return super().step(terms, t0, t1, y0, args, solver_state, made_jump)

    term = lagrax.LagrangianTerm(lagrax.systems.HarmonicOscillator())
    y0 = (jnp.array([1.0]), jnp.array([0.0]))
    sol = diffrax.diffeqsolve(
        term, Recording(), 0.0, 0.2, 0.1, y0, saveat=diffrax.SaveAt(t1=True)
    )
    assert seen and all(
        isinstance(getattr(t, "term", None), lagrax.LagrangianTerm) for t in seen
    )
    assert sol.ys is not None
    assert sol.ys[0].shape == (1, 1)
