"""Standard relations between geometric height, geopotential height and pressure.

Two references that :mod:`genda.observations.heights` builds on:

- **Geopotential height <-> geometric height** with latitude-dependent gravity:
  normal gravity on the WGS-84 ellipsoid (Somigliana's closed formula) and the
  effective Earth radius that makes the free-air gradient right,

      g(phi) = g_e (1 + k sin^2 phi) / sqrt(1 - e^2 sin^2 phi)
      R(phi) = a / (1 + f + m - 2 f sin^2 phi)
      z      = R(phi) Zg / (g(phi) / g0 R(phi) - Zg)

  (Mahoney 2001, "A discussion of various measures of altitude", NASA JPL
  Microwave Temperature Profiler notes; the form used by the EUMETSAT ROM SAF
  radio-occultation software, ROPP ``geopotential2geometric``). The simpler
  ``z = Re Zg / (Re - Zg)`` with ``Re`` = 6371 km ignores that surface
  gravity is 0.27 % below g0 at the equator and 0.26 % above it at the poles:
  at ``Zg`` = 100 km it is 0.29 km too low at the equator and 0.27 km too high
  at the poles (0.01 km at 45 deg; ``tests/test_heights.py``).
- **The US Standard Atmosphere 1976** (NOAA/NASA/USAF, NOAA-S/T 76-1562,
  1976): its defining temperature profile, integrated hypsometrically into the
  pressure at each geometric height (:func:`standard_pressure`).

Hand-written: the formulas are a few lines, and no package on the registry
implements the 1976 atmosphere above 86 km (``ambiance`` stops at 81 km,
``fluids``' ``ATMOSPHERE_1976`` at 86 km).
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import cumulative_trapezoid

from genda.constants import STANDARD_GRAVITY

# WGS-84 (NIMA TR8350.2, 2000): semi-major axis (m), flattening, the ratio
# m = omega^2 a^2 b / GM, and Somigliana's constants of normal gravity.
WGS84_SEMI_MAJOR_AXIS_M = 6378137.0
WGS84_FLATTENING = 1.0 / 298.257223563
WGS84_GRAVITY_RATIO = 0.00344978650684
WGS84_EQUATORIAL_GRAVITY = 9.7803253359
"""Normal gravity on the equator (m s-2)."""
WGS84_SOMIGLIANA_K = 0.00193185265241
WGS84_ECCENTRICITY_SQUARED = 0.00669437999013


def normal_gravity(lat_deg: np.ndarray | float) -> np.ndarray:
    """Normal gravity (m s-2) on the WGS-84 ellipsoid at geodetic latitudes (deg), Somigliana."""
    s2 = np.sin(np.deg2rad(np.asarray(lat_deg, dtype=np.float64))) ** 2
    return (
        WGS84_EQUATORIAL_GRAVITY
        * (1.0 + WGS84_SOMIGLIANA_K * s2)
        / np.sqrt(1.0 - WGS84_ECCENTRICITY_SQUARED * s2)
    )


def effective_radius_m(lat_deg: np.ndarray | float) -> np.ndarray:
    """Effective Earth radius (m) for the free-air decrease of gravity (Mahoney 2001)."""
    s2 = np.sin(np.deg2rad(np.asarray(lat_deg, dtype=np.float64))) ** 2
    f, m = WGS84_FLATTENING, WGS84_GRAVITY_RATIO
    return WGS84_SEMI_MAJOR_AXIS_M / (1.0 + f + m - 2.0 * f * s2)


def geopotential_to_geometric_km(
    geopotential_height_km: np.ndarray | float, lat_deg: np.ndarray | float
) -> np.ndarray:
    """Geometric height above mean sea level (km) of geopotential heights (km, geopotential / g0)."""
    zg = np.asarray(geopotential_height_km, dtype=np.float64) * 1e3
    radius = effective_radius_m(lat_deg)
    ratio = normal_gravity(lat_deg) / STANDARD_GRAVITY
    return radius * zg / (ratio * radius - zg) / 1e3


def geometric_to_geopotential_km(
    height_km: np.ndarray | float, lat_deg: np.ndarray | float
) -> np.ndarray:
    """Geopotential height (km) of geometric heights above mean sea level (km); inverse of the above."""
    z = np.asarray(height_km, dtype=np.float64) * 1e3
    radius = effective_radius_m(lat_deg)
    ratio = normal_gravity(lat_deg) / STANDARD_GRAVITY
    return ratio * radius * z / (radius + z) / 1e3


# ---------------------------------------------------------------------------- US Standard Atmosphere 1976
USSA_SEA_LEVEL_PRESSURE_PA = 101325.0
USSA_EARTH_RADIUS_KM = 6356.766
"""The radius r0 of the 1976 standard's own gravity law ``g = g0 (r0 / (r0 + Z))^2``."""
USSA_GAS_CONSTANT = 8314.32
"""R* (J kmol-1 K-1), the 1976 standard's value."""
USSA_SEA_LEVEL_MOLAR_MASS = 28.9644
"""M0 (kg kmol-1)."""

# Below 86 km (geometric): the molecular-scale temperature T_M = T M0 / M is linear
# in geopotential height H (km') in seven layers (the standard's Table 4).
_BASE_GEOPOTENTIAL_KM = np.array([0.0, 11.0, 20.0, 32.0, 47.0, 51.0, 71.0, 84.8520])
_LAPSE_RATE_K_PER_KM = np.array([-6.5, 0.0, 1.0, 2.8, 0.0, -2.8, -2.0])
_SEA_LEVEL_TEMPERATURE_K = 288.15

# Above 86 km: the mean molar mass (kg kmol-1), sum n_i M_i / sum n_i of the
# standard's number densities (Table VIII, pp. 210-215); linear in between.
_MOLAR_MASS_HEIGHT_KM = np.array([86.0, 90.0, 95.0, 100.0, 110.0, 120.0, 150.0, 200.0])
_MOLAR_MASS = np.array([28.952, 28.911, 28.735, 28.395, 27.268, 26.205, 24.103, 21.304])

STANDARD_TOP_KM = 200.0
"""Highest geometric height of :func:`standard_pressure` (km)."""


def standard_temperature(height_km: np.ndarray | float) -> np.ndarray:
    """Kinetic temperature (K) of the US Standard Atmosphere 1976 at geometric heights (km), 0-200 km.

    Below 86 km the linear layers in geopotential height (``T = T_M`` below
    80 km; ``T_M M / M0`` differs by less than 0.05 % up to 86 km); above, the
    standard's four segments in geometric height ``Z``: isothermal 186.8673 K
    to 91 km, an ellipse to 240 K at 110 km, 12 K/km to 360 K at 120 km, then
    ``T_inf - (T_inf - 360 K) exp(-lambda xi)`` with ``T_inf`` = 1000 K,
    ``lambda`` = 0.01875 km-1 and ``xi = (Z - 120)(r0 + 120) / (r0 + Z)``.
    """
    z = np.asarray(height_km, dtype=np.float64)
    below = _molecular_scale_temperature_below_86(z)
    ellipse = 263.1905 - 76.3232 * np.sqrt(np.clip(1.0 - ((z - 91.0) / 19.9429) ** 2, 0.0, None))
    xi = (z - 120.0) * (USSA_EARTH_RADIUS_KM + 120.0) / (USSA_EARTH_RADIUS_KM + z)
    exosphere = 1000.0 - 640.0 * np.exp(-0.01875 * xi)
    return np.select(
        [z < 86.0, z < 91.0, z < 110.0, z < 120.0],
        [below, np.full_like(z, 186.8673), ellipse, 240.0 + 12.0 * (z - 110.0)],
        exosphere,
    )


def _molecular_scale_temperature_below_86(height_km: np.ndarray) -> np.ndarray:
    h = USSA_EARTH_RADIUS_KM * height_km / (USSA_EARTH_RADIUS_KM + height_km)  # geopotential km'
    base = np.concatenate(
        (
            [_SEA_LEVEL_TEMPERATURE_K],
            _SEA_LEVEL_TEMPERATURE_K
            + np.cumsum(_LAPSE_RATE_K_PER_KM * np.diff(_BASE_GEOPOTENTIAL_KM)),
        )
    )
    layer = np.clip(np.searchsorted(_BASE_GEOPOTENTIAL_KM, h, side="right") - 1, 0, 6)
    return base[layer] + _LAPSE_RATE_K_PER_KM[layer] * (h - _BASE_GEOPOTENTIAL_KM[layer])


def _molecular_scale_temperature(height_km: np.ndarray) -> np.ndarray:
    """``T_M = T M0 / M`` (K): what the hydrostatic equation with a constant M0 needs."""
    above = (
        standard_temperature(height_km)
        * USSA_SEA_LEVEL_MOLAR_MASS
        / np.interp(height_km, _MOLAR_MASS_HEIGHT_KM, _MOLAR_MASS)
    )
    return np.where(height_km < 86.0, _molecular_scale_temperature_below_86(height_km), above)


def standard_pressure(step_km: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Pressure of the US Standard Atmosphere 1976 at geometric heights, integrated hypsometrically.

    ``d ln p / dZ = -g0 M0 / (R* T_M(Z)) (r0 / (r0 + Z))^2`` from 101325 Pa at
    sea level, by the trapezoidal rule on ``step_km`` steps up to
    :data:`STANDARD_TOP_KM`. Below 86 km this is the standard's own definition
    (within 0.01 % of its tabulated pressures). Above, the standard sums the
    partial pressures of species that separate by diffusion under prescribed
    vertical fluxes, which is not exactly hydrostatic: the result is within 1 %
    of its tabulated pressures at 86-200 km (``tests/test_heights.py``), i.e.
    within 60 m in height.

    Returns:
        ``(height_km (N,), pressure_pa (N,))``, heights increasing from 0.
    """
    height = np.arange(0.0, STANDARD_TOP_KM + 0.5 * step_km, step_km)
    gravity_factor = (USSA_EARTH_RADIUS_KM / (USSA_EARTH_RADIUS_KM + height)) ** 2
    rate = (
        STANDARD_GRAVITY
        * USSA_SEA_LEVEL_MOLAR_MASS
        / USSA_GAS_CONSTANT
        * 1e3  # per km
        * gravity_factor
        / _molecular_scale_temperature(height)
    )
    log_p = np.log(USSA_SEA_LEVEL_PRESSURE_PA) - cumulative_trapezoid(rate, height, initial=0.0)
    return height, np.exp(log_p)


__all__ = [
    "STANDARD_TOP_KM",
    "effective_radius_m",
    "geometric_to_geopotential_km",
    "geopotential_to_geometric_km",
    "normal_gravity",
    "standard_pressure",
    "standard_temperature",
]
