"""Reading other models' output into genda's conventions, and regridding."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from genda.constants import SCALE_HEIGHT_KM, altitude_km_to_pressure, pressure_to_altitude_km
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
    # Geometric heights with the pressure of each level (1-D): exact log-pressure altitudes.
    pressure_hpa = np.array([1e-2, 2e-3, 3e-4])
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
            "pres": ("height", pressure_hpa, {"units": "hPa"}),
            "latitude": LAT[::-1],
            "longitude": np.mod(LON, 360.0)[np.argsort(np.mod(LON, 360.0))],
        },
    )
    ds = open_archive(write_nc(src, tmp_path / "heights.nc"))
    np.testing.assert_allclose(ds["altitude"].values, pressure_to_altitude_km(pressure_hpa * 100))
    # the pressure of each level is the exact vertical, preferred to the heights beside it
    assert ds["altitude"].attrs["genda_source_coordinate"] == "pres (hPa)"
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
            "z": ("z", [0.01, 0.001], {"units": "hPa"}),
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
        coords={"z": ("z", altitude_km_to_pressure(alt), {"units": "Pa"}), "lat": lat, "lon": lon},
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


# ---------------------------------------------------------------------------- vertical coordinates
# Sources whose levels' pressure varies by column, generated from closed forms: every field is
# an analytic function of log-pressure altitude z* (plus a horizontal pattern), written on the
# source's own vertical coordinate, read back and compared with the function at the levels.
COL_LAT = np.linspace(-60.0, 60.0, 5)  # south to north
COL_LON = np.arange(0.0, 360.0, 60.0)
COL_TIMES = np.array(["2010-01-01T00", "2010-01-01T12"], dtype="datetime64[ns]")
Z_GEOMETRIC_KM = np.arange(40.0, 141.0, 2.5)
P0_PA = 1.0e5
CURVATURE = {  # max |d2f/dz*2| of each profile (per km2)
    "u": 30.0 * (2 * np.pi / 40.0) ** 2,
    "v": 10.0 * (2 * np.pi / 25.0) ** 2,
    "T": 20.0 * (2 * np.pi / 30.0) ** 2,
}


def profiles(zstar, lat, lon) -> dict[str, np.ndarray]:
    """u, v (m s-1), T (K) as functions of log-pressure altitude (km) and position (deg)."""
    horizontal = np.cos(np.deg2rad(lat)) * np.cos(np.deg2rad(lon))
    return {
        "u": 30.0 * np.cos(2 * np.pi * zstar / 40.0) + 0.5 * zstar + 5.0 * horizontal,
        "v": 10.0 * np.sin(2 * np.pi * zstar / 25.0) - 3.0 * horizontal,
        "T": 200.0 + 20.0 * np.sin(2 * np.pi * zstar / 30.0) + 8.0 * horizontal,
    }


def column_grid():
    """``(time, 1, lat, lon)`` broadcastable time index, latitude and longitude."""
    t = np.arange(COL_TIMES.size)[:, None, None, None]
    return t, COL_LAT[None, None, :, None], COL_LON[None, None, None, :]


def zstar_of_height(z_km, lat, lon, t):
    """A column-dependent, nonlinear (monotonic) log-pressure altitude of geometric height."""
    offset = -4.0 + 3.0 * np.sin(np.deg2rad(lat)) + 1.5 * np.cos(np.deg2rad(lon - 40.0 * t))
    return z_km + offset + 0.0015 * (z_km - 90.0) ** 2


def column_fields(zstar: np.ndarray, dims: tuple[str, ...]) -> dict[str, tuple]:
    _, lat, lon = column_grid()
    return {
        name: (dims, values, {"units": "K" if name == "ta" else "m s-1"})
        for name, values in zip(("ua", "va", "ta"), profiles(zstar, lat, lon).values(), strict=True)
    }


def check_closed_form(ds: xr.Dataset, zstar: np.ndarray, levels: np.ndarray) -> dict[str, float]:
    """Compare ``ds`` with the profiles at ``levels``; returns each variable's max error and bound.

    Linear interpolation in z* errs by at most h**2 / 8 max|f''| with h the largest spacing
    of z* along a source column, plus float32 rounding of values up to 250.
    """
    np.testing.assert_allclose(ds["altitude"].values, levels, rtol=0, atol=1e-9)
    h = float(np.max(np.abs(np.diff(zstar, axis=1))))
    lat = ds["latitude"].values[None, None, :, None]
    lon = ds["longitude"].values[None, None, None, :]
    truth = profiles(ds["altitude"].values[None, :, None, None], lat, lon)
    errors = {}
    for name in ("u", "v", "T"):
        bound = h**2 / 8 * CURVATURE[name] + 250.0 * 2.0**-23 * 2
        error = float(np.max(np.abs(ds[name].values - truth[name])))
        assert ds[name].dtype == np.float32 and np.all(np.isfinite(ds[name].values))
        assert error <= bound, (name, error, bound)
        assert error > 0.02 * bound, (name, error, bound)  # interpolated, the bound is not vacuous
        errors[name] = error
    return errors


def common_levels(zstar: np.ndarray, typical: np.ndarray) -> np.ndarray:
    """``typical`` (increasing) within the z* range every column of ``(t, k, lat, lon)`` covers."""
    ordered = np.sort(zstar, axis=1)
    low, high = ordered[:, 0].max(), ordered[:, -1].min()
    typical = np.sort(typical)
    return typical[(typical >= low) & (typical <= high)]


def geometric_source(per_column: bool) -> tuple[xr.Dataset, np.ndarray]:
    """UA-ICON-like output on geometric heights, with the model's pressure at every point.

    ``per_column``: heights as a variable ``z_mc(height, lat, lon)`` varying with the
    terrain, top level first and no 1-D vertical coordinate, pressure found by its
    standard_name; else a 1-D ``height`` coordinate (m) and ``pres`` (Pa).
    """
    t, lat, lon = column_grid()
    z = Z_GEOMETRIC_KM[None, :, None, None] + (0.2 * np.cos(np.deg2rad(lat)) if per_column else 0)
    zstar = zstar_of_height(z, lat, lon, t) + 0 * t
    pressure = P0_PA * np.exp(-zstar / SCALE_HEIGHT_KM)
    dims = ("time", "height", "lat", "lon")
    coords = {
        "time": COL_TIMES,
        "lat": ("lat", COL_LAT, {"units": "degrees_north"}),
        "lon": ("lon", COL_LON, {"units": "degrees_east"}),
    }
    if per_column:
        top_first = slice(None, None, -1)
        src = xr.Dataset(
            column_fields(zstar[:, top_first], dims)
            | {
                "z_mc": (
                    dims[1:],
                    1000.0 * np.broadcast_to(z, zstar.shape)[0, top_first],
                    {"units": "m"},
                ),
                "p_model": (dims, pressure[:, top_first], {"units": "Pa"}),
            },
            coords=coords,
        )
        src["p_model"].attrs["standard_name"] = "air_pressure"
    else:
        src = xr.Dataset(
            column_fields(zstar, dims) | {"pres": (dims, pressure, {"units": "Pa"})},
            coords=coords | {"height": ("height", 1000.0 * Z_GEOMETRIC_KM, {"units": "m"})},
        )
    return src, zstar


@pytest.mark.parametrize("per_column", [False, True])
def test_geometric_heights_are_interpolated_with_the_pressure(tmp_path, per_column) -> None:
    src, zstar = geometric_source(per_column)
    ds = open_archive(write_nc(src, tmp_path / "icon.nc"))
    levels = common_levels(zstar, zstar.mean(axis=(0, 2, 3)))
    assert 30 < levels.size < Z_GEOMETRIC_KM.size  # levels outside the common range are left out
    check_closed_form(ds, zstar, levels)
    described = ds["altitude"].attrs["genda_source_coordinate"]
    assert ("p_model (Pa) per column" if per_column else "pres (Pa) per column") in described
    assert "interpolated per column" in described
    # the old reading (heights taken as log-pressure altitude) is off by kilometres
    assert np.max(np.abs(levels - Z_GEOMETRIC_KM[: levels.size])) > 1.0


def test_geopotential_height_with_pressure_and_levels_asked_for(tmp_path) -> None:
    t, lat, lon = column_grid()
    zstar = zstar_of_height(Z_GEOMETRIC_KM[None, :, None, None], lat, lon, t)
    dims = ("time", "zg", "lat", "lon")
    src = xr.Dataset(
        column_fields(zstar, dims)
        | {"pfull": (dims, 1e3 * np.exp(-zstar / SCALE_HEIGHT_KM), {"units": "hPa"})},
        coords={
            "time": COL_TIMES,
            "zg": ("zg", 1000.0 * Z_GEOMETRIC_KM, {"units": "m"}),
            "lat": ("lat", COL_LAT, {"units": "degrees_north"}),
            "lon": ("lon", COL_LON, {"units": "degrees_east"}),
        },
    )
    src["zg"].attrs["standard_name"] = "geopotential_height"
    path = write_nc(src, tmp_path / "zg.nc")
    levels = np.arange(50.0, 131.0, 5.0)
    check_closed_form(open_archive(path, levels_km=levels), zstar, levels)
    with pytest.raises(ArchiveError, match=r"levels \[20, 60\] km reach beyond the log-pressure"):
        open_archive(path, levels_km=[20.0, 60.0])
    with pytest.raises(ArchiveError, match="strictly increasing"):
        open_archive(path, levels_km=[60.0, 55.0])


P_REFERENCE = P0_PA * np.exp(-np.arange(30.0, 141.0, 2.5) / SCALE_HEIGHT_KM)  # at PS = P0
SIGMA_SHARE = np.linspace(1.0, 0.0, P_REFERENCE.size) ** 2  # sigma at the bottom, pressure on top


def hybrid_source(cf_terms: bool) -> tuple[xr.Dataset, np.ndarray]:
    """WACCM-X-like hybrid sigma-pressure output, top level first (as CESM writes it).

    ``cf_terms``: CESM's attributes (standard_name, formula_terms, ``P0``); else the
    coefficients found by name only, with a lowercase ``p0``.
    """
    t, lat, lon = column_grid()
    hyam = ((1.0 - SIGMA_SHARE) * P_REFERENCE / P0_PA)[::-1]
    hybm = (SIGMA_SHARE * P_REFERENCE / P0_PA)[::-1]
    ps = P0_PA * (0.8 + 0.15 * np.cos(np.deg2rad(lat)) * np.cos(np.deg2rad(lon - 30.0 * t)))
    pressure = hyam[None, :, None, None] * P0_PA + hybm[None, :, None, None] * ps
    zstar = SCALE_HEIGHT_KM * np.log(P0_PA / pressure)
    dims = ("time", "lev", "lat", "lon")
    lev_attrs = {"units": "hPa", "long_name": "hybrid level at midpoints (1000*(A+B))"}
    if cf_terms:
        lev_attrs |= {
            "standard_name": "atmosphere_hybrid_sigma_pressure_coordinate",
            "formula_terms": "a: hyam b: hybm p0: P0 ps: PS",
            "positive": "down",
        }
    src = xr.Dataset(
        column_fields(zstar, dims)
        | {
            "hyam": ("lev", hyam),
            "hybm": ("lev", hybm),
            "P0" if cf_terms else "p0": ((), P0_PA, {"units": "Pa"}),
            "PS": (("time", "lat", "lon"), ps[:, 0], {"units": "Pa"}),
        },
        coords={
            "time": COL_TIMES,
            "lev": ("lev", 1000.0 * (hyam + hybm), lev_attrs),
            "lat": ("lat", COL_LAT, {"units": "degrees_north"}),
            "lon": ("lon", COL_LON, {"units": "degrees_east"}),
        },
    )
    return src, zstar


@pytest.mark.parametrize("cf_terms", [True, False])
def test_hybrid_sigma_pressure_levels(tmp_path, cf_terms) -> None:
    src, zstar = hybrid_source(cf_terms)
    path = write_nc(src, tmp_path / "waccmx.nc")
    ds = open_archive(path)
    # the levels at the reference surface pressure, where every column has data
    levels = common_levels(zstar, SCALE_HEIGHT_KM * np.log(P0_PA / P_REFERENCE))
    assert 0 < P_REFERENCE.size - levels.size <= 3  # the lowest levels leave the common range
    check_closed_form(ds, zstar, levels)
    assert "hybrid sigma-pressure: hyam, hybm" in ds["altitude"].attrs["genda_source_coordinate"]
    # with a grid, its levels are interpolated to directly (no second vertical interpolation)
    grid = Grid(COL_LAT[::-1], COL_LON, np.arange(50.0, 121.0, 10.0), ("u", "v", "T"), "irregular")
    check_closed_form(open_archive(path, grid=grid), zstar, grid.altitude)


def test_hybrid_levels_that_are_pure_pressure_are_exact(tmp_path) -> None:
    src, _ = hybrid_source(cf_terms=True)
    src["hyam"] = src["hyam"] + src["hybm"]
    src["hybm"] = 0.0 * src["hybm"]
    ds = open_archive(write_nc(src, tmp_path / "pure.nc"))
    expected = SCALE_HEIGHT_KM * np.log(P0_PA / (src["hyam"].values * P0_PA))
    np.testing.assert_allclose(ds["altitude"].values, expected[::-1], rtol=1e-12)
    np.testing.assert_allclose(ds["T"].values, src["ta"].values[:, ::-1, ::-1], rtol=1e-6)


def test_heights_without_pressure_are_refused(tmp_path) -> None:
    src, _ = geometric_source(per_column=False)
    with pytest.raises(
        ArchiveError, match=r"'height' holds geometric heights \(m\) but the file has no pressure"
    ) as info:
        open_archive(write_nc(src.drop_vars("pres"), tmp_path / "no_pres.nc"))
    assert "no_pres.nc" in str(info.value)
    src, _ = geometric_source(per_column=True)
    with pytest.raises(
        ArchiveError,
        match=r"'z_mc' holds geometric heights \(m\) but .* no pressure along 'height'",
    ):
        open_archive(write_nc(src.drop_vars("p_model"), tmp_path / "no_pres_column.nc"))
    # geopotential height of every point (CESM's Z3) as the only vertical
    z3 = src.drop_vars(["p_model", "z_mc"]).rename(height="lev")
    z3["Z3"] = (("time", "lev", "lat", "lon"), z3["ta"].values * 0 + 5e4)
    z3["Z3"].attrs = {"units": "m", "standard_name": "geopotential_height"}
    with pytest.raises(
        ArchiveError, match=r"'Z3' holds geopotential heights \(m\) but the file has no pressure"
    ):
        open_archive(write_nc(z3, tmp_path / "z3.nc"))


def test_hybrid_terms_missing(tmp_path) -> None:
    src, _ = hybrid_source(cf_terms=True)
    with pytest.raises(ArchiveError, match=r"need the surface pressure \(looked for PS"):
        open_archive(write_nc(src.drop_vars("PS"), tmp_path / "no_ps.nc"))
    with pytest.raises(ArchiveError, match=r"need the reference pressure .* p = a p0 \+ b ps"):
        open_archive(write_nc(src.drop_vars("P0"), tmp_path / "no_p0.nc"))
    src, _ = hybrid_source(cf_terms=True)
    with pytest.raises(ArchiveError, match=r"coefficients are missing"):
        open_archive(
            write_nc(
                src.drop_vars(["hyam", "hybm"]).assign_coords(
                    lev=src["lev"].assign_attrs(formula_terms="")
                ),
                tmp_path / "no_coefficients.nc",
            )
        )


def test_pressure_levels_beside_leftover_hybrid_coefficients(tmp_path) -> None:
    # CESM output moved to pressure levels keeps hyam/hybm of its model levels: plev is exact
    src = cmip_like().assign(hyam=("lev", [0.1, 0.2, 0.3, 0.4]), hybm=("lev", [0.0, 0.1, 0.2, 0.3]))
    ds = open_archive(write_nc(src, tmp_path / "plev.nc"))
    np.testing.assert_allclose(
        ds["altitude"].values, pressure_to_altitude_km(PLEV_HPA * 100.0)[::-1]
    )


def test_cf_ln_pressure_coordinate_as_the_dimension(tmp_path) -> None:
    # another model's file on CF's atmosphere_ln_pressure_coordinate, p = p0 exp(-lev)
    grid = Grid.gaussian(nlat=4, nlon=8, levels=[80.0, 90.0, 100.0])
    field = np.random.default_rng(5).normal(size=grid.shape).astype(np.float32)
    src = grid.to_dataset(field).swap_dims(altitude="lev").drop_vars(["altitude", "air_pressure"])
    src["p0"] = src["p0"] / 100.0
    src["p0"].attrs["units"] = "hPa"
    ds = open_archive(write_nc(src, tmp_path / "lnp.nc"))
    np.testing.assert_allclose(ds["altitude"].values, grid.altitude, rtol=1e-13)
    assert (
        ds["altitude"].attrs["genda_source_coordinate"] == "lev (atmosphere_ln_pressure_coordinate)"
    )
    np.testing.assert_array_equal(ds["T"].values[0], field[2])


def test_pressure_levels_win_over_a_height_per_level_on_the_same_dimension() -> None:
    """``plev`` in Pa with an ``altitude(plev)`` in m: the pressure is the exact vertical."""
    from genda.storage.readers import to_genda_conventions

    plev = np.array([1.0, 0.1, 0.01])
    shape = (3, 4, 8)
    ds = xr.Dataset(
        {
            name: (("plev", "lat", "lon"), np.full(shape, value), {"units": units})
            for name, value, units in (("T", 200.0, "K"), ("u", 0.0, "m s-1"), ("v", 0.0, "m s-1"))
        },
        coords={
            "plev": ("plev", plev, {"units": "Pa"}),
            "altitude": ("plev", [78e3, 95e3, 109e3], {"units": "m"}),
            "lat": ("lat", np.linspace(80.0, -80.0, 4), {"units": "degrees_north"}),
            "lon": ("lon", np.arange(8) * 45.0, {"units": "degrees_east"}),
        },
    )
    out = to_genda_conventions(ds)
    np.testing.assert_allclose(out["altitude"].values, pressure_to_altitude_km(plev))
    assert out["altitude"].attrs["genda_source_coordinate"].startswith("plev")
