"""TIMED/SABER Level 2A kinetic temperature profiles (NetCDF).

Layout (SABER Level 2A file contents, GATS "SABER L2A netCDF file contents"
and Appendix A "SABER Level 2A File Format Description" of the Level 2A
software documentation, saber.gats-inc.com; the files of data version 2.0x):

- dimensions ``event`` (one limb scan each) and ``altitude`` (the samples of
  a scan, 400 or more, not all filled);
- ``date(event)``: ``yyyyddd`` (year and day of year, UT);
- ``time(event, altitude)`` or ``time(event)``: milliseconds since midnight UT
  of ``date`` (a scan crossing midnight counts on past 86 400 000);
- ``ktemp(event, altitude)`` (``Ktemp`` in the format description): kinetic
  temperature, K; ``ktemp_error`` where a file has it;
- ``pressure(event, altitude)``: mb (= hPa);
- ``tpaltitude``, ``tplatitude``, ``tplongitude(event, altitude)``: tangent
  point altitude (km), latitude and longitude (degrees; longitude 0-360);
- missing values are ``-999`` (and any ``_FillValue``/``missing_value``).

The vertical coordinate is pressure: ``alt_km`` is the log-pressure altitude
(:func:`genda.constants.pressure_to_altitude_km`); ``tpaltitude`` is not used.
The Level 2A files carry no uncertainty of ``ktemp`` unless ``ktemp_error``
is present: ``sigma`` is then the catalog's SABER error model
(:data:`genda.observations.catalog.SABER_T_ERRORS`, 3 K), and ``fwhm_km`` its
2 km vertical kernel (SABER's field of view at the limb).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from genda.constants import HPA_TO_PA, pressure_to_altitude_km
from genda.observations.catalog import SABER_T_ERRORS
from genda.observations.readers.common import (
    FileRead,
    Reader,
    Screen,
    as_float,
    profile_rows,
    refuse,
)

SABER_FILL_VALUE = -999.0
"""SABER's missing value."""

_TEMPERATURE_NAMES = ("ktemp", "Ktemp")
_ERROR_NAMES = ("ktemp_error", "Ktemp_error")
_REQUIRED = ("date", "time", "pressure", "tplatitude", "tplongitude")


def read_saber(path: Path) -> FileRead:
    """Read the kinetic temperatures of a SABER Level 2A file.

    Returns:
        Rows of ``T`` with ``alt_km`` from ``pressure``, ``station`` ``"SABER"``.

    Raises:
        InstrumentFileError: not NetCDF, a variable missing or of the wrong shape.
    """
    try:
        ds = xr.open_dataset(path, decode_times=False)
    except (OSError, ValueError) as exc:
        raise refuse(path, f"cannot be read as NetCDF ({exc})") from exc
    with ds:
        temperature_name = next((n for n in _TEMPERATURE_NAMES if n in ds.variables), None)
        missing = [n for n in _REQUIRED if n not in ds.variables]
        if temperature_name is None:
            missing.insert(0, "ktemp")
        if missing:
            raise refuse(path, f"no variable(s) {missing} (not a SABER Level 2A file)")
        temperature = _values(ds[temperature_name])
        if temperature.ndim != 2:
            raise refuse(
                path,
                f"{temperature_name} has shape {temperature.shape}; expected (event, altitude)",
            )
        shape = temperature.shape
        fields = {name: _values(ds[name]) for name in ("pressure", "tplatitude", "tplongitude")}
        for name, values in fields.items():
            if values.shape != shape:
                raise refuse(
                    path, f"{name} has shape {values.shape}; {temperature_name} has {shape}"
                )
        date = _values(ds["date"])
        ms = _values(ds["time"])
        if date.shape != shape[:1] or ms.shape not in (shape, shape[:1]):
            raise refuse(
                path, f"date {date.shape} / time {ms.shape} do not fit {temperature_name} {shape}"
            )
        error_name = next((n for n in _ERROR_NAMES if n in ds.variables), None)
        error = _values(ds[error_name]) if error_name else None
    times = _times(date, np.broadcast_to(ms.reshape(shape[0], -1), shape)).ravel()
    value = temperature.ravel()
    pressure_hpa = fields["pressure"].ravel()
    lat, lon = fields["tplatitude"].ravel(), fields["tplongitude"].ravel()

    screen = Screen(value.size)
    screen.reject(~np.isfinite(value) | np.isnat(times), "fill value")
    screen.reject(~np.isfinite(lat) | ~np.isfinite(lon), "fill value")
    screen.reject(~np.isfinite(pressure_hpa) | (pressure_hpa <= 0.0), "fill value")
    alt_km = np.full(value.size, np.nan)
    alt_km[screen.keep] = pressure_to_altitude_km(pressure_hpa[screen.keep] * HPA_TO_PA)
    if error is None:
        sigma = SABER_T_ERRORS.sigma(alt_km)
    else:
        sigma = np.broadcast_to(error, shape).ravel()
        screen.reject(~np.isfinite(sigma), "fill value")
        screen.reject(sigma <= 0.0, "precision")
    table = profile_rows(
        {
            "time": times,
            "lat": lat,
            "lon": lon,
            "alt_km": alt_km,
            "variable": "T",
            "value": value,
            "sigma": sigma,
            "station": "SABER",
            "fwhm_km": float(SABER_T_ERRORS.fwhm_km or np.nan),
            "network": "saber",
            "units": "K",
        },
        screen.keep,
    )
    return FileRead(table, value.size, screen.counts)


def _values(var: xr.DataArray) -> np.ndarray:
    """Float values with SABER's ``-999`` (and masked fill values) as NaN."""
    values = as_float(var.values)
    values[values == SABER_FILL_VALUE] = np.nan
    return values


def _times(date: np.ndarray, ms: np.ndarray) -> np.ndarray:
    """``(E, A)`` naive UTC datetime64[ns] from ``yyyyddd`` dates and ms of day (NaT where invalid)."""
    year = np.floor(date / 1000.0)
    doy = date - 1000.0 * year
    ok_date = np.isfinite(date) & (doy >= 1) & (doy <= 366) & (year >= 1900)
    day0 = np.full(date.shape, np.datetime64("NaT"), dtype="datetime64[ns]")
    day0[ok_date] = (
        pd.to_datetime(year[ok_date].astype(np.int64).astype(str), format="%Y").to_numpy()
        + (doy[ok_date].astype(np.int64) - 1).astype("timedelta64[D]")
    ).astype("datetime64[ns]")
    ok = ok_date[:, None] & np.isfinite(ms) & (ms >= 0)
    offset = np.where(ok, np.round(ms * 1e6), 0).astype("int64").astype("timedelta64[ns]")
    times = day0[:, None] + offset
    times[~ok] = np.datetime64("NaT")
    return times


READER = Reader(
    name="saber",
    description="TIMED/SABER Level 2A kinetic temperature, NetCDF (ktemp, pressure, tplatitude, ...)",
    vertical="log-pressure",
    reference="SABER Level 2A netCDF file contents and Level 2A format description (GATS)",
    read=read_saber,
)

__all__ = ["READER", "SABER_FILL_VALUE", "read_saber"]
