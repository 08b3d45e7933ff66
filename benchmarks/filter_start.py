"""The filtering cycle's start: fixed as it is, updated by the window's observations, or cold?

    python benchmarks/filter_start.py --prior PATH [--variants kept cold 1500 1000@0.9 inf] [--days 2]
                                      [--name filter_start]
    python benchmarks/filter_start.py --quick          # a tiny end-to-end check

A filtering window fixes each member's first state to that member of the
previous window's last hour (``genda assimilate --filter``) and samples the
later states given the window's observations. The members' mean then gives
those observations the gain of the later states' own innovation, not the
Kalman filter's, which also counts the start's uncertainty
(:mod:`genda.assimilation.start_update`); components that the prior carries
from hour to hour can drift. This runs the filtering cycle of
``benchmarks/trajectory_osse.py`` (the same network, 16 members, 16 steps, a
window of 4 hours every 3 h) on the tuning truth (seed 7, which the cycled OSSE
does not score) in the variants:

- **kept**: the starts fixed as they are (the default);
- **cold**: every window from the climatological prior, with its first hour's
  observations too: the same windows without filtering;
- **a number**: the starts updated first by a localised EnKF step of that
  horizontal half-width in km (``inf``: none), with ``--start-rtps``;
  ``KM@A`` sets that variant's RTPS to ``A`` (``1000@0.9``).

The variants run in parallel processes. It reports each day's CRPS, RMSE and
spread-skill at the analysis hours (the windows' last hours), and each
variant's last-day CRPS over the kept starts', the mean over u, v and T.

Writes ``benchmarks/results/filter_start-cpu.json`` (``.md`` beside it;
``--name`` for another file).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import RESULTS, machine, print_table
from cycled_osse import TUNE_SEED, VARIABLES, hourly_windows, pooled, truth_archive, write_scores
from genda.assimilation.start_update import StartUpdate
from genda.atomic import write_file
from genda.grid import Grid
from genda.models.checkpoint import read_checkpoint
from genda.simulator import SimulatorConfig
from genda.storage import open_archive
from genda.trajectory import trajectory_states
from trajectory_osse import quick_prior, run_cycled

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VARIANTS = ("kept", "cold", "1500", "inf")


def parse_variant(text: str) -> str:
    """``kept``, ``cold``, a half-width in km (``inf``) or ``KM@RTPS``, checked and canonical."""
    if text in ("kept", "cold"):
        return text
    width, sep, relax = text.partition("@")
    try:
        value = float(width)
        rtps = float(relax) if sep else None
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not kept, cold, a width in km or KM@RTPS"
        ) from None
    if not value > 0:  # NaN too
        raise argparse.ArgumentTypeError(f"a localisation half-width must be > 0 km, got {text}")
    if rtps is not None and not 0.0 <= rtps <= 1.0:
        raise argparse.ArgumentTypeError(f"a variant's RTPS must lie in [0, 1], got {text}")
    name = "inf" if math.isinf(value) else _number(value)
    return name if rtps is None else f"{name}@{_number(rtps + 0.0)}"  # + 0.0: no "-0"


def _number(value: float) -> str:
    """``value`` short (``1e3`` as ``1000``), unless that would change it."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def start_update(variant: str, rtps: float) -> StartUpdate | None:
    """The :class:`StartUpdate` of a variant (``None``: kept or cold), ``rtps`` unless it sets one."""
    if variant in ("kept", "cold"):
        return None
    width, _, relax = variant.partition("@")
    return StartUpdate(float(width), rtps=float(relax) if relax else rtps)


def run_variant(
    variant: str,
    prior: str,
    truth_path: Path,
    work: Path,
    hours: int,
    members: int,
    steps: int,
    rtps: float,
) -> dict[str, Any]:
    """The cycle of one variant on the tuning truth (one process, one thread)."""
    torch.set_num_threads(1)
    truth = open_archive(truth_path).load()
    windows = hourly_windows(truth_path, work / "obs", hours + 1)
    store = work / f"{variant}.zarr"
    shutil.rmtree(store, ignore_errors=True)
    update = start_update(variant, rtps)
    _, analyses, seconds = run_cycled(
        prior, windows, store, members, steps, truth, work, update, cold=variant == "cold"
    )
    shutil.rmtree(store, ignore_errors=True)  # only the scores are kept
    return {"variant": variant, "windows": analyses, "seconds_per_window": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prior", help="the trajectory prior (genda train --states K)")
    parser.add_argument("--variants", type=parse_variant, nargs="+", default=DEFAULT_VARIANTS)
    parser.add_argument("--start-rtps", type=float, default=0.5)
    parser.add_argument("--days", type=float, default=2.0)
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--processes", type=int, default=2, help="variants run at once")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "filter_start")
    parser.add_argument(
        "--name",
        default="filter_start",
        help="results under benchmarks/results/NAME-cpu.{json,md} (another set of variants)",
    )
    parser.add_argument("--quick", action="store_true", help="16 x 32 x 4, 10 hours, 4 members")
    args = parser.parse_args()
    config = SimulatorConfig()
    if args.quick:
        config = SimulatorConfig(nlat=16, nlon=32, layers=4, levels=4)
        args.days, args.members, args.steps = 10 / 24, 4, 4
        args.variants = ["kept", "cold", "2000"]
    elif not args.days >= 2:  # NaN too
        parser.error("--days must be at least 2: a drift shows from the second day on")
    variants = list(dict.fromkeys(args.variants))
    if "kept" not in variants:
        parser.error("--variants must hold kept: the other variants are measured against it")
    if not 0.0 <= args.start_rtps <= 1.0:
        parser.error("--start-rtps must lie in [0, 1]")
    if args.members < 2:
        parser.error("--members must be at least 2: an ensemble's spread needs two")
    if not args.name or Path(args.name).name != args.name:
        parser.error(f"--name must be a plain file name, got {args.name!r}")
    if args.prior is None and not args.quick:
        parser.error("--prior is needed (a trajectory prior, genda train --states K)")
    args.work.mkdir(parents=True, exist_ok=True)
    hours = round(24 * args.days)
    truth_path = truth_archive(
        args.work / "truth.zarr", config, max(args.days, 1.0) + 0.625, TUNE_SEED
    )
    hourly_windows(truth_path, args.work / "obs", hours + 1)  # drawn once, read by every process
    prior = quick_prior(truth_path, args.work) if args.quick else args.prior
    states = trajectory_states(Grid.from_dict(read_checkpoint(prior).config["grid"]))
    started = time.perf_counter()
    each = partial(
        run_variant,
        prior=prior,
        truth_path=truth_path,
        work=args.work,
        hours=hours,
        members=args.members,
        steps=args.steps,
        rtps=args.start_rtps,
    )
    with ProcessPoolExecutor(
        max_workers=max(1, args.processes), mp_context=multiprocessing.get_context("spawn")
    ) as pool:
        runs = {r["variant"]: r for r in pool.map(each, variants)}
    times = [r["time"] for r in runs["kept"]["windows"]]
    per_day = 24 // (states - 1)
    spans = {"first day": set(times[:per_day]), "last day": set(times[-per_day:])}
    if args.quick:
        spans = {"all": set(times)}
    last = list(spans)[-1]
    summary = {
        v: {label: pooled(run["windows"], span) for label, span in spans.items()}
        for v, run in runs.items()
    }
    reference = summary["kept"][last]
    ratios = {
        v: float(np.mean([by[last][n]["crps"] / reference[n]["crps"] for n in VARIABLES]))
        for v, by in summary.items()
    }
    table = [
        {
            "variant": v,
            "span": label,
            "field": n,
            **{k: scores[n][k] for k in ("crps", "rmse", "spread_skill")},
        }
        for v, by in summary.items()
        for label, scores in by.items()
        for n in VARIABLES
    ]
    title = (
        f"the filtering cycle's start on the tuning truth (seed {TUNE_SEED}, {hours} h, "
        f"{args.members} members, {args.steps} steps, start RTPS {args.start_rtps:g} "
        "unless a variant sets its own); "
        f"{last} CRPS over the kept starts': "
        + ", ".join(f"{v} {ratio:.3f}" for v, ratio in ratios.items())
    )
    print_table(title, table)
    payload = {
        "benchmark": "filter_start",
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "settings": {
            "days": args.days,
            "members": args.members,
            "steps": args.steps,
            "prior": Path(prior).name,
            "states": states,
            "truth_seed": TUNE_SEED,
            "variants": variants,
            "start_rtps": args.start_rtps,
            "vertical_km": StartUpdate().vertical_km,
        },
        "wall_seconds": time.perf_counter() - started,
        "seconds_per_window": {v: run["seconds_per_window"] for v, run in runs.items()},
        "summary": summary,
        "crps_over_kept": ratios,
        "windows": {v: run["windows"] for v, run in runs.items()},
    }
    if args.quick:
        write_file(args.work / "filter_start-quick.json", json.dumps(payload, indent=2) + "\n")
        return
    write_scores(RESULTS / f"{args.name}-cpu.json", payload, title, table)


if __name__ == "__main__":
    main()
