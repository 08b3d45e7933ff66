"""Contract tests for genda.normalization: inverse maps, area-weighted moments, storage."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
import xarray as xr

from genda.grid import Grid, GridMismatchError
from genda.normalization import MEAN_ATTR, STD_ATTR, Normalization

GRID = Grid.gaussian(16, 32, 4)
TIMES = np.datetime64("2001-01-01T00", "ns") + np.arange(6) * np.timedelta64(1, "h")


def archive_like(grid: Grid = GRID, seed: int = 0) -> tuple[np.ndarray, xr.Dataset]:
    """Hourly fields with per-variable, per-level offsets and amplitudes growing with height.

    A latitude-dependent mean (u ~ cos(lat) jet, T colder at the poles) makes the
    area weighting matter: an unweighted mean would differ.
    """
    rng = np.random.default_rng(seed)
    lat = np.deg2rad(grid.latitude)[:, None]
    nt, (nv, nl, nh, nw) = TIMES.size, grid.shape
    base = np.stack(
        [
            40.0 * np.cos(lat) * np.ones((nh, nw)),
            np.zeros((nh, nw)),
            200.0 - 30.0 * np.sin(lat) ** 2 * np.ones((nh, nw)),
        ]
    )[:, None]  # (V, 1, H, W)
    growth = np.exp(np.arange(nl) / 2.0)[None, :, None, None]  # amplitudes grow upward
    scale = np.array([10.0, 5.0, 8.0])[:, None, None, None] * growth
    field = (
        base + np.arange(nl)[None, :, None, None] + scale * rng.normal(size=(nt, nv, nl, nh, nw))
    )
    return field, grid.to_dataset(field, time=TIMES)


def weighted_moments(x: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force area-weighted mean and std over (time, lat, lon) of ``(T, V, L, H, W)``."""
    w = grid.area_weights()[:, None] * np.ones(grid.nlon) / grid.nlon  # (H, W), sums to 1
    w = np.broadcast_to(w, x.shape) / x.shape[0]
    mean = np.einsum("tvlhw,tvlhw->vl", x, w)
    var = np.einsum("tvlhw,tvlhw->vl", (x - mean[None, :, :, None, None]) ** 2, w)
    return mean, np.sqrt(var)


def random_normalization(shape=(3, 4), seed: int = 1) -> Normalization:
    rng = np.random.default_rng(seed)
    return Normalization(
        ("u", "v", "T")[: shape[0]],
        rng.normal(0, 100, shape),
        rng.uniform(0.5, 50, shape),
    )


def test_normalize_denormalize_are_inverse() -> None:
    norm = random_normalization()
    x = torch.as_tensor(np.random.default_rng(2).normal(50, 30, (2, 5, 3, 4, 6, 8)))
    y = norm.normalize(x)
    assert y.dtype == torch.float64 and y.shape == x.shape
    torch.testing.assert_close(norm.denormalize(y), x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(norm.normalize(norm.denormalize(x)), x, rtol=1e-12, atol=1e-12)
    # the affine map, element by element
    i, j = 2, 3
    expected = (x[..., i, j, :, :] - norm.mean[i, j]) / norm.std[i, j]
    torch.testing.assert_close(y[..., i, j, :, :], expected, rtol=1e-14, atol=1e-14)


def test_normalize_keeps_float32() -> None:
    norm = random_normalization()
    x = torch.randn(3, 4, 2, 2, dtype=torch.float32)
    assert norm.normalize(x).dtype == torch.float32
    torch.testing.assert_close(norm.denormalize(norm.normalize(x)), x, rtol=1e-5, atol=1e-5)


def test_dataset_statistics_match_brute_force() -> None:
    field, ds = archive_like()
    norm = Normalization.from_dataset(ds, GRID)
    assert norm.variables == ("u", "v", "T")
    assert norm.mean.shape == norm.std.shape == (3, 4)
    mean, std = weighted_moments(field, GRID)
    np.testing.assert_allclose(norm.mean, mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(norm.std, std, rtol=1e-12)
    # area weighting matters here: the unweighted mean of u differs
    assert abs(field[:, 0].mean() - mean[0].mean()) > 1.0
    # std grows upward with the amplitudes
    assert np.all(np.diff(norm.std, axis=1) > 0)

    z = norm.normalize(torch.as_tensor(field)).numpy()
    zmean, zstd = weighted_moments(z, GRID)
    np.testing.assert_allclose(zmean, 0.0, atol=1e-12)
    np.testing.assert_allclose(zstd, 1.0, rtol=1e-12)


def test_dataset_statistics_use_the_grid_variable_order() -> None:
    field, ds = archive_like()
    alphabetical = ds[["T", "u", "v"]]
    norm = Normalization.from_dataset(alphabetical, GRID)
    assert norm.variables == ("u", "v", "T")
    mean, _ = weighted_moments(field, GRID)
    np.testing.assert_allclose(norm.mean, mean, rtol=1e-12, atol=1e-12)


def test_dataset_statistics_without_time() -> None:
    field, ds = archive_like()
    snapshot = ds.isel(time=0)
    norm = Normalization.from_dataset(snapshot, GRID)
    mean, std = weighted_moments(field[:1], GRID)
    np.testing.assert_allclose(norm.mean, mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(norm.std, std, rtol=1e-12)


def test_attach_and_from_attrs_round_trip(tmp_path) -> None:
    _, ds = archive_like()
    norm = Normalization.from_dataset(ds, GRID)
    attached = norm.attach(ds)
    assert MEAN_ATTR not in ds["u"].attrs  # a copy: the input is untouched
    assert attached["T"].attrs[MEAN_ATTR] == norm.mean[2].tolist()
    assert attached["T"].attrs[STD_ATTR] == norm.std[2].tolist()
    assert attached["u"].attrs["units"] == "m s-1"  # CF attributes kept
    back = Normalization.from_attrs(attached, norm.variables)
    np.testing.assert_array_equal(back.mean, norm.mean)
    np.testing.assert_array_equal(back.std, norm.std)
    # a subset, in another order
    sub = Normalization.from_attrs(attached, ["T", "u"])
    np.testing.assert_array_equal(sub.mean, norm.mean[[2, 0]])

    # through a Zarr v3 store on disk
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        attached.to_zarr(tmp_path / "x.zarr", zarr_format=3)
        opened = xr.open_zarr(tmp_path / "x.zarr")
    from_disk = Normalization.from_attrs(opened, norm.variables)
    np.testing.assert_array_equal(from_disk.mean, norm.mean)
    np.testing.assert_array_equal(from_disk.std, norm.std)


def test_from_attrs_single_level() -> None:
    grid = Grid.gaussian(4, 8, 1)
    ds = grid.to_dataset(np.random.default_rng(0).normal(size=grid.shape))
    norm = Normalization(grid.variables, np.array([[1.0], [2.0], [3.0]]), np.ones((3, 1)))
    attached = norm.attach(ds)
    back = Normalization.from_attrs(attached, grid.variables)
    assert back.mean.shape == (3, 1)
    np.testing.assert_array_equal(back.mean, norm.mean)


def test_dict_round_trip_through_json() -> None:
    norm = random_normalization()
    back = Normalization.from_dict(json.loads(json.dumps(norm.to_dict())))
    assert back.variables == norm.variables
    np.testing.assert_array_equal(back.mean, norm.mean)
    np.testing.assert_array_equal(back.std, norm.std)
    assert back.mean.dtype == np.float64


def test_zero_std_names_the_variable() -> None:
    std = np.ones((3, 4))
    std[1, 2] = 0.0
    with pytest.raises(ValueError, match=r"std is not positive for variables \['v'\]"):
        Normalization(("u", "v", "T"), np.zeros((3, 4)), std)
    std[1, 2] = -1.0
    with pytest.raises(ValueError, match=r"\['v'\]"):
        Normalization(("u", "v", "T"), np.zeros((3, 4)), std)
    # a constant field in a dataset: its computed std is round-off, not exactly 0
    _, ds = archive_like()
    ds["T"] = ds["T"] * 0 + 250.0
    with pytest.raises(ValueError, match=r"variables \['T'\] \(constant field\?\)"):
        Normalization.from_dataset(ds, GRID)
    ds["v"] = ds["v"] * 0  # exactly 0
    with pytest.raises(ValueError, match=r"variables \['v', 'T'\] \(constant field\?\)"):
        Normalization.from_dataset(ds, GRID)
    ds["T"] = ds["T"] * 0 + 250.0 + 1e-6 * np.sin(np.deg2rad(ds["longitude"]))
    with pytest.raises(ValueError, match=r"variables \['v'\] \(constant field\?\)"):
        Normalization.from_dataset(ds, GRID)
    # a small but resolved variability is kept
    ds["v"] = ds["u"]
    norm = Normalization.from_dataset(ds, GRID)
    np.testing.assert_allclose(norm.std[2], 1e-6 / np.sqrt(2), rtol=1e-6)


def test_non_finite_statistics_rejected() -> None:
    mean = np.zeros((3, 4))
    mean[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        Normalization(("u", "v", "T"), mean, np.ones((3, 4)))


@pytest.mark.parametrize(
    ("mean_shape", "std_shape"),
    [((3, 4), (3, 5)), ((2, 4), (2, 4)), ((3,), (3,)), ((3, 4, 1), (3, 4, 1))],
)
def test_statistics_shape_mismatch(mean_shape, std_shape) -> None:
    with pytest.raises(GridMismatchError, match=r"do not match \(V=3, L\)"):
        Normalization(("u", "v", "T"), np.zeros(mean_shape), np.ones(std_shape))


def test_field_shape_mismatch() -> None:
    norm = random_normalization()
    with pytest.raises(
        GridMismatchError, match=r"field has \(V, L\) = \(3, 5\), normalisation has \(3, 4\)"
    ):
        norm.normalize(torch.zeros(3, 5, 2, 2))
    with pytest.raises(GridMismatchError, match=r"\(V, L\) = \(2, 4\)"):
        norm.denormalize(torch.zeros(7, 2, 4, 2, 2))


def test_missing_attrs_name_the_variable() -> None:
    _, ds = archive_like()
    with pytest.raises(KeyError, match="variable 'u' carries no normalisation statistics"):
        Normalization.from_attrs(ds, ["u", "v"])
    partial = random_normalization().attach(ds)
    del partial["v"].attrs[STD_ATTR]
    with pytest.raises(KeyError, match="variable 'v' carries no normalisation statistics"):
        Normalization.from_attrs(partial, ["u", "v", "T"])
