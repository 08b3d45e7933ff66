"""Station profiles in CF NetCDF: meteor-radar wind profiles and lidar temperature profiles.

Layout (NetCDF Climate and Forecast conventions, CF 1.11, and the CF
standard-name table):

- the data variables are found by ``standard_name``: ``eastward_wind`` and
  ``northward_wind`` (m s-1) for winds, ``air_temperature`` (K or degC) for
  lidar temperatures, with dimensions ``(time, z)`` or ``(z, time)``;
- ``time`` is a CF time coordinate (``units = "seconds since ..."``), decoded
  to UTC by xarray (a reference time with an offset is converted);
- the vertical coordinate ``z`` is the dimension's coordinate variable, or a
  variable named ``altitude``, ``alt`` or ``height`` along it, in m or km
  (its ``units``). ``standard_name = "altitude"`` is height above the geoid
  (mean sea level); ``standard_name = "height"`` is height above the surface,
  to which the station's surface altitude is added (a scalar variable with
  ``standard_name = "surface_altitude"``, or a global attribute
  :data:`SURFACE_ALTITUDE_ATTRS` in metres). A vertical coordinate without
  ``standard_name`` is read as altitude above mean sea level;
- the uncertainty of a variable is the variable named in its
  ``ancillary_variables`` whose ``standard_name`` is ``"<standard_name>
  standard_error"`` (CF standard-name modifier), else any variable with that
  standard name; it is required. Its unit is compared with the data's as a
  unit (``m/s`` is ``m s-1``; an uncertainty in degrees Celsius is one in K)
  and it is rescaled to the data's unit;
- a quality flag is a variable named in ``ancillary_variables`` whose
  ``standard_name`` is ``status_flag`` or ``quality_flag`` (or ends with one).
  With ``flag_values``/``flag_meanings``, values whose meaning is one of
  :data:`GOOD_FLAG_MEANINGS` are good (a file whose meanings name none is
  refused); with ``flag_masks``, a value is good when no bit of a mask with
  another meaning is set; without either, 0 is good. A flag along ``time``
  only flags whole profiles;
- the station: ``latitude``/``longitude`` as scalar variables (by
  ``standard_name``, else by name ``latitude``/``lat``,
  ``longitude``/``lon``) or global attributes (:data:`LATITUDE_ATTRS`,
  :data:`LONGITUDE_ATTRS`); its name in a scalar variable with ``cf_role =
  "timeseries_id"`` or ``"profile_id"``, or a global attribute
  (:data:`STATION_ATTRS`);
- missing values (``_FillValue``, ``missing_value``) are masked by xarray and
  counted as fill values.

The geometric height becomes ``height_km``; genda.observations.heights places
it on the log-pressure altitude.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from genda.observations.readers.common import (
    FileRead,
    Reader,
    Screen,
    as_float,
    decoded,
    profile_rows,
    refuse,
)
from genda.observations.table import unit_conversion
from genda.units import LENGTH_UNITS_M, canonical_units

WIND_STANDARD_NAMES: dict[str, str] = {"u": "eastward_wind", "v": "northward_wind"}
TEMPERATURE_STANDARD_NAMES: dict[str, str] = {"T": "air_temperature"}

STATION_ATTRS: tuple[str, ...] = ("station_name", "station", "site_name", "site", "platform")
"""Global attributes naming the station, looked for in this order."""
LATITUDE_ATTRS: tuple[str, ...] = ("station_latitude", "site_latitude", "latitude", "lat")
LONGITUDE_ATTRS: tuple[str, ...] = ("station_longitude", "site_longitude", "longitude", "lon")
SURFACE_ALTITUDE_ATTRS: tuple[str, ...] = ("station_altitude", "site_altitude", "surface_altitude")
"""Global attributes giving the station's surface altitude above mean sea level, in metres."""

GOOD_FLAG_MEANINGS: frozenset[str] = frozenset(
    {
        *("good", "good_data", "good_value", "good_values", "good_quality", "ok", "okay"),
        *("pass", "passed", "valid", "no_problem", "no_problems", "no_error", "no_errors"),
        *("no_flag", "no_flags", "not_flagged", "unflagged", "no_qc_flag", "qc_passed"),
    }
)
"""``flag_meanings`` words that mark good data (lower case).

Spellings of CF files in use: ``good``/``good_data`` (ARGO-like tables),
``pass`` (IOOS QARTOD), ``no_flag``/``not_flagged``/``no_qc_flag`` (radar and
lidar files whose flag counts problems). A flag with ``flag_values`` of which
none means good is refused (it would leave out every row)."""

_VERTICAL_NAMES = ("altitude", "alt", "height")


def read_cf_winds(path: Path) -> FileRead:
    """Read a CF NetCDF wind profile file (meteor radar): rows of ``u`` and ``v`` with ``height_km``."""
    return read_cf_profiles(path, WIND_STANDARD_NAMES, network="radars")


def read_cf_lidar(path: Path) -> FileRead:
    """Read a CF NetCDF lidar temperature profile file: rows of ``T`` with ``height_km``."""
    return read_cf_profiles(path, TEMPERATURE_STANDARD_NAMES, network="lidars")


def read_cf_profiles(path: Path, standard_names: Mapping[str, str], network: str) -> FileRead:
    """Read the variables of ``standard_names`` (genda name -> CF standard name) from a CF file.

    Returns:
        One row per (time, level, variable) kept: ``height_km`` above mean sea
        level, ``sigma`` from the uncertainty variable, ``units`` the unit of
        the data variable, ``fwhm_km`` NaN (point values).

    Raises:
        InstrumentFileError: not NetCDF, none of the variables, no time or
            vertical coordinate, no uncertainty, no station position or name.
    """
    try:
        ds = xr.open_dataset(path)
    except (OSError, ValueError) as exc:
        raise refuse(path, f"cannot be read as NetCDF ({exc})") from exc
    with ds:
        found = {name: _by_standard_name(path, ds, sn) for name, sn in standard_names.items()}
        found = {name: var for name, var in found.items() if var is not None}
        if not found:
            wanted = ", ".join(repr(sn) for sn in standard_names.values())
            raise refuse(path, f"no variable with standard_name {wanted}")
        lat, lon = _station_position(path, ds)
        station = _station_name(path, ds)
        parts, skipped, rows_read = [], {}, 0
        for variable, name in found.items():
            table, counts, n = _read_variable(path, ds, name, variable, lat, lon, station)
            parts.append(table.assign(network=network))
            rows_read += n
            for reason, k in counts.items():
                skipped[reason] = skipped.get(reason, 0) + k
    return FileRead(pd.concat(parts, ignore_index=True), rows_read, skipped)


def _read_variable(
    path: Path,
    ds: xr.Dataset,
    name: str,
    variable: str,
    lat: float,
    lon: float,
    station: str,
) -> tuple[pd.DataFrame, dict[str, int], int]:
    """Rows of one data variable: ``(table, skipped by reason, values read)``."""
    data = ds[name]
    time_dim = _time_dimension(path, data)
    if data.ndim != 2:
        raise refuse(path, f"variable {name!r} has dimensions {data.dims}; expected (time, height)")
    z_dim = next(d for d in data.dims if d != time_dim)
    data = data.transpose(time_dim, z_dim)
    sigma = _uncertainty(path, ds, data, variable).transpose(time_dim, z_dim)
    height_km = _height_km(path, ds, z_dim)
    times = ds[time_dim].values.astype("datetime64[ns]")
    shape = data.shape
    value = as_float(data.values).ravel()
    error = np.broadcast_to(as_float(sigma.values), shape).ravel()
    height = np.broadcast_to(height_km[None, :], shape).ravel()
    time = np.broadcast_to(times[:, None], shape).ravel()

    screen = Screen(value.size)
    screen.reject(np.isnat(time) | ~np.isfinite(height), "fill value")
    screen.reject(~np.isfinite(value) | ~np.isfinite(error), "fill value")
    for flag in _flags(ds, data):
        screen.reject(_flagged(path, flag, data, time_dim, z_dim).ravel(), "flagged")
    screen.reject(error <= 0.0, "precision")
    table = profile_rows(
        {
            "time": time,
            "lat": lat,
            "lon": lon,
            "height_km": height,
            "variable": variable,
            "value": value,
            "sigma": error,
            "station": station,
            "fwhm_km": np.nan,
            "units": str(data.attrs.get("units", "")),
        },
        screen.keep,
    )
    return table, screen.counts, value.size


def _by_standard_name(path: Path, ds: xr.Dataset, standard_name: str) -> str | None:
    """The one data variable with ``standard_name``, ``None`` if there is none."""
    names = [
        str(n) for n, v in ds.data_vars.items() if _standard_name(v) == standard_name and v.ndim > 0
    ]
    if len(names) > 1:
        raise refuse(path, f"several variables have standard_name {standard_name!r}: {names}")
    return names[0] if names else None


def _standard_name(var: xr.DataArray) -> str:
    return " ".join(str(var.attrs.get("standard_name", "")).split())


def _time_dimension(path: Path, data: xr.DataArray) -> str:
    """The dimension of ``data`` whose coordinate holds decoded times."""
    for dim in data.dims:
        if dim in data.coords and np.issubdtype(data[dim].dtype, np.datetime64):
            return str(dim)
    raise refuse(
        path,
        f"variable {data.name!r} has no time dimension with a CF time coordinate "
        f"(dimensions {data.dims}; a time needs units 'seconds since ...' and a standard calendar)",
    )


def _height_km(path: Path, ds: xr.Dataset, z_dim: str) -> np.ndarray:
    """``(L,)`` geometric height above mean sea level (km) of the levels along ``z_dim``."""
    candidates = [z_dim] if z_dim in ds.variables else []
    candidates += [n for n in _VERTICAL_NAMES if n in ds.variables and ds[n].dims == (z_dim,)]
    if not candidates:
        raise refuse(
            path,
            f"no vertical coordinate along {z_dim!r} (a coordinate variable, or 'altitude' / "
            "'height' in m or km)",
        )
    z = ds[candidates[0]]
    scale = _length_km(str(z.attrs.get("units", "")))
    if scale is None:
        raise refuse(
            path,
            f"vertical coordinate {z.name!r} has units {z.attrs.get('units', '')!r}; "
            "expected m or km",
        )
    if str(z.attrs.get("positive", "up")).lower() != "up":
        raise refuse(path, f"vertical coordinate {z.name!r} is positive {z.attrs['positive']!r}")
    height = as_float(z.values) * scale
    if _standard_name(z) == "height":
        height = height + _surface_altitude_km(path, ds, str(z.name))
    return height


def _length_km(units: str) -> float | None:
    """km per ``units`` of geometric height (m, km in any spelling), ``None`` for other units.

    The spellings are those of the model-output readers
    (:data:`genda.units.LENGTH_UNITS_M`), which leave out geopotential metres:
    a geopotential height is no geometric height.
    """
    factor = LENGTH_UNITS_M.get(canonical_units(units))
    return None if factor is None else factor / 1e3


def _surface_altitude_km(path: Path, ds: xr.Dataset, z_name: str) -> float:
    """The station's surface altitude above mean sea level (km), for heights above the surface."""
    for name, var in ds.variables.items():
        if _standard_name(var) == "surface_altitude" and var.size == 1:
            units = str(var.attrs.get("units", "m"))
            scale = _length_km(units)
            if scale is None:
                raise refuse(
                    path, f"surface_altitude {name!r} has units {units!r}; expected m or km"
                )
            return float(var.values.ravel()[0]) * scale
    for attr in SURFACE_ALTITUDE_ATTRS:
        if attr in ds.attrs:
            return _number(path, ds.attrs[attr], attr) * 1e-3
    raise refuse(
        path,
        f"{z_name!r} is height above the surface (standard_name 'height') and no surface "
        f"altitude is given (a scalar surface_altitude variable or one of the attributes "
        f"{list(SURFACE_ALTITUDE_ATTRS)}, in metres)",
    )


def _uncertainty(path: Path, ds: xr.Dataset, data: xr.DataArray, variable: str) -> xr.DataArray:
    """The uncertainty variable of ``data`` (standard name modifier ``standard_error``), in its unit.

    Units are compared as units (:func:`~genda.observations.table.unit_conversion`
    of genda's ``variable``), not as text: ``m/s`` and ``m s-1`` are one unit;
    an uncertainty in degrees Celsius is one in kelvin (a difference: scale
    only). The uncertainty is rescaled to the unit of ``data``.
    """
    wanted = f"{_standard_name(data)} standard_error"
    linked = [n for n in str(data.attrs.get("ancillary_variables", "")).split() if n in ds]
    matches = [n for n in linked if _standard_name(ds[n]) == wanted]
    if not matches:
        matches = [str(n) for n, v in ds.data_vars.items() if _standard_name(v) == wanted]
    if not matches:
        raise refuse(
            path,
            f"no uncertainty for {data.name!r}: no variable with standard_name {wanted!r} "
            "(through ancillary_variables or in the file)",
        )
    sigma = ds[matches[0]]
    if set(sigma.dims) - set(data.dims):
        raise refuse(
            path, f"uncertainty {matches[0]!r} has dimensions {sigma.dims}, not {data.dims}"
        )
    scale = _uncertainty_scale(variable, *(str(v.attrs.get("units", "")) for v in (sigma, data)))
    if scale is None:
        raise refuse(
            path,
            f"uncertainty {matches[0]!r} is in {sigma.attrs.get('units')!r} but {data.name!r} "
            f"in {data.attrs.get('units')!r}",
        )
    return (sigma * scale if scale != 1.0 else sigma).broadcast_like(data)


def _uncertainty_scale(variable: str, sigma_units: str, data_units: str) -> float | None:
    """Factor taking an uncertainty in ``sigma_units`` to ``data_units``; ``None``: not one quantity.

    A missing unit on either side is taken as the other's; two units neither
    table knows must be spelled alike (the data's unit is checked on validation).
    """
    sigma_key, data_key = canonical_units(sigma_units), canonical_units(data_units)
    if not sigma_key or not data_key or sigma_key == data_key:
        return 1.0
    to_sigma, to_data = (unit_conversion(variable, u) for u in (sigma_units, data_units))
    if to_sigma is None or to_data is None:
        return None
    return to_sigma[0] / to_data[0]


def _flags(ds: xr.Dataset, data: xr.DataArray) -> list[xr.DataArray]:
    """The quality-flag variables of ``data`` (through its ``ancillary_variables``)."""
    names = [n for n in str(data.attrs.get("ancillary_variables", "")).split() if n in ds]
    return [ds[n] for n in names if _standard_name(ds[n]).endswith(("status_flag", "quality_flag"))]


def _flagged(
    path: Path, flag: xr.DataArray, data: xr.DataArray, time_dim: str, z_dim: str
) -> np.ndarray:
    """``(T, L)`` mask of the values ``flag`` marks bad (see the module docstring)."""
    if set(flag.dims) - {time_dim, z_dim}:
        raise refuse(path, f"quality flag {flag.name!r} has dimensions {flag.dims}")
    raw = flag.broadcast_like(data).transpose(time_dim, z_dim).values
    missing = ~np.isfinite(as_float(raw))
    codes = np.where(missing, 0, raw).astype(np.int64)
    meanings = str(flag.attrs.get("flag_meanings", "")).lower().split()
    if "flag_masks" in flag.attrs:
        masks = np.atleast_1d(flag.attrs["flag_masks"]).astype(np.int64)
        bad = [
            m for m, word in zip(masks, meanings, strict=False) if word not in GOOD_FLAG_MEANINGS
        ]
        bad_bits = int(np.bitwise_or.reduce(bad)) if bad else 0
        return ((codes & bad_bits) != 0) & ~missing
    if "flag_values" in flag.attrs and meanings:
        values = np.atleast_1d(flag.attrs["flag_values"]).astype(np.int64)
        good = [v for v, word in zip(values, meanings, strict=False) if word in GOOD_FLAG_MEANINGS]
        if not good:
            raise refuse(
                path,
                f"quality flag {flag.name!r}: none of its flag_meanings "
                f"{flag.attrs['flag_meanings']!r} marks good data (every row would be left "
                f"out); known meanings of good data: {', '.join(sorted(GOOD_FLAG_MEANINGS))}",
            )
        return ~np.isin(codes, good) & ~missing
    return (codes != 0) & ~missing


def _station_position(path: Path, ds: xr.Dataset) -> tuple[float, float]:
    """The station's ``(latitude, longitude)`` in degrees (scalar variables or global attributes)."""
    position = []
    for standard_name, names, attrs in (
        ("latitude", ("latitude", "lat"), LATITUDE_ATTRS),
        ("longitude", ("longitude", "lon"), LONGITUDE_ATTRS),
    ):
        scalars = [v for v in ds.variables.values() if v.size == 1 and v.ndim <= 1]
        match = [v for v in scalars if _standard_name(v) == standard_name]
        match = match or [ds[n] for n in names if n in ds.variables and ds[n].size == 1]
        if match:
            position.append(float(as_float(match[0].values).ravel()[0]))
            continue
        attr = next((a for a in attrs if a in ds.attrs), None)
        if attr is None:
            raise refuse(
                path,
                f"no station {standard_name}: no scalar variable with standard_name "
                f"{standard_name!r} and none of the global attributes {list(attrs)}",
            )
        position.append(_number(path, ds.attrs[attr], attr))
    return position[0], position[1]


def _station_name(path: Path, ds: xr.Dataset) -> str:
    """The station's name: a ``cf_role`` id variable, else a global attribute."""
    for var in ds.variables.values():
        if var.attrs.get("cf_role") in ("timeseries_id", "profile_id") and var.size == 1:
            name = decoded(var.values)
            if name:
                return name
    for attr in STATION_ATTRS:
        name = decoded(ds.attrs.get(attr, ""))
        if name:
            return name
    raise refuse(
        path,
        f"no station name: no variable with cf_role timeseries_id and none of the global "
        f"attributes {list(STATION_ATTRS)}",
    )


def _number(path: Path, value: object, attr: str) -> float:
    try:
        return float(np.asarray(value, dtype=np.float64).ravel()[0])
    except (TypeError, ValueError, IndexError):
        raise refuse(path, f"global attribute {attr!r} = {value!r} is not a number") from None


RADAR_READER = Reader(
    name="radar-netcdf",
    description="meteor-radar wind profiles, CF NetCDF (eastward_wind, northward_wind + standard_error)",
    vertical="geometric",
    reference="NetCDF CF conventions 1.11 and standard-name table (standard_error modifier)",
    read=read_cf_winds,
)

LIDAR_READER = Reader(
    name="lidar-netcdf",
    description="Rayleigh/resonance lidar temperature profiles, CF NetCDF (air_temperature)",
    vertical="geometric",
    reference="NetCDF CF conventions 1.11 and standard-name table (standard_error modifier)",
    read=read_cf_lidar,
)

__all__ = [
    "GOOD_FLAG_MEANINGS",
    "LATITUDE_ATTRS",
    "LIDAR_READER",
    "LONGITUDE_ATTRS",
    "RADAR_READER",
    "STATION_ATTRS",
    "SURFACE_ALTITUDE_ATTRS",
    "read_cf_lidar",
    "read_cf_profiles",
    "read_cf_winds",
]
