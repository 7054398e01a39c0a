"""`lagrax reproduce EXPERIMENT`: the experiments of Cranmer et al., end to end.

Each experiment trains its models with `lagrax.fit` (checkpointed in the output
folder, so an interrupted run resumes where it stopped), evaluates them with the
paper's protocol, prints a table of ours against the paper's numbers and writes
`results.json` and PNG plots (when matplotlib is installed) to `--out`.

`results.json` schema (all numbers are floats unless noted; a metric that could
not be computed, such as the energy discrepancy of a model whose every rollout
failed, or the loss of a diverged model, is `null`):

    {
      "experiment": str,                  # "double-pendulum" | "relativity"
      "lagrax_version": str,
      "settings": {...},                  # every command-line setting, as given
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
"""

import json
import math
import pathlib
import time

from . import double_pendulum, relativity
from .common import non_negative_int, positive_int, save_figures


EXPERIMENTS = {
    "double-pendulum": double_pendulum,
    "relativity": relativity,
}


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "reproduce",
        help="reproduce the paper's experiments (train, evaluate, plot)",
        description=__doc__.split("\n\n")[0]
        + " Trains on 2 CPU cores in about 10 minutes per experiment by default.",
    )
    sub = parser.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    for name, module in EXPERIMENTS.items():
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__)
        p.add_argument(
            "--steps",
            type=positive_int,
            default=module.DEFAULT_STEPS,
            help=f"training steps per model (default {module.DEFAULT_STEPS})",
        )
        p.add_argument(
            "--batch-size",
            type=positive_int,
            default=module.DEFAULT_BATCH,
            help=f"minibatch size (default {module.DEFAULT_BATCH})",
        )
        p.add_argument("--seed", type=non_negative_int, default=0, help="PRNG seed")
        p.add_argument(
            "--out",
            type=pathlib.Path,
            default=pathlib.Path("results") / name,
            help=f"output folder (default results/{name})",
        )
        p.add_argument(
            "--fresh",
            action="store_true",
            help="ignore checkpoints in --out and train from scratch",
        )
        p.add_argument(
            "--no-progress", action="store_true", help="hide the progress bars"
        )
        module.add_arguments(p)
        p.set_defaults(run=run, parser=p, module=module)


def run(args, parser) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.fresh:
        for checkpoint in args.out.glob("*.ckpt"):
            checkpoint.unlink()
    start = time.perf_counter()
    results, table, figures = args.module.run(args)
    settings = {
        k: (str(v) if isinstance(v, pathlib.Path) else v)
        for k, v in vars(args).items()
        if k not in ("run", "parser", "module")
    }
    from .. import __version__

    record = dict(
        experiment=args.experiment,
        lagrax_version=__version__,
        settings=settings,
        training_samples=args.steps * args.batch_size,
        models=results,
        paper=args.module.PAPER,
    )
    text = json.dumps(_finite_or_none(record), indent=2, allow_nan=False)
    (args.out / "results.json").write_text(text + "\n")
    print()
    print(table)
    written = [args.out / "results.json"] + save_figures(figures, args.out)
    print(f"\nwall time {time.perf_counter() - start:.0f} s; wrote", end=" ")
    print(", ".join(str(p) for p in written))
    return 0


def _finite_or_none(tree):
    """`tree` with every NaN or infinite float replaced by None (JSON has neither)."""
    if isinstance(tree, dict):
        return {k: _finite_or_none(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_finite_or_none(v) for v in tree]
    if isinstance(tree, float) and not math.isfinite(tree):
        return None
    return tree
