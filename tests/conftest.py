# lagrax is not imported here: pytest's jaxtyping hook must import it first, to
# instrument it for runtime shape checking.
import os


# The suite is mostly XLA compilation, and XLA's newer CPU fusion emitters compile
# slowly: the classic ones take a quarter less time for the suite, and run no
# slower. (Read when JAX starts its CPU backend, after this file; a setting of
# the caller's wins. Should XLA drop the flag, it refuses to start naming it:
# delete these lines then.)
if "xla_cpu_use_fusion_emitters" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = " ".join(
        [os.environ.get("XLA_FLAGS", ""), "--xla_cpu_use_fusion_emitters=false"]
    ).strip()

import jax
import jax.random as jr
import pytest


jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def getkey():
    """A function returning a fresh PRNG key each call, deterministic per test."""
    key = jr.key(5678)

    def _getkey():
        nonlocal key
        key, subkey = jr.split(key)
        return subkey

    return _getkey
