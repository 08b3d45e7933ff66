"""Open genda archives and other models' output in genda's conventions.

:func:`open_archive` reads a Zarr store (a directory) or a NetCDF file lazily
(dask) and returns a Dataset that looks like one written by
:func:`genda.storage.write_archive`, whatever the source called things:

========================  ===================================================
genda                     accepted in the source
========================  ===================================================
``latitude`` (deg N,      ``latitude``, ``lat``, ``nav_lat`` (1-D, or 2-D but
north to south)           constant along x), ``standard_name=latitude``,
                          ``units=degrees_north``
``longitude`` (deg E in   ``longitude``, ``lon``, ``nav_lon``,
[0, 360), increasing)     ``standard_name=longitude``, ``units=degrees_east``
``altitude`` (km of       exact: pressures ``plev``, ``lev``, ``level``,
log-pressure altitude,    ``pressure``... in Pa, hPa, mbar
increasing)               (:func:`genda.constants.pressure_to_altitude_km`);
                          genda's own ``altitude``; CF
                          ``atmosphere_ln_pressure_coordinate``; heights with a
                          1-D pressure of each level.
                          Interpolated per column (linear in ln p): geometric
                          or geopotential heights (``height``, ``z``,
                          ``z_mc``, ``zg``, ``Z3``... in m, km) with the
                          pressure of every point (``pres``, ``pfull``,
                          ``air_pressure``, ``PMID``, or
                          ``standard_name=air_pressure``); hybrid
                          sigma-pressure ``lev`` with ``hyam``, ``hybm``,
                          ``P0`` (or ``p0``), ``PS`` (or ``formula_terms``)
``time``                  ``time``, ``valid_time``, ``Time``, ``axis=T``
``u`` (m s-1)             ``u``, ``ua``, ``U``, ``eastward_wind``, ``uwnd``
``v`` (m s-1)             ``v``, ``va``, ``V``, ``northward_wind``, ``vwnd``
``T`` (K)                 ``T``, ``ta``, ``temperature``, ``air_temperature``,
                          degC converted to K
========================  ===================================================

Variables are also found by their ``standard_name`` attribute.
``altitude.attrs["genda_source_coordinate"]`` says what the source had. The
result's coordinates are :meth:`genda.grid.Grid.coords`: the three axes and the
vertical's CF auxiliaries ``lev``, ``air_pressure`` and ``p0``.

Vertical: genda's levels are log-pressure altitude ``z* = H ln(p0/p)``
(:mod:`genda.constants`). Heights are not: between 50 and 120 km they differ
from it by several km, a level or more, so heights without the model's
pressure are refused (naming what is missing) rather than taken as ``z*``.
Where the levels' pressure varies by column (heights with pressure, hybrid
sigma-pressure levels ``p = hyam P0 + hybm PS``), every column is
interpolated linearly in ``z*`` (:mod:`genda.storage.vertical_interpolation`)
to fixed levels: ``levels_km`` if given, else the grid's levels when
regridding, else a typical altitude of each source level (hybrid: at the
reference surface pressure ``P0``; heights: the mean over all columns), kept
only where every column has data. genda archives hold no NaN and nothing is
extrapolated, so levels must lie within the range all columns share.
Choosing the levels reads the pressure once (hybrid: only ``PS``) when the
archive is opened.

Time: the result always has a ``time`` dimension, first, so that downstream
code has one path (``ds.isel(time=i)`` is one field ``(altitude, latitude,
longitude)``). A scalar time coordinate becomes a length-1 ``time``; a source
without any time gets a length-1 ``time`` dimension without coordinate values.

Data variables are float32 (the archives' type) with CF attributes from
:data:`genda.grid.VARIABLES`; other attributes (e.g. normalisation statistics)
are kept. Everything that goes wrong raises :class:`ArchiveError` naming the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from genda.grid import DEFAULT_VARIABLES, VARIABLES_ATTR, Grid, lookup_variable
from genda.normalization import MEAN_ATTR, STD_ATTR
from genda.storage.damage import naming_reads
from genda.storage.errors import ArchiveError
from genda.storage.icon_native import IconRemap, is_icon_native, remap_icon_native
from genda.storage.source_conventions import (
    LATITUDE_NAMES,
    LONGITUDE_NAMES,
    UNIT_CONVERSIONS,
    VARIABLE_ALIASES,
    Axis,
    VerticalSource,
    check_monotonic,
    check_unique,
    find_horizontal,
    find_time,
    find_vertical,
    units_of,
)
from genda.storage.vertical_interpolation import (
    ColumnLevels,
    column_levels_from_altitude,
    column_levels_from_hybrid,
    log_pressure_altitude,
    target_levels,
    to_levels,
)
from genda.units import canonical_units

NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf", ".h5", ".hdf5")

LEVEL_TOLERANCE_KM = 1e-3
"""How far (km) requested levels may reach beyond the range all columns share (round-off);
the edge value is used there. The same as regridding's altitude tolerance."""
_SOURCE_LEVEL = "_source_level"
"""Dimension name of the source's levels while they are interpolated to ``altitude``."""

# Encoding-related attributes that describe the file, not the decoded values.
_DROP_ATTRS = (
    "_FillValue",
    "missing_value",
    "scale_factor",
    "add_offset",
    "valid_range",
    "valid_min",
    "valid_max",
)


# ---------------------------------------------------------------------------- opening
def open_raw(path: str | os.PathLike[str]) -> xr.Dataset:
    """Open a Zarr directory or NetCDF file lazily (dask), without any renaming.

    Chunks follow the file's own chunks (``chunks={}``). A Zarr chunk file that
    cannot be decoded raises :class:`~genda.storage.damage.DamagedFileError`
    (an :class:`ArchiveError`) naming it, whenever it is read.
    """
    path = Path(path)
    if not path.exists():
        raise ArchiveError(f"{path}: no such file or directory")
    if path.is_dir():
        # Opened so that a chunk file that cannot be decoded, read now or later
        # (lazily), is named (genda.storage.damage) instead of failing in a codec.
        try:
            with naming_reads():
                return xr.open_dataset(path, engine="zarr", chunks={})
        except ArchiveError:
            raise
        except Exception as error:
            raise ArchiveError(f"{path}: cannot open as a Zarr store: {error}") from error
    if path.suffix.lower() not in NETCDF_SUFFIXES:
        raise ArchiveError(
            f"{path}: unknown format; expected a Zarr directory or a NetCDF file ({', '.join(NETCDF_SUFFIXES)})"
        )
    errors = []
    for engine in ("netcdf4", "h5netcdf"):  # h5netcdf reads NetCDF-4 files where netCDF4 is missing
        try:
            return xr.open_dataset(path, engine=engine, chunks={})
        except Exception as error:
            errors.append(f"{engine}: {error}")
    raise ArchiveError(f"{path}: cannot open as NetCDF ({'; '.join(errors)})")


# ---------------------------------------------------------------------------- variables
def _find_variable(ds: xr.Dataset, name: str) -> Hashable | None:
    aliases = VARIABLE_ALIASES.get(name, (name,))
    for alias in aliases:
        if alias in ds.data_vars:
            return alias
    standard_name = lookup_variable(name).standard_name
    for key, var in ds.data_vars.items():
        if var.attrs.get("standard_name") == standard_name:
            return key
    return None


def _conversion(ds: xr.Dataset, src: Hashable, name: str, source: str) -> tuple[float, float]:
    raw = units_of(ds[src])
    target = lookup_variable(name).units
    if raw is None:
        raise ArchiveError(
            f"{source}: variable {src!r} ({name}) has no 'units' attribute; expected {target!r}"
        )
    table = UNIT_CONVERSIONS.get(name, {canonical_units(target): (1.0, 0.0)})
    try:
        return table[canonical_units(raw)]
    except KeyError:
        known = sorted({k for k in table if " " in k or "/" in k or len(k) <= 2})
        raise ArchiveError(
            f"{source}: variable {src!r} ({name}) has unknown units {raw!r}; "
            f"expected {target!r} or one of {known}"
        ) from None


def _check_not_all_nan(da: xr.DataArray, name: Hashable, source: str) -> None:
    """Error if a variable holds no finite value.

    Only the first field is read; a full pass happens only if that one is all NaN.
    """
    first = da.isel(time=0) if "time" in da.dims and da.sizes["time"] > 0 else da
    if bool(first.notnull().any()):
        return
    if not bool(da.notnull().any()):
        raise ArchiveError(f"{source}: variable {name!r} contains only missing values (NaN)")


# ---------------------------------------------------------------------------- conversion steps
@dataclass(frozen=True)
class _Coordinates:
    """The source's coordinates, found and checked, with their values in genda's units."""

    lat: Axis
    lon: Axis
    vertical: VerticalSource
    latitude: np.ndarray
    longitude: np.ndarray
    altitude: np.ndarray  # the result's levels (km)
    vertical_source: str
    time_name: Hashable | None
    dim_map: dict[Hashable, str]  # source dimension -> genda dimension
    lat_increasing: bool
    alt_increasing: bool
    columns: ColumnLevels | None  # the source points' log-pressure altitude, when interpolated


def _find_variables(ds: xr.Dataset, wanted: Sequence[str], source: str) -> dict[str, Hashable]:
    """genda name -> source variable of each wanted variable; an error if any is missing."""
    for name in wanted:
        lookup_variable(name)  # an unknown genda name is the caller's error, not the file's
    found = {name: _find_variable(ds, name) for name in wanted}
    missing = [name for name, src in found.items() if src is None]
    if missing:
        tried = "; ".join(f"{m}: {', '.join(VARIABLE_ALIASES.get(m, (m,)))}" for m in missing)
        raise ArchiveError(
            f"{source}: missing variable(s) {missing} (looked for {tried}, or by standard_name); "
            f"data variables present: {sorted(map(str, ds.data_vars))}"
        )
    return found


def _horizontal_values(lat: Axis, lon: Axis, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Latitude and longitude (modulo 360) as float64; an error if out of range or missing."""
    latitude = lat.values.astype(np.float64)
    longitude = np.mod(lon.values.astype(np.float64), 360.0)
    if np.any(~np.isfinite(latitude)) or np.any(np.abs(latitude) > 90.0):
        raise ArchiveError(
            f"{source}: latitude {lat.name!r} has values outside [-90, 90] or missing"
        )
    if np.any(~np.isfinite(longitude)):
        raise ArchiveError(f"{source}: longitude {lon.name!r} has missing values")
    return latitude, longitude


def _in_genda_dims(
    da: xr.DataArray, dim_map: dict[Hashable, str], what: str, source: str
) -> xr.DataArray:
    """``da`` with genda's dimension names, extra length-1 dimensions dropped; an error for longer ones."""
    extra = [d for d in da.dims if d not in dim_map]
    for dim in extra:
        if da.sizes[dim] != 1:
            raise ArchiveError(
                f"{source}: {what} has an extra dimension {dim!r} of size {da.sizes[dim]}"
            )
    da = da.isel({d: 0 for d in extra})
    # Data only: the source's coordinates (in the source's order) must not meet genda's.
    return xr.DataArray(da.data, dims=[dim_map[d] for d in da.dims], attrs=da.attrs)


def _column_levels(
    vertical: VerticalSource, dim_map: dict[Hashable, str], source: str
) -> ColumnLevels:
    """The log-pressure altitude of every source point (dims renamed), with the range they share."""
    what = f"{source}: {vertical.description}"
    if vertical.hybrid is not None:
        hybrid = vertical.hybrid
        ps = _in_genda_dims(hybrid.ps, dim_map, "surface pressure", source)
        return column_levels_from_hybrid(replace(hybrid, ps=ps, dim=_SOURCE_LEVEL), what)
    if vertical.pressure is not None:
        pressure = _in_genda_dims(vertical.pressure, dim_map, "pressure", source)
        altitude = log_pressure_altitude(pressure)
        typical = "the mean log-pressure altitude of each source level over all columns"
    else:
        altitude = xr.DataArray(vertical.altitude_km, dims=[_SOURCE_LEVEL])
        typical = "the source's levels"
    return column_levels_from_altitude(altitude, _SOURCE_LEVEL, typical, what)


def _find_coordinates(
    ds: xr.Dataset,
    source: str,
    levels_km: Sequence[float] | np.ndarray | None = None,
    fallback_levels_km: np.ndarray | None = None,
) -> _Coordinates:
    """Find latitude, longitude, the vertical and time; check the values are a regular grid.

    The result's levels are the source's where they have one pressure each
    and no ``levels_km`` is given; otherwise the source is interpolated per
    column to ``levels_km``, else ``fallback_levels_km``, else typical levels
    (:func:`~genda.storage.vertical_interpolation.target_levels`).
    """
    lat = find_horizontal(
        ds, "latitude", LATITUDE_NAMES, ("degrees_north", "degree_north", "degrees_n"), source
    )
    lon = find_horizontal(
        ds, "longitude", LONGITUDE_NAMES, ("degrees_east", "degree_east", "degrees_e"), source
    )
    if lat.dim == lon.dim:
        raise ArchiveError(
            f"{source}: latitude and longitude share dimension {lat.dim!r} (an unstructured grid); "
            "open_archive remaps ICON native output (clon/clat, or a grid file: "
            "icon=IconRemap(grid_file=...), --icon-grid), other grids need remapping to a regular "
            "latitude-longitude grid first (e.g. cdo remapbil)"
        )
    time_name, time_dim = find_time(ds)
    vertical = find_vertical(ds, source, (lat.dim, lon.dim, time_dim))
    vertical_source = vertical.description
    latitude, longitude = _horizontal_values(lat, lon, source)
    check_unique(latitude, "latitude", source)
    check_unique(longitude, "longitude (modulo 360)", source)
    lat_increasing = check_monotonic(latitude, "latitude", source)
    exact_increasing = True
    if vertical.altitude_km is not None:
        check_unique(vertical.altitude_km, f"altitude (from {vertical_source})", source)
        exact_increasing = check_monotonic(
            vertical.altitude_km, f"altitude (from {vertical_source})", source
        )
    dim_map: dict[Hashable, str] = {lat.dim: "latitude", lon.dim: "longitude"}
    if time_dim is not None:
        dim_map[time_dim] = "time"
    columns = None
    if vertical.altitude_km is not None and levels_km is None:
        altitude, alt_increasing = vertical.altitude_km, exact_increasing
        dim_map[vertical.dim] = "altitude"
    else:
        dim_map[vertical.dim] = _SOURCE_LEVEL
        columns = _column_levels(vertical, dim_map, source)
        wanted = levels_km if levels_km is not None else fallback_levels_km
        altitude = target_levels(
            columns, wanted, f"{source}: {vertical_source}", LEVEL_TOLERANCE_KM
        )
        alt_increasing = True
        vertical_source += (
            "; interpolated per column, linearly in log-pressure, to "
            + ("the levels asked for" if wanted is not None else columns.typical)
            + f" within the range every column covers, [{columns.low_km:.4g}, {columns.high_km:.4g}] km"
        )
    return _Coordinates(
        lat,
        lon,
        vertical,
        latitude,
        longitude,
        altitude,
        vertical_source,
        time_name,
        dim_map,
        lat_increasing,
        alt_increasing,
        columns,
    )


def _squeezed(
    var: xr.Variable, src: Hashable, name: str, coords: _Coordinates, source: str
) -> xr.Variable:
    """``var`` without its extra length-1 dimensions; an error if it lacks one or has a longer one."""
    dim_map = coords.dim_map
    lacking = [new for dim, new in dim_map.items() if dim not in var.dims and new != "time"]
    if lacking:
        raise ArchiveError(
            f"{source}: variable {src!r} ({name}) has dims {var.dims}, lacking {lacking} "
            f"(coordinates found: {coords.lat.name!r}, {coords.lon.name!r}, {coords.vertical.name!r})"
        )
    extra = [d for d in var.dims if d not in dim_map]
    for dim in extra:
        if var.sizes[dim] != 1:
            raise ArchiveError(
                f"{source}: variable {src!r} ({name}) has an extra dimension {dim!r} of size "
                f"{var.sizes[dim]}; select one entry first (ds.isel({dim}=...))"
            )
    return var.isel({d: 0 for d in extra}) if extra else var


def _converted_attrs(
    var: xr.Variable, src: Hashable, name: str, scale: float, offset: float
) -> dict[Hashable, Any]:
    """The variable's attributes in genda's conventions, noting the source's name and units."""
    attrs = {k: v for k, v in var.attrs.items() if k not in _DROP_ATTRS}
    if scale != 1.0 or offset != 0.0:
        # Stored statistics would be in the source's units.
        attrs.pop(MEAN_ATTR, None)
        attrs.pop(STD_ATTR, None)
    attrs.update(lookup_variable(name).cf_attrs())
    if str(src) != name:
        attrs["original_name"] = str(src)
    if units_of(var) != attrs["units"]:
        attrs["original_units"] = units_of(var)
    return attrs


def _converted_variable(
    ds: xr.Dataset, src: Hashable, name: str, coords: _Coordinates, source: str
) -> xr.Variable:
    """Source variable ``src`` as genda variable ``name``: genda dims and units, float32."""
    var = _squeezed(ds[src].variable, src, name, coords, source)
    scale, offset = _conversion(ds, src, name, source)
    data = var.data
    if scale != 1.0 or offset != 0.0:
        data = data.astype(np.float64) * scale + offset  # float32 would round 20.5 + 273.15
    attrs = _converted_attrs(var, src, name, scale, offset)
    dims = tuple(coords.dim_map[d] for d in var.dims)
    converted = xr.Variable(dims, data.astype(np.float32), attrs)
    if coords.columns is None:
        return converted
    # Statistics per source level do not describe the new levels.
    attrs = {k: v for k, v in attrs.items() if k not in (MEAN_ATTR, STD_ATTR)}
    field = to_levels(xr.DataArray(converted), coords.columns, coords.altitude)
    return xr.Variable(field.dims, field.data.astype(np.float32), attrs)


def _output_coords(ds: xr.Dataset, coords: _Coordinates, source: str) -> dict[str, Any]:
    """The result's coordinates, with the source's time (checked unique) when it has one."""
    out: dict[str, Any] = {
        "latitude": ("latitude", coords.latitude),
        "longitude": ("longitude", coords.longitude),
        "altitude": ("altitude", coords.altitude),
    }
    time_name = coords.time_name
    if time_name is not None:
        times = np.atleast_1d(np.asarray(ds[time_name].values))
        check_unique(times, "time", source)
        # Keep how time was encoded (units, calendar), not the source's storage layout
        # (chunks, compressors), which would clash when the result is written elsewhere.
        encoding = {
            k: v for k, v in ds[time_name].encoding.items() if k in ("units", "calendar", "dtype")
        }
        out["time"] = xr.Variable("time", times, ds[time_name].attrs, encoding=encoding)
    return out


def _reoriented(out: xr.Dataset, coords: _Coordinates) -> xr.Dataset:
    """Latitude north to south, longitude increasing from 0, altitude upward."""
    if coords.lat_increasing and coords.latitude.size > 1:
        out = out.isel(latitude=slice(None, None, -1))
    if not coords.alt_increasing:
        out = out.isel(altitude=slice(None, None, -1))
    order = np.argsort(coords.longitude, kind="stable")
    if np.any(order != np.arange(order.size)):
        out = out.isel(longitude=order)
    return out


def _with_coordinate_attrs(
    out: xr.Dataset, wanted: Sequence[str], vertical_source: str
) -> xr.Dataset:
    """``out`` with genda's CF coordinates (and the vertical's auxiliaries), noting the source's vertical."""
    template = Grid(
        out["latitude"].values, out["longitude"].values, out["altitude"].values, wanted, "irregular"
    )
    out = out.assign_coords(template.coords())
    out["altitude"].attrs["genda_source_coordinate"] = vertical_source
    if "time" in out.coords:
        out["time"].attrs.setdefault("standard_name", "time")
        out["time"].attrs.setdefault("axis", "T")
    return out


# ---------------------------------------------------------------------------- public
def to_genda_conventions(
    ds: xr.Dataset,
    variables: Sequence[str] | None = None,
    source: str = "dataset",
    levels_km: Sequence[float] | np.ndarray | None = None,
) -> xr.Dataset:
    """Rename, convert and reorder an open Dataset to genda's conventions (lazy).

    Args:
        ds: the source, as opened (e.g. :func:`open_raw`).
        variables: genda variable names to return, in this order; default u, v, T.
        source: name used in error messages (the file).
        levels_km: log-pressure altitudes (km, increasing) to interpolate every
            column to; default: the source's own levels where they have one
            pressure each, else typical levels (module docstring).

    Returns:
        Dataset with data variables ``(time, altitude, latitude, longitude)``
        float32 in genda units, coordinates as :meth:`genda.grid.Grid.coords`
        (latitude north to south, longitude in [0, 360) increasing, altitude
        in km increasing) and ``time``. See the module docstring for the rules.
    """
    return _to_genda(ds, variables, source, levels_km, None)


def _to_genda(
    ds: xr.Dataset,
    variables: Sequence[str] | None,
    source: str,
    levels_km: Sequence[float] | np.ndarray | None,
    fallback_levels_km: np.ndarray | None,
) -> xr.Dataset:
    """:func:`to_genda_conventions`, with levels for sources that must be interpolated anyway."""
    wanted = tuple(variables) if variables is not None else DEFAULT_VARIABLES
    found = _find_variables(ds, wanted, source)
    coords = _find_coordinates(ds, source, levels_km, fallback_levels_km)
    data_vars = {
        name: _converted_variable(ds, found[name], name, coords, source) for name in wanted
    }
    out = xr.Dataset(
        data_vars,
        attrs={**ds.attrs, "genda_source": source, VARIABLES_ATTR: json.dumps(list(wanted))},
    )
    if "time" not in out.dims:
        out = out.expand_dims("time")
    out = out.assign_coords(_output_coords(ds, coords, source))
    out = _reoriented(out, coords)
    out = _with_coordinate_attrs(out, wanted, coords.vertical_source)
    out = out.transpose("time", "altitude", "latitude", "longitude")
    for name in wanted:
        _check_not_all_nan(out[name], found[name], source)
    return out


def open_archive(
    path: str | os.PathLike[str] | xr.Dataset,
    grid: Grid | None = None,
    variables: Sequence[str] | None = None,
    icon: IconRemap | None = None,
    levels_km: Sequence[float] | np.ndarray | None = None,
) -> xr.Dataset:
    """Open a genda archive or other model output lazily, in genda's conventions.

    Args:
        path: a Zarr store (directory), a NetCDF file, or an already open Dataset.
        grid: regrid to this grid (:func:`genda.storage.regrid.regrid`: linear
            in latitude and altitude, periodic-linear in longitude); errors if
            the grid reaches beyond the source's latitude/altitude range.
        variables: genda names to return, in order; default ``grid.variables``
            with a grid, else u, v, T. All must be present.
        icon: for output on ICON's native grid, which is recognised and
            remapped to ``grid``'s latitudes and longitudes (or a Gaussian grid)
            first: the grid file, target and method
            (:func:`genda.storage.icon_native.remap_icon_native`).
        levels_km: log-pressure altitudes (km, increasing) to interpolate each
            column to (linear in log-pressure), within the range all columns
            share. Default: the source's levels where each has one pressure;
            for sources whose levels' pressure varies by column (heights with
            pressure, hybrid sigma-pressure), the grid's levels when ``grid``
            is given, else typical levels (module docstring).

    Returns:
        Dataset ``(time, altitude, latitude, longitude)`` backed by dask (see
        the module docstring for the conventions and the time dimension).

    Raises:
        ArchiveError: naming the file and what is missing or inconsistent.
    """
    if isinstance(path, xr.Dataset):
        raw, source = path, str(path.encoding.get("source", "dataset"))
    else:
        raw, source = open_raw(path), str(path)
    if icon is not None or is_icon_native(raw):
        raw = remap_icon_native(raw, icon, grid, source)
    if variables is None and grid is not None:
        variables = grid.variables
    fallback = np.asarray(grid.altitude) if grid is not None else None
    ds = _to_genda(raw, variables, source, levels_km, fallback)
    if grid is not None:
        from genda.storage.regrid import regrid

        ds = regrid(ds, grid, source=source)
    return ds
