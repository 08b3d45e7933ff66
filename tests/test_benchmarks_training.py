"""``benchmarks/training.py --quick`` runs end to end and writes a complete JSON result."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "training.py"


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_quick_training_benchmark(tmp_path: Path) -> None:
    out = tmp_path / "training.json"
    # run as a script, as users do: it imports ``_common`` from its own folder
    result = subprocess.run(
        # one thread: the test shares the machine with others (genda.threads)
        [sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert str(out) in result.stdout

    payload = json.loads(out.read_text())
    assert payload["benchmark"] == "training"
    assert payload["device"] == "cpu" or payload["device"].startswith("cuda")
    assert payload["device_name"]
    assert payload["torch"]
    assert {"cpu", "cpu_count", "genda"} <= set(payload["machine"])
    assert payload["settings"]["quick"] is True

    rows = {row["strategy"]: row for row in payload["rows"]}
    assert set(rows) == {"joint3d", "layer2d"}
    for row in rows.values():
        for key in (
            "parameters",
            "batch_size",
            "samples_per_s",
            "step_s_median",
            "step_s_min",
            "peak_memory_mib",
        ):
            assert _positive(row[key]), (row["strategy"], key, row[key])
        assert row["step_s_min"] <= row["step_s_median"]
        assert len(row["step_s"]) == row["repeats"]
        assert math.isfinite(row["final_loss"])
        assert row["samples_per_s"] == row["batch_size"] / row["step_s_median"]
        if row["device"] == "cpu":
            assert row["peak_rss_mib"] >= row["peak_memory_mib"]

    levels = rows["layer2d"]["field_shape"][1]
    assert rows["joint3d"]["layer_samples_per_s"] is None
    assert math.isclose(
        rows["layer2d"]["layer_samples_per_s"], rows["layer2d"]["samples_per_s"] * levels
    )
    assert rows["layer2d"]["network_batch"] == rows["layer2d"]["batch_size"] * levels
