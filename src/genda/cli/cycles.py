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
) -> None:
    """Run an assimilation cycle now: every window of the configuration, as Prefect flows."""
    from genda.orchestration.config import load_cycle_config

    settings = load_cycle_config(config)
    from genda.orchestration.flows import assimilation_cycle

    results = assimilation_cycle(settings)
    console.print(render_cycle(f"cycle {config.name}", results))
    console.print(f"store  {settings.store}")
    failed = sum("error" in result for result in results)
    if failed:
        raise fail(f"{failed} of {len(results)} windows failed; rerun to resume them")


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
) -> None:
    """The main job on the embedded default: simulate, observe, assimilate, evaluate."""
    import os

    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")  # the summary below says it all
    from genda.orchestration.flows import prefect_environment

    prefect_environment()
    from genda.orchestration import run_demo

    start = time.perf_counter()
    result = run_demo(
        out, members=members, steps=steps, workers=workers, seed=seed, insecure=insecure
    )
    wall = time.perf_counter() - start
    for part in render_demo(result, wall):
        console.print(part)


__all__ = ["cycle", "demo", "serve"]
