"""Aura MLS Level 2 temperature (L2GP files, HDF-EOS5).

Layout (EOS MLS Level 2 GP file format, described in the MLS data quality and
description documents, section 1; HARP's ``MLS_L2_T`` ingestion reads the same
paths):

- ``/HDFEOS/SWATHS/Temperature/Data Fields/``: ``Temperature`` (or
  ``L2gpValue``, the same values), ``(nTimes, nLevels)``, K;
  ``L2gpPrecision`` ``(nTimes, nLevels)``, K (negative: do not use);
  ``Status`` (int), ``Quality``, ``Convergence`` ``(nTimes,)``;
- ``/HDFEOS/SWATHS/Temperature/Geolocation Fields/``: ``Latitude``,
  ``Longitude`` (degrees), ``Time`` ``(nTimes,)`` (TAI93: seconds since
  1993-01-01T00:00:00 UTC counted in TAI, leap seconds included),
  ``Pressure`` ``(nLevels,)`` (hPa);
- missing values carry the dataset attribute ``MissingValue`` (also
  ``_FillValue``), -999.99 in the files.

Screening, in this order (each value is counted under the first it fails):
fill values; the recommended pressure range (:data:`MLS_T_PRESSURE_RANGE_HPA`);
``Status`` odd (:data:`MLS_STATUS_DO_NOT_USE`: bit 0 set, "do not use"; the
other bits, 2 "suspect", 16/32 cloud, 64 no GEOS a priori, are informational
and, for temperature, do not reject a profile); ``Quality`` not above the
threshold of its pressure (:data:`MLS_T_QUALITY_THRESHOLDS`); ``Convergence``
not below :data:`MLS_T_CONVERGENCE_MAX`; ``L2gpPrecision`` not positive.

The thresholds are those of the screening table of the MLS data quality
documents for Temperature (Table 1.1.1): the values of the v4.2x issue
(:data:`MLS_DQD_V4`), which HARP's ``MLS_L2_T`` ingestion also applies; the
v5.0x issue (:data:`MLS_DQD`) is the one for v5 files, and the constants below
are to be checked against its Table 1.1.1 whenever they change. The vertical resolution
(full width at half maximum of the averaging kernels) becomes ``fwhm_km``
(:func:`mls_temperature_fwhm_km`); ``sigma`` is ``L2gpPrecision``; ``alt_km``
is the log-pressure altitude of ``Pressure``.

Times: TAI93 is converted to UTC by removing the leap seconds inserted since
1993-01-01 (:data:`LEAP_SECONDS_SINCE_1993`, from IERS Bulletin C). A time
within a leap second maps onto 23:59:59 of its day, as POSIX time does.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from genda.constants import HPA_TO_PA, pressure_to_altitude_km
from genda.observations.readers.common import (
    FileRead,
    Reader,
    Screen,
    as_float,
    profile_rows,
    refuse,
)

MLS_DQD = (
    "Livesey, N. J. et al., EOS MLS Version 5.0x Level 2 and 3 data quality and description "
    "document (JPL D-105336): Table 1.1.1 (screening) and the Temperature section"
)
"""The document for MLS v5 files, whose screening the constants below implement."""

MLS_DQD_V4 = (
    "Livesey, N. J. et al., EOS MLS Version 4.2x Level 2 and 3 data quality and description "
    "document (JPL D-33509), Table 1.1.1 (as in HARP's MLS_L2_T ingestion)"
)
"""The issue whose Table 1.1.1 values the constants below carry."""

MLS_T_PRESSURE_RANGE_HPA: tuple[float, float] = (261.0, 0.001)
"""Recommended pressure range of MLS temperature, ``(highest, lowest)`` hPa (:data:`MLS_DQD_V4`)."""

MLS_T_QUALITY_THRESHOLDS: tuple[tuple[float, float], ...] = ((83.0, 0.2), (261.0, 0.9))
"""``(up to pressure hPa, Quality threshold)``: use a profile's values at pressures up to 83 hPa
only with Quality > 0.2, and at higher pressures (100-261 hPa) only with Quality > 0.9."""

MLS_T_CONVERGENCE_MAX = 1.03
"""Use a temperature profile only with Convergence < 1.03 (:data:`MLS_DQD_V4`)."""

MLS_STATUS_DO_NOT_USE = 1
"""Status bit 0: do not use the profile (the Status of a usable profile is even)."""

MLS_T_RESOLUTION_KM: tuple[tuple[float, float], ...] = ((316.0, 6.0), (31.6, 3.0), (0.001, 13.0))
"""``(pressure hPa, vertical resolution km)``: the full width at half maximum of the
temperature averaging kernels, 6 km at 316 hPa, 3 km at 31.6 hPa, 13 km at 0.001 hPa
(Schwartz et al. 2008, JGR 113, D15S11, the validation of MLS temperature); between them
linear in log pressure, constant beyond. To be replaced by the resolution table of the
Temperature section of :data:`MLS_DQD` where it differs."""

MLS_MISSING_VALUE = -999.99
"""The MLS missing value, used when a dataset has no ``MissingValue`` attribute."""

SWATH = "HDFEOS/SWATHS/Temperature"
TAI93_EPOCH = np.datetime64("1993-01-01T00:00:00", "ns")

LEAP_SECONDS_SINCE_1993: tuple[str, ...] = (
    "1993-07-01",
    "1994-07-01",
    "1996-01-01",
    "1997-07-01",
    "1999-01-01",
    "2006-01-01",
    "2009-01-01",
    "2012-07-01",
    "2015-07-01",
    "2017-01-01",
)
"""UTC days that began after a leap second, since the TAI93 epoch (IERS Bulletin C).

None has been announced after 2017-01-01 up to IERS Bulletin C 70 (July 2025); a
later one must be added here. Written out rather than taken from astropy (not a
dependency of genda) for ten dates."""

# Relative tolerance on the pressure bounds: the MLS levels are 10^(-k/6) hPa,
# written in single precision (261.0157 hPa is the 261 hPa level).
_PRESSURE_RTOL = 1e-3


def tai93_to_utc(seconds: np.ndarray) -> np.ndarray:
    """Naive UTC datetime64[ns] of TAI93 times (s); NaT where not finite.

    ``UTC = 1993-01-01 + (seconds - leap seconds inserted before the instant)``.
    """
    seconds = as_float(seconds)
    days = np.array(LEAP_SECONDS_SINCE_1993, dtype="datetime64[D]") - TAI93_EPOCH.astype(
        "datetime64[D]"
    )
    # The k-th leap second (k = 1, 2, ...) starts at TAI93 days_k * 86400 + k - 1.
    starts = days.astype(np.float64) * 86400.0 + np.arange(len(days))
    leaps = np.searchsorted(starts, seconds, side="right")
    ok = np.isfinite(seconds)
    elapsed_ns = np.round(np.where(ok, seconds - leaps, 0.0) * 1e9).astype(np.int64)
    times = TAI93_EPOCH + elapsed_ns.astype("timedelta64[ns]")
    times[~ok] = np.datetime64("NaT")
    return times


def mls_temperature_fwhm_km(pressure_hpa: np.ndarray) -> np.ndarray:
    """Vertical resolution (km) of MLS temperature at ``pressure_hpa`` (:data:`MLS_T_RESOLUTION_KM`)."""
    anchors = sorted(MLS_T_RESOLUTION_KM)  # increasing pressure
    log_p = np.log10([p for p, _ in anchors])
    return np.interp(np.log10(as_float(pressure_hpa)), log_p, [w for _, w in anchors])


def mls_quality_threshold(pressure_hpa: np.ndarray) -> np.ndarray:
    """The Quality threshold at each pressure (:data:`MLS_T_QUALITY_THRESHOLDS`)."""
    pressure = as_float(pressure_hpa)
    threshold = np.full(pressure.shape, MLS_T_QUALITY_THRESHOLDS[-1][1])
    for up_to, value in reversed(MLS_T_QUALITY_THRESHOLDS):
        threshold = np.where(pressure <= up_to * (1 + _PRESSURE_RTOL), value, threshold)
    return threshold


def read_mls_temperature(path: Path) -> FileRead:
    """Read and screen the temperatures of an MLS L2GP file (module docstring).

    Returns:
        Rows of ``T`` with ``alt_km`` from ``Pressure``, ``sigma`` =
        ``L2gpPrecision``, ``fwhm_km`` the vertical resolution, ``station`` ``"MLS"``.

    Raises:
        InstrumentFileError: not HDF5, no Temperature swath, a field missing or of the wrong shape.
    """
    try:
        with h5py.File(path, "r") as f:
            if SWATH not in f:
                raise refuse(path, f"no /{SWATH} swath (not an MLS L2GP temperature file)")
            swath = f[SWATH]
            data = _group(path, swath, "Data Fields")
            geo = _group(path, swath, "Geolocation Fields")
            value_name = next((n for n in ("Temperature", "L2gpValue") if n in data), None)
            if value_name is None:
                raise refuse(path, f"/{SWATH}/Data Fields has neither Temperature nor L2gpValue")
            value = _field(path, data, value_name)
            precision = _field(path, data, "L2gpPrecision")
            profile = {
                name: _field(path, data, name) for name in ("Status", "Quality", "Convergence")
            }
            position = {name: _field(path, geo, name) for name in ("Latitude", "Longitude", "Time")}
            pressure = _field(path, geo, "Pressure")
    except OSError as exc:
        raise refuse(path, f"cannot be read as HDF5 ({exc})") from exc
    n_times, n_levels = _check_shapes(path, value, precision, profile, position, pressure)

    p = np.broadcast_to(pressure[None, :], (n_times, n_levels)).ravel()
    per_profile = {k: np.repeat(v, n_levels) for k, v in {**profile, **position}.items()}
    temperature, sigma = value.ravel(), precision.ravel()
    highest, lowest = MLS_T_PRESSURE_RANGE_HPA
    status = np.where(np.isfinite(per_profile["Status"]), per_profile["Status"], 1).astype(np.int64)

    screen = Screen(temperature.size)
    for values in (temperature, sigma, p, per_profile["Latitude"], per_profile["Longitude"]):
        screen.reject(~np.isfinite(values), "fill value")
    screen.reject(~np.isfinite(per_profile["Time"]), "fill value")
    screen.reject(
        (p > highest * (1 + _PRESSURE_RTOL)) | (p < lowest * (1 - _PRESSURE_RTOL)), "pressure range"
    )
    screen.reject((status & MLS_STATUS_DO_NOT_USE) != 0, "status")
    quality = np.nan_to_num(per_profile["Quality"], nan=-np.inf)
    screen.reject(quality <= mls_quality_threshold(p), "quality")
    convergence = np.nan_to_num(per_profile["Convergence"], nan=np.inf)
    screen.reject(convergence >= MLS_T_CONVERGENCE_MAX, "convergence")
    screen.reject(sigma <= 0.0, "precision")

    keep = screen.keep
    alt_km = np.full(p.size, np.nan)
    alt_km[keep] = pressure_to_altitude_km(p[keep] * HPA_TO_PA)
    table = profile_rows(
        {
            "time": tai93_to_utc(per_profile["Time"]),
            "lat": per_profile["Latitude"],
            "lon": per_profile["Longitude"],
            "alt_km": alt_km,
            "variable": "T",
            "value": temperature,
            "sigma": sigma,
            "station": "MLS",
            "fwhm_km": mls_temperature_fwhm_km(np.where(np.isfinite(p) & (p > 0), p, 1.0)),
            "network": "mls",
            "units": "K",
        },
        keep,
    )
    return FileRead(table, temperature.size, screen.counts)


def _group(path: Path, swath: h5py.Group | h5py.Dataset, name: str) -> h5py.Group:
    """The group ``name`` of the swath; an error naming it if it is missing or no group."""
    if not isinstance(swath, h5py.Group):
        raise refuse(path, f"/{SWATH} is a dataset, not a group (the swath)")
    if name not in swath:
        raise refuse(path, f"no /{SWATH}/{name} group")
    if not isinstance(swath[name], h5py.Group):
        raise refuse(path, f"/{SWATH}/{name} is a dataset, not a group")
    return swath[name]


def _field(path: Path, group: h5py.Group, name: str) -> np.ndarray:
    """A dataset as float64 with its missing values as NaN."""
    if name not in group:
        raise refuse(path, f"no {group.name}/{name} dataset")
    dataset = group[name]
    if not isinstance(dataset, h5py.Dataset):
        raise refuse(path, f"{dataset.name} is a group, not a dataset")
    raw = dataset[()]
    try:
        values = as_float(raw)
    except (TypeError, ValueError):
        raise refuse(path, f"{dataset.name} holds {raw.dtype} values, not numbers") from None
    for attr in ("MissingValue", "_FillValue"):
        if attr in dataset.attrs:
            values[np.isin(raw, _missing_value(path, dataset, attr, raw.dtype))] = np.nan
    if raw.dtype.kind == "f":
        values[raw == np.asarray(MLS_MISSING_VALUE, dtype=raw.dtype)] = np.nan
    return values


def _missing_value(path: Path, dataset: h5py.Dataset, attr: str, dtype: np.dtype) -> np.ndarray:
    """The values of ``dataset``'s attribute ``attr`` in the dataset's ``dtype``, flattened.

    A number written as text (``"-999.99"``) is read as that number; anything
    else that is no number is an error naming the file, the dataset and the attribute.
    """
    value = dataset.attrs[attr]
    try:
        return np.asarray(value).astype(np.float64).astype(dtype).ravel()
    except (TypeError, ValueError):
        raise refuse(path, f"{dataset.name} attribute {attr} = {value!r} is not a number") from None


def _check_shapes(
    path: Path,
    value: np.ndarray,
    precision: np.ndarray,
    profile: dict[str, np.ndarray],
    position: dict[str, np.ndarray],
    pressure: np.ndarray,
) -> tuple[int, int]:
    """``(nTimes, nLevels)``, after checking every field against the temperature's shape."""
    if value.ndim != 2:
        raise refuse(path, f"temperature has shape {value.shape}; expected (nTimes, nLevels)")
    n_times, n_levels = value.shape
    expected = {
        "L2gpPrecision": (value.shape, precision.shape),
        "Pressure": ((n_levels,), pressure.shape),
    }
    expected.update({name: ((n_times,), v.shape) for name, v in {**profile, **position}.items()})
    wrong = [
        f"{name} {got} (expected {want})" for name, (want, got) in expected.items() if want != got
    ]
    if wrong:
        raise refuse(path, f"fields of the wrong shape: {', '.join(wrong)}")
    return n_times, n_levels


READER = Reader(
    name="mls",
    description="Aura MLS Level 2 temperature, HDF-EOS5 L2GP (screened: quality document Table 1.1.1)",
    vertical="log-pressure",
    reference=MLS_DQD,
    read=read_mls_temperature,
)

__all__ = [
    "LEAP_SECONDS_SINCE_1993",
    "MLS_DQD",
    "MLS_DQD_V4",
    "MLS_MISSING_VALUE",
    "MLS_STATUS_DO_NOT_USE",
    "MLS_T_CONVERGENCE_MAX",
    "MLS_T_PRESSURE_RANGE_HPA",
    "MLS_T_QUALITY_THRESHOLDS",
    "MLS_T_RESOLUTION_KM",
    "READER",
    "mls_quality_threshold",
    "mls_temperature_fwhm_km",
    "read_mls_temperature",
    "tai93_to_utc",
]
