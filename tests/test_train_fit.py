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
from lagrax.systems import HarmonicOscillator


def tree_allclose(x, y, *, rtol, atol) -> bool:
    # (helpers.tree_allclose compares `eqx.tree_equal(...)`, an Array, with `is True`)
    return bool(eqx.tree_equal(x, y, typematch=True, rtol=rtol, atol=atol))


def _oscillator_accelerations(num, key, half_width=2.0):
    box = ([-half_width], [half_width])
    q, qdot = lagrax.sample_states(num, q_box=box, qdot_box=box, key=key)
    return lagrax.acceleration_data(HarmonicOscillator(), q, qdot)


def test_fit_acceleration_loss_learns_oscillator():
    data = _oscillator_accelerations(600, jr.key(0))
    train, test = lagrax.train_test_split(data, test_fraction=0.25, key=jr.key(1))
    model = lagrax.MLPLagrangian(1, width=32, depth=2, key=jr.key(2))
    steps = 2000
    optimizer = optax.adam(optax.cosine_onecycle_schedule(steps, 1e-2))
    model, history = lagrax.fit(
        model,
        lagrax.acceleration_loss,
        train,
        optimizer=optimizer,
        steps=steps,
        batch_size=64,
        key=jr.key(3),
        test_data=test,
        metrics={"error": lagrax.acceleration_error},
        progress=False,
    )
    error = history.metrics["error"]
    assert error.shape == history.eval_step.shape == (10,)
    assert history["error"] is error and history["loss"] is history.loss
    assert history.eval_step[-1] == steps and history.loss.shape == (steps,)
    assert error[0] > 0.05  # it did learn
    assert error[-1] < 1e-2
    np.testing.assert_allclose(
        error[-1], lagrax.acceleration_error(model, test), rtol=1e-12
    )
    assert history.num_skipped == 0


def test_fit_rollout_loss_learns_oscillator():
    system = HarmonicOscillator()
    box = ([-1.5], [1.5])
    q0, qdot0 = lagrax.sample_states(64, q_box=box, qdot_box=box, key=jr.key(0))
    trajectories = lagrax.trajectory_data(system, q0, qdot0, jnp.arange(9.0) * 0.1)
    model = lagrax.MLPLagrangian(1, width=32, depth=2, key=jr.key(0))
    # Rollouts need a regular Lagrangian along every window (a mass matrix through
    # zero sends q̈ to infinity): this initialization has one sign on the region.
    grid = jnp.linspace(-2.5, 2.5, 21)
    states = jnp.stack(jnp.meshgrid(grid, grid), axis=-1).reshape(-1, 2, 1)
    masses = jax.vmap(lambda s: lagrax.mass_matrix(model, s[0], s[1]))(states)
    assert jnp.min(masses) > 0.1
    # Fixed steps of the sampling interval: the adjoint trap's configuration.
    loss = ft.partial(
        lagrax.rollout_loss,
        window=3,
        solver=diffrax.Midpoint(),
        dt0=0.1,
        stepsize_controller=diffrax.ConstantStepSize(),
        max_steps=8,
    )
    steps = 2500
    model, history = lagrax.fit(
        model,
        loss,
        trajectories,
        optimizer=optax.adam(optax.cosine_onecycle_schedule(steps, 1e-2)),
        steps=steps,
        batch_size=32,
        key=jr.key(3),
        progress=False,
    )
    assert history.num_skipped == 0
    assert history.loss[-1] < 1e-3 * history.loss[0]
    # Judged on accelerations at held-out states: they are what a rollout pins
    # down, they are unique (the Lagrangian is not), and they are the same
    # criterion as for acceleration training.
    test = _oscillator_accelerations(200, jr.key(5), half_width=1.0)
    assert lagrax.acceleration_error(model, test) < 1e-2


def _small_run(model, data, steps, **kwargs):
    optimizer = optax.adam(optax.cosine_onecycle_schedule(40, 1e-2))
    return lagrax.fit(
        model,
        lagrax.acceleration_loss,
        data,
        optimizer=optimizer,
        steps=steps,
        batch_size=16,
        key=jr.key(7),
        progress=False,
        **kwargs,
    )


def test_checkpoint_resume_is_bit_identical(tmp_path):
    data = _oscillator_accelerations(72, jr.key(0))  # 4 batches a epoch, 8 dropped
    model = lagrax.MLPLagrangian(1, width=8, depth=1, key=jr.key(1))
    test = _oscillator_accelerations(20, jr.key(2))
    metrics = {"error": lagrax.acceleration_error}
    full, full_history = _small_run(model, data, 40, test_data=test, metrics=metrics)

    path = tmp_path / "run.lagrax"
    half, _ = _small_run(
        model,
        data,
        20,
        checkpoint=path,
        checkpoint_every=10,
        test_data=test,
        metrics=metrics,
    )
    # A different starting model: only the checkpoint can make the result right.
    other = lagrax.MLPLagrangian(1, width=8, depth=1, key=jr.key(99))
    resumed, history = _small_run(
        other, data, 40, checkpoint=path, resume=True, test_data=test, metrics=metrics
    )
    assert eqx.tree_equal(resumed, full)
    np.testing.assert_array_equal(history.loss, full_history.loss)
    assert not tree_allclose(half, full, rtol=1e-3, atol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["run.lagrax"]  # no temp files left

    with pytest.raises(ValueError, match="num_samples"):
        _small_run(model, data[:64], 50, checkpoint=path, resume=True)
    with pytest.raises(ValueError, match="optimizer"):
        lagrax.fit(
            model,
            lagrax.acceleration_loss,
            data,
            optimizer=optax.sgd(1e-3),
            steps=50,
            batch_size=16,
            key=jr.key(7),
            checkpoint=path,
            resume=True,
            progress=False,
        )


def test_nan_batches_are_skipped_and_counted():
    data = _oscillator_accelerations(64, jr.key(0))
    data = eqx.tree_at(lambda d: d.qddot, data, data.qddot.at[5, 0].set(jnp.nan))
    model = lagrax.MLPLagrangian(1, width=8, depth=1, key=jr.key(1))
    # 4 batches a epoch, 2 epochs: sample 5 falls in exactly one batch per epoch
    with pytest.warns(RuntimeWarning, match="skipped 2 of 8"):
        trained, history = lagrax.fit(
            model,
            lagrax.acceleration_loss,
            data,
            optimizer=optax.adam(1e-2),
            steps=8,
            batch_size=16,
            key=jr.key(2),
            progress=False,
        )
    assert history.num_skipped == 2
    assert np.all(np.isnan(history.loss[history.skipped]))
    assert np.all(np.isfinite(history.loss[~history.skipped]))
    leaves = jax.tree.leaves(eqx.filter(trained, eqx.is_inexact_array))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)
    assert not tree_allclose(trained, model, rtol=1e-3, atol=1e-6)

    # Full batches all contain the NaN: nothing may change, then fit gives up.
    with pytest.warns(RuntimeWarning, match="skipped 3 of 3"):
        same, history = lagrax.fit(
            model,
            lagrax.acceleration_loss,
            data,
            optimizer=optax.adam(1e-2),
            steps=3,
            batch_size=64,
            key=jr.key(2),
            progress=False,
        )
    assert eqx.tree_equal(same, model)
    with pytest.raises(RuntimeError, match="skipped"):
        lagrax.fit(
            model,
            lagrax.acceleration_loss,
            data,
            optimizer=optax.adam(1e-2),
            steps=4,
            batch_size=64,
            key=jr.key(2),
            max_consecutive_skips=3,
            progress=False,
        )


def test_fit_is_a_loop_over_train_step(capsys):
    data = _oscillator_accelerations(48, jr.key(0))
    model = lagrax.MLPLagrangian(1, width=8, depth=1, key=jr.key(1))
    optimizer = optax.adam(1e-2)
    key = jr.key(2)
    fitted, _ = lagrax.fit(
        model,
        lagrax.acceleration_loss,
        data,
        optimizer=optimizer,
        steps=5,
        batch_size=16,
        key=key,
        progress=True,
    )
    assert "loss=" in capsys.readouterr().err  # the progress bar
    # by hand: epoch e shuffles with fold_in(key, e); batches are consecutive slices
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    manual = model
    for step in range(5):
        epoch, b = divmod(step, 3)
        order = jr.permutation(jr.fold_in(key, epoch), 48)
        batch = data[order[16 * b : 16 * (b + 1)]]
        manual, opt_state, value, skipped = lagrax.train_step(
            manual, opt_state, batch, loss=lagrax.acceleration_loss, optimizer=optimizer
        )
        assert not skipped and jnp.isfinite(value)
    assert tree_allclose(manual, fitted, rtol=1e-12, atol=1e-14)


def test_fit_argument_errors(tmp_path):
    data = _oscillator_accelerations(10, jr.key(0))
    model = lagrax.MLPLagrangian(1, width=4, depth=1, key=jr.key(1))
    kwargs = dict(optimizer=optax.adam(1e-3), steps=3, batch_size=4, key=jr.key(2))
    for change, match in [
        (dict(steps=-1), "steps"),
        (dict(batch_size=11), "batch_size"),
        (dict(batch_size=0), "batch_size"),
        (dict(resume=True), "checkpoint"),
        (dict(eval_every=0), "eval_every"),
        (dict(metrics={"e": lagrax.acceleration_error}), "test_data"),
    ]:
        with pytest.raises(ValueError, match=match):
            lagrax.fit(model, lagrax.acceleration_loss, data, **{**kwargs, **change})
    with pytest.raises(TypeError, match="optimizer"):
        lagrax.fit(
            model, lagrax.acceleration_loss, data, **{**kwargs, "optimizer": "adam"}
        )
