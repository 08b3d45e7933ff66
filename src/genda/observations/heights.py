"""Geometric height of log-pressure levels: placing observations given in geometric height.

genda's vertical coordinate is log-pressure altitude ``z* = H ln(p0 / p)``
(:mod:`genda.constants`); radars and lidars report geometric height above mean
sea level. The two differ by several km in the MLT, and by how much depends on
the temperature of the whole column below, so the conversion needs the
geometric height of each level:

- :func:`level_heights_from_archive`: from a model archive's own heights (the
  geopotential height ``zg`` that ``genda simulate`` writes, CESM/WACCM's
  ``Z3``, ERA's geopotential, or ICON's geometric ``z_mc`` / ``zg`` /
  ``zghalf``), averaged over time and longitude into a climatological profile
  per latitude (finding them in the file: :mod:`genda.observations.model_heights`);
- :func:`approximate_level_heights`: the US Standard Atmosphere 1976 when no
  model heights exist (:mod:`genda.observations.standard_heights`);
- :func:`geometric_to_log_pressure` and :func:`place_geometric_heights`:
  interpolation of observation heights onto the levels (linear in height
  between levels, linear in latitude between profiles).

The archive is read through :mod:`genda.storage` only when
:func:`level_heights_from_archive` runs, so importing this module does not
load the storage stack (as in :mod:`genda.observations.observe`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from genda.constants import pressure_to_altitude_km
from genda.errors import InvalidTypeError, InvalidValueError
from genda.observations.model_heights import archive_error, mean_height_profile
from genda.observations.standard_heights import standard_pressure
from genda.observations.table import ObservationError

if TYPE_CHECKING:  # the storage stack is imported only when an archive is read
    from genda.storage.icon_native import IconRemap

HEIGHTS_ATTR = "genda_heights"
"""``table.attrs`` key where :func:`place_geometric_heights` records how heights were placed."""

HEIGHT_COLUMN = "height_km"
"""Column of geometric height above mean sea level (km) that :func:`place_geometric_heights` reads."""

APPROXIMATE_ERROR_KM = 5.0
"""Error (km) of :func:`approximate_level_heights` to expect at 75-120 km, stated in its ``source``.

Measured against the built-in model's own heights (spun up, default
configuration): the standard's levels lie 0.7 to 4.9 km above the model's
(docs/observations.md, "Heights"); the model's MLT is colder than the standard.
"""

_MAX_SHOWN = 5


@dataclass(frozen=True)
class LevelHeights:
    """Geometric height (km) of log-pressure levels; a climatological profile (optionally per latitude).

    Attributes:
        altitude_km: ``(L,)`` log-pressure altitude of the levels (km), increasing.
        height_km: ``(L,)`` or ``(L, n_lat)`` geometric height above mean sea level
            of each level (km), increasing with the level.
        latitude: ``(n_lat,)`` latitudes (deg N, increasing) when ``height_km`` is per
            latitude, else ``None``.
        source: what it came from, for the summary.
        approximate: true when the heights are not a model's (a standard atmosphere).
    """

    altitude_km: np.ndarray
    height_km: np.ndarray
    latitude: np.ndarray | None
    source: str
    approximate: bool

    def __post_init__(self) -> None:
        # stored as float64 arrays whatever was given (lists, float32 from a file)
        a = np.asarray(self.altitude_km, dtype=np.float64)
        h = np.asarray(self.height_km, dtype=np.float64)
        object.__setattr__(self, "altitude_km", a)
        object.__setattr__(self, "height_km", h)
        if self.latitude is not None:
            object.__setattr__(self, "latitude", np.asarray(self.latitude, dtype=np.float64))
        if a.ndim != 1 or a.size < 2 or not np.all(np.diff(a) > 0):
            raise InvalidValueError("altitude_km must be 1-D, increasing, with at least 2 levels")
        expected = (a.size,) if self.latitude is None else (a.size, np.asarray(self.latitude).size)
        if h.shape != expected:
            raise InvalidValueError(f"height_km has shape {h.shape}, expected {expected}")
        if self.latitude is not None and not np.all(np.diff(self.latitude) > 0):
            raise InvalidValueError("latitude must increase")
        if not np.all(np.isfinite(h)) or not np.all(np.diff(h, axis=0) > 0):
            raise InvalidValueError(
                f"height_km of {self.source} must be finite and increase with the level"
            )

    def columns(self, lat: np.ndarray) -> np.ndarray:
        """``(n, L)`` geometric heights (km) of the levels at latitudes ``(n,)``.

        Linear in latitude between profiles; beyond the outermost latitude (a
        Gaussian grid has no pole) the outermost profile.
        """
        lat = np.asarray(lat, dtype=np.float64)
        if self.latitude is None:
            return np.broadcast_to(self.height_km, (lat.size, self.height_km.size))
        table = self.height_km.T  # (n_lat, L)
        if self.latitude.size == 1:
            return np.broadcast_to(table[0], (lat.size, table.shape[1]))
        upper = np.clip(np.searchsorted(self.latitude, lat), 1, self.latitude.size - 1)
        lo, hi = self.latitude[upper - 1], self.latitude[upper]
        weight = np.clip((lat - lo) / (hi - lo), 0.0, 1.0)[:, None]
        return table[upper - 1] * (1.0 - weight) + table[upper] * weight


def level_heights_from_archive(
    path: str | os.PathLike[str], icon: IconRemap | None = None
) -> LevelHeights:
    """The geometric height of an archive's levels, per latitude, from the model's own heights.

    Reads any file :func:`genda.storage.open_archive` reads, ICON output on its
    native grid included (remapped as ``open_archive`` remaps it, heights and
    all: :func:`genda.storage.icon_native.remap_icon_native`). The heights are the
    first found of: geometric heights of the levels (``z_mc``, ICON's ``zg``
    with ``standard_name: geometric_height_at_full_level``, ``standard_name``
    ``height`` / ``altitude``); geopotential height (``zg``, ``Z3``,
    ``geopotential_height``, m); geopotential (m2 s-2, divided by g0); heights
    of half levels (``zghalf``, ``z_ifc``: averaged to full levels). Geometric
    heights are taken as above mean sea level (as ICON's are). They are averaged
    over time and longitude; geopotential height is then converted to geometric
    height with latitude-dependent gravity
    (:func:`~genda.observations.standard_heights.geopotential_to_geometric_km`).

    Args:
        path: a Zarr store or NetCDF file.
        icon: for ICON native output, the grid file, target grid and method
            (:class:`~genda.storage.icon_native.IconRemap`); native output is
            recognised without it when it carries its cells' coordinates.

    Returns:
        :class:`LevelHeights` on the archive's altitudes, per latitude (increasing).

    Raises:
        ArchiveError: the file has no height variable (naming those looked for),
            or its heights are not finite or do not increase with the level.
    """
    profile = mean_height_profile(path, icon=icon)
    try:
        return LevelHeights(
            profile.altitude_km,
            profile.height_km,
            profile.latitude,
            profile.description,
            approximate=False,
        )
    except InvalidValueError as error:
        raise archive_error(f"{path}: variable {profile.variable!r}: {error}") from None


def approximate_level_heights() -> LevelHeights:
    """Geometric heights of log-pressure levels in the US Standard Atmosphere 1976 (0-200 km).

    Its temperature profile integrated hypsometrically
    (:func:`~genda.observations.standard_heights.standard_pressure`), one level
    per 0.5 km of geometric height, with no dependence on latitude. The 1976
    standard is a mid-latitude annual mean: where and when the column below is
    warmer or colder (summer and winter poles), pressure levels lie several km
    higher or lower, so the placement is only as good as
    :data:`APPROXIMATE_ERROR_KM`, which ``source`` states.
    """
    height, pressure = standard_pressure()
    every = slice(None, None, 50)  # 0.5 km of the 0.01 km integration steps
    return LevelHeights(
        pressure_to_altitude_km(pressure[every]),
        height[every],
        None,
        "approximation: US Standard Atmosphere 1976 integrated hypsometrically, no latitude "
        f"dependence; expect errors of up to about {APPROXIMATE_ERROR_KM:.0f} km in the MLT, "
        "where and when the atmosphere below is warmer or colder than the standard",
        approximate=True,
    )


# ---------------------------------------------------------------------------- placing heights
def _to_log_pressure(
    height_km: np.ndarray, lat: np.ndarray, heights: LevelHeights, what: str, labels: np.ndarray
) -> np.ndarray:
    """:func:`geometric_to_log_pressure` on 1-D arrays; errors name ``what`` and its ``labels``."""
    bad = np.flatnonzero(~np.isfinite(height_km) | ~np.isfinite(lat) | (np.abs(lat) > 90.0))
    if bad.size:
        shown = ", ".join(
            f"{what} {labels[i]}: height {height_km[i]:.6g} km, lat {lat[i]:.6g}"
            for i in bad[:_MAX_SHOWN]
        )
        more = f" and {bad.size - _MAX_SHOWN} more" if bad.size > _MAX_SHOWN else ""
        raise ObservationError(
            f"missing (NaN) or invalid heights or latitudes: {shown}{more}",
            [f"{what} {labels[i]}" for i in bad],
        )
    columns = heights.columns(lat)  # (n, L)
    bottom, top = columns[:, 0], columns[:, -1]
    outside = np.flatnonzero((height_km < bottom) | (height_km > top))
    if outside.size:
        i = outside[0]
        shown = ", ".join(
            f"{what} {labels[j]}: {height_km[j]:.6g} km" for j in outside[:_MAX_SHOWN]
        )
        more = f" and {outside.size - _MAX_SHOWN} more" if outside.size > _MAX_SHOWN else ""
        raise ObservationError(
            f"geometric heights outside the levels' heights ({shown}{more}; at {what} {labels[i]}, "
            f"lat {lat[i]:.6g}, the levels span {bottom[i]:.2f} to {top[i]:.2f} km; heights from "
            f"{heights.source}); height_km must be km above mean sea level",
            [f"{what} {labels[j]}" for j in outside],
        )
    n_levels = columns.shape[1]
    rows = np.arange(height_km.size)
    k = np.clip((columns <= height_km[:, None]).sum(1) - 1, 0, n_levels - 2)
    z0, z1 = columns[rows, k], columns[rows, k + 1]
    weight = (height_km - z0) / (z1 - z0)
    altitude = np.asarray(heights.altitude_km, dtype=np.float64)
    return altitude[k] + weight * (altitude[k + 1] - altitude[k])


def geometric_to_log_pressure(
    height_km: np.ndarray, lat: np.ndarray, heights: LevelHeights
) -> np.ndarray:
    """Log-pressure altitude (km) of geometric heights above mean sea level (km) at latitudes (deg N).

    Linear in height between the levels of the profile at each latitude, the
    profile itself linear in latitude between those of ``heights``.

    Args:
        height_km: geometric heights (km), any shape.
        lat: latitudes (deg N), broadcastable with ``height_km``.
        heights: the levels' heights (:func:`level_heights_from_archive`,
            :func:`approximate_level_heights`).

    Returns:
        Log-pressure altitudes (km), the broadcast shape.

    Raises:
        ObservationError: a NaN height or latitude, a latitude outside [-90, 90],
            or a height outside the levels' heights there (naming the values).
    """
    h, la = np.broadcast_arrays(
        np.asarray(height_km, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    )
    flat = h.ravel()
    labels = np.arange(flat.size)
    return _to_log_pressure(flat, la.ravel(), heights, "value", labels).reshape(h.shape)


def place_geometric_heights(table: pd.DataFrame, heights: LevelHeights) -> pd.DataFrame:
    """A copy of ``table`` whose ``height_km`` column (geometric height, km) is replaced by ``alt_km``.

    Rows with a ``height_km`` get the log-pressure altitude of that height at
    their ``lat`` (:func:`geometric_to_log_pressure`); rows without (NaN) keep
    their ``alt_km``. The ``height_km`` column is dropped (``alt_km`` takes its
    place when the table had none) and ``attrs["genda_heights"]`` records
    ``heights.source``. A table without ``height_km`` comes back as an unchanged
    copy. The input is never modified.

    Raises:
        InvalidTypeError: ``table`` is not a DataFrame.
        ObservationError: ``lat`` is missing, or a row's height or latitude is
            not a number or outside the levels (naming the rows, 0-based).
    """
    if not isinstance(table, pd.DataFrame):
        raise InvalidTypeError(f"expected a pandas DataFrame, got {type(table).__name__}")
    out = table.copy()
    out.attrs = dict(table.attrs)
    if HEIGHT_COLUMN not in table.columns:
        return out
    if "lat" not in table.columns:
        raise ObservationError(f"a table with {HEIGHT_COLUMN!r} needs a 'lat' column")
    given = table[HEIGHT_COLUMN]
    height = pd.to_numeric(given, errors="coerce").to_numpy(dtype=np.float64)
    text = np.flatnonzero(np.isnan(height) & given.notna().to_numpy())
    if text.size:
        raise ObservationError(
            f"{HEIGHT_COLUMN} is not a number in rows {text[:_MAX_SHOWN].tolist()}",
            [f"row {i}" for i in text],
        )
    rows = np.flatnonzero(~np.isnan(height))
    lat = pd.to_numeric(table["lat"], errors="coerce").to_numpy(dtype=np.float64)
    altitude = _to_log_pressure(height[rows], lat[rows], heights, "row", rows)
    if "alt_km" in out.columns:
        alt = pd.to_numeric(out["alt_km"], errors="coerce").to_numpy(dtype=np.float64).copy()
    else:
        alt = np.full(len(out), np.nan)
        out.insert(out.columns.get_loc(HEIGHT_COLUMN), "alt_km", alt)
    alt[rows] = altitude
    out["alt_km"] = alt
    out = out.drop(columns=HEIGHT_COLUMN)
    out.attrs[HEIGHTS_ATTR] = heights.source
    return out


__all__ = [
    "HEIGHTS_ATTR",
    "HEIGHT_COLUMN",
    "LevelHeights",
    "approximate_level_heights",
    "geometric_to_log_pressure",
    "level_heights_from_archive",
    "place_geometric_heights",
]
