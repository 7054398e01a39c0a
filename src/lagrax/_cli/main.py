"""The `lagrax` command: `lagrax simulate`, `lagrax bench` and `lagrax reproduce`."""

import argparse
import sys

from . import bench, reproduce, simulate_cmd


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lagrax",
        description="Lagrangian Neural Networks in JAX: simulate analytic systems, "
        "run the benchmarks, reproduce the paper.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (reproduce, simulate_cmd, bench):
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.run(args, args.parser)


if __name__ == "__main__":
    sys.exit(main())
