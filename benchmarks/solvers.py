"""Work–precision of lagrax's structure-preserving solvers against Diffrax's.

For two systems, every solver runs over several horizons, in float64:

- the analytic double pendulum (`lagrax.systems.DoublePendulum`), from `q = (1, 0.5)`
  at rest, over 10, 100 and 1000 time units (10³ to 10⁵ steps of `dt = 0.01`);
- a randomly initialized `MLPLagrangian(2, width=128, depth=2, init="lnn")` plus a
  guaranteed-positive kinetic term and a confining potential,
  `L = |q̇|² − 8|q|² + MLP(q, q̇) − MLP(0, 0)`: the network is a learned model's
  cost profile (a dense 128-wide network, `q̈` depending on `q̇`), the quadratic
  terms keep its mass matrix positive definite (eigenvalues 1.07–2.44 along the
  motion) and the motion bounded, and the constant makes `E = 0` at rest at the
  origin, so relative energy errors do not depend on the network's arbitrary
  offset. It is an `AbstractJetLagrangian`, so every solver gets the network's
  fast derivatives: the Runge–Kutta methods through `lagrax.acceleration`,
  lagrax's implicit solvers for their gradients and Newton Jacobians. A step costs
  about 20 pendulum steps, so its
  horizons are 10, 100 and 500 (up to 10⁴ steps of `dt = 0.05`), without Dopri5.

Solvers: `VelocityVerlet`, `VariationalMidpoint`, `Yoshida4` (over
`VariationalMidpoint`), `GaussLegendre` (4th order) and `GaussLegendre(stages=3)`
(6th order) at several fixed steps `dt`; Diffrax's `Tsit5` at the same fixed steps;
`Tsit5`, `Dopri5`, `Dopri8` adaptive at several `rtol = atol`.

Measured with `lagrax.compare_solvers` (the public API for the same measurement on
your own Lagrangian); this script adds the systems, the L-passes column and the
tables.

Columns:

- `wall`: median of interleaved repeats of the solve (saving only the final state),
  compilation excluded, `block_until_ready`; XLA runs single-threaded (unless
  `XLA_FLAGS` is set) so that a shared machine's load disturbs it less.
- `L passes`: evaluations of the Lagrangian at one point — its value, its gradient,
  or a batch of Hessian-vector products there (one `lagrax.acceleration` is one
  pass; a Newton iteration of `GaussLegendre` is `stages` passes). Counted with a
  host callback in a separate run over the first 10 time units, and scaled by the
  number of steps of the timed run.
- `max |ΔE/E₀|`: the largest relative energy error over every step.
- `final err`: max-norm error of `(q, q̇)` at the horizon against Dopri8 at
  `rtol = atol = 1e-12`. Phase errors grow along the motion, so this error
  reaches O(1) for the coarse runs at long horizons, while the energy error stays
  meaningful there.

The summary gives, per horizon, the cheapest configuration reaching each energy
error, and whether the best lagrax solver beats Tsit5 at equal wall time. Run
`python benchmarks/solvers.py` (about 9 minutes on 2 cores), or `--quick` for a
smoke run of three solvers over short horizons, without the L-passes column (72 s on
2 idle cores, mostly compiling).
Tables go to stdout and to `--out` (markdown and CSV), with a work–precision plot
when matplotlib is installed.
"""

import argparse
import csv
import dataclasses
import math
import os
import pathlib
from collections.abc import Callable


# Single-threaded XLA: steadier timings on shared machines (set before jax loads).
os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

import diffrax  # noqa: E402
import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import lagrax  # noqa: E402


try:
    from ._common import environment, markdown_table, median
except ImportError:  # run as a script: `python benchmarks/solvers.py`
    from _common import environment, markdown_table, median


MAX_STEPS = 1_000_000
ERROR_MAX_STEPS = 250_000
COUNT_HORIZON = 10.0
ENERGY_TARGETS = (1e-3, 1e-5, 1e-7, 1e-9)


class LearnedLagrangian(lagrax.AbstractJetLagrangian):
    """`m|q̇|² − k|q|² + MLP(q, q̇) − MLP(0, 0)`, with the network's fast jet."""

    network: lagrax.MLPLagrangian
    offset: jax.Array
    mass: float = 1.0
    stiffness: float = 8.0

    def __call__(self, q, qdot):
        quadratic = self.mass * jnp.dot(qdot, qdot) - self.stiffness * jnp.dot(q, q)
        return quadratic + self.network(q, qdot) - self.offset

    def jet(self, q, qdot, directions):
        grad, hessian = self.network.jet(q, qdot, directions)
        diagonal = jnp.concatenate(
            [jnp.full_like(q, -2 * self.stiffness), jnp.full_like(qdot, 2 * self.mass)]
        )
        grad = grad + diagonal * jnp.concatenate([q, qdot])
        hessian = hessian + directions.T @ (diagonal[:, None] * directions)
        return grad, hessian


def learned_lagrangian(width: int = 128) -> LearnedLagrangian:
    network = lagrax.MLPLagrangian(
        2, width=width, depth=2, init="lnn", dtype=jnp.float64, key=jax.random.key(0)
    )
    zero = jnp.zeros(2)
    return LearnedLagrangian(network, network(zero, zero))


class _Counted(eqx.Module):
    """A Lagrangian that reports each evaluation to the host (slow: counting only)."""

    inner: Callable

    def __call__(self, q, qdot):
        jax.debug.callback(_count, q)
        return self.inner(q, qdot)


_PASSES = [0]


def _count(_):
    _PASSES[0] += 1


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    solver: diffrax.AbstractSolver
    adaptive: bool
    lagrax: bool


@dataclasses.dataclass(frozen=True)
class System:
    name: str
    lagrangian: Callable
    y0: tuple
    horizons: tuple[float, ...]
    dts: tuple[float, ...]
    tolerances: tuple[float, ...]
    skip: tuple[str, ...] = ()


@dataclasses.dataclass
class Row:
    system: str
    method: str
    setting: str
    horizon: float
    steps: int
    wall: float
    passes: float
    energy_error: float
    final_error: float
    is_lagrax: bool


def methods(quick: bool) -> list[Method]:
    out = [
        Method("VelocityVerlet", lagrax.VelocityVerlet(), False, True),
        Method("VariationalMidpoint", lagrax.VariationalMidpoint(), False, True),
        Method("Yoshida4", lagrax.Yoshida4(), False, True),
        Method("GaussLegendre4", lagrax.GaussLegendre(), False, True),
        Method("GaussLegendre6", lagrax.GaussLegendre(stages=3), False, True),
        Method("Tsit5 (fixed)", diffrax.Tsit5(), False, False),
        Method("Tsit5", diffrax.Tsit5(), True, False),
        Method("Dopri5", diffrax.Dopri5(), True, False),
        Method("Dopri8", diffrax.Dopri8(), True, False),
    ]
    if quick:
        keep = {"GaussLegendre4", "Tsit5 (fixed)", "Tsit5"}
        out = [m for m in out if m.name in keep]
    return out


def _counted_steps(lagrangian, method, y0):
    """An ahead-of-time compiled `(t1, step) -> steps` solve of `_Counted(lagrangian)`
    (for the L-passes column only; `step` is the fixed step or the tolerance)."""

    def count(t1, step):
        if method.adaptive:
            controller, dt0 = diffrax.PIDController(rtol=step, atol=step), None
        else:
            controller, dt0 = diffrax.ConstantStepSize(), step
        sol = diffrax.diffeqsolve(
            lagrax.LagrangianTerm(_Counted(lagrangian), throw=False),
            method.solver,
            t0=jnp.asarray(0.0),
            t1=t1,
            dt0=dt0,
            y0=y0,
            saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=controller,
            max_steps=MAX_STEPS,
            throw=False,
        )
        return sol.stats["num_steps"]

    scalar = jnp.asarray(1.0)
    return jax.jit(count).lower(scalar, scalar).compile()


def passes_per_step(system: System, configs) -> dict:
    """L passes per step of each `(method, step)`, counted over the first
    `COUNT_HORIZON` time units."""
    counters = {
        m.name: _counted_steps(system.lagrangian, m, system.y0) for m, _ in configs
    }
    out = {}
    for m, s in configs:
        _PASSES[0] = 0
        steps = int(counters[m.name](jnp.asarray(COUNT_HORIZON), jnp.asarray(s)))
        jax.effects_barrier()
        out[m.name, s] = _PASSES[0] / max(steps, 1)
    return out


def run_system(
    system: System, method_list: list[Method], repeats: int, *, count: bool = True
) -> list[Row]:
    """Every configuration of `system` over its horizons, measured by
    `lagrax.compare_solvers` (time, energy error, final error against Dopri8 at
    1e-12), plus the L passes of each (unless `count` is false: one compilation per
    method fewer)."""
    method_list = [m for m in method_list if m.name not in system.skip]
    configs = [
        (m, s)
        for m in method_list
        for s in (system.tolerances if m.adaptive else system.dts)
    ]
    settings = [
        lagrax.SolverSetting(
            m.name, m.solver, **({"tolerance": s} if m.adaptive else {"dt0": s})
        )
        for m, s in configs
    ]
    if count:
        passes = passes_per_step(system, configs)
    else:
        passes = {
            config_key: math.nan for config_key in ((m.name, s) for m, s in configs)
        }
    runs = lagrax.compare_solvers(
        system.lagrangian,
        *system.y0,
        list(system.horizons),
        settings,
        repeats=repeats,
        max_steps=MAX_STEPS,
        energy_max_steps=ERROR_MAX_STEPS,
    )
    rows = []
    for k, run in enumerate(runs):
        m, s = configs[k % len(configs)]
        rows.append(
            Row(
                system=system.name,
                method=m.name,
                setting=_setting(m, s),
                horizon=run.t1,
                steps=run.steps,
                # a solve that failed (blew up, or a Newton solve did not converge)
                wall=run.wall_seconds if run.successful else math.nan,
                passes=passes[m.name, s] * run.steps,
                energy_error=run.energy_error,
                final_error=run.final_error,
                is_lagrax=m.lagrax,
            )
        )
    print(f"  {system.name}: done", flush=True)
    return rows


def _setting(method: Method, step: float) -> str:
    return f"tol={step:g}" if method.adaptive else f"dt={step:g}"


def _fmt(x: float, spec: str = ".1e") -> str:
    return "—" if not math.isfinite(x) else format(x, spec)


def results_table(rows: list[Row]) -> str:
    headers = [
        "system",
        "solver",
        "setting",
        "T",
        "steps",
        "wall [s]",
        "L passes",
        "max |ΔE/E₀|",
        "final err",
    ]
    body = [
        [
            r.system,
            r.method,
            r.setting,
            f"{r.horizon:g}",
            r.steps,
            "failed" if math.isnan(r.wall) else f"{r.wall:.3g}",
            _fmt(r.passes, ".3g"),
            _fmt(r.energy_error),
            _fmt(r.final_error),
        ]
        for r in rows
    ]
    return markdown_table(headers, body)


def _best(rows, predicate):
    candidates = [r for r in rows if predicate(r) and math.isfinite(r.energy_error)]
    return min(candidates, key=lambda r: r.wall, default=None)


def summary_table(rows: list[Row]) -> str:
    """Per horizon and energy target: the cheapest lagrax and Diffrax configuration."""
    headers = [
        "system",
        "T",
        "max |ΔE/E₀| ≤",
        "cheapest lagrax",
        "cheapest Diffrax",
        "Diffrax / lagrax wall",
    ]
    body = []
    for system in dict.fromkeys(r.system for r in rows):
        for horizon in dict.fromkeys(r.horizon for r in rows if r.system == system):
            here = [r for r in rows if r.system == system and r.horizon == horizon]
            for target in ENERGY_TARGETS:
                ours = _best(here, lambda r: r.is_lagrax and r.energy_error <= target)
                theirs = _best(
                    here, lambda r: not r.is_lagrax and r.energy_error <= target
                )
                if ours is None and theirs is None:
                    continue

                def describe(r):
                    if r is None:
                        return "—"
                    return f"{r.method} {r.setting} ({r.wall:.3g} s)"

                ratio = f"{theirs.wall / ours.wall:.2g}" if ours and theirs else "—"
                body.append(
                    [
                        system,
                        f"{horizon:g}",
                        f"{target:g}",
                        describe(ours),
                        describe(theirs),
                        ratio,
                    ]
                )
    return markdown_table(headers, body)


def equal_time_table(rows: list[Row]) -> str:
    """For each Tsit5 run: the best lagrax energy error at no more wall time."""
    headers = [
        "system",
        "T",
        "Tsit5 runs where lagrax is better at ≤ equal wall",
        "median error ratio Tsit5 / best lagrax",
    ]
    body = []
    for system in dict.fromkeys(r.system for r in rows):
        for horizon in dict.fromkeys(r.horizon for r in rows if r.system == system):
            here = [r for r in rows if r.system == system and r.horizon == horizon]
            tsit5 = [
                r
                for r in here
                if r.method.startswith("Tsit5") and math.isfinite(r.energy_error)
            ]
            wins, ratios = 0, []
            for t in tsit5:
                ours = [
                    r.energy_error
                    for r in here
                    if r.is_lagrax
                    and r.wall <= t.wall
                    and math.isfinite(r.energy_error)
                ]
                if ours:
                    ratios.append(t.energy_error / min(ours))
                    wins += min(ours) < t.energy_error
            ratio = f"{median(ratios):.2g}" if ratios else "—"
            body.append([system, f"{horizon:g}", f"{wins} of {len(tsit5)}", ratio])
    return markdown_table(headers, body)


def plot(rows: list[Row], path: pathlib.Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    systems = list(dict.fromkeys(r.system for r in rows))
    horizons = list(dict.fromkeys(r.horizon for r in rows))
    fig, axes = plt.subplots(
        len(systems),
        len(horizons),
        figsize=(4.2 * len(horizons), 3.6 * len(systems)),
        squeeze=False,
    )
    for i, system in enumerate(systems):
        for j, horizon in enumerate(horizons):
            ax = axes[i][j]
            here = [
                r
                for r in rows
                if r.system == system
                and r.horizon == horizon
                and math.isfinite(r.energy_error)
                and r.energy_error > 0
            ]
            for method in dict.fromkeys(r.method for r in here):
                mine = [r for r in here if r.method == method]
                points = sorted((r.wall, r.energy_error) for r in mine)
                style = "-o" if mine[0].is_lagrax else "--s"
                ax.loglog(*zip(*points), style, label=method, markersize=4)
            ax.set_title(f"{system}, T = {horizon:g}")
            ax.set_xlabel("wall time [s]")
            ax.set_ylabel("max |ΔE/E₀|")
            ax.grid(True, which="major", alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: three solvers, short horizons",
    )
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path("results/bench"),
        help="folder for solvers.md, solvers.csv and the plot (default "
        "results/bench, beside `lagrax reproduce`'s results; not in the scripts' "
        "folder, which an installed wheel may not let you write)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)

    y0 = (jnp.array([1.0, 0.5]), jnp.zeros(2))
    tolerances = (1e-5, 1e-8) if args.quick else (1e-6, 1e-8, 1e-10)
    systems = [
        System(
            "double pendulum",
            lagrax.systems.DoublePendulum(),
            y0,
            horizons=(1.0, 10.0) if args.quick else (10.0, 100.0, 1000.0),
            dts=(0.1, 0.05) if args.quick else (0.1, 0.05, 0.02, 0.01),
            tolerances=tolerances,
        ),
        System(
            "learned (MLP 128×2)",
            learned_lagrangian(128),
            y0,
            horizons=(1.0, 10.0) if args.quick else (10.0, 100.0, 500.0),
            dts=(0.2, 0.1) if args.quick else (0.2, 0.1, 0.05),
            tolerances=tolerances,
            # A step of this network costs ~40 double-pendulum steps: a shorter
            # longest horizon, and no Dopri5 (it tracks Tsit5 on the pendulum).
            skip=("Dopri5",),
        ),
    ]
    repeats = args.repeats or (2 if args.quick else 3)
    print(environment(), flush=True)

    rows = []
    for system in systems:
        rows += run_system(system, methods(args.quick), repeats, count=not args.quick)

    sections = [
        ("Results", results_table(rows)),
        ("Cheapest configuration per energy target", summary_table(rows)),
        ("Best lagrax solver against Tsit5 at equal wall time", equal_time_table(rows)),
    ]
    text = "\n\n".join(f"## {title}\n\n{table}" for title, table in sections)
    print("\n" + text, flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "solvers.md").write_text(f"{environment()}\n\n{text}\n")
    with open(args.out / "solvers.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([field.name for field in dataclasses.fields(Row)])
        writer.writerows(dataclasses.astuple(r) for r in rows)
    png = args.out / "solvers_work_precision.png"
    if plot(rows, png):
        print(f"\nwrote {png}")
    else:
        print("\nmatplotlib is not installed: no plot")
    print(f"wrote {args.out / 'solvers.md'} and {args.out / 'solvers.csv'}")


if __name__ == "__main__":
    main()
