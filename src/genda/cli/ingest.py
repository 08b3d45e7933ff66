"""``genda ingest``: instrument files to a validated observation table.

    genda ingest mls MLS-Aura_L2GP-Temperature_*.he5 --out mls.parquet --grid default
    genda ingest radar-netcdf collm_*.nc --out radar.parquet --heights archive.zarr
    genda ingest radar-netcdf collm_*.nc --out radar.parquet --heights icon_ml.nc \
        --icon-grid icon_grid_0012_R02B04_G.nc

The command parses options, calls :func:`genda.observations.readers.ingest.ingest_files`
and prints the read summary (rows read, kept and skipped by reason, per file)
and where the heights came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table

from genda.cli.group import console
from genda.cli.options import IconGridOption, IconTargetOption
from genda.cli.render import facts_table
from genda.grid import Grid
from genda.observations.readers import READERS, SKIP_REASONS, ReadSummary
from genda.observations.readers.common import InstrumentFileError
from genda.observations.readers.ingest import IngestResult, ingest_files

_FORMATS_HELP = "; ".join(f"{name}: {reader.description}" for name, reader in READERS.items())


def ingest(
    format_: Annotated[
        str, typer.Argument(metavar="FORMAT", help=f"Format of the files. {_FORMATS_HELP}.")
    ],
    files: Annotated[list[Path], typer.Argument(metavar="FILE...", help="Instrument files.")],
    out: Annotated[
        Path, typer.Option("--out", help="Observation table to write (.parquet, .csv, .nc).")
    ],
    heights: Annotated[
        Path | None,
        typer.Option(
            help="Archive whose level heights place radar and lidar heights on the log-pressure "
            "altitude; without it, an approximation (US Standard Atmosphere 1976)."
        ),
    ] = None,
    icon_grid: IconGridOption = None,
    icon_target: IconTargetOption = None,
    grid: Annotated[
        str | None,
        typer.Option(
            help="Archive or prior (checkpoint directory, default, default-layer2d): rows "
            "outside its altitudes are left out and the rest validated against it."
        ),
    ] = None,
    start: Annotated[
        str | None, typer.Option(help="Keep rows from this time on, ISO (UTC).")
    ] = None,
    end: Annotated[str | None, typer.Option(help="Keep rows up to this time, ISO (UTC).")] = None,
    skip_refused: Annotated[
        bool, typer.Option(help="Go on without files that cannot be read (listed).")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an existing observation table at --out.")
    ] = False,
) -> None:
    """Read instrument files (radars, lidars, MLS, SABER) into one observation table."""
    from genda.storage.icon_native import icon_options

    try:
        result = ingest_files(
            format_,
            files,
            out,
            heights=heights,
            icon=icon_options(icon_grid, icon_target),
            grid=None if grid is None else _grid_of(grid),
            start=start,
            end=end,
            skip_refused=skip_refused,
            overwrite=overwrite,
        )
    except InstrumentFileError as error:
        if isinstance(error.summary, ReadSummary):
            console.print(render_read_summary(error.summary, why_refused=False))
        raise
    for part in render_ingest(result):
        console.print(part)


def _grid_of(text: str) -> Grid:
    """The grid of a prior (a checkpoint directory or shipped name) or of an archive."""
    from genda.models.checkpoint import SHIPPED_CHECKPOINTS, read_checkpoint
    from genda.ownership import written_kind

    if text in SHIPPED_CHECKPOINTS or written_kind(text) == "checkpoint":
        return Grid.from_dict(read_checkpoint(text).config["grid"])
    from genda.storage import open_archive

    return Grid.from_dataset(open_archive(text))


def render_read_summary(summary: ReadSummary, why_refused: bool = True) -> Group:
    """Rows read, kept and skipped (by reason) per file, a total, then why files were refused.

    ``why_refused``: list the reasons after the table (an error that lists them follows otherwise).
    """
    table = Table(title=f"{summary.format} files", header_style="bold")
    table.add_column("file", overflow="fold")
    table.add_column("read", justify="right")
    table.add_column("kept", justify="right")
    table.add_column("skipped", overflow="fold")
    for entry in summary.files:
        name = escape(Path(entry.path).name)
        if entry.refused:
            table.add_row(name, "", "", "[red]refused[/red]")
        else:
            table.add_row(name, str(entry.rows_read), str(entry.rows_kept), _reasons(entry.skipped))
    if len(summary.files) > 1:
        table.add_row(
            "total",
            str(summary.rows_read),
            str(summary.rows_kept),
            _reasons(summary.skipped),
            style="bold",
        )
    refused = [f"[red]refused[/red] {escape(entry.refused)}" for entry in summary.refused]
    return Group(table, *(refused if why_refused else []))


def _reasons(skipped: dict[str, int]) -> str:
    """``"fill value 1, status 7"``: the rows skipped by reason, in the order of the checks."""
    return ", ".join(
        f"{reason} {skipped[reason]}" for reason in SKIP_REASONS if skipped.get(reason)
    )


def render_ingest(result: IngestResult) -> list[RenderableType]:
    """``genda ingest``: the read summary, the vertical coordinate and the table written."""
    facts = facts_table()
    if result.vertical == "log-pressure":
        facts.add_row("vertical", "log-pressure altitude from the instrument's pressure")
    elif result.heights_approximate:
        facts.add_row(
            "[bold yellow]heights APPROXIMATE[/bold yellow]",
            f"[bold yellow]{escape(result.heights_source or '')}[/bold yellow]",
        )
        facts.add_row(
            "", "give --heights ARCHIVE to place them with a model's heights of the levels"
        )
    else:
        facts.add_row("heights", escape(result.heights_source or ""))
    if result.grid_altitudes is not None:
        low, high = result.grid_altitudes
        facts.add_row("grid", f"altitudes {low:g}-{high:g} km")
    else:
        facts.add_row("grid", "none given: altitudes not checked against a grid")
    facts.add_row("written", f"{escape(str(result.out))} ({result.rows} observations)")
    return [render_read_summary(result.summary), facts]


__all__ = ["ingest", "render_ingest", "render_read_summary"]
