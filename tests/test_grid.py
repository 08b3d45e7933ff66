"""Contract tests for genda.grid: quadrature, CF datasets, on-disk round trips, validation."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch_harmonics.quadrature import legendre_gauss_weights

from genda.errors import InvalidValueError
from genda.grid import (
    DEFAULT_VARIABLES,
    DIMS,
    VARIABLES,
    Grid,
    GridMismatchError,
    equiangular_latitudes,
    gaussian_latitudes,
    lookup_variable,
)

GRID = Grid.gaussian(32, 64, 8)
TIMES = np.array(["2001-06-01T00", "2001-06-01T01", "2001-06-01T02"], dtype="datetime64[ns]")

CF = {
    "u": {"units": "m s-1", "standard_name": "eastward_wind", "long_name": "zonal wind"},
    "v": {"units": "m s-1", "standard_name": "northward_wind", "long_name": "meridional wind"},
    "T": {"units": "K", "standard_name": "air_temperature", "long_name": "temperature"},
}
AXES = {"time": "T", "altitude": "Z", "latitude": "Y", "longitude": "X"}
COORD_UNITS = {"altitude": "km", "latitude": "degrees_north", "longitude": "degrees_east"}


def random_field(grid: Grid, ntime: int | None = None, seed: int = 0) -> np.ndarray:
    shape = grid.shape if ntime is None else (ntime, *grid.shape)
    return np.random.default_rng(seed).normal(size=shape)


def open_zarr_quietly(path) -> xr.Dataset:
    with warnings.catch_warnings():
        # zarr 3 warns that consolidated metadata is not part of the v3 spec.
        warnings.simplefilter("ignore")
        return xr.open_zarr(path)


def to_zarr_quietly(ds: xr.Dataset, path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(path, zarr_format=3)


# ---------------------------------------------------------------------- quadrature


@pytest.mark.parametrize("nlat", [2, 7, 32, 64])
def test_gaussian_latitudes_are_torch_harmonics_nodes(nlat: int) -> None:
    cost, weights = legendre_gauss_weights(nlat, -1, 1)
    cost, weights = cost.numpy(), weights.numpy()
    # torch-harmonics: colatitude = flip(arccos(cost)), i.e. north to south.
    colatitude = np.flip(np.arccos(cost))
    np.testing.assert_allclose(
        Grid.gaussian(nlat, 8, 1).latitude, 90.0 - np.rad2deg(colatitude), rtol=0, atol=1e-12
    )
    np.testing.assert_allclose(
        Grid.gaussian(nlat, 8, 1).latitude, np.rad2deg(-np.arcsin(cost)), rtol=0, atol=1e-12
    )
    lat, w = gaussian_latitudes(nlat)
    np.testing.assert_allclose(w, np.flip(weights), rtol=1e-13, atol=0)
    assert w.sum() == pytest.approx(2.0, abs=1e-13)
    assert np.all(np.diff(lat) < 0)


def test_gaussian_grid_layout() -> None:
    assert GRID.shape == (3, 8, 32, 64)
    assert GRID.variables == DEFAULT_VARIABLES == ("u", "v", "T")
    assert GRID.latitude_kind == "legendre-gauss"
    np.testing.assert_array_equal(GRID.longitude, np.arange(64) * 5.625)
    np.testing.assert_allclose(GRID.altitude, np.linspace(80.0, 115.0, 8))
    # symmetric about the equator, no pole points
    np.testing.assert_allclose(GRID.latitude, -GRID.latitude[::-1], atol=1e-12)
    assert np.abs(GRID.latitude).max() < 90.0
    assert Grid.gaussian(4, 8, 1).altitude.tolist() == [97.5]
    assert Grid.gaussian(4, 8, [85.0, 95.0]).altitude.tolist() == [85.0, 95.0]
    with pytest.raises(ValueError, match="levels must be >= 1"):
        Grid.gaussian(4, 8, 0)


def test_coordinates_are_read_only_copies() -> None:
    with pytest.raises(ValueError, match="read-only"):
        GRID.latitude[0] = 0.0
    lat = np.array([45.0, 0.0, -45.0])
    grid = Grid(lat, np.array([0.0, 180.0]), np.array([90.0]))
    assert lat.flags.writeable  # the caller's array is not frozen ...
    lat[0] = 50.0
    assert grid.latitude[0] == 45.0  # ... nor shared


@pytest.mark.parametrize("nlat", [4, 32, 63])
def test_area_weights_integrate_polynomials_in_sin_lat_exactly(nlat: int) -> None:
    grid = Grid.gaussian(nlat, 8, 1)
    w = grid.area_weights()
    x = np.sin(np.deg2rad(grid.latitude))
    assert w.shape == (nlat,)
    assert np.all(w > 0)
    assert w.sum() == pytest.approx(1.0, abs=1e-14)
    assert np.sum(w * x**2) == pytest.approx(1.0 / 3.0, abs=1e-14)
    # Gauss-Legendre with n nodes is exact up to degree 2n - 1: mean of x^(2k) = 1 / (2k + 1)
    for k in range(1, nlat):
        assert np.sum(w * x ** (2 * k)) == pytest.approx(1.0 / (2 * k + 1), abs=1e-13)
    assert np.sum(w * x ** (2 * k + 1)) == pytest.approx(0.0, abs=1e-14)


def test_equiangular_weights_are_normalised_cosines() -> None:
    grid = Grid.equiangular(33, 64, 2)
    assert grid.latitude[0] == 90.0 and grid.latitude[-1] == -90.0
    np.testing.assert_array_equal(grid.latitude, equiangular_latitudes(33))
    w = grid.area_weights()
    assert w.sum() == pytest.approx(1.0, abs=1e-14)
    assert w[0] == pytest.approx(0.0, abs=1e-17) and w[-1] == pytest.approx(0.0, abs=1e-17)
    np.testing.assert_allclose(
        w, np.cos(np.deg2rad(grid.latitude)) / np.cos(np.deg2rad(grid.latitude)).sum()
    )
    # the midpoint-like rule is accurate (not exact) for sin^2
    assert np.sum(w * np.sin(np.deg2rad(grid.latitude)) ** 2) == pytest.approx(1 / 3, abs=2e-3)


# ---------------------------------------------------------------------- datasets


def assert_cf(ds: xr.Dataset, grid: Grid, with_time: bool) -> None:
    for name in grid.variables:
        assert ds[name].dims == (DIMS if with_time else DIMS[1:])
        for key, value in CF[name].items():
            assert ds[name].attrs[key] == value, (name, key)
        assert lookup_variable(name).cf_attrs() == CF[name]
    for dim in DIMS if with_time else DIMS[1:]:
        assert ds[dim].attrs["axis"] == AXES[dim]
    for dim, units in COORD_UNITS.items():
        assert ds[dim].attrs["units"] == units
        assert ds[dim].attrs["long_name"]
    for dim in ("time", "latitude", "longitude") if with_time else ("latitude", "longitude"):
        assert ds[dim].attrs["standard_name"] == dim
    # log-pressure altitude is not CF's (geometric) altitude: CF finds it through lev and p0
    # (tests/test_vertical_coordinates.py)
    assert "standard_name" not in ds["altitude"].attrs
    assert ds["lev"].attrs["standard_name"] == "atmosphere_ln_pressure_coordinate"
    assert ds["altitude"].attrs["positive"] == "up"
    assert ds.attrs["Conventions"] == "CF-1.10"
    assert json.loads(ds.attrs["genda_grid"]) == {"latitude_kind": grid.latitude_kind}
    assert json.loads(ds.attrs["genda_variables"]) == list(grid.variables)


def test_to_dataset_without_time() -> None:
    field = random_field(GRID)
    ds = GRID.to_dataset(torch.as_tensor(field))
    assert list(ds.data_vars) == ["u", "v", "T"]
    assert dict(ds.sizes) == {"altitude": 8, "latitude": 32, "longitude": 64}
    assert_cf(ds, GRID, with_time=False)
    np.testing.assert_array_equal(ds["v"].values, field[1])
    np.testing.assert_array_equal(ds["latitude"].values, GRID.latitude)
    back = GRID.tensor_from_dataset(ds, dtype=torch.float64)
    assert back.shape == GRID.shape and back.dtype == torch.float64
    np.testing.assert_array_equal(back.numpy(), field)


def test_to_dataset_with_time() -> None:
    field = random_field(GRID, ntime=TIMES.size)
    ds = GRID.to_dataset(field, time=TIMES)
    assert dict(ds.sizes) == {"time": 3, "altitude": 8, "latitude": 32, "longitude": 64}
    assert_cf(ds, GRID, with_time=True)
    np.testing.assert_array_equal(ds["time"].values, TIMES)
    np.testing.assert_array_equal(ds["T"].values, field[:, 2])
    back = GRID.tensor_from_dataset(ds, dtype=torch.float64)
    np.testing.assert_array_equal(back.numpy(), field)
    # default dtype float32: equal to the float32 cast
    np.testing.assert_array_equal(GRID.tensor_from_dataset(ds).numpy(), field.astype(np.float32))


def test_tensor_from_dataset_undoes_a_transpose() -> None:
    field = random_field(GRID, ntime=2)
    ds = GRID.to_dataset(field, time=TIMES[:2])
    shuffled = ds.transpose("longitude", "latitude", "time", "altitude")
    assert shuffled["u"].dims == ("longitude", "latitude", "time", "altitude")
    np.testing.assert_array_equal(
        GRID.tensor_from_dataset(shuffled, dtype=torch.float64).numpy(), field
    )


def test_to_dataset_rejects_time_mismatch() -> None:
    with pytest.raises(GridMismatchError, match=r"does not match \(T=3, V, L, H, W\)"):
        GRID.to_dataset(random_field(GRID, ntime=2), time=TIMES)
    with pytest.raises(GridMismatchError, match=r"field without time must be \(V, L, H, W\)"):
        GRID.to_dataset(random_field(GRID, ntime=2))
    with pytest.raises(GridMismatchError, match="trailing shape"):
        GRID.to_dataset(np.zeros((3, 8, 32, 63)))


def test_tensor_from_dataset_rejects_another_grid() -> None:
    ds = Grid.gaussian(16, 64, 8).to_dataset(np.zeros((3, 8, 16, 64)))
    with pytest.raises(
        GridMismatchError, match="dataset is on a different grid: latitude: 32 points vs 16"
    ):
        GRID.tensor_from_dataset(ds)


@st.composite
def grids(draw: st.DrawFn) -> Grid:
    nlat = draw(st.integers(1, 12))
    nlon = draw(st.integers(1, 12))
    nlev = draw(st.integers(1, 4))
    names = draw(st.permutations(list(VARIABLES)))
    count = draw(st.integers(1, len(names)))
    kind = draw(st.sampled_from(["gaussian", "equiangular"]))
    if kind == "equiangular" and nlat > 1:
        return Grid.equiangular(nlat, nlon, nlev, names[:count])
    return Grid.gaussian(nlat, nlon, nlev, names[:count])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(grid=grids(), ntime=st.one_of(st.none(), st.integers(1, 3)), seed=st.integers(0, 2**16))
def test_dataset_round_trip_random_shapes(grid: Grid, ntime: int | None, seed: int) -> None:
    field = random_field(grid, ntime, seed)
    times = None if ntime is None else TIMES[:ntime]
    ds = grid.to_dataset(field, time=times)
    assert list(ds.data_vars) == list(grid.variables)
    recovered = Grid.from_dataset(ds)
    assert recovered == grid
    assert recovered.variables == grid.variables
    assert recovered.latitude_kind == grid.latitude_kind
    assert recovered.fingerprint() == grid.fingerprint()
    back = recovered.tensor_from_dataset(ds, dtype=torch.float64).numpy()
    assert back.shape == field.shape
    np.testing.assert_array_equal(back, field)


# ---------------------------------------------------------------------- on disk


@pytest.mark.parametrize("with_time", [False, True])
def test_zarr_v3_round_trip(tmp_path, with_time: bool) -> None:
    field = random_field(GRID, TIMES.size if with_time else None, seed=3)
    ds = GRID.to_dataset(field, time=TIMES if with_time else None)
    to_zarr_quietly(ds, tmp_path / "x.zarr")
    assert (tmp_path / "x.zarr" / "zarr.json").exists()  # a v3 store
    opened = open_zarr_quietly(tmp_path / "x.zarr")
    assert set(opened.data_vars) == {"u", "v", "T"}
    grid = Grid.from_dataset(opened)
    assert grid == GRID
    assert grid.variables == ("u", "v", "T")
    assert grid.latitude_kind == "legendre-gauss"
    np.testing.assert_array_equal(grid.latitude, GRID.latitude)
    assert_cf(opened, GRID, with_time)
    if with_time:
        np.testing.assert_array_equal(opened["time"].values, TIMES)
    np.testing.assert_array_equal(GRID.tensor_from_dataset(opened, torch.float64).numpy(), field)


def test_from_dataset_variable_order_does_not_follow_the_store(tmp_path) -> None:
    """A store listing members alphabetically (T, u, v) still gives the grid's order."""
    ds = GRID.to_dataset(random_field(GRID))
    alphabetical = ds[["T", "u", "v"]]
    assert list(alphabetical.data_vars) == ["T", "u", "v"]
    assert Grid.from_dataset(alphabetical).variables == ("u", "v", "T")
    # without the genda_variables attribute: the VARIABLES registry order
    bare = alphabetical.copy()
    del bare.attrs["genda_variables"]
    assert Grid.from_dataset(bare).variables == ("u", "v", "T")
    to_zarr_quietly(bare, tmp_path / "bare.zarr")
    assert Grid.from_dataset(open_zarr_quietly(tmp_path / "bare.zarr")).variables == (
        "u",
        "v",
        "T",
    )
    # an explicit argument wins
    assert Grid.from_dataset(alphabetical, ["T", "u"]).variables == ("T", "u")
    # unregistered data variables are ignored
    extra = alphabetical.assign(quality=alphabetical["u"] * 0)
    assert Grid.from_dataset(extra).variables == ("u", "v", "T")


def test_non_registry_order_survives_zarr(tmp_path) -> None:
    grid = Grid.gaussian(8, 16, 2, variables=("T", "w", "u"))
    field = random_field(grid, seed=5)
    to_zarr_quietly(grid.to_dataset(field), tmp_path / "x.zarr")
    opened = open_zarr_quietly(tmp_path / "x.zarr")
    recovered = Grid.from_dataset(opened)
    assert recovered.variables == ("T", "w", "u")
    assert recovered == grid
    np.testing.assert_array_equal(
        recovered.tensor_from_dataset(opened, torch.float64).numpy(), field
    )
    bare = opened.copy()
    del bare.attrs["genda_variables"]
    assert Grid.from_dataset(bare).variables == ("u", "T", "w")


def test_netcdf_round_trip(tmp_path) -> None:
    grid = Grid.equiangular(9, 16, 3)
    field = random_field(grid, ntime=TIMES.size, seed=4)
    grid.to_dataset(field, time=TIMES).to_netcdf(tmp_path / "x.nc")
    with xr.open_dataset(tmp_path / "x.nc") as opened:
        recovered = Grid.from_dataset(opened)
        assert recovered == grid
        assert recovered.latitude_kind == "equiangular"
        assert recovered.variables == ("u", "v", "T")
        assert_cf(opened, grid, with_time=True)
        np.testing.assert_array_equal(opened["time"].values, TIMES)
        np.testing.assert_array_equal(
            recovered.tensor_from_dataset(opened, torch.float64).numpy(), field
        )


def test_from_dataset_kinds_and_missing_coordinate() -> None:
    irregular = Grid(np.array([60.0, 10.0, -45.0]), np.array([0.0, 90.0]), np.array([90.0]))
    ds = irregular.to_dataset(np.zeros(irregular.shape))
    assert Grid.from_dataset(ds).latitude_kind == "irregular"
    assert Grid.from_dataset(ds) == irregular
    with pytest.raises(GridMismatchError, match="dataset has no 'altitude' coordinate"):
        Grid.from_dataset(ds.drop_vars("altitude"))


# ---------------------------------------------------------------------- serialisation


def test_dict_round_trip_through_json() -> None:
    for grid in (GRID, Grid.equiangular(9, 12, 2, ("T",))):
        data = json.loads(json.dumps(grid.to_dict()))
        back = Grid.from_dict(data)
        assert back == grid
        assert back.latitude_kind == grid.latitude_kind
        assert back.variables == grid.variables
        np.testing.assert_array_equal(back.latitude, grid.latitude)
        np.testing.assert_array_equal(back.altitude, grid.altitude)
    with pytest.raises(GridMismatchError, match=r"grid description lacks \['altitude'\]"):
        Grid.from_dict({k: v for k, v in GRID.to_dict().items() if k != "altitude"})


def test_fingerprint_is_stable_and_sensitive() -> None:
    # Pinned: fingerprints are stored with archives and checkpoints.
    assert GRID.fingerprint() == "f31a9a5ef551f38b"
    assert re.fullmatch(r"[0-9a-f]{16}", GRID.fingerprint())
    assert Grid.gaussian(32, 64, 8).fingerprint() == GRID.fingerprint()
    assert hash(Grid.gaussian(32, 64, 8)) == hash(GRID)
    altitude = GRID.altitude.copy()
    altitude[3] += 1e-3
    moved = Grid(GRID.latitude, GRID.longitude, altitude)
    assert moved.fingerprint() != GRID.fingerprint()
    assert moved != GRID
    # below the 1e-6 rounding: same grid
    altitude[3] = GRID.altitude[3] + 1e-9
    assert Grid(GRID.latitude, GRID.longitude, altitude).fingerprint() == GRID.fingerprint()
    reordered = Grid.gaussian(32, 64, 8, ("v", "u", "T"))
    assert reordered.fingerprint() != GRID.fingerprint()


# ---------------------------------------------------------------------- validation

LAT = np.array([45.0, 0.0, -45.0])
LON = np.array([0.0, 120.0, 240.0])
ALT = np.array([80.0, 90.0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"latitude": np.array([-45.0, 0.0, 45.0])}, "latitude must be strictly decreasing"),
        ({"latitude": np.array([45.0, 45.0, 0.0])}, "latitude must be strictly decreasing"),
        ({"latitude": np.array([91.0, 0.0, -45.0])}, r"latitude must lie within \[-90, 90\]"),
        ({"longitude": np.array([0.0, 240.0, 120.0])}, "longitude must be strictly increasing"),
        ({"longitude": np.array([0.0, 120.0, 360.0])}, r"longitude must lie within \[0, 360\)"),
        ({"longitude": np.array([-10.0, 120.0, 240.0])}, r"longitude must lie within \[0, 360\)"),
        ({"altitude": np.array([90.0, 80.0])}, "altitude must be strictly increasing"),
        ({"altitude": np.array([80.0, 80.0])}, "altitude must be strictly increasing"),
        ({"latitude": np.array([45.0, np.nan, -45.0])}, "latitude contains NaN"),
        ({"longitude": np.array([0.0, np.inf, 240.0])}, "longitude contains NaN or infinite"),
        ({"altitude": np.array([np.nan])}, "altitude contains NaN"),
        ({"altitude": np.array([])}, r"altitude must be a non-empty 1-D array, got shape \(0,\)"),
        ({"latitude": np.zeros((2, 2))}, r"latitude must be a non-empty 1-D array"),
        ({"variables": ("u", "v", "u")}, "duplicated variable names"),
    ],
)
def test_invalid_grids_raise(kwargs: dict, message: str) -> None:
    args = {"latitude": LAT, "longitude": LON, "altitude": ALT} | kwargs
    with pytest.raises(GridMismatchError, match=message):
        Grid(**args)


def test_valid_small_grid_constructs() -> None:
    grid = Grid(LAT, LON, ALT)
    assert grid.shape == (3, 2, 3, 3)
    assert grid.latitude.dtype == np.float64


def test_unknown_variable() -> None:
    with pytest.raises(
        KeyError, match="unknown variable 'q'; known variables: T, geopotential_height, u, v, w"
    ):
        Grid(LAT, LON, ALT, ("u", "q"))
    with pytest.raises(KeyError, match="unknown variable 'rho'"):
        lookup_variable("rho")
    assert GRID.variable_index("T") == 2
    with pytest.raises(KeyError, match=r"variable 'w' is not on this grid"):
        GRID.variable_index("w")


def test_check_shape() -> None:
    GRID.check_shape((3, 8, 32, 64))
    GRID.check_shape((5, 2, 3, 8, 32, 64))
    with pytest.raises(
        GridMismatchError,
        match=re.escape(
            "snapshot has trailing shape (3, 8, 64, 32), grid expects (V, L, H, W) = (3, 8, 32, 64)"
        ),
    ):
        GRID.check_shape((3, 8, 64, 32), what="snapshot")
    with pytest.raises(GridMismatchError, match=re.escape("trailing shape (8, 32, 64)")):
        GRID.check_shape((8, 32, 64))


def test_check_same_names_every_difference() -> None:
    GRID.check_same(Grid.gaussian(32, 64, 8))
    other = Grid(
        gaussian_latitudes(16)[0],
        GRID.longitude + 0.5,
        GRID.altitude + np.arange(8) * 0.25,
        ("u", "v"),
    )
    with pytest.raises(GridMismatchError) as info:
        GRID.check_same(other, what="prior")
    text = str(info.value)
    assert text.startswith("prior is on a different grid: ")
    assert "latitude: 32 points vs 16" in text
    assert "longitude: values differ by up to 0.5" in text
    assert "altitude: values differ by up to 1.75" in text
    assert "variables: ['u', 'v', 'T'] vs ['u', 'v']" in text
    assert text.count(";") == 3
    assert len(GRID.differences(other)) == 4
    # tolerance: differences below atol are not differences
    assert GRID.differences(Grid(GRID.latitude + 1e-8, GRID.longitude, GRID.altitude)) == []


def test_nearest_level_accepts_half_a_spacing_and_names_a_farther_altitude() -> None:
    grid = Grid.gaussian(4, 8, [80.0, 90.0, 110.0])
    assert [grid.nearest_level(a) for a in (75.0, 84.9, 85.1, 99.9, 100.1, 120.0)] == [
        0,
        0,
        1,
        1,
        2,
        2,
    ]
    with pytest.raises(InvalidValueError, match=r"74.9 km is 5.1 km from the nearest level"):
        grid.nearest_level(74.9)
