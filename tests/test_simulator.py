"""Invariants of the built-in isentropic-layer model."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from genda.constants import GRAVITY, KAPPA, SECONDS_PER_DAY
from genda.simulator import SimulationError, Simulator, SimulatorConfig
from genda.simulator.adjustment import thickness_adjustment
from genda.simulator.model import interpolate_to_levels
from genda.simulator.reference import exner, layer_geometry, reference_temperature

SMALL = SimulatorConfig(nlat=16, nlon=32, layers=4, levels=4)


def perturbed(
    sim: Simulator, seed: int = 0, relative_mass: float = 0.05, wind: float = 20.0
) -> None:
    """Add smooth random perturbations (wavenumbers 1-6): layer masses by up to
    ``relative_mass`` of their reference, winds (rotational) up to about ``wind`` m/s."""
    tr = sim.transforms
    gen = torch.Generator().manual_seed(seed)
    shape = sim.state[:, 0].shape
    mask = tr.triangle & (tr.degree > 0) & (tr.degree <= 6)
    noise = torch.complex(
        torch.randn(shape, generator=gen, dtype=torch.float64),
        torch.randn(shape, generator=gen, dtype=torch.float64),
    )
    noise = torch.where(mask, noise, 0)
    noise[..., 0] = noise[..., 0].real  # m = 0 coefficients of real fields are real
    noise = noise / tr.to_grid(noise).abs().amax(dim=(-2, -1), keepdim=True)[..., :1]
    sigma_ref = torch.as_tensor(sim.geometry.sigma)[:, None, None]
    sim.state[:, 0] += relative_mass * sigma_ref * noise
    vort = noise.roll(1, 0)
    sim.state[:, 1] += (
        vort
        * wind
        / tr.winds(torch.stack((vort, 0 * vort), 1)).abs().amax(dim=(-3, -2, -1))[:, None, None]
    )


def test_reference_state_matches_the_reference_temperature() -> None:
    geo = layer_geometry(8, 70.0, 125.0)
    sim = Simulator(SimulatorConfig().unforced())
    g = sim.diagnose()
    expected = geo.temperature[:, None, None]
    np.testing.assert_allclose(
        g.temperature.numpy(), np.broadcast_to(expected, g.temperature.shape), rtol=1e-10
    )
    # the profile has a mesopause near 88 km and warms above, as MSIS does
    z = np.linspace(70, 125, 111)
    assert 85 <= z[np.argmin(reference_temperature(z))] <= 91
    assert np.all(np.diff(geo.theta) > 0)


def test_rest_is_a_steady_state_without_forcing() -> None:
    sim = Simulator(SMALL.unforced())
    start = sim.state.clone()
    sim.advance(6 * 3600)
    # flat isentropes, no wind: every tendency vanishes (to round-off of the transforms)
    assert torch.allclose(sim.state, start, atol=1e-12 * float(start.abs().max()))


def test_layer_mass_is_conserved_to_round_off_without_forcing() -> None:
    sim = Simulator(SMALL.unforced())
    perturbed(sim)
    before = sim.dynamics.layer_mass(sim.state)
    sim.advance(SECONDS_PER_DAY)
    after = sim.dynamics.layer_mass(sim.state)
    assert float(sim.diagnose().wind.abs().max()) > 5.0  # the flow is not trivial
    np.testing.assert_allclose(after.numpy(), before.numpy(), rtol=1e-13, atol=0)


def test_layer_mass_is_conserved_with_forcing_and_hyperdiffusion() -> None:
    # Forcing redistributes mass within a layer and between layers of one
    # column (heating), but never changes a layer's global mass.
    sim = Simulator(SMALL, seed=3)
    before = sim.dynamics.layer_mass(sim.state)
    sim.run_days(2)
    np.testing.assert_allclose(
        sim.dynamics.layer_mass(sim.state).numpy(), before.numpy(), rtol=1e-12
    )


def energy_drift(dt: float) -> tuple[float, float]:
    cfg = dataclasses.replace(SMALL.unforced(), dt_seconds=dt)
    sim = Simulator(cfg)
    perturbed(sim)
    phi = sim.surface_geopotential()
    e0 = float(sim.dynamics.total_energy(sim.state, phi))
    ke0 = float(sim.dynamics.kinetic_energy(sim.state, phi))
    sim.advance(SECONDS_PER_DAY)
    e1 = float(sim.dynamics.total_energy(sim.state, phi))
    ke1 = float(sim.dynamics.kinetic_energy(sim.state, phi))
    return abs(e1 - e0) / ke0, abs(ke1 - ke0) / ke0


def test_energy_of_the_unforced_undamped_model_is_conserved() -> None:
    """Total energy changes by far less than the kinetic energy that is exchanged.

    The spatially discretised equations conserve energy up to truncation of the
    nonlinear terms; RK4 adds an error of order dt^4. So the drift over a day
    must be a small fraction (0.1 %; measured: 6e-5 at dt = 600 s) of the
    kinetic energy, which itself changes by more than 5 % as it is exchanged
    with enthalpy, and must not grow when the step is halved.
    """
    drift_coarse, exchanged = energy_drift(1200.0)
    drift_fine, _ = energy_drift(600.0)
    assert exchanged > 0.05  # energy really moves between reservoirs
    assert drift_fine < 1e-3
    # halving the step never makes it worse; what is left is spatial truncation
    # of the non-quadratic terms (Exner function), not the time scheme
    assert drift_fine <= drift_coarse


def test_linear_gravity_wave_speed_is_sqrt_gh() -> None:
    """A thin single layer without rotation carries waves at c = sqrt(g h).

    The layer spans 0.7 km of log-pressure altitude, so the compressibility
    correction to the shallow-water speed is ~2 %: the exact linear speed of the
    discrete model is ``c^2 = g sigma theta dPi/dp`` and ``sqrt(g h)`` with the
    layer's geometric thickness h differs from it by 1.5 %.
    """
    cfg = SimulatorConfig(
        nlat=32,
        nlon=64,
        layers=1,
        levels=1,
        bottom_km=70.0,
        top_km=70.7,
        output_bottom_km=70.35,
        output_top_km=70.35,
        dt_seconds=600.0,
    ).unforced()
    sim = Simulator(cfg, rotation_rate=0.0)
    degree = 6
    tr = sim.transforms
    sim.state[0, 0, degree, 0] += 1e-4 * sim.state[0, 0, 0, 0].real
    series = []
    hours = 48
    for _ in range(hours * 6):
        sim.advance(sim.dt)
        series.append(float(sim.state[0, 0, degree, 0].real))
    series = np.asarray(series) - np.mean(series)
    # frequency from the spectral peak, refined by parabolic interpolation
    spectrum = np.abs(np.fft.rfft(series * np.hanning(series.size), n=16 * series.size))
    k = int(np.argmax(spectrum[1:])) + 1
    a, b, c = np.log(spectrum[k - 1 : k + 2])
    k_peak = k + 0.5 * (a - c) / (a - 2 * b + c)
    omega = 2 * np.pi * k_peak / (16 * series.size * sim.dt)
    speed = omega * tr.radius / math.sqrt(degree * (degree + 1))

    geo = sim.geometry
    p_s, p_t = geo.interface_pressure
    h_exact = geo.sigma[0] * geo.theta[0] * KAPPA * exner(p_s) / p_s
    h_geometric = geo.theta[0] * (exner(p_s) - exner(p_t)) / GRAVITY
    assert speed == pytest.approx(math.sqrt(GRAVITY * h_exact), rel=0.01)
    assert speed == pytest.approx(math.sqrt(GRAVITY * h_geometric), rel=0.03)


def test_runs_are_deterministic_for_a_seed() -> None:
    a, b, c = Simulator(SMALL, seed=7), Simulator(SMALL, seed=7), Simulator(SMALL, seed=8)
    for sim in (a, b, c):
        sim.advance(12 * 3600)
    assert torch.equal(a.snapshot(), b.snapshot())
    assert not torch.allclose(a.snapshot(), c.snapshot())


def test_forced_run_stays_bounded_and_develops_jets_tides_and_waves() -> None:
    sim = Simulator(SMALL, seed=1)
    sim.run_days(8)
    fields = torch.stack([s.fields for s in sim.snapshots(hours=24)]).numpy()  # (T, V, L, H, W)
    assert np.isfinite(fields).all()
    u, T = fields[:, 0], fields[:, 2]
    assert 10 < np.abs(u).max() < 250
    assert 120 < T.min() and T.max() < 600
    assert u.std(axis=0).mean() > 1.0  # the flow varies in time


def test_vanishing_layer_is_reported() -> None:
    sim = Simulator(SMALL)
    sim.state[-1, 0] *= -1.0
    with pytest.raises(SimulationError, match="layer 3"):
        sim.check()


def test_interpolation_to_levels_is_exact_for_linear_profiles() -> None:
    K, H, W = 5, 3, 4
    gen = torch.Generator().manual_seed(0)
    layer_km = torch.linspace(70, 120, K)[:, None, None] + torch.rand((K, H, W), generator=gen)
    values = torch.stack((2.0 * layer_km + 1.0, -layer_km))
    levels = torch.tensor([80.0, 95.5, 110.0])
    out = interpolate_to_levels(values, layer_km, levels)
    expected = torch.stack((2.0 * levels + 1.0, -levels))[:, :, None, None].expand(2, 3, H, W)
    torch.testing.assert_close(out, expected)


def test_output_grid_and_snapshot_shape() -> None:
    sim = Simulator(SMALL)
    snap = sim.snapshot()
    assert snap.shape == sim.output_grid.shape == (3, 4, 16, 32)
    np.testing.assert_allclose(sim.output_grid.altitude, np.linspace(80, 115, 4))


def test_bad_configurations_are_rejected() -> None:
    with pytest.raises(ValueError, match="layers"):
        SimulatorConfig(layers=65)
    with pytest.raises(ValueError, match="output levels"):
        SimulatorConfig(output_top_km=130.0)


def test_thin_layers_are_refilled_from_their_neighbours_keeping_column_mass() -> None:
    gen = torch.Generator().manual_seed(0)
    reference = torch.tensor([4.0, 2.0, 1.0, 0.5], dtype=torch.float64)
    sigma = reference[:, None, None] * (
        0.8 + 0.4 * torch.rand((4, 3, 5), generator=gen, dtype=torch.float64)
    )
    assert thickness_adjustment(sigma, reference, 0.2) is None  # nothing thin: untouched
    sigma[2, 1, 1] = 0.05 * reference[2]  # one thin spot in layer 2
    sigma[0, 0, 0] = 0.01 * reference[0]  # and one in the bottom layer
    increment = thickness_adjustment(sigma, reference, 0.2)
    assert increment is not None
    adjusted = sigma + increment
    torch.testing.assert_close(adjusted.sum(0), sigma.sum(0), rtol=1e-15, atol=1e-15)
    assert torch.all(adjusted >= 0.2 * reference[:, None, None] - 1e-12)
    changed = increment.abs().sum(0) > 0
    assert changed.sum() == 2  # only the two columns with a thin layer
    assert increment[3, 1, 1] < 0 and increment[1, 1, 1] < 0  # taken from both neighbours
    assert (
        increment[1, 0, 0] < 0 and increment[2:, 0, 0].abs().sum() == 0
    )  # bottom: from above only
