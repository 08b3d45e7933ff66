"""A Gaussian random-field prior with its exact denoiser and Kalman posterior.

For ``x ~ N(0, C)`` and ``x_t = x + sigma n`` the denoiser is linear,

    D(x_t, sigma) = E[x | x_t] = C (C + sigma^2 I)^{-1} x_t = Q diag(lam / (lam + sigma^2)) Q^T x_t

(``C = Q diag(lam) Q^T``), and for observations ``y = H x + b + e``,
``e ~ N(0, R)`` the posterior is Kalman's (e.g. Särkkä 2013, "Bayesian
Filtering and Smoothing", Theorem 4.2 / the update step of the Kalman filter):

    mean = C H^T (H C H^T + R)^{-1} (y - b),    cov = C - C H^T (H C H^T + R)^{-1} H C.

So a posterior sampler driven by the exact denoiser can be checked against a
closed form: the reference test of the guidance methods. The covariance is
separable: a Gaussian (squared-exponential) kernel of great-circle distance,
an exponential kernel in altitude, and a correlation matrix between variables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from genda.errors import InvalidValueError
from genda.grid import Grid
from genda.observations.operators import ObservationOperator

EARTH_RADIUS_KM = 6371.0


def _great_circle_km(grid: Grid) -> np.ndarray:
    """``(H*W, H*W)`` great-circle distances between the horizontal grid points."""
    lat, lon = np.meshgrid(np.deg2rad(grid.latitude), np.deg2rad(grid.longitude), indexing="ij")
    xyz = np.stack(
        [np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1
    ).reshape(-1, 3)
    cosine = np.clip(xyz @ xyz.T, -1.0, 1.0)
    return EARTH_RADIUS_KM * np.arccos(cosine)


class GaussianFieldPrior(nn.Module):
    """``x ~ N(0, C)`` for fields ``(V, L, H, W)``, with an exact denoiser.

    Args:
        covariance: ``(N, N)`` symmetric positive definite, ``N = V L H W``
            (float64), in the flattened ``(V, L, H, W)`` order.
        field_shape: ``(V, L, H, W)``.
    """

    eigenvalues: Tensor
    eigenvectors: Tensor

    def __init__(self, covariance: Tensor, field_shape: tuple[int, int, int, int]) -> None:
        super().__init__()
        n = math.prod(field_shape)
        if covariance.shape != (n, n):
            raise InvalidValueError(f"covariance must be ({n}, {n}) for fields {field_shape}")
        lam, q = torch.linalg.eigh(covariance.double())
        if lam.min() <= 0:
            raise InvalidValueError("covariance is not positive definite")
        self.field_shape = tuple(field_shape)
        self.register_buffer("eigenvalues", lam)
        self.register_buffer("eigenvectors", q)

    @classmethod
    def on_grid(
        cls,
        grid: Grid,
        length_km: float = 2000.0,
        vertical_km: float = 10.0,
        variable_correlation: np.ndarray | None = None,
        jitter: float = 1e-6,
    ) -> GaussianFieldPrior:
        """A separable unit-variance covariance on ``grid`` (module docstring)."""
        horizontal = np.exp(-0.5 * (_great_circle_km(grid) / length_km) ** 2)
        dz = np.abs(grid.altitude[:, None] - grid.altitude[None, :])
        vertical = np.exp(-dz / vertical_km)
        nvar = len(grid.variables)
        corr = np.eye(nvar) if variable_correlation is None else np.asarray(variable_correlation)
        cov = np.kron(np.kron(corr, vertical), horizontal)
        cov = cov + jitter * np.eye(cov.shape[0])
        return cls(torch.from_numpy(cov), tuple(grid.shape))  # type: ignore[arg-type]

    @property
    def covariance(self) -> Tensor:
        q, lam = self.eigenvectors, self.eigenvalues
        return (q * lam) @ q.T

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        """``D(x (B, V, L, H, W), sigma (B,))``, exact, in ``x``'s dtype."""
        flat = x.reshape(x.shape[0], -1).to(self.eigenvectors.dtype)
        shrink = self.eigenvalues / (self.eigenvalues + sigma.to(flat.dtype)[:, None] ** 2)
        out = ((flat @ self.eigenvectors) * shrink) @ self.eigenvectors.T
        return out.to(x.dtype).reshape(x.shape)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``(n, V, L, H, W)`` float64 draws from the prior."""
        z = torch.randn(n, self.eigenvalues.numel(), generator=generator, dtype=torch.float64)
        return ((z * self.eigenvalues.sqrt()) @ self.eigenvectors.T).reshape(n, *self.field_shape)

    def posterior(
        self, operator: ObservationOperator, y: Tensor, sigma_y: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Kalman's posterior mean ``(V, L, H, W)`` and covariance ``(N, N)`` (float64)."""
        eye = torch.eye(operator.n_obs, dtype=torch.float64)
        h = operator.to(dtype=torch.float64).adjoint(eye).reshape(operator.n_obs, -1)  # (M, N)
        c = self.covariance
        ch = c @ h.T
        s = h @ ch + torch.diag(sigma_y.double() ** 2)
        gain = torch.linalg.solve(s, ch.T).T  # C H^T S^{-1}
        innovation = y.double() - operator.offset.double()
        mean = gain @ innovation
        cov = c - gain @ ch.T
        return mean.reshape(self.field_shape), cov


@dataclass(frozen=True)
class KalmanProblem:
    """A Gaussian prior, observations of one of its draws, and the exact posterior.

    Attributes:
        prior: the prior with its exact denoiser.
        operator: ``H`` (float64).
        truth: ``(V, L, H, W)`` the draw that was observed.
        y, sigma_y: ``(M,)`` observations and their error standard deviations.
        mean, cov: Kalman's posterior mean ``(V, L, H, W)`` and covariance ``(N, N)``.
    """

    prior: GaussianFieldPrior
    operator: ObservationOperator
    truth: Tensor
    y: Tensor
    sigma_y: Tensor
    mean: Tensor
    cov: Tensor


def kalman_problem(
    prior: GaussianFieldPrior, operator: ObservationOperator, sigma_y: Tensor, seed: int = 0
) -> KalmanProblem:
    """Draw a truth from ``prior``, observe it through ``operator`` with errors ``sigma_y``, solve."""
    operator = operator.to(dtype=torch.float64)
    sigma_y = sigma_y.double()
    truth = prior.sample(1, torch.Generator().manual_seed(seed))[0]
    noise = torch.randn(
        operator.n_obs, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64
    )
    y = operator(truth) + sigma_y * noise
    mean, cov = prior.posterior(operator, y, sigma_y)
    return KalmanProblem(prior, operator, truth, y, sigma_y, mean, cov)


def reference_observations(sigma: float = 0.3) -> pd.DataFrame:
    """Eight observations of the reference experiment, errors ``sigma`` (in prior std).

    Point T, u and v, a profile point with a 6 km kernel, a radar line-of-sight
    wind near the pole: every kind of row the operators know, on the small
    grids of the Kalman checks (``tests/test_guidance_kalman.py`` takes the
    first six, ``benchmarks/posterior_gaussian.py`` all eight). Not validated
    (``value`` is filled in by :func:`kalman_problem`'s draw).
    """
    los = {"variable": "los", "azimuth_deg": 45.0, "elevation_deg": 60.0}
    rows = [
        {"lat": 40.0, "lon": 20.0, "alt_km": 90.0, "variable": "T"},
        {"lat": -30.0, "lon": 200.0, "alt_km": 110.0, "variable": "T", "fwhm_km": 6.0},
        {"lat": 60.0, "lon": 100.0, "alt_km": 85.0, "variable": "u"},
        {"lat": 10.0, "lon": 300.0, "alt_km": 100.0, "variable": "v"},
        {"lat": 80.0, "lon": 10.0, "alt_km": 95.0} | los,
        {"lat": -75.0, "lon": 250.0, "alt_km": 97.5, "variable": "u"},
        {"lat": -10.0, "lon": 120.0, "alt_km": 82.0, "variable": "T"},
        {"lat": 25.0, "lon": 160.0, "alt_km": 104.0, "variable": "v"},
    ]
    base = {"time": np.datetime64("2000-01-01T00"), "value": 0.0, "sigma": sigma}
    return pd.DataFrame([base | row for row in rows])
