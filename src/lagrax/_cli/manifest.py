"""The manifest of `lagrax reproduce`: a file in `--out` that records the settings
of the run that wrote there and the files it wrote, so that

- a rerun with other settings is refused (its checkpoints would resume, or its
  results.json would be labelled with settings its numbers do not have);
- `--fresh` removes exactly what earlier runs wrote, never a user's own files.

It is written before any other file, so an interrupted run is recorded too.
"""

import json
import os
import pathlib
import tempfile

from .parsing import UsageError


MANIFEST = "lagrax-run.json"


def prepare(
    out: pathlib.Path,
    *,
    experiment: str,
    settings: dict,
    files: tuple[str, ...],
    fresh: bool,
) -> None:
    """Make `out` ready for a run of `experiment` with `settings` that writes
    `files` there, and record it in the manifest; a `UsageError` naming `--fresh`
    where `out` holds a run with other settings, and one where it holds files of
    those names that no run recorded (a user's, or an older lagrax's)."""
    record = _read(out)
    if record is not None and fresh:
        _remove(out, record["files"])
        record = None
    if record is not None:
        _check_same_run(out, record, experiment, settings)
    recorded = set() if record is None else set(record["files"])
    strangers = [f for f in files if f not in recorded and (out / f).exists()]
    if strangers:
        raise UsageError(
            f"--out {str(out)!r} holds {', '.join(strangers)}, which no run of "
            f"`lagrax reproduce` recorded in {MANIFEST} (--fresh removes only "
            "what it did record): move them away or choose another --out"
        )
    _write(
        out,
        dict(
            experiment=experiment,
            settings=settings,
            files=sorted(recorded | set(files)),
        ),
    )


def _check_same_run(
    out: pathlib.Path, record: dict, experiment: str, settings: dict
) -> None:
    if record["experiment"] != experiment:
        raise UsageError(
            f"--out {str(out)!r} holds a run of {record['experiment']}, not "
            f"{experiment}: pass --fresh to replace it, or choose another --out"
        )
    differences = [
        f"--{name.replace('_', '-')} {record['settings'].get(name)!r} there, "
        f"{value!r} here"
        for name, value in settings.items()
        if record["settings"].get(name) != value
    ]
    if differences:
        raise UsageError(
            f"--out {str(out)!r} holds a run with other settings "
            f"({'; '.join(differences)}): pass --fresh to replace it, or choose "
            "another --out"
        )


def _read(out: pathlib.Path) -> dict | None:
    path = out / MANIFEST
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
        if not (
            isinstance(record, dict)
            and isinstance(record.get("experiment"), str)
            and isinstance(record.get("settings"), dict)
            and isinstance(record.get("files"), list)
            and all(isinstance(f, str) and "/" not in f for f in record["files"])
        ):
            raise ValueError
    except (OSError, ValueError):
        raise UsageError(
            f"{str(path)!r} is not a manifest of `lagrax reproduce`: move it away "
            "or choose another --out"
        ) from None
    return record


def _write(out: pathlib.Path, record: dict) -> None:
    """Write the manifest by way of a temporary file, never half written."""
    fd, temporary = tempfile.mkstemp(dir=out, prefix=f".{MANIFEST}.")
    try:
        with os.fdopen(fd, "w") as file:
            file.write(json.dumps(record, indent=2) + "\n")
        os.replace(temporary, out / MANIFEST)
    except BaseException:
        os.unlink(temporary)
        raise


def _remove(out: pathlib.Path, files: list[str]) -> None:
    for name in files:
        (out / name).unlink(missing_ok=True)
    (out / MANIFEST).unlink()
