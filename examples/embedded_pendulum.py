"""A Lagrangian Neural Network inside a larger JAX model, trained end to end.

The data are observations of a pendulum, not its angle: the Cartesian position of
its bob, `(sin θ, −cos θ)`, at 21 times 0.1 apart. The model is

    encoder:  the first two observed positions  →  (q₀, q̇₀), a latent state
    LNN:      L(q, q̇), evolved from (q₀, q̇₀) by lagrax's VariationalMidpoint
              inside `diffrax.diffeqsolve`
    decoder:  q(t)  →  predicted position at every observed time

and the loss is the mean squared error of the predicted positions, with Optax's
Adam through `lagrax.train_step` (which skips a step whose loss or gradient is not
finite: an untrained LNN can have a singular mass matrix somewhere, and the term's
`throw=False` turns that into a NaN rather than an error). Nothing tells the model
what q is: the encoder and decoder agree on a coordinate of their own.

Two details every such model needs:

- `adjoint=diffrax.RecursiveCheckpointAdjoint(checkpoints=MAX_STEPS)`: fixed steps
  saved at the observation times are exactly where Diffrax's default adjoint gives
  silently wrong gradients (see `lagrax.LagrangianTerm`).
- `lagrax.LagrangianTerm(lnn, throw=False)` and `diffeqsolve(..., throw=False)`:
  a failed solve gives a non-finite loss, which `train_step` skips.

Run: python examples/embedded_pendulum.py [--steps 1000]
"""

import argparse
import time

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
from jaxtyping import Array, Float, PRNGKeyArray

import lagrax


TIMES = 0.1 * jnp.arange(21.0)
DT = 0.05
MAX_STEPS = 40  # 2 time units at dt = 0.05: one checkpoint per step


def observations(num: int, key: PRNGKeyArray) -> Float[Array, "num times 2"]:
    """Bob positions along `num` pendulum motions from random states
    (θ₀ ∈ [−1, 1], θ̇₀ ∈ [−1, 1]), at `TIMES`."""
    q0, qdot0 = lagrax.sample_states(
        num, q_box=([-1.0], [1.0]), qdot_box=([-1.0], [1.0]), key=key
    )
    theta = lagrax.trajectory_data(lagrax.systems.Pendulum(), q0, qdot0, TIMES).q
    return jnp.concatenate([jnp.sin(theta), -jnp.cos(theta)], axis=-1)


class EncodedLNN(eqx.Module):
    """Encoder → LNN → decoder."""

    encoder: eqx.nn.MLP
    lnn: lagrax.LagrangianSum
    decoder: eqx.nn.MLP

    def __init__(self, *, width: int = 32, key: PRNGKeyArray):
        k1, k2, k3 = jr.split(key, 3)
        self.encoder = eqx.nn.MLP(4, 2, width, 2, activation=jnp.tanh, key=k1)
        # A known prior plus a learned correction: small oscillations at the
        # pendulum's ω² = g/l = 9.8 keep the untrained motion bounded (a bare
        # untrained MLP Lagrangian can run away, and a saturating decoder would
        # hide that in the loss but not in its gradient).
        prior = lagrax.systems.HarmonicOscillator(stiffness=9.8)
        mlp = lagrax.MLPLagrangian(1, width=width, depth=2, key=k2)
        self.lnn = prior + 0.1 * mlp  # a LagrangianSum: keeps the MLP's fast jet
        self.decoder = eqx.nn.MLP(1, 2, width, 2, activation=jnp.tanh, key=k3)

    def __call__(self, frames: Float[Array, "times 2"]) -> Float[Array, "times 2"]:
        latent = self.encoder(frames[:2].reshape(-1))
        y0 = (latent[:1], latent[1:])
        solution = diffrax.diffeqsolve(
            lagrax.LagrangianTerm(self.lnn, throw=False),
            lagrax.VariationalMidpoint(),
            TIMES[0],
            TIMES[-1],
            DT,
            y0,
            saveat=diffrax.SaveAt(ts=TIMES),
            adjoint=diffrax.RecursiveCheckpointAdjoint(checkpoints=MAX_STEPS),
            max_steps=MAX_STEPS,
            throw=False,
        )
        return jax.vmap(self.decoder)(solution.ys[0])


def loss(model: EncodedLNN, frames: Float[Array, "batch times 2"]) -> Array:
    """Mean squared error of the predicted bob positions."""
    return jnp.mean((jax.vmap(model)(frames) - frames) ** 2)


def train(
    *,
    steps: int,
    batch_size: int = 32,
    train_size: int = 256,
    lr: float = 3e-3,
    width: int = 32,
    seed: int = 0,
) -> tuple[EncodedLNN, list[float], Array]:
    """Train on `train_size` motions. Returns the model, the training losses and
    the held-out data (64 motions)."""
    data_key, test_key, model_key, batch_key = jr.split(jr.key(seed), 4)
    data = observations(train_size, data_key)
    test = observations(64, test_key)
    model = EncodedLNN(width=width, key=model_key)
    optimizer = optax.adam(lr)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    losses = []
    for step in range(steps):
        batch = data[jr.choice(jr.fold_in(batch_key, step), train_size, (batch_size,))]
        model, opt_state, value, skipped = lagrax.train_step(
            model, opt_state, batch, loss=loss, optimizer=optimizer
        )
        losses.append(float(value))
        if skipped:
            print(f"step {step}: skipped (loss {float(value)})")
    return model, losses, test


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="training steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    model, losses, test = train(steps=args.steps, seed=args.seed)
    untrained = EncodedLNN(key=jr.split(jr.key(args.seed), 4)[2])
    print(f"trained {args.steps} steps in {time.perf_counter() - start:.0f} s")
    print(f"held-out position MSE: untrained {float(loss(untrained, test)):.2e}")
    print(f"                       trained   {float(loss(model, test)):.2e}")


if __name__ == "__main__":
    main()
