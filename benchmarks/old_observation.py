"""What a radar's winds 3 hours before the analysis time add at that radar.

    python benchmarks/old_observation.py --prior PATH [--ends 4] [--members 16] [--steps 16]
    python benchmarks/old_observation.py --quick          # a tiny end-to-end check

A trajectory prior's window of ``K`` hourly states ends at ``t``. It holds every
observation of the cycled OSSE's network at ``t`` but one radar's; that
radar's winds at ``t - (K - 1) h`` (3 h for the 4-hour prior) are in the
window or not. The ensemble mean's RMS error at the radar's own rows at ``t``
(against the truth) is compared between the two windows, which share their
seed, for every assimilated meteor radar with winds at both hours and several
ends ``t`` on the cycled OSSE's last day (``trajectory_osse.old_observation``).

Reported: the RMS error over all cases with and without the earlier winds,
the share of cases it lowered, and the mean paired difference with its
standard error and Wilcoxon signed-rank p-value (:func:`scipy.stats.wilcoxon`),
over all cases, per radar and per window end. The cases of one end share the
truth, the seed and most of the table, so the standard error and the p-value,
which take the cases as independent, overstate the confidence; the per-end
means show how much the effect varies from one analysis time to the next.

Writes ``benchmarks/results/old_observation-cpu.json`` (``.md`` beside it).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
from scipy.stats import wilcoxon

from _common import RESULTS, machine
from cycled_osse import WITHHELD, cycle_windows
from genda.atomic import write_file
from genda.grid import Grid
from genda.models.checkpoint import read_checkpoint
from genda.simulator import SimulatorConfig
from genda.trajectory import trajectory_states
from trajectory_osse import old_observation, quick_prior

ROOT = Path(__file__).resolve().parents[1]


def summarise(cases: list[dict[str, float]]) -> dict[str, float | None]:
    """RMS errors with and without the earlier winds over ``cases``, and the paired statistics
    (``None`` where one case leaves them undefined)."""
    without = np.array([c["without"] for c in cases])
    with_old = np.array([c["with"] for c in cases])
    difference = with_old - without
    return {
        "cases": len(cases),
        "rms_error_without": float(np.sqrt(np.mean(without**2))),
        "rms_error_with": float(np.sqrt(np.mean(with_old**2))),
        "ratio": float(np.sqrt(np.mean(with_old**2) / np.mean(without**2))),
        "share_lowered": float(np.mean(difference < 0)),
        "mean_difference": float(difference.mean()),
        "standard_error": float(difference.std(ddof=1) / math.sqrt(difference.size))
        if difference.size > 1
        else None,
        "wilcoxon_p": float(wilcoxon(with_old, without).pvalue) if difference.size > 1 else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prior", help="the trajectory prior (genda train --states K)")
    parser.add_argument("--days", type=float, default=3.0, help="the cycled OSSE's length")
    parser.add_argument(
        "--ends", type=int, default=4, help="analysis times of the last day, 6 h apart (1-4)"
    )
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "cycled_osse")
    parser.add_argument("--quick", action="store_true", help="16 x 32 x 4, 10 hours, 4 members")
    args = parser.parse_args()
    config = SimulatorConfig()
    if args.quick:
        config = SimulatorConfig(nlat=16, nlon=32, layers=4, levels=4)
        args.days, args.ends, args.members, args.steps = 10 / 24, 1, 4, 4
    elif not 1 <= args.ends <= 4:
        parser.error("--ends must be 1 to 4: the ends lie in the last day, 6 h apart")
    elif not args.days >= 1:  # NaN too
        parser.error("--days must be at least 1: the ends lie in the cycled OSSE's last day")
    args.work.mkdir(parents=True, exist_ok=True)
    hours = round(24 * args.days)
    truth_path, truth, windows = cycle_windows(args.work, config, args.days)
    prior = quick_prior(truth_path, args.work) if args.quick else args.prior
    if prior is None:
        parser.error("--prior is needed (a trajectory prior, genda train --states K)")
    states = trajectory_states(Grid.from_dict(read_checkpoint(prior).config["grid"]))
    ends = [hours - 6 * k for k in range(args.ends)][::-1]
    assimilated = windows[hours][1]
    stations = sorted(
        set(assimilated.loc[assimilated["network"] == "radars", "station"]) - set(WITHHELD)
    )
    if args.quick:
        stations = stations[:2]
    started = time.perf_counter()
    cases = old_observation(
        prior, windows, args.members, args.steps, truth, args.work, ends, tuple(stations)
    )
    if not cases:
        raise SystemExit("no radar has winds at both hours of any window end")
    summary = summarise(cases)
    by_station = {
        s: summarise([c for c in cases if c["station"] == s])
        for s in stations
        if any(c["station"] == s for c in cases)
    }
    by_end = {
        str(windows[e][0])[:19]: summarise(
            [c for c in cases if c["time"] == str(windows[e][0])[:19]]
        )
        for e in ends
    }
    print(json.dumps(summary, indent=1))
    payload = {
        "benchmark": "old_observation",
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "settings": {
            "prior": Path(prior).name,
            "states": states,
            "hours_before": states - 1,
            "members": args.members,
            "steps": args.steps,
            "ends": [str(windows[e][0])[:19] for e in ends],
            "stations": stations,
        },
        "wall_seconds": time.perf_counter() - started,
        "summary": summary,
        "by_station": by_station,
        "by_end": by_end,
        "cases": cases,
    }
    if args.quick:
        write_file(args.work / "old_observation-quick.json", json.dumps(payload, indent=2) + "\n")
        return
    out = RESULTS / "old_observation-cpu.json"
    write_file(out, json.dumps(payload, indent=2) + "\n")
    lines = [
        f"# winds {states - 1} h old at the radar, {len(cases)} cases",
        "",
        "| cases of | n | RMS error without | with | share lowered | mean difference | SE |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in {"all": summary, **by_end, **by_station}.items():
        error = "-" if s["standard_error"] is None else f"{s['standard_error']:.2f}"
        lines.append(
            f"| {name} | {s['cases']} | {s['rms_error_without']:.2f} | "
            f"{s['rms_error_with']:.2f} | {s['share_lowered']:.2f} | "
            f"{s['mean_difference']:+.2f} | {error} |"
        )
    write_file(out.with_suffix(".md"), "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
