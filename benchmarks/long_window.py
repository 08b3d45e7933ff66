"""A long window composed from segments, against windows of the prior's own length.

    python benchmarks/long_window.py --prior PATH --work outputs/cycled_osse [--hours 7]
    python benchmarks/long_window.py --quick                # a tiny end-to-end check

Run after ``benchmarks/trajectory_osse.py``: it takes that run's truth and
hourly observation tables (``--work``). For the ``--hours`` hours from the
start of the cycle's last day, three systems see the same observations:

- **long window**: one window of all the hours (``genda assimilate --states
  L``), composed from the trajectory prior's overlapping ``K``-hour segments,
  every observation at its own hour (:mod:`genda.models.long_window`), cold;
- **cold K-hour windows**: the same hours as consecutive windows of the
  prior's own length, each cold and seeing only its own hours' observations
  (sharing one hour, the later window's kept);
- **filtering cycle**: the trajectory OSSE's analyses of those hours
  (``cycled.zarr``), carried from the start of the run.

Scores per hour on the whole grid (CRPS, ensemble-mean RMSE, spread-skill)
and their means over the hours. Writes ``benchmarks/results/long_window-cpu.json``
(``.md`` beside it).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from _common import RESULTS, machine, print_table
from cycled_osse import VARIABLES, hourly_windows, score_window, truth_archive, write_scores
from genda.assimilation.posterior import PosteriorSettings
from genda.grid import Grid
from genda.models.checkpoint import read_checkpoint
from genda.orchestration.assimilate import assimilate_window
from genda.simulator import SimulatorConfig
from genda.storage import open_archive
from genda.trajectory import trajectory_states
from trajectory_osse import members_of, quick_prior, truth_at, window_table


def scores_of(
    store: Path, hours: list[np.datetime64], truth: xr.Dataset, withheld: dict[Any, Any]
) -> list[dict[str, Any]]:
    grid = Grid.from_dataset(truth)
    return [
        {
            "time": str(when)[:19],
            **score_window(
                members_of(store, when), truth_at(truth, grid, when), grid, withheld[when]
            ),
        }
        for when in hours
    ]


def mean_of(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    return {
        v: {k: float(np.mean([r[v][k] for r in rows])) for k in ("crps", "rmse", "spread_skill")}
        for v in VARIABLES
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prior", help="the trajectory prior of the trajectory OSSE")
    parser.add_argument("--work", type=Path, default=Path("outputs") / "cycled_osse")
    parser.add_argument("--hours", type=int, default=7, help="the long window's hours")
    parser.add_argument(
        "--first", type=int, default=48, help="its first hour, from the start of the truth"
    )
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="16 x 32 x 4, 5 hours, 4 members")
    args = parser.parse_args()
    if args.quick:
        config = SimulatorConfig(nlat=16, nlon=32, layers=4, levels=4)
        args.work.mkdir(parents=True, exist_ok=True)
        truth_path = truth_archive(args.work / "truth.zarr", config, 1.625, 2026)
        args.prior = quick_prior(truth_path, args.work)
        args.hours, args.members, args.steps = 5, 4, 4
    truth_path = args.work / "truth.zarr"
    if args.prior is None or not truth_path.exists():
        parser.error("--prior and a --work of benchmarks/trajectory_osse.py are needed")
    truth = open_archive(truth_path).load()
    states = trajectory_states(_grid_of(args.prior))
    if args.hours <= states:
        parser.error(f"--hours must exceed the prior's {states} hours")
    first = 0 if args.quick else args.first  # default: the last day of a 3-day cycle
    windows = hourly_windows(truth_path, args.work / "obs", first + args.hours)[first:]
    hours = [t for t, *_ in windows]
    withheld = {t: w for t, _, w, _ in windows}
    tables = {t: a for t, a, _, _ in windows}
    settings = PosteriorSettings(steps=args.steps)
    seconds: dict[str, float] = {}
    observations: dict[str, Any] = {"long window": sum(len(tables[t]) for t in hours)}

    long_store = args.work / "long-window.zarr"
    started = time.perf_counter()
    assimilate_window(
        args.prior,
        window_table([tables[t] for t in hours], args.work / "long-window.parquet"),
        hours[0],
        long_store,
        members=args.members,
        settings=settings,
        seed=4,
        progress=False,
        overwrite=True,
        states=args.hours,
    )
    seconds["long window"] = time.perf_counter() - started

    # windows of K hours sharing one hour, the last one ending with the long window
    offsets = list(range(0, args.hours - states + 1, states - 1))
    if offsets[-1] + states < args.hours:
        offsets.append(args.hours - states)
    observations["cold K-hour windows"] = [
        sum(len(tables[t]) for t in hours[offset : offset + states]) for offset in offsets
    ]
    started = time.perf_counter()
    for number, offset in enumerate(offsets):
        span = hours[offset : offset + states]
        assimilate_window(
            args.prior,
            window_table([tables[t] for t in span], args.work / f"short-{number}.parquet"),
            span[0],
            args.work / f"short-{number}.zarr",
            members=args.members,
            settings=settings,
            seed=4,
            progress=False,
            overwrite=True,
        )
    seconds["cold K-hour windows"] = time.perf_counter() - started
    rows: dict[str, list[dict[str, Any]]] = {
        "long window": scores_of(long_store, hours, truth, withheld)
    }
    short_rows = []
    for index, when in enumerate(hours):  # each hour from the latest window that holds it
        holder = max(n for n, offset in enumerate(offsets) if offset <= index)
        short_rows.extend(scores_of(args.work / f"short-{holder}.zarr", [when], truth, withheld))
    rows["cold K-hour windows"] = short_rows
    cycled = args.work / "cycled.zarr"
    if cycled.exists() and set(np.datetime64(t, "ns") for t in hours) <= set(
        xr.open_zarr(cycled).time.values
    ):
        rows["filtering cycle"] = scores_of(cycled, hours, truth, withheld)

    summary = {method: mean_of(series) for method, series in rows.items()}
    table = [
        {"method": method, "field": v, **scores[v]}
        for method, scores in summary.items()
        for v in VARIABLES
    ]
    title = (
        f"a {args.hours}-hour window from a {states}-hour prior ({args.members} members, "
        f"{args.steps} steps), means over its hours; seconds: "
        + ", ".join(f"{m} {s:.0f}" for m, s in seconds.items())
    )
    print_table(title, table)
    if args.quick:
        (args.work / "long_window-quick.json").write_text(
            json.dumps({"summary": summary, "hourly": rows}, indent=1)
        )
        return
    payload = {
        "benchmark": "long_window",
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "settings": {
            "prior": Path(args.prior).name,
            "states": states,
            "hours": args.hours,
            "first": str(hours[0])[:19],
            "members": args.members,
            "steps": args.steps,
        },
        "seconds": seconds,
        "observations": observations,
        "summary": summary,
        "hourly": rows,
    }
    write_scores(RESULTS / "long_window-cpu.json", payload, title, table)


def _grid_of(prior: str) -> Grid:
    return Grid.from_dict(read_checkpoint(prior).config["grid"])


if __name__ == "__main__":
    main()
