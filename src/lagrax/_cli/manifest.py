"""The manifest of `lagrax reproduce`: a file in `--out` that records the settings
of the run that wrote there and every file it wrote, with its size and SHA-256,
so that

- a rerun with other settings is refused (its checkpoints would resume, or its
  results.json would be labelled with settings its numbers do not have);
- a run replaces only files lagrax wrote, as it wrote them: a user's file, a
  symbolic link or a file changed since, where the run would write, is refused
  before anything runs;
- `--fresh` removes exactly what earlier runs wrote, as they wrote it; anything
  else of a recorded name is left where it is, named in a warning.

The manifest is written before any other file, so an interrupted run is recorded
too, and then at each file written: the new content is recorded beside the old
before it replaces it, and alone after, so a crash between the two leaves a folder
whose files are all recorded.

    {
      "experiment": str,
      "settings": {...},
      "files": {NAME: [{"size": int, "sha256": str}, ...]}   # one content; two
    }                                                        # while it is replaced
"""

import contextlib
import errno
import hashlib
import json
import os
import pathlib
import re
import stat
import sys
import threading

from .._files import AbstractWriteObserver, observe_writes, write_atomic
from .parsing import UsageError


MANIFEST = "lagrax-run.json"


def prepare(
    out: pathlib.Path,
    *,
    experiment: str,
    settings: dict,
    files: tuple[str, ...],
    fresh: bool,
) -> contextlib.AbstractContextManager:
    """Make `out` ready for a run of `experiment` with `settings` that writes
    `files` there, and record it in the manifest.

    With `fresh`, first removes the files that earlier runs recorded and that are
    still as written; the others stay, each named in a warning on stderr. Raises a
    `UsageError` naming `--fresh` where `out` holds a run with other settings, and
    one naming them where `out` holds any of `files` that lagrax did not write as
    they are (a user's file, a symbolic link, one changed since), before anything
    is removed.

    Returns a context manager inside which every file `write_atomic` writes is
    recorded in the manifest (and one written outside `out`, or over a file that
    is not lagrax's, refused).
    """
    record = _read(out)
    recorded = {} if record is None else record["files"]
    if record is not None and not fresh:
        _check_same_run(out, record, experiment, settings)
    troubles = {
        name: _trouble(out / name, recorded.get(name, []))
        for name in {*files, *recorded}
    }
    strangers = [f"{name} ({troubles[name]})" for name in files if troubles[name]]
    if strangers:
        raise UsageError(
            f"--out {str(out)!r} holds {', '.join(strangers)}, where this run would "
            "write, and `lagrax reproduce` did not write them as they are (--fresh "
            "removes only what it wrote and recorded): move them away or choose "
            "another --out"
        )
    if fresh:
        for name in sorted(recorded):
            if troubles[name] is None:
                (out / name).unlink(missing_ok=True)
            else:
                print(
                    f"lagrax: warning: --fresh left {str(out / name)!r} where it is: "
                    f"{troubles[name]}",
                    file=sys.stderr,
                )
        recorded = {}
    record = dict(experiment=experiment, settings=settings, files=recorded)
    _write(out, record)
    return observe_writes(_Recorder(out, record))


class _Recorder(AbstractWriteObserver):
    """Records in the manifest each file written into `out`; refuses a write
    elsewhere, and one over a file that is not lagrax's as recorded (a file put
    there while the run went on). Thread-safe: an experiment may train two models
    at once, each writing its checkpoints."""

    def __init__(self, out: pathlib.Path, record: dict):
        self.out = out
        self.record = record
        self.lock = threading.Lock()

    def replacing(self, path: pathlib.Path, size: int, sha256: str) -> None:
        name = self._name(path)
        if name == MANIFEST:  # the recorder's own writes
            return
        with self.lock:
            self._replacing(name, path, size, sha256)

    def _replacing(self, name: str, path: pathlib.Path, size: int, sha256: str):
        entries = self.record["files"].get(name, [])
        trouble = _trouble(path, entries)
        if trouble:
            raise FileExistsError(
                errno.EEXIST,
                f"`lagrax reproduce` does not replace {str(path)!r}: {trouble}; move "
                "it away and run again",
            )
        # Until `replaced`, the name holds the old content or the new: both are
        # lagrax's, whenever the run stops.
        new = dict(size=size, sha256=sha256)
        self.record["files"][name] = [*(e for e in entries if e != new), new]
        _write(self.out, self.record)

    def replaced(self, path: pathlib.Path, size: int, sha256: str) -> None:
        name = self._name(path)
        if name == MANIFEST:
            return
        with self.lock:
            self.record["files"][name] = [dict(size=size, sha256=sha256)]
            _write(self.out, self.record)

    def _name(self, path: pathlib.Path) -> str:
        if not os.path.samefile(path.parent, self.out):
            raise RuntimeError(
                f"`lagrax reproduce` writes only into --out {str(self.out)!r}, not "
                f"{str(path)!r}"
            )
        return path.name


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


def _trouble(path: pathlib.Path, entries: list[dict]) -> str | None:
    """Why lagrax may not replace or remove `path`, in words; None where nothing is
    there, or one of the contents recorded in `entries`."""
    if not os.path.lexists(path):
        return None
    if path.is_symlink():
        return "a symbolic link"
    content = _regular_content(path)
    if content is None:
        return "not a regular file"
    if not entries:
        return f"not recorded in {MANIFEST}"
    if _entry(content) not in entries:
        return "changed since lagrax wrote it"
    return None


def _regular_content(path: pathlib.Path) -> bytes | None:
    """The content of the regular file at `path`, read without following a link
    or waiting on a pipe; None where `path` is anything else."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    descriptor = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return None
        with open(descriptor, "rb", closefd=False) as file:
            return file.read()
    finally:
        os.close(descriptor)


def _entry(content: bytes) -> dict:
    return dict(size=len(content), sha256=hashlib.sha256(content).hexdigest())


def _read(out: pathlib.Path) -> dict | None:
    path = out / MANIFEST
    if not os.path.lexists(path):
        return None
    if path.is_symlink():
        raise UsageError(
            f"{str(path)!r} is a symbolic link, not a manifest of `lagrax "
            "reproduce`: move it away or choose another --out"
        )
    try:
        content = _regular_content(path)
        if content is None:
            raise ValueError
        record = json.loads(content)
        if not _valid(record):
            raise ValueError
    except (OSError, ValueError):
        raise UsageError(
            f"{str(path)!r} is not a manifest of this lagrax's `lagrax reproduce` "
            "(damaged, edited, or an earlier lagrax's): move it away or choose "
            "another --out"
        ) from None
    return record


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _valid(record) -> bool:
    """Whether `record` is a manifest whose every file is a plain name in `out`,
    with recorded contents."""
    if not (
        isinstance(record, dict)
        and isinstance(record.get("experiment"), str)
        and isinstance(record.get("settings"), dict)
        and isinstance(record.get("files"), dict)
    ):
        return False
    for name, entries in record["files"].items():
        plain = (
            name not in ("", ".", "..", MANIFEST)
            and os.path.basename(name) == name
            and "\0" not in name
        )
        if not (plain and isinstance(entries, list) and entries):
            return False
        for entry in entries:
            if not (
                isinstance(entry, dict)
                and set(entry) == {"size", "sha256"}
                and type(entry["size"]) is int
                and entry["size"] >= 0
                and isinstance(entry["sha256"], str)
                and _SHA256.fullmatch(entry["sha256"])
            ):
                return False
    return True


def _write(out: pathlib.Path, record: dict) -> None:
    files = dict(sorted(record["files"].items()))
    text = json.dumps(dict(record, files=files), indent=2) + "\n"
    write_atomic(out / MANIFEST, text.encode("utf-8"))
