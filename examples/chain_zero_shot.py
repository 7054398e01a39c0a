"""Zero-shot chains: a Lagrangian graph network over bodies, with the rods between
them as known constraints, trained on 3-body chain pendulums and run unchanged on
10- and 20-body chains.

The bodies are the graph's nodes (positions in the plane), the rods its edges. The
learned Lagrangian is a sum of shared local densities,

    L = Σᵢ ½ m |ẋᵢ|² − Σᵢ w·xᵢ − Σ_(s→r) ψ(x_r − x_s),

a kinetic energy per body (one learned mass `m`), a learned uniform field `w` (the
node potential: gravity, in truth) and a learned MLP `ψ` of each rod's vector (the
edge potential: zero, in truth). Nothing in it depends on the chain's length or on
where a body sits along it, which is what lets it run on longer chains; its node
potential is linear in the position, so that it still means something at the depths
a 20-body chain reaches and a 3-body one never does (an MLP of the absolute
position would have to extrapolate there). The rods enter as a
`lagrax.EdgeConstraint`, and `lagrax.acceleration` solves the constrained
equations by their sparse Schur complement (tridiagonal for a chain): linear in the
number of bodies.

Training data: accelerations of `lagrax.systems.ChainPendulum` (equal masses and
lengths) in Cartesian coordinates under its constraint, at states with angles and
angular velocities drawn i.i.d. N(0, 1) — on the constraints by construction.
Evaluation, zero-shot on 10 and 20 bodies: the relative acceleration error over
fresh states, and a 1-second rollout with `lagrax.Rattle` against the true chain's
(the largest position error, and the largest |g(q)| along the learned rollout).

Run `python examples/chain_zero_shot.py` (about a minute on two cores).
"""

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

import lagrax
from lagrax.systems import ChainPendulum


jax.config.update("jax_enable_x64", True)

G = 9.81


class BodyGraphLagrangian(lagrax.AbstractGraphLagrangian):
    """`L = Σᵢ ½ m |ẋᵢ|² − Σᵢ w·xᵢ − Σ_(s→r) ψ(x_r − x_s)` on a graph of bodies in
    the plane: a learned mass, uniform field and rod potential, shared by all
    bodies and edges. Its mass matrix is diagonal (`mass_graph` has no edges)."""

    raw_mass: jax.Array
    field: jax.Array
    edge_mlp: eqx.nn.MLP
    graph: lagrax.Graph = eqx.field(static=True)
    node_dim: int = eqx.field(static=True)

    def __init__(self, num_bodies: int, *, width: int = 16, key):
        self.raw_mass = jnp.zeros(())
        self.field = jnp.zeros(2)
        self.edge_mlp = eqx.nn.MLP(
            2, "scalar", width, 2, activation=jax.nn.softplus, key=key
        )
        self.graph = lagrax.Graph(
            np.arange(num_bodies - 1), np.arange(1, num_bodies), num_bodies
        )
        self.node_dim = 2

    @property
    def mass_graph(self) -> lagrax.Graph:
        return self.graph.isolated

    def with_bodies(self, num_bodies: int) -> "BodyGraphLagrangian":
        """The same parameters on a chain of `num_bodies` bodies."""
        if num_bodies == self.num_nodes:
            return self
        # The graph is static metadata, not a leaf: a new model, these parameters.
        other = BodyGraphLagrangian(num_bodies, key=jr.key(0))
        return eqx.tree_at(
            lambda m: (m.raw_mass, m.field, m.edge_mlp),
            other,
            (self.raw_mass, self.field, self.edge_mlp),
        )

    def __call__(self, q, qdot):
        x = q.reshape(-1, 2)
        v = qdot.reshape(-1, 2)
        mass = jax.nn.softplus(self.raw_mass + 0.5413)  # 1 at initialization
        kinetic = 0.5 * mass * jnp.sum(v**2)
        rods = x[self.graph.receivers] - x[self.graph.senders]
        return (
            kinetic - jnp.sum(x @ self.field) - jnp.sum(jax.vmap(self.edge_mlp)(rods))
        )


def chain_links(num_bodies: int) -> lagrax.EdgeConstraint:
    """The rods of a chain of unit links hanging from a pivot at the origin."""
    return lagrax.EdgeConstraint(
        np.arange(num_bodies - 1),
        np.arange(1, num_bodies),
        lagrax.rod,
        num_nodes=num_bodies,
        node_dim=2,
        data=jnp.ones(num_bodies),
        anchors=[0],
    )


def chain_data(num_bodies: int, num_states: int, *, key) -> lagrax.AccelerationData:
    """True Cartesian states and constrained accelerations of a chain of unit
    masses and links, angles and angular velocities i.i.d. N(0, 1)."""
    chain = ChainPendulum(jnp.ones(num_bodies), jnp.ones(num_bodies), g=G)
    theta_key, omega_key = jr.split(key)
    theta = jr.normal(theta_key, (num_states, num_bodies))
    omega = jr.normal(omega_key, (num_states, num_bodies))
    q, qdot = jax.vmap(chain.to_cartesian)(theta, omega)

    @jax.jit
    @jax.vmap
    def accelerate(q, qdot):
        return lagrax.acceleration(chain, q, qdot, constraint=chain.constraint)

    return lagrax.AccelerationData(q=q, qdot=qdot, qddot=accelerate(q, qdot))


@eqx.filter_jit
def predict(model: BodyGraphLagrangian, data: lagrax.AccelerationData) -> jax.Array:
    """The model's constrained accelerations on a chain of the data's length (NaN
    where its mass matrix is singular)."""
    num_bodies = data.q.shape[1] // 2
    model, links = model.with_bodies(num_bodies), chain_links(num_bodies)
    return jax.vmap(
        lambda q, qdot: lagrax.acceleration(
            model, q, qdot, constraint=links, throw=False
        )
    )(data.q, data.qdot)


def relative_error(model: BodyGraphLagrangian, data: lagrax.AccelerationData) -> float:
    """`‖q̈_pred − q̈‖ / ‖q̈‖` over all states and coordinates."""
    error = predict(model, data) - data.qddot
    return float(jnp.linalg.norm(error) / jnp.linalg.norm(data.qddot))


def chain_loss(model: BodyGraphLagrangian, batch: lagrax.AccelerationData):
    """Mean absolute error of the constrained accelerations."""
    return jnp.mean(jnp.abs(predict(model, batch) - batch.qddot))


def train(
    *, steps: int = 400, batch_size: int = 64, num_states: int = 1024, seed: int = 0
) -> tuple[BodyGraphLagrangian, lagrax.History]:
    """Fit the model to 3-body accelerations with `lagrax.fit` (Adam)."""
    data_key, model_key, fit_key = jr.split(jr.key(seed), 3)
    return lagrax.fit(
        BodyGraphLagrangian(3, key=model_key),
        chain_loss,
        chain_data(3, num_states, key=data_key),
        optimizer=optax.adam(optax.cosine_decay_schedule(3e-2, steps)),
        steps=steps,
        batch_size=batch_size,
        key=fit_key,
        progress=False,
    )


def rollout(
    model: BodyGraphLagrangian, num_bodies: int, *, duration: float = 1.0, key
) -> tuple[float, float]:
    """`(largest position error, largest |g(q)|)` of the model's `lagrax.Rattle`
    rollout against the true chain's, from one random state, step 0.01."""
    chain = ChainPendulum(jnp.ones(num_bodies), jnp.ones(num_bodies), g=G)
    theta_key, omega_key = jr.split(key)
    q0, qdot0 = chain.to_cartesian(
        jr.normal(theta_key, (num_bodies,)), jr.normal(omega_key, (num_bodies,))
    )
    ts = jnp.linspace(0.0, duration, 11)
    links = chain_links(num_bodies)
    options = dict(solver=lagrax.Rattle(), dt0=0.01, max_steps=int(duration / 0.01) + 8)
    truth = lagrax.simulate(
        chain, q0, qdot0, ts, constraint=chain.constraint, **options
    )
    learned = lagrax.simulate(
        model.with_bodies(num_bodies), q0, qdot0, ts, constraint=links, **options
    )
    error = jnp.max(jnp.abs(learned.q - truth.q))
    residual = jnp.max(jnp.abs(jax.vmap(links)(learned.q)))
    return float(error), float(residual)


def main() -> None:
    start = time.perf_counter()
    model, history = train()
    losses = history.loss
    print(
        f"trained on 3-body chains: L1 loss {losses[0]:.3g} → {losses[-1]:.3g} "
        f"({time.perf_counter() - start:.0f} s); learned mass "
        f"{float(jax.nn.softplus(model.raw_mass + 0.5413)):.4f}, field "
        f"{np.asarray(model.field).round(4).tolist()} (truth: any m, field (0, g·m))"
    )
    print("bodies  relative acceleration error  rollout: max |x̂ − x|   max |g(q̂)|")
    for num_bodies in (3, 10, 20):
        data = chain_data(num_bodies, 256, key=jr.key(100 + num_bodies))
        error = relative_error(model, data)
        position, residual = rollout(model, num_bodies, key=jr.key(num_bodies))
        print(f"{num_bodies:6d}  {error:27.3e}  {position:20.3e}  {residual:11.1e}")


if __name__ == "__main__":
    main()
