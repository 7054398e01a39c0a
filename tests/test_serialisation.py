import functools as ft

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import pytest

import lagrax
from lagrax.systems import ChargedParticle, DoublePendulum, RelativisticParticle


def _same(a, b) -> bool:
    return bool(eqx.tree_equal(a, b, typematch=True))


@pytest.mark.parametrize(
    "make",
    [
        lambda: lagrax.MLPLagrangian(2, width=8, depth=2, key=jr.key(0)),
        lambda: lagrax.MLPLagrangian(
            1, width=4, depth=1, activation=jnp.tanh, dtype=jnp.float32, key=jr.key(0)
        ),
        lambda: lagrax.MLPLagrangian(3, width=8, depth=2, angles=(0, 2), key=jr.key(0)),
        lambda: lagrax.NeuralODEBaseline(2, width=8, depth=1, key=jr.key(0)),
        lambda: lagrax.NeuralODEBaseline(
            2, width=8, depth=1, angles=(1,), key=jr.key(0)
        ),
        lambda: lagrax.HamiltonianNN(1, width=8, depth=2, key=jr.key(0)),
        lambda: DoublePendulum(m1=1.3, l2=0.7),
        lambda: ChargedParticle(magnetic_field=(0.0, 1.0, 2.0)),
    ],
    ids=[
        "mlp",
        "mlp-f32-tanh",
        "mlp-angles",
        "node",
        "node-angles",
        "hnn",
        "double-pendulum",
        "charged",
    ],
)
def test_roundtrip(tmp_path, make):
    model = make()
    path = tmp_path / "model.lagrax"
    lagrax.save(path, model)
    loaded = lagrax.load(path)
    assert type(loaded) is type(model)
    assert _same(loaded, model)


def test_custom_models_need_like(tmp_path):
    system = RelativisticParticle(g=2.0)
    model = lagrax.HamiltonianNN(
        1, width=4, depth=1, momentum=ft.partial(lagrax.momentum, system), key=jr.key(0)
    )
    path = tmp_path / "hnn.lagrax"
    lagrax.save(path, model)
    with pytest.raises(ValueError, match="like"):
        lagrax.load(path)
    skeleton = lagrax.HamiltonianNN(
        1, width=4, depth=1, momentum=model.momentum, key=jr.key(1)
    )
    assert _same(lagrax.load(path, like=skeleton), model)
    assert not _same(skeleton, model)


def test_bad_files_fail_clearly(tmp_path):
    model = lagrax.MLPLagrangian(2, width=8, depth=2, key=jr.key(0))
    path = tmp_path / "model.lagrax"
    lagrax.save(path, model)
    raw = path.read_bytes()

    truncated = tmp_path / "truncated.lagrax"
    truncated.write_bytes(raw[: len(raw) - 100])
    with pytest.raises(ValueError, match="truncated"):
        lagrax.load(truncated)
    truncated.write_bytes(raw[:20])
    with pytest.raises(ValueError, match="truncated"):
        lagrax.load(truncated)

    corrupt = tmp_path / "corrupt.lagrax"
    flipped = bytearray(raw)
    flipped[-10] ^= 0xFF
    corrupt.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="corrupt"):
        lagrax.load(corrupt)

    other = tmp_path / "other.eqx"
    eqx.tree_serialise_leaves(other, model)  # a plain Equinox file
    with pytest.raises(ValueError, match="not a lagrax file"):
        lagrax.load(other)

    wider = lagrax.MLPLagrangian(2, width=16, depth=2, key=jr.key(0))
    with pytest.raises(ValueError, match="does not match"):
        lagrax.load(path, like=wider)
    with pytest.raises(ValueError, match="MLPLagrangian"):
        lagrax.load(path, like=DoublePendulum())


def test_loaded_model_predicts_the_same(tmp_path):
    model = lagrax.MLPLagrangian(2, width=8, depth=2, key=jr.key(3))
    path = tmp_path / "model.lagrax"
    lagrax.save(path, model)
    loaded = lagrax.load(path)
    q, qdot = jnp.array([0.1, 0.2]), jnp.array([0.3, -0.4])
    a = eqx.filter_jit(lagrax.acceleration)(model, q, qdot)
    b = eqx.filter_jit(lagrax.acceleration)(loaded, q, qdot)
    assert jnp.array_equal(a, b)
