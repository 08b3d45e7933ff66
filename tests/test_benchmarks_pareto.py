"""``benchmarks/strategies_pareto.py``: the width rule, Pareto fronts, crossovers and ``--quick``."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmark_modules import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "strategies_pareto.py"


@pytest.fixture(scope="module")
def pareto() -> Any:
    """The script as a module (it imports ``strategies`` and ``_common`` from its folder)."""
    return load_benchmark("strategies_pareto")


# -------------------------------------------------------------------------- widths
def test_width_rule_and_tokens(pareto: Any) -> None:
    # joint3d at 8, 16, 32, 64 levels (3 L channels); layer2d-w1 (9 channels)
    assert [pareto.rule_width(3 * n) for n in (8, 16, 32, 64)] == [16, 16, 32, 64]
    assert pareto.rule_width(9) == 16
    assert pareto.rule_width(3 * 48) == 48 and pareto.rule_width(3 * 33) == 40  # rounded up
    assert pareto.channels_in("joint3d", 64, 1) == 192
    assert pareto.channels_in("layer2d", 64, 2) == 15
    assert pareto.sweep_widths(["x0.5", "x1", "x2"], 192, 64) == [32, 64]  # 128 left out
    assert pareto.sweep_widths(["x0.5", "auto", "16", "x2"], 24, 64) == [8, 16, 32]
    assert pareto.width_of("x0.25", 24) == 8  # never below 8
    sweep = pareto.parse_widths(["layer2d=8,24"])
    assert sweep == {"joint3d": ["x0.5", "x1", "x2"], "layer2d": ["8", "24"]}
    for bad in (["joint2d=8"], ["joint3d=12"], ["joint3d=x0"], ["joint3d=xa"], ["layer2d="]):
        with pytest.raises(pareto.SweepError, match="--widths"):
            pareto.parse_widths(bad)


# -------------------------------------------------------------------------- fronts
def _dominated(point: tuple[float, float], points: list[tuple[float, float]]) -> bool:
    """Brute force: another point is no worse on both axes and better on one."""
    c, q = point
    return any(c2 <= c and q2 <= q and (c2 < c or q2 < q) for c2, q2 in points)


def test_pareto_front_is_the_non_dominated_set(pareto: Any) -> None:
    points = [(3.0, 0.5), (1.0, 0.9), (2.0, 0.5), (2.0, 0.4), (5.0, 0.1), (4.0, 0.45), (1.0, 0.9)]
    # (3, .5) by (2, .4); (2, .5) by (2, .4); (4, .45) by (2, .4); the second (1, .9) repeats
    assert pareto.pareto_front(points) == [1, 3, 4]
    assert pareto.pareto_front([(1.0, math.nan), (2.0, 1.0)]) == [1]

    rng = np.random.default_rng(0)
    for _ in range(50):
        pts = [tuple(p) for p in rng.integers(0, 6, size=(12, 2)).astype(float)]
        front = pareto.pareto_front(pts)
        expected = {p for p in pts if not _dominated(p, pts)}
        assert {pts[i] for i in front} == expected  # every non-dominated value, once
        assert len(front) == len(expected)
        assert [pts[i][0] for i in front] == sorted(pts[i][0] for i in front)


def test_compare_fronts_finds_every_change_of_the_cheaper_strategy(pareto: Any) -> None:
    a = [(1.0, 0.30), (2.0, 0.20), (8.0, 0.10)]
    b = [(1.5, 0.25), (3.0, 0.12), (4.0, 0.05)]
    result = pareto.compare_fronts({"A": a, "B": b})
    spans = [(s.best, s.worst, s.cheaper, s.only) for s in result.segments]
    assert spans == [
        (0.05, 0.10, "B", True),  # only B reaches below 0.10
        (0.10, 0.20, "B", False),  # B: 4 then 3 against A's 8
        (0.20, 0.25, "A", False),  # A: 2 against 3
        (0.25, 0.30, "B", False),  # B: 1.5 against 2
        (0.30, math.inf, "A", False),  # A: 1 against 1.5
    ]
    assert result.crossovers == [0.20, 0.25, 0.30]
    # brute force: at every quality the segment names the cheaper by cheapest()
    for q in np.linspace(0.05, 0.5, 91):
        segment = next(s for s in result.segments if s.best <= q < s.worst)
        ca, cb = pareto.cheapest(a, q), pareto.cheapest(b, q)
        assert segment.cheaper == ("A" if ca < cb else "B")

    # one strategy better and cheaper everywhere: no crossover, even where only it reaches
    none = pareto.compare_fronts({"A": [(1.0, 0.1)], "B": [(2.0, 0.2), (3.0, 0.15)]})
    assert [(s.cheaper, s.only) for s in none.segments] == [("A", True), ("A", False)]
    assert none.crossovers == []
    assert "no crossover within the sweep" in pareto.describe(none, "s_per_member", "crps")
    # ties are skipped: A, tie, B is one crossover, where B becomes the cheaper
    tie = pareto.compare_fronts({"A": [(1.0, 0.1)], "B": [(1.0, 0.2), (0.5, 0.3)]})
    assert [s.cheaper for s in tie.segments] == ["A", "tie", "B"]
    assert tie.crossovers == [0.3]
    with pytest.raises(pareto.SweepError, match="two strategies"):
        pareto.compare_fronts({"A": a})


def test_analyse_per_level_cost_and_quality(pareto: Any) -> None:
    def row(strategy: str, width: int, mib: float, crps: float) -> dict[str, Any]:
        return {
            "grid": "16x32",
            "levels": 8,
            "strategy": strategy,
            "width": width,
            "mib_per_member": mib,
            "s_per_member": mib / 10,
            "crps_norm": crps,
            "val_loss": crps,
            "vcorr_error": crps,
            "spectrum_error": crps,
            "ssr_gap": crps,
        }

    rows = [
        row("joint3d", 16, 5.0, 0.20),
        row("joint3d", 32, 9.0, 0.15),
        row("joint3d", 64, 20.0, 0.16),  # dominated by 32
        row("layer2d", 8, 4.0, 0.25),
        row("layer2d", 16, 30.0, 0.12),
    ]
    entries = pareto.analyse(rows)
    assert len(entries) == len(pareto.COSTS) * len(pareto.QUALITIES)
    entry = next(e for e in entries if (e["cost"], e["quality"]) == ("mib_per_member", "crps_norm"))
    assert [f["width"] for f in entry["fronts"]["joint3d"]] == [16, 32]
    assert [f["width"] for f in entry["fronts"]["layer2d"]] == [8, 16]
    # below 0.15 only layer2d-16; joint3d cheaper from 0.15 until layer2d-8 (4 MiB) at 0.25
    assert entry["crossovers"] == [0.15, 0.25]
    assert "only layer2d reaches it" in entry["statement"]


# ------------------------------------------------------------------------- --quick
@pytest.mark.slow
def test_quick_pareto_study(tmp_path: Path, pareto: Any) -> None:
    work = tmp_path / "study"
    command = [sys.executable, str(SCRIPT), "--quick", "--work", str(work)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]

    payload = json.loads((work / "strategies_pareto-cpu.json").read_text())
    assert payload["benchmark"] == "strategies_pareto"
    settings = payload["settings"]
    assert settings["levels"] == [8] and settings["grids"] == ["16x32"]
    assert settings["plateau"]["window"] >= 1 and settings["lr_schedule"] == "constant"
    rows = payload["rows"]
    widths = {
        s: sorted(r["width"] for r in rows if r["strategy"] == s) for s in ("joint3d", "layer2d")
    }
    assert widths == {"joint3d": [8, 16], "layer2d": [8, 16]}
    for r in rows:
        assert r["rule_width"] == 16 and r["channels_in"] == (
            24 if r["strategy"] == "joint3d" else 9
        )
        assert r["stopped"] in ("plateau", "time")
        assert r["parameters"] > 0 and r["train_steps"] >= 1
        steps = [point[0] for point in r["curve"]]
        assert steps[0] == 0 and steps == sorted(steps) and steps[-1] == r["train_steps"]
        assert r["val_loss"] == pytest.approx(r["curve"][-1][2])
        for key in ("s_per_member", "mib_per_member", "gflop_per_member", "crps_norm", "ssr"):
            assert math.isfinite(r[key]) and r[key] > 0, (r["variant"], r["width"], key)
        assert r["ssr_gap"] == pytest.approx(abs(1 - r["ssr"]))
    # a wider network has more parameters and costs more FLOPs per member
    for s in ("joint3d", "layer2d"):
        narrow, wide = sorted((r for r in rows if r["strategy"] == s), key=lambda r: r["width"])
        assert wide["parameters"] > 2 * narrow["parameters"]
        assert wide["gflop_per_member"] > narrow["gflop_per_member"]

    entries = payload["pareto"]
    assert len(entries) == 2 * 5  # costs x qualities for the one grid and L
    for entry in entries:
        points = {
            s: [(r[entry["cost"]], r[entry["quality"]]) for r in rows if r["strategy"] == s]
            for s in ("joint3d", "layer2d")
        }
        assert entry["crossovers"] == pareto.compare_fronts(points).crossovers
        for s, front in entry["fronts"].items():
            assert 1 <= len(front) <= 2 and {f["width"] for f in front} <= {8, 16}, s

    table = (work / "strategies_pareto-cpu.md").read_text()
    assert table.count("| 16x32 | 8 |") == 4 + 10
    figures = {p.name for p in (work / "figures").glob("*.png")}
    assert "16x32-mib_per_member-crps_norm.png" in figures and len(figures) == 4

    # a rerun trains and samples nothing again
    cached = sorted((work / "16x32" / "priors").glob("*.json"))
    stamps = [p.stat().st_mtime_ns for p in cached]
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-4000:]
    assert [p.stat().st_mtime_ns for p in cached] == stamps
    assert json.loads((work / "strategies_pareto-cpu.json").read_text())["rows"] == rows
