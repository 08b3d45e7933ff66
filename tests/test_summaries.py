"""The typed window summary and its JSON form; the one meaning of an ``auto`` batch size."""

from __future__ import annotations

import json

import pytest

from genda.assimilation.posterior import PosteriorSettings
from genda.cli.options import parse_batch_size
from genda.orchestration.config import CycleConfig, resolve_batch_size
from genda.orchestration.flows import markdown_report
from genda.orchestration.summaries import ObservationFit, WindowSummary

FIT = {"observations": 42, "rms_normalised_innovation": 1.25, "mean_spread_over_sigma": 0.5}
REFERENCE = {"observations": 42, "rms_normalised_innovation": 3.5, "mean_spread_over_sigma": 0.0}
SUMMARY = {
    "store": "s.zarr",
    "time": "2000-01-02T06:00:00",
    "members": 4,
    "written": 3,
    "already_complete": 1,
    "strategy": "joint3d",
    "method": "mmps",
    "steps": 8,
    "batch_size": 2,
    "workers": 0,
    "cluster": "",
    "seconds": 1.5,
    "members_per_second": 2.0,
    "failures_retried": 0,
    "by_worker": {"host:1": 3},
    "peak_memory_mib": 12.5,
    "observations": 42,
    "outliers": 2,
    "outliers_by_variable": {"u": 2},
    "outliers_kept": False,
    "fit": FIT,
    "level_mean_fit": REFERENCE,
}


def test_a_summary_reads_back_to_the_same_json() -> None:
    summary = WindowSummary.from_dict(SUMMARY)
    assert summary.fit == ObservationFit(42, 1.25, 0.5)
    assert summary.level_mean_fit is not None
    assert summary.level_mean_fit.rms_normalised_innovation == 3.5
    assert json.dumps(summary.to_dict()) == json.dumps(SUMMARY)  # keys in the same order


def test_a_prior_summary_has_no_fit_keys() -> None:
    prior = {k: v for k, v in SUMMARY.items() if k not in ("fit", "level_mean_fit")}
    summary = WindowSummary.from_dict(prior)
    assert summary.fit is None and summary.level_mean_fit is None
    assert json.dumps(summary.to_dict()) == json.dumps(prior)


def test_an_unknown_key_is_a_bug_not_ignored() -> None:
    with pytest.raises(TypeError):
        WindowSummary.from_dict({**SUMMARY, "surprise": 1})


def test_the_window_artifact_reads_the_typed_summary() -> None:
    text = markdown_report(SUMMARY["time"], SUMMARY, None)
    assert "- members: 4 (3 made now, 1 already stored), mmps, 8 steps, joint3d" in text
    assert "rms (y - Hx)/sigma: 1.25 (training mean per level: 3.50)" in text


def test_auto_batch_means_one_thing_in_the_command_and_the_cycle() -> None:
    default = PosteriorSettings().batch_size
    assert resolve_batch_size("auto") == (default, True)
    assert parse_batch_size("auto") == parse_batch_size(" AUTO ") == (default, True)
    assert parse_batch_size("3") == resolve_batch_size(3) == (3, False)
    config = CycleConfig.model_validate(
        {
            "observations": "obs/{time:%H}.csv",
            "start": "2000-01-01T00:00",
            "end": "2000-01-01T00:00",
            "store": "s.zarr",
            "batch_size": "auto",
        }
    )
    assert config.auto_batch and config.settings().batch_size == default
    fixed = config.model_copy(update={"batch_size": 5})
    assert not fixed.auto_batch and fixed.settings().batch_size == 5
