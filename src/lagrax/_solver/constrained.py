"""The constrained step of the variational solvers: `VariationalMidpoint` and
`GaussLegendre` on a `lagrax.LagrangianTerm(L, constraint=g)`.

The path over a step is the polynomial of degree `s` through its values `Xₖ` at the
`s + 1` Gauss–Lobatto nodes `dₖ` of `[0, 1]` (`X₀ = q₀`, `Xₛ = q₁`). The action is
Gauss quadrature of `L` at the `s` Gauss nodes `cᵢ`, as in the unconstrained
solvers, and the constraint enters through multipliers `Λₖ` at the Lobatto nodes,
with the Lobatto weights `wₖ`:

    S(X, Λ) = h Σᵢ bᵢ L(Q(cᵢ), Q̇(cᵢ)) − h Σₖ wₖ Λₖᵀ g(Xₖ)

(Gauss for the forces, Lobatto for the constraints, as in Jay's SPARK methods).
Every node lies on the constraints, the endpoints included, and the constraint's
quadrature has degree `2s − 1`, so the step keeps the order `2s` of the
unconstrained Gauss method. The discrete Euler–Lagrange equations in
position–momentum form, with `Sₖ = ∂/∂Xₖ` of the first sum,

    p₀ + S₀ − h w₀ G(q₀)ᵀΛ₀ = 0,    Sₖ − h wₖ G(Xₖ)ᵀΛₖ = 0,    g(Xₖ) = 0  (k ≥ 1)

are one Newton solve for `X₁ … Xₛ` and `Λ₀ … Λₛ₋₁`; then `p₁ = Sₛ − h wₛ G(q₁)ᵀΛₛ`
with `p₁ = ∂L/∂q̇(q₁, q̇₁)` and `G(q₁) q̇₁ = 0` (the hidden velocity constraint, as
RATTLE puts it) a second Newton solve for `q̇₁` and `Λₛ`. With one stage this is
RATTLE's form of the midpoint rule:

    p₀ = p − ½h F + ½h G₀ᵀΛ₀,  g(q₁) = 0,  p₁ = p + ½h F − ½h G₁ᵀΛ₁,  G₁ q̇₁ = 0

with `(F, p)` the force and momentum at the midpoint. The multipliers are solved for
in units of position (`zₖ = h² wₖ Λₖ`, a displacement, as in `Rattle`), where the
Newton tolerance means what it says.
"""

import functools

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._constraint import check_constraint
from .._lagrangian import gradient_of, jet_of
from .._mechanics import momentum
from .._term import LagrangianTerm, split_state
from .base import (
    AbstractVariationalSolver,
    forces,
    lagrangian_term,
    newton_root,
    time_direction,
)


def is_constrained(terms) -> bool:
    """Whether a variational solver's term carries a holonomic constraint."""
    return lagrangian_term(terms).constraint is not None


def lagrange_basis(nodes: np.ndarray, k: int) -> np.polynomial.Polynomial:
    """The Lagrange basis polynomial of `nodes[k]`: 1 there, 0 at the others."""
    polynomial = np.polynomial.Polynomial([1.0])
    for j, node in enumerate(nodes):
        if j != k:
            polynomial = polynomial * np.polynomial.Polynomial([-node, 1.0])
            polynomial = polynomial / (nodes[k] - node)
    return polynomial


@functools.cache
def _tables(stages: int) -> tuple[np.ndarray, ...]:
    """`(c, b, d, w, basis, derivative)`: the Gauss nodes and weights, the
    Gauss–Lobatto nodes and weights of `[0, 1]`, and the Lagrange basis on the
    Lobatto nodes and its derivative at the Gauss nodes, `(s, s + 1)` each."""
    gauss, gauss_weights = np.polynomial.legendre.leggauss(stages)
    c, b = 0.5 * (gauss + 1), 0.5 * gauss_weights
    legendre = np.polynomial.legendre.Legendre.basis(stages)
    inner = np.sort(legendre.deriv().roots().real) if stages > 1 else np.empty(0)
    nodes = np.concatenate([[-1.0], inner, [1.0]])
    d = 0.5 * (nodes + 1)
    w = 1.0 / (stages * (stages + 1) * legendre(nodes) ** 2)  # halved for [0, 1]
    basis = np.empty((stages, stages + 1))
    derivative = np.empty((stages, stages + 1))
    for k in range(stages + 1):
        polynomial = lagrange_basis(d, k)
        basis[:, k] = polynomial(c)
        derivative[:, k] = polynomial.deriv()(c)
    return c, b, d, w, basis, derivative


class ConstrainedEquations(eqx.Module):
    """The equations of one constrained step for the Lobatto node positions
    `X₁ … Xₛ` and the displacements `z₀ … zₛ₋₁` of the multipliers, flattened in
    that order (see the module's docstring)."""

    term: LagrangianTerm
    times: Float[Array, " stages"]
    q0: Float[Array, " dof"]
    p0: Float[Array, " dof"]
    h: Float[Array, ""]
    b: Float[Array, " stages"]
    basis: Float[Array, "stages nodes"]
    derivative: Float[Array, "stages nodes"]

    def split(self, x):
        stages, n = self.b.shape[0], self.q0.shape[0]
        return x[: stages * n].reshape(stages, n), x[stages * n :].reshape(stages, -1)

    def node_forces(self, positions):
        """`Sₖ`, the derivative of the quadrature of `L` by each node's position."""
        nodes = jnp.concatenate([self.q0[None], positions])
        stage_q = self.basis @ nodes
        stage_v = self.derivative @ nodes / self.h
        force, momentum = jax.vmap(functools.partial(forces, self.term))(
            self.times, stage_q, stage_v
        )
        weighted = self.b[:, None]
        return (
            self.h * (weighted * self.basis).T @ force
            + (weighted * self.derivative).T @ momentum
        )

    def residual(self, x):
        positions, displacements = self.split(x)
        constraint = self.term.constraint
        assert constraint is not None  # a constrained solver has a constrained term
        nodes = jnp.concatenate([self.q0[None], positions[:-1]])
        jacobians = jax.vmap(jax.jacfwd(constraint))(nodes)
        pushes = jnp.einsum("kmn,km->kn", jacobians, displacements) / self.h
        balance = self.node_forces(positions)[:-1] - pushes
        balance = balance.at[0].add(self.p0)
        return jnp.concatenate(
            [balance.reshape(-1), jax.vmap(constraint)(positions).reshape(-1)]
        )


def constrained_init(solver: AbstractVariationalSolver, terms, y0):
    """The constrained solvers' state: the discrete momentum `p₀`, an acceleration
    estimate and the multipliers `λ` (both predictors only, zero at first)."""
    q0, v0 = split_state(y0, type(solver).__name__)
    term = lagrangian_term(terms)
    m = check_constraint(term.constraint, q0)
    return (
        momentum(term.lagrangian, q0, v0),
        jnp.zeros_like(v0),
        jnp.zeros(m, q0.dtype),
    )


def constrained_step(
    solver: AbstractVariationalSolver, stages: int, terms, t0, t1, y0, state, made_jump
):
    """One step of `solver` with `stages` Gauss nodes on a constrained term: the
    `diffrax.AbstractSolver.step` outputs."""
    name = type(solver).__name__
    q0, v0 = split_state(y0, name)
    term = lagrangian_term(terms)
    p0, a0, lambda0 = jax.lax.cond(
        made_jump, lambda: constrained_init(solver, terms, y0), lambda: state
    )
    c, b, d, w, basis, derivative = (jnp.asarray(x, q0.dtype) for x in _tables(stages))
    control, direction = time_direction(terms, t0, t1)
    h = jnp.asarray(control, q0.dtype)
    # Under `vmap` a finished solve keeps stepping with h = 0: a tiny, well-posed
    # step instead, its result discarded (see VariationalMidpoint).
    idle = h == 0
    h = jnp.where(idle, jnp.sqrt(jnp.finfo(q0.dtype).eps), h)
    equations = ConstrainedEquations(
        term, (t0 + c * (t1 - t0)) * direction, q0, p0, h, b, basis, derivative
    )
    # Taylor with the carried acceleration to each node, the carried multipliers.
    offsets = (h * d[1:])[:, None]
    guess = jnp.concatenate(
        [
            (q0[None] + offsets * (v0[None] + 0.5 * offsets * a0[None])).reshape(-1),
            (h**2 * w[:-1, None] * lambda0[None]).reshape(-1),
        ]
    )
    x, position_result, _, _ = newton_root(
        # custom_root hashes its function: a closure, not a bound method.
        lambda x: equations.residual(x),
        guess,
        **solver.newton_options(q0.dtype),
    )
    positions, _ = equations.split(x)
    q1 = positions[-1]
    end_force = equations.node_forces(positions)[-1]
    u = (q1 - q0) / h
    v1, impulse, velocity_result = _velocity(
        solver, term, q1, end_force, 2 * u - v0, h * w[-1] * lambda0
    )
    assert term.constraint is not None  # a constrained solver has a constrained term
    p1 = end_force - jax.jacfwd(term.constraint)(q1).T @ impulse
    a1 = 2 * (v1 - u) / h
    lambda1 = impulse / (h * w[-1])
    y1, result = solver.finish(y0, (q1, v1), h, position_result, velocity_result)
    y1, state1 = jax.tree.map(
        lambda old, new: jnp.where(idle, old, new),
        (y0, (p0, a0, lambda0)),
        (y1, (p1, a1, lambda1)),
    )
    return y1, None, dict(y0=y0, y1=y1), state1, result


def _velocity(
    solver: AbstractVariationalSolver, term: LagrangianTerm, q1, end_force, guess, y
) -> tuple[Float[Array, " dof"], Float[Array, " m"], diffrax.RESULTS]:
    """`(q̇₁, G₁ᵀ-impulse, result)` from `∂L/∂q̇(q₁, q̇₁) + G₁ᵀy = Sₛ` and
    `G₁ q̇₁ = 0`, by Newton from `(guess, y)`: the KKT matrix `[[H, G₁ᵀ], [G₁, 0]]`
    is its Jacobian (with `H` at the guess), so a singular mass matrix or a
    redundant constraint is reported as singular; linear when `L` is quadratic in
    `q̇`."""
    assert term.constraint is not None  # a constrained solver has a constrained term
    n = q1.shape[0]
    jacobian = jax.jacfwd(term.constraint)(q1)
    m = jacobian.shape[0]
    directions = jnp.concatenate([jnp.zeros((n, n)), jnp.eye(n)]).astype(q1.dtype)

    def values(momentum, v, y):
        return jnp.concatenate([momentum + jacobian.T @ y - end_force, jacobian @ v])

    def residual(x):
        v, y = x[:n], x[n:]
        return values(gradient_of(term.lagrangian, q1, v)[1], v, y)

    def linearize(x):
        v, y = x[:n], x[n:]
        grad, mass = jet_of(term.lagrangian, q1, v, directions)
        kkt = jnp.block([[mass, jacobian.T], [jacobian, jnp.zeros((m, m), q1.dtype)]])
        return values(grad[n:], v, y), kkt

    x, result, _, _ = newton_root(
        residual,
        jnp.concatenate([guess, y]),
        linearize=linearize,
        **solver.newton_options(q1.dtype),
    )
    return x[:n], x[n:], result
