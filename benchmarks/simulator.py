"""Speed of the built-in model: simulated days per wall-clock second.

    python benchmarks/simulator.py [--steps N] [--device cpu|cuda]

Grids: 32 x 64 x 8 layers (the default) and 64 x 128 x 16 (and 128 x 256 x 32
on a GPU), each with its automatic time step, float64, after a few warm-up
steps, one intra-op thread on the CPU (the model's default). Writes
``benchmarks/results/simulator-<machine>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import time

import torch

from _common import print_table, write_result
from genda.constants import SECONDS_PER_DAY
from genda.simulator import Simulator, SimulatorConfig

GRIDS = ((32, 64, 8), (64, 128, 16))
GPU_GRIDS = ((128, 256, 32),)
"""Measured in addition when the device is a GPU."""


def measure(nlat: int, nlon: int, layers: int, device: str, steps: int) -> dict[str, object]:
    config = SimulatorConfig(nlat=nlat, nlon=nlon, layers=layers, levels=layers, device=device)
    sim = Simulator(config, seed=0)
    sim.advance(3 * sim.dt)  # warm-up: allocator, kernels
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    sim.advance(steps * sim.dt)  # as users run it: the model's thread setting, hourly checks
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    simulated_days = steps * sim.dt / SECONDS_PER_DAY
    return {
        "grid": f"{nlat}x{nlon}x{layers}",
        "device": device,
        "cpu_threads": config.cpu_threads if device == "cpu" else None,
        "dt_s": sim.dt,
        "ms_per_step": 1e3 * wall / steps,
        "days_per_wall_s": simulated_days / wall,
        "wall_s_per_year": 365.0 * wall / simulated_days,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=30, help="timed steps per grid")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    grids = GRIDS + (GPU_GRIDS if args.device.startswith("cuda") else ())
    rows = [measure(*grid, device=args.device, steps=args.steps) for grid in grids]
    path = write_result("simulator", rows)
    print_table(f"built-in model speed ({args.device})", rows)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
