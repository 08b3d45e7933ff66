"""Every benchmark's result for one machine in one file, and a summary table.

    python benchmarks/summary.py [--machine cpu|gpu-NVIDIA-H100-...]

Reads ``benchmarks/results/<benchmark>-<machine>.json`` for each benchmark of
:data:`HEADLINES` (``make bench`` runs them all first), writes
``benchmarks/results/<machine>.json`` (``{"machine", "benchmarks": {name:
result}, "missing": [...]}``) and ``<machine>.md`` with a few headline
columns per benchmark, and prints the tables. A benchmark that has not been
run on that machine is listed as missing rather than failing the summary.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import RESULTS, machine_tag, print_table

HEADLINES: dict[str, tuple[str, ...]] = {
    "simulator": ("grid", "ms_per_step", "days_per_wall_s"),
    "training": ("strategy", "grid", "unet", "samples_per_s", "peak_memory_mib"),
    "sampling": ("strategy", "grid", "members_per_s", "peak_memory_mib"),
    "posterior_gaussian": ("method", "mean_error_rms", "variance_ratio_field", "seconds"),
    "osse": ("method", "members", "seconds", "obs_fit", "u_crps", "v_crps", "T_crps", "T_ssr"),
    "distributed": ("actors", "members_per_min", "scaling_efficiency", "peak_memory_mib"),
    "strategies": (
        "grid",
        "levels",
        "variant",
        "s_per_member",
        "mib_per_member",
        "crps_norm",
        "ssr",
        "vcorr_error",
        "spectrum_error",
    ),
    "cost": ("measurement", "reference", "batch", "seconds", "ratio", "target", "meets"),
}
"""Benchmark -> the columns of its rows shown in the summary (``make bench`` order)."""


def headline_rows(result: dict[str, Any], columns: tuple[str, ...]) -> list[dict[str, Any]]:
    """The ``columns`` of each row of ``result`` (``-`` where a row lacks one)."""
    return [{c: row.get(c, "-") for c in columns} for row in result["rows"]]


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown(tables: dict[str, list[dict[str, Any]]], measured: dict[str, str]) -> str:
    lines: list[str] = []
    for name, rows in tables.items():
        lines += [f"## {name} ({measured[name]})", ""]
        columns = list(rows[0])
        lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(_cell(r[c]) for c in columns) + " |" for r in rows]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machine", default=machine_tag(), help="results tag (default: this one)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()

    found: dict[str, Any] = {}
    missing = []
    for name in HEADLINES:
        path = args.results / f"{name}-{args.machine}.json"
        if path.exists():
            found[name] = json.loads(path.read_text())
        else:
            missing.append(name)
    if not found:
        raise SystemExit(f"no results for machine {args.machine!r} in {args.results}")
    tables = {name: headline_rows(found[name], HEADLINES[name]) for name in found}
    measured = {name: str(found[name].get("measured", "?")) for name in found}
    first = next(iter(found.values()))
    payload = {
        "machine": args.machine,
        "description": first.get("machine"),
        "collected": datetime.now(UTC).isoformat(timespec="seconds"),
        "benchmarks": found,
        "missing": missing,
    }
    out = args.results / f"{args.machine}.json"
    out.write_text(json.dumps(payload, indent=2) + "\n")
    text = f"# Benchmarks on {args.machine}\n\n{markdown(tables, measured)}"
    if missing:
        text += f"\nNot run on this machine: {', '.join(missing)}.\n"
    (args.results / f"{args.machine}.md").write_text(text)
    for name, rows in tables.items():
        print_table(f"{name} ({measured[name]})", rows)
    if missing:
        print(f"not run on {args.machine}: {', '.join(missing)}")
    print(f"wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
