"""Column interpolation to log-pressure levels, and the CF vertical coordinate of genda's files.

Readers of sources on heights and hybrid levels are tested in tests/test_readers.py; here the
interpolation against brute force, and the vertical of archives and ensemble stores against
cf_xarray (CF conventions 1.10, appendix D, atmosphere_ln_pressure_coordinate).
"""

from __future__ import annotations

import cf_xarray  # noqa: F401  (registers the .cf accessor)
import numpy as np
import pytest
import torch
import xarray as xr
import zarr

from genda.constants import REFERENCE_PRESSURE_PA, SCALE_HEIGHT_KM, altitude_km_to_pressure
from genda.grid import VERTICAL_AUXILIARIES, Grid
from genda.simulator import Snapshot
from genda.storage import ArchiveError, open_archive, write_archive
from genda.storage.archive import consolidate
from genda.storage.ensemble_query import open_ensemble, query
from genda.storage.ensemble_store import EnsembleStore
from genda.storage.vertical_interpolation import (
    HybridSigmaPressure,
    column_levels_from_altitude,
    column_levels_from_hybrid,
    interpolate_columns,
    target_levels,
    to_levels,
)

GRID = Grid.gaussian(8, 16, 4)
T0 = np.datetime64("2024-01-01T00:00:00")


# ---------------------------------------------------------------------------- interpolation
def random_columns(rng: np.random.Generator, shape: tuple[int, ...], n: int) -> np.ndarray:
    """``(*shape, n)`` strictly increasing, unevenly spaced z* columns starting near 40 km."""
    steps = rng.uniform(0.5, 4.0, size=(*shape, n))
    return 40.0 + rng.uniform(-3, 3, size=(*shape, 1)) + np.cumsum(steps, axis=-1)


def test_interpolation_matches_numpy_interp_per_column() -> None:
    rng = np.random.default_rng(0)
    z = random_columns(rng, (3, 5, 7), 20)
    values = rng.normal(size=z.shape)
    low, high = z[..., 0].max(), z[..., -1].min()
    levels = np.concatenate([[low], np.sort(rng.uniform(low, high, 30)), [high]])
    got = interpolate_columns(values, z, levels)
    assert got.shape == (3, 5, 7, levels.size)
    for index in np.ndindex(z.shape[:-1]):
        np.testing.assert_allclose(
            got[index], np.interp(levels, z[index], values[index]), rtol=1e-13, atol=1e-13
        )
    # at the source points themselves interpolation is exact
    np.testing.assert_array_equal(interpolate_columns(values, z[0, 0, 0], z[0, 0, 0]), values)
    np.testing.assert_array_equal(
        interpolate_columns(values[0, 0, 0], z[0, 0, 0], z[0, 0, 0]), values[0, 0, 0]
    )


def test_to_levels_on_dask_with_decreasing_columns() -> None:
    rng = np.random.default_rng(1)
    z = random_columns(rng, (2, 4, 6), 15)  # (time, lat, lon, level)
    values = np.sin(z / 5.0)
    dims = ("time", "latitude", "longitude", "level")
    # top level first, as ICON and CESM write them; chunked like a file's levels
    altitude = xr.DataArray(z[..., ::-1], dims=dims).chunk({"level": 1, "time": 1})
    field = xr.DataArray(values[..., ::-1], dims=dims).chunk({"level": 5})
    columns = column_levels_from_altitude(altitude, "level", "mean", "test")
    assert not columns.increasing
    assert columns.low_km == pytest.approx(z[..., 0].max())
    assert columns.high_km == pytest.approx(z[..., -1].min())
    levels = target_levels(columns, None, "test")
    typical = np.sort(z.mean(axis=(0, 1, 2)))
    inside = typical[(typical >= columns.low_km) & (typical <= columns.high_km)]
    assert 0 < inside.size < typical.size
    np.testing.assert_allclose(levels, inside, rtol=1e-14)
    out = to_levels(field, columns, levels)
    assert out.chunks is not None and out.dims == ("time", "latitude", "longitude", "altitude")
    expected = interpolate_columns(values, z, levels)
    np.testing.assert_allclose(out.values, expected, rtol=1e-13)


def test_target_levels_restrict_default_and_refuse_beyond() -> None:
    altitude = xr.DataArray(np.array([[40.0, 50.0, 60.0, 70.0], [42.0, 51.0, 61.0, 68.0]]))
    columns = column_levels_from_altitude(altitude, "dim_1", "mean", "f.nc: z")
    assert (columns.low_km, columns.high_km) == (42.0, 68.0)
    np.testing.assert_allclose(target_levels(columns, None, "f.nc"), [50.5, 60.5])
    np.testing.assert_allclose(target_levels(columns, [42.0, 68.0], "f.nc"), [42.0, 68.0])
    # within the tolerance the edge is used, beyond it an error names the range
    np.testing.assert_allclose(target_levels(columns, [41.9995, 60.0], "f", 1e-3), [42.0, 60.0])
    with pytest.raises(
        ArchiveError, match=r"f.nc: levels \[41, 60\] km reach beyond .* \[42, 68\]"
    ):
        target_levels(columns, [41.0, 60.0], "f.nc")
    with pytest.raises(ArchiveError, match="not change monotonically"):
        column_levels_from_altitude(
            xr.DataArray(np.array([[40.0, 50.0, 45.0]])), "dim_1", "mean", "f.nc"
        )
    with pytest.raises(ArchiveError, match="missing, zero or negative"):
        column_levels_from_altitude(
            xr.DataArray(np.array([[40.0, np.nan, 45.0]])), "dim_1", "mean", "f.nc"
        )
    with pytest.raises(ArchiveError, match="share no log-pressure range"):
        column_levels_from_altitude(
            xr.DataArray(np.array([[40.0, 50.0], [55.0, 60.0]])), "dim_1", "mean", "f.nc"
        )


def test_hybrid_range_from_surface_pressure_extremes_equals_brute_force() -> None:
    rng = np.random.default_rng(2)
    p_ref = REFERENCE_PRESSURE_PA * np.exp(-np.arange(20.0, 100.0, 4.0) / SCALE_HEIGHT_KM)
    share = np.linspace(1.0, 0.0, p_ref.size)
    ps = xr.DataArray(rng.uniform(6e4, 1.04e5, size=(3, 4, 5)), dims=("time", "lat", "lon"))
    hybrid = HybridSigmaPressure(
        (1 - share) * p_ref, share * p_ref / REFERENCE_PRESSURE_PA, ps, "lev", 1e5, "test"
    )
    fast = column_levels_from_hybrid(hybrid, "test")
    pressure = hybrid.pressure()
    brute = column_levels_from_altitude(
        SCALE_HEIGHT_KM * np.log(REFERENCE_PRESSURE_PA / pressure), "lev", "mean", "test"
    )
    assert fast.increasing and brute.increasing
    assert fast.low_km == pytest.approx(brute.low_km, abs=1e-12)
    assert fast.high_km == pytest.approx(brute.high_km, abs=1e-12)
    np.testing.assert_allclose(fast.typical_km, np.arange(20.0, 100.0, 4.0), atol=1e-12)


# ---------------------------------------------------------------------------- CF attributes
def assert_cf_vertical(ds: xr.Dataset) -> None:
    """The vertical is CF's atmosphere_ln_pressure_coordinate as cf_xarray understands it."""
    altitude = ds["altitude"].values
    assert set(VERTICAL_AUXILIARIES) <= set(ds.coords)
    assert set(ds.data_vars).isdisjoint(VERTICAL_AUXILIARIES)
    attrs = ds["altitude"].attrs
    assert {k: attrs[k] for k in ("units", "long_name", "axis", "positive")} == {
        "units": "km",
        "long_name": "log-pressure altitude",
        "axis": "Z",
        "positive": "up",
    }
    assert attrs["scale_height_km"] == SCALE_HEIGHT_KM
    assert "standard_name" not in attrs  # CF's altitude is geometric height
    assert ds["lev"].dims == ("altitude",) and ds["air_pressure"].dims == ("altitude",)
    assert ds["lev"].attrs["formula_terms"] == "p0: p0 lev: lev"
    assert ds["lev"].attrs["units"] == "1"
    assert ds["p0"].attrs["units"] == "Pa" and float(ds["p0"]) == REFERENCE_PRESSURE_PA
    np.testing.assert_allclose(ds["lev"].values, altitude / SCALE_HEIGHT_KM, rtol=1e-15)
    np.testing.assert_allclose(
        ds["air_pressure"].values, altitude_km_to_pressure(altitude), rtol=1e-15
    )
    # cf_xarray: the axes, the standard names, and the parametric coordinate decoded
    assert ds.cf.axes["Z"] == ["altitude", "lev"]
    assert ds.cf.axes["X"] == ["longitude"] and ds.cf.axes["Y"] == ["latitude"]
    names = ds.cf.standard_names
    assert names["atmosphere_ln_pressure_coordinate"] == ["lev"]
    assert names["air_pressure"] == ["air_pressure"]
    assert "altitude" not in names
    assert ds.cf["air_pressure"].name == "air_pressure"
    assert ds.cf["atmosphere_ln_pressure_coordinate"].name == "lev"
    # cf_xarray decodes formula_terms of dimension coordinates: lev as the dimension
    on_lev = ds.swap_dims(altitude="lev")
    on_lev.cf.decode_vertical_coords(outnames={"lev": "decoded_pressure"})
    assert on_lev["decoded_pressure"].attrs["standard_name"] == "air_pressure"
    np.testing.assert_allclose(
        on_lev["decoded_pressure"].values, ds["air_pressure"].values, rtol=1e-14
    )


def test_grid_dataset_vertical_is_cf() -> None:
    ds = GRID.to_dataset(np.zeros(GRID.shape, np.float32))
    assert_cf_vertical(ds)
    assert list(ds.data_vars) == ["u", "v", "T"]


def snapshots(count: int) -> list[Snapshot]:
    rng = np.random.default_rng(3)
    return [
        Snapshot(T0 + i * np.timedelta64(1, "h"), torch.as_tensor(rng.normal(size=GRID.shape)))
        for i in range(count)
    ]


def test_archive_vertical_is_cf_and_reads_back_exactly(tmp_path) -> None:
    path = write_archive(tmp_path / "a.zarr", snapshots(3), GRID, {}, progress=False)
    raw = xr.open_zarr(path)
    assert_cf_vertical(raw)
    assert sorted(raw.data_vars) == ["T", "u", "v"]
    ds = open_archive(path)
    np.testing.assert_array_equal(ds["altitude"].values, GRID.altitude)  # exact, not via pressure
    assert ds["altitude"].attrs["genda_source_coordinate"] == "altitude (km)"
    assert_cf_vertical(ds)
    # regridding gives the auxiliaries of the target levels, not interpolated ones
    target = Grid.gaussian(8, 16, [85.0, 90.0, 100.0])
    regridded = open_archive(path, grid=target)
    assert_cf_vertical(regridded)
    # a level asked for is interpolated between genda's own levels
    half = open_archive(path, levels_km=[0.5 * (GRID.altitude[0] + GRID.altitude[1])])
    np.testing.assert_allclose(
        half["T"].values[:, 0], raw["T"].values[:, :2].mean(axis=1), rtol=1e-5, atol=1e-6
    )


# xarray warns that an unconsolidated Zarr store opens slowly; such stores are written here.
@pytest.mark.filterwarnings("ignore:Failed to open Zarr store with consolidated metadata")
def test_archive_written_before_the_cf_coordinate_still_opens(tmp_path) -> None:
    ds = GRID.to_dataset(np.ones((2, *GRID.shape), np.float32), time=[T0, T0 + 3600 * 10**9])
    ds = ds.drop_vars(list(VERTICAL_AUXILIARIES))
    ds["altitude"].attrs = {
        "units": "km",
        "standard_name": "altitude",
        "long_name": "log-pressure altitude H ln(p0/p), H = 7 km, p0 = 1000 hPa",
        "axis": "Z",
        "positive": "up",
    }
    ds.to_zarr(tmp_path / "old.zarr", zarr_format=3, consolidated=False)
    back = open_archive(tmp_path / "old.zarr")
    np.testing.assert_array_equal(back["altitude"].values, GRID.altitude)
    assert_cf_vertical(back)
    # the same heights without genda's long_name are geometric: refused without pressure
    ds["altitude"].attrs = {"units": "km", "standard_name": "altitude"}
    ds.to_zarr(tmp_path / "geometric.zarr", zarr_format=3, consolidated=False)
    with pytest.raises(ArchiveError, match="holds geometric heights"):
        open_archive(tmp_path / "geometric.zarr")


# ---------------------------------------------------------------------------- ensemble stores
def fill_window(store: EnsembleStore) -> None:
    store.add_window(T0, {"seed": 1})
    rng = np.random.default_rng(4)
    members = rng.normal(size=(store.n_members, *GRID.shape)).astype(np.float32)
    store.write_members(T0, range(store.n_members), members)
    store.finalize(T0)


def test_store_vertical_is_cf_and_member_is_a_realization(tmp_path) -> None:
    store = EnsembleStore.create(tmp_path / "ens.zarr", GRID, 3, {})
    fill_window(store)
    ds = open_ensemble(store.path)
    assert_cf_vertical(ds)
    assert ds["member"].attrs["standard_name"] == "realization"
    assert ds.cf.standard_names["realization"] == ["member"]
    assert ds.cf["T"].name == "time" and ds.cf["time"].name == "time"
    assert store.validate().ok
    level = query(store.path, "T", float(GRID.altitude[1]), stat="mean")
    assert float(level["air_pressure"]) == pytest.approx(altitude_km_to_pressure(GRID.altitude[1]))


def test_store_made_before_the_cf_coordinate_still_opens(tmp_path) -> None:
    store = EnsembleStore.create(tmp_path / "old.zarr", GRID, 2, {})
    group = zarr.open_group(str(store.path), mode="r+")
    for name in VERTICAL_AUXILIARIES:
        del group[name]
    for name in group.array_keys():
        attrs = dict(group[name].attrs)
        if "coordinates" in attrs:
            group[name].attrs.put({k: v for k, v in attrs.items() if k != "coordinates"})
    group["member"].attrs.put({"long_name": "ensemble member index"})
    consolidate(store.path)
    old = EnsembleStore.open(store.path)
    fill_window(old)
    assert old.validate().ok
    ds = open_ensemble(store.path)
    assert not set(VERTICAL_AUXILIARIES) & set(ds.variables)
    mean = query(store.path, "u", float(GRID.altitude[0]), stat="mean")
    assert mean.dims == ("time", "latitude", "longitude")
    assert np.isfinite(mean.values).all()
    assert Grid.from_dataset(ds) == GRID
