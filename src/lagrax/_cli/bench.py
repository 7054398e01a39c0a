"""`lagrax bench`: run the benchmark scripts."""

import argparse
import pathlib
import runpy
import sys

from .parsing import UsageError


BENCHMARKS = (
    "acceleration",
    "train_step",
    "solvers",
    "graph_scaling",
    "long_horizon",
    "mechanical",
    "measured_losses",
    "rollout_training",
    "linear_solves",
)


def benchmark_dir() -> pathlib.Path | None:
    """The benchmark scripts: shipped in the wheel, or in a source checkout."""
    package = pathlib.Path(__file__).resolve().parent.parent
    for candidate in (package / "_benchmarks", package.parent.parent / "benchmarks"):
        if (candidate / "_common.py").exists():
            return candidate
    return None


def add_parser(subparsers, common) -> None:
    parser = subparsers.add_parser(
        "bench",
        parents=[common],
        help="run the benchmarks (" + ", ".join(BENCHMARKS) + ")",
        description="Run lagrax's benchmark scripts and print their tables; "
        "`--quick` runs each in a short smoke version, e.g. "
        "`lagrax bench solvers --quick`.",
    )
    parser.add_argument("name", choices=[*BENCHMARKS, "all"], help="which benchmark")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument(
        "options",
        nargs=argparse.REMAINDER,
        help="everything after the name goes to the script as it is, e.g. "
        "`lagrax bench solvers --repeats 5 --out results/bench` (see "
        "`lagrax bench NAME --help`)",
    )
    parser.set_defaults(run=run)


def run(args) -> int:
    folder = benchmark_dir()
    if folder is None:
        raise UsageError(
            "the benchmark scripts are not installed with this copy of lagrax"
        )
    if args.name == "all":
        names = tuple(n for n in BENCHMARKS if (folder / f"{n}.py").exists())
    else:
        names = (args.name,)
    sys.path.insert(0, str(folder))
    try:
        for name in names:
            script = folder / f"{name}.py"
            if not script.exists():
                raise UsageError(f"benchmark {name!r} is not available in {folder}")
            print(f"== lagrax bench {name} ==", flush=True)
            argv = sys.argv
            quick = ["--quick"] if args.quick else []
            sys.argv = [str(script), *quick, *args.options]
            try:
                runpy.run_path(str(script), run_name="__main__")
            except SystemExit as exit:  # the scripts end with sys.exit(main())
                if exit.code not in (0, None):
                    return exit.code if isinstance(exit.code, int) else 1
            finally:
                sys.argv = argv
    finally:
        sys.path.remove(str(folder))
    return 0
