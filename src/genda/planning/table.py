"""The planning table of ``docs/strategies.md``: the sizes users run, made by :func:`recommend`.

``genda plan --table`` prints it as markdown; the doc holds the same text
between the markers :data:`BEGIN` and :data:`END`, and a test checks that
they agree. Each row is one field (grid, levels, variables); each GPU column
is :func:`~genda.planning.plan.recommend`'s choice there with its members at
once and time per member.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from genda.planning.model import GIB, GPUS, full_truncation, whitening_bytes
from genda.planning.plan import Plan, cached_cost, recommend
from genda.planning.spec import RunSpec

__all__ = [
    "BEGIN",
    "END",
    "TABLE_GPUS",
    "TABLE_GRIDS",
    "TABLE_LEVELS",
    "TABLE_SETTINGS",
    "TABLE_VARIABLES",
    "TableRow",
    "plan_table",
    "table_header",
    "table_markdown",
    "table_rows",
]

BEGIN = "<!-- genda plan --table: begin -->"
END = "<!-- genda plan --table: end -->"

TABLE_GRIDS: dict[str, tuple[int, int]] = {
    "1°": (192, 384),
    "0.5°": (360, 720),
    "0.25°": (720, 1440),
}
"""Gauss-Legendre grids (a 1° grid of 180 x 360 cannot be pooled 3 times: 192 x 384 can)."""
TABLE_LEVELS: tuple[int, ...] = (50, 100, 150)
TABLE_VARIABLES: tuple[int, ...] = (3, 5)
TABLE_GPUS: tuple[str, ...] = ("a100-40", "h100", "h200")
TABLE_SETTINGS: dict[str, Any] = {
    "coordinates": "grid",
    "guidance": "mmps-jacobian",
    "iterations": 3,
    "steps": 32,
    "observations": 5000,
}
"""The run of the table: the shipped priors' U-Net (base 24, multipliers 1, 2, 2, 2) in grid
coordinates with MMPS and the network's Jacobian (3 GMRES iterations), 32 exponential steps,
5000 observations; ``layer2d`` sees one neighbour each side."""


@dataclass(frozen=True)
class TableRow:
    """One field of the table and its plan on each GPU."""

    resolution: str
    nlat: int
    nlon: int
    levels: int
    variables: int
    plans: tuple[Plan, ...]


def table_rows(
    grids: dict[str, tuple[int, int]] | None = None,
    levels: Sequence[int] = TABLE_LEVELS,
    variables: Sequence[int] = TABLE_VARIABLES,
    gpus: Sequence[str] = TABLE_GPUS,
) -> list[TableRow]:
    """Plan every field on every GPU (traces are shared between GPUs)."""
    rows = []
    for name, (nlat, nlon) in (grids or TABLE_GRIDS).items():
        for count in levels:
            for nvar in variables:
                plans = tuple(
                    recommend(nlat, nlon, count, nvar, gpu=gpu, **TABLE_SETTINGS) for gpu in gpus
                )
                rows.append(TableRow(name, nlat, nlon, count, nvar, plans))
    return rows


def _cell(plan: Plan) -> str:
    if plan.recommended is None:
        return "none fits"
    option = plan.option(plan.recommended)
    assert option is not None
    chunk = f" c={option.layers_per_batch}" if option.layers_per_batch else ""
    return f"{option.strategy}{chunk} ×{option.members_at_once}, {option.seconds_per_member:.2g} s"


def _whitening(row: TableRow) -> str:
    values = []
    for strategy in ("joint3d", "layer2d"):
        spec = RunSpec(row.nlat, row.nlon, row.levels, row.variables, strategy=strategy)
        values.append(whitening_bytes(spec, full_truncation(spec)) / 2**30)
    return " / ".join(f"{v:,.0f}" for v in values)


def table_header(gpus: Sequence[str] = TABLE_GPUS) -> list[str]:
    """The two header lines of the table for ``gpus``."""
    header = [
        "grid",
        "L",
        "V",
        "GiB, 1 member: joint3d / layer2d whole",
        "TFLOP / member: joint3d / layer2d whole",
        *(f"{GPUS[g].name.split(' ')[1]} {GPUS[g].memory_gib:g} GB" for g in gpus),
        "whitened statistics, GiB",
    ]
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]


def table_markdown(rows: Sequence[TableRow], gpus: Sequence[str] = TABLE_GPUS) -> str:
    """The rows as a markdown table (the doc's text between :data:`BEGIN` and :data:`END`)."""
    lines = table_header(gpus)
    for row in rows:
        whole = {
            strategy: cached_cost(
                RunSpec(row.nlat, row.nlon, row.levels, row.variables, strategy, **TABLE_SETTINGS)
            )
            for strategy in ("joint3d", "layer2d")
        }
        memory = " / ".join(f"{c.batch_bytes(1) / GIB:,.1f}" for c in whole.values())
        flops = " / ".join(f"{c.flops_per_member() / 1e12:,.0f}" for c in whole.values())
        cells = [
            f"{row.resolution} {row.nlat}x{row.nlon}",
            str(row.levels),
            str(row.variables),
            memory,
            flops,
            *(_cell(plan) for plan in row.plans),
            _whitening(row),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plan_table(**options: Any) -> str:
    """:func:`table_markdown` of :func:`table_rows` (``options`` as there)."""
    return table_markdown(table_rows(**options), options.get("gpus", TABLE_GPUS))
