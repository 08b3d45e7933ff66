"""Unconditional sampling cost per strategy and grid: members per second, peak memory.

    python benchmarks/sampling.py [--members 8] [--steps 8] [--device cpu|cuda]

Each configuration runs in its own process so that peak memory (CPU: peak RSS
of that process; GPU: ``torch.cuda.max_memory_allocated``) belongs to it alone.
The networks are untrained (speed and memory do not depend on the weights):
the default U-Net (base 32 channels, multipliers 1, 2, 2) behind ``joint3d``
and ``layer2d`` (window 1). Heun sampling makes 2 * steps - 1 denoiser calls.
Writes ``benchmarks/results/sampling-<machine>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from _common import print_table, write_result

CONFIGS = (
    ("joint3d", 32, 64, 8),
    ("layer2d", 32, 64, 8),
    ("joint3d", 32, 64, 16),
    ("layer2d", 32, 64, 16),
)
GPU_CONFIGS = (
    ("joint3d", 64, 128, 32),
    ("layer2d", 64, 128, 32),
    ("joint3d", 128, 256, 64),
    ("layer2d", 128, 256, 64),
)


def measure(
    strategy: str, nlat: int, nlon: int, levels: int, members: int, steps: int, device: str
) -> dict[str, object]:
    """Run in a child process: sample ``members`` and report speed and peak memory."""
    from genda.grid import Grid
    from genda.models.diffusion import EDMDenoiser
    from genda.models.sampling import sample
    from genda.models.strategies import build_backbone, get_strategy

    grid = Grid.gaussian(nlat, nlon, levels)
    torch.manual_seed(0)
    denoiser = EDMDenoiser(build_backbone(get_strategy(strategy), grid)).to(device).eval()
    parameters = sum(p.numel() for p in denoiser.parameters())
    sample(denoiser, grid.shape, [0], window_seed=0, steps=2, device=device)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    sample(denoiser, grid.shape, list(range(members)), window_seed=1, steps=steps, device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    peak_mib = (
        torch.cuda.max_memory_allocated() / 2**20
        if device.startswith("cuda")
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "strategy": strategy,
        "grid": f"{nlat}x{nlon}x{levels}",
        "device": device,
        "parameters": parameters,
        "members": members,
        "steps": steps,
        "members_per_s": members / wall,
        "s_per_member": wall / members,
        "peak_memory_mib": peak_mib,
        "peak_kind": "cuda_max_allocated" if device.startswith("cuda") else "process_peak_rss",
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        strategy, nlat, nlon, levels = args.child.split(",")
        row = measure(
            strategy, int(nlat), int(nlon), int(levels), args.members, args.steps, args.device
        )
        print(json.dumps(row))
        return
    configs = CONFIGS + (GPU_CONFIGS if args.device.startswith("cuda") else ())
    rows = []
    for strategy, nlat, nlon, levels in configs:
        child = [sys.executable, __file__, "--child", f"{strategy},{nlat},{nlon},{levels}"]
        child += [
            "--members",
            str(args.members),
            "--steps",
            str(args.steps),
            "--device",
            args.device,
        ]
        done = subprocess.run(child, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    path = write_result("sampling", rows)
    print_table(f"unconditional sampling ({args.device}, Heun, {args.steps} steps)", rows)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
