"""`lagrax reproduce EXPERIMENT`: the experiments of Cranmer et al., end to end.

Each experiment (a module of `lagrax.experiments`) trains its models with
`lagrax.fit` (checkpointed in the output folder, so an interrupted run resumes
where it stopped), evaluates them with the paper's protocol, prints a table of ours
against the paper's numbers and writes `results.json` and PNG plots (when
matplotlib is installed) to `--out`. The folder's manifest, `lagrax-run.json`,
records the settings and each file written, with its size and SHA-256 as written:
a rerun with other settings is refused (`--fresh` removes those files first, if
they are still as written), so `results.json` always holds the numbers of the
settings it names. Every file is written to a temporary name in `--out` and
renamed over its target, never through a symbolic link; a link, or a file no run
recorded, where a run would write is refused before anything runs.

Before anything is written, the settings are checked: each option against its
range (in its help), the settings together (the experiment's `Settings`), and what
a run would hold in memory at once (the experiment's `memory_estimate`) against
what this machine has available. A refusal exits with 2 and leaves `--out` as it
was.

`results.json` schema (all numbers are floats unless noted; a metric that could
not be computed, such as the energy discrepancy of a model whose every rollout
failed, or the loss of a diverged model, is `null`):

    {
      "experiment": str,                  # "double-pendulum", "relativity", "wave",
                                          # "springs", "ablation", ...
      "lagrax_version": str,
      "settings": {...},                  # every command-line setting, as given
                                          # (but --debug)
      "training_samples": int,            # steps × batch size, per model trained
                                          # on accelerations
      "models": {
        NAME: {                           # "lnn", "lnn_rollout", "baseline", ...
          "test_l1_acceleration_error": float,
          "train_seconds": float,
          "skipped_steps": int,
          "final_train_loss": float,      # mean over the last tenth of the steps
          ...experiment-specific metrics (see each experiment's docstring)
        }
      },
      "paper": {NAME: {metric: float}}    # the paper's numbers, where it gives them
    }

`lagrax reproduce ablation` writes `runs` (one object per trained configuration,
with `activation`, `init`, `seed`, `status`, `reason` and its metrics) in place of
`models`, and `init_study`; see `lagrax.experiments.ablation`. `lagrax reproduce
chain-pendulum` adds `rollout_geom_mean[BODIES][MODEL]` (with `chaos_floor`) and
`data_efficiency[TRAJECTORIES]`; see `lagrax.experiments.chain_pendulum`.
"""

import argparse
import dataclasses
import logging
import pathlib
import textwrap
import time

from ..experiments import (
    ablation,
    chain_pendulum,
    double_pendulum,
    noisy_pendulum,
    real_double_pendulum,
    relativity,
    springs,
    wave,
)
from . import manifest
from .parsing import (
    check_folder,
    check_memory,
    folder,
    Integer,
    MAX_SEED,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    seed,
    UsageError,
)


EXPERIMENTS = {
    "double-pendulum": (
        double_pendulum,
        "double pendulum: LNN vs black-box baseline, energy discrepancy at t = 100",
    ),
    "relativity": (
        relativity,
        "relativistic particle: LNN vs Hamiltonian networks, canonical or not",
    ),
    "ablation": (
        ablation,
        "training considerations: activations × initializations of the double "
        "pendulum's LNN, and the initialization study",
    ),
    "wave": (
        wave,
        "1D wave: Lagrangian graph network vs message passing, zero-shot on a 4× ring",
    ),
    "springs": (
        springs,
        "spring chain: Lagrangian graph network vs message passing, zero-shot on 4× "
        "the masses",
    ),
    "real-double-pendulum": (
        real_double_pendulum,
        "a measured, motor-driven double pendulum: learned models against the "
        "lab's identified ones, open-loop under the measured torque",
    ),
    "noisy-pendulum": (
        noisy_pendulum,
        "pendulum from noisy angles: acceleration, discrete Euler–Lagrange and "
        "rollout losses over observations × trajectories × noise",
    ),
    "chain-pendulum": (
        chain_pendulum,
        "chain pendulums of 2, 3 and 5 bodies: a constrained Cartesian LNN vs a "
        "DeLaN and a neural ODE in angles, rollout error against the chaos floor",
    ),
}

# The parsing and help of each setting's option; its default is the Settings', and
# an integer's range is added to its help.
OPTIONS = {
    "steps": (
        positive_int,
        "training steps per model (relativity: of the LNN; chain-pendulum: L-BFGS "
        "iterations of the Cartesian model)",
    ),
    "hnn_steps": (
        positive_int,
        "training steps of each Hamiltonian network, at most --steps",
    ),
    "batch_size": (positive_int, "minibatch size"),
    "seed": (seed, "PRNG seed"),
    "width": (positive_int, "hidden units per layer"),
    "train_size": (positive_int, "training states"),
    "ics": (positive_int, "initial conditions of the energy evaluation"),
    "t1": (positive_float, "rollout horizon"),
    "lr": (positive_float, "peak learning rate"),
    "clip": (
        non_negative_float,
        "clip gradients to this global norm (0 turns it off): without it Adam's "
        "steps flip the sign of the learned mass matrix in places and training "
        "stalls",
    ),
    "definiteness": (
        non_negative_float,
        "margin of the LNN's mass-matrix definiteness penalty (0 turns it off; see "
        "lagrax.acceleration_loss): without it some seeds settle on an indefinite "
        "mass matrix",
    ),
    "states": (
        ("reachable", "box"),
        "training and test states: 'box' is the paper's box; 'reachable' keeps the "
        "box states with energy ≤ 29.4, those reachable from rest, where the "
        "evaluation trajectories run",
    ),
    "rollout_steps": (
        non_negative_int,
        "steps of further training of a copy of the LNN on the acceleration loss "
        "+ 100 × the rollout loss, beyond the paper (0 skips it; the documented "
        "results used 300)",
    ),
    "solvers": (
        str,
        "comma-separated solvers of the energy evaluation among tsit5 (the "
        "paper's, for every model; required), variational-midpoint, "
        "gauss-legendre (the LNNs also at dt 0.01, beyond the paper)",
    ),
    "seeds": (positive_int, "runs per configuration, seeds SEED, SEED + 1, ..."),
    "activations": (
        str,
        "comma-separated activations among softplus, tanh, silu, gelu, relu",
    ),
    "inits": (str, "comma-separated initializations among lnn, default"),
    "study_width": (
        non_negative_int,
        "largest width of the initialization study (0 skips it)",
    ),
    "weighting": (
        ("gamma", "none"),
        "sample weights of the loss: 'gamma' is the paper's 1 + γ, 'none' none",
    ),
    "q_scale": (positive_float, "the LNN sees q / q_scale (the paper: 10)"),
    "norm": (
        ("l1", "l2"),
        "training loss: 'l1' the paper's mean absolute error, 'l2' the mean squared "
        "error (evaluated in L1 either way)",
    ),
    "num_nodes": (positive_int, "grid points of the training ring"),
    "num_masses": (positive_int, "masses of the training chain"),
    "periods": (positive_float, "evaluation horizon in periods of the ring"),
    "pulse_width": (positive_float, "width of the test pulse in grid cells"),
    "finish_steps": (
        non_negative_int,
        "iterations of the full-batch L-BFGS finish after Adam (0 skips it)",
    ),
    "finish_size": (positive_int, "training states in the finish's batch"),
    "pretrain_steps": (
        non_negative_int,
        "steps on inverse dynamics (structured) or accelerations (black box) "
        "before the rollouts (0 skips them)",
    ),
    "window": (positive_int, "samples per rollout-training window"),
    "test_data": (
        str,
        "a folder of further measured runs (*.csv, *.csv.gz) to evaluate beside "
        "runs 05 and 11",
    ),
    "rollout_lr": (
        positive_float,
        "initial learning rate of that stage, decaying to 0",
    ),
    "held_out": (positive_int, "held-out trajectories of the evaluation"),
    "observations": (str, "comma-separated observations per trajectory"),
    "trajectories": (str, "comma-separated numbers of training trajectories"),
    "noise": (str, "comma-separated standard deviations of the observation noise"),
    "methods": (str, "comma-separated methods among acceleration, del, rollout"),
    "bodies": (str, "comma-separated chain lengths among 2, 3, 5"),
    "baseline_steps": (
        positive_int,
        "training steps of the DeLaN and the neural ODE in angles",
    ),
    "potential": (
        ("field", "mlp"),
        "the Cartesian model's potential: 'field' a learned uniform force field "
        "per body plus an MLP, 'mlp' an MLP alone",
    ),
    "train_trajectories": (
        positive_int,
        "training trajectories (one chunk of 5 samples each)",
    ),
    "potential_width": (
        positive_int,
        "hidden units per layer of the Cartesian model's potential MLP",
    ),
    "mlp_decay": (
        non_negative_float,
        "weight of the L2 penalty on the last layer of the Cartesian model's "
        "potential MLP (with --potential field; 0 turns it off)",
    ),
    "cartesian_solver": (
        ("yoshida4", "rattle"),
        "the Cartesian model's solver: 'yoshida4' Yoshida4 over Rattle, 'rattle' "
        "Rattle alone (cheaper, too coarse for the benchmark)",
    ),
}


def add_parser(subparsers, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "reproduce",
        parents=[common],
        help="reproduce the paper's experiments (train, evaluate, plot)",
        description=(__doc__ or "").split("\n\n")[0]
        + " Trains on 2 CPU cores in about 10 minutes per experiment by default.",
    )
    sub = parser.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    for name, (module, summary) in EXPERIMENTS.items():
        fields = [f.name for f in dataclasses.fields(module.Settings)]
        p = sub.add_parser(
            name,
            parents=[common],
            help=summary,
            description=as_options(module.__doc__ or "", fields),
            epilog=textwrap.fill(
                f"The options are the fields of {module.__name__}.Settings; "
                f"{module.__name__}.run(settings) runs the experiment from Python."
            ),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        for field in dataclasses.fields(module.Settings):
            _add_setting(p, field)
        p.add_argument(
            "--out",
            type=folder,
            default=pathlib.Path("results") / name,
            help=f"output folder (default results/{name}): checkpoints, results.json, "
            f"plots and the manifest {manifest.MANIFEST}",
        )
        p.add_argument(
            "--fresh",
            action="store_true",
            help="first remove what earlier runs wrote to --out (the files its "
            f"{manifest.MANIFEST} records, where they are still as written; "
            "others are kept, with a warning), to train from scratch or with "
            "other settings",
        )
        p.add_argument(
            "--no-progress", action="store_true", help="hide the progress bars"
        )
        p.set_defaults(run=run, module=module)


def _add_setting(parser: argparse.ArgumentParser, field: dataclasses.Field) -> None:
    kind, text = OPTIONS[field.name]
    option = "--" + field.name.replace("_", "-")
    bounds = f"{kind}; " if isinstance(kind, Integer) else ""
    help = f"{text} ({bounds}default {field.default})"
    if isinstance(kind, tuple):
        parser.add_argument(option, choices=kind, default=field.default, help=help)
    else:
        parser.add_argument(option, type=kind, default=field.default, help=help)


def as_options(text: str, names: list[str]) -> str:
    """`text` with each setting named as `name` written as its option, --name."""
    for name in names:
        text = text.replace(f"`{name}`", "--" + name.replace("_", "-"))
    return text


def run(args) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    module = args.module
    names = [f.name for f in dataclasses.fields(module.Settings)]
    try:
        settings = module.Settings(**{name: getattr(args, name) for name in names})
    except ValueError as e:
        raise UsageError(as_options(str(e), names)) from None
    check_limits(module, settings)
    check_folder(args.out)
    recording = manifest.prepare(
        args.out,
        experiment=args.experiment,
        settings=dataclasses.asdict(settings),
        files=module.files_written(settings),
        fresh=args.fresh,
    )
    _show_training_notes()
    start = time.perf_counter()
    with recording:
        report = module.run(settings, out=args.out, progress=not args.no_progress)
        print()
        print(report.table)
        written = report.save(args.out, settings=_as_given(args))
    print(f"\nwall time {time.perf_counter() - start:.0f} s; wrote", end=" ")
    print(", ".join(str(p) for p in written))
    return 0


def check_limits(module, settings) -> None:
    """A `UsageError` for settings that each pass but would fail a run only once
    it is under way: seeds past what `jax.random.key` takes (`--seed` + `--seeds`
    − 1), or more memory, by `module.memory_estimate`, than this machine has
    available."""
    values = dataclasses.asdict(settings)
    if settings.seed + values.get("seeds", 1) - 1 > MAX_SEED:
        raise UsageError(
            f"--seed {settings.seed} + --seeds {values['seeds']} − 1 is past "
            "2^63 − 1, the largest seed jax.random.key takes"
        )
    needs = []
    for need in module.memory_estimate(settings):
        options = [_option(name, values[name]) for name in need.settings]
        needs.append((options, need.what, need.bytes))
    check_memory(needs)


def _option(name: str, value) -> str:
    """A setting as its option and value: `--t1 1e+15`."""
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return f"--{name.replace('_', '-')} {text}"


def _as_given(args) -> dict:
    """The command-line settings for results.json."""
    return {
        k: (str(v) if isinstance(v, pathlib.Path) else v)
        for k, v in vars(args).items()
        if k not in ("run", "module", "debug")
    }


class _Print(logging.Handler):
    """Prints to the current `sys.stdout` (which tests replace)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), flush=True)


def _show_training_notes() -> None:
    logger = logging.getLogger("lagrax.experiments")
    logger.setLevel(logging.INFO)
    if not any(isinstance(h, _Print) for h in logger.handlers):
        logger.addHandler(_Print())
