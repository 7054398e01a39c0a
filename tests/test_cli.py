import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest


def _main(argv):
    """The exit code of `lagrax ARGV`, whether argparse exits or main returns."""
    from lagrax._cli.main import main

    try:
        return main(argv)
    except SystemExit as exit:
        return exit.code


TINY_DP = [
    "reproduce",
    "double-pendulum",
    "--steps",
    "3",
    "--batch-size",
    "16",
    "--train-size",
    "256",
    "--ics",
    "2",
    "--t1",
    "0.5",
    "--width",
    "8",
    "--no-progress",
]
TINY_REL = [
    "reproduce",
    "relativity",
    "--steps",
    "3",
    "--batch-size",
    "16",
    "--train-size",
    "64",
    "--t1",
    "0.5",
    "--width",
    "4",
    "--no-progress",
]


def _strict_json(path):
    """The file's JSON, refusing NaN and Infinity (not JSON, though Python's
    json module writes them by default)."""

    def refuse(constant):
        raise ValueError(f"{constant} in {path}")

    return json.loads(path.read_text(), parse_constant=refuse)


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("lagrax: error: "), err
    return lines[0]


@dataclasses.dataclass(frozen=True)
class FakeSettings:
    """The settings of `FakeExperiment`."""

    steps: int = 5
    batch_size: int = 2
    seed: int = 0


class FakeExperiment:
    """A stand-in for a module of lagrax.experiments, instant to run: its
    "training" writes model.ckpt holding a number made of `steps` and `seed`, and a
    rerun in the same folder resumes from it, as `lagrax.fit` does; `number` in
    results.json is what the checkpoint holds. (The real experiments run end to end
    in test_experiments.py.)"""

    __name__ = "fake_experiment"
    Settings = FakeSettings

    @staticmethod
    def files_written(settings):
        return ("model.ckpt", "results.json")

    @staticmethod
    def memory_estimate(settings):
        return ()

    @staticmethod
    def run(settings, *, out, progress):
        import lagrax.experiments
        from lagrax._files import write_atomic

        checkpoint = out / "model.ckpt"
        if not checkpoint.exists():  # written as lagrax writes, so it is recorded
            number = 100 * settings.steps + settings.seed
            write_atomic(checkpoint, str(number).encode())
        return lagrax.experiments.Report(
            experiment="fake",
            settings=settings,
            models={"model": {"number": float(checkpoint.read_text())}},
            paper={},
            table="| fake table |",
            figures=(),
        )


@pytest.fixture
def fake_experiment(monkeypatch):
    from lagrax._cli import reproduce

    monkeypatch.setitem(reproduce.EXPERIMENTS, "fake", (FakeExperiment, "a fake"))
    return ["reproduce", "fake", "--no-progress"]


def test_reproduce_refuses_other_settings_and_fresh_removes_only_its_files(
    fake_experiment, tmp_path, capsys
):
    out = ["--out", str(tmp_path)]
    assert _main([*fake_experiment, *out, "--steps", "5"]) == 0
    first = _strict_json(tmp_path / "results.json")
    assert first["settings"]["steps"] == 5
    assert first["models"]["model"]["number"] == 500
    assert "| fake table |" in capsys.readouterr().out
    # Other settings in the same folder: refused (the checkpoint would resume and
    # results.json would name the new settings over the old numbers).
    assert _main([*fake_experiment, *out, "--steps", "6"]) == 2
    error = _one_error_line(capsys.readouterr().err)
    assert "--fresh" in error and "--steps" in error
    assert _strict_json(tmp_path / "results.json") == first
    # A setting that does not change results may differ.
    assert _main(["reproduce", "fake", *out, "--steps", "5"]) == 0
    # --fresh removes what the earlier run wrote, and nothing else.
    (tmp_path / "mine.ckpt").write_text("a user's own file")
    assert _main([*fake_experiment, *out, "--steps", "6", "--fresh"]) == 0
    second = _strict_json(tmp_path / "results.json")
    assert second["settings"]["steps"] == 6
    assert second["models"]["model"]["number"] == 600
    assert (tmp_path / "mine.ckpt").read_text() == "a user's own file"
    manifest = json.loads((tmp_path / "lagrax-run.json").read_text())
    assert manifest["settings"] == {"steps": 6, "batch_size": 2, "seed": 0}
    assert set(manifest["files"]) == {"model.ckpt", "results.json"}


def test_reproduce_failure_is_one_line(fake_experiment, monkeypatch, tmp_path, capsys):
    def fail(settings, *, out, progress):
        raise RuntimeError("training diverged\nmore detail")

    monkeypatch.setattr(FakeExperiment, "run", staticmethod(fail))
    argv = [*fake_experiment, "--out", str(tmp_path)]
    assert _main(argv) == 1
    error = _one_error_line(capsys.readouterr().err)
    assert error.startswith("lagrax: error: training diverged")
    assert _main([*argv, "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_reproduce_refuses_a_broken_manifest(fake_experiment, tmp_path, capsys):
    (tmp_path / "lagrax-run.json").write_text("{not json")
    for fresh in ([], ["--fresh"]):
        assert _main([*fake_experiment, "--out", str(tmp_path), *fresh]) == 2
        assert "lagrax-run.json" in _one_error_line(capsys.readouterr().err)


def test_reproduce_refuses_files_it_did_not_write(tmp_path, capsys):
    (tmp_path / "lnn.ckpt").write_text("not lagrax's")
    for fresh in ([], ["--fresh"]):
        assert _main([*TINY_DP, "--out", str(tmp_path), *fresh]) == 2
        assert "lnn.ckpt" in _one_error_line(capsys.readouterr().err)
        assert (tmp_path / "lnn.ckpt").read_text() == "not lagrax's"
    assert not (tmp_path / "lagrax-run.json").exists()


def test_reproduce_checks_out_before_training(tmp_path, capsys):
    file = tmp_path / "file"
    file.write_text("")
    below_file = file / "results"
    for out in (file, below_file):
        assert _main([*TINY_REL, "--out", str(out)]) == 2
        error = _one_error_line(capsys.readouterr().err)
        assert str(file) in error
    assert "training" not in capsys.readouterr().out
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert _main([*TINY_REL, "--out", str(locked)]) == 2
        assert "cannot be written" in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("solver", ["variational-midpoint", "gauss-legendre"])
def test_simulate_command(solver, tmp_path, capsys):
    argv = [
        "simulate",
        "harmonic-oscillator",
        "--t1",
        "6.283185307179586",
        "--solver",
        solver,
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
    # saved on the step grid (and at t1): the solver's own states, not the
    # interpolation between them
    steps = np.asarray(record["ts"][:-1]) / 0.01
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-9)


def test_simulate_failure_is_one_line(capsys):
    argv = ["simulate", "double-pendulum", "--solver", "verlet", "--dt", "5"]
    assert _main(argv) == 1
    captured = capsys.readouterr()
    assert "max |ΔE|" not in captured.out  # no drift of 1e14 reported as a result
    error = _one_error_line(captured.err)
    assert "does not resolve the motion" in error and "--debug" in error
    assert _main(["--debug", *argv]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.strip().splitlines()[-1].startswith("lagrax: error: ")


def test_bad_values_are_one_line_exit_2(tmp_path, capsys):
    """Bad values that only the system or the settings as a whole reveal: one line,
    before any work. (Should one pass, the run is tiny and stays in tmp_path.)"""
    out = ["--out", str(tmp_path)]
    for argv, option in (
        (["simulate", "relativistic-particle", "--qdot0", "1.5", *out], "--qdot0"),
        ([*TINY_DP, *out, "--batch-size", "512", "--train-size", "256"], "--batch"),
        # (The rollout stage takes a block of accelerations per trajectory.)
        ([*TINY_DP, *out, "--train-size", "100", "--rollout-steps", "1"], "--train"),
    ):
        assert _main(argv) == 2
        assert option in _one_error_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["simulate", "no-such-system"],
        ["simulate", "pendulum", "--q0", "1,2"],
        ["simulate", "pendulum", "--t1", "-1"],
        ["simulate", "pendulum", "--t1", "inf"],
        ["simulate", "pendulum", "--qdot0", "nan"],
        ["simulate", "pendulum", "--rtol", "1e-30"],
        ["simulate", "pendulum", "--rtol", "1"],
        ["simulate", "pendulum", "--dt", "nan"],
        ["simulate", "pendulum", "--samples", "1"],
        ["simulate", "pendulum", "--t1", "1e9", "--dt", "1e-3"],
        ["simulate", "pendulum", "--out", ""],
        ["reproduce", "nonsense"],
        [*TINY_REL, "--ics", "2"],  # relativity has no --ics
        ["bench", "nonsense"],
        [],
    ],
)
def test_bad_arguments_exit_2(argv, capsys):
    assert _main(argv) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    "option",
    [
        ["--steps", "0"],
        ["--width", "0"],
        ["--t1", "inf"],
        ["--t1", "0.01"],
        ["--lr", "nan"],
        ["--definiteness", "-1"],
        ["--clip", "nan"],
        ["--rollout-steps", "-1"],
        ["--rollout-lr", "0"],
        ["--solvers", "gauss-legendre"],
        ["--solvers", "tsit5,rk4"],
        ["--seed", "-1"],
        ["--out", ""],
    ],
)
def test_bad_reproduce_arguments_exit_2(option, tmp_path, capsys):
    # A tiny budget and a folder of the test's own: should a bad value pass, the run
    # is short and writes nothing outside tmp_path.
    argv = [*TINY_DP, "--out", str(tmp_path / "out"), *option]
    assert _main(argv) == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_options_are_the_settings():
    """Every setting of an experiment is an option with the setting's default, and
    the help names options, not fields."""
    import lagrax.experiments
    from lagrax._cli.main import build_parser

    parser = build_parser()
    for name, module in (
        ("double-pendulum", lagrax.experiments.double_pendulum),
        ("relativity", lagrax.experiments.relativity),
    ):
        args = parser.parse_args(["reproduce", name])
        defaults = dataclasses.asdict(module.Settings())
        assert {k: getattr(args, k) for k in defaults} == defaults
    args = parser.parse_args(["reproduce", "double-pendulum", "--t1", "2"])
    assert args.t1 == 2.0 and isinstance(args.t1, float)


def test_help_everywhere(capsys):
    for argv in (
        ["--help"],
        ["simulate", "--help"],
        ["bench", "--help"],
        ["reproduce", "--help"],
        ["reproduce", "double-pendulum", "--help"],
        ["reproduce", "relativity", "--help"],
    ):
        assert _main(argv) == 0
    out = capsys.readouterr().out
    assert "usage:" in out
    assert "gauss-legendre" in out
    assert "--debug" in out
    # The experiment's description names its settings as options.
    assert "--rollout-steps (default 0: off;" in out
    assert "--solvers (default tsit5)" in out
    assert "`rollout_steps`" not in out


def test_console_script_installed():
    lagrax = shutil.which("lagrax") or str(
        __import__("pathlib").Path(sys.executable).parent / "lagrax"
    )
    out = subprocess.run([lagrax, "--help"], capture_output=True, text=True, check=True)
    assert "reproduce" in out.stdout


@pytest.mark.slow
def test_bench_command_runs_a_benchmark(capsys):
    # Options after the name go to the script: its own --repeats, and its own
    # refusal of one it does not know.
    assert _main(["bench", "train_step", "--quick", "--repeats", "2"]) == 0
    assert "speed-up over the paper's formula" in capsys.readouterr().out
    assert _main(["bench", "train_step", "--no-such-option"]) == 2
    assert "--no-such-option" in capsys.readouterr().err
