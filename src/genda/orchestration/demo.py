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

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from genda.atomic import remove_path
from genda.distributed.cluster import check_cluster, ray_address
from genda.errors import OutputExistsError, RunFailedError
from genda.observations.observe import observe_to_file
from genda.orchestration.baseline import baseline_window
from genda.orchestration.config import CycleConfig, RayConfig
from genda.orchestration.simulate import simulate_archive
from genda.ownership import DEMO_MARKER, Kind, check_replaceable, is_empty_directory, written_kind
from genda.simulator import SimulatorConfig
from genda.storage import open_archive

DEMO_NETWORKS = "radars,lidars,mls"
DEMO_WITHHELD = ("Collm", "Davis")


DEMO_STORES: dict[str, Kind] = {
    "truth.zarr": "archive",
    "ensemble.zarr": "ensemble store",
    "enkf.zarr": "ensemble store",
}
"""The stores a demo folder holds, replaced by every run."""


def claim_demo_folder(out: Path) -> None:
    """Make ``out`` a demo folder (marked by :data:`~genda.ownership.DEMO_MARKER`).

    Raises:
        OutputExistsError: ``out`` is a file, or a non-empty directory that an
            earlier demo did not make (the demo never writes into a foreign folder).
    """
    if out.exists() and not is_empty_directory(out) and written_kind(out) != "demo folder":
        what = "a file" if not out.is_dir() else "a folder that genda demo did not make"
        raise OutputExistsError(
            f"{out} is {what}; the demo writes only into a new or empty folder, or one "
            "it made before: choose another folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).write_text(
        "This folder was made by genda demo; a rerun replaces its stores.\n", encoding="utf-8"
    )


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
    insecure: bool = False,
) -> DemoResult:
    """Run the demo (module docstring) into ``out_dir``, replacing an earlier demo there.

    ``out_dir`` must be new, empty, or a demo folder (:func:`claim_demo_folder`);
    nothing the demo did not write is removed.

    Args:
        checkpoint: the prior; its grid must be the simulator's.
        members, steps: ensemble size and sampler steps.
        workers: Ray actors (one torch thread each); 0 samples in this process.
        spinup_days, days: the truth run (the window is at 12 UTC of its last day).
        seed: of the truth run and the observation errors.
        exclude_hours: the baseline's climatology keeps this far from the window.
        simulator: the model's grid and settings (default: the default grid).
        progress: bars of the simulation and of the sampling's steps (the
            latter on a terminal only).
        insecure: allow a local Ray cluster without token authentication
            (:func:`genda.distributed.cluster.check_local_cluster`).
    """
    out = Path(out_dir)
    if workers:  # a refused or unreachable cluster fails before minutes of simulation
        check_cluster(ray_address(None), insecure=insecure)
    _clear_demo_stores(out)
    truth = simulate_archive(
        out / "truth.zarr",
        simulator or SimulatorConfig(),
        days=days,
        seed=seed,
        spinup_days=spinup_days,
        progress=progress,
        history=f"genda demo truth (spinup_days={spinup_days}, days={days}, seed={seed})",
    )
    time = _window_time(truth)
    obs_path = out / "obs" / f"obs-{str(time).replace(':', '')}.parquet"
    observed = observe_to_file(
        truth, time, DEMO_NETWORKS, obs_path, seed, DEMO_WITHHELD, overwrite=True
    )
    withheld = observed.withheld_path
    baseline = _enkf_baseline(
        truth, obs_path, time, out / "enkf.zarr", members, exclude_hours, seed
    )
    config = _cycle_config(
        out,
        time,
        truth,
        baseline,
        withheld=bool(withheld),
        checkpoint=checkpoint,
        members=members,
        steps=steps,
        seed=seed,
        ray=RayConfig(workers=workers, insecure=insecure),
    )
    from genda.orchestration.flows import CycleError, assimilation_cycle  # imports Prefect

    try:
        (window,) = assimilation_cycle(config, progress=progress)
    except CycleError as failed:
        raise RunFailedError(f"the demo window failed: {failed.results[0]['error']}") from None
    return DemoResult(
        out,
        truth,
        obs_path,
        Path(withheld) if withheld else None,
        config.store,
        baseline,
        window,
    )


def _cycle_config(
    out: Path,
    time: np.datetime64,
    truth: Path,
    baseline: Path,
    *,
    withheld: bool,
    checkpoint: str,
    members: int,
    steps: int,
    seed: int,
    ray: RayConfig,
) -> CycleConfig:
    """The one-window cycle of the demo: its observations, store, reports and baseline in ``out``."""
    tables = str(out / "obs" / "obs-{time:%Y-%m-%dT%H%M%S}")
    return CycleConfig(
        checkpoint=checkpoint,
        observations=tables + ".parquet",
        withheld=tables + "-withheld.parquet" if withheld else None,
        start=datetime.fromisoformat(str(time)),
        end=datetime.fromisoformat(str(time)),
        members=members,
        steps=steps,
        store=out / "ensemble.zarr",
        truth=truth,
        reports=out / "reports",
        baselines={"enkf": baseline},
        seed=seed,
        ray=ray,
    )


def _clear_demo_stores(out: Path) -> None:
    """Claim ``out`` as a demo folder and remove the demo's own stores in it.

    A stale ensemble store would be reused as complete, so the stores are
    replaced whole, each checked to be genda's of that kind first (all before
    any is removed); obs/ and reports/ are never removed: only the demo's own
    files in them are rewritten.
    """
    claim_demo_folder(out)
    for name, kind in DEMO_STORES.items():
        check_replaceable(out / name, kind, overwrite=True)
    for name in DEMO_STORES:
        remove_path(out / name)


def _window_time(truth: Path) -> np.datetime64:
    """12 UTC of the truth run's last day (of the day before, if the run ends earlier)."""
    last = np.datetime64(str(open_archive(truth).time.values[-1])[:19], "s")
    time = last.astype("datetime64[D]") + np.timedelta64(12, "h")
    if time > last:
        time -= np.timedelta64(1, "D")
    return time.astype("datetime64[s]")


def _enkf_baseline(
    truth: Path,
    obs_path: Path,
    time: np.datetime64,
    store: Path,
    members: int,
    exclude_hours: float,
    seed: int,
) -> Path:
    """The EnKF baseline of the demo's window, written to ``store``."""
    baseline_window(
        truth,
        obs_path,
        time,
        store,
        method="enkf",
        members=members,
        climatology_size=max(members, 20),
        exclude_hours=exclude_hours,
        # The tuned defaults are for K = 200 states of a 120-day archive; the demo's
        # 20 states of a 2-day run keep the localisation of docs/cycles.md's numbers.
        horizontal_km=1500.0,
        vertical_km=15.0,
        seed=seed,
    )
    return store


__all__ = ["DemoResult", "run_demo"]
