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
    """Ruff (lint and format) and basedpyright, as pre-commit runs them. basedpyright,
    not pyright: its wheel carries Node, where pyright downloads it at first run."""
    session.install("ruff", "basedpyright", ".[test,plot]")
    session.run("ruff", "check", "src", "tests", "benchmarks", "examples", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests")
    # The settings (standard mode, src and tests) are in pyproject.toml. The session's
    # own interpreter, named: left to itself basedpyright may resolve imports against
    # another environment on the machine and pass where a clean one fails.
    python = pathlib.Path(session.bin) / "python"
    session.run("basedpyright", "--pythonpath", str(python))


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


# The lowest versions pyproject.toml allows, and the tests that exercise what they
# provide (mechanics, every solver, the adjoints, training): `nox -s minimum` checks
# the floors are true. Raise a floor here and in pyproject.toml together.
MINIMUM = [
    "jax==0.6.2",
    "jaxlib==0.6.2",
    "equinox==0.13.0",
    "diffrax==0.7.2",
    "optimistix==0.1.0",
    "lineax==0.0.8",
    "optax==0.2.5",
    "jaxtyping==0.2.36",
    "beartype==0.19.0",
    "tqdm==4.66.0",
    "numpy==1.26.4",
]
MINIMUM_TESTS = [
    "tests/test_mechanics.py",
    "tests/test_constraints.py",
    "tests/test_constrained_solvers.py",
    "tests/test_solvers.py",
    "tests/test_adjoint.py",
    "tests/test_simulate.py",
    "tests/test_failures.py",
    "tests/test_train_losses.py",
    "tests/test_train_fit.py",
]


@nox.session
def minimum(session):
    """The suite's core on the lowest declared dependency versions."""
    session.install(".[test]", *MINIMUM)
    session.run("python", "-m", "pytest", *(session.posargs or MINIMUM_TESTS))
