"""How well the run planner's traced cost predicts a real run: FLOPs and memory per configuration.

    python benchmarks/plan_validation.py [--grids 16x32,32x64] [--levels 8,32]
        [--strategies joint3d,layer2d] [--batches 1,4] [--guidance mmps-prior,mmps-jacobian]
        [--device cpu|cuda] [--observations 500]

For each configuration (a whitened prior with the shipped priors' U-Net, base
24, multipliers 1, 2, 2, 2), :func:`genda.planning.trace.trace_sampling` traces
the window's guidance and a stretch of sampling (an ``exponential`` step and
the last, Euler, step: three denoiser calls) on the ``meta`` device, and
:func:`genda.planning.measure.measure_sampling` runs the same code for real:

* **FLOPs**: counted on the real run by the same counter
  (:class:`genda.planning.dispatch.FlopCount`); they must be equal.
* **Memory**: on the CPU the allocator's peak as the profiler records it
  (every allocation and free), against the trace's tensors alone and the trace
  with oneDNN's convolution scratch (:func:`genda.planning.dispatch.onednn_workspace`);
  the peak resident memory's rise (``/proc/self/status``) as a sanity check.
  On CUDA ``torch.cuda.max_memory_allocated`` against the trace's tensors.

``mmps-prior`` is MMPS with the whitened prior's Gaussian covariance (no
backward pass), ``mmps-jacobian`` MMPS with the network's Jacobian (3 GMRES
iterations, a vector-Jacobian product each). Writes
``benchmarks/results/plan_validation-<machine>.json`` and prints the table.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable
from typing import Any

import torch

from _common import peak_rss_mib, print_table, reset_peak_rss, rss_now_mib, write_result
from genda.planning.dispatch import onednn_workspace
from genda.planning.measure import measure_sampling
from genda.planning.spec import RunSpec
from genda.planning.trace import trace_sampling

MIB = 2**20


def _grids(text: str) -> list[tuple[int, int]]:
    return [tuple(int(n) for n in item.split("x")) for item in text.split(",")]  # type: ignore[misc]


def rss_rise(run: Callable[[], Any]) -> int:
    """The rise of the process's peak resident memory over ``run()`` (bytes; Linux)."""
    before = rss_now_mib() or 0.0
    reset_peak_rss()
    run()
    return int((peak_rss_mib() - before) * MIB)


def validate(spec: RunSpec, batch: int, device: str) -> dict[str, Any]:
    """One row: traced and measured FLOPs and memory of ``spec`` at ``batch`` members."""
    traced = trace_sampling(spec, batch)
    cuda = device == "cuda"
    scratch = traced if cuda else trace_sampling(spec, batch, workspace=onednn_workspace)
    measured = measure_sampling(spec, batch, device, rss=None if cuda else rss_rise)
    reference = measured.sampling_peak_bytes
    return {
        "grid": f"{spec.nlat}x{spec.nlon}",
        "L": spec.levels,
        "strategy": spec.strategy,
        "guidance": spec.guidance,
        "batch": batch,
        "gflop_per_call_traced": traced.flops_per_call / 1e9,
        "flops_equal": traced.flops_per_call == measured.flops_per_call,
        "mib_traced_tensors": traced.sampling_peak_bytes / MIB,
        "mib_traced_with_scratch": scratch.sampling_peak_bytes / MIB,
        "mib_measured": reference / MIB,
        "error_pct": 100.0 * (scratch.sampling_peak_bytes / reference - 1.0),
        "mib_rss_rise": None
        if measured.rss_increase_bytes is None
        else measured.rss_increase_bytes / MIB,
        "mib_window_traced": traced.window_bytes / MIB,
        "mib_window_measured": measured.window_bytes / MIB,
        "mib_window_build_traced": traced.window_peak_bytes / MIB,
        "mib_window_build_measured": measured.window_peak_bytes / MIB,
        "mib_weights": traced.weights_bytes / MIB,
        "reference": "cuda_max_memory_allocated" if cuda else "cpu_allocator_profiler",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grids", default="16x32,32x64")
    parser.add_argument("--levels", default="8,32")
    parser.add_argument("--strategies", default="joint3d,layer2d")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--guidance", default="mmps-prior,mmps-jacobian")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--observations", type=int, default=500)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for (nlat, nlon), levels, strategy, guidance, batch in itertools.product(
        _grids(args.grids),
        [int(n) for n in args.levels.split(",")],
        args.strategies.split(","),
        args.guidance.split(","),
        [int(n) for n in args.batches.split(",")],
    ):
        spec = RunSpec(
            nlat,
            nlon,
            levels,
            strategy=strategy,
            guidance=guidance,
            observations=args.observations,
        )
        rows.append(validate(spec, batch, args.device))
        print_table("plan validation (so far)", rows[-1:])
    path = write_result(
        "plan_validation",
        rows,
        {"settings": vars(args), "tolerance_pct": 10.0},
    )
    print_table("traced vs measured, per configuration", rows)
    worst = max(abs(r["error_pct"]) for r in rows)
    print(
        f"FLOPs equal in {sum(r['flops_equal'] for r in rows)}/{len(rows)}; worst memory error {worst:.1f} %"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
