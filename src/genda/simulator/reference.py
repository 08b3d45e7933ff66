"""Reference atmosphere and isentropic layer geometry of the built-in model.

Layers are bounded by surfaces of constant potential temperature. Their
reference interfaces are evenly spaced in log-pressure altitude between the
bottom and the top of the model; each layer's potential temperature is chosen
so that the resting reference state has the global-mean temperature profile
:func:`reference_temperature`, a smooth fit to the shape of the MSIS
climatology (mesopause near 88 km at about 180 K, thermospheric rise above).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from genda.constants import (
    DRY_AIR_CP,
    GRAVITY,
    KAPPA,
    REFERENCE_PRESSURE_PA,
    altitude_km_to_pressure,
    pressure_to_altitude_km,
)
from genda.errors import InvalidValueError

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def reference_temperature(altitude_km: np.ndarray | float) -> np.ndarray:
    """Global-mean temperature (K) at log-pressure altitude (km), 60-130 km."""
    z = np.asarray(altitude_km, dtype=np.float64)
    below = 182.0 + 28.0 * ((z - 88.0) / 18.0) ** 2
    above = 182.0 + 0.09 * (z - 88.0) ** 2 + 0.003 * (z - 88.0) ** 3
    return np.where(z < 88.0, below, above)


def exner(pressure_pa: ArrayT) -> ArrayT:
    """Exner function ``cp (p / p0)^kappa`` (J kg-1 K-1) of a numpy array or torch tensor."""
    return DRY_AIR_CP * (pressure_pa / REFERENCE_PRESSURE_PA) ** KAPPA


def layer_mean_exner(p_bottom: ArrayT, p_top: ArrayT) -> ArrayT:
    """Mass-weighted mean of the Exner function between two pressures (numpy or torch).

    ``(1/dp) integral Pi dp = cp p0^-kappa (pb^(k+1) - pt^(k+1)) / ((k+1)(pb - pt))``.
    """
    scale = DRY_AIR_CP / REFERENCE_PRESSURE_PA**KAPPA / (1.0 + KAPPA)
    return scale * (p_bottom ** (1.0 + KAPPA) - p_top ** (1.0 + KAPPA)) / (p_bottom - p_top)


@dataclass(frozen=True)
class LayerGeometry:
    """Reference layers, indexed upward from the bottom (k = 0).

    Attributes:
        interface_km: ``(K + 1,)`` log-pressure altitudes of the interfaces.
        interface_pressure: ``(K + 1,)`` their pressures (Pa); the last is the model top.
        theta: ``(K,)`` potential temperature of each layer (K), increasing upward.
        sigma: ``(K,)`` reference pseudo-density ``dp / g`` of each layer (kg m-2).
        temperature: ``(K,)`` reference layer temperature (K).
    """

    interface_km: np.ndarray
    interface_pressure: np.ndarray
    theta: np.ndarray
    sigma: np.ndarray
    temperature: np.ndarray

    @property
    def top_pressure(self) -> float:
        return float(self.interface_pressure[-1])

    @property
    def layer_km(self) -> np.ndarray:
        """``(K,)`` log-pressure altitude of the layer's mean Exner pressure."""
        return 0.5 * (self.interface_km[:-1] + self.interface_km[1:])


def layer_geometry(layers: int, bottom_km: float, top_km: float) -> LayerGeometry:
    """Reference layers evenly spaced in log-pressure altitude."""
    interface_km = np.linspace(bottom_km, top_km, layers + 1)
    p_int = altitude_km_to_pressure(interface_km)
    mean_exner = layer_mean_exner(p_int[:-1], p_int[1:])
    # The temperature a layer carries is the mass-weighted mean over its depth;
    # evaluate the reference profile at the pressure whose Exner value that is.
    p_mean = REFERENCE_PRESSURE_PA * (mean_exner / DRY_AIR_CP) ** (1.0 / KAPPA)
    temperature = reference_temperature(pressure_to_altitude_km(p_mean))
    theta = DRY_AIR_CP * temperature / mean_exner
    if layers > 1 and not np.all(np.diff(theta) > 0):
        raise InvalidValueError(
            "reference state is statically unstable (theta must increase upward)"
        )
    sigma = (p_int[:-1] - p_int[1:]) / GRAVITY
    return LayerGeometry(interface_km, p_int, theta, sigma, temperature)
