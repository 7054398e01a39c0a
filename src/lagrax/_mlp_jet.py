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

`mlp_jet_state` is the same pass at one state, with a hand-written *forward*
derivative (`jax.custom_jvp`): its linearization is a few matrix products per
layer in the tangents of the weights, biases and inputs and the saved σ', σ''
and σ''' of the forward pass. Reverse mode is JAX's transpose of it, so every
transformation composes in any order (`vmap` of `grad`, `grad` of `vmap`, `jvp`,
higher orders), and `vmap` before the transpose makes each weight tangent's
product one matrix product contracting over the batch: no weight gradient per
state. `MLPLagrangian.jet` runs it, and so `jax.vmap(lagrax.acceleration)` and
every solver's vector field.

The linearization carries the tangents' tangents (`Ṫ_l`, `ṫ_l`) as `k` separate
vectors, not one `(k, width)` array: batched, a weight's gradient from the
product `t Ẇᵀ` then contracts `k` matrices over the batch axis alone, which
XLA's CPU backend multiplies in place, where contracting a `(batch, k, width)`
array over two axes makes it copy a transposed `(width, batch·k)` operand first.
Measured with `python benchmarks/train_step.py --pytorch` (4-500-500-1, batch
1024, float32, two cores): the user-written vmapped loss 1.11–1.19× the time of
`acceleration_loss` with the array, 1.03–1.09× with the vectors.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero
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
    deltas: list[Array] = []  # last layer first, reversed below
    for index in reversed(range(len(weights))):
        _, _, tangents, ds, dds, _ = saved[index]
        deltas.append(delta)
        curved = tangents * (dds * delta)[:, None]
        hessian = hessian + jnp.einsum("bkw,bjw->bkj", curved, tangents)
        delta = (ds * delta) @ weights[index]
    return (delta, hessian), (saved, deltas[::-1])


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
    weight_bars: list[Array] = []
    ds_bars: list[Array] = []
    dds_bars: list[Array] = []

    # Adjoint sweep: δ_{l−1} = (σ' ⊙ δ_l) W_l and the Hessian's weights σ'' ⊙ δ_l.
    delta_bar = grad_bar
    for index in range(layers):
        _, _, tangents, ds, dds, _ = saved[index]
        delta = deltas[index]
        a_bar = delta_bar @ weights[index].T
        weight_bars.append((ds * delta).T @ delta_bar)
        # ∂/∂D of Σ_ij H̄_ij Σ_w T_iw D_w T_jw.
        curvature_bar = jnp.sum(tangents * _combine(hessian_bar, tangents), axis=1)
        ds_bars.append(delta * a_bar)
        dds_bars.append(delta * curvature_bar)
        delta_bar = ds * a_bar + dds * curvature_bar
    out_weight_bar = jnp.sum(delta_bar, axis=0)

    # Forward sweep: z_l, T_l from (x_{l−1}, t_{l−1}); x_l = σ(z_l), t_l = σ' ⊙ T_l.
    bias_bars: list[Array] = []  # last layer first, reversed below
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
        bias_bars.append(jnp.sum(z_bar, axis=0))
    return tuple(weight_bars), tuple(bias_bars[::-1]), out_weight_bar, x_bar, t_bar


mlp_jet.defvjp(_mlp_jet_fwd, _mlp_jet_bwd)


def _state_forward(activation, weights, biases, out_weight, x0, t0):
    """`_forward` at one state (`x0` of shape `(in,)`, `t0` of shape `(k, in)`):
    the values, and what the linearization reads."""
    x, t = x0, t0
    saved = []
    for weight, bias in zip(weights, biases):
        weight_t = transposed(weight)
        z = x @ weight_t + bias
        tangents = t @ weight_t
        s, ds, dds, ddds = activation_derivatives(activation, z)
        saved.append((x, t, tangents, ds, dds, ddds))
        x, t = s, ds[None, :] * tangents
    delta = out_weight
    hessian = jnp.zeros((t0.shape[0],) * 2, x0.dtype)
    deltas: list[Array] = []  # last layer first, reversed below
    for index in reversed(range(len(weights))):
        _, _, tangents, ds, dds, _ = saved[index]
        deltas.append(delta)
        hessian = hessian + (tangents * (dds * delta)[None, :]) @ tangents.T
        delta = (ds * delta) @ weights[index]
    return (delta, hessian), (saved, deltas[::-1])


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def mlp_jet_state(
    activation: Callable[[Array], Array],
    weights: tuple[Float[Array, "_ _"], ...],
    biases: tuple[Float[Array, " _"], ...],
    out_weight: Float[Array, " _"],
    x0: Float[Array, " features"],
    t0: Float[Array, "k features"],
) -> tuple[Float[Array, " features"], Float[Array, "k k"]]:
    """`(∇L, Uᵀ∇²L U)` of the MLP `L` at one input `x0`, along the input tangents
    `t0` (`Uᵀ`, the `k` directions as rows), with a hand-written linearization.

    **Arguments:** as for `mlp_jet`, at one state: `x0` of shape `(in,)` and `t0`
    of shape `(k, in)`.
    """
    return _state_forward(activation, weights, biases, out_weight, x0, t0)[0]


# A tangent is `None` where JAX passes a symbolic zero, and a product with one is
# skipped: forward mode in the state alone (as Newton's method takes it) then
# costs no product with a weight tangent.
def _plus(*terms):
    terms = [term for term in terms if term is not None]
    return sum(terms[1:], terms[0]) if terms else None


def _times(a, b):
    return None if a is None or b is None else a * b


def _matmul(a, b):
    return None if a is None or b is None else a @ b


def _by_transposed(a, weight):
    """`a @ weight.T`, contracting the last axes of both: no transpose in the
    program for XLA to copy when it transposes this product into the weight's
    gradient."""
    if weight is None:
        return None
    return jax.lax.dot_general(a, weight, (((a.ndim - 1,), (1,)), ((), ())))


def _nonzero(tangent):
    return None if isinstance(tangent, SymbolicZero) else tangent


def _mlp_jet_state_jvp(activation, primals, tangents):
    """The derivative of `_state_forward` along the tangents of every argument:
    forward through the layers (`ż_l`, `Ṫ_l`), then back through the adjoint
    sweep (`δ̇_l`, and `Ḣ = Σ_l Ṫ C Tᵀ + T C Ṫᵀ + T Ċ Tᵀ`, `C = diag(σ'' ⊙ δ)`).
    `ṫ` and `Ṫ` are lists of `k` vectors (see the module's docstring), `None`
    where zero."""
    weights = primals[0]
    (delta, hessian), (saved, deltas) = _state_forward(activation, *primals)
    weight_dots, bias_dots, out_dot, x_dot, t_dot = jax.tree.map(
        _nonzero, tangents, is_leaf=lambda x: isinstance(x, SymbolicZero)
    )
    # `ṫ` and `Ṫ` in blocks of their rows: each row a vector where a weight has a
    # tangent (see the module's docstring), else one block of all `k` rows (fewer
    # operations: the Newton iterations' derivative in the state). The blocks
    # are all arrays or all `None` (a zero tangent).
    k = primals[-1].shape[0]
    split = any(weight_dot is not None for weight_dot in weight_dots)
    blocks: list[int | slice] = list(range(k)) if split else [slice(None)]
    t_dot = [None if t_dot is None else t_dot[rows] for rows in blocks]
    z_dots, tangents_dots = [], []
    for index, weight in enumerate(weights):
        x, t, tangents_, ds, dds, _ = saved[index]
        weight_t = transposed(weight)
        weight_dot = weight_dots[index]
        z_dot = _plus(
            _matmul(x_dot, weight_t), _by_transposed(x, weight_dot), bias_dots[index]
        )
        tangents_dot = [
            _plus(_matmul(block, weight_t), _by_transposed(t[rows], weight_dot))
            for block, rows in zip(t_dot, blocks)
        ]
        z_dots.append(z_dot)
        tangents_dots.append(tangents_dot)
        x_dot = _times(ds, z_dot)
        ds_dot = _times(dds, z_dot)
        if not split:  # scale the rows of one (k, width) block
            ds, ds_dot = ds[None, :], None if ds_dot is None else ds_dot[None, :]
        t_dot = [
            _plus(_times(ds_dot, tangents_[rows]), _times(ds, block))
            for block, rows in zip(tangents_dot, blocks)
        ]
    delta_dot, hessian_dot = out_dot, None
    for index in reversed(range(len(weights))):
        _, _, tangents_, ds, dds, ddds = saved[index]
        z_dot, tangents_dot, d = z_dots[index], tangents_dots[index], deltas[index]
        curvature = dds * d
        curvature_dot = _plus(_times(ddds * d, z_dot), _times(dds, delta_dot))
        if tangents_dot and tangents_dot[0] is not None:
            curved_t = (tangents_ * curvature[None, :]).T
            half = jnp.stack([block @ curved_t for block in tangents_dot])
            half = half.reshape(k, k)
            hessian_dot = _plus(hessian_dot, half, half.T)
        if curvature_dot is not None:
            curved = (tangents_ * curvature_dot[None, :]) @ tangents_.T
            hessian_dot = _plus(hessian_dot, curved)
        adjoint_dot = _plus(_times(curvature, z_dot), _times(ds, delta_dot))
        delta_dot = _plus(
            _matmul(adjoint_dot, weights[index]), _matmul(ds * d, weight_dots[index])
        )
    if delta_dot is None:
        delta_dot = jnp.zeros_like(delta)
    if hessian_dot is None:
        hessian_dot = jnp.zeros_like(hessian)
    return (delta, hessian), (delta_dot, hessian_dot)


mlp_jet_state.defjvp(_mlp_jet_state_jvp, symbolic_zeros=True)
