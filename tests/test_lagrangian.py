import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lagrax


def test_lnn_init_statistics(getkey):
    width, depth = 600, 3
    model = lagrax.MLPLagrangian(2, width=width, depth=depth, key=getkey())
    assert len(model.layers) == depth + 1
    stds = [np.std(np.asarray(layer.weight)) for layer in model.layers]
    n = width  # every layer's larger dimension
    expected = [
        2.2 / np.sqrt(n),
        0.58 * 1 / np.sqrt(n),
        0.58 * 2 / np.sqrt(n),
        np.sqrt(n),
    ]
    # The output layer has only 600 weights: allow for its sampling error.
    np.testing.assert_allclose(stds[:3], expected[:3], rtol=0.02)
    np.testing.assert_allclose(stds[3], expected[3], rtol=0.1)
    for layer in model.layers:
        assert np.all(np.asarray(layer.bias) == 0)


def test_shapes_and_dtypes(getkey):
    model = lagrax.MLPLagrangian(3, width=8, depth=2, dtype=jnp.float32, key=getkey())
    assert model.layers[0].weight.shape == (8, 6)
    out = model(jnp.zeros(3, jnp.float32), jnp.zeros(3, jnp.float32))
    assert out.shape == ()
    model64 = lagrax.MLPLagrangian(3, width=8, depth=2, dtype=jnp.float64, key=getkey())
    assert model64(jnp.zeros(3), jnp.ones(3)).dtype == jnp.float64
    with pytest.raises(TypeError, match="dtype"):
        model(jnp.zeros(3), jnp.zeros(3))
    with pytest.raises((TypeError, ValueError), match="dof|shape"):
        model64(jnp.zeros(2), jnp.zeros(2))


def test_default_init_differs_from_lnn(getkey):
    key = getkey()
    lnn = lagrax.MLPLagrangian(2, width=64, depth=2, key=key)
    default = lagrax.MLPLagrangian(2, width=64, depth=2, init="default", key=key)
    bound = 1 / np.sqrt(4)
    assert np.all(np.abs(np.asarray(default.layers[0].weight)) <= bound)
    assert np.any(np.asarray(default.layers[0].bias) != 0)
    assert not np.allclose(lnn.layers[-1].weight, default.layers[-1].weight)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(dof=0), "dof"),
        (dict(dof=2, width=0), "width"),
        (dict(dof=2, depth=0), "depth"),
        (dict(dof=2, init="xavier"), "init"),
    ],
)
def test_bad_arguments(kwargs, match, getkey):
    with pytest.raises((ValueError, TypeError), match=match):
        lagrax.MLPLagrangian(**kwargs, key=getkey())


def test_is_a_pytree_of_parameters(getkey):
    model = lagrax.MLPLagrangian(2, width=8, depth=2, key=getkey())
    leaves = jax.tree_util.tree_leaves(model)
    # activation is a function, not a parameter; 3 layers × (weight, bias)
    arrays = [x for x in leaves if isinstance(x, jax.Array)]
    assert len(arrays) == 6
    assert isinstance(model, lagrax.AbstractLagrangian)
