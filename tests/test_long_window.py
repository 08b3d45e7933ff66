"""Windows longer than a trajectory prior's K hours, composed from its overlapping segments.

Closed forms on the Gaussian AR(1) prior of K = 3 hours (tests/ar1_trajectories.py):
the composed prior of L = 6 hours is the AR(1) chain, its diffusion states map
to each segment's exactly, and the posterior over the whole window (the
smoother) is the dense Gaussian posterior of that chain.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from torch import nn
from typer.testing import CliRunner

from ar1_trajectories import (
    PHI,
    START,
    ar1_trajectories,
    compare,
    dense_posterior,
    gaussian_trajectory_prior,
    jacobian,
    observations,
    points,
)
from genda.assimilation.conditioning import conditioned_denoiser, fixed_states
from genda.assimilation.guidance import GaussianLikelihood, guided_denoiser
from genda.assimilation.posterior import likelihood_for
from genda.cli import app
from genda.errors import InvalidValueError
from genda.models.calendar import Calendar, denoiser_at
from genda.models.checkpoint import LoadedPrior, load_checkpoint
from genda.models.diffusion import EDMDenoiser
from genda.models.long_window import long_window_prior
from genda.models.sampling import sample
from genda.trajectory import stack_states, trajectory_states

HOURS = 6
MEMBERS = 256
runner = CliRunner()


@pytest.fixture(scope="module")
def segment_prior() -> LoadedPrior:
    return gaussian_trajectory_prior()


@pytest.fixture(scope="module")
def long_prior(segment_prior) -> LoadedPrior:
    return long_window_prior(segment_prior, HOURS)


def test_the_composed_prior_is_the_ar1_chain_over_the_whole_window(long_prior) -> None:
    """Hour 0 and hour t correlate as phi^t, every hour has unit variance."""
    assert trajectory_states(long_prior.grid) == HOURS
    assert long_prior.grid.variables[-1] == "T+5h" and long_prior.state_shape[0] == 3 * HOURS
    z = torch.randn(6000, *long_prior.state_shape, dtype=torch.float64)
    x = long_prior.denoiser.decode(z).reshape(6000, HOURS, -1)
    for hour in range(HOURS):
        corr = ((x[:, 0] * x[:, hour]).mean(0) / (x[:, 0].std(0) * x[:, hour].std(0))).mean()
        assert abs(float(corr) - PHI**hour) < 0.03, (hour, float(corr))
        assert abs(float(x[:, hour].var(0).mean()) - 1.0) < 0.06


def test_each_segment_sees_its_own_states_and_white_noise(segment_prior, long_prior) -> None:
    coordinates = long_prior.denoiser.coordinates
    z = torch.randn(4, *long_prior.state_shape, dtype=torch.float64)
    segments = coordinates.split(z)
    assert segments.shape == (4 * 4, 9, 2, 64)
    torch.testing.assert_close(coordinates.compose(segments, 4), z)  # exact, both ways
    # segment j's fields are hours j..j+2 of the window's (the linear parts: the
    # fitted means of the three states differ by their sampling error)
    x = long_prior.denoiser.decode(z) - long_prior.denoiser.decode(torch.zeros_like(z))
    zero = coordinates.split(torch.zeros_like(z))
    per = segments.reshape(4, 4, *segments.shape[1:])
    for j in range(4):
        xj = segment_prior.denoiser.decode(per[:, j]) - segment_prior.denoiser.decode(zero[:4])
        torch.testing.assert_close(xj, x[:, 3 * j : 3 * j + 9])
    # white noise on the window is (close to) white noise on every segment
    noise = coordinates.split(torch.randn(3000, *long_prior.state_shape, dtype=torch.float64))
    variance = noise.reshape(3000, 4, -1).var(0)
    kept = variance > 0.1  # the components the fit dropped are 0 after the first segment
    assert float(kept.double().mean()) > 0.95
    assert abs(float(variance[kept].mean()) - 1.0) < 0.03


def test_the_untrained_composed_denoiser_is_the_gaussian_one(long_prior) -> None:
    z = torch.randn(3, *long_prior.state_shape, dtype=torch.float64)
    sigma = torch.tensor([0.3, 1.0, 5.0], dtype=torch.float64)
    expected = z / (1 + sigma**2)[:, None, None, None]  # c_skip z, sigma_data = 1
    torch.testing.assert_close(long_prior.denoiser(z, sigma), expected)


def test_the_long_window_smoother_is_the_dense_posterior(long_prior) -> None:
    """Observations at 0.5 h, 2 h and 4.5 h: every hour of the window against dense algebra.

    With MMPS's Gaussian Tweedie covariance (the untrained network's exact one);
    the Jacobian's is the same maths through autograd (tests/test_trajectory_prior.py).
    """
    obs = observations([0.5, 2.0, 4.5])
    truth = stack_states(ar1_trajectories(1, 500, HOURS)).double()
    likelihood = likelihood_for(long_prior, obs, time=START).to("cpu", torch.float64)
    y = likelihood.operator.fields(truth)[0] + 0.3 * torch.randn(
        len(obs), generator=torch.Generator().manual_seed(11), dtype=torch.float64
    )
    likelihood = GaussianLikelihood(likelihood.operator, y, likelihood.sigma)
    guided = guided_denoiser(long_prior.denoiser, likelihood, "mmps", covariance="prior")
    z = sample(
        guided, long_prior.state_shape, range(MEMBERS), 3, steps=32, sigma_max=20.0,
        dtype=torch.float64,
    )  # fmt: skip
    members = long_prior.denoiser.decode(z)
    rows = likelihood.operator.fields.adjoint(torch.eye(len(obs), dtype=torch.float64))
    mean, cov = dense_posterior(
        jacobian(long_prior), rows.reshape(len(obs), -1), y, likelihood.sigma
    )
    for hour in (0, 2, 3, 5):
        compare(members, mean, cov, points(long_prior, hour))


def test_a_long_window_can_start_from_a_fixed_first_hour(long_prior) -> None:
    """Filtering a long window: the first hour is the previous analysis, the rest moves on."""
    previous = stack_states(ar1_trajectories(8, 600, HOURS)).double()[:, :3]
    fixed = fixed_states(long_prior, previous, range(8))
    assert fixed.mask.shape == long_prior.state_shape and int(fixed.mask[:3].all()) == 1
    assert not fixed.mask[3:].any()
    denoiser = conditioned_denoiser(long_prior, None, fixed, range(8))
    z = sample(denoiser, long_prior.state_shape, range(8), 1, steps=8, dtype=torch.float64)
    fields = long_prior.denoiser.decode(z)
    # the first hour is the previous analysis as the prior represents it (its truncation)
    kept = long_prior.denoiser.decode(fixed.values.double())[:, :3]
    torch.testing.assert_close(fields[:, :3], kept)
    assert float((kept - previous).std() / previous.std()) < 0.2
    assert float(fields[:, 15:].std()) > 0.5  # hour 5 is free


def test_a_long_window_needs_a_trajectory_prior_and_a_length_it_can_make(
    segment_prior, tiny_prior
) -> None:
    with pytest.raises(InvalidValueError, match="3 to 48 hours, not 2"):
        long_window_prior(segment_prior, 2)
    with pytest.raises(InvalidValueError, match="composed from a trajectory prior"):
        long_window_prior(load_checkpoint(tiny_prior), 6)
    assert long_window_prior(segment_prior, 3) is segment_prior


class RecordingNetwork(nn.Module):
    """A backbone with a calendar that outputs 0 and keeps the conditioning it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.calendar = Calendar(day_harmonics=2, year_harmonics=2)
        self.told: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond=None) -> torch.Tensor:
        self.told.append(cond)
        return torch.zeros_like(x)


def test_each_segment_is_told_its_own_first_hour(segment_prior) -> None:
    calendar = Calendar(day_harmonics=2, year_harmonics=2)
    when = np.datetime64("2001-03-01T22:00")
    for hours in (1.0, 5.0, 30.0):
        later = when + np.timedelta64(int(hours * 60), "m")
        torch.testing.assert_close(
            calendar.shift(calendar.features(when), hours), calendar.features(later)
        )
    network = RecordingNetwork()
    timed = replace(
        segment_prior,
        denoiser=EDMDenoiser(network, coordinates=segment_prior.denoiser.coordinates).double(),
    )
    window = long_window_prior(timed, HOURS)
    z = torch.randn(2, *window.state_shape, dtype=torch.float64)
    denoiser_at(window.denoiser, when)(z, torch.tensor([1.0, 1.0], dtype=torch.float64))
    (told,) = network.told
    hours = when + np.arange(4) * np.timedelta64(1, "h")  # segments start at 0, 1, 2, 3 h
    expected = calendar.features(np.tile(hours, 2))  # member 0's segments, then member 1's
    torch.testing.assert_close(told, expected.to(told.dtype))


def _observations(path: Path, start: np.datetime64, hours: list[float]) -> Path:
    table = pd.DataFrame(
        [
            {
                "time": pd.Timestamp(start) + pd.Timedelta(hours=h),
                "variable": v,
                "lat": lat,
                "lon": lon,
                "alt_km": 90.0,
                "value": value,
                "sigma": 5.0,
            }
            for h in hours
            for v, lat, lon, value in (("u", 54.0, 13.0, 10.0), ("T", 40.0, 100.0, 190.0))
        ]
    )
    table.to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_genda_assimilate_states_writes_a_long_window_hour_by_hour(tiny_archive, tmp_path) -> None:
    """A 3-hour prior, a 7-hour window with observations at 0.5 h and 6 h, cold then filtering."""
    prior = tmp_path / "k3"
    args = ["train", "--data", str(tiny_archive), "--out", str(prior), "--no-progress"]
    args += ["--base-channels", "8", "--channel-mult", "1,2", "--val-gap-hours", "2"]
    args += ["--steps", "4", "--batch-size", "4", "--coordinates", "whitened", "--states", "3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    start = np.datetime64("2000-01-02T06:00")
    store = tmp_path / "long.zarr"
    base = ["assimilate", "--checkpoint", str(prior), "--members", "4", "--steps", "4"]
    base += ["--no-progress", "--out", str(store), "--states", "7"]
    obs = _observations(tmp_path / "a.csv", start, [0.5, 6.0])
    result = runner.invoke(app, [*base, "--time", str(start), "--obs", str(obs)])
    assert result.exit_code == 0, result.output
    later = start + np.timedelta64(6, "h")
    obs = _observations(tmp_path / "b.csv", later, [3.0])
    result = runner.invoke(app, [*base, "--time", str(later), "--obs", str(obs), "--filter"])
    assert result.exit_code == 0, result.output
    ds = xr.open_zarr(store)
    hours = start + np.arange(13) * np.timedelta64(1, "h")
    np.testing.assert_array_equal(ds.time.values, hours.astype("datetime64[ns]"))
    assert bool(ds.complete.all()) and np.isfinite(ds.u.values).all()
    outside = _observations(tmp_path / "c.csv", later, [7.0])
    result = runner.invoke(app, [*base, "--time", str(later), "--obs", str(outside), "--filter"])
    assert result.exit_code != 0 and "outside the window" in " ".join(result.output.split())
    result = runner.invoke(app, [*base[:-2], "--states", "2", "--time", str(start)])
    assert result.exit_code != 0 and "3 to 48 hours" in " ".join(result.output.split())
