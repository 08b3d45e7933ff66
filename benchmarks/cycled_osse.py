"""A cycled OSSE: hourly windows over days, the model EnKF against genda's independent windows.

    python benchmarks/cycled_osse.py [--days 3] [--members 32] [--genda-every 3] [--quick]
    python benchmarks/cycled_osse.py --tune        # the EnKF's localisation and RTPS

The truth is a run of the built-in model (``genda simulate``, default
32 x 64 x 8 grid, seed 2026, 30 days of spin-up). Every hour it is observed by
the catalogue's meteor radars (Collm and Davis withheld for scoring), its
lidars while it is dark at them (``lidars_at_night``) and the MLS track
within the hour. Two systems assimilate the same tables:

- **cycled-enkf**: the built-in model's own EnKF (:mod:`genda.assimilation.cycled_enkf`),
  members carried from hour to hour by the model, the classical anchor a
  twin experiment allows (its model is perfect up to the stochastic forcing);
- **genda-independent**: ``genda assimilate`` with the shipped ``default``
  prior, each window on its own from the climatological prior (genda's
  windows do not carry anything in time yet).

Each window is scored against the truth on the whole grid (area-weighted
CRPS, ensemble-mean RMSE, spread-skill per variable) and at the withheld
radars (the members through ``H`` against the truth through ``H``). The
table pools the first full day after the EnKF's first day and the last day;
ratios compare the two systems on the windows both ran. ``--tune`` chooses
the EnKF's horizontal localisation and RTPS on a one-day cycle of another
truth (seed 7), which is then not scored.

Writes ``benchmarks/results/cycled_osse-cpu.json`` (``.md`` beside it) and
``docs/figures/cycles/cycled_osse.png``; ``--tune`` writes
``benchmarks/results/cycled_osse_tuning.json``, which a later run reads.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from _common import RESULTS, machine, print_table
from genda.assimilation.baselines import Localization
from genda.assimilation.cycled_enkf import EnkfSettings
from genda.assimilation.posterior import PosteriorSettings
from genda.atomic import write_file
from genda.evaluation.scores import score_members
from genda.grid import Grid
from genda.observations import draw_observations, split_withheld, write_observations
from genda.observations.operators import ObservationOperator
from genda.orchestration.assimilate import assimilate_window
from genda.orchestration.enkf_cycle import enkf_cycle
from genda.orchestration.simulate import simulate_archive
from genda.simulator import SimulatorConfig
from genda.storage import open_archive

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "figures" / "cycles"
TRUTH_SEED, TUNE_SEED = 2026, 7
WITHHELD = ("Collm", "Davis")
NETWORKS = "radars,lidars,mls"
VARIABLES = ("u", "v", "T")
TUNE_HORIZONTAL_KM = (1500.0, 3000.0, 6000.0)
TUNE_RTPS = (0.5, 0.7, 0.9)


def truth_archive(path: Path, config: SimulatorConfig, days: float, seed: int) -> Path:
    if not path.exists():
        simulate_archive(path, config, days=days, seed=seed, spinup_days=30.0, progress=False)
    return path


def cycle_windows(
    work: Path, config: SimulatorConfig, days: float
) -> tuple[Path, xr.Dataset, list[tuple[np.datetime64, Any, Any, Path]]]:
    """The cycled OSSE's truth (``work/truth.zarr``, seed :data:`TRUTH_SEED`, ``days`` and
    15 hours more), loaded, and its ``24 days + 1`` hourly windows (:func:`hourly_windows`).

    Raises:
        SystemExit: an existing truth archive there holds fewer hours.
    """
    hours = round(24 * days)
    path = truth_archive(work / "truth.zarr", config, max(days, 1.0) + 0.625, TRUTH_SEED)
    windows = hourly_windows(path, work / "obs", hours + 1)
    if len(windows) < hours + 1:
        raise SystemExit(
            f"{path} holds {len(windows)} hours, fewer than the {hours + 1} of "
            f"--days {days:g}: remove it, or give another --work"
        )
    return path, open_archive(path).load(), windows


SCORE_HEADERS = {"crps": "CRPS", "rmse": "RMSE", "spread_skill": "spread-skill"}


def write_scores(
    out: Path, payload: dict[str, Any], title: str, table: list[dict[str, Any]]
) -> None:
    """``out``, the JSON of ``payload``, and beside it ``.md``: ``title`` and ``table``
    (rows of names, then ``crps``, ``rmse``, ``spread_skill``) as a markdown table."""
    write_file(out, json.dumps(payload, indent=2) + "\n")
    keys = list(table[0])
    lines = ["| " + " | ".join(SCORE_HEADERS.get(k, k) for k in keys) + " |"]
    lines.append("|" + "---|" * len(keys))
    for row in table:
        cells = [
            f"{row[k]:.2f}" if k == "spread_skill" else f"{row[k]:.3g}" if k in SCORE_HEADERS
            else str(row[k])
            for k in keys
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    write_file(out.with_suffix(".md"), title + "\n\n" + "\n".join(lines) + "\n")


def hourly_windows(
    truth_path: Path, obs_dir: Path, hours: int
) -> list[tuple[np.datetime64, Any, Any, Path]]:
    """``(time, assimilated, withheld, path of the assimilated table)`` per hour."""
    truth = open_archive(truth_path)
    grid = Grid.from_dataset(truth)
    windows = []
    for index, when in enumerate(truth.time.values[:hours]):
        obs = draw_observations(truth, grid, when, NETWORKS, seed=index, lidars_at_night=True)
        assimilated, withheld = split_withheld(obs, WITHHELD)
        path = obs_dir / f"{str(when)[:13]}.parquet"
        if not path.exists():
            write_observations(assimilated, path)
        windows.append((np.datetime64(when, "ns"), assimilated, withheld, path))
    return windows


def score_window(
    fields: np.ndarray, truth: np.ndarray, grid: Grid, withheld: Any
) -> dict[str, dict[str, float]]:
    """Scores of ``(K, V, L, H, W)`` members against the truth ``(V, L, H, W)``:
    per variable on the grid (area weights) and at the withheld radars."""
    weights = grid.area_weights()[:, None]
    scores: dict[str, dict[str, float]] = {}
    for v, name in enumerate(VARIABLES):
        record = score_members(fields[:, v], truth[v], weights)
        scores[name] = {k: float(record[k]) for k in ("crps", "rmse", "spread_skill")}
    operator = ObservationOperator.from_table(withheld, grid)
    with torch.no_grad():
        members = operator(torch.as_tensor(fields, dtype=torch.float64)).numpy()
        at_truth = operator(torch.as_tensor(truth, dtype=torch.float64)).numpy()
    for name in ("u", "v"):
        rows = (withheld["variable"] == name).to_numpy()
        record = score_members(members[:, rows], at_truth[rows])
        scores[f"withheld_{name}"] = {k: float(record[k]) for k in ("crps", "rmse", "spread_skill")}
    return scores


def run_enkf(
    truth_path: Path, windows: list, store: Path, settings: EnkfSettings, truth: xr.Dataset
) -> tuple[list[dict[str, Any]], float]:
    grid = Grid.from_dataset(truth)
    rows: list[dict[str, Any]] = []
    withheld = {t: w for t, _, w, _ in windows}
    stamps: list[float] = []

    def on_window(when: np.datetime64, fields: np.ndarray, report: Any) -> None:
        stamps.append(time.perf_counter())
        target = grid.tensor_from_dataset(truth.sel(time=when), dtype=torch.float64).numpy()
        rows.append({"time": str(when)[:19], **score_window(fields, target, grid, withheld[when])})

    enkf_cycle(
        truth_path,
        [(t, a) for t, a, _, _ in windows],
        store,
        settings,
        on_window=on_window,
        overwrite=True,
        progress=True,
    )
    # per window: forecast, analysis, writing (the initial ensemble's spin-up left out)
    return rows, float(np.mean(np.diff(stamps))) if len(stamps) > 1 else math.nan


def run_genda(
    windows: list, store: Path, members: int, steps: int, truth: xr.Dataset
) -> tuple[list[dict[str, Any]], float]:
    grid = Grid.from_dataset(truth)
    rows = []
    seconds = 0.0
    for when, _, withheld, path in windows:
        started = time.perf_counter()  # the whole window: checks, guidance, sampling, writing
        assimilate_window(
            "default",
            path,
            when,
            store,
            members=members,
            settings=PosteriorSettings(steps=steps),
            seed=1,
            progress=False,
        )
        seconds += time.perf_counter() - started
        ds = xr.open_zarr(store).sel(time=when)
        fields = np.stack([ds[v].transpose("member", ...).values for v in VARIABLES], 1)
        target = grid.tensor_from_dataset(truth.sel(time=when), dtype=torch.float64).numpy()
        rows.append({"time": str(when)[:19], **score_window(fields, target, grid, withheld)})
    return rows, seconds / len(windows)


def pooled(rows: list[dict[str, Any]], times: set[str]) -> dict[str, dict[str, float]]:
    """Mean CRPS and RMSE, and the spread-skill of the pooled variances, over ``times``."""
    chosen = [r for r in rows if r["time"] in times]
    out = {}
    for key in chosen[0]:
        if key == "time":
            continue
        crps = float(np.mean([r[key]["crps"] for r in chosen]))
        mse = float(np.mean([r[key]["rmse"] ** 2 for r in chosen]))
        variance = float(np.mean([(r[key]["spread_skill"] * r[key]["rmse"]) ** 2 for r in chosen]))
        out[key] = {
            "crps": crps,
            "rmse": math.sqrt(mse),
            "spread_skill": math.sqrt(variance / mse),
        }
    return out


def tune(args: argparse.Namespace, config: SimulatorConfig) -> None:
    """Each horizontal localisation and RTPS on a one-day cycle of another truth."""
    truth_path = truth_archive(args.work / "tune-truth.zarr", config, 1.0, TUNE_SEED)
    truth = open_archive(truth_path).load()
    windows = hourly_windows(truth_path, args.work / "tune-obs", 24)
    results = []
    for horizontal in TUNE_HORIZONTAL_KM:
        for rtps in TUNE_RTPS:
            settings = EnkfSettings(
                members=args.members, localization=Localization(horizontal, 30.0), rtps=rtps
            )
            rows, _ = run_enkf(truth_path, windows, args.work / "tune.zarr", settings, truth)
            last = pooled(rows, {r["time"] for r in rows[12:]})
            crps = {v: last[v]["crps"] for v in VARIABLES}
            results.append({"horizontal_km": horizontal, "rtps": rtps, "crps_last_12h": crps})
            print(horizontal, rtps, crps)
    # rank by the CRPS relative to the best of each variable, summed over the variables
    best_of = {v: min(r["crps_last_12h"][v] for r in results) for v in VARIABLES}
    for r in results:
        r["relative_crps"] = sum(r["crps_last_12h"][v] / best_of[v] for v in VARIABLES) / 3
    chosen = min(results, key=lambda r: r["relative_crps"])
    payload = {"truth_seed": TUNE_SEED, "members": args.members, "grid": results, "chosen": chosen}
    write_file(RESULTS / "cycled_osse_tuning.json", json.dumps(payload, indent=2) + "\n")
    print("chosen:", chosen)


def tuned_settings(members: int) -> EnkfSettings:
    path = RESULTS / "cycled_osse_tuning.json"
    settings = EnkfSettings(members=members)
    if path.exists():
        chosen = json.loads(path.read_text())["chosen"]
        settings = replace(
            settings,
            localization=Localization(chosen["horizontal_km"], 30.0),
            rtps=chosen["rtps"],
        )
    return settings


def figure(rows: dict[str, list[dict[str, Any]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), sharex=True)
    for ax, name in zip(axes, VARIABLES, strict=True):
        for method, color in (("cycled-enkf", "C0"), ("genda-independent", "C3")):
            series = rows.get(method, [])
            if not series:
                continue
            hours = [
                (np.datetime64(r["time"]) - np.datetime64(rows["cycled-enkf"][0]["time"]))
                / np.timedelta64(1, "h")
                for r in series
            ]
            rmse = [r[name]["rmse"] for r in series]
            spread = [r[name]["rmse"] * r[name]["spread_skill"] for r in series]
            ax.plot(hours, rmse, color=color, label=f"{method} RMSE")
            ax.plot(hours, spread, color=color, ls="--", label=f"{method} spread")
        ax.set_title(f"{name} ({'K' if name == 'T' else 'm/s'})")
        ax.set_xlabel("hours into the cycle")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=float, default=3.0)
    parser.add_argument("--members", type=int, default=32)
    parser.add_argument("--steps", type=int, default=32, help="genda's sampler steps")
    parser.add_argument("--genda-every", type=int, default=3, help="hours between genda windows")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "cycled_osse")
    parser.add_argument("--tune", action="store_true")
    parser.add_argument("--quick", action="store_true", help="16 x 32 x 4, 6 hours, 4 members")
    args = parser.parse_args()
    config = SimulatorConfig()
    if args.quick:
        config = SimulatorConfig(nlat=16, nlon=32, layers=4, levels=4)
        args.days, args.members, args.genda_every = 0.25, 4, 0
    args.work.mkdir(parents=True, exist_ok=True)
    if args.tune:
        tune(args, config)
        return
    hours = round(24 * args.days)
    truth_path = truth_archive(args.work / "truth.zarr", config, args.days, TRUTH_SEED)
    truth = open_archive(truth_path).load()
    windows = hourly_windows(truth_path, args.work / "obs", hours)
    settings = tuned_settings(args.members)
    rows = {}
    seconds = {}
    rows["cycled-enkf"], seconds["cycled-enkf"] = run_enkf(
        truth_path, windows, args.work / "enkf.zarr", settings, truth
    )
    if args.genda_every:
        chosen = windows[:: args.genda_every]
        store = args.work / "genda.zarr"
        if store.exists():
            import shutil

            shutil.rmtree(store)
        rows["genda-independent"], seconds["genda-independent"] = run_genda(
            chosen, store, args.members, args.steps, truth
        )
    times = [r["time"] for r in rows["cycled-enkf"]]
    days = {"first full day": set(times[24:48]), "last day": set(times[-24:])}
    if args.quick:
        days = {"all": set(times)}
    summary: dict[str, Any] = {}
    for method, series in rows.items():
        ran = {r["time"] for r in series}
        summary[method] = {
            label: pooled(series, span & ran) for label, span in days.items() if span & ran
        }
    table = []
    for method, spans in summary.items():
        for label, scores in spans.items():
            for name in (*VARIABLES, "withheld_u", "withheld_v"):
                table.append(
                    {
                        "method": method,
                        "span": label,
                        "field": name,
                        "crps": scores[name]["crps"],
                        "rmse": scores[name]["rmse"],
                        "spread_skill": scores[name]["spread_skill"],
                    }
                )
    title = (
        f"cycled OSSE ({hours} hourly windows, {args.members} members; EnKF localisation "
        f"{settings.localization.horizontal_km:g} km / {settings.localization.vertical_km:g} km, "
        f"RTPS {settings.rtps:g}; seconds per window on this CPU: "
        + ", ".join(f"{m} {s:.1f}" for m, s in seconds.items())
        + ")"
    )
    print_table(title, table)
    payload = {
        "benchmark": "cycled_osse",
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "settings": {
            "days": args.days,
            "members": args.members,
            "networks": NETWORKS,
            "lidars_at_night": True,
            "withheld": list(WITHHELD),
            "truth_seed": TRUTH_SEED,
            "enkf": {
                "horizontal_km": settings.localization.horizontal_km,
                "vertical_km": settings.localization.vertical_km,
                "rtps": settings.rtps,
                "spacing_hours": settings.spacing_hours,
            },
            "genda": {
                "checkpoint": "default",
                "steps": args.steps,
                "every_hours": args.genda_every,
            },
        },
        "seconds_per_window": seconds,
        "summary": summary,
        "windows": rows,
    }
    if not args.quick:
        write_scores(RESULTS / "cycled_osse-cpu.json", payload, title, table)
        figure(rows, FIGURES / "cycled_osse.png")
    else:
        write_file(args.work / "cycled_osse-quick.json", json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
