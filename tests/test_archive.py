"""Training archives: round trip through plain xarray, statistics, atomicity."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import xarray as xr

import genda
from genda.grid import Grid, GridMismatchError
from genda.normalization import MEAN_ATTR, STD_ATTR
from genda.simulator import Snapshot
from genda.storage import ArchiveError, open_archive, read_normalization, write_archive

GRID = Grid.gaussian(nlat=8, nlon=16, levels=3)
START = np.datetime64("2000-01-01T01:00:00", "ns")
ATTRS = {"source": "synthetic test fields", "model_config": {"nlat": 8, "nlon": 16}, "seed": 7}


def synthetic(count: int, seed: int = 0) -> list[Snapshot]:
    """Hourly snapshots with per-variable, per-level offsets (so the statistics differ by level)."""
    rng = np.random.default_rng(seed)
    offset = (
        np.array([10.0, -5.0, 200.0])[:, None, None, None]
        + np.arange(GRID.nlevels)[None, :, None, None]
    )
    scale = np.array([20.0, 10.0, 15.0])[:, None, None, None]
    return [
        Snapshot(
            START + i * np.timedelta64(1, "h"),
            torch.as_tensor(offset + scale * rng.normal(size=GRID.shape)),
        )
        for i in range(count)
    ]


def expected(snaps: list[Snapshot]) -> np.ndarray:
    """``(T, V, L, H, W)`` float32, what the archive must hold."""
    return np.stack([s.fields.numpy() for s in snaps]).astype(np.float32)


def test_round_trip_through_plain_xarray(tmp_path) -> None:
    snaps = synthetic(10)
    path = write_archive(tmp_path / "a.zarr", snaps, GRID, ATTRS, chunk_hours=4, progress=False)
    assert path == tmp_path / "a.zarr"
    ds = xr.open_zarr(path)

    assert dict(ds.sizes) == {"time": 10, "altitude": 3, "latitude": 8, "longitude": 16}
    np.testing.assert_array_equal(ds["time"].values, [s.time for s in snaps])
    np.testing.assert_array_equal(ds["latitude"].values, GRID.latitude)
    np.testing.assert_array_equal(ds["longitude"].values, GRID.longitude)
    np.testing.assert_array_equal(ds["altitude"].values, GRID.altitude)
    data = expected(snaps)
    for i, name in enumerate(GRID.variables):
        da = ds[name]
        assert da.dims == ("time", "altitude", "latitude", "longitude")
        assert da.dtype == np.float32
        np.testing.assert_array_equal(da.values, data[:, i])
        # one chunk = chunk_hours times x all levels x the full horizontal field
        assert da.encoding["chunks"] == (4, 3, 8, 16)
        assert da.chunks[0] == (4, 4, 2)

    assert ds["u"].attrs["units"] == "m s-1"
    assert ds["u"].attrs["standard_name"] == "eastward_wind"
    assert ds["T"].attrs["units"] == "K"
    assert ds["T"].attrs["standard_name"] == "air_temperature"
    assert ds["v"].attrs["long_name"] == "meridional wind"
    assert ds["altitude"].attrs["units"] == "km"
    assert ds["altitude"].attrs["axis"] == "Z"
    assert ds["latitude"].attrs["axis"] == "Y"
    assert ds["latitude"].attrs["units"] == "degrees_north"
    assert ds["longitude"].attrs["axis"] == "X"
    assert ds["time"].attrs["axis"] == "T"

    assert ds.attrs["source"] == "synthetic test fields"
    assert json.loads(ds.attrs["model_config"]) == {"nlat": 8, "nlon": 16}
    assert ds.attrs["seed"] == 7
    assert ds.attrs["genda_version"] == genda.__version__
    assert ds.attrs["Conventions"] == "CF-1.10"
    assert "created" in ds.attrs
    assert json.loads(ds.attrs["genda_variables"]) == ["u", "v", "T"]

    # genda's reader gives the same values, in grid order
    opened = open_archive(path)
    assert list(opened.data_vars) == ["u", "v", "T"]
    np.testing.assert_array_equal(opened["T"].values, data[:, 2])


def test_normalization_equals_brute_force_area_weighted_statistics(tmp_path) -> None:
    snaps = synthetic(7, seed=3)
    path = write_archive(tmp_path / "a.zarr", snaps, GRID, ATTRS, chunk_hours=3, progress=False)
    data = expected(snaps).astype(np.float64)  # (T, V, L, H, W)
    w = GRID.area_weights()[None, None, :, None]  # sums to 1 over latitude
    count = data.shape[0] * data.shape[-1]
    mean = (data.transpose(1, 2, 0, 3, 4) * w).sum(axis=(2, 3, 4)) / count  # (V, L)
    var = ((data.transpose(1, 2, 0, 3, 4) - mean[..., None, None, None]) ** 2 * w).sum(
        axis=(2, 3, 4)
    ) / count

    ds = xr.open_zarr(path)
    for i, name in enumerate(GRID.variables):
        np.testing.assert_allclose(ds[name].attrs[MEAN_ATTR], mean[i], rtol=1e-10)
        np.testing.assert_allclose(ds[name].attrs[STD_ATTR], np.sqrt(var[i]), rtol=1e-10)
    stats = read_normalization(path)
    assert stats.variables == GRID.variables
    np.testing.assert_allclose(stats.mean, mean, rtol=1e-10)
    np.testing.assert_allclose(stats.std, np.sqrt(var), rtol=1e-10)


def test_exception_mid_stream_leaves_nothing(tmp_path) -> None:
    def failing() -> Iterator[Snapshot]:
        yield from synthetic(5)  # two chunks of 2 are already on disk when it fails
        raise RuntimeError("model blew up")

    path = tmp_path / "a.zarr"
    with pytest.raises(RuntimeError, match="model blew up"):
        write_archive(path, failing(), GRID, ATTRS, chunk_hours=2, progress=False)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # the .partial-<pid> directory is gone too


def test_bad_snapshots_are_refused_and_leave_nothing(tmp_path) -> None:
    path = tmp_path / "a.zarr"
    wrong = [*synthetic(2), Snapshot(START + np.timedelta64(5, "h"), torch.zeros(3, 3, 8, 15))]
    with pytest.raises(GridMismatchError, match="snapshot 2"):
        write_archive(path, wrong, GRID, ATTRS, chunk_hours=1, progress=False)
    backwards = synthetic(3)[::-1]
    with pytest.raises(ArchiveError, match="does not follow"):
        write_archive(path, backwards, GRID, ATTRS, progress=False)
    with pytest.raises(ArchiveError, match="no snapshots"):
        write_archive(path, [], GRID, ATTRS, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_unless_asked(tmp_path) -> None:
    path = tmp_path / "a.zarr"
    first, second = synthetic(3, seed=1), synthetic(4, seed=2)
    write_archive(path, first, GRID, ATTRS, progress=False)
    with pytest.raises(FileExistsError, match="overwrite"):
        write_archive(path, second, GRID, ATTRS, progress=False)
    np.testing.assert_array_equal(xr.open_zarr(path)["u"].values, expected(first)[:, 0])

    # a failing overwrite keeps the old archive
    def failing() -> Iterator[Snapshot]:
        yield from second
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_archive(path, failing(), GRID, ATTRS, progress=False, overwrite=True)
    np.testing.assert_array_equal(xr.open_zarr(path)["u"].values, expected(first)[:, 0])

    write_archive(path, second, GRID, ATTRS, progress=False, overwrite=True)
    np.testing.assert_array_equal(xr.open_zarr(path)["u"].values, expected(second)[:, 0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zarr"]


def test_attributes_must_be_serialisable(tmp_path) -> None:
    with pytest.raises(ArchiveError, match="'bad'"):
        write_archive(tmp_path / "a.zarr", synthetic(1), GRID, {"bad": object()}, progress=False)
    assert list(tmp_path.iterdir()) == []
