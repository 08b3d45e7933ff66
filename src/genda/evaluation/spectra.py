"""Horizontal kinetic-energy spectra on the sphere (torch-harmonics vector transforms).

The spectrum ``E(l)`` of a wind field ``(u, v)`` is the kinetic energy per
unit mass carried by total wavenumber ``l``, normalised so that
``sum_l E(l)`` equals the area mean of ``(u^2 + v^2) / 2`` (Parseval); see
Boer (1983, J. Atmos. Sci. 40) for the definition.
"""

from __future__ import annotations

import numpy as np
import torch
import torch_harmonics as th

from genda.grid import Grid, GridMismatchError, harmonic_grid_kind
from genda.threads import cpu_threads


def _vector_transform(grid: Grid, truncation: int | None) -> th.RealVectorSHT:
    kind = harmonic_grid_kind(grid, "spectra need")
    nmodes = (truncation if truncation is not None else (grid.nlon - 1) // 3) + 1
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return th.RealVectorSHT(
            grid.nlat,
            grid.nlon,
            lmax=nmodes,
            mmax=nmodes,
            grid=kind,
            csphase=False,
        )
    finally:
        torch.set_default_dtype(previous)


def kinetic_energy_spectrum(
    u: np.ndarray | torch.Tensor,
    v: np.ndarray | torch.Tensor,
    grid: Grid,
    truncation: int | None = None,
) -> np.ndarray:
    """Kinetic-energy spectrum of winds ``(..., H, W)`` -> ``(..., T+1)`` (m2 s-2 per wavenumber).

    ``truncation`` defaults to the 2/3-rule truncation ``(W - 1) // 3`` of the grid.
    """
    uv = torch.stack(
        (
            torch.as_tensor(np.asarray(u), dtype=torch.float64),
            torch.as_tensor(np.asarray(v), dtype=torch.float64),
        ),
        -3,
    )
    if tuple(uv.shape[-2:]) != (grid.nlat, grid.nlon):
        raise GridMismatchError(
            f"winds have (H, W) = {tuple(uv.shape[-2:])}, grid has {(grid.nlat, grid.nlon)}"
        )
    with cpu_threads(1):
        coeffs = _vector_transform(grid, truncation)(uv)  # (..., 2, l, m)
    power = coeffs.abs() ** 2
    # real fields: m > 0 coefficients stand for +m and -m
    power[..., 1:] *= 2.0
    spectrum = power.sum(dim=(-3, -1))  # (..., l)
    # torch-harmonics' vector coefficients multiply the gradient and curl of
    # orthonormal Y_lm, whose squared norm over the sphere is l (l + 1): the area
    # mean of |u|^2 is sum l (l + 1) |c|^2 / (4 pi), and E(l) is half of that.
    # Checked against Parseval in tests/test_spectra.py.
    degree = torch.arange(spectrum.shape[-1], dtype=torch.float64)
    return (spectrum * degree * (degree + 1) / (8.0 * np.pi)).numpy()
