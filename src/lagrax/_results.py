"""The result codes of lagrax: Diffrax's, and the failures that only mechanics has.

A Diffrax solver must report through `diffrax.RESULTS` (`diffeqsolve` merges its
results with Diffrax's own), so the lagrax solvers report their failures with the
Diffrax members closest in meaning: `singular` for a singular mass matrix,
`nonlinear_max_steps_reached` for a Newton iteration that did not converge,
`nonlinear_divergence` for a step too large to resolve the motion.
`lagrax.from_diffrax` translates these into the members below, whose messages say
what happened and what to do; `simulate`, `rollout` and the losses call it.
"""

import diffrax


class RESULTS(diffrax.RESULTS):  # pyright: ignore[reportGeneralTypeIssues]
    """The result codes of lagrax: every member of `diffrax.RESULTS`, plus:

    - `singular_mass_matrix`: the mass matrix `∂²L/∂q̇²` (or an implicit step's
        Jacobian, which tends to it as the step shrinks) is singular on the way.
    - `newton_failure`: an implicit lagrax solver's Newton iteration did not converge
        to its tolerance within `max_steps` iterations.
    - `step_too_large`: a fixed step does not resolve the motion.
    - `diverged`: every step was accepted, yet the state became NaN or infinite
        (a solver or step size that checks nothing, such as a Diffrax solver at
        a `ConstantStepSize`, over motion that blows up).

    `lagrax.simulate(..., throw=False)` returns one in `Trajectory.result`;
    `RESULTS[result]` is its message.
    """

    singular_mass_matrix = (
        "The mass matrix ∂²L/∂q̇² is singular (or not finite) at a state on the way "
        "(for an implicit lagrax solver: its Newton Jacobian, which tends to the mass "
        "matrix as dt0 shrinks), so the Euler–Lagrange equations do not determine "
        "q̈ there. Inspect it with lagrax.mass_matrix_info; a learned Lagrangian can "
        "be kept definite with acceleration_loss(..., definiteness=...)."
    )
    newton_failure = (
        "The Newton iteration of an implicit lagrax solver did not converge to its "
        "tolerance within `max_steps` iterations: reduce dt0 (or loosen the solver's "
        "rtol/atol, or raise its max_steps)."
    )
    step_too_large = (
        "A fixed step does not resolve the motion, so its result would be "
        "meaningless: the positions moved unlike the velocities at the step's ends "
        "(|(q₁ − q₀)/dt − (q̇₀ + q̇₁)/2| above the speed), or, for an explicit "
        "solver, dt·ω ≥ 2 for the stiffness ω² ≈ |Δq̈|/|Δq| along the step "
        "(VelocityVerlet's stability limit). Reduce dt0."
    )
    diverged = (
        "The state became NaN or infinite on the way although every step was "
        "accepted: the motion blew up (a fixed step too large for it, or a mass "
        "matrix near-singular or indefinite on the way; inspect it with "
        "lagrax.mass_matrix_info). Reduce dt0, use an adaptive step size, or keep "
        "a learned Lagrangian's mass matrix definite."
    )


# How the Diffrax codes that lagrax solvers return read in lagrax's terms.
_TRANSLATIONS = (
    (RESULTS.singular, RESULTS.singular_mass_matrix),
    (RESULTS.nonlinear_max_steps_reached, RESULTS.newton_failure),
    (RESULTS.nonlinear_divergence, RESULTS.step_too_large),
)


def from_diffrax(result: diffrax.RESULTS | RESULTS) -> RESULTS:
    """The lagrax reading of the result of a `diffrax.diffeqsolve` over a lagrax
    term: what went wrong in terms of the mechanics, and what to do about it.

    A Diffrax solver can only report `diffrax.RESULTS`, so a lagrax solver that
    meets a singular mass matrix says `diffrax.RESULTS.singular`, whose message is
    Lineax's ("A linear solver returned non-finite (NaN or inf) output"). This
    turns it into `lagrax.RESULTS.singular_mass_matrix`;
    `nonlinear_max_steps_reached` into `newton_failure` and `nonlinear_divergence`
    into `step_too_large`. Every other code is kept as it is, as a
    `lagrax.RESULTS` member. `lagrax.simulate` and `lagrax.rollout` report
    through it; call it yourself when you call `diffeqsolve`:

    ```python
    sol = diffrax.diffeqsolve(
        lagrax.LagrangianTerm(L), lagrax.VariationalMidpoint(), t0, t1, dt0, y0,
        throw=False,
    )
    result = lagrax.from_diffrax(sol.result)
    ys = result.error_if(sol.ys, result != lagrax.RESULTS.successful)
    ```

    Works under `jit` and on batched results (from `vmap`), elementwise. The
    translations assume the codes came from lagrax's solvers or terms: Diffrax's
    implicit solvers also say `singular` for their own Newton Jacobians, which
    over a `LagrangianTerm` are singular where its mass matrix is.

    **Arguments:**

    - `result`: `sol.result` of a `diffrax.diffeqsolve`, or a `lagrax.RESULTS`
        (read the same way: a second call changes nothing).

    **Returns:**

    The `lagrax.RESULTS` member; `lagrax.RESULTS[item]` is its message.
    """
    out = result if isinstance(result, RESULTS) else RESULTS.promote(result)
    for generic, specific in _TRANSLATIONS:
        out = RESULTS.where(out == generic, specific, out)
    return out
