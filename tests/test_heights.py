"""Geometric height, geopotential height and log-pressure altitude.

The model's own heights in its archives (``zg``), reading heights from other
models' conventions, the standard atmosphere, and placing observations given
in geometric height onto genda's log-pressure levels.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from genda.constants import (
    DRY_AIR_CP,
    DRY_AIR_GAS_CONSTANT,
    SCALE_HEIGHT_KM,
    STANDARD_GRAVITY,
    altitude_km_to_pressure,
    pressure_to_altitude_km,
)
from genda.errors import InvalidTypeError
from genda.grid import Grid
from genda.observations.heights import (
    APPROXIMATE_ERROR_KM,
    HEIGHTS_ATTR,
    LevelHeights,
    approximate_level_heights,
    geometric_to_log_pressure,
    level_heights_from_archive,
    place_geometric_heights,
)
from genda.observations.standard_heights import (
    geometric_to_geopotential_km,
    geopotential_to_geometric_km,
    normal_gravity,
    standard_pressure,
    standard_temperature,
)
from genda.observations.table import ObservationError
from genda.orchestration.simulate import fit_time_step
from genda.simulator import Simulator, SimulatorConfig, Snapshot
from genda.simulator.dynamics import IsentropicLayers
from genda.simulator.model import level_geopotential
from genda.simulator.reference import LayerGeometry, layer_mean_exner
from genda.simulator.spectral import SpectralTransforms
from genda.storage import (
    ArchiveError,
    IconRemap,
    open_archive,
    read_normalization,
    write_archive,
)
from genda.storage.archive import HEIGHT_VARIABLE
from test_icon_native import PLEV_PA as ICON_PLEV_PA
from test_icon_native import icon_dataset, icon_grid_file, icosahedral_mesh

ISOTHERMAL_K = STANDARD_GRAVITY * SCALE_HEIGHT_KM * 1e3 / DRY_AIR_GAS_CONSTANT
"""The temperature at which geopotential height grows exactly as log-pressure altitude (239.2 K)."""


# ---------------------------------------------------------------------------- the model's heights
def _isothermal_layers(
    temperature: float, layers: int = 64
) -> tuple[IsentropicLayers, torch.Tensor]:
    """Isentropic layers whose every layer has ``temperature``, and their ``(K + 1, 1, 1)`` interfaces."""
    interface_km = np.linspace(70.0, 125.0, layers + 1)
    p_int = altitude_km_to_pressure(interface_km)
    mean_exner = layer_mean_exner(p_int[:-1], p_int[1:])
    geometry = LayerGeometry(
        interface_km,
        p_int,
        DRY_AIR_CP * temperature / mean_exner,
        (p_int[:-1] - p_int[1:]) / STANDARD_GRAVITY,
        np.full(layers, temperature),
    )
    dynamics = IsentropicLayers(SpectralTransforms(4, 8, 2), geometry, rotation_rate=0.0)
    return dynamics, torch.as_tensor(p_int)[:, None, None]


@pytest.mark.parametrize("temperature", [ISOTHERMAL_K, 200.0])
def test_geopotential_height_of_an_isothermal_atmosphere_is_closed_form(temperature) -> None:
    # Zg(z*) - Zg(z*_0) = R T / (g0 H) (z* - z*_0): equal to the log-pressure altitude at 239.2 K.
    dynamics, p_int = _isothermal_layers(temperature)
    surface = torch.full((1, 1), STANDARD_GRAVITY * 70e3)
    montgomery = dynamics.montgomery(p_int, surface)
    levels_km = np.linspace(72.0, 123.0, 18)
    phi = level_geopotential(
        p_int, montgomery, dynamics.theta, torch.as_tensor(altitude_km_to_pressure(levels_km))
    )
    zg_km = phi[:, 0, 0].numpy() / STANDARD_GRAVITY / 1e3
    expected = 70.0 + temperature / ISOTHERMAL_K * (levels_km - 70.0)
    # layers of constant theta are adiabatic inside: a second-order departure of metres
    np.testing.assert_allclose(zg_km, expected, atol=0.02)


def test_level_geopotential_is_the_montgomery_relation_at_layer_pressures() -> None:
    sim = Simulator(SimulatorConfig(nlat=16, nlon=32, layers=4, levels=4), seed=1)
    sim.run_days(0.5)
    g = sim.diagnose()
    for k in range(4):
        phi = level_geopotential(
            g.interface_pressure[:, 3:4, 5:6],
            g.montgomery[:, 3:4, 5:6],
            sim.dynamics.theta,
            g.layer_pressure[k, 3, 5].reshape(1),
        )
        expected = g.montgomery[k, 3, 5] - DRY_AIR_CP * g.temperature[k, 3, 5]
        assert float(phi) == pytest.approx(float(expected), rel=1e-12)
    # and continuous across every interface
    for k in range(1, 4):
        p = g.interface_pressure[k, 3, 5]
        just = torch.stack((p * (1 + 1e-9), p * (1 - 1e-9)))
        below, above = level_geopotential(
            g.interface_pressure[:, 3:4, 5:6], g.montgomery[:, 3:4, 5:6], sim.dynamics.theta, just
        )[:, 0, 0]
        assert float(above - below) == pytest.approx(0.0, abs=1e-2)


def test_archive_carries_the_model_heights_beside_the_state(tiny_archive: Path) -> None:
    ds = xr.open_zarr(tiny_archive)
    zg = ds[HEIGHT_VARIABLE]
    assert zg.dims == ("time", "altitude", "latitude", "longitude")
    assert zg.dtype == np.float32
    assert zg.attrs["units"] == "m"
    assert zg.attrs["standard_name"] == "geopotential_height"
    # not a state variable: not listed, no statistics, not read as one
    assert json.loads(ds.attrs["genda_variables"]) == ["u", "v", "T"]
    assert "genda_mean" not in zg.attrs and "genda_std" not in zg.attrs
    assert list(open_archive(tiny_archive).data_vars) == ["u", "v", "T"]
    asked = open_archive(tiny_archive, variables=["geopotential_height"])["geopotential_height"]
    np.testing.assert_array_equal(asked.values, zg.values)
    assert read_normalization(tiny_archive).variables == ("u", "v", "T")
    # the simulator's own diagnosis at the first output time (one hour after the start)
    config = json.loads(ds.attrs["model_config"])
    sim = Simulator(
        fit_time_step(SimulatorConfig.from_dict(config), 1.0), seed=int(ds.attrs["seed"])
    )
    sim.advance(3600.0)
    np.testing.assert_allclose(zg.isel(time=0).values, sim.geopotential_height().numpy(), rtol=1e-6)
    # geopotential height grows with the level, a few km below log-pressure altitude
    levels_m = ds["altitude"].values[:, None, None] * 1e3
    assert np.all(np.diff(zg.values, axis=1) > 0)
    assert np.all((zg.values - levels_m > -12e3) & (zg.values - levels_m < 0.0))


def test_archives_without_heights_keep_working_and_mixtures_are_refused(tmp_path) -> None:
    grid = Grid.gaussian(nlat=8, nlon=16, levels=2)
    fields = torch.randn(grid.shape, generator=torch.Generator().manual_seed(0))
    heights = torch.zeros(grid.nlevels, grid.nlat, grid.nlon)
    t0 = np.datetime64("2000-01-01T01:00", "ns")
    times = [t0 + np.timedelta64(i, "h") for i in range(3)]
    plain = write_archive(
        tmp_path / "plain.zarr", [Snapshot(t, fields) for t in times], grid, {}, progress=False
    )
    assert HEIGHT_VARIABLE not in xr.open_zarr(plain).data_vars
    assert list(open_archive(plain).data_vars) == ["u", "v", "T"]
    with pytest.raises(ArchiveError, match="no height variable"):
        level_heights_from_archive(plain)
    mixed = [Snapshot(times[0], fields, heights), Snapshot(times[1], fields)]
    with pytest.raises(ArchiveError, match="lacks a geopotential height"):
        write_archive(tmp_path / "mixed.zarr", mixed, grid, {}, progress=False)
    wrong = [Snapshot(times[0], fields, heights[:1])]
    with pytest.raises(ArchiveError, match="geopotential height has shape"):
        write_archive(tmp_path / "wrong.zarr", wrong, grid, {}, progress=False)
    assert not (tmp_path / "mixed.zarr").exists() and not (tmp_path / "wrong.zarr").exists()


# ---------------------------------------------------------------------------- the acceptance criterion
def test_observations_at_a_model_level_geometric_height_land_on_that_level(tiny_archive) -> None:
    # Observations at the geometric height of a model level (from the archive's own zg at
    # their time and place) land within 0.5 km of that level's log-pressure altitude.
    ds = xr.open_zarr(tiny_archive)
    heights = level_heights_from_archive(tiny_archive)
    assert not heights.approximate and "zg" in heights.source
    np.testing.assert_array_equal(heights.altitude_km, ds["altitude"].values)
    # inner levels: at the outermost ones half the points lie beyond the mean heights (refused)
    inner = ds[HEIGHT_VARIABLE].isel(time=[0, 23, 47], altitude=slice(1, -1))
    zg_km, lat, lon, level = xr.broadcast(
        inner / 1e3, inner["latitude"], inner["longitude"], inner["altitude"]
    )
    table = pd.DataFrame(
        {
            "lat": lat.values.ravel(),
            "lon": lon.values.ravel(),
            "height_km": geopotential_to_geometric_km(zg_km.values.ravel(), lat.values.ravel()),
            "level_km": level.values.ravel(),
        }
    )
    placed = place_geometric_heights(table, heights)
    error = np.abs(placed["alt_km"] - placed["level_km"])
    print(f"{len(table)} points, largest miss {error.max():.3f} km")
    assert error.max() < 0.5, error.max()


def test_latitude_dependence_is_kept_and_oriented(tmp_path) -> None:
    # heights 2 km higher in the north: a flipped latitude axis would miss by 4 km
    path = _synthetic_model_output(tmp_path, "zg", north_km=2.0)
    heights = level_heights_from_archive(path)
    assert np.all(np.diff(heights.latitude) > 0)
    for lat in (60.0, -60.0):
        z_star = 90.0
        zg = 0.9 * z_star - 6.0 + 2.0 * np.sin(np.deg2rad(lat))
        alt = geometric_to_log_pressure(geopotential_to_geometric_km(zg, lat), lat, heights)
        assert float(alt) == pytest.approx(z_star, abs=0.05)


# ---------------------------------------------------------------------------- other models' heights
PLEV_PA = altitude_km_to_pressure(np.linspace(60.0, 120.0, 7))
LATS = np.linspace(-80.0, 80.0, 9)
LONS = np.arange(0.0, 360.0, 45.0)


def _expected_geometric_km(north_km: float = 0.0) -> np.ndarray:
    """``(L, n_lat)`` geometric height of the synthetic files' levels (km)."""
    z_star = pressure_to_altitude_km(PLEV_PA)[:, None]
    zg_km = 0.9 * z_star - 6.0 + north_km * np.sin(np.deg2rad(LATS))[None, :]
    return geopotential_to_geometric_km(zg_km, LATS[None, :])


def _synthetic_model_output(
    tmp_path: Path,
    name: str,
    north_km: float = 0.0,
    attrs: dict | None = None,
    kind: str = "zg",
) -> Path:
    """A NetCDF file on pressure levels whose geopotential height is ``0.9 z* - 6 km`` (+ north).

    ``kind``: ``zg`` (geopotential height, m), ``geopotential`` (m2 s-2),
    ``geometric`` (m) or ``half`` (geometric, on interfaces whose means are the levels).
    """
    geometric = _expected_geometric_km(north_km)  # (L, n_lat)
    zg_km = geometric_to_geopotential_km(geometric, LATS[None, :])
    shape = (2, PLEV_PA.size, LATS.size, LONS.size)
    dims = ("time", "plev", "lat", "lon")

    def full(values_km: np.ndarray) -> np.ndarray:
        return np.broadcast_to(values_km[None, :, :, None], (2, *values_km.shape, LONS.size))

    data_vars = {"ta": (dims, np.full(shape, 200.0), {"units": "K"})}
    units = {"units": "m"}
    if kind == "zg":
        data_vars[name] = (dims, full(zg_km) * 1e3, {**units, **(attrs or {})})
    elif kind == "geopotential":
        values = full(zg_km) * 1e3 * STANDARD_GRAVITY
        data_vars[name] = (dims, values, {"units": "m**2 s**-2", **(attrs or {})})
    elif kind == "geometric":
        data_vars[name] = (dims, full(geometric) * 1e3, {**units, **(attrs or {})})
    else:  # interfaces e_0 = z_0 - 1 km, e_(k+1) = 2 z_k - e_k: each level the mean of its two
        edges = [geometric[0] - 1.0]
        for level in geometric:
            edges.append(2.0 * level - edges[-1])
        values = full(np.stack(edges)) * 1e3
        data_vars[name] = (("time", "plev_half", "lat", "lon"), values, {**units, **(attrs or {})})
    ds = xr.Dataset(
        data_vars,
        coords={
            "time": np.array(["2000-01-01T00", "2000-01-01T06"], dtype="datetime64[ns]"),
            "plev": ("plev", PLEV_PA, {"units": "Pa"}),
            "lat": ("lat", LATS, {"units": "degrees_north"}),
            "lon": ("lon", LONS, {"units": "degrees_east"}),
        },
    )
    path = tmp_path / f"{name}-{kind}.nc"
    ds.to_netcdf(path)
    return path


@pytest.mark.parametrize(
    ("name", "kind", "attrs"),
    [
        ("zg", "zg", {"standard_name": "geopotential_height"}),  # CMIP, genda
        ("Z3", "zg", None),  # CESM / WACCM-X
        ("z", "geopotential", {"standard_name": "geopotential"}),  # ERA5
        ("zg", "geometric", {"standard_name": "geometric_height_at_full_level"}),  # ICON (AES)
        ("z_mc", "geometric", None),  # ICON (NWP)
        ("zghalf", "half", {"standard_name": "geometric_height_at_half_level"}),  # ICON (AES)
    ],
)
def test_heights_are_read_in_every_models_convention(tmp_path, name, kind, attrs) -> None:
    path = _synthetic_model_output(tmp_path, name, north_km=1.0, attrs=attrs, kind=kind)
    heights = level_heights_from_archive(path)
    np.testing.assert_allclose(heights.latitude, LATS)
    np.testing.assert_allclose(heights.altitude_km, pressure_to_altitude_km(PLEV_PA))
    # float32 storage of metres: millimetres
    np.testing.assert_allclose(heights.height_km, _expected_geometric_km(1.0), atol=1e-5)
    assert name in heights.source and not heights.approximate


def test_an_archive_without_heights_says_what_to_add(tmp_path, tiny_archive) -> None:
    ds = xr.open_zarr(tiny_archive).drop_vars(HEIGHT_VARIABLE)
    ds["tke"] = ds["u"].assign_attrs(units="m2 s-2", standard_name="specific_kinetic_energy")
    path = tmp_path / "old.nc"
    ds.to_netcdf(path)
    with pytest.raises(ArchiveError) as caught:
        level_heights_from_archive(path)
    message = str(caught.value)
    for text in (str(path), "zg", "Z3", "geopotential", "z_mc", "zghalf", "'T'", "add"):
        assert text in message, text


def test_heights_that_do_not_increase_are_refused(tmp_path) -> None:
    path = _synthetic_model_output(tmp_path, "zg")
    ds = xr.open_dataset(path).load()
    ds["zg"][:, 3] = ds["zg"][:, 2]
    ds.to_netcdf(tmp_path / "flat.nc")
    with pytest.raises(ArchiveError, match=r"'zg'.*increase"):
        level_heights_from_archive(tmp_path / "flat.nc")


@pytest.mark.parametrize("unit", ["m", "metres", "meters", "km", "kilometer"])
def test_heights_in_every_length_unit_open_archive_accepts(tmp_path, unit) -> None:
    """Units of heights are read from the table of :func:`genda.storage.open_archive` (one table)."""
    from genda.storage.source_conventions import UNIT_CONVERSIONS

    scale = UNIT_CONVERSIONS["geopotential_height"][unit][0]  # to m
    path = _synthetic_model_output(tmp_path, "z_mc", kind="geometric")
    with xr.open_dataset(path) as ds:
        ds = ds.load()
    ds["z_mc"] = (ds["z_mc"] / scale).assign_attrs(units=unit)
    ds.to_netcdf(tmp_path / "units.nc")
    heights = level_heights_from_archive(tmp_path / "units.nc")
    np.testing.assert_allclose(heights.height_km, _expected_geometric_km(), atol=1e-5)


# ---------------------------------------------------------------------------- ICON's native grid
def _icon_heights_file(tmp_path: Path, *, coordinates: bool = True, time: bool = False) -> Path:
    """An ICON native-grid file (tests/test_icon_native.py) carrying ``z_mc`` on the cells.

    ``z_mc = 0.95 z* + 1 km + 2 km sin(lat)``: geometric heights of the levels
    (``standard_name: geometric_height_at_full_level_center``, as ICON writes it).
    """
    ds = icon_dataset(3, coordinates=coordinates)
    _, _, centres = icosahedral_mesh(3)
    z_star = pressure_to_altitude_km(ICON_PLEV_PA)
    z_mc_km = 0.95 * z_star[:, None] + 1.0 + 2.0 * centres[None, :, 2]  # z = sin(lat)
    attrs = {
        "units": "m",
        "standard_name": "geometric_height_at_full_level_center",
        "CDI_grid_type": "unstructured",
    }
    if time:
        values = np.broadcast_to(z_mc_km * 1e3, (ds.sizes["time"], *z_mc_km.shape))
        ds["z_mc"] = (("time", "plev", "ncells"), values.astype(np.float32), attrs)
    else:
        ds["z_mc"] = (("plev", "ncells"), (z_mc_km * 1e3).astype(np.float32), attrs)
    path = tmp_path / "icon_native.nc"
    ds.to_netcdf(path)
    return path


def _icon_expected_km(heights: LevelHeights) -> np.ndarray:
    """``(L, n_lat)`` the mean over longitude of ``z_mc`` at the latitudes of ``heights`` (km)."""
    z_star = pressure_to_altitude_km(ICON_PLEV_PA)
    return 0.95 * z_star[:, None] + 1.0 + 2.0 * np.sin(np.deg2rad(heights.latitude))[None, :]


@pytest.mark.parametrize("time", [False, True])
def test_heights_are_read_from_icon_native_output(tmp_path, time) -> None:
    """``z_mc`` on ICON's cells is remapped like the fields of ``open_archive`` before averaging."""
    path = _icon_heights_file(tmp_path, time=time)
    heights = level_heights_from_archive(path)
    # the mesh's own Gaussian grid (1280 cells: 32 x 64), latitudes increasing
    assert heights.latitude.size == 32 and np.all(np.diff(heights.latitude) > 0)
    np.testing.assert_allclose(heights.altitude_km, pressure_to_altitude_km(ICON_PLEV_PA))
    # barycentric remap of a field linear in (x, y, z): errs by O(h^2) of its 2 km amplitude
    # (measured: 5 m at most, on 32 x 64 and on 8 x 16)
    np.testing.assert_allclose(heights.height_km, _icon_expected_km(heights), atol=0.01)
    assert "z_mc" in heights.source and not heights.approximate
    coarse = level_heights_from_archive(path, icon=IconRemap(target=(8, 16)))
    assert coarse.latitude.size == 8
    np.testing.assert_allclose(coarse.height_km, _icon_expected_km(coarse), atol=0.01)


def test_icon_native_heights_need_the_grid_file_without_cell_coordinates(tmp_path) -> None:
    path = _icon_heights_file(tmp_path, coordinates=False)
    with pytest.raises(ArchiveError, match=r"icon_native\.nc"):
        level_heights_from_archive(path)
    grid_file = tmp_path / "icon_grid.nc"
    icon_grid_file(3).to_netcdf(grid_file)
    heights = level_heights_from_archive(path, icon=IconRemap(grid_file=grid_file))
    np.testing.assert_allclose(heights.height_km, _icon_expected_km(heights), atol=0.01)


# ---------------------------------------------------------------------------- standard relations
def test_gravity_and_the_geopotential_geometric_relation() -> None:
    np.testing.assert_allclose(
        normal_gravity([0.0, 90.0]), [9.7803253359, 9.8321849378], rtol=1e-10
    )
    lat = np.array([-90.0, -45.0, 0.0, 30.0, 90.0])
    z = np.array([0.0, 50.0, 100.0, 120.0, 150.0])
    back = geopotential_to_geometric_km(geometric_to_geopotential_km(z, lat), lat)
    np.testing.assert_allclose(back, z, atol=1e-9)
    # geometric exceeds geopotential height where gravity is weaker (aloft, at the equator)
    at_100 = geopotential_to_geometric_km(100.0, np.array([0.0, 45.0, 90.0]))
    assert at_100[0] > at_100[1] > at_100[2] > 100.0
    # the simpler spherical relation with Re = 6371 km errs by ~0.3 km at 100 km (module docstring)
    simple = 6371.0 * 100.0 / (6371.0 - 100.0)
    np.testing.assert_allclose(simple - at_100, [-0.287, -0.009, 0.270], atol=0.002)


def test_standard_atmosphere_reproduces_the_1976_tables() -> None:
    height, pressure = standard_pressure()
    # NOAA-S/T 76-1562, Table I (below 86 km) and p = n k T of Table VIII (above)
    table = {
        20.0: 5529.3,
        50.0: 79.779,
        70.0: 5.2209,
        80.0: 1.0524,
        86.0: 0.37338,
        90.0: 0.18359,
        100.0: 0.032011,
        110.0: 0.0071042,
        120.0: 0.0025382,
        150.0: 4.5422e-4,
        200.0: 8.4736e-5,
    }
    for z, p in table.items():
        tolerance = 2e-4 if z <= 86.0 else 1e-2  # not quite hydrostatic above 86 km
        assert np.interp(z, height, pressure) == pytest.approx(p, rel=tolerance), z
    np.testing.assert_allclose(
        standard_temperature(np.array([0.0, 11.019, 50.0, 90.0, 100.0, 110.0, 120.0, 500.0])),
        [288.15, 216.65, 270.65, 186.87, 195.08, 240.0, 360.0, 999.24],
        atol=0.02,
    )


def test_approximation_is_documented_and_covers_the_model_heights(tiny_archive) -> None:
    approx = approximate_level_heights()
    assert approx.approximate and approx.latitude is None
    assert "US Standard Atmosphere 1976" in approx.source
    assert f"{APPROXIMATE_ERROR_KM:.0f} km" in approx.source
    model = level_heights_from_archive(tiny_archive)
    approx_there = np.interp(model.altitude_km, approx.altitude_km, approx.height_km)
    difference = approx_there[:, None] - model.height_km
    print(
        "approximation - model (km) at",
        model.altitude_km,
        ":",
        np.round(difference.min(1), 2),
        "to",
        np.round(difference.max(1), 2),
    )
    # the error the source warns of covers the model's own heights (measured: 2.7 to 4.5 km)
    assert np.abs(difference).max() <= APPROXIMATE_ERROR_KM


def test_the_docs_state_the_approximations_error() -> None:
    """Every place docs/observations.md gives the approximation's error gives APPROXIMATE_ERROR_KM."""
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "observations.md").read_text()
    instrument_files = text.split("## Instrument files", 1)[1].split("\n## ", 1)[0]
    stated = re.findall(r"errors?\s+of\s+up\s+to\s+about\s+(\d+(?:\.\d+)?)\s+km", instrument_files)
    assert stated == [f"{APPROXIMATE_ERROR_KM:.0f}"], stated
    assert "75-120 km" in instrument_files


# ---------------------------------------------------------------------------- placing heights
def _heights() -> LevelHeights:
    return LevelHeights(
        np.array([80.0, 90.0, 100.0]),
        np.array([[78.0, 79.0], [87.0, 89.0], [97.0, 99.0]]),
        np.array([-30.0, 30.0]),
        "test profile",
        approximate=False,
    )


def test_round_trip_and_interpolation_between_levels_and_latitudes() -> None:
    heights = _heights()
    # at the levels themselves, at each profile's latitude and beyond the outermost
    np.testing.assert_allclose(
        geometric_to_log_pressure(np.array([78.0, 87.0, 97.0]), -30.0, heights), [80, 90, 100]
    )
    np.testing.assert_allclose(
        geometric_to_log_pressure(np.array([79.0, 89.0, 99.0]), 85.0, heights), [80, 90, 100]
    )
    # halfway in height and in latitude: the level heights at the equator are 78.5, 88, 98
    assert float(geometric_to_log_pressure(83.25, 0.0, heights)) == pytest.approx(85.0)
    # round trip: alt -> height (interpolating the profile) -> alt
    alt = np.linspace(80.0, 100.0, 41)
    lat = np.linspace(-40.0, 40.0, 41)
    columns = heights.columns(lat)
    height = np.array(
        [np.interp(a, heights.altitude_km, c) for a, c in zip(alt, columns, strict=True)]
    )
    np.testing.assert_allclose(geometric_to_log_pressure(height, lat, heights), alt, atol=1e-12)
    # broadcasting: one latitude for many heights, shapes kept
    assert geometric_to_log_pressure(np.full((2, 3), 90.0), 0.0, heights).shape == (2, 3)


def test_bad_heights_and_latitudes_are_named() -> None:
    heights = _heights()
    with pytest.raises(ObservationError, match=r"value 1: height nan"):
        geometric_to_log_pressure(np.array([85.0, np.nan]), 0.0, heights)
    with pytest.raises(ObservationError, match=r"lat 95"):
        geometric_to_log_pressure(85.0, 95.0, heights)
    with pytest.raises(
        ObservationError, match=r"value 0: 120 km.*78\.50 to 98\.00 km.*test profile"
    ):
        geometric_to_log_pressure(np.array([120.0, 85.0]), 0.0, heights)
    with pytest.raises(ObservationError, match="outside"):
        geometric_to_log_pressure(77.0, 0.0, heights)


def test_placing_replaces_height_by_altitude_and_leaves_the_rest(tmp_path) -> None:
    heights = _heights()
    table = pd.DataFrame(
        {
            "lat": [0.0, 0.0, 30.0],
            "height_km": [83.25, np.nan, 99.0],
            "alt_km": [np.nan, 95.0, np.nan],
            "value": [1.0, 2.0, 3.0],
        }
    )
    table.attrs["origin"] = "radar"
    before = table.copy(deep=True)
    placed = place_geometric_heights(table, heights)
    pd.testing.assert_frame_equal(table, before)  # never modifies its input
    assert table.attrs == {"origin": "radar"}
    assert "height_km" not in placed.columns
    np.testing.assert_allclose(placed["alt_km"], [85.0, 95.0, 100.0])
    np.testing.assert_array_equal(placed["value"], [1.0, 2.0, 3.0])
    assert placed.attrs[HEIGHTS_ATTR] == "test profile" and placed.attrs["origin"] == "radar"
    # without alt_km the column takes height_km's place; without height_km nothing changes
    alone = place_geometric_heights(table.drop(columns="alt_km").iloc[[0, 2]], heights)
    assert list(alone.columns) == ["lat", "alt_km", "value"]
    unchanged = place_geometric_heights(table.drop(columns="height_km"), heights)
    pd.testing.assert_frame_equal(unchanged, table.drop(columns="height_km"))
    assert HEIGHTS_ATTR not in unchanged.attrs


def test_placing_names_the_bad_rows() -> None:
    heights = _heights()
    table = pd.DataFrame({"lat": [0.0, 0.0, 0.0], "height_km": [85.0, np.nan, 150.0]})
    with pytest.raises(ObservationError, match=r"row 2: 150 km") as caught:
        place_geometric_heights(table, heights)
    assert caught.value.problems == ("row 2",)
    with pytest.raises(ObservationError, match=r"not a number in rows \[1\]"):
        place_geometric_heights(
            pd.DataFrame({"lat": [0.0, 0.0], "height_km": [85.0, "high"]}), heights
        )
    with pytest.raises(ObservationError, match=r"row 0.*lat nan"):
        place_geometric_heights(pd.DataFrame({"lat": [np.nan], "height_km": [85.0]}), heights)
    with pytest.raises(ObservationError, match="'lat'"):
        place_geometric_heights(pd.DataFrame({"height_km": [85.0]}), heights)
    with pytest.raises(InvalidTypeError):
        place_geometric_heights([85.0], heights)  # type: ignore[arg-type]
