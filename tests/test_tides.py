"""Contract tests for genda.evaluation.tides: amplitudes, local-time phases, noise background."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from genda.evaluation.tides import tidal_harmonics

DAYS = 10
NLAT, NLON = 8, 16
LON = np.arange(NLON) * (360.0 / NLON)
DIURNAL_LT, SEMIDIURNAL_LT = 12.0, 3.0  # local solar time of the maxima (h)
A1 = 20.0 + 5.0 * np.arange(NLAT)[:, None] * np.ones(NLON)  # (H, W), varies with latitude
A2 = 10.0 + 2.0 * np.arange(NLAT)[:, None] * np.ones(NLON)
SIGMA = 0.5


def migrating_tides(
    hours_per_sample: float = 1.0, days: int = DAYS, sigma: float = SIGMA, seed: int = 0
) -> np.ndarray:
    """``A1 cos(2 pi (t + lon/15 - 12)/24) + A2 cos(4 pi (t + lon/15 - 3)/24) + noise``, (T, H, W)."""
    t_utc = np.arange(round(days * 24 / hours_per_sample)) * hours_per_sample
    local = t_utc[:, None, None] + LON / 15.0
    signal = A1 * np.cos(2 * np.pi * (local - DIURNAL_LT) / 24.0) + A2 * np.cos(
        4 * np.pi * (local - SEMIDIURNAL_LT) / 24.0
    )
    noise = np.random.default_rng(seed).normal(0.0, sigma, signal.shape)
    return 3.0 + signal + noise  # a mean offset, removed by the analysis


def circular_difference(a: np.ndarray, b: float, period: float) -> np.ndarray:
    """Signed ``a - b`` folded into ``[-period/2, period/2)``."""
    return (np.asarray(a) - b + period / 2) % period - period / 2


def test_circular_difference() -> None:
    assert circular_difference(23.9, 0.1, 24.0) == pytest.approx(-0.2)
    assert circular_difference(0.05, 11.95, 12.0) == pytest.approx(0.1)
    assert circular_difference(3.0, 3.0, 12.0) == 0.0


def test_noiseless_tides_are_exact() -> None:
    analysis = tidal_harmonics(migrating_tides(sigma=0.0), longitude_deg=LON)
    np.testing.assert_allclose(analysis.amplitude[1], A1, rtol=1e-12)
    np.testing.assert_allclose(analysis.amplitude[2], A2, rtol=1e-12)
    np.testing.assert_allclose(
        circular_difference(analysis.phase_hours[1], 12.0, 24.0), 0, atol=1e-9
    )
    np.testing.assert_allclose(
        circular_difference(analysis.phase_hours[2], 3.0, 12.0), 0, atol=1e-9
    )
    np.testing.assert_allclose(analysis.background, 0.0, atol=1e-12)
    assert analysis.amplitude[1].shape == analysis.background.shape == (NLAT, NLON)


def test_amplitudes_and_local_time_phases_with_noise() -> None:
    """Recovery within 2 % and 0.1 h.

    White noise of std sigma over N samples gives each Fourier line (as scaled here,
    2/N rfft) real and imaginary parts of variance 2 sigma^2 / N: the amplitude error is
    ~ sigma sqrt(2/N) = 0.046 (0.5 % of the smallest tide, 10), the phase error
    ~ sigma sqrt(2/N) / A * 24 / (2 pi n) < 0.01 h. The bounds are > 6 standard deviations.
    """
    analysis = tidal_harmonics(migrating_tides(), longitude_deg=LON)
    assert set(analysis.amplitude) == set(analysis.phase_hours) == {1, 2}
    np.testing.assert_allclose(analysis.amplitude[1], A1, rtol=0.02)
    np.testing.assert_allclose(analysis.amplitude[2], A2, rtol=0.02)
    assert np.all(np.abs(circular_difference(analysis.phase_hours[1], DIURNAL_LT, 24.0)) < 0.1)
    assert np.all(np.abs(circular_difference(analysis.phase_hours[2], SEMIDIURNAL_LT, 12.0)) < 0.1)
    # phases are reported within one period
    assert np.all((analysis.phase_hours[1] >= 0) & (analysis.phase_hours[1] < 24))
    assert np.all((analysis.phase_hours[2] >= 0) & (analysis.phase_hours[2] < 12))


def test_phases_without_longitude_are_utc() -> None:
    """Migrating tides peak at UTC = local time - lon/15."""
    analysis = tidal_harmonics(migrating_tides(sigma=0.0))
    np.testing.assert_allclose(
        circular_difference(analysis.phase_hours[1], 0.0, 24.0),
        circular_difference(DIURNAL_LT - LON / 15.0, 0.0, 24.0) * np.ones((NLAT, 1)),
        atol=1e-9,
    )
    np.testing.assert_allclose(
        circular_difference(analysis.phase_hours[2], 0.0, 12.0),
        circular_difference(SEMIDIURNAL_LT - LON / 15.0, 0.0, 12.0) * np.ones((NLAT, 1)),
        atol=1e-9,
    )


def test_three_hourly_sampling() -> None:
    """80 samples: amplitude error ~ sigma sqrt(2/80) = 0.016 for sigma = 0.1 (12 sigma < 2 %)."""
    series = migrating_tides(hours_per_sample=3.0, sigma=0.1)
    assert series.shape[0] == 80
    analysis = tidal_harmonics(series, 3.0, longitude_deg=LON)
    np.testing.assert_allclose(analysis.amplitude[1], A1, rtol=0.02)
    np.testing.assert_allclose(analysis.amplitude[2], A2, rtol=0.02)
    assert np.all(np.abs(circular_difference(analysis.phase_hours[1], DIURNAL_LT, 24.0)) < 0.1)
    assert np.all(np.abs(circular_difference(analysis.phase_hours[2], SEMIDIURNAL_LT, 12.0)) < 0.1)


def test_terdiurnal_harmonic() -> None:
    t = np.arange(DAYS * 24.0)
    local = t[:, None] + LON / 15.0
    series = 4.0 * np.cos(6 * np.pi * (local - 5.0) / 24.0)
    analysis = tidal_harmonics(series, harmonics=(3,), longitude_deg=LON)
    np.testing.assert_allclose(analysis.amplitude[3], 4.0, rtol=1e-12)
    np.testing.assert_allclose(circular_difference(analysis.phase_hours[3], 5.0, 8.0), 0, atol=1e-9)


def expected_background(sigma: float, ntime: int, nlines: int) -> float:
    """Expected median amplitude of ``nlines`` (odd) white-noise lines.

    Each line amplitude is Rayleigh with scale s = sigma sqrt(2/N) (population median
    s sqrt(2 ln 2) = sigma sqrt(4 ln 2 / N)); the sample median of an odd count n is the
    (n+1)/2-th order statistic, whose CDF value is Beta((n+1)/2, (n+1)/2) distributed.
    """
    scale = sigma * np.sqrt(2.0 / ntime)
    k = (nlines + 1) // 2
    beta = stats.beta(k, nlines + 1 - k)

    def quantile_times_density(p: float) -> float:
        return scale * np.sqrt(-2.0 * np.log1p(-p)) * beta.pdf(p)

    value, _ = integrate.quad(quantile_times_density, 0.0, 1.0)
    return value


def test_background_is_the_noise_level() -> None:
    """Background = median line amplitude between 0.5 and 3.5 cycles/day, tidal lines excluded.

    Over 10 days the lines are k/10 cycles per day: k = 5..35 (31 lines) minus k = 9, 10, 11
    and 19, 20, 21 leaves 25 noise lines. The sample median of 25 Rayleigh amplitudes has
    a relative spread of ~13 % at one point; averaged over the 128 independent points the
    spread is ~1.2 %, so 5 % is a > 4 sigma bound. The tides (20-45, 10-24) are 200 times
    larger than the background: letting any tidal line into the median would break it.
    """
    ntime = DAYS * 24
    nlines = 25
    expected = expected_background(SIGMA, ntime, nlines)
    population_median = SIGMA * np.sqrt(4.0 * np.log(2.0) / ntime)
    assert expected == pytest.approx(population_median, rel=0.02)  # 0.0537
    background = tidal_harmonics(migrating_tides(seed=1), longitude_deg=LON).background
    assert background.shape == (NLAT, NLON)
    assert background.mean() == pytest.approx(expected, rel=0.05)
    assert np.all(background < 3 * expected) and np.all(background > expected / 3)
    # the background scales with the noise and not with the tides
    doubled = tidal_harmonics(migrating_tides(sigma=2 * SIGMA, seed=1)).background
    np.testing.assert_allclose(doubled, 2 * background, rtol=1e-6)


def test_background_without_tides_matches() -> None:
    pure_noise = np.random.default_rng(2).normal(0.0, SIGMA, (DAYS * 24, NLAT, NLON))
    analysis = tidal_harmonics(pure_noise)
    expected = expected_background(SIGMA, DAYS * 24, 25)
    assert analysis.background.mean() == pytest.approx(expected, rel=0.05)
    # the tidal lines of pure noise are noise too: Rayleigh, mean s sqrt(pi/2)
    mean_line = SIGMA * np.sqrt(2.0 / (DAYS * 24)) * np.sqrt(np.pi / 2)
    assert analysis.amplitude[1].mean() == pytest.approx(mean_line, rel=0.2)  # 4 sigma


@pytest.mark.parametrize(
    ("ntime", "hours_per_sample", "days_text"),
    [(252, 1.0, "10.500"), (100, 3.0, "12.500"), (24, 1.0, "1.000"), (25, 1.0, "1.042")],
)
def test_not_a_whole_number_of_days(ntime: int, hours_per_sample: float, days_text: str) -> None:
    with pytest.raises(
        ValueError, match=rf"whole number \(>= 2\) of days of samples, got {days_text} days"
    ):
        tidal_harmonics(np.zeros((ntime, 2)), hours_per_sample)
