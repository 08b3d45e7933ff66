"""``genda enkf-cycle``: the cycled EnKF of the built-in model over hourly windows (twin experiments)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from genda.cli.group import console


def enkf_cycle(
    archive: Annotated[
        Path, typer.Option(help="Truth archive written by `genda simulate`: the model and grid.")
    ],
    obs: Annotated[
        str,
        typer.Option(help="Observation file per window, e.g. 'obs/{time:%Y%m%dT%H}.parquet'."),
    ],
    start: Annotated[str, typer.Option(help="The first window's time, ISO (UTC).")],
    hours: Annotated[int, typer.Option(help="Hours of windows to cycle through.")],
    out: Annotated[Path, typer.Option(help="Ensemble store to write (Zarr v3).")],
    members: Annotated[int, typer.Option(help="Ensemble size.")] = 32,
    every_hours: Annotated[float, typer.Option(help="Hours between windows.")] = 1.0,
    horizontal_km: Annotated[
        float, typer.Option(help="Gaspari-Cohn half-width of the gain in the horizontal (km).")
    ] = 1500.0,
    vertical_km: Annotated[
        float, typer.Option(help="Gaspari-Cohn half-width in altitude (km).")
    ] = 30.0,
    rtps: Annotated[
        float, typer.Option(help="Relaxation to the prior spread, 0 (none) to 1.")
    ] = 0.5,
    spinup_days: Annotated[
        float, typer.Option(help="Model days of the climatological run before its first member.")
    ] = 30.0,
    seed: Annotated[int, typer.Option(help="Seed of the members' forcing and perturbations.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing store.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Cycle the built-in model's EnKF through windows: the classical anchor of a twin experiment.

    Members of the built-in model, each with its own stochastic forcing, are
    forecast from window to window and analysed with a localised
    perturbed-observation EnKF and RTPS (docs/baselines.md); every analysis is
    written to the store as `genda assimilate` writes its windows.
    """
    from genda.assimilation.baselines import Localization
    from genda.assimilation.cycled_enkf import EnkfSettings
    from genda.orchestration.enkf_cycle import enkf_cycle_files

    started = time.perf_counter()
    settings = EnkfSettings(
        members=members,
        localization=Localization(horizontal_km, vertical_km),
        rtps=rtps,
        seed=seed,
    )
    reports = enkf_cycle_files(
        archive,
        obs,
        start,
        hours,
        out,
        settings,
        every_hours=every_hours,
        spinup_days=spinup_days,
        overwrite=overwrite,
        progress=progress,
    )
    table = Table(title=f"cycled EnKF -> {out} ({time.perf_counter() - started:.1f} s)")
    for column in ("window", "obs", "fit fc", "fit an", "spread fc", "spread an"):
        table.add_column(column, justify="left" if column == "window" else "right")
    for when, r in reports:
        table.add_row(
            str(when)[:16],
            str(r.observations),
            f"{r.prior_rmse:.2f}",
            f"{r.posterior_rmse:.2f}",
            f"{r.prior_spread:.2f}",
            f"{r.posterior_spread:.2f}",
        )
    console.print(table)
    console.print(
        "fc: forecast, an: analysis; fit: rms of the ensemble mean's H x less the "
        "observations; spread: rms of the members' standard deviation at the observations"
    )
