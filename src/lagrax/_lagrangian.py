import abc
import functools
from collections.abc import Callable, Sequence
from typing import cast, ClassVar, Literal

import equinox as eqx
import jax
import jax.core
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.typing import DTypeLike
from jaxtyping import Array, Float, PRNGKeyArray

from ._custom_types import (
    BatchDirections,
    BatchJet,
    BatchStates,
    Position,
    Scalar,
    Velocity,
)
from ._misc import (
    angle_features,
    check_angles,
    check_curvature,
    check_dtype,
    check_int,
    check_state,
    is_real_number,
    split_angles,
)
from ._mlp_jet import mlp_jet, mlp_jet_state


class AbstractLagrangian(eqx.Module):
    """Base class for a Lagrangian `L(q, q̇)` of a system with `dof` degrees of freedom.

    Subclasses implement `__call__` for a single state; batch with `jax.vmap`. Every
    function in lagrax also accepts a plain callable `(q, qdot) -> scalar`, so
    subclassing is only needed to get a pytree of parameters (for training) or a
    named, documented system.

    Lagrangians add, subtract, negate and scale by numbers: `prior + 0.1 * mlp`,
    `-L`, `L / 2` and `L + fn` (with `fn` a plain callable) are `LagrangianSum`s,
    which keep each term's fast derivatives (see `LagrangianSum`).
    """

    # Whether `+`, `-` and `*` may build a `LagrangianSum` of this Lagrangian.
    _summable: ClassVar[bool] = True

    def __add__(self, other):
        if not callable(other):
            return NotImplemented
        return LagrangianSum.of((self, 1), (other, 1))

    def __radd__(self, other):
        if not callable(other):
            return NotImplemented
        return LagrangianSum.of((other, 1), (self, 1))

    def __sub__(self, other):
        if not callable(other):
            return NotImplemented
        return LagrangianSum.of((self, 1), (other, -1))

    def __rsub__(self, other):
        if not callable(other):
            return NotImplemented
        return LagrangianSum.of((other, 1), (self, -1))

    def __mul__(self, weight):
        if not is_real_number(weight):
            return NotImplemented
        return LagrangianSum.of((self, weight))

    __rmul__ = __mul__

    def __truediv__(self, weight):
        if not is_real_number(weight):
            return NotImplemented
        return LagrangianSum.of((self, 1 / weight))

    def __neg__(self):
        return LagrangianSum.of((self, -1))

    @abc.abstractmethod
    def __call__(self, q: Position, qdot: Velocity) -> Scalar:
        """**Arguments:**

        - `q`: generalized coordinates, shape `(dof,)`.
        - `qdot`: generalized velocities, shape `(dof,)`.

        **Returns:**

        The scalar Lagrangian `L(q, qdot)`.
        """


class AbstractJetLagrangian(AbstractLagrangian):
    """A Lagrangian that evaluates its own derivatives faster than generic autodiff.

    The Euler–Lagrange equations need `∇L` and a few entries of the Hessian `∇²L`.
    Subclasses implement `jet`, and `lagrax.acceleration`, `lagrax.mass_matrix`
    (and everything built on them) use it instead of forward-over-reverse autodiff.
    `jet` must agree with differentiating `__call__`; it must itself be
    differentiable (training differentiates through it).
    """

    @abc.abstractmethod
    def jet(
        self, q: Position, qdot: Velocity, directions: Float[Array, "2*dof k"]
    ) -> tuple[Float[Array, " 2*dof"], Float[Array, "k k"]]:
        """Gradient of `L` and its Hessian restricted to a few input directions.

        **Arguments:**

        - `q`, `qdot`: the state, each of shape `(dof,)`.
        - `directions`: `U`, `k` input directions as the columns of a `(2 dof, k)`
            array, in the input order `concat(q, qdot)`.

        **Returns:**

        `(∇L, Uᵀ ∇²L U)`, of shapes `(2 dof,)` and `(k, k)`, with `∇L` in the order
        `concat(∂L/∂q, ∂L/∂q̇)`.
        """

    def batch_jet(
        self, q: BatchStates, qdot: BatchStates, directions: BatchDirections
    ) -> BatchJet:
        """`jet` at a batch of states (the leading axis of every argument and
        result), with the same values as `jax.vmap(self.jet)`, which is the
        default. A subclass may override it with a pass that sees the whole batch:
        `MLPLagrangian`'s has a hand-written gradient, and training on
        accelerations (`lagrax.acceleration_loss`) goes through it.
        """
        return jax.vmap(self.jet)(q, qdot, directions)


def jet_of(
    lagrangian: Callable,
    q: Position,
    qdot: Velocity,
    directions: Float[Array, "2*dof k"],
) -> tuple[Float[Array, " 2*dof"], Float[Array, "k k"]]:
    """`(∇L, Uᵀ ∇²L U)` of any Lagrangian: its own `jet` for an
    `AbstractJetLagrangian`, else forward-over-reverse autodiff (`k` tangents)."""
    if isinstance(lagrangian, AbstractJetLagrangian):
        return lagrangian.jet(q, qdot, directions)
    grad, products = hessian_products(lagrangian, q, qdot, directions)
    return grad, products @ directions


def gradient_of(
    lagrangian: Callable, q: Position, qdot: Velocity
) -> tuple[Position, Velocity]:
    """`(∂L/∂q, ∂L/∂q̇)` of any Lagrangian: an `AbstractJetLagrangian`'s `jet` along
    no direction (for an `MLPLagrangian` a third cheaper than reverse-mode
    autodiff, which is what any other Lagrangian gets)."""
    if not isinstance(lagrangian, AbstractJetLagrangian):
        return jax.grad(lagrangian, argnums=(0, 1))(q, qdot)
    n = q.shape[0]
    grad, _ = lagrangian.jet(q, qdot, jnp.zeros((2 * n, 0), q.dtype))
    return grad[:n], grad[n:]


def _term_batch_jet(term: Callable, q, qdot, directions):
    """A term's `batch_jet`: its own for an `AbstractJetLagrangian`, else the
    `vmap` of autodiff."""
    if isinstance(term, AbstractJetLagrangian):
        return term.batch_jet(q, qdot, directions)
    return jax.vmap(functools.partial(jet_of, term))(q, qdot, directions)


def hessian_products(
    lagrangian: Callable,
    q: Position,
    qdot: Velocity,
    directions: Float[Array, "2*dof k"],
) -> tuple[Float[Array, " 2*dof"], Float[Array, "k 2*dof"]]:
    """`∇L` and the products `∇²L u` with the columns `u` of `directions`, by
    forward-over-reverse autodiff (the generic path)."""
    n = q.shape[0]
    grad_fn = jax.grad(lambda x: lagrangian(x[:n], x[n:]))
    x = jnp.concatenate([q, qdot])
    # vmap over tangents only: the primal forward and backward passes run once.
    return jax.vmap(lambda u: jax.jvp(grad_fn, (x,), (u,)), out_axes=(None, 0))(
        directions.T
    )


class LagrangianSum(AbstractJetLagrangian):
    """`L = Σ_i w_i L_i`: a weighted sum of Lagrangians, such as a known prior plus a
    learned correction. Built by `+`, `-`, unary `-`, `*` and `/` on an
    `AbstractLagrangian` (nested sums flatten), or directly.

    Its `jet` is the weighted sum of the terms' own: an `AbstractJetLagrangian`
    term (such as `MLPLagrangian`) keeps its structured pass, any other term is
    differentiated by autodiff. Multiplying `L` by a nonzero number does not change
    the motion. Graph Lagrangians do not sum (their sparse path needs one graph).

    **Fields:**

    - `terms`: the Lagrangians `L_i`: `AbstractLagrangian`s or plain callables
        `(q, qdot) -> scalar`.
    - `weights`: the numbers `w_i` (Python numbers or 0-d arrays; arrays are
        trainable leaves).
    """

    terms: tuple[Callable, ...]
    weights: tuple

    def __check_init__(self):
        if len(self.terms) != len(self.weights) or not self.terms:
            raise ValueError(
                "`terms` and `weights` must be non-empty and of the same length, got "
                f"{len(self.terms)} and {len(self.weights)}."
            )
        for term in self.terms:
            if not callable(term):
                raise TypeError(f"`terms` must be callables, got {term!r}.")
            if not getattr(type(term), "_summable", True):
                raise TypeError(
                    f"A {type(term).__name__} cannot be summed: a graph Lagrangian's "
                    "sparse path needs a single graph Lagrangian."
                )
        for weight in self.weights:
            if not is_real_number(weight):
                raise TypeError(f"`weights` must be real numbers, got {weight!r}.")
            # A traced weight (a trainable one, under jit) has no value to check.
            if not isinstance(weight, jax.core.Tracer) and not np.isfinite(weight):
                raise ValueError(f"`weights` must be finite, got {weight!r}.")

    @classmethod
    def of(cls, *weighted: tuple[Callable, object]) -> "LagrangianSum":
        """The sum of `(lagrangian, weight)` pairs, a `LagrangianSum` among them
        contributing its own terms (weights multiplied)."""
        terms, weights = [], []
        for term, weight in weighted:
            if isinstance(term, LagrangianSum):
                terms += term.terms
                weights += [weight * w for w in term.weights]
            else:
                terms.append(term)
                weights.append(weight)
        return cls(tuple(terms), tuple(weights))

    def __call__(self, q: Position, qdot: Velocity) -> Scalar:
        values = [term(q, qdot) for term in self.terms]
        return sum(
            (_weighted(w, value) for w, value in zip(self.weights, values)),
            start=jnp.zeros((), values[0].dtype),
        )

    def jet(
        self, q: Position, qdot: Velocity, directions: Float[Array, "2*dof k"]
    ) -> tuple[Float[Array, " 2*dof"], Float[Array, "k k"]]:
        """The weighted sum of the terms' `jet`s (autodiff for a term without one)."""
        return self._sum(jet_of, q, qdot, directions)

    def batch_jet(
        self, q: BatchStates, qdot: BatchStates, directions: BatchDirections
    ) -> BatchJet:
        """The weighted sum of the terms' `batch_jet`s."""
        return self._sum(_term_batch_jet, q, qdot, directions)

    def _sum(self, term_jet, q, qdot, directions) -> tuple[Array, Array]:
        weighted = [
            tuple(
                _weighted(weight, part) for part in term_jet(term, q, qdot, directions)
            )
            for term, weight in zip(self.terms, self.weights)
        ]
        grad, block = weighted[0]
        for term_grad, term_block in weighted[1:]:
            grad, block = grad + term_grad, block + term_block
        return grad, block


class Rescaled(AbstractJetLagrangian):
    """`L(q, q̇) = inner(q / q_scale, q̇ / qdot_scale)`: a Lagrangian that sees its
    coordinates in other units, so that a network's inputs are of unit scale
    (Cranmer et al. feed the relativistic particle's position as `q / 10`). The
    motion is that of `L` in the original coordinates; `jet` is the inner
    Lagrangian's own (`MLPLagrangian` keeps its structured pass) or autodiff.

    Leave angles at scale 1: an `MLPLagrangian` sees them as `(cos q, sin q)`.

    **Fields:**

    - `inner`: the Lagrangian of the rescaled coordinates, an `AbstractLagrangian`
        or a plain callable `(q, qdot) -> scalar`; its parameters train as usual.
    - `q_scale`, `qdot_scale`: positive, finite scales, one number for every
        coordinate or one per coordinate (static: they do not train).
    """

    inner: Callable
    q_scale: tuple[float, ...] | float = eqx.field(static=True, default=1.0)
    qdot_scale: tuple[float, ...] | float = eqx.field(static=True, default=1.0)

    def __check_init__(self):
        if not callable(self.inner):
            raise TypeError(
                f"`inner` must be a callable (q, qdot) -> scalar, got {self.inner!r}."
            )
        if not getattr(type(self.inner), "_summable", True):
            raise TypeError(
                f"A {type(self.inner).__name__} cannot be rescaled: a graph "
                "Lagrangian's sparse path needs the graph Lagrangian itself."
            )
        for name in ("q_scale", "qdot_scale"):
            scale = getattr(self, name)
            values = scale if isinstance(scale, tuple) else (scale,)
            ok = all(is_real_number(v) and np.isfinite(v) and v > 0 for v in values)
            if not (values and ok) or isinstance(scale, list):
                raise ValueError(
                    f"`{name}` must be a positive finite number or a tuple of them, "
                    f"got {scale!r}."
                )

    def _scales(self, q: Position) -> tuple[Array, Array]:
        dof = q.shape[0]
        scales = []
        for name in ("q_scale", "qdot_scale"):
            scale = jnp.asarray(getattr(self, name), q.dtype)
            if scale.ndim and scale.shape != (dof,):
                raise ValueError(
                    f"`{name}` has {scale.shape[0]} entries, but the state has "
                    f"{dof} coordinates."
                )
            scales.append(jnp.broadcast_to(scale, (dof,)))
        return scales[0], scales[1]

    def __call__(self, q: Position, qdot: Velocity) -> Scalar:
        check_state(q, qdot)
        q_scale, qdot_scale = self._scales(q)
        return self.inner(q / q_scale, qdot / qdot_scale)

    def jet(
        self, q: Position, qdot: Velocity, directions: Float[Array, "2*dof k"]
    ) -> tuple[Float[Array, " 2*dof"], Float[Array, "k k"]]:
        """The inner Lagrangian's `jet` at the rescaled state along the rescaled
        directions: `∇L = ∇inner / s` and `Uᵀ∇²L U = (U/s)ᵀ ∇²inner (U/s)`."""
        q, qdot, directions, scale = self._rescale(q, qdot, directions)
        grad, block = jet_of(self.inner, q, qdot, directions)
        return grad / scale, block

    def batch_jet(
        self, q: BatchStates, qdot: BatchStates, directions: BatchDirections
    ) -> BatchJet:
        """`jet` at a batch of states through the inner Lagrangian's
        `batch_jet`."""
        q, qdot, directions, scale = jax.vmap(self._rescale)(q, qdot, directions)
        grad, block = _term_batch_jet(self.inner, q, qdot, directions)
        return grad / scale, block

    def _rescale(self, q, qdot, directions):
        """The inner Lagrangian's state and directions, and the scale of each
        input."""
        check_state(q, qdot)
        q_scale, qdot_scale = self._scales(q)
        scale = jnp.concatenate([q_scale, qdot_scale])
        return q / q_scale, qdot / qdot_scale, directions / scale[:, None], scale


def _weighted(weight, x: Array) -> Array:
    """`weight · x` in the dtype of `x` (a weight never promotes the Lagrangian)."""
    return jnp.asarray(weight, x.dtype) * x


def _bias(layer: eqx.nn.Linear) -> Array:
    assert layer.bias is not None  # built with `use_bias=True`
    return layer.bias


def _lnn_std(index: int, num_layers: int, weight_shape: tuple[int, ...]) -> float:
    # Cranmer et al.'s initialization, as in their released code: n is the layer's
    # larger dimension; the output layer gets a large σ = √n because the Lagrangian
    # enters the dynamics only through second derivatives.
    n = max(weight_shape)
    if index == 0:
        return 2.2 / n**0.5
    if index == num_layers - 1:
        return n**0.5
    return 0.58 * index / n**0.5


def scalar_mlp(
    in_size: int,
    width: int,
    depth: int,
    *,
    init: Literal["lnn", "default"],
    dtype: DTypeLike | None,
    key: PRNGKeyArray,
) -> tuple[eqx.nn.Linear, ...]:
    """The layers of a scalar-valued MLP with `depth` hidden layers of `width` units,
    initialized as `MLPLagrangian` documents for `init`."""
    sizes = [in_size] + [width] * depth
    keys = jr.split(key, 2 * (depth + 1))
    layers = [
        eqx.nn.Linear(n_in, n_out, dtype=dtype, key=k)
        for n_in, n_out, k in zip(sizes[:-1], sizes[1:], keys[:depth])
    ]
    layers.append(eqx.nn.Linear(width, "scalar", dtype=dtype, key=keys[depth]))
    if init == "lnn":
        layers = [
            eqx.tree_at(
                lambda lin: (lin.weight, lin.bias),
                layer,
                (
                    _lnn_std(i, len(layers), layer.weight.shape)
                    * jr.normal(k, layer.weight.shape, layer.weight.dtype),
                    jnp.zeros_like(_bias(layer)),
                ),
            )
            for i, (layer, k) in enumerate(zip(layers, keys[depth + 1 :]))
        ]
    return tuple(layers)


class MLPLagrangian(AbstractJetLagrangian):
    """A black-box Lagrangian: a multilayer perceptron of `concat(q, qdot)`.

    This is the "Lagrangian Neural Network" of Cranmer et al.: `L` is a scalar MLP
    with `depth` hidden layers of `width` units and a smooth `activation` (the
    Euler–Lagrange equations need second derivatives: ReLU is refused).

    Coordinates listed in `angles` are angles: the network sees `(cos q_i, sin q_i)`
    instead of `q_i`, so `L` is exactly 2π-periodic in them. A trajectory then never
    leaves the region it was trained on by winding around (a pendulum trained on
    `q ∈ [0, 2π)` and released at rest near `q = 0.5` swings to `q < 0` at once).

    `lagrax.acceleration` and friends recognise this module and evaluate its
    derivatives with a structured forward-Jacobian/backward-adjoint pass (about
    `dof + 3` matrix products per layer instead of `2 dof + 4` for generic autodiff);
    the result is identical to differentiating `__call__`.

    ??? cite "Reference"

        ```bibtex
        @article{cranmer2020lagrangian,
            title={Lagrangian Neural Networks},
            author={Cranmer, Miles and Greydanus, Sam and Hoyer, Stephan and
                    Battaglia, Peter and Spergel, David and Ho, Shirley},
            journal={ICLR 2020 Workshop on Integration of Deep Neural Models and
                     Differential Equations},
            year={2020}
        }
        ```
    """

    layers: tuple[eqx.nn.Linear, ...]
    activation: Callable[[Array], Array]
    dof: int = eqx.field(static=True)
    angles: tuple[int, ...] = eqx.field(static=True)

    def __init__(
        self,
        dof: int,
        *,
        width: int = 128,
        depth: int = 3,
        activation: Callable[[Array], Array] = jax.nn.softplus,
        init: Literal["lnn", "default"] = "lnn",
        angles: Sequence[int] = (),
        dtype: DTypeLike | None = None,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `dof`: number of degrees of freedom `n`; the network's input is `2n`.
        - `width`: units per hidden layer (the paper's double pendulum: 600).
        - `depth`: number of hidden layers (the paper's double pendulum: 3).
        - `activation`: a smooth, elementwise activation (default softplus); one
            whose second derivative vanishes (ReLU) raises a `ValueError`.
        - `init`: `"lnn"` for the paper's initialization (biases 0; weights
            `N(0, σ²)` with `n` the layer's larger dimension and `i` its index
            from 0: first layer `σ = 2.2/√n`, hidden layer `σ = 0.58·i/√n`,
            output layer `σ = √n`), or `"default"` for Equinox's `Linear`
            initialization (uniform in `±1/√fan_in`).
        - `angles`: indices of the coordinates that are angles (period 2π), fed to
            the network as `(cos q_i, sin q_i)`; the input then has
            `2n + len(angles)` entries. Default: none.
        - `dtype`: parameter dtype; defaults to JAX's default float dtype.
        - `key`: a JAX PRNG key.
        """
        for name, value in (("dof", dof), ("width", width), ("depth", depth)):
            check_int(value, name)
        if init not in ("lnn", "default"):
            raise ValueError(f"`init` must be 'lnn' or 'default', got {init!r}.")
        if not callable(activation):
            raise TypeError(f"`activation` must be callable, got {activation!r}.")
        check_curvature(activation)
        angles = check_angles(angles, dof)
        dtype = check_dtype(dtype)
        self.layers = scalar_mlp(
            2 * dof + len(angles), width, depth, init=init, dtype=dtype, key=key
        )
        self.activation = activation
        self.dof = dof
        self.angles = angles

    def _check_input(self, q: Position, qdot: Velocity) -> None:
        check_state(q, qdot)
        if q.shape != (self.dof,):
            raise ValueError(
                f"This MLPLagrangian has dof={self.dof}: `q` and `qdot` must have "
                f"shape ({self.dof},), got {q.shape}."
            )
        dtype = self.layers[0].weight.dtype
        if q.dtype != dtype or qdot.dtype != dtype:
            raise TypeError(
                f"`q` and `qdot` must have the parameters' dtype {dtype}, got "
                f"{q.dtype} and {qdot.dtype}; cast them or the model."
            )

    def __call__(self, q: Position, qdot: Velocity) -> Scalar:
        self._check_input(q, qdot)
        h = angle_features(q, qdot, self.angles)
        for layer in self.layers[:-1]:
            h = self.activation(layer(h))
        return self.layers[-1](h)

    def jet(
        self, q: Position, qdot: Velocity, directions: Float[Array, "2*dof k"]
    ) -> tuple[Float[Array, " 2*dof"], Float[Array, "k k"]]:
        """Gradient of `L` and its Hessian restricted to a few input directions.

        For an MLP the Hessian of the scalar output is exactly
        `Σ_l J_lᵀ diag(σ''(z_l) ⊙ δ_l) J_l`, where `z_l` are the pre-activations,
        `J_l = ∂z_l/∂x` and `δ_l = ∂L/∂σ(z_l)` the backpropagated adjoint (the affine
        layers carry no curvature). Propagating `J_l U` forward for `k` directions
        `U` and `δ_l` backward once costs `k + 2` matrix products per layer, and the
        `k × k` block `Uᵀ ∇²L U` then comes from small contractions.

        Its derivative is written by hand (`lagrax._mlp_jet.mlp_jet_state`, a
        `jax.custom_jvp`): forward mode costs about what the pass does, and reverse
        mode is JAX's transpose of it, which under `jax.vmap` computes each weight
        gradient as one matrix product over the batch. Every transformation works
        in any order: `jit`, `vmap`, `grad` and `vjp` (including `vmap` of `grad`,
        for per-example gradients), `jvp`, `jacfwd` and higher derivatives.

        **Arguments:**

        - `q`, `qdot`: the state, each of shape `(dof,)`.
        - `directions`: `U`, the `k` input directions as columns of a `(2 dof, k)`
            array, in the input order `concat(q, qdot)`.

        **Returns:**

        `(∇L, Uᵀ ∇²L U)`, of shapes `(2 dof,)` and `(k, k)`.
        """
        self._check_input(q, qdot)
        hidden = self.layers[:-1]
        # The k tangents are carried as the rows of a (k, width) array: under `vmap`
        # each product is then a single (batch·k, width) × (width, width) matmul in
        # row-major layout, with no transposes between layers.
        h = angle_features(q, qdot, self.angles)
        t = directions.T if not self.angles else _angle_tangents(self, q, directions)
        delta, hessian = mlp_jet_state(
            self.activation,
            tuple(layer.weight for layer in hidden),
            tuple(_bias(layer) for layer in hidden),
            self.layers[-1].weight[0],
            h,
            t,
        )
        if self.angles:
            delta, hessian = _through_angles(self, q, directions, delta, hessian)
        return delta, hessian

    def batch_jet(
        self, q: BatchStates, qdot: BatchStates, directions: BatchDirections
    ) -> BatchJet:
        """`jet` at a batch of states, the leading axis of every argument and
        result: the same values as `jax.vmap(self.jet)`, but its gradient is
        written by hand over the whole batch (`lagrax._mlp_jet.mlp_jet`), which
        makes a training step on accelerations about 1.1× faster than through
        `jet`'s own hand-written derivative (`benchmarks/train_step.py`). The angle
        features (if any) are differentiated by autodiff around it. Reverse mode
        only (`jax.grad`, `jax.vjp`); for forward-mode derivatives use
        `jax.vmap(self.jet)`.
        """
        jax.vmap(self._check_input)(q, qdot)
        features = jax.vmap(angle_features, in_axes=(0, 0, None))(q, qdot, self.angles)
        if self.angles:
            tangents = jax.vmap(functools.partial(_angle_tangents, self))(q, directions)
        else:
            tangents = jnp.swapaxes(directions, 1, 2)
        hidden = self.layers[:-1]
        # `cast`: a `custom_vjp` function's result type is not inferred.
        delta, hessian = cast(
            tuple[Array, Array],
            mlp_jet(
                self.activation,
                tuple(layer.weight for layer in hidden),
                tuple(_bias(layer) for layer in hidden),
                self.layers[-1].weight[0],
                features,
                tangents,
            ),
        )
        if self.angles:
            through = functools.partial(_through_angles, self)
            delta, hessian = jax.vmap(through)(q, directions, delta, hessian)
        return delta, hessian


def _angle_indices(model, q) -> tuple[np.ndarray, np.ndarray, Array, Array]:
    angles, rest = split_angles(model.dof, model.angles)
    return angles, rest, jnp.cos(q[angles]), jnp.sin(q[angles])


def _angle_tangents(model, q, directions):
    """The tangents of the features `(cos q_A, sin q_A, q_R, q̇)` along `directions`,
    as rows."""
    angles, rest, cos, sin = _angle_indices(model, q)
    u = directions[angles]
    return jnp.concatenate(
        [-sin[:, None] * u, cos[:, None] * u, directions[rest], directions[model.dof :]]
    ).T


def _through_angles(model, q, directions, delta, hessian):
    """The chain rule through the angle features: `delta` (the gradient in the
    features) becomes the gradient in `(q, q̇)`, and the features' own curvature,
    `∂²cos q_i = −cos q_i` and `∂²sin q_i = −sin q_i` weighted by `delta`, is added
    to the Hessian block; it touches only the angle rows of `directions`."""
    angles, rest, cos, sin = _angle_indices(model, q)
    k = len(angles)
    d_cos, d_sin = delta[:k], delta[k : 2 * k]
    d_rest, d_qdot = delta[2 * k : 2 * k + len(rest)], delta[2 * k + len(rest) :]
    grad_q = (
        jnp.zeros(model.dof, delta.dtype)
        .at[angles]
        .set(cos * d_sin - sin * d_cos)
        .at[rest]
        .set(d_rest)
    )
    u = directions[angles]
    curvature = -(cos * d_cos + sin * d_sin)
    hessian = hessian + (u * curvature[:, None]).T @ u
    return jnp.concatenate([grad_q, d_qdot]), hessian
