"""The command line checks every number before anything runs or is written (issue
34): a bad argument is one line on stderr, `lagrax: error: ...` naming the
option, exit code 2, and `--out` is left as it was, so a rerun with a sane value
is accepted. In these tests the experiments and the solve fail at once should
they start: the checks must come first."""

import json

import pytest


SEED_PAST_INT64 = str(2**64)
TINY = ["--steps", "3", "--batch-size", "16", "--train-size", "256", "--ics", "2"]
TINY += ["--t1", "0.5", "--width", "8", "--no-progress"]


def _main(argv) -> int | str | None:
    """The exit code of `lagrax ARGV`, whether argparse exits or main returns."""
    from lagrax._cli.main import main

    try:
        return main(argv)
    except SystemExit as exit:
        return exit.code


def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("lagrax: error: "), err
    return lines[0]


@pytest.fixture
def nothing_runs(monkeypatch):
    """Every experiment's `run`, and `lagrax simulate`'s first step of work,
    replaced by a failure."""
    from lagrax._cli import reproduce, simulate_cmd

    def started(*args, **kwargs):
        raise RuntimeError("the run started before its arguments were checked")

    for module, _ in reproduce.EXPERIMENTS.values():
        monkeypatch.setattr(module, "run", started)
    monkeypatch.setattr(simulate_cmd, "save_times", started)


@pytest.mark.parametrize(
    "argv, option",
    [
        (["reproduce", "double-pendulum", *TINY, "--seed", SEED_PAST_INT64], "--seed"),
        (["reproduce", "double-pendulum", *TINY, "--steps", str(10**30)], "--steps"),
        (["reproduce", "double-pendulum", *TINY, "--width", "1000000"], "--width"),
        (["reproduce", "relativity", "--train-size", str(10**12)], "--train-size"),
        (["reproduce", "double-pendulum", *TINY, "--t1", "1e15"], "--t1"),
        (["reproduce", "wave", "--periods", "1e12"], "--periods"),
        (["reproduce", "ablation", "--seed", str(2**63 - 1)], "--seeds"),
        (
            ["reproduce", "noisy-pendulum", "--observations", str(10**12)],
            "--observations",
        ),
        (["simulate", "pendulum", "--samples", "1000000000"], "--samples"),
        (["simulate", "pendulum", "--solver", "verlet", "--dt", "1e308"], "--dt"),
    ],
)
def test_the_issues_cases_are_refused_before_anything_runs(
    argv, option, nothing_runs, tmp_path, capsys
):
    out = tmp_path / "out"
    assert _main([*argv, "--out", str(out)]) == 2
    assert option in _one_error_line(capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, named",
    [
        (["reproduce", "double-pendulum", "--width", "1000000"], "--width 1000000"),
        (["reproduce", "double-pendulum", "--t1", "1e15"], "--t1 1e+15"),
        (["reproduce", "springs", "--num-masses", str(10**7)], f"--num-masses {10**7}"),
    ],
)
def test_memory_refusal_says_what_would_not_fit(
    argv, named, nothing_runs, monkeypatch, capsys
):
    """Against a machine with 64 GB available."""
    from lagrax._cli import parsing

    available = 64 * 10**9
    monkeypatch.setattr(parsing, "available_memory", lambda: available)
    assert _main(argv) == 2
    error = _one_error_line(capsys.readouterr().err)
    assert named in error and " for the " in error
    assert error.endswith(f"this machine has {parsing.size(available)} available")


def test_simulate_refuses_samples_the_machine_cannot_hold(
    nothing_runs, monkeypatch, tmp_path, capsys
):
    """Against a small machine (1 MB available), 100,000 saved samples of a
    pendulum: 5 float64 arrays of them in memory alone exceed it."""
    from lagrax._cli import parsing

    available = 10**6
    monkeypatch.setattr(parsing, "available_memory", lambda: available)
    out = tmp_path / "out"
    argv = ["simulate", "pendulum", "--samples", "100000", "--out", str(out)]
    assert _main(argv) == 2
    error = _one_error_line(capsys.readouterr().err)
    assert "--samples 100000" in error and "trajectory.json" in error
    assert error.endswith(f"this machine has {parsing.size(available)} available")
    assert 5 * 8 * 100_000 > available
    assert not out.exists()


def test_a_refused_run_leaves_out_for_a_sane_rerun(monkeypatch, tmp_path, capsys):
    """The refusal writes no manifest, so the rerun with a sane value is not
    refused as a run with other settings."""
    import lagrax.experiments
    from lagrax.experiments import double_pendulum

    def instant(settings, *, out, progress):
        return lagrax.experiments.Report(
            experiment="double-pendulum",
            settings=settings,
            models={},
            paper={},
            table="",
            figures=(),
        )

    monkeypatch.setattr(double_pendulum, "run", instant)
    argv = ["reproduce", "double-pendulum", *TINY, "--out", str(tmp_path)]
    assert _main([*argv, "--ics", "1000000000"]) == 2
    assert "--ics" in _one_error_line(capsys.readouterr().err)
    assert _main([*argv, "--ics", "3"]) == 0
    manifest = json.loads((tmp_path / "lagrax-run.json").read_text())
    assert manifest["settings"]["ics"] == 3


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--no-such-option"],
        ["nonsense"],
        ["simulate"],
        ["simulate", "pendulum", "--t1"],
        ["simulate", "pendulum", "--t1", "soon"],
        ["simulate", "pendulum", "--samples", "1"],
        ["simulate", "pendulum", "--solver", "euler"],
        ["simulate", "pendulum", "extra"],
        ["reproduce"],
        ["reproduce", "nonsense"],
        ["reproduce", "double-pendulum", "--steps", "1.5"],
        ["reproduce", "double-pendulum", "--steps", "-1"],
        ["reproduce", "double-pendulum", "--states", "everywhere"],
        ["reproduce", "relativity", "--ics", "2"],
        ["reproduce", "double-pendulum", "--seed", "-1"],
        ["bench"],
        ["bench", "nonsense"],
    ],
)
def test_every_argument_error_is_one_line(argv, nothing_runs, capsys):
    assert _main(argv) == 2
    captured = capsys.readouterr()
    _one_error_line(captured.err)
    assert "usage:" not in captured.err and captured.out == ""


def test_help_names_the_bounds(capsys):
    """Each integer option's help gives its range; `--help` still shows usage."""
    from lagrax._cli.parsing import positive_int, seed

    assert _main(["reproduce", "double-pendulum", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.startswith("usage:")
    assert f"PRNG seed ({seed};" in out
    assert f"hidden units per layer ({positive_int};" in out


def test_seed_bound_is_what_jax_takes():
    """The largest seed the command line takes makes a key; one more does not."""
    import jax.random as jr

    from lagrax._cli.parsing import seed

    jr.key(seed.high)
    with pytest.raises(OverflowError):
        jr.key(seed.high + 1)


def test_available_memory_is_at_most_the_machines():
    import os

    from lagrax._cli.parsing import available_memory

    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    available = available_memory()
    assert available is not None
    assert 0 < available <= total
