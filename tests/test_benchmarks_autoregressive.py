"""``benchmarks/autoregressive_estimate.py``: the pricing behind leaving that strategy out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmark_modules import load_benchmark

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "autoregressive_estimate.py"


@pytest.fixture(scope="module")
def estimate() -> Any:
    return load_benchmark("autoregressive_estimate").estimate


def test_one_layer_at_a_time_bounds_memory_not_flops(estimate: Any) -> None:
    """Doubling L (and the observations, so that a layer has as many) adds to the
    autoregressive member only the layers already made, while its FLOPs double and
    equal layer2d's: L network passes of one layer."""
    small, large = estimate(32, 64, 8, 3, 400), estimate(32, 64, 16, 3, 800)
    made = 3 * 8 * 32 * 64 * 4 / 2**30  # the 8 further float32 layers
    assert large["autoregressive_gib"] - small["autoregressive_gib"] == pytest.approx(
        made, rel=0.05
    )
    assert large["autoregressive_tflop"] == pytest.approx(2 * small["autoregressive_tflop"], 1e-3)
    for row in (small, large):
        assert row["autoregressive_tflop"] == pytest.approx(row["layer2d_tflop"], rel=0.01)
        assert row["autoregressive_gib"] < row["layer2d_gib"]
        assert row["autoregressive_tflop"] > 5 * row["joint3d_tflop"]
