"""What an altitude-autoregressive generator would cost, priced by genda plan's traced model.

    python benchmarks/autoregressive_estimate.py [--quick]

An altitude-autoregressive strategy samples the layers one after another,
each conditioned on the layers already made below it. Its peak memory per
member is one layer's guided sampling (the network sees the layer and one
neighbour each side, as ``layer2d-w1``, with the observations of that layer)
plus the layers already made, whatever ``L``; its FLOPs are ``L`` such runs.
This prices both with the model of ``genda plan`` (the real ``layer2d``
network at one level, traced on fake tensors, :mod:`genda.planning`) on the
fields of docs/strategies.md's table, next to ``joint3d`` and ``layer2d`` as
they are, so that the question "do the numbers call for it?" has numbers.
The estimate is a lower bound of the memory (no extra conditioning inputs)
and exact in FLOPs for such a network.

Writes ``benchmarks/results/autoregressive_estimate.json`` (its ``.md``
beside it) and prints the table. Takes about a minute on one CPU thread.
"""

from __future__ import annotations

import argparse
import json
import time

from _common import RESULTS, machine, print_table
from genda.atomic import write_file
from genda.planning.model import GIB, GPUS, member_cost, usable_bytes
from genda.planning.spec import RunSpec
from genda.planning.table import TABLE_GRIDS, TABLE_LEVELS, TABLE_SETTINGS, TABLE_VARIABLES

GPU = "a100-40"
FRACTION = 0.4


def estimate(
    nlat: int, nlon: int, levels: int, variables: int, observations: int | None = None
) -> dict[str, float]:
    """Memory (GiB) and TFLOPs of one member per strategy for one field, with
    ``observations`` in the window (the table's 5000 by default)."""
    settings = dict(TABLE_SETTINGS)
    observations = observations or settings["observations"]
    del settings["observations"]
    joint = member_cost(
        RunSpec(nlat, nlon, levels, variables, **settings, observations=observations)
    )
    whole = member_cost(
        RunSpec(
            nlat, nlon, levels, variables, strategy="layer2d", **settings, observations=observations
        )
    )
    # one layer (its neighbours as inputs), with that layer's share of the observations
    layer = member_cost(
        RunSpec(
            nlat,
            nlon,
            1,
            variables,
            strategy="layer2d",
            **settings,
            observations=max(1, observations // levels),
        )
    )
    made = variables * levels * nlat * nlon * 4  # the float32 layers already sampled
    autoregressive = layer.batch_bytes(1) + made
    gpu = GPUS[GPU]
    return {
        "joint3d_gib": joint.batch_bytes(1) / GIB,
        "layer2d_gib": whole.batch_bytes(1) / GIB,
        "autoregressive_gib": autoregressive / GIB,
        "joint3d_tflop": joint.flops_per_member() / 1e12,
        "layer2d_tflop": whole.flops_per_member() / 1e12,
        "autoregressive_tflop": layer.flops_per_member() * levels / 1e12,
        "joint3d_fits_a100_40": joint.batch_bytes(1) <= usable_bytes(gpu.memory_gib),
        "autoregressive_s_a100_40": layer.flops_per_member()
        * levels
        / (FRACTION * gpu.bf16_tflops * 1e12),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the 1 degree fields only")
    args = parser.parse_args()
    grids = {"1°": TABLE_GRIDS["1°"]} if args.quick else TABLE_GRIDS
    rows = []
    for name, (nlat, nlon) in grids.items():
        for levels in TABLE_LEVELS:
            for variables in TABLE_VARIABLES:
                rows.append(
                    {
                        "grid": name,
                        "L": levels,
                        "V": variables,
                        **estimate(nlat, nlon, levels, variables),
                    }
                )
    payload = {
        "benchmark": "autoregressive_estimate",
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "settings": {**TABLE_SETTINGS, "gpu": GPU, "fraction_of_bf16_peak": FRACTION},
        "rows": rows,
    }
    if not args.quick:
        out = RESULTS / "autoregressive_estimate.json"
        write_file(out, json.dumps(payload, indent=2) + "\n")
    shown = [
        {
            "grid": r["grid"],
            "L": r["L"],
            "V": r["V"],
            "GiB joint3d / layer2d / AR": f"{r['joint3d_gib']:.1f} / {r['layer2d_gib']:.1f} / "
            f"{r['autoregressive_gib']:.1f}",
            "TFLOP joint3d / AR": f"{r['joint3d_tflop']:.0f} / {r['autoregressive_tflop']:,.0f}",
            "AR / joint3d FLOPs": r["autoregressive_tflop"] / r["joint3d_tflop"],
            "joint3d fits 40 GB": r["joint3d_fits_a100_40"],
            "AR s/member A100": r["autoregressive_s_a100_40"],
        }
        for r in rows
    ]
    print_table("an altitude-autoregressive member, priced (MMPS-Jacobian, 5000 obs)", shown)
    if not args.quick:
        lines = ["| " + " | ".join(shown[0]) + " |", "|" + "---|" * len(shown[0])]
        lines += [
            "| "
            + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values())
            + " |"
            for row in shown
        ]
        write_file(out.with_suffix(".md"), "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
