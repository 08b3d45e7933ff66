"""``benchmarks/filtering_bound.py``, ``old_observation.py`` and ``filter_start.py``: helpers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from benchmark_modules import load_benchmark
from genda.assimilation.cycled_enkf import EnkfSettings, ModelEnsemble
from genda.simulator import SimulatorConfig

SMALL = SimulatorConfig(nlat=16, nlon=32, layers=4, levels=4)


@pytest.fixture(scope="module")
def bound() -> Any:
    return load_benchmark("filtering_bound")


def test_climatological_states_at_offset_zero_are_the_cycled_enkfs_members(bound: Any) -> None:
    """The cold windows' ensembles come from the run that starts the cycled EnKF: at offset 0
    they are its very members; at offset ``o`` each state lies ``o`` hours after one of them
    (the day before), so both follow the same tides."""
    first = np.datetime64("2000-01-03T05:00")
    settings = EnkfSettings(members=2, seed=4)
    states = bound.climatological_states(SMALL, first, [0, 2], 2, seed=4, spinup_days=0.25)
    reference = ModelEnsemble.climatological(SMALL, first, settings, spinup_days=0.25)
    assert [len(states[o]) for o in (0, 2)] == [2, 2]
    for state, member in zip(states[0], reference.members, strict=True):
        assert torch.equal(state, member.state)
    assert not any(torch.equal(a, b) for a, b in zip(states[0], states[2], strict=True))


def test_old_observation_summary_pairs_the_cases() -> None:
    old = load_benchmark("old_observation")
    cases = [
        {"station": "a", "without": 3.0, "with": 1.0},
        {"station": "b", "without": 4.0, "with": 2.0},
        {"station": "c", "without": 1.0, "with": 2.0},
    ]
    summary = old.summarise(cases)
    assert summary["cases"] == 3
    assert summary["rms_error_without"] == pytest.approx(math.sqrt((9 + 16 + 1) / 3))
    assert summary["rms_error_with"] == pytest.approx(math.sqrt((1 + 4 + 4) / 3))
    assert summary["ratio"] == pytest.approx(math.sqrt(9 / 26))
    assert summary["share_lowered"] == pytest.approx(2 / 3)
    # differences -2, -2, +1: mean -1, sample standard deviation sqrt(3)
    assert summary["mean_difference"] == pytest.approx(-1.0)
    assert summary["standard_error"] == pytest.approx(math.sqrt(3) / math.sqrt(3))
    assert 0.0 < summary["wilcoxon_p"] <= 1.0


def test_filter_start_variants_are_kept_cold_a_width_or_a_width_and_rtps() -> None:
    import argparse

    start = load_benchmark("filter_start")
    texts = (
        "kept",
        "cold",
        "2500",
        "2.5e3",
        "inf",
        "1e3@0.90",
        "inf@1",
        "1000@0.99999999",
        "10@-0",
    )
    assert [start.parse_variant(t) for t in texts] == [
        "kept",
        "cold",
        "2500",
        "2500",
        "inf",
        "1000@0.9",
        "inf@1",
        "1000@0.99999999",  # not rounded to 1
        "10@0",
    ]
    for bad in ("0", "-5", "nan", "warm", "1000@", "1000@1.5", "1000@nan", "@0.5"):
        with pytest.raises(argparse.ArgumentTypeError):
            start.parse_variant(bad)
    assert start.start_update("kept", 0.5) is None
    assert start.start_update("2500", 0.5).rtps == 0.5
    update = start.start_update("1000@0.9", 0.5)
    assert (update.horizontal_km, update.rtps) == (1000.0, 0.9)
    assert math.isinf(start.start_update("inf@1", 0.5).horizontal_km)
