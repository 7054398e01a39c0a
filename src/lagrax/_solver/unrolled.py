from typing import Any, TypeGuard

import diffrax
import jax
import jax.numpy as jnp


class Unrolled(diffrax.AbstractWrappedSolver):
    """An explicit Diffrax Runge–Kutta solver whose stages are written out one
    after another: the same step, cheaper to differentiate.

    Diffrax runs a step's stages in a loop that checkpoints each stage, so that its
    reverse pass holds one stage at a time: under a checkpointing adjoint (Diffrax's
    default), the gradient then runs every vector-field evaluation three times
    forward (the solve, the step's recomputation, the stage's recomputation) and
    once backward. Written out, a step's stages are differentiated as one
    function: two forward passes and one backward. Measured on the gradient of
    `lagrax.rollout_loss` with fixed-step Tsit5 (an `MLPLagrangian` of width 128 or
    500, 256 windows of 10 steps, float32): 0.71–0.90× the time through Diffrax's
    loop; adaptive, 0.85× at width 500 but 1.11× at width 128 with 2 steps a window
    (`python benchmarks/rollout_training.py`). The cost: the step holds all of its
    stages' intermediates at once in the reverse pass (one step's, not the
    solve's), and the vector field is compiled once per stage (that benchmark's
    gradient at width 500 compiles in 16 s rather than 9).

    It takes the wrapped solver's tableau and returns what that solver's step
    returns: the solution, the error estimate, the dense output (so the same
    interpolation) and, for a first-same-as-last tableau, the last stage as the
    next step's first. That first stage is evaluated by `init` (Diffrax evaluates
    it in the first step instead), and again after a jump. The numbers equal the
    wrapped solver's to round-off (its stage sums are matrix products, these are
    sums). Forward-only solves gain nothing and compile longer: keep the plain
    solver there. `lagrax.rollout_loss` steps explicit Diffrax solvers this way.

    **Arguments:**

    - `solver`: an explicit Diffrax Runge–Kutta solver with one tableau
        (`diffrax.Tsit5()`, `Dopri5()`, `Dopri8()`, `Bosh3()`, `Heun()`, ...).
    """

    # Checked by `__check_init__`, with a message saying what is needed.
    solver: diffrax.AbstractSolver

    def __check_init__(self):
        if not unrollable(self.solver):
            raise TypeError(
                "`solver` must be an explicit Diffrax Runge–Kutta solver with one "
                "tableau (a diffrax.AbstractERK such as diffrax.Tsit5()), got "
                f"{self.solver!r}."
            )

    @property
    def term_structure(self):
        return self.solver.term_structure

    @property
    def interpolation_cls(self):  # pyright: ignore[reportIncompatibleMethodOverride]
        return self.solver.interpolation_cls

    @property
    def term_compatible_contr_kwargs(self):
        return self.solver.term_compatible_contr_kwargs

    def order(self, terms):
        return self.solver.order(terms)

    def error_order(self, terms):
        return self.solver.error_order(terms)

    @property
    def _tableau(self) -> diffrax.ButcherTableau:
        assert unrollable(self.solver)  # by `__check_init__`
        tableau = self.solver.tableau
        assert isinstance(tableau, diffrax.ButcherTableau)
        return tableau

    def _fsal(self, terms, t0, t1, y0, args) -> bool:
        # As Diffrax: an expensive vector field is contracted with the control
        # directly, and then there is no stage to carry over.
        return self._tableau.fsal and not terms.is_vf_expensive(t0, t1, y0, args)

    def init(self, terms, t0, t1, y0, args):
        if self._fsal(terms, t0, t1, y0, args):
            return terms.vf(t0, y0, args)
        return None

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        tableau = self._tableau
        control = terms.contr(t0, t1)
        fsal = self._fsal(terms, t0, t1, y0, args)
        # Python floats, weakly typed: the times keep their dtype.
        c = [0.0 if tableau.c1 is None else float(tableau.c1)]
        c += [float(c_i) for c_i in tableau.c]

        def stage_time(index):
            # No rounding error at the step's ends, as Diffrax.
            return t1 if c[index] == 1 else t0 + c[index] * (t1 - t0)

        def combine(y, weights, ks):
            """`y + Σ_j weights[j] k_j` over the nonzero weights, the sum first
            (as Diffrax's product of the weights and the stages)."""
            pairs = [(float(w), k) for w, k in zip(weights, ks) if w != 0]

            def leaf(y, *k):
                return y + sum(w * k_j for (w, _), k_j in zip(pairs, k))

            return jax.tree.map(leaf, y, *(k for _, k in pairs))

        ks: list[Any] = []
        y_stage = y0
        f_stage = None
        for index in range(tableau.num_stages):
            if index > 0:
                y_stage = combine(y0, tableau.a_lower[index - 1], ks)
            t_stage = stage_time(index)
            if not fsal:
                ks.append(terms.vf_prod(t_stage, y_stage, args, control))
                continue
            if index == 0:
                f_stage = _first_stage(terms, t0, y0, args, solver_state, made_jump)
            else:
                f_stage = terms.vf(t_stage, y_stage, args)
            ks.append(terms.prod(f_stage, control))
        y1 = y_stage if tableau.ssal else combine(y0, tableau.b_sol, ks)
        zero = jax.tree.map(jnp.zeros_like, y0)
        y_error = combine(zero, tableau.b_error, ks)
        dense_info = dict(y0=y0, y1=y1, k=jax.tree.map(lambda *k: jnp.stack(k), *ks))
        return y1, y_error, dense_info, f_stage, diffrax.RESULTS.successful

    def func(self, terms, t0, y0, args):
        return self.solver.func(terms, t0, y0, args)


def unrollable(solver: diffrax.AbstractSolver) -> TypeGuard[diffrax.AbstractERK]:
    """Whether `Unrolled` can step `solver`: an explicit Runge–Kutta solver with
    one tableau (not wrapped: Diffrax's `isinstance` sees through wrappers)."""
    return (
        isinstance(solver, diffrax.AbstractERK)
        and not isinstance(solver, diffrax.AbstractWrappedSolver)
        and isinstance(solver.tableau, diffrax.ButcherTableau)
    )


def _first_stage(terms, t0, y0, args, carried, made_jump):
    """The first stage of a first-same-as-last step: the last stage of the step
    before (`init`'s evaluation at the start), or a new one after a jump (Diffrax
    passes `made_jump` as `False` when the solve has no jumps: no branch)."""
    if made_jump is False:
        return carried
    return jax.lax.cond(made_jump, lambda: terms.vf(t0, y0, args), lambda: carried)


Unrolled.__init__.__doc__ = """**Arguments:**

- `solver`: the explicit Diffrax Runge–Kutta solver to step, e.g. `diffrax.Tsit5()`.
"""
