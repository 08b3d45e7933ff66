"""Observing networks: catalog, error models, limb tracks, drawing observations of a truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from genda.constants import EARTH_RADIUS_M
from genda.grid import Grid
from genda.observations import read_observations, validate_observations
from genda.observations.catalog import (
    LIDAR_T_ERRORS,
    LIDARS,
    METEOR_RADARS,
    MLS,
    RADAR_WIND_ERRORS,
    SABER,
    STATIONS,
    ErrorModel,
    station,
)
from genda.observations.geometry import (
    lidar_geometry,
    limb_profile_times,
    limb_track,
    orbit_positions,
    radar_geometry,
)
from genda.observations.networks import draw_observations, split_withheld
from genda.observations.observe import observe_to_file

GRID = Grid.gaussian(16, 32, 4)  # altitudes 80, 91.7, 103.3, 115 km
TIME = np.datetime64("2024-03-01T12:00", "ns")


def truth(values: tuple[float, float, float] | None = None) -> xr.Dataset:
    """Two hourly fields on GRID: smooth waves, or constants ``(u, v, T)``."""
    lat = np.deg2rad(GRID.latitude)[:, None]
    lon = np.deg2rad(GRID.longitude)[None, :]
    alt = GRID.altitude[:, None, None]
    fields = []
    for hour in range(2):
        if values is None:
            u = 30 * np.cos(lat) ** 2 * np.sin(lon + hour) + 0.5 * (alt - 90)
            v = 10 * np.sin(2 * lat) * np.cos(2 * lon) + 0 * alt
            t = 200 + 20 * np.sin(lat) * np.cos(lon - hour) + 0.8 * (alt - 80)
        else:
            u, v, t = (np.full(GRID.shape[1:], c) for c in values)
        fields.append(np.stack(np.broadcast_arrays(u, v, t)))
    return GRID.to_dataset(np.stack(fields), time=[TIME, TIME + np.timedelta64(1, "h")])


def haversine_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    lat1, lon1, lat2, lon2 = map(np.deg2rad, (lat1, lon1, lat2, lon2))
    a = (
        np.sin((lat2 - lat1) / 2) ** 2
        + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M / 1000 * np.arcsin(np.sqrt(a))


# ---------------------------------------------------------------------------- catalog
def test_catalog_is_valid_and_unique() -> None:
    names = [s.name for s in STATIONS]
    assert len(names) == len(set(names)) == 20
    assert len(METEOR_RADARS) == 16 and len(LIDARS) == 4
    for s in STATIONS:
        assert s.name.isascii() and "," not in s.name, s.name
        assert -90 <= s.lat <= 90 and -180 <= s.lon < 180, s
        bottom, top = s.altitudes_km
        assert 70 <= bottom < top <= 120, s
    assert {s.kind for s in METEOR_RADARS} == {"meteor_radar"}
    assert {s.kind for s in LIDARS} == {"lidar"}
    # a few published positions: hemisphere and side of Greenwich
    assert station("andenes").lat == pytest.approx(69.3, abs=0.1)
    assert station("Davis").lat < -60 and station("Davis").lon > 0
    assert station("CMOR").lon < 0 and station("SAAMER").lat < -50
    assert station("ALO").lat == pytest.approx(-30.25, abs=0.1)
    with pytest.raises(KeyError, match="unknown station 'Atlantis'; the catalog holds Andenes"):
        station("Atlantis")


def test_error_models() -> None:
    assert RADAR_WIND_ERRORS.sigma(90.0) == 5.0
    assert RADAR_WIND_ERRORS.sigma(80.0) == RADAR_WIND_ERRORS.sigma(100.0) == 15.0
    z = np.linspace(70, 115, 46)
    sigma = RADAR_WIND_ERRORS.sigma(z)
    assert sigma.min() == 5.0 and sigma.max() == 15.0
    assert np.all(np.diff(sigma[z >= 90]) >= 0) and np.all(np.diff(sigma[z <= 90]) <= 0)
    lidar = LIDAR_T_ERRORS.sigma(z)
    assert lidar.min() == 2.0 and lidar.max() == 5.0 and np.all(np.diff(lidar) >= 0)
    assert MLS.errors.sigma(90.0) == 3.0 and 3.0 <= MLS.errors.fwhm_km <= 4.0
    with pytest.raises(ValueError, match="sigmas must be positive"):
        ErrorModel((80.0,), (0.0,))


def test_station_observations_lie_within_the_grid() -> None:
    radars = radar_geometry(GRID)
    lidars = lidar_geometry(GRID)
    assert len(radars) == 16 * 2 * 2  # two grid levels (80, 91.7 km) x u, v
    assert len(lidars) == 4 * 2  # 91.7 and 103.3 km
    for geometry, bounds in ((radars, (80, 100)), (lidars, (85, 105))):
        assert geometry["alt_km"].between(*bounds).all()
        assert geometry["alt_km"].isin(GRID.altitude).all()
    los = radar_geometry(GRID, los=True)
    assert set(los["variable"]) == {"los"} and len(los) == 16 * 2 * 4
    assert (los["elevation_deg"] == 70).all()
    # beams meet 80-92 km some 29-34 km from the station
    sites = los["station"].map({s.name: s for s in METEOR_RADARS})
    distance = haversine_km(
        los["lat"], los["lon"], sites.map(lambda s: s.lat), sites.map(lambda s: s.lon)
    )
    np.testing.assert_allclose(distance, los["alt_km"] / np.tan(np.deg2rad(70)), rtol=1e-3)


# ---------------------------------------------------------------------------- limb tracks
def test_mls_track_coverage_spacing_and_local_time() -> None:
    times = limb_profile_times(TIME, MLS, half_window_minutes=200)
    lat, lon = orbit_positions(times, MLS)
    assert np.abs(lat).max() <= 82.0 + 1e-9 and np.abs(lat).max() > 81.9
    assert np.all((lon >= 0) & (lon < 360))
    spacing = haversine_km(lat[:-1], lon[:-1], lat[1:], lon[1:])
    # 165 km along the orbit; the Earth turning under it adds ~2 km on the ground
    assert 160 < spacing.min() and spacing.max() < 170, (spacing.min(), spacing.max())
    ascending = np.flatnonzero((lat[:-1] < 0) & (lat[1:] >= 0))
    hours = (times[ascending] - times[ascending].astype("datetime64[D]")) / np.timedelta64(1, "h")
    local = (hours + lon[ascending] / 15) % 24
    np.testing.assert_allclose(local, 13.75, atol=0.05)


def test_limb_track_table() -> None:
    track = limb_track(TIME, "mls", GRID)
    assert set(track["alt_km"]) == {80.0, GRID.altitude[1]}  # MLS temperatures end at 97 km
    profiles = track["time"].unique()
    expected = 3600 / MLS.profile_interval_s
    assert abs(len(profiles) - expected) <= 1
    offsets = (profiles - TIME) / np.timedelta64(1, "s")
    assert offsets.min() >= -1800 and offsets.max() <= 1800
    assert (track["variable"] == "T").all() and (track["fwhm_km"] == 4.0).all()
    assert (track["station"] == "MLS").all() and (track["sigma"] == 3.0).all()
    # overlapping windows share their profiles
    later = limb_track(TIME + np.timedelta64(10, "m"), "mls", GRID)
    assert len(np.intersect1d(profiles, later["time"].unique())) > 0.8 * len(profiles)


@pytest.mark.parametrize(("yaw", "south", "north"), [("north", -52, 83), ("south", -83, 52)])
def test_saber_yaw_coverage(yaw: str, south: float, north: float) -> None:
    times = limb_profile_times(TIME, SABER, half_window_minutes=300)
    lat, _ = orbit_positions(times, SABER, yaw)  # type: ignore[arg-type]
    assert lat.min() == pytest.approx(south, abs=1.0)
    assert lat.max() == pytest.approx(north, abs=1.0)


# ---------------------------------------------------------------------------- drawing
def test_draw_is_deterministic_for_a_seed() -> None:
    ds = truth()
    first = draw_observations(ds, GRID, TIME, seed=3)
    again = draw_observations(ds, GRID, TIME, seed=3)
    other = draw_observations(ds, GRID, TIME, seed=4)
    pd.testing.assert_frame_equal(first, again, check_exact=True)
    assert not np.allclose(first["value"], other["value"])
    pd.testing.assert_frame_equal(first.drop(columns="value"), other.drop(columns="value"))
    # a validated table, all at the truth time
    pd.testing.assert_frame_equal(validate_observations(first, GRID), first)
    assert (first["time"] == TIME).all()
    counts = first.groupby(["network", "variable"]).size().to_dict()
    assert counts[("radars", "u")] == counts[("radars", "v")] == 32
    assert counts[("lidars", "T")] == 8 and counts[("mls", "T")] > 200


def test_noiseless_values_of_constant_fields() -> None:
    u, v, t = 12.0, -7.0, 210.0
    obs = draw_observations(
        truth((u, v, t)), GRID, TIME, ("radars", "lidars", "mls", "saber"), noise=False, los=True
    )
    expected = obs["variable"].map({"T": t}).astype(float)
    beams = obs["variable"] == "los"
    az = np.deg2rad(obs.loc[beams, "azimuth_deg"])
    el = np.deg2rad(obs.loc[beams, "elevation_deg"])
    expected[beams] = np.cos(el) * (u * np.sin(az) + v * np.cos(az))
    np.testing.assert_allclose(obs["value"], expected, atol=1e-9)
    assert set(obs["network"]) == {"radars", "lidars", "mls", "saber"}


def test_noise_has_the_row_sigma() -> None:
    ds = truth()
    clean = draw_observations(ds, GRID, TIME, noise=False)
    z = np.concatenate(
        [
            (draw_observations(ds, GRID, TIME, seed=seed)["value"] - clean["value"])
            / clean["sigma"]
            for seed in range(8)
        ]
    )
    assert z.size > 2500
    assert abs(z.mean()) < 4 / np.sqrt(z.size)
    assert abs(z.std() - 1) < 0.05


def test_draw_errors() -> None:
    ds = truth()
    with pytest.raises(ValueError, match="unknown network 'sondes'"):
        draw_observations(ds, GRID, TIME, ("radars", "sondes"))
    with pytest.raises(
        ValueError,
        match=r"time 2024-03-02T00:00:00 is not in truth, which holds 2 time\(s\) from 2024-03-01T12:00:00 to 2024-03-01T13:00:00",
    ):
        draw_observations(ds, GRID, "2024-03-02T00:00")
    winds = Grid.gaussian(16, 32, 4, variables=("u", "v"))
    with pytest.raises(
        ValueError, match="network 'lidars' observes T, which the grid does not carry"
    ):
        draw_observations(ds[["u", "v"]], winds, TIME, "radars,lidars")
    with pytest.raises(KeyError, match="unknown station 'Nowhere'"):
        draw_observations(ds, GRID, TIME, stations=["Nowhere"])


def test_station_subset_and_comma_networks() -> None:
    obs = draw_observations(truth(), GRID, TIME, "radars, lidars", stations=["Andenes", "ALO"])
    assert set(obs["station"]) == {"Andenes", "ALO"}


def test_split_withheld() -> None:
    obs = draw_observations(truth(), GRID, TIME, "radars,lidars", seed=1)
    kept, withheld = split_withheld(obs, ["andenes", "Davis"])
    assert set(withheld["station"]) == {"Andenes", "Davis"}
    assert not kept["station"].isin(["Andenes", "Davis"]).any()
    assert len(kept) + len(withheld) == len(obs)
    assert list(kept.index) == list(range(len(kept)))
    with pytest.raises(ValueError, match=r"no observations from station\(s\) \['atlantis'\]"):
        split_withheld(obs, ["Atlantis"])


def test_observe_to_file(tmp_path: Path) -> None:
    archive = tmp_path / "truth.nc"
    truth().to_netcdf(archive)
    out = tmp_path / "obs.parquet"
    summary = observe_to_file(
        archive,
        "2024-03-01T13:00",
        "radars,lidars,limb",
        out,
        seed=5,
        withhold=("Andenes", "Davis"),
    )
    withheld_file = tmp_path / "obs-withheld.parquet"
    assert summary.observations_path == str(out) and summary.withheld_path == str(withheld_file)
    assert summary.time == "2024-03-01T13:00:00"
    assert summary.networks == ("radars", "lidars", "mls")
    obs, withheld = read_observations(out), read_observations(withheld_file)
    assert summary.observations == len(obs) and summary.withheld == len(withheld) == 8
    assert summary.counts["radars"] == {"u": 28, "v": 28}
    assert summary.withheld_counts == {"radars": {"u": 4, "v": 4}}
    assert sum(sum(c.values()) for c in summary.counts.values()) == len(obs)
    # The JSON form, key for key and in order
    assert json.dumps(summary.to_dict()) == json.dumps(
        {
            "time": "2024-03-01T13:00:00",
            "seed": 5,
            "networks": ["radars", "lidars", "mls"],
            "observations": len(obs),
            "withheld": 8,
            "counts": summary.counts,
            "withheld_counts": {"radars": {"u": 4, "v": 4}},
            "paths": {"observations": str(out), "withheld": str(withheld_file)},
        }
    )
    assert (obs["time"] == np.datetime64("2024-03-01T13:00")).all()
    # the same draw as in memory
    direct = draw_observations(truth(), GRID, "2024-03-01T13:00", "radars,lidars,limb", seed=5)
    pd.testing.assert_frame_equal(
        pd.concat([obs, withheld])
        .sort_values(["network", "station", "variable", "lat", "alt_km"])
        .reset_index(drop=True),
        direct.sort_values(["network", "station", "variable", "lat", "alt_km"]).reset_index(
            drop=True
        ),
        check_exact=False,
        atol=1e-4,  # the archive holds float32
    )
    with pytest.raises(
        ValueError,
        match=r"time 2024-03-05T00:00:00 is not in .*truth.nc, which holds 2 time\(s\) from 2024-03-01T12:00:00 to 2024-03-01T13:00:00",
    ):
        observe_to_file(archive, "2024-03-05", "radars", tmp_path / "x.csv", seed=0)
    assert not (tmp_path / "x.csv").exists()
