"""Spherical-harmonic transforms and operators on a Gauss-Legendre grid.

A thin layer over torch-harmonics (``RealSHT``, ``RealVectorSHT`` and their
inverses, orthonormal, no Condon-Shortley phase) that adds the operators a
vorticity-divergence model needs. Spectral arrays have shape ``(..., T+1, T+1)``
(total wavenumber l, zonal wavenumber m), triangular truncation ``T``.
Grid arrays have shape ``(..., H, W)`` with latitude north to south.
"""

from __future__ import annotations

import numpy as np
import torch
import torch_harmonics as th

from genda.constants import EARTH_RADIUS_M
from genda.grid import gaussian_latitudes


class SpectralTransforms:
    """Scalar and vector transforms with Laplacian, curl/divergence and wind inversion."""

    def __init__(
        self,
        nlat: int,
        nlon: int,
        truncation: int,
        radius: float = EARTH_RADIUS_M,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        self.nlat, self.nlon, self.truncation = nlat, nlon, truncation
        self.radius = radius
        self.device = torch.device(device)
        self.dtype = dtype
        nmodes = truncation + 1
        previous = torch.get_default_dtype()
        # torch-harmonics builds its Legendre tables in the default dtype.
        torch.set_default_dtype(torch.float64)
        try:
            kw = {"lmax": nmodes, "mmax": nmodes, "grid": "legendre-gauss", "csphase": False}
            self._sht = th.RealSHT(nlat, nlon, **kw)
            self._isht = th.InverseRealSHT(nlat, nlon, **kw)
            self._vsht = th.RealVectorSHT(nlat, nlon, **kw)
            self._ivsht = th.InverseRealVectorSHT(nlat, nlon, **kw)
        finally:
            torch.set_default_dtype(previous)
        for module in (self._sht, self._isht, self._vsht, self._ivsht):
            module.to(device=self.device, dtype=dtype)

        degree = torch.arange(nmodes, dtype=torch.float64)[:, None].expand(nmodes, nmodes)
        lap = -degree * (degree + 1) / radius**2
        inv_lap = torch.where(degree > 0, 1.0 / torch.where(lap == 0, 1.0, lap), 0.0)
        self.degree = degree.to(self.device, dtype)
        self.laplacian = lap.to(self.device, dtype)
        """``(T+1, T+1)`` eigenvalues ``-l(l+1)/a^2`` of the Laplacian."""
        self.inverse_laplacian = inv_lap.to(self.device, dtype)
        self.triangle = (torch.arange(nmodes)[:, None] >= torch.arange(nmodes)[None, :]).to(
            self.device
        )
        """``(T+1, T+1)`` mask of the modes that exist (m <= l)."""

        latitude, weights = gaussian_latitudes(nlat)
        lat = torch.as_tensor(np.deg2rad(latitude), dtype=dtype, device=self.device)
        lon = torch.arange(nlon, dtype=dtype, device=self.device) * (2 * np.pi / nlon)
        self.latitude = lat
        """``(H,)`` radians, north to south."""
        self.longitude = lon
        """``(W,)`` radians east."""
        self.area_weights = (
            torch.as_tensor(weights / weights.sum() / nlon, dtype=dtype, device=self.device)[
                :, None
            ]
            .expand(nlat, nlon)
            .contiguous()
        )
        """``(H, W)`` weights summing to 1: exact area means of band-limited fields."""

    # ------------------------------------------------------------------ transforms
    def to_spectral(self, field: torch.Tensor) -> torch.Tensor:
        """``(..., H, W)`` -> ``(..., T+1, T+1)`` complex."""
        return self._sht(field)

    def to_grid(self, coeffs: torch.Tensor) -> torch.Tensor:
        """``(..., T+1, T+1)`` complex -> ``(..., H, W)``."""
        return self._isht(coeffs)

    def vorticity_divergence(self, uv: torch.Tensor) -> torch.Tensor:
        """Winds ``(..., 2, H, W)`` (eastward, northward) -> spectral ``(..., 2, T+1, T+1)``.

        Component 0 is the relative vorticity (curl), 1 the divergence.
        """
        return self.laplacian * self.radius * self._vsht(uv)

    def winds(self, vort_div: torch.Tensor) -> torch.Tensor:
        """Spectral vorticity and divergence ``(..., 2, T+1, T+1)`` -> winds ``(..., 2, H, W)``."""
        return self._ivsht(self.inverse_laplacian * vort_div / self.radius)

    def area_mean(self, field: torch.Tensor) -> torch.Tensor:
        """Area-weighted global mean over the last two axes ``(..., H, W)`` -> ``(...)``."""
        return (field * self.area_weights).sum(dim=(-2, -1))
