"""``genda plan``: does a posterior member fit on a GPU, how many at once, which strategy.

    genda plan --grid 180x360 --levels 100 --variables 5 --gpu-memory 80
    genda plan --grid 192x384 --levels 100 --variables 5 --gpu a100-40 --guidance mmps-jacobian \\
        --coordinates grid --json
    genda plan --table

The command parses options, calls :func:`genda.planning.plan.recommend` (or
:func:`genda.planning.table.plan_table`) and prints the plan: the cost of a
member traced through the real network and sampler, not run
(:mod:`genda.planning`).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Group
from rich.table import Table

from genda.cli.group import console
from genda.cli.options import parse_channel_mult, parse_grid_size
from genda.cli.render import facts_table
from genda.planning.model import DEFAULT_FRACTION, GPUS
from genda.planning.plan import Plan, recommend
from genda.planning.spec import GUIDANCES, PlanError
from genda.planning.table import plan_table


def plan(
    grid: Annotated[
        str | None, typer.Option(help="Horizontal grid NLATxNLON (Gauss-Legendre), e.g. 180x360.")
    ] = None,
    levels: Annotated[int | None, typer.Option(help="Altitude levels.")] = None,
    variables: Annotated[int, typer.Option(help="Variables (u, v, T, w, gph in order).")] = 3,
    gpu: Annotated[
        str, typer.Option(help=f"GPU whose bf16 peak sets the time: {', '.join(GPUS)}.")
    ] = "h100",
    gpu_memory: Annotated[
        float | None, typer.Option(help="GPU memory in GiB (default: the --gpu's).")
    ] = None,
    strategy: Annotated[str, typer.Option(help="joint3d, layer2d or auto.")] = "auto",
    width: Annotated[int, typer.Option(help="The U-Net's base channels.")] = 24,
    channel_mult: Annotated[
        str, typer.Option(help="The U-Net's channel multipliers, finest first.")
    ] = "1,2,2,2",
    guidance: Annotated[str, typer.Option(help=f"{', '.join(GUIDANCES)}.")] = "mmps-prior",
    iterations: Annotated[int, typer.Option(help="MMPS solver iterations.")] = 3,
    steps: Annotated[int, typer.Option(help="Sampler steps.")] = 32,
    coordinates: Annotated[str, typer.Option(help="whitened (as shipped) or grid.")] = "whitened",
    window: Annotated[int, typer.Option(help="layer2d's neighbouring layers each side.")] = 1,
    layers_per_batch: Annotated[
        int | None, typer.Option(help="layer2d's layer samples per network call (default: chosen).")
    ] = None,
    observations: Annotated[int, typer.Option(help="Observations in the window.")] = 5000,
    fraction: Annotated[
        float, typer.Option(help="Fraction of the bf16 peak assumed for the time.")
    ] = DEFAULT_FRACTION,
    json_: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    table: Annotated[
        bool, typer.Option("--table", help="Print the planning table of docs/strategies.md.")
    ] = False,
) -> None:
    """Plan a posterior run: memory and time per member, members at once, the strategy to run."""
    if table:
        console.print(plan_table(), markup=False, highlight=False, soft_wrap=True)
        return
    if grid is None or levels is None:
        raise PlanError("give --grid and --levels (or --table)")
    nlat, nlon = parse_grid_size(grid)
    result = recommend(
        nlat,
        nlon,
        levels,
        variables,
        gpu=gpu,
        gpu_memory=gpu_memory,
        strategy=strategy,
        fraction=fraction,
        layers_per_batch=layers_per_batch,
        base_channels=width,
        channel_mult=tuple(parse_channel_mult(channel_mult)),
        guidance=guidance,
        iterations=iterations,
        steps=steps,
        coordinates=coordinates,
        window=window,
        observations=observations,
    )
    if json_:
        console.print_json(json.dumps(result.to_dict()))
        return
    console.print(render_plan(result))


def render_plan(result: Plan) -> Group:
    """The plan: facts, one row per strategy, the recommendation and why."""
    spec = result.spec
    facts = facts_table()
    facts.add_row(
        "field",
        f"{spec.variables} variables x {spec.levels} levels x {spec.nlat} x {spec.nlon}",
    )
    facts.add_row(
        "run",
        f"{spec.guidance}, {spec.steps} {spec.sampler} steps "
        f"({spec.calls_per_member()} denoiser calls), {spec.coordinates} coordinates, "
        f"U-Net base {spec.base_channels} x {list(spec.channel_mult)}",
    )
    facts.add_row(
        "GPU",
        f"{result.gpu.name}: {result.usable_gib:.1f} GiB usable, time at "
        f"{result.fraction:g} x {result.gpu.bf16_tflops:g} TFLOP/s (bf16 dense)",
    )
    options = Table(show_header=True, header_style="bold", title="per strategy")
    for name in (
        "strategy",
        "fits",
        "members at once",
        "layers per call",
        "GiB, 1 member",
        "GiB per more",
        "weights GiB",
        "TFLOP / member",
        "s / member",
    ):
        options.add_column(name, justify="left" if name == "strategy" else "right")
    for o in result.options:
        options.add_row(
            o.strategy,
            "yes" if o.fits else "no",
            str(o.members_at_once),
            "all" if o.layers_per_batch is None else str(o.layers_per_batch),
            f"{o.one_member_gib:,.2f}",
            f"{o.per_member_gib:,.2f}",
            f"{o.weights_gib:,.3f}",
            f"{o.tflop_per_member:,.1f}",
            f"{o.seconds_per_member:.3g}",
        )
    verdict = facts_table()
    verdict.add_row("recommended", result.recommended or "none fits")
    verdict.add_row("why", result.reason)
    return Group(facts, options, verdict)


__all__ = ["plan", "render_plan"]
