"""Where the observing networks observe: radar and lidar columns, limb-sounder tracks.

Each function returns a geometry table (the columns of an observation table,
``value`` NaN, to be drawn by :func:`genda.observations.networks.draw_observations`):

* :func:`radar_geometry`: hourly winds ``u``, ``v`` of meteor radars at the
  grid altitudes within 80-100 km (the meteor echo region, peak near 90 km),
  or, with ``los=True``, line-of-sight winds along four azimuths at 70
  degrees elevation, located where the beam meets each altitude;
* :func:`lidar_geometry`: temperature profiles of lidars at the grid
  altitudes within 85-105 km (the metal and Rayleigh lidars' MLT range);
* :func:`limb_track`: temperature profiles along a satellite track within a
  time window, with a Gaussian vertical kernel (:func:`orbit_positions`,
  :func:`limb_profile_times`).

Simplifications (docs/observations.md lists them with the error models):
orbits are circular; the MLS node is sun-synchronous at 13:45 local mean
solar time, the SABER node is fixed in inertial space (TIMED's slow
precession is ignored); a limb profile is vertical at its tangent point.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from genda.errors import InvalidValueError
from genda.grid import Grid, default_altitudes
from genda.observations.catalog import (
    EARTH_RADIUS_KM,
    LIDAR_T_ERRORS,
    LIDARS,
    LIMB_INSTRUMENTS,
    METEOR_RADARS,
    RADAR_WIND_ERRORS,
    ErrorModel,
    LimbInstrument,
    Station,
)
from genda.observations.table import OBSERVATION_COLUMNS, OPTIONAL_COLUMNS
from genda.times import TimeLike, as_datetime64

SIDEREAL_DAY_S = 86164.0905
"""Length of the sidereal day: the Earth's rotation relative to the stars (s)."""
ORBIT_EPOCH = np.datetime64("2000-01-01T12:00:00", "ns")
"""Every simulated satellite crosses its ascending node at this time (J2000)."""

LOS_AZIMUTHS_DEG: tuple[float, ...] = (0.0, 90.0, 180.0, 270.0)
"""Beam azimuths of line-of-sight radar winds (clockwise from north)."""
LOS_ELEVATION_DEG = 70.0
"""Beam elevation of line-of-sight radar winds: meteor echoes cluster 60-75 deg."""


def _seconds_since_epoch(times: np.ndarray) -> np.ndarray:
    return (times - ORBIT_EPOCH) / np.timedelta64(1, "ns") * 1e-9


def orbit_positions(
    times: np.ndarray,
    instrument: LimbInstrument,
    yaw: Literal["north", "south"] = "north",
) -> tuple[np.ndarray, np.ndarray]:
    """Latitudes and longitudes (degrees, longitude in ``[0, 360)``) of the tangent points.

    A circular orbit with the ascending node crossed at :data:`ORBIT_EPOCH`.
    In the frame of the node the satellite is at ``r = (cos a, cos i sin a,
    sin i sin a)`` for the argument of latitude ``a``; the tangent point is
    ``cos d r + s sin d n`` with ``n`` the orbit normal, ``d`` the tangent
    offset and ``s = +1`` for ``yaw="north"`` (``n`` leans north, coverage up to
    ``i + d`` or over the pole), ``-1`` for ``"south"``.

    Args:
        times: ``(P,)`` datetime64 (UTC).
        instrument: the orbit and viewing geometry.
        yaw: which side a sideways-looking sounder views.
    """
    if yaw not in ("north", "south"):
        raise InvalidValueError(f"yaw must be 'north' or 'south', got {yaw!r}")
    times = np.asarray(times, dtype="datetime64[ns]")
    seconds = _seconds_since_epoch(times)
    arg = 2.0 * np.pi * seconds / (instrument.period_min * 60.0)
    inc = np.deg2rad(instrument.inclination_deg)
    offset = np.deg2rad(instrument.tangent_offset_deg) * (1.0 if yaw == "north" else -1.0)
    r = np.stack([np.cos(arg), np.cos(inc) * np.sin(arg), np.sin(inc) * np.sin(arg)])
    normal = np.array([0.0, -np.sin(inc), np.cos(inc)])[:, None]
    p = np.cos(offset) * r + np.sin(offset) * normal
    lat = np.rad2deg(np.arcsin(np.clip(p[2], -1.0, 1.0)))
    relative = np.rad2deg(np.arctan2(p[1], p[0]))
    if instrument.node_local_time_h is not None:
        # Sun-synchronous: the node stays at one local time, lon = 15 (LT - UTC hours).
        utc_hours = (times - times.astype("datetime64[D]")) / np.timedelta64(1, "h")
        node = 15.0 * (instrument.node_local_time_h - utc_hours)
    else:
        node = -360.0 * seconds / SIDEREAL_DAY_S
    lon = np.mod(node + relative, 360.0)
    return lat, np.where(lon >= 360.0, 0.0, lon)


def limb_profile_times(
    time: TimeLike, instrument: LimbInstrument, half_window_minutes: float = 30.0
) -> np.ndarray:
    """``(P,)`` datetime64[ns] of the profiles within ``time`` +- the half window (inclusive).

    Profiles fall every :attr:`LimbInstrument.profile_interval_s` from
    :data:`ORBIT_EPOCH`, so overlapping windows share their profiles.
    """
    if half_window_minutes < 0:
        raise InvalidValueError(f"half_window_minutes must be >= 0, got {half_window_minutes}")
    centre = _seconds_since_epoch(np.array([as_datetime64(time)]))[0]
    step = instrument.profile_interval_s
    first = math.ceil((centre - 60.0 * half_window_minutes) / step)
    last = math.floor((centre + 60.0 * half_window_minutes) / step)
    seconds = np.arange(first, last + 1) * step
    return ORBIT_EPOCH + np.round(seconds * 1e9).astype("timedelta64[ns]")


def limb_track(
    time: TimeLike,
    kind: Literal["mls", "saber"] = "mls",
    grid: Grid | None = None,
    *,
    half_window_minutes: float = 30.0,
    yaw: Literal["north", "south"] = "north",
) -> pd.DataFrame:
    """Temperature profiles of a limb sounder within ``time`` +- ``half_window_minutes``.

    Args:
        time: centre of the window (UTC).
        kind: ``"mls"`` (:data:`MLS`) or ``"saber"`` (:data:`SABER`).
        grid: its altitudes within the instrument's range are the profile
            levels; default :meth:`Grid.gaussian`'s levels (80-115 km).
        half_window_minutes: half-width of the window.
        yaw: the side SABER looks to (``"north"``: 52S-83N, ``"south"``: 83S-52N).

    Returns:
        A table (profile by profile, levels upward) with each profile's own
        ``time``, ``variable="T"``, ``value`` NaN (to be drawn), ``sigma`` and
        ``fwhm_km`` from the instrument's error model, ``station`` the
        instrument's name and ``network`` = ``kind``.
    """
    try:
        instrument = LIMB_INSTRUMENTS[kind]
    except KeyError:
        raise InvalidValueError(
            f"unknown limb sounder {kind!r}; known: {sorted(LIMB_INSTRUMENTS)}"
        ) from None
    altitudes = _levels(
        grid.altitude if grid is not None else default_altitudes(8), instrument.altitudes_km
    )
    times = limb_profile_times(time, instrument, half_window_minutes)
    lat, lon = orbit_positions(times, instrument, yaw)
    nlev = altitudes.size
    alt = np.tile(altitudes, times.size)
    errors = instrument.errors
    return _frame(
        time=np.repeat(times, nlev),
        lat=np.repeat(lat, nlev),
        lon=np.repeat(lon, nlev),
        alt_km=alt,
        variable=["T"] * alt.size,
        sigma=errors.sigma(alt),
        station=[instrument.name] * alt.size,
        fwhm_km=np.full(alt.size, np.nan if errors.fwhm_km is None else errors.fwhm_km),
        network=[kind] * alt.size,
    )


# ---------------------------------------------------------------------------- ground stations
def _levels(altitudes: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """The altitudes within ``bounds`` (inclusive): an instrument's range clipped to a grid."""
    altitudes = np.asarray(altitudes, dtype=np.float64)
    return altitudes[(altitudes >= bounds[0]) & (altitudes <= bounds[1])]


def _frame(**columns: Any) -> pd.DataFrame:
    """A geometry table: the given columns, the others of a table empty (NaN / '')."""
    size = len(columns["lat"])
    data: dict[str, Any] = {}
    for name in (*OBSERVATION_COLUMNS, *OPTIONAL_COLUMNS, "network"):
        if name in columns:
            data[name] = columns[name]
        elif name in ("station", "network"):
            data[name] = [""] * size
        elif name != "time":
            data[name] = np.full(size, np.nan)
    return pd.DataFrame(data)


def radar_geometry(
    grid: Grid,
    stations: Iterable[Station] = METEOR_RADARS,
    *,
    los: bool = False,
    errors: ErrorModel = RADAR_WIND_ERRORS,
    azimuths_deg: Sequence[float] = LOS_AZIMUTHS_DEG,
    elevation_deg: float = LOS_ELEVATION_DEG,
) -> pd.DataFrame:
    """Hourly meteor-radar winds at the grid altitudes within each station's range.

    Without ``los``: ``u`` and ``v`` above each station. With ``los``: one
    line-of-sight wind per azimuth and altitude instead (the same meteors
    give either), located where a beam at ``elevation_deg`` reaches the
    altitude, ``alt / tan(el)`` (~33 km at 90 km) from the station.

    Returns:
        A table without ``time`` and with ``value`` NaN (to be drawn).
    """
    parts = []
    for site in stations:
        if site.kind != "meteor_radar":
            continue
        altitudes = _levels(grid.altitude, site.altitudes_km)
        sigma = errors.sigma(altitudes)
        if not los:
            n = altitudes.size
            parts.append(
                _frame(
                    lat=np.full(2 * n, site.lat),
                    lon=np.full(2 * n, site.lon),
                    alt_km=np.tile(altitudes, 2),
                    variable=["u"] * n + ["v"] * n,
                    sigma=np.tile(sigma, 2),
                    station=[site.name] * 2 * n,
                    network=["radars"] * 2 * n,
                )
            )
            continue
        az = np.repeat(np.asarray(azimuths_deg, dtype=np.float64), altitudes.size)
        alt = np.tile(altitudes, len(azimuths_deg))
        distance = alt / math.tan(math.radians(elevation_deg))  # km, station at ~0 km
        dlat = np.rad2deg(distance * np.cos(np.deg2rad(az)) / EARTH_RADIUS_KM)
        coslat = max(math.cos(math.radians(site.lat)), 1e-6)
        dlon = np.rad2deg(distance * np.sin(np.deg2rad(az)) / (EARTH_RADIUS_KM * coslat))
        parts.append(
            _frame(
                lat=site.lat + dlat,
                lon=site.lon + dlon,
                alt_km=alt,
                variable=["los"] * alt.size,
                sigma=np.tile(sigma, len(azimuths_deg)),
                station=[site.name] * alt.size,
                azimuth_deg=az,
                elevation_deg=np.full(alt.size, elevation_deg),
                network=["radars"] * alt.size,
            )
        )
    return pd.concat(parts, ignore_index=True) if parts else _frame(lat=[])


def lidar_geometry(
    grid: Grid,
    stations: Iterable[Station] = LIDARS,
    *,
    errors: ErrorModel = LIDAR_T_ERRORS,
) -> pd.DataFrame:
    """Lidar temperatures at the grid altitudes within each station's range (points).

    Returns:
        A table without ``time`` and with ``value`` NaN (to be drawn).
    """
    parts = []
    for site in stations:
        if site.kind != "lidar":
            continue
        altitudes = _levels(grid.altitude, site.altitudes_km)
        n = altitudes.size
        parts.append(
            _frame(
                lat=np.full(n, site.lat),
                lon=np.full(n, site.lon),
                alt_km=altitudes,
                variable=["T"] * n,
                sigma=errors.sigma(altitudes),
                station=[site.name] * n,
                fwhm_km=np.full(n, np.nan if errors.fwhm_km is None else errors.fwhm_km),
                network=["lidars"] * n,
            )
        )
    return pd.concat(parts, ignore_index=True) if parts else _frame(lat=[])


__all__ = [
    "LOS_AZIMUTHS_DEG",
    "LOS_ELEVATION_DEG",
    "ORBIT_EPOCH",
    "SIDEREAL_DAY_S",
    "lidar_geometry",
    "limb_profile_times",
    "limb_track",
    "orbit_positions",
    "radar_geometry",
]
