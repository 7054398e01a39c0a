# lagrax is not imported here: pytest's jaxtyping hook must import it first, to
# instrument it for runtime shape checking.
import importlib.metadata
import os


def _version(package: str) -> tuple[int, ...]:
    """An installed package's version as numbers, without importing it."""
    numbers = importlib.metadata.version(package).split(".")[:3]
    return tuple(int("".join(c for c in n if c.isdigit()) or 0) for n in numbers)


# The suite is mostly compilation, and two XLA settings halve XLA's share of it:
# the classic CPU fusion emitters (the newer ones compile slowly) and LLVM without
# its optimization passes. Both change how fast the compiled code runs, not what it
# computes beyond round-off, and the tests run little code for long; benchmarks
# and `lagrax reproduce` keep XLA's defaults. (Read when JAX starts its CPU
# backend, after this file; a setting of the caller's wins. Should XLA drop a
# flag, it refuses to start naming it: delete it here then.)
_TEST_XLA_FLAGS = {
    "xla_cpu_use_fusion_emitters": "false",
    "xla_backend_optimization_level": "0",
}
# The fusion emitters came with jaxlib 0.5 (0.5.3 has the flag, 0.5.0 does not):
# the lowest jaxlib that pyproject.toml allows knows only the second flag.
if _version("jaxlib") < (0, 5, 3):
    del _TEST_XLA_FLAGS["xla_cpu_use_fusion_emitters"]
_flags = os.environ.get("XLA_FLAGS", "")
os.environ["XLA_FLAGS"] = " ".join(
    [_flags]
    + [
        f"--{name}={value}"
        for name, value in _TEST_XLA_FLAGS.items()
        if name not in _flags
    ]
).strip()

import jax  # noqa: E402  (after XLA_FLAGS)
import jax.random as jr  # noqa: E402
import pytest  # noqa: E402


jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """`-n auto` (pyproject's default): one worker per core available to this
    process, at most 4 (each holds its own compiled functions: up to 4.5 GiB)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return min(cores, 4)


@pytest.fixture
def getkey():
    """A function returning a fresh PRNG key each call, deterministic per test."""
    key = jr.key(5678)

    def _getkey():
        nonlocal key
        key, subkey = jr.split(key)
        return subkey

    return _getkey
