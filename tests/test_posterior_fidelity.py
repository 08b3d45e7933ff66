"""Posterior members against model data: power per degree and eddy vertical correlation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genda.errors import InvalidValueError
from genda.evaluation.posterior_fidelity import (
    plot_posterior_fidelity,
    posterior_fidelity,
    scalar_power,
)
from genda.grid import Grid

GRID = Grid.gaussian(16, 32, 3)


def _fields(n: int, seed: int) -> dict[str, np.ndarray]:
    """Smooth random fields with levels correlated upwards (a red spectrum)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in GRID.variables:
        base = rng.standard_normal((n, 1, 16, 32))
        noise = rng.standard_normal((n, 3, 16, 32))
        field = 0.8 * base + 0.6 * noise
        # smooth in longitude so that the spectrum falls off
        spectrum = np.fft.rfft(field, axis=-1)
        spectrum[..., 6:] = 0
        out[name] = np.fft.irfft(spectrum, n=32, axis=-1)
    return out


def test_model_data_against_itself_is_perfect() -> None:
    data = _fields(40, 0)
    report = posterior_fidelity(data, data, GRID)
    for name in GRID.variables:
        np.testing.assert_allclose(report.power_ratio[name], 1.0, rtol=1e-12)
        assert report.eddy_correlation_mean_abs_difference[name] == pytest.approx(0.0, abs=1e-12)
    assert all(error < 1e-12 for error in report.worst_power_error().values())
    # stored reports (metrics.json) keep the key they were written with
    stored = report.to_dict()["vertical_correlation_error"]
    assert stored == dict(report.eddy_correlation_mean_abs_difference)


def test_doubled_members_carry_four_times_the_power() -> None:
    data = _fields(40, 1)
    doubled = {name: 2.0 * values for name, values in data.items()}
    report = posterior_fidelity(doubled, data, GRID)
    for name in GRID.variables:
        np.testing.assert_allclose(report.power_ratio[name], 4.0, rtol=1e-10)
    assert all(abs(error - 3.0) < 1e-10 for error in report.worst_power_error().values())
    # scaling does not change correlations
    assert all(e < 1e-12 for e in report.eddy_correlation_mean_abs_difference.values())


def test_power_of_a_single_harmonic() -> None:
    """``sin(lat)`` is degree 1 only: its power is the integral of its square, 4 pi / 3."""
    lat = np.deg2rad(GRID.latitude)[None, None, :, None]
    field = np.broadcast_to(np.sin(lat), (2, 3, 16, 32)).copy()
    power = scalar_power(field, GRID)
    np.testing.assert_allclose(power[:, 1], 4 * np.pi / 3, rtol=1e-6)
    assert np.abs(np.delete(power, 1, axis=1)).max() < 1e-8


def test_incoherent_levels_are_caught() -> None:
    data = _fields(40, 3)
    rng = np.random.default_rng(9)
    shuffled = {  # each level from another field: the vertical coherence is gone
        name: np.stack([values[rng.permutation(40), level] for level in range(3)], axis=1)
        for name, values in data.items()
    }
    report = posterior_fidelity(shuffled, data, GRID)
    assert all(error > 0.3 for error in report.eddy_correlation_mean_abs_difference.values())


def test_plot_and_bad_shapes(tmp_path: Path) -> None:
    data = _fields(8, 4)
    path = plot_posterior_fidelity(posterior_fidelity(data, data, GRID), GRID, tmp_path / "p.png")
    assert path.stat().st_size > 10_000
    with pytest.raises(InvalidValueError, match="fields must be"):
        scalar_power(np.zeros((2, 3, 8, 32)), GRID)
