"""Classical baselines: Gaspari-Cohn, localised OI against dense Kalman, EnKF statistics, climatology, end to end."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from genda.assimilation.baselines import (
    NO_LOCALIZATION,
    Localization,
    climatology_indices,
    draw_climatology,
    enkf_analysis,
    gaspari_cohn,
    great_circle_km,
    localized_analysis,
    oi_analysis,
)
from genda.errors import InvalidValueError
from genda.grid import Grid
from genda.observations.files import write_observations
from genda.observations.operators import ObservationOperator
from genda.observations.table import ObservationError, validate_observations
from genda.orchestration.baseline import BaselineSummary, baseline_window
from genda.storage import EnsembleStore
from kalman_reference import dense_kalman

TINY = Grid.gaussian(4, 8, 2)
MEAN = np.array([10.0, 0.0, 200.0])  # u, v, T
SCALE = np.array([20.0, 10.0, 8.0])
CORRELATION = np.array([[1.0, 0.3, 0.5], [0.3, 1.0, 0.0], [0.5, 0.0, 1.0]])
T0 = np.datetime64("2000-01-01T00:00", "ns")


def climatology(grid: Grid, k: int, seed: int = 0) -> np.ndarray:
    """``(k, V, L, H, W)`` float32 Gaussian states with cross-variable correlations.

    Separable covariance as in :meth:`GaussianFieldPrior.on_grid` (Gaussian in
    great-circle distance, 3000 km; exponential in altitude, 20 km), drawn with
    numpy alone: mixing torch's and scipy's thread pools is slow on a busy machine.
    """
    lat, lon = np.meshgrid(grid.latitude, grid.longitude, indexing="ij")
    lat, lon = lat.reshape(-1), lon.reshape(-1)
    distance = great_circle_km(lat[:, None], lon[:, None], lat[None, :], lon[None, :])
    horizontal = np.exp(-0.5 * (distance / 3000.0) ** 2)
    vertical = np.exp(-np.abs(grid.altitude[:, None] - grid.altitude[None, :]) / 20.0)
    cov = np.kron(CORRELATION, np.kron(vertical, horizontal))
    factor = np.linalg.cholesky(cov + 1e-6 * np.eye(cov.shape[0]))
    x = np.random.default_rng(seed).standard_normal((k, cov.shape[0])) @ factor.T
    x = x.reshape(k, *grid.shape)
    return (MEAN[:, None, None, None] + SCALE[:, None, None, None] * x).astype(np.float32)


def table(rows: list[tuple], time: np.datetime64 = T0, grid: Grid = TINY) -> pd.DataFrame:
    """A validated table from ``(lat, lon, alt_km, variable, value, sigma[, az, el, fwhm])`` rows."""
    records = []
    for row in rows:
        lat, lon, alt, variable, value, sigma, *rest = row
        az, el, fwhm = (rest + [np.nan] * 3)[:3]
        records.append(
            {
                "time": time,
                "lat": lat,
                "lon": lon,
                "alt_km": alt,
                "variable": variable,
                "value": value,
                "sigma": sigma,
                "azimuth_deg": az,
                "elevation_deg": el,
                "fwhm_km": fwhm,
            }
        )
    return validate_observations(pd.DataFrame(records), grid)


def dense_rho(grid: Grid, localization: Localization) -> np.ndarray:
    """``(N, N)`` localisation between all grid points (same for every variable pair)."""
    lat, lon = np.meshgrid(grid.latitude, grid.longitude, indexing="ij")
    lat, lon = lat.reshape(-1), lon.reshape(-1)
    horizontal = gaspari_cohn(
        great_circle_km(lat[:, None], lon[:, None], lat[None, :], lon[None, :]),
        localization.horizontal_km,
    )
    vertical = gaspari_cohn(
        grid.altitude[:, None] - grid.altitude[None, :], localization.vertical_km
    )
    nvar = len(grid.variables)
    return np.kron(np.ones((nvar, nvar)), np.kron(vertical, horizontal))


# ---------------------------------------------------------------------------- (c) Gaspari-Cohn
def test_gaspari_cohn_support_and_continuity() -> None:
    c = 1500.0
    assert gaspari_cohn(0.0, c) == 1.0
    r = np.linspace(0.0, 3.0, 3001) * c
    values = gaspari_cohn(r, c)
    assert np.all(values[r >= 2 * c] == 0.0)
    assert np.all(values[r < 2 * c] > 0.0)
    assert np.all(np.diff(values) <= 1e-15)  # non-increasing
    assert gaspari_cohn(c, c) == pytest.approx(5.0 / 24.0)  # both branches at r = 1
    eps = 1e-9 * c
    for knot in (c, 2 * c):
        below, above = gaspari_cohn(np.array([knot - eps, knot + eps]), c)
        assert abs(below - above) < 1e-8
    assert np.allclose(gaspari_cohn(-r, c), values)  # even
    assert np.all(gaspari_cohn(r, math.inf) == 1.0)
    with pytest.raises(ValueError, match="half-width"):
        gaspari_cohn(r, 0.0)


def test_great_circle_distances() -> None:
    assert great_circle_km(0.0, 0.0, 0.0, 90.0) == pytest.approx(6371.0 * math.pi / 2)
    assert great_circle_km(89.0, 0.0, 89.0, 180.0) == pytest.approx(6371.0 * math.radians(2))
    assert great_circle_km(10.0, 359.5, 10.0, 0.5) == pytest.approx(
        great_circle_km(10.0, 0.0, 10.0, 1.0)
    )


# ---------------------------------------------------------------------------- (a) OI = Kalman
def test_oi_without_localisation_is_the_kalman_mean_of_the_sample_covariance() -> None:
    states = climatology(TINY, 600)
    obs = table(
        [
            (50.0, 30.0, 90.0, "u", 25.0, 2.0),
            (-20.0, 200.0, 100.0, "T", 205.0, 1.0),
            (10.0, 100.0, 85.0, "v", -5.0, 3.0),
            (60.0, 300.0, 95.0, "los", 12.0, 2.0, 45.0, 30.0),
            (0.0, 0.0, 97.0, "T", 195.0, 1.5, np.nan, np.nan, 8.0),  # profile kernel
        ]
    )
    expected, _ = dense_kalman(states, obs, TINY)
    got = oi_analysis(states, obs, TINY, localization=NO_LOCALIZATION)
    assert got.shape == TINY.shape and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    background = states.astype(np.float64).mean(0)
    assert np.abs(got - background).max() > 1.0  # the observations did something


def test_localised_oi_with_observations_on_grid_points_is_kalman_with_tapered_b() -> None:
    grid = Grid.gaussian(6, 12, 3)
    states = climatology(grid, 300, seed=1)
    localization = Localization(horizontal_km=4000.0, vertical_km=20.0)
    lat, lon, alt = grid.latitude, grid.longitude, grid.altitude
    obs = table(
        [
            (lat[1], lon[2], alt[0], "u", 30.0, 2.0),
            (lat[4], lon[7], alt[1], "T", 190.0, 1.0),
            (lat[2], lon[11], alt[2], "v", 8.0, 2.0),
            (lat[3], lon[5], alt[1], "T", 210.0, 1.0),
        ],
        grid=grid,
    )
    expected, _ = dense_kalman(states, obs, grid, rho=dense_rho(grid, localization))
    got = oi_analysis(states, obs, grid, localization=localization)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    unlocalised = oi_analysis(states, obs, grid, localization=NO_LOCALIZATION)
    assert np.abs(got - unlocalised).max() > 0.1  # the taper is not a no-op here


# ---------------------------------------------------------------------------- (b) support
def test_the_gain_vanishes_beyond_twice_the_half_widths() -> None:
    grid = Grid.gaussian(16, 32, 4)  # levels 80, 91.7, 103.3, 115 km
    rng = np.random.default_rng(0)
    states = (MEAN[:, None, None, None] + rng.standard_normal((40, *grid.shape))).astype(np.float32)
    localization = Localization(horizontal_km=1500.0, vertical_km=7.0)
    lat0, lon0, alt0 = 30.0, 100.0, 85.0
    obs = table([(lat0, lon0, alt0, "u", 40.0, 1.0)], grid=grid)
    analysis = localized_analysis(
        states, obs, grid, members=5, rng=np.random.default_rng(1), localization=localization
    )
    lat, lon = np.meshgrid(grid.latitude, grid.longitude, indexing="ij")
    distance = great_circle_km(lat, lon, lat0, lon0)  # (H, W)
    far = (distance[None, :, :] >= 2 * 1500.0) | (
        np.abs(grid.altitude - alt0)[:, None, None] >= 2 * 7.0
    )  # (L, H, W)
    far = np.broadcast_to(far, grid.shape)
    increment = analysis.mean - analysis.background
    assert np.all(increment[far] == 0.0)
    assert np.all(analysis.members[:, far] == states[:5, far])  # exactly the background
    assert np.abs(increment[~far]).max() > 1e-3
    assert far.mean() > 0.9  # most of the globe is out of reach


# ---------------------------------------------------------------------------- (d) EnKF
def test_enkf_mean_tends_to_oi_and_spread_to_the_kalman_variance() -> None:
    k = 4000
    states = climatology(TINY, k, seed=2)
    lat, lon, alt = TINY.latitude, TINY.longitude, TINY.altitude
    obs = table(
        [
            (lat[1], lon[3], alt[0], "u", 35.0, 2.0),
            (lat[2], lon[6], alt[1], "T", 195.0, 1.0),
            (lat[0], lon[0], alt[1], "v", -4.0, 1.5),
            (20.0, 150.0, 90.0, "los", 10.0, 2.0, 120.0, 40.0),
        ]
    )
    oi_mean, posterior = dense_kalman(states, obs, TINY)
    # Covariance of (EnKF mean - OI mean) for the first n of K states (a random subset) and
    # n perturbations: (I - KH) B (I - KH)^T (1/n - 1/K) + K R K^T / n.
    flat = states.reshape(k, -1).astype(np.float64)
    b = np.cov(flat, rowvar=False)
    operator = ObservationOperator.from_table(obs, TINY)
    h = operator.adjoint(torch.eye(operator.n_obs, dtype=torch.float64)).reshape(4, -1).numpy()
    r = np.diag(obs["sigma"].to_numpy() ** 2)
    gain = np.linalg.solve(h @ b @ h.T + r, h @ b).T
    a = np.eye(b.shape[0]) - gain @ h
    errors = []
    for n in (50, 500, k):
        members = enkf_analysis(
            states, obs, TINY, n, np.random.default_rng(n), localization=NO_LOCALIZATION
        )
        assert members.shape == (n, *TINY.shape) and members.dtype == np.float32
        difference = members.astype(np.float64).mean(0).reshape(-1) - oi_mean.reshape(-1)
        variance = np.diag(a @ b @ a.T) * (1 / n - 1 / k) + np.diag(gain @ r @ gain.T) / n
        # Bonferroni over the N = 192 points: P(max |z| > 4.5) < 192 * 7e-6.
        assert np.max(np.abs(difference) / np.sqrt(variance)) < 4.5
        errors.append(np.sqrt(np.mean(difference**2)))
    assert errors[0] > errors[1] > errors[2]

    # Spread at the observed grid points: sample variance of n = K members against the
    # Kalman variance, relative standard error about sqrt(2 / (n - 1)) = 0.022.
    members = enkf_analysis(
        states, obs, TINY, k, np.random.default_rng(7), localization=NO_LOCALIZATION
    )
    ensemble_variance = members.reshape(k, -1).astype(np.float64).var(0, ddof=1)
    kalman_variance = np.diag(posterior)
    observed = [
        int(np.ravel_multi_index((0, 0, 1, 3), TINY.shape)),
        int(np.ravel_multi_index((2, 1, 2, 6), TINY.shape)),
        int(np.ravel_multi_index((1, 1, 0, 0), TINY.shape)),
    ]
    ratio = ensemble_variance[observed] / kalman_variance[observed]
    np.testing.assert_allclose(ratio, 1.0, atol=5 * math.sqrt(2 / (k - 1)))
    prior_variance = np.diag(b)[observed]
    assert np.all(kalman_variance[observed] < 0.1 * prior_variance)  # the spread did shrink


def test_analysis_input_errors() -> None:
    states = climatology(TINY, 5)
    obs = table([(0.0, 0.0, 90.0, "u", 1.0, 1.0)])
    with pytest.raises(ValueError, match="at least 2 states"):
        oi_analysis(states[:1], obs, TINY)
    with pytest.raises(ValueError, match=r"members must lie in \[0, K = 5\]"):
        localized_analysis(states, obs, TINY, members=6, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="random generator"):
        localized_analysis(states, obs, TINY, members=2)
    with pytest.raises(ValueError, match="vertical_km must be a number > 0"):
        Localization(1000.0, -1.0)


# ---------------------------------------------------------------------------- (e) climatology
def archive_dataset(grid: Grid, hours: int, seed: int = 0) -> xr.Dataset:
    times = T0 + np.arange(hours) * np.timedelta64(1, "h")
    return grid.to_dataset(climatology(grid, hours, seed), time=times)


def test_climatological_draw_excludes_the_window_and_is_reproducible() -> None:
    ds = archive_dataset(TINY, 240)
    when = T0 + np.timedelta64(120, "h")
    draw = draw_climatology(ds, when, 50, np.random.default_rng(3))
    assert draw.states.shape == (50, *TINY.shape) and draw.states.dtype == np.float32
    hours = np.abs((draw.times - when) / np.timedelta64(1, "h"))
    assert hours.min() > 48.0
    assert len(set(draw.times.tolist())) == 50  # no repeats
    # Each state is the archive at its time, in draw order.
    index = int(np.flatnonzero(ds["time"].values == draw.times[7])[0])
    np.testing.assert_array_equal(
        draw.states[7], TINY.tensor_from_dataset(ds.isel(time=index)).numpy()
    )
    again = draw_climatology(ds, when, 50, np.random.default_rng(3))
    np.testing.assert_array_equal(again.times, draw.times)
    np.testing.assert_array_equal(again.states, draw.states)
    other = draw_climatology(ds, when, 50, np.random.default_rng(4))
    assert not np.array_equal(other.times, draw.times)
    prefix = draw_climatology(ds, when, 10, np.random.default_rng(3))
    np.testing.assert_array_equal(prefix.times, draw.times[:10])
    # 240 - 97 excluded hours = 143 eligible.
    assert climatology_indices(ds["time"].values, when, 143, np.random.default_rng(0)).size == 143
    with pytest.raises(ValueError, match="only 143 of the archive's 240 times"):
        draw_climatology(ds, when, 144, np.random.default_rng(0))


# ---------------------------------------------------------------------------- (f) end to end
@pytest.fixture
def window(tmp_path: Path) -> dict:
    """A 300-hour archive on TINY, observations of its state at hour 150, the window time."""
    ds = archive_dataset(TINY, 300, seed=5)
    archive = tmp_path / "archive.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(archive, zarr_format=3)
    when = T0 + np.timedelta64(150, "h")
    truth = torch.from_numpy(TINY.tensor_from_dataset(ds.isel(time=150)).numpy())
    rng = np.random.default_rng(6)
    m = 15
    sigma = {"u": 2.0, "v": 2.0, "T": 1.0}
    variables = rng.choice(["u", "v", "T"], m)
    obs = pd.DataFrame(
        {
            "time": when,
            "lat": rng.uniform(-70, 70, m),
            "lon": rng.uniform(0, 360, m),
            "alt_km": rng.uniform(80, 115, m),
            "variable": variables,
            "value": 0.0,
            "sigma": [sigma[v] for v in variables],
        }
    )
    obs = validate_observations(obs, TINY, check_values=False)  # placeholders, drawn below
    values = ObservationOperator.from_table(obs, TINY)(truth.double()).numpy()
    obs["value"] = values + rng.standard_normal(m) * obs["sigma"].to_numpy()
    path = tmp_path / "obs.csv"
    write_observations(obs, path)
    return {"archive": archive, "obs": path, "time": when, "tmp": tmp_path}


def test_baseline_window_writes_stores_that_fit_the_observations(window: dict) -> None:
    # Half-widths wide against TINY's 45-degree, 35 km spacing: an observation must reach the
    # grid points it interpolates from (docs/baselines.md).
    common = {
        "members": 8,
        "climatology_size": 200,
        "seed": 1,
        "horizontal_km": 8000.0,
        "vertical_km": 40.0,
    }
    stores = {}
    for method in ("enkf", "oi", "climatology"):
        out = window["tmp"] / f"{method}.zarr"
        summary = baseline_window(
            window["archive"], window["obs"], str(window["time"]), out, method=method, **common
        )
        keys = {"store", "members", "method", "seconds", "members_per_second"}
        assert keys <= set(summary.to_dict())
        assert BaselineSummary.from_dict(summary.to_dict()) == summary
        assert summary.method == method and summary.observations == 15
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = xr.open_zarr(out)
        assert ds.sizes["member"] == (1 if method == "oi" else 8)
        store = EnsembleStore.open(out)
        assert store.windows() == [np.datetime64(window["time"], "s")]
        provenance = store.provenance(window["time"])
        assert provenance["method"] == method and store.is_finalized(window["time"])
        assert len(provenance["observations_sha256"]) == 64
        times = pd.to_datetime(provenance["climatology_times"])
        assert np.all(np.abs(times - pd.Timestamp(window["time"])) > pd.Timedelta(hours=48))
        stores[method] = (summary, ds, provenance)

    for method in ("oi", "enkf"):
        fit, climatological = stores[method][0].fit, stores[method][0].climatology_fit
        assert fit is not None and climatological is not None
        assert fit.rms_normalised_innovation < 0.5 * climatological.rms_normalised_innovation
    # The climatology baseline is the background of the EnKF members (same draw).
    clim_times = stores["climatology"][2]["climatology_times"]
    enkf_times = stores["enkf"][2]["climatology_times"]
    assert clim_times == enkf_times[:8]
    # Reproducible for a seed.
    again = baseline_window(
        window["archive"],
        window["obs"],
        window["time"],
        window["tmp"] / "again.zarr",
        method="enkf",
        **common,
    )
    assert again.fit == stores["enkf"][0].fit


def test_baseline_window_rejects_bad_inputs_and_writes_nothing(window: dict) -> None:
    out = window["tmp"] / "bad.zarr"
    later = window["time"] + np.timedelta64(3, "h")
    with pytest.raises(ObservationError, match="outside the window"):
        baseline_window(window["archive"], window["obs"], later, out)
    empty = window["tmp"] / "empty.csv"
    pd.read_csv(window["obs"]).iloc[:0].to_csv(empty, index=False)
    with pytest.raises(ObservationError, match="holds no observations"):
        baseline_window(window["archive"], empty, window["time"], out)
    with pytest.raises(ValueError, match="needs observations"):
        baseline_window(window["archive"], None, window["time"], out, method="oi")
    with pytest.raises(ValueError, match="cannot exceed climatology_size"):
        baseline_window(
            window["archive"], window["obs"], window["time"], out, members=20, climatology_size=10
        )
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_window(window["archive"], window["obs"], window["time"], out, method="3dvar")
    with pytest.raises(ValueError, match="only"):
        baseline_window(window["archive"], window["obs"], window["time"], out, climatology_size=250)
    assert not out.exists()
    assert not any(p.name.startswith("bad.zarr") for p in window["tmp"].iterdir())


def test_a_correlated_error_covariance_enters_the_gain_and_the_perturbations() -> None:
    """``localized_update`` with ``R`` given: ``diag(sigma^2)`` is the default bit for bit;
    a correlated ``R`` gives the Kalman mean with that ``R`` (no localisation)."""
    from genda.assimilation.baselines import localized_update

    states = climatology(TINY, 400)
    obs = table(
        [
            (50.0, 30.0, 90.0, "u", 25.0, 2.0),
            (52.0, 35.0, 92.0, "u", 21.0, 2.0),
            (-20.0, 200.0, 100.0, "T", 205.0, 1.0),
        ]
    )
    flat = states.reshape(len(states), -1).astype(np.float64)
    operator = ObservationOperator.from_table(obs, TINY)
    h = operator.adjoint(torch.eye(3, dtype=torch.float64)).reshape(3, -1).numpy()
    hx = flat @ h.T
    sigma = obs["sigma"].to_numpy()
    default = localized_update(
        flat, hx, obs, TINY, members=8, rng=np.random.default_rng(3), localization=NO_LOCALIZATION
    )
    given = localized_update(
        flat,
        hx,
        obs,
        TINY,
        members=8,
        rng=np.random.default_rng(3),
        localization=NO_LOCALIZATION,
        error_covariance=np.diag(sigma**2),
    )
    np.testing.assert_array_equal(given.members, default.members)
    r = np.diag(sigma**2)
    r[0, 1] = r[1, 0] = 0.8 * sigma[0] * sigma[1]  # the two u errors are correlated
    correlated = localized_update(
        flat, hx, obs, TINY, members=8, rng=np.random.default_rng(3),
        localization=NO_LOCALIZATION, error_covariance=r,
    )  # fmt: skip
    x_b = flat.mean(0)
    b = np.cov(flat.T)
    gain = np.linalg.solve(h @ b @ h.T + r, h @ b).T
    expected = x_b + gain @ (obs["value"].to_numpy() - h @ x_b)
    np.testing.assert_allclose(correlated.mean.reshape(-1), expected, rtol=0, atol=1e-8)
    assert np.abs(correlated.mean - default.mean).max() > 0.1  # the correlation matters
    with pytest.raises(InvalidValueError, match=r"error covariance of \(2, 2\) for 3"):
        localized_update(flat, hx, obs, TINY, error_covariance=np.eye(2))
