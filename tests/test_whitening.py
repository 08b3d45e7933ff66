"""The spectral whitening x = mu + U z: round trips, whiteness, separability, energy, autograd, errors."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch_harmonics as th
from torch import nn

from genda.errors import InvalidValueError
from genda.grid import Grid
from genda.models.whitening import WHITENING_KIND, SpectralWhitening
from genda.normalization import Normalization
from genda.threads import cpu_threads

V, L, NLAT, NLON = 3, 2, 16, 32
T, C, K = NLAT, V * L, NLAT * NLAT
GRID = Grid.gaussian(NLAT, NLON, L, variables=("u", "v", "T"))
# u and v deliberately scaled differently: only physical winds are a vector field.
NORM = Normalization(
    ("u", "v", "T"),
    np.array([[12.0, -3.0], [1.5, 0.5], [190.0, 230.0]]),
    np.array([[25.0, 40.0], [6.0, 9.0], [8.0, 15.0]]),
)
N_FIT, N_TEST = 3000, 2000


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with cpu_threads(1):
        yield


def transforms(nlat: int = NLAT, nlon: int = NLON, t: int = T) -> list[nn.Module]:
    """Independent float64 RealSHT, InverseRealSHT, RealVectorSHT, InverseRealVectorSHT."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        options = {"lmax": t, "mmax": t, "grid": "legendre-gauss", "csphase": False}
        kinds = (th.RealSHT, th.InverseRealSHT, th.RealVectorSHT, th.InverseRealVectorSHT)
        return [kind(nlat, nlon, **options) for kind in kinds]
    finally:
        torch.set_default_dtype(previous)


SHT, ISHT, VSHT, IVSHT = transforms()
STD = torch.as_tensor(NORM.std)[..., None, None]
MEAN = torch.as_tensor(NORM.mean)[..., None, None]


def fields_from(c: torch.Tensor) -> torch.Tensor:
    """Normalised fields ``(n, V, L, H, W)`` of coefficients ``(n, V, L, T, M)``.

    ``c[:, 0], c[:, 1]``: poloidal and toroidal potentials of the physical winds
    (the torch-harmonics vector convention); ``c[:, 2]``: SHT of the normalised T.
    """
    winds = IVSHT(torch.stack([c[:, 0], c[:, 1]], dim=2))  # (n, L, 2, H, W)
    physical = torch.cat([winds.transpose(1, 2), (ISHT(c[:, 2:]) * STD[2:] + MEAN[2:])], dim=1)
    return (physical - MEAN) / STD


def coefficients_of(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`fields_from` on band-limited fields."""
    physical = x * STD + MEAN
    spectral = VSHT(physical[:, :2].transpose(1, 2))  # (n, L, 2, T, M)
    return torch.cat([spectral.transpose(1, 2), SHT(x[:, 2:])], dim=1)


def triangle() -> torch.Tensor:
    return torch.arange(T)[None, :] <= torch.arange(T)[:, None]


def gaussian_model(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Known per-mode mean ``(T, M, C)`` and factor ``(T, M, C, C)`` in the coefficients of
    :func:`fields_from`, channel ``c = v * L + level``.

    Coefficient amplitudes fall like ``(1 + l)^-2`` (kinetic energy per degree falls
    by three orders of magnitude over the truncation); wind potentials carry the
    ``1 / sqrt(l (l + 1))`` of a velocity of about 20 m/s; the wind potentials of
    degree 0 do not exist. Channels mix with a complex (phase-shifting) factor,
    ``m = 0`` is real.
    """
    g = torch.Generator().manual_seed(seed)
    degree = torch.arange(T, dtype=torch.float64)
    decay = (1.0 + degree).pow(-2.0)
    wind = torch.where(degree > 0, 20.0 / torch.sqrt(degree * (degree + 1)).clamp(min=1.0), 0.0)
    per_variable = torch.stack([wind * decay, wind * decay, decay])  # (V, T)
    amplitude = per_variable[:, None, :].expand(V, L, T).reshape(C, T).T  # (T, C)
    mixing = torch.view_as_complex(torch.randn(T, T, C, C, 2, generator=g, dtype=torch.float64))
    factor = amplitude[:, None, :, None] * mixing / math.sqrt(C)
    mean = (
        0.5
        * amplitude[:, None, :]
        * torch.view_as_complex(torch.randn(T, T, C, 2, generator=g, dtype=torch.float64))
    )
    factor[:, 0] = factor[:, 0].real.to(factor.dtype)
    mean[:, 0] = mean[:, 0].real.to(mean.dtype)
    valid = triangle()[..., None]
    return torch.where(valid, mean, 0), torch.where(valid[..., None], factor, 0)


def draw_coefficients(n: int, mean: torch.Tensor, factor: torch.Tensor, seed: int) -> torch.Tensor:
    """``n`` coefficient sets ``(n, V, L, T, M)`` of the Gaussian ``(mean, factor factor^H)``."""
    g = torch.Generator().manual_seed(seed)
    eps = torch.view_as_complex(torch.randn(n, T, T, C, 2, generator=g, dtype=torch.float64))
    eps = eps / math.sqrt(2.0)
    eps[:, :, 0] = eps[:, :, 0].real.to(eps.dtype) * math.sqrt(2.0)
    c = mean + torch.einsum("tmcd,ntmd->ntmc", factor, eps)
    return c.reshape(n, T, T, V, L).permute(0, 3, 4, 1, 2)


def draw(n: int, mean: torch.Tensor, factor: torch.Tensor, seed: int) -> torch.Tensor:
    return fields_from(draw_coefficients(n, mean, factor, seed))


def mode_covariance(c: torch.Tensor) -> torch.Tensor:
    """Sample covariance ``(T, M, C, C)`` of coefficients ``(n, V, L, T, M)``."""
    a = c.reshape(c.shape[0], C, T, T).permute(0, 2, 3, 1)
    a = a - a.mean(dim=0)
    return torch.einsum("ntmc,ntmd->tmcd", a, a.conj()) / (a.shape[0] - 1)


def kinetic_energy_per_degree(x: torch.Tensor) -> torch.Tensor:
    """Mean kinetic energy per degree ``(L, T)`` of the physical winds of fields ``x``."""
    c = coefficients_of(x)[:, :2]  # (n, 2, L, T, M)
    degree = torch.arange(T, dtype=torch.float64)
    weight = torch.full((T,), 2.0, dtype=torch.float64)
    weight[0] = 1.0  # m > 0 stands for +m and -m
    power = (c.abs().square() * weight).sum(dim=(1, -1)).mean(dim=0)  # (L, T)
    return 0.5 * degree * (degree + 1) * power


@pytest.fixture(scope="module")
def prior() -> tuple[torch.Tensor, torch.Tensor]:
    return gaussian_model()


@pytest.fixture(scope="module")
def data(prior) -> tuple[torch.Tensor, torch.Tensor]:
    """Training and held-out fields of the known Gaussian."""
    return draw(N_FIT, *prior, seed=1), draw(N_TEST, *prior, seed=2)


@pytest.fixture(scope="module", params=["columns", "levels", "cascade"])
def fitted(request, data) -> SpectralWhitening:
    whitening = SpectralWhitening(GRID, NORM, coupling=request.param).double()
    return whitening.fit(torch.split(data[0], 500))


def level_block(coupling: str) -> torch.Tensor:
    """``(V L K, V L K)`` mask of the pairs of z entries that the coupling makes independent."""
    level = torch.arange(L)[None, :, None].expand(V, L, K).reshape(-1)
    if coupling in ("columns", "cascade"):
        return torch.ones(level.numel(), level.numel(), dtype=torch.bool)
    return level[:, None] == level[None, :]


# ---------------------------------------------------------------------- 1. round trips
def test_decode_inverts_encode_on_band_limited_fields(prior, fitted) -> None:
    x = draw(4, *prior, seed=3)
    assert x.abs().max() > 1.0
    torch.testing.assert_close(fitted.decode(fitted.encode(x)), x, atol=1e-10, rtol=0)
    single = copy.deepcopy(fitted).float()  # the run-time precision
    x32 = x.float()
    error = (single.decode(single.encode(x32)) - x32).abs().max()
    assert error < 1e-5 * x32.abs().max()


def test_encode_discards_what_lies_beyond_the_truncation(prior, fitted) -> None:
    x = draw(2, *prior, seed=4)
    g = torch.Generator().manual_seed(5)
    noise = torch.randn(2, V, L, NLAT, NLON, generator=g, dtype=torch.float64)
    outside = noise - fields_from(coefficients_of(noise))  # no band-limited part
    assert outside.abs().max() > 0.5
    torch.testing.assert_close(fitted.encode(x + outside), fitted.encode(x), atol=1e-10, rtol=0)


def test_coefficients_invert_image(fitted) -> None:
    g = torch.Generator().manual_seed(6)
    z = torch.randn(3, *fitted.state_shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(fitted.coefficients(fitted.image(z)), z, atol=1e-12, rtol=0)
    single = copy.deepcopy(fitted).float()
    torch.testing.assert_close(
        single.coefficients(single.image(z.float())), z.float(), atol=2e-5, rtol=0
    )


def test_image_of_white_z_has_unit_variance_at_every_grid_point(fitted) -> None:
    # Closed form: the variance at a point is the sum of the squared images of the
    # K basis vectors (addition theorem: exactly 1 with the full triangle).
    basis = torch.eye(K, dtype=torch.float64)[:, None, None, :].expand(K, V, L, K)
    variance = fitted.image(basis.contiguous()).square().sum(dim=0)
    torch.testing.assert_close(variance, torch.ones_like(variance), atol=1e-10, rtol=0)


def test_layout_of_the_real_degrees_of_freedom(fitted) -> None:
    assert fitted.state_shape == (V, L, K)
    degree, order = fitted.dof_degree, fitted.dof_order
    for ell in range(T):
        block = slice(ell * ell, (ell + 1) * (ell + 1))
        assert (degree[block] == ell).all()
        assert order[block].tolist() == [0, *[m for m in range(1, ell + 1) for _ in (0, 1)]]
    # One real degree of freedom: z = e_k puts sqrt(2)^-1 (m > 0) or 1 (m = 0) into mode (l, m).
    z = torch.zeros(1, V, L, K, dtype=torch.float64)
    k = 3 * 3 + 2 * 2  # l = 3, m = 2, imaginary part
    z[0, 0, 0, k] = 1.0
    w = SHT(fitted.image(z))[0, 0, 0] / math.sqrt(4 * math.pi / K)
    expected = torch.zeros(T, T, dtype=torch.complex128)
    expected[3, 2] = 1j / math.sqrt(2.0)
    torch.testing.assert_close(w, expected, atol=1e-12, rtol=0)


# ---------------------------------------------------------------------- 2. whiteness
def test_encoded_held_out_fields_are_standard_normal(data, fitted) -> None:
    z = fitted.encode(data[1]).reshape(N_TEST, -1)
    # The vector potentials of degree 0 are 0: their eigen-directions are dropped.
    alive = z.var(dim=0) > 0
    assert int((~alive).sum()) == 2 * L
    z = z[:, alive]
    # Mean: sampling error of the held-out mean plus that of the fitted mean.
    spread = math.sqrt(1 / N_TEST + 1 / N_FIT)
    assert z.mean(dim=0).abs().max() < 5 * spread
    covariance = torch.cov(z.T)
    mask = level_block(fitted.coupling)[alive][:, alive]
    deviation = (covariance - torch.eye(z.shape[1], dtype=z.dtype))[mask]
    # Entry errors ~ sqrt(1/N_TEST + 1/N_FIT) (diagonal sqrt(2) more); 6 sigma over ~10^6 entries.
    assert deviation.abs().max() < 6 * math.sqrt(2) * spread
    assert deviation.square().mean().sqrt() < 1.3 * spread
    # The real dofs have unit variance each: a missing sqrt(2) would give 0.5.
    # Each variance has sampling error ~ sqrt(2) spread: mean |error| ~ 0.8 of that.
    diagonal = covariance.diagonal()
    assert (diagonal - 1).abs().mean() < 1.5 * math.sqrt(2) * spread


def test_decoded_white_noise_reproduces_the_mode_covariances(prior, fitted) -> None:
    mean, factor = prior
    covariance = factor @ factor.mH
    g = torch.Generator().manual_seed(7)
    z = torch.randn(N_TEST, *fitted.state_shape, generator=g, dtype=torch.float64)
    estimate = mode_covariance(coefficients_of(fitted.decode(z)))
    scale = covariance.diagonal(dim1=-2, dim2=-1).real
    norm = (scale[..., :, None] * scale[..., None, :]).sqrt().clamp(min=1e-300)
    error = ((estimate - covariance).abs() / norm)[triangle()]  # (modes, C, C)
    level = torch.arange(C) % L
    # "levels" models no covariance between levels: only pairs of one level are kept.
    pairs = (level[:, None] == level[None, :]) | (fitted.coupling != "levels")
    alive = scale[triangle()] > 0  # (modes, C): not the degree-0 wind potentials
    usable = alive[:, :, None] & alive[:, None, :] & pairs
    # Correlation errors ~ sqrt(1/N_TEST + 1/N_FIT) ~ 0.03 per entry.
    spread = math.sqrt(1 / N_TEST + 1 / N_FIT)
    assert error[usable].max() < 6 * spread
    assert error[usable].mean() < 1.5 * spread
    # The decoded mean is the fitted mean, within sampling error of the true one.
    zero = torch.zeros(1, *fitted.state_shape, dtype=torch.float64)
    centre = coefficients_of(fitted.decode(zero)).reshape(C, T, T).permute(1, 2, 0)
    centre_error = (centre - mean)[triangle()] / scale[triangle()].sqrt().clamp(min=1e-300)
    assert centre_error[alive].abs().max() < 5 / math.sqrt(N_FIT)


# ---------------------------------------------------------------------- 3. separability
@pytest.mark.parametrize("changed", [0, 1])
def test_levels_keep_layers_separable_cascade_looks_down_only_and_columns_mixes_all(
    prior, fitted, changed
) -> None:
    x = draw(2, *prior, seed=8)
    g = torch.Generator().manual_seed(9)
    bump = torch.zeros_like(x)
    bump[:, :, changed] = fields_from(draw_coefficients(2, *prior, seed=10))[:, :, changed]
    dz = fitted.encode(x + bump) - fitted.encode(x)
    other = 1 - changed
    assert dz[:, :, changed].abs().max() > 0.1
    z = torch.randn(2, *fitted.state_shape, generator=g, dtype=torch.float64)
    dz_in = torch.zeros_like(z)
    dz_in[:, :, changed] = torch.randn(2, V, K, generator=g, dtype=torch.float64)
    dx = fitted.decode(z + dz_in) - fitted.decode(z)
    assert dx[:, :, changed].abs().max() > 0.1
    if fitted.coupling == "levels":
        assert dz[:, :, other].abs().max() < 1e-10
        assert dx[:, :, other].abs().max() < 1e-10
    elif fitted.coupling == "cascade":
        # lower-triangular in level order: the lower level's x and z reach the upper
        # level's z and x, the upper level's never reach the lower level's
        above = changed == 0
        assert (dz[:, :, other].abs().max() > 0.1) == above
        assert (dx[:, :, other].abs().max() > 0.1) == above
        if not above:
            assert dz[:, :, other].abs().max() < 1e-10
            assert dx[:, :, other].abs().max() < 1e-10
    else:
        assert dz[:, :, other].abs().max() > 0.1
        assert dx[:, :, other].abs().max() > 0.1


# ---------------------------------------------------------------------- 4. energy
def test_decoded_noise_has_the_kinetic_energy_spectrum_of_the_data(data, fitted) -> None:
    g = torch.Generator().manual_seed(11)
    z = torch.randn(N_TEST, *fitted.state_shape, generator=g, dtype=torch.float64)
    sampled = kinetic_energy_per_degree(fitted.decode(z))
    truth = kinetic_energy_per_degree(data[1])
    assert (truth[:, 1] / truth[:, -1]).min() > 300  # steep: the check below means something
    assert (truth[:, 0] == 0).all() and (sampled[:, 0].abs() < 1e-20).all()
    # Degree l sums about 4 (2l + 1) real variances per level over N_TEST fields (and the
    # fit's N_FIT): relative error ~ sqrt(1 / (2 (2l + 1)) * (1/N_TEST + 1/N_FIT)) < 2 %.
    ratio = sampled[:, 1:] / truth[:, 1:]
    assert (ratio - 1).abs().max() < 0.1


def test_encoded_data_are_flat_across_degrees(data, fitted) -> None:
    z = fitted.encode(data[1])
    power = torch.zeros(T, dtype=torch.float64).index_add_(
        0, fitted.dof_degree, z.square().mean(dim=(0, 1, 2))
    )
    per_dof = power / torch.bincount(fitted.dof_degree).double()
    # Degree 0 holds the dropped wind potentials (2 of V dofs per level are 0).
    assert abs(per_dof[0].item() - 1 / V) < 0.1
    torch.testing.assert_close(
        per_dof[1:], torch.ones(T - 1, dtype=torch.float64), atol=0.05, rtol=0
    )
    # ... whereas the data's coefficient variance per degree spans orders of magnitude.
    raw = coefficients_of(data[1])[:, 2].abs().square().mean(dim=(0, 1)).sum(dim=-1)
    raw = raw / torch.arange(1, T + 1)  # per mode: degree l has l + 1 orders m >= 0
    assert raw[1] / raw[-1] > 1e3


# ---------------------------------------------------------------------- 5. autograd, affinity
@pytest.fixture(scope="module")
def tiny() -> SpectralWhitening:
    grid = Grid.gaussian(4, 8, 2, variables=("u", "v", "T"))
    norm = Normalization(
        grid.variables,
        np.array([[5.0, 1.0], [0.0, 2.0], [200.0, 210.0]]),
        np.array([[10.0, 20.0], [4.0, 6.0], [9.0, 11.0]]),
    )
    g = torch.Generator().manual_seed(12)
    fields = torch.randn(60, *grid.shape, generator=g, dtype=torch.float64)
    return SpectralWhitening(grid, norm, coupling="columns").double().fit([fields])


def test_gradcheck_of_every_map(tiny) -> None:
    g = torch.Generator().manual_seed(13)
    x = torch.randn(1, *tiny.field_shape, generator=g, dtype=torch.float64, requires_grad=True)
    z = torch.randn(1, *tiny.state_shape, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(tiny.encode, (x,))
    assert torch.autograd.gradcheck(tiny.decode, (z,))
    assert torch.autograd.gradcheck(tiny.image, (z,))
    assert torch.autograd.gradcheck(tiny.coefficients, (x,))


def test_encode_and_decode_are_affine(fitted) -> None:
    g = torch.Generator().manual_seed(14)
    z1, z2 = torch.randn(2, 1, *fitted.state_shape, generator=g, dtype=torch.float64)
    a = 0.3
    mixed = fitted.decode(a * z1 + (1 - a) * z2)
    torch.testing.assert_close(mixed, a * fitted.decode(z1) + (1 - a) * fitted.decode(z2))
    x1, x2 = fitted.decode(z1), fitted.decode(z2)
    b = -1.7  # affine, not only convex
    torch.testing.assert_close(
        fitted.encode(b * x1 + (1 - b) * x2), b * fitted.encode(x1) + (1 - b) * fitted.encode(x2)
    )
    torch.testing.assert_close(fitted.image(b * z1 + z2), b * fitted.image(z1) + fitted.image(z2))


# ---------------------------------------------------------------------- checkpoints
def test_config_and_buffers_rebuild_the_module(fitted) -> None:
    assert fitted.config() == {
        "kind": WHITENING_KIND,
        "truncation": T,
        "coupling": fitted.coupling,
        "tides": 0,
    }
    state = fitted.state_dict()
    assert {"mean", "eigenvalues", "eigenvectors", "wind_std", "wind_mean"} <= set(state)
    fresh = SpectralWhitening.from_config(GRID, fitted.config()).double()
    assert all(
        (buffer == 0).all() for buffer in (fresh.mean, fresh.eigenvalues, fresh.eigenvectors)
    )
    fresh.load_state_dict(state)  # the wind scales travel with the weights
    z = torch.randn(2, *fitted.state_shape, dtype=torch.float64)
    torch.testing.assert_close(fresh.decode(z), fitted.decode(z), atol=1e-12, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda(prior, fitted) -> None:
    gpu = copy.deepcopy(fitted).float().to("cuda")
    x = draw(2, *prior, seed=15).float().cuda()
    assert (gpu.decode(gpu.encode(x)) - x).abs().max() < 1e-5 * x.abs().max()


def test_equiangular_grids_round_trip_exactly_within_their_truncation() -> None:
    grid = Grid.equiangular(17, 32, 2)
    whitening = SpectralWhitening(grid).double()
    assert whitening.truncation == 9  # Clenshaw-Curtis on 17 latitudes: degree 16 exact
    g = torch.Generator().manual_seed(17)
    whitening.fit([torch.randn(40, *grid.shape, generator=g, dtype=torch.float64)])
    projected = whitening.decode(
        whitening.encode(torch.randn(2, *grid.shape, generator=g).double())
    )
    torch.testing.assert_close(
        whitening.decode(whitening.encode(projected)), projected, atol=1e-12, rtol=0
    )
    z = torch.randn(2, *whitening.state_shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(whitening.coefficients(whitening.image(z)), z, atol=1e-12, rtol=0)
    with pytest.raises(InvalidValueError, match="too few latitudes"):
        SpectralWhitening(grid, truncation=10)


@pytest.mark.parametrize("coupling", ["columns", "cascade"])
def test_fewer_fields_than_channels_give_a_usable_rank_deficient_fit(prior, coupling) -> None:
    fields = draw(4, *prior, seed=16)  # C = 6 channels per mode, rank <= 3
    whitening = SpectralWhitening(GRID, NORM, coupling=coupling).double().fit([fields])
    assert ((whitening.eigenvalues > 0).sum(dim=-1) <= 3).all()
    z = whitening.encode(fields)
    assert torch.isfinite(z).all()
    # The training fields lie in the kept directions: they come back exactly.
    torch.testing.assert_close(whitening.decode(z), fields, atol=1e-10, rtol=0)


# ---------------------------------------------------------------------- 6. errors
def test_rejects_grids_and_settings_it_cannot_carry() -> None:
    regular = Grid.gaussian(8, 16, 2)
    irregular = Grid(
        np.linspace(80.0, -80.0, 8),
        regular.longitude,
        regular.altitude,
        regular.variables,
        "irregular",
    )
    with pytest.raises(InvalidValueError, match="Gauss-Legendre or equiangular"):
        SpectralWhitening(irregular)
    with pytest.raises(InvalidValueError, match="truncation"):
        SpectralWhitening(regular, truncation=9)
    with pytest.raises(InvalidValueError, match="truncation"):
        SpectralWhitening(Grid.gaussian(8, 12, 2), truncation=7)  # m = 6 is the Nyquist order
    with pytest.raises(InvalidValueError, match="coupling"):
        SpectralWhitening(regular, coupling="joint3d")


def test_rejects_fields_it_cannot_fit_or_map() -> None:
    grid = Grid.gaussian(8, 16, 2)
    whitening = SpectralWhitening(grid)
    with pytest.raises(InvalidValueError, match="at least 2 fields, got 1"):
        whitening.fit([torch.randn(1, *grid.shape)])
    with pytest.raises(InvalidValueError, match="at least 2 fields, got 0"):
        whitening.fit([])
    broken = torch.randn(4, *grid.shape)
    broken[2, 1, 0, 3, 3] = float("nan")
    with pytest.raises(InvalidValueError, match="NaN"):
        whitening.fit([broken])
    with pytest.raises(InvalidValueError, match="shape"):
        whitening.fit([torch.randn(4, 2, 2, 8, 16)])
    with pytest.raises(InvalidValueError, match="shape"):
        whitening.encode(torch.randn(*grid.shape))
    with pytest.raises(InvalidValueError, match="shape"):
        whitening.decode(torch.randn(2, 3, 2, 63))
    with pytest.raises(InvalidValueError, match="shape"):
        whitening.coefficients(torch.randn(2, 3, 2, 8, 15))


def test_cascade_square_root_is_lower_triangular_in_level_order_with_a_positive_diagonal(
    data,
) -> None:
    """``U R`` per mode: zero above the diagonal, real positive diagonal on live channels,
    ``R`` unitary, and ``(U R)(U R)^H`` still the fitted covariance."""
    whitening = SpectralWhitening(GRID, NORM, coupling="cascade").double()
    whitening.fit(torch.split(data[0], 500))
    vectors = torch.view_as_complex(whitening.eigenvectors)[:, :, 0]
    lam = whitening.eigenvalues[:, :, 0]
    rotation = torch.view_as_complex(whitening.rotation)[:, :, 0]
    root = (vectors * lam.sqrt()[..., None, :]) @ rotation
    live = triangle()
    above = torch.triu(torch.ones(C, C, dtype=torch.bool), diagonal=1)
    scale = root.abs().amax()
    assert root[live][:, above].abs().max() < 1e-12 * scale
    diagonal = root[live].diagonal(dim1=-2, dim2=-1)
    assert diagonal.imag.abs().max() < 1e-12 * scale
    # every channel but the degree-0 wind potentials carries its own innovation
    alive = diagonal.real > 1e-8 * scale
    assert int((~alive).sum()) == 2 * L and (diagonal.real >= -1e-12 * scale).all()
    eye = torch.eye(C, dtype=rotation.dtype)
    torch.testing.assert_close(rotation @ rotation.mH, eye.expand_as(rotation), atol=1e-12, rtol=0)
    covariance = (vectors * lam[..., None, :]) @ vectors.mH
    torch.testing.assert_close(root @ root.mH, covariance, atol=1e-12 * float(scale) ** 2, rtol=0)
