"""Training considerations (Cranmer et al., Section 4): which activations and
initializations let an LNN learn the double pendulum, and whether the paper's
initialization keeps accelerations and gradients at unit scale.

**The ablation.** The double pendulum's LNN (`MLPLagrangian`, 3 hidden layers of
`width`, angles fed as (cos q, sin q)) is trained at a small budget for every
activation of `activations` (softplus, tanh, silu, gelu, relu) × initialization
of `inits` (the paper's `lnn`, Equinox's `default`) × `seeds` seeds (`seed`,
`seed + 1`, ...): the double-pendulum experiment's training (L1 loss, Adam on a
one-cycle schedule, gradients clipped to `clip`, definiteness penalty of margin
`definiteness`; `lagrax reproduce double-pendulum`) on accelerations of the states
reachable from rest, float32. Data and evaluation states come from `seed` and are
the same for every run. Per run: the held-out L1 q̈ error; the energy discrepancy
of the paper's protocol (`ics` initial conditions near rest, rolled out to `t1`
with Tsit5, rtol = atol = 1e-8, float64, |ΔE| / 29.4 at `t1`, mean over the
rollouts that did not fail); the skipped training steps; the fraction of held-out
states whose learned mass matrix is definite (both eigenvalues of one sign); the
wall time. An activation whose second derivative vanishes (ReLU) makes
`∂²L/∂q̇²` identically zero: `MLPLagrangian` refuses it before any training, and
the run is reported with `status: "failed"` and that reason.

**The initialization study.** The paper chose its initialization so that an
untrained LNN's accelerations, and their gradients with respect to the
parameters, are of unit scale for inputs of unit scale, whatever the width and
depth. For each initialization, width in 32, 128, 512, 1024 (up to
`study_width`; 0 skips the study) and depth 2–5, an untrained softplus LNN of 2
degrees of freedom (plain inputs) is evaluated at 256 states with q, q̇ ~ N(0, 1)
(float32), for 8 draws of the parameters: the standard deviation of its
accelerations q̈ (over states and coordinates), and the root mean square over all
its parameters of the gradient of the mean |q̈| (the L1 loss against zero
targets). Both leave out the states whose mass matrix is singular and the tenth
with the largest |q̈| (near-singular mass matrices give a heavy tail that would
swamp both); the medians over the draws are reported, with the median fraction
of singular states.

`results.json` holds `runs` (a list: `activation`, `init`, `seed`, `status`
("ok" or "failed"), `reason` (for failures; else null), `test_l1`,
`energy_discrepancy`, `failed_rollouts`, `skipped_steps`, `definite_fraction`,
`final_train_loss`, `train_seconds`, `wall_seconds`) and `init_study` (a list:
`init`, `width`, `depth`, `qddot_std`, `grad_rms`, `singular_fraction`, the
medians over the draws, and `qddot_std_draws`, `grad_rms_draws`, each draw's).
"""

import dataclasses
import functools
import os
import time
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float

import lagrax

from . import double_pendulum
from ._common import (
    check_settings,
    comma_separated,
    FLOAT32,
    FLOAT64,
    fmt,
    FORWARD_ONLY,
    HISTORY_BYTES,
    markdown_table,
    Memory,
    mlp_parameters,
    output_files,
    parameters_memory,
    Report,
    require_x64,
    RUN_BYTES,
    train as train_on_accelerations,
)


NAME = "ablation"
ACTIVATIONS = {
    "softplus": jax.nn.softplus,
    "tanh": jnp.tanh,
    "silu": jax.nn.silu,
    "gelu": jax.nn.gelu,
    "relu": jax.nn.relu,
}
INITS: tuple[Literal["lnn", "default"], ...] = ("lnn", "default")
DEPTH = 3
TEST_SIZE = 2_000
SAMPLING_STEP = 0.1
STUDY_WIDTHS = (32, 128, 512, 1024)
STUDY_DEPTHS = (2, 3, 4, 5)
STUDY_SAMPLES = 256
STUDY_DRAWS = 8
PAPER = {
    "activation": "softplus",
    "init": "lnn",
    "claim": "the paper's initialization keeps accelerations and their gradients "
    "at unit scale; activations need non-zero second derivatives",
}
LOSS_FIGURE = "losses.png"
ERRORS_FIGURE = "errors.png"
INIT_FIGURE = "init_study.png"
FIGURES = (LOSS_FIGURE, ERRORS_FIGURE, INIT_FIGURE)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The settings of the ablation (the command line's options,
    `--name-with-dashes`). Checked on construction: a `ValueError` (or a
    `TypeError`) names a bad one."""

    steps: int = 4_000
    """Training steps per run."""
    batch_size: int = 256
    """Minibatch size."""
    seed: int = 0
    """PRNG seed of the data and of the first run of each configuration."""
    seeds: int = 2
    """Runs per configuration, with seeds `seed`, `seed + 1`, ..."""
    width: int = 64
    """Hidden units per layer (3 hidden layers)."""
    train_size: int = 20_000
    """Training states."""
    ics: int = 10
    """Initial conditions of the energy evaluation."""
    t1: float = 20.0
    """Horizon of the energy evaluation, at least one sampling step (0.1)."""
    lr: float = 3e-3
    """Peak learning rate of the one-cycle schedule."""
    clip: float = 0.1
    """Clip gradients to this global norm (0 turns it off)."""
    definiteness: float = 0.1
    """Margin of the mass-matrix definiteness penalty (0 turns it off)."""
    activations: str = ",".join(ACTIVATIONS)
    """Comma-separated activations, among softplus, tanh, silu, gelu, relu."""
    inits: str = ",".join(INITS)
    """Comma-separated initializations, among lnn and default."""
    study_width: int = STUDY_WIDTHS[-1]
    """Largest width of the initialization study (0 skips the study)."""

    def __post_init__(self):
        check_settings(
            self,
            positive=("steps", "batch_size", "seeds", "width", "train_size", "ics")
            + ("t1", "lr"),
            choices={},
        )
        comma_separated(self.activations, ACTIVATIONS, "activations")
        comma_separated(self.inits, INITS, "inits")
        if self.batch_size > self.train_size:
            raise ValueError(
                f"`batch_size` ({self.batch_size}) must be at most `train_size` "
                f"({self.train_size})."
            )
        if self.t1 < SAMPLING_STEP:
            raise ValueError(
                f"`t1` must be at least the sampling step {SAMPLING_STEP}, got "
                f"{self.t1}."
            )
        if 0 < self.study_width < STUDY_WIDTHS[0]:
            raise ValueError(
                f"`study_width` must be 0 or at least {STUDY_WIDTHS[0]}, got "
                f"{self.study_width}."
            )


def configurations(settings: Settings) -> list[tuple[str, str, int]]:
    """The runs, as `(activation, init, seed)` triples, in order."""
    activations = comma_separated(settings.activations, ACTIVATIONS, "activations")
    inits = comma_separated(settings.inits, INITS, "inits")
    return [
        (activation, init, settings.seed + i)
        for activation in activations
        for init in inits
        for i in range(settings.seeds)
    ]


def run_name(activation: str, init: str, seed: int) -> str:
    """A run's name, that of its checkpoint `NAME.ckpt`."""
    return f"{activation}-{init}-seed{seed}"


def files_written(settings: Settings) -> tuple[str, ...]:
    """The names of the files that `run` and `Report.save` write into `out`: a
    checkpoint per run that trains, `results.json` and the figures."""
    names = [
        run_name(*config)
        for config in configurations(settings)
        if config[0] != "relu"  # refused before training
    ]
    return output_files(names, FIGURES)


def memory_estimate(settings: Settings) -> tuple[Memory, ...]:
    """What a run holds in memory at once, from below: the training states with
    their accelerations (drawn in float64), a model and its Adam state, a training
    step's activations, a model's evaluation trajectories (float64) and every
    run's training history and entry (the initialization study's sizes are
    fixed). `lagrax reproduce` refuses settings whose estimate this machine
    cannot hold."""
    runs = (
        len(comma_separated(settings.activations, ACTIVATIONS, "activations"))
        * len(comma_separated(settings.inits, INITS, "inits"))
        * settings.seeds
    )
    samples = settings.t1 / SAMPLING_STEP + 1
    return (
        Memory(
            "the training data",
            ("train_size",),
            settings.train_size * 3 * 2 * FLOAT64,
        ),
        parameters_memory(mlp_parameters(3 * 2, settings.width, DEPTH), FLOAT32),
        Memory(
            "a training step's activations",
            ("batch_size", "width"),
            settings.batch_size * settings.width * DEPTH * (1 + 2) * FLOAT32,
        ),
        Memory(
            "the evaluation's trajectories",
            ("ics", "t1"),
            settings.ics * samples * (2 * 2 + 1) * FLOAT64,
        ),
        Memory(
            "the runs' histories and entries",
            ("seeds", "steps"),
            runs * (settings.steps * HISTORY_BYTES + RUN_BYTES),
        ),
    )


@dataclasses.dataclass(frozen=True)
class Data:
    """The ablation's data: acceleration samples of the double pendulum's
    reachable states (float32) and the energy evaluation's initial conditions near
    rest (float64), with its save times."""

    system: lagrax.systems.DoublePendulum
    train: lagrax.AccelerationData
    test: lagrax.AccelerationData
    q0: Float[Array, "ics 2"]
    qdot0: Float[Array, "ics 2"]
    ts: Float[Array, " times"]


def data(settings: Settings) -> Data:
    """Draw the data from `settings.seed` (the double-pendulum experiment's
    distributions)."""
    system = lagrax.systems.DoublePendulum()
    keys = jr.split(jr.key(settings.seed), 3)
    q0, qdot0 = double_pendulum.near_rest(settings.ics, keys[2])
    samples = int(round(settings.t1 / SAMPLING_STEP)) + 1
    return Data(
        system=system,
        train=double_pendulum.accelerations(system, settings.train_size, keys[0]),
        test=double_pendulum.accelerations(system, TEST_SIZE, keys[1]),
        q0=q0,
        qdot0=qdot0,
        ts=jnp.linspace(0.0, settings.t1, samples),
    )


def model(
    activation: str,
    init: str,
    seed: int,
    *,
    width: int,
    depth: int = DEPTH,
) -> lagrax.MLPLagrangian:
    """An untrained double-pendulum LNN (float32); a `ValueError` for an
    activation it refuses."""
    if init not in INITS:
        raise ValueError(f"`init` must be one of {INITS}, got {init!r}.")
    return lagrax.MLPLagrangian(
        2,
        width=width,
        depth=depth,
        activation=ACTIVATIONS[activation],
        init=init,
        angles=(0, 1),
        dtype=jnp.float32,
        key=jr.fold_in(jr.key(seed), 1),
    )


def run_one(
    settings: Settings,
    data: Data,
    activation: str,
    init: str,
    seed: int,
    *,
    out: str | os.PathLike | None,
    progress: bool,
) -> tuple[dict[str, Any], lagrax.History | None]:
    """Train and evaluate one configuration. Returns its `runs` entry and its
    training history (`None` for a failed run)."""
    start = time.perf_counter()
    entry: dict[str, Any] = dict(
        activation=activation, init=init, seed=seed, status="ok", reason=None
    )
    try:
        untrained = model(activation, init, seed, width=settings.width)
    except ValueError as e:
        entry.update(status="failed", reason=str(e), **_no_metrics())
        return entry, None
    trained, history, metrics = train_on_accelerations(
        untrained,
        data.train,
        data.test,
        name=run_name(activation, init, seed),
        steps=settings.steps,
        batch_size=settings.batch_size,
        lr=settings.lr,
        clip=settings.clip,
        definiteness=settings.definiteness,
        seed=seed,
        out=out,
        progress=progress,
    )
    discrepancy, failed = energy_discrepancy(trained, data)
    entry.update(
        test_l1=metrics["test_l1_acceleration_error"],
        energy_discrepancy=discrepancy,
        failed_rollouts=failed,
        skipped_steps=metrics["skipped_steps"],
        definite_fraction=definite_fraction(trained, data.test),
        final_train_loss=metrics["final_train_loss"],
        train_seconds=metrics["train_seconds"],
        wall_seconds=time.perf_counter() - start,
    )
    if not np.isfinite(entry["test_l1"]):
        entry.update(status="failed", reason="training diverged (non-finite loss)")
    return entry, history


def _no_metrics() -> dict[str, Any]:
    return dict(
        test_l1=None,
        energy_discrepancy=None,
        failed_rollouts=None,
        skipped_steps=None,
        definite_fraction=None,
        final_train_loss=None,
        train_seconds=0.0,
        wall_seconds=0.0,
    )


def energy_discrepancy(model, data: Data) -> tuple[float | None, int]:
    """The paper's energy discrepancy at `t1` (Tsit5, float64): the mean over the
    initial conditions whose rollout did not fail, and how many failed."""
    predicted = lagrax.rollout(
        lagrax.cast(model, jnp.float64),
        data.q0,
        data.qdot0,
        data.ts,
        rtol=1e-8,
        atol=1e-8,
        throw=False,
        max_steps=100 * (data.ts.shape[0] - 1),
        adjoint=FORWARD_ONLY,
    )
    scale = data.system.max_potential_energy
    error = np.asarray(lagrax.energy_error(data.system, predicted, scale=scale))
    ok = np.isfinite(error).all(axis=1)
    mean = float(np.mean(error[ok, -1])) if ok.any() else None
    return mean, int((~ok).sum())


@eqx.filter_jit
def _definite(model, q, qdot):
    def one(q, qdot):
        eigenvalues = lagrax.mass_matrix_info(model, q, qdot).eigenvalues
        return (jnp.all(eigenvalues > 0) | jnp.all(eigenvalues < 0)).astype(q.dtype)

    return jnp.mean(jax.vmap(one)(q, qdot))


def definite_fraction(model, test: lagrax.AccelerationData) -> float:
    """The fraction of the held-out states at which the learned mass matrix is
    definite (its eigenvalues all of one sign, none zero)."""
    return float(_definite(model, test.q, test.qdot))


def init_study(settings: Settings) -> list[dict[str, Any]]:
    """Accelerations and loss gradients of untrained softplus LNNs at widths up to
    `settings.study_width` and depths 2–5, per initialization (see the module
    docstring); `[]` when `study_width` is 0. States and parameters are drawn from
    `settings.seed`."""
    widths = [w for w in STUDY_WIDTHS if w <= settings.study_width]
    key = jr.fold_in(jr.key(settings.seed), 2)
    q_key, qdot_key, model_key = jr.split(key, 3)
    q, qdot = (jr.normal(k, (STUDY_SAMPLES, 2), jnp.float32) for k in (q_key, qdot_key))
    keys = jr.split(model_key, STUDY_DRAWS)
    rows = []
    for width in widths:
        for depth in STUDY_DEPTHS:
            for init in INITS:
                # Built outside jit: both initializations share a compilation.
                build = functools.partial(
                    lagrax.MLPLagrangian,
                    2,
                    width=width,
                    depth=depth,
                    init=init,
                    dtype=jnp.float32,
                )
                untrained = eqx.filter_vmap(lambda key, build=build: build(key=key))(
                    keys
                )
                std, grad_rms, singular = (
                    np.asarray(v) for v in _scales_of_draws(untrained, q, qdot)
                )
                rows.append(
                    dict(
                        init=init,
                        width=width,
                        depth=depth,
                        qddot_std=float(np.median(std)),
                        grad_rms=float(np.median(grad_rms)),
                        singular_fraction=float(np.median(singular)),
                        qddot_std_draws=std.tolist(),
                        grad_rms_draws=grad_rms.tolist(),
                    )
                )
    return rows


@eqx.filter_jit
def _scales_of_draws(models, q, qdot):
    return eqx.filter_vmap(_scales, in_axes=(eqx.if_array(0), None, None))(
        models, q, qdot
    )


def _scales(model, q, qdot):
    """Of the states with a non-singular mass matrix and `|q̈|` (max over the
    coordinates) at most its 90th percentile: the standard deviation of `q̈`, and
    the RMS over every parameter of the gradient of their mean `|q̈|`. Also the
    fraction of states with a singular mass matrix."""

    def accelerations(model):
        return jax.vmap(lambda q, v: lagrax.acceleration(model, q, v, throw=False))(
            q, qdot
        )

    qddot = accelerations(model)
    finite = jnp.all(jnp.isfinite(qddot), axis=1)
    size = jnp.where(finite, jnp.max(jnp.abs(qddot), axis=1), jnp.inf)
    keep = (size <= jnp.nanquantile(jnp.where(finite, size, jnp.nan), 0.9))[:, None]
    weight = jnp.broadcast_to(keep, qddot.shape).astype(qddot.dtype)
    weight = weight / jnp.maximum(jnp.sum(weight), 1)

    def loss(model):
        return jnp.sum(weight * jnp.where(keep, jnp.abs(accelerations(model)), 0))

    grads = jax.tree.leaves(eqx.filter(eqx.filter_grad(loss)(model), eqx.is_array))
    squares = sum(jnp.sum(g**2) for g in grads)
    grad_rms = jnp.sqrt(squares / sum(g.size for g in grads))
    kept = jnp.where(keep, qddot, 0)
    mean = jnp.sum(weight * kept)
    std = jnp.sqrt(jnp.sum(weight * (kept - mean) ** 2))
    return std, grad_rms, 1 - jnp.mean(finite.astype(qddot.dtype))


def run(
    settings: Settings = Settings(),
    *,
    out: str | os.PathLike | None = None,
    progress: bool = True,
) -> Report:
    """Run the ablation and the initialization study.

    **Arguments:**

    - `settings`: the `Settings`.
    - `out`: a folder for the training checkpoints, one `NAME.ckpt` per run (see
        `files_written`): an interrupted study resumes from them; `None` keeps
        nothing.
    - `progress`: show progress bars.

    **Returns:**

    A `Report` with `runs` (and `init_study` among its `extra` entries);
    `report.save(out)` writes `results.json` and the figures.
    """
    require_x64()
    prepared = data(settings)
    runs, histories = [], {}
    for activation, init, seed in configurations(settings):
        entry, history = run_one(
            settings, prepared, activation, init, seed, out=out, progress=progress
        )
        runs.append(entry)
        if history is not None:
            histories[(activation, init, seed)] = history
    study = init_study(settings) if settings.study_width else []
    return Report(
        experiment=NAME,
        settings=settings,
        models=None,
        runs=runs,
        paper=PAPER,
        table=table(settings, runs, study),
        figures=figures(runs, histories, study),
        extra=dict(init_study=study),
    )


def summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per `(activation, init)`: how many runs succeeded and the medians of their
    metrics."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for entry in runs:
        groups.setdefault((entry["activation"], entry["init"]), []).append(entry)
    rows = []
    for (activation, init), entries in groups.items():
        ok = [e for e in entries if e["status"] == "ok"]

        def median(metric, ok=ok):
            values = [e[metric] for e in ok if e[metric] is not None]
            return float(np.median(values)) if values else None

        rows.append(
            dict(
                activation=activation,
                init=init,
                ok=len(ok),
                runs=len(entries),
                reason=next((e["reason"] for e in entries if e["reason"]), None),
                **{
                    metric: median(metric)
                    for metric in (
                        "test_l1",
                        "energy_discrepancy",
                        "definite_fraction",
                        "skipped_steps",
                        "wall_seconds",
                    )
                },
            )
        )
    return rows


def table(settings: Settings, runs, study) -> str:
    """The ablation (medians over seeds) and, if run, the initialization study, as
    Markdown tables with captions."""
    samples = settings.steps * settings.batch_size
    rows = []
    for r in summary(runs):
        if r["ok"] == 0:
            note = "failed: " + (r["reason"] or "").split(":")[0]
            rows.append(
                [r["activation"], r["init"], f"0/{r['runs']}"] + [note] + [""] * 4
            )
            continue
        rows.append(
            [
                r["activation"],
                r["init"],
                f"{r['ok']}/{r['runs']}",
                fmt(r["test_l1"]),
                fmt(r["energy_discrepancy"], ".2%"),
                fmt(r["definite_fraction"], ".0%"),
                fmt(r["skipped_steps"], ".0f"),
                fmt(r["wall_seconds"], ".0f"),
            ]
        )
    header = [
        "activation",
        "init",
        "runs ok",
        "test L1 q̈ error",
        "energy discrepancy",
        "definite H",
        "skipped steps",
        "wall s",
    ]
    text = (
        f"Double-pendulum LNN, width {settings.width} × {DEPTH} hidden layers, "
        f"{settings.steps} steps × batch {settings.batch_size} = {samples:.3g} "
        f"samples per run, float32; medians over {settings.seeds} seed(s); energy "
        f"discrepancy at t = {settings.t1:g} over {settings.ics} initial conditions "
        "(Tsit5, float64)\n\n" + markdown_table(header, rows)
    )
    if study:
        text += "\n\n" + study_table(study)
    return text


def study_table(study) -> str:
    """The initialization study as a Markdown table: per width and depth, the
    standard deviation of q̈ and the RMS loss gradient for each initialization."""
    cells = {(r["init"], r["width"], r["depth"]): r for r in study}
    rows = []
    for width in sorted({r["width"] for r in study}):
        for depth in STUDY_DEPTHS:
            row = [str(width), str(depth)]
            for init in INITS:
                r = cells[(init, width, depth)]
                row += [fmt(r["qddot_std"], ".2g"), fmt(r["grad_rms"], ".2g")]
            rows.append(row)
    header = ["width", "depth"] + [
        f"{label} ({init})" for init in INITS for label in ("std q̈", "RMS ∂loss/∂θ")
    ]
    return (
        f"Untrained softplus LNNs (2 degrees of freedom) at {STUDY_SAMPLES} states "
        "with q, q̇ ~ N(0, 1), float32: the standard deviation of q̈ and the RMS "
        "over the parameters of ∂ mean|q̈| / ∂θ (the nine tenths of the states "
        f"with the smallest |q̈|; medians over {STUDY_DRAWS} draws of the "
        "parameters)\n\n" + markdown_table(header, rows)
    )


def figures(runs, histories, study) -> tuple:
    """The plots, as `(filename, draw)` pairs: training losses per configuration,
    final errors per configuration, and the initialization study."""
    return (
        (LOSS_FIGURE, functools.partial(_draw_losses, histories)),
        (ERRORS_FIGURE, functools.partial(_draw_errors, runs)),
        (INIT_FIGURE, functools.partial(_draw_study, study)),
    )


_INIT_STYLES = {"lnn": "-", "default": "--"}


def _draw_losses(histories, fig) -> None:
    activations = list(dict.fromkeys(a for a, _, _ in histories))
    for i, activation in enumerate(activations):
        ax = fig.add_subplot(1, max(len(activations), 1), i + 1)
        for (a, init, seed), history in histories.items():
            if a != activation:
                continue
            loss = np.nan_to_num(np.asarray(history.loss), nan=np.nan)
            window = max(1, len(loss) // 50)
            smooth = np.convolve(loss, np.ones(window) / window, "valid")
            ax.semilogy(
                smooth,
                _INIT_STYLES[init],
                color=f"C{seed % 10}",
                label=f"{init}, seed {seed}",
            )
        ax.set(title=activation, xlabel="step")
        if i == 0:
            ax.set_ylabel("training loss")
        ax.legend(fontsize=6)


def _draw_errors(runs, fig) -> None:
    rows = summary(runs)
    labels = [f"{r['activation']}\n{r['init']}" for r in rows]
    x = np.arange(len(rows))
    for column, (metric, title) in enumerate(
        (
            ("test_l1", "held-out L1 q̈ error"),
            ("energy_discrepancy", "energy discrepancy"),
        )
    ):
        ax = fig.add_subplot(1, 2, column + 1)
        heights = [r[metric] if r[metric] is not None else np.nan for r in rows]
        ax.bar(x, heights, color=[f"C{INITS.index(r['init'])}" for r in rows])
        for i, r in enumerate(rows):
            values = [
                e[metric]
                for e in runs
                if (e["activation"], e["init"]) == (r["activation"], r["init"])
                and e[metric] is not None
            ]
            ax.plot([i] * len(values), values, "k.", ms=4)
            note = "failed" if r["ok"] == 0 else None
            if note is None and not values:
                note = "every rollout failed"
            if note:
                ax.text(
                    i,
                    0.5,
                    note,
                    rotation=90,
                    ha="center",
                    va="center",
                    fontsize=7,
                    transform=ax.get_xaxis_transform(),
                )
        ax.set_yscale("log")
        ax.set_xticks(x, labels, fontsize=7)
        ax.set(title=f"{title} (bars: median; dots: seeds)")


def _draw_study(study, fig) -> None:
    if not study:
        return
    metrics = (("qddot_std", "std of q̈"), ("grad_rms", "RMS ∂ mean|q̈| / ∂θ"))
    for row, (metric, title) in enumerate(metrics):
        for column, init in enumerate(INITS):
            ax = fig.add_subplot(2, 2, 2 * row + column + 1)
            for depth in STUDY_DEPTHS:
                rows = [r for r in study if r["init"] == init and r["depth"] == depth]
                widths = [r["width"] for r in rows]
                draws = np.array([r[f"{metric}_draws"] for r in rows])
                color = f"C{depth}"
                ax.loglog(widths, [r[metric] for r in rows], "o-", color=color)
                ax.fill_between(
                    widths,
                    draws.min(axis=1),
                    draws.max(axis=1),
                    color=color,
                    alpha=0.15,
                )
                ax.plot([], [], "o-", color=color, label=f"depth {depth}")
            ax.axhline(1.0, color="gray", lw=0.5)
            ax.set(xlabel="width", title=f"{title}, init {init!r}")
            ax.legend(fontsize=6)
    fig.suptitle("Untrained LNNs: medians and range over draws of the parameters")
