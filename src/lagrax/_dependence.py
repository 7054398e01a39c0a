"""Whether a term's `q̈` may depend on `q̇`, read off JAX's trace: the test that
`ReversibleAdjoint` applies before it runs `VelocityVerlet` backwards (its step is
symmetric only when `q̈` does not depend on `q̇`)."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.extend import core as jax_core

from ._solver.batched import BatchTerm
from ._term import LagrangianTerm


def acceleration_may_read_velocity(term, t0, y0, args) -> bool:
    """Whether `q̈` may depend on `q̇` as JAX traces `term` (see
    `ReversibleAdjoint`): `False` only when it provably does not. (For a
    `BatchTerm`, the term of its first trajectory: they share their code.)"""
    if isinstance(term, BatchTerm):
        first = jax.tree.map(lambda x: x[0], (y0, term.inputs))
        y0, term = first[0], term.trajectory(first[1])
    q, qdot = y0
    if not isinstance(term, LagrangianTerm):
        return _derivative_may_be_nonzero(
            lambda v, c: c[0].vf(c[1], (c[2], v), c[3])[1], qdot, (term, t0, q, args)
        )

    def momentum(q, qdot, lagrangian):
        return jax.grad(lagrangian, argnums=1)(q, qdot)

    def mass_times_ones(qdot, c):
        lagrangian, q = c
        ones = jnp.ones_like(qdot)
        return jax.jvp(lambda v: momentum(q, v, lagrangian), (qdot,), (ones,))[1]

    lagrangian, force = term.lagrangian, term.force
    return (
        _derivative_may_be_nonzero(
            lambda q, c: momentum(q, c[0], c[1]), q, (qdot, lagrangian)
        )
        or _derivative_may_be_nonzero(mass_times_ones, qdot, (lagrangian, q))
        or (
            force is not None
            and _derivative_may_be_nonzero(
                lambda v, c: c[0](c[1], c[2], v), qdot, (force, t0, q)
            )
        )
    )


def _derivative_may_be_nonzero(fn, x, closure) -> bool:
    """Whether the derivative of `fn(x, closure)` in `x` may be nonzero: whether
    the tangent of `x` reaches the output in the data flow of the JVP's jaxpr.

    Traced only (nothing runs). Exact zeros survive: JAX propagates a zero tangent
    symbolically and makes the derivative of, say, `x**0` an array of zeros that
    reads no tangent. Calls (`jit`, custom derivatives) are followed inside; any
    other primitive (loops and `cond` included) counts as reading all its
    inputs."""

    def tangent(closure, x, dx):
        return jax.jvp(lambda x: fn(x, closure), (x,), (dx,))[1]

    closed, _, _ = eqx.filter_make_jaxpr(tangent)(closure, x, x)
    jaxpr = closed.jaxpr
    # The tangent `dx` is the last input (`x` is one array).
    reads = [False] * (len(jaxpr.invars) - 1) + [True]
    return any(_outputs_reading(jaxpr, reads))


def _outputs_reading(jaxpr, reads: list[bool]) -> list[bool]:
    """For each output of `jaxpr`, whether it depends on an input marked in
    `reads` (by data flow)."""
    marked = {var for var, read in zip(jaxpr.invars, reads) if read}
    for eqn in jaxpr.eqns:
        inputs = [isinstance(v, jax_core.Var) and v in marked for v in eqn.invars]
        if not any(inputs):
            continue
        inner = _inner_jaxpr(eqn)
        if inner is None:
            outputs = [True] * len(eqn.outvars)
        else:
            outputs = _outputs_reading(inner, inputs)
        marked.update(v for v, out in zip(eqn.outvars, outputs) if out)
    return [isinstance(v, jax_core.Var) and v in marked for v in jaxpr.outvars]


# Primitives that apply their sub-jaxpr once, input to input and output to output
# (not loops, whose sub-jaxprs have the same arity but run many times).
_CALLS = frozenset(
    ("jit", "pjit", "closed_call", "core_call", "remat", "checkpoint")
    + ("custom_jvp_call", "custom_vjp_call")
)


def _inner_jaxpr(eqn):
    """The sub-jaxpr of a call (`jit`, `checkpoint`, custom derivatives), if any."""
    if eqn.primitive.name not in _CALLS:
        return None
    for value in eqn.params.values():
        if isinstance(value, jax_core.ClosedJaxpr):
            value = value.jaxpr
        if (
            isinstance(value, jax_core.Jaxpr)
            and len(value.invars) == len(eqn.invars)
            and len(value.outvars) == len(eqn.outvars)
        ):
            return value
    return None
