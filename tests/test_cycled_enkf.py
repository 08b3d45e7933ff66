"""The cycled EnKF with the built-in model as forecast model (genda.assimilation.cycled_enkf)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from genda.assimilation.baselines import NO_LOCALIZATION, localized_update
from genda.assimilation.cycled_enkf import (
    EnkfSettings,
    LayerLayout,
    ModelEnsemble,
    relax_to_prior_spread,
    set_clock,
)
from genda.errors import InvalidValueError
from genda.grid import Grid
from genda.observations import draw_observations
from genda.observations.operators import ObservationOperator
from genda.orchestration.enkf_cycle import METHOD, enkf_cycle
from genda.simulator import Simulator, SimulatorConfig
from genda.storage import EnsembleStore, open_archive

SMALL = SimulatorConfig(nlat=16, nlon=32, layers=4, levels=4)


def test_an_update_of_another_state_is_kalman_with_the_cross_covariance() -> None:
    """Without localisation the mean's increment is ``C_xy (C_yy + R)^-1 (y - mean(Hx))``
    with the sample covariances, for a state that ``hx`` is not ``H`` of."""
    rng = np.random.default_rng(3)
    layout = LayerLayout(np.array([60.0, 0.0, -60.0]), np.arange(4) * 90.0, np.array([80.0, 95.0]))
    k, n, m = 12, math.prod(layout.shape), 5
    states = rng.normal(size=(k, n))
    hx = states[:, :m] @ rng.normal(size=(m, m)) + rng.normal(size=(k, m))  # not H of the state
    obs = pd.DataFrame(
        {
            "value": rng.normal(size=m),
            "sigma": np.linspace(0.5, 1.5, m),
            "lat": np.zeros(m),
            "lon": np.zeros(m),
            "alt_km": np.full(m, 90.0),
        }
    )
    analysis = localized_update(states, hx, obs, layout, localization=NO_LOCALIZATION)
    xa, ya = states - states.mean(0), hx - hx.mean(0)
    c_xy, c_yy = xa.T @ ya / (k - 1), ya.T @ ya / (k - 1)
    r = np.diag(obs["sigma"].to_numpy() ** 2)
    expected = states.mean(0) + c_xy @ np.linalg.solve(c_yy + r, obs["value"] - hx.mean(0))
    np.testing.assert_allclose(analysis.mean.reshape(-1), expected, rtol=1e-10, atol=1e-12)
    with pytest.raises(InvalidValueError, match="do not match"):
        localized_update(states[:, :-1], hx, obs, layout)


def test_rtps_restores_the_prior_spread_and_keeps_the_mean() -> None:
    rng = np.random.default_rng(0)
    prior = rng.normal(size=(20, 7)) * 3.0
    posterior = rng.normal(size=(20, 7)) + 5.0
    for alpha in (0.0, 0.5, 1.0):
        relaxed = relax_to_prior_spread(prior, posterior, alpha)
        np.testing.assert_allclose(relaxed.mean(0), posterior.mean(0), atol=1e-12)
        s_b, s_a = prior.std(0, ddof=1), posterior.std(0, ddof=1)
        expected = alpha * s_b + (1 - alpha) * s_a
        np.testing.assert_allclose(relaxed.std(0, ddof=1), expected, rtol=1e-12)


@pytest.fixture(scope="module")
def ensemble() -> ModelEnsemble:
    truth_clock = np.datetime64("2000-01-03T00:00")
    return ModelEnsemble.climatological(
        SMALL, truth_clock, EnkfSettings(members=6, spacing_hours=6.0, seed=5), spinup_days=3.0
    )


def test_the_layer_state_round_trips_through_the_spectral_state(ensemble: ModelEnsemble) -> None:
    state = ensemble.layer_state()
    assert state.shape == (6, 3, 4, 16, 32)
    ensemble.set_layer_state(state)
    np.testing.assert_allclose(ensemble.layer_state(), state, rtol=1e-9, atol=1e-9)
    # a layer emptied by an update is refilled to the floor
    emptied = state.copy()
    emptied[:, 0, 1] = -1.0
    reference = ensemble._reference_sigma[1]
    spare = [m.state.clone() for m in ensemble.members]
    ensemble.set_layer_state(emptied, min_thickness=0.1)
    sigma = ensemble.layer_state()[:, 0, 1]
    assert sigma.min() > 0.05 * reference
    for member, kept in zip(ensemble.members, spare, strict=True):
        member.state = kept


def test_clocks_are_checked(ensemble: ModelEnsemble) -> None:
    member = Simulator(SMALL, seed=1)
    with pytest.raises(InvalidValueError, match="whole number"):
        set_clock(member, np.datetime64("2000-01-01T00:07"))
    with pytest.raises(InvalidValueError, match="forecast back"):
        ensemble.advance_to(ensemble.time - np.timedelta64(1, "h"))
    other = Simulator(SMALL, seed=2)
    with pytest.raises(InvalidValueError, match="clock"):
        ModelEnsemble([ensemble.members[0], other])
    with pytest.raises(InvalidValueError, match="members"):
        EnkfSettings(members=1)
    with pytest.raises(InvalidValueError, match="rtps"):
        EnkfSettings(rtps=1.5)


def test_cycling_draws_the_ensemble_to_a_truth_of_the_same_model() -> None:
    """Three hourly windows of precise observations of a truth run: every analysis fits
    them better than its forecast, and the analysed fields are closer to the truth
    where they are observed."""
    settings = EnkfSettings(members=8, spacing_hours=6.0, seed=11, rtps=0.5)
    truth = Simulator(SMALL, seed=99)
    truth.run_days(3.0)
    ensemble = ModelEnsemble.climatological(SMALL, truth.time, settings, spinup_days=3.0)
    grid = ensemble.grid
    rng = np.random.default_rng(0)
    points = pd.DataFrame(
        {
            "lat": np.repeat([50.0, 20.0, -10.0, -45.0], 8),
            "lon": np.tile(np.arange(8) * 45.0, 4),
        }
    )
    for _ in range(3):
        truth.advance(3600.0)
        ensemble.advance_to(truth.time)
        rows = []
        for variable, sigma in (("u", 2.0), ("v", 2.0), ("T", 1.0)):
            for alt in grid.altitude[1:3]:
                rows.append(points.assign(variable=variable, alt_km=float(alt), sigma=sigma))
        obs = pd.concat(rows, ignore_index=True)
        obs["time"] = truth.time
        truth_values = ObservationOperator.from_table(obs, grid)(truth.snapshot()).numpy()
        obs["value"] = truth_values + rng.normal(size=len(obs)) * obs["sigma"].to_numpy()
        report = ensemble.analyse(obs, settings, rng)
        assert report.posterior_rmse < report.prior_rmse
        assert report.posterior_spread < report.prior_spread
        mean = torch.as_tensor(ensemble.fields().mean(0), dtype=torch.float64)
        analysed = ObservationOperator.from_table(obs, grid)(mean).numpy()
        assert np.sqrt(np.mean((analysed - truth_values) ** 2)) < report.prior_rmse


def _windows(archive, hours: int) -> list[tuple[np.datetime64, pd.DataFrame]]:
    truth = open_archive(archive)
    grid = Grid.from_dataset(truth)
    times = truth.time.values[6 : 6 + hours]
    return [
        (t, draw_observations(truth, grid, t, "radars,lidars", seed=i)) for i, t in enumerate(times)
    ]


def test_a_cycle_writes_every_analysis_to_a_store_xarray_reads(tiny_archive, tmp_path) -> None:
    windows = _windows(tiny_archive, 3)
    settings = EnkfSettings(members=4, spacing_hours=6.0, seed=2)
    seen = []
    reports = enkf_cycle(
        tiny_archive,
        windows,
        tmp_path / "enkf.zarr",
        settings,
        spinup_days=1.0,
        on_window=lambda t, fields, report: seen.append(fields),
        progress=False,
    )
    assert len(reports) == 3 and all(r.posterior_rmse < r.prior_rmse for r in reports)
    ds = xr.open_zarr(tmp_path / "enkf.zarr")
    assert ds.sizes["member"] == 4 and ds.sizes["time"] == 3
    np.testing.assert_array_equal(ds.time.values, [t for t, _ in windows])
    for index, fields in enumerate(seen):  # what the store holds is what was analysed
        stored = ds[["u", "v", "T"]].isel(time=index).to_array("variable")
        np.testing.assert_array_equal(stored.transpose("member", "variable", ...).values, fields)
    provenance = EnsembleStore.open(tmp_path / "enkf.zarr").provenance(windows[2][0])
    assert provenance["method"] == METHOD
    assert provenance["previous_window"] == str(windows[1][0])[:19]


def test_a_cycle_refuses_bad_windows_and_writes_nothing(tiny_archive, tmp_path) -> None:
    windows = _windows(tiny_archive, 2)
    out = tmp_path / "bad.zarr"
    settings = EnkfSettings(members=3)
    with pytest.raises(InvalidValueError, match="increase"):
        enkf_cycle(tiny_archive, windows[::-1], out, settings, progress=False)
    with pytest.raises(InvalidValueError, match="no observations"):
        enkf_cycle(tiny_archive, [(windows[0][0], windows[0][1].iloc[:0])], out, settings)
    with pytest.raises(InvalidValueError, match="no windows"):
        enkf_cycle(tiny_archive, [], out, settings)
    plain = open_archive(tiny_archive).isel(time=slice(0, 2)).load()
    plain.attrs = {}
    plain.to_netcdf(tmp_path / "other.nc")
    with pytest.raises(InvalidValueError, match="model_config"):
        enkf_cycle(tmp_path / "other.nc", windows, out, settings, progress=False)
    assert not out.exists()


def test_the_command_cycles_through_files_and_refuses_a_missing_one(tiny_archive, tmp_path) -> None:
    from typer.testing import CliRunner

    from genda.cli import app
    from genda.observations import write_observations

    windows = _windows(tiny_archive, 3)
    for when, obs in windows:
        write_observations(obs, tmp_path / f"obs-{str(when)[:13]}.parquet")
    args = [
        "enkf-cycle",
        "--archive",
        str(tiny_archive),
        "--obs",
        str(tmp_path / "obs-{time:%Y-%m-%dT%H}.parquet"),
        "--start",
        str(windows[0][0])[:19],
        "--members",
        "4",
        "--spinup-days",
        "1",
        "--no-progress",
    ]
    result = CliRunner().invoke(app, [*args, "--hours", "3", "--out", str(tmp_path / "e.zarr")])
    assert result.exit_code == 0, result.output
    assert "fit an" in result.output and str(windows[2][0])[:16] in result.output
    assert xr.open_zarr(tmp_path / "e.zarr").sizes["time"] == 3
    missing = CliRunner().invoke(app, [*args, "--hours", "4", "--out", str(tmp_path / "m.zarr")])
    assert missing.exit_code != 0
    assert "no observation file" in missing.output
    assert not (tmp_path / "m.zarr").exists()


def test_members_are_a_day_apart_at_the_first_windows_time_of_day() -> None:
    settings = EnkfSettings(members=2, seed=5)
    when = np.datetime64("2000-01-03T05:00")
    ensemble = ModelEnsemble.climatological(SMALL, when, settings, spinup_days=1.0)
    reference = Simulator(SMALL, seed=5)
    reference.run_days(1.0)
    reference.advance(5 * 3600.0)  # to 05:00 of the next day's clock
    for member in ensemble.members:
        reference.advance(24 * 3600.0)
        torch.testing.assert_close(member.state, reference.state, rtol=0, atol=0)
        assert member.time == when


def test_a_truth_of_the_enkfs_own_seed_is_refused(tiny_archive, tmp_path) -> None:
    windows = _windows(tiny_archive, 1)
    with pytest.raises(InvalidValueError, match="seed 1 is the seed"):
        enkf_cycle(tiny_archive, windows, tmp_path / "s.zarr", EnkfSettings(members=3, seed=1))
    assert not (tmp_path / "s.zarr").exists()
