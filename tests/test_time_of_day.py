"""A prior whose mean follows the time of day: hours, the tidal fit's normal equations, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genda.errors import InvalidValueError
from genda.grid import Grid
from genda.models.time_of_day import day_harmonics, hours_of_day
from genda.models.whitening import SpectralWhitening
from genda.threads import cpu_threads

GRID = Grid.gaussian(8, 16, 2, variables=("u", "v", "T"))
N = 240
OMEGA = 2.0 * math.pi / 24.0


@pytest.fixture(scope="module")
def tidal_fields() -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    """``N`` band-limited fields with a diurnal and a semidiurnal mean, their hours, and that mean.

    Fields ``x_i = a + cos(Omega h_i) b + sin(2 Omega h_i) c + 0.3 e_i`` projected
    on what the transform represents (one fitted without tides), hours
    ``0..23`` over ten days.
    """
    with cpu_threads(1):
        g = torch.Generator().manual_seed(0)
        pattern = torch.randn(3, *GRID.shape, generator=g, dtype=torch.float64)
        hours = (np.arange(N) % 24).astype(np.float64)
        h = torch.from_numpy(hours)[:, None, None, None, None]
        signal = (
            pattern[0] + torch.cos(OMEGA * h) * pattern[1] + torch.sin(2 * OMEGA * h) * pattern[2]
        )
        noise = 0.3 * torch.randn(N, *GRID.shape, generator=g, dtype=torch.float64)
        plain = SpectralWhitening(GRID).double().fit([signal + noise])
        fields = plain.decode(plain.encode(signal + noise))
        return fields, hours, plain.decode(plain.encode(signal))


def fitted(fields: torch.Tensor, hours: np.ndarray, tides: int) -> SpectralWhitening:
    with cpu_threads(1):
        module = SpectralWhitening(GRID, tides=tides).double()
        half = fields.shape[0] // 2  # two batches: the sums must add up across them
        return module.fit([(fields[:half], hours[:half]), (fields[half:], hours[half:])])


def test_hours_of_day_are_ut_hours() -> None:
    times = np.array(["2000-01-01T06:30", "2000-03-05T23:59:24", "1999-12-31T00:00"], "M8[s]")
    np.testing.assert_allclose(hours_of_day(times), [6.5, 23.99, 0.0])
    assert hours_of_day(np.datetime64("2000-01-01T12")).tolist() == [12.0]
    with pytest.raises(InvalidValueError, match="NaT"):
        hours_of_day(np.array(["NaT"], "M8[s]"))
    with pytest.raises(InvalidValueError, match="datetimes"):
        hours_of_day(np.array(["noon"]))


def test_day_harmonics_are_cosines_and_sines_of_the_solar_day() -> None:
    h = torch.tensor([0.0, 6.0, 8.0], dtype=torch.float64)
    expected = torch.tensor(
        [
            [1.0, 0.0, 1.0, 0.0],
            [0.0, 1.0, -1.0, 0.0],
            [math.cos(OMEGA * 8), math.sin(OMEGA * 8), math.cos(OMEGA * 16), math.sin(OMEGA * 16)],
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(day_harmonics(h, 2), expected, atol=1e-12, rtol=0)
    assert day_harmonics(h, 0).shape == (3, 0)


def test_the_tidal_fit_solves_the_normal_equations(tidal_fields) -> None:
    """Whitened training fields are orthogonal to 1 and every harmonic, with unit variance.

    Least squares leaves residuals orthogonal to its regressors, and ``S`` is
    their covariance, so ``sum_i z_i r_i(h_i) = 0`` for each regressor and
    ``sum_i |z_i|^2 / (n - 1 - 2 N)`` is the number of kept components: exact
    to round-off, whatever the sampling noise.
    """
    fields, hours, _ = tidal_fields
    module = fitted(fields, hours, tides=2)
    z = module.encode(fields, hours).reshape(N, -1)
    regressors = torch.cat(
        [torch.ones(N, 1, dtype=torch.float64), day_harmonics(torch.from_numpy(hours), 2)], dim=1
    )
    scale = z.abs().max()
    assert float((regressors.T @ z).abs().max()) < 1e-9 * N * scale
    kept = int((z.abs().sum(0) > 0).sum())
    assert kept > 0
    assert float(z.square().sum()) / (N - 5) == pytest.approx(kept, rel=1e-9)
    # decode inverts encode at each field's own hour
    torch.testing.assert_close(module.decode(module.encode(fields, hours), hours), fields)


def test_the_mean_follows_the_hour_and_one_mean_does_not(tidal_fields) -> None:
    """The fitted mean at each hour is the generating tidal mean, to sampling error."""
    fields, hours, signal = tidal_fields
    module = fitted(fields, hours, tides=2)
    zero = torch.zeros(24, *module.state_shape, dtype=torch.float64)
    mean = module.decode(zero, np.arange(24.0))
    error = (mean - signal[:24]).square().mean().sqrt()
    assert float(error) < 0.1 * float(signal[:24].std())  # noise 0.3 / sqrt(240 / 5)
    # without tides the mean is one field for every hour: the diurnal cycle is lost,
    # and it is left in the whitened states (z correlates with cos(Omega h))
    plain = fitted(fields, hours, tides=0)
    plain_error = (plain.decode(zero) - signal[:24]).square().mean().sqrt()
    assert float(plain_error) > 5 * float(error)
    z = plain.encode(fields).reshape(N, -1)
    cosine = torch.cos(OMEGA * torch.from_numpy(hours))
    assert float((cosine @ z).abs().max()) > 0.3 * N


def test_a_tidal_transform_refuses_missing_hours_and_hours_that_miss_the_day(tidal_fields) -> None:
    fields, hours, _ = tidal_fields
    module = fitted(fields, hours, tides=1)
    with pytest.raises(InvalidValueError, match="give the UT hour"):
        module.encode(fields[:2])
    with pytest.raises(InvalidValueError, match="give the UT hour"):
        module.decode(torch.zeros(2, *module.state_shape, dtype=torch.float64))
    with pytest.raises(InvalidValueError, match="one per field"):
        module.encode(fields[:2], np.zeros(3))
    with pytest.raises(InvalidValueError, match="NaN"):
        module.encode(fields[:2], np.array([1.0, np.nan]))
    fresh = SpectralWhitening(GRID, tides=2).double()
    with pytest.raises(InvalidValueError, match="give the UT hour"):
        fresh.fit([fields[:48]])
    with pytest.raises(InvalidValueError, match="do not cover the day"):
        fresh.fit([(fields[:48], np.full(48, 6.0))])  # every field at 06 UT
    with pytest.raises(InvalidValueError, match="do not cover the day"):
        fresh.fit([(fields[:48], np.where(np.arange(48) % 2, 0.0, 12.0))])  # 12 h aliases
    with pytest.raises(InvalidValueError, match="at least 6 fields"):
        fresh.fit([(fields[:5], np.arange(5.0) * 4.8)])


@pytest.mark.parametrize("tides", [-1, 12, 1.5, True, "3"])
def test_impossible_tide_counts_are_refused(tides) -> None:
    with pytest.raises(InvalidValueError, match="tides must be"):
        SpectralWhitening(GRID, tides=tides)


def test_the_configuration_round_trips_and_an_entry_without_tides_has_none() -> None:
    module = SpectralWhitening(GRID, tides=3)
    assert module.config()["tides"] == 3
    assert SpectralWhitening.from_config(GRID, module.config()).tides == 3
    old = {
        k: v for k, v in module.config().items() if k != "tides"
    }  # genda's first whitened priors
    rebuilt = SpectralWhitening.from_config(GRID, old)
    assert rebuilt.tides == 0
    assert "tidal_mean" not in rebuilt.state_dict()
    assert rebuilt.decode(torch.zeros(1, *rebuilt.state_shape)).shape == (1, *GRID.shape)
    assert module.state_dict()["tidal_mean"].shape == (6, *module.mean.shape)
