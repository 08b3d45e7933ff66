"""Training throughput per strategy and grid: samples per second, peak memory.

    python benchmarks/training.py [--device cpu|cuda] [--batch-size 16] [--steps 4]
        [--repeats 5] [--warmup 3] [--threads N] [--unet shipped|default|all]
        [--strategy joint3d|layer2d|all] [--bf16] [--compile] [--quick] [--out PATH]

What is timed is :func:`genda.models.training.optimization_step`, the step
that :func:`~genda.models.training.train` runs: per-slot noise levels and
noise, the learning rate, forward pass and EDM loss, backward, gradient
clipping, AdamW step and EMA update. The batch is synthetic unit-normal fields
made once on the device: the data loader is not the subject.

A sample is one full field ``(V, L, H, W)``; ``layer2d`` feeds ``L`` 2D
layer-samples per field to its network, reported as ``layer_samples_per_s``
(``samples_per_s * L``). After ``--warmup`` steps, ``--repeats`` blocks of
``--steps`` steps are timed (the device synchronised at the end of each
block); a step's time is its block's wall time over ``--steps``, and the
throughput is that of the median block.

Each configuration runs in its own process so that peak memory belongs to it
alone: on CUDA ``torch.cuda.max_memory_allocated`` (reset before the model is
built, so it counts weights, EMA copy, optimizer state, batch and
activations); on the CPU the process's peak RSS minus its RSS before the
model was built (``peak_memory_mib``) and the absolute peak RSS
(``peak_rss_mib``, which includes the Python interpreter and torch).

U-Nets: ``shipped`` is the size of the shipped checkpoints (base 24 channels,
multipliers 1, 2, 2, 2), ``default`` the size of a new model (32; 1, 2, 2);
``layer2d`` with window 1. ``--bf16`` (autocast) and ``--compile``
(``torch.compile``) apply on CUDA only. ``--quick`` is a tiny grid and network
for tests. Writes ``benchmarks/results/training-<machine>.json`` (``--out``)
and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from _common import RESULTS, machine, machine_tag, peak_rss_mib, print_table, rss_now_mib

STRATEGIES = ("joint3d", "layer2d")
GRIDS = ((32, 64, 8), (32, 64, 16))
GPU_GRIDS = ((64, 128, 16),)
"""Measured in addition when the device is a GPU."""
UNETS: dict[str, dict[str, Any]] = {
    "shipped": {"base_channels": 24, "channel_mult": [1, 2, 2, 2]},
    "default": {"base_channels": 32, "channel_mult": [1, 2, 2]},
}
QUICK_GRID = (16, 32, 4)
QUICK_UNET: dict[str, Any] = {"base_channels": 8, "channel_mult": [1, 2], "noise_embedding_dim": 16}
FULL = {"batch_size": 16, "steps": 4, "repeats": 5, "warmup": 3}
"""Step settings: the batch of ``TrainConfig``, a few timed steps per repeat."""
QUICK = {"batch_size": 4, "steps": 2, "repeats": 3, "warmup": 1}
"""Step settings of ``--quick`` (options given explicitly win)."""
TABLE_COLUMNS = (
    "strategy",
    "grid",
    "unet",
    "parameters",
    "batch_size",
    "step_s_median",
    "step_s_min",
    "samples_per_s",
    "layer_samples_per_s",
    "peak_memory_mib",
)


def measure(
    strategy_name: str,
    grid_size: tuple[int, int, int],
    unet: dict[str, Any],
    *,
    device_name: str,
    batch_size: int,
    steps: int,
    repeats: int,
    warmup: int,
    threads: int,
    mixed_precision: bool,
    compile_model: bool,
) -> dict[str, Any]:
    """Run in a child process: time training steps of one configuration, report speed and memory."""
    from torch import nn

    from genda.grid import Grid
    from genda.models.diffusion import EDMDenoiser
    from genda.models.strategies import build_backbone, get_strategy
    from genda.models.training import (
        EMA,
        TrainConfig,
        optimization_step,
        resolve_device,
    )

    torch.set_num_threads(threads)
    device = resolve_device(device_name)
    cuda = device.type == "cuda"
    # autocast is a no-op on the CPU in ``train``; compilation is left out there too so that
    # CPU numbers are those of eager training
    mixed_precision = mixed_precision and cuda
    compile_model = compile_model and cuda
    nlat, nlon, levels = grid_size
    grid = Grid.gaussian(nlat, nlon, levels)
    shape = tuple(grid.shape)
    strategy = get_strategy(strategy_name, **({"window": 1} if strategy_name == "layer2d" else {}))
    config = TrainConfig(
        batch_size=batch_size,
        device=str(device),
        mixed_precision=mixed_precision,
        compile=compile_model,
    )

    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = rss_now_mib()
    torch.manual_seed(0)
    denoiser = EDMDenoiser(build_backbone(strategy, grid, **unet)).to(device).train()
    parameters = sum(p.numel() for p in denoiser.parameters())
    ema = EMA(denoiser, config)
    optimizer = torch.optim.AdamW(
        denoiser.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
    )
    forward: nn.Module = denoiser
    if config.compile:
        forward = torch.compile(forward)  # type: ignore[assignment]
    x0 = torch.randn((batch_size, *shape), generator=torch.Generator().manual_seed(1)).to(device)
    slots = list(range(batch_size))

    def step(index: int) -> torch.Tensor:
        """One step of ``train``'s loop, the data loading left out."""
        return optimization_step(
            forward, denoiser, optimizer, ema, x0, slots, index, config, device
        )

    def synchronize() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    index = 0
    # the first step pays for allocations, kernel selection and compilation: kept apart
    tick = time.perf_counter()
    step(index)
    synchronize()
    first_step = time.perf_counter() - tick
    index += 1
    for _ in range(warmup - 1):
        step(index)
        index += 1
    synchronize()
    per_step = []
    loss = torch.zeros(())
    for _ in range(repeats):
        tick = time.perf_counter()
        for _ in range(steps):
            loss = step(index)
            index += 1
        synchronize()
        per_step.append((time.perf_counter() - tick) / steps)
    median = statistics.median(per_step)
    samples_per_s = batch_size / median
    layers = grid.nlevels if strategy.name == "layer2d" else None

    row: dict[str, Any] = {
        "strategy": strategy.name,
        "strategy_options": strategy.options(),
        "grid": f"{nlat}x{nlon}x{levels}",
        "field_shape": list(shape),
        "unet": f"{unet['base_channels']}/{','.join(str(m) for m in unet['channel_mult'])}",
        "unet_options": unet,
        "parameters": parameters,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "mixed_precision": config.mixed_precision,
        "compile": config.compile,
        "batch_size": batch_size,
        "network_batch": batch_size * (layers or 1),
        "warmup_steps": warmup,
        "steps": steps,
        "repeats": repeats,
        "first_step_s": first_step,
        "step_s_median": median,
        "step_s_min": min(per_step),
        "step_s": per_step,
        "samples_per_s": samples_per_s,
        "layer_samples_per_s": samples_per_s * layers if layers else None,
        "final_loss": float(loss),
    }
    if cuda:
        row |= {
            "peak_memory_mib": torch.cuda.max_memory_allocated(device) / 2**20,
            "peak_reserved_mib": torch.cuda.max_memory_reserved(device) / 2**20,
            "peak_kind": "cuda_max_allocated",
        }
    else:
        peak = peak_rss_mib()
        row |= {
            # without /proc the baseline is unknown: the absolute peak stands in
            "peak_memory_mib": peak - rss_before if rss_before is not None else peak,
            "peak_rss_mib": peak,
            "rss_before_model_mib": rss_before,
            "peak_kind": "process_peak_rss_above_start"
            if rss_before is not None
            else "process_peak_rss",
        }
    return row


def _device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return str(machine()["cpu"])


def _default_out(device: str, quick: bool) -> Path:
    """``results/training-<machine>.json`` (``cpu`` for a CPU run even where a GPU is present)."""
    tag = machine_tag() if torch.device(device).type == "cuda" else "cpu"
    # quick runs are smoke tests: they never replace measured results
    return RESULTS / f"training-{tag}{'-quick' if quick else ''}.json"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--batch-size",
        type=int,
        help=f"fields per step (default {FULL['batch_size']}; quick {QUICK['batch_size']})",
    )
    parser.add_argument(
        "--steps",
        type=int,
        help=f"timed steps per repeat (default {FULL['steps']}; quick {QUICK['steps']})",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        help=f"timed blocks of --steps steps (default {FULL['repeats']}; quick {QUICK['repeats']})",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        help=f"untimed steps first, >= 1 (default {FULL['warmup']}; quick {QUICK['warmup']})",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count() or 1,
        help="torch intra-op threads on the CPU (default: all cores)",
    )
    parser.add_argument(
        "--unet", choices=(*UNETS, "all"), default="shipped", help="U-Net size(s) to measure"
    )
    parser.add_argument(
        "--strategy", choices=(*STRATEGIES, "all"), default="all", help="strategy to measure"
    )
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only)")
    parser.add_argument("--compile", action="store_true", help="torch.compile (CUDA only)")
    parser.add_argument("--quick", action="store_true", help="tiny grid and network (tests)")
    parser.add_argument(
        "--out", type=Path, help="JSON path (default: results/training-<machine>.json)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("batch_size", "steps", "repeats", "warmup", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    cuda = torch.device(args.device).type == "cuda"
    if (args.bf16 or args.compile) and not cuda:
        print("--bf16 and --compile apply on CUDA only; measuring without them", file=sys.stderr)

    if args.child:
        spec = json.loads(args.child)
        row = measure(
            spec["strategy"],
            tuple(spec["grid"]),
            spec["unet"],
            device_name=args.device,
            batch_size=args.batch_size,
            steps=args.steps,
            repeats=args.repeats,
            warmup=args.warmup,
            threads=args.threads,
            mixed_precision=args.bf16,
            compile_model=args.compile,
        )
        print(json.dumps(row))
        return

    if args.quick:
        grids: tuple[tuple[int, int, int], ...] = (QUICK_GRID,)
        unets = [QUICK_UNET]
    else:
        grids = GRIDS + (GPU_GRIDS if cuda else ())
        unets = list(UNETS.values()) if args.unet == "all" else [UNETS[args.unet]]
    strategies = STRATEGIES if args.strategy == "all" else (args.strategy,)
    passed = [
        *("--device", args.device, "--batch-size", str(args.batch_size)),
        *("--steps", str(args.steps), "--repeats", str(args.repeats)),
        *("--warmup", str(args.warmup), "--threads", str(args.threads)),
        *(["--bf16"] if args.bf16 and cuda else []),
        *(["--compile"] if args.compile and cuda else []),
    ]
    rows = []
    for unet in unets:
        for grid in grids:
            for strategy in strategies:
                spec = json.dumps({"strategy": strategy, "grid": grid, "unet": unet})
                child = [sys.executable, __file__, "--child", spec, *passed]
                done = subprocess.run(child, capture_output=True, text=True)
                if done.returncode:
                    sys.exit(f"configuration {spec} failed:\n{done.stderr}")
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))

    path = args.out or _default_out(args.device, args.quick)
    payload = {
        "benchmark": "training",
        "measured": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "torch": torch.__version__,
        "device": args.device,
        "device_name": _device_name(args.device),
        "settings": {
            "batch_size": args.batch_size,
            "steps": args.steps,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "threads": args.threads,
            "mixed_precision": args.bf16 and cuda,
            "compile": args.compile and cuda,
            "quick": args.quick,
        },
        "rows": rows,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    extras = [] if cuda else [f"{args.threads} threads"]
    extras += [
        n for n, on in (("bf16", args.bf16 and cuda), ("compiled", args.compile and cuda)) if on
    ]
    title = f"training step ({', '.join([args.device, *extras])}, batch {args.batch_size})"
    table = [{k: "-" if row[k] is None else row[k] for k in TABLE_COLUMNS} for row in rows]
    print_table(title, table)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
