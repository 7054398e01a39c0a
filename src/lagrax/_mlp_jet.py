"""The structured derivative pass of a scalar MLP over a batch of states, with a
hand-written reverse-mode derivative: the hot path of training an `MLPLagrangian`
on accelerations.

For hidden layers `z_l = W_l x_{l−1} + b_l`, `x_l = σ(z_l)` and the output
`L = w·x_m + b`, the pass carries `k` input tangents `T_l = ∂z_l/∂x · U` forward
(rows of a `(k, width)` array per state) and the adjoint `δ_l = ∂L/∂x_l` backward,
and returns `∇L = δ_0` and `Uᵀ∇²L U = Σ_l T_l diag(σ''(z_l) ⊙ δ_l) T_lᵀ`
(`MLPLagrangian.jet` derives it). Autodiff through that pass works (it is how the
per-state `jet` is trained) but, batched, it spends about a third of a training
step on transposed copies of the tangent cotangents, small batched products and
a long chain of elementwise passes. `mlp_jet` writes the reverse pass by hand
over the whole batch instead: per layer one product for the primal cotangent, one
for the `k` tangent cotangents and one for the adjoint's, and the weight gradient
from the saved activations, σ', σ'' and σ''' of the forward pass, each a single
matrix product contracting over the batch.

It must see the batch: `jax.vmap` of a `custom_vjp` function whose weights are
not batched materialises one weight gradient per state before summing them.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def activation_derivatives(
    activation: Callable[[Array], Array], z: Float[Array, "*shape"]
) -> tuple[Array, Array, Array, Array]:
    """`σ(z), σ'(z), σ''(z), σ'''(z)` for an elementwise activation `σ` (what a
    caller does not use, XLA drops)."""
    if activation is jax.nn.softplus:
        return softplus_derivatives(z)
    ones = jnp.ones_like(z)

    def first(z):
        return jax.jvp(activation, (z,), (ones,))

    def second(z):
        return jax.jvp(first, (z,), (ones,))

    ((s, ds), (_, dds)), ((_, _), (_, ddds)) = jax.jvp(second, (z,), (ones,))
    return s, ds, dds, ddds


def softplus_derivatives(
    z: Float[Array, "*shape"],
) -> tuple[Array, Array, Array, Array]:
    """`softplus(z)` and its first three derivatives, sharing one exponential.

    Differentiating `jax.nn.softplus` with `jvp` costs half a dozen exponentials
    per unit (they dominate the elementwise work on CPU); here one suffices (and an
    `expm1` for `σ'''`). With `e = exp(−|z|)` and `r = 1/(1 + e)`:
    `σ = max(z, 0) + log1p(e)`, `σ' = r` for `z ≥ 0` and `e r` below, `σ'' = e r²`
    and `σ''' = ∓ e (1 − e) r³` (− for `z ≥ 0`; `1 − e = −expm1(−|z|)`): no
    cancellation for any `z`. Each branch is an exact formula on its side of 0,
    written with `where` rather than `abs`/`maximum`, so that derivatives of these
    (taken when training through `MLPLagrangian.jet`) are also exact at `z = 0`.
    """
    nonnegative = z >= 0
    negative_abs = jnp.where(nonnegative, -z, z)
    e = jnp.exp(negative_abs)
    r = 1 / (1 + e)
    s = jnp.where(nonnegative, z, 0) + jnp.log1p(e)
    dds = e * r * r
    ddds = jnp.where(nonnegative, dds, -dds) * jnp.expm1(negative_abs) * r
    return s, jnp.where(nonnegative, r, e * r), dds, ddds


def _combine(matrix: Float[Array, "batch k k"], t: Float[Array, "batch k w"]):
    """`matrix @ t` per state, unrolled over the small `k` (one fused pass; a
    batched matrix product of this shape is several times slower on CPU)."""
    k = t.shape[1]
    return jnp.stack(
        [sum(matrix[:, i, j, None] * t[:, j] for j in range(k)) for i in range(k)],
        axis=1,
    )


def _rows(x: Array) -> Array:
    """A `(batch, k, w)` array as `(batch·k, w)`: one matrix product for all."""
    return x.reshape(-1, x.shape[-1])


def transposed(weight: Float[Array, "m n"]) -> Float[Array, "n m"]:
    """`weight.T` as an array of its own, for products `x @ weight.T`.

    XLA folds a plain transpose into the product that uses it, and its CPU backend
    then runs some of these products several times slower (which ones depends on
    the shapes and on whether the weights are arguments or compile-time constants).
    Measured with the copy instead, on one core: `vmap`ped `lagrax.acceleration` of
    a 4-500-500-1 network at batch 1024, float32, model closed over by `jax.jit`
    62 → 27 ms (passed as an argument: 26 ms either way); float64, a 128-wide
    network passed as an argument, a `diffrax.Tsit5` step 99 → 61 µs and a
    `GaussLegendre()` step 105 → 72 µs (closed over: 58 µs either way and 87 → 71
    µs). The copy costs one pass over the weight (hoisted out of loops where the
    weight is fixed).
    """
    return jax.lax.optimization_barrier(weight.T)


def _forward(activation, weights, biases, out_weight, x0, t0):
    batch, k = t0.shape[:2]
    x, t = x0, t0
    saved = []
    for weight, bias in zip(weights, biases):
        z = x @ weight.T + bias[None, :]
        tangents = (_rows(t) @ weight.T).reshape(batch, k, -1)
        s, ds, dds, ddds = activation_derivatives(activation, z)
        saved.append((x, t, tangents, ds, dds, ddds))
        x, t = s, ds[:, None] * tangents
    delta = jnp.broadcast_to(out_weight, (batch, out_weight.shape[0]))
    hessian = jnp.zeros((batch, k, k), x0.dtype)
    deltas = [None] * len(weights)
    for index in reversed(range(len(weights))):
        _, _, tangents, ds, dds, _ = saved[index]
        deltas[index] = delta
        curved = tangents * (dds * delta)[:, None]
        hessian = hessian + jnp.einsum("bkw,bjw->bkj", curved, tangents)
        delta = (ds * delta) @ weights[index]
    return (delta, hessian), (saved, deltas)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def mlp_jet(
    activation: Callable[[Array], Array],
    weights: tuple[Float[Array, "_ _"], ...],
    biases: tuple[Float[Array, " _"], ...],
    out_weight: Float[Array, " _"],
    x0: Float[Array, "batch features"],
    t0: Float[Array, "batch k features"],
) -> tuple[Float[Array, "batch features"], Float[Array, "batch k k"]]:
    """`(∇L, Uᵀ∇²L U)` of the MLP `L` at a batch of inputs `x0`, along the input
    tangents `t0` (`Uᵀ` per state, the `k` directions as rows), with a
    hand-written reverse pass.

    **Arguments:**

    - `activation`: the elementwise activation `σ` of the hidden layers.
    - `weights`, `biases`: those of the hidden layers.
    - `out_weight`: the output layer's weight, as a vector (its bias does not
        enter the derivatives).
    - `x0`: the inputs, `(batch, in)`.
    - `t0`: the input tangents, `(batch, k, in)`.
    """
    return _forward(activation, weights, biases, out_weight, x0, t0)[0]


def _mlp_jet_fwd(activation, weights, biases, out_weight, x0, t0):
    outputs, (saved, deltas) = _forward(activation, weights, biases, out_weight, x0, t0)
    return outputs, (weights, saved, deltas)


def _mlp_jet_bwd(activation, residuals, cotangents):
    """The reverse pass, in the reverse order of `_forward`: first back through
    the adjoint sweep (first layer to last), then back through the forward sweep
    (last layer to first)."""
    del activation
    weights, saved, deltas = residuals
    grad_bar, hessian_bar = cotangents
    symmetric_bar = hessian_bar + jnp.swapaxes(hessian_bar, 1, 2)
    layers = len(weights)
    weight_bars, ds_bars, dds_bars = [None] * layers, [None] * layers, [None] * layers

    # Adjoint sweep: δ_{l−1} = (σ' ⊙ δ_l) W_l and the Hessian's weights σ'' ⊙ δ_l.
    delta_bar = grad_bar
    for index in range(layers):
        _, _, tangents, ds, dds, _ = saved[index]
        delta = deltas[index]
        a_bar = delta_bar @ weights[index].T
        weight_bars[index] = (ds * delta).T @ delta_bar
        # ∂/∂D of Σ_ij H̄_ij Σ_w T_iw D_w T_jw.
        curvature_bar = jnp.sum(tangents * _combine(hessian_bar, tangents), axis=1)
        ds_bars[index] = delta * a_bar
        dds_bars[index] = delta * curvature_bar
        delta_bar = ds * a_bar + dds * curvature_bar
    out_weight_bar = jnp.sum(delta_bar, axis=0)

    # Forward sweep: z_l, T_l from (x_{l−1}, t_{l−1}); x_l = σ(z_l), t_l = σ' ⊙ T_l.
    bias_bars = [None] * layers
    x_bar = t_bar = None
    for index in reversed(range(layers)):
        x, t, tangents, ds, dds, ddds = saved[index]
        curvature = dds * deltas[index]
        tangents_bar = _combine(symmetric_bar, tangents) * curvature[:, None]
        ds_bar = ds_bars[index]
        if t_bar is not None:
            tangents_bar = tangents_bar + ds[:, None] * t_bar
            ds_bar = ds_bar + jnp.sum(tangents * t_bar, axis=1)
        z_bar = dds * ds_bar + ddds * dds_bars[index]
        if x_bar is not None:
            z_bar = z_bar + ds * x_bar
        weight = weights[index]
        x_bar = z_bar @ weight
        t_bar = (_rows(tangents_bar) @ weight).reshape(t.shape)
        weight_bars[index] = (
            weight_bars[index] + z_bar.T @ x + _rows(tangents_bar).T @ _rows(t)
        )
        bias_bars[index] = jnp.sum(z_bar, axis=0)
    return tuple(weight_bars), tuple(bias_bars), out_weight_bar, x_bar, t_bar


mlp_jet.defvjp(_mlp_jet_fwd, _mlp_jet_bwd)
