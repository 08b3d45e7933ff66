"""Commands that run windows as Prefect flows: ``cycle``, ``serve`` and ``demo``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from genda.cli.group import console, fail
from genda.cli.options import InsecureOption
from genda.cli.render import render_cycle, render_demo


def cycle(
    config: Annotated[Path, typer.Option(help="Cycle configuration (YAML, docs/cycles.md).")],
    progress: Annotated[
        bool, typer.Option(help="Show the sampling's progress (on a terminal only).")
    ] = True,
) -> None:
    """Run an assimilation cycle now: every window of the configuration, as Prefect flows.

    Exits 1 when a window failed (its evaluation included), as the flow ends Failed.
    """
    from genda.orchestration.config import load_cycle_config

    settings = load_cycle_config(config)
    from genda.orchestration.flows import CycleError, assimilation_cycle
    from genda.orchestration.summaries import CycleTable

    failure: CycleError | None = None
    try:
        results = assimilation_cycle(settings, progress=progress)
    except CycleError as error:  # every window ran; the table says which failed
        results, failure = error.results, error
    table = CycleTable.from_results(results)
    title = f"cycle {config.name}"
    if console.is_terminal:
        console.print(render_cycle(title, table))
    else:  # a log or a pipe: markdown, which no console width cuts
        console.print(
            f"{title}\n\n{table.to_markdown()}", soft_wrap=True, markup=False, highlight=False
        )
    console.print(f"store  {settings.store}", soft_wrap=True, highlight=False)
    if failure is not None:
        raise fail(str(failure))


def serve(
    config: Annotated[Path, typer.Option(help="Cycle configuration (YAML, docs/cycles.md).")],
    cron: Annotated[
        str | None, typer.Option(help="Cron schedule, e.g. '0 * * * *' (hourly).")
    ] = None,
    interval: Annotated[
        float | None, typer.Option(help="Or a schedule every INTERVAL seconds.")
    ] = None,
    name: Annotated[str, typer.Option(help="Deployment name.")] = "genda-cycle",
    server_log: Annotated[
        Path | None, typer.Option(help="Output of a Prefect server started here.")
    ] = None,
) -> None:
    """Serve a cycle as a scheduled Prefect deployment: each run takes the next due window."""
    from genda.orchestration.flows import prefect_environment

    prefect_environment()
    from genda.orchestration.serve import serve_cycle

    serve_cycle(config, cron=cron, interval_seconds=interval, name=name, log=server_log)


def demo(
    out: Annotated[Path, typer.Option(help="Directory for the demo's files.")] = Path(
        "outputs/demo"
    ),
    members: Annotated[int, typer.Option(help="Ensemble size.")] = 16,
    steps: Annotated[int, typer.Option(help="Sampler steps.")] = 16,
    workers: Annotated[int, typer.Option(help="Ray actors; 0: in this process.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the truth run and the observations.")] = 2,
    insecure: InsecureOption = False,
    progress: Annotated[
        bool,
        typer.Option(help="Show the simulation's and the sampling's progress (on a terminal)."),
    ] = True,
) -> None:
    """The main job on the embedded default: simulate, observe, assimilate, evaluate."""
    import os

    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")  # the summary below says it all
    from genda.orchestration.flows import prefect_environment

    prefect_environment()
    from genda.orchestration import run_demo

    start = time.perf_counter()
    result = run_demo(
        out,
        members=members,
        steps=steps,
        workers=workers,
        seed=seed,
        insecure=insecure,
        progress=progress,
    )
    wall = time.perf_counter() - start
    for part in render_demo(result, wall):
        console.print(part)


__all__ = ["cycle", "demo", "serve"]
