"""What every command shares: argparse types that reject out-of-domain numbers when
they are parsed, the output folder's checks, and one-line errors."""

import argparse
import math
import pathlib
import re
import tempfile


class UsageError(ValueError):
    """A bad argument found after parsing: `lagrax: error: MESSAGE`, exit code 2."""


def _number(text: str, kind, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """An int ≥ 0."""
    value = _number(text, int, "an integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def positive_int(text: str) -> int:
    """An int ≥ 1."""
    value = non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be positive, got 0")
    return value


def non_negative_float(text: str) -> float:
    """A finite float ≥ 0."""
    value = _number(text, float, "a number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number ≥ 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite float > 0."""
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def tolerance(text: str) -> float:
    """A relative tolerance in [1e-14, 1): tighter than float64 resolves is never
    met."""
    value = _number(text, float, "a number")
    if not 1e-14 <= value < 1:
        raise argparse.ArgumentTypeError(f"must lie in [1e-14, 1), got {text}")
    return value


def finite_floats(text: str) -> list[float]:
    """Comma-separated finite numbers."""
    return [_number(x, float, "comma-separated numbers") for x in text.split(",")]


def folder(text: str) -> pathlib.Path:
    """A folder path, not empty (`check_folder` checks it can be written)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder, got an empty path")
    return pathlib.Path(text)


def check_folder(path: pathlib.Path, option: str = "--out") -> None:
    """Create the folder `path` if needed and check that it takes new files, before
    any work is done; a `UsageError` if not."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {str(path)!r} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".lagrax-probe."):
            pass
    except OSError as e:
        raise UsageError(
            f"{option} {str(path)!r} cannot be written ({e.strerror or e})"
        ) from None


def one_line(error: BaseException) -> str:
    """The message of `error` on one line. An Equinox runtime error (a failed check
    under jit) carries its message after JAX's notes; anything but the usual
    errors is named by its type."""
    text = str(error)
    found = re.findall(r"EquinoxRuntimeError: (.+)", text)
    if found:
        return found[-1].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    message = lines[0] if lines else ""
    if isinstance(error, ValueError | RuntimeError | OSError) and message:
        return message
    return f"{type(error).__name__}: {message}" if message else type(error).__name__
