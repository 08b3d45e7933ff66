"""``benchmarks/strategies.py --quick`` runs the whole study end to end on a tiny setup."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmark_modules import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "strategies.py"


@pytest.mark.slow
def test_quick_strategies_study(tmp_path: Path) -> None:
    work = tmp_path / "study"
    command = [
        *(sys.executable, str(SCRIPT), "--quick", "--work", str(work)),
        *("--levels", "4", "--variants", "joint3d,layer2d-w1", "--chunks", "2"),
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]

    payload = json.loads((work / "strategies-cpu.json").read_text())
    assert payload["benchmark"] == "strategies"
    assert payload["settings"]["levels"] == [4]
    rows = {row["variant"]: row for row in payload["rows"]}
    assert set(rows) == {"joint3d", "layer2d-w1"}
    for row in rows.values():
        assert row["grid"] == "16x32" and row["levels"] == 4
        # the same training budget: the step count follows the measured step time
        assert row["train_steps"] >= 10 and row["train_loop_s"] > 0
        for key in ("s_per_member", "gflop_per_member", "crps_norm", "ssr", "obs_fit"):
            assert math.isfinite(row[key]) and row[key] > 0, (row["variant"], key)
        assert 0 <= row["vcorr_error"] <= 2
        assert row["spectrum_error"] >= 0
        assert set(row["vcorr_error_by_variable"]) == {"u", "v", "T"}
    # a layer2d member costs L network samples per call where joint3d costs one
    assert rows["layer2d-w1"]["gflop_per_member"] > rows["joint3d"]["gflop_per_member"]
    chunks = {row["layers_per_batch"]: row for row in payload["chunking"]}
    # unchunked (2 members x 4 layers at once) and 2 layer samples per call
    assert set(chunks) == {8, 2}
    # checkpointed chunks recompute each chunk's forward pass in every backward pass
    assert chunks[2]["gflop_per_member"] > chunks[8]["gflop_per_member"]

    table = (work / "strategies-cpu.md").read_text()
    assert table.count("| 16x32 | 4 |") == 4
    figures = sorted(p.name for p in (work / "figures").glob("*.png"))
    assert {"mib_per_member.png", "vcorr_error.png", "layer2d_chunks.png"} <= set(figures)


def _study_module() -> Any:
    """The benchmark script as a module (it imports ``_common`` from its own folder)."""
    return load_benchmark("strategies", "strategies_study")


@pytest.mark.parametrize(
    ("capacity", "start", "limit", "expected"),
    [
        (37, 8, 1000, 37),
        (37, 64, 1000, 37),
        (37, 8, 20, 20),
        (1, 8, 100, 1),
        (0, 8, 100, 0),
    ],
)
def test_largest_fitting_batch(capacity: int, start: int, limit: int, expected: int) -> None:
    study = _study_module()
    tried: list[int] = []

    def attempt(n: int) -> None:
        tried.append(n)
        if n > capacity:
            raise torch.OutOfMemoryError(f"{n} members do not fit")

    assert study.largest_fitting(attempt, start=start, limit=limit) == expected
    assert max(tried) <= limit
    # doubling then bisection: logarithmically many attempts
    assert len(tried) <= 2 * math.ceil(math.log2(limit)) + 2
