"""Tidal harmonics of hourly time series at fixed longitudes.

At every grid point the series is Fourier-analysed over whole days; the tidal
amplitude of harmonic ``n`` (1 diurnal, 2 semidiurnal) is the amplitude of the
``n`` cycles-per-day line, and the background is the median amplitude of the
other lines between 0.5 and 3.5 cycles per day (the tidal lines and their
neighbours excluded). A ratio well above 1 means the tide stands out of the
planetary-wave and gravity-wave variability.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genda.errors import InvalidValueError


@dataclass(frozen=True)
class TidalAnalysis:
    """Amplitudes (units of the field) and phases (hour of maximum, local solar time).

    Shapes follow the input without its time axis: ``(..., H, W)``.
    """

    amplitude: dict[int, np.ndarray]
    phase_hours: dict[int, np.ndarray]
    background: np.ndarray


def tidal_harmonics(
    series: np.ndarray,
    hours_per_sample: float = 1.0,
    harmonics: tuple[int, ...] = (1, 2),
    longitude_deg: np.ndarray | None = None,
) -> TidalAnalysis:
    """Analyse ``series`` of shape ``(T, ...)`` sampled every ``hours_per_sample`` from 00 UTC.

    ``T * hours_per_sample`` must be a whole number of days. With
    ``longitude_deg`` (the last axis), phases are in local solar time.
    """
    samples_per_day = 24.0 / hours_per_sample
    ntime = series.shape[0]
    days = ntime / samples_per_day
    if abs(days - round(days)) > 1e-9 or days < 2:
        raise InvalidValueError(
            f"need a whole number (>= 2) of days of samples, got {days:.3f} days"
        )
    days = round(days)
    anomaly = series - series.mean(axis=0, keepdims=True)
    coeffs = np.fft.rfft(anomaly, axis=0) * (2.0 / ntime)  # amplitude of each line
    freq_cpd = np.arange(coeffs.shape[0]) / days
    amplitude: dict[int, np.ndarray] = {}
    phase: dict[int, np.ndarray] = {}
    exclude = np.zeros(freq_cpd.size, dtype=bool)
    for n in harmonics:
        index = n * days
        c = coeffs[index]
        amplitude[n] = np.abs(c)
        # time (UTC hours) of the maximum of A cos(2 pi n t / 24 + arg) ...
        utc = (-np.angle(c) / (2 * np.pi * n) * 24.0) % (24.0 / n)
        if longitude_deg is not None:
            utc = (utc + np.asarray(longitude_deg) / 15.0) % (24.0 / n)
        phase[n] = utc
        exclude[max(index - 1, 0) : index + 2] = True
    band = (freq_cpd >= 0.5) & (freq_cpd <= 3.5) & ~exclude
    background = np.median(np.abs(coeffs[band]), axis=0)
    return TidalAnalysis(amplitude, phase, background)
