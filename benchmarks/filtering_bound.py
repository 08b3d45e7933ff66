"""How much can any filter gain over independent windows on the cycled OSSE's network?

    python benchmarks/filtering_bound.py [--members 16 32] [--days 3]
    python benchmarks/filtering_bound.py --quick          # a tiny end-to-end check

The cycled OSSE (``benchmarks/trajectory_osse.py``) asks a filtering cycle for
0.7 times the CRPS of independent windows. This benchmark measures what the
built-in model's own filter reaches on the same truth and observations, where
its forecast model is perfect up to the stochastic forcing, so that genda's
ratio can be read against what the network allows:

- **enkf-cycled-K**: the model EnKF carried from hour to hour
  (:class:`genda.assimilation.cycled_enkf.ModelEnsemble`), ``K`` members;
- **enkf-cold-K**: the same analysis of each scored window from a fresh
  climatological ensemble: states of the run that makes the EnKF's initial
  ensemble, a day apart, at the window's time of day
  (:func:`climatological_states`); independent windows of the classical system;
- **perfect-past**: members started from the truth's exact model state
  ``lead`` hours before the valid time, each with its own realisation of the
  stochastic forcing (the truth's own is not given to them), with no
  observation at all. At a lead of 1 h, valid at genda's analysis hours, it is
  what a filter that knew the truth's model state an hour earlier would
  forecast: a floor for any hourly filter's CRPS before its analysis. A
  second set, from four starts through the first full day, gives its CRPS
  by lead up to a day (how fast the truth becomes unpredictable).

The localisation and RTPS of every EnKF (cycled and cold, each ``K``) are
chosen on a day of another truth (seed 7, as ``cycled_osse.py --tune``), which
is then not scored; the ensemble sizes run in parallel processes. Scores are
those of the cycled OSSE (area-weighted CRPS, ensemble-mean RMSE, spread-skill
per variable, pooled over its first full day and last day, at genda's analysis
hours: the ends of its 4-hour windows, every 3 h).

Writes ``benchmarks/results/filtering_bound-cpu.json`` (``.md`` beside it).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from tqdm import tqdm

from _common import RESULTS, machine, print_table
from cycled_osse import (
    TUNE_SEED,
    VARIABLES,
    WITHHELD,
    cycle_windows,
    hourly_windows,
    pooled,
    score_window,
    truth_archive,
    write_scores,
)
from genda.assimilation.baselines import Localization
from genda.assimilation.cycled_enkf import EnkfSettings, ModelEnsemble, set_clock
from genda.atomic import write_file
from genda.grid import Grid
from genda.orchestration.enkf_cycle import model_config_of
from genda.orchestration.simulate import spin_up
from genda.simulator import Simulator, SimulatorConfig
from genda.storage import open_archive

ROOT = Path(__file__).resolve().parents[1]
HOUR = np.timedelta64(3600, "s")
SPINUP_DAYS = 30.0
HORIZONTAL_KM = (1000.0, 1500.0, 2500.0)
CYCLED_RTPS = (0.3, 0.6)
COLD_RTPS = (0.0, 0.5)
LEADS = (1, 3, 6, 12, 24)
PERFECT_PAST_MEMBERS = 16
EVERY = 3  # genda's windows end every 3 h in the cycled OSSE


def climatological_states(
    config: SimulatorConfig,
    first: np.datetime64,
    offsets: list[int],
    members: int,
    seed: int,
    spinup_days: float = SPINUP_DAYS,
) -> dict[int, list[torch.Tensor]]:
    """Model states of one run (seed ``seed``), ``members`` per hour-of-day offset.

    Offset 0 gives exactly the members of :meth:`ModelEnsemble.climatological` at
    ``first`` with the same seed and its default ``spacing_hours`` of 24 (spin-up,
    ``first``'s time of day, then a state every 24 h); offset ``o`` gives, for
    member ``k``, the state ``o`` hours after member ``k - 1``'s (after the
    alignment for ``k = 0``), so every set is in the phase of the tides at
    ``first + o`` hours.
    """
    run = Simulator(config, seed=seed)
    spin_up(run, spinup_days, progress=False)
    day = np.timedelta64(86400, "s")
    behind = (np.datetime64(first, "s") - np.datetime64(run.time, "s")) % day
    run.advance(float(behind / np.timedelta64(1, "s")))
    targets = sorted(
        (24 * (k + 1) if o == 0 else 24 * k + o, o) for k in range(members) for o in offsets
    )
    states: dict[int, list[torch.Tensor]] = {o: [] for o in offsets}
    now = 0
    for hours, offset in tqdm(targets, desc="climatological states", leave=False):
        run.advance((hours - now) * 3600.0)
        now = hours
        states[offset].append(run.state.clone())
    return states


def cycled(
    config: SimulatorConfig,
    windows: list,
    initial: list[torch.Tensor],
    settings: EnkfSettings,
    truth: xr.Dataset,
    scored: set[str],
) -> tuple[list[dict[str, Any]], float]:
    """The model EnKF through every window, as ``genda enkf-cycle`` without its store;
    the scores of the windows at ``scored`` and the seconds per window."""
    grid = Grid.from_dataset(truth)
    ensemble = ModelEnsemble.from_states(config, initial, windows[0][0], settings.seed)
    rng = np.random.default_rng([settings.seed, 7919])  # as genda enkf-cycle
    rows = []
    started = time.perf_counter()
    for when, assimilated, withheld, _ in tqdm(windows, desc="cycled EnKF", leave=False):
        ensemble.advance_to(when)
        ensemble.analyse(assimilated, settings, rng)
        if str(when)[:19] in scored:
            rows.append(score(ensemble.fields(), when, truth, grid, withheld))
    return rows, (time.perf_counter() - started) / len(windows)


def cold(
    config: SimulatorConfig,
    windows: list,
    states: dict[int, list[torch.Tensor]],
    settings: EnkfSettings,
    truth: xr.Dataset,
    scored: set[str],
) -> list[dict[str, Any]]:
    """One analysis of each scored window from the climatological states of its hour of day."""
    grid = Grid.from_dataset(truth)
    first = windows[0][0]
    rng = np.random.default_rng([settings.seed, 7919])
    ensemble = ModelEnsemble.from_states(config, states[0], first, settings.seed)
    rows = []
    for when, assimilated, withheld, _ in windows:
        if str(when)[:19] not in scored:
            continue
        offset = int((when - first) / HOUR) % 24
        for member, state in zip(ensemble.members, states[offset], strict=True):
            member.state = state.clone()  # no forecast follows: the forcing's state is moot
            set_clock(member, when)
        ensemble.analyse(assimilated, settings, rng)
        rows.append(score(ensemble.fields(), when, truth, grid, withheld))
    return rows


def score(
    fields: np.ndarray, when: np.datetime64, truth: xr.Dataset, grid: Grid, withheld: Any
) -> dict[str, Any]:
    target = grid.tensor_from_dataset(truth.sel(time=when), dtype=torch.float64).numpy()
    return {"time": str(when)[:19], **score_window(fields, target, grid, withheld)}


def scores_of(row: dict[str, Any]) -> dict[str, Any]:
    """A perfect-past row as :func:`cycled_osse.pooled` reads rows: its time and scores."""
    return {k: v for k, v in row.items() if k not in ("start", "lead")}


def perfect_past(
    truth_path: Path,
    windows: list,
    plan: dict[int, tuple[int, ...]],
    members: int,
    truth: xr.Dataset,
) -> list[dict[str, Any]]:
    """Scores of members started from the truth's own model state at each start of
    ``plan`` (hours after the first window), at each of its leads, as rows with
    ``time`` (valid), ``start`` and ``lead``; each member forces with its own seed.

    The truth is run again from its archive's seed and spin-up
    (:func:`genda.orchestration.simulate.simulate_archive`'s hourly output); every
    start's output is checked against the archive.
    """
    grid = Grid.from_dataset(truth)
    attrs = open_archive(truth_path).attrs
    config = model_config_of(truth_path)
    windows_at = {int((t - windows[0][0]) / HOUR): (t, w) for t, _, w, _ in windows}
    run = Simulator(config, seed=int(attrs["seed"]))
    spin_up(run, float(attrs["spinup_days"]), progress=False)
    rows = []
    hour = -1  # the archive's first snapshot is an hour after the spin-up
    ensemble = ModelEnsemble(
        [Simulator(config, seed=int(attrs["seed"]) + 1000 + k) for k in range(members)]
    )
    for start in tqdm(sorted(plan), desc="perfect-past forecasts", leave=False):
        while hour < start:
            run.advance(3600.0)
            hour += 1
        when = windows_at[hour][0]
        archived = grid.tensor_from_dataset(truth.sel(time=when), dtype=torch.float32).numpy()
        if not np.allclose(run.snapshot().cpu().numpy(), archived, atol=1e-3):
            raise RuntimeError(f"the truth run does not reproduce the archive at {when}")
        for member in ensemble.members:
            member.state = run.state.clone()
            set_clock(member, when)
        for lead in sorted(plan[start]):
            valid, withheld = windows_at[start + lead]
            ensemble.advance_to(valid)
            row = score(ensemble.fields(), valid, truth, grid, withheld)
            rows.append({**row, "start": str(when)[:19], "lead": lead})
    return rows


def on_edge(choice: dict[str, Any], grid_rtps: tuple[float, ...]) -> dict[str, bool]:
    """Whether ``choice`` lies at an end of a tuning dimension of three or more values."""
    return {
        name: len(values) >= 3 and choice[name] in (values[0], values[-1])
        for name, values in (("horizontal_km", HORIZONTAL_KM), ("rtps", grid_rtps))
    }


def tune(
    config: SimulatorConfig, work: Path, members: int, states: dict[int, list[torch.Tensor]]
) -> dict[str, dict[str, Any]]:
    """Localisation and RTPS of the cycled and the cold EnKF of ``members`` members,
    by the CRPS of the second half of a day of another truth, summed relative to the best."""
    truth_path = truth_archive(work / "tune-truth.zarr", config, 1.0, TUNE_SEED)
    truth = open_archive(truth_path).load()
    windows = hourly_windows(truth_path, work / "tune-obs", 24)
    scored = {str(t)[:19] for t, *_ in windows[12:]}
    cold_scored = {str(t)[:19] for t, *_ in windows[::EVERY]}  # cold: no spin-up to skip
    chosen: dict[str, dict[str, Any]] = {}
    for kind, grid_rtps in (("cycled", CYCLED_RTPS), ("cold", COLD_RTPS)):
        results = []
        for horizontal in HORIZONTAL_KM:
            for rtps in grid_rtps:
                settings = EnkfSettings(
                    members=members, localization=Localization(horizontal, 30.0), rtps=rtps
                )
                if kind == "cycled":
                    rows, _ = cycled(config, windows, states[0], settings, truth, scored)
                else:
                    rows = cold(config, windows, states, settings, truth, cold_scored)
                span = pooled(rows, {r["time"] for r in rows})
                crps = {v: span[v]["crps"] for v in VARIABLES}
                results.append({"horizontal_km": horizontal, "rtps": rtps, "crps": crps})
                print(kind, members, horizontal, rtps, crps)
        best = {v: min(r["crps"][v] for r in results) for v in VARIABLES}
        winner = min(results, key=lambda r: sum(r["crps"][v] / best[v] for v in VARIABLES))
        chosen[kind] = {
            "horizontal_km": winner["horizontal_km"],
            "rtps": winner["rtps"],
            # a choice at the edge of a dimension of three or more values may leave
            # skill on the table (of two values, either is an edge)
            "on_edge": on_edge(winner, grid_rtps),
            "grid": results,
        }
    return chosen


def run_size(
    members: int, truth_path: Path, work: Path, hours: int, scored: set[str], offsets: list[int]
) -> dict[str, Any]:
    """Tuning, the cycled EnKF and the cold windows of one ensemble size (one process)."""
    truth = open_archive(truth_path).load()
    config = model_config_of(truth_path)
    windows = hourly_windows(truth_path, work / "obs", hours + 1)
    states = climatological_states(config, windows[0][0], offsets, members, seed=0)
    tuned = tune(config, work, members, states)
    rows, seconds = {}, {}
    for kind in ("cycled", "cold"):
        settings = EnkfSettings(
            members=members,
            localization=Localization(tuned[kind]["horizontal_km"], 30.0),
            rtps=tuned[kind]["rtps"],
        )
        name = f"enkf-{kind}-{members}"
        if kind == "cycled":
            rows[name], seconds[name] = cycled(config, windows, states[0], settings, truth, scored)
        else:
            rows[name] = cold(config, windows, states, settings, truth, scored)
    return {"tuned": tuned, "rows": rows, "seconds": seconds}


def comparable_osse(days: float) -> dict[str, Any] | None:
    """The cycled OSSE's summary if it ran the same days, 3-hourly windows and 16 members."""
    path = RESULTS / "trajectory_osse-cpu.json"
    if not path.exists():
        return None
    osse = json.loads(path.read_text())
    settings = osse["settings"]
    if (settings["days"], settings["every_hours"], settings["members"]) != (days, EVERY, 16):
        print(f"{path.name} ran other settings ({settings}): genda's ratios are left out")
        return None
    return osse["summary"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--days", type=float, default=3.0)
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "cycled_osse")
    parser.add_argument("--quick", action="store_true", help="16 x 32 x 4, a day, 4 members")
    args = parser.parse_args()
    config = SimulatorConfig()
    leads, curve_members = LEADS, PERFECT_PAST_MEMBERS
    if args.quick:
        config = SimulatorConfig(nlat=16, nlon=32, layers=4, levels=4)
        args.members, args.days, leads, curve_members = [4], 1.0, (1, 3), 4
        args.work = args.work / "quick"
    elif not args.days >= 2:  # NaN too
        parser.error("--days must be at least 2: the scores pool a first full day and a last day")
    if min(args.members) < 2:
        parser.error("--members must each be at least 2: an ensemble's spread needs two")
    args.work.mkdir(parents=True, exist_ok=True)
    hours = round(24 * args.days)
    truth_path, truth, windows = cycle_windows(args.work, config, args.days)
    # the tuning truth and its tables, made once before the sizes' processes read them
    tune_truth = truth_archive(args.work / "tune-truth.zarr", config, 1.0, TUNE_SEED)
    hourly_windows(tune_truth, args.work / "tune-obs", 24)
    first = windows[0][0]
    # genda's analysis hours (every 3 h from hour 3) and the cycled OSSE's two spans
    analysis_hours = list(range(EVERY, hours + 1, EVERY))
    analysis_times = [str(windows[h][0])[:19] for h in analysis_hours]
    per_day = 24 // EVERY
    spans = {
        "first full day": set(analysis_times[per_day : 2 * per_day]),
        "last day": set(analysis_times[-per_day:]),
    }
    if args.quick:
        spans = {"all": set(analysis_times)}
    scored = set().union(*spans.values())
    offsets = sorted({int((np.datetime64(t) - first) / HOUR) % 24 for t in scored} | {0})
    started = time.perf_counter()
    # the perfect past: an hour before every scored analysis hour, and a day of
    # leads from starts through the first full day
    plan: dict[int, set[int]] = {
        h - 1: {1} for h, t in zip(analysis_hours, analysis_times, strict=True) if t in scored
    }
    curve_starts = [h for h in range(24, 48, 6) if h + max(leads) <= hours] or [0]
    for start in curve_starts:
        plan.setdefault(start, set()).update(leads)
    with ProcessPoolExecutor(
        max_workers=len(args.members), mp_context=multiprocessing.get_context("spawn")
    ) as pool:
        each_size = partial(
            run_size,
            truth_path=truth_path,
            work=args.work,
            hours=hours,
            scored=scored,
            offsets=offsets,
        )
        futures = pool.map(each_size, args.members)  # the sizes' processes start now
        perfect_rows = perfect_past(
            truth_path, windows, {k: tuple(v) for k, v in plan.items()}, curve_members, truth
        )
        sizes = list(futures)
    rows: dict[str, list[dict[str, Any]]] = {}
    seconds: dict[str, float] = {}
    tuned: dict[int, Any] = {}
    for members, size in zip(args.members, sizes, strict=True):
        rows.update(size["rows"])
        seconds.update(size["seconds"])
        tuned[members] = size["tuned"]
    rows["perfect-past-1h"] = [
        scores_of(r) for r in perfect_rows if r["lead"] == 1 and r["time"] in scored
    ]
    summary: dict[str, dict[str, Any]] = {
        name: {label: pooled(series, span) for label, span in spans.items()}
        for name, series in rows.items()
    }
    curve_times = {str(windows[s][0])[:19] for s in curve_starts}
    curve = {
        lead: pooled(
            [scores_of(r) for r in perfect_rows if r["lead"] == lead and r["start"] in curve_times],
            {r["time"] for r in perfect_rows},
        )
        for lead in leads
    }
    ratios: dict[str, dict[str, dict[str, float]]] = {}
    for label in spans:
        ratios[label] = {}
        for m in args.members:
            cold_crps = summary[f"enkf-cold-{m}"][label]
            ratios[label][f"enkf_cycled_{m}_over_cold_{m}"] = {
                v: summary[f"enkf-cycled-{m}"][label][v]["crps"] / cold_crps[v]["crps"]
                for v in VARIABLES
            }
            ratios[label][f"perfect_past_1h_over_enkf_cold_{m}"] = {
                v: summary["perfect-past-1h"][label][v]["crps"] / cold_crps[v]["crps"]
                for v in VARIABLES
            }
    osse = None if args.quick else comparable_osse(args.days)
    if osse is not None:
        for label in spans:
            independent = osse["genda-independent"][label]
            ratios[label]["genda_cycled_over_independent"] = {
                v: osse["genda-cycled"][label][v]["crps"] / independent[v]["crps"]
                for v in VARIABLES
            }
            for m in args.members:
                ratios[label][f"enkf_cycled_{m}_over_genda_independent"] = {
                    v: summary[f"enkf-cycled-{m}"][label][v]["crps"] / independent[v]["crps"]
                    for v in VARIABLES
                }
    table = [
        {
            "system": name,
            "span": label,
            "field": v,
            **{k: scores[v][k] for k in ("crps", "rmse", "spread_skill")},
        }
        for name, by_span in summary.items()
        for label, scores in by_span.items()
        for v in VARIABLES
    ]
    table += [
        {
            "system": "perfect-past",
            "span": f"lead {lead} h, {len(curve_starts)} starts",
            "field": v,
            **{k: curve[lead][v][k] for k in ("crps", "rmse", "spread_skill")},
        }
        for lead in leads
        for v in VARIABLES
    ]
    title = (
        f"what filtering can gain ({hours} h of hourly windows, EnKF of "
        f"{', '.join(map(str, args.members))} members, perfect model)"
    )
    print_table(title, table)
    print(json.dumps(ratios, indent=1))
    payload = {
        "benchmark": "filtering_bound",
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "settings": {
            "days": args.days,
            "members": args.members,
            "withheld": list(WITHHELD),
            "tuning_grid": {
                "horizontal_km": HORIZONTAL_KM,
                "cycled_rtps": CYCLED_RTPS,
                "cold_rtps": COLD_RTPS,
            },
            "perfect_past_members": curve_members,
            "perfect_past_curve_starts": [str(windows[s][0])[:19] for s in curve_starts],
        },
        "tuned": {str(m): choice for m, choice in tuned.items()},
        "seconds_per_window": seconds,
        "wall_seconds": time.perf_counter() - started,
        "summary": summary,
        "perfect_past_by_lead": {str(lead): scores for lead, scores in curve.items()},
        "ratios": ratios,
        "windows": rows,
        "perfect_past": perfect_rows,
    }
    if args.quick:
        write_file(args.work / "filtering_bound-quick.json", json.dumps(payload, indent=2) + "\n")
        return
    write_scores(RESULTS / "filtering_bound-cpu.json", payload, title, table)


if __name__ == "__main__":
    main()
