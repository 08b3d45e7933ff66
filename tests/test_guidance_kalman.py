"""Posterior sampling against the closed form: a Gaussian prior's posterior is Kalman's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from genda.assimilation.gaussian import GaussianFieldPrior, kalman_problem, reference_observations
from genda.assimilation.guidance import GaussianLikelihood, guided_denoiser
from genda.grid import Grid
from genda.models.sampling import sample
from genda.observations.operators import ObservationOperator

GRID = Grid.gaussian(4, 8, 3)
MEMBERS = 2048


def _observations() -> pd.DataFrame:
    return reference_observations().iloc[:6]


@pytest.fixture(scope="module")
def problem():
    corr = np.array([[1.0, 0.3, 0.0], [0.3, 1.0, 0.0], [0.0, 0.0, 1.0]])
    prior = GaussianFieldPrior.on_grid(GRID, length_km=4000.0, variable_correlation=corr)
    obs = _observations()
    sigma_y = torch.tensor(obs["sigma"].to_numpy())
    case = kalman_problem(prior, ObservationOperator.from_table(obs, GRID), sigma_y, seed=1)
    likelihood = GaussianLikelihood(case.operator, case.y, case.sigma_y)
    return prior, likelihood, case.mean, case.cov


def _posterior_ensemble(
    prior, likelihood, method: str, members: int = MEMBERS, sampler: str = "heun", **options
) -> torch.Tensor:
    corrections = options.pop("corrections", 0)
    denoiser = guided_denoiser(prior, likelihood, method, **options)
    # A unit-variance prior needs no sigma_max of 80: 20 puts the 32 steps where
    # the posterior forms (the discretisation error at 24 steps from 80 is ~4%).
    return sample(
        denoiser,
        GRID.shape,
        members=range(members),
        window_seed=3,
        steps=32,
        sigma_max=20.0,
        method=sampler,
        corrections=corrections,
        dtype=torch.float64,
    )


@pytest.mark.parametrize("sampler", ["heun", "exponential"])
@pytest.mark.slow
def test_mmps_recovers_the_kalman_posterior(problem, sampler: str) -> None:
    prior, likelihood, mean, cov = problem
    members = _posterior_ensemble(
        prior, likelihood, "mmps", sampler=sampler, iterations=6
    )  # M = 6: GMRES is exact in 6 iterations
    flat = members.reshape(MEMBERS, -1)
    prior_std = prior.covariance.diagonal().sqrt()
    mean_error = (flat.mean(0) - mean.reshape(-1)) / prior_std
    assert mean_error.square().mean().sqrt() <= 0.05
    assert mean_error.abs().max() <= 0.15
    ratio = flat.var(0) / cov.diagonal()
    assert 0.95 <= ratio.mean() <= 1.05
    # Where the observations are: the variance of H x against H P H^T.
    op = likelihood.operator
    h = op.adjoint(torch.eye(op.n_obs, dtype=torch.float64)).reshape(op.n_obs, -1)
    at_obs = op.linear(members).var(0) / (h @ cov @ h.T).diagonal()
    assert torch.all((at_obs > 0.9) & (at_obs < 1.1)), at_obs
    # The posterior is much tighter than the prior there, so the test has teeth.
    assert ((h @ cov @ h.T).diagonal() / (h @ prior.covariance @ h.T).diagonal()).max() < 0.5


def test_unguided_sampling_gives_the_prior(problem) -> None:
    prior, *_ = problem
    members = sample(
        prior,
        GRID.shape,
        range(MEMBERS),
        window_seed=3,
        steps=32,
        sigma_max=20.0,
        dtype=torch.float64,
    )
    ratio = members.reshape(MEMBERS, -1).var(0) / prior.covariance.diagonal()
    assert 0.95 <= ratio.mean() <= 1.05


@pytest.mark.parametrize(
    ("method", "options"), [("dps", {"zeta": 1.0}), ("sda", {"gamma": 0.1, "corrections": 1})]
)
def test_dps_and_sda_move_towards_the_observations(problem, method, options) -> None:
    prior, likelihood, mean, _ = problem
    members = _posterior_ensemble(prior, likelihood, method, members=256, **options)
    op = likelihood.operator
    fit_prior = (
        likelihood.residual(torch.zeros(1, *GRID.shape, dtype=torch.float64)).square().mean()
    )
    fit = likelihood.residual(members.mean(0, keepdim=True)).square().mean()
    assert fit < 0.5 * fit_prior
    assert torch.isfinite(members).all()
    del op, mean


def test_guided_members_do_not_depend_on_their_batch(problem) -> None:
    prior, likelihood, *_ = problem
    denoiser = guided_denoiser(prior, likelihood, "mmps", iterations=4)
    together = sample(
        denoiser, GRID.shape, [0, 1, 2, 3], window_seed=9, steps=6, dtype=torch.float64
    )
    alone = sample(denoiser, GRID.shape, [2], window_seed=9, steps=6, dtype=torch.float64)
    torch.testing.assert_close(together[2:3], alone, rtol=1e-12, atol=1e-12)


def test_likelihood_rejects_bad_shapes(problem) -> None:
    _, likelihood, *_ = problem
    with pytest.raises(ValueError, match=r"must be \(\d+,\) or one row per member"):
        GaussianLikelihood(likelihood.operator, likelihood.y[:-1], likelihood.sigma)
    with pytest.raises(ValueError, match="one row per member"):
        GaussianLikelihood(likelihood.operator, likelihood.y[None, None], likelihood.sigma)
    GaussianLikelihood(likelihood.operator, likelihood.y.expand(3, -1), likelihood.sigma)
    with pytest.raises(ValueError, match="strictly positive"):
        GaussianLikelihood(likelihood.operator, likelihood.y, 0 * likelihood.sigma)
    with pytest.raises(ValueError, match="unknown guidance"):
        guided_denoiser(problem[0], likelihood, "magic")  # type: ignore[arg-type]
