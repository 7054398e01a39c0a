"""The `lagrax` command: `lagrax simulate`, `lagrax bench` and `lagrax reproduce`.

A failure prints one line, `lagrax: error: ...`, and exits with 2 for a bad
argument (found before anything is written), 1 for anything that fails at run time
(130 when interrupted); `--debug` adds the traceback.
"""

import argparse
import sys
import traceback

from . import bench, reproduce, simulate_cmd
from .parsing import ArgumentParser, one_line, UsageError


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="lagrax",
        description="Lagrangian Neural Networks in JAX: simulate analytic systems, "
        "run the benchmarks, reproduce the paper.",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of a failure"
    )
    # Every command takes --debug too; SUPPRESS keeps a command's default from
    # overwriting a `lagrax --debug COMMAND`.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the traceback of a failure",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (reproduce, simulate_cmd, bench):
        module.add_parser(subparsers, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as error:
        print(f"lagrax: error: {one_line(error)}", file=sys.stderr)
        return 2
    try:
        return args.run(args)
    except KeyboardInterrupt:
        if args.debug:
            traceback.print_exc()
        print("lagrax: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        code = 2 if isinstance(error, UsageError) else 1
        if args.debug:
            traceback.print_exc()
        hint = "" if args.debug or code == 2 else " (--debug shows the traceback)"
        print(f"lagrax: error: {one_line(error)}{hint}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
