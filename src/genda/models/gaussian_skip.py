"""The Gaussian posterior mean on the sphere as the skip path of the denoiser.

EDM's denoiser ``D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)`` has the
scalar skip ``c_skip = sigma_data^2 / (sigma^2 + sigma_data^2)``: the exact
denoiser of *white* Gaussian data, where every scale has the same variance.
Atmospheric fields are far from white: the kinetic energy of the built-in
model falls by four to five orders of magnitude from wavenumber 1 to 21 (its
hyperdiffusion), and so does that of UA-ICON or HIAMCM output above their own
dissipation scales. Then at small ``sigma`` the noise swamps the small scales
while the scalar skip keeps them (``c_skip ~ 1``), and the network must find
and cancel the noise there with the precision of ``sigma``. Trained networks
do this poorly: the shipped ``joint3d`` prior of genda 0.1 removed 2 % of the
noise at ``sigma = 0.002`` and 17 % at wavenumber 21 for ``sigma = 0.01``,
and its samples carried 30-90 times the model's energy at wavenumber 21.

:class:`GaussianSkip` replaces ``c_skip x`` by the posterior mean of a
Gaussian prior fitted to the training fields, a Wiener filter in spherical
harmonics (opt-in, ``genda train --skip gaussian``: docs/training.md weighs
its better unconditional samples against its worse guided posteriors):

    a = SHT(x)                          (B, C, T, M) coefficients of C = V * L channels
    E[a0 | a] = mu + S (S + sigma^2 N)^-1 (a - mu)        per mode (l, m)
    skip(x, sigma) = ISHT(E[a0 | a])

* ``mu_lm`` ``(C,)`` and ``S_lm`` ``(C, C)`` (Hermitian) are the mean and the
  covariance of the coefficients of the training fields, mode by mode: the
  Gaussian that is stationary in longitude (the statistics of an atmosphere
  averaged over all local times) with every cross-covariance between
  variables and levels, so the skip alone already couples the column
  (tidal phase propagation included: ``S_lm`` is complex).
* ``N_lm`` is the variance of coefficient ``(l, m)`` of unit white noise on
  the grid, computed exactly from the transform (the grid's points are not
  uniform on the sphere, so it varies with ``l`` and ``m``).
* Modes are treated as independent (exact for a field stationary in
  longitude up to the small leakage of the grid's quadrature); what lies
  beyond the truncation ``T`` (default: the grid's ``nlat`` modes, exact
  round trip on Gauss-Legendre grids) is removed.

With ``S = U diag(lambda) U^H`` the gain is ``U diag(lambda / (lambda +
sigma^2 N)) U^H``, so only the eigen-decomposition is stored. For ``sigma ->
0`` the skip returns the band-limited part of its input; for ``sigma ->
inf`` the climatological mean ``ISHT(mu)``. An untrained network (output 0)
is then the exact denoiser of this Gaussian, and sampling it draws Gaussian
fields with the model data's mean, per-mode spectra and vertical
covariances; training teaches the network the non-Gaussian rest. This is
the EDM preconditioning with the Gaussian of the data in place of white
noise of variance ``sigma_data^2`` (the scalar skip is its special case
``S = sigma_data^2 I / N``).

Shapes: ``x`` ``(B, V, L, H, W)`` (or any ``(B, *channels, H, W)`` with
``prod(channels) = C``), ``sigma`` ``(B,)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch_harmonics as th
from torch import Tensor, nn

from genda.errors import InvalidValueError
from genda.grid import Grid, harmonic_grid_kind

__all__ = ["SKIP_KIND", "GaussianSkip"]

SKIP_KIND = "gaussian-sht"
"""The name of this skip in a checkpoint's ``config.json``."""


class GaussianSkip(nn.Module):
    """``skip(x, sigma) = ISHT(mu + G_sigma (SHT(x) - mu))``, the Gaussian posterior mean.

    Args:
        grid: the grid of the fields (Gauss-Legendre or equiangular latitudes).
        truncation: number of degrees ``T`` kept, ``l = 0..T-1`` (default ``nlat``).
        channels: ``C = V * L`` (default: ``grid``'s variables times levels).

    Buffers (saved with the weights): ``mean`` ``(T, M, C, 2)`` (real, imaginary),
    ``eigenvalues`` ``(T, M, C)`` and ``eigenvectors`` ``(T, M, C, C, 2)`` of
    ``S_lm``; all zero until :meth:`fit` (or a checkpoint) fills them.
    ``noise_power`` ``(T, M)`` is recomputed from the grid, not saved.
    """

    mean: Tensor
    eigenvalues: Tensor
    eigenvectors: Tensor
    noise_power: Tensor
    valid: Tensor

    def __init__(self, grid: Grid, truncation: int | None = None, channels: int | None = None):
        super().__init__()
        kind = harmonic_grid_kind(grid, "the Gaussian skip needs")
        nlat, nlon = grid.nlat, grid.nlon
        t = int(truncation) if truncation is not None else nlat
        if not 1 <= t <= nlat or t > nlon // 2 + 1:
            raise InvalidValueError(f"truncation must be in 1..{min(nlat, nlon // 2 + 1)}, got {t}")
        c = int(channels) if channels is not None else len(grid.variables) * grid.nlevels
        self.truncation, self.channels = t, c
        self.field_shape = (nlat, nlon)
        self._options: dict[str, Any] = {"lmax": t, "mmax": t, "grid": kind, "csphase": False}
        self.sht = self._transform(th.RealSHT).float()
        self.isht = self._transform(th.InverseRealSHT).float()
        # Variance of coefficient (l, m) of unit white noise: the sum over grid points
        # of |SHT(unit impulse)_lm|^2. An impulse's coefficients only change phase
        # when it moves in longitude, so one impulse per latitude, times nlon, is exact.
        impulses = torch.zeros(nlat, nlat, nlon, dtype=torch.float64)
        impulses[torch.arange(nlat), torch.arange(nlat), 0] = 1.0
        noise_power = nlon * self._transform(th.RealSHT)(impulses).abs().square().sum(dim=0)
        degree = torch.arange(t)[:, None]
        order = torch.arange(t)[None, :]
        self.register_buffer("valid", order <= degree, persistent=False)
        self.register_buffer("noise_power", noise_power.float(), persistent=False)
        self.register_buffer("mean", torch.zeros(t, t, c, 2))
        self.register_buffer("eigenvalues", torch.zeros(t, t, c))
        self.register_buffer("eigenvectors", torch.zeros(t, t, c, c, 2))

    def _transform(self, kind: type[nn.Module]) -> nn.Module:
        """A float64 torch-harmonics transform of this grid on the CPU."""
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)  # torch-harmonics builds its tables in it
        try:
            return kind(*self.field_shape, **self._options)
        finally:
            torch.set_default_dtype(previous)

    # ------------------------------------------------------------------ fitting
    @torch.no_grad()
    def fit(self, batches: Iterable[Tensor]) -> GaussianSkip:
        """Estimate ``mu_lm`` and ``S_lm`` from normalised fields ``(B, V, L, H, W)``.

        Accumulates in float64 over all batches (one pass), then stores the
        eigen-decomposition of each ``S_lm``. Returns ``self``.

        Raises:
            ValueError: fewer than 2 fields, a field of the wrong shape, or NaN.
        """
        t, c = self.truncation, self.channels
        total = torch.zeros(t, t, c, dtype=torch.complex128)
        outer = torch.zeros(t, t, c, c, dtype=torch.complex128)
        count = 0
        sht = self._transform(th.RealSHT)
        for batch in batches:
            x = self._flatten(batch.detach().to("cpu", torch.float64))
            if not torch.isfinite(x).all():
                raise InvalidValueError(
                    "the fields for the Gaussian skip hold NaN or infinite values"
                )
            a = sht(x).permute(0, 2, 3, 1)  # (B, T, M, C)
            total += a.sum(dim=0)
            outer += torch.einsum("btmc,btmd->tmcd", a, a.conj())
            count += a.shape[0]
        if count < 2:
            raise InvalidValueError(f"the Gaussian skip needs at least 2 fields, got {count}")
        mu = total / count
        covariance = (outer - count * mu[..., :, None] * mu[..., None, :].conj()) / (count - 1)
        covariance = 0.5 * (covariance + covariance.mH)  # Hermitian up to round-off
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        mask = self.valid.cpu()[..., None]
        eigenvalues = torch.where(mask, eigenvalues.clamp(min=0.0), 0.0)
        mu = torch.where(mask, mu, 0.0)
        device = self.mean.device
        self.mean.copy_(torch.view_as_real(mu).to(device, torch.float32))
        self.eigenvalues.copy_(eigenvalues.to(device, torch.float32))
        self.eigenvectors.copy_(torch.view_as_real(eigenvectors).to(device, torch.float32))
        return self

    # ------------------------------------------------------------------ applying
    def _flatten(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != self.field_shape or math.prod(x.shape[1:-2]) != self.channels:
            raise InvalidValueError(
                f"expected fields (B, ..., {self.field_shape[0]}, {self.field_shape[1]}) "
                f"with {self.channels} channels, got {tuple(x.shape)}"
            )
        return x.reshape(x.shape[0], self.channels, *self.field_shape)

    def gain(self, sigma: Tensor) -> Tensor:
        """``(B, T, M, C)`` gains ``lambda / (lambda + sigma^2 N_lm)`` in the eigenbasis (0 off the triangle)."""
        noise = sigma.reshape(-1, 1, 1, 1).square() * self.noise_power[None, :, :, None]
        lam = self.eigenvalues[None]
        ratio = lam / torch.where(lam + noise > 0, lam + noise, 1.0)
        return torch.where(self.valid[None, :, :, None], ratio, 0.0)

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        """The Gaussian posterior mean of the clean field given ``x = x0 + sigma n``, shape of ``x``."""
        dtype = self.mean.dtype
        flat = self._flatten(x).to(dtype)
        a = self.sht(flat).permute(0, 2, 3, 1)  # (B, T, M, C)
        mu = torch.view_as_complex(self.mean)
        vectors = torch.view_as_complex(self.eigenvectors)
        projected = torch.einsum("tmdc,btmd->btmc", vectors.conj(), a - mu)
        filtered = torch.einsum("tmcd,btmd->btmc", vectors, self.gain(sigma.to(dtype)) * projected)
        out = self.isht((filtered + mu).permute(0, 3, 1, 2).contiguous())
        return out.reshape(x.shape).to(x.dtype)

    def config(self) -> dict[str, Any]:
        """What a checkpoint stores to rebuild this module (the buffers go with the weights)."""
        return {"kind": SKIP_KIND, "truncation": self.truncation, "channels": self.channels}
