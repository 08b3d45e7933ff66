"""The main job on the embedded default (``genda demo``).

1. The built-in model makes a held-out truth on the default 32 x 64 x 8
   grid (another seed than the shipped prior's training run).
2. Observations of one window are drawn from it: the real meteor-radar and
   lidar catalogue plus the MLS-like limb track, with their errors; two
   radars (Collm, Davis) are withheld for verification.
3. An EnKF baseline (climatological ensemble from the truth run's other
   days, at least ``exclude_hours`` away) is made for the same window.
4. The window is assimilated with the shipped ``default`` prior through the
   Prefect flow (:func:`genda.orchestration.flows.assimilation_cycle`) on a
   local Ray cluster, written to the Zarr store and evaluated against the
   truth, the withheld radars and the baseline.

Everything lands under ``out_dir``; :class:`DemoResult` says where.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from genda.errors import RunFailedError
from genda.observations.networks import observe_to_file
from genda.orchestration.baseline import baseline_window
from genda.orchestration.config import CycleConfig, RayConfig
from genda.orchestration.simulate import simulate_archive
from genda.simulator import SimulatorConfig
from genda.storage import open_archive

DEMO_NETWORKS = "radars,lidars,mls"
DEMO_WITHHELD = ("Collm", "Davis")


@dataclass
class DemoResult:
    """Where the demo wrote its files and what the window's flow returned."""

    out_dir: Path
    truth: Path
    observations: Path
    withheld: Path | None
    store: Path
    baseline: Path
    window: dict[str, Any] = field(default_factory=dict)


def run_demo(
    out_dir: str | Path,
    *,
    checkpoint: str = "default",
    members: int = 16,
    steps: int = 16,
    workers: int = 2,
    spinup_days: float = 8.0,
    days: float = 2.0,
    seed: int = 2,
    exclude_hours: float = 12.0,
    simulator: SimulatorConfig | None = None,
    progress: bool = True,
) -> DemoResult:
    """Run the demo (module docstring) into ``out_dir``, replacing an earlier demo there.

    Args:
        checkpoint: the prior; its grid must be the simulator's.
        members, steps: ensemble size and sampler steps.
        workers: Ray actors (one torch thread each); 0 samples in this process.
        spinup_days, days: the truth run (the window is at 12 UTC of its last day).
        seed: of the truth run and the observation errors.
        exclude_hours: the baseline's climatology keeps this far from the window.
        simulator: the model's grid and settings (default: the default grid).
    """
    out = Path(out_dir)
    for name in ("truth.zarr", "obs", "ensemble.zarr", "enkf.zarr", "reports"):
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
    out.mkdir(parents=True, exist_ok=True)
    truth = simulate_archive(
        out / "truth.zarr",
        simulator or SimulatorConfig(),
        days=days,
        seed=seed,
        spinup_days=spinup_days,
        progress=progress,
        history=f"genda demo truth (spinup_days={spinup_days}, days={days}, seed={seed})",
    )
    last = np.datetime64(str(open_archive(truth).time.values[-1])[:19], "s")
    time = last.astype("datetime64[D]") + np.timedelta64(12, "h")  # 12 UTC of the last day
    if time > last:
        time -= np.timedelta64(1, "D")
    time = time.astype("datetime64[s]")
    stamp = str(time).replace(":", "")
    obs_path = out / "obs" / f"obs-{stamp}.parquet"
    observed = observe_to_file(truth, time, DEMO_NETWORKS, obs_path, seed, DEMO_WITHHELD)
    withheld = observed["paths"]["withheld"]
    baseline = out / "enkf.zarr"
    baseline_window(
        truth,
        obs_path,
        time,
        baseline,
        method="enkf",
        members=members,
        climatology_size=max(members, 20),
        exclude_hours=exclude_hours,
        seed=seed,
    )
    config = CycleConfig(
        checkpoint=checkpoint,
        observations=str(out / "obs" / "obs-{time:%Y-%m-%dT%H%M%S}.parquet"),
        withheld=(
            str(out / "obs" / "obs-{time:%Y-%m-%dT%H%M%S}-withheld.parquet") if withheld else None
        ),
        start=datetime.fromisoformat(str(time)),
        end=datetime.fromisoformat(str(time)),
        members=members,
        steps=steps,
        store=out / "ensemble.zarr",
        truth=truth,
        reports=out / "reports",
        baselines={"enkf": baseline},
        seed=seed,
        ray=RayConfig(workers=workers),
    )
    from genda.orchestration.flows import assimilation_cycle  # imports Prefect

    (window,) = assimilation_cycle(config)
    if "error" in window:
        raise RunFailedError(f"the demo window failed: {window['error']}")
    return DemoResult(
        out,
        truth,
        obs_path,
        Path(withheld) if withheld else None,
        config.store,
        baseline,
        window,
    )


__all__ = ["DemoResult", "run_demo"]
