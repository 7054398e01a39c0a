"""The one way lagrax writes a file, and how a program is told of each write.

Every file lagrax writes (models and checkpoints, `results.json`, figures, the
trajectories of `lagrax simulate`) goes through `write_atomic`: the bytes go to a
new temporary file in the target's folder, which then replaces the target. The
target is never opened, so a symbolic link there is replaced, never written
through, and a crash leaves either the old file or the new one.
"""

import abc
import contextlib
import contextvars
import errno
import hashlib
import os
import pathlib
import secrets
from collections.abc import Iterator


class AbstractWriteObserver(abc.ABC):
    """Told of every file `write_atomic` writes while `observe_writes(observer)` is
    active, before and after the new content replaces the old: a record kept
    through both calls survives a crash between them. `lagrax reproduce` records
    in this way what it wrote, so that `--fresh` removes only that.
    """

    @abc.abstractmethod
    def replacing(self, path: pathlib.Path, size: int, sha256: str) -> None:
        """Called when the new content of `path` is on disk under a temporary name,
        before it replaces `path`. Raising refuses the write: `path` is left as it
        was.

        **Arguments:**

        - `path`: the file about to be replaced, as `write_atomic` was given it.
        - `size`: the new content's size in bytes.
        - `sha256`: the new content's SHA-256, in hex.
        """

    @abc.abstractmethod
    def replaced(self, path: pathlib.Path, size: int, sha256: str) -> None:
        """Called once `path` holds the new content; arguments as for `replacing`."""


_observers: contextvars.ContextVar[tuple[AbstractWriteObserver, ...]] = (
    contextvars.ContextVar("lagrax_write_observers", default=())
)


@contextlib.contextmanager
def observe_writes(observer: AbstractWriteObserver) -> Iterator[None]:
    """Tell `observer` of every file `write_atomic` writes inside the `with` block
    (in this thread or context), besides any observer already told.

    **Arguments:**

    - `observer`: an `AbstractWriteObserver`.

    **Returns:**

    A context manager.
    """
    if not isinstance(observer, AbstractWriteObserver):
        raise TypeError(
            f"`observer` must be an AbstractWriteObserver, got {observer!r}."
        )
    token = _observers.set((*_observers.get(), observer))
    try:
        yield
    finally:
        _observers.reset(token)


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to the file `path`, atomically and never through a link.

    The bytes go to a new file in the same folder (created exclusively, with the
    permissions the umask gives, and synced to disk), which then replaces `path`
    with `os.replace`: a reader sees the old file or the new one, never a part, and
    a symbolic link at `path` is itself replaced, its target untouched. Observers
    registered with `observe_writes` are told before and after the replacement.

    **Arguments:**

    - `path`: the file to write; its folder must exist.
    - `data`: the file's content.

    **Returns:**

    Nothing.

    **Raises:**

    `TypeError` if `data` is not bytes; `OSError` naming `path`
    (`FileNotFoundError` for a missing folder) if it cannot be written, with `path`
    as it was; whatever an observer raises to refuse the write.
    """
    if not isinstance(data, bytes):
        raise TypeError(f"`data` must be bytes, got {type(data).__name__}.")
    target = pathlib.Path(path)
    where = f"{os.fspath(path)!r}"
    if not target.parent.exists():
        raise FileNotFoundError(
            errno.ENOENT,
            f"cannot write {where}: the folder {os.fspath(target.parent)!r} does not "
            "exist",
        )
    observers = _observers.get()
    size, sha256 = len(data), hashlib.sha256(data).hexdigest()
    temporary = target.parent / f".{target.name}.{secrets.token_hex(8)}.tmp"
    try:
        try:
            # Mode 0o666 at creation lets the kernel apply the umask (and any
            # default ACL) as for any new file; `tempfile.mkstemp` would make it
            # private, 0o600.
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
            with os.fdopen(os.open(temporary, flags, 0o666), "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
        except OSError as e:
            raise _naming(e, where) from e
        for observer in observers:
            observer.replacing(target, size, sha256)
        try:
            os.replace(temporary, target)
        except OSError as e:
            raise _naming(e, where) from e
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    for observer in observers:
        observer.replaced(target, size, sha256)


def _naming(error: OSError, where: str) -> OSError:
    """`error` of the same type, naming the target: the temporary file's name would
    only confuse."""
    return type(error)(error.errno, f"cannot write {where}: {error.strerror or error}")
