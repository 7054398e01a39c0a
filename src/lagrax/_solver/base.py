import diffrax
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, Bool, Float


class AbstractSymmetricSolver(diffrax.AbstractSolver):
    """A fixed-step lagrax solver whose one-step map is symmetric: a step from `t0`
    to `t1` followed by a step from `t1` back to `t0` returns the initial state.

    Symmetric methods have even order, and a symmetric composition (`Yoshida4`)
    raises their order by two. None provides an error estimate: they are meant for
    `diffrax.ConstantStepSize`, where they keep their geometric properties.
    """


def split_state(y, solver: str) -> tuple[Float[Array, " dof"], Float[Array, " dof"]]:
    """`(q, qdot)` from a solver's state, with a clear error for anything else."""
    if not (isinstance(y, tuple) and len(y) == 2):
        raise ValueError(
            f"{solver} integrates second-order systems: its state must be the tuple "
            f"`(q, qdot)`, got {jtu.tree_structure(y)}."
        )
    return y


def first_failure(*results: diffrax.RESULTS) -> diffrax.RESULTS:
    """The first unsuccessful result code of several, else `successful`."""
    out = results[-1]
    for result in reversed(results[:-1]):
        out = diffrax.RESULTS.where(result == diffrax.RESULTS.successful, out, result)
    return out


def newton_root(
    residual, guess: Float[Array, " n"], *, rtol: float, atol: float, max_steps: int
) -> tuple[Float[Array, " n"], Bool[Array, ""]]:
    """Solve `residual(x) = 0` near `guess`; returns `(x, converged)`.

    The forward solve is a chord (simplified Newton) iteration: the Jacobian is
    formed and inverted at the guess and reused, so each iteration costs one residual
    evaluation and a matrix-vector product. With the predictors of the variational
    solvers (error O(h³)) it converges in two to four iterations. Should an update
    shrink by less than a factor of four (a coarse step, a poor guess), the Jacobian
    is formed and inverted again at the current iterate, which turns the slow linear
    convergence into Newton's. The explicit inverse is on purpose: the systems here
    have a few unknowns, where a LAPACK triangular solve costs far more in call
    overhead than in arithmetic, and the Jacobian only sets the contraction rate,
    never the root.

    It stops when the update is below `atol + rtol·|x|` (max norm) or when the
    contraction observed over the last two updates bounds the remaining error by
    that tolerance (Hairer & Wanner's criterion, which saves the last, confirming
    iteration); after `max_steps` iterations, or at a non-finite iterate (a singular
    Jacobian, a diverging iteration), it stops as not converged.

    Derivatives do not go through the iterations: `jax.lax.custom_root` applies the
    implicit function theorem with the exact Jacobian at the solution, so gradients
    are exact however many iterations ran.
    """

    def solve(f, x0):
        def inverse_jacobian(x):
            return jnp.linalg.inv(jax.jacfwd(f)(x))

        tol = atol + rtol * jnp.max(jnp.abs(x0))

        def converged(size, prev_size, step):
            # Hairer & Wanner's test: with the contraction θ observed over the last
            # two updates, the error left after this one is at most θ/(1 − θ)·|dx|.
            theta = size / prev_size
            estimate = theta / (1 - theta) * size
            return (size <= tol) | ((step >= 2) & (theta < 1) & (estimate <= tol))

        def going(carry):
            x, _, size, prev_size, step = carry
            return (
                (step < max_steps)
                & ~converged(size, prev_size, step)
                & jnp.all(jnp.isfinite(x))
            )

        def update(x, jac_inv, size, step):
            dx = jac_inv @ f(x)
            return x - dx, jac_inv, jnp.max(jnp.abs(dx)), size, step + 1

        # Chord iterations while they contract well; then, if needed, Newton with a
        # fresh Jacobian each iteration. Two loops rather than a branch per
        # iteration: the second costs nothing when the first converged.
        def chord_going(carry):
            _, _, size, prev_size, _ = carry
            return going(carry) & ~(size > 0.25 * prev_size)

        inf = jnp.array(jnp.inf, x0.dtype)
        carry = (x0, inverse_jacobian(x0), inf, inf, jnp.array(0))
        carry = jax.lax.while_loop(chord_going, lambda c: update(*c[:3], c[4]), carry)
        carry = jax.lax.while_loop(
            going, lambda c: update(c[0], inverse_jacobian(c[0]), c[2], c[4]), carry
        )
        x, _, size, prev_size, step = carry
        ok = converged(size, prev_size, step) & jnp.all(jnp.isfinite(x))
        # custom_root gives its auxiliary output a tangent of the output's dtype,
        # which a boolean cannot have: pass the flag as a float.
        return x, ok.astype(x.dtype)

    def tangent_solve(g, y):
        return jnp.linalg.solve(jax.jacfwd(g)(y), y)

    x, ok = jax.lax.custom_root(residual, guess, solve, tangent_solve, has_aux=True)
    return x, jax.lax.stop_gradient(ok) > 0.5


def default_tolerance(tol: float | None, dtype) -> float:
    """A Newton tolerance a few ulps above round-off for `dtype`, unless given."""
    return 64 * float(jnp.finfo(dtype).eps) if tol is None else tol


def unwrap_lagrangian_term(terms, solver: str):
    """The `LagrangianTerm` inside `terms`.

    `diffeqsolve` hands solvers its own wrapper around the user's term (to flip the
    time direction, for instance); variational solvers need the Lagrangian itself,
    so they find the `LagrangianTerm` by walking the pytree of terms.
    """
    from .._simulate import LagrangianTerm

    found = [
        leaf
        for leaf in jtu.tree_leaves(
            terms, is_leaf=lambda x: isinstance(x, LagrangianTerm)
        )
        if isinstance(leaf, LagrangianTerm)
    ]
    if len(found) != 1:
        raise ValueError(
            f"{solver} needs the Lagrangian itself: pass a single "
            "`lagrax.LagrangianTerm` as the terms of `diffeqsolve`."
        )
    return found[0]
