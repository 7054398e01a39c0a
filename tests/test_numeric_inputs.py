"""Numbers that cannot be right are refused before anything runs: settings that are
not finite real numbers, complex parameter dtypes, and states too coarse to
integrate."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import lagrax
from lagrax._simulate import solve_options
from lagrax.systems import (
    ActuatedDoublePendulum,
    ChargedParticle,
    DoublePendulum,
    HarmonicOscillator,
    Pendulum,
    RelativisticParticle,
    SpringNetwork,
    Wave1D,
)


DFKI = dict(m1=0.6, m2=0.6, l1=0.3, r1=0.3, r2=0.2, I1=0.054, I2=0.024)
KEY = jr.key(0)


def _pair(**kwargs):
    """Two masses joined by one spring."""
    return SpringNetwork([0], [1], num_nodes=2, **kwargs)


def _solve_options(dt0):
    """The options of a solve as `simulate` and `rollout` check them (called
    directly: the suite's runtime type checking refuses a `dt0` that is not a float
    at their signatures, before lagrax's own check)."""
    return solve_options(
        solver=lagrax.VelocityVerlet(),
        dt0=dt0,
        rtol=1e-6,
        atol=1e-6,
        stepsize_controller=None,
        adjoint=None,
        max_steps=None,
    )


# id: (build, the error, the argument it must name). Settings whose annotation
# refuses them under the suite's runtime type checking (a string for a `float`
# argument, say) are left to it.
SETTINGS = {
    "oscillator-string": (lambda: HarmonicOscillator(mass="1"), TypeError, "mass"),
    "oscillator-bool": (
        lambda: HarmonicOscillator(stiffness=True),
        TypeError,
        "stiffness",
    ),
    "oscillator-inf": (
        lambda: HarmonicOscillator(stiffness=np.inf),
        ValueError,
        "stiffness",
    ),
    "pendulum-nan": (lambda: Pendulum(g=np.nan), ValueError, "g"),
    "double-pendulum-string": (lambda: DoublePendulum(l2="1.0"), TypeError, "l2"),
    "relativistic-inf": (lambda: RelativisticParticle(g=-np.inf), ValueError, "g"),
    "charged-nan": (lambda: ChargedParticle(charge=np.nan), ValueError, "charge"),
    "charged-field": (
        lambda: ChargedParticle(magnetic_field=(0.0, 0.0, np.inf)),
        ValueError,
        "magnetic_field",
    ),
    "dfki-bool": (lambda: ActuatedDoublePendulum(**DFKI, g=True), TypeError, "g"),
    "wave-inf": (lambda: Wave1D(8, wave_speed=np.inf), ValueError, "wave_speed"),
    "wave-length": (lambda: Wave1D(8, length=np.inf), ValueError, "length"),
    "springs-reference": (
        lambda: _pair(reference=[0.0, 1.0, np.nan, 0.0]),
        ValueError,
        "reference",
    ),
    "springs-gravity": (lambda: _pair(gravity=np.inf), ValueError, "gravity"),
    "springs-stiffness": (lambda: _pair(stiffness=np.inf), ValueError, "stiffness"),
    "springs-masses": (lambda: _pair(masses="1"), TypeError, "masses"),
    "springs-spacing": (
        lambda: SpringNetwork.chain(3, spacing=np.inf),
        ValueError,
        "spacing",
    ),
    "midpoint-rtol": (
        lambda: lagrax.VariationalMidpoint(rtol=np.inf),
        ValueError,
        "rtol",
    ),
    "gauss-legendre-atol": (
        lambda: lagrax.GaussLegendre(atol=np.inf),
        ValueError,
        "atol",
    ),
    "solve-dt0": (lambda: _solve_options(dt0="0.1"), TypeError, "dt0"),
    "rayleigh-strings": (
        lambda: lagrax.RayleighDissipation(np.array(["1", "2"])),
        TypeError,
        "damping",
    ),
    "actuation-matrix": (
        lambda: lagrax.Actuation(matrix=jnp.array([[np.nan]])),
        ValueError,
        "matrix",
    ),
    "sum-weight": (lambda: HarmonicOscillator() * np.inf, ValueError, "weights"),
}


@pytest.mark.parametrize("name", SETTINGS)
def test_settings_must_be_finite_real_numbers(name):
    build, error, argument = SETTINGS[name]
    with pytest.raises(error, match=f"`{argument}`"):
        build()


def test_traced_settings_are_checked_for_type_only():
    """Under `jax.jit` (and `lagrax.load`'s `eqx.filter_eval_shape`) a setting has
    no value to check; its dtype still is."""

    @jax.jit
    def masses(m):
        return _pair(masses=m, reference=jnp.zeros(4)).masses

    np.testing.assert_array_equal(masses(jnp.array([1.0, 2.0])), [1.0, 2.0])
    with pytest.raises(TypeError, match="`masses`"):
        masses(jnp.array([1.0, 2.0], jnp.complex128))


MODELS = {
    "MLPLagrangian": lambda dtype: lagrax.MLPLagrangian(
        2, width=4, depth=1, dtype=dtype, key=KEY
    ),
    "MechanicalLagrangian": lambda dtype: lagrax.MechanicalLagrangian(
        2, width=4, depth=1, dtype=dtype, key=KEY
    ),
    "GraphLagrangian": lambda dtype: lagrax.GraphLagrangian(
        [0], [1], num_nodes=2, node_dim=1, width=4, depth=1, dtype=dtype, key=KEY
    ),
    "NeuralODEBaseline": lambda dtype: lagrax.NeuralODEBaseline(
        2, width=4, depth=1, dtype=dtype, key=KEY
    ),
    "HamiltonianNN": lambda dtype: lagrax.HamiltonianNN(
        2, width=4, depth=1, dtype=dtype, key=KEY
    ),
    "MessagePassingBaseline": lambda dtype: lagrax.MessagePassingBaseline(
        [0], [1], num_nodes=2, node_dim=1, width=4, depth=1, dtype=dtype, key=KEY
    ),
    "RayleighDissipation": lambda dtype: lagrax.RayleighDissipation(
        np.ones(2), dtype=dtype
    ),
    "CoulombFriction": lambda dtype: lagrax.CoulombFriction(np.ones(2), dtype=dtype),
    "LearnedDissipation": lambda dtype: lagrax.LearnedDissipation(
        2, width=4, depth=1, dtype=dtype, key=KEY
    ),
    "MLPForce": lambda dtype: lagrax.MLPForce(
        2, width=4, depth=1, dtype=dtype, key=KEY
    ),
}


@pytest.mark.parametrize("name", MODELS)
def test_complex_parameter_dtypes_are_refused(name):
    build = MODELS[name]
    leaves = jax.tree.leaves(eqx.filter(build(jnp.float32), eqx.is_inexact_array))
    assert leaves and all(leaf.dtype == jnp.float32 for leaf in leaves)
    with pytest.raises(TypeError, match="`dtype` must be a real floating.*complex64"):
        build(jnp.complex64)


def _diffeqsolve(term, solver, dtype):
    def time(t):
        return jnp.asarray(t, dtype)

    y0 = (jnp.array([1.0, 0.5], dtype), jnp.zeros(2, dtype))
    # Times of the state's dtype: Diffrax would otherwise promote the state to
    # theirs, and solve in that precision.
    return diffrax.diffeqsolve(term, solver, time(0.0), time(1.0), time(0.125), y0)


def _model_term(dtype):
    model = lagrax.NeuralODEBaseline(2, width=4, depth=1, dtype=dtype, key=KEY)
    return lagrax.DynamicsTerm(model)


SYSTEM = DoublePendulum()
PATHS = {
    "simulate": lambda dtype: lagrax.simulate(
        SYSTEM,
        jnp.array([1.0, 0.5], dtype),
        jnp.zeros(2, dtype),
        jnp.linspace(0.0, 1.0, 3, dtype=dtype),
        rtol=1e-2,
        atol=1e-2,
    ),
    "rollout": lambda dtype: lagrax.rollout(
        SYSTEM,
        jnp.array([[1.0, 0.5]], dtype),
        jnp.zeros((1, 2), dtype),
        jnp.linspace(0.0, 1.0, 3, dtype=dtype),
        solver=lagrax.VelocityVerlet(),
        dt0=0.125,
    ),
    **{
        f"diffeqsolve-{type(solver).__name__}": (
            lambda dtype, solver=solver: _diffeqsolve(
                lagrax.LagrangianTerm(SYSTEM), solver, dtype
            )
        )
        for solver in (
            diffrax.Tsit5(),
            lagrax.VelocityVerlet(),
            lagrax.VariationalMidpoint(),
            lagrax.GaussLegendre(),
            lagrax.Yoshida4(),
        )
    },
    "diffeqsolve-DynamicsTerm": lambda dtype: _diffeqsolve(
        _model_term(dtype), diffrax.Tsit5(), dtype
    ),
}


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
@pytest.mark.parametrize("path", PATHS)
def test_half_precision_states_are_refused(path, dtype):
    """Their rounding error is larger than any useful tolerance, and solves in them
    reported success far from the motion."""
    name = jnp.dtype(dtype).name
    with pytest.raises(TypeError, match=f"cannot integrate a {name} state"):
        PATHS[path](dtype)
