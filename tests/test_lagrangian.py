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
        (dict(dof=2, angles=(2,)), "angles"),
        (dict(dof=2, angles=(0, 0)), "angles"),
        (dict(dof=2, angles=(True,)), "angles"),
        (dict(dof=2, angles=0), "angles"),
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


@pytest.mark.parametrize(
    "make",
    [
        lambda key: lagrax.MLPLagrangian(
            3, width=16, depth=2, angles=(0, 2), dtype=jnp.float64, key=key
        ),
        lambda key: lagrax.NeuralODEBaseline(
            3, width=16, depth=2, angles=(0, 2), dtype=jnp.float64, key=key
        ),
    ],
    ids=["lnn", "baseline"],
)
def test_angles_are_periodic(make, getkey):
    """Angles enter as (cos, sin): a turn of 2π in an angle changes nothing, a shift
    of the other coordinate does; the accelerations follow."""
    model = make(getkey())
    q = jax.random.normal(getkey(), (3,), jnp.float64)
    qdot = jax.random.normal(getkey(), (3,), jnp.float64)
    turn = 2 * jnp.pi * jnp.array([1.0, 0.0, -3.0])
    shift = 2 * jnp.pi * jnp.array([0.0, 1.0, 0.0])
    if isinstance(model, lagrax.AbstractLagrangian):
        f = model
        np.testing.assert_allclose(f(q + turn, qdot), f(q, qdot), rtol=1e-12)
        assert abs(float(f(q + shift, qdot) - f(q, qdot))) > 1e-6
        qddot = lagrax.acceleration(model, q, qdot)
        turned = lagrax.acceleration(model, q + turn, qdot)
    else:
        qddot = model.acceleration(q, qdot)
        turned = model.acceleration(q + turn, qdot)
        assert not np.allclose(model.acceleration(q + shift, qdot), qddot)
    np.testing.assert_allclose(turned, qddot, rtol=1e-9, atol=1e-12)
    assert model.angles == (0, 2)
