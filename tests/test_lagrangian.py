import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
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
    assert isinstance(model, lagrax.MLPLagrangian | lagrax.NeuralODEBaseline)
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


class _CountingMLP(lagrax.MLPLagrangian):
    """An MLPLagrangian that counts how often its structured `jet` is traced."""

    def jet(self, q, qdot, directions):
        _CountingMLP.traced += 1
        return super().jet(q, qdot, directions)


def test_sums_of_lagrangians_keep_the_fast_path(getkey):
    """`prior + 0.1 * mlp` moves as the plain function does (values and parameter
    gradients), through the MLP's own `jet`; scaling a Lagrangian leaves the
    motion unchanged, and subtracting a term cancels it."""
    prior = lagrax.systems.DoublePendulum()
    # Equinox gives the subclass MLPLagrangian's `__init__`; the checker synthesises
    # a dataclass one from the fields instead.
    mlp = _CountingMLP(2, width=16, depth=2, dtype=jnp.float64, key=getkey())  # pyright: ignore[reportCallIssue]
    q, qdot = jr.normal(getkey(), (2, 2), jnp.float64)
    model = prior + 0.1 * mlp
    assert isinstance(model, lagrax.LagrangianSum)
    assert model.terms == (prior, mlp) and model.weights == (1, 0.1)

    def loss(model, lagrangian):
        return jnp.sum(jnp.sin(lagrax.acceleration(lagrangian(model), q, qdot)))

    @eqx.filter_jit
    def compare(model):
        plain = lambda m: lambda q, v: prior(q, v) + 0.1 * m.terms[1](q, v)  # noqa: E731
        return [
            eqx.filter_value_and_grad(loss)(model, fn) for fn in (lambda m: m, plain)
        ], [
            lagrax.acceleration(fn(model), q, qdot)
            for fn in (
                lambda m: m,
                lambda m: 2.5 * m,
                lambda m: -m / 3,
                lambda m: m - 0.1 * m.terms[1],
                lambda m: m.terms[0],
            )
        ]

    _CountingMLP.traced = 0
    (fast, generic), (unscaled, scaled, negated, cancelled, exact) = compare(model)
    assert _CountingMLP.traced > 0  # the sum used the MLP's structured pass
    assert eqx.tree_equal(fast, generic, rtol=1e-12, atol=1e-12)
    assert jnp.allclose(scaled, unscaled, rtol=1e-12)
    assert jnp.allclose(negated, unscaled, rtol=1e-12)
    assert jnp.allclose(cancelled, exact, rtol=1e-12, atol=1e-12)
    # 0-d arrays are weights too (trainable leaves); anything else is refused.
    assert (jnp.array(0.5) * prior).weights[0].shape == ()
    for bad in (lambda: prior + 3.0, lambda: prior * "a", lambda: prior * jnp.ones(2)):
        with pytest.raises(TypeError):
            bad()
    ring = lagrax.GraphLagrangian([0], [1], num_nodes=2, node_dim=1, key=getkey())
    for bad in (lambda: prior + ring, lambda: ring + prior, lambda: 2.0 * ring):
        with pytest.raises(TypeError, match="GraphLagrangian cannot be summed"):
            bad()


@pytest.mark.parametrize(
    "activation", [jax.nn.relu, jax.nn.leaky_relu, jax.nn.relu6, lambda x: 2 * x]
)
@pytest.mark.parametrize(
    "build",
    [
        lambda a: lagrax.MLPLagrangian(2, width=4, activation=a, key=jr.key(0)),
        lambda a: lagrax.HamiltonianNN(2, width=4, activation=a, key=jr.key(0)),
        lambda a: lagrax.GraphLagrangian(
            [0], [1], num_nodes=2, node_dim=1, width=4, activation=a, key=jr.key(0)
        ),
    ],
)
def test_piecewise_linear_activations_are_refused(build, activation):
    """Their second derivative vanishes, and with it the mass matrix: refused when
    the model is built, not a singular matrix at the first training step."""
    with pytest.raises(ValueError, match="zero second derivative"):
        build(activation)


def test_smooth_activations_build_and_load_under_tracing():
    for activation in (jax.nn.softplus, jnp.tanh, jax.nn.silu, jax.nn.gelu):
        model = lagrax.MLPLagrangian(2, width=4, activation=activation, key=jr.key(0))
        shape = eqx.filter_eval_shape(
            lagrax.MLPLagrangian, 2, width=4, activation=activation, key=jr.key(0)
        )
        arrays = eqx.filter(model, eqx.is_array)
        structs = eqx.filter(shape, lambda x: isinstance(x, jax.ShapeDtypeStruct))
        assert jax.tree.map(jnp.shape, arrays) == jax.tree.map(jnp.shape, structs)


def test_rescaled_oscillator_has_the_closed_form_motion():
    """inner = ½v² − ½x² seen through x = q/a, v = q̇/b: L = ½q̇²/b² − ½q²/a², so
    q̈ = −(b/a)² q, through the structured pass of an MLP-free inner too."""
    oscillator = lagrax.systems.HarmonicOscillator()
    q, qdot = jnp.array([0.7]), jnp.array([-0.2])
    for inner in (oscillator, lambda q, qdot: oscillator(q, qdot)):
        rescaled = lagrax.Rescaled(inner, q_scale=4.0, qdot_scale=(0.5,))
        np.testing.assert_allclose(
            lagrax.acceleration(rescaled, q, qdot), -((0.5 / 4.0) ** 2) * q, rtol=1e-6
        )
        np.testing.assert_allclose(
            lagrax.mass_matrix(rescaled, q, qdot), [[1 / 0.25]], rtol=1e-6
        )


def test_rescaled_jet_matches_autodiff():
    model = lagrax.MLPLagrangian(2, width=8, key=jr.key(0), dtype=jnp.float64)
    rescaled = lagrax.Rescaled(model, q_scale=(10.0, 2.0), qdot_scale=0.5)
    q, qdot = jnp.array([1.0, -2.0]), jnp.array([0.3, 0.1])
    directions = jr.normal(jr.key(1), (4, 3), jnp.float64)
    grad, block = rescaled.jet(q, qdot, directions)

    def flat(x):
        return rescaled(x[:2], x[2:])

    x = jnp.concatenate([q, qdot])
    np.testing.assert_allclose(grad, jax.grad(flat)(x), rtol=1e-10)
    hessian = jax.hessian(flat)(x)
    np.testing.assert_allclose(block, directions.T @ hessian @ directions, rtol=1e-9)


@pytest.mark.parametrize(
    "options, error, message",
    [
        (dict(q_scale=0.0), ValueError, "`q_scale` must be a positive finite"),
        (dict(qdot_scale=(1.0, -1.0)), ValueError, "`qdot_scale` must be a positive"),
        (dict(q_scale=[1.0, 2.0]), (TypeError, ValueError), "q_scale"),
        (dict(q_scale=(1.0, 2.0, 3.0)), ValueError, "`q_scale` has 3 entries"),
    ],
)
def test_rescaled_refuses_bad_scales(options, error, message):
    oscillator = lagrax.systems.HarmonicOscillator()
    with pytest.raises(error, match=message):
        rescaled = lagrax.Rescaled(oscillator, **options)
        lagrax.acceleration(rescaled, jnp.ones(2), jnp.ones(2))
