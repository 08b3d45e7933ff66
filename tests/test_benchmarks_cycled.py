"""``benchmarks/cycled_osse.py``: pooling and the ``--quick`` cycle end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmark_modules import load_benchmark

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "cycled_osse.py"


@pytest.fixture(scope="module")
def osse() -> Any:
    return load_benchmark("cycled_osse")


def test_pooling_averages_squares_not_ratios(osse: Any) -> None:
    rows = [
        {"time": "a", "u": {"crps": 1.0, "rmse": 3.0, "spread_skill": 1.0}},
        {"time": "b", "u": {"crps": 3.0, "rmse": 1.0, "spread_skill": 2.0}},
        {"time": "c", "u": {"crps": 9.0, "rmse": 9.0, "spread_skill": 9.0}},
    ]
    pooled = osse.pooled(rows, {"a", "b"})["u"]
    assert pooled["crps"] == 2.0
    assert pooled["rmse"] == pytest.approx(math.sqrt((9 + 1) / 2))
    # spreads 3 and 2: variances 9 and 4 against squared errors 9 and 1
    assert pooled["spread_skill"] == pytest.approx(math.sqrt((9 + 4) / (9 + 1)))


@pytest.mark.slow
def test_quick_cycle_runs_and_scores(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--work", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=SCRIPT.parent,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    payload = json.loads((tmp_path / "cycled_osse-quick.json").read_text())
    rows = payload["windows"]["cycled-enkf"]
    assert len(rows) == 6
    assert (tmp_path / "enkf.zarr").exists() and len(list((tmp_path / "obs").iterdir())) == 6
    scores = payload["summary"]["cycled-enkf"]["all"]
    for field in ("u", "v", "T", "withheld_u", "withheld_v"):
        assert all(math.isfinite(scores[field][k]) for k in ("crps", "rmse", "spread_skill"))
        assert scores[field]["crps"] < scores[field]["rmse"]  # CRPS <= MAE <= RMSE


@pytest.mark.slow
def test_quick_trajectory_cycle_filters_forecasts_and_scores(tmp_path: Path) -> None:
    script = SCRIPT.parent / "trajectory_osse.py"
    result = subprocess.run(
        [sys.executable, str(script), "--quick", "--work", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=SCRIPT.parent,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    payload = json.loads((tmp_path / "trajectory_osse-quick.json").read_text())
    cycled = payload["windows"]["genda-cycled"]
    assert len(cycled) == 3 and len(payload["hourly"]) == 10  # windows of 4 hours, 3 h apart
    assert payload["settings"]["states"] == 4
    for kind in ("forecast", "persistence", "climatology"):
        assert sorted(payload["forecasts"][kind], key=int) == ["1", "3"]
    assert all(
        math.isfinite(r["with"]) and math.isfinite(r["without"]) for r in payload["old_observation"]
    )
    ratio = payload["ratios"]["all"]["u"]["cycled_over_enkf"]
    assert math.isfinite(ratio) and ratio > 0
