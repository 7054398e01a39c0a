"""The specialised code paths that make `lagrax.acceleration` fast must agree with
plain autodiff: values, derivatives (training differentiates through them), and
every transformation a user may apply."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import lagrax
from lagrax._mlp_jet import softplus_derivatives


def _autodiff_softplus_derivatives(z):
    ones = jnp.ones_like(z)

    def first(z):
        return jax.jvp(jax.nn.softplus, (z,), (ones,))

    def second(z):
        return jax.jvp(first, (z,), (ones,))

    ((s, ds), (_, dds)), (_, (_, ddds)) = jax.jvp(second, (z,), (ones,))
    return s, ds, dds, ddds


def _reference_softplus_derivatives(z):
    """σ and its first three derivatives in extended precision, without cancellation."""
    z = np.asarray(z, np.longdouble)
    e = np.exp(-np.abs(z))
    return (
        np.maximum(z, 0) + np.log1p(e),
        np.where(z >= 0, 1, e) / (1 + e),
        e / (1 + e) ** 2,
        np.where(z >= 0, 1, -1) * e * np.expm1(-np.abs(z)) / (1 + e) ** 3,
    )


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_softplus_derivatives_match_autodiff(dtype):
    z = jnp.concatenate(
        [
            jnp.linspace(-60, 60, 2001, dtype=dtype),
            jnp.array([0.0, -0.0, 1e-8, -1e-8], dtype),
        ]
    )
    closed = softplus_derivatives(z)
    autodiff = _autodiff_softplus_derivatives(z)
    reference = _reference_softplus_derivatives(z)
    eps = float(jnp.finfo(dtype).eps)
    for mine, theirs, exact in zip(closed, autodiff, reference):
        assert mine.dtype == dtype
        np.testing.assert_allclose(mine, exact.astype(np.float64), rtol=8 * eps, atol=0)
        # Autodiff's σ'' = σ'·(1 − σ') (and so σ''') cancels for z > 0, so it agrees
        # to round-off relative to the scale of each quantity, not entrywise.
        np.testing.assert_allclose(mine, theirs, rtol=8 * eps, atol=32 * eps)


def test_softplus_derivatives_at_extremes():
    z = jnp.array([-jnp.inf, -1e4, 1e4, jnp.inf])
    s, ds, dds, ddds = softplus_derivatives(z)
    np.testing.assert_array_equal(s, [0.0, 0.0, 1e4, jnp.inf])
    np.testing.assert_array_equal(ds, [0.0, 0.0, 1.0, 1.0])
    np.testing.assert_array_equal(dds, [0.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(ddds, [0.0, 0.0, 0.0, 0.0])
    assert np.all(np.isnan(softplus_derivatives(jnp.array([jnp.nan]))))


@pytest.mark.parametrize("z", [0.0, -0.0, 0.3, -2.5, 40.0])
def test_softplus_derivatives_are_differentiable(z):
    # The derivative of each of σ to σ''' must be the next, also at the branch
    # point 0 (σ'''' = σ''·(1 − 6s + 6s²) with s = σ').
    z = jnp.asarray(z, jnp.float64)
    sig = jax.nn.sigmoid(z)
    curvature = sig * (1 - sig)
    expected = (
        sig,
        curvature,
        curvature * (1 - 2 * sig),
        curvature * (1 - 6 * sig + 6 * sig**2),
    )
    for i, want in enumerate(expected):
        got = jax.grad(lambda z: softplus_derivatives(z)[i])(z)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
        fwd = jax.jvp(lambda z: softplus_derivatives(z)[i], (z,), (jnp.ones_like(z),))[
            1
        ]
        np.testing.assert_allclose(fwd, want, rtol=1e-12, atol=1e-15)


def _generic(model):
    # A plain function is not an AbstractJetLagrangian: autodiff path.
    return lambda q, qdot: model(q, qdot)


@pytest.mark.parametrize("activation", [jax.nn.softplus, jnp.tanh])
@pytest.mark.parametrize(
    "dof, angles", [(1, ()), (3, ()), (1, (0,)), (3, (0, 2)), (3, (1,))]
)
def test_jet_matches_autodiff(activation, dof, angles, getkey):
    model = lagrax.MLPLagrangian(
        dof,
        width=20,
        depth=3,
        activation=activation,
        angles=angles,
        dtype=jnp.float64,
        key=getkey(),
    )
    q = jr.normal(getkey(), (dof,), jnp.float64)
    qdot = jr.normal(getkey(), (dof,), jnp.float64)
    directions = jr.normal(getkey(), (2 * dof, dof + 2), jnp.float64)

    @eqx.filter_jit  # one compilation, where eagerly each operation compiles
    def jet_and_autodiff(model, q, qdot, directions):
        x = jnp.concatenate([q, qdot])
        full = lambda x: model(x[:dof], x[dof:])  # noqa: E731
        hessian = directions.T @ jax.hessian(full)(x) @ directions
        return model.jet(q, qdot, directions), (jax.grad(full)(x), hessian)

    (grad, block), (expected_grad, expected) = jet_and_autodiff(
        model, q, qdot, directions
    )
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(block, expected, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("angles", [(), (1,)])
def test_parameter_gradients_match_autodiff(angles, getkey):
    """Training differentiates through `jet`: its parameter gradients must agree."""
    model = lagrax.MLPLagrangian(
        2, width=24, depth=2, angles=angles, dtype=jnp.float64, key=getkey()
    )
    qs = jr.normal(getkey(), (6, 2), jnp.float64)
    qdots = jr.normal(getkey(), (6, 2), jnp.float64)
    targets = jr.normal(getkey(), (6, 2), jnp.float64)

    def loss(model, as_function):
        lagrangian = _generic(model) if as_function else model
        pred = jax.vmap(lagrax.acceleration, in_axes=(None, 0, 0))(
            lagrangian, qs, qdots
        )
        return jnp.mean(jnp.abs(pred - targets))

    grad = eqx.filter_jit(eqx.filter_grad(loss))  # compiled: faster than eager here
    fast = grad(model, False)
    slow = grad(model, True)
    for a, b in zip(jax.tree_util.tree_leaves(fast), jax.tree_util.tree_leaves(slow)):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


def test_forward_and_reverse_mode_agree(getkey):
    """Implicit solvers take forward-mode Jacobians of the vector field."""
    model = lagrax.MLPLagrangian(2, width=16, depth=2, dtype=jnp.float64, key=getkey())
    q = jr.normal(getkey(), (2,), jnp.float64)
    qdot = jr.normal(getkey(), (2,), jnp.float64)

    @eqx.filter_jit  # one compilation for the three, faster than eager here
    def jacobians(model, q, qdot):
        fwd = jax.jacfwd(lagrax.acceleration, argnums=(1, 2))(model, q, qdot)
        rev = jax.jacrev(lagrax.acceleration, argnums=(1, 2))(model, q, qdot)
        ref = jax.jacrev(lagrax.acceleration, argnums=(1, 2))(_generic(model), q, qdot)
        return fwd, rev, ref

    for a, b, c in zip(*jacobians(model, q, qdot)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(a, c, rtol=1e-8, atol=1e-10)


def test_float32_large_preactivations_stay_finite(getkey):
    # Inputs of size 1e3 push pre-activations far into softplus's tails.
    model = lagrax.MLPLagrangian(2, width=32, depth=2, dtype=jnp.float32, key=getkey())
    q = jnp.array([1e3, -1e3], jnp.float32)
    qdot = jnp.array([-1e3, 1e3], jnp.float32)
    n = 2
    directions = jnp.eye(2 * n, dtype=jnp.float32)
    grad, block = model.jet(q, qdot, directions)
    assert np.all(np.isfinite(grad)) and np.all(np.isfinite(block))


def _prior(q, qdot):
    # A term without a jet of its own: a LagrangianSum differentiates it by autodiff.
    return 0.5 * jnp.sum(qdot**2) - jnp.sum(jnp.cos(q))


@pytest.mark.parametrize(
    "kind, activation, angles",
    [
        ("mlp", jnp.tanh, (1,)),
        ("sum", jax.nn.softplus, (0,)),
        ("rescaled", jax.nn.softplus, ()),
    ],
)
def test_batch_jet_and_its_gradient_match_the_per_state_jet(
    kind, activation, angles, getkey
):
    """`batch_jet` (a hand-written gradient for an MLP) must agree with the `vmap`
    of `jet` (autodiff through it): values, parameter gradients and state
    gradients, for a random function of its outputs; and the training loss, which
    goes through it, with the loss built on `lagrax.acceleration`."""
    dof, batch = 2, 5
    mlp = lagrax.MLPLagrangian(
        dof,
        width=16,
        depth=3,
        activation=activation,
        angles=angles,
        dtype=jnp.float64,
        key=getkey(),
    )
    if kind == "sum":
        model = lagrax.LagrangianSum.of((mlp, 1.0), (_prior, 2.0))
    elif kind == "rescaled":
        model = lagrax.Rescaled(mlp, q_scale=(10.0, 2.0), qdot_scale=3.0)
    else:
        model = mlp
    q, qdot, qddot = (jr.normal(getkey(), (batch, dof), jnp.float64) for _ in "abc")
    directions = jr.normal(getkey(), (batch, 2 * dof, dof + 1), jnp.float64)
    mix_grad = jr.normal(getkey(), (batch, 2 * dof), jnp.float64)
    mix_block = jr.normal(getkey(), (batch, dof + 1, dof + 1), jnp.float64)

    params, static = eqx.partition(model, eqx.is_inexact_array)

    def scalar(params, q, qdot, batched):
        model = eqx.combine(params, static)
        jet = model.batch_jet if batched else jax.vmap(model.jet)
        grad, block = jet(q, qdot, directions)
        return jnp.sum(jnp.sin(grad) * mix_grad) + jnp.sum(block * mix_block)

    @jax.jit
    def both(params, q, qdot):
        value = jax.value_and_grad(scalar, argnums=(0, 1, 2))
        return value(params, q, qdot, True), value(params, q, qdot, False)

    (fast, fast_grads), (slow, slow_grads) = both(params, q, qdot)
    np.testing.assert_allclose(fast, slow, rtol=1e-12)
    for a, b in zip(jax.tree.leaves(fast_grads), jax.tree.leaves(slow_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)

    data = lagrax.AccelerationData(q=q, qdot=qdot, qddot=qddot)

    def per_state_loss(model):
        pred = jax.vmap(lagrax.acceleration, in_axes=(None, 0, 0))(model, q, qdot)
        return jnp.mean(jnp.abs(pred - qddot))

    loss, grads = eqx.filter_jit(eqx.filter_value_and_grad(lagrax.acceleration_loss))(
        model, data
    )
    expected, expected_grads = eqx.filter_jit(
        eqx.filter_value_and_grad(per_state_loss)
    )(model)
    np.testing.assert_allclose(loss, expected, rtol=1e-12)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(expected_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
