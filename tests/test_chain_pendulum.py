import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import lagrax
from lagrax.systems import ChainPendulum, DoublePendulum, Pendulum


def _chain(num_bodies: int, coordinates: str, key) -> ChainPendulum:
    """A chain with masses and lengths drawn away from 1, so that a formula that
    drops or swaps one of them shows."""
    masses, lengths = jr.uniform(key, (2, num_bodies), minval=0.5, maxval=2.0)
    return ChainPendulum(masses, lengths, g=9.7, coordinates=coordinates)


def _angle_states(key, num_states: int, num_bodies: int):
    """Angles anywhere on the circle (beyond (−π, π], to exercise the wrapping)
    and angular velocities of either sign."""
    theta_key, rate_key = jr.split(key)
    theta = jr.uniform(theta_key, (num_states, num_bodies), minval=-6.0, maxval=6.0)
    theta_dot = jr.normal(rate_key, (num_states, num_bodies)) * 3.0
    return theta, theta_dot


def _wrapped(angle):
    return jnp.arctan2(jnp.sin(angle), jnp.cos(angle))


def test_two_angles_are_the_double_pendulum(getkey):
    masses, lengths = (1.3, 0.6), (0.8, 1.7)
    chain = ChainPendulum(masses, lengths, g=9.8, coordinates="angles")
    double = DoublePendulum(*masses, *lengths, g=9.8)
    theta, theta_dot = _angle_states(getkey(), 16, 2)
    assert jnp.allclose(
        jax.vmap(chain)(theta, theta_dot),
        jax.vmap(double)(theta, theta_dot),
        rtol=1e-12,
        atol=1e-12,
    )
    assert chain.max_potential_energy == pytest.approx(double.max_potential_energy)


@pytest.mark.parametrize("num_bodies", [1, 2, 3, 5])
def test_angles_and_cartesian_agree(getkey, num_bodies):
    angles = _chain(num_bodies, "angles", getkey())
    cartesian = ChainPendulum(angles.masses, angles.lengths, g=angles.g)

    @jax.jit
    @jax.vmap
    def compare(theta, theta_dot):
        q, qdot = cartesian.to_cartesian(theta, theta_dot)
        back, back_dot = cartesian.to_angles(q, qdot)
        return dict(
            lagrangians=(cartesian(q, qdot), angles(theta, theta_dot)),
            positions=(cartesian.positions(q), angles.positions(theta)),
            angle=back,
            angle_error=_wrapped(back - theta),
            rates=(back_dot, theta_dot),
            constraint=cartesian.constraint(q),
            tangent=jax.jacfwd(cartesian.constraint)(q) @ qdot,
        )

    out = compare(*_angle_states(getkey(), 8, num_bodies))
    # The two Lagrangians are the same function on the chain, and both forms put
    # the bodies in the same places.
    assert jnp.allclose(*out["lagrangians"], rtol=1e-12, atol=1e-10)
    assert jnp.allclose(*out["positions"], atol=1e-12)
    # The angles map back, wrapped to (−π, π], with their rates.
    assert jnp.all(jnp.abs(out["angle"]) <= jnp.pi)
    assert jnp.allclose(out["angle_error"], 0.0, atol=1e-12)
    assert jnp.allclose(*out["rates"], rtol=1e-12, atol=1e-12)
    # The state lies on the chain: every link at its length, and the velocity
    # tangent to the constraints (G q̇ = 0).
    assert out["constraint"].shape == out["tangent"].shape == (8, num_bodies)
    assert jnp.allclose(out["constraint"], 0.0, atol=1e-12)
    assert jnp.allclose(out["tangent"], 0.0, atol=1e-11)


def test_constraint_measures_the_links(getkey):
    chain = _chain(3, "cartesian", getkey())
    q = jr.normal(getkey(), (6,))
    points = np.concatenate([np.zeros((1, 2)), np.asarray(q).reshape(3, 2)])
    links = np.linalg.norm(np.diff(points, axis=0), axis=1)
    expected = (links**2 - np.asarray(chain.lengths) ** 2) / 2
    assert np.allclose(chain.constraint(q), expected, rtol=1e-12, atol=1e-12)


def test_to_angles_rate_is_the_angle_derivative(getkey):
    # Off the chain too: θ̇ is the time derivative of the angle `to_angles` gives.
    chain = _chain(3, "cartesian", getkey())
    q, qdot = jr.normal(getkey(), (2, 6))
    theta, theta_dot = chain.to_angles(q, qdot)
    _, derivative = jax.jvp(lambda q: chain.to_angles(q, qdot)[0], (q,), (qdot,))
    assert jnp.allclose(theta_dot, derivative, rtol=1e-12, atol=1e-12)
    assert theta.shape == (3,)


def test_one_angle_is_the_simple_pendulum(getkey):
    chain = ChainPendulum([1.7], [0.6], g=9.7, coordinates="angles")
    theta, theta_dot = _angle_states(getkey(), 8, 1)
    qddot = jax.jit(jax.vmap(lambda t, w: lagrax.acceleration(chain, t, w)))(
        theta, theta_dot
    )
    assert jnp.allclose(qddot, -(9.7 / 0.6) * jnp.sin(theta), rtol=1e-12, atol=1e-12)
    pendulum = Pendulum(mass=1.7, length=0.6, g=9.7)
    assert jnp.allclose(
        jax.vmap(chain)(theta, theta_dot), jax.vmap(pendulum)(theta, theta_dot)
    )


def test_cartesian_bodies_fall_freely(getkey):
    # Without its constraint the Cartesian form is one free particle per body.
    chain = _chain(3, "cartesian", getkey())
    q, qdot = jr.normal(getkey(), (2, 6))
    qddot = eqx.filter_jit(lagrax.acceleration)(chain, q, qdot)
    assert jnp.allclose(qddot, jnp.tile(jnp.array([0.0, -chain.g]), 3), atol=1e-12)


def test_angles_have_no_constraint():
    chain = ChainPendulum([1.0, 1.0], [1.0, 1.0], coordinates="angles")
    with pytest.raises(ValueError, match="no constraints"):
        chain.constraint(jnp.zeros(2))


@pytest.mark.parametrize(
    "masses, lengths, kwargs, match",
    [
        ([1.0, 2.0], [1.0], {}, "one entry per body"),
        ([], [], {}, "at least one"),
        (1.0, 1.0, {}, "one number per body"),
        ([[1.0]], [[1.0]], {}, "one number per body"),
        ([1.0, 0.0], [1.0, 1.0], {}, "`masses` must be positive"),
        ([1.0], [-1.0], {}, "`lengths` must be positive"),
        ([1.0, np.inf], [1.0, 1.0], {}, "`masses` must be finite"),
        ([1.0], [np.nan], {}, "`lengths` must be finite"),
        ([1.0], ["a"], {}, "`lengths` must hold real numbers"),
        ([1.0], [1.0], {"g": np.inf}, "`g` must be finite"),
        ([1.0], [1.0], {"coordinates": "polar"}, "`coordinates` must be one of"),
    ],
)
def test_bad_settings_fail_clearly(masses, lengths, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ChainPendulum(masses, lengths, **kwargs)


def test_bad_states_fail_clearly():
    chain = ChainPendulum([1.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"`q` must have shape \(4,\)"):
        chain(jnp.zeros(2), jnp.zeros(2))
    with pytest.raises(ValueError, match=r"`theta` and `theta_dot` .* \(2,\)"):
        chain.to_cartesian(jnp.zeros(4), jnp.zeros(4))
    with pytest.raises(ValueError, match=r"`q` and `qdot` must have shape \(4,\)"):
        chain.to_angles(jnp.zeros(2), jnp.zeros(2))
    with pytest.raises(ValueError, match=r"`q` must have shape \(4,\)"):
        chain.constraint(jnp.zeros(3))


@pytest.mark.parametrize("coordinates", ["cartesian", "angles"])
def test_save_load(tmp_path, coordinates):
    chain = ChainPendulum(
        [1.5, 0.5, 2.0], [0.3, 1.1, 0.7], g=3.5, coordinates=coordinates
    )
    path = tmp_path / "chain.lagrax"
    lagrax.save(path, chain)
    loaded = lagrax.load(path)
    assert type(loaded) is ChainPendulum
    assert eqx.tree_equal(loaded, chain, typematch=True)
