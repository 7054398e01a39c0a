"""Measured runs: reading a CSV, turning it into training data, and the open-loop
metric of the real double pendulum against the lab's own numbers."""

import gzip

import numpy as np
import pytest


HEADER = "time,q1,q2,qdot1,qdot2,tau1,tau2\n"


def _write(path, rows, header=HEADER):
    text = header + "".join(
        ",".join(repr(float(x)) for x in row) + "\n" for row in rows
    )
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def _rows(num=20, dt=0.01):
    t = dt * np.arange(num)
    return np.stack(
        [t, np.sin(t), np.cos(t), np.cos(t), -np.sin(t), 0.1 * t, -0.1 * t], 1
    )


@pytest.mark.parametrize("name", ["run.csv", "run.csv.gz"])
def test_load_recording_reads_the_mapped_columns(tmp_path, name):
    import lagrax

    rows = _rows()
    recording = lagrax.load_recording(_write(tmp_path / name, rows))
    assert recording.u is not None
    assert recording.q.shape == (20, 2) and recording.u.shape == (20, 2)
    np.testing.assert_array_equal(recording.ts, rows[:, 0])
    np.testing.assert_array_equal(recording.qdot, rows[:, 3:5])
    np.testing.assert_array_equal(recording.u, rows[:, 5:7])
    # Another mapping: one coordinate, no input.
    one = lagrax.load_recording(tmp_path / name, q=("q2",), qdot=("qdot2",), u=None)
    assert one.q.shape == (20, 1) and one.u is None
    np.testing.assert_array_equal(one.q[:, 0], rows[:, 2])


def test_load_recording_refuses_bad_files(tmp_path):
    import lagrax

    rows = _rows()
    with pytest.raises(ValueError, match="no column 'tau2'"):
        lagrax.load_recording(
            _write(tmp_path / "a.csv", rows[:, :6], HEADER.replace(",tau2", ""))
        )
    nan = rows.copy()
    nan[7, 2] = np.nan
    with pytest.raises(ValueError, match="`q` must be finite: sample 7"):
        lagrax.load_recording(_write(tmp_path / "b.csv", nan))
    backwards = rows.copy()
    backwards[5, 0] = backwards[4, 0]
    with pytest.raises(ValueError, match="strictly increasing; sample 5"):
        lagrax.load_recording(_write(tmp_path / "c.csv", backwards))
    (tmp_path / "d.csv").write_text(HEADER + "0,1,2\n")
    with pytest.raises(ValueError, match="d.csv"):
        lagrax.load_recording(tmp_path / "d.csv")
    with pytest.raises(FileNotFoundError):
        lagrax.load_recording(tmp_path / "missing.csv")


def test_resample_windows_and_accelerations_are_exact_where_they_should_be():
    import lagrax

    # Irregular samples of q = sin(ωt): linear interpolation is exact at the
    # samples and close between them; central differences of q̇ are second order.
    omega = 3.0
    t = np.cumsum(np.r_[0.0, 0.002 + 0.0005 * np.sin(np.arange(999))])
    # Nearly uniform (±2%, as the shipped runs) for the finite differences.
    t_fd = np.cumsum(np.r_[0.0, 0.002 + 0.00004 * np.sin(np.arange(999))])
    q = np.sin(omega * t)[:, None]
    qdot = omega * np.cos(omega * t)[:, None]
    recording = lagrax.Recording(t, q, qdot, u=np.cos(t)[:, None])
    uniform = recording.resample(0.002)
    grid = np.asarray(uniform.ts)
    np.testing.assert_allclose(np.diff(grid), 0.002, rtol=1e-9)
    # Interpolation error ≤ h²/8 · max|q''| with h ≤ 2.5 ms.
    np.testing.assert_allclose(uniform.q[:, 0], np.sin(omega * grid), atol=1e-5)
    windows = uniform.windows(11, stride=5)
    assert windows.u is not None
    assert windows.q.shape == (len(windows), 11, 1) and windows.u.shape[-1] == 1
    np.testing.assert_allclose(windows.ts, 0.002 * np.arange(11), atol=1e-12)
    np.testing.assert_array_equal(windows.q[3], uniform.q[15:26])
    with pytest.raises(ValueError, match="resample"):
        recording.windows(11)
    nearly = lagrax.Recording(
        t_fd,
        np.sin(omega * t_fd)[:, None],
        omega * np.cos(omega * t_fd)[:, None],
        u=np.cos(t_fd)[:, None],
    )
    samples = nearly.accelerations(span=2)
    exact = -(omega**2) * np.sin(omega * t_fd[2:-2])
    # Central difference over ±2 samples of 2 ms: ω⁴ (2h)²/6 ≈ 2e-4, plus the
    # grid's asymmetry (≤ 0.16 ms) times ω³/2: ≈ 2e-3.
    np.testing.assert_allclose(samples.qddot[:, 0], exact, atol=3e-3)
    assert samples.u is not None
    assert samples.u.shape == (996, 1)  # the 2 samples at each end dropped
    positions = recording.positions()
    assert positions.q.shape == (1, 1000, 1)


def test_horizon_rms_of_the_lab_model_reproduces_its_numbers():
    """The identified model 2.0 of the measured double pendulum, evaluated with
    the lab's protocol on run 05, gives the lab's RMS angle errors (from the
    real-machines issue) within 10% — an independent check of the rigid-body
    Lagrangian, the friction forces, the torque interpolation and the metric."""
    import lagrax
    from lagrax.experiments import real_double_pendulum as rdp

    dynamics, friction = rdp.identified_model("2.0")
    recording = lagrax.load_recording(rdp.DATA / "trajectory_05.csv.gz")
    rms = lagrax.horizon_rms(
        dynamics,
        recording,
        rdp.HORIZONS,
        force=friction + lagrax.Actuation(),
        rtol=1e-6,
        atol=1e-6,
    )
    lab = rdp.PAPER["identified_2.0"]["trajectory_05.csv.gz"]
    for h in rdp.HORIZONS:
        assert rms[h] == pytest.approx(lab[str(h)], rel=0.1), h
    with pytest.raises(ValueError, match="no `force`"):
        lagrax.horizon_rms(dynamics, recording, [0.1])
    with pytest.raises(ValueError, match="`horizons`"):
        lagrax.horizon_rms(dynamics, recording, [0.0], force=lagrax.Actuation())


def test_real_double_pendulum_settings_and_files(tmp_path):
    from lagrax.experiments import real_double_pendulum as rdp

    with pytest.raises(ValueError, match="`test_data`"):
        rdp.Settings(test_data=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="no \\*.csv"):
        rdp.test_files(rdp.Settings(test_data=str(tmp_path)))
    _write(tmp_path / "trajectory_42.csv", _rows())
    settings = rdp.Settings(test_data=str(tmp_path))
    assert list(rdp.test_files(settings)) == [
        "trajectory_05.csv.gz",
        "trajectory_11.csv.gz",
        "trajectory_42.csv",
    ]
    assert "angles_trajectory_42.png" in rdp.files_written(settings)
    # The shipped data carry their licence.
    assert "BSD" in (rdp.DATA / "LICENSE").read_text()
    assert rdp.identified_parameters("1.0")["cf2"] == 0.186
    with pytest.raises(ValueError, match="`version`"):
        rdp.identified_parameters("3.0")
