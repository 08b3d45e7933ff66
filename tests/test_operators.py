"""Observation operators: exactness on simple fields, poles, dateline, kernels, adjoints."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from genda.grid import Grid
from genda.normalization import Normalization
from genda.observations.operators import ObservationOperator

GRID = Grid.gaussian(16, 32, 6)


def table(rows: list[dict]) -> pd.DataFrame:
    base = {"time": np.datetime64("2000-01-01T00"), "value": 0.0, "sigma": 1.0}
    return pd.DataFrame([base | row for row in rows])


def field_from(fn) -> torch.Tensor:
    """``(V, L, H, W)`` float64 field with ``fn(variable, alt, lat, lon)`` on the grid."""
    alt, lat, lon = np.meshgrid(GRID.altitude, GRID.latitude, GRID.longitude, indexing="ij")
    return torch.from_numpy(np.stack([fn(v, alt, lat, lon) for v in GRID.variables]))


def apply(op: ObservationOperator, x: torch.Tensor) -> np.ndarray:
    return op.to(dtype=torch.float64)(x).numpy()


def test_grid_nodes_are_returned_exactly() -> None:
    x = torch.randn(*GRID.shape, dtype=torch.float64)
    rows = [
        {
            "lat": GRID.latitude[i],
            "lon": GRID.longitude[j],
            "alt_km": GRID.altitude[k],
            "variable": v,
        }
        for i, j, k, v in [(0, 0, 0, "u"), (7, 31, 5, "T"), (15, 10, 2, "v"), (3, 4, 3, "T")]
    ]
    got = apply(ObservationOperator.from_table(table(rows), GRID), x)
    want = [
        x[GRID.variable_index(r["variable"]), k, i, j].item()
        for r, (i, j, k) in zip(rows, [(0, 0, 0), (7, 31, 5), (15, 10, 2), (3, 4, 3)], strict=True)
    ]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_trilinear_fields_are_reproduced_inside_cells() -> None:
    x = field_from(lambda v, alt, lat, lon: 200.0 + 0.7 * lat - 0.2 * lon + 1.5 * alt)
    rng = np.random.default_rng(0)
    rows = [
        {
            "lat": rng.uniform(GRID.latitude[-1], GRID.latitude[0]),
            "lon": rng.uniform(0.0, GRID.longitude[-1]),  # not across the dateline
            "alt_km": rng.uniform(GRID.altitude[0], GRID.altitude[-1]),
            "variable": "T",
        }
        for _ in range(50)
    ]
    obs = table(rows)
    got = apply(ObservationOperator.from_table(obs, GRID), x)
    want = 200.0 + 0.7 * obs["lat"] - 0.2 * obs["lon"] + 1.5 * obs["alt_km"]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


def test_periodic_across_the_dateline() -> None:
    x = field_from(lambda v, alt, lat, lon: np.cos(np.deg2rad(lon)) + 0 * alt)
    lon = 360.0 - 0.4 * (360.0 / GRID.nlon)  # between the last column and 0 E
    obs = table([{"lat": 10.0, "lon": lon, "alt_km": 90.0, "variable": "T"}])
    got = apply(ObservationOperator.from_table(obs, GRID), x)[0]
    last, first = math.cos(math.radians(GRID.longitude[-1])), 1.0
    assert got == pytest.approx(0.4 * last + 0.6 * first, abs=1e-12)


def test_winds_across_the_pole_follow_the_local_frame() -> None:
    # A uniform flow along the Earth's x axis: its local components are smooth
    # across the pole only if the far node's u and v change sign.
    def flow(v, alt, lat, lon):
        lat_r, lon_r = np.deg2rad(lat), np.deg2rad(lon)
        comp = {"u": -np.sin(lon_r), "v": -np.sin(lat_r) * np.cos(lon_r), "T": 250.0 + 0 * lat}
        return comp[v] + 0 * alt

    x = field_from(flow)
    lon0 = GRID.longitude[5]
    rows = []
    for hemisphere in (1.0, -1.0):
        for lat in (GRID.latitude[0] + 0.5 * (90.0 - GRID.latitude[0]), 89.9):
            rows += [
                {"lat": hemisphere * lat, "lon": lon0, "alt_km": 90.0, "variable": name}
                for name in ("u", "v", "T")
            ]
    obs = table(rows)
    got = apply(ObservationOperator.from_table(obs, GRID), x)
    lat_r, lon_r = np.deg2rad(obs["lat"]), np.deg2rad(lon0)
    want = np.select(
        [obs["variable"] == "u", obs["variable"] == "v"],
        [-np.sin(lon_r) + 0 * lat_r, -np.sin(lat_r) * np.cos(lon_r)],
        250.0,
    )
    np.testing.assert_allclose(got, want, atol=0.02)


def test_line_of_sight_projects_the_horizontal_wind() -> None:
    x = field_from(lambda v, alt, lat, lon: {"u": 30.0, "v": -12.0, "T": 200.0}[v] + 0 * lat * alt)
    rows = [
        {
            "lat": 69.3,
            "lon": 16.0,
            "alt_km": 92.0,
            "variable": "los",
            "azimuth_deg": az,
            "elevation_deg": el,
        }
        for az, el in [(0.0, 70.0), (90.0, 70.0), (225.0, 60.0), (300.0, 90.0)]
    ]
    obs = table(rows)
    got = apply(ObservationOperator.from_table(obs, GRID), x)
    az, el = np.deg2rad(obs["azimuth_deg"]), np.deg2rad(obs["elevation_deg"])
    np.testing.assert_allclose(got, np.cos(el) * (30.0 * np.sin(az) - 12.0 * np.cos(az)), atol=1e-9)


def test_profile_kernel_is_normalised_and_tends_to_linear_interpolation() -> None:
    x = field_from(lambda v, alt, lat, lon: 180.0 + 2.0 * alt + 0 * lat)
    mid = float(GRID.altitude[2] + 0.3 * (GRID.altitude[3] - GRID.altitude[2]))
    obs = table(
        [
            {"lat": 40.0, "lon": 100.0, "alt_km": mid, "variable": "T", "fwhm_km": fwhm}
            for fwhm in (np.nan, 0.01, 3.0, 8.0)
        ]
    )
    op = ObservationOperator.from_table(obs, GRID)
    np.testing.assert_allclose(op.weight.double().sum(-1).numpy(), 1.0, atol=1e-6)
    got = apply(op, x)
    # A symmetric kernel well inside the domain leaves a linear profile unchanged.
    np.testing.assert_allclose(got, 180.0 + 2.0 * mid, atol=1e-3)
    # And a curved profile: the narrow kernel equals linear interpolation.
    x2 = field_from(lambda v, alt, lat, lon: (alt - 80.0) ** 2 + 0 * lat)
    got2 = apply(op, x2)
    assert got2[1] == pytest.approx(got2[0], abs=1e-3)
    assert got2[3] > got2[2] > got2[0]  # wider kernels average more curvature in


def test_adjoint_passes_the_dot_product_test() -> None:
    rng = np.random.default_rng(1)
    m = 40
    obs = table(
        [
            {
                "lat": rng.uniform(-90, 90),
                "lon": rng.uniform(0, 360),
                "alt_km": rng.uniform(GRID.altitude[0], GRID.altitude[-1]),
                "variable": rng.choice(["u", "v", "T", "los"]),
                "azimuth_deg": rng.uniform(0, 360),
                "elevation_deg": rng.uniform(20, 90),
                "fwhm_km": rng.choice([np.nan, 4.0]),
            }
            for _ in range(m)
        ]
    )
    op = ObservationOperator.from_table(obs, GRID).to(dtype=torch.float64)
    x = torch.randn(3, *GRID.shape, dtype=torch.float64)
    r = torch.randn(3, m, dtype=torch.float64)
    lhs = (op.linear(x) * r).sum()
    rhs = (x * op.adjoint(r)).sum()
    assert lhs.item() == pytest.approx(rhs.item(), rel=1e-12)


def test_normalised_operator_folds_in_the_statistics() -> None:
    rng = np.random.default_rng(2)
    norm = Normalization(
        GRID.variables,
        rng.normal(0, 50, (3, GRID.nlevels)) + np.array([[0.0], [0.0], [200.0]]),
        rng.uniform(5, 30, (3, GRID.nlevels)),
    )
    obs = table(
        [
            {"lat": 50.0, "lon": 10.0, "alt_km": 88.0, "variable": "T"},
            {"lat": -70.0, "lon": 300.0, "alt_km": 101.0, "variable": "u", "fwhm_km": 5.0},
        ]
    )
    op = ObservationOperator.from_table(obs, GRID).to(dtype=torch.float64)
    z = torch.randn(2, *GRID.shape, dtype=torch.float64)
    physical = norm.denormalize(z)
    np.testing.assert_allclose(
        op.normalized(norm).to(dtype=torch.float64)(z).numpy(), op(physical).numpy(), rtol=1e-6
    )


def test_operator_is_differentiable_in_both_modes() -> None:
    obs = table([{"lat": 0.0, "lon": 0.0, "alt_km": 90.0, "variable": "u"}])
    op = ObservationOperator.from_table(obs, GRID)
    x = torch.randn(*GRID.shape)
    v = torch.randn(*GRID.shape)
    _, tangent = torch.func.jvp(op, (x,), (v,))
    assert torch.allclose(tangent, op.linear(v))
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(op(x).sum(), x)
    assert torch.allclose(grad, op.adjoint(torch.ones(1)))


def test_errors_name_the_problem() -> None:
    op = ObservationOperator.from_table(
        table([{"lat": 0.0, "lon": 0.0, "alt_km": 90.0, "variable": "T"}]), GRID
    )
    with pytest.raises(ValueError, match="expected, got"):
        op(torch.zeros(3, 5, 16, 32))
    with pytest.raises(ValueError, match="empty"):
        ObservationOperator.from_table(table([]).iloc[0:0], GRID)
