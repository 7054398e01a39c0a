"""lagrax.compare_solvers: work–precision on a user's Lagrangian, checked against
closed forms."""

import diffrax
import jax.numpy as jnp
import numpy as np
import pytest

import lagrax


def test_compare_solvers_measures_known_errors():
    """Störmer–Verlet on q̈ = −q from (1, 0) conserves ½p² + ½(1 − h²/4)q², so the
    energy E = ½p² + ½q² dips by h²q²/8 and its largest relative error is h²/4
    (first and last steps included); steps are t1/h; Tsit5 at 1e-8 is accurate."""
    oscillator = lagrax.systems.HarmonicOscillator()
    settings = [
        lagrax.SolverSetting("Verlet", lagrax.VelocityVerlet(), dt0=dt)
        for dt in (0.1, 0.05)
    ] + [lagrax.SolverSetting("Tsit5", diffrax.Tsit5(), tolerance=1e-8)]
    runs = lagrax.compare_solvers(
        oscillator,
        jnp.array([1.0]),
        jnp.array([0.0]),
        [5.0, 10.0],
        settings,
        repeats=2,
    )
    assert [(run.setting, run.t1) for run in runs] == [
        (s, t1) for t1 in (5.0, 10.0) for s in settings
    ]
    for t1, here in ((5.0, runs[:3]), (10.0, runs[3:])):
        for run, dt in zip(here[:2], (0.1, 0.05)):
            assert run.successful and run.steps == round(t1 / dt)
            np.testing.assert_allclose(run.energy_error, dt**2 / 4, rtol=1e-2)
            assert 0 < run.wall_seconds < 10
        # 2nd order: halving the step quarters the final error
        ratio = here[0].final_error / here[1].final_error
        np.testing.assert_allclose(ratio, 4, rtol=0.1)
        assert here[2].final_error < 1e-6 and here[2].energy_error < 1e-6


def test_solver_settings_and_arguments_are_checked():
    with pytest.raises(ValueError, match="exactly one of `dt0`"):
        lagrax.SolverSetting("x", diffrax.Tsit5(), dt0=0.1, tolerance=1e-6)
    with pytest.raises(ValueError, match="no error estimate"):
        lagrax.SolverSetting("x", lagrax.GaussLegendre(), tolerance=1e-6)
    with pytest.raises(ValueError, match="`dt0` must be a positive"):
        lagrax.SolverSetting("x", lagrax.GaussLegendre(), dt0=-0.1)
    setting = lagrax.SolverSetting("x", lagrax.VelocityVerlet(), dt0=0.1)
    oscillator = lagrax.systems.HarmonicOscillator()
    rest = (jnp.array([0.0]), jnp.array([0.0]))
    with pytest.raises(ValueError, match="`energy_scale`"):  # E(0) = 0 at rest
        lagrax.compare_solvers(oscillator, *rest, 1.0, [setting])
    with pytest.raises(ValueError, match="`t1`"):
        lagrax.compare_solvers(oscillator, *rest, -1.0, [setting])
    with pytest.raises(TypeError, match="`settings`"):
        lagrax.compare_solvers(oscillator, *rest, 1.0, [])
