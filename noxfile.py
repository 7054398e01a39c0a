"""Developer tasks; each session wraps the same command a user would type."""

import nox


nox.options.sessions = ["lint", "tests"]


@nox.session
def tests(session):
    session.install(".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session):
    session.install("ruff", "pyright", ".")
    session.run("ruff", "check", "src", "tests", "benchmarks", "examples", "noxfile.py")
    session.run("pyright", "src")


@nox.session
def benchmarks(session):
    """Full benchmark runs; add `-- --quick` for a smoke run."""
    session.install(".[bench]")
    for script in ("acceleration", "train_step", "solvers"):
        session.run("python", f"benchmarks/{script}.py", *session.posargs)


@nox.session
def examples(session):
    session.install(".[plot]")
    session.run("python", "examples/double_pendulum_energy.py", "--t1", "10")
    session.run("python", "examples/train_double_pendulum.py", "--steps", "500")
