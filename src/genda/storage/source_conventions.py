"""How a model-output file's names, units and coordinate axes are recognised.

The name tables (what a source may call each variable and coordinate), the
unit conversions to genda's units, and the search for the latitude,
longitude, vertical and time axes of :func:`genda.storage.readers.open_archive`.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from genda.constants import pressure_to_altitude_km
from genda.storage.errors import ArchiveError
from genda.units import canonical_units

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
UNIT_CONVERSIONS: dict[str, dict[str, tuple[float, float]]] = {
    "u": {k: (f, 0.0) for k, f in _SPEED.items()},
    "v": {k: (f, 0.0) for k, f in _SPEED.items()},
    "w": {k: (f, 0.0) for k, f in _SPEED.items()},
    "T": {k: (1.0, off) for k, off in _KELVIN.items()},
    "geopotential_height": {k: (f, 0.0) for k, f in _LENGTH_M.items()},
}


# ---------------------------------------------------------------------------- coordinates
@dataclass(frozen=True)
class Axis:
    """A coordinate found in the source: its variable name, its dimension, 1-D values."""

    name: Hashable
    dim: Hashable
    values: np.ndarray
    attrs: dict[str, Any]


def units_of(var: xr.Variable | xr.DataArray) -> str | None:
    units = var.attrs.get("units")
    return str(units) if units is not None else None


def _as_axis(ds: xr.Dataset, name: Hashable, what: str, source: str) -> Axis:
    """The 1-D axis of coordinate ``name``; a 2-D one must be constant along one dimension."""
    var = ds[name].variable
    if var.ndim == 1:
        return Axis(name, var.dims[0], np.asarray(var.values), dict(var.attrs))
    if var.ndim == 2:
        # NEMO-style nav_lat(y, x) on a regular grid: constant along x.
        values = np.asarray(var.values)
        if np.allclose(values, values[:, :1], equal_nan=True):
            return Axis(name, var.dims[0], values[:, 0], dict(var.attrs))
        if np.allclose(values, values[:1, :], equal_nan=True):
            return Axis(name, var.dims[1], values[0, :], dict(var.attrs))
    raise ArchiveError(
        f"{source}: {what} coordinate {name!r} has dims {var.dims} and is not a regular grid axis; "
        "remap to a regular latitude-longitude grid first (e.g. cdo remapbil)"
    )


def find_horizontal(
    ds: xr.Dataset, what: str, names: Sequence[str], units: Sequence[str], source: str
) -> Axis:
    for name in names:
        if name in ds.variables and ds[name].ndim >= 1:
            return _as_axis(ds, name, what, source)
    for name, var in ds.variables.items():
        unit = canonical_units(units_of(var) or "")
        if var.ndim >= 1 and (var.attrs.get("standard_name") == what or unit in units):
            return _as_axis(ds, name, what, source)
    raise ArchiveError(
        f"{source}: no {what} coordinate (looked for {', '.join(names)} or standard_name={what!r}); "
        f"variables and coordinates present: {sorted(map(str, ds.variables))}"
    )


def find_vertical(ds: xr.Dataset, source: str) -> tuple[Axis, np.ndarray, str]:
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
    raw_units = units_of(ds[name])
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


def find_time(ds: xr.Dataset) -> tuple[Hashable | None, Hashable | None]:
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


def check_unique(values: np.ndarray, what: str, source: str) -> None:
    unique, counts = np.unique(values, return_counts=True)
    if np.any(counts > 1):
        raise ArchiveError(f"{source}: duplicated {what} values {unique[counts > 1].tolist()}")


def check_monotonic(values: np.ndarray, what: str, source: str) -> bool:
    """True if strictly increasing, False if strictly decreasing, else an error."""
    if values.size < 2:
        return True
    steps = np.diff(values)
    if np.all(steps > 0):
        return True
    if np.all(steps < 0):
        return False
    raise ArchiveError(f"{source}: {what} is not monotonic: {np.round(values, 3).tolist()}")
