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
``altitude`` (km,         heights ``altitude``, ``alt``, ``height``, ``z``,
increasing)               ``zg``... in m or km; pressures ``plev``, ``lev``,
                          ``level``, ``pressure``... in Pa, hPa, mbar
                          (converted to log-pressure altitude,
                          :func:`genda.constants.pressure_to_altitude_km`)
``time``                  ``time``, ``valid_time``, ``Time``, ``axis=T``
``u`` (m s-1)             ``u``, ``ua``, ``U``, ``eastward_wind``, ``uwnd``
``v`` (m s-1)             ``v``, ``va``, ``V``, ``northward_wind``, ``vwnd``
``T`` (K)                 ``T``, ``ta``, ``temperature``, ``air_temperature``,
                          degC converted to K
========================  ===================================================

Variables are also found by their ``standard_name`` attribute. Heights (m, km)
are taken as log-pressure altitude: the two agree within a few km between 50
and 120 km (:mod:`genda.constants`); ``altitude.attrs["genda_source_coordinate"]``
says what the source had.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from genda.constants import pressure_to_altitude_km
from genda.grid import DEFAULT_VARIABLES, VARIABLES_ATTR, Grid, lookup_variable
from genda.normalization import MEAN_ATTR, STD_ATTR
from genda.storage.damage import naming_reads
from genda.storage.errors import ArchiveError
from genda.units import canonical_units

NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf", ".h5", ".hdf5")

# ---------------------------------------------------------------------------- name tables
VARIABLE_ALIASES: dict[str, tuple[str, ...]] = {
    "u": ("u", "ua", "U", "eastward_wind", "uwnd", "UA"),
    "v": ("v", "va", "V", "northward_wind", "vwnd", "VA"),
    "T": ("T", "ta", "temperature", "air_temperature", "temp", "TA"),
    "w": ("w", "wa", "W", "upward_air_velocity", "WA"),
    "geopotential_height": ("geopotential_height", "zg", "ZG", "gph"),
}
"""Source names tried, in order, for each genda variable (then its ``standard_name``)."""

LATITUDE_NAMES = ("latitude", "lat", "nav_lat", "Latitude", "LAT", "lats")
LONGITUDE_NAMES = ("longitude", "lon", "nav_lon", "Longitude", "LON", "lons")
HEIGHT_NAMES = (
    "altitude",
    "alt",
    "height",
    "z",
    "zg",
    "geometric_height",
    "geopotential_height",
    "zalt",
)
PRESSURE_NAMES = (
    "plev",
    "lev",
    "level",
    "pressure",
    "pres",
    "pfull",
    "isobaricInhPa",
    "air_pressure",
)
TIME_NAMES = ("time", "valid_time", "Time", "t")


_SPEED = {"m s-1": 1.0, "m/s": 1.0, "m.s-1": 1.0, "ms-1": 1.0, "m/sec": 1.0, "m sec-1": 1.0}
_SPEED.update({f"{m} second-1": 1.0 for m in ("meter", "meters", "metre", "metres")})
_SPEED.update({f"{m}/second": 1.0 for m in ("meter", "meters", "metre", "metres")})
_SPEED.update({"cm s-1": 0.01, "cm/s": 0.01})
_LENGTH_M = {"m": 1.0, "meter": 1.0, "meters": 1.0, "metre": 1.0, "metres": 1.0, "gpm": 1.0}
_LENGTH_M.update({"km": 1000.0, "kilometer": 1000.0, "kilometers": 1000.0, "kilometre": 1000.0})
_PRESSURE_PA = {"pa": 1.0, "pascal": 1.0, "pascals": 1.0, "kpa": 1000.0}
_PRESSURE_PA.update({u: 100.0 for u in ("hpa", "mbar", "mbars", "millibar", "millibars", "mb")})
_KELVIN = {
    u: 0.0 for u in ("k", "kelvin", "degk", "deg_k", "degrees_k", "degree_k", "degrees kelvin")
}
_KELVIN.update(
    {
        u: 273.15
        for u in (
            *("degc", "deg_c", "degrees_c", "degree_c", "celsius", "degree_celsius"),
            *("degrees_celsius", "degrees celsius", "°c", "c"),
        )
    }
)

# (scale, offset) to genda's units, per genda variable, by canonical source unit.
_UNIT_CONVERSIONS: dict[str, dict[str, tuple[float, float]]] = {
    "u": {k: (f, 0.0) for k, f in _SPEED.items()},
    "v": {k: (f, 0.0) for k, f in _SPEED.items()},
    "w": {k: (f, 0.0) for k, f in _SPEED.items()},
    "T": {k: (1.0, off) for k, off in _KELVIN.items()},
    "geopotential_height": {k: (f, 0.0) for k, f in _LENGTH_M.items()},
}

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


# ---------------------------------------------------------------------------- coordinates
@dataclass(frozen=True)
class _Axis:
    """A coordinate found in the source: its variable name, its dimension, 1-D values."""

    name: Hashable
    dim: Hashable
    values: np.ndarray
    attrs: dict[str, Any]


def _units(var: xr.Variable | xr.DataArray) -> str | None:
    units = var.attrs.get("units")
    return str(units) if units is not None else None


def _as_axis(ds: xr.Dataset, name: Hashable, what: str, source: str) -> _Axis:
    """The 1-D axis of coordinate ``name``; a 2-D one must be constant along one dimension."""
    var = ds[name].variable
    if var.ndim == 1:
        return _Axis(name, var.dims[0], np.asarray(var.values), dict(var.attrs))
    if var.ndim == 2:
        # NEMO-style nav_lat(y, x) on a regular grid: constant along x.
        values = np.asarray(var.values)
        if np.allclose(values, values[:, :1], equal_nan=True):
            return _Axis(name, var.dims[0], values[:, 0], dict(var.attrs))
        if np.allclose(values, values[:1, :], equal_nan=True):
            return _Axis(name, var.dims[1], values[0, :], dict(var.attrs))
    raise ArchiveError(
        f"{source}: {what} coordinate {name!r} has dims {var.dims} and is not a regular grid axis; "
        "remap to a regular latitude-longitude grid first (e.g. cdo remapbil)"
    )


def _find_horizontal(
    ds: xr.Dataset, what: str, names: Sequence[str], units: Sequence[str], source: str
) -> _Axis:
    for name in names:
        if name in ds.variables and ds[name].ndim >= 1:
            return _as_axis(ds, name, what, source)
    for name, var in ds.variables.items():
        unit = canonical_units(_units(var) or "")
        if var.ndim >= 1 and (var.attrs.get("standard_name") == what or unit in units):
            return _as_axis(ds, name, what, source)
    raise ArchiveError(
        f"{source}: no {what} coordinate (looked for {', '.join(names)} or standard_name={what!r}); "
        f"variables and coordinates present: {sorted(map(str, ds.variables))}"
    )


def _find_vertical(ds: xr.Dataset, source: str) -> tuple[_Axis, np.ndarray, str]:
    """The vertical axis and its values converted to altitude in km.

    Returns ``(axis, altitude_km, description)``; the description (e.g.
    ``"plev (hPa)"``) goes into the altitude's attributes.
    """
    candidates: list[Hashable] = [n for n in (*HEIGHT_NAMES, *PRESSURE_NAMES) if n in ds.variables]
    for name, var in ds.variables.items():
        if name not in candidates and (
            var.attrs.get("standard_name") in ("altitude", "height", "air_pressure")
            or var.attrs.get("axis") == "Z"
        ):
            candidates.append(name)
    # A vertical coordinate is 1-D along a dimension of the data, not a 4-D field like zg(time, plev, lat, lon).
    data_dims = {d for v in ds.data_vars.values() for d in v.dims}
    candidates = [n for n in candidates if ds[n].ndim == 1 and ds[n].dims[0] in data_dims]
    if not candidates:
        raise ArchiveError(
            f"{source}: no vertical coordinate (looked for {', '.join(HEIGHT_NAMES + PRESSURE_NAMES)} "
            f"or axis='Z'); coordinates present: {sorted(map(str, ds.coords))}"
        )
    name = candidates[0]
    axis = _as_axis(ds, name, "vertical", source)
    raw_units = _units(ds[name])
    if raw_units is None:
        raise ArchiveError(
            f"{source}: vertical coordinate {name!r} has no 'units' attribute; "
            "genda needs m or km (heights) or Pa, hPa (pressure)"
        )
    unit = canonical_units(raw_units)
    values = axis.values.astype(np.float64)
    if unit in _LENGTH_M:
        altitude = values * _LENGTH_M[unit] / 1000.0
    elif unit in _PRESSURE_PA:
        pressure = values * _PRESSURE_PA[unit]
        if np.any(pressure <= 0) or not np.all(np.isfinite(pressure)):
            raise ArchiveError(
                f"{source}: vertical coordinate {name!r} has non-positive or missing pressures"
            )
        altitude = pressure_to_altitude_km(pressure)
    else:
        raise ArchiveError(
            f"{source}: vertical coordinate {name!r} has units {raw_units!r}; "
            "expected a height (m, km) or a pressure (Pa, hPa, mbar)"
        )
    return axis, altitude, f"{name} ({raw_units})"


def _find_time(ds: xr.Dataset) -> tuple[Hashable | None, Hashable | None]:
    """``(coordinate name or None, dimension name or None)`` of time."""
    for name in TIME_NAMES:
        if name in ds.dims:
            return (name if name in ds.variables else None), name
    for name, var in ds.variables.items():
        if var.attrs.get("standard_name") == "time" or var.attrs.get("axis") == "T":
            if var.ndim == 1:
                return name, var.dims[0]
            if var.ndim == 0:
                return name, None
    for name in TIME_NAMES:
        if name in ds.variables and ds[name].ndim == 0:
            return name, None
    return None, None


def _check_unique(values: np.ndarray, what: str, source: str) -> None:
    unique, counts = np.unique(values, return_counts=True)
    if np.any(counts > 1):
        raise ArchiveError(f"{source}: duplicated {what} values {unique[counts > 1].tolist()}")


def _check_monotonic(values: np.ndarray, what: str, source: str) -> bool:
    """True if strictly increasing, False if strictly decreasing, else an error."""
    if values.size < 2:
        return True
    steps = np.diff(values)
    if np.all(steps > 0):
        return True
    if np.all(steps < 0):
        return False
    raise ArchiveError(f"{source}: {what} is not monotonic: {np.round(values, 3).tolist()}")


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
    raw = _units(ds[src])
    target = lookup_variable(name).units
    if raw is None:
        raise ArchiveError(
            f"{source}: variable {src!r} ({name}) has no 'units' attribute; expected {target!r}"
        )
    table = _UNIT_CONVERSIONS.get(name, {canonical_units(target): (1.0, 0.0)})
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


# ---------------------------------------------------------------------------- public
def to_genda_conventions(
    ds: xr.Dataset, variables: Sequence[str] | None = None, source: str = "dataset"
) -> xr.Dataset:
    """Rename, convert and reorder an open Dataset to genda's conventions (lazy).

    Args:
        ds: the source, as opened (e.g. :func:`open_raw`).
        variables: genda variable names to return, in this order; default u, v, T.
        source: name used in error messages (the file).

    Returns:
        Dataset with data variables ``(time, altitude, latitude, longitude)``
        float32 in genda units, coordinates as :meth:`genda.grid.Grid.coords`
        (latitude north to south, longitude in [0, 360) increasing, altitude
        in km increasing) and ``time``. See the module docstring for the rules.
    """
    wanted = tuple(variables) if variables is not None else DEFAULT_VARIABLES
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

    lat = _find_horizontal(
        ds, "latitude", LATITUDE_NAMES, ("degrees_north", "degree_north", "degrees_n"), source
    )
    lon = _find_horizontal(
        ds, "longitude", LONGITUDE_NAMES, ("degrees_east", "degree_east", "degrees_e"), source
    )
    vert, altitude, vertical_source = _find_vertical(ds, source)
    if lat.dim == lon.dim:
        raise ArchiveError(
            f"{source}: latitude and longitude share dimension {lat.dim!r} (an unstructured grid, e.g. "
            "ICON native output); remap to a regular latitude-longitude grid first (e.g. cdo remapbil)"
        )
    time_name, time_dim = _find_time(ds)

    latitude = lat.values.astype(np.float64)
    longitude = np.mod(lon.values.astype(np.float64), 360.0)
    if np.any(~np.isfinite(latitude)) or np.any(np.abs(latitude) > 90.0):
        raise ArchiveError(
            f"{source}: latitude {lat.name!r} has values outside [-90, 90] or missing"
        )
    if np.any(~np.isfinite(longitude)):
        raise ArchiveError(f"{source}: longitude {lon.name!r} has missing values")
    _check_unique(latitude, "latitude", source)
    _check_unique(longitude, "longitude (modulo 360)", source)
    _check_unique(altitude, f"altitude (from {vertical_source})", source)
    lat_increasing = _check_monotonic(latitude, "latitude", source)
    alt_increasing = _check_monotonic(altitude, f"altitude (from {vertical_source})", source)

    dim_map: dict[Hashable, str] = {lat.dim: "latitude", lon.dim: "longitude", vert.dim: "altitude"}
    if time_dim is not None:
        dim_map[time_dim] = "time"
    data_vars: dict[str, xr.Variable] = {}
    for name in wanted:
        src = found[name]
        var = ds[src].variable
        lacking = [new for dim, new in dim_map.items() if dim not in var.dims and new != "time"]
        if lacking:
            raise ArchiveError(
                f"{source}: variable {src!r} ({name}) has dims {var.dims}, lacking {lacking} "
                f"(coordinates found: {lat.name!r}, {lon.name!r}, {vert.name!r})"
            )
        extra = [d for d in var.dims if d not in dim_map]
        for dim in extra:
            if var.sizes[dim] != 1:
                raise ArchiveError(
                    f"{source}: variable {src!r} ({name}) has an extra dimension {dim!r} of size "
                    f"{var.sizes[dim]}; select one entry first (ds.isel({dim}=...))"
                )
        var = var.isel({d: 0 for d in extra}) if extra else var
        scale, offset = _conversion(ds, src, name, source)
        data = var.data
        if scale != 1.0 or offset != 0.0:
            data = data.astype(np.float64) * scale + offset  # float32 would round 20.5 + 273.15
        attrs = {k: v for k, v in var.attrs.items() if k not in _DROP_ATTRS}
        if scale != 1.0 or offset != 0.0:
            # Stored statistics would be in the source's units.
            attrs.pop(MEAN_ATTR, None)
            attrs.pop(STD_ATTR, None)
        attrs.update(lookup_variable(name).cf_attrs())
        if str(src) != name:
            attrs["original_name"] = str(src)
        if _units(var) != attrs["units"]:
            attrs["original_units"] = _units(var)
        data_vars[name] = xr.Variable(
            tuple(dim_map[d] for d in var.dims), data.astype(np.float32), attrs
        )

    out = xr.Dataset(
        data_vars,
        attrs={**ds.attrs, "genda_source": source, VARIABLES_ATTR: json.dumps(list(wanted))},
    )
    if "time" not in out.dims:
        out = out.expand_dims("time")
    coords: dict[str, Any] = {
        "latitude": ("latitude", latitude),
        "longitude": ("longitude", longitude),
        "altitude": ("altitude", altitude),
    }
    if time_name is not None:
        times = np.atleast_1d(np.asarray(ds[time_name].values))
        _check_unique(times, "time", source)
        # Keep how time was encoded (units, calendar), not the source's storage layout
        # (chunks, compressors), which would clash when the result is written elsewhere.
        encoding = {
            k: v for k, v in ds[time_name].encoding.items() if k in ("units", "calendar", "dtype")
        }
        coords["time"] = xr.Variable("time", times, ds[time_name].attrs, encoding=encoding)
    out = out.assign_coords(coords)

    # Reorder: latitude north to south, longitude increasing from 0, altitude upward.
    if lat_increasing and latitude.size > 1:
        out = out.isel(latitude=slice(None, None, -1))
    if not alt_increasing:
        out = out.isel(altitude=slice(None, None, -1))
    order = np.argsort(longitude, kind="stable")
    if np.any(order != np.arange(order.size)):
        out = out.isel(longitude=order)

    template = Grid(
        out["latitude"].values, out["longitude"].values, out["altitude"].values, wanted, "irregular"
    )
    for key, coord in template.coords().items():
        out[key].attrs = dict(coord.attrs)
    out["altitude"].attrs["genda_source_coordinate"] = vertical_source
    if "time" in out.coords:
        out["time"].attrs.setdefault("standard_name", "time")
        out["time"].attrs.setdefault("axis", "T")
    out = out.transpose("time", "altitude", "latitude", "longitude")
    for name in wanted:
        _check_not_all_nan(out[name], found[name], source)
    return out


def open_archive(
    path: str | os.PathLike[str] | xr.Dataset,
    grid: Grid | None = None,
    variables: Sequence[str] | None = None,
) -> xr.Dataset:
    """Open a genda archive or other model output lazily, in genda's conventions.

    Args:
        path: a Zarr store (directory), a NetCDF file, or an already open Dataset.
        grid: regrid to this grid (:func:`genda.storage.regrid.regrid`: linear
            in latitude and altitude, periodic-linear in longitude); errors if
            the grid reaches beyond the source's latitude/altitude range.
        variables: genda names to return, in order; default ``grid.variables``
            with a grid, else u, v, T. All must be present.

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
    if variables is None and grid is not None:
        variables = grid.variables
    ds = to_genda_conventions(raw, variables, source)
    if grid is not None:
        from genda.storage.regrid import regrid

        ds = regrid(ds, grid, source=source)
    return ds
