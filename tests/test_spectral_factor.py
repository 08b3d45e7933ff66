"""``A A^T``, ``A`` and ``A^T`` from the decode's per-mode factor against brute force."""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import pytest
import torch

from ar1_trajectories import START, gaussian_trajectory_prior
from ar1_trajectories import observations as trajectory_observations
from genda.assimilation import gaussian_tweedie
from genda.assimilation.conditioning import leading_mask
from genda.assimilation.gaussian import GaussianFieldPrior
from genda.assimilation.gaussian_tweedie import ObservationSpace
from genda.assimilation.posterior import likelihood_for
from genda.assimilation.spectral_factor import (
    factor_rows,
    spectral_factor,
    spectral_gram,
    spectral_rows,
)
from genda.assimilation.state_operator import StateOperator
from genda.grid import Grid
from genda.models.long_window import long_window_prior
from genda.models.whitening import SpectralWhitening
from genda.normalization import Normalization
from genda.observations.operators import ObservationOperator
from point_tables import point_table

GRID = Grid.gaussian(8, 16, 3)


def _table() -> pd.DataFrame:
    """Winds and temperatures between levels, near a pole, and a limb profile over levels."""
    rows = [
        ("u", -30.0, 45.0, 82.0, 1.0),
        ("v", 10.0, 100.0, 95.0, 1.0),
        ("T", 60.0, 200.0, 80.0, 1.0),
        ("T", -85.0, 300.0, 104.0, 1.0),
        ("u", 87.0, 10.0, 110.0, 1.0),
        ("v", 87.0, 10.0, 110.0, 1.0),
        ("T", 20.0, 359.0, 95.0, 1.0),
        ("u", 0.0, 180.0, 100.0, 1.0),
    ]
    fwhm = [None] * 6 + [20.0, None]
    return point_table(rows, [pd.Timestamp("2000-01-01")], fwhm)


@pytest.fixture(scope="module", params=["columns", "levels", "cascade"])
def whitening(request) -> SpectralWhitening:
    """Fitted (float64) to 300 smooth correlated fields with winds of their own scale."""
    corr = np.array([[1.0, 0.3, 0.2], [0.3, 1.0, 0.0], [0.2, 0.0, 1.0]])
    field_prior = GaussianFieldPrior.on_grid(GRID, length_km=2500.0, variable_correlation=corr)
    fields = field_prior.sample(300, generator=torch.Generator().manual_seed(1))
    normalization = Normalization(
        GRID.variables,
        np.zeros((3, GRID.nlevels)),
        np.array([[8.0, 10.0, 12.0], [9.0, 9.0, 14.0], [5.0, 6.0, 7.0]]),
    )
    module = SpectralWhitening(GRID, normalization, coupling=request.param, tides=1)
    hours = np.arange(300) % 24.0
    return module.fit([(fields.float(), hours)]).double()


def _brute(operator: StateOperator) -> torch.Tensor:
    """``A`` ``(M, N)`` by reverse mode through the whole decode."""
    size = int(np.prod(operator.state_shape))
    return torch.func.jacrev(lambda z: operator(z.reshape(1, *operator.state_shape))[0])(
        torch.zeros(size, dtype=torch.float64)
    )


def _check(operator: StateOperator) -> None:
    """Gram, forward and adjoint of the factor equal the brute force's."""
    a = _brute(operator)
    factor = operator.factor
    gram = spectral_gram(factor, operator.fields)
    torch.testing.assert_close(gram, a @ a.T, rtol=1e-9, atol=1e-9 * float(gram.abs().max()))
    modes = factor.modes()
    rows = factor_rows(factor, spectral_rows(factor, operator.fields), modes)
    torch.testing.assert_close(rows, a, rtol=1e-9, atol=1e-9 * float(a.abs().max()))
    z = torch.randn((3, *operator.state_shape), dtype=torch.float64)
    seen = operator.fields.linear(factor.linear(z, modes))
    torch.testing.assert_close(seen, z.reshape(3, -1) @ a.T)
    w = torch.randn((3, operator.n_obs), dtype=torch.float64)
    back = factor.adjoint(operator.fields.adjoint(w), modes)
    torch.testing.assert_close(back.reshape(3, -1), w @ a)


def test_one_instant_priors_of_every_coupling(whitening: SpectralWhitening) -> None:
    fields = ObservationOperator.from_table(_table(), GRID).to(dtype=torch.float64)
    decode = partial(whitening.decode, hours=7.0)
    operator = StateOperator(
        fields, decode, whitening.state_shape, None, spectral_factor(whitening)
    )
    _check(operator)


def test_trajectory_windows_long_windows_and_fixed_first_hours() -> None:
    prior = gaussian_trajectory_prior()
    table = trajectory_observations([0.0, 0.5, 1.25, 2.0])
    operator = likelihood_for(prior, table, time=START).operator
    _check(operator)
    mask = leading_mask(prior)
    free = (~mask).double()
    masked = StateOperator(
        operator.fields,
        lambda z: operator.decode(z * free),
        operator.state_shape,
        None,
        operator.factor.masked(mask),
    )
    _check(masked)
    varying = mask.clone()
    varying[-1, -1, 0] = True
    assert operator.factor.masked(varying) is None  # no per-mode form: brute force

    long = long_window_prior(prior, 5)
    table = trajectory_observations([0.0, 1.5, 3.0, 3.75, 4.0])
    operator = likelihood_for(long, table, time=START).operator
    _check(operator)
    fixed = torch.zeros(operator.state_shape, dtype=torch.bool)
    fixed[: operator.state_shape[0] // 5] = True  # the first hour, as a filtering long window
    free = (~fixed).double()
    _check(
        StateOperator(
            operator.fields,
            lambda z: operator.decode(z * free),
            operator.state_shape,
            None,
            operator.factor.masked(fixed),
        )
    )


def test_a_long_window_too_large_for_one_matrix_per_mode_takes_the_brute_force(
    monkeypatch,
) -> None:
    from genda.assimilation import spectral_factor as module

    long = long_window_prior(gaussian_trajectory_prior(), 5)
    size = long.denoiser.coordinates.square_root_bytes
    monkeypatch.setattr(module, "FACTOR_BYTES_LIMIT", size - 1)
    table = trajectory_observations([0.0, 4.0])
    assert likelihood_for(long, table, time=START).operator.factor is None
    monkeypatch.setattr(module, "FACTOR_BYTES_LIMIT", size)
    assert likelihood_for(long, table, time=START).operator.factor is not None


def test_float32_as_sampled() -> None:
    """The working precision of a window: the Gram matrix to float32 round-off."""
    field_prior = GaussianFieldPrior.on_grid(GRID, length_km=2500.0)
    fields = field_prior.sample(300, generator=torch.Generator().manual_seed(2))
    whitening = SpectralWhitening(GRID, coupling="cascade").fit([fields.float()])
    fields_operator = ObservationOperator.from_table(_table(), GRID).to(dtype=torch.float32)
    operator = StateOperator(
        fields_operator, whitening.decode, whitening.state_shape, None, spectral_factor(whitening)
    )
    size = int(np.prod(operator.state_shape))
    a = torch.func.jacrev(lambda z: operator(z.reshape(1, *operator.state_shape))[0])(
        torch.zeros(size)
    )
    gram = spectral_gram(operator.factor, fields_operator)
    assert gram.dtype == torch.float64
    torch.testing.assert_close(
        gram, (a @ a.T).double(), rtol=1e-4, atol=1e-5 * float(gram.abs().max())
    )


@pytest.mark.parametrize("rows", [True, False])
def test_the_observation_space_takes_the_factor_and_solves_as_before(rows, monkeypatch) -> None:
    """The same eigenvalues and steps with the factor (``A`` as a matrix from it, or
    ``A`` and ``A^T`` through it) as with the matrix ``A`` of the brute force."""
    prior = gaussian_trajectory_prior()
    likelihood = likelihood_for(prior, trajectory_observations([0.0, 1.0, 2.0]), time=START)
    operator = likelihood.operator
    plain = StateOperator(operator.fields, operator.decode, operator.state_shape)
    slow = ObservationSpace(plain, likelihood.sigma)
    if not rows:
        monkeypatch.setattr(gaussian_tweedie, "FACTOR_ROWS_LIMIT", 0)
    fast = ObservationSpace(operator, likelihood.sigma)
    assert (fast.rows is not None) == rows and slow.rows is not None
    torch.testing.assert_close(fast.eigenvalues, slow.eigenvalues)
    z = torch.randn((2, *operator.state_shape), dtype=torch.float64)
    torch.testing.assert_close(fast.apply(z), slow.apply(z))
    w = torch.randn((2, operator.n_obs), dtype=torch.float64)
    torch.testing.assert_close(fast.adjoint(w), slow.adjoint(w))
