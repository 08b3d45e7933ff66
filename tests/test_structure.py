"""Vertical eddy correlation and spectrum error: closed forms and clear errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from genda.evaluation.structure import (
    eddy_correlation_mean_abs_difference,
    eddy_vertical_correlation,
    spectrum_mean_abs_log_ratio,
)
from genda.grid import Grid, GridMismatchError

GRID = Grid.gaussian(16, 32, 5)


def _coherent(count: int, signs: np.ndarray, seed: int) -> np.ndarray:
    """``(N, L, H, W)``: one random eddy pattern per field, scaled by ``signs`` per level,
    plus a zonal mean that differs between levels (eddies ignore it)."""
    rng = np.random.default_rng(seed)
    pattern = rng.standard_normal((count, 1, GRID.nlat, GRID.nlon))
    zonal = rng.standard_normal((count, GRID.nlevels, GRID.nlat, 1)) * 50.0
    return signs[None, :, None, None] * pattern + zonal


def test_coherent_levels_correlate_exactly() -> None:
    signs = np.array([1.0, 2.0, -0.5, 3.0, -1.0])
    correlation = eddy_vertical_correlation(_coherent(3, signs, 0), GRID)
    np.testing.assert_allclose(correlation, np.sign(np.outer(signs, signs)), atol=1e-12)


def test_independent_levels_do_not_correlate() -> None:
    fields = np.random.default_rng(1).standard_normal((40, GRID.nlevels, GRID.nlat, GRID.nlon))
    correlation = eddy_vertical_correlation(fields, GRID)
    np.testing.assert_allclose(np.diagonal(correlation), 1.0)
    off = correlation[~np.eye(GRID.nlevels, dtype=bool)]
    # 40 * 512 points: the sampling error of a zero correlation is about 0.007
    assert np.abs(off).max() < 0.05


def test_level_without_eddies_is_nan() -> None:
    fields = _coherent(2, np.ones(GRID.nlevels), 2)
    fields[:, 2] = 7.0
    correlation = eddy_vertical_correlation(fields, GRID)
    assert np.isnan(correlation[2]).all() and np.isnan(correlation[:, 2]).all()
    assert correlation[0, 1] == pytest.approx(1.0)


def test_eddy_correlation_mean_abs_difference() -> None:
    ones = np.ones(GRID.nlevels)
    coherent = {v: _coherent(4, ones, 3) for v in GRID.variables}
    noise = np.random.default_rng(4).standard_normal((40, GRID.nlevels, GRID.nlat, GRID.nlon))
    independent = {v: noise for v in GRID.variables}
    same = eddy_correlation_mean_abs_difference(coherent, coherent, GRID)
    assert same == {v: 0.0 for v in GRID.variables}
    errors = eddy_correlation_mean_abs_difference(independent, coherent, GRID)
    for value in errors.values():
        assert value == pytest.approx(1.0, abs=0.05)
    with pytest.raises(KeyError, match="'T'"):
        eddy_correlation_mean_abs_difference({"u": noise, "v": noise}, coherent, GRID)


def test_spectrum_mean_abs_log_ratio() -> None:
    rng = np.random.default_rng(5)
    shape = (3, GRID.nlevels, GRID.nlat, GRID.nlon)
    u, v = rng.standard_normal(shape), rng.standard_normal(shape)
    assert spectrum_mean_abs_log_ratio(u, v, u, v, GRID) == pytest.approx(0.0, abs=1e-12)
    # twice the winds: four times the energy at every wavenumber and level
    assert spectrum_mean_abs_log_ratio(2 * u, 2 * v, u, v, GRID) == pytest.approx(
        math.log(4.0), rel=1e-10
    )
    # the model data may have another count of fields than the samples
    assert spectrum_mean_abs_log_ratio(u[:1], v[:1], u, v, GRID, truncation=5) > 0


def test_bad_fields_are_named() -> None:
    fields = np.zeros((2, GRID.nlevels + 1, GRID.nlat, GRID.nlon))
    with pytest.raises(GridMismatchError, match="fields must be"):
        eddy_vertical_correlation(fields, GRID)
    nan = np.full((2, GRID.nlevels, GRID.nlat, GRID.nlon), np.nan)
    with pytest.raises(ValueError, match="NaN"):
        eddy_vertical_correlation(nan, GRID)
