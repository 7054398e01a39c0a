"""`MLPLagrangian.jet` carries a hand-written derivative (`mlp_jet_state`, a
`jax.custom_jvp`). Everything differentiated through it must equal plain
autodiff of the same Lagrangian, under every order of transformations: values,
parameter gradients and state gradients of vmapped accelerations, energies and
momenta (`vmap` inside `grad`, `vmap` of `grad`, `jvp` of `vmap`, under `jit`),
for an `MLPLagrangian`, a `LagrangianSum` and a `Rescaled` one, and the gradient
of a rollout loss through an explicit and an implicit solver."""

import functools
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import lagrax
from lagrax._mlp_jet import _state_forward


class _Plain(lagrax.AbstractLagrangian):
    """The same Lagrangian without a `jet`: lagrax differentiates it by autodiff."""

    inner: Callable

    def __call__(self, q, qdot):
        return self.inner(q, qdot)


def _prior(q, qdot):
    return 0.5 * jnp.sum(qdot**2) - jnp.sum(jnp.cos(q))


def _model(kind, key):
    mlp = lagrax.MLPLagrangian(2, width=12, depth=2, dtype=jnp.float64, key=key)
    if kind == "sum":
        return lagrax.LagrangianSum.of((mlp, 0.5), (_prior, 2.0))
    if kind == "rescaled":
        return lagrax.Rescaled(mlp, q_scale=(2.0, 0.5), qdot_scale=3.0)
    return mlp


def _assert_trees_close(fast, slow, rtol):
    """Leaf by leaf, to `rtol` relative to each leaf's largest entry (entries
    that cancel carry the round-off of the large ones)."""
    fast_leaves, slow_leaves = jax.tree.leaves(fast), jax.tree.leaves(slow)
    assert len(fast_leaves) == len(slow_leaves) > 0
    for a, b in zip(fast_leaves, slow_leaves):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.max(np.abs(b)))


@pytest.mark.parametrize("kind", ["mlp", "sum", "rescaled"])
def test_transformations_of_vmapped_mechanics_match_autodiff(kind, getkey):
    model = _model(kind, getkey())
    batch = 3
    q, qdot, dq, dqdot = (jr.normal(getkey(), (batch, 2), jnp.float64) for _ in "abcd")
    mix = jr.normal(getkey(), (batch, 4), jnp.float64)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    tangent = jax.tree.map(lambda x: jr.normal(getkey(), x.shape, x.dtype), params)

    def one(lagrangian, q, qdot, mix):
        """A scalar of accelerations, energy and momentum at one state."""
        acc = lagrax.acceleration(lagrangian, q, qdot)
        p = lagrax.momentum(lagrangian, q, qdot)
        return (
            jnp.sum(jnp.sin(acc) * mix[:2])
            + jnp.sum(p * mix[2:])
            + mix[0] * lagrax.energy(lagrangian, q, qdot)
        )

    def results(params, plain):
        def lagrangian(params):
            model = eqx.combine(params, static)
            return _Plain(model) if plain else model

        def batched(params, q, qdot):
            values = jax.vmap(one, in_axes=(None, 0, 0, 0))(
                lagrangian(params), q, qdot, mix
            )
            return jnp.sum(values)

        def accelerations(params, q, qdot):
            return jax.vmap(lagrax.acceleration, in_axes=(None, 0, 0))(
                lagrangian(params), q, qdot
            )

        out = (
            # vmap inside grad: a loss on a batch (parameters and states).
            jax.value_and_grad(batched, argnums=(0, 1, 2))(params, q, qdot),
            # forward mode through vmapped accelerations, in the states and in
            # the parameters.
            jax.jvp(accelerations, (params, q, qdot), (tangent, dq, dqdot)),
        )
        if kind != "mlp":
            # A sum or a rescaling composes autodiff with the MLP's rule: the
            # orders below are the MLP's own (checked once, to keep this fast).
            return out
        per_example = jax.vmap(
            jax.grad(lambda p, q, v, m: one(lagrangian(p), q, v, m), argnums=(0, 1, 2)),
            in_axes=(None, 0, 0, 0),
        )
        return out + (
            # grad inside vmap: per-example gradients.
            per_example(params, q, qdot, mix),
            # forward mode inside vmap (Newton's method over a batch of solves).
            jax.vmap(
                lambda q, v, dq, dv: jax.jvp(
                    lambda q, v: lagrax.acceleration(lagrangian(params), q, v),
                    (q, v),
                    (dq, dv),
                )
            )(q, qdot, dq, dqdot),
        )

    fast, slow = jax.jit(lambda p: (results(p, False), results(p, True)))(params)
    _assert_trees_close(fast, slow, rtol=1e-9)


def test_rollout_loss_gradient_matches_autodiff(getkey):
    """Inside a solve (vmapped over trajectories, differentiated through Diffrax's
    adjoint; the implicit solver's Newton iterations take forward-mode Jacobians
    of the jet, so every order of the transformations meets the rule). An
    explicit solver's field is the vmapped acceleration tested above."""
    solver, controller = lagrax.VariationalMidpoint(), None
    # A definite mass matrix everywhere: a known kinetic term plus a learned part.
    mlp = lagrax.MLPLagrangian(2, width=8, depth=2, dtype=jnp.float64, key=getkey())
    model = lagrax.LagrangianSum.of((_prior, 1.0), (mlp, 0.01))
    ts = jnp.linspace(0.0, 0.1, 3)
    q = jnp.sin(ts[None, :, None] + jr.normal(getkey(), (2, 1, 2), jnp.float64))
    qdot = jnp.cos(ts[None, :, None] + jr.normal(getkey(), (2, 1, 2), jnp.float64))
    data = lagrax.TrajectoryData(ts=ts, q=q, qdot=qdot)

    def loss(lagrangian):
        return lagrax.rollout_loss(
            lagrangian,
            data,
            solver=solver,
            dt0=0.05,
            stepsize_controller=controller,
            max_steps=2,
        )

    @eqx.filter_jit
    def both(model):
        value = eqx.filter_value_and_grad(loss)
        return value(model), value(_Plain(model))

    (fast, fast_grad), (slow, slow_grad) = both(model)
    assert np.isfinite(fast) and fast > 0
    np.testing.assert_allclose(fast, slow, rtol=1e-10)
    _assert_trees_close(fast_grad, slow_grad.inner, rtol=1e-8)


def test_jet_forward_mode_in_each_argument_matches_autodiff(getkey):
    """The rule skips the products of tangents that are zero: forward mode in the
    weights alone, the state alone or the directions alone (and all at once) must
    each equal autodiff through the same pass without the rule."""
    mlp = lagrax.MLPLagrangian(2, width=8, depth=2, dtype=jnp.float64, key=getkey())
    q, qdot, dq, dqdot = (jr.normal(getkey(), (2,), jnp.float64) for _ in "abcd")
    u, du = (jr.normal(getkey(), (4, 3), jnp.float64) for _ in "ab")
    params, static = eqx.partition(mlp, eqx.is_inexact_array)
    dparams = jax.tree.map(lambda x: jr.normal(getkey(), x.shape, x.dtype), params)
    zero = jax.tree.map(jnp.zeros_like, (params, q, qdot, u))
    full = (dparams, dq, dqdot, du)

    def jet(params, q, qdot, u, plain):
        model = eqx.combine(params, static)
        if not plain:
            return model.jet(q, qdot, u)
        hidden = model.layers[:-1]
        return _state_forward(
            model.activation,
            tuple(layer.weight for layer in hidden),
            tuple(layer.bias for layer in hidden),
            model.layers[-1].weight[0],
            jnp.concatenate([q, qdot]),
            u.T,
        )[0]

    def tangents(plain):
        out = []
        for which in range(5):  # each argument alone, then all of them
            tangent = tuple(
                t if which in (i, 4) else z for i, (t, z) in enumerate(zip(full, zero))
            )
            f = functools.partial(jet, plain=plain)
            out.append(jax.jvp(f, (params, q, qdot, u), tangent))
        return out

    fast, slow = jax.jit(lambda: (tangents(False), tangents(True)))()
    _assert_trees_close(fast, slow, rtol=1e-10)
