"""Developer tasks; each session wraps the same command a user would type."""

import pathlib

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
    for script in sorted(pathlib.Path("benchmarks").glob("[!_]*.py")):
        session.run("python", str(script), *session.posargs)


@nox.session
def examples(session):
    session.install(".[plot]")
    session.run("python", "examples/double_pendulum_energy.py", "--t1", "10")
    session.run("python", "examples/train_double_pendulum.py", "--steps", "500")


@nox.session
def docs(session):
    """Build the documentation site as CI checks it; `-- serve` to preview it."""
    session.install(".[docs]")
    if session.posargs[:1] == ["serve"]:
        session.run("mkdocs", "serve")
    else:
        session.run("mkdocs", "build", "--strict", *session.posargs)
