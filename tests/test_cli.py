import json
import shutil
import subprocess
import sys

import pytest


def _main(argv):
    from lagrax._cli.main import main

    return main(argv)


TINY_DP = [
    "reproduce",
    "double-pendulum",
    "--steps",
    "4",
    "--batch-size",
    "32",
    "--train-size",
    "256",
    "--ics",
    "2",
    "--t1",
    "1",
    "--width",
    "16",
    "--no-progress",
]
TINY_REL = [
    "reproduce",
    "relativity",
    "--steps",
    "4",
    "--batch-size",
    "32",
    "--train-size",
    "256",
    "--t1",
    "1",
    "--width",
    "8",
    "--no-progress",
]
MODEL_KEYS = {
    "test_l1_acceleration_error",
    "train_seconds",
    "skipped_steps",
    "final_train_loss",
}


def _check_schema(record, experiment, models):
    assert record["experiment"] == experiment
    assert isinstance(record["lagrax_version"], str)
    assert record["training_samples"] == 4 * 32
    assert set(record["models"]) == set(models)
    for metrics in record["models"].values():
        assert MODEL_KEYS <= set(metrics)
        assert isinstance(metrics["skipped_steps"], int)
    assert set(record["paper"]) >= {"lnn"}


def _numbers(record):
    """Everything but wall-clock times."""
    return {
        name: {k: v for k, v in metrics.items() if k != "train_seconds"}
        for name, metrics in record["models"].items()
    }


def _strict_json(path):
    """The file's JSON, refusing NaN and Infinity (not JSON, though Python's
    json module writes them by default)."""

    def refuse(constant):
        raise ValueError(f"{constant} in {path}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.mark.slow
@pytest.mark.parametrize("states, rollout_steps", [("reachable", 2), ("box", 0)])
def test_reproduce_double_pendulum(states, rollout_steps, tmp_path, capsys):
    argv = [*TINY_DP, "--states", states, "--rollout-steps", str(rollout_steps)]
    assert _main([*argv, "--out", str(tmp_path)]) == 0
    record = _strict_json(tmp_path / "results.json")
    models = {"lnn", "baseline"} | ({"lnn_rollout"} if rollout_steps else set())
    _check_schema(record, "double-pendulum", models)
    assert record["settings"]["states"] == states
    lnn = record["models"]["lnn"]
    assert {
        "energy_discrepancy",
        "energy_discrepancy_variational_midpoint",
        "energy_discrepancy_gauss_legendre",
        "failed_rollouts",
        "failed_rollouts_variational_midpoint",
        "failed_rollouts_gauss_legendre",
    } <= set(lnn)
    for metrics in record["models"].values():
        assert {
            "energy_discrepancy",
            "failed_rollouts",
            "test_rollout_error",
            "failed_test_rollouts",
        } <= set(metrics)
        assert 0 <= metrics["failed_test_rollouts"] <= 32
    if rollout_steps:
        assert {
            "energy_discrepancy_gauss_legendre",
            "failed_rollouts_gauss_legendre",
        } <= set(record["models"]["lnn_rollout"])
        assert (tmp_path / "lnn_rollout.ckpt").exists()
    out = capsys.readouterr().out
    assert "energy discrepancy" in out
    assert ("LNN + rollout loss" in out) == bool(rollout_steps)
    assert (tmp_path / "lnn.ckpt").exists()


@pytest.mark.slow
def test_reproduce_relativity_is_deterministic_and_resumes(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    assert _main([*TINY_REL, "--out", str(first), "--seed", "3"]) == 0
    assert _main([*TINY_REL, "--out", str(second), "--seed", "3"]) == 0
    a = _strict_json(first / "results.json")
    b = _strict_json(second / "results.json")
    _check_schema(a, "relativity", {"lnn", "hnn_noncanonical", "hnn_canonical"})
    assert _numbers(a) == _numbers(b)
    # A re-run in the same folder resumes from the finished checkpoints: no
    # training, same numbers.
    assert _main([*TINY_REL, "--out", str(first), "--seed", "3"]) == 0
    c = _strict_json(first / "results.json")
    assert _numbers(c) == _numbers(a)
    # A different seed changes them.
    shutil.rmtree(second)
    assert _main([*TINY_REL, "--out", str(second), "--seed", "4"]) == 0
    d = _strict_json(second / "results.json")
    assert _numbers(d) != _numbers(a)


def test_simulate_command(tmp_path, capsys):
    argv = [
        "simulate",
        "harmonic-oscillator",
        "--t1",
        "6.283185307179586",
        "--solver",
        "variational-midpoint",
        "--dt",
        "0.01",
        "--out",
        str(tmp_path),
    ]
    assert _main(argv) == 0
    record = json.loads((tmp_path / "trajectory.json").read_text())
    # one period of the unit oscillator from (1, 0) returns to (1, 0)
    assert abs(record["q"][-1][0] - 1.0) < 1e-3
    assert "max |ΔE|" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["simulate", "no-such-system"],
        ["simulate", "pendulum", "--q0", "1,2"],
        ["simulate", "pendulum", "--t1", "-1"],
        ["reproduce", "double-pendulum", "--steps", "0"],
        ["reproduce", "double-pendulum", "--definiteness", "-1"],
        ["reproduce", "double-pendulum", "--clip", "nan"],
        ["reproduce", "double-pendulum", "--rollout-steps", "-1"],
        ["reproduce", "double-pendulum", "--rollout-lr", "0"],
        ["reproduce", "nonsense"],
        ["bench", "nonsense"],
        [],
    ],
)
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        _main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err


def test_help_everywhere(capsys):
    for argv in (
        ["--help"],
        ["simulate", "--help"],
        ["bench", "--help"],
        ["reproduce", "--help"],
        ["reproduce", "double-pendulum", "--help"],
        ["reproduce", "relativity", "--help"],
    ):
        with pytest.raises(SystemExit) as info:
            _main(argv)
        assert info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_console_script_installed():
    lagrax = shutil.which("lagrax") or str(
        __import__("pathlib").Path(sys.executable).parent / "lagrax"
    )
    out = subprocess.run([lagrax, "--help"], capture_output=True, text=True, check=True)
    assert "reproduce" in out.stdout


@pytest.mark.slow
def test_bench_command_runs_a_benchmark(capsys):
    assert _main(["bench", "train_step", "--quick"]) == 0
    assert "speed-up over the paper's formula" in capsys.readouterr().out
