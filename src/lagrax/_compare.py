"""Work–precision measurements of solvers on a user's own Lagrangian."""

import dataclasses
import functools
import math
import random
import statistics
import time
from collections.abc import Sequence

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from ._constraint import ConstraintFn
from ._custom_types import (
    LagrangianLike,
    PositionLike,
    VelocityLike,
)
from ._mechanics import energy
from ._misc import as_state, check_int
from ._term import LagrangianTerm


@dataclasses.dataclass(frozen=True)
class SolverSetting:
    """One configuration of `compare_solvers`: a solver with a fixed step `dt0`,
    or an adaptive one (`diffrax.AbstractAdaptiveSolver`) at `rtol = atol =
    tolerance` under a `diffrax.PIDController`.

    **Fields:**

    - `name`: a label, such as `"GaussLegendre"`; settings of one method share it.
    - `solver`: any Diffrax or lagrax solver.
    - `dt0`: the fixed step (positive), or `None` for an adaptive setting.
    - `tolerance`: the adaptive tolerance (positive), or `None` for a fixed step.
    """

    name: str
    solver: diffrax.AbstractSolver
    dt0: float | None = None
    tolerance: float | None = None

    def __post_init__(self):
        if not isinstance(self.name, str):
            raise TypeError(f"`name` must be a string, got {self.name!r}.")
        if not isinstance(self.solver, diffrax.AbstractSolver):
            raise TypeError(
                f"`solver` must be a diffrax.AbstractSolver, got {self.solver!r}."
            )
        if (self.dt0 is None) == (self.tolerance is None):
            raise ValueError(
                f"Setting {self.name!r}: give exactly one of `dt0` (a fixed step) "
                "and `tolerance` (an adaptive solve)."
            )
        value = self.dt0 if self.dt0 is not None else self.tolerance
        if not (isinstance(value, int | float) and 0 < value < math.inf):
            which = "dt0" if self.dt0 is not None else "tolerance"
            raise ValueError(
                f"Setting {self.name!r}: `{which}` must be a positive finite number, "
                f"got {value!r}."
            )
        adaptive = isinstance(self.solver, diffrax.AbstractAdaptiveSolver)
        if self.tolerance is not None and not adaptive:
            raise ValueError(
                f"Setting {self.name!r}: {type(self.solver).__name__} has no error "
                "estimate; give it a fixed step `dt0`."
            )

    @property
    def value(self) -> float:
        """`dt0` or `tolerance`, whichever is set."""
        if self.dt0 is not None:
            return self.dt0
        assert self.tolerance is not None  # `__post_init__`: one of the two is set
        return self.tolerance


@dataclasses.dataclass(frozen=True)
class SolverRun:
    """What `compare_solvers` measured for one `SolverSetting` over one horizon.

    **Fields:**

    - `setting`: the `SolverSetting`.
    - `t1`: the horizon.
    - `steps`: the steps the solve took.
    - `wall_seconds`: the median wall time of a solve to `t1` (compilation
        excluded, `jax.block_until_ready`, interleaved with the other settings).
    - `energy_error`: the largest `|E(t) − E(0)| / scale` over every step (scale:
        `|E(0)|` unless given), with `E` the energy of the Lagrangian itself; `nan`
        where the solve failed or took more than `energy_max_steps` steps.
    - `final_error`: the max-norm error of `(q, q̇)` at `t1` against the reference
        solve; `nan` where the solve failed.
    - `successful`: whether the timed solve reached `t1`.
    - `constraint_error`: with a `constraint`, the largest `|g(q)|` over every
        step (how far the solve drifted off the constraints); else `nan`.
    """

    setting: SolverSetting
    t1: float
    steps: int
    wall_seconds: float
    energy_error: float
    final_error: float
    successful: bool
    constraint_error: float = math.nan


def _solve(
    lagrangian, solver, adaptive, y0, t1, value, saveat, max_steps, *, constraint
):
    """One solve to the traced horizon `t1` with the traced fixed step or adaptive
    tolerance `value`."""
    if adaptive:
        controller = diffrax.PIDController(rtol=value, atol=value)
        dt0 = None
    else:
        controller, dt0 = diffrax.ConstantStepSize(), value
    return diffrax.diffeqsolve(
        LagrangianTerm(lagrangian, throw=False, constraint=constraint),
        solver,
        jnp.zeros_like(t1),
        t1,
        dt0,
        y0,
        saveat=saveat,
        stepsize_controller=controller,
        max_steps=max_steps,
        throw=False,
    )


def _compile(
    lagrangian,
    solver,
    adaptive,
    y0,
    *,
    max_steps,
    energy_max_steps,
    scale,
    constraint,
    with_energy=True,
):
    """Ahead-of-time compiled `(final, energy_error)` functions of `(t1, value)`,
    shared by every setting of one solver and every horizon (`energy_error` is
    `None` unless `with_energy`)."""
    dtype = y0[0].dtype
    solve = functools.partial(
        _solve, lagrangian, solver, adaptive, y0, constraint=constraint
    )

    def final(t1, value):
        solution = solve(t1, value, diffrax.SaveAt(t1=True), max_steps)
        assert solution.ys is not None and solution.stats is not None
        state = jnp.concatenate([solution.ys[0][-1], solution.ys[1][-1]])
        ok = solution.result == diffrax.RESULTS.successful
        return state, solution.stats["num_steps"], ok

    def energy_error(t1, value):
        saveat = diffrax.SaveAt(t0=True, steps=True)
        solution = solve(t1, value, saveat, energy_max_steps)
        assert solution.ts is not None and solution.ys is not None
        q0, qdot0 = y0
        reached = jnp.isfinite(solution.ts)[:, None]
        q = jnp.where(reached, solution.ys[0], q0)
        qdot = jnp.where(reached, solution.ys[1], qdot0)
        energies = jax.vmap(lambda q, v: energy(lagrangian, q, v))(q, qdot)
        drift = jnp.abs(energies - energy(lagrangian, q0, qdot0))
        error = jnp.max(jnp.where(reached[:, 0], drift, 0.0)) / scale
        if constraint is None:
            off = jnp.full((), jnp.nan, dtype)
        else:
            residuals = jnp.max(jnp.abs(jax.vmap(constraint)(q)), axis=1)
            off = jnp.max(residuals)
        ok = solution.result == diffrax.RESULTS.successful
        return jnp.where(ok, error, jnp.nan), jnp.where(ok, off, jnp.nan)

    scalar = jnp.zeros((), dtype)
    fns = (final, energy_error) if with_energy else (final,)
    compiled = [jax.jit(fn).lower(scalar, scalar).compile() for fn in fns]
    return compiled[0], (compiled[1] if with_energy else None)


def compare_solvers(
    lagrangian: LagrangianLike,
    q0: PositionLike,
    qdot0: VelocityLike,
    t1: float | Sequence[float],
    settings: Sequence[SolverSetting],
    *,
    repeats: int = 5,
    reference_tolerance: float = 1e-12,
    max_steps: int = 1_000_000,
    energy_max_steps: int = 250_000,
    energy_scale: float | None = None,
    constraint: ConstraintFn | None = None,
) -> list[SolverRun]:
    """Work–precision of solvers on a Lagrangian: time, energy error and final-state
    error of each setting, from one initial state over `[0, t1]` for each horizon.

    Each solver is compiled once, ahead of time, for all its settings and horizons
    (the step, tolerance and horizon are traced). Per horizon, every setting is
    timed `repeats` times, the settings interleaved in a fresh random order each
    round (outside load then hits all of them alike), and the median is reported.
    The energy error comes from a second, untimed solve saving every step; the
    final error from a reference solve with `diffrax.Dopri8` at `rtol = atol =
    reference_tolerance`. Conservative systems only: for forced or dissipative ones
    the energy error is not a measure of accuracy (the final error still is).
    `benchmarks/solvers.py` is built on it.

    !!! example

        ```python
        settings = [
            lagrax.SolverSetting("GaussLegendre", lagrax.GaussLegendre(), dt0=dt)
            for dt in (0.1, 0.05, 0.025)
        ] + [
            lagrax.SolverSetting("Tsit5", diffrax.Tsit5(), tolerance=tol)
            for tol in (1e-6, 1e-8)
        ]
        runs = lagrax.compare_solvers(model, q0, qdot0, [10.0, 100.0], settings)
        lagrax.plot_work_precision([r for r in runs if r.t1 == 100.0])
        ```

    **Arguments:**

    - `lagrangian`: a callable `(q, qdot) -> scalar` for one state.
    - `q0`, `qdot0`: the initial state, each of shape `(dof,)`.
    - `t1`: the horizon, positive, or a list of horizons.
    - `settings`: the `SolverSetting`s to compare, at least one.
    - `repeats`: timed solves per setting and horizon.
    - `reference_tolerance`: the reference solve's tolerance.
    - `max_steps`: the step budget of the timed solves.
    - `energy_max_steps`: the step budget of the energy solves, which keep every
        step's state.
    - `energy_scale`: the energy errors' denominator, positive; default `|E(0)|`
        (give one when the initial energy is 0 or tiny).
    - `constraint`: an optional holonomic constraint `q -> g(q)` (see
        `lagrax.simulate`): every solve integrates the constrained motion, from an
        initial state that must lie on it, and each run reports its drift off the
        constraints as `constraint_error` (`Rattle`, `VariationalMidpoint` and
        `GaussLegendre` keep none; a Diffrax solver, the reference included,
        integrates the index-1 field).

    **Returns:**

    A list of `SolverRun`s, horizon by horizon, each in the order of `settings`.
    """
    q0, qdot0 = as_state(q0, qdot0, q_name="q0", qdot_name="qdot0")
    horizons = [t1] if isinstance(t1, int | float) else list(t1)
    for horizon in horizons:
        if not (isinstance(horizon, int | float) and 0 < horizon < math.inf):
            raise ValueError(
                f"`t1` must be a positive finite number or a list of them, got {t1!r}."
            )
    settings = list(settings)
    if not settings or not all(isinstance(s, SolverSetting) for s in settings):
        raise TypeError("`settings` must be a non-empty list of lagrax.SolverSetting.")
    repeats = check_int(repeats, "repeats")
    max_steps = check_int(max_steps, "max_steps")
    energy_max_steps = check_int(energy_max_steps, "energy_max_steps")
    e0 = float(energy(lagrangian, q0, qdot0, constraint=constraint))
    scale = abs(e0) if energy_scale is None else energy_scale
    if not (isinstance(scale, int | float) and 0 < scale < math.inf):
        raise ValueError(
            "`energy_scale` must be a positive finite number (the initial energy is "
            f"{e0!r}: give one when it is 0), got {energy_scale!r}."
        )
    y0 = (q0, qdot0)
    compile_ = functools.partial(
        _compile,
        lagrangian,
        y0=y0,
        max_steps=max_steps,
        energy_max_steps=energy_max_steps,
        scale=scale,
        constraint=constraint,
    )

    def key(setting):  # one compilation per solver object and kind of step
        return id(setting.solver), setting.tolerance is not None

    compiled = {}
    for setting in settings:
        if key(setting) not in compiled:
            compiled[key(setting)] = compile_(setting.solver, key(setting)[1])
    reference_final, _ = compile_(diffrax.Dopri8(), True, with_energy=False)

    def value(x):
        return jnp.asarray(x, q0.dtype)

    runs = []
    for horizon in horizons:
        reference, _, reference_ok = reference_final(
            value(horizon), value(reference_tolerance)
        )
        if not bool(reference_ok):
            raise RuntimeError(
                f"The reference solve (Dopri8) did not reach t1 = {horizon}: raise "
                "`max_steps` or loosen `reference_tolerance`."
            )
        calls = [
            functools.partial(
                compiled[key(s)][0],
                value(horizon),
                value(s.value),
            )
            for s in settings
        ]
        outputs = [jax.block_until_ready(call()) for call in calls]  # warm up
        samples = [[] for _ in settings]
        order = list(range(len(settings)))
        rng = random.Random(0)
        for _ in range(repeats):
            rng.shuffle(order)
            for i in order:
                start = time.perf_counter()
                jax.block_until_ready(calls[i]())
                samples[i].append(time.perf_counter() - start)
        for setting, (state, steps, ok), times in zip(settings, outputs, samples):
            energy_error, constraint_error = compiled[key(setting)][1](
                value(horizon), value(setting.value)
            )
            successful = bool(ok)
            runs.append(
                SolverRun(
                    setting=setting,
                    t1=float(horizon),
                    steps=int(steps),
                    wall_seconds=statistics.median(times),
                    energy_error=float(energy_error),
                    final_error=(
                        float(jnp.max(jnp.abs(state - reference)))
                        if successful
                        else math.nan
                    ),
                    successful=successful,
                    constraint_error=float(constraint_error),
                )
            )
    return runs


def plot_work_precision(runs: Sequence[SolverRun], ax=None, *, error: str = "energy"):
    """Draw the work–precision diagram of `compare_solvers`' runs: error against
    median wall time, one line per setting name (matplotlib needed).

    **Arguments:**

    - `runs`: the `SolverRun`s.
    - `ax`: a matplotlib `Axes`; default a new figure's.
    - `error`: `"energy"` or `"final"`, the error on the vertical axis.

    **Returns:**

    The `Axes`.
    """
    if error not in ("energy", "final"):
        raise ValueError(f"`error` must be 'energy' or 'final', got {error!r}.")
    if ax is None:
        try:
            from matplotlib.figure import Figure
        except ImportError:
            raise ImportError(
                "plot_work_precision needs matplotlib: pip install matplotlib"
            ) from None
        ax = Figure(figsize=(6, 4.5)).add_subplot()
    names = list(dict.fromkeys(run.setting.name for run in runs))
    for name in names:
        mine = [r for r in runs if r.setting.name == name]
        x = np.array([r.wall_seconds for r in mine])
        y = np.array([getattr(r, f"{error}_error") for r in mine])
        keep = np.isfinite(y) & (y > 0)
        ax.loglog(x[keep], y[keep], "o-", label=name)
    ax.set(
        xlabel="median wall time per solve (s)",
        ylabel="max relative energy error" if error == "energy" else "final error",
        title="Work–precision",
    )
    ax.legend()
    return ax
