"""The examples run and do what they say, at tiny budgets."""

import importlib.util
import pathlib

import jax.random as jr
import numpy as np


EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_embedded_pendulum_trains_end_to_end():
    """Encoder → LNN (in diffeqsolve, VariationalMidpoint) → decoder, trained with
    Optax: 40 steps take the held-out position error down by more than half."""
    example = _load("embedded_pendulum")
    model, losses, test = example.train(steps=40, train_size=64, batch_size=16)
    assert np.all(np.isfinite(losses))
    untrained = example.EncodedLNN(key=jr.split(jr.key(0), 4)[2])
    before, after = example.loss(untrained, test), example.loss(model, test)
    assert after < 0.5 * before, (before, after)
