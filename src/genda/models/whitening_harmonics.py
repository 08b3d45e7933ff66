"""The analysis ``A`` of the spectral whitening and its inverse, as plain tensor maths.

:class:`genda.models.whitening.SpectralWhitening` maps normalised fields
``x`` ``(B, V, L, H, W)`` to spherical-harmonic coefficients ``a = A(x)``
``(B, V, L, T, M)`` complex, ``M = T``, and back:

* Winds go through the vector transform (torch-harmonics ``RealVectorSHT``,
  Schaeffer 2013, G3 14:751-758): poloidal and toroidal (divergence and
  vorticity potential) coefficients ``s_lm``, ``t_lm`` take the channels of
  ``u`` and ``v``. The transform acts on the physical-scale winds ``u = std_u
  x_u + mean_u`` (and so for ``v``): ``u`` and ``v`` normalised with different
  statistics are no vector field, and a constant ``u`` is not a band-limited
  vector field either. The vector coefficients are then multiplied by
  ``sqrt(l (l + 1)) / s_ref`` with ``s_ref = sqrt((std_u^2 + std_v^2) / 2)`` of
  that level, so that ``sum_lm |a_lm|^2`` is the kinetic energy in normalised
  units, comparable with the scalar channels: the whitening then equalises
  kinetic energy.
* All other variables (T, ...) go through the scalar ``RealSHT`` of the
  normalised field. The map stays affine. Without ``u`` or ``v`` on the grid
  every variable is scalar.
* The truncation ``T`` is limited to where the quadrature is exact
  (:func:`checked_truncation`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch_harmonics as th
from torch import Tensor, nn

from genda.errors import InvalidValueError
from genda.grid import Grid, GridMismatchError, harmonic_grid_kind
from genda.normalization import Normalization

__all__ = [
    "TRANSFORM_KINDS",
    "HarmonicTransforms",
    "analyse",
    "checked_truncation",
    "float64_transforms",
    "synthesise",
    "vector_gain",
    "wind_statistics",
]

TRANSFORM_KINDS = (th.RealSHT, th.InverseRealSHT, th.RealVectorSHT, th.InverseRealVectorSHT)
"""The torch-harmonics classes of :class:`HarmonicTransforms`, in its order."""


class HarmonicTransforms(NamedTuple):
    """The torch-harmonics transforms of one grid, truncation, dtype and device."""

    sht: nn.Module
    isht: nn.Module
    vsht: nn.Module
    ivsht: nn.Module


def checked_truncation(grid: Grid, truncation: int | None) -> tuple[str, int]:
    """The grid's quadrature kind and the truncation ``T`` (default: the largest), checked."""
    kind = harmonic_grid_kind(grid, "the spectral whitening needs")
    nlat, nlon = grid.nlat, grid.nlon
    # Exact quadrature of products of degree < T: Gauss-Legendre integrates
    # polynomials of degree 2 nlat - 1, Clenshaw-Curtis only nlat - 1. And m = T - 1
    # must stay below the Nyquist order nlon / 2, whose sine part the grid cannot
    # hold (its coefficients would not be circular).
    by_latitude = nlat if kind == "legendre-gauss" else (nlat + 1) // 2
    largest = min(by_latitude, (nlon + 1) // 2)
    t = int(truncation) if truncation is not None else largest
    if not 1 <= t <= largest:
        raise InvalidValueError(
            f"truncation must be in 1..{largest} on a {kind} grid of {nlat} x {nlon} "
            f"(too few latitudes or longitudes for more), got {t}"
        )
    return kind, t


def float64_transforms(nlat: int, nlon: int, options: dict[str, Any]) -> HarmonicTransforms:
    """The four transforms of an ``nlat x nlon`` grid with float64 tables on the CPU."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # torch-harmonics builds its tables in it
    try:
        return HarmonicTransforms(*(kind(nlat, nlon, **options) for kind in TRANSFORM_KINDS))
    finally:
        torch.set_default_dtype(previous)


def wind_statistics(
    normalization: Normalization | None, names: tuple[str, ...], nlev: int
) -> tuple[tuple[int, int] | None, Tensor, Tensor]:
    """The ``(u, v)`` pair of ``names`` (``None``: no winds) and its ``std``, ``mean`` ``(2, L)``.

    Ones and zeros without ``normalization`` or winds.

    Raises:
        GridMismatchError: ``normalization`` is not of ``names`` and ``nlev`` levels.
    """
    nvar = len(names)
    wind_index = (names.index("u"), names.index("v")) if "u" in names and "v" in names else None
    std, mean = torch.ones(2, nlev), torch.zeros(2, nlev)
    if normalization is not None:
        if normalization.variables != names or normalization.mean.shape != (nvar, nlev):
            raise GridMismatchError(
                f"normalisation of {normalization.variables} with (V, L) = "
                f"{normalization.mean.shape} does not match the grid's {names}, {nlev} levels"
            )
        if wind_index is not None:
            rows = list(wind_index)
            std = torch.as_tensor(normalization.std[rows], dtype=torch.float32)
            mean = torch.as_tensor(normalization.mean[rows], dtype=torch.float32)
    return wind_index, std, mean


def vector_gain(t: int, dtype: torch.dtype, device: torch.device, inverse: bool = False) -> Tensor:
    """``(T,)`` ``sqrt(l (l + 1))`` (or its inverse, 0 at ``l = 0``)."""
    degree = torch.arange(t, dtype=dtype, device=device)
    gain = torch.sqrt(degree * (degree + 1.0))
    if inverse:
        gain = torch.where(gain > 0, 1.0 / gain.clamp(min=1.0), 0.0)
    return gain


def analyse(
    x: Tensor,
    transforms: tuple[nn.Module, nn.Module],
    std: Tensor,
    mean: Tensor,
    gain: Tensor,
    indices: tuple[tuple[int, ...], tuple[int, int] | None],
) -> Tensor:
    """Normalised fields ``(B, V, L, H, W)`` -> coefficients ``(B, V, L, T, M)``.

    ``transforms``: ``(sht, vsht)``; ``std``, ``mean`` ``(2, L)``: the winds'
    normalisation; ``gain``: :func:`vector_gain`; ``indices``: the scalar
    variables and the ``(u, v)`` pair (``None``: no winds).
    """
    (sht, vsht), (scalar_index, wind_index) = transforms, indices
    parts: dict[int, Tensor] = {}
    if scalar_index:
        scalars = sht(x[:, list(scalar_index)])
        for j, i in enumerate(scalar_index):
            parts[i] = scalars[:, j]
    if wind_index is not None:
        winds = x[:, list(wind_index)] * std[..., None, None] + mean[..., None, None]
        spectral = vsht(winds.transpose(1, 2))  # (B, L, 2, T, M): poloidal, toroidal
        reference = std.square().mean(dim=0).sqrt()  # (L,)
        spectral = spectral * (gain[:, None] / reference[:, None, None, None])
        for j, i in enumerate(wind_index):
            parts[i] = spectral[:, :, j]
    return torch.stack([parts[i] for i in range(x.shape[1])], dim=1)


def synthesise(
    a: Tensor,
    transforms: tuple[nn.Module, nn.Module],
    std: Tensor,
    mean: Tensor,
    gain: Tensor,
    indices: tuple[tuple[int, ...], tuple[int, int] | None],
) -> Tensor:
    """Coefficients ``(B, V, L, T, M)`` -> normalised fields ``(B, V, L, H, W)``.

    The inverse of :func:`analyse`: ``transforms`` ``(isht, ivsht)``, ``gain``
    the inverse :func:`vector_gain`.
    """
    (isht, ivsht), (scalar_index, wind_index) = transforms, indices
    parts: dict[int, Tensor] = {}
    if scalar_index:
        scalars = isht(a[:, list(scalar_index)].contiguous())
        for j, i in enumerate(scalar_index):
            parts[i] = scalars[:, j]
    if wind_index is not None:
        reference = std.square().mean(dim=0).sqrt()
        gain = gain[:, None] * reference[:, None, None, None]
        spectral = a[:, list(wind_index)].transpose(1, 2) * gain  # (B, L, 2, T, M)
        winds = ivsht(spectral.contiguous()).transpose(1, 2)  # (B, 2, L, H, W)
        winds = (winds - mean[..., None, None]) / std[..., None, None]
        for j, i in enumerate(wind_index):
            parts[i] = winds[:, j]
    return torch.stack([parts[i] for i in range(a.shape[1])], dim=1)
