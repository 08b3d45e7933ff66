"""Reading other models' output into genda's conventions, and regridding."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from genda.constants import pressure_to_altitude_km
from genda.grid import Grid
from genda.storage import ArchiveError, open_archive

LAT = np.linspace(-80.0, 80.0, 9)  # south to north, unlike genda
LON = np.arange(-180.0, 180.0, 15.0)  # -180..165, unlike genda's [0, 360)
PLEV_HPA = np.array([0.001, 0.01, 0.1])  # top first: altitude decreasing
TIMES = np.array(["2001-06-01T00", "2001-06-01T06"], dtype="datetime64[ns]")


def cmip_like(rng: np.random.Generator | None = None) -> xr.Dataset:
    """CMIP-style output: ua, va, ta (degC) on (time, plev [hPa], lat, lon [-180, 180))."""
    rng = rng or np.random.default_rng(0)
    shape = (TIMES.size, PLEV_HPA.size, LAT.size, LON.size)
    dims = ("time", "plev", "lat", "lon")
    return xr.Dataset(
        {
            "ua": (dims, rng.normal(20, 10, shape).astype(np.float32), {"units": "m s-1"}),
            "va": (dims, rng.normal(0, 5, shape).astype(np.float32), {"units": "m/s"}),
            "ta": (dims, rng.normal(-60, 20, shape).astype(np.float32), {"units": "degC"}),
        },
        coords={
            "time": TIMES,
            "plev": ("plev", PLEV_HPA, {"units": "hPa", "positive": "down"}),
            "lat": ("lat", LAT, {"units": "degrees_north"}),
            "lon": ("lon", LON, {"units": "degrees_east"}),
        },
    )


def write_nc(ds: xr.Dataset, path, engine: str = "netcdf4"):
    ds.to_netcdf(path, engine=engine)
    return path


# xarray warns that an unconsolidated Zarr store opens slowly; that is the case tested.
@pytest.mark.filterwarnings("ignore:Failed to open Zarr store with consolidated metadata")
@pytest.mark.parametrize("engine", ["netcdf4", "h5netcdf", "zarr"])
def test_other_conventions(tmp_path, engine) -> None:
    src = cmip_like()
    if engine == "zarr":
        src.to_zarr(tmp_path / "cmip.zarr", zarr_format=3, consolidated=False)
        ds = open_archive(tmp_path / "cmip.zarr")
    else:
        ds = open_archive(write_nc(src, tmp_path / "cmip.nc", engine))

    assert list(ds.data_vars) == ["u", "v", "T"]
    assert ds["u"].dims == ("time", "altitude", "latitude", "longitude")
    np.testing.assert_array_equal(ds["latitude"].values, LAT[::-1])
    lon_order = np.argsort(np.mod(LON, 360.0))
    np.testing.assert_array_equal(ds["longitude"].values, np.mod(LON, 360.0)[lon_order])
    assert ds["longitude"].values[0] == 0.0 and ds["longitude"].values[-1] == 345.0
    np.testing.assert_allclose(
        ds["altitude"].values, pressure_to_altitude_km(PLEV_HPA * 100.0)[::-1]
    )
    assert np.all(np.diff(ds["altitude"].values) > 0)
    np.testing.assert_array_equal(ds["time"].values, TIMES)

    def rearranged(values: np.ndarray) -> np.ndarray:
        return values[:, ::-1, ::-1, :][..., lon_order]

    np.testing.assert_allclose(ds["u"].values, rearranged(src["ua"].values))
    np.testing.assert_allclose(ds["v"].values, rearranged(src["va"].values))
    np.testing.assert_allclose(
        ds["T"].values, rearranged(src["ta"].values.astype(np.float64) + 273.15), rtol=1e-6
    )
    for name in ("u", "v", "T"):
        assert ds[name].dtype == np.float32
        assert ds[name].chunks is not None  # lazy, dask-backed
    assert ds["T"].attrs["units"] == "K" and ds["T"].attrs["original_units"] == "degC"
    assert ds["T"].attrs["standard_name"] == "air_temperature"
    assert ds["u"].attrs["original_name"] == "ua"
    assert ds["altitude"].attrs["units"] == "km"
    assert ds["altitude"].attrs["genda_source_coordinate"] == "plev (hPa)"


def test_height_in_metres_and_names_by_standard_name(tmp_path) -> None:
    rng = np.random.default_rng(1)
    shape = (3, LAT.size, LON.size)
    dims = ("height", "latitude", "longitude")
    src = xr.Dataset(
        {
            "zonal": (
                dims,
                rng.normal(size=shape),
                {"units": "m s**-1", "standard_name": "eastward_wind"},
            ),
            "merid": (
                dims,
                rng.normal(size=shape),
                {"units": "m/s", "standard_name": "northward_wind"},
            ),
            "temp": (dims, 200 + rng.normal(size=shape), {"units": "K"}),
        },
        coords={
            "height": ("height", [80_000.0, 90_000.0, 100_000.0], {"units": "m"}),
            "latitude": LAT[::-1],
            "longitude": np.mod(LON, 360.0)[np.argsort(np.mod(LON, 360.0))],
        },
    )
    ds = open_archive(write_nc(src, tmp_path / "heights.nc"))
    np.testing.assert_allclose(ds["altitude"].values, [80.0, 90.0, 100.0])
    # no time in the file: a length-1 time dimension without values
    assert ds["T"].dims == ("time", "altitude", "latitude", "longitude")
    assert ds.sizes["time"] == 1
    np.testing.assert_allclose(ds["T"].values[0], src["temp"].values, rtol=1e-6)
    np.testing.assert_allclose(ds["u"].values[0], src["zonal"].values, rtol=1e-6)


def test_nemo_style_two_dimensional_coordinates(tmp_path) -> None:
    lat2d, lon2d = np.meshgrid(LAT, np.mod(LON, 360.0), indexing="ij")  # (y, x), regular
    rng = np.random.default_rng(2)
    values = rng.normal(size=(2, LAT.size, LON.size))
    src = xr.Dataset(
        {name: (("z", "y", "x"), values, {"units": "m s-1"}) for name in ("u", "v")}
        | {"T": (("z", "y", "x"), 200 + values, {"units": "K"})},
        coords={
            "z": ("z", [85.0, 95.0], {"units": "km"}),
            "nav_lat": (("y", "x"), lat2d),
            "nav_lon": (("y", "x"), lon2d),
        },
    )
    ds = open_archive(write_nc(src, tmp_path / "nemo.nc"))
    np.testing.assert_array_equal(ds["latitude"].values, LAT[::-1])
    lon_order = np.argsort(np.mod(LON, 360.0))
    np.testing.assert_allclose(
        ds["T"].values[0], (200 + values)[:, ::-1][..., lon_order], rtol=1e-6
    )
    # a curvilinear grid is refused with a hint
    src["nav_lat"] = (("y", "x"), lat2d + 0.1 * lon2d / 360.0)
    with pytest.raises(ArchiveError, match="not a regular grid axis"):
        open_archive(write_nc(src, tmp_path / "curvilinear.nc"))


def test_scalar_time_becomes_length_one(tmp_path) -> None:
    src = cmip_like().isel(time=1)  # keeps time as a scalar coordinate
    ds = open_archive(write_nc(src, tmp_path / "one.nc"))
    assert ds.sizes["time"] == 1
    assert ds["time"].values[0] == TIMES[1]


def smooth(lat_deg, lon_deg, alt_km):
    """A smooth field and the largest second derivatives (per radian, per km) of its terms."""
    lat, lon = np.deg2rad(lat_deg), np.deg2rad(lon_deg)
    return (
        200.0
        + 10.0 * np.cos(lat) * np.cos(lon - np.deg2rad(30.0))
        + 5.0 * np.sin(lat)
        + 0.004 * (alt_km - 100.0) ** 2
    )


def test_regrid_reproduces_a_smooth_field_across_the_dateline(tmp_path) -> None:
    # Source: 2 degree grid whose longitudes -179..179 map to 1..359, so the target
    # longitude 0 lies between source 359 and 361 (= 1): only the periodic wrap fills it.
    lat = np.arange(-89.0, 90.0, 2.0)
    lon = np.arange(-179.0, 180.0, 2.0)
    alt = np.arange(75.0, 121.0, 5.0)
    field = smooth(lat[None, :, None], lon[None, None, :], alt[:, None, None]).astype(np.float32)
    src = xr.Dataset(
        {"ta": (("z", "lat", "lon"), field, {"units": "K"})},
        coords={"z": ("z", alt, {"units": "km"}), "lat": lat, "lon": lon},
    )
    src["lat"].attrs["units"] = "degrees_north"
    src["lon"].attrs["units"] = "degrees_east"
    grid = Grid.gaussian(nlat=16, nlon=32, levels=[80.0, 92.5, 105.0, 115.0], variables=("T",))
    ds = open_archive(write_nc(src, tmp_path / "smooth.nc"), grid=grid)

    assert grid.check_same(Grid.from_dataset(ds)) is None
    got = ds["T"].values[0]
    truth = smooth(
        grid.latitude[None, :, None], grid.longitude[None, None, :], grid.altitude[:, None, None]
    )
    assert np.all(np.isfinite(got))
    # Linear interpolation errs by at most h^2/8 max|f''| per dimension:
    # latitude: h = 2 deg, |f''| <= 10 + 5; longitude: h = 2 deg, |f''| <= 10;
    # altitude: h = 5 km, f'' = 0.008; plus float32 rounding of values near 215 K.
    h = np.deg2rad(2.0)
    bound = h**2 / 8 * 15.0 + h**2 / 8 * 10.0 + 5.0**2 / 8 * 0.008 + 215.0 * 2.0**-23 * 2
    error = np.abs(got - truth)
    assert error.max() <= bound, (error.max(), bound)
    # ...including the column at longitude 0, which lies across the wrap
    assert grid.longitude[0] == 0.0
    assert error[..., 0].max() <= bound
    # and the interpolation is not trivially exact (the bound is not vacuous)
    assert error.max() > 0.05 * bound


def test_regrid_refuses_to_extrapolate(tmp_path) -> None:
    path = write_nc(cmip_like(), tmp_path / "cmip.nc")  # altitudes 64.5..96.7 km, latitudes +-80
    with pytest.raises(ArchiveError, match=r"target altitude \[60, 90\] km reaches beyond"):
        open_archive(path, grid=Grid.gaussian(nlat=8, nlon=16, levels=[60.0, 90.0]))
    with pytest.raises(ArchiveError, match=r"target altitude"):
        open_archive(path, grid=Grid.gaussian(nlat=8, nlon=16, levels=[90.0, 100.0]))
    # Gaussian N16 reaches 81.6 degrees: within half a 20-degree spacing of 80, allowed
    inside = open_archive(path, grid=Grid.gaussian(nlat=16, nlon=32, levels=[85.0, 90.0]))
    assert np.all(np.isfinite(inside["T"].values))
    narrow = cmip_like().isel(lat=slice(2, 7))  # latitudes +-40
    with pytest.raises(ArchiveError, match=r"target latitude .* beyond"):
        open_archive(
            write_nc(narrow, tmp_path / "narrow.nc"), grid=Grid.gaussian(8, 16, [85.0, 90.0])
        )


# ---------------------------------------------------------------------------- bad input
def test_missing_variable_lists_what_is_there(tmp_path) -> None:
    path = write_nc(cmip_like().drop_vars("ta"), tmp_path / "no_ta.nc")
    with pytest.raises(ArchiveError, match=r"missing variable\(s\) \['T'\]") as info:
        open_archive(path)
    assert "no_ta.nc" in str(info.value)
    assert "['ua', 'va']" in str(info.value)


def test_non_monotonic_altitude(tmp_path) -> None:
    src = cmip_like().assign_coords(plev=("plev", [0.1, 0.001, 0.01], {"units": "hPa"}))
    with pytest.raises(ArchiveError, match=r"altitude .* is not monotonic"):
        open_archive(write_nc(src, tmp_path / "zigzag.nc"))


def test_unknown_units_name_variable_and_unit(tmp_path) -> None:
    src = cmip_like()
    src["ta"].attrs["units"] = "furlongs"
    with pytest.raises(ArchiveError, match=r"variable 'ta' \(T\) has unknown units 'furlongs'"):
        open_archive(write_nc(src, tmp_path / "furlongs.nc"))
    src = cmip_like()
    src["plev"].attrs["units"] = "1"  # e.g. a hybrid sigma coordinate
    with pytest.raises(ArchiveError, match=r"vertical coordinate 'plev' has units '1'"):
        open_archive(write_nc(src, tmp_path / "sigma.nc"))
    del src["plev"].attrs["units"]
    with pytest.raises(ArchiveError, match=r"'plev' has no 'units' attribute"):
        open_archive(write_nc(src, tmp_path / "nounits.nc"))


def test_missing_latitude(tmp_path) -> None:
    src = cmip_like().rename(lat="y")
    src["y"].attrs.clear()
    with pytest.raises(ArchiveError, match=r"no latitude coordinate") as info:
        open_archive(write_nc(src, tmp_path / "nolat.nc"))
    assert "nolat.nc" in str(info.value)


def test_nan_only_variable(tmp_path) -> None:
    src = cmip_like()
    src["va"][:] = np.nan
    with pytest.raises(ArchiveError, match=r"variable 'va' contains only missing values"):
        open_archive(write_nc(src, tmp_path / "nan.nc"))


def test_duplicated_coordinates(tmp_path) -> None:
    src = cmip_like()
    lon = LON.copy()
    lon[1] = 180.0  # the same meridian as -180
    with pytest.raises(ArchiveError, match=r"duplicated longitude .*\[180\.0\]"):
        open_archive(
            write_nc(
                src.assign_coords(lon=("lon", lon, {"units": "degrees_east"})), tmp_path / "dup.nc"
            )
        )


def test_missing_file_and_unknown_format(tmp_path) -> None:
    with pytest.raises(ArchiveError, match="no such file"):
        open_archive(tmp_path / "absent.nc")
    (tmp_path / "table.csv").write_text("a,b\n")
    with pytest.raises(ArchiveError, match="unknown format"):
        open_archive(tmp_path / "table.csv")
