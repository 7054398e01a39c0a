"""Run the examples and store what each prints in `docs/examples/output/NAME.txt`,
which the example pages include. Not run by the docs build (the examples train
models: minutes on a CPU); rerun it when an example changes:

    python docs/scripts/capture_examples.py [NAME ...]

Each output starts with one line saying where and when it was produced.
"""

import datetime
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time


ROOT = pathlib.Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "docs" / "examples" / "output"
ARGS = {"train_double_pendulum": ["--no-progress"]}


def capture(name: str) -> None:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    command = [
        sys.executable,
        str(ROOT / "examples" / f"{name}.py"),
        *ARGS.get(name, []),
    ]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:  # plots land here, not in the repo
        done = subprocess.run(command, cwd=scratch, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{name} failed:\n{done.stderr}")
    header = (
        f"# python examples/{name}.py {' '.join(ARGS.get(name, []))}".rstrip()
        + f" — commit {commit}, {os.cpu_count()} CPU cores ({platform.machine()}),"
        + f" {seconds:.0f} s, {datetime.date.today()}\n"
    )
    (OUTPUT / f"{name}.txt").write_text(header + done.stdout)


if __name__ == "__main__":
    OUTPUT.mkdir(parents=True, exist_ok=True)
    names = sys.argv[1:] or sorted(p.stem for p in (ROOT / "examples").glob("*.py"))
    for name in names:
        capture(name)
