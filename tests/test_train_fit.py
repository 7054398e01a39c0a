import functools as ft
import inspect
import os
import pathlib
import re
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import lagrax
from lagrax._serialisation import read_checkpoint, write_checkpoint
from lagrax._train.fingerprint import (
    describe as _describe,
    optimizer_fingerprint as _optimizer_fingerprint,
)
from lagrax.systems import HarmonicOscillator

from .helpers import along


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
    assert isinstance(test, lagrax.AccelerationData)
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
    masses = along(lagrax.mass_matrix, model, states[:, 0], states[:, 1])
    assert jnp.min(masses) > 0.1
    # Fixed steps of the sampling interval: the adjoint trap's configuration. A
    # window takes 2 steps (3 with a sliver of round-off): a budget of 4, and 16
    # trajectories a step, keep the steps cheap (each step's cost grows with both)
    # and learn as well as 8 and 32 did.
    loss = ft.partial(
        lagrax.rollout_loss,
        window=3,
        solver=diffrax.Midpoint(),
        dt0=0.1,
        stepsize_controller=diffrax.ConstantStepSize(),
        max_steps=4,
    )
    steps = 1250
    model, history = lagrax.fit(
        model,
        loss,
        trajectories,
        optimizer=optax.adam(optax.cosine_onecycle_schedule(steps, 1e-2)),
        steps=steps,
        batch_size=16,
        key=jr.key(3),
        progress=False,
    )
    assert history.num_skipped == 0
    assert history.loss[-1] < 1e-3 * history.loss[0]
    # Judged on accelerations at held-out states: they are what a rollout pins
    # down, they are unique (the Lagrangian is not), and they are the same
    # criterion as for acceleration training.
    # 1,250 steps reach 0.016 (2,500 reached 0.008, at twice the time; the
    # untrained model's error is 5.2).
    test = _oscillator_accelerations(200, jr.key(5), half_width=1.0)
    assert eqx.filter_jit(lagrax.acceleration_error)(model, test) < 2.5e-2


# The small runs below share their data, model shapes and optimizer objects, so
# that fit's step (cached on the optimizer object) and the rest compile once.
_ADAM = optax.adam(1e-2)
_ONECYCLE = optax.adam(optax.cosine_onecycle_schedule(40, 1e-2))


@ft.cache
def _small_data():
    return _oscillator_accelerations(64, jr.key(0))


class _Stop(Exception):
    pass


def _small_run(
    data,
    steps,
    *,
    model=None,
    loss=lagrax.acceleration_loss,
    optimizer=_ADAM,
    batch_size=16,
    key=None,
    progress=False,
    **kwargs,
):
    if model is None:
        model = lagrax.MLPLagrangian(1, width=8, depth=1, key=jr.key(1))
    key = jr.key(7) if key is None else key
    return lagrax.fit(
        model,
        loss,
        data,
        optimizer=optimizer,
        steps=steps,
        batch_size=batch_size,
        key=key,
        progress=progress,
        **kwargs,
    )


def test_checkpoint_resume_is_bit_identical(tmp_path):
    data = _small_data()[:56]  # 3 batches a epoch, 8 dropped
    test = _small_data()[56:]
    metrics = {"error": lagrax.acceleration_error}
    run = ft.partial(_small_run, optimizer=_ONECYCLE, test_data=test, metrics=metrics)
    full, full_history = run(data, 40)

    def stop(model, data):
        raise _Stop

    # Stopped by an error after its checkpoint at step 10, at the evaluation at 20.
    path = tmp_path / "run.lagrax"
    with pytest.raises(_Stop):
        run(
            data,
            40,
            checkpoint=path,
            checkpoint_every=10,
            metrics={"error": stop},
            eval_every=20,
        )
    # A different starting model: only the checkpoint can make the result right.
    other = lagrax.MLPLagrangian(1, width=8, depth=1, key=jr.key(99))
    resumed, history = run(data, 40, model=other, checkpoint=path, resume=True)
    assert eqx.tree_equal(resumed, full)
    np.testing.assert_array_equal(history.loss, full_history.loss)
    assert [p.name for p in tmp_path.iterdir()] == ["run.lagrax"]  # no temp files left

    # The finished run can be neither shortened nor extended: its one-cycle
    # schedule is over 40 steps, and one over 80 is another optimizer.
    with pytest.raises(ValueError, match="`steps`=40; this run asks for 30"):
        run(data, 30, checkpoint=path, resume=True)
    onecycle80 = optax.adam(optax.cosine_onecycle_schedule(80, 1e-2))
    with pytest.raises(ValueError, match="different `optimizer`.*schedule"):
        run(data, 80, checkpoint=path, resume=True, optimizer=onecycle80)


def test_resume_extends_only_a_finished_run(tmp_path):
    data = _small_data()[:48]
    fresh, fresh_history = _small_run(data, 12)
    path = tmp_path / "run.lagrax"
    _small_run(data, 8, checkpoint=path)
    # Adam's steps do not depend on their total: 8 steps, then 4 more, are 12 steps.
    extended, history = _small_run(data, 12, checkpoint=path, resume=True)
    assert eqx.tree_equal(extended, fresh)
    np.testing.assert_array_equal(history.loss, fresh_history.loss)
    with pytest.raises(ValueError, match=r"`steps`=12; this run asks for 8 \(fewer"):
        _small_run(data, 8, checkpoint=path, resume=True)

    # Stopped after step 5 of 12: finishing it to 20 would be neither run.
    unfinished = tmp_path / "unfinished.lagrax"
    test = data[:8]

    def stop(model, data):
        raise _Stop

    with pytest.raises(_Stop):
        _small_run(
            data,
            12,
            checkpoint=unfinished,
            checkpoint_every=5,
            test_data=test,
            metrics={"error": stop},
            eval_every=6,
        )
    with pytest.raises(ValueError, match="`steps`=12; .* stopped after step 5 of 12"):
        _small_run(data, 20, checkpoint=unfinished, resume=True)


def test_resume_refuses_a_different_run(tmp_path):
    data = _small_data()[:48]
    path = tmp_path / "run.lagrax"
    model, _ = _small_run(data, 6, checkpoint=path)
    # The same run again, with a new optimizer object: the finished checkpoint.
    again, _ = _small_run(
        data, 6, checkpoint=path, resume=True, optimizer=optax.adam(1e-2)
    )
    assert eqx.tree_equal(again, model)

    def refused(match, data=data, steps=6, **kwargs):
        with pytest.raises(ValueError, match=match):
            _small_run(data, steps, checkpoint=path, resume=True, **kwargs)

    refused("`batch_size`=16; this run asks for 8", batch_size=8)
    refused("different `key`", key=jr.key(8))
    refused(r"`len\(data\)`=48; this run has 40", data=data[:40])
    shifted = eqx.tree_at(lambda d: d.qddot, data, data.qddot.at[3, 0].add(1e-9))
    refused("different `data`", data=shifted)
    for optimizer in (optax.adam(2e-2), optax.adam(1e-2, b1=0.8)):
        refused("different `optimizer`", optimizer=optimizer)
    # Another optimizer state does not load: the checkpoint's reader names it.
    refused("optimizer", optimizer=optax.sgd(1e-2))
    l2 = ft.partial(lagrax.acceleration_loss, norm="l2")
    refused(
        r"`loss`='lagrax\._train.*_loss'; this run has \"partial\(.*'l2'\)", loss=l2
    )

    # A checkpoint that does not record a setting cannot be checked against it.
    like = (model, _ADAM.init(eqx.filter(model, eqx.is_inexact_array)))
    state, info = read_checkpoint(path, like)
    del info["optimizer"]
    write_checkpoint(path, state, info)
    refused("does not record its `optimizer`")


def test_optimizer_fingerprint():
    model = lagrax.MLPLagrangian(1, width=8, depth=1, key=jr.key(0))
    params = eqx.filter(model, eqx.is_inexact_array)

    def fingerprint(optimizer, params=params):
        return _optimizer_fingerprint(optimizer, params)

    adam = fingerprint(optax.adam(1e-3))
    assert fingerprint(optax.adam(1e-3)) == adam  # behaviour, not identity
    assert fingerprint(optax.adam(2e-3)) != adam
    assert fingerprint(optax.sgd(1e-3)) != adam
    onecycle = fingerprint(optax.adam(optax.cosine_onecycle_schedule(100, 1e-3)))
    assert onecycle != adam
    assert (
        fingerprint(optax.adam(optax.cosine_onecycle_schedule(200, 1e-3))) != onecycle
    )
    # Schedules over 1000 and 2000 steps differ by 2e-6 in the first steps.
    decay = [optax.cosine_decay_schedule(1e-3, steps) for steps in (1000, 2000)]
    assert fingerprint(optax.adam(decay[0])) != fingerprint(optax.adam(decay[1]))
    # Not the parameter values (a resumed run may start from another model), even
    # for an optimizer whose updates depend on them.
    other = eqx.filter(
        lagrax.MLPLagrangian(1, width=8, depth=1, key=jr.key(1)), eqx.is_inexact_array
    )
    assert fingerprint(optax.adamw(1e-3), other) == fingerprint(optax.adamw(1e-3))


def test_loss_description():
    description = _describe(lagrax.acceleration_loss)
    assert description == "lagrax._train.losses.acceleration_loss"
    l1 = _describe(ft.partial(lagrax.acceleration_loss, norm="l1"))
    assert l1 == f"partial({description}, norm='l1')"
    assert _describe(ft.partial(lagrax.acceleration_loss, norm="l2")) != l1
    rollout = ft.partial(lagrax.rollout_loss, window=3, solver=diffrax.Midpoint())
    assert re.search(r"window=3, solver=\S*Midpoint\(", _describe(rollout))

    def closure(weight, inner):
        return lambda model, batch: weight * inner(model, batch)

    same = closure(2.0, ft.partial(lagrax.acceleration_loss, norm="l1"))
    assert _describe(same) == _describe(
        closure(2.0, ft.partial(lagrax.acceleration_loss, norm="l1"))
    )
    assert _describe(same) != _describe(closure(2.0, lagrax.acceleration_loss))
    assert _describe(same) != _describe(closure(1.0, lagrax.acceleration_loss))
    weight = _describe(closure(jnp.asarray(2.0), lagrax.acceleration_loss))
    assert weight != _describe(closure(jnp.asarray(1.0), lagrax.acceleration_loss))
    # Nothing that changes from one process to the next: a module that holds a
    # function is named by its type.
    model = lagrax.MLPLagrangian(1, width=8, depth=1, key=jr.key(0))
    held = _describe(closure(1.0, model))
    assert "0x" not in held and "lagrax._lagrangian.MLPLagrangian" in held


def test_checkpoint_folder_is_checked_before_training(tmp_path):
    data = _small_data()[:48]
    a_file = tmp_path / "file"
    a_file.write_text("")

    def loss(model, batch):
        raise AssertionError("fit trained before checking its checkpoint")

    paths = [
        (tmp_path / "missing" / "run.lagrax", "does not exist"),
        (a_file / "run.lagrax", "is not a folder"),
        (tmp_path, "is a folder"),
    ]
    if os.path.isdir("/sys"):  # sysfs takes no new files, not even from root
        paths.append((pathlib.Path("/sys/run.lagrax"), "does not take new files"))
    for path, problem in paths:
        with pytest.raises(ValueError, match=f"`checkpoint`.*{problem}") as error:
            _small_run(data, 4, checkpoint=path, loss=loss)
        assert str(path) in str(error.value)


def test_nan_gradients_are_skipped_and_counted():
    data = _small_data()[:48]
    # Sample 5 marked by a position of exactly zero, which no sampled one is.
    data = eqx.tree_at(lambda d: d.q, data, data.q.at[5, 0].set(0.0))

    def loss(model, batch):
        value = lagrax.acceleration_loss(model, batch)
        # On the batch with the marker, the value is unchanged but the gradient
        # is NaN: √ has an infinite derivative at 0, and 0·∞ is NaN.
        return jax.lax.cond(
            jnp.any(batch.q == 0), lambda v: v + jnp.sqrt(0.0 * v), lambda v: v, value
        )

    model = lagrax.MLPLagrangian(1, width=8, depth=1, key=jr.key(1))
    # 3 batches a epoch, 2 epochs: sample 5 falls in exactly one batch per epoch.
    with pytest.warns(RuntimeWarning, match="skipped 2 of 6"):
        trained, history = _small_run(data, 6, model=model, loss=loss)
    assert history.num_skipped == 2 and np.all(np.isfinite(history.loss))
    leaves = jax.tree.leaves(eqx.filter(trained, eqx.is_inexact_array))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)
    assert not tree_allclose(trained, model, rtol=1e-3, atol=1e-6)


def test_nan_batches_are_skipped_and_counted():
    data = _small_data()[:48]
    data = eqx.tree_at(lambda d: d.qddot, data, data.qddot.at[5, 0].set(jnp.nan))
    model = lagrax.MLPLagrangian(1, width=8, depth=1, key=jr.key(1))
    # 3 batches a epoch, 2 epochs: sample 5 falls in exactly one batch per epoch
    with pytest.warns(RuntimeWarning, match="skipped 2 of 6"):
        trained, history = _small_run(data, 6, model=model)
    assert history.num_skipped == 2
    assert np.all(np.isnan(history.loss[history.skipped]))
    assert np.all(np.isfinite(history.loss[~history.skipped]))
    leaves = jax.tree.leaves(eqx.filter(trained, eqx.is_inexact_array))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)
    assert not tree_allclose(trained, model, rtol=1e-3, atol=1e-6)

    # Full batches all contain the NaN: nothing changes, and a run that skipped
    # every step ends with an error, as does one with too many skips in a row.
    with pytest.raises(RuntimeError, match="skipped all 3 steps"):
        _small_run(data, 3, model=model, batch_size=48)
    with pytest.raises(RuntimeError, match="skipped"):
        _small_run(data, 4, model=model, batch_size=48, max_consecutive_skips=3)


def _adam_counts(opt_state) -> list[int]:
    return [
        int(jnp.asarray(s.count))
        for s in jax.tree.leaves(
            opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState)
        )
        if isinstance(s, optax.ScaleByAdamState)
    ]


def test_a_skipped_step_leaves_the_optimizer_state_unchanged(tmp_path):
    data = _small_data()[:48]
    model = lagrax.MLPLagrangian(1, width=8, depth=1, key=jr.key(1))
    opt_state = _ADAM.init(eqx.filter(model, eqx.is_inexact_array))
    step = ft.partial(lagrax.train_step, loss=lagrax.acceleration_loss, optimizer=_ADAM)
    model, opt_state, _, skipped = step(model, opt_state, data[:16])
    assert not skipped and _adam_counts(opt_state) == [1]
    bad = eqx.tree_at(
        lambda d: d.qddot, data[:16], data.qddot[:16].at[0, 0].set(jnp.nan)
    )
    same, same_state, _, skipped = step(model, opt_state, bad)
    assert skipped and eqx.tree_equal(same, model)
    assert eqx.tree_equal(same_state, opt_state) and _adam_counts(same_state) == [1]

    # Through `fit` and its checkpoint: a learning rate that is infinite at step
    # count 1 makes a non-finite update; the step is skipped and the count stays
    # at 1, so every later step is skipped too (were the count advanced, only one
    # would be).
    rate = lambda count: jnp.where(count == 1, jnp.inf, 1e-2)  # noqa: E731
    optimizer = optax.adam(rate)
    path = tmp_path / "run.lagrax"
    with pytest.warns(RuntimeWarning, match="skipped 5 of 6"):
        trained, history = _small_run(data, 6, optimizer=optimizer, checkpoint=path)
    assert history.skipped.tolist() == [False] + [True] * 5
    leaves = jax.tree.leaves(eqx.filter(trained, eqx.is_inexact_array))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)
    like = (trained, optimizer.init(eqx.filter(trained, eqx.is_inexact_array)))
    (saved, saved_state), _ = read_checkpoint(path, like)
    assert eqx.tree_equal(saved, trained) and _adam_counts(saved_state) == [1]

    # An optimizer whose every update is infinite: fit says so.
    with pytest.raises(RuntimeError, match="skipped all 4 steps.*update"):
        _small_run(data, 4, optimizer=optax.adam(jnp.inf))


_SCALE = 1.0


def _scaled_loss(model, batch):
    return _SCALE * lagrax.acceleration_loss(model, batch)


def test_resume_refuses_an_edited_loss_other_test_data_and_schedule(
    tmp_path, monkeypatch
):
    data = _small_data()[:48]
    path = tmp_path / "run.lagrax"

    def run(**kwargs):
        # A new partial each time is described alike (by the function's name) but
        # compiled anew, as a new process would: so it sees an edited global.
        loss = kwargs.pop("loss", ft.partial(_scaled_loss))
        return _small_run(data, 4, checkpoint=path, loss=loss, **kwargs)

    run(test_data=data[:8])
    # A file edited between two runs: the same top-level function, described by
    # its name alone, computes another value.
    monkeypatch.setattr(f"{__name__}._SCALE", 2.0)
    with pytest.raises(ValueError, match="different `loss` .*value differs"):
        run(test_data=data[:8], resume=True)
    monkeypatch.setattr(f"{__name__}._SCALE", 1.0)
    with pytest.raises(ValueError, match="different `test_data`"):
        run(test_data=data[8:16], resume=True)
    run(test_data=data[:8], resume=True)
    # A loss that holds what cannot be told apart from one process to the next.
    opaque = object()
    with pytest.raises(ValueError, match="Cannot tell whether this run's `loss`"):
        run(
            loss=lambda m, b: lagrax.acceleration_loss(m, b) + 0 * id(opaque),
            test_data=data[:8],
            resume=True,
        )

    # Schedules that differ only between the optimizer fingerprint's probe steps
    # (10, 100, ...): stopped after its first checkpoint, the run over 200 steps
    # resumes with its own schedule and refuses the other.
    def stop(model, data):
        raise _Stop

    schedules = [
        optax.piecewise_constant_schedule(3e-3, {at: 0.1}) for at in (150, 160)
    ]
    optimizers = [optax.adam(schedule) for schedule in schedules]
    params = eqx.filter(
        lagrax.MLPLagrangian(1, width=8, depth=1, key=jr.key(1)), eqx.is_inexact_array
    )
    assert len({_optimizer_fingerprint(o, params) for o in optimizers}) == 1
    path = tmp_path / "schedule.lagrax"
    stopped: dict[str, Any] = dict(
        checkpoint=path,
        checkpoint_every=1,
        test_data=data[:8],
        metrics={"stop": stop},
        eval_every=2,
    )
    with pytest.raises(_Stop):
        _small_run(data, 200, optimizer=optimizers[0], **stopped)
    with pytest.raises(ValueError, match="different `optimizer` schedule"):
        _small_run(data, 200, optimizer=optimizers[1], **stopped, resume=True)
    with pytest.raises(_Stop):  # resumed: it reaches its next evaluation
        _small_run(data, 200, optimizer=optimizers[0], **stopped, resume=True)


def test_fit_is_a_loop_over_train_step(capsys):
    data = _small_data()[:48]
    model = lagrax.MLPLagrangian(1, width=8, depth=1, key=jr.key(1))
    key = jr.key(2)
    fitted, _ = _small_run(data, 5, model=model, key=key, progress=True)
    assert "loss=" in capsys.readouterr().err  # the progress bar
    # by hand: epoch e shuffles with fold_in(key, e); batches are consecutive slices
    opt_state = _ADAM.init(eqx.filter(model, eqx.is_inexact_array))
    manual = model
    for step in range(5):
        epoch, b = divmod(step, 3)
        order = jr.permutation(jr.fold_in(key, epoch), 48)
        batch = data[order[16 * b : 16 * (b + 1)]]
        manual, opt_state, value, skipped = lagrax.train_step(
            manual, opt_state, batch, loss=lagrax.acceleration_loss, optimizer=_ADAM
        )
        assert not skipped and jnp.isfinite(value)
    assert tree_allclose(manual, fitted, rtol=1e-12, atol=1e-14)


class _Duck:
    """Has `len()` and indexing, but is no `lagrax.AbstractDataset`."""

    def __len__(self):
        return 10

    def __getitem__(self, index):
        return self


def test_fit_argument_errors():
    data = _small_data()[:10]
    model = lagrax.MLPLagrangian(1, width=8, depth=1, key=jr.key(1))
    kwargs = dict(optimizer=optax.adam(1e-3), steps=3, batch_size=4, key=jr.key(2))
    for change, match in [
        (dict(steps=-1), "steps"),
        (dict(batch_size=11), "batch_size"),
        (dict(batch_size=0), "batch_size"),
        (dict(resume=True), "checkpoint"),
        (dict(eval_every=0), "eval_every"),
        (dict(max_consecutive_skips=0), "max_consecutive_skips"),
        (dict(metrics={"e": lagrax.acceleration_error}), "test_data"),
    ]:
        with pytest.raises(ValueError, match=match):
            lagrax.fit(model, lagrax.acceleration_loss, data, **{**kwargs, **change})
    with pytest.raises(TypeError, match="optimizer"):
        lagrax.fit(
            model, lagrax.acceleration_loss, data, **{**kwargs, "optimizer": "adam"}
        )
    # A duck-typed dataset is refused: by the suite's runtime type checker, and
    # by fit itself (as users without the checker call it), naming the argument.
    unchecked = inspect.unwrap(lagrax.fit)
    for name, train, test in [("data", _Duck(), None), ("test_data", data, _Duck())]:
        with pytest.raises(TypeError, match="AbstractDataset"):
            _small_run(train, 3, batch_size=4, test_data=test)
        with pytest.raises(TypeError, match=f"`{name}` must be a dataset.*Abstract"):
            unchecked(
                model,
                lagrax.acceleration_loss,
                train,
                test_data=test,
                optimizer=_ADAM,
                steps=3,
                batch_size=4,
                key=jr.key(2),
            )


_DATA_PARALLEL = """
import equinox as eqx, jax, jax.numpy as jnp, jax.random as jr, numpy as np, optax
import lagrax
from lagrax.systems import DoublePendulum

assert len(jax.devices()) == 4, jax.devices()
system = DoublePendulum()
states = lagrax.sample_states(
    256, q_box=(jnp.zeros(2), jnp.ones(2)), qdot_box=(-jnp.ones(2), jnp.ones(2)),
    key=jr.key(0),
)
data = lagrax.acceleration_data(system, *states)
model = lagrax.MLPLagrangian(2, width=16, depth=2, key=jr.key(1))
options = dict(
    optimizer=optax.adam(1e-3), steps=6, batch_size=32, key=jr.key(2), progress=False,
)
loss = lagrax.acceleration_loss
four, history4 = lagrax.fit(model, loss, data, **options)
one, history1 = lagrax.fit(model, loss, data, devices=jax.devices()[:1], **options)
weight = four.layers[0].weight
assert len(weight.sharding.device_set) == 4, weight.sharding  # replicated on 4
np.testing.assert_allclose(history4.loss, history1.loss, rtol=1e-10)
arrays = [jax.tree.leaves(eqx.filter(m, eqx.is_array)) for m in (four, one)]
for a, b in zip(*arrays):
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
assert not np.allclose(four.layers[0].weight, model.layers[0].weight)  # trained
try:
    lagrax.fit(model, loss, data, **dict(options, batch_size=30))
except ValueError as e:
    assert "multiple of the number of devices (4)" in str(e), e
else:
    raise AssertionError("batch 30 on 4 devices was accepted")
print("data-parallel ok")
"""


@pytest.mark.slow
def test_fit_data_parallel_on_four_devices_matches_one(tmp_path):
    """`fit` splits each minibatch over 4 (simulated CPU) devices, the model
    replicated, and ends where one device does, to round-off (float64). A fresh
    process: the device count is fixed when JAX starts."""
    import subprocess
    import sys

    env = dict(os.environ, JAX_ENABLE_X64="1", JAX_PLATFORMS="cpu")
    flags = env.get("XLA_FLAGS", "")
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count=4".strip()
    result = subprocess.run(
        [sys.executable, "-c", _DATA_PARALLEL],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data-parallel ok" in result.stdout


class _Spring(lagrax.AbstractLagrangian):
    """`½ m q̇² − ½ k q²` with `log m`, `log k` trainable: its fit has one answer,
    `k/m = ω²`, and `log m` sets only the (free) scale of `L`."""

    log_m: jax.Array
    log_k: jax.Array

    def __call__(self, q, qdot):
        return (
            0.5 * jnp.exp(self.log_m) * qdot @ qdot - 0.5 * jnp.exp(self.log_k) * q @ q
        )


def test_fit_drives_a_line_search_optimizer(tmp_path):
    # optax.lbfgs needs the loss itself (`value_fn`) for its line search; given
    # the whole dataset as the batch, 20 steps pin ω² = k/m to 1e-8, where Adam
    # over the same steps does not get within 10%.
    data = lagrax.acceleration_data(
        HarmonicOscillator(mass=1.0, stiffness=4.0),
        *(jr.normal(key, (32, 1)) for key in jr.split(jr.key(0))),
    )
    start = _Spring(jnp.array(0.3), jnp.array(-0.5))

    def omega_squared(optimizer):
        # Checkpointed: the optimizer's fingerprint drives its line search too.
        model, history = lagrax.fit(
            start,
            ft.partial(lagrax.acceleration_loss, norm="l2"),
            data,
            optimizer=optimizer,
            steps=20,
            batch_size=32,
            key=jr.key(1),
            checkpoint=tmp_path / f"{len(os.listdir(tmp_path))}.ckpt",
            progress=False,
        )
        assert history.num_skipped == 0
        return float(jnp.exp(model.log_k - model.log_m))

    assert abs(omega_squared(optax.lbfgs()) / 4.0 - 1) < 1e-8
    assert abs(omega_squared(optax.adam(1e-2)) / 4.0 - 1) > 0.1
    # A float32 network with 64-bit JAX: the line search's float64 trial points
    # reach the model (which refuses other dtypes) in float32; nothing changes
    # dtype. (It raised a TypeError before.)
    network = lagrax.MLPLagrangian(
        1, width=8, depth=1, dtype=jnp.float32, key=jr.key(2)
    )
    model, history = lagrax.fit(
        network,
        ft.partial(lagrax.acceleration_loss, norm="l2"),
        lagrax.cast(data, jnp.float32),
        optimizer=optax.lbfgs(),
        steps=3,
        batch_size=32,
        key=jr.key(1),
        progress=False,
    )
    assert model.layers[0].weight.dtype == jnp.float32
    assert history.num_skipped == 0 and history.loss[-1] < history.loss[0]
