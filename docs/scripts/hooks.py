"""mkdocs hook: results tables generated from `docs/results/` at build time."""

import importlib.util
import pathlib

from mkdocs.exceptions import PluginError


_spec = importlib.util.spec_from_file_location(
    "results_tables", pathlib.Path(__file__).with_name("results_tables.py")
)
results_tables = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(results_tables)


def on_page_markdown(markdown, page, config, files):
    try:
        return results_tables.expand(markdown)
    except (OSError, KeyError, ValueError) as error:
        raise PluginError(f"{page.file.src_path}: results table: {error}") from error
