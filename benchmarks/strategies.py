"""The 3D-versus-layers study: memory, time and quality of posterior members per strategy.

    python benchmarks/strategies.py [--grids 16x32,32x64] [--levels 8,16,32,64]
        [--variants joint3d,layer2d-w0,layer2d-w1,layer2d-w2] [--budget-s 120]
        [--members 8] [--steps 12] [--chunks 16,4] [--chunk-members 4] [--chunk-grids G]
        [--skip GRID-LN-VARIANT,...] [--denoiser-skip scalar|gaussian] [--coordinates whitened|grid]
        [--jobs 2] [--device cpu|cuda]
        [--precision fp32|tf32|bf16] [--compile MODE] [--max-batch N] [--work DIR] [--quick]

For every horizontal grid and number of levels ``L``, one small prior per
variant is trained on the built-in model with the same budget of wall-clock
training time (``--budget-s`` on one device or CPU thread: the step time is
measured first, then the cosine schedule is set to the number of steps that
fits). Every prior then makes a posterior ensemble of one window from the
same observations (MMPS guidance with the network's Jacobian as its Tweedie covariance), and
each ensemble is measured:

* **time** per posterior member (wall time of the sampling over ``--members``);
* **memory** per member: the peak above the loaded model while sampling,
  divided by the members sampled at once (CUDA: ``max_memory_allocated``;
  CPU: the process's peak RSS);
* **FLOPs** per member (``_common.FlopCount`` over one member sampled
  separately, forward and backward) and the achieved rate; on CUDA also its
  fraction of the device's dense bf16 peak;
* **quality** against the truth (the held-out run at the window time): CRPS
  over the grid divided by the model data's standard deviation, averaged over
  u, v and T (``crps_norm``), and the spread-skill ratio (``ssr``); against
  model data (the held-out run): the mean error of the vertical correlation
  of eddies (``vcorr_error``) and of the kinetic-energy spectra
  (``spectrum_error``), :mod:`genda.evaluation.structure`.

Data. The built-in model runs once per horizontal grid with 32 isentropic
layers and writes 64 output levels (80-115 km): a training run (seed 1) and a
held-out run (seed 2, the truth and the model data). The archives for fewer
levels are the same runs interpolated linearly in altitude, so every ``L``
sees the same atmosphere; the observations (meteor radars, lidars, an
MLS-like limb track; two stations withheld) are drawn once per grid from the
64-level truth and are the same for every ``L`` and variant.

Variants: ``joint3d`` (variables x levels as channels) and ``layer2d-wK``
(one layer at a time seeing ``K`` neighbours each side; ``K = 0`` has no
vertical coupling in the network). The U-Net is the same small one for all
(``UNET``), in whitened coordinates with a time-of-day mean (``--coordinates``,
the default since the shipped priors use them; ``grid``: genda 0.1's coordinates),
with EDM's scalar skip (the results in ``benchmarks/results``
were made so) or, with ``--denoiser-skip gaussian``, the Gaussian skip of
:mod:`genda.models.gaussian_skip`. Each stage runs in its own process (``--jobs`` at a time, one
CPU thread each) and is cached under ``--work``: a rerun only does what is
missing; the file names hold the budget, members and steps, so other
settings make new results (``--fresh`` redoes everything).

layer2d's memory knob: ``layer2d-w1`` at the most levels is sampled again
with ``--chunks`` layer samples per network call (and unchunked), with
``--chunk-members`` members. GPU: ``--precision`` (TF32 matrix products or
bf16 autocast), ``--compile`` (``torch.compile`` of the network;
``reduce-overhead`` uses CUDA graphs) and ``--max-batch`` (the most members
per batch that fit, searched by doubling and bisection).

Writes ``benchmarks/results/strategies-<machine>.json``, a markdown table
``strategies-<machine>.md`` beside it and PNG plots under
``docs/figures/strategies/`` (``--figures``), and prints the table.
``--quick`` is a tiny study for tests (one grid, two ``L``, short budget),
written under ``--work`` only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from _common import (
    RESULTS,
    FlopCount,
    machine,
    machine_tag,
    peak_rss_mib,
    print_table,
    reset_peak_rss,
    rss_now_mib,
)

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "docs" / "figures" / "strategies"

GRIDS: tuple[tuple[int, int], ...] = ((16, 32), (32, 64))
LEVELS: tuple[int, ...] = (8, 16, 32, 64)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "joint3d": ("joint3d", {}),
    "layer2d-w0": ("layer2d", {"window": 0}),
    "layer2d-w1": ("layer2d", {"window": 1}),
    "layer2d-w2": ("layer2d", {"window": 2}),
}
UNET: dict[str, Any] = {"base_channels": 16, "channel_mult": [1, 2, 2], "noise_embedding_dim": 64}
"""The same small U-Net for every variant."""
MODEL_LAYERS = 32
"""Isentropic layers of the built-in model runs (its vertical resolution)."""
SOURCE_LEVELS = 64
"""Output levels of the runs; fewer levels are interpolated from these."""
DATA = {"spinup_days": 8.0, "train_days": 16.0, "train_every_hours": 2.0, "heldout_days": 2.0}
HELDOUT_EVERY_HOURS = 3.0
WINDOW_HOURS = 24.0
"""The assimilated window is this far into the held-out run."""
NETWORKS = "radars,lidars,limb"
WITHHOLD = ("Collm", "Davis")
LAYER_SAMPLES_PER_STEP = 64
"""layer2d batches ``max(1, 64 // L)`` fields per step (about 64 layer samples), joint3d 16 fields."""
JOINT_BATCH = 16
CHUNK_COLUMNS = (
    "grid",
    "levels",
    "variant",
    "layers_per_batch",
    "s_per_member",
    "mib_per_member",
    "peak_above_model_mib",
    "gflop_per_member",
)
QUICK_DATA = {"spinup_days": 1.0, "train_days": 2.0, "train_every_hours": 3.0, "heldout_days": 2.0}
"""The model runs of ``--quick`` (8 levels from 8 layers)."""
TABLE_COLUMNS = (
    "grid",
    "levels",
    "variant",
    "parameters",
    "train_steps",
    "s_per_member",
    "mib_per_member",
    "gflop_per_member",
    "crps_norm",
    "ssr",
    "vcorr_error",
    "vcorr_error_truth",
    "spectrum_error",
    "spectrum_error_truth",
    "obs_fit",
)


# ------------------------------------------------------------------------ helpers
def _grid_tag(nlat: int, nlon: int) -> str:
    return f"{nlat}x{nlon}"


def _run_child(
    stage: str, spec: dict[str, Any], log: Path, script: str | Path = __file__
) -> dict[str, Any]:
    """Run ``stage`` of ``script`` (this one) in its own process; its last stdout line is JSON."""
    command = [sys.executable, str(script), "--child", stage, json.dumps(spec)]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as err:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=err, text=True)
    if done.returncode:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{stage} {spec.get('name', '')} failed (log {log}):\n{tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _parallel(jobs: int, tasks: list[tuple[str, Callable[[], Any]]], desc: str) -> dict[str, Any]:
    """Run ``(name, thunk)`` tasks ``jobs`` at a time, with a progress bar."""
    results: dict[str, Any] = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool, tqdm(total=len(tasks), desc=desc) as bar:
        futures = {pool.submit(thunk): name for name, thunk in tasks}
        for future in futures:
            results[futures[future]] = future.result()
            bar.update()
    return results


# -------------------------------------------------------------------------- data
def make_data(spec: dict[str, Any]) -> dict[str, Any]:
    """Child: the two model runs of one horizontal grid, every ``L`` and the observations."""
    from genda.grid import Grid
    from genda.observations import observe_to_file
    from genda.orchestration.simulate import simulate_archive
    from genda.simulator import SimulatorConfig, Snapshot
    from genda.storage import open_archive, write_archive

    work = Path(spec["dir"])
    nlat, nlon = spec["grid"]
    data = spec["data"]
    config = SimulatorConfig(
        nlat=nlat,
        nlon=nlon,
        layers=spec["model_layers"],
        levels=spec["source_levels"],
        device=spec["device"],
    )
    # 32 layers are thinner than the model's default 8: half its automatic step keeps
    # them positive (at 32 x 64 the automatic step thins the top layer away in 20 days)
    if spec["model_layers"] > 16:
        config = dataclasses.replace(config, dt_seconds=config.time_step / 2)
    runs = {
        "train": (1, data["train_days"], data["train_every_hours"]),
        "heldout": (2, data["heldout_days"], HELDOUT_EVERY_HOURS),
    }
    source: dict[str, Path] = {}
    for name, (seed, days, every) in runs.items():
        path = work / f"{name}-L{spec['source_levels']}.zarr"
        if not path.exists():
            simulate_archive(
                path,
                config,
                days=days,
                seed=seed,
                spinup_days=data["spinup_days"],
                every_hours=every,
                progress=False,
            )
        source[name] = path
    for levels in spec["levels"]:
        grid = Grid.gaussian(nlat, nlon, levels)
        for name, path in source.items():
            out = work / f"{name}-L{levels}.zarr"
            if out.exists():
                continue
            ds = open_archive(path)
            attrs = dict(ds.attrs)
            attrs["history"] = (
                f"{attrs.get('history', '')}; interpolated linearly in altitude "
                f"from {spec['source_levels']} to {levels} levels"
            )
            low = ds[list(grid.variables)].interp(altitude=grid.altitude)
            values = np.stack([low[v].values for v in grid.variables], axis=1)
            snapshots = (
                Snapshot(t, torch.from_numpy(values[i])) for i, t in enumerate(ds["time"].values)
            )
            write_archive(out, snapshots, grid, attrs=attrs, progress=False)
    heldout = open_archive(source["heldout"])
    when = heldout["time"].values[0] + np.timedelta64(int(WINDOW_HOURS * 3600), "s")
    obs = work / "obs.parquet"
    drawn = observe_to_file(
        source["heldout"], when, NETWORKS, obs, seed=0, withhold=WITHHOLD, overwrite=True
    )
    return {
        "time": str(np.datetime64(when, "s")),
        "observations": drawn.observations,
        "withheld": drawn.withheld,
    }


# ---------------------------------------------------------------------- training
def train_batch_size(strategy: str, levels: int) -> int:
    """Fields per training step: :data:`JOINT_BATCH`, or about 64 layer samples for layer2d."""
    return JOINT_BATCH if strategy == "joint3d" else max(1, LAYER_SAMPLES_PER_STEP // levels)


def _train_config(strategy: str, levels: int, steps: int, device: str) -> Any:
    from genda.models.training import TrainConfig

    return TrainConfig(
        steps=steps,
        batch_size=train_batch_size(strategy, levels),
        lr=1e-3,
        warmup_steps=max(1, steps // 10),
        val_every=steps,
        val_samples=8,
        log_every=max(1, steps // 20),
        checkpoint_every=steps,
        device=device,
    )


def time_training_step(
    strategy: str, options: dict[str, Any], grid: Any, unet: dict[str, Any], device: str
) -> float:
    """Median seconds of one optimisation step of this variant (synthetic batch)."""
    from genda.models.diffusion import EDMDenoiser
    from genda.models.strategies import build_backbone, get_strategy
    from genda.models.training import EMA, optimization_step, resolve_device

    config = _train_config(strategy, grid.nlevels, 1000, device)
    target = resolve_device(device)
    torch.manual_seed(0)
    model = EDMDenoiser(build_backbone(get_strategy(strategy, **options), grid, **unet))
    model = model.to(target).train()
    ema = EMA(model, config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    x0 = torch.randn((config.batch_size, *grid.shape)).to(target)
    slots = list(range(config.batch_size))
    times = []
    for index in range(5):
        tick = time.perf_counter()
        optimization_step(model, model, optimizer, ema, x0, slots, index, config, target)
        if target.type == "cuda":
            torch.cuda.synchronize(target)
        times.append(time.perf_counter() - tick)
    return float(np.median(times[1:]))


def train_variant(spec: dict[str, Any]) -> dict[str, Any]:
    """Child: train one variant for the wall-clock budget and write its checkpoint."""
    from genda.grid import Grid
    from genda.orchestration.train import train_prior

    torch.set_num_threads(1)
    strategy, options = VARIANTS[spec["variant"]]
    nlat, nlon = spec["grid"]
    grid = Grid.gaussian(nlat, nlon, spec["levels"])
    step_s = time_training_step(strategy, options, grid, spec["unet"], spec["device"])
    steps = max(10, int(spec["budget_s"] / step_s))
    config = _train_config(strategy, spec["levels"], steps, spec["device"])
    tick = time.perf_counter()
    run = train_prior(
        spec["archive"],
        spec["out"],
        strategy=strategy,
        strategy_options=options,
        architecture=spec["unet"],
        config=config,
        val_gap_hours=12.0,
        skip=None if spec.get("coordinates") == "whitened" else spec["skip"],
        coordinates=spec.get("coordinates", "grid"),
        overwrite=True,
        progress=False,
    )
    result = run.result
    return {
        "step_s": step_s,
        "train_steps": steps,
        "train_batch": config.batch_size,
        "train_wall_s": time.perf_counter() - tick,
        "train_loop_s": result.wall_seconds,
        "val_loss_start": result.initial_val_loss,
        "val_loss": result.val_loss,
    }


# ------------------------------------------------------------------------ posterior
def sample_variant(spec: dict[str, Any]) -> dict[str, Any]:
    """Child: sample the posterior members of one variant; time, memory, FLOPs and quality."""
    from genda.assimilation.posterior import (
        PosteriorSettings,
        observation_fit,
        posterior_members,
        window_seed,
    )
    from genda.distributed.work import set_layers_per_batch
    from genda.evaluation.scores import score_members
    from genda.evaluation.structure import (
        eddy_correlation_mean_abs_difference,
        spectrum_mean_abs_log_ratio,
    )
    from genda.models.checkpoint import load_checkpoint
    from genda.observations import read_observations, validate_observations
    from genda.storage import open_archive

    torch.set_num_threads(1)
    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    prior = load_checkpoint(spec["checkpoint"], device=device)
    if spec.get("layers_per_batch"):
        set_layers_per_batch(prior, spec["layers_per_batch"])
    grid = prior.grid
    obs = validate_observations(read_observations(spec["obs"]), grid)
    when = np.datetime64(spec["time"])
    seed = window_seed(0, when)
    members = list(range(spec["members"]))
    # MMPS with the network's Jacobian: the path whose memory and time depend on the
    # strategy (the whitened prior's Gaussian covariance, the default for whitened
    # priors, calls the network forward only)
    settings = PosteriorSettings(
        method="mmps", covariance="jacobian", steps=spec["steps"], batch_size=len(members)
    )
    precision = spec.get("precision", "fp32")
    set_precision(precision)
    if spec.get("compile"):
        network = prior.denoiser.backbone.network  # type: ignore[union-attr]
        prior.denoiser.backbone.network = torch.compile(network, mode=spec["compile"])  # type: ignore[union-attr]

    def run(indices: list[int], run_settings: PosteriorSettings) -> torch.Tensor:
        with autocast(device, precision):
            return posterior_members(
                prior, obs, indices, seed, run_settings, device=device, time=when
            )

    # warm-up before measuring (allocator, kernels, compilation): on the CPU one member,
    # so that the peak RSS of the measured run is its own
    run(members if cuda else [0], dataclasses.replace(settings, steps=2, batch_size=len(members)))
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    base_mib = torch.cuda.memory_allocated(device) / 2**20 if cuda else rss_now_mib() or 0.0
    peak_reset = cuda or reset_peak_rss()  # else the peak holds the loading's too
    tick = time.perf_counter()
    fields = run(members, settings)
    if cuda:
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - tick
    peak_mib = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else peak_rss_mib()
    with FlopCount() as counter:
        run([0], dataclasses.replace(settings, batch_size=1))
    flops = counter.total
    largest = None
    if cuda and spec.get("max_batch"):
        largest = largest_fitting(
            lambda n: run(list(range(n)), dataclasses.replace(settings, steps=2, batch_size=n)),
            start=len(members),
            limit=spec["max_batch"],
        )

    heldout = open_archive(spec["heldout"])
    truth = heldout.sel(time=when)
    weights = grid.area_weights()[:, None]
    quality: dict[str, Any] = {}
    crps_norm = []
    ssr = []
    members_np = fields.double().numpy()
    for index, name in enumerate(grid.variables):
        scale = float(heldout[name].std())
        scores = score_members(members_np[:, index], truth[name].values, weights)
        quality[f"{name}_crps"] = scores["crps"]
        quality[f"{name}_ssr"] = scores["spread_skill"]
        crps_norm.append(scores["crps"] / scale)
        ssr.append(scores["spread_skill"])
    model = {name: heldout[name].values for name in grid.variables}
    sampled = {name: members_np[:, i] for i, name in enumerate(grid.variables)}
    vcorr = eddy_correlation_mean_abs_difference(sampled, model, grid)
    spectra = spectrum_mean_abs_log_ratio(sampled["u"], sampled["v"], model["u"], model["v"], grid)
    fit = observation_fit(fields, obs, grid)
    return {
        "parameters": sum(p.numel() for p in prior.denoiser.parameters()),
        "members": len(members),
        "sampling_steps": spec["steps"],
        "s_per_member": wall / len(members),
        "peak_above_model_mib": peak_mib - base_mib,
        "mib_per_member": (peak_mib - base_mib) / len(members),
        "peak_kind": "cuda_max_allocated"
        if cuda
        else "process_peak_rss" + ("" if peak_reset else "_since_start"),
        "gflop_per_member": flops / 1e9,
        "gflop_per_s": flops / 1e9 / (wall / len(members)),
        "precision": precision,
        "compile": spec.get("compile"),
        "fraction_of_bf16_peak": fraction_of_peak(flops * len(members) / wall, device),
        "max_members_per_batch": largest,
        "crps_norm": float(np.mean(crps_norm)),
        "ssr": float(np.mean(ssr)),
        "vcorr_error": float(np.mean(list(vcorr.values()))),
        "vcorr_error_by_variable": vcorr,
        "spectrum_error": spectra,
        "obs_fit": fit["rms_normalised_innovation"],
        **quality,
    }


# --------------------------------------------------------------------------- GPU
BF16_PEAK_TFLOPS: dict[str, float] = {
    "H100 PCIe": 756.0,
    "H100": 989.4,
    "H200": 989.4,
    "A100": 312.0,
    "L40S": 362.1,
}
"""Dense bf16 tensor-core peak by device name (NVIDIA data sheets; SXM unless named)."""


def fraction_of_peak(flop_per_s: float, device: torch.device) -> float | None:
    """Achieved FLOP/s over the device's dense bf16 peak; ``None`` off CUDA or for an unknown GPU."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peak in BF16_PEAK_TFLOPS.items():  # "H100 PCIe" before "H100"
        if key in name:
            return flop_per_s / (peak * 1e12)
    return None


def set_precision(precision: str) -> None:
    """``fp32`` (full float32 matrix products), ``tf32`` (TF32 tensor cores) or ``bf16`` (autocast)."""
    if precision not in ("fp32", "tf32", "bf16"):
        raise ValueError(f"precision must be fp32, tf32 or bf16, got {precision!r}")
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision == "tf32"


def autocast(device: torch.device, precision: str) -> Any:
    """bf16 autocast of the denoiser's operators for ``precision == "bf16"``, else nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def largest_fitting(attempt: Callable[[int], Any], start: int, limit: int) -> int:
    """The largest ``n <= limit`` for which ``attempt(n)`` does not run out of memory.

    Doubles from ``start`` until an attempt fails, then bisects; ``attempt``
    is assumed monotone (fits for every smaller ``n``). Returns 0 if even 1
    does not fit.
    """

    def fits(n: int) -> bool:
        try:
            attempt(n)
            return True
        except torch.OutOfMemoryError:
            return False
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    low, high = 0, None  # low fits (0 trivially), high does not
    n = max(1, min(start, limit))
    while high is None:
        if fits(n):
            low = n
            if n >= limit:
                return n
            n = min(2 * n, limit)
        else:
            high = n
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return low


def truth_reference(heldout: Path, when: str) -> dict[str, float]:
    """The structure scores of the truth itself: the floor a perfect ensemble would reach.

    One field at the window time against all the model data, with the
    definitions of :mod:`genda.evaluation.structure`: how far one true field
    is from the model data's statistics, the sampling noise of the scores.
    """
    from genda.evaluation.structure import (
        eddy_correlation_mean_abs_difference,
        spectrum_mean_abs_log_ratio,
    )
    from genda.grid import Grid
    from genda.storage import open_archive

    ds = open_archive(heldout)
    grid = Grid.from_dataset(ds)
    model = {name: ds[name].values for name in grid.variables}
    truth = {name: ds[name].sel(time=np.datetime64(when)).values[None] for name in grid.variables}
    vcorr = eddy_correlation_mean_abs_difference(truth, model, grid)
    return {
        "vcorr_error_truth": float(np.mean(list(vcorr.values()))),
        "spectrum_error_truth": spectrum_mean_abs_log_ratio(
            truth["u"], truth["v"], model["u"], model["v"], grid
        ),
    }


CHILDREN: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "data": make_data,
    "train": train_variant,
    "sample": sample_variant,
}


# ------------------------------------------------------------------------ report
def markdown_table(rows: list[dict[str, Any]], columns: Iterable[str] = TABLE_COLUMNS) -> str:
    """The rows as a GitHub markdown table (numbers to 3-4 significant digits)."""
    columns = list(columns)

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "-" if math.isnan(value) else f"{value:.3g}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "-")) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


PLOTS = (
    ("mib_per_member", "peak memory per member (MiB)", True),
    ("s_per_member", "time per member (s)", True),
    ("crps_norm", "CRPS / model std", False),
    ("ssr", "spread-skill ratio", False),
    ("vcorr_error", "vertical correlation error", False),
    ("spectrum_error", "spectrum error |ln ratio|", False),
)


def plot(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """One PNG per quantity: value against levels, a panel per grid, a line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    grids = sorted({r["grid"] for r in rows}, key=lambda g: int(g.split("x")[0]))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    paths = []
    for key, label, log in PLOTS:
        fig, axes = plt.subplots(1, len(grids), figsize=(4.2 * len(grids), 3.4), squeeze=False)
        for ax, grid in zip(axes[0], grids, strict=True):
            for variant in variants:
                points = sorted(
                    (r["levels"], r[key])
                    for r in rows
                    if r["grid"] == grid and r["variant"] == variant
                )
                if points:
                    ax.plot(*zip(*points, strict=True), marker="o", label=variant)
            ax.set_xscale("log", base=2)
            if log:
                ax.set_yscale("log")
            if key == "ssr":
                ax.axhline(1.0, color="0.5", lw=0.8, ls="--")
            ax.set_xlabel("levels L")
            ax.set_title(f"{grid} grid")
            ax.set_ylabel(label)
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        path = out / f"{key}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_chunks(rows: list[dict[str, Any]], out: Path) -> Path:
    """Memory and time per member of layer2d against layer samples per network call."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.4))
    for grid in sorted({r["grid"] for r in rows}, key=lambda g: int(g.split("x")[0])):
        points = sorted((r["layers_per_batch"], r) for r in rows if r["grid"] == grid)
        chunks = [c for c, _ in points]
        label = f"{grid} x {points[0][1]['levels']}"
        axes[0].plot(chunks, [r["mib_per_member"] for _, r in points], marker="o", label=label)
        axes[1].plot(chunks, [r["s_per_member"] for _, r in points], marker="o", label=label)
    for ax, what in zip(axes, ("peak memory per member (MiB)", "time per member (s)"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("layer samples per network call")
        ax.set_ylabel(what)
    axes[0].legend(fontsize=8)
    fig.suptitle("layer2d-w1, MMPS: the memory knob", fontsize=10)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "layer2d_chunks.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- main
def main() -> None:
    from genda.assimilation.posterior import PosteriorSettings
    from genda.models.coordinates import coupling_for

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    full = {
        "grids": ",".join(_grid_tag(*g) for g in GRIDS),
        "levels": ",".join(str(n) for n in LEVELS),
        "budget_s": 120.0,
        "members": 8,
        "steps": 12,
        "chunks": "16,4",
        "chunk_members": 4,
    }
    quick = {
        "grids": "16x32",
        "levels": "4,8",
        "budget_s": 3.0,
        "members": 4,
        "steps": 4,
        "chunks": "2",
        "chunk_members": 2,
    }
    parser.add_argument("--grids", help=f"nlat x nlon, comma-separated ({full['grids']})")
    parser.add_argument("--levels", help=f"level counts ({full['levels']}; at most 64)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--budget-s", type=float, help="training seconds per prior (120)")
    parser.add_argument("--members", type=int, help="posterior members per prior (8)")
    parser.add_argument("--steps", type=int, help="sampler steps (12)")
    parser.add_argument(
        "--chunks",
        help="layer2d-w1 layer samples per network call measured at the most levels "
        "('16,4'; '' for none)",
    )
    parser.add_argument("--chunk-members", type=int, help="members in the chunk runs (4)")
    parser.add_argument("--chunk-grids", help="grids of the chunk runs (default: all)")
    parser.add_argument(
        "--precision",
        choices=("fp32", "tf32", "bf16"),
        default="fp32",
        help="sampling arithmetic: float32, TF32 tensor cores, or bf16 autocast",
    )
    parser.add_argument(
        "--compile",
        choices=("default", "reduce-overhead", "max-autotune"),
        help="torch.compile the network in this mode (reduce-overhead uses CUDA graphs)",
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=0,
        help="CUDA: also find the most members per batch that fit, up to this many (0: skip)",
    )
    parser.add_argument(
        "--skip",
        default="",
        help="configurations to leave out, comma-separated GRID-LLEVELS-VARIANT "
        "(e.g. 32x64-L64-layer2d-w2)",
    )
    parser.add_argument(
        "--denoiser-skip",
        choices=("scalar", "gaussian"),
        default="scalar",
        help="the priors' skip: EDM's scalar c_skip (as in the results) or the Gaussian skip",
    )
    parser.add_argument(
        "--coordinates",
        choices=("grid", "whitened"),
        default="whitened",
        help="the priors' coordinates: whitened (as the shipped priors, with a time-of-day "
        "mean) or grid (genda 0.1's, as the results before it)",
    )
    parser.add_argument("--jobs", type=int, default=2, help="stages run at once")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "strategies")
    parser.add_argument("--figures", type=Path, default=FIGURES)
    parser.add_argument("--fresh", action="store_true", help="redo every cached stage")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a tiny study for tests (short runs, small defaults; results stay under --work)",
    )
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        stage, spec = args.child
        print(json.dumps(CHILDREN[stage](json.loads(spec))))
        return

    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    grids = [tuple(int(n) for n in g.split("x")) for g in args.grids.split(",")]
    levels = [int(n) for n in args.levels.split(",")]
    data, source_levels, model_layers = (
        (QUICK_DATA, 8, 8) if args.quick else (DATA, SOURCE_LEVELS, MODEL_LAYERS)
    )
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    if max(levels) > source_levels:
        parser.error(f"at most {source_levels} levels")
    work: Path = args.work
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"

    # 1. data: one child per horizontal grid
    data_tasks = []
    for nlat, nlon in grids:
        tag = _grid_tag(nlat, nlon)
        spec = {
            "name": tag,
            "dir": str(work / tag),
            "grid": [nlat, nlon],
            "levels": levels,
            "data": data,
            "source_levels": source_levels,
            "model_layers": model_layers,
            "device": args.device,
        }
        data_tasks.append(
            (tag, lambda s=spec: _run_child("data", s, logs / f"data-{s['name']}.log"))
        )
    windows = _parallel(args.jobs, data_tasks, "model runs")

    # 2. training: one child per (grid, L, variant), cached by its result file; the
    # file names hold the settings, so other settings never reuse a stale result
    if args.coordinates == "whitened" and args.denoiser_skip == "gaussian":
        parser.error("whitened coordinates need no Gaussian skip; choose one")
    budget = f"-b{args.budget_s:g}" + ("-gauss" if args.denoiser_skip == "gaussian" else "")
    budget += "-whitened" if args.coordinates == "whitened" else ""
    # The names also hold what the package decides: layer2d's coupling and the sampler,
    # so that a change of either default is not answered from the cache.
    sampler = PosteriorSettings().sampler

    def prior_tag(variant: str) -> str:
        layered = args.coordinates == "whitened" and variant.startswith("layer2d")
        return budget + (f"-{coupling_for('layer2d')}" if layered else "")

    def cached(path: Path, stage: str, spec: dict[str, Any]) -> dict[str, Any]:
        if path.exists():
            return json.loads(path.read_text())
        result = _run_child(stage, spec, logs / f"{stage}-{spec['name']}.log")
        path.write_text(json.dumps(result, indent=1))
        return result

    skipped = {item for item in args.skip.split(",") if item}
    configs = [
        (_grid_tag(*g), n, v)
        for g in grids
        for n in levels
        for v in variants
        if f"{_grid_tag(*g)}-L{n}-{v}" not in skipped
    ]

    def name(tag: str, n: int, v: str) -> str:
        return f"{tag}-L{n}-{v}"

    train_tasks = []
    for tag, n, v in configs:
        spec = {
            "name": name(tag, n, v),
            "variant": v,
            "grid": [int(x) for x in tag.split("x")],
            "levels": n,
            "unet": UNET,
            "budget_s": args.budget_s,
            "skip": args.denoiser_skip,
            "coordinates": args.coordinates,
            "device": args.device,
            "archive": str(work / tag / f"train-L{n}.zarr"),
            "out": str(work / tag / "priors" / f"L{n}-{v}{prior_tag(v)}"),
        }
        result = work / tag / "priors" / f"L{n}-{v}{prior_tag(v)}.json"
        result.parent.mkdir(parents=True, exist_ok=True)
        train_tasks.append((spec["name"], lambda r=result, s=spec: cached(r, "train", s)))
    trained = _parallel(args.jobs, train_tasks, "priors")

    # 3. posterior ensembles: one child per prior (cached per arithmetic)
    flavour = "" if args.precision == "fp32" else f"-{args.precision}"
    flavour += f"-compile-{args.compile}" if args.compile else ""
    sampling = f"-m{args.members}-s{args.steps}-{sampler}{flavour}"
    fast = {"precision": args.precision, "compile": args.compile, "max_batch": args.max_batch}

    def sample_spec(tag: str, n: int, v: str, members: int, **extra: Any) -> dict[str, Any]:
        return {
            "name": name(tag, n, v),
            "checkpoint": str(work / tag / "priors" / f"L{n}-{v}{prior_tag(v)}"),
            "obs": str(work / tag / "obs.parquet"),
            "heldout": str(work / tag / f"heldout-L{n}.zarr"),
            "time": windows[tag]["time"],
            "members": members,
            "steps": args.steps,
            "device": args.device,
            **fast,
            **extra,
        }

    sample_tasks = []
    for tag, n, v in configs:
        spec = sample_spec(tag, n, v, args.members)
        result = work / tag / "posteriors" / f"L{n}-{v}{prior_tag(v)}{sampling}.json"
        result.parent.mkdir(parents=True, exist_ok=True)
        sample_tasks.append((spec["name"], lambda r=result, s=spec: cached(r, "sample", s)))
    sampled = _parallel(args.jobs, sample_tasks, "posteriors")

    # 4. layer2d's memory knob: layer samples per network call, at the most levels
    chunk_configs = []
    if "layer2d-w1" in variants and args.chunks:
        top = max(levels)
        chunk_grids = args.chunk_grids.split(",") if args.chunk_grids else None
        for tag in (_grid_tag(*g) for g in grids):
            if chunk_grids is not None and tag not in chunk_grids:
                continue
            for chunk in [0, *(int(c) for c in args.chunks.split(","))]:
                chunk_configs.append((tag, top, chunk))
    chunk_tasks = []
    for tag, n, chunk in chunk_configs:
        spec = sample_spec(
            tag, n, "layer2d-w1", args.chunk_members, layers_per_batch=chunk or None, max_batch=0
        )
        spec["name"] += f"-chunk{chunk}"
        result = (
            work
            / tag
            / "posteriors"
            / f"L{n}-layer2d-w1{prior_tag('layer2d-w1')}-m{args.chunk_members}-s{args.steps}-{sampler}"
            f"-chunk{chunk}{flavour}.json"
        )
        chunk_tasks.append((spec["name"], lambda r=result, s=spec: cached(r, "sample", s)))
    chunked = _parallel(args.jobs, chunk_tasks, "layer2d chunks") if chunk_tasks else {}
    chunk_rows = []
    for (tag, n, chunk), (task, _) in zip(chunk_configs, chunk_tasks, strict=True):
        found = chunked[task]
        chunk_rows.append(
            {
                "grid": tag,
                "levels": n,
                "variant": "layer2d-w1",
                "layers_per_batch": chunk or args.chunk_members * n,
                **{k: found[k] for k in CHUNK_COLUMNS[4:] if k in found},
                "crps_norm": found["crps_norm"],
            }
        )

    references = {
        (tag, n): truth_reference(work / tag / f"heldout-L{n}.zarr", windows[tag]["time"])
        for tag, n in dict.fromkeys((tag, n) for tag, n, _ in configs)
    }
    rows = []
    for tag, n, v in configs:
        key = name(tag, n, v)
        strategy, options = VARIANTS[v]
        rows.append(
            {
                "grid": tag,
                "levels": n,
                "variant": v,
                "strategy": strategy,
                "strategy_options": options,
                **trained[key],
                **sampled[key],
                **references[(tag, n)],
            }
        )
    settings = {
        "grids": [_grid_tag(*g) for g in grids],
        "levels": levels,
        "variants": variants,
        "unet": UNET,
        "budget_s": args.budget_s,
        "denoiser_skip": args.denoiser_skip,
        "coordinates": args.coordinates,
        "members": args.members,
        "sampling_steps": args.steps,
        "sampler": sampler,
        "layer2d_coupling": coupling_for("layer2d"),
        "guidance": "mmps",
        "covariance": "jacobian",
        "precision": args.precision,
        "compile": args.compile,
        "device": args.device,
        "cpu_threads_per_stage": 1,
        "jobs": args.jobs,
        "data": data,
        "source_levels": source_levels,
        "model_layers": model_layers,
        "windows": windows,
        "chunk_members": args.chunk_members,
        "skipped": sorted(skipped),
    }
    payload = {
        "benchmark": "strategies",
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "device_name": torch.cuda.get_device_name(0)
        if torch.device(args.device).type == "cuda"
        else machine()["cpu"],
        "settings": settings,
        "rows": rows,
        "chunking": chunk_rows,
    }
    tag = machine_tag() if torch.device(args.device).type == "cuda" else "cpu"
    out_dir = work if args.quick else RESULTS
    out_json = out_dir / f"strategies-{tag}{flavour}.json"
    out_json.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    title = (
        f"strategies ({args.device}, {payload['device_name']}; budget {args.budget_s:g} s, "
        f"{args.members} members, {args.steps} MMPS steps)"
    )
    text = f"{title}\n\n{markdown_table(rows)}"
    if chunk_rows:
        text += (
            f"\nlayer2d-w1, {args.chunk_members} members at once, by layer samples per "
            f"network call\n\n{markdown_table(chunk_rows, CHUNK_COLUMNS)}"
        )
    out_json.with_suffix(".md").write_text(text)
    figure_dir = (work / "figures" if args.quick else args.figures) / flavour.removeprefix("-")
    figures = plot(rows, figure_dir)
    if chunk_rows:
        figures.append(plot_chunks(chunk_rows, figure_dir))
    print_table(title, [{c: row.get(c) for c in TABLE_COLUMNS} for row in rows])
    if chunk_rows:
        print_table("layer2d-w1 by layer samples per call", chunk_rows)
    print(f"wrote {out_json} and {len(figures)} figures")


if __name__ == "__main__":
    main()
