"""The multi-window OSSE's window choice and its fast localisation tuning (``benchmarks/osse.py``)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
import torch

from genda.assimilation.baselines import Localization, draw_climatology, localized_analysis
from genda.grid import Grid
from genda.observations.operators import ObservationOperator
from genda.observations.table import validate_observations
from genda.orchestration.baseline import baseline_generators

ROOT = Path(__file__).resolve().parents[1]
GRID = Grid.gaussian(4, 8, 2)
T0 = np.datetime64("2000-01-01T00:00", "ns")


@pytest.fixture(scope="module")
def osse() -> ModuleType:
    """The benchmark script as a module (it imports ``_common`` from its own folder)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import osse as module
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


def test_scored_and_tuning_windows_differ_in_day_and_hour(osse: ModuleType) -> None:
    times = T0 + np.arange(100 * 24) * np.timedelta64(1, "h")
    scored = osse.window_times(times, 8)
    tuning = osse.window_times(times, 8, shift=0.5)
    assert len(set(scored)) == 8 and len(set(tuning)) == 8
    hours = [np.datetime64(t).astype("datetime64[h]").astype(int) % 24 for t in scored]
    assert hours == [0, 3, 6, 9, 12, 15, 18, 21]
    days = {t[:10] for t in scored}
    assert len(days) == 8 and not days & {t[:10] for t in tuning}
    assert all(np.datetime64(t).astype("datetime64[h]").astype(int) % 3 == 1 for t in tuning)
    assert all(times[0] < np.datetime64(t) < times[-1] for t in scored + tuning)


def test_tuning_scores_are_those_of_the_library_analyses(osse: ModuleType) -> None:
    hours = 300
    rng = np.random.default_rng(0)
    scale = np.array([20.0, 10.0, 8.0])[:, None, None, None]
    states = (200.0 + scale * rng.standard_normal((hours, *GRID.shape))).astype(np.float32)
    times = T0 + np.arange(hours) * np.timedelta64(1, "h")
    ds = GRID.to_dataset(states, time=times)
    when = "2000-01-07T06:00"
    truth = states[150]
    m = 12
    variables = rng.choice(["u", "v", "T"], m)
    obs = validate_observations(
        pd.DataFrame(
            {
                "time": np.datetime64(when, "ns"),
                "lat": rng.uniform(-70, 70, m),
                "lon": rng.uniform(0, 360, m),
                "alt_km": rng.uniform(80, 115, m),
                "variable": variables,
                "value": 0.0,
                "sigma": 2.0,
            }
        ),
        GRID,
        check_values=False,
    )
    obs["value"] = ObservationOperator.from_table(obs, GRID)(
        torch.from_numpy(truth).double()
    ).numpy()
    settings = [(3000.0, 20.0), (8000.0, 40.0)]
    std = states.std(axis=(0, 2, 3, 4), dtype=np.float64)
    scores = osse.tune_window(states, times, truth, obs, GRID, when, 7, 4, settings, std)
    area = GRID.area_weights()
    centre = np.datetime64(when, "ns")
    eligible = osse._eligible(times, when)
    assert eligible == hours - 97
    same_hour = osse.same_hour_indices(times, when, 7)
    offsets = (same_hour - 150) % 24
    assert set(offsets.tolist()) == {23, 0, 1} and np.abs(same_hour - 150).min() > 48
    assert set(scores) == {"oi", "enkf", "enoi", "enoi-hour", "enkf-hour"}
    for i, (horizontal, vertical) in enumerate(settings):
        localization = Localization(horizontal, vertical)
        climatology_rng, perturbation_rng = baseline_generators(7, centre)
        draw = draw_climatology(ds, centre, osse.CLIMATOLOGY_SIZE, climatology_rng)
        small = localized_analysis(
            draw.states, obs, GRID, members=4, rng=perturbation_rng, localization=localization
        )
        every = draw_climatology(ds, centre, eligible, np.random.default_rng(1))
        large = localized_analysis(every.states, obs, GRID, localization=localization)
        hourly = states[osse.same_hour_indices(times, when, 7)]
        _, perturbation_rng = baseline_generators(7, centre)
        matched = localized_analysis(
            hourly, obs, GRID, members=4, rng=perturbation_rng, localization=localization
        )
        expected = {
            "oi": small.mean,
            "enkf": small.members.astype(np.float64).mean(axis=0),
            "enoi": large.mean,
            "enoi-hour": matched.mean,
            "enkf-hour": matched.members.astype(np.float64).mean(axis=0),
        }
        for name, field in expected.items():
            score = osse._normalised_rmse(field, truth, area, std)
            assert scores[name][i] == pytest.approx(score, rel=1e-6), name


def test_pooled_member_power_is_a_ratio_of_means_over_complete_members(
    osse: ModuleType, tmp_path: Path
) -> None:
    """Two windows pool to the members' mean power over the run's; incomplete members and
    ``l < 6`` never count; rank histograms average over windows."""
    from genda.evaluation.posterior_fidelity import scalar_power
    from osse_pooled import (
        pooled_figure,
        pooled_member_power,
        pooled_rank_histograms,
        reference_power,
        window_member_power,
    )

    grid = Grid.gaussian(16, 32, 2)
    rng = np.random.default_rng(0)
    run = grid.to_dataset(
        rng.standard_normal((30, *grid.shape)).astype(np.float32),
        time=T0 + np.arange(30) * np.timedelta64(1, "h"),
    )
    reference = reference_power(run, grid)
    order = ("time", "altitude", "latitude", "longitude")
    np.testing.assert_allclose(
        reference["T"], scalar_power(run["T"].transpose(*order).values, grid), rtol=1e-12
    )

    def store(path: Path, scale: float, complete: list[bool]) -> Path:
        members = scale * rng.standard_normal((len(complete), *grid.shape)).astype(np.float32)
        members[~np.asarray(complete)] = 1e6  # a member never written completely
        ds = grid.to_dataset(members, time=T0 + np.arange(len(complete)) * np.timedelta64(1, "h"))
        ds = ds.rename(time="member").assign_coords(member=np.arange(len(complete)))
        ds = ds.expand_dims(time=[T0])
        ds["complete"] = (("time", "member"), np.asarray([complete]))
        ds.to_zarr(path, mode="w", consolidated=False)
        return path

    first, n1 = window_member_power(store(tmp_path / "a.zarr", 1.0, [True, True, False]), grid)
    second, n2 = window_member_power(store(tmp_path / "b.zarr", 2.0, [True, True, True]), grid)
    assert (n1, n2) == (2, 3)
    assert np.all(first["T"] < 1e3)  # the incomplete member's 1e6 stayed out
    sums = {name: first[name] + second[name] for name in first}
    pooled = pooled_member_power(sums, n1 + n2, 2, reference)
    assert pooled["members"] == 5 and pooled["windows"] == 2
    ratio = np.asarray(pooled["power_ratio"]["T"])
    expected = (first["T"] + second["T"])[:, 1:] / 5 / reference["T"][:, 1:]
    np.testing.assert_allclose(ratio, expected, rtol=1e-12)
    # variance 1 (two members) and 4 (three) against 1: the mean ratio is near 14 / 5
    assert pooled["mean_power_ratio"]["T"] == pytest.approx(14 / 5, rel=0.15)
    keep = np.asarray(pooled["degree"]) >= 6
    assert pooled["worst_power_error"]["T"] == pytest.approx(np.abs(ratio[:, keep] - 1).max())

    def metrics(histogram: list[float]) -> dict:
        return {"ensemble": {"variables": {"T": {"total": {"rank_histogram": histogram}}}}}

    histograms = pooled_rank_histograms([metrics([0.5, 0.25, 0.25]), metrics([0.25, 0.25, 0.5])])
    np.testing.assert_allclose(histograms["T"], [0.375, 0.25, 0.375])
    figure = pooled_figure(
        {"mmps": {"member_power": pooled, "rank_histograms": histograms}},
        [80.0, 85.0],
        tmp_path / "pooled.png",
    )
    assert figure.stat().st_size > 0
