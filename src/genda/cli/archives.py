"""Commands that make or read model data: ``simulate``, ``summary``, ``observe``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from genda.cli.group import console
from genda.cli.options import IconGridOption, IconTargetOption
from genda.cli.render import render_observations, render_summary
from genda.storage import open_archive, summarize


def simulate(
    out: Annotated[Path, typer.Option("--out", help="Archive to write (Zarr v3 directory).")],
    days: Annotated[float, typer.Option(help="Days of output after the spin-up.")],
    seed: Annotated[int, typer.Option(help="Seed of the stochastic forcing.")],
    nlat: Annotated[int, typer.Option(help="Gaussian latitudes.")] = 32,
    nlon: Annotated[int, typer.Option(help="Longitudes.")] = 64,
    levels: Annotated[int, typer.Option(help="Output altitude levels (80-115 km).")] = 8,
    layers: Annotated[
        int | None, typer.Option(help="Model layers (default: as many as --levels).")
    ] = None,
    spinup_days: Annotated[float, typer.Option(help="Model days before the first output.")] = 30.0,
    every_hours: Annotated[float, typer.Option(help="Output interval in hours.")] = 1.0,
    device: Annotated[str, typer.Option(help="torch device of the model.")] = "cpu",
    chunk_hours: Annotated[int, typer.Option(help="Snapshots per chunk along time.")] = 24,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an existing genda archive (nothing else).")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm a very large output.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Run the built-in MLT model and write a training archive."""
    from genda.orchestration import simulate_archive
    from genda.simulator import SimulatorConfig

    history = (
        f"genda simulate --out {out} --days {days} --seed {seed} --nlat {nlat} --nlon {nlon} "
        f"--levels {levels} --layers {layers or levels} --spinup-days {spinup_days} "
        f"--every-hours {every_hours} --device {device}"
    )
    start = time.perf_counter()
    config = SimulatorConfig(
        nlat=nlat, nlon=nlon, levels=levels, layers=layers or levels, device=device
    )
    path = simulate_archive(
        out,
        config,
        days=days,
        seed=seed,
        spinup_days=spinup_days,
        every_hours=every_hours,
        overwrite=overwrite,
        progress=progress,
        chunk_hours=chunk_hours,
        history=history,
        yes=yes,
    )
    wall = time.perf_counter() - start
    console.print(
        render_summary(summarize(open_archive(path), source=str(path)), wall_seconds=wall)
    )


def summary(
    path: Annotated[
        Path, typer.Argument(help="Archive or model output (Zarr directory or NetCDF file).")
    ],
    icon_grid: IconGridOption = None,
    icon_target: IconTargetOption = None,
) -> None:
    """Print shape, time range and per-variable min/mean/max of an archive."""
    from genda.storage.icon_native import icon_options

    start = time.perf_counter()
    ds = open_archive(path, icon=icon_options(icon_grid, icon_target))
    table = render_summary(
        summarize(ds, source=str(path)), wall_seconds=time.perf_counter() - start
    )
    console.print(table)


def observe(
    truth: Annotated[Path, typer.Option(help="Archive (Zarr or NetCDF) to observe.")],
    time_: Annotated[str, typer.Option("--time", help="Time of the archive, ISO (UTC).")],
    out: Annotated[Path, typer.Option(help="Observation table to write (.parquet, .csv, .nc).")],
    network: Annotated[
        str, typer.Option(help="Comma-separated networks: radars, lidars, limb (mls, saber).")
    ] = "radars,lidars,limb",
    seed: Annotated[int, typer.Option(help="Seed of the observation errors.")] = 0,
    withhold: Annotated[
        str, typer.Option(help="Comma-separated stations kept out, written to <out>-withheld.")
    ] = "",
    overwrite: Annotated[
        bool, typer.Option(help="Replace existing observation tables at --out.")
    ] = False,
    lidars_at_night: Annotated[
        bool,
        typer.Option(help="Lidars observe only with the Sun 6 degrees below their horizon."),
    ] = False,
) -> None:
    """Draw synthetic observations (with their errors) from a truth archive."""
    from genda.observations import observe_to_file

    stations = [name.strip() for name in withhold.split(",") if name.strip()]
    result = observe_to_file(
        truth,
        time_,
        network,
        out,
        seed,
        withhold=stations,
        overwrite=overwrite,
        lidars_at_night=lidars_at_night,
    )
    for part in render_observations(result):
        console.print(part)


__all__ = ["observe", "simulate", "summary"]
