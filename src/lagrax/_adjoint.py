import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp

from ._dependence import acceleration_may_read_velocity
from ._solver.base import AbstractSymmetricSolver, unwrap
from ._solver.verlet import VelocityVerlet


def _innermost(solver: diffrax.AbstractSolver) -> diffrax.AbstractSolver:
    """The solver that `solver` wraps, through any number of
    `diffrax.AbstractWrappedSolver`s (such as `Yoshida4` or `diffrax.HalfSolver`),
    which take on its structure: symmetric when it is."""
    while isinstance(solver, diffrax.AbstractWrappedSolver):
        solver = solver.solver
    return solver


class ReversibleAdjoint(diffrax.AbstractAdjoint):
    """Backpropagate through `diffrax.diffeqsolve` with a symmetric lagrax solver by
    running the solver backwards: exact gradients in memory independent of the
    number of steps.

    A symmetric one-step map (`VariationalMidpoint`, `GaussLegendre`, `Yoshida4`
    over either, and `VelocityVerlet` when `q̈` does not depend on `q̇`) is its own
    inverse with the time step negated. The forward pass keeps only the final state;
    the backward pass recovers each earlier state by a step backwards in time and
    differentiates the forward step there (through the Newton solves by the
    implicit function theorem, as `diffeqsolve` does). Memory is a few solver states
    whatever the number of steps, against one state per step for
    `RecursiveCheckpointAdjoint(checkpoints=max_steps)` (lagrax's default) and the
    recomputation of Diffrax's default `RecursiveCheckpointAdjoint()`; time is about
    one extra forward step per step. The gradient is that of the discrete solve,
    as for those adjoints (not the approximation of `diffrax.BacksolveAdjoint`),
    up to the reconstruction error.

    **Accuracy.** Each backward step reproduces the forward state to the solver's
    Newton tolerance (default 64 ulps) and round-off, and these errors add up,
    growing as fast as the motion separates nearby trajectories. Measured after
    10⁴ steps of 0.01 of the double pendulum: released at (2, 1.5) rad (chaotic),
    the reconstructed initial state is off by 7e-10 in float64 and by 5e-4
    (`VariationalMidpoint`) to 1.4e-3 (`GaussLegendre`) in float32; near rest
    (0.3 rad, regular), by 3e-5 to 2.4e-4 in float32. The backward
    pass checks this where the answer is known, at `t0`: the reconstructed initial
    state must match `y0` to `tolerance` (max norm, relative to `max(1, |y0|)`).
    Past it, or if a backward step fails, the gradient cannot be trusted, and the
    backward pass raises (`throw=True`) or makes every gradient component NaN
    (`throw=False`), which `lagrax.fit` skips as a failed step. Within it, the
    gradient's relative error has been one to ten times the reconstruction error
    in our measurements (the step's derivatives are evaluated at states that far
    off): float64 for the longest horizons.

    **Restrictions**, checked before anything runs: a symmetric lagrax solver
    (`VelocityVerlet`, alone or under `Yoshida4`, only where `q̈` provably does not
    depend on `q̇`: see below), a `diffrax.ConstantStepSize` controller (over a
    finite interval); `SaveAt` with `t0`, `t1` and `ts` (no `steps`, `dense`, `fn`,
    `subs` or solver and controller states); no event. It differentiates with
    respect to `y0`, `args` and `terms` (the Lagrangian's parameters), not `t0`,
    `t1` or `dt0`; reverse mode only.

    **`VelocityVerlet`** is symmetric only when `q̈` does not depend on `q̇`; run
    backwards otherwise, it misses the initial state by far more than round-off,
    which the check at `t0` would blame on chaos or float32. So it is refused (a
    `ValueError` when `diffeqsolve` traces the solve) unless the term shows, as JAX
    traces it, that `q̈` cannot depend on `q̇`: for a `lagrax.LagrangianTerm`,
    `∂L/∂q̇` does not depend on `q` and is affine in `q̇` (`L = ½ q̇ᵀMq̇ + bᵀq̇ −
    V(q)` with constant `M` and `b`: a pendulum, a wave, a spring network) and
    its `force` does not read `q̇`; for another term, its `q̈` does not read `q̇`.
    The test follows the data flow of the derivatives JAX traces (through
    `jax.make_jaxpr`), never values, so it cannot accept a velocity-dependent
    `q̈`; it may refuse a `q̈` that cancels its dependence numerically. Refused:
    Coriolis terms (`M(q)`), magnetic terms, relativistic or learned
    Lagrangians, dissipation. Use `VariationalMidpoint` or `GaussLegendre` there.
    """

    tolerance: float | None = None
    throw: bool = eqx.field(default=True, static=True)

    def __check_init__(self):
        if self.tolerance is not None and not self.tolerance > 0:
            raise ValueError(
                f"`tolerance` must be positive or None, got {self.tolerance!r}."
            )

    def loop(
        self,
        *,
        args,
        terms,
        solver,
        stepsize_controller,
        event,
        saveat,
        init_state,
        passed_solver_state,
        **kwargs,
    ):
        _check(solver, stepsize_controller, event, saveat)
        y = init_state.y
        _check_verlet(solver, terms, kwargs["t0"], y, args)
        if passed_solver_state:
            solver_state = jax.lax.stop_gradient(init_state.solver_state)
        else:
            solver_state = None
        init_state = eqx.tree_at(
            lambda s: (s.y, s.solver_state, s.controller_state),
            init_state,
            (None, None, jax.lax.stop_gradient(init_state.controller_state)),
            is_leaf=lambda x: x is None,
        )
        final_state, aux_stats = _reversible_loop(
            (y, args, terms),
            self=self,
            solver=solver,
            stepsize_controller=stepsize_controller,
            event=event,
            saveat=saveat,
            init_state=init_state,
            solver_state=solver_state,
            **kwargs,
        )
        # Only the saved states carry derivatives (the rest of the final state is
        # not returned, or not differentiable: step counts, the progress meter).
        ys = final_state.save_state.ys
        final_state = jax.tree.map(
            lambda x: jax.lax.stop_gradient(x) if eqx.is_array(x) else x, final_state
        )
        final_state = eqx.tree_at(lambda s: s.save_state.ys, final_state, ys)
        return final_state, aux_stats


ReversibleAdjoint.__init__.__doc__ = """**Arguments:**

- `tolerance`: the largest accepted reconstruction error of the initial state,
    relative to `max(1, |y0|)` (max norm). Default: the square root of the dtype's
    machine epsilon, 1.5e-8 in float64 and 3.5e-4 in float32 (half the digits).
- `throw`: what a failed reconstruction does: raise an error (`True`, the default)
    or make the gradient NaN (`False`). Independent of `diffeqsolve(throw=...)`,
    which is about the forward solve.
"""


_SAVE_Y = diffrax.SaveAt(t1=True).subs.fn


def _check(solver, stepsize_controller, event, saveat) -> None:
    name = "`adjoint=lagrax.ReversibleAdjoint()`"
    if not isinstance(_innermost(solver), AbstractSymmetricSolver):
        raise ValueError(
            f"{name} runs the solver backwards, which needs a symmetric lagrax "
            "solver (VariationalMidpoint, GaussLegendre, Yoshida4 over either, or "
            f"VelocityVerlet); got {type(solver).__name__}. For other solvers use "
            "diffrax.RecursiveCheckpointAdjoint."
        )
    if not isinstance(stepsize_controller, diffrax.ConstantStepSize):
        raise ValueError(
            f"{name} needs `stepsize_controller=diffrax.ConstantStepSize()`, got "
            f"{type(stepsize_controller).__name__}."
        )
    if event is not None:
        raise ValueError(f"{name} does not support events.")
    if not isinstance(saveat.subs, diffrax.SubSaveAt):
        raise ValueError(f"{name} does not support `SaveAt(subs=...)`.")
    if saveat.dense or saveat.subs.steps or saveat.subs.fn is not _SAVE_Y:
        raise ValueError(
            f"{name} supports `SaveAt(t0=..., t1=..., ts=...)`, not `steps`, "
            "`dense` or `fn`."
        )
    if saveat.solver_state or saveat.controller_state or saveat.made_jump:
        raise ValueError(
            f"{name} does not save the solver state, the controller state or "
            "`made_jump`."
        )


def _check_verlet(solver, terms, t0, y0, args) -> None:
    """Refuse `VelocityVerlet` (alone or wrapped) on a term whose `q̈` may depend
    on `q̇`, where its step is not symmetric."""
    if isinstance(_innermost(solver), VelocityVerlet) and (
        acceleration_may_read_velocity(unwrap(terms), t0, y0, args)
    ):
        raise ValueError(
            "`adjoint=lagrax.ReversibleAdjoint()` runs the solver backwards, and "
            "VelocityVerlet is symmetric (reversible) only when q̈ does not depend "
            "on q̇; this term's q̈ may (a Lagrangian whose ∂L/∂q̇ depends on q or is "
            "not linear in q̇, a force that reads q̇, or a q̈ that reads q̇). Use "
            "VariationalMidpoint or GaussLegendre (or Yoshida4 over them), or "
            "diffrax.RecursiveCheckpointAdjoint."
        )


def _forward(y__args__terms, *, solver, init_state, solver_state, **kwargs):
    """The solve, with the initial solver state computed from `y0` (so that the
    backward pass differentiates it too) unless it was passed."""
    y, args, terms = y__args__terms
    t0, t1 = kwargs["t0"], kwargs["t1"]
    if solver_state is None:
        solver_state = solver.init(terms, t0, t1, y, args)
    init_state = eqx.tree_at(
        lambda s: (s.y, s.solver_state),
        init_state,
        (y, solver_state),
        is_leaf=lambda x: x is None,
    )
    kwargs.pop("self")
    kwargs.pop("throw")
    # Never differentiated (the custom VJP below replaces that): this is only
    # Diffrax's loop with its plain while loops.
    return diffrax.RecursiveCheckpointAdjoint().loop(
        solver=solver,
        init_state=init_state,
        args=args,
        terms=terms,
        throw=False,
        passed_solver_state=False,
        **kwargs,
    )


@eqx.filter_custom_vjp
def _reversible_loop(y__args__terms, **kwargs):
    return _forward(y__args__terms, **kwargs)


@_reversible_loop.def_fwd
def _reversible_loop_fwd(perturbed, y__args__terms, **kwargs):
    del perturbed
    final_state, aux_stats = _forward(y__args__terms, **kwargs)
    residuals = (
        final_state.y,
        final_state.solver_state,
        final_state.num_accepted_steps,
        final_state.save_state.ts,
    )
    return (final_state, aux_stats), residuals


@_reversible_loop.def_bwd
def _reversible_loop_bwd(
    residuals,
    cotangents,
    perturbed,
    y__args__terms,
    *,
    self,
    solver,
    init_state,
    solver_state,
    t0,
    **kwargs,
):
    del perturbed
    y_final, state_final, num_steps, save_ts = residuals
    final_state_cotangent, _ = cotangents
    y0, args, terms = y__args__terms
    zero_saves = jax.tree.map(lambda x: jnp.zeros(save_ts.shape + x.shape, x.dtype), y0)
    save_ys = final_state_cotangent.save_state.ys
    if save_ys is None:  # no gradient flows from the saves
        save_ys = zero_saves
    save_ys = jax.tree.map(
        lambda zero, bar: zero if bar is None else bar,
        zero_saves,
        save_ys,
        is_leaf=lambda x: x is None,
    )
    diff, static = eqx.partition((args, terms), eqx.is_inexact_array)
    state_diff, state_static = eqx.partition(state_final, eqx.is_inexact_array)

    # The step times of `diffrax.ConstantStepSize`: the first step ends at
    # `t0 + dt0`, step k at `t0 + (t1 − t0)·k/n`, the last at `t1`. Rounding may
    # differ from the forward loop's in the last bit, which moves a step's ends by
    # an ulp and never drops a save (each is taken once, below).
    _, n, t0_sim, t1_sim = init_state.controller_state
    dt0 = kwargs["dt0"]

    def time(k):
        ratio = k.astype(save_ts.dtype) / n.astype(save_ts.dtype)
        t = jnp.where(k == 1, t0 + dt0, t0_sim + (t1_sim - t0_sim) * ratio)
        t = jnp.where(k >= n, t1_sim, jnp.minimum(t, t1_sim))
        return jnp.where(k == 0, t0, t)

    def step(y, state_diff, diff, ta, tb):
        args, terms = eqx.combine(diff, static)
        state = eqx.combine(state_diff, state_static)
        y1, _, dense_info, state1, result = solver.step(
            terms, ta, tb, y, args, state, False
        )
        return y1, eqx.filter(state1, eqx.is_inexact_array), dense_info, result

    def save_cotangent(ta, tb, dense_info, j):
        """The cotangent of the step's dense output from the saves in `(ta, tb]`,
        and the index of the last save before them."""

        def going(carry):
            j, _ = carry
            return (j >= 0) & (save_ts[jnp.maximum(j, 0)] > ta)

        def add(carry):
            j, total = carry

            def interpolation(info):
                return solver.interpolation_cls(t0=ta, t1=tb, **info).evaluate(
                    save_ts[j]
                )

            _, pullback = jax.vjp(interpolation, dense_info)
            (more,) = pullback(jax.tree.map(lambda s: s[j], save_ys))
            return j - 1, jax.tree.map(jnp.add, total, more)

        zero = jax.tree.map(jnp.zeros_like, dense_info)
        return jax.lax.while_loop(going, add, (j, zero))

    def backward(carry):
        k, y1, state1, y_bar, state_bar, diff_bar, j, failed = carry
        ta, tb = time(k - 1), time(k)
        # Reconstruct the step's start by stepping back, then differentiate it.
        y0_, state0, _, back_result = step(y1, state1, diff, tb, ta)
        (_, _, dense_info), pullback = jax.vjp(
            lambda y, s, d: step(y, s, d, ta, tb)[:3], y0_, state0, diff
        )
        j, info_bar = save_cotangent(ta, tb, dense_info, j)
        y_bar, state_bar, more = pullback((y_bar, state_bar, info_bar))
        diff_bar = jax.tree.map(jnp.add, diff_bar, more)
        failed = failed | (back_result != diffrax.RESULTS.successful)
        return k - 1, y0_, state0, y_bar, state_bar, diff_bar, j, failed

    def zeros(tree):
        return jax.tree.map(jnp.zeros_like, tree)

    carry = (
        num_steps,
        y_final,
        state_diff,
        zeros(y_final),
        zeros(state_diff),
        zeros(diff),
        jnp.asarray(save_ts.shape[0] - 1),
        jnp.asarray(False),
    )
    carry = jax.lax.while_loop(lambda c: c[0] > 0, backward, carry)
    _, y_start, _, y_bar, state_bar, diff_bar, j, failed = carry
    # The saves left, at t0, hold y0 itself.
    at_t0 = jnp.arange(save_ts.shape[0]) <= j
    y_bar = jax.tree.map(
        lambda bar, s: bar + jnp.tensordot(at_t0.astype(s.dtype), s, axes=1),
        y_bar,
        save_ys,
    )
    if solver_state is None:  # it came from `solver.init`: differentiate that too

        def init(y, diff):
            args, terms = eqx.combine(diff, static)
            state = solver.init(terms, t0, kwargs["t1"], y, args)
            return eqx.filter(state, eqx.is_inexact_array)

        _, pullback = jax.vjp(init, y0, diff)
        more_y, more_diff = pullback(state_bar)
        y_bar = jax.tree.map(jnp.add, y_bar, more_y)
        diff_bar = jax.tree.map(jnp.add, diff_bar, more_diff)

    error = _reconstruction_error(y_start, y0)
    tolerance = self.tolerance
    if tolerance is None:
        tolerance = float(jnp.finfo(_dtype(y0)).eps) ** 0.5
    bad = failed | ~(error <= tolerance)
    if self.throw:
        # On every cotangent: any of them may be the only one used.
        y_bar, diff_bar = eqx.error_if(
            (y_bar, diff_bar),
            bad,
            "lagrax.ReversibleAdjoint: running the solver backwards did not recover "
            "the initial state to `tolerance` (or a backward step failed), so the "
            "gradient would be wrong. The motion separates nearby trajectories too "
            "fast over this horizon, or float32 lacks the digits for it; use "
            "float64, a shorter horizon or diffrax.RecursiveCheckpointAdjoint.",
        )
    else:

        def poison(x):
            return jnp.where(bad, jnp.nan, x)

        y_bar, diff_bar = jax.tree.map(poison, (y_bar, diff_bar))
    args_bar, terms_bar = diff_bar
    return y_bar, args_bar, terms_bar


def _dtype(y):
    return jnp.result_type(*jax.tree.leaves(y))


def _reconstruction_error(y_start, y0):
    def one(a, b):
        return jnp.max(jnp.abs(a - b) / jnp.maximum(1.0, jnp.abs(b)), initial=0.0)

    return jnp.max(jnp.stack(jax.tree.leaves(jax.tree.map(one, y_start, y0))))
