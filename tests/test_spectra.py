"""Contract tests for the kinetic-energy spectrum: Parseval, closed forms, invariances."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch_harmonics as th

from genda.evaluation.spectra import kinetic_energy_spectrum
from genda.grid import Grid, GridMismatchError
from genda.simulator.spectral import SpectralTransforms

NLAT, NLON = 32, 64
TRUNC = (NLON - 1) // 3  # 21, the default 2/3-rule truncation
RADIUS = 6.371e6
GRID = Grid.gaussian(NLAT, NLON, 1)


def inverse_vector_sht(nlat: int = NLAT, nlon: int = NLON) -> th.InverseRealVectorSHT:
    truncation = (nlon - 1) // 3
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # Legendre tables in float64
    try:
        return th.InverseRealVectorSHT(
            nlat,
            nlon,
            lmax=truncation + 1,
            mmax=truncation + 1,
            grid="legendre-gauss",
            csphase=False,
        )
    finally:
        torch.set_default_dtype(previous)


ISHT = inverse_vector_sht()


def random_vort_div(
    batch: tuple[int, ...] = (), degrees: list[int] | None = None, seed: int = 0
) -> torch.Tensor:
    """Random spectral vorticity and divergence ``(*batch, 2, T+1, T+1)`` (s-1), l = 0 empty."""
    rng = np.random.default_rng(seed)
    shape = (*batch, 2, TRUNC + 1, TRUNC + 1)
    coeffs = rng.normal(size=shape) + 1j * rng.normal(size=shape)
    coeffs *= 1e-5
    degree, m = np.meshgrid(np.arange(TRUNC + 1), np.arange(TRUNC + 1), indexing="ij")
    keep = (m <= degree) & (degree > 0)
    if degrees is not None:
        keep &= np.isin(degree, degrees)
    coeffs = np.where(keep, coeffs, 0.0)
    coeffs[..., 0] = coeffs[..., 0].real  # m = 0 of a real field is real
    return torch.as_tensor(coeffs)


def winds(vort_div: torch.Tensor, radius: float = RADIUS) -> np.ndarray:
    """Winds ``(..., 2, H, W)`` from spectral vorticity/divergence, as genda.simulator.spectral.

    Velocity potential and stream function are ``-a^2 / (l (l + 1))`` times divergence and
    vorticity; torch-harmonics' inverse vector transform takes them divided by ``a``.
    """
    degree = torch.arange(TRUNC + 1, dtype=torch.float64)[:, None]
    eigen = (degree * (degree + 1)).clamp(min=1)
    inverse_laplacian = torch.where(degree > 0, -(radius**2) / eigen, 0.0)
    return ISHT(inverse_laplacian * vort_div / radius).numpy()


def area_mean(field: np.ndarray, grid: Grid = GRID) -> np.ndarray:
    """Gauss-Legendre area mean over the last two axes (exact for band-limited fields)."""
    return np.einsum("...hw,h->...", field, grid.area_weights()) / grid.nlon


def kinetic_energy(uv: np.ndarray) -> np.ndarray:
    return area_mean(0.5 * (uv[..., 0, :, :] ** 2 + uv[..., 1, :, :] ** 2))


def test_winds_are_those_of_the_simulator() -> None:
    vd = random_vort_div(seed=1)
    st = SpectralTransforms(NLAT, NLON, TRUNC, radius=RADIUS)
    np.testing.assert_allclose(winds(vd), st.winds(vd).numpy(), rtol=0, atol=1e-10)
    # and the simulator's forward transform recovers the vorticity and divergence
    recovered = st.vorticity_divergence(torch.as_tensor(winds(vd))).numpy()
    np.testing.assert_allclose(recovered, vd.numpy(), rtol=0, atol=1e-15)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_parseval_random_band_limited_wind(seed: int) -> None:
    uv = winds(random_vort_div(seed=seed))
    spectrum = kinetic_energy_spectrum(uv[0], uv[1], GRID)
    assert spectrum.shape == (TRUNC + 1,)
    assert spectrum[0] == 0.0  # no l = 0 vector harmonic
    assert np.all(spectrum[1:] > 0)
    ke = kinetic_energy(uv)
    assert ke > 1.0  # a meaningful wind (m2 s-2)
    assert spectrum.sum() == pytest.approx(ke, rel=1e-10)


def test_spectrum_per_degree_closed_form() -> None:
    """E(l) = a^2 / (2 l (l + 1)) * sum_m (|zeta_lm|^2 + |delta_lm|^2) / (4 pi), m > 0 twice."""
    vd = random_vort_div(seed=3)
    uv = winds(vd)
    power = np.abs(vd.numpy()) ** 2
    power[..., 1:] *= 2.0
    degree = np.arange(1, TRUNC + 1)
    expected = np.zeros(TRUNC + 1)
    expected[1:] = (
        RADIUS**2 / (2 * degree * (degree + 1)) * power.sum(axis=(0, 2))[1:] / (4 * np.pi)
    )
    np.testing.assert_allclose(kinetic_energy_spectrum(uv[0], uv[1], GRID), expected, rtol=1e-10)


def test_batch_dimensions_and_tensor_input() -> None:
    vd = random_vort_div(batch=(2, 3), seed=4)
    # one field at a time: torch's batched float64 einsum is slow on CPU (seconds)
    uv = np.stack([np.stack([winds(vd[i, j]) for j in range(3)]) for i in range(2)])
    assert uv.shape == (2, 3, 2, NLAT, NLON)
    spectra = kinetic_energy_spectrum(uv[:, :, 0], torch.as_tensor(uv[:, :, 1]), GRID)
    assert spectra.shape == (2, 3, TRUNC + 1)
    np.testing.assert_allclose(spectra.sum(-1), kinetic_energy(uv), rtol=1e-10)
    single = kinetic_energy_spectrum(uv[1, 2, 0], uv[1, 2, 1], GRID)
    np.testing.assert_allclose(spectra[1, 2], single, rtol=1e-12, atol=0)


@pytest.mark.parametrize("speed", [1.0, 25.0])
def test_solid_body_rotation_is_all_in_degree_one(speed: float) -> None:
    lat = np.deg2rad(GRID.latitude)[:, None]
    u = speed * np.cos(lat) * np.ones(NLON)
    v = np.zeros_like(u)
    spectrum = kinetic_energy_spectrum(u, v, GRID)
    assert spectrum[1] == pytest.approx(speed**2 / 3.0, rel=1e-12)
    np.testing.assert_allclose(np.delete(spectrum, 1), 0.0, atol=1e-12 * speed**2)
    assert kinetic_energy(np.stack([u, v])) == pytest.approx(speed**2 / 3.0, rel=1e-12)


def test_divergent_degree_one_wind() -> None:
    """Pole-to-pole flow v = V cos(lat), u = 0 (gradient of sin(lat)) is also pure l = 1."""
    lat = np.deg2rad(GRID.latitude)[:, None]
    v = 3.0 * np.cos(lat) * np.ones(NLON)
    spectrum = kinetic_energy_spectrum(np.zeros_like(v), v, GRID)
    assert spectrum[1] == pytest.approx(9.0 / 3.0, rel=1e-12)
    np.testing.assert_allclose(np.delete(spectrum, 1), 0.0, atol=1e-12)


@pytest.mark.parametrize("l0", [1, 2, 7, TRUNC])
def test_single_degree_has_energy_only_there(l0: int) -> None:
    uv = winds(random_vort_div(degrees=[l0], seed=l0))
    spectrum = kinetic_energy_spectrum(uv[0], uv[1], GRID)
    ke = kinetic_energy(uv)
    assert spectrum[l0] == pytest.approx(ke, rel=1e-10)
    np.testing.assert_allclose(np.delete(spectrum, l0), 0.0, atol=1e-12 * ke)


@pytest.mark.parametrize("shift", [1, 5, 32])
def test_invariant_under_longitude_rotation(shift: int) -> None:
    uv = winds(random_vort_div(seed=5))
    spectrum = kinetic_energy_spectrum(uv[0], uv[1], GRID)
    rolled = np.roll(uv, shift, axis=-1)
    assert not np.allclose(rolled, uv)
    np.testing.assert_allclose(
        kinetic_energy_spectrum(rolled[0], rolled[1], GRID), spectrum, rtol=1e-10, atol=0
    )


def test_invariant_under_reflection_about_the_equator() -> None:
    """Mirroring north-south (v changes sign) keeps the energy at every degree."""
    uv = winds(random_vort_div(seed=6))
    mirrored = uv[:, ::-1, :].copy()
    mirrored[1] *= -1.0
    np.testing.assert_allclose(
        kinetic_energy_spectrum(mirrored[0], mirrored[1], GRID),
        kinetic_energy_spectrum(uv[0], uv[1], GRID),
        rtol=1e-10,
    )


def test_explicit_truncation() -> None:
    """A wind band-limited at 10 has the same spectrum (first 11 degrees) when truncated there."""
    uv = winds(random_vort_div(degrees=list(range(1, 11)), seed=7))
    full = kinetic_energy_spectrum(uv[0], uv[1], GRID)
    short = kinetic_energy_spectrum(uv[0], uv[1], GRID, truncation=10)
    assert short.shape == (11,)
    np.testing.assert_allclose(short, full[:11], rtol=1e-10)
    np.testing.assert_allclose(full[11:], 0.0, atol=1e-12 * full.sum())
    assert short.sum() == pytest.approx(kinetic_energy(uv), rel=1e-10)


def test_equiangular_grid_solid_body() -> None:
    grid = Grid.equiangular(33, NLON, 1)
    u = 10.0 * np.cos(np.deg2rad(grid.latitude))[:, None] * np.ones(NLON)
    spectrum = kinetic_energy_spectrum(u, np.zeros_like(u), grid)
    assert spectrum[1] == pytest.approx(100.0 / 3.0, rel=1e-10)
    np.testing.assert_allclose(np.delete(spectrum, 1), 0.0, atol=1e-10)


def test_grids_and_shapes_rejected() -> None:
    lat, lon, alt = np.array([60.0, 0.0, -60.0]), np.arange(8) * 45.0, np.array([90.0])
    field = np.ones((3, 8))
    irregular = Grid(lat, lon, alt, latitude_kind="irregular")
    with pytest.raises(ValueError, match="spectra need a Gauss-Legendre or equiangular grid"):
        kinetic_energy_spectrum(field, field, irregular)
    # labelled Gauss-Legendre (the constructor's default) but not the Gauss nodes
    mislabelled = Grid(lat, lon, alt)
    assert mislabelled.latitude_kind == "legendre-gauss"
    with pytest.raises(ValueError, match="grid latitudes are not the legendre-gauss nodes"):
        kinetic_energy_spectrum(field, field, mislabelled)
    with pytest.raises(ValueError, match="not the equiangular nodes for nlat = 3"):
        kinetic_energy_spectrum(field, field, Grid(lat, lon, alt, latitude_kind="equiangular"))
    with pytest.raises(
        GridMismatchError, match=r"winds have \(H, W\) = \(16, 64\), grid has \(32, 64\)"
    ):
        kinetic_energy_spectrum(np.zeros((16, 64)), np.zeros((16, 64)), GRID)
