"""Summary numbers of an MLT circulation: jets, tides in their latitude bands, spectral slopes.

Shared by the model's acceptance report and the demo so both speak of the same
quantities: migrating diurnal tides in ``|lat| < 35`` (where the (1, 1) Hough
mode lives), semidiurnal tides in ``35 <= |lat| <= 65``, zonal-mean wind
extremes per hemisphere, and least-squares log-log slopes of kinetic-energy
spectra.
"""

from __future__ import annotations

import numpy as np

from genda.evaluation.tides import TidalAnalysis


def tidal_band(latitude: np.ndarray, harmonic: int) -> np.ndarray:
    """``(H,)`` mask of the latitudes where tide ``harmonic`` (1 or 2) is summarised."""
    lat = np.abs(np.asarray(latitude))
    return lat < 35 if harmonic == 1 else (lat > 35) & (lat < 65)


def band_amplitude(analysis: TidalAnalysis, harmonic: int, latitude: np.ndarray) -> np.ndarray:
    """``(L,)`` amplitude of tide ``harmonic`` averaged over its band and all longitudes."""
    return analysis.amplitude[harmonic][:, tidal_band(latitude, harmonic)].mean(axis=(1, 2))


def band_background(analysis: TidalAnalysis, harmonic: int, latitude: np.ndarray) -> np.ndarray:
    """``(L,)`` background amplitude over the band of tide ``harmonic``."""
    return analysis.background[:, tidal_band(latitude, harmonic)].mean(axis=(1, 2))


def jet_extremes(u: np.ndarray, latitude: np.ndarray) -> dict[str, list[float]]:
    """Extremes per level of the time- and zonal-mean wind of ``u`` ``(T, L, H, W)``, per hemisphere."""
    zonal = u.mean(axis=(0, 3))
    north, south = np.asarray(latitude) > 0, np.asarray(latitude) < 0
    return {
        "northern_max": zonal[:, north].max(1).round(1).tolist(),
        "northern_min": zonal[:, north].min(1).round(1).tolist(),
        "southern_max": zonal[:, south].max(1).round(1).tolist(),
        "southern_min": zonal[:, south].min(1).round(1).tolist(),
    }


def spectral_slopes(spectrum: np.ndarray, degrees: slice) -> list[float]:
    """Log-log slope of each spectrum ``(L, T+1)`` over the total wavenumbers ``degrees``."""
    l = np.arange(spectrum.shape[-1])[degrees]  # noqa: E741
    return [float(np.polyfit(np.log(l), np.log(s[degrees]), 1)[0]) for s in spectrum]
