"""A Gaussian trajectory prior of an AR(1) model, and dense closed forms to test against.

``x_{k+1} = phi x_k + sqrt(1 - phi^2) e`` on smooth unit-variance fields: a
prior in causal whitened coordinates is fitted to its trajectories, with a
network that outputs 0 (so the prior is that Gaussian). Shared by the tests
of trajectory windows and of longer windows composed from them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from genda.assimilation.gaussian import GaussianFieldPrior
from genda.grid import Grid
from genda.models.checkpoint import LoadedPrior
from genda.models.diffusion import EDMDenoiser
from genda.models.strategies import get_strategy
from genda.models.whitening import SpectralWhitening
from genda.normalization import Normalization
from genda.trajectory import (
    stack_states,
    trajectory_grid,
    trajectory_normalization,
    trajectory_states,
)
from point_tables import point_table

GRID = Grid.gaussian(8, 16, 2)
STATES = 3
PHI = 0.8
START = np.datetime64("2000-01-01T00:00")


class ZeroNetwork(nn.Module):
    """An untrained network's limit: output 0, so ``D(z, sigma) = c_skip z``."""

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond=None) -> torch.Tensor:
        return torch.zeros_like(x)


def ar1_trajectories(count: int, seed: int, states: int = STATES) -> torch.Tensor:
    """``(count, K, V, L, H, W)`` AR(1) trajectories of smooth unit-variance fields."""
    field_prior = GaussianFieldPrior.on_grid(GRID, length_km=3000.0)
    state = field_prior.sample(count, generator=torch.Generator().manual_seed(seed))
    out = [state]
    for k in range(1, states):
        noise = field_prior.sample(count, generator=torch.Generator().manual_seed(seed + k))
        out.append(PHI * out[-1] + (1 - PHI**2) ** 0.5 * noise)
    return torch.stack(out, dim=1)


def gaussian_trajectory_prior() -> LoadedPrior:
    """The Gaussian trajectory prior of 800 AR(1) trajectories (float64, zero network)."""
    grid = trajectory_grid(GRID, STATES)
    normalization = trajectory_normalization(
        Normalization(GRID.variables, np.zeros((3, 2)), np.ones((3, 2))), STATES
    )
    whitening = SpectralWhitening(grid, normalization, coupling="causal").double()
    whitening.fit([stack_states(ar1_trajectories(800, 1))])
    denoiser = EDMDenoiser(ZeroNetwork(), coordinates=whitening).double()
    strategy = get_strategy("joint3d")
    return LoadedPrior(denoiser, strategy, grid, normalization, {}, Path("."))


def jacobian(prior: LoadedPrior) -> torch.Tensor:
    """``J`` ``(N_x, N_z)``: ``x = mu + J z``, fields flattened in trajectory order."""
    shape = prior.state_shape
    size = int(np.prod(shape))
    return torch.func.jacrev(lambda z: prior.denoiser.decode(z.reshape(1, *shape)).reshape(-1))(
        torch.zeros(size, dtype=torch.float64)
    )


def observations(hours: list[float]) -> pd.DataFrame:
    rows = [
        ("u", -30.0, 45.0, 80.0, 0.3),
        ("T", 60.0, 200.0, 80.0, 0.3),
        ("v", 10.0, 100.0, 95.0, 0.3),
        ("T", -50.0, 300.0, 95.0, 0.3),
    ]
    return point_table(rows, [pd.Timestamp(START) + pd.Timedelta(hours=h) for h in hours])


def dense_posterior(
    jacobian: torch.Tensor, rows: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of ``x`` given ``rows @ x = y + e``, ``x = J z``, ``z ~ N(0, I)``."""
    a = rows @ jacobian
    precision = torch.eye(a.shape[1], dtype=torch.float64) + a.T @ (a / sigma[:, None] ** 2)
    cov_z = torch.linalg.inv(precision)
    mean_z = cov_z @ a.T @ (y / sigma**2)
    return jacobian @ mean_z, jacobian @ cov_z @ jacobian.T


def compare(members: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, points) -> None:
    """Members' mean and spread at ``points`` (flat indices) against the closed form."""
    seen = members.reshape(members.shape[0], -1)[:, points]
    spread = cov.diagonal()[points].sqrt()
    error = (seen.mean(0) - mean[points]).abs()
    assert torch.all(error < 4 * spread / members.shape[0] ** 0.5 + 0.02 * spread), error / spread
    np.testing.assert_allclose(seen.std(0), spread, rtol=0.12)


def points(prior: LoadedPrior, state: int, count: int = 24) -> torch.Tensor:
    """``count`` flat indices of grid points of ``state`` (every variable and level)."""
    per_state = int(np.prod(prior.grid.shape)) // trajectory_states(prior.grid)
    chosen = torch.randperm(per_state, generator=torch.Generator().manual_seed(state))[:count]
    return state * per_state + chosen
