"""Commands that read an ensemble store: ``query``, ``validate`` and ``evaluate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from genda.cli.group import console, fail
from genda.cli.render import render_evaluation, render_query


def query(
    store: Annotated[Path, typer.Argument(help="Ensemble store (Zarr).")],
    var: Annotated[str, typer.Option(help="Variable: u, v or T.")],
    alt: Annotated[float, typer.Option(help="Altitude (km); the nearest level is used.")],
    time_: Annotated[
        str | None, typer.Option("--time", help="One window (ISO); default: every window.")
    ] = None,
    stat: Annotated[str, typer.Option(help="mean, std, q05, q50, q95, or members.")] = "mean",
    out: Annotated[
        Path | None, typer.Option(help="Write the result to .csv or .nc; else print a summary.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out file.")] = False,
) -> None:
    """One variable of an ensemble store at one level: a statistic or the members."""
    from genda.ownership import check_file_replaceable
    from genda.storage import query as query_store
    from genda.storage.ensemble_export import to_file

    if out is not None:
        check_file_replaceable(out, overwrite)
    da = query_store(store, var, alt, time=time_, stat=stat)  # type: ignore[arg-type]
    if out is not None:
        to_file(da, out)
    console.print(render_query(da, var, stat, out))


def validate_command(
    store: Annotated[Path, typer.Argument(help="Ensemble store (Zarr).")],
    repair: Annotated[
        bool,
        typer.Option(
            help="Remove undecodable chunk files and clear the complete flags of damaged "
            "members, so that a rerun of their windows regenerates them."
        ),
    ] = False,
) -> None:
    """Check an ensemble store (every member flagged complete, every statistic); exit 1 on problems."""
    from genda.storage import EnsembleStore

    ensemble = EnsembleStore.open(store)
    check = ensemble.validate()
    if check.ok:
        count = len(ensemble.windows())
        console.print(
            f"{store}: no problems ({count} window{'s' if count != 1 else ''} checked)",
            soft_wrap=True,
            highlight=False,
        )
        return
    for problem in check.problems:
        console.print(f"problem: {problem}", soft_wrap=True, highlight=False)
    if not repair:
        hint = (
            "; 'genda validate --repair' makes a rerun regenerate them" if check.repairable else ""
        )
        raise fail(f"{store} has {len(check.problems)} problems{hint}")
    done = ensemble.repair(check)
    for file in done.removed:
        console.print(f"removed: {file}", soft_wrap=True, highlight=False)
    for window, members in done.unflagged.items():
        console.print(
            f"a rerun of window {window} (same settings) regenerates members {list(members)}",
            soft_wrap=True,
            highlight=False,
        )
    for window in done.unfinalised:
        if window not in done.unflagged:
            console.print(
                f"a rerun of window {window} recomputes its statistics",
                soft_wrap=True,
                highlight=False,
            )
    remaining = ensemble.validate()
    for problem in remaining.problems:
        console.print(f"remaining: {problem}", soft_wrap=True, highlight=False)
    if not remaining.ok:
        raise fail(f"{store} keeps {len(remaining.problems)} problems that a repair cannot fix")
    console.print(f"{store}: repaired", soft_wrap=True, highlight=False)


def evaluate(
    ensemble: Annotated[Path, typer.Option(help="Ensemble store (Zarr) to verify.")],
    truth: Annotated[Path, typer.Option(help="Truth archive or model output.")],
    out: Annotated[Path, typer.Option(help="Directory for metrics.json and the plots.")],
    obs: Annotated[
        Path | None, typer.Option(help="Assimilated observations (marked on the maps).")
    ] = None,
    withheld: Annotated[
        Path | None, typer.Option(help="Withheld observations, scored at their points.")
    ] = None,
    baseline: Annotated[
        list[str] | None,
        typer.Option(help="NAME=STORE of a baseline ensemble; repeat for several."),
    ] = None,
    level: Annotated[
        float | None,
        typer.Option(
            help="Altitude (km) of the maps: the nearest level is shown, and named "
            "(default: the middle level)."
        ),
    ] = None,
    time_: Annotated[
        str | None, typer.Option("--time", help="Time to verify when the store has several.")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an earlier report at --out (nothing else).")
    ] = False,
) -> None:
    """Score an ensemble against the truth: CRPS, RMSE, spread, spread-skill, rank histograms."""
    from genda.evaluation.report import evaluate_paths

    baselines: dict[str, str] = {}
    for item in baseline or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise fail(f"--baseline takes NAME=STORE, got {item!r}")
        baselines[name] = path
    metrics = evaluate_paths(
        ensemble,
        truth,
        out,
        time=time_,
        obs_path=obs,
        withheld_path=withheld,
        baseline_paths=baselines,
        level_km=level,
        overwrite=overwrite,
    )
    for part in render_evaluation(metrics, ensemble.name, out, level):
        console.print(part)


__all__ = ["evaluate", "query", "validate_command"]
