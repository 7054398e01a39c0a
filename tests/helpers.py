"""Shared test utilities: comparisons, finite differences and a zoo of Lagrangians."""

import equinox as eqx
import jax
import jax.flatten_util as jfu
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

import lagrax


# What a compiled `simulate` depends on besides the system and the solver: the
# number of save times (not their values), the step budget and `throw`. Tests that
# integrate through `simulate_on` share these, so each (system, solver, dtype)
# compiles once for all of them, whatever their horizons and step sizes.
SAMPLES = 201
MAX_STEPS = 2**17


def simulate_on(lagrangian, q0, qdot0, t0, t1, **kwargs):
    """`lagrax.simulate` saving at `SAMPLES` equally spaced times from `t0` to `t1`
    (decreasing when `t1 < t0`) with the shared step budget."""
    ts = jnp.linspace(t0, t1, SAMPLES, dtype=q0.dtype)
    return lagrax.simulate(lagrangian, q0, qdot0, ts, max_steps=MAX_STEPS, **kwargs)


@eqx.filter_jit
def along(fn, lagrangian, q, qdot):
    """`fn(lagrangian, q[i], qdot[i])` for every sample `i`, such as the energy
    along a trajectory: compiled once per function, system and shape, where an
    eager vmap would compile op by op."""
    return jax.vmap(fn, in_axes=(None, 0, 0))(lagrangian, q, qdot)


def tree_allclose(x, y, *, rtol=1e-5, atol=1e-8) -> bool:
    return bool(eqx.tree_equal(x, y, typematch=True, rtol=rtol, atol=atol))


def finite_difference_directional(f, x, direction, eps=1e-6):
    """Central difference of the scalar `f` at pytree `x` along pytree `direction`."""
    plus = jtu.tree_map(lambda a, d: a + eps * d, x, direction)
    minus = jtu.tree_map(lambda a, d: a - eps * d, x, direction)
    return (f(plus) - f(minus)) / (2 * eps)


def random_like(key, tree):
    """A random pytree with the structure of the inexact arrays of `tree`."""
    flat, unflatten = jfu.ravel_pytree(tree)
    return unflatten(jax.random.normal(key, flat.shape, flat.dtype))


def dot(x, y):
    return sum(jnp.vdot(a, b) for a, b in zip(jtu.tree_leaves(x), jtu.tree_leaves(y)))


def double_pendulum_qddot(q, qdot, m1=1.0, m2=1.0, l1=1.0, l2=1.0, g=9.8):
    """Closed-form accelerations of the double pendulum in absolute angles (the
    standard textbook expression, derived independently of any Lagrangian code)."""
    t1, t2 = q
    w1, w2 = qdot
    d = t1 - t2
    den = 2 * m1 + m2 - m2 * np.cos(2 * d)
    a1 = (
        -g * (2 * m1 + m2) * np.sin(t1)
        - m2 * g * np.sin(t1 - 2 * t2)
        - 2 * np.sin(d) * m2 * (w2**2 * l2 + w1**2 * l1 * np.cos(d))
    ) / (l1 * den)
    a2 = (
        2
        * np.sin(d)
        * (
            w1**2 * l1 * (m1 + m2)
            + g * (m1 + m2) * np.cos(t1)
            + w2**2 * l2 * m2 * np.cos(d)
        )
    ) / (l2 * den)
    return np.array([a1, a2])


def translation_invariant(q, qdot):
    """Two particles in the plane, velocity-coupled, interacting through their
    separation only: total momentum p₁ + p₂ is conserved."""
    x1, x2 = q[:2], q[2:]
    v1, v2 = qdot[:2], qdot[2:]
    kinetic = 0.5 * jnp.dot(v1, v1) + jnp.dot(v2, v2) + 0.3 * jnp.dot(v1, v2)
    r2 = jnp.sum((x1 - x2) ** 2)
    return kinetic * (1 + 0.1 * jnp.sin(r2)) - (r2 - 1.0) ** 2


def indefinite(q, qdot):
    """A regular Lagrangian whose mass matrix diag(1, −2) is indefinite."""
    return 0.5 * qdot[0] ** 2 - qdot[1] ** 2 - 0.5 * q[0] ** 2 - 1.5 * q[1] ** 2


def singular(q, qdot):
    """A Lagrangian that does not depend on qdot[1]: its mass matrix is singular."""
    return 0.5 * qdot[0] ** 2 - jnp.sum(q**2)
