"""Where the Sun is: the solar zenith angle, to tell when a lidar can observe.

Resonance (Na, Fe, K) and Rayleigh lidars of the MLT mostly observe at night:
the daylight sky background swamps their photon counts unless narrow-band
filters are fitted. :func:`is_dark` says whether the Sun is far enough below
the horizon at a station and time.

The position uses the low-precision formulas of the Astronomical Almanac
(section C, "Low precision formulas for the Sun"; accurate to about 0.01
degrees in declination between 1950 and 2050), and the hour angle from
Greenwich mean sidereal time. A degree of accuracy is all a
day/night decision needs, so the dozen lines here replace an ephemeris
library (pvlib, astropy, skyfield), none of which genda otherwise needs.
"""

from __future__ import annotations

import numpy as np

from genda.times import TimeLike, as_datetime64

__all__ = ["DARK_ZENITH_DEG", "is_dark", "solar_zenith_deg"]

DARK_ZENITH_DEG = 96.0
"""The Sun at least 6 degrees below the horizon (the end of civil twilight)."""

_J2000 = np.datetime64("2000-01-01T12:00:00", "ns")


def solar_zenith_deg(
    time: TimeLike, lat: np.ndarray | float, lon: np.ndarray | float
) -> np.ndarray:
    """The Sun's zenith angle (degrees) at ``time`` (UTC) seen from ``lat``, ``lon``
    (degrees, any shapes that broadcast), without refraction.

    The hour angle comes from Greenwich mean sidereal time less the Sun's right
    ascension, which carries the equation of time.
    """
    days = (as_datetime64(time) - _J2000) / np.timedelta64(1, "D")
    mean_longitude = np.deg2rad((280.460 + 0.9856474 * days) % 360.0)
    anomaly = np.deg2rad((357.528 + 0.9856003 * days) % 360.0)
    ecliptic = mean_longitude + np.deg2rad(1.915 * np.sin(anomaly) + 0.020 * np.sin(2 * anomaly))
    obliquity = np.deg2rad(23.439 - 4.0e-7 * days)
    declination = np.arcsin(np.sin(obliquity) * np.sin(ecliptic))
    right_ascension = np.arctan2(np.cos(obliquity) * np.sin(ecliptic), np.cos(ecliptic))
    # Greenwich mean sidereal time (degrees) less the right ascension: the hour angle at 0 E
    sidereal = np.deg2rad((280.46061837 + 360.98564736629 * days) % 360.0)
    hour_angle = sidereal + np.deg2rad(np.asarray(lon, dtype=np.float64)) - right_ascension
    phi = np.deg2rad(np.asarray(lat, dtype=np.float64))
    cosine = np.sin(phi) * np.sin(declination) + np.cos(phi) * np.cos(declination) * np.cos(
        hour_angle
    )
    return np.rad2deg(np.arccos(np.clip(cosine, -1.0, 1.0)))


def is_dark(
    time: TimeLike,
    lat: np.ndarray | float,
    lon: np.ndarray | float,
    zenith: float = DARK_ZENITH_DEG,
) -> np.ndarray:
    """Whether the Sun is at least ``zenith`` degrees from the zenith (default: night)."""
    return solar_zenith_deg(time, lat, lon) >= zenith
