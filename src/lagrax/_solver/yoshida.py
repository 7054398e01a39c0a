from collections.abc import Callable
from typing import ClassVar

import diffrax
import jax
import jax.numpy as jnp

from .base import AbstractSymmetricSolver, first_failure
from .variational import VariationalMidpoint


# Yoshida's triple jump: w₁ + w₀ + w₁ = 1 and 2w₁³ + w₀³ = 0 cancel the h³ error of a
# symmetric 2nd-order method; the middle substep runs backwards in time.
_W1 = 1 / (2 - 2 ** (1 / 3))
_W0 = 1 - 2 * _W1


class Yoshida4(diffrax.AbstractWrappedSolver):
    r"""4th-order triple-jump composition of a symmetric 2nd-order lagrax solver.

    One step of size `h` is three steps of `base` of sizes `w₁h, w₀h, w₁h` with
    `w₁ = 1/(2 − 2^{1/3}) ≈ 1.35`, `w₀ = 1 − 2w₁ ≈ −1.70` (the middle one runs
    backwards). It inherits the base method's structure: symplectic and symmetric
    whenever the base is.

    The default base, `VariationalMidpoint()`, is symmetric and symplectic for any
    regular Lagrangian, so the composition is 4th order for every system. With
    `base=VelocityVerlet()` it costs only three accelerations per step, but it is
    4th order (and symplectic) only when `q̈` does not depend on `q̇`: for a
    velocity-dependent `q̈` the Verlet step is not symmetric and the composition
    loses its order: measured 2nd order on a damped oscillator (Verlet's carried
    acceleration, taken at an Euler-predicted velocity, is what limits it).

    Cost per step: three base steps. Fixed steps only; dense output is linear. For a
    general Lagrangian, `GaussLegendre()` is also 4th order, symplectic and
    symmetric, with a much smaller error constant at a lower cost per step.

    A `diffrax.AbstractWrappedSolver` (its `solver` is `base`): Diffrax's
    `isinstance` checks see through it to the base method, which is what it
    inherits its structure from, and `lagrax.ReversibleAdjoint` reverses it when it
    reverses the base.

    ??? cite "Reference"

        ```bibtex
        @article{yoshida1990construction,
            title={Construction of higher order symplectic integrators},
            author={Yoshida, Haruo},
            journal={Physics Letters A},
            volume={150},
            number={5--7},
            pages={262--268},
            year={1990}
        }
        ```
    """

    base: AbstractSymmetricSolver = VariationalMidpoint()

    interpolation_cls: ClassVar[Callable[..., diffrax.LocalLinearInterpolation]] = (
        diffrax.LocalLinearInterpolation
    )

    @property
    def solver(self) -> AbstractSymmetricSolver:
        return self.base

    def __check_init__(self):
        if not isinstance(self.base, AbstractSymmetricSolver):
            raise TypeError(
                "`base` must be a symmetric lagrax solver (VariationalMidpoint or "
                f"VelocityVerlet), got {type(self.base).__name__}."
            )

    @property
    def term_structure(self):
        return self.base.term_structure

    def order(self, terms):
        return 4

    def init(self, terms, t0, t1, y0, args):
        return self.base.init(terms, t0, t1, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        # The three substeps run in a loop rather than unrolled, so the (implicit)
        # base step is traced and compiled once.
        times = jnp.stack([t0, t0 + _W1 * (t1 - t0), t1 - _W1 * (t1 - t0), t1])

        def substep(carry, i):
            y, state, result = carry
            y, _, _, state, sub_result = self.base.step(
                terms, times[i], times[i + 1], y, args, state, made_jump & (i == 0)
            )
            return (y, state, first_failure(result, sub_result)), None

        init = (y0, solver_state, diffrax.RESULTS.successful)
        (y1, state, result), _ = jax.lax.scan(substep, init, jnp.arange(3))
        return y1, None, dict(y0=y0, y1=y1), state, result

    def func(self, terms, t0, y0, args):
        return self.base.func(terms, t0, y0, args)


Yoshida4.__init__.__doc__ = """**Arguments:**

- `base`: the symmetric 2nd-order solver to compose; default `VariationalMidpoint()`.
"""
