"""Markdown tables generated from the result files in `docs/results/`.

Each folder `docs/results/NAME/` holds the `results.json` of one run. A run's own
file (written by `lagrax reproduce`) sits beside a `provenance.json`; a result that
only ever existed as prose was transcribed once into a `results.json` of the form
`{"provenance": {...}, "tables": {TABLE: {"columns", "rows", "caption"?}}}`.

A page asks for a table with a line `<!-- results-table: NAME -->` or
`<!-- results-table: NAME#TABLE -->`; `hooks.py` replaces it with the table and one
provenance line. Run `python docs/scripts/results_tables.py NAME[#TABLE]` to print
one (the README's headline table comes from here).

Plain Python and the standard library only: the docs test imports it without mkdocs.
"""

import json
import math
import pathlib
import re
import sys


RESULTS = pathlib.Path(__file__).resolve().parent.parent / "results"
MARKER = re.compile(r"^<!-- results-table: ([\w.-]+)(?:#(\w+))? -->$", re.MULTILINE)


def number(value, spec: str = ".3g") -> str:
    """A cell: strings as they are, numbers short (`3.7e-5`, not `3.7e-05`)."""
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return "—"
    text = format(value, spec) if spec else repr(value)
    return re.sub(r"e([+-])0*(\d)", lambda m: "e" + m[1].replace("+", "") + m[2], text)


def percent(value) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def scientific(value) -> str:
    return "—" if value is None else number(value, ".1e")


def markdown(columns: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(
                f"row {row!r} has {len(row)} cells for {len(columns)} columns"
            )
        lines.append("| " + " | ".join(number(c, "") for c in row) + " |")
    return "\n".join(lines)


def load(name: str) -> tuple[dict, dict]:
    """The results and the provenance record of the run `name`."""
    folder = RESULTS / name
    results = json.loads((folder / "results.json").read_text())
    provenance = results.get("provenance")
    if provenance is None:
        provenance = json.loads((folder / "provenance.json").read_text())
    for field in ("command", "commit", "machine", "date"):
        if not provenance.get(field):
            raise ValueError(f"docs/results/{name}: provenance lacks {field!r}")
    return results, provenance


def provenance_line(name: str, provenance: dict) -> str:
    note = f"; {provenance['note']}" if provenance.get("note") else ""
    return (
        f"*`{provenance['command']}` at commit {provenance['commit']}, "
        f"{provenance['machine']}, {provenance['date']}{note}. "
        f"Source: `docs/results/{name}/` ({provenance['source']}).*"
    )


# Tables of `lagrax reproduce` result files, as the runs wrote them.


def _double_pendulum(results: dict) -> str:
    models, paper = results["models"], results["paper"]
    rows = []
    variants = [
        ("lnn", "", "LNN (adaptive Tsit5, tol 1e-8)"),
        ("lnn", "_variational_midpoint", "LNN (VariationalMidpoint, dt 0.01)"),
        ("lnn", "_gauss_legendre", "LNN (GaussLegendre(stages=2), dt 0.01)"),
        ("lnn_rollout", "", "LNN + rollout loss (Tsit5)"),
        (
            "lnn_rollout",
            "_gauss_legendre",
            "LNN + rollout loss (GaussLegendre(stages=2), dt 0.01)",
        ),
        ("baseline", "", "baseline: neural ODE (Tsit5)"),
    ]
    for model, suffix, label in variants:
        m = models.get(model)
        if m is None or f"energy_discrepancy{suffix}" not in m:
            continue
        first = suffix == ""
        p = paper.get(model, {}) if first else {}
        rows.append(
            [
                label,
                percent(m[f"energy_discrepancy{suffix}"]),
                f"{m[f'failed_rollouts{suffix}']} of {results['settings']['ics']}",
                percent(p["energy_discrepancy"]) if p else "—",
                number(m["test_l1_acceleration_error"]) if first else "",
                number(p["test_l1_acceleration_error"])
                if p
                else ("—" if first else ""),
                scientific(m["test_rollout_error"]) if first else "",
            ]
        )
    columns = [
        "model (solver)",
        "energy discrepancy",
        "failed rollouts",
        "paper",
        "test L1 q̈ error",
        "paper",
        "test rollout error",
    ]
    share = results["training_samples"] / results["paper"]["training_samples"]
    caption = (
        f"{results['settings']['steps']:,} steps × batch "
        f"{results['settings']['batch_size']} = {results['training_samples']:,} "
        f"samples per model, {100 * share:.1f}% of the paper's."
    )
    return markdown(columns, rows) + "\n\n" + caption


_RDP_MODELS = {
    "identified_2.0": "lab's identified model 2.0",
    "identified_1.0": "lab's identified model 1.0",
    "structured": "structured (`MechanicalLagrangian`)",
    "grey_box": "**grey box** (2.0 + learned residual)",
    "black_box": "black box (neural ODE + `B τ`)",
}


def _real_double_pendulum(results: dict) -> str:
    rows = []
    for file, by_model in results["rollout_rms"].items():
        run = "run " + re.sub(r"\D", "", file)
        for model, label in _RDP_MODELS.items():
            if model not in by_model:
                continue
            horizons = by_model[model]
            best = {h: min(v[h] for v in by_model.values()) for h in horizons}
            cells = [
                f"**{number(v)}**" if v == best[h] else number(v)
                for h, v in horizons.items()
            ]
            rows.append(
                [run, label, *cells, number(results["torque_rms"][file][model])]
            )
    horizons = next(iter(results["rollout_rms"].values()))["identified_2.0"]
    columns = ["run", "model", *(f"h = {h} s" for h in horizons), "torque RMS (N·m)"]
    return (
        markdown(columns, rows)
        + "\n\nRMS angle error in rad; best per run and horizon in bold."
    )


def _noisy_pendulum(results: dict) -> str:
    methods = ["acceleration", "del", "rollout"]
    cells = {}
    for run in results["runs"]:
        cells[
            (run["observations"], run["trajectories"], run["noise"], run["method"])
        ] = run
    keys = sorted({k[:3] for k in cells})
    rows = []
    for n, k, noise in keys:
        row = [n, k, number(noise)]
        for metric in ("angle_rms", "energy_rms"):
            values = [cells[(n, k, noise, m)][metric] for m in methods]
            best = min(v for v in values if v is not None)
            row += [f"**{number(v)}**" if v == best else number(v) for v in values]
        rows.append(row)
    columns = [
        "N",
        "K",
        "σ",
        *(f"angle RMS, {m}" for m in methods),
        *(f"energy RMS, {m}" for m in methods),
    ]
    ref = results["reference"]
    return markdown(columns, rows) + (
        "\n\nBest per row in bold; untrained model "
        f"{number(ref['untrained']['angle_rms'])} rad, a pendulum at rest "
        f"{number(ref['at_rest']['angle_rms'])} rad."
    )


def _three(value) -> str:
    return "—" if value is None else f"{value:.3g}"


def _chain_pendulum(results: dict) -> str:
    geom, paper = results["rollout_geom_mean"], results["paper"]
    rows = []
    for bodies in sorted(geom, key=int):
        ours, theirs = geom[bodies], paper["rollout_geom_mean"].get(bodies, {})
        rows.append(
            [bodies]
            + [_three(ours.get(k)) for k in ("cartesian", "angles", "node")]
            + [_three(ours.get("chaos_floor"))]
            + [_three(theirs.get(k)) for k in ("cartesian", "chaos_floor", "delan")]
        )
    main = markdown(
        [
            "bodies",
            "constrained Cartesian LNN",
            "DeLaN in angles",
            "neural ODE in angles",
            "chaos floor",
            "published constrained LNN",
            "published floor",
            "published DeLaN",
        ],
        rows,
    )
    efficiency = results["data_efficiency"]
    published = paper.get("data_efficiency", {})
    sizes = sorted(set(efficiency) | {"800"}, key=int)
    table = markdown(
        ["training chunks (2 bodies)", "constrained Cartesian LNN", "published"],
        [
            [
                size,
                _three(efficiency.get(size, geom.get("2", {}).get("cartesian"))),
                _three(published.get(size)),
            ]
            for size in sizes
        ],
    )
    return (
        f"{main}\n\nGeometric mean over t ∈ [0, 3] of the relative error of the "
        "Cartesian positions and velocities (Finzi et al.'s metric), 100 test "
        f"trajectories.\n\n{table}"
    )


RENDERERS = {
    "chain-pendulum": _chain_pendulum,
    "double-pendulum": _double_pendulum,
    "real-double-pendulum": _real_double_pendulum,
    "noisy-pendulum": _noisy_pendulum,
}


def table(name: str, key: str | None = None) -> str:
    """The Markdown table `key` (or the only or `main` one) of `docs/results/name`."""
    results, provenance = load(name)
    if "tables" in results:
        tables = results["tables"]
        key = key or ("main" if "main" in tables else next(iter(tables)))
        if key not in tables:
            raise KeyError(
                f"docs/results/{name} has no table {key!r}: {sorted(tables)}"
            )
        spec = tables[key]
        body = markdown(spec["columns"], spec["rows"])
        if spec.get("caption"):
            body = f"{body}\n\n{spec['caption'][0].upper()}{spec['caption'][1:]}."
    else:
        if name not in RENDERERS or key is not None:
            raise KeyError(f"no renderer for docs/results/{name}#{key}")
        body = RENDERERS[name](results)
    return f"{body}\n\n{provenance_line(name, provenance)}"


def expand(markdown_text: str) -> str:
    """Replace every results marker in a page by its table."""
    return MARKER.sub(lambda m: table(m[1], m[2]), markdown_text)


def names() -> list[str]:
    return sorted(p.name for p in RESULTS.iterdir() if p.is_dir())


if __name__ == "__main__":
    for arg in sys.argv[1:] or names():
        name, _, key = arg.partition("#")
        print(table(name, key or None), end="\n\n")
