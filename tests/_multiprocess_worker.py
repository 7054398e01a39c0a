"""One process of `test_multiprocess.py`'s two-process training run.

`python tests/_multiprocess_worker.py PROCESS_ID PORT FOLDER` joins a JAX
distributed run of two processes (one CPU device each, gloo collectives), checks
that `fit` refuses processes that disagree on the run and the devices of another
process alone, and, with `fit(devices=jax.devices())` over both, trains:

1. `plain`: the run of `settings()`, uninterrupted;
2. a checkpointed run of the same settings, stopped by an error at step 20 after
    its checkpoint at step 10;
3. `resumed`: a run from another starting model that resumes that checkpoint.

It saves both models' parameters and histories to `FOLDER/process{ID}.npz`, with the
number of files it wrote to the checkpoint. The test imports `settings` for the
single-process fit it compares with.
"""

import functools as ft
import pathlib
import sys
from typing import Any

import equinox as eqx
import jax
import jax.random as jr
import numpy as np
import optax

import lagrax
from lagrax._files import AbstractWriteObserver, observe_writes


STEPS = 30


def settings() -> dict[str, Any]:
    """The model, loss, data and settings of every run: a harmonic oscillator's
    accelerations (`q̈ = -q`, from NumPy: nothing to compile), 56 samples in
    minibatches of 16 (8 a device), 3 a epoch, so that 30 steps reshuffle 10
    times."""
    q, qdot = np.random.default_rng(0).uniform(-2.0, 2.0, (2, 64, 1))
    data = lagrax.AccelerationData(q, qdot, -q)
    return dict(
        model=lagrax.MLPLagrangian(1, width=8, depth=1, key=jr.key(1)),
        loss=lagrax.acceleration_loss,
        data=data[:56],
        test_data=data[56:],
        metrics={"error": lagrax.acceleration_error},
        optimizer=optax.adam(1e-2),
        steps=STEPS,
        batch_size=16,
        key=jr.key(7),
        eval_every=20,
        progress=False,
    )


def arrays(model) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(model, eqx.is_array))]


def _refused(train, match: str) -> None:
    try:
        train()
    except ValueError as e:
        assert match in str(e), e
    else:
        raise AssertionError(f"fit was not refused ({match})")


class _Stop(Exception):
    pass


def _stop(model, data):
    raise _Stop


class _Count(AbstractWriteObserver):
    def __init__(self):
        self.writes = 0

    def replacing(self, path, size, sha256):
        pass

    def replaced(self, path, size, sha256):
        self.writes += 1


def main(i: int, port: int, folder: pathlib.Path) -> None:
    jax.distributed.initialize(
        coordinator_address=f"localhost:{port}",
        num_processes=2,
        process_id=i,
        initialization_timeout=60,
    )
    assert jax.process_count() == 2 and len(jax.devices()) == 2, jax.devices()
    run = settings()
    # Processes that disagree on the run are told so, all of them, before training.
    different = {**run, "key": jr.key(i)}
    _refused(lambda: lagrax.fit(**different), f"differs from process(es) [{1 - i}]")
    # The devices of another process alone are no devices to train on.
    other_device = jax.devices()[1 - i]
    _refused(lambda: lagrax.fit(**run, devices=[other_device]), "of this process")
    plain, history = lagrax.fit(**run, devices=jax.devices())
    # The caller's model is an ordinary array on this process's device.
    weight = plain.layers[0].weight
    assert weight.is_fully_addressable, weight.sharding
    assert weight.sharding.device_set == set(jax.local_devices()), weight.sharding

    path = folder / "run.lagrax"
    counter = _Count()
    checkpointed = ft.partial(lagrax.fit, **run, checkpoint=path, checkpoint_every=10)
    with observe_writes(counter):
        try:
            checkpointed(metrics={"error": _stop}, devices=jax.devices())
        except _Stop:
            pass
        else:
            raise AssertionError("the run was not stopped")
        other = lagrax.MLPLagrangian(1, width=8, depth=1, key=jr.key(99))
        resumed, resumed_history = checkpointed(
            model=other, resume=True, devices=jax.devices()
        )

    np.savez(
        folder / f"process{i}.npz",
        allow_pickle=False,
        **{f"plain{i}": x for i, x in enumerate(arrays(plain))},
        **{f"resumed{i}": x for i, x in enumerate(arrays(resumed))},
        loss=history.loss,
        eval_loss=history.eval_loss,
        resumed_loss=resumed_history.loss,
        resumed_eval_loss=resumed_history.eval_loss,
        writes=counter.writes,
    )
    jax.distributed.shutdown()


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_numpy_rank_promotion", "raise")
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    main(int(sys.argv[1]), int(sys.argv[2]), pathlib.Path(sys.argv[3]))
