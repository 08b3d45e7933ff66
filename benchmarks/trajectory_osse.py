"""Cycled genda: a trajectory prior that filters, against independent windows and the model EnKF.

    python benchmarks/trajectory_osse.py --prior PATH [--days 3] [--members 16] [--steps 16]
    python benchmarks/trajectory_osse.py --quick          # a tiny end-to-end check

The truth, the observations (catalogue radars with Collm and Davis withheld,
lidars at night, the MLS track) and the EnKF are those of
``benchmarks/cycled_osse.py`` (same seed, same tables). Four systems, one run:

- **cycled-enkf**: the built-in model's EnKF, hourly windows (the anchor);
- **genda-independent**: the shipped ``default`` prior, a window every 3 h,
  each from the climatological prior;
- **genda-cycled**: a trajectory prior of ``K`` hourly states (``genda train
  --states K``), a window every ``K - 1`` hours: the first cold, each later one
  with its first state fixed, member by member, to the previous window's last
  hour (``genda assimilate --filter``), its observations at their own hours;
- **forecasts** from genda-cycled's analyses on the last day (``genda
  forecast``), against persistence (the analysis itself) and the climatological
  prior (``default``, unguided, at the valid hour).

Scores per window on the whole grid and at the withheld radars, pooled over
the first full day and the last day (``cycled_osse.pooled``); the tides (DW1,
SW2) of the withheld radars' winds from the hourly analyses of each system;
and the **3-hour-old observation**: cold windows ending at ``t`` with all of
``t``'s observations, with and without one radar's observations at ``t - 3 h``,
scored at that radar at ``t``.

Writes ``benchmarks/results/trajectory_osse-cpu.json`` (``.md`` beside it) and
``docs/figures/cycles/trajectory_osse.png``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr

from _common import RESULTS, machine, print_table
from cycled_osse import (
    VARIABLES,
    WITHHELD,
    hourly_windows,
    pooled,
    run_enkf,
    run_genda,
    score_window,
    truth_archive,
    tuned_settings,
    write_scores,
)
from genda.assimilation.posterior import PosteriorSettings
from genda.assimilation.start_update import StartUpdate
from genda.atomic import write_file
from genda.evaluation.scores import score_members
from genda.evaluation.tides import tidal_harmonics
from genda.grid import Grid
from genda.models.checkpoint import read_checkpoint
from genda.observations import write_observations
from genda.observations.operators import ObservationOperator
from genda.orchestration.assimilate import assimilate_window
from genda.orchestration.forecast import forecast
from genda.orchestration.train import train_prior
from genda.simulator import SimulatorConfig
from genda.storage import open_archive
from genda.trajectory import trajectory_states

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "figures" / "cycles"
LEADS = (1, 3, 6, 12)
HOUR = np.timedelta64(1, "h")
OLD_OBSERVATION_STATIONS = ("Andenes", "Ascension")


def members_of(store: Path, when: np.datetime64) -> np.ndarray:
    """``(N, V, L, H, W)`` members of the store's window ``when``."""
    ds = xr.open_zarr(store).sel(time=when)
    return np.stack([ds[v].transpose("member", ...).values for v in VARIABLES], 1)


def truth_at(truth: xr.Dataset, grid: Grid, when: np.datetime64) -> np.ndarray:
    return grid.tensor_from_dataset(truth.sel(time=when), dtype=torch.float64).numpy()


def window_table(tables: list[pd.DataFrame], path: Path) -> Path:
    """The hourly tables of one trajectory window as one file."""
    write_observations(pd.concat(tables, ignore_index=True), path)
    return path


def run_cycled(
    prior: str,
    windows: list,
    store: Path,
    members: int,
    steps: int,
    truth: xr.Dataset,
    work: Path,
    start_update: StartUpdate | None = None,
    cold: bool = False,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float]:
    """The filtering cycle: ``(scores of every hour, of the analysis hours, seconds per window)``.

    ``start_update``: each filtering window updates its starts first; ``cold``: every
    window starts cold instead (its first hour left to the window before), the same
    windows without filtering.
    """
    grid = Grid.from_dataset(truth)
    states = trajectory_states(Grid.from_dict(read_checkpoint(prior).config["grid"]))
    by_time = {t: (a, w) for t, a, w, _ in windows}
    times = [t for t, *_ in windows]
    starts = times[: len(times) - states + 1 : states - 1]
    hourly, analyses, seconds = [], [], 0.0
    for number, start in enumerate(starts):
        filtering = number > 0 and not cold
        # a filtering window's first hour is its predecessor's; a cold one sees that hour's
        # observations but leaves the hour to the window before
        first = 1 if filtering else 0
        hours = [start + k * HOUR for k in range(first, states)]
        path = window_table(
            [by_time[h][0] for h in hours], work / f"{store.stem}-{number:03d}.parquet"
        )
        started = time.perf_counter()  # the whole window: checks, guidance, sampling, writing
        assimilate_window(
            prior,
            path,
            start,
            store,
            members=members,
            settings=PosteriorSettings(steps=steps),
            seed=1,
            progress=False,
            filtering=filtering,
            writes_first=number == 0 or not cold,
            start_update=start_update if filtering else None,
        )
        seconds += time.perf_counter() - started
        for when in hours[1:] if number > 0 and cold else hours:
            row = {"time": str(when)[:19]}
            row.update(
                score_window(
                    members_of(store, when), truth_at(truth, grid, when), grid, by_time[when][1]
                )
            )
            hourly.append(row)
        analyses.append(hourly[-1])
    return hourly, analyses, seconds / len(starts)


def run_forecasts(
    prior: str,
    analysis_store: Path,
    starts: list[np.datetime64],
    members: int,
    steps: int,
    truth: xr.Dataset,
    work: Path,
    leads: tuple[int, ...] = LEADS,
) -> dict[str, dict[str, dict[str, float]]]:
    """Mean CRPS per lead (hours) of the forecast, persistence and the climatological prior."""
    grid = Grid.from_dataset(truth)
    weights = grid.area_weights()[:, None]
    scores: dict[str, dict[int, list[dict[str, float]]]] = {
        k: {lead: [] for lead in leads} for k in ("forecast", "persistence", "climatology")
    }
    for number, start in enumerate(starts):
        out = work / f"forecast-{number}.zarr"
        forecast(
            prior,
            analysis_store,
            start,
            max(leads),
            out,
            settings=PosteriorSettings(steps=steps),
            seed=number,
            overwrite=True,
            progress=False,
        )
        initial = members_of(analysis_store, start)
        for lead in leads:
            valid = start + lead * HOUR
            target = truth_at(truth, grid, valid)
            # the prior, unguided, from the valid hour: its first state
            clim_store = work / f"climatology-{number}-{lead}.zarr"
            assimilate_window(
                prior,
                None,
                valid,
                clim_store,
                overwrite=True,
                members=members,
                settings=PosteriorSettings(steps=steps),
                seed=2,
                progress=False,
            )
            for kind, fields in (
                ("forecast", members_of(out, valid)),
                ("persistence", initial),
                ("climatology", members_of(clim_store, valid)),
            ):
                scores[kind][lead].append(
                    {
                        v: float(score_members(fields[:, i], target[i], weights)["crps"])
                        for i, v in enumerate(VARIABLES)
                    }
                )
    return {
        kind: {
            str(lead): {v: float(np.mean([s[v] for s in rows])) for v in VARIABLES}
            for lead, rows in per_lead.items()
        }
        for kind, per_lead in scores.items()
    }


def station_error(store: Path, when: np.datetime64, truth: xr.Dataset, rows: pd.DataFrame) -> float:
    """RMS error of the ensemble mean at ``rows`` (one station's winds) at ``when``."""
    grid = Grid.from_dataset(truth)
    operator = ObservationOperator.from_table(rows.assign(time=when), grid)
    with torch.no_grad():
        mean = operator(
            torch.as_tensor(members_of(store, when).mean(0), dtype=torch.float64)[None]
        )[0]
        target = operator(torch.as_tensor(truth_at(truth, grid, when))[None])[0]
    return float(torch.sqrt(((mean - target) ** 2).mean()))


def old_observation(
    prior: str,
    windows: list,
    members: int,
    steps: int,
    truth: xr.Dataset,
    work: Path,
    ends: list[int],
    stations: tuple[str, ...] = OLD_OBSERVATION_STATIONS,
) -> list[dict[str, Any]]:
    """Cold windows ending at ``t``: the error at a radar with and without its ``t - 3 h`` rows."""
    states = trajectory_states(Grid.from_dict(read_checkpoint(prior).config["grid"]))
    results = []
    for end in ends:
        when, assimilated = windows[end][0], windows[end][1]
        start = when - (states - 1) * HOUR
        earlier = windows[end - (states - 1)][1]
        for station in stations:
            old = earlier[(earlier["station"] == station) & earlier["variable"].isin(["u", "v"])]
            here = assimilated[
                (assimilated["station"] == station) & assimilated["variable"].isin(["u", "v"])
            ]
            if old.empty or here.empty:
                continue
            others = assimilated[
                assimilated["station"] != station
            ]  # the station's own hour left out
            errors = {}
            for label, tables in (("without", [others]), ("with", [others, old])):
                store = work / f"old-{end}-{station}-{label}.zarr"
                path = window_table(tables, work / f"old-{end}-{station}-{label}.parquet")
                assimilate_window(
                    prior,
                    path,
                    start,
                    store,
                    members=members,
                    settings=PosteriorSettings(steps=steps),
                    seed=3,
                    progress=False,
                    overwrite=True,
                )
                errors[label] = station_error(store, when, truth, here)
                shutil.rmtree(store)  # a case's two stores are read once
            results.append({"time": str(when)[:19], "station": station, **errors})
    return results


def tides_at_withheld(
    stores: dict[str, Path], times: list[np.datetime64], truth: xr.Dataset, withheld: pd.DataFrame
) -> dict[str, dict[str, dict[str, float]]]:
    """DW1 and SW2 amplitude ratios (system / truth) and phase errors (h) of the withheld winds."""
    grid = Grid.from_dataset(truth)
    operator = ObservationOperator.from_table(withheld, grid)
    names = withheld["variable"].to_numpy()
    series: dict[str, np.ndarray] = {}
    with torch.no_grad():
        series["truth"] = np.stack(
            [operator(torch.as_tensor(truth_at(truth, grid, t))[None])[0].numpy() for t in times]
        )
        for system, store in stores.items():
            series[system] = np.stack(
                [
                    operator(
                        torch.as_tensor(members_of(store, t).mean(0), dtype=torch.float64)[None]
                    )[0].numpy()
                    for t in times
                ]
            )
    lon = withheld["lon"].to_numpy()
    # the series need not start at 00 UTC: the phases share that offset, their errors do not
    analysed = {k: tidal_harmonics(v, longitude_deg=lon) for k, v in series.items()}
    out: dict[str, dict[str, dict[str, float]]] = {}
    for system in stores:
        out[system] = {}
        for n, label in ((1, "DW1"), (2, "SW2")):
            ratio = analysed[system].amplitude[n] / analysed["truth"].amplitude[n]
            period = 24.0 / n
            delta = (
                analysed[system].phase_hours[n] - analysed["truth"].phase_hours[n] + period / 2
            ) % period - period / 2
            strong = analysed["truth"].amplitude[n] > np.median(analysed["truth"].amplitude[n])
            out[system][label] = {
                "amplitude_ratio_median": float(np.median(ratio[strong])),
                "phase_error_hours_median": float(np.median(np.abs(delta[strong]))),
                "rows": int(strong.sum()),
                "variables": sorted(set(names[strong].tolist())),
            }
    return out


def quick_prior(truth_path: Path, work: Path) -> str:
    out = work / "quick-prior"
    if not out.exists():
        train_prior(
            truth_path,
            out,
            coordinates="whitened",
            states=4,
            architecture={"base_channels": 8, "channel_mult": (1, 2)},
            overrides={"steps": 10, "batch_size": 4, "warmup_steps": 2},
            val_gap_hours=2,
            progress=False,
        )
    return str(out)


def figure(rows: dict[str, list[dict[str, Any]]], forecasts: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    origin = np.datetime64(rows["cycled-enkf"][0]["time"])
    for ax, name in zip(axes[:3], VARIABLES, strict=True):
        for method, color in (
            ("cycled-enkf", "C0"),
            ("genda-independent", "C3"),
            ("genda-cycled", "C2"),
        ):
            series = rows.get(method, [])
            hours = [(np.datetime64(r["time"]) - origin) / HOUR for r in series]
            ax.plot(hours, [r[name]["crps"] for r in series], color=color, label=method)
        ax.set_title(f"CRPS {name} ({'K' if name == 'T' else 'm/s'})")
        ax.set_xlabel("hours into the cycle")
    axes[0].legend(fontsize=7)
    ax = axes[3]
    for kind, color in (("forecast", "C2"), ("persistence", "C1"), ("climatology", "C7")):
        leads = [int(k) for k in forecasts[kind]]
        ax.plot(leads, [forecasts[kind][str(k)]["u"] for k in leads], "o-", color=color, label=kind)
    ax.set_title("forecast CRPS u (m/s)")
    ax.set_xlabel("lead (h)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prior", help="the trajectory prior (genda train --states K)")
    parser.add_argument("--days", type=float, default=3.0)
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--old-members", type=int, default=16, help="members of the 3-h test")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "cycled_osse")
    parser.add_argument("--quick", action="store_true", help="16 x 32 x 4, 10 hours, 4 members")
    args = parser.parse_args()
    config = SimulatorConfig()
    if args.quick:
        config = SimulatorConfig(nlat=16, nlon=32, layers=4, levels=4)
        args.days, args.members, args.steps, args.old_members = 10 / 24, 4, 4, 4
    args.work.mkdir(parents=True, exist_ok=True)
    hours = round(24 * args.days)
    truth_path = truth_archive(args.work / "truth.zarr", config, max(args.days, 1.0) + 0.625, 2026)
    truth = open_archive(truth_path).load()
    prior = quick_prior(truth_path, args.work) if args.quick else args.prior
    if prior is None:
        parser.error("--prior is needed (a trajectory prior, genda train --states K)")
    states = trajectory_states(Grid.from_dict(read_checkpoint(prior).config["grid"]))
    windows = hourly_windows(truth_path, args.work / "obs", hours + 13)
    cycle = windows[: hours + 1]
    for name in ("enkf.zarr", "genda.zarr", "cycled.zarr", "climatology.zarr"):
        shutil.rmtree(args.work / name, ignore_errors=True)
    started = time.perf_counter()
    rows, seconds = {}, {}
    rows["cycled-enkf"], seconds["cycled-enkf"] = run_enkf(
        truth_path, cycle, args.work / "enkf.zarr", tuned_settings(args.members), truth
    )
    every = states - 1
    if not args.quick:  # the shipped prior is of the default grid
        rows["genda-independent"], seconds["genda-independent"] = run_genda(
            cycle[::every], args.work / "genda.zarr", args.members, args.steps, truth
        )
    hourly, rows["genda-cycled"], seconds["genda-cycled"] = run_cycled(
        prior, cycle, args.work / "cycled.zarr", args.members, args.steps, truth, args.work
    )
    times = [r["time"] for r in rows["genda-cycled"]]
    per_day = 24 // every
    spans = {"first full day": set(times[per_day : 2 * per_day]), "last day": set(times[-per_day:])}
    if args.days < 2:  # a short cycle: its halves
        half = len(times) // 2
        spans = {"first half": set(times[:half]), "second half": set(times[half:])}
    if args.quick:
        spans = {"all": set(times)}
    summary = {
        m: {label: pooled(series, span) for label, span in spans.items()}
        for m, series in rows.items()
    }
    summary["genda-cycled-hourly"] = {"all hours": pooled(hourly, {r["time"] for r in hourly})}
    ratios = {
        label: {
            name: {
                f"cycled_over_{other}": summary["genda-cycled"][label][name]["crps"]
                / summary[method][label][name]["crps"]
                for other, method in (("independent", "genda-independent"), ("enkf", "cycled-enkf"))
                if method in summary
            }
            for name in (*VARIABLES, "withheld_u", "withheld_v")
        }
        for label in spans
    }
    last_times = [np.datetime64(r["time"]) for r in rows["genda-cycled"]][-per_day:]
    starts = last_times[:: max(1, len(last_times) // 4)][:4] if not args.quick else last_times[:1]
    # --quick: the shortest leads and one station, enough to run every part once
    leads = (1, 3) if args.quick else LEADS
    stations = OLD_OBSERVATION_STATIONS[:1] if args.quick else OLD_OBSERVATION_STATIONS
    forecasts = run_forecasts(
        prior, args.work / "cycled.zarr", starts, args.members, args.steps, truth, args.work, leads
    )
    ends = [hours]
    old = old_observation(
        prior, windows, args.old_members, args.steps, truth, args.work, ends, stations
    )
    tides = None  # the tidal analysis needs whole days, at least two
    if not args.quick and len(hourly) >= 48:
        tide_times = [np.datetime64(r["time"]) for r in hourly][: 24 * (len(hourly) // 24)]
        tides = tides_at_withheld(
            {"genda-cycled": args.work / "cycled.zarr", "cycled-enkf": args.work / "enkf.zarr"},
            tide_times,
            truth,
            cycle[0][2][cycle[0][2]["variable"].isin(["u", "v"])],
        )
    table = []
    for method, by_span in summary.items():
        for label, scores in by_span.items():
            for name in (*VARIABLES, "withheld_u", "withheld_v"):
                table.append(
                    {
                        "method": method,
                        "span": label,
                        "field": name,
                        **{k: scores[name][k] for k in ("crps", "rmse", "spread_skill")},
                    }
                )
    title = (
        f"cycled genda ({hours} h, {args.members} members, trajectory prior of {states} hourly states, "
        f"a window every {every} h); seconds per window on this CPU: "
        + ", ".join(f"{m} {s:.1f}" for m, s in seconds.items())
    )
    print_table(title, table)
    print(
        json.dumps(
            {"ratios": ratios, "forecasts": forecasts, "old_observation": old, "tides": tides},
            indent=1,
        )
    )
    payload = {
        "benchmark": "trajectory_osse",
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "settings": {
            "days": args.days,
            "members": args.members,
            "steps": args.steps,
            "prior": Path(prior).name,
            "states": states,
            "every_hours": every,
            "withheld": list(WITHHELD),
            "old_observation_stations": list(stations),
            "old_observation_members": args.old_members,
        },
        "seconds_per_window": seconds,
        "wall_seconds": time.perf_counter() - started,
        "summary": summary,
        "ratios": ratios,
        "forecasts": forecasts,
        "forecast_starts": [str(t)[:19] for t in starts],
        "old_observation": old,
        "tides": tides,
        "windows": rows,
        "hourly": hourly,
    }
    if args.quick:
        write_file(args.work / "trajectory_osse-quick.json", json.dumps(payload, indent=2) + "\n")
        return
    write_scores(RESULTS / "trajectory_osse-cpu.json", payload, title, table)
    figure(rows, forecasts, FIGURES / "trajectory_osse.png")


if __name__ == "__main__":
    main()
