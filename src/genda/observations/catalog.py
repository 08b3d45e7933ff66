"""The catalog of observing instruments: stations, limb sounders and their error models.

Data, not behaviour: :data:`METEOR_RADARS` and :data:`LIDARS` (ground
stations, :class:`Station`), :data:`MLS` and :data:`SABER` (limb sounders,
:class:`LimbInstrument`), and the :class:`ErrorModel` of each kind of
observation. :mod:`genda.observations.geometry` places their observations
on a grid, :mod:`genda.observations.networks` draws them (docs/observations.md).

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from genda.constants import EARTH_RADIUS_M
from genda.errors import InvalidValueError, UnknownNameError

StationKind = Literal["meteor_radar", "lidar"]

EARTH_RADIUS_KM = EARTH_RADIUS_M / 1000.0


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


__all__ = [
    "LIDARS",
    "LIDAR_T_ERRORS",
    "LIMB_INSTRUMENTS",
    "METEOR_RADARS",
    "MLS",
    "MLS_T_ERRORS",
    "RADAR_WIND_ERRORS",
    "SABER",
    "SABER_T_ERRORS",
    "STATIONS",
    "ErrorModel",
    "LimbInstrument",
    "Station",
    "station",
]
