"""Commands that make a scientist's products of an analysed window: ``plot`` and ``export``.

Neither needs a truth: they read the ensemble store (and, for ``plot``, the
window's observation diagnostics or an observation file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from genda.cli.group import console, fail


def _lat_lon(text: str) -> tuple[float, float]:
    """``"51.3,13.0"`` -> ``(51.3, 13.0)``; an error naming ``--at`` otherwise."""
    parts = text.split(",")
    try:
        lat, lon = (float(p) for p in parts)
    except ValueError:
        raise fail(f"--at takes LAT,LON in degrees (e.g. 69.3,16.0), got {text!r}") from None
    return lat, lon


def plot(
    store: Annotated[Path, typer.Argument(help="Ensemble store (Zarr).")],
    time_: Annotated[str, typer.Option("--time", help="The window (ISO time, UTC).")],
    level: Annotated[
        float,
        typer.Option(help="Log-pressure altitude (km) of the maps; the nearest level is shown."),
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for the PNGs (default: <store>-plots beside the store)."),
    ] = None,
    stations: Annotated[
        Path | None,
        typer.Option(
            help="Observation file (CSV, Parquet, NetCDF): profiles at its stations; the fit "
            "to its rows in the window when the store has no diagnostics for it."
        ),
    ] = None,
    at: Annotated[
        list[str] | None,
        typer.Option(help="LAT,LON (degrees) of a profile; repeat for several."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace PNGs of the same names.")] = False,
) -> None:
    """Maps (mean, spread, coastlines), station profiles and the fit to the observations."""
    from genda.evaluation.analysis_products import plot_analysis

    points = [_lat_lon(text) for text in at or []]
    drawn = plot_analysis(
        store, time_, level, out, stations=stations, at=points, overwrite=overwrite
    )
    console.print(
        f"window {drawn.time} of {drawn.store}, level {drawn.level_km:.1f} km:",
        soft_wrap=True,
        highlight=False,
    )
    for name, path in drawn.maps.items():
        console.print(f"  map of {name}: {path}", soft_wrap=True, highlight=False)
    if drawn.profiles is not None:
        console.print(f"  station profiles: {drawn.profiles}", soft_wrap=True, highlight=False)
    if drawn.fit is not None:
        console.print(
            f"  observation fit ({drawn.fit_source}): {drawn.fit}", soft_wrap=True, highlight=False
        )
    for note in drawn.notes:
        console.print(f"  {note}", soft_wrap=True, highlight=False)


def export(
    store: Annotated[Path, typer.Argument(help="Ensemble store (Zarr).")],
    time_: Annotated[str, typer.Option("--time", help="The window (ISO time, UTC).")],
    out: Annotated[Path, typer.Option(help="NetCDF file to write (.nc).")],
    members: Annotated[
        bool, typer.Option(help="Include every member (N times the size of the mean).")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out file.")] = False,
) -> None:
    """A window's ensemble mean and spread (and members) as CF NetCDF, with its provenance."""
    from genda.storage.ensemble_export import export_window
    from genda.times import as_datetime64, iso

    path = export_window(store, time_, out, members=members, overwrite=overwrite)
    size = path.stat().st_size / 2**20
    console.print(
        f"wrote {path} ({size:.1f} MiB): mean and spread{' and members' if members else ''} "
        f"of window {iso(as_datetime64(time_))} of {store}, with its provenance",
        soft_wrap=True,
        highlight=False,
    )


__all__ = ["export", "plot"]
