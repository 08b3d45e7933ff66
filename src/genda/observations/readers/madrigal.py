"""Meteor-radar hourly winds in Madrigal (CEDAR) HDF5 files.

Layout (Madrigal 3 "CEDAR Madrigal HDF5" format; the writer is
``madrigal.cedar`` of the OpenMadrigal distribution, and pysatMadrigal's
``methods.general.load`` reads it the same way):

- ``/Data/Table Layout``: a compound dataset, one record per (time, height),
  field names the Madrigal mnemonics in lower case. Every file has the
  standard fields ``year, month, day, hour, min, sec`` (the middle of the
  record's interval, UT), ``recno, kindat, kinst, ut1_unix, ut2_unix``.
  Meteor-radar wind files add ``gdalt`` (geodetic altitude, km) and the
  neutral winds ``vn1`` ("Neutral wind in direction 1 (eastward)", m/s, code
  1410) and ``vn2`` ("Neutral wind in direction 2 (northward)", code 1420)
  or their 0.01 m/s-resolution spellings ``vn1p2``/``vn2p2`` (1412, 1422),
  with their errors ``dvn1``, ``dvn2`` (an error parameter is the mnemonic
  with ``D`` before it; Madrigal metadata ``parcods.tab``). Positions: per
  record ``gdlat``/``glon`` (geodetic latitude, geographic longitude of the
  measurement) or ``gdlatr``/``gdlonr`` (of the instrument).
- ``/Metadata/Experiment Parameters``: ``(name, value)`` text pairs, among
  them ``instrument`` (the station's name), ``instrument latitude`` and
  ``instrument longitude``.
- Special values: missing data are NaN; an error parameter of ``-1`` means
  "assumed" and ``-2`` "known bad" (``madrigal.cedar``: ``assumed``,
  ``knownbad``); such rows are counted as flagged.

Read with h5py rather than pysatMadrigal: pysatMadrigal brings pysat and
madrigalWeb (a download client) and returns pysat Instruments; the table is a
single compound dataset that h5py reads in one call.

``gdalt`` is geometric height above the WGS84 ellipsoid; it becomes
``height_km`` (the geoid lies within 0.1 km of the ellipsoid, far below a
radar's height resolution of 1-3 km).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from genda.observations.readers.common import (
    FileRead,
    Reader,
    Screen,
    as_float,
    decoded,
    profile_rows,
    refuse,
)

TABLE_PATH = "Data/Table Layout"
PARAMETERS_PATH = "Metadata/Experiment Parameters"
TIME_FIELDS = ("year", "month", "day", "hour", "min", "sec")

WIND_MNEMONICS: dict[str, tuple[str, ...]] = {"u": ("vn1", "vn1p2"), "v": ("vn2", "vn2p2")}
"""Madrigal mnemonics of the eastward (``u``) and northward (``v``) neutral wind, preferred first."""

ERROR_ASSUMED = -1.0
"""Madrigal's special value of an error parameter: the error is assumed, not measured."""
ERROR_KNOWN_BAD = -2.0
"""Madrigal's special value of an error parameter: the value is known to be bad."""


def read_madrigal_winds(path: Path) -> FileRead:
    """Read the hourly winds of a Madrigal meteor-radar HDF5 file.

    Returns:
        Rows of ``u`` and ``v`` with ``height_km`` (geodetic altitude ``gdalt``),
        ``sigma`` from ``dvn1``/``dvn2``, ``station`` the instrument name.

    Raises:
        InstrumentFileError: not HDF5, no ``/Data/Table Layout``, no time or
            ``gdalt`` fields, no wind field or its error, no position or name.
    """
    try:
        with h5py.File(path, "r") as f:
            if TABLE_PATH not in f:
                raise refuse(path, f"no /{TABLE_PATH} dataset (not a Madrigal HDF5 file)")
            table = _dataset(path, f, TABLE_PATH)
            parameters = _experiment_parameters(path, f)
    except OSError as exc:
        raise refuse(path, f"cannot be read as HDF5 ({exc})") from exc
    names = {name.lower(): name for name in table.dtype.names or ()}
    missing = [name for name in (*TIME_FIELDS, "gdalt") if name not in names]
    if missing:
        raise refuse(path, f"/{TABLE_PATH} has no field(s) {missing}")

    def field(name: str) -> np.ndarray:
        return as_float(table[names[name]])

    winds = {}
    for variable, mnemonics in WIND_MNEMONICS.items():
        found = next((m for m in mnemonics if m in names), None)
        if found is None:
            continue
        if f"d{found}" not in names:
            raise refuse(path, f"/{TABLE_PATH} has wind {found} but not its error d{found}")
        winds[variable] = (field(found), field(f"d{found}"))
    if not winds:
        raise refuse(
            path,
            f"/{TABLE_PATH} has no eastward or northward wind (fields "
            f"{', '.join(m for ms in WIND_MNEMONICS.values() for m in ms)})",
        )

    lat, lon = _positions(path, table, names, parameters)
    station = parameters.get("instrument", "")
    if not station:
        raise refuse(path, f"/{PARAMETERS_PATH} names no instrument (the station)")
    times = _record_times({name: field(name) for name in TIME_FIELDS})
    height = field("gdalt")

    unplaced = np.isnat(times) | ~np.isfinite(lat) | ~np.isfinite(lon) | ~np.isfinite(height)
    parts, screens = [], []
    for variable, (value, error) in winds.items():
        screen = Screen(value.size)
        screen.reject(unplaced, "fill value")
        screen.reject(~np.isfinite(value) | ~np.isfinite(error), "fill value")
        screen.reject((error == ERROR_ASSUMED) | (error == ERROR_KNOWN_BAD), "flagged")
        screen.reject(error <= 0.0, "precision")
        parts.append(
            profile_rows(
                {
                    "time": times,
                    "lat": lat,
                    "lon": lon,
                    "height_km": height,
                    "variable": variable,
                    "value": value,
                    "sigma": error,
                    "station": station,
                    "fwhm_km": np.nan,
                    "network": "radars",
                    "units": "m/s",
                },
                screen.keep,
            )
        )
        screens.append(screen)
    skipped: dict[str, int] = {}
    for screen in screens:
        for reason, n in screen.counts.items():
            skipped[reason] = skipped.get(reason, 0) + n
    return FileRead(pd.concat(parts, ignore_index=True), len(table) * len(winds), skipped)


def _dataset(path: Path, f: h5py.File, name: str) -> np.ndarray:
    """The values of the dataset ``name``; an error naming it if it is a group."""
    node = f[name]
    if not isinstance(node, h5py.Dataset):
        raise refuse(path, f"/{name} is a group, not a dataset (a Madrigal table)")
    return node[()]


def _experiment_parameters(path: Path, f: h5py.File) -> dict[str, str]:
    """``/Metadata/Experiment Parameters`` as ``{name: value}`` (empty if absent)."""
    if PARAMETERS_PATH not in f:
        return {}
    records = _dataset(path, f, PARAMETERS_PATH)
    fields = records.dtype.names or ()
    if "name" not in fields or "value" not in fields:
        return {}
    return {decoded(r["name"]).lower(): decoded(r["value"]) for r in records}


def _positions(
    path: Path, table: np.ndarray, names: dict[str, str], parameters: dict[str, str]
) -> tuple[np.ndarray, np.ndarray]:
    """``(lat, lon)`` per record: of the measurement, else of the instrument (table, then metadata)."""
    n = len(table)
    for lat_name, lon_name in (("gdlat", "glon"), ("gdlatr", "gdlonr")):
        if lat_name in names and lon_name in names:
            return as_float(table[names[lat_name]]), as_float(table[names[lon_name]])
    try:
        lat = float(parameters["instrument latitude"])
        lon = float(parameters["instrument longitude"])
    except (KeyError, ValueError):
        raise refuse(
            path,
            f"no position: /{TABLE_PATH} has neither gdlat/glon nor gdlatr/gdlonr and "
            f"/{PARAMETERS_PATH} gives no 'instrument latitude'/'instrument longitude'",
        ) from None
    return np.full(n, lat), np.full(n, lon)


def _record_times(fields: dict[str, np.ndarray]) -> np.ndarray:
    """``(N,)`` naive UTC datetime64[ns] of the records (NaT where a field is missing or invalid)."""
    ok = np.all([np.isfinite(v) for v in fields.values()], axis=0)
    days = pd.to_datetime(
        pd.DataFrame(
            {k: np.where(ok, fields[k], 1).astype(np.int64) for k in ("year", "month", "day")}
        ),
        errors="coerce",
    )
    seconds = np.where(ok, 3600.0 * fields["hour"] + 60.0 * fields["min"] + fields["sec"], 0.0)
    times = (days + pd.to_timedelta(seconds, unit="s")).to_numpy(dtype="datetime64[ns]")
    times[~ok] = np.datetime64("NaT")
    return times


READER = Reader(
    name="radar-madrigal",
    description="meteor-radar hourly winds, Madrigal HDF5 (Table Layout vn1/vn2, dvn1/dvn2, gdalt)",
    vertical="geometric",
    reference="CEDAR Madrigal HDF5 format (OpenMadrigal madrigal.cedar; metadata parcods.tab)",
    read=read_madrigal_winds,
)

__all__ = ["ERROR_ASSUMED", "ERROR_KNOWN_BAD", "READER", "WIND_MNEMONICS", "read_madrigal_winds"]
