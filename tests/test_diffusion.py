"""EDM preconditioning, training loss and noise levels (genda.models.diffusion).

Reference: Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
Generative Models", Table 1. The Gaussian data distribution N(mu, s^2) gives
exact answers: its denoiser is ``D(x, sigma) = mu + s^2 / (s^2 + sigma^2) (x - mu)``,
and the posterior variance ``s^2 sigma^2 / (s^2 + sigma^2)`` is the smallest
mean squared error any denoiser can reach, so the minimum of the EDM loss at
noise level sigma is ``lambda(sigma) s^2 sigma^2 / (s^2 + sigma^2)
= (sigma^2 + sd^2) s^2 / (sd^2 (s^2 + sigma^2))`` (``sd = sigma_data``), 1 when ``s = sd``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from genda.models import (
    EDMDenoiser,
    EDMPreconditioning,
    edm_loss,
    edm_sigma_sampler,
    karras_sigmas,
)
from genda.threads import cpu_threads

SIGMAS = (0.002, 0.05, 0.5, 1.0, 3.0, 80.0)


class ZeroBackbone(nn.Module):
    def forward(self, x_in: Tensor, c_noise: Tensor, cond: Tensor | None = None) -> Tensor:
        return torch.zeros_like(x_in)


class GaussianBackbone(nn.Module):
    """The backbone whose EDM-preconditioned denoiser is exact for N(mu, s^2) data.

    It inverts the preconditioning: ``sigma = exp(4 c_noise)``, ``x = x_in / c_in``,
    ``F = (D_exact(x, sigma) - c_skip x) / c_out``; ``offset`` perturbs ``F``.
    """

    def __init__(self, mu: float, s: float, sigma_data: float, offset: float = 0.0) -> None:
        super().__init__()
        self.mu, self.s = mu, s
        self.precond = EDMPreconditioning(sigma_data)
        self.offset = nn.Parameter(torch.tensor(offset, dtype=torch.float64))

    def forward(self, x_in: Tensor, c_noise: Tensor, cond: Tensor | None = None) -> Tensor:
        p = self.precond
        sigma = torch.exp(4 * c_noise).reshape(-1, *([1] * (x_in.ndim - 1)))
        x = x_in / p.c_in(sigma)
        exact = self.mu + self.s**2 / (self.s**2 + sigma**2) * (x - self.mu)
        return (exact - p.c_skip(sigma) * x) / p.c_out(sigma) + self.offset


def loss_minimum(sigma: np.ndarray, s: float, sigma_data: float) -> np.ndarray:
    """Minimum EDM loss at noise level ``sigma`` for N(mu, s^2) data (module docstring)."""
    sd2 = sigma_data**2
    return (sigma**2 + sd2) * s**2 / (sd2 * (s**2 + sigma**2))


def expected_loss_minimum(s: float, sigma_data: float, p_mean=-1.2, p_std=1.2) -> float:
    """``E[loss_minimum(sigma)]`` over ``ln sigma ~ N(p_mean, p_std^2)``, Gauss-Hermite (64 nodes)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(64)
    sigma = np.exp(p_mean + p_std * nodes)
    return float(np.sum(weights * loss_minimum(sigma, s, sigma_data)) / np.sum(weights))


# ---------------------------------------------------------------------- preconditioning
@pytest.mark.parametrize("sigma_data", [1.0, 0.5])
def test_preconditioning_is_table_1(sigma_data: float) -> None:
    p = EDMPreconditioning(sigma_data)
    sigma = torch.tensor(SIGMAS, dtype=torch.float64)
    for i, sig in enumerate(SIGMAS):
        root = math.sqrt(sig**2 + sigma_data**2)
        assert p.c_skip(sigma)[i].item() == pytest.approx(sigma_data**2 / root**2, rel=1e-14)
        assert p.c_out(sigma)[i].item() == pytest.approx(sig * sigma_data / root, rel=1e-14)
        assert p.c_in(sigma)[i].item() == pytest.approx(1 / root, rel=1e-14)
        assert p.c_noise(sigma)[i].item() == pytest.approx(math.log(sig) / 4, rel=1e-14)
        assert p.weight(sigma)[i].item() == pytest.approx(
            (sig**2 + sigma_data**2) / (sig * sigma_data) ** 2, rel=1e-14
        )
    # lambda = 1 / c_out^2: the effective training target of F has unit weight
    torch.testing.assert_close(p.weight(sigma), p.c_out(sigma) ** -2, rtol=1e-13, atol=0)
    # unit-variance network input for data of std sigma_data: c_in^2 (sd^2 + sigma^2) = 1
    torch.testing.assert_close(
        p.c_in(sigma) ** 2 * (sigma_data**2 + sigma**2), torch.ones_like(sigma)
    )


def test_preconditioning_rejects_bad_sigma_data() -> None:
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="sigma_data"):
            EDMPreconditioning(bad)


def test_zero_backbone_denoiser_tends_to_identity_as_sigma_vanishes() -> None:
    denoiser = EDMDenoiser(ZeroBackbone(), sigma_data=1.0)
    x = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    previous = math.inf
    for sigma in (1.0, 1e-1, 1e-2, 1e-3, 1e-4):
        out = denoiser(x, torch.full((4,), sigma, dtype=torch.float64))
        # D = c_skip x exactly, and 1 - c_skip = sigma^2 / (sigma^2 + 1)
        torch.testing.assert_close(out, x / (1 + sigma**2), rtol=1e-14, atol=0)
        error = (out - x).abs().max().item()
        assert error < previous
        assert error <= sigma**2 * x.abs().max().item() * (1 + 1e-12)
        previous = error
    p = denoiser.precond
    tiny = torch.tensor(1e-8, dtype=torch.float64)
    assert p.c_skip(tiny).item() == pytest.approx(1.0, abs=1e-15)
    assert p.c_out(tiny).item() == pytest.approx(1e-8, rel=1e-12)


def test_denoiser_sigma_shapes_and_conditioning() -> None:
    seen: dict[str, Tensor | None] = {}

    class Recorder(nn.Module):
        def forward(self, x_in: Tensor, c_noise: Tensor, cond: Tensor | None = None) -> Tensor:
            seen["c_noise"], seen["cond"] = c_noise, cond
            return x_in

    denoiser = EDMDenoiser(Recorder(), sigma_data=0.5)
    x = torch.ones(3, 2, 4)
    out_scalar = denoiser(x, 2.0)
    assert seen["c_noise"] is not None and seen["c_noise"].shape == (3,)
    assert seen["cond"] is None
    out_batch = denoiser(x, torch.full((3,), 2.0))
    torch.testing.assert_close(out_scalar, out_batch)
    cond = torch.zeros(3, 7)
    denoiser(x, torch.tensor([0.1, 1.0, 10.0]), cond=cond)
    assert seen["cond"] is cond
    torch.testing.assert_close(seen["c_noise"], torch.log(torch.tensor([0.1, 1.0, 10.0])) / 4)
    with pytest.raises(ValueError, match=r"\(B,\)"):
        denoiser(x, torch.ones(2))


def test_denoiser_equals_azula_karras_denoiser_for_unit_sigma_data() -> None:
    """azula's KarrasDenoiser (alpha_t = 1, sigma_t = t) is EDM with sigma_data = 1 and
    c_time = log(sigma) = 4 c_noise: with the noise input rescaled, both give the same D."""
    azula_denoise = pytest.importorskip("azula.denoise")
    azula_noise = pytest.importorskip("azula.noise")

    class SigmaIsTime(azula_noise.Schedule):
        def __call__(self, t: Tensor) -> tuple[Tensor, Tensor]:
            return torch.ones_like(t), t

    class Backbone(nn.Module):
        def __init__(self, noise_scale: float) -> None:
            super().__init__()
            self.noise_scale = noise_scale
            self.weight = nn.Parameter(torch.tensor(0.7, dtype=torch.float64))

        def forward(self, x_in: Tensor, c: Tensor, cond: Tensor | None = None) -> Tensor:
            c = (c * self.noise_scale).reshape(-1, 1, 1)
            return torch.sin(self.weight * x_in) * torch.tanh(c) + 0.1 * c

    ours = EDMDenoiser(Backbone(1.0), sigma_data=1.0)
    theirs = azula_denoise.KarrasDenoiser(Backbone(0.25), SigmaIsTime())
    x = torch.randn(6, 3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sigma = torch.tensor([0.002, 0.1, 0.5, 1.0, 7.0, 80.0], dtype=torch.float64)
    x = x * (1 + sigma.reshape(-1, 1, 1))
    torch.testing.assert_close(ours(x, sigma), theirs(x, sigma).mean, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------- loss
def test_loss_of_exact_denoiser_is_the_analytic_minimum_at_each_sigma() -> None:
    """At a fixed sigma the per-sample loss of the exact denoiser averages to
    ``loss_minimum(sigma)``; with n samples of D elements the relative standard
    error is sqrt(2 / (n D)) (a chi-square mean), 0.4 % here: 5 SE = 2 %."""
    mu, s, sigma_data = 0.3, 0.6, 1.0
    denoiser = EDMDenoiser(GaussianBackbone(mu, s, sigma_data), sigma_data).double()
    generator = torch.Generator().manual_seed(5)
    n, dim = 2000, 64
    x0 = mu + s * torch.randn(n, dim, generator=generator, dtype=torch.float64)
    se = math.sqrt(2 / (n * dim))
    for sig in (0.01, 0.3, 1.0, 5.0, 50.0):
        sigma = torch.full((n,), sig, dtype=torch.float64)
        with torch.no_grad():
            loss = edm_loss(denoiser, x0, generator, sigma=sigma)
        assert loss.shape == (n,)
        expected = float(loss_minimum(np.array(sig), s, sigma_data))
        assert loss.mean().item() == pytest.approx(expected, rel=5 * se)


@pytest.mark.parametrize(("s", "sigma_data"), [(1.0, 1.0), (0.5, 1.0), (2.0, 1.0), (0.5, 0.5)])
def test_loss_of_exact_denoiser_over_lognormal_sigma(s: float, sigma_data: float) -> None:
    """Log-normal sigma (p_mean -1.2, p_std 1.2): the mean loss of the exact denoiser matches
    the Gauss-Hermite expectation of the minimum within 5 standard errors (estimated from
    the per-sample losses); shifting the backbone output raises the loss."""
    mu = 0.7
    exact = EDMDenoiser(GaussianBackbone(mu, s, sigma_data), sigma_data).double()
    shifted = EDMDenoiser(GaussianBackbone(mu, s, sigma_data, offset=0.2), sigma_data).double()
    n, dim = 4000, 16
    x0 = mu + s * torch.randn(
        n, dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    with torch.no_grad():
        loss = edm_loss(exact, x0, torch.Generator().manual_seed(3))
        loss_shifted = edm_loss(shifted, x0, torch.Generator().manual_seed(3))
    assert torch.isfinite(loss).all() and (loss > 0).all()
    expected = expected_loss_minimum(s, sigma_data)
    if s == sigma_data:
        assert expected == pytest.approx(1.0, rel=1e-12)
    se = loss.std().item() / math.sqrt(n)
    assert abs(loss.mean().item() - expected) < 5 * se
    # same draws: an offset eps in F moves D by c_out eps, which adds lambda c_out^2 eps^2
    # = eps^2 to the loss on average (the cross term with the residual has mean 0)
    increase = loss_shifted - loss
    assert abs(increase.mean().item() - 0.2**2) < 5 * increase.std().item() / math.sqrt(n)
    assert increase.mean().item() > 0


def test_loss_is_reproducible_and_differentiable() -> None:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Linear(5, 8), nn.SiLU(), nn.Linear(8, 4))

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = backbone

        def forward(self, x_in: Tensor, c_noise: Tensor, cond: Tensor | None = None) -> Tensor:
            return self.net(torch.cat([x_in, c_noise[:, None]], dim=1))

    denoiser = EDMDenoiser(Tiny())
    x0 = torch.randn(32, 4, generator=torch.Generator().manual_seed(1))
    a = edm_loss(denoiser, x0, torch.Generator().manual_seed(7))
    b = edm_loss(denoiser, x0, torch.Generator().manual_seed(7))
    c = edm_loss(denoiser, x0, torch.Generator().manual_seed(8))
    assert a.shape == (32,)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.isfinite(a).all() and (a > 0).all()
    a.mean().backward()
    grads = [p.grad for p in denoiser.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_sigma_sampler_is_lognormal() -> None:
    sigma = edm_sigma_sampler(20000, -1.2, 1.2, generator=torch.Generator().manual_seed(0))
    log_sigma = sigma.double().log()
    # standard errors: p_std / sqrt(n) = 0.0085 for the mean, p_std / sqrt(2n) = 0.006 for the std
    assert log_sigma.mean().item() == pytest.approx(-1.2, abs=4 * 0.0085)
    assert log_sigma.std().item() == pytest.approx(1.2, abs=4 * 0.006)


class MLPBackbone(nn.Module):
    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(2, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, x_in: Tensor, c_noise: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.net(torch.cat([x_in, c_noise[:, None]], dim=1))


def test_tiny_training_run_approaches_the_bayes_optimal_loss() -> None:
    """A small MLP trained 300 Adam steps on N(1.5, 0.5^2) data: on a fixed evaluation set
    (same sigma and noise draws) the loss drops by more than 40 % and ends within 5 % of
    the exact denoiser's loss on those draws (analytic expectation 0.725)."""
    mu, s = 1.5, 0.5
    torch.manual_seed(0)
    denoiser = EDMDenoiser(MLPBackbone())
    exact = EDMDenoiser(GaussianBackbone(mu, s, 1.0))
    x_eval = mu + s * torch.randn(4096, 1, generator=torch.Generator().manual_seed(1))

    def evaluate(model: EDMDenoiser) -> float:
        with torch.no_grad():
            return edm_loss(model, x_eval, torch.Generator().manual_seed(2)).mean().item()

    with cpu_threads(1):
        initial, optimum = evaluate(denoiser), evaluate(exact)
        optimizer = torch.optim.Adam(denoiser.parameters(), lr=1e-2)
        generator = torch.Generator().manual_seed(3)
        for _ in range(300):
            x0 = mu + s * torch.randn(256, 1, generator=generator)
            loss = edm_loss(denoiser, x0, generator).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        final = evaluate(denoiser)
    assert optimum == pytest.approx(expected_loss_minimum(s, 1.0), rel=0.05)
    assert final < 0.6 * initial
    assert final == pytest.approx(optimum, rel=0.05)


# ---------------------------------------------------------------------- noise levels
def test_karras_sigmas() -> None:
    sigmas = karras_sigmas(32)
    assert sigmas.shape == (33,) and sigmas.dtype == torch.float64
    assert sigmas[0].item() == 80.0 and sigmas[-2].item() == 0.002 and sigmas[-1].item() == 0.0
    assert (sigmas[1:] < sigmas[:-1]).all()
    # EDM eq. 5 at an interior index
    i, n, rho = 10, 32, 7.0
    expected = (80 ** (1 / rho) + i / (n - 1) * (0.002 ** (1 / rho) - 80 ** (1 / rho))) ** rho
    assert sigmas[i].item() == pytest.approx(expected, rel=1e-12)
    # rho = 1 is linear spacing
    torch.testing.assert_close(
        karras_sigmas(5, 1.0, 5.0, rho=1.0, append_zero=False),
        torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0], dtype=torch.float64),
    )
    # rho -> large approaches the geometric (log-uniform) VE spacing
    geometric = torch.logspace(math.log10(80), math.log10(0.002), 8, dtype=torch.float64)
    torch.testing.assert_close(
        karras_sigmas(8, rho=1e6, append_zero=False), geometric, rtol=1e-4, atol=0
    )
    assert karras_sigmas(1).tolist() == [80.0, 0.0]
    for bad in ({"steps": 0}, {"steps": 4, "sigma_min": 0.0}, {"steps": 4, "rho": 0.0}):
        with pytest.raises(ValueError):
            karras_sigmas(**bad)
