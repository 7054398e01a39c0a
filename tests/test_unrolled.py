"""`lagrax.Unrolled`: Diffrax's explicit Runge–Kutta steps with their stages written
out, and the rollout losses that step them so."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lagrax
from lagrax.systems import DoublePendulum, HarmonicOscillator


# Tsit5's tableau is first-same-as-last (its last stage is the next step's first)
# and solution-same-as-last; Ralston's is neither: `Unrolled` steps both to the
# numbers Diffrax's loop gives, and through jumps, where Tsit5 evaluates its first
# stage again.
@pytest.mark.parametrize(
    "solver, adaptive",
    [(diffrax.Tsit5(), False), (diffrax.Tsit5(), True), (diffrax.Ralston(), False)],
    ids=["Tsit5", "Tsit5-adaptive-jumps", "Ralston"],
)
def test_unrolled_steps_as_its_solver(solver, adaptive):
    # Solutions, step counts, and the gradient with respect to the parameters and
    # the initial states, vmapped.
    model = DoublePendulum(m2=1.3)
    y0 = (jnp.array([[1.0, 0.5], [0.3, -0.2]]), jnp.array([[0.2, -0.3], [0.0, 0.4]]))
    controller = (
        diffrax.ClipStepSizeController(
            diffrax.PIDController(rtol=1e-4, atol=1e-4), jump_ts=jnp.array([0.35, 0.6])
        )
        if adaptive
        else diffrax.ConstantStepSize()
    )

    def end(solver, model, y0):
        sol = diffrax.diffeqsolve(
            lagrax.LagrangianTerm(model),
            solver,
            0.0,
            1.0,
            0.05,
            y0,
            stepsize_controller=controller,
            saveat=diffrax.SaveAt(ts=jnp.linspace(0.0, 1.0, 7)),
            max_steps=1000,
        )
        assert sol.ys is not None and sol.stats["num_steps"] is not None
        return sol.ys, sol.stats["num_steps"]

    def loss(solver, model, y0):
        ys, steps = jax.vmap(lambda y: end(solver, model, y))(y0)
        return jnp.sum(ys[0] ** 2) + jnp.sum(jnp.sin(ys[1])), steps

    expected = eqx.filter_value_and_grad(loss, has_aux=True)
    (value, steps), grads = expected(lagrax.Unrolled(solver), model, y0)
    (expected_value, expected_steps), expected_grads = expected(solver, model, y0)
    assert (steps == expected_steps).all()
    if not adaptive:
        assert (steps == 20).all()
    # Round-off apart (sums for matrix products), which adaptive steps amplify.
    np.testing.assert_allclose(value, expected_value, rtol=1e-11)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(expected_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_rollout_loss_gradient_runs_each_evaluation_forward_twice():
    # Counted at run time: a checkpointing adjoint runs each vector-field
    # evaluation of a step forward in the solve and again in the backward pass
    # (`init`'s first stage, outside the loop, once). Diffrax's stage loop,
    # checkpointed too, adds a third (183 here with Diffrax 0.7); written out, a
    # step's stages are differentiated as one function. `rollout_loss` steps its
    # explicit solvers this way.
    calls = [0]

    def counted(q, qdot):
        jax.debug.callback(lambda _: calls.__setitem__(0, calls[0] + 1), q)
        return HarmonicOscillator()(q, qdot)

    class Counted(lagrax.AbstractLagrangian):
        k: jax.Array

        def __call__(self, q, qdot):
            return self.k * counted(q, qdot)

    data = lagrax.trajectory_data(
        HarmonicOscillator(), jnp.ones((2, 1)), jnp.zeros((2, 1)), jnp.arange(3.0) / 2
    )

    def rollout_loss(model, solver):
        return lagrax.rollout_loss(
            model, data, solver=solver, dt0=0.1, max_steps=10,
            stepsize_controller=diffrax.ConstantStepSize(),
        )  # fmt: skip

    def count(fn, *args):
        calls[0] = 0
        out = jax.block_until_ready(fn(Counted(jnp.array(1.1)), *args))
        jax.effects_barrier()
        assert all(jnp.isfinite(x).all() for x in jax.tree.leaves(out))
        return calls[0]

    forward = count(eqx.filter_jit(rollout_loss), diffrax.Tsit5())
    # Per trajectory: six new stages in each of 10 steps, the first at the start.
    assert forward == 2 * (6 * 10 + 1)
    gradient = count(eqx.filter_jit(eqx.filter_grad(rollout_loss)), diffrax.Tsit5())
    assert gradient == 2 * forward - 2


def test_unrolled_refuses_other_solvers():
    for solver in [
        diffrax.Kvaerno5(),
        diffrax.HalfSolver(diffrax.Tsit5()),
        diffrax.Euler(),
        lagrax.GaussLegendre(),
    ]:
        with pytest.raises(TypeError, match="`solver` must be an explicit"):
            lagrax.Unrolled(solver)  # pyright: ignore[reportArgumentType]
