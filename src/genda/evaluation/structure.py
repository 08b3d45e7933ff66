"""Vertical coherence and spectral character of generated fields against model data.

Two scores of the 3D-versus-layers question (``benchmarks/strategies.py``,
``docs/strategies.md``) and of ``genda evaluate`` that need no truth at the
same time, only model data. Both are means, not maxima:

* :func:`eddy_vertical_correlation` ``(L, L)``: the correlation between levels
  of the eddies ``e = x - zonal mean(x)`` (per field and level), pooled over
  fields and area-weighted points. Eddies rather than departures from a mean
  over fields, so that a posterior ensemble at one time (whose members differ
  little) and model data over many times are measured alike: it says how
  coherent the horizontal structures are from one level to the next.
  :func:`eddy_correlation_mean_abs_difference` is the mean
  ``|C_samples - C_model|`` over the pairs of distinct levels, per variable.
* :func:`spectrum_mean_abs_log_ratio`: the mean over levels and total
  wavenumbers ``1 .. T`` (the 2/3 truncation) of
  ``|ln(E_samples(l) / E_model(l))|`` for the mean kinetic-energy spectra
  (:func:`genda.evaluation.spectra.kinetic_energy_spectrum`); 0.18 is a
  typical factor of 1.2.

The prior's acceptance checks (:mod:`genda.evaluation.fidelity`) judge
related but different quantities by their largest value: the vertical
correlation of the anomalies from the per-point mean over samples
(:attr:`~genda.evaluation.fidelity_records.CorrelationComparison.max_abs_difference`)
and ``E_s / E_r - 1``
(:attr:`~genda.evaluation.fidelity_records.SpectrumComparison.max_relative_error`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from genda.errors import InvalidValueError, UnknownNameError
from genda.evaluation.spectra import kinetic_energy_spectrum
from genda.grid import Grid, GridMismatchError


def _fields(values: np.ndarray, grid: Grid, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    expected = (grid.nlevels, grid.nlat, grid.nlon)
    if array.ndim != 4 or array.shape[1:] != expected:
        raise GridMismatchError(
            f"{what} must be (N, L, H, W) = (N, *{expected}), got {array.shape}"
        )
    if not np.isfinite(array).all():
        raise InvalidValueError(f"{what} contain NaN or infinite values")
    return array


def eddy_vertical_correlation(fields: np.ndarray, grid: Grid) -> np.ndarray:
    """``(L, L)`` correlation between levels of the eddies of ``fields`` ``(N, L, H, W)``.

    ``C_ij = sum w e_i e_j / sqrt(sum w e_i^2 sum w e_j^2)`` over fields,
    latitudes and longitudes, ``w`` the latitude weights of ``grid``. A level
    without eddies has NaN rows and columns.
    """
    x = _fields(fields, grid, "fields")
    eddies = x - x.mean(axis=3, keepdims=True)
    weights = grid.area_weights()
    covariance = np.einsum("nihw,njhw,h->ij", eddies, eddies, weights)
    scale = np.sqrt(np.diagonal(covariance))
    with np.errstate(divide="ignore", invalid="ignore"):
        correlation = covariance / np.outer(scale, scale)
    return np.where(np.outer(scale, scale) > 0, np.clip(correlation, -1.0, 1.0), np.nan)


def eddy_correlation_mean_abs_difference(
    samples: Mapping[str, np.ndarray], model: Mapping[str, np.ndarray], grid: Grid
) -> dict[str, float]:
    """Per variable of ``grid``: mean ``|C_samples - C_model|`` over pairs of distinct levels.

    Args:
        samples: variable -> ``(N, L, H, W)`` generated fields (members).
        model: variable -> ``(T, L, H, W)`` model data.
        grid: the grid of both.

    Returns:
        variable -> error in ``[0, 2]`` (NaN with fewer than 2 levels).
    """
    errors = {}
    off_diagonal = ~np.eye(grid.nlevels, dtype=bool)
    for name in grid.variables:
        if name not in samples or name not in model:
            raise UnknownNameError(
                f"variable {name!r} of the grid is missing from the samples or the model data"
            )
        difference = np.abs(
            eddy_vertical_correlation(samples[name], grid)
            - eddy_vertical_correlation(model[name], grid)
        )
        errors[name] = (
            float(difference[off_diagonal].mean()) if off_diagonal.any() else float("nan")
        )
    return errors


def spectrum_mean_abs_log_ratio(
    u_samples: np.ndarray,
    v_samples: np.ndarray,
    u_model: np.ndarray,
    v_model: np.ndarray,
    grid: Grid,
    truncation: int | None = None,
) -> float:
    """Mean ``|ln(E_samples / E_model)|`` over levels and wavenumbers ``1 .. truncation``.

    Winds are ``(N, L, H, W)`` (samples) and ``(T, L, H, W)`` (model data);
    ``E`` is the kinetic-energy spectrum per level averaged over fields.
    ``truncation`` defaults to ``(W - 1) // 3``.
    """
    spectra = []
    for u, v, what in ((u_samples, v_samples, "sample winds"), (u_model, v_model, "model winds")):
        energy = kinetic_energy_spectrum(
            _fields(u, grid, what), _fields(v, grid, what), grid, truncation
        ).mean(axis=0)  # (L, T + 1)
        spectra.append(energy[:, 1:])
    with np.errstate(divide="ignore"):
        return float(np.mean(np.abs(np.log(spectra[0] / spectra[1]))))
