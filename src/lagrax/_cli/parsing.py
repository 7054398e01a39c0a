"""What every command shares: a parser whose errors are one line, argparse types
that reject out-of-domain numbers when they are parsed, the output folder's checks,
the check of a run's memory against the machine's, and one-line errors."""

import argparse
import dataclasses
import math
import os
import pathlib
import re
import tempfile


# The largest count an option takes (steps, sizes, widths): far past any run that
# finishes, within optax's int32 step count, and small enough that the product of
# two stays within int64.
MAX_COUNT = 10**9
# The largest seed `jax.random.key` takes (it refuses what int64 cannot hold).
MAX_SEED = 2**63 - 1


class UsageError(ValueError):
    """A bad argument: `lagrax: error: MESSAGE`, exit code 2."""


class ArgumentParser(argparse.ArgumentParser):
    """An `argparse.ArgumentParser` whose errors are `UsageError`s, which the
    command prints as one line, without the usage that `--help` shows. Its
    subparsers are of this class too."""

    def error(self, message: str):
        raise UsageError(message)


def _number(text: str, kind, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


@dataclasses.dataclass(frozen=True)
class Integer:
    """An argparse type: an int from `low` to `high`, both included. `str` of it
    is that range, for the option's help."""

    low: int
    high: int

    def __call__(self, text: str) -> int:
        value = _number(text, int, "an integer")
        if not self.low <= value <= self.high:
            raise argparse.ArgumentTypeError(
                f"must be an integer from {self}, got {text.strip()}"
            )
        return value

    def __str__(self) -> str:
        return f"{_readable(self.low)} to {_readable(self.high)}"


def _readable(value: int) -> str:
    if value == MAX_SEED:
        return "2^63 − 1"
    digits = len(str(value)) - 1
    return f"10^{digits}" if digits > 3 and value == 10**digits else str(value)


non_negative_int = Integer(0, MAX_COUNT)
positive_int = Integer(1, MAX_COUNT)
seed = Integer(0, MAX_SEED)


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


def available_memory() -> int | None:
    """The bytes of memory this machine has available: `MemAvailable` of
    /proc/meminfo (free memory and what the page cache gives back), else the free
    physical pages; `None` where neither is known."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):  # no sysconf, or not these names
        return None


def check_memory(needs: list[tuple[list[str], str, float]]) -> None:
    """A `UsageError` where a run would not fit in memory, before it starts.

    **Arguments:**

    - `needs`: what the run holds at once, as `(options, what, bytes)`, such as
        `(["--train-size 1000000000"], "the training data", 4.8e10)`: the
        options its size grows with, what it is, and about how many bytes it
        takes (a float, which absurd options may make infinite).

    Their sum is compared with `available_memory()` (nothing is checked where it
    is unknown); the error names the largest need and its options.
    """
    available = available_memory()
    total = sum(need[2] for need in needs)
    if available is None or total <= available:
        return
    options, what, largest = max(needs, key=lambda need: need[2])
    verb = "needs" if len(options) == 1 else "need"
    in_all = "" if size(total) == size(largest) else f" ({size(total)} in all)"
    raise UsageError(
        f"{' and '.join(options)} {verb} about {size(largest)} for {what}{in_all}; "
        f"this machine has {size(available)} available"
    )


def size(amount: int | float) -> str:
    """A number of bytes for people to read: "48 TB"."""
    if not math.isfinite(amount):
        return "more than 10^308 bytes"
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if amount < 999.5:
            return f"{amount:.3g} {unit}"
        amount /= 1000
    return f"{amount:.3g} EB"


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
