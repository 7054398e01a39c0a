"""The noisy-pendulum study (lagrax.experiments.noisy_pendulum): its settings, the
datasets it builds from noisy angles, and a small run that must recover the
pendulum."""

import dataclasses
import importlib.util
import json

import jax.numpy as jnp
import numpy as np
import pytest

import lagrax


def test_settings_are_checked():
    from lagrax.experiments import noisy_pendulum

    for change, message in [
        (dict(methods="del,verlet"), "`methods` must be"),
        (dict(methods="del,del"), "names one twice"),
        (dict(noise="0,0.0"), "`noise` names one twice"),
        (dict(noise="0,low"), "`noise` must be comma-separated numbers"),
        (dict(noise="0,-0.1"), "`noise` must hold finite numbers"),
        (dict(noise="0,nan"), "`noise` must hold finite numbers"),
        (dict(trajectories="1,x"), "`trajectories` must be comma-separated"),
        (dict(trajectories="0,1"), "`trajectories` must hold integers above 0"),
        (dict(observations="11,30"), "`observations` must each be at least 12"),
        (dict(observations="2", methods="del"), "at least 3"),
        (dict(window=1), "`window` must be at least 2"),
        (dict(held_out=0), "`held_out` must be an int above 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            noisy_pendulum.Settings(**change)
    default = noisy_pendulum.Settings()
    assert len(noisy_pendulum.configurations(default)) == 2 * 3 * 3 * 3
    assert len(set(noisy_pendulum.files_written(default))) == 54 + 3


def test_method_data_differentiates_the_angles():
    """Central differences are exact on a parabola; the rollout windows keep the
    most interior samples that whole windows cover."""
    from lagrax.experiments import noisy_pendulum

    ts = 0.1 * jnp.arange(12, dtype=jnp.float64)
    angles = jnp.stack([ts**2, 1 - 3 * ts**2])[..., None]  # q̈ = 2 and −6
    accelerations = noisy_pendulum.method_data("acceleration", ts, angles, 4)
    assert isinstance(accelerations, lagrax.AccelerationData)
    assert accelerations.q.shape == (2 * 10, 1)
    np.testing.assert_allclose(accelerations.qddot[:10], 2.0, rtol=1e-10)
    np.testing.assert_allclose(accelerations.qddot[10:], -6.0, rtol=1e-10)
    np.testing.assert_allclose(accelerations.qdot[:10, 0], 2 * ts[1:-1], atol=1e-12)
    windows = noisy_pendulum.method_data("rollout", ts, angles, 4)
    assert isinstance(windows, lagrax.TrajectoryData)
    assert windows.q.shape == (2, 10, 1)  # (10 − 1) is a multiple of 3
    np.testing.assert_array_equal(windows.ts, ts[1:11])
    np.testing.assert_allclose(windows.qdot[1, :, 0], -6 * ts[1:11], atol=1e-12)
    shorter = noisy_pendulum.method_data("rollout", ts, angles, 5)
    assert isinstance(shorter, lagrax.TrajectoryData)
    assert shorter.q.shape[1] == 9
    positions = noisy_pendulum.method_data("del", ts, angles, 4)
    assert isinstance(positions, lagrax.PositionData)
    np.testing.assert_array_equal(positions.q, angles)


@pytest.mark.slow
def test_small_study_recovers_the_pendulum(tmp_path):
    """On exact angles, the discrete Euler–Lagrange loss learns a pendulum whose
    held-out motion over five periods is far closer to the truth than the
    untrained model's, or than a pendulum at rest."""
    from lagrax.experiments import noisy_pendulum

    settings = noisy_pendulum.Settings(
        observations="30",
        trajectories="3",
        noise="0",
        methods="del",
        held_out=4,
    )
    report = noisy_pendulum.run(settings, out=tmp_path, progress=False)
    written = report.save(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    expected = set(noisy_pendulum.files_written(settings))
    if importlib.util.find_spec("matplotlib") is None:
        expected = {name for name in expected if not name.endswith(".png")}
    assert names == expected == {p.name for p in written} | {"del-n30-k3-noise0.ckpt"}
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["experiment"] == "noisy-pendulum"
    assert record["settings"] == dataclasses.asdict(settings)
    assert record["training_samples"] == settings.steps
    assert "models" not in record
    (run,) = record["runs"]
    assert (run["method"], run["observations"], run["trajectories"]) == ("del", 30, 3)
    assert run["noise"] == 0 and run["failed_rollouts"] == 0
    assert run["skipped_steps"] == 0
    untrained = record["reference"]["untrained"]
    at_rest = record["reference"]["at_rest"]["angle_rms"]
    assert run["angle_rms"] < min(untrained["angle_rms"], at_rest) / 5
    assert run["energy_rms"] < untrained["energy_rms"] / 20
    assert "| 30 | 3 | 0 |" in report.table
