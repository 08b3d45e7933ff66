"""What the commands print: Rich renderables built from the library's results.

Each function takes a result and returns what a command hands to
``console.print``, in order; none of them computes or writes anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    import xarray as xr

    from genda.observations.observe import ObservationDraw
    from genda.orchestration.baseline import BaselineSummary
    from genda.orchestration.demo import DemoResult
    from genda.orchestration.summaries import CycleTable, WindowSummary
    from genda.orchestration.train import TrainingRun
    from genda.storage import ArchiveSummary


def facts_table() -> Table:
    """Two borderless columns: a bold name and its value (folded when long)."""
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column(overflow="fold")
    return facts


def render_summary(summary: ArchiveSummary, wall_seconds: float | None = None) -> Group:
    """Rich renderable of an :class:`~genda.storage.ArchiveSummary`: facts, then per-variable stats."""
    facts = facts_table()
    facts.add_row("archive", summary.source)
    facts.add_row("shape", " x ".join(f"{name} {size}" for name, size in summary.sizes.items()))
    if summary.time_range is not None:
        facts.add_row("time", f"{summary.time_range[0]} .. {summary.time_range[1]}")
    if wall_seconds is not None:
        facts.add_row("wall time", f"{wall_seconds:.1f} s")
    stats = Table(show_header=True, header_style="bold")
    for name in ("variable", "units"):
        stats.add_column(name)
    for name in ("min", "mean", "max"):
        stats.add_column(name, justify="right")
    for var in summary.variables:
        stats.add_row(
            var.name, var.units, f"{var.minimum:.4g}", f"{var.mean:.4g}", f"{var.maximum:.4g}"
        )
    return Group(facts, stats)


def render_training(run: TrainingRun) -> Table:
    """``genda train``: the strategy, the data, the losses and where the checkpoint went."""
    r = run.result
    facts = facts_table()
    options = ", ".join(f"{k}={v}" for k, v in run.strategy_options.items())
    facts.add_row("strategy", f"{run.strategy} ({options})" if options else run.strategy)
    _, lev, h, w = run.grid.shape
    facts.add_row("grid", f"{', '.join(run.grid.variables)} x {lev} levels x {h} x {w}")
    split = run.split
    facts.add_row(
        "data",
        f"{split.train.size} training, {split.validation.size} validation fields "
        f"(gap {split.gap_hours:g} h, {split.dropped} dropped)",
    )
    facts.add_row("parameters", f"{r.parameters:,}")
    facts.add_row("steps", f"{r.step} (batch {run.config.batch_size}, device {run.device})")
    facts.add_row("samples/s", f"{r.samples_per_second:.1f}")
    facts.add_row("train loss", "-" if r.train_loss is None else f"{r.train_loss:.4f}")
    start = "" if r.initial_val_loss is None else f" (start {r.initial_val_loss:.4f})"
    facts.add_row("val loss", "-" if r.val_loss is None else f"{r.val_loss:.4f}{start}")
    facts.add_row("wall time", f"{r.wall_seconds:.1f} s")
    facts.add_row("checkpoint", str(r.checkpoint))
    facts.add_row("loss log", f"{r.loss_csv}, {r.loss_plot}")
    return facts


def render_observations(result: ObservationDraw) -> list[RenderableType]:
    """``genda observe``: counts per network and variable, then the tables written."""
    table = Table(title=f"observations at {result.time}", header_style="bold")
    table.add_column("network")
    table.add_column("variables")
    table.add_column("count", justify="right")
    for name, counts in result.counts.items():
        table.add_row(name, ", ".join(counts), str(sum(counts.values())))
    parts: list[RenderableType] = [
        table,
        f"observations  {result.observations_path} ({result.observations})",
    ]
    if result.withheld_path:
        parts.append(f"withheld      {result.withheld_path} ({result.withheld})")
    return parts


def render_window(summary: WindowSummary) -> Table:
    """``genda assimilate``: the store, the members made, the outliers and the fit."""
    table = Table(title=f"{summary.method} ensemble", header_style="bold", show_header=False)
    table.add_row("store", f"{summary.store} (window {summary.time})")
    table.add_row("members", f"{summary.members} ({summary.strategy}, {summary.steps} steps)")
    where = "this process" if not summary.workers else f"{summary.workers} Ray workers"
    if summary.cluster:
        where += f" on {summary.cluster}"
    if summary.written:
        rate = f"{summary.members_per_second:.2f} members/s"
        table.add_row(
            "made now",
            f"{summary.written} in {summary.seconds:.1f} s ({rate}, {where}, "
            f"batch {summary.batch_size})",
        )
    if summary.already_complete:
        table.add_row("already stored", str(summary.already_complete))
    table.add_row("failures retried", str(summary.failures_retried))
    fit, clim = summary.fit, summary.level_mean_fit
    if fit is not None and clim is not None:
        table.add_row("observations", str(summary.observations))
        outliers = ", ".join(f"{k} {n}" for k, n in summary.outliers_by_variable.items())
        table.add_row(
            "outliers",
            f"{summary.outliers}"
            + (f" ({outliers})" if outliers else "")
            + (", kept" if summary.outliers_kept else ", left out" if outliers else ""),
        )
        table.add_row(
            "fit (rms (y - Hx)/sigma)",
            f"{fit.rms_normalised_innovation:.2f} ensemble mean, "
            f"{clim.rms_normalised_innovation:.2f} training mean per level",
        )
        table.add_row("spread at obs / sigma", f"{fit.mean_spread_over_sigma:.2f}")
    return table


def render_baseline(summary: BaselineSummary) -> Table:
    """``genda baseline``: the store, the archive states, the localisation and the fit."""
    table = Table(title=f"{summary.method} baseline", header_style="bold", show_header=False)
    table.add_row("store", summary.store)
    table.add_row("members", str(summary.members))
    table.add_row(
        "archive states",
        f"{summary.states} {'hour-matched' if summary.hour_matched else 'of any hour'}",
    )
    if summary.horizontal_km is not None:
        half_widths = [
            f"{value:g} km" if isinstance(value, int | float) else f"{value} km"
            for value in (summary.horizontal_km, summary.vertical_km)
        ]
        table.add_row("localisation", f"horizontal {half_widths[0]}, vertical {half_widths[1]}")
    table.add_row("time", f"{summary.seconds:.1f} s")
    fit, climatology = summary.fit, summary.climatology_fit
    if fit is not None and climatology is not None:
        table.add_row("observations", str(summary.observations))
        table.add_row(
            "fit (rms (y - Hx)/sigma)",
            f"{fit.rms_normalised_innovation:.2f} ensemble mean, "
            f"{climatology.rms_normalised_innovation:.2f} climatology",
        )
    return table


def render_query(da: xr.DataArray, var: str, stat: str, out: Path | None) -> Table:
    """``genda query``: the selection's dimensions, windows, range and the file written."""
    values = da.values
    table = Table(
        title=f"{var} {stat} at {float(da['altitude']):g} km",
        header_style="bold",
        show_header=False,
    )
    table.add_row("dims", ", ".join(f"{d} {n}" for d, n in da.sizes.items()))
    if "time" in da.dims:
        times = [str(t)[:19] for t in da["time"].values]
        table.add_row("windows", f"{times[0]} .. {times[-1]}" if times else "none")
    if values.size:
        units = da.attrs.get("units", "")
        table.add_row(
            "min / mean / max",
            f"{np.nanmin(values):.4g} / {np.nanmean(values):.4g} / {np.nanmax(values):.4g} {units}",
        )
    if out is not None:
        table.add_row("written", str(out))
    return table


def render_evaluation(
    metrics: Mapping[str, Any], name: str, out: Path, level_km: float | None = None
) -> list[RenderableType]:
    """``genda evaluate``: the score tables, the members against model data, the files.

    ``level_km``: the ``--level`` asked for; when the maps show another level
    (the nearest one), a line says so.
    """
    from genda.evaluation.plots import level_label
    from genda.evaluation.scores import format_table

    parts: list[RenderableType] = [
        format_table(metrics["ensemble"], title=f"{name} against the truth")
    ]
    for baseline, scores in metrics["baselines"].items():
        parts.append(format_table(scores, title=f"baseline {baseline}"))
    if metrics.get("withheld"):
        parts.append(format_table(metrics["withheld"], title="at the withheld observations"))
    fidelity = metrics.get("posterior_fidelity")
    if fidelity:
        table = Table(title="members against model data", header_style="bold")
        start = fidelity["worst_power_error_from_degree"]
        for column in ("variable", f"max |power ratio - 1|, l >= {start}", "vertical corr. error"):
            table.add_column(column, justify="left" if column == "variable" else "right")
        for variable, error in fidelity["worst_power_error"].items():
            correlation = fidelity["vertical_correlation_error"][variable]
            table.add_row(variable, f"{error:.2f}", f"{correlation:.3f}")
        parts.append(table)
    parts.append(f"metrics  {out / 'metrics.json'}")
    shown = float(metrics["level_km"])
    if level_km is not None and abs(level_km - shown) > 1e-6:
        parts.append(
            f"maps     at {level_label(shown)} km: --level {level_km:g} km snapped to the "
            "nearest level"
        )
    parts.extend(f"figure   {path}" for path in metrics["plots"].values())
    return parts


def render_cycle(title: str, table: CycleTable) -> Table:
    """``genda cycle`` on a terminal: one row per window, what was made, the scores or the error.

    Where the output is not a terminal the command prints
    :meth:`~genda.orchestration.summaries.CycleTable.to_markdown` instead, which
    no console width cuts.
    """
    shown = Table(title=title, header_style="bold")
    for name in table.columns:
        numeric = name not in ("window", "members made", "result")
        shown.add_column(name, justify="right" if numeric else "left", overflow="fold")
    for row, failed in zip(table.rows, table.failed, strict=True):
        cells = [escape(cell) for cell in row]
        if failed:
            cells[-1] = f"[red]{cells[-1]}[/red]"
        shown.add_row(*cells)
    return shown


def render_demo(result: DemoResult, wall_seconds: float) -> list[RenderableType]:
    """``genda demo``: the window, its scores against the truth and where the files are."""
    from genda.orchestration.summaries import WindowSummary

    window = result.window
    made, evaluation = WindowSummary.from_dict(window["ensemble"]), window["evaluation"]
    facts = facts_table()
    facts.add_row("window", f"{window['time']} ({window['observations']} observations)")
    facts.add_row(
        "ensemble",
        f"{made.members} members, {made.method}, {made.steps} steps, "
        f"{made.strategy} prior, {made.workers or 'no'} Ray workers",
    )
    if made.fit is not None and made.level_mean_fit is not None:
        fit = made.fit.rms_normalised_innovation
        reference = made.level_mean_fit.rms_normalised_innovation
        facts.add_row(
            "fit", f"rms (y - Hx)/sigma {fit:.2f} (training mean per level {reference:.2f})"
        )
    facts.add_row("wall time", f"{wall_seconds:.0f} s")
    scores = Table(title="against the truth (global)", header_style="bold")
    for name in ("variable", "ensemble", "CRPS", "RMSE", "spread", "spread/skill"):
        scores.add_column(name, justify="left" if name in ("variable", "ensemble") else "right")
    rows = [("genda", evaluation["scores"]), *evaluation["baselines"].items()]
    for variable, units in evaluation["units"].items():
        for label, table in rows:
            s = table[variable]
            scores.add_row(
                f"{variable} ({units})",
                label,
                f"{s['crps']:.2f}",
                f"{s['rmse']:.2f}",
                f"{s['spread']:.2f}",
                f"{s['spread_skill']:.2f}",
            )
    report = Path(evaluation["metrics_path"]).parent
    files = (
        f"truth         {result.truth}\n"
        f"observations  {result.observations}"
        + (f" (withheld: {result.withheld})" if result.withheld else "")
        + f"\nensemble      {result.store}   (xarray.open_zarr; genda query)\n"
        f"baseline      {result.baseline}\n"
        f"report        {report} (metrics.json and the plots)"
    )
    return [facts, scores, files]


__all__ = [
    "facts_table",
    "render_baseline",
    "render_cycle",
    "render_demo",
    "render_evaluation",
    "render_observations",
    "render_query",
    "render_summary",
    "render_training",
    "render_window",
]
