"""genda.evaluation.scores against closed forms and brute force.

Calibrated ensembles are made the way the verification theory needs them:
the truth is one more draw from the distribution the members come from
(``truth = c + s e0``, ``member_i = c + s e_i``), so the truth is
statistically indistinguishable from a member.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from rich.table import Table
from scipy.stats import norm

from genda.evaluation.scores import (
    align_time,
    ensemble_scores,
    format_table,
    point_scores,
    reliability_index,
)
from genda.grid import Grid, GridMismatchError

GRID = Grid.gaussian(16, 32, 4)
SPACE = ("altitude", "latitude", "longitude")
SCALE = {"u": 5.0, "v": 3.0, "T": 2.0}
"""Ensemble standard deviation per variable (physical units)."""


def ensemble_dataset(fields: np.ndarray, grid: Grid = GRID) -> xr.Dataset:
    """``(N, V, L, H, W)`` -> Dataset ``(member, altitude, latitude, longitude)``."""
    base = grid.to_dataset(fields[0])
    data = {
        name: (("member", *SPACE), fields[:, i], base[name].attrs)
        for i, name in enumerate(grid.variables)
    }
    return xr.Dataset(data, coords={**base.coords, "member": np.arange(fields.shape[0])})


def scales(grid: Grid = GRID) -> np.ndarray:
    """``(V, 1, 1, 1)`` standard deviations to broadcast over fields."""
    return np.array([SCALE[name] for name in grid.variables])[:, None, None, None]


def centre(rng: np.random.Generator) -> np.ndarray:
    """A smooth-ish background ``(V, L, H, W)`` in plausible units."""
    base = np.array([10.0, 0.0, 200.0])[:, None, None, None]
    return base + 20.0 * rng.standard_normal(GRID.shape)


def weighted_mean(values: np.ndarray) -> np.ndarray:
    """Area mean over the last two axes ``(H, W)`` with the grid's weights."""
    w = GRID.area_weights()
    return np.einsum("...hw,h->...", values, w) / GRID.nlon


@pytest.fixture(scope="module")
def calibrated() -> tuple[xr.Dataset, xr.Dataset, dict]:
    rng = np.random.default_rng(1)
    c = centre(rng)
    truth = GRID.to_dataset(c + scales() * rng.standard_normal(GRID.shape))
    members = c + scales() * rng.standard_normal((40, *GRID.shape))
    ensemble = ensemble_dataset(members)
    return ensemble, truth, ensemble_scores(ensemble, truth)


def test_calibrated_ensemble_has_unit_spread_skill_and_flat_histogram(calibrated) -> None:
    _, _, metrics = calibrated
    assert metrics["n_members"] == 40
    json.dumps(metrics)  # JSON-serialisable as it stands
    for name, entry in metrics["variables"].items():
        total = entry["total"]
        assert 0.9 <= total["spread_skill"] <= 1.1, name
        assert all(0.85 <= r <= 1.15 for r in entry["levels"]["spread_skill"]), name
        assert total["spread"] == pytest.approx(SCALE[name], rel=0.03)
        # the error of the mean of 40 draws about one more draw: s sqrt(41/40)
        assert total["rmse"] == pytest.approx(SCALE[name] * math.sqrt(41 / 40), rel=0.03)
        histogram = np.asarray(total["rank_histogram"])
        assert histogram.shape == (41,)
        assert histogram.sum() == pytest.approx(1.0)
        assert total["reliability_index"] < 0.3, name  # sampling noise ~0.2 here
        assert histogram.max() < 1.7 / 41 and histogram.min() > 0.4 / 41
        assert entry["units"] == {"u": "m s-1", "v": "m s-1", "T": "K"}[name]
        assert entry["score_units"]["crps"] == entry["units"]
        assert len(entry["levels"]["crps"]) == GRID.nlevels
        assert np.shape(entry["levels"]["rank_histogram"]) == (GRID.nlevels, 41)


def test_under_dispersive_ensemble_is_caught() -> None:
    rng = np.random.default_rng(2)
    c = centre(rng)
    truth = GRID.to_dataset(c + scales() * rng.standard_normal(GRID.shape))
    members = c + scales() / 3 * rng.standard_normal((40, *GRID.shape))
    metrics = ensemble_scores(ensemble_dataset(members), truth)
    flat = 1 / 41
    for name, entry in metrics["variables"].items():
        total = entry["total"]
        assert total["spread_skill"] < 0.45, name  # about 1/3
        histogram = np.asarray(total["rank_histogram"])
        # U shape: both outer ranks far above flat, the middle ranks below it
        assert histogram[0] > 8 * flat and histogram[-1] > 8 * flat, name
        assert np.all(histogram[10:31] < flat), name
        assert total["reliability_index"] > 0.7  # calibrated: < 0.3


def test_shifted_ensemble_rmse_bias_and_one_sided_histogram() -> None:
    rng = np.random.default_rng(3)
    truth_fields = centre(rng)
    noise = rng.standard_normal((10, *GRID.shape))
    noise -= noise.mean(axis=0)  # the ensemble mean is exactly truth + shift
    shift = 2.0 * scales()  # members lie s/3 around a truth shifted by 2 s
    members = truth_fields + shift + scales() / 3 * noise
    metrics = ensemble_scores(ensemble_dataset(members), GRID.to_dataset(truth_fields))
    for i, name in enumerate(GRID.variables):
        entry = metrics["variables"][name]
        s = SCALE[name]
        np.testing.assert_allclose(entry["levels"]["rmse"], 2 * s, rtol=1e-9)
        np.testing.assert_allclose(entry["levels"]["bias"], 2 * s, rtol=1e-9)
        assert entry["total"]["rmse"] == pytest.approx(2 * s, rel=1e-9)
        assert entry["total"]["bias"] == pytest.approx(2 * s, rel=1e-9)
        # spread against brute force: sqrt of the area-mean unbiased variance
        variance = weighted_mean(members[:, i].var(axis=0, ddof=1))
        np.testing.assert_allclose(entry["levels"]["spread"], np.sqrt(variance), rtol=1e-9)
        assert entry["total"]["spread"] == pytest.approx(np.sqrt(variance.mean()), rel=1e-9)
        ratio = math.sqrt(11 / 10) * entry["total"]["spread"] / entry["total"]["rmse"]
        assert entry["total"]["spread_skill"] == pytest.approx(ratio, rel=1e-12)
        # the truth lies below every member (6 sigma of the members away)
        assert entry["total"]["rank_histogram"][0] > 0.999


def test_single_member_crps_is_the_area_weighted_mae() -> None:
    rng = np.random.default_rng(4)
    truth_fields = centre(rng)
    member = truth_fields + scales() * rng.standard_normal(GRID.shape)
    metrics = ensemble_scores(ensemble_dataset(member[None]), GRID.to_dataset(truth_fields))
    for i, name in enumerate(GRID.variables):
        entry = metrics["variables"][name]
        mae = weighted_mean(np.abs(member[i] - truth_fields[i]))  # (L,)
        np.testing.assert_allclose(entry["levels"]["crps"], mae, rtol=1e-10)
        assert entry["total"]["crps"] == pytest.approx(mae.mean(), rel=1e-10)
        assert math.isnan(entry["total"]["spread"])  # undefined for one member


def gaussian_crps(mu: float, sigma: float, y: float) -> float:
    """CRPS of N(mu, sigma^2) at y (Gneiting et al. 2005, Mon. Wea. Rev. 133, eq. 5)."""
    z = (y - mu) / sigma
    return sigma * (z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / math.sqrt(math.pi))


def test_fair_crps_approaches_the_gaussian_closed_form() -> None:
    rng = np.random.default_rng(5)
    truth_fields = centre(rng)
    offset = 0.5  # ensemble centred half a standard deviation above the truth
    members = truth_fields + scales() * (offset + rng.standard_normal((64, *GRID.shape)))
    metrics = ensemble_scores(ensemble_dataset(members), GRID.to_dataset(truth_fields))
    for name, entry in metrics["variables"].items():
        s = SCALE[name]
        expected = gaussian_crps(offset * s, s, 0.0)
        assert entry["total"]["crps"] == pytest.approx(expected, rel=0.015), name


def test_reliability_index_bounds() -> None:
    assert reliability_index(np.full(11, 1 / 11)) == pytest.approx(0.0)
    one_sided = np.zeros(11)
    one_sided[0] = 1.0
    assert reliability_index(one_sided) == pytest.approx(2 * 10 / 11)


# ---------------------------------------------------------------------- errors
def test_grid_mismatch_is_named(calibrated) -> None:
    ensemble, truth, _ = calibrated
    moved = truth.assign_coords(longitude=truth["longitude"] + 1.0)
    with pytest.raises(GridMismatchError, match="longitude"):
        ensemble_scores(ensemble, moved)
    fewer = GRID.to_dataset(np.zeros(GRID.shape)).isel(altitude=slice(0, 3))
    with pytest.raises(GridMismatchError, match="altitude: 4 points vs 3"):
        ensemble_scores(ensemble, fewer)
    with pytest.raises(GridMismatchError, match="'member'"):
        ensemble_scores(ensemble.isel(member=0), truth)


def test_missing_variable_is_named(calibrated) -> None:
    ensemble, truth, _ = calibrated
    with pytest.raises(KeyError, match=r"truth lacks variable\(s\) \['T'\]"):
        ensemble_scores(ensemble, truth.drop_vars("T"))
    with pytest.raises(KeyError, match=r"ensemble lacks variable\(s\) \['v'\]"):
        ensemble_scores(ensemble.drop_vars("v"), truth, GRID)


def test_nan_is_named(calibrated) -> None:
    ensemble, truth, _ = calibrated
    broken = truth.copy(deep=True)
    broken["v"][2, 3, 4] = np.nan
    with pytest.raises(ValueError, match=r"truth's variable 'v' has NaN.*at 103\.3"):
        ensemble_scores(ensemble, broken)


# ---------------------------------------------------------------------- time
def test_ensemble_time_is_selected_in_the_truth(calibrated) -> None:
    ensemble, truth, metrics = calibrated
    times = np.array(["2030-01-01T00", "2030-01-01T06", "2030-01-01T12"], dtype="datetime64[ns]")
    fields = np.stack([truth[name].values for name in GRID.variables])
    series = GRID.to_dataset(np.stack([fields - 1.0, fields, fields + 1.0]), time=times)
    stamped = ensemble.expand_dims(time=times[1:2])
    again = ensemble_scores(stamped, series)
    assert again["times"] == ["2030-01-01T06:00:00"]
    for name in GRID.variables:
        assert again["variables"][name]["total"] == metrics["variables"][name]["total"]
    # an ensemble without a time of its own against several truth times
    with pytest.raises(ValueError, match="pass time="):
        ensemble_scores(ensemble, series)
    chosen = ensemble_scores(ensemble, series, time="2030-01-01T06:00")
    assert chosen["times"] == ["2030-01-01T06:00:00"]
    assert chosen["variables"]["T"]["total"] == metrics["variables"]["T"]["total"]
    late = ensemble.expand_dims(time=np.array(["2031-01-01"], dtype="datetime64[ns]"))
    with pytest.raises(ValueError, match="2030-01-01T00:00:00 to 2030-01-01T12:00:00"):
        ensemble_scores(late, series)


def test_several_times_are_pooled(calibrated) -> None:
    ensemble, truth, metrics = calibrated
    times = np.array(["2030-01-01T00", "2030-01-01T06"], dtype="datetime64[ns]")
    shifted = ensemble + 1.0
    stacked = xr.concat([ensemble, shifted], dim=xr.DataArray(times, dims="time"))
    series = xr.concat([truth, truth], dim=xr.DataArray(times, dims="time"))
    pooled = ensemble_scores(stacked, series)
    second = ensemble_scores(shifted, truth)
    for name in GRID.variables:
        a, b = metrics["variables"][name]["total"], second["variables"][name]["total"]
        total = pooled["variables"][name]["total"]
        assert total["crps"] == pytest.approx((a["crps"] + b["crps"]) / 2, rel=1e-9)
        assert total["rmse"] == pytest.approx(math.sqrt((a["rmse"] ** 2 + b["rmse"] ** 2) / 2))
    ensemble_aligned, truth_aligned, labels = align_time(stacked, series)
    assert ensemble_aligned.sizes["time"] == 2 and truth_aligned.sizes["time"] == 2
    assert labels == ["2030-01-01T00:00:00", "2030-01-01T06:00:00"]


# ---------------------------------------------------------------------- points
def fair_crps(members: np.ndarray, y: float) -> float:
    n = members.size
    spread = np.abs(members[:, None] - members[None, :]).sum() / (2 * n * (n - 1))
    return float(np.abs(members - y).mean() - spread)


def test_point_scores_on_a_hand_made_table() -> None:
    obs = pd.DataFrame(
        {
            "time": pd.to_datetime(["2030-01-01"] * 4),
            "lat": [54.0, 54.0, 69.0, 54.0],
            "lon": [13.0, 13.0, 16.0, 13.0],
            "alt_km": [85.0, 90.0, 90.0, 90.0],
            "variable": ["T", "T", "T", "u"],
            "value": [180.0, 190.0, 200.0, 10.0],
            "sigma": [0.0, 0.0, 0.0, 5.0],
            "station": ["kuhlungsborn", "kuhlungsborn", "andoya", "kuhlungsborn"],
        }
    )
    members = np.array(
        [
            [181.0, 188.0, 203.0, 12.0],
            [179.0, 191.0, 205.0, 4.0],
            [183.0, 192.0, 207.0, 8.0],
        ]
    )
    metrics = point_scores(members, obs)
    json.dumps(metrics)
    t = metrics["variables"]["T"]
    assert t["count"] == 3 and t["units"] == "K"
    rows = [0, 1, 2]
    crps = np.mean([fair_crps(members[:, r], obs["value"][r]) for r in rows])
    error = members[:, rows].mean(0) - obs["value"].to_numpy()[rows]
    assert t["total"]["crps"] == pytest.approx(crps)
    assert t["total"]["rmse"] == pytest.approx(np.sqrt(np.mean(error**2)))
    assert t["total"]["bias"] == pytest.approx(error.mean())
    spread = np.sqrt(members[:, rows].var(axis=0, ddof=1).mean())
    assert t["total"]["spread"] == pytest.approx(spread)
    assert t["total"]["spread_skill"] == pytest.approx(
        math.sqrt(4 / 3) * spread / np.sqrt(np.mean(error**2))
    )
    # ranks of the truth among 3 members: 2 (180), 2 (190), 1 (200 below all)
    np.testing.assert_allclose(t["total"]["rank_histogram"], [1 / 3, 2 / 3, 0, 0])
    # sigma = 0: the observation error changes nothing
    assert t["with_obs_error"] == t["total"]
    assert set(t["stations"]) == {"kuhlungsborn", "andoya"}
    andoya = t["stations"]["andoya"]
    assert andoya["count"] == 1
    assert andoya["total"]["crps"] == pytest.approx(fair_crps(members[:, 2], 200.0))
    u = metrics["variables"]["u"]
    assert u["count"] == 1 and u["units"] == "m s-1"
    assert u["total"]["bias"] == pytest.approx(-2.0)
    assert u["with_obs_error"]["spread"] != u["total"]["spread"]  # sigma = 5 perturbs
    assert point_scores(members, obs) == metrics  # seeded


def test_observation_error_widens_the_ensemble() -> None:
    rng = np.random.default_rng(6)
    m, n, s, sigma = 400, 200, 1.0, 2.0
    c = 10.0 * rng.standard_normal(m)
    truth = c + s * rng.standard_normal(m)  # a calibrated ensemble about c
    observed = truth + sigma * rng.standard_normal(m)  # observations carry errors
    members = c + s * rng.standard_normal((n, m))
    obs = pd.DataFrame({"variable": "los", "value": observed, "sigma": sigma})
    metrics = point_scores(members, obs, seed=3)["variables"]["los"]
    raw, corrected = metrics["total"], metrics["with_obs_error"]
    assert metrics["units"] == "m s-1"
    assert raw["spread"] == pytest.approx(s, rel=0.05)
    assert corrected["spread"] == pytest.approx(math.hypot(s, sigma), rel=0.05)
    # against noisy observations only the perturbed ensemble is calibrated
    assert raw["spread_skill"] < 0.6
    assert 0.9 <= corrected["spread_skill"] <= 1.1
    assert corrected["reliability_index"] < raw["reliability_index"]
    assert corrected["crps"] < raw["crps"]


def test_point_scores_errors() -> None:
    obs = pd.DataFrame({"variable": ["T", "T"], "value": [200.0, np.nan], "sigma": [1.0, 1.0]})
    with pytest.raises(ValueError, match="observation row 1: value is NaN"):
        point_scores(np.zeros((3, 2)), obs)
    with pytest.raises(ValueError, match="3 points but the observation table 2 rows"):
        point_scores(np.zeros((3, 3)), obs)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['sigma'\]"):
        point_scores(np.zeros((3, 2)), obs.drop(columns="sigma"))


def test_format_table(calibrated) -> None:
    _, _, metrics = calibrated
    table = format_table(metrics)
    assert isinstance(table, Table)
    assert table.row_count == len(GRID.variables)
    assert [c.header for c in table.columns][:3] == ["variable", "units", "CRPS"]
    obs = pd.DataFrame({"variable": ["T", "u"], "value": [200.0, 1.0], "sigma": [1.0, 2.0]})
    points = format_table(point_scores(np.ones((4, 2)), obs))
    assert points.row_count == 4  # each variable with and without observation error
