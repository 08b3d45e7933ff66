"""Observing networks for observing-system simulation experiments (OSSEs).

A network says where and how well the mesosphere/lower thermosphere is
observed; :func:`draw_observations` samples a "truth" (an archive opened with
:func:`genda.storage.open_archive`) there, through
:class:`~genda.observations.operators.ObservationOperator`, and adds Gaussian
noise with each row's ``sigma`` (docs/observations.md).

Networks:

* ``radars``: hourly winds ``u``, ``v`` of the meteor radars in
  :data:`METEOR_RADARS` at the grid altitudes within 80-100 km (the meteor
  echo region, peak near 90 km), or, with ``los=True``, line-of-sight winds
  along four azimuths at 70 degrees elevation, located where the beam meets
  each altitude;
* ``lidars``: temperature profiles of the lidars in :data:`LIDARS` at the
  grid altitudes within 85-105 km (the metal and Rayleigh lidars' MLT range);
* ``limb`` (= ``mls``) and ``saber``: temperature profiles along a satellite
  track within a time window, with a Gaussian vertical kernel
  (:func:`limb_track`).

Station coordinates are the published ones of the operating institutes and of
the studies that use the data, e.g. Hoffmann et al. (2010, JASTP: Andenes,
Juliusruh), Jacobi (2012, JASTP: Collm), Webster et al. (2004, ACP: CMOR),
Fritts et al. (2010, JGR: SAAMER), Sandford et al. (2010, ACP: Rothera), Davis
et al. (2013, ACP: Ascension Island), Yu et al. (2013, JGR: Mohe, Wuhan,
Sanya), von Zahn et al. (2000, Ann. Geophys.: ALOMAR), Gerding et al. (2008,
ACP: Kuehlungsborn lidar), the Table Mountain lidar site north of Boulder
(40.13N, 105.24W) and the Andes Lidar Observatory on Cerro Pachon
(andesnetwork.org). They are rounded to 0.01-0.1 degree, well below any grid
spacing genda uses.

Simplifications (docs/observations.md lists them with the error models):
every station reports every hour (no meteor-count gaps, no daylight or cloud
for lidars); orbits are circular; the MLS node is sun-synchronous at 13:45
local mean solar time, the SABER node is fixed in inertial space (TIMED's
slow precession is ignored); a limb profile is vertical at its tangent point;
all drawn values are the truth at one time, the window only spreads the
track.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import xarray as xr

from genda.constants import EARTH_RADIUS_M
from genda.errors import InvalidValueError, OutputExistsError, UnknownNameError
from genda.grid import Grid, default_altitudes
from genda.observations.operators import ObservationOperator
from genda.observations.table import (
    OBSERVATION_COLUMNS,
    OPTIONAL_COLUMNS,
    ObservationError,
    as_datetime64,
    read_observations,
    validate_observations,
    write_observations,
)

TimeLike = str | np.datetime64 | datetime | pd.Timestamp
StationKind = Literal["meteor_radar", "lidar"]

EARTH_RADIUS_KM = EARTH_RADIUS_M / 1000.0
SIDEREAL_DAY_S = 86164.0905
"""Length of the sidereal day: the Earth's rotation relative to the stars (s)."""
ORBIT_EPOCH = np.datetime64("2000-01-01T12:00:00", "ns")
"""Every simulated satellite crosses its ascending node at this time (J2000)."""

LOS_AZIMUTHS_DEG: tuple[float, ...] = (0.0, 90.0, 180.0, 270.0)
"""Beam azimuths of line-of-sight radar winds (clockwise from north)."""
LOS_ELEVATION_DEG = 70.0
"""Beam elevation of line-of-sight radar winds: meteor echoes cluster 60-75 deg."""


# ---------------------------------------------------------------------------- error models
@dataclass(frozen=True)
class ErrorModel:
    """Observation-error standard deviation as a function of altitude.

    ``sigma`` is piecewise linear through ``(knots_km[i], sigmas[i])`` and
    constant beyond the first and last knots.

    Attributes:
        knots_km: altitudes (km), increasing.
        sigmas: error standard deviations at the knots (unit of the variable), > 0.
        fwhm_km: full width at half maximum of the Gaussian vertical kernel of
            the observations, ``None`` for point values.
    """

    knots_km: tuple[float, ...]
    sigmas: tuple[float, ...]
    fwhm_km: float | None = None

    def __post_init__(self) -> None:
        if len(self.knots_km) != len(self.sigmas) or not self.knots_km:
            raise InvalidValueError(f"{len(self.knots_km)} knots for {len(self.sigmas)} sigmas")
        if any(b <= a for a, b in zip(self.knots_km, self.knots_km[1:], strict=False)):
            raise InvalidValueError(f"knots must increase, got {self.knots_km}")
        if any(s <= 0 for s in self.sigmas):
            raise InvalidValueError(f"sigmas must be positive, got {self.sigmas}")
        if self.fwhm_km is not None and self.fwhm_km <= 0:
            raise InvalidValueError(f"fwhm_km must be positive, got {self.fwhm_km}")

    def sigma(self, altitude_km: np.ndarray | float) -> np.ndarray:
        """Error standard deviations at ``altitude_km`` (km), same shape."""
        return np.interp(np.asarray(altitude_km, dtype=np.float64), self.knots_km, self.sigmas)


RADAR_WIND_ERRORS = ErrorModel(knots_km=(80.0, 90.0, 100.0), sigmas=(15.0, 5.0, 15.0))
"""Hourly meteor-radar winds (m s-1): 5 m/s at the 90 km peak of the meteor
count, 15 m/s at 80 and 100 km where the counts fall off (the error of an
hourly mean goes as one over the square root of the number of echoes)."""

LIDAR_T_ERRORS = ErrorModel(knots_km=(85.0, 105.0), sigmas=(2.0, 5.0))
"""Lidar temperatures (K): 2 K at 85 km to 5 K at 105 km as the signal weakens."""

MLS_T_ERRORS = ErrorModel(knots_km=(80.0,), sigmas=(3.0,), fwhm_km=4.0)
"""MLS-like limb temperatures: 3 K, vertical kernel 4 km FWHM."""

SABER_T_ERRORS = ErrorModel(knots_km=(80.0,), sigmas=(3.0,), fwhm_km=2.0)
"""SABER-like limb temperatures: 3 K, vertical kernel 2 km FWHM (its field of view)."""


# ---------------------------------------------------------------------------- stations
@dataclass(frozen=True)
class Station:
    """A ground-based MLT instrument.

    Attributes:
        name: unique ASCII name, as in tables and on the command line.
        kind: ``"meteor_radar"`` (winds u, v) or ``"lidar"`` (temperature).
        lat: degrees north.
        lon: degrees east, in ``[-180, 180)`` as published.
        altitudes_km: ``(bottom, top)`` of the observed heights, km.
        site: where it stands.
    """

    name: str
    kind: StationKind
    lat: float
    lon: float
    altitudes_km: tuple[float, float]
    site: str = ""

    @property
    def variables(self) -> tuple[str, ...]:
        """What it observes: u, v for radars, T for lidars."""
        return ("u", "v") if self.kind == "meteor_radar" else ("T",)


_RADAR_KM = (80.0, 100.0)
_LIDAR_KM = (85.0, 105.0)

METEOR_RADARS: tuple[Station, ...] = (
    Station("Andenes", "meteor_radar", 69.30, 16.04, _RADAR_KM, "Andoya, Norway"),
    Station("Tromso", "meteor_radar", 69.6, 19.2, _RADAR_KM, "Ramfjordmoen, Norway"),
    Station("Juliusruh", "meteor_radar", 54.63, 13.37, _RADAR_KM, "Ruegen, Germany"),
    Station("Collm", "meteor_radar", 51.31, 13.00, _RADAR_KM, "Saxony, Germany"),
    Station("Kuehlungsborn", "meteor_radar", 54.12, 11.77, _RADAR_KM, "Mecklenburg, Germany"),
    Station("Svalbard", "meteor_radar", 78.2, 16.0, _RADAR_KM, "Adventdalen, Longyearbyen"),
    Station("Sodankyla", "meteor_radar", 67.37, 26.63, _RADAR_KM, "Lapland, Finland"),
    Station("CMOR", "meteor_radar", 43.26, -80.77, _RADAR_KM, "Tavistock, Ontario, Canada"),
    Station("Davis", "meteor_radar", -68.58, 77.97, _RADAR_KM, "Davis Station, Antarctica"),
    Station("Rothera", "meteor_radar", -67.57, -68.13, _RADAR_KM, "Adelaide Island, Antarctica"),
    Station("SAAMER", "meteor_radar", -53.8, -67.8, _RADAR_KM, "Rio Grande, Tierra del Fuego"),
    Station("Jicamarca", "meteor_radar", -11.95, -76.87, _RADAR_KM, "Lima, Peru"),
    Station("Mohe", "meteor_radar", 53.5, 122.3, _RADAR_KM, "Heilongjiang, China"),
    Station("Wuhan", "meteor_radar", 30.5, 114.6, _RADAR_KM, "Hubei, China"),
    Station("Sanya", "meteor_radar", 18.3, 109.6, _RADAR_KM, "Hainan, China"),
    Station("Ascension", "meteor_radar", -7.9, -14.4, _RADAR_KM, "Ascension Island"),
)
"""Meteor radars (all-sky interferometric, hourly winds 80-100 km)."""

LIDARS: tuple[Station, ...] = (
    Station("ALOMAR", "lidar", 69.28, 16.01, _LIDAR_KM, "Andoya, Norway (RMR and Na lidars)"),
    Station("Kuehlungsborn-lidar", "lidar", 54.12, 11.77, _LIDAR_KM, "IAP, Germany (K, RMR)"),
    Station("Boulder", "lidar", 40.13, -105.24, _LIDAR_KM, "Table Mountain, Colorado (Fe)"),
    Station("ALO", "lidar", -30.25, -70.74, _LIDAR_KM, "Andes Lidar Obs., Cerro Pachon (Na)"),
)
"""Lidars measuring MLT temperature profiles (85-105 km)."""

STATIONS: tuple[Station, ...] = METEOR_RADARS + LIDARS
"""The whole catalog; names are unique."""


def station(name: str) -> Station:
    """The catalog station called ``name`` (case-insensitive); a clear error otherwise."""
    for entry in STATIONS:
        if entry.name.lower() == name.strip().lower():
            return entry
    known = ", ".join(s.name for s in STATIONS)
    raise UnknownNameError(f"unknown station {name!r}; the catalog holds {known}")


# ---------------------------------------------------------------------------- limb sounders
@dataclass(frozen=True)
class LimbInstrument:
    """A limb sounder on a circular orbit (see :func:`limb_track`).

    Attributes:
        name: the ``station`` of its rows, e.g. ``"MLS"``.
        inclination_deg: orbit inclination.
        period_min: orbital period.
        spacing_km: distance between profiles along the orbit (on the ground).
        altitudes_km: ``(bottom, top)`` of the retrieved temperatures.
        errors: error model, with the vertical kernel.
        node_local_time_h: local mean solar time of the ascending node for a
            sun-synchronous orbit; ``None``: the node is fixed in inertial space.
        tangent_offset_deg: angle on the Earth between the tangent points and
            the orbit plane (0 for a sounder looking along the track).
    """

    name: str
    inclination_deg: float
    period_min: float
    spacing_km: float
    altitudes_km: tuple[float, float]
    errors: ErrorModel = field(default=MLS_T_ERRORS)
    node_local_time_h: float | None = None
    tangent_offset_deg: float = 0.0

    @property
    def profile_interval_s(self) -> float:
        """Seconds between two profiles."""
        circumference_km = 2.0 * math.pi * EARTH_RADIUS_KM
        return self.period_min * 60.0 * self.spacing_km / circumference_km


MLS = LimbInstrument(
    name="MLS",
    inclination_deg=98.0,  # Aura: 98.2; 98 gives MLS's 82S-82N coverage
    period_min=98.8,
    spacing_km=165.0,  # 1.5 degrees of great circle, ~240 profiles per orbit
    altitudes_km=(10.0, 97.0),  # 261 to 0.001 hPa
    errors=MLS_T_ERRORS,
    node_local_time_h=13.75,  # ascending node 13:45
)
"""Aura MLS-like: sun-synchronous, looks forward along the track."""

SABER = LimbInstrument(
    name="SABER",
    inclination_deg=74.1,  # TIMED, 625 km
    period_min=97.0,
    spacing_km=400.0,  # one limb scan per ~58 s
    altitudes_km=(15.0, 110.0),
    errors=SABER_T_ERRORS,
    node_local_time_h=None,
    # Looks sideways, at right angles to the orbit: the 100 km tangent point from
    # 625 km lies arccos((R + 100) / (R + 625)) ~ 22 degrees off the plane, which
    # gives the 52 / 83 degree latitude coverage of its two yaw states.
    tangent_offset_deg=22.5,
)
"""TIMED SABER-like: inclined orbit, looks to one side (``yaw``)."""

LIMB_INSTRUMENTS: dict[str, LimbInstrument] = {"mls": MLS, "saber": SABER}


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


# ---------------------------------------------------------------------------- drawing
NETWORKS: dict[str, tuple[str, ...]] = {
    "radars": ("u", "v"),
    "lidars": ("T",),
    "limb": ("T",),
    "mls": ("T",),
    "saber": ("T",),
}
"""Network names accepted by :func:`draw_observations` and the variables they need."""

DEFAULT_NETWORKS: tuple[str, ...] = ("radars", "lidars", "limb")


def _network_names(networks: str | Sequence[str]) -> list[str]:
    """Canonical, de-duplicated network names (``limb`` is ``mls``); comma lists accepted."""
    items = networks.split(",") if isinstance(networks, str) else list(networks)
    names: list[str] = []
    for item in items:
        name = item.strip().lower()
        if name not in NETWORKS:
            raise InvalidValueError(
                f"unknown network {item!r}; known networks: {', '.join(NETWORKS)}"
            )
        name = "mls" if name == "limb" else name
        if name not in names:
            names.append(name)
    if not names:
        raise InvalidValueError("no network given")
    return names


def _iso(time: np.datetime64) -> str:
    return str(np.datetime_as_string(time, unit="s"))


def select_time(truth: xr.Dataset, time: TimeLike, source: str = "truth") -> xr.Dataset:
    """The field of ``truth`` at ``time`` (exactly), without the time dimension.

    Raises:
        ValueError: ``time`` is not in ``truth``, naming ``source`` and its time range.
    """
    when = as_datetime64(time)
    if "time" not in truth.dims:
        return truth
    if "time" not in truth.coords:
        if truth.sizes["time"] == 1:
            return truth.isel(time=0)
        raise InvalidValueError(f"{source} has {truth.sizes['time']} times but no time values")
    try:
        times = np.asarray(truth["time"].values, dtype="datetime64[ns]")
    except (TypeError, ValueError):
        raise InvalidValueError(
            f"{source}: time values of type {truth['time'].dtype} (a non-standard calendar?) "
            "cannot be compared with UTC times"
        ) from None
    found = np.flatnonzero(times == when)
    if found.size == 0:
        if times.size == 0:
            raise InvalidValueError(f"{source} holds no times; {_iso(when)} is not in it")
        raise InvalidValueError(
            f"time {_iso(when)} is not in {source}, which holds {times.size} time(s) "
            f"from {_iso(times.min())} to {_iso(times.max())}"
        )
    return truth.isel(time=int(found[0]))


def draw_observations(
    truth: xr.Dataset,
    grid: Grid,
    time: TimeLike,
    networks: str | Sequence[str] = DEFAULT_NETWORKS,
    seed: int = 0,
    *,
    stations: Iterable[Station | str] | None = None,
    los: bool = False,
    half_window_minutes: float = 30.0,
    saber_yaw: Literal["north", "south"] = "north",
    noise: bool = True,
) -> pd.DataFrame:
    """Synthetic observations of ``truth`` at ``time`` by the given networks.

    Args:
        truth: Dataset ``(time, altitude, latitude, longitude)`` (or without
            ``time``) with the grid's variables in physical units, e.g. from
            :func:`genda.storage.open_archive`; only the field at ``time`` is read.
        grid: the grid of ``truth`` (checked).
        time: the truth time; every row gets it as ``time``.
        networks: names from :data:`NETWORKS` (or one comma-separated string).
        seed: seed of the noise, ``numpy.random.default_rng(seed)``; one
            standard normal per row, in table order.
        stations: radars and lidars to use (catalog entries or names);
            default :data:`METEOR_RADARS` and :data:`LIDARS`.
        los: radar line-of-sight winds instead of u, v (:func:`radar_geometry`).
        half_window_minutes: the limb tracks cover ``time`` +- this.
        saber_yaw: the side SABER views.
        noise: add the Gaussian noise (``False``: the truth seen through ``H``).

    Returns:
        A validated table (:func:`~genda.observations.validate_observations`)
        with a ``network`` column (``radars``, ``lidars``, ``mls``, ``saber``).

    Raises:
        ValueError: unknown network or station, a network whose variables the
            grid lacks, ``time`` not in ``truth``, or no observation at all.
    """
    when = as_datetime64(time)
    snapshot = select_time(truth, when)
    names = _network_names(networks)
    for name in names:
        absent = [v for v in NETWORKS[name] if v not in grid.variables]
        if absent:
            raise InvalidValueError(
                f"network {name!r} observes {', '.join(absent)}, which the grid does not carry "
                f"(grid variables: {', '.join(grid.variables)})"
            )
    sites = (
        STATIONS
        if stations is None
        else tuple(s if isinstance(s, Station) else station(s) for s in stations)
    )
    parts = []
    for name in names:
        if name == "radars":
            parts.append(radar_geometry(grid, sites, los=los))
        elif name == "lidars":
            parts.append(lidar_geometry(grid, sites))
        else:
            track = limb_track(
                when, name, grid, half_window_minutes=half_window_minutes, yaw=saber_yaw
            )
            parts.append(track)
    parts = [part for part in parts if len(part)]
    if not parts:
        raise InvalidValueError(
            f"networks {names} observe nothing on this grid (altitudes "
            f"{grid.altitude.min():g}-{grid.altitude.max():g} km)"
        )
    geometry = pd.concat(parts, ignore_index=True)
    # The tracks' own times only placed the profiles; the values are the truth at `time`.
    geometry["time"] = when
    geometry["value"] = 0.0  # a placeholder: the values are drawn below
    table = validate_observations(geometry, grid, source="observation geometry", check_values=False)

    field_ = grid.tensor_from_dataset(snapshot, dtype=torch.float64)
    with torch.no_grad():
        values = ObservationOperator.from_table(table, grid)(field_).cpu().numpy()
    if noise:
        rng = np.random.default_rng(seed)
        values = values + rng.standard_normal(len(table)) * table["sigma"].to_numpy()
    table["value"] = values.astype(np.float64)
    return validate_observations(table, grid, source=f"observations drawn at {_iso(when)}")


def split_withheld(obs: pd.DataFrame, stations: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a table into ``(assimilated, withheld)`` by station name (case-insensitive).

    Both parts keep the table's columns and order, with a fresh index ``0..``.

    Raises:
        ValueError: a name that no row of ``obs`` has, listing the stations present.
    """
    if "station" not in obs.columns:
        raise InvalidValueError("the table has no 'station' column to withhold stations by")
    present = obs["station"].astype(str).str.lower()
    wanted = [s.strip().lower() for s in stations if s.strip()]
    unknown = [s for s in wanted if not (present == s).any()]
    if unknown:
        have = ", ".join(sorted(set(obs["station"].astype(str)) - {""}))
        raise InvalidValueError(
            f"no observations from station(s) {unknown}; stations present: {have}"
        )
    mask = present.isin(wanted).to_numpy()
    return obs[~mask].reset_index(drop=True), obs[mask].reset_index(drop=True)


def _counts(obs: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Number of rows per network and variable."""
    if obs.empty:
        return {}
    groups = obs.groupby(["network", "variable"], sort=True).size()
    counts: dict[str, dict[str, int]] = {}
    for (network, variable), n in groups.items():
        counts.setdefault(str(network), {})[str(variable)] = int(n)
    return counts


def withheld_path(out: str | os.PathLike[str]) -> Path:
    """``<stem>-withheld<suffix>`` next to ``out``."""
    out = Path(out)
    return out.with_name(f"{out.stem}-withheld{out.suffix}")


def check_table_replaceable(path: Path, overwrite: bool) -> None:
    """Refuse to write an observation table over anything but a table, and without ``overwrite``.

    Raises:
        ObservationError: the suffix is not a table format.
        OutputExistsError: ``path`` is a directory, or exists and ``overwrite``
            is false, or exists and is not an observation table.
    """
    if path.suffix.lower() not in (".csv", ".parquet", ".pq", ".nc", ".nc4"):
        raise ObservationError(
            f"{path}: unknown observation file type {path.suffix!r}; "
            "expected .csv, .parquet, .pq, .nc or .nc4"
        )
    if not (path.exists() or path.is_symlink()):
        return
    if not path.is_file():
        raise OutputExistsError(f"{path} exists and is not a file; choose a file name")
    if not overwrite:
        raise OutputExistsError(f"{path} exists; set overwrite (--overwrite) to replace it")
    try:
        columns = read_observations(path).columns
    except ObservationError:
        columns = ()
    if any(name not in columns for name in OBSERVATION_COLUMNS):
        raise OutputExistsError(
            f"{path} exists and is not an observation table; genda replaces only a table "
            "it can read: choose another path, or move it away yourself"
        )


def observe_to_file(
    truth_path: str | os.PathLike[str],
    time: TimeLike,
    networks: str | Sequence[str],
    out: str | os.PathLike[str],
    seed: int,
    withhold: Sequence[str] = (),
    overwrite: bool = False,
) -> dict[str, Any]:
    """Draw observations of an archive at one time and write them (``genda observe``).

    Args:
        truth_path: Zarr store or NetCDF file readable by :func:`genda.storage.open_archive`.
        time: a time of the archive.
        networks: as in :func:`draw_observations`.
        out: ``.csv``, ``.parquet`` or ``.nc`` file, written atomically.
        seed: noise seed.
        withhold: stations whose rows go to :func:`withheld_path` instead.
        overwrite: replace existing observation tables at ``out`` and its
            withheld file (nothing that is not an observation table is replaced).

    Returns:
        ``{"time", "seed", "networks", "observations", "withheld", "counts",
        "withheld_counts", "paths": {"observations", "withheld"}}`` with counts
        per network and variable.
    """
    from genda.storage import open_archive  # a higher layer, needed only here

    out = Path(out)
    check_table_replaceable(out, overwrite)
    # The withheld file of this table is written, or removed as stale, either way.
    check_table_replaceable(withheld_path(out), overwrite)
    truth = open_archive(truth_path)
    grid = Grid.from_dataset(truth)
    when = as_datetime64(time)
    snapshot = select_time(truth, when, source=str(truth_path))
    obs = draw_observations(snapshot, grid, when, networks, seed)
    assimilated, withheld = split_withheld(obs, withhold) if withhold else (obs, obs.iloc[:0])
    if assimilated.empty:
        raise InvalidValueError(f"withholding {list(withhold)} leaves no observation to assimilate")
    paths: dict[str, str | None] = {"observations": str(out), "withheld": None}
    if not withheld.empty:
        # The withheld file first, so that a complete main file has its withheld one.
        paths["withheld"] = str(write_observations(withheld, withheld_path(out)))
    elif withheld_path(out).exists():
        # A withheld file of an earlier draw would hold stations this table assimilates.
        withheld_path(out).unlink()
    write_observations(assimilated, out)
    return {
        "time": _iso(when),
        "seed": int(seed),
        "networks": _network_names(networks),
        "observations": len(assimilated),
        "withheld": len(withheld),
        "counts": _counts(assimilated),
        "withheld_counts": _counts(withheld),
        "paths": paths,
    }


__all__ = [
    "DEFAULT_NETWORKS",
    "LIDARS",
    "LIDAR_T_ERRORS",
    "LIMB_INSTRUMENTS",
    "METEOR_RADARS",
    "MLS",
    "MLS_T_ERRORS",
    "NETWORKS",
    "RADAR_WIND_ERRORS",
    "SABER",
    "SABER_T_ERRORS",
    "STATIONS",
    "ErrorModel",
    "LimbInstrument",
    "Station",
    "draw_observations",
    "lidar_geometry",
    "limb_profile_times",
    "limb_track",
    "observe_to_file",
    "orbit_positions",
    "radar_geometry",
    "select_time",
    "split_withheld",
    "station",
    "withheld_path",
]
