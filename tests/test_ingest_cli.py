"""``genda ingest``: instrument files to a validated table, heights placed, summary printed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

from genda.cli import app
from genda.grid import Grid
from genda.models.checkpoint import CHECKPOINTS_DIR, read_checkpoint
from genda.observations import read_observations
from genda.observations.heights import (
    approximate_level_heights,
    geometric_to_log_pressure,
    level_heights_from_archive,
)
from test_observation_readers import write_cf_winds, write_lidar, write_mls, write_saber

runner = CliRunner(env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """A one-time NetCDF archive on 70-110 km with zg = 2 km above each level's log-pressure altitude."""
    path = tmp_path_factory.mktemp("archive") / "archive.nc"
    grid = Grid.gaussian(nlat=4, nlon=8, levels=[70.0, 80.0, 90.0, 100.0, 110.0])
    field = np.zeros((1, 3, 5, 4, 8), dtype=np.float32)
    field[:, 2] = 200.0
    ds = grid.to_dataset(field, time=np.array(["2024-03-01T12:00"], dtype="datetime64[ns]"))
    zg = (grid.altitude[None, :, None, None] + 2.0) * 1e3 * np.ones((1, 5, 4, 8))
    ds["zg"] = (("time", "altitude", "latitude", "longitude"), zg, {"units": "m"})
    ds.to_netcdf(path)
    return path


def test_mls_with_a_grid(tmp_path, archive) -> None:
    source = write_mls(tmp_path / "MLS-Aura_L2GP-Temperature_v05-01_2017d001.he5")
    out = tmp_path / "mls.parquet"
    result = runner.invoke(
        app, ["ingest", "mls", str(source), "--out", str(out), "--grid", str(archive)]
    )
    assert result.exit_code == 0, result.output
    table = read_observations(out)
    # of the 17 screened rows only those at 0.001 hPa (96.7 km) lie within the grid's 70-110 km
    assert len(table) == 3 and np.allclose(table["alt_km"], 7.0 * np.log(1000.0 / 0.001), atol=1e-3)
    assert set(table["variable"]) == {"T"} and set(table["station"]) == {"MLS"}
    for text in (
        "mls files",
        "outside grid",
        "14",
        "log-pressure altitude",
        "70-110 km",
        "3 observations",
    ):
        assert text in result.stdout


@pytest.mark.skipif(
    not (CHECKPOINTS_DIR / "default" / "config.json").is_file(), reason="no shipped prior"
)
def test_the_grid_of_a_prior(tmp_path) -> None:
    source = write_mls(tmp_path / "mls.he5")
    out = tmp_path / "mls.nc"
    result = runner.invoke(
        app, ["ingest", "mls", str(source), "--out", str(out), "--grid", "default"]
    )
    assert result.exit_code == 0, result.output
    prior = Grid.from_dict(read_checkpoint("default").config["grid"])
    table = read_observations(out)
    assert table["alt_km"].between(prior.altitude.min(), prior.altitude.max()).all()
    assert f"altitudes {prior.altitude.min():g}-{prior.altitude.max():g} km" in result.stdout


def test_radar_heights_from_the_approximation_are_announced(tmp_path) -> None:
    source = write_cf_winds(tmp_path / "collm.nc")
    out = tmp_path / "radar.parquet"
    result = runner.invoke(app, ["ingest", "radar-netcdf", str(source), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "APPROXIMATE" in result.stdout and "US Standard Atmosphere 1976" in result.stdout
    table = read_observations(out)
    assert len(table) == 22 and "height_km" not in table.columns
    heights = np.array([80.0, 85.0, 90.0, 95.0])
    expected = geometric_to_log_pressure(heights, 51.31, approximate_level_heights())
    assert np.allclose(np.sort(table["alt_km"].unique()), expected)


def test_radar_heights_from_an_archive(tmp_path, archive) -> None:
    source = write_cf_winds(
        tmp_path / "w.nc",
        height=(np.array([60e3, 85e3, 90e3, 130e3]), {"units": "m", "standard_name": "altitude"}),
    )
    out = tmp_path / "radar.csv"
    args = ["ingest", "radar-netcdf", str(source), "--out", str(out), "--heights", str(archive)]
    result = runner.invoke(app, [*args, "--grid", str(archive)])
    assert result.exit_code == 0, result.output
    assert "APPROXIMATE" not in result.stdout and "zg (geopotential height" in result.stdout
    assert "outside levels" in result.stdout
    table = read_observations(out)
    # 22 values pass the screening; 11 of them lie at 60 or 130 km, outside the levels' heights
    # (72.7-113.9 km)
    assert len(table) == 11
    expected = geometric_to_log_pressure(
        np.array([85.0, 90.0]), 51.31, level_heights_from_archive(archive)
    )
    assert np.allclose(np.sort(table["alt_km"].unique()), expected)


def test_nothing_is_written_on_errors(tmp_path) -> None:
    out = tmp_path / "obs.parquet"
    unknown = runner.invoke(app, ["ingest", "gps", str(tmp_path / "x.nc"), "--out", str(out)])
    assert unknown.exit_code == 1 and "unknown instrument file format 'gps'" in unknown.output
    missing = runner.invoke(app, ["ingest", "mls", str(tmp_path / "absent.he5"), "--out", str(out)])
    assert missing.exit_code == 1 and "absent.he5" in missing.output
    good = write_mls(tmp_path / "good.he5")
    wrong = write_saber(tmp_path / "wrong.nc")
    refused = runner.invoke(app, ["ingest", "mls", str(good), str(wrong), "--out", str(out)])
    assert refused.exit_code == 1 and "refused" in refused.output and "wrong.nc" in refused.output
    assert not out.exists()
    skipped = runner.invoke(
        app, ["ingest", "mls", str(good), str(wrong), "--out", str(out), "--skip-refused"]
    )
    assert skipped.exit_code == 0 and len(read_observations(out)) == 17
    again = runner.invoke(app, ["ingest", "mls", str(good), "--out", str(out)])
    assert again.exit_code == 1 and "--overwrite" in again.output
    late = runner.invoke(
        app,
        ["ingest", "mls", str(good), "--out", str(tmp_path / "late.nc"), "--start", "2018-01-01"],
    )
    assert late.exit_code == 1 and "lie within 2018-01-01T00:00:00" in late.output
    assert not (tmp_path / "late.nc").exists()


def test_a_level_on_the_grids_edge_survives_float32_pressure(tmp_path) -> None:
    """A float32 pressure of the grid's lowest level lands a hair below it: put on the edge."""
    from genda.observations.readers import InstrumentFileError
    from genda.observations.readers.ingest import EDGE_TOLERANCE_KM, ingest_files

    source = write_mls(tmp_path / "MLS-Aura_L2GP-Temperature_v05-01_2017d001.he5")
    level = 7.0 * np.log(1000.0 / 0.001)
    in_file = 7.0 * np.log(1000.0 / np.float64(np.float32(0.001)))
    assert 0.0 < level - in_file < EDGE_TOLERANCE_KM  # the file's level is below the grid
    grid = Grid.gaussian(nlat=4, nlon=8, levels=[level, 100.0, 110.0])
    result = ingest_files("mls", [source], tmp_path / "mls.parquet", grid=grid)
    table = read_observations(result.out)
    assert len(table) == 3 and np.all(table["alt_km"] == level)
    beyond = Grid.gaussian(nlat=4, nlon=8, levels=[level + 0.01, 100.0, 110.0])
    with pytest.raises(InstrumentFileError, match="no mls rows left"):
        ingest_files("mls", [source], tmp_path / "none.parquet", grid=beyond)


def test_radar_heights_from_icon_native_output_with_its_grid_file(tmp_path) -> None:
    """``--icon-grid`` reaches the heights: ICON native output without cell coordinates."""
    from genda.storage import IconRemap
    from test_heights import _icon_heights_file
    from test_icon_native import icon_grid_file

    icon = _icon_heights_file(tmp_path, coordinates=False)
    grid_file = tmp_path / "icon_grid.nc"
    icon_grid_file(3).to_netcdf(grid_file)
    source = write_cf_winds(tmp_path / "w.nc")  # 80-95 km; at 51.3 N the levels span 79-94.4 km
    out = tmp_path / "radar.parquet"
    args = ["ingest", "radar-netcdf", str(source), "--out", str(out), "--heights", str(icon)]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 1 and "icon_native.nc" in refused.output
    result = runner.invoke(app, [*args, "--icon-grid", str(grid_file), "--icon-target", "16x32"])
    assert result.exit_code == 0, result.output
    assert "APPROXIMATE" not in result.stdout and "z_mc" in result.stdout
    assert "outside levels 6" in result.stdout  # u and v at 95 km, 3 times each
    heights = level_heights_from_archive(icon, icon=IconRemap(grid_file=grid_file, target=(16, 32)))
    table = read_observations(out)
    expected = geometric_to_log_pressure(np.array([80.0, 85.0, 90.0]), 51.31, heights)
    assert len(table) == 16 and np.allclose(np.sort(table["alt_km"].unique()), expected)


def test_an_implausible_value_is_skipped_and_counted(tmp_path) -> None:
    """One wind beyond PHYSICAL_RANGES (or sigma beyond SIGMA_RANGES) is left out, not fatal."""
    from genda.observations.readers.ingest import ingest_files

    source = write_cf_winds(tmp_path / "w.nc")
    with xr.open_dataset(source) as ds:
        ds = ds.load()
    ds["zonal"][0, 1] = 520.0  # a decoding error: beyond 400 m/s
    ds["meridional_error"][2, 3] = 0.01  # below the floor of 0.1 m/s
    ds.to_netcdf(tmp_path / "bad.nc")
    out = tmp_path / "radar.parquet"
    result = runner.invoke(
        app, ["ingest", "radar-netcdf", str(tmp_path / "bad.nc"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "implausible 2" in result.stdout
    table = read_observations(out)
    assert len(table) == 20 and table["value"].abs().max() < 400.0 and table["sigma"].min() >= 0.1
    # in the file's units: a lidar temperature of -60 degC is 213 K, plausible; -250 degC is not
    lidar = write_lidar(tmp_path / "lidar.nc")
    with xr.open_dataset(lidar) as ds:
        ds = ds.load()
    ds["temperature"] = (ds["temperature"] - 273.15).assign_attrs(
        ds["temperature"].attrs, units="degree_Celsius"
    )
    ds["temperature"][0, 1] = -250.0
    ds.to_netcdf(tmp_path / "celsius.nc")
    ingested = ingest_files("lidar-netcdf", [tmp_path / "celsius.nc"], tmp_path / "lidar.parquet")
    assert ingested.summary.skipped["implausible"] == 1 and ingested.rows == 1
    assert read_observations(ingested.out)["value"].tolist() == [pytest.approx(200.0)]
