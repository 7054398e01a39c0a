from collections.abc import Callable
from typing import ClassVar

import diffrax
import jax
import jax.numpy as jnp

from .._term import LagrangianTerm, split_state
from .base import (
    AbstractSymmetricSolver,
    check_step,
    check_unconstrained,
    first_failure,
    unwrap,
)


def _acceleration(terms, t, y, args):
    return terms.vf(t, y, args)[1]


class VelocityVerlet(AbstractSymmetricSolver):
    r"""Velocity Verlet (Störmer–Verlet), the leapfrog method for `(q, q̇)`.

        q₁ = q₀ + h q̇₀ + ½ h² a₀,   a₁ = a(q₁, q̇₀ + h a₀),   q̇₁ = q̇₀ + ½ h (a₀ + a₁)

    Explicit, 2nd order, one acceleration per step: `a₁` is carried to the next step
    in the solver state (recomputed after a jump in the vector field). When `q̈` does
    not depend on `q̇` (`L = ½ q̇ᵀMq̇ − V(q)` with constant `M`) the method is the
    classic symplectic, time-symmetric leapfrog with bounded energy error, and it is
    the cheapest structure-preserving choice.

    When `q̈` depends on `q̇` (Coriolis and magnetic forces, any learned Lagrangian)
    `a₁` is evaluated at the Euler-predicted velocity `q̇₀ + h a₀`: the method stays
    explicit and 2nd order but is then neither symplectic nor symmetric. Use
    `VariationalMidpoint` (or `Yoshida4`) for such systems. Under dissipation
    (`RayleighDissipation`, friction) its stability check, which reads the change
    of `q̈` along a step as stiffness, can also refuse stable steps near turning
    points (measured: a damped oscillator with `hω₀ = 0.4`, `γ = 0.3`); the
    variational solvers have no such limit.

    Works with any term whose vector field on the state `(q, q̇)` is `(q̇, q̈)`, such
    as `lagrax.LagrangianTerm`. A step fails, rather than returning garbage, when it
    exceeds the stability limit `hω < 2` (see `AbstractSymmetricSolver`) or meets a
    non-finite acceleration: for a `LagrangianTerm(..., throw=False)` at a finite
    state that is a singular mass matrix (with `throw=True` it raises). Fixed steps
    only (no error estimate). Dense output is cubic Hermite.

    ??? cite "Reference"

        ```bibtex
        @book{hairer2006geometric,
            title={Geometric Numerical Integration},
            author={Hairer, Ernst and Lubich, Christian and Wanner, Gerhard},
            publisher={Springer},
            edition={2},
            year={2006}
        }
        ```
    """

    term_structure: ClassVar = diffrax.AbstractTerm
    interpolation_cls: ClassVar[
        Callable[..., diffrax.ThirdOrderHermitePolynomialInterpolation]
    ] = diffrax.ThirdOrderHermitePolynomialInterpolation

    def order(self, terms):
        return 2

    def init(self, terms, t0, t1, y0, args):
        split_state(y0, "VelocityVerlet")
        check_unconstrained(terms, "VelocityVerlet")
        if isinstance(unwrap(terms), diffrax.MultiTerm):
            raise TypeError(
                "VelocityVerlet takes a single term whose vector field is (q̇, q̈), "
                "not a diffrax.MultiTerm: put extra generalized forces (controls "
                "included) into the term, `lagrax.LagrangianTerm(L, force=...)`. "
                "(Diffrax's own solvers, such as Tsit5, take a MultiTerm.)"
            )
        return _acceleration(terms, t0, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        q0, v0 = split_state(y0, "VelocityVerlet")
        a0 = jax.lax.cond(
            made_jump,
            lambda: _acceleration(terms, t0, y0, args),
            lambda: solver_state,
        )
        control = terms.contr(t0, t1)
        dq0, dv0 = terms.prod((v0, a0), control)
        v_half = v0 + 0.5 * dv0
        q1 = q0 + dq0 + 0.5 * terms.prod(dv0, control)
        a1 = _acceleration(terms, t1, (q1, v0 + dv0), args)
        v1 = v_half + 0.5 * terms.prod(a1, control)
        y1 = (q1, v1)
        dense_info = dict(y0=y0, y1=y1, k0=(dq0, dv0), k1=terms.prod((v1, a1), control))
        # A Lagrangian's NaN acceleration at a finite state (y₀ always is) is a
        # singular mass matrix; past an overflow (a blow-up, which `check_step`
        # names) that would be a misleading diagnosis.
        singular = isinstance(unwrap(terms), LagrangianTerm) & (
            ~jnp.all(jnp.isfinite(a0))
            | (~jnp.all(jnp.isfinite(a1)) & jnp.all(jnp.isfinite(q1 + dv0)))
        )
        result = first_failure(
            diffrax.RESULTS.where(
                singular,
                diffrax.RESULTS.singular,  # pyright: ignore[reportArgumentType]
                diffrax.RESULTS.successful,
            ),
            check_step(y0, y1, jnp.asarray(control, q0.dtype), (a0, a1)),
        )
        return y1, None, dense_info, a1, result

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)


VelocityVerlet.__init__.__doc__ = """**Arguments:** None"""
