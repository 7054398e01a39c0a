"""What the experiments share: their report, checked settings, checkpointed
training, tables and plots."""

import concurrent.futures
import contextvars
import dataclasses
import functools
import io
import json
import logging
import math
import os
import pathlib
import threading
import time
from collections.abc import Callable, Collection
from typing import Any, TypeVar

import diffrax
import jax
import jax.random as jr
import numpy as np
import optax

import lagrax

from .._files import write_atomic


logger = logging.getLogger("lagrax.experiments")

# Evaluation rollouts are never differentiated: Diffrax's default adjoint keeps
# only O(log max_steps) checkpoints, where lagrax's training default keeps one per
# step.
FORWARD_ONLY = diffrax.RecursiveCheckpointAdjoint()

Figure = tuple[str, Callable[[Any], None]]
RESULTS_FILE = "results.json"


@dataclasses.dataclass(frozen=True)
class Report:
    """What an experiment's `run` returns: its results, a table of them against the
    paper's numbers, and its figures.

    `report.record()` is the content of `results.json`; `report.save(out)` writes
    it and the figures.

    **Fields:**

    - `experiment`: the experiment's name, such as `"double-pendulum"`.
    - `settings`: the experiment's `Settings`.
    - `models`: for each trained model, such as `"lnn"`, its metrics (floats, or
        `None` where a metric could not be computed; counts are ints); or `None`
        for an experiment that reports `runs`.
    - `paper`: the paper's numbers, where it gives them.
    - `table`: a Markdown table of the results against the paper's.
    - `figures`: `(filename, draw)` pairs: `draw(fig)` draws the plot on a
        `matplotlib.figure.Figure`.
    - `runs`: for a study of many configurations (`"ablation"`), one dict per
        run, in place of `models`.
    - `extra`: further top-level entries of `results.json`, such as a second
        study's rows.
    """

    experiment: str
    settings: Any
    models: dict[str, dict[str, Any]] | None
    paper: dict[str, Any]
    table: str
    figures: tuple[Figure, ...]
    runs: list[dict[str, Any]] | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def record(self, settings: dict[str, Any] | None = None) -> dict[str, Any]:
        """The content of `results.json`, NaN and infinities replaced by `None`.

        **Arguments:**

        - `settings`: the `settings` entry; default the `Settings` as a dict (the
            command line passes every option, as given).

        **Returns:**

        A JSON-ready dict with the keys `experiment`, `lagrax_version`,
        `settings`, `training_samples` (steps × batch size), `models` (or `runs`),
        `paper` and those of `extra`.
        """
        if settings is None:
            settings = dataclasses.asdict(self.settings)
        record: dict[str, Any] = dict(
            experiment=self.experiment,
            lagrax_version=lagrax.__version__,
            settings=settings,
            training_samples=self.settings.steps * self.settings.batch_size,
        )
        if self.runs is None:
            record["models"] = self.models
        else:
            record["runs"] = self.runs
        record.update(paper=self.paper, **self.extra)
        return _finite_or_none(record)

    def save(
        self, out: str | os.PathLike, *, settings: dict[str, Any] | None = None
    ) -> list[pathlib.Path]:
        """Write `results.json` and, when matplotlib is installed, the figures as
        PNG files into the folder `out`, each atomically: a file of the name is
        replaced (a symbolic link too, never written through).

        **Arguments:**

        - `out`: an existing folder.
        - `settings`: the `settings` entry of `results.json`, as in `record`.

        **Returns:**

        The paths written.
        """
        out = pathlib.Path(out)
        text = json.dumps(self.record(settings), indent=2, allow_nan=False)
        path = out / RESULTS_FILE
        write_atomic(path, (text + "\n").encode("utf-8"))
        return [path, *_save_figures(self.figures, out)]


def output_files(checkpoints: list[str], figures: tuple[str, ...]) -> tuple[str, ...]:
    """The names of what a run writes into its folder: `NAME.ckpt` per trained
    model, `results.json` and the figures."""
    return (*(f"{name}.ckpt" for name in checkpoints), RESULTS_FILE, *figures)


def _finite_or_none(tree: Any) -> Any:
    """`tree` with every NaN or infinite float replaced by None (JSON has neither)."""
    if isinstance(tree, dict):
        return {k: _finite_or_none(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return [_finite_or_none(v) for v in tree]
    if isinstance(tree, float) and not math.isfinite(tree):
        return None
    return tree


def require_x64() -> None:
    """The experiments evaluate in float64: refuse to run without it."""
    if not jax.config.read("jax_enable_x64"):
        raise RuntimeError(
            "The experiments evaluate in float64: call "
            "`jax.config.update('jax_enable_x64', True)` first."
        )


def check_settings(
    settings, *, positive: tuple[str, ...], choices: dict[str, tuple[str, ...]]
) -> None:
    """Check a `Settings` as it is constructed: an int field holds an int, a float
    field a finite number (stored as a float), each at least 0 and those named in
    `positive` above 0; a field in `choices` one of its choices; any other string
    field a string (its experiment checks the rest). Raises a
    `TypeError` or `ValueError` naming the setting."""
    for field in dataclasses.fields(settings):
        name, value = field.name, getattr(settings, field.name)
        if name in choices:
            if not isinstance(value, str):
                raise TypeError(f"`{name}` must be a string, got {value!r}.")
            if value not in choices[name]:
                raise ValueError(
                    f"`{name}` must be one of {', '.join(choices[name])}; got "
                    f"{value!r}."
                )
            continue
        if field.type is str:  # free text, checked by the experiment
            if not isinstance(value, str):
                raise TypeError(f"`{name}` must be a string, got {value!r}.")
            continue
        kind = "an int" if field.type is int else "a finite number"
        ok_type = isinstance(value, int | float) and not isinstance(value, bool)
        if field.type is int:
            ok_type = ok_type and isinstance(value, int)
        if not ok_type:
            raise TypeError(f"`{name}` must be {kind}, got {value!r}.")
        if not math.isfinite(value):
            raise ValueError(f"`{name}` must be {kind}, got {value!r}.")
        low = "above 0" if name in positive else "at least 0"
        if value < 0 or (name in positive and value == 0):
            raise ValueError(f"`{name}` must be {kind} {low}, got {value!r}.")
        if field.type is float:  # so `Settings(t1=2)` equals `Settings(t1=2.0)`
            object.__setattr__(settings, name, float(value))


def comma_separated(text: str, known: Collection[str], setting: str) -> tuple[str, ...]:
    """The comma-separated names of `text`, each one of `known`, without repeats;
    a `ValueError` naming `setting` otherwise."""
    names = tuple(name.strip() for name in text.split(","))
    for name in names:
        if name not in known:
            raise ValueError(
                f"`{setting}` must be comma-separated names among "
                f"{', '.join(known)}; got {name!r}."
            )
    if len(set(names)) != len(names):
        raise ValueError(f"`{setting}` names one twice: {text!r}.")
    return names


_T = TypeVar("_T")


def in_background(
    fn: Callable[..., _T], /, *args, **kwargs
) -> concurrent.futures.Future[_T]:
    """Start `fn(*args, **kwargs)` in a thread of its own; `.result()` of the
    returned future waits for it and returns what it returned (or raises what it
    raised).

    JAX runs compiled code without holding Python's lock, so two trainings or
    rollouts that each keep one core busy run side by side on two cores, with the
    numbers each gives alone. The thread runs in a copy of this thread's context,
    so that what observes this thread's file writes (the command line's manifest)
    observes its own; and it is a daemon: an interrupted run does not wait for it
    (its checkpoints, written atomically, are those of an interrupted run).
    """
    future: concurrent.futures.Future[_T] = concurrent.futures.Future()
    context = contextvars.copy_context()

    def work():
        future.set_running_or_notify_cancel()
        try:
            future.set_result(context.run(fn, *args, **kwargs))
        except BaseException as error:
            future.set_exception(error)

    threading.Thread(
        target=work, name=getattr(fn, "__name__", None), daemon=True
    ).start()
    return future


def train(
    model,
    data: lagrax.AccelerationData,
    test_data: lagrax.AccelerationData,
    *,
    name: str,
    steps: int,
    batch_size: int,
    lr: float,
    clip: float | None,
    definiteness: float,
    seed: int,
    out: str | os.PathLike | None,
    progress: bool,
    weight: Callable | None = None,
    norm: str = "l1",
):
    """`lagrax.fit` on the acceleration loss of this `norm` (L1 by default, as the
    paper; its samples weighted by `weight(q, q̇)`, if given) with Adam on a
    one-cycle schedule of peak `lr` (as the paper), gradients clipped to global
    norm `clip` (if set) and, for a Lagrangian, the mass-matrix penalty of
    margin `definiteness` (if set).
    Checkpointed as in `fit_checkpointed`. Returns `(model, history, metrics)`,
    the metrics every experiment reports."""
    if isinstance(model, lagrax.AbstractDynamics):
        definiteness = 0.0
    loss = acceleration_loss(definiteness, weight, norm)
    model, history, metrics = fit_checkpointed(
        model,
        loss,
        data,
        test_data,
        optimizer=one_cycle_adam(steps, lr, clip),
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        name=name,
        out=out,
        progress=progress,
    )
    error = float(lagrax.acceleration_loss(model, test_data))
    return model, history, dict(test_l1_acceleration_error=error, **metrics)


def train_each(
    models: dict[str, Any],
    data: lagrax.AccelerationData,
    test_data: lagrax.AccelerationData,
    settings,
    *,
    definiteness: float = 0.0,
    clip: float | None = None,
    weight: Callable | None = None,
    norm: str = "l1",
    steps: dict[str, int] | None = None,
    out: str | os.PathLike | None,
    progress: bool,
):
    """`train` each of `models` with the `steps`, `batch_size`, `lr` and `seed` of
    `settings` (or the steps of `steps[name]`, where given), gradients clipped to
    `clip` (if set), the loss of this `norm`, samples weighted by `weight` (if
    given), the Lagrangians with
    the mass-matrix penalty of margin `definiteness` (if set). Returns
    `(trained, histories, results)`, each a dict by model name."""
    trained, histories, results = {}, {}, {}
    for name, model in models.items():
        trained[name], histories[name], results[name] = train(
            model,
            data,
            test_data,
            name=name,
            steps=steps[name] if steps and name in steps else settings.steps,
            batch_size=settings.batch_size,
            lr=settings.lr,
            clip=clip,
            definiteness=definiteness,
            seed=settings.seed,
            out=out,
            progress=progress,
            weight=weight,
            norm=norm,
        )
    return trained, histories, results


# The losses and optimizers below are built once per arguments: `lagrax.fit`
# compiles its step once per loss and optimizer object, so a second run in the same
# process (a rerun, another seed) reuses the first run's compilation.


@functools.cache
def acceleration_loss(definiteness: float, weight: Callable | None, norm: str = "l1"):
    """`lagrax.acceleration_loss` of this `norm` with the mass-matrix penalty of
    this margin and these sample weights."""
    if not definiteness and weight is None and norm == "l1":
        return lagrax.acceleration_loss
    return functools.partial(
        lagrax.acceleration_loss, norm=norm, definiteness=definiteness, weight=weight
    )


@functools.cache
def one_cycle_adam(
    steps: int, lr: float, clip: float | None
) -> optax.GradientTransformation:
    """Adam on a one-cycle schedule of peak `lr` over `steps`, after clipping
    gradients to global norm `clip`, if set."""
    return clipped(optax.adam(optax.cosine_onecycle_schedule(steps, lr)), clip)


def clipped(
    optimizer: optax.GradientTransformation, clip: float | None
) -> optax.GradientTransformation:
    """`optimizer` after clipping gradients to global norm `clip`, if set."""
    if clip:
        return optax.chain(optax.clip_by_global_norm(clip), optimizer)
    return optimizer


def fit_checkpointed(
    model,
    loss,
    data: lagrax.AbstractDataset,
    test_data: lagrax.AbstractDataset,
    *,
    optimizer: optax.GradientTransformation,
    steps: int,
    batch_size: int,
    seed: int,
    name: str,
    out: str | os.PathLike | None,
    progress: bool,
):
    """`lagrax.fit` with minibatches drawn from `seed` and `name`, checkpointed as
    `NAME.ckpt` in the folder `out` (if given) and resumed from there. Returns
    `(model, history, metrics)`: the wall time, skipped steps and final loss."""
    checkpoint = None if out is None else pathlib.Path(out) / f"{name}.ckpt"
    start = time.perf_counter()
    logger.info(f"training {name}: {steps} steps of batch {batch_size}")
    model, history = lagrax.fit(
        model,
        loss,
        data,
        optimizer=optimizer,
        steps=steps,
        batch_size=batch_size,
        key=jr.fold_in(jr.key(seed), name_key(name)),
        test_data=test_data,
        checkpoint=checkpoint,
        resume=checkpoint is not None,
        progress=progress,
    )
    metrics = dict(
        train_seconds=time.perf_counter() - start,
        skipped_steps=history.num_skipped,
        final_train_loss=final_train_loss(history),
    )
    return model, history, metrics


def name_key(name: str) -> int:
    """A PRNG key offset for a model's name, the same in every process."""
    return sum(ord(c) * 31**i for i, c in enumerate(name)) % (2**31)


def final_train_loss(history: lagrax.History) -> float:
    """The mean finite training loss over the last tenth of the steps."""
    losses = np.asarray(history.loss)
    tail = losses[-max(1, len(losses) // 10) :]
    tail = tail[np.isfinite(tail)]
    return float(np.mean(tail)) if tail.size else float("nan")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float | None, spec: str = ".3g") -> str:
    """A number for a table; `—` for a missing one."""
    if value is None:
        return "—"
    return format(value, spec)


def loss_figure(histories: dict[str, lagrax.History], labels: dict[str, str]):
    """A `(filename, draw)` plot of the smoothed training losses."""

    def draw(fig):
        ax = fig.add_subplot()
        for name, history in histories.items():
            loss = np.nan_to_num(np.asarray(history.loss))
            window = max(1, len(loss) // 100)
            smooth = np.convolve(loss, np.ones(window) / window, "valid")
            ax.semilogy(smooth, label=f"{labels[name]} (train)")
            ax.semilogy(
                history.eval_step,
                history.eval_loss,
                "o",
                ms=3,
                label=f"{labels[name]} (test)",
            )
        ax.set(
            xlabel="step",
            ylabel="training loss (L1 q̈ error + any penalty)",
            title="Training",
        )
        ax.legend()

    return LOSS_FIGURE, draw


LOSS_FIGURE = "losses.png"


def _save_figures(figures: tuple[Figure, ...], out: pathlib.Path) -> list:
    """Draw each `(filename, draw)` with matplotlib, if it is installed (on a
    figure of its own, without pyplot's global state)."""
    try:
        from matplotlib.figure import Figure as MatplotlibFigure
    except ImportError:
        logger.warning(
            "(matplotlib is not installed: no plots; pip install matplotlib)"
        )
        return []
    paths = []
    for filename, draw in figures:
        fig = MatplotlibFigure(figsize=(9, 4.5))
        draw(fig)
        fig.tight_layout()
        # Drawn in memory and written by `write_atomic`: `savefig` to a path
        # would write through a link there, and leave half a file if stopped.
        image = io.BytesIO()
        fig.savefig(image, format="png", dpi=120)
        write_atomic(out / filename, image.getvalue())
        paths.append(out / filename)
    return paths


@dataclasses.dataclass(frozen=True)
class Memory:
    """A part of what an experiment's run holds in memory at once: an item of the
    experiment's `memory_estimate(settings)`, which the command line compares with
    the memory the machine has before anything runs.

    **Fields:**

    - `what`: what it is, such as `"the training data"`.
    - `settings`: the names of the settings its size grows with.
    - `bytes`: about how many bytes it takes, counting its largest arrays only (an
        estimate from below, so that no run that fits is refused); a float, which
        absurd settings may make infinite.
    """

    what: str
    settings: tuple[str, ...]
    bytes: float


# The sizes in bytes that the estimates are made of, floats so that an estimate
# is one too. Per number:
FLOAT32 = 4.0
FLOAT64 = 8.0
# Per step of `lagrax.fit`'s history: a loss (a Python float in a list) and a
# skipped flag.
HISTORY_BYTES = 40.0
# Per run of a study: its entry of `runs` and its checkpoint's name.
RUN_BYTES = 1000.0


def mlp_parameters(inputs: int, width: int, depth: int, outputs: int = 1) -> float:
    """The number of parameters of an MLP with `depth` hidden layers of `width`
    units."""
    return float(width) * (inputs + (depth - 1) * width + depth + outputs) + outputs


def parameters_memory(parameters: float, itemsize: float) -> Memory:
    """The `Memory` of models of `parameters` parameters in all, trained with Adam:
    the parameters, their gradient and Adam's two moments."""
    return Memory(
        "the parameters and optimizer state", ("width",), 4 * parameters * itemsize
    )
