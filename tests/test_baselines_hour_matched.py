"""Hour-matched baselines: the selection, EnOI against brute-force Kalman, defaults, CLI, errors."""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from typer.testing import CliRunner

from genda.assimilation.baselines import (
    DEFAULT_LOCALIZATION,
    draw_climatology,
    hour_matched_indices,
)
from genda.cli import app
from genda.grid import Grid
from genda.observations.files import write_observations
from genda.observations.operators import ObservationOperator
from genda.observations.table import validate_observations
from genda.orchestration.baseline import (
    baseline_localization,
    baseline_window,
    hour_matched_generator,
)
from genda.storage import EnsembleStore
from kalman_reference import dense_kalman

ROOT = Path(__file__).resolve().parents[1]
TINY = Grid.gaussian(4, 8, 2)
T0 = np.datetime64("2000-01-01T00:00", "ns")
HOUR = np.timedelta64(1, "h")
DAY_NS = 86_400 * 10**9
runner = CliRunner()


def hours_apart_in_day(times: np.ndarray, when: np.datetime64) -> np.ndarray:
    """Time-of-day distance in hours, across midnight, computed from the clock readings."""
    stamps = pd.to_datetime(np.asarray(times))
    centre = pd.Timestamp(when)
    minutes = stamps.hour * 60 + stamps.minute
    difference = np.abs(np.asarray(minutes) - (centre.hour * 60 + centre.minute))
    return np.minimum(difference, 1440 - difference) / 60.0


def archive_dataset(hours: int, seed: int = 0, step: np.timedelta64 = HOUR) -> xr.Dataset:
    """``hours`` states on TINY with cross-variable structure, u, v, T in plausible ranges."""
    rng = np.random.default_rng(seed)
    mean = np.array([10.0, 0.0, 200.0])[:, None, None, None]
    scale = np.array([20.0, 10.0, 8.0])[:, None, None, None]
    common = rng.standard_normal((hours, 1, *TINY.shape[1:]))
    own = rng.standard_normal((hours, *TINY.shape))
    states = (mean + scale * (0.6 * common + 0.8 * own)).astype(np.float32)
    return TINY.to_dataset(states, time=T0 + np.arange(hours) * step)


def write_archive(ds: xr.Dataset, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(path, zarr_format=3)
    return path


def observations(ds: xr.Dataset, when: np.datetime64, path: Path, m: int = 12) -> pd.DataFrame:
    """``m`` noisy observations of the archive's state at ``when``, written to ``path``."""
    rng = np.random.default_rng(6)
    index = int(np.flatnonzero(ds["time"].values == when)[0])
    truth = torch.from_numpy(TINY.tensor_from_dataset(ds.isel(time=index)).numpy())
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
    write_observations(obs, path)
    return obs


@pytest.fixture(scope="module")
def window(tmp_path_factory) -> dict:
    """A 20-day hourly archive on TINY and observations of its state at day 10, 12 UTC."""
    root = tmp_path_factory.mktemp("hour_matched")
    ds = archive_dataset(20 * 24, seed=5)
    when = T0 + 10 * 24 * HOUR + 12 * HOUR
    obs = observations(ds, when, root / "obs.csv")
    return {
        "ds": ds,
        "archive": write_archive(ds, root / "archive.zarr"),
        "obs_path": root / "obs.csv",
        "obs": obs,
        "time": when,
        "root": root,
    }


# ---------------------------------------------------------------------------- the selection
def test_hour_matched_indices_lie_at_the_time_of_day_and_away_from_the_window() -> None:
    times = T0 + np.arange(30 * 48) * np.timedelta64(30, "m")  # 30 days, half-hourly
    when = T0 + 15 * 24 * HOUR + np.timedelta64(30, "m")  # 00:30 of day 15: wraps midnight
    chosen = hour_matched_indices(times, when, np.random.default_rng(1))
    apart = hours_apart_in_day(times, when)
    away = np.abs((times - when) / HOUR) > 48.0
    expected = np.flatnonzero((apart <= 1.0) & away)
    assert sorted(chosen.tolist()) == expected.tolist()  # every eligible one, no other
    assert np.all(hours_apart_in_day(times[chosen], when) <= 1.0)
    assert np.all(np.abs((times[chosen] - when) / HOUR) > 48.0)
    clocks = {str(t)[11:16] for t in times[chosen].astype("datetime64[m]")}
    assert clocks == {"23:30", "00:00", "00:30", "01:00", "01:30"}
    # 5 clock times a day over 30 days, less the 21 of them within 48 h (inclusive) of the window
    assert chosen.size == 5 * 30 - 21 == expected.size
    assert chosen.dtype == np.int64 and len(set(chosen.tolist())) == chosen.size

    # A random order, reproducible, of which a smaller size is a prefix.
    again = hour_matched_indices(times, when, np.random.default_rng(1))
    np.testing.assert_array_equal(again, chosen)
    assert not np.array_equal(np.sort(chosen), chosen)
    prefix = hour_matched_indices(times, when, np.random.default_rng(1), 10)
    np.testing.assert_array_equal(prefix, chosen[:10])
    narrow = hour_matched_indices(times, when, np.random.default_rng(1), within_hours=0.0)
    assert np.all(hours_apart_in_day(times[narrow], when) == 0.0) and narrow.size == 30 - 5
    with pytest.raises(ValueError, match=r"only 129 of the archive's 1440 times .* 130 are needed"):
        hour_matched_indices(times, when, np.random.default_rng(1), 130)
    with pytest.raises(ValueError, match="within_hours"):
        hour_matched_indices(times, when, np.random.default_rng(1), within_hours=13.0)


def test_hour_matched_draw_reads_the_states_at_the_chosen_times(window: dict) -> None:
    ds, when = window["ds"], window["time"]
    draw = draw_climatology(ds, when, None, np.random.default_rng(3), hour_matched=True)
    times = ds["time"].values
    expected = hour_matched_indices(times, when, np.random.default_rng(3))
    np.testing.assert_array_equal(draw.times, times[expected])
    assert draw.states.shape == (expected.size, *TINY.shape) and draw.states.dtype == np.float32
    np.testing.assert_array_equal(
        draw.states[5], TINY.tensor_from_dataset(ds.isel(time=int(expected[5]))).numpy()
    )


def test_the_package_selection_is_the_benchmarks_own(window: dict) -> None:
    """``benchmarks/osse.py``'s ``same_hour_indices`` is the package's, stream for stream."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import osse
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    times = window["ds"]["time"].values
    for when in ("2000-01-11T12:00", "2000-01-08T00:00", "2000-01-15T23:00"):
        centre = np.datetime64(when, "ns")
        ours = hour_matched_indices(
            times, centre, hour_matched_generator(7, centre), exclude_hours=osse.EXCLUDE_HOURS
        )
        np.testing.assert_array_equal(ours, osse.same_hour_indices(times, when, 7))


# ---------------------------------------------------------------------------- closed form
def test_unlocalised_hour_matched_enoi_is_the_kalman_mean_of_its_states(window: dict) -> None:
    out = window["root"] / "enoi-exact.zarr"
    summary = baseline_window(
        window["archive"],
        window["obs_path"],
        window["time"],
        out,
        method="enoi",
        hour_matched=True,
        horizontal_km=math.inf,
        vertical_km=math.inf,
        seed=3,
    )
    times = window["ds"]["time"].values
    eligible = hour_matched_indices(times, window["time"], np.random.default_rng(0))
    assert summary.members == 1 and summary.hour_matched is True
    assert summary.states == eligible.size == 47  # 3 a day for 20 days, 13 too near
    provenance = EnsembleStore.open(out).provenance(window["time"])
    drawn = np.array(provenance["climatology_times"], dtype="datetime64[ns]")
    assert sorted(drawn.tolist()) == sorted(times[eligible].tolist())
    states = TINY.tensor_from_dataset(window["ds"].sel(time=drawn)).numpy()
    expected, _ = dense_kalman(states, window["obs"], TINY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = xr.open_zarr(out)
    got = TINY.tensor_from_dataset(ds.isel(time=0, member=0)).numpy()
    # the store is float32: about 1e-5 at 200 K
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    background = states.astype(np.float64).mean(0)
    assert np.abs(expected - background).max() > 1.0  # the observations did something
    settings = provenance["settings"]
    assert settings["horizontal_km"] == "inf" and settings["localization"] == "given"


# ---------------------------------------------------------------------------- defaults
def test_the_default_localisation_is_the_osse_tuning() -> None:
    result = json.loads((ROOT / "benchmarks/results/osse-windows-cpu.json").read_text())
    for name, best in result["localisation"].items():
        method, hour_matched = name.removesuffix("-hour"), name.endswith("-hour")
        tuned = DEFAULT_LOCALIZATION[method, hour_matched]
        assert (tuned.horizontal_km, tuned.vertical_km) == (
            best["horizontal_km"],
            best["vertical_km"],
        ), name
    assert baseline_localization("enkf", True) == DEFAULT_LOCALIZATION["enkf", True]
    assert baseline_localization("oi", True) == DEFAULT_LOCALIZATION["enoi", True]
    given = baseline_localization("enkf", True, horizontal_km=800.0)
    assert (given.horizontal_km, given.vertical_km) == (800.0, 30.0)
    given = baseline_localization("oi", False, vertical_km=20.0)
    assert (given.horizontal_km, given.vertical_km) == (100000.0, 20.0)


def test_hour_matched_stores_record_their_states_and_localisation(window: dict) -> None:
    common = {"members": 4, "seed": 2}
    stores = {}
    for method, hour_matched in (("climatology", True), ("enkf", True), ("enkf", False)):
        out = window["root"] / f"{method}-{hour_matched}.zarr"
        baseline_window(
            window["archive"],
            window["obs_path"],
            window["time"],
            out,
            method=method,
            hour_matched=hour_matched,
            **common,
        )
        stores[method, hour_matched] = EnsembleStore.open(out).provenance(window["time"])
    hourly = stores["enkf", True]["settings"]
    assert hourly["hour_matched"] is True and hourly["hour_match_hours"] == 1.0
    assert hourly["climatology_size"] == 47  # every hour-matched state by default
    assert (hourly["horizontal_km"], hourly["vertical_km"]) == (3000.0, 30.0)
    assert hourly["localization"] == "tuned default"
    times = pd.to_datetime(stores["enkf", True]["climatology_times"])
    assert np.all(hours_apart_in_day(times.to_numpy(), window["time"]) <= 1.0)
    # The hour-matched climatology is the background of the hour-matched EnKF's members.
    climatology = stores["climatology", True]
    assert climatology["settings"]["horizontal_km"] is None
    assert climatology["settings"]["localization"] is None
    assert climatology["climatology_times"] == stores["enkf", True]["climatology_times"][:4]
    anyhour = stores["enkf", False]["settings"]
    assert anyhour["hour_matched"] is False and anyhour["hour_match_hours"] is None
    assert anyhour["climatology_size"] == 200
    assert (anyhour["horizontal_km"], anyhour["vertical_km"]) == (100000.0, 1000.0)


# ---------------------------------------------------------------------------- bad input
def test_too_few_hour_matched_states_are_refused_before_any_store_is_written(
    tmp_path: Path,
) -> None:
    ds = archive_dataset(6, seed=1)
    archive = write_archive(ds, tmp_path / "six-hours.zarr")
    when = T0 + 3 * HOUR
    observations(ds, when, tmp_path / "obs.csv")
    out = tmp_path / "enkf.zarr"
    message = (
        r"only 0 of the archive's 6 times lie within 1 h of the window's time of day "
        r"\(03:00 UTC\) and more than 48 h from the window at 2000-01-01T03:00:00; 16 are needed"
    )
    with pytest.raises(ValueError, match=message):
        baseline_window(archive, tmp_path / "obs.csv", when, out, hour_matched=True)
    result = runner.invoke(
        app,
        [
            "baseline",
            "--archive",
            str(archive),
            "--obs",
            str(tmp_path / "obs.csv"),
            "--time",
            "2000-01-01T03:00",
            "--out",
            str(out),
            "--method",
            "enoi",
        ],
    )
    assert result.exit_code == 1
    printed = " ".join(result.output.split())  # the console wraps long lines
    assert "only 0 of the archive's 6 times lie within 1 h of the window's time of day" in printed
    assert "2 are needed" in printed and "states of any hour" in printed
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["obs.csv", "six-hours.zarr"]


def test_enkf_members_beyond_the_hour_matched_states_are_refused(window: dict) -> None:
    out = window["root"] / "too-many.zarr"
    with pytest.raises(ValueError, match=r"only 47 of the archive's 480 times .* 48 are needed"):
        baseline_window(
            window["archive"],
            window["obs_path"],
            window["time"],
            out,
            members=48,
            hour_matched=True,
        )
    with pytest.raises(ValueError, match="'enoi' baseline uses every eligible archive state"):
        baseline_window(
            window["archive"],
            window["obs_path"],
            window["time"],
            out,
            method="enoi",
            climatology_size=10,
        )
    assert not out.exists()


# ---------------------------------------------------------------------------- CLI
def test_baseline_command_is_hour_matched_by_default_and_writes_an_xarray_store(
    window: dict,
) -> None:
    out = window["root"] / "cli.zarr"
    base = [
        "baseline",
        "--archive",
        str(window["archive"]),
        "--obs",
        str(window["obs_path"]),
        "--time",
        "2000-01-11T12:00",
        "--out",
        str(out),
    ]
    result = runner.invoke(app, [*base, "--method", "enoi"])
    assert result.exit_code == 0, result.output
    printed = " ".join(result.output.split())
    assert "47 hour-matched" in printed and "horizontal 3000 km, vertical 15 km" in printed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = xr.open_zarr(out)
    assert ds.sizes["member"] == 1 and set(TINY.variables) <= set(ds.data_vars)
    assert np.isfinite(ds["T"].values).all()
    settings = EnsembleStore.open(out).provenance(window["time"])["settings"]
    assert settings["hour_matched"] is True and settings["climatology_size"] == 47
    assert (settings["horizontal_km"], settings["vertical_km"]) == (3000.0, 15.0)

    other = window["root"] / "cli-any-hour.zarr"
    base[base.index(str(out))] = str(other)
    result = runner.invoke(
        app,
        [*base, "--any-hour", "--members", "4", "--climatology-size", "50", "--vertical-km", "40"],
    )
    assert result.exit_code == 0, result.output
    assert "50 of any hour" in " ".join(result.output.split())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert xr.open_zarr(other).sizes["member"] == 4
    settings = EnsembleStore.open(other).provenance(window["time"])["settings"]
    assert settings["hour_matched"] is False and settings["climatology_size"] == 50
    assert (settings["horizontal_km"], settings["vertical_km"]) == (100000.0, 40.0)
    assert settings["localization"] == "tuned horizontal, given vertical"
