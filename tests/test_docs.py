"""The documentation site: every public name has an API entry, every results table
renders, and (where the `docs` extra is installed) `mkdocs build --strict` passes.

Reads source files only; imports neither lagrax nor mkdocs for the first checks."""

import ast
import importlib.util
import pathlib
import re
import subprocess
import sys

import pytest


ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
API_ENTRY = re.compile(r"^:::\s+(lagrax(?:\.[A-Za-z_]\w*)+)\s*$", re.MULTILINE)


def _reexports(init: pathlib.Path, prefix: str) -> set[str]:
    """`prefix.Name` for every `from ... import Name as Name` and every name in
    `__all__` of a package's `__init__.py`, submodules left out."""
    tree = ast.parse(init.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            for alias in node.names:
                if alias.asname == alias.name and node.module is not None:
                    names.add(alias.name)  # `from . import x as x` is a module
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            names |= set(ast.literal_eval(node.value))
    return {f"{prefix}.{name}" for name in names}


def _public_names() -> set[str]:
    package = ROOT / "src" / "lagrax"
    return _reexports(package / "__init__.py", "lagrax") | _reexports(
        package / "systems" / "__init__.py", "lagrax.systems"
    )


def _api_entries() -> set[str]:
    return {
        match
        for page in (DOCS / "api").glob("*.md")
        for match in API_ENTRY.findall(page.read_text())
    }


def test_public_names_found():
    # The parser must see the names it is meant to check, or the next test is void.
    names = _public_names()
    for name in (
        "lagrax.acceleration",
        "lagrax.MLPLagrangian",
        "lagrax.fit",
        "lagrax.systems.DoublePendulum",
        "lagrax.RESULTS",
    ):
        assert name in names
    assert "lagrax.systems" not in names and "lagrax.importlib" not in names


def test_every_public_name_in_api_reference():
    missing = _public_names() - _api_entries()
    assert not missing, (
        "public names without a `::: NAME` entry in docs/api/*.md: "
        + ", ".join(sorted(missing))
    )


def test_api_entries_exist():
    # An entry for a name that is gone fails the strict build; say so here too.
    public = _public_names()
    stale = {
        entry
        for entry in _api_entries()
        if entry not in public
        and not entry.startswith("lagrax.experiments")
        and entry != "lagrax.systems"
    }
    assert not stale, f"docs/api entries that are not public names: {sorted(stale)}"


def _results_tables():
    spec = importlib.util.spec_from_file_location(
        "results_tables", DOCS / "scripts" / "results_tables.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_tables_render():
    tables = _results_tables()
    used = set()
    for page in DOCS.rglob("*.md"):
        for name, _ in tables.MARKER.findall(page.read_text()):
            used.add(name)
        rendered = tables.expand(page.read_text())
        assert "<!-- results-table" not in rendered, page
    assert used, "no page asks for a results table"
    assert set(tables.names()) == used, "results folders no page shows (or the reverse)"
    headline = tables.table("double-pendulum")
    assert "| LNN (adaptive Tsit5, tol 1e-8) | 0.33% | 0 of 40 | 0.43% |" in headline
    assert "at commit" in headline.splitlines()[-1]


def test_results_marker_for_missing_file_fails():
    tables = _results_tables()
    with pytest.raises(OSError):
        tables.expand("<!-- results-table: no-such-run -->")


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    if (
        importlib.util.find_spec("mkdocs") is None
        or importlib.util.find_spec("mkdocstrings_handlers.python") is None
    ):
        pytest.skip('the docs tools are not installed (pip install ".[docs]")')
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--site-dir",
            str(tmp_path / "site"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert (tmp_path / "site" / "api" / "solvers" / "index.html").exists()
