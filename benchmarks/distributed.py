"""Ensemble throughput on Ray actors, and the store's write speed against plain files.

    python benchmarks/distributed.py [--members 16] [--steps 8] [--batch-size 2] [--device cpu|cuda]

1. Scaling: one window of MMPS members of the shipped ``default`` prior,
   guided by the station catalogue's radars and lidars plus the MLS track
   drawn from a short run of the built-in model, made by 1 and then 2 Ray
   actors (1 torch thread each on a CPU, one GPU each with ``cuda``) on a
   local cluster. Actors are started and have loaded the prior before the
   clock starts; the time is the scheduler's, from the first task handed out
   to the last member written. Scaling efficiency = rate(2) / (2 rate(1)).
   On a GPU the batch size is probed per device (``--batch-size auto``).
   On a CPU the same sampling also runs in 1 and 2 plain processes (no Ray,
   no store): their efficiency is the machine's own ceiling (shared memory
   bandwidth and caches), and ``efficiency_vs_plain`` is what Ray and the
   store keep of it.
2. Store writes: ``--store-members`` members of a larger grid written with
   :meth:`EnsembleStore.write_members` (sharded, one shard per writer call,
   and unsharded), against the same bytes written as one plain ``.npy``-less
   raw file per member (``ndarray.tofile``). Neither side calls fsync.

Writes ``benchmarks/results/distributed-<machine>.json`` and prints tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import print_table, write_result


def truth_and_observations(root: Path) -> tuple[Path, str]:
    """Observations of one window (and its time) from a short run of the built-in model."""
    from genda.grid import Grid
    from genda.observations import draw_observations, write_observations
    from genda.orchestration.simulate import simulate_archive
    from genda.simulator import SimulatorConfig
    from genda.storage import open_archive

    archive = root / "truth.zarr"
    simulate_archive(archive, SimulatorConfig(), days=0.5, seed=3, spinup_days=2, progress=False)
    truth = open_archive(archive)
    time_ = str(truth.time.values[6])[:19]
    obs = draw_observations(truth, Grid.from_dataset(truth), time_, "radars,lidars,mls")
    path = root / "obs.parquet"
    write_observations(obs, path)
    return path, time_


def scaling(
    args: argparse.Namespace, root: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows for 1 and 2 actors, and for 1 and 2 plain processes (CPU only)."""
    import ray

    from genda.assimilation.posterior import PosteriorSettings
    from genda.distributed import ActorPool, WorkerSpec
    from genda.orchestration.assimilate import assimilate_window
    from genda.orchestration.config import resolve_batch_size

    obs, time_ = truth_and_observations(root)
    cuda = args.device == "cuda"
    size, auto = resolve_batch_size("auto" if args.batch_size == "auto" else int(args.batch_size))
    settings = PosteriorSettings(steps=args.steps, batch_size=size)
    rows = []
    ray.init(
        num_cpus=max(2, os.cpu_count() or 2),
        include_dashboard=False,
        logging_level="ERROR",
        _temp_dir=tempfile.mkdtemp(prefix="ray-", dir="/tmp"),
    )
    try:
        for actors in (1, 2):
            pool = ActorPool.start(WorkerSpec("default", args.device, threads=1), actors)
            try:
                made = assimilate_window(
                    "default",
                    obs,
                    time_,
                    root / f"actors{actors}.zarr",
                    members=args.members,
                    settings=settings,
                    pool=pool,
                    auto_batch=auto or cuda,
                    progress=True,
                )
            finally:
                pool.shutdown()
            assert made.fit is not None  # the window has observations
            rows.append(
                {
                    "actors": actors,
                    "device": args.device,
                    "members": args.members,
                    "steps": args.steps,
                    "batch_size": made.batch_size,
                    "seconds": made.seconds,
                    "members_per_min": 60 * made.members_per_second,
                    "peak_memory_mib": made.peak_memory_mib,
                    "peak_kind": "cuda_max_allocated" if cuda else "actor_peak_rss",
                    "fit": made.fit.rms_normalised_innovation,
                }
            )
    finally:
        ray.shutdown()
    rate = {row["actors"]: row["members_per_min"] for row in rows}
    for row in rows:
        row["scaling_efficiency"] = rate[row["actors"]] / (row["actors"] * rate[1])
    plain: list[dict[str, Any]] = []
    if not cuda:
        plain = plain_processes(obs, time_, settings, args.members)
        ceiling = {row["processes"]: row["scaling_efficiency"] for row in plain}
        for row in rows:
            row["efficiency_vs_plain"] = row["scaling_efficiency"] / ceiling[row["actors"]]
    return rows, plain


def _plain_worker(args: tuple[Any, ...]) -> float:
    """One plain process: load the prior, build the guided denoiser, wait, sample, time it."""
    obs_path, time_, settings, members, barrier = args
    import torch

    torch.set_num_threads(1)
    from genda.assimilation.posterior import posterior_denoiser, sample_members, window_seed
    from genda.models.checkpoint import load_checkpoint
    from genda.observations import read_observations, validate_observations

    prior = load_checkpoint("default")
    obs = validate_observations(read_observations(obs_path), prior.grid)
    when = np.datetime64(time_)
    denoiser = posterior_denoiser(prior, obs, settings, time=when)
    seed = window_seed(0, when)
    barrier.wait()
    start = time.perf_counter()
    for lo in range(0, len(members), settings.batch_size):
        batch = members[lo : lo + settings.batch_size]
        sample_members(prior, denoiser, batch, seed, settings, guided=True, time=when)
    return time.perf_counter() - start


def plain_processes(obs: Path, time_: str, settings: Any, members: int) -> list[dict[str, Any]]:
    """The machine's own ceiling: the same work in 1 and 2 plain processes, no Ray, no store."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    rows = []
    with context.Manager() as manager:
        for processes in (1, 2):
            barrier = manager.Barrier(processes)
            shares = [list(range(members))[p::processes] for p in range(processes)]
            with context.Pool(processes) as pool:
                walls = pool.map(
                    _plain_worker, [(obs, time_, settings, share, barrier) for share in shares]
                )
            rows.append(
                {
                    "processes": processes,
                    "members": members,
                    "steps": settings.steps,
                    "batch_size": settings.batch_size,
                    "seconds": max(walls),
                    "members_per_min": 60 * members / max(walls),
                }
            )
    rate = {row["processes"]: row["members_per_min"] for row in rows}
    for row in rows:
        row["scaling_efficiency"] = rate[row["processes"]] / (row["processes"] * rate[1])
    return rows


def store_writes(members: int, root: Path) -> list[dict[str, Any]]:
    from genda.grid import Grid
    from genda.storage import EnsembleStore

    grid = Grid.gaussian(64, 128, 32)
    rng = np.random.default_rng(0)
    fields = rng.standard_normal((members, *grid.shape), dtype=np.float32)
    megabytes = fields.nbytes / 1e6
    rows = []
    for per_shard in (16, 1):
        path = root / f"store-{per_shard}.zarr"
        store = EnsembleStore.create(path, grid, members, members_per_shard=per_shard)
        store.add_window("2000-01-01T00:00", {"benchmark": "store writes"})
        start = time.perf_counter()
        for batch in store.shard_batches():
            store.write_members("2000-01-01T00:00", batch, fields[batch])
        seconds = time.perf_counter() - start
        files = sum(len(f) for _, _, f in os.walk(path))
        rows.append(
            {
                "writer": f"EnsembleStore, {per_shard} member(s) per shard",
                "megabytes": megabytes,
                "seconds": seconds,
                "mb_per_s": megabytes / seconds,
                "files": files,
            }
        )
    plain = root / "plain"
    plain.mkdir()
    start = time.perf_counter()
    for m in range(members):
        fields[m].tofile(plain / f"member{m}.raw")
    seconds = time.perf_counter() - start
    rows.append(
        {
            "writer": "plain file per member",
            "megabytes": megabytes,
            "seconds": seconds,
            "mb_per_s": megabytes / seconds,
            "files": members,
        }
    )
    for row in rows:
        row["speed_vs_plain"] = row["mb_per_s"] / rows[-1]["mb_per_s"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", default="2", help="members per batch, or 'auto'")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--store-members", type=int, default=32)
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local cluster on this machine only
    from genda.assimilation.posterior import PosteriorSettings

    root = Path(tempfile.mkdtemp(prefix="genda-bench-distributed-"))
    try:
        scaled, plain = scaling(args, root)
        writes = store_writes(args.store_members, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print_table("members per minute on Ray actors (writing the store)", scaled)
    if plain:
        print_table("the same sampling in plain processes (no Ray, no store)", plain)
    print_table("store writes (64 x 128 x 32 grid, float32)", writes)
    path = write_result(
        "distributed",
        scaled,
        {
            "plain_processes": plain,
            "store_writes": writes,
            "settings": dict(vars(args)),
            # the sampling settings besides the command's: genda assimilate's defaults
            "posterior": {
                key: value
                for key, value in dataclasses.asdict(PosteriorSettings()).items()
                if key not in ("steps", "batch_size")
            },
        },
    )
    print(f"wrote {path.name}")


if __name__ == "__main__":
    main()
