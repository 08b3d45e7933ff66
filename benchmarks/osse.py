"""Skill of the posterior in an observing-system simulation experiment (OSSE).

    python benchmarks/osse.py [--truth heldout.zarr --archive train.zarr] [--time 2000-02-10T12:00]

Without ``--truth`` and ``--archive`` the two model runs of the shipped
priors' documentation (``docs/training.md``) are made under ``--work`` first
(120 days with seed 1, 20 days with seed 2; about 11 minutes on one CPU
thread) and reused by later runs.

A held-out model run is the truth. The real station catalogue (meteor radars,
lidars) and an MLS-like limb track observe it with their errors
(``genda observe``), two stations are withheld for verification, and every
method makes an ensemble of the same window:

* the diffusion prior without observations (``prior``);
* the diffusion posterior with MMPS, DPS and SDA guidance (``joint3d``), and
  MMPS with the ``layer2d`` prior;
* the classical baselines from the training archive: climatology, localised
  OI and an EnKF with a climatological ensemble.

Each is scored against the truth (``genda evaluate``: CRPS, RMSE, spread,
spread-skill, on the grid and at the withheld stations). Writes
``benchmarks/results/osse-<machine>.json``, the reports under ``--work`` and
prints a table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from _common import print_table, write_result
from genda.assimilation.posterior import PosteriorSettings
from genda.evaluation.report import evaluate_paths
from genda.observations import observe_to_file
from genda.orchestration.assimilate import assimilate_window
from genda.orchestration.baseline import baseline_window
from genda.orchestration.simulate import simulate_archive
from genda.simulator import SimulatorConfig


def _model_run(path: Path, days: float, seed: int) -> Path:
    """``genda simulate --out path --days days --seed seed`` unless ``path`` exists."""
    if not path.exists():
        print(f"simulating {days:g} days with seed {seed} into {path}")
        simulate_archive(path, SimulatorConfig(), days=days, seed=seed)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--truth", type=Path, help="held-out archive (default: made in --work)")
    parser.add_argument("--archive", type=Path, help="training archive (default: made in --work)")
    parser.add_argument("--time", default="2000-02-10T12:00")
    parser.add_argument("--work", type=Path, default=Path("outputs/osse"))
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--layer2d-members", type=int, default=8)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--layer2d-checkpoint", default="default-layer2d")
    parser.add_argument("--withhold", default="Collm,Davis,Boulder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--methods",
        default="prior,mmps,dps,sda,mmps-layer2d,climatology,oi,enkf",
        help="comma-separated subset",
    )
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    args.truth = args.truth or _model_run(work / "heldout.zarr", days=20, seed=2)
    args.archive = args.archive or _model_run(work / "train.zarr", days=120, seed=1)
    obs = work / "obs.parquet"
    drawn = observe_to_file(
        args.truth,
        args.time,
        "radars,lidars,limb",
        obs,
        args.seed,
        withhold=[s for s in args.withhold.split(",") if s],
        overwrite=True,  # the benchmark's own work folder: redrawn every run
    )
    withheld = drawn["paths"]["withheld"]

    rows: list[dict[str, Any]] = []
    for method in args.methods.split(","):
        store = work / f"{method}.zarr"
        start = time.perf_counter()
        if method in ("climatology", "oi", "enkf"):
            summary = baseline_window(
                args.archive,
                obs,
                args.time,
                store,
                method=method,
                members=args.members,
                seed=args.seed,
                overwrite=True,
            )
        else:
            layer2d = method.endswith("layer2d")
            guidance = method.split("-")[0]
            summary = assimilate_window(
                args.layer2d_checkpoint if layer2d else args.checkpoint,
                None if guidance == "prior" else obs,
                args.time,
                store,
                members=args.layer2d_members if layer2d else args.members,
                settings=PosteriorSettings(
                    method="mmps" if guidance == "prior" else guidance,
                    steps=args.steps,
                    batch_size=4,
                ),
                seed=args.seed,
                overwrite=True,
                progress=False,
            )
        seconds = time.perf_counter() - start
        metrics = evaluate_paths(
            store, args.truth, work / f"report-{method}", obs_path=obs, withheld_path=withheld
        )
        row: dict[str, Any] = {"method": method, "members": summary["members"], "seconds": seconds}
        fit = summary.get("fit")
        row["obs_fit"] = fit["rms_normalised_innovation"] if fit else float("nan")
        for name, entry in metrics["ensemble"]["variables"].items():
            total = entry["total"]
            row[f"{name}_crps"] = total["crps"]
            row[f"{name}_rmse"] = total["rmse"]
            row[f"{name}_ssr"] = total["spread_skill"]
        points = (metrics.get("withheld") or {}).get("variables", {})
        for name, entry in points.items():
            row[f"withheld_{name}_crps"] = entry["with_obs_error"]["crps"]
        rows.append(row)
        print_table(f"OSSE at {args.time} (so far)", rows)

    path = write_result(
        "osse",
        rows,
        {
            "time": args.time,
            # file names only: the result says what was run, not where
            "truth": args.truth.name,
            "archive": args.archive.name,
            "observations": drawn["observations"],
            "withheld": drawn["withheld"],
            "steps": args.steps,
            "work": work.name,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
