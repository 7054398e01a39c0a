"""The experiments of lagrax.experiments, end to end through `lagrax reproduce` (the
command line's own behaviour is tested, with a stand-in experiment, in
test_cli.py), and their pieces."""

import ast
import dataclasses
import importlib.util
import json
import math
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from .test_cli import _main, _one_error_line, _strict_json, TINY_DP, TINY_REL


SOURCE = pathlib.Path(__file__).resolve().parent.parent / "src" / "lagrax"
MODEL_KEYS = {
    "test_l1_acceleration_error",
    "train_seconds",
    "skipped_steps",
    "final_train_loss",
}


def _check_schema(record, experiment, models):
    assert set(record) == {
        "experiment",
        "lagrax_version",
        "settings",
        "training_samples",
        "models",
        "paper",
    }
    assert record["experiment"] == experiment
    assert isinstance(record["lagrax_version"], str)
    assert record["training_samples"] == 3 * 16
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


def _drawn(expected) -> set[str]:
    """`expected`, without the plots where matplotlib is not installed to draw
    them: what a run writes (and records in its manifest)."""
    if importlib.util.find_spec("matplotlib") is None:
        return {name for name in expected if not name.endswith(".png")}
    return set(expected)


def _check_files(folder: pathlib.Path, expected) -> None:
    """`folder` holds the manifest and exactly `expected`, the plots among them
    where matplotlib is installed to draw them."""
    names = {p.name for p in folder.iterdir()}
    assert names == {*_drawn(expected), "lagrax-run.json"}


@pytest.mark.slow
def test_double_pendulum(tmp_path, capsys):
    from lagrax.experiments import double_pendulum

    # As many training states as test states: one compilation samples both.
    size = str(double_pendulum.TEST_SIZE)
    argv = [*TINY_DP, "--train-size", size]
    assert _main([*argv, "--out", str(tmp_path)]) == 0
    record = _strict_json(tmp_path / "results.json")
    _check_schema(record, "double-pendulum", {"lnn", "baseline"})
    # By default the paper's protocol alone: Tsit5, no rollout stage.
    assert record["settings"]["states"] == "reachable"
    assert record["settings"]["solvers"] == "tsit5"
    assert record["settings"]["rollout_steps"] == 0
    for metrics in record["models"].values():
        assert {
            "energy_discrepancy",
            "failed_rollouts",
            "test_rollout_error",
            "failed_test_rollouts",
        } <= set(metrics)
        assert not {m for m in metrics if m.startswith("energy_discrepancy_")}
        assert 0 <= metrics["failed_test_rollouts"] <= 32
    out = capsys.readouterr().out
    assert "| LNN (Tsit5) |" in out and "| Baseline (Tsit5) |" in out
    assert "LNN + rollout loss" not in out and "GaussLegendre" not in out
    written = set(double_pendulum.files_written(double_pendulum.Settings()))
    assert "lnn_rollout.ckpt" not in written
    _check_files(tmp_path, written)
    manifest = json.loads((tmp_path / "lagrax-run.json").read_text())
    assert set(manifest["files"]) == _drawn(written)

    # The rows beyond the paper: the rollout model's evaluation and report, with
    # the LNN in its place (resumed from the finished checkpoints: no training).
    settings = double_pendulum.Settings(**manifest["settings"])
    prepared = double_pendulum.data(settings)
    trained, histories, results = double_pendulum.train(
        settings, prepared, out=tmp_path, progress=False
    )
    settings = dataclasses.replace(
        settings, rollout_steps=2, solvers="tsit5,gauss-legendre"
    )
    # An LNN of 3 steps does not roll out (its mass matrix is indefinite on the
    # way, the windows diverge): a rollout stage skips every step, an error.
    with pytest.raises(RuntimeError, match="skipped all 2 steps"):
        double_pendulum.fine_tune(
            settings,
            trained["lnn"],
            prepared,
            progress=False,
        )
    trained["lnn_rollout"] = trained["lnn"]
    metrics, curves = double_pendulum.evaluate(settings, prepared, trained)
    for name in ("lnn", "lnn_rollout"):
        assert {
            "energy_discrepancy_gauss_legendre",
            "failed_rollouts_gauss_legendre",
            "test_rollout_error",
        } <= set(metrics[name])
        assert "energy_discrepancy_variational_midpoint" not in metrics[name]
    assert set(metrics["baseline"]) >= {"energy_discrepancy", "test_rollout_error"}
    assert "energy_discrepancy_gauss_legendre" not in metrics["baseline"]
    assert set(curves) == set(double_pendulum.evaluations(settings))
    assert metrics["lnn_rollout"]["test_rollout_error"] == pytest.approx(
        metrics["lnn"]["test_rollout_error"], nan_ok=True
    )
    results["lnn_rollout"] = dict(results["lnn"])
    for name in results:
        results[name].update(metrics[name])
    table = double_pendulum.table(settings, prepared.system, results)
    assert "| LNN + rollout loss (GaussLegendre(stages=2), dt 0.01) |" in table
    assert "VariationalMidpoint" not in table

    # The paper's box, with every solver but without the rollout stage, through
    # the library.
    everything = "tsit5,variational-midpoint,gauss-legendre"
    settings = dataclasses.replace(
        settings, states="box", rollout_steps=0, solvers=everything
    )
    report = double_pendulum.run(settings, progress=False)
    assert report.models is not None
    assert set(report.models) == {"lnn", "baseline"}
    assert {
        "energy_discrepancy_variational_midpoint",
        "failed_rollouts_variational_midpoint",
        "energy_discrepancy_gauss_legendre",
        "failed_rollouts_gauss_legendre",
    } <= set(report.models["lnn"])
    assert "| LNN (VariationalMidpoint, dt 0.01) |" in report.table
    assert "LNN + rollout loss" not in report.table
    assert "the paper's box" in report.table
    assert report.record()["settings"]["states"] == "box"
    assert "lnn_rollout.ckpt" not in double_pendulum.files_written(settings)


@pytest.mark.slow
def test_relativity_resumes_refuses_and_fresh(tmp_path, capsys):
    first, second = tmp_path / "a", tmp_path / "b"
    second.mkdir()
    (second / "mine.ckpt").write_text("a user's own file")
    assert _main([*TINY_REL, "--out", str(first), "--seed", "3"]) == 0
    assert _main([*TINY_REL, "--out", str(second), "--seed", "3"]) == 0
    a = _strict_json(first / "results.json")
    b = _strict_json(second / "results.json")
    _check_schema(a, "relativity", {"lnn", "hnn_noncanonical", "hnn_canonical"})
    assert _numbers(a) == _numbers(b)
    for metrics in a["models"].values():
        # the paper's weights 1 + γ ≥ 2: the weighted error is at least twice
        assert metrics["test_weighted_l1"] >= 2 * metrics["test_l1_acceleration_error"]
        assert metrics["training_steps"] == 3
        final, truth = metrics["final_velocity"], metrics["true_final_velocity"]
        assert metrics["final_velocity_error"] == pytest.approx(abs(final / truth - 1))
    # A rerun in the same folder resumes from the finished checkpoints: no
    # training, same numbers; settings that do not change results may differ.
    rerun = [arg for arg in TINY_REL if arg != "--no-progress"]
    assert _main([*rerun, "--out", str(first), "--seed", "3"]) == 0
    assert _numbers(_strict_json(first / "results.json")) == _numbers(a)
    # Other settings in the same folder: refused, not a results.json with the
    # new settings and the old models' numbers. (Another seed, not another
    # --steps: that would be another optimizer, compiled anew for every model.)
    capsys.readouterr()
    more = ["--out", str(second), "--seed", "4"]
    assert _main([*TINY_REL, *more]) == 2
    error = _one_error_line(capsys.readouterr().err)
    assert "--fresh" in error and "--seed 3 there, 4 here" in error
    assert _strict_json(second / "results.json") == b
    # --fresh removes what the earlier run wrote, and nothing else.
    assert _main([*TINY_REL, *more, "--fresh"]) == 0
    d = _strict_json(second / "results.json")
    assert d["settings"]["seed"] == 4
    assert _numbers(d) != _numbers(a)
    assert (second / "mine.ckpt").read_text() == "a user's own file"
    # The same numbers from the library, trained anew without checkpoints (and
    # compiled already, so quick), for either seed.
    from lagrax.experiments import relativity

    names = {field.name for field in dataclasses.fields(relativity.Settings)}
    settings = relativity.Settings(
        **{k: v for k, v in a["settings"].items() if k in names}
    )
    assert _numbers(relativity.run(settings, progress=False).record()) == _numbers(a)
    other = relativity.run(dataclasses.replace(settings, seed=4), progress=False)
    assert _numbers(other.record()) == _numbers(d)
    _check_files(
        first,
        {
            "lnn.ckpt",
            "hnn_noncanonical.ckpt",
            "hnn_canonical.ckpt",
            "results.json",
            "velocity.png",
            "losses.png",
        },
    )


@pytest.mark.parametrize(
    "change, name",
    [
        (dict(width=0), "width"),
        (dict(t1=math.inf), "t1"),
        (dict(lr=math.nan), "lr"),
        (dict(t1=0.05), "t1"),
        (dict(clip=-1.0), "clip"),
        (dict(batch_size=512, train_size=256), "batch_size"),
        (dict(train_size=100, batch_size=16, rollout_steps=1), "train_size"),
        (dict(solvers="gauss-legendre"), "solvers"),  # no Tsit5: not the paper's
        (dict(solvers="tsit5,rk4"), "solvers"),
        (dict(solvers="tsit5,tsit5"), "solvers"),
    ],
)
def test_double_pendulum_settings_are_checked(change, name):
    from lagrax.experiments import double_pendulum

    with pytest.raises(ValueError, match=f"`{name}`"):
        double_pendulum.Settings(**change)


@pytest.mark.parametrize(
    "change, name",
    [(dict(steps=1.5), "steps"), (dict(seed=True), "seed"), (dict(states=1), "states")],
)
def test_settings_of_the_wrong_type_are_refused(change, name):
    """A TypeError, from the settings' own check or, in these tests, from the
    runtime type checker before it."""
    from lagrax.experiments import double_pendulum

    with pytest.raises(TypeError, match=name):
        double_pendulum.Settings(**change)


def test_relativity_settings_are_checked():
    from lagrax.experiments import relativity

    with pytest.raises(ValueError, match="`batch_size`"):
        relativity.Settings(batch_size=64, train_size=32)
    with pytest.raises(ValueError, match="`t1`"):
        relativity.Settings(t1=0.0)
    with pytest.raises((TypeError, ValueError), match="weighting"):
        relativity.Settings(weighting="lorentz")  # pyright: ignore[reportArgumentType]
    with pytest.raises((TypeError, ValueError), match="norm"):
        relativity.Settings(norm="huber")  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="`q_scale`"):
        relativity.Settings(q_scale=0.0)
    with pytest.raises(ValueError, match="`hnn_steps`"):
        relativity.Settings(hnn_steps=0)
    # The LNN trains `steps`, the Hamiltonian networks at most as many.
    assert relativity.training_steps(relativity.Settings(steps=50, hnn_steps=20)) == {
        "lnn": 50,
        "hnn_noncanonical": 20,
        "hnn_canonical": 20,
    }
    assert set(relativity.training_steps(relativity.Settings(steps=5)).values()) == {5}


def test_wave_settings_and_files():
    from lagrax.experiments import wave

    with pytest.raises(ValueError, match="`finish_size`"):
        wave.Settings(finish_size=64, train_size=32, batch_size=16)
    with pytest.raises(ValueError, match="`finish_size`"):
        wave.Settings(finish_size=0)
    with pytest.raises(ValueError, match="`finish_steps`"):
        wave.Settings(finish_steps=-1)
    # A checkpoint per model and stage; no finish, no finish checkpoints.
    finished = {"lgn_finish.ckpt", "baseline_finish.ckpt"}
    assert finished <= set(wave.files_written(wave.Settings()))
    assert not finished & set(wave.files_written(wave.Settings(finish_steps=0)))


def test_double_pendulum_uses_the_systems_constants():
    import lagrax
    from lagrax.experiments import double_pendulum

    system = lagrax.systems.DoublePendulum()
    results = {
        name: dict(
            energy_discrepancy=0.5,
            energy_discrepancy_variational_midpoint=None,
            energy_discrepancy_gauss_legendre=20.0,
            test_l1_acceleration_error=0.1,
            test_rollout_error=None,
        )
        for name in ("lnn", "baseline")
    }
    settings = double_pendulum.Settings(
        rollout_steps=300, solvers="tsit5,variational-midpoint,gauss-legendre"
    )
    table = double_pendulum.table(settings, system, results)
    assert f"energy ≤ {system.max_potential_energy:g} " in table
    assert "LNN + rollout loss:" in table  # the caption names the stage
    assert "2.0e+01 (diverged)" in table and "50.00%" in table
    assert len(table.splitlines()) == 2 + 2 + 4  # caption, header, a row per run
    # By default the paper's rows alone: each model under Tsit5.
    table = double_pendulum.table(double_pendulum.Settings(), system, results)
    assert "LNN + rollout loss" not in table and "GaussLegendre" not in table
    assert len(table.splitlines()) == 2 + 2 + 2


def test_in_background_returns_raises_and_keeps_the_context():
    """The double pendulum's baseline trains in a thread of its own: what it
    returns or raises comes back, and it sees this thread's context (where the
    command line's manifest observes the checkpoints written)."""
    import contextvars

    from lagrax.experiments._common import in_background

    where = contextvars.ContextVar("where", default="a fresh context")
    where.set("the caller's context")
    assert in_background(lambda x: (x, where.get()), 1).result() == (
        1,
        "the caller's context",
    )

    def fail():
        raise ValueError("training diverged")

    with pytest.raises(ValueError, match="training diverged"):
        in_background(fail).result()


def test_report_record_is_json_without_nan(tmp_path):
    import lagrax
    from lagrax.experiments import relativity, Report

    settings = relativity.Settings(steps=10, batch_size=4)
    report = Report(
        experiment="relativity",
        settings=settings,
        models={"lnn": {"a": math.nan, "b": [math.inf, 1.0], "c": 2}},
        paper=relativity.PAPER,
        table="",
        figures=(),
    )
    record = report.record()
    assert record["models"]["lnn"] == {"a": None, "b": [None, 1.0], "c": 2}
    assert record["training_samples"] == 40
    assert record["lagrax_version"] == lagrax.__version__
    assert record["settings"] == dataclasses.asdict(settings)
    assert report.save(tmp_path) == [tmp_path / "results.json"]
    assert _strict_json(tmp_path / "results.json") == record


def test_mixed_data_blocks_match_the_rollout_batches():
    """The rollout stage pairs each trajectory with its own block of the first
    accelerations (at most ROLLOUT_BLOCK of them)."""
    import lagrax
    from lagrax.experiments import double_pendulum

    ts = jnp.linspace(0.0, 1.0, 3)
    trajectories = lagrax.TrajectoryData(ts, jnp.zeros((4, 3, 2)), jnp.zeros((4, 3, 2)))
    values = jnp.arange(2.0 * 1000).reshape(1000, 2)
    accelerations = lagrax.AccelerationData(values, values, values)
    data = double_pendulum._mixed(trajectories, accelerations)
    assert data.q.shape == (4, double_pendulum.ROLLOUT_BLOCK, 2)
    np.testing.assert_array_equal(data[jnp.array([1])].accelerations.q, values[64:128])
    small = double_pendulum._mixed(trajectories, accelerations[jnp.arange(10)])
    assert small.q.shape == (4, 2, 2)


def _imports(path: pathlib.Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            yield "." * node.level + (node.module or "")
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


@pytest.mark.parametrize(
    "folder, allowed",
    [("experiments", {".", "._common"}), ("_cli", {".", ".parsing", ".manifest"})],
)
def test_only_public_lagrax_is_imported(folder, allowed):
    """The experiments and the command line are written with lagrax's public API:
    nothing private of lagrax but their own helpers, and the one file writer that
    every write of lagrax goes through (so that the command line can confine and
    record what a run writes)."""
    for path in (SOURCE / folder).glob("*.py"):
        for name in _imports(path):
            if name.startswith("."):
                if name == ".._files":
                    continue
                own = name in allowed or name == "..experiments"
                assert own and not name.startswith(".._"), (path.name, name)
            else:
                assert not name.startswith("lagrax._"), (path.name, name)


@pytest.mark.slow
def test_ablation_reports_every_run_and_refuses_relu(tmp_path, capsys):
    from lagrax.experiments import ablation

    argv = ["reproduce", "ablation", "--steps", "3", "--batch-size", "16"]
    argv += ["--train-size", "64", "--ics", "2", "--t1", "0.3", "--width", "8"]
    argv += ["--activations", "tanh,relu", "--study-width", "32"]
    argv += ["--out", str(tmp_path), "--no-progress"]
    assert _main(argv) == 0
    record = _strict_json(tmp_path / "results.json")
    assert record["experiment"] == "ablation"
    assert "models" not in record
    runs = record["runs"]
    assert [(r["activation"], r["init"], r["seed"]) for r in runs] == [
        (a, i, s) for a in ("tanh", "relu") for i in ("lnn", "default") for s in (0, 1)
    ]
    for r in runs:
        keys = {"status", "reason", "test_l1", "energy_discrepancy", "skipped_steps"}
        assert keys | {"definite_fraction", "wall_seconds"} <= set(r)
        if r["activation"] == "relu":  # refused before training, not a NaN crash
            assert r["status"] == "failed"
            assert "second derivative" in r["reason"]
            assert r["test_l1"] is None
        else:
            assert r["status"] == "ok" and r["reason"] is None
            assert math.isfinite(r["test_l1"]) and r["test_l1"] > 0
            assert 0 <= r["definite_fraction"] <= 1
            assert r["skipped_steps"] == 0
    ok = [r for r in runs if r["status"] == "ok"]
    assert len({r["test_l1"] for r in ok}) == 4  # seeds and inits differ
    study = record["init_study"]
    assert {(r["init"], r["width"], r["depth"]) for r in study} == {
        (i, 32, d) for i in ("lnn", "default") for d in (2, 3, 4, 5)
    }
    assert all(r["qddot_std"] > 0 and r["grad_rms"] > 0 for r in study)
    out = capsys.readouterr().out
    assert "| relu | lnn | 0/2 | failed" in out
    manifest = json.loads((tmp_path / "lagrax-run.json").read_text())
    written = set(ablation.files_written(ablation.Settings(**manifest["settings"])))
    assert set(manifest["files"]) == _drawn(written)
    assert "tanh-default-seed1.ckpt" in written
    assert not any(name.startswith("relu") for name in written)
    _check_files(tmp_path, written)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(activations="tanh,swish"), "`activations` must be"),
        (dict(activations="tanh,tanh"), "names one twice"),
        (dict(inits="lnn,xavier"), "`inits` must be"),
        (dict(study_width=8), "`study_width` must be 0 or at least 32"),
        (dict(seeds=0), "`seeds` must be an int above 0"),
    ],
)
def test_ablation_settings_are_checked(change, message):
    from lagrax.experiments import ablation

    with pytest.raises(ValueError, match=message):
        ablation.Settings(**change)
