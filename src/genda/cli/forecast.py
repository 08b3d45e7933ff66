"""``genda forecast``: an ensemble forecast from an analysis window with a trajectory prior."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from genda.assimilation.posterior import PosteriorSettings
from genda.cli.group import console
from genda.cli.options import InsecureOption, RayAddressOption

_DEFAULTS = PosteriorSettings()


def forecast(
    checkpoint: Annotated[str, typer.Option(help="A trajectory prior (genda train --states K).")],
    analysis: Annotated[Path, typer.Option(help="The ensemble store of the analyses.")],
    time_: Annotated[
        str, typer.Option("--time", help="The analysis window to start from, ISO (UTC).")
    ],
    hours: Annotated[
        int,
        typer.Option(
            min=1, help="Lead hours to forecast (whole segments of K - 1 hours: rounded up)."
        ),
    ],
    out: Annotated[Path, typer.Option(help="The forecast's own ensemble store (Zarr v3).")],
    steps: Annotated[int, typer.Option(help="Sampler steps.")] = _DEFAULTS.steps,
    batch_size: Annotated[int, typer.Option(help="Members per denoiser batch.")] = (
        _DEFAULTS.batch_size
    ),
    seed: Annotated[int, typer.Option(help="Experiment seed (hashed with each segment).")] = 0,
    device: Annotated[str, typer.Option(help="torch device: cpu or cuda.")] = "cpu",
    threads: Annotated[
        int,
        typer.Option(
            help="torch threads of CPU sampling: per Ray actor with --workers, else of this process."
        ),
    ] = 1,
    workers: Annotated[
        int,
        typer.Option(
            min=0, help="Ray actors sampling every segment (one per GPU with cuda); 0: here."
        ),
    ] = 0,
    ray_address: RayAddressOption = None,
    insecure: InsecureOption = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing forecast store.")] = False,
    progress: Annotated[bool, typer.Option(help="Show the sampling's progress.")] = True,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm a very large store.")] = False,
) -> None:
    """Forecast the hours after an analysis: member m carries on from member m (docs/cycles.md)."""
    from genda.orchestration.forecast import forecast as run_forecast

    settings = PosteriorSettings(steps=steps, batch_size=batch_size)
    summary = run_forecast(
        checkpoint,
        analysis,
        time_,
        hours,
        out,
        settings=settings,
        seed=seed,
        device=device,
        threads=threads,
        workers=workers,
        ray_address=ray_address,
        insecure=insecure,
        overwrite=overwrite,
        progress=progress,
        yes=yes,
    )
    table = Table(title="ensemble forecast", header_style="bold", show_header=False)
    table.add_row("store", summary.store)
    table.add_row("from", f"{summary.start} of {summary.analysis}")
    table.add_row("hours", f"{summary.hours[0]} .. {summary.hours[-1]} ({len(summary.hours)})")
    table.add_row("members", f"{summary.members} ({summary.written} made now)")
    table.add_row("seconds", f"{summary.seconds:.1f}")
    console.print(table)
