"""Physical constants and the log-pressure altitude used throughout genda.

Altitudes in genda are log-pressure altitudes, ``z* = H ln(p0 / p)``, in km,
the vertical coordinate of WACCM-X/UA-ICON MLT studies (Andrews, Holton &
Leovy 1987, "Middle Atmosphere Dynamics", sect. 3.1). With ``H = 7 km`` it
stays within a few km of geometric altitude between 50 and 120 km.
"""

from __future__ import annotations

import numpy as np

from genda.errors import InvalidValueError

EARTH_RADIUS_M = 6.371e6
"""Mean Earth radius (m)."""
EARTH_ROTATION_RATE = 7.292e-5
"""Angular velocity of the Earth (rad s-1)."""
GRAVITY = 9.5
"""Gravitational acceleration at about 90 km altitude (m s-2)."""
STANDARD_GRAVITY = 9.80665
"""Standard gravity g0 (m s-2): geopotential height is geopotential / g0 (WMO; CF ``geopotential_height``)."""
DRY_AIR_GAS_CONSTANT = 287.0
"""Specific gas constant of dry air (J kg-1 K-1)."""
DRY_AIR_CP = 1004.0
"""Specific heat of dry air at constant pressure (J kg-1 K-1)."""
KAPPA = DRY_AIR_GAS_CONSTANT / DRY_AIR_CP
REFERENCE_PRESSURE_PA = 1.0e5
"""Reference pressure p0 of the log-pressure altitude (Pa)."""
SCALE_HEIGHT_KM = 7.0
"""Scale height H of the log-pressure altitude (km)."""
SECONDS_PER_DAY = 86400.0
HPA_TO_PA = 100.0
"""Pascals per hectopascal (= millibar): MLS and SABER report pressure in hPa or mb."""


def pressure_to_altitude_km(pressure_pa: np.ndarray | float) -> np.ndarray:
    """Log-pressure altitude ``H ln(p0 / p)`` in km for pressures in Pa."""
    pressure = np.asarray(pressure_pa, dtype=np.float64)
    if np.any(pressure <= 0):
        raise InvalidValueError("pressure must be positive to convert to log-pressure altitude")
    return SCALE_HEIGHT_KM * np.log(REFERENCE_PRESSURE_PA / pressure)


def altitude_km_to_pressure(altitude_km: np.ndarray | float) -> np.ndarray:
    """Pressure in Pa at log-pressure altitudes in km (inverse of the above)."""
    altitude = np.asarray(altitude_km, dtype=np.float64)
    return REFERENCE_PRESSURE_PA * np.exp(-altitude / SCALE_HEIGHT_KM)
