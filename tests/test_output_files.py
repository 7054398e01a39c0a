"""What lagrax writes to disk: atomically, never through a symbolic link, never
outside `--out`; and `lagrax reproduce --fresh` removes only what it wrote and
recorded, as it wrote it."""

import hashlib
import json
import os
import pathlib

import jax.numpy as jnp
import pytest

from .test_cli import _main, _one_error_line, FakeSettings as Settings


class Experiment:
    """A stand-in for a module of lagrax.experiments, instant to run: its
    "training" writes a checkpoint holding `steps` with `lagrax.fit`'s writer (and
    is interrupted right after, where `interrupt` says so), or resumes from one;
    its report has the `figures` set here (none by default: drawing is slow)."""

    __name__ = "fake_experiment"
    Settings = Settings
    interrupt = False
    figures = ()

    @staticmethod
    def files_written(settings):
        return (_checkpoint_name(settings), "results.json", "losses.png")

    @staticmethod
    def memory_estimate(settings):
        return ()

    @classmethod
    def run(cls, settings, *, out, progress):
        import lagrax.experiments
        from lagrax import _serialisation

        path = out / _checkpoint_name(settings)
        resumed = path.exists()
        if resumed:
            state, _ = _serialisation.read_checkpoint(path, jnp.zeros(()))
        else:
            state = jnp.asarray(float(settings.steps))
            _serialisation.write_checkpoint(path, state, {})
            if cls.interrupt:
                raise KeyboardInterrupt
        return lagrax.experiments.Report(
            experiment="fake",
            settings=settings,
            models={"model": {"number": float(state), "resumed": resumed}},
            paper={},
            table="| fake table |",
            figures=cls.figures,
        )


def _checkpoint_name(settings) -> str:
    return f"model-seed{settings.seed}.ckpt"


def _draw(fig):
    fig.add_subplot().plot([0.0, 1.0])


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """The command line of `Experiment` into the folder tmp_path/out."""
    from lagrax._cli import reproduce

    monkeypatch.setitem(reproduce.EXPERIMENTS, "fake", (Experiment, "a fake"))
    return ["reproduce", "fake", "--no-progress", "--out", str(tmp_path / "out")]


def _manifest(out: pathlib.Path) -> dict:
    return json.loads((out / "lagrax-run.json").read_text())


def _entry(content: bytes) -> dict:
    """A file's record in the manifest: its size and SHA-256."""
    return dict(size=len(content), sha256=hashlib.sha256(content).hexdigest())


def _no_matplotlib(monkeypatch):
    """`from matplotlib.figure import Figure` fails, as without matplotlib."""
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)


def test_write_atomic_replaces_a_link_and_never_follows_it(tmp_path):
    from lagrax._files import write_atomic

    target = tmp_path / "target.txt"
    target.write_text("someone else's")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    write_atomic(link, b"lagrax's")
    assert target.read_text() == "someone else's"
    assert not link.is_symlink() and link.read_bytes() == b"lagrax's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.txt", "target.txt"]


@pytest.mark.parametrize("name", ["results.json", "lagrax-run.json"])
def test_a_dangling_link_is_refused(name, fake, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    outside = tmp_path / "outside.json"
    (out / name).symlink_to(outside)
    assert _main(fake) == 2
    error = _one_error_line(capsys.readouterr().err)
    assert name in error and "a symbolic link" in error
    assert not outside.exists()
    assert [p.name for p in out.iterdir()] == [name]  # refused before anything ran
    assert (out / name).is_symlink()


def test_link_over_a_recorded_file_is_refused(fake, tmp_path, capsys):
    out = tmp_path / "out"
    assert _main(fake) == 0
    recorded = _manifest(out)["files"]
    assert "results.json" in recorded
    mine = tmp_path / "mine.json"
    mine.write_text("a user's own file")
    (out / "results.json").unlink()
    (out / "results.json").symlink_to(mine)
    for fresh in ([], ["--fresh"]):
        assert _main([*fake, *fresh]) == 2
        error = _one_error_line(capsys.readouterr().err)
        assert "results.json (a symbolic link)" in error
        assert mine.read_text() == "a user's own file"
        assert (out / "results.json").is_symlink()
        # Refused before anything is removed, even with --fresh.
        assert _manifest(out)["files"] == recorded
        assert all((out / name).exists() for name in recorded)


def test_fresh_without_matplotlib_keeps_a_users_figure(
    fake, monkeypatch, tmp_path, capsys
):
    out = tmp_path / "out"
    _no_matplotlib(monkeypatch)
    monkeypatch.setattr(Experiment, "figures", (("losses.png", _draw),))
    assert _main(fake) == 0
    assert "losses.png" in Experiment.files_written(Settings())
    assert "losses.png" not in _manifest(out)["files"]  # declared, never written
    (out / "losses.png").write_text("a user's own plot")
    for fresh in ([], ["--fresh"]):
        assert _main([*fake, *fresh]) == 2
        assert "losses.png" in _one_error_line(capsys.readouterr().err)
        assert (out / "losses.png").read_text() == "a user's own plot"


def test_fresh_keeps_what_an_edited_manifest_names(fake, tmp_path, capsys):
    out = tmp_path / "out"
    assert _main(fake) == 0
    mine = out / "mine.txt"
    mine.write_text("a user's own file")
    manifest = _manifest(out)
    manifest["files"]["mine.txt"] = manifest["files"]["results.json"]
    (out / "lagrax-run.json").write_text(json.dumps(manifest))
    assert _main([*fake, "--fresh"]) == 0
    assert mine.read_text() == "a user's own file"
    assert repr(str(mine)) in capsys.readouterr().err
    assert "mine.txt" not in _manifest(out)["files"]
    # A name that leaves the folder is no manifest of lagrax: refused, outright.
    outside = tmp_path / "outside.txt"
    outside.write_text("a user's own file")
    manifest = _manifest(out)
    manifest["files"]["../outside.txt"] = manifest["files"]["results.json"]
    (out / "lagrax-run.json").write_text(json.dumps(manifest))
    assert _main([*fake, "--fresh"]) == 2
    assert "lagrax-run.json" in _one_error_line(capsys.readouterr().err)
    assert outside.read_text() == "a user's own file"


def test_a_changed_recorded_file_is_kept(fake, tmp_path, capsys):
    out = tmp_path / "out"
    assert _main(fake) == 0
    checkpoint = out / _checkpoint_name(Settings())
    changed = checkpoint.read_bytes() + b"a user's edit"
    checkpoint.write_bytes(changed)
    # The run would resume from it and replace it: refused.
    assert _main(fake) == 2
    error = _one_error_line(capsys.readouterr().err)
    assert f"{checkpoint.name} (changed since lagrax wrote it)" in error
    # Another seed writes another checkpoint: --fresh removes the rest of what
    # the first run wrote, keeps this one, and says so.
    assert _main([*fake, "--seed", "1", "--fresh"]) == 0
    err = capsys.readouterr().err
    assert repr(str(checkpoint)) in err and "changed since lagrax wrote it" in err
    assert checkpoint.read_bytes() == changed
    assert checkpoint.name not in _manifest(out)["files"]
    assert json.loads((out / "results.json").read_text())["settings"]["seed"] == 1


def test_an_interrupted_run_is_recorded_resumes_and_is_removed(
    fake, monkeypatch, tmp_path
):
    out = tmp_path / "out"
    checkpoint = out / _checkpoint_name(Settings())
    monkeypatch.setattr(Experiment, "interrupt", True)
    assert _main(fake) == 130
    assert _manifest(out)["files"] == {
        checkpoint.name: [_entry(checkpoint.read_bytes())]
    }
    monkeypatch.setattr(Experiment, "interrupt", False)
    monkeypatch.setattr(Experiment, "figures", (("losses.png", _draw),))
    assert _main(fake) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["models"]["model"] == {"number": 5.0, "resumed": True}
    # Every file in the folder but the manifest is recorded as it is.
    written = {p.name for p in out.iterdir()} - {"lagrax-run.json"}
    assert {checkpoint.name, "results.json"} <= written
    assert _manifest(out)["files"] == {
        name: [_entry((out / name).read_bytes())] for name in written
    }
    assert _main([*fake, "--seed", "1", "--fresh"]) == 0
    assert not checkpoint.exists()
    assert (out / _checkpoint_name(Settings(seed=1))).exists()


def test_a_crash_around_the_rename_leaves_the_file_recorded(monkeypatch, tmp_path):
    from lagrax._cli import manifest
    from lagrax._files import write_atomic

    def prepare(fresh=False):
        return manifest.prepare(
            tmp_path, experiment="fake", settings={}, files=("a.bin",), fresh=fresh
        )

    path = tmp_path / "a.bin"
    with prepare():
        write_atomic(path, b"old")
    assert _manifest(tmp_path)["files"] == {"a.bin": [_entry(b"old")]}
    replace = os.replace

    def crash_before(source, target):
        if pathlib.Path(target) == path:
            raise KeyboardInterrupt
        replace(source, target)

    def crash_after(source, target):
        replace(source, target)
        if pathlib.Path(target) == path:
            raise KeyboardInterrupt

    for crash, content in ((crash_before, b"old"), (crash_after, b"newer")):
        with prepare(), pytest.raises(KeyboardInterrupt):
            monkeypatch.setattr(os, "replace", crash)
            write_atomic(path, b"new" if crash is crash_before else b"newer")
        monkeypatch.setattr(os, "replace", replace)
        assert path.read_bytes() == content
        assert _entry(content) in _manifest(tmp_path)["files"]["a.bin"]
        with prepare():  # the rerun accepts the file as lagrax's
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "lagrax-run.json"]
    with prepare(fresh=True):
        assert not path.exists()


def test_writes_outside_out_or_over_a_strangers_file_are_refused(tmp_path):
    from lagrax._cli import manifest
    from lagrax._files import write_atomic

    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere.txt"
    late = out / "late.txt"
    with manifest.prepare(out, experiment="fake", settings={}, files=(), fresh=False):
        with pytest.raises(RuntimeError, match="only into --out"):
            write_atomic(elsewhere, b"lagrax's")
        late.write_text("put there while the run went on")
        with pytest.raises(FileExistsError, match="late.txt"):
            write_atomic(late, b"lagrax's")
    assert not elsewhere.exists()
    assert late.read_text() == "put there while the run went on"
    assert sorted(p.name for p in out.iterdir()) == ["lagrax-run.json", "late.txt"]
    assert _manifest(out)["files"] == {}


@pytest.mark.parametrize("name", ["trajectory.json", "trajectory.png"])
def test_simulate_refuses_a_link_at_its_outputs(name, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    mine = tmp_path / "mine"
    mine.write_text("a user's own file")
    dangling = tmp_path / "missing"
    argv = ["simulate", "harmonic-oscillator", "--t1", "0.1", "--out", str(out)]
    for target in (mine, dangling):
        (out / name).unlink(missing_ok=True)
        (out / name).symlink_to(target)
        assert _main(argv) == 2
        captured = capsys.readouterr()
        assert f"{name}, a symbolic link" in _one_error_line(captured.err)
        assert "max |ΔE|" not in captured.out  # refused before the solve
    assert mine.read_text() == "a user's own file"
    assert not dangling.exists()
