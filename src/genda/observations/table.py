"""Observation tables: columns, conventions and validation.

An observation table is a :class:`pandas.DataFrame` with one row per observed
value (docs/observations.md):

=================  ===============  ====================================================
column             dtype            meaning
=================  ===============  ====================================================
``time``           datetime64[ns]   valid time, UTC (naive after validation)
``lat``            float64          degrees north, ``[-90, 90]``
``lon``            float64          degrees east; ``[-180, 360)`` accepted, ``[0, 360)``
                                    after validation
``alt_km``         float64          log-pressure altitude in km (:mod:`genda.constants`),
                                    within the grid's altitudes
``variable``       str              ``u``, ``v``, ``T`` or ``los`` (radar line of sight)
``value``          float64          the observed value, in the unit of the grid variable
                                    (m s-1 for ``u``, ``v``, ``los``; K for ``T``), within
                                    :data:`PHYSICAL_RANGES`
``sigma``          float64          observation-error standard deviation, same unit,
                                    within :data:`SIGMA_RANGES`
``station``        str              optional: the station or instrument ('' if none)
``azimuth_deg``    float64          ``los`` rows: beam azimuth, clockwise from north
``elevation_deg``  float64          ``los`` rows: beam elevation above the horizon, (0, 85]
``fwhm_km``        float64          optional: full width at half maximum of a Gaussian
                                    vertical kernel (limb and lidar profile points);
                                    NaN = a point value
=================  ===============  ====================================================

A line-of-sight value is ``cos(el) * (u sin(az) + v cos(az))`` (the vertical
wind is not observed; see :mod:`genda.observations.operators`).

:func:`validate_observations` turns any accepted table into this canonical one
(a new frame; the input is never changed) or raises :class:`ObservationError`
listing every problem with the row numbers concerned. Row numbers are 0-based
positions in the table (for a CSV file with a header, the line is row + 2).
Files (CSV, Parquet, NetCDF) are read and written by :mod:`genda.observations.files`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd

from genda.errors import GendaError, InvalidTypeError, InvalidValueError
from genda.grid import Grid
from genda.times import as_datetime64, iso
from genda.units import canonical_units

OBSERVATION_COLUMNS: tuple[str, ...] = (
    "time",
    "lat",
    "lon",
    "alt_km",
    "variable",
    "value",
    "sigma",
)
"""Required columns, in canonical order."""

OPTIONAL_COLUMNS: tuple[str, ...] = ("station", "azimuth_deg", "elevation_deg", "fwhm_km")
"""Optional columns; a validated table always has them (``''`` / NaN where absent)."""

OBSERVED_VARIABLES: tuple[str, ...] = ("u", "v", "T", "los")
"""Canonical names of what a row can observe."""

_FLOAT_COLUMNS = (
    "lat",
    "lon",
    "alt_km",
    "value",
    "sigma",
    "azimuth_deg",
    "elevation_deg",
    "fwhm_km",
)
_TEXT_COLUMNS = ("variable", "station", "network", "units")
_WIND = ("u", "v", "los")

# Accepted spellings (after lower-casing and trimming) of each canonical variable:
# the CMIP/CF names and those of the model-output readers (genda.storage.readers).
_ALIASES: dict[str, str] = {
    **dict.fromkeys(("u", "ua", "uwnd", "eastward_wind", "zonal_wind"), "u"),
    **dict.fromkeys(("v", "va", "vwnd", "northward_wind", "meridional_wind"), "v"),
    **dict.fromkeys(("t", "ta", "temp", "temperature", "air_temperature"), "T"),
    **dict.fromkeys(("los", "line_of_sight", "line_of_sight_wind", "radial_wind"), "los"),
}

# Units of ``value`` accepted in an optional ``units`` column, after canonical_units:
# (scale, offset) to the grid variable's unit. The spellings include UDUNITS' and
# CF's (``degree_Celsius``, ``degrees_Celsius``), as instrument files write them.
_SPEED_UNITS = {u: (1.0, 0.0) for u in ("m/s", "m s-1", "ms-1", "m.s-1", "m/sec", "m sec-1")}
_TEMPERATURE_UNITS = {u: (1.0, 0.0) for u in ("k", "kelvin", "degk", "deg_k", "degree_k")}
_TEMPERATURE_UNITS.update(
    {
        u: (1.0, 273.15)
        for u in (
            *("degc", "deg_c", "c", "°c", "celsius", "degrees_c", "degree_c"),
            *("degree_celsius", "degrees_celsius", "degree celsius", "degrees celsius"),
        )
    }
)
_UNITS = {"u": _SPEED_UNITS, "v": _SPEED_UNITS, "los": _SPEED_UNITS, "T": _TEMPERATURE_UNITS}

_MAX_ROWS_SHOWN = 5

# Physical plausibility, in the grid variables' units (m s-1, K). The bounds hold
# from 50 to 150 km, beyond the 80-120 km of the shipped priors, with a wide margin:
# - winds: MLT mean winds reach ~100 m/s and tides and gravity waves add as much;
#   the largest winds measured by meteor radars, lidars and rocket trails at
#   80-150 km are ~200-250 m/s. 400 m/s is beyond any of them: such a value is a
#   unit or decoding error (km/h, cm/s), not weather. A line-of-sight wind is a
#   projection of the horizontal wind, so it is bounded alike.
# - temperature: the coldest measured mesopause (polar summer) is ~100-110 K, and at
#   150 km the thermosphere is ~500-900 K over the solar cycle. Below 80 K or above
#   1000 K is no MLT temperature (often degrees Celsius read as kelvin).
PHYSICAL_RANGES: dict[str, tuple[float, float]] = {
    "u": (-400.0, 400.0),
    "v": (-400.0, 400.0),
    "los": (-400.0, 400.0),
    "T": (80.0, 1000.0),
}
"""Plausible ``(low, high)`` values per observed variable (m s-1 or K), inclusive.

Members are held to wider limits, what no atmosphere can hold
(:data:`genda.distributed.work.MEMBER_LIMITS`)."""

# sigma per variable: the floor keeps one observation from having (nearly) infinite
# weight: no MLT instrument measures winds to better than ~1 m/s or temperatures to
# better than ~0.5 K, and 1e-30 would make the guidance solve an ill-conditioned
# system. An error above the whole plausible range says the value is unknown (and
# its square overflows float32 beyond ~1e19).
SIGMA_RANGES: dict[str, tuple[float, float]] = {
    "u": (0.1, 400.0),
    "v": (0.1, 400.0),
    "los": (0.1, 400.0),
    "T": (0.1, 1000.0),
}
"""Accepted ``(floor, ceiling)`` of ``sigma`` per observed variable (m s-1 or K)."""

_UNIT_NAMES = {"u": "m/s", "v": "m/s", "los": "m/s", "T": "K"}

CELSIUS_MEDIAN_K = 100.0
"""A ``T`` column without units whose median is below this (K) looks like degrees Celsius:
no MLT temperature profile averages below ~130 K, while Celsius values there are negative."""


class ObservationError(GendaError, ValueError):
    """An observation table or file is missing columns or has invalid rows.

    The message names the source (file), each problem and the rows concerned;
    ``problems`` holds the problems one by one.
    """

    def __init__(self, message: str, problems: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.problems: tuple[str, ...] = tuple(problems)


# ---------------------------------------------------------------------------- helpers
def _rows(mask: np.ndarray) -> str:
    """``"rows 3, 7, 9"`` or ``"12 rows, first 3, 7, 9, 10, 15"`` for a boolean mask."""
    positions = np.flatnonzero(mask)
    shown = ", ".join(str(p) for p in positions[:_MAX_ROWS_SHOWN])
    if positions.size == 1:
        return f"row {shown}"
    if positions.size <= _MAX_ROWS_SHOWN:
        return f"rows {shown}"
    return f"{positions.size} rows, first {shown}"


def _as_text(series: pd.Series) -> pd.Series:
    """Strings, ``''`` for missing values, in the default string dtype of this pandas."""
    values = series.astype(object)
    return values.where(values.notna(), "").astype(str)


def _as_float(series: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """``(float64 values, mask of entries that are present but not numbers)``."""
    numbers = pd.to_numeric(series, errors="coerce").astype(np.float64)
    not_numbers = series.notna().to_numpy() & numbers.isna().to_numpy()
    return numbers, not_numbers


def _as_times(series: pd.Series) -> pd.Series | None:
    """Times as naive UTC datetime64[ns] (NaT where unparseable), or None if not time-like."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return None  # epoch numbers are ambiguous (s? ns?): ask for datetimes or ISO strings
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        parsed = series.dt.tz_convert("UTC").dt.tz_localize(None)
    elif pd.api.types.is_datetime64_dtype(series):
        parsed = series
    else:
        # utc=True reads offsets ("+02:00") correctly and takes naive strings as UTC.
        parsed = pd.to_datetime(series, errors="coerce", utc=True, format="mixed")
        parsed = parsed.dt.tz_localize(None)
    try:
        return parsed.astype("datetime64[ns]")
    except (OverflowError, ValueError, pd.errors.OutOfBoundsDatetime):
        return None


def window_bounds(time: np.datetime64, hours: float) -> tuple[np.datetime64, np.datetime64]:
    """The assimilation window ``time +- hours / 2`` (inclusive bounds, to the second)."""
    half = np.timedelta64(round(float(hours) * 1800.0), "s")
    return (time - half, time + half)


# ---------------------------------------------------------------------------- validation
def validate_observations(
    df: pd.DataFrame,
    grid: Grid,
    window: tuple[np.datetime64, np.datetime64] | None = None,
    source: str = "observations",
    *,
    check_values: bool = True,
) -> pd.DataFrame:
    """Check an observation table against a grid and return its canonical form.

    Args:
        df: the table (see the module docstring); not modified.
        grid: the grid the observations will be compared with: its altitude
            range and its variables (``los`` needs ``u`` and ``v``).
        window: ``(start, end)``, inclusive; rows outside are errors.
        source: what the table is (a file name), for the messages.
        check_values: check ``value`` against :data:`PHYSICAL_RANGES` (and ``T``
            for degrees Celsius); ``False`` only for a table of placeholder values
            (the geometry of synthetic observations). ``sigma`` is always checked.

    Returns:
        A new frame with index ``0..M-1`` and columns :data:`OBSERVATION_COLUMNS`,
        then :data:`OPTIONAL_COLUMNS`, then any other columns of ``df`` unchanged
        (``units`` is dropped once applied): ``time`` naive UTC datetime64[ns],
        ``lon`` in ``[0, 360)``, ``los`` azimuths in ``[0, 360)``, canonical
        variable names, ``value`` in the grid variable's unit, float64 numbers.

    Raises:
        ObservationError: naming ``source``, every problem found and its rows
            (see docs/observations.md for the rules).
    """
    _check_structure(df, source)
    table = df.reset_index(drop=True).copy(deep=True)
    n = len(table)
    problems: list[str] = []
    check = _checker(problems)

    times, time_ok = _parse_times(table, check, problems)
    not_number = _parse_numbers(table, check)
    names = _parse_variables(table, grid, check, problems)
    table, has_unit = _convert_units(table, names, problems)
    _check_ranges(table, grid, names, has_unit, check, problems, check_values)
    is_los = _check_beams_and_kernels(table, names, not_number, check)
    _make_canonical(table, is_los)
    _check_duplicates_and_window(table, times, time_ok, window, check, problems)

    if problems:
        listing = "\n  - ".join(problems)
        raise ObservationError(
            f"{source}: {len(problems)} problem(s) in {n} observation(s) "
            f"(rows counted from 0):\n  - {listing}",
            problems,
        )

    columns = [*OBSERVATION_COLUMNS, *OPTIONAL_COLUMNS]
    others = [c for c in table.columns if c not in columns]
    return table[columns + others]


def _checker(problems: list[str]) -> Callable[[np.ndarray, str], None]:
    """A ``check(mask, what)`` that adds ``"<what> in <rows>"`` to ``problems`` if any row is set."""

    def check(mask: np.ndarray, what: str) -> None:
        if np.any(mask):
            problems.append(f"{what} in {_rows(mask)}")

    return check


def _check_structure(df: pd.DataFrame, source: str) -> None:
    """Refuse at once what is no table: not a frame, missing columns, no rows, duplicated columns."""
    if not isinstance(df, pd.DataFrame):
        raise InvalidTypeError(f"{source}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in OBSERVATION_COLUMNS if c not in df.columns]
    if missing:
        raise ObservationError(
            f"{source}: missing required column(s) {missing}; columns present: "
            f"{[str(c) for c in df.columns]}",
            [f"missing column {c}" for c in missing],
        )
    if len(df) == 0:
        raise ObservationError(f"{source}: the table holds no observations", ["empty table"])
    if df.columns.duplicated().any():
        dup = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
        raise ObservationError(f"{source}: duplicated column name(s) {dup}", ["duplicated columns"])


def _parse_times(
    table: pd.DataFrame, check: Callable[[np.ndarray, str], None], problems: list[str]
) -> tuple[pd.Series | None, np.ndarray]:
    """Parse ``time`` in place; ``(times or None if not time-like, (M,) mask of valid times)``."""
    times = _as_times(table["time"])
    if times is None:
        problems.append(
            f"column 'time' has dtype {table['time'].dtype}; expected datetimes or ISO 8601 strings"
        )
        time_ok = np.zeros(len(table), dtype=bool)
    else:
        time_ok = times.notna().to_numpy()
        check(~time_ok, "time missing or not a date-time")
        table["time"] = times
    return times, time_ok


def _parse_numbers(
    table: pd.DataFrame, check: Callable[[np.ndarray, str], None]
) -> dict[str, np.ndarray]:
    """Make the number columns float64 in place; the masks of entries that are not numbers."""
    # An entry that is not a number is reported once, not again as missing.
    not_number: dict[str, np.ndarray] = {}
    for column in _FLOAT_COLUMNS:
        if column in table.columns:
            table[column], not_number[column] = _as_float(table[column])
            check(not_number[column], f"{column} is not a number")
    for column in ("lat", "lon", "alt_km", "value", "sigma"):
        values = table[column].to_numpy()
        check(~np.isfinite(values) & ~not_number[column], f"{column} is missing, NaN or infinite")
    return not_number


def _parse_variables(
    table: pd.DataFrame,
    grid: Grid,
    check: Callable[[np.ndarray, str], None],
    problems: list[str],
) -> pd.Series:
    """Canonical variable names (``''`` if unknown), set in place and checked against the grid."""
    raw_names = table["variable"]
    names = raw_names.map(lambda s: _ALIASES.get(s.strip().lower()) if isinstance(s, str) else None)
    unknown = names.isna().to_numpy()
    if unknown.any():
        shown = sorted({str(s) for s in raw_names[unknown]})[:_MAX_ROWS_SHOWN]
        problems.append(
            f"unknown variable(s) {shown} in {_rows(unknown)} "
            f"(expected u, v, T or los, or an alias such as ua, eastward_wind, ta, temperature)"
        )
    names = names.fillna("")
    for name in OBSERVED_VARIABLES:
        needed = ("u", "v") if name == "los" else (name,)
        absent = [v for v in needed if v not in grid.variables]
        if absent:
            check(
                (names == name).to_numpy(),
                f"variable {name!r} needs {' and '.join(absent)}, which the grid does not carry "
                f"(grid variables: {', '.join(grid.variables)})",
            )
    table["variable"] = names.astype(str)
    return names


def _convert_units(
    table: pd.DataFrame, names: pd.Series, problems: list[str]
) -> tuple[pd.DataFrame, np.ndarray]:
    """Apply and drop a ``units`` column; ``(table, (M,) mask of rows whose unit was given)``."""
    has_unit = np.zeros(len(table), dtype=bool)
    if "units" in table.columns:
        has_unit = _apply_units(table, names, problems)
        table = table.drop(columns="units")
    return table, has_unit


def _check_ranges(
    table: pd.DataFrame,
    grid: Grid,
    names: pd.Series,
    has_unit: np.ndarray,
    check: Callable[[np.ndarray, str], None],
    problems: list[str],
    check_values: bool,
) -> None:
    """Report finite values out of range (the others are reported by :func:`_parse_numbers`)."""
    lat = table["lat"].to_numpy()
    lon = table["lon"].to_numpy()
    alt = table["alt_km"].to_numpy()
    sigma = table["sigma"].to_numpy()
    check(np.isfinite(sigma) & (sigma <= 0), "sigma <= 0")
    _check_physical(
        table["value"].to_numpy(), sigma, names, has_unit, check, problems, check_values
    )
    check(np.isfinite(lat) & (np.abs(lat) > 90), "|lat| > 90")
    check(np.isfinite(lon) & ((lon < -180) | (lon >= 360)), "lon outside [-180, 360)")
    lo, hi = float(grid.altitude.min()), float(grid.altitude.max())
    check(
        np.isfinite(alt) & ((alt < lo) | (alt > hi)),
        f"alt_km outside the grid's altitudes [{lo:g}, {hi:g}] km",
    )


def _check_beams_and_kernels(
    table: pd.DataFrame,
    names: pd.Series,
    not_number: dict[str, np.ndarray],
    check: Callable[[np.ndarray, str], None],
) -> np.ndarray:
    """Check radar beams and vertical kernels, adding absent columns; the ``(M,)`` ``los`` mask."""
    is_los = (names == "los").to_numpy()
    for column in ("azimuth_deg", "elevation_deg"):
        if column not in table.columns:
            check(is_los, f"los observation without a {column!r} column")
            table[column] = np.nan
        else:
            values = table[column].to_numpy()
            check(
                is_los & ~np.isfinite(values) & ~not_number[column],
                f"los {column} missing, NaN or infinite",
            )
    elevation = table["elevation_deg"].to_numpy()
    # Above 85 degrees a beam sees almost no horizontal wind (cos 85 = 0.09):
    # such a row would count as an observation while constraining nothing.
    check(is_los & ((elevation <= 0) | (elevation > 85)), "los elevation_deg outside (0, 85]")

    # Vertical kernels.
    if "fwhm_km" in table.columns:
        fwhm = table["fwhm_km"].to_numpy()
        check(np.isinf(fwhm), "fwhm_km is infinite")
        check(fwhm <= 0, "fwhm_km <= 0")
    else:
        table["fwhm_km"] = np.nan
    return is_los


def _make_canonical(table: pd.DataFrame, is_los: np.ndarray) -> None:
    """Wrap longitudes and azimuths to ``[0, 360)``, blank non-``los`` beams, text as strings."""
    # -1e-20 % 360 rounds to 360.0.
    wrapped = np.mod(table["lon"].to_numpy(), 360.0)
    table["lon"] = np.where(wrapped >= 360.0, 0.0, wrapped)
    azimuth = np.mod(table["azimuth_deg"].to_numpy(), 360.0)
    table["azimuth_deg"] = np.where(is_los, np.where(azimuth >= 360.0, 0.0, azimuth), np.nan)
    table["elevation_deg"] = np.where(is_los, table["elevation_deg"].to_numpy(), np.nan)

    station = table["station"] if "station" in table.columns else pd.Series([""] * len(table))
    table["station"] = _as_text(station)
    if "network" in table.columns:
        table["network"] = _as_text(table["network"])


def _check_duplicates_and_window(
    table: pd.DataFrame,
    times: pd.Series | None,
    time_ok: np.ndarray,
    window: tuple[np.datetime64, np.datetime64] | None,
    check: Callable[[np.ndarray, str], None],
    problems: list[str],
) -> None:
    """Report repeated observations and times outside ``window`` (whose end must not precede it)."""
    # Duplicates (after wrapping: -10 and 350 degrees east are one place).
    if time_ok.all():
        repeated = _duplicates(table)
        if repeated:
            problems.append(
                "duplicated observations (same time, lat, lon, alt_km, variable, station, azimuth): "
                + repeated
            )

    # Window.
    if window is not None and times is not None:
        start, end = as_datetime64(window[0]), as_datetime64(window[1])
        if end < start:
            raise InvalidValueError(f"window end {end} is before its start {start}")
        t = table["time"].to_numpy()
        check(
            time_ok & ((t < start) | (t > end)),
            f"time outside the window [{iso(start)}, {iso(end)}]",
        )


def _duplicates(table: pd.DataFrame) -> str:
    """``"row 5 repeats row 1, ..."`` for rows that repeat an earlier one, ``""`` if none."""
    key = table[["time", "lat", "lon", "alt_km", "variable", "station", "azimuth_deg"]]
    repeated = np.flatnonzero(key.duplicated(keep="first").to_numpy())
    if repeated.size == 0:
        return ""
    group = key.groupby(list(key.columns), sort=False, dropna=False).ngroup().to_numpy()
    first = {g: i for i, g in reversed(list(enumerate(group)))}
    pairs = [f"row {i} repeats row {first[group[i]]}" for i in repeated[:_MAX_ROWS_SHOWN]]
    more = f" (and {repeated.size - len(pairs)} more)" if repeated.size > len(pairs) else ""
    return ", ".join(pairs) + more


def _check_physical(
    value: np.ndarray,
    sigma: np.ndarray,
    names: pd.Series,
    has_unit: np.ndarray,
    check: Callable[[np.ndarray, str], None],
    problems: list[str],
    check_values: bool = True,
) -> None:
    """Report values and errors outside :data:`PHYSICAL_RANGES` / :data:`SIGMA_RANGES`.

    ``value``, ``sigma``: ``(M,)`` in the grid variables' units; ``has_unit``:
    ``(M,)`` rows whose ``units`` entry was given. Non-finite entries are
    reported elsewhere and skipped here; so are the values when not ``check_values``.
    """
    finite = np.isfinite(value) & check_values
    is_t = (names == "T").to_numpy()
    celsius = _looks_like_celsius(value, is_t & finite & ~has_unit)
    if celsius.any():
        shown = value[celsius]
        problems.append(
            f"T values look like degrees Celsius, not kelvin, in {_rows(celsius)} (median "
            f"{np.median(shown):.4g}, {int(np.sum(shown <= 0))} at or below 0 K): a T value "
            "without a unit is read as kelvin; give the unit in a 'units' column "
            "('degC' is converted to K)"
        )
    for name, (low, high) in PHYSICAL_RANGES.items():
        rows = (names == name).to_numpy()
        unit = _UNIT_NAMES[name]
        check(
            rows & finite & ~celsius & ((value < low) | (value > high)),
            f"{name} value outside the plausible range [{low:g}, {high:g}] {unit}",
        )
        floor, ceiling = SIGMA_RANGES[name]
        given = rows & np.isfinite(sigma) & (sigma > 0)
        check(given & (sigma < floor), f"{name} sigma below {floor:g} {unit}")
        check(given & (sigma > ceiling), f"{name} sigma above {ceiling:g} {unit}")


def unit_conversion(variable: str, units: str) -> tuple[float, float] | None:
    """``(scale, offset)`` that take ``variable``'s values in ``units`` to the grid variable's unit.

    Args:
        variable: an observed variable or an alias of one (``u``, ``ta``, ...).
        units: a spelling of a unit (compared after :func:`~genda.units.canonical_units`):
            m s-1 for winds, K or degrees Celsius for ``T``.

    Returns:
        ``value * scale + offset`` is in m s-1 or K; an uncertainty (a difference)
        takes the scale only (an error of 1 degC is one of 1 K). ``None`` for an
        unknown variable or a unit not accepted for it.
    """
    name = _ALIASES.get(variable.strip().lower())
    if name is None:
        return None
    return _UNITS[name].get(canonical_units(units))


def implausible_rows(df: pd.DataFrame) -> np.ndarray:
    """``(M,)`` rows whose value or ``sigma`` lies outside :data:`PHYSICAL_RANGES` / :data:`SIGMA_RANGES`.

    Both are compared in the grid variables' units, after the ``units`` column
    (if any) is applied, with the bounds :func:`validate_observations` uses.
    Rows it reports for another reason are not marked here: an unknown variable
    or unit, a value or ``sigma`` that is no finite number, ``sigma <= 0``, and
    ``T`` rows without a unit that look like degrees Celsius (refused together,
    with a hint at the unit, rather than dropped one by one).
    """
    names = df["variable"].map(
        lambda s: _ALIASES.get(s.strip().lower()) if isinstance(s, str) else None
    )
    names = names.fillna("").astype(str).reset_index(drop=True)
    value = pd.to_numeric(df["value"], errors="coerce").to_numpy(dtype=np.float64)
    sigma = pd.to_numeric(df["sigma"], errors="coerce").to_numpy(dtype=np.float64)
    has_unit = np.zeros(len(df), dtype=bool)
    if "units" in df.columns:
        units = _as_text(df["units"]).map(canonical_units).to_numpy(dtype=object)
        has_unit = units != ""
        factors = [
            _UNITS[n].get(u, (np.nan, np.nan)) if n and u else (1.0, 0.0)
            for n, u in zip(names, units, strict=True)
        ]
        scale, offset = np.array(factors, dtype=np.float64).reshape(-1, 2).T
        value, sigma = value * scale + offset, sigma * scale
    is_t = (names == "T").to_numpy()
    celsius = _looks_like_celsius(value, is_t & np.isfinite(value) & ~has_unit)
    marked = np.zeros(len(df), dtype=bool)
    for name, (low, high) in PHYSICAL_RANGES.items():
        rows = (names == name).to_numpy()
        floor, ceiling = SIGMA_RANGES[name]
        bad_value = np.isfinite(value) & ~celsius & ((value < low) | (value > high))
        bad_sigma = np.isfinite(sigma) & (sigma > 0) & ((sigma < floor) | (sigma > ceiling))
        marked |= rows & (bad_value | bad_sigma)
    return marked


def _looks_like_celsius(value: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """``(M,)`` mask of the ``candidates`` (unitless ``T`` rows) that look like degrees Celsius.

    All of them when their median is below :data:`CELSIUS_MEDIAN_K`, else
    those at or below 0 (no temperature is, in kelvin).
    """
    if not candidates.any():
        return np.zeros_like(candidates)
    if np.median(value[candidates]) < CELSIUS_MEDIAN_K:
        return candidates.copy()
    return candidates & (value <= 0)


def _apply_units(table: pd.DataFrame, names: pd.Series, problems: list[str]) -> np.ndarray:
    """Convert ``value`` to the grid variable's unit using the ``units`` column (in place).

    A missing unit (NaN or '') means the grid variable's unit already. ``sigma``
    is a difference and only needs the scale. Returns the ``(M,)`` mask of rows
    whose unit was given.
    """
    units = _as_text(table["units"]).map(canonical_units).astype(object)
    scale = np.ones(len(table))
    offset = np.zeros(len(table))
    rejected = np.zeros(len(table), dtype=bool)
    for name, accepted in _UNITS.items():
        rows = (names == name).to_numpy() & (units != "").to_numpy()
        given = units[rows]
        factor = given.map({u: f for u, (f, _) in accepted.items()}).to_numpy(dtype=np.float64)
        shift = given.map({u: o for u, (_, o) in accepted.items()}).to_numpy(dtype=np.float64)
        known = np.isfinite(factor)
        rejected[np.flatnonzero(rows)[~known]] = True
        scale[np.flatnonzero(rows)[known]] = factor[known]
        offset[np.flatnonzero(rows)[known]] = shift[known]
    if rejected.any():
        pairs = dict.fromkeys(
            f"{unit!r} for {name}"
            for unit, name in zip(table["units"][rejected], names[rejected], strict=True)
        )
        shown = ", ".join(list(pairs)[:_MAX_ROWS_SHOWN])
        problems.append(
            f"units not accepted in {_rows(rejected)}: {shown} "
            "(winds: m s-1, m/s, m s**-1; temperature: K, degC)"
        )
    # A value in a unit not accepted cannot be converted: NaN keeps the range checks
    # off it (the table is refused for its unit anyway).
    offset[rejected] = np.nan
    table["value"] = table["value"].to_numpy() * scale + offset
    table["sigma"] = table["sigma"].to_numpy() * scale
    return (units != "").to_numpy()


__all__ = [
    "CELSIUS_MEDIAN_K",
    "OBSERVATION_COLUMNS",
    "OBSERVED_VARIABLES",
    "OPTIONAL_COLUMNS",
    "PHYSICAL_RANGES",
    "SIGMA_RANGES",
    "ObservationError",
    "implausible_rows",
    "unit_conversion",
    "validate_observations",
]
