"""The Gaussian skip: limits in sigma, fitted moments, near-optimal denoising of Gaussian fields."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch_harmonics as th
from torch import nn

from genda.grid import Grid
from genda.models.diffusion import EDMDenoiser, EDMPreconditioning
from genda.models.gaussian_skip import GaussianSkip
from genda.models.sampling import sample
from genda.threads import cpu_threads

GRID = Grid.gaussian(8, 16, 2, variables=("T",))  # C = 2 channels, T = 8 degrees
NLAT, NLON, T, C = 8, 16, 8, 2


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with cpu_threads(1):
        yield


def transforms() -> tuple[nn.Module, nn.Module]:
    """Independent float64 transforms of the test grid (the skip builds its own)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        options = {"lmax": T, "mmax": T, "grid": "legendre-gauss", "csphase": False}
        return th.RealSHT(NLAT, NLON, **options), th.InverseRealSHT(NLAT, NLON, **options)
    finally:
        torch.set_default_dtype(previous)


def gaussian_model(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A known prior: per-mode mean ``(T, T, C)`` and Cholesky factor ``(T, T, C, C)``, complex.

    The spectrum falls like ``(1 + l)^-3`` (steep, as in the model data); channels
    are correlated with a complex (phase-shifting) factor; ``m = 0`` modes are real.
    """
    g = torch.Generator().manual_seed(seed)
    degree = torch.arange(T, dtype=torch.float64)[:, None]
    amplitude = (1.0 + degree).pow(-1.5).expand(T, T)
    mixing = torch.randn(T, T, C, C, 2, generator=g, dtype=torch.float64)
    factor = torch.view_as_complex(mixing) * amplitude[..., None, None]
    factor[:, 0] = factor[:, 0].real.to(factor.dtype)
    mean = 0.3 * torch.view_as_complex(torch.randn(T, T, C, 2, generator=g, dtype=torch.float64))
    mean[:, 0] = mean[:, 0].real.to(mean.dtype)
    valid = (torch.arange(T)[None, :] <= torch.arange(T)[:, None])[..., None]
    return torch.where(valid, mean, 0), torch.where(valid[..., None], factor, 0)


def draw(n: int, mean: torch.Tensor, factor: torch.Tensor, seed: int) -> torch.Tensor:
    """``n`` band-limited fields ``(n, 1, C, H, W)`` of the Gaussian ``(mean, factor factor^H)``."""
    _, isht = transforms()
    g = torch.Generator().manual_seed(seed)
    z = torch.view_as_complex(torch.randn(n, T, T, C, 2, generator=g, dtype=torch.float64))
    z = z / np.sqrt(2.0)
    z[:, :, 0] = z[:, :, 0].real.to(z.dtype) * np.sqrt(2.0)
    coefficients = mean + torch.einsum("tmcd,ntmd->ntmc", factor, z)
    return isht(coefficients.permute(0, 3, 1, 2).contiguous()).unsqueeze(1)


@pytest.fixture(scope="module")
def prior() -> tuple[torch.Tensor, torch.Tensor]:
    return gaussian_model()


@pytest.fixture(scope="module")
def fitted(prior) -> GaussianSkip:
    fields = draw(4000, *prior, seed=1)
    return GaussianSkip(GRID).fit(torch.split(fields.float(), 500))


def test_fit_recovers_the_mean_and_covariance_of_each_mode(prior, fitted) -> None:
    mean, factor = prior
    covariance = factor @ factor.mH
    vectors = torch.view_as_complex(fitted.eigenvectors.double())
    estimate = (
        vectors @ torch.diag_embed(fitted.eigenvalues.double()).to(vectors.dtype) @ vectors.mH
    )
    scale = covariance.diagonal(dim1=-2, dim2=-1).real.amax(dim=-1)[..., None, None]
    # 4000 draws: sampling error sqrt(2 / 4000) ~ 2 % of a mode's variance
    error = ((estimate - covariance).abs() / scale.clamp(min=1e-30))[fitted.valid]
    assert error.max() < 0.12 and error.mean() < 0.03
    mean_error = (torch.view_as_complex(fitted.mean.double()) - mean).abs()
    assert mean_error.max() < 4 * covariance.diagonal(
        dim1=-2, dim2=-1
    ).abs().sqrt().max() / np.sqrt(4000)
    assert (fitted.eigenvalues[~fitted.valid] == 0).all()


def test_small_sigma_returns_a_band_limited_input_and_large_sigma_the_mean(prior, fitted) -> None:
    fields = draw(3, *prior, seed=2).float()
    tiny = fitted(fields, torch.full((3,), 1e-5))
    assert torch.allclose(tiny, fields, atol=1e-4 * fields.abs().max())
    huge = fitted(fields, torch.full((3,), 1e6))
    _, isht = transforms()
    climate = isht(torch.view_as_complex(fitted.mean.double()).permute(2, 0, 1).contiguous())
    torch.testing.assert_close(
        huge[:, 0], climate.float().expand(3, C, NLAT, NLON), atol=1e-5, rtol=0
    )


def test_removes_what_lies_beyond_the_truncation(fitted) -> None:
    grid = torch.Generator().manual_seed(3)
    white = torch.randn(1, 1, C, NLAT, NLON, generator=grid)
    sht, isht = transforms()
    outside = white - isht(sht(white.double())).float()  # no band-limited part
    assert outside.abs().max() > 0.1
    assert fitted(outside, torch.full((1,), 1e-5)).abs().max() < 1e-4


def exact_posterior_mean(
    x: torch.Tensor, sigma: float, mean: torch.Tensor, factor: torch.Tensor
) -> torch.Tensor:
    """Brute force on the grid: ``mu + K (K + sigma^2 I)^-1 (x - mu)`` with ``K`` the grid covariance."""
    _, isht = transforms()
    basis = []  # the linear map from real coefficient parameters to grid fields, column by column
    n_modes = T * T * C
    for k in range(2 * n_modes):
        z = torch.zeros(T * T * C * 2, dtype=torch.float64)
        z[k] = 1.0
        coeffs = torch.view_as_complex(z.reshape(T, T, C, 2))
        coeffs = torch.einsum("tmcd,tmd->tmc", factor, coeffs)
        basis.append(isht(coeffs.permute(2, 0, 1).contiguous()).reshape(-1))
    # with z ~ N(0, I/2) for real and imaginary parts (real m = 0: N(0, 1)), as in draw()
    weights = torch.full((T, T, C, 2), 0.5, dtype=torch.float64)
    weights[:, 0, :, 0] = 1.0
    weights[:, 0, :, 1] = 0.0
    a = torch.stack(basis, dim=1) * weights.reshape(-1).sqrt()
    k = a @ a.T
    mu = isht(mean.permute(2, 0, 1).contiguous()).reshape(-1)
    flat = x.double().reshape(x.shape[0], -1)
    solve = torch.linalg.solve(k + sigma**2 * torch.eye(k.shape[0], dtype=k.dtype), (flat - mu).T)
    return (mu + (k @ solve).T).reshape(x.shape)


@pytest.mark.parametrize("sigma", [0.01, 0.1, 1.0])
def test_denoises_gaussian_fields_nearly_as_well_as_the_exact_posterior_mean(
    prior, fitted, sigma
) -> None:
    clean = draw(200, *prior, seed=4)
    noisy = clean + sigma * torch.randn(
        clean.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64
    )
    sig = torch.full((200,), sigma)
    skip_error = (fitted(noisy.float(), sig).double() - clean).square().mean()
    exact_error = (exact_posterior_mean(noisy, sigma, *prior) - clean).square().mean()
    c_skip = EDMPreconditioning(1.0).c_skip(torch.tensor(sigma, dtype=torch.float64))
    scalar_error = (c_skip * noisy - clean).square().mean()
    assert exact_error <= skip_error <= 1.1 * exact_error
    assert skip_error < 0.6 * scalar_error


class Zero(nn.Module):
    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond=None) -> torch.Tensor:
        return torch.zeros_like(x)


def test_an_untrained_denoiser_samples_the_fitted_gaussian(prior, fitted) -> None:
    """The EDM sampler with the skip alone draws fields with the prior's per-mode variance."""
    x = sample(EDMDenoiser(Zero(), skip=fitted), (1, C, NLAT, NLON), range(400), 0, steps=64)
    sht, _ = transforms()
    mean, factor = prior
    a = sht(x.double()[:, 0]).permute(0, 2, 3, 1) - mean  # (N, T, M, C)
    variance = a.abs().square().mean(dim=0)
    expected = (factor @ factor.mH).diagonal(dim1=-2, dim2=-1).real
    valid = fitted.valid
    ratio = variance[valid] / expected[valid]
    # 400 members: a mode's variance to ~7 % (m = 0: 10 %); a bias would move all of them.
    # 64 steps: with 24 the Heun discretisation inflates the variance by 3-9 %.
    assert ratio.mean().item() == pytest.approx(1.0, abs=0.03)
    assert 0.6 < ratio.min() and ratio.max() < 1.5


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="Gauss-Legendre or equiangular grid, not 'irregular'"):
        GaussianSkip(
            Grid(np.linspace(80, -80, 8), np.arange(16) * 22.5, [90.0, 95.0], ("T",), "irregular")
        )
    skip = GaussianSkip(GRID)
    with pytest.raises(ValueError, match="NaN or infinite"):
        skip.fit([torch.full((2, 1, C, NLAT, NLON), float("nan"))])
    with pytest.raises(ValueError, match="at least 2 fields, got 1"):
        skip.fit([torch.zeros(1, 1, C, NLAT, NLON)])
    with pytest.raises(ValueError, match=r"with 2 channels, got \(1, 3, 8, 16\)"):
        skip(torch.zeros(1, 3, NLAT, NLON), torch.ones(1))
