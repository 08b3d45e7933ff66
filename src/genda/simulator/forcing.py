"""Forcing and dissipation of the built-in model (perpetual northern-winter solstice).

* Radiative relaxation of the layer masses towards an equilibrium whose
  temperature contrast between the winter and summer poles changes sign with
  altitude (cold summer mesopause, warm summer lower thermosphere), so the
  zonal-mean jets change with altitude by thermal-wind balance.
  The equilibrium bottom pressure is in gradient-wind balance with winter
  westerly and summer easterly jets of the upper mesosphere.
* A lower-boundary geopotential carrying planetary waves (stationary wave 1,
  quasi-2-day wave, 5-day wave) and the migrating diurnal and semidiurnal tides
  arriving from below.
* Sun-synchronous heating (migrating tides) that grows with altitude, as a
  diabatic mass flux across the layer interfaces.
* Small-scale stochastic forcing of vorticity and divergence: red in time
  (AR(1)), correlated in the vertical, growing with altitude like a gravity-wave
  field and confined to total wavenumbers >= ``gravity_wave_min_wavenumber``.
* Rayleigh friction with a sponge near the top, and del^8 hyperdiffusion.

Every spectral pattern is computed once; per step only time factors change.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from genda.constants import (
    EARTH_RADIUS_M,
    GRAVITY,
    KAPPA,
    SCALE_HEIGHT_KM,
    SECONDS_PER_DAY,
)
from genda.simulator.config import PlanetaryWave, SimulatorConfig, TidalForcing
from genda.simulator.reference import LayerGeometry, exner, reference_temperature
from genda.simulator.spectral import SpectralTransforms

SOLAR_DAY_RATE = 2.0 * math.pi / SECONDS_PER_DAY
"""Angular speed of the sun's hour angle (rad s-1)."""


def ramp(time_seconds: float, ramp_days: float) -> float:
    """Smooth switch-on factor from 0 to 1 over ``ramp_days``."""
    if ramp_days <= 0:
        return 1.0
    x = min(max(time_seconds / (ramp_days * SECONDS_PER_DAY), 0.0), 1.0)
    return 0.5 * (1.0 - math.cos(math.pi * x))


def equilibrium_temperature_anomaly(
    latitude_rad: np.ndarray, altitude_km: np.ndarray, contrast: float
) -> np.ndarray:
    """``(Z, H)`` radiative-equilibrium temperature anomaly (K), northern winter.

    Half the winter-minus-summer contrast times ``sin(lat)``, with a vertical
    profile peaking near the mesopause and reversing in the lower thermosphere.
    """
    z = np.asarray(altitude_km)[:, None]
    profile = np.exp(-(((z - 85.0) / 12.0) ** 2)) - 0.6 * np.exp(-(((z - 112.0) / 8.0) ** 2))
    return 0.5 * contrast * profile * np.sin(latitude_rad)[None, :]


def bottom_jet(latitude_rad: np.ndarray, peak: float) -> np.ndarray:
    """Zonal wind (m s-1) at the lower boundary: winter westerly, summer easterly."""
    lat = np.rad2deg(latitude_rad)
    return peak * (
        np.exp(-(((lat - 50.0) / 18.0) ** 2)) - 0.8 * np.exp(-(((lat + 40.0) / 18.0) ** 2))
    )


def balanced_geopotential(
    latitude_rad: np.ndarray, wind: np.ndarray, rotation_rate: float
) -> np.ndarray:
    """Geopotential (m2 s-2, zero area mean) in gradient-wind balance with zonal ``wind``.

    ``dPhi/dlat = -(a f u + u^2 tan(lat))``, integrated on a fine grid from the
    north pole and interpolated to ``latitude_rad`` (Holton, sect. 3.2).
    """
    fine = np.linspace(np.pi / 2, -np.pi / 2, 4001)
    u = np.interp(fine[::-1], latitude_rad[::-1], wind[::-1])[::-1]
    f = 2.0 * rotation_rate * np.sin(fine)
    dphi = -(EARTH_RADIUS_M * f * u + u**2 * np.tan(np.clip(fine, -1.5707, 1.5707)))
    steps = np.diff(fine)
    phi = np.concatenate(([0.0], np.cumsum(0.5 * (dphi[1:] + dphi[:-1]) * steps)))
    phi -= np.trapezoid(phi * np.cos(fine), fine) / np.trapezoid(np.cos(fine), fine)
    return np.interp(latitude_rad[::-1], fine[::-1], phi[::-1])[::-1]


def _equilibrium_interface_pressure(
    config: SimulatorConfig, geometry: LayerGeometry, lat: np.ndarray, rotation_rate: float
) -> np.ndarray:
    """``(K + 1, H)`` radiative-equilibrium pressure of the layer interfaces (Pa)."""
    z_int = geometry.interface_km
    t_int = reference_temperature(z_int)
    anomaly = equilibrium_temperature_anomaly(lat, z_int, config.solstice_temperature_contrast_k)
    p_eq = geometry.interface_pressure[:, None] * np.exp(anomaly / (KAPPA * t_int[:, None]))
    p_eq[-1] = geometry.top_pressure
    # The bottom is not an isentrope: its equilibrium pressure is the one whose
    # Montgomery potential balances the lower-boundary jets (gradient wind).
    jet_phi = balanced_geopotential(lat, bottom_jet(lat, config.bottom_jet_m_s), rotation_rate)
    p_s = geometry.interface_pressure[0]
    exner_s = exner(p_s)
    p_eq[0] = p_s * np.clip(1.0 + jet_phi / (geometry.theta[0] * exner_s), 0.5, 1.5) ** (
        1.0 / KAPPA
    )
    return p_eq


def _equilibrium_layer_density(
    p_eq: np.ndarray, geometry: LayerGeometry, weights: np.ndarray
) -> np.ndarray:
    """``(K, H)`` equilibrium pseudo-density, rescaled so each layer keeps its reference mass."""
    sigma_eq = (p_eq[:-1] - p_eq[1:]) / GRAVITY  # (K, H)
    layer_mass = (sigma_eq * weights).sum(1)
    sigma_eq *= (geometry.sigma / layer_mass)[:, None]
    return sigma_eq


def _zonal_pattern(
    envelope: np.ndarray, wavenumber: int, lon: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(H, W)`` cosine and sine patterns of zonal ``wavenumber`` under a latitude ``envelope``."""
    cos_p = envelope[:, None] * np.cos(wavenumber * lon[None, :])
    sin_p = envelope[:, None] * np.sin(wavenumber * lon[None, :])
    return cos_p, sin_p


def _planetary_wave_terms(
    wave: PlanetaryWave, lat: np.ndarray, lon: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """``(cos pattern, sin pattern, omega, phase)`` of one planetary wave at the lower boundary."""
    envelope = (
        GRAVITY
        * wave.amplitude_m
        * np.exp(-(((np.rad2deg(lat) - wave.center_latitude) / wave.width_deg) ** 2))
    )
    omega = (
        0.0 if wave.period_days is None else 2.0 * math.pi / (wave.period_days * SECONDS_PER_DAY)
    )
    phase = np.deg2rad(wave.phase_deg)
    # westward: phase = s*lon + omega*t + phase0
    cos_p, sin_p = _zonal_pattern(envelope, wave.zonal_wavenumber, lon)
    return cos_p, sin_p, omega, phase


def _tide_boundary_terms(
    tide: TidalForcing, lat: np.ndarray, lon: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """``(cos pattern, sin pattern, omega, phase)`` of one migrating tide at the lower boundary."""
    n = tide.harmonic
    envelope = GRAVITY * tide.boundary_amplitude_m * np.cos(lat) ** n
    cos_p, sin_p = _zonal_pattern(envelope, n, lon)
    # hour angle n * (Omega_sun t + lon - pi): the same form as a westward wave
    return cos_p, sin_p, n * SOLAR_DAY_RATE, -n * math.pi


def _heating_flux_amplitude(tide: TidalForcing, geometry: LayerGeometry) -> np.ndarray:
    """``(K-1,)`` diabatic mass flux (kg m-2 s-1) across the inner interfaces per unit pattern."""
    K = geometry.theta.size
    inner = slice(1, K)
    z_int = geometry.interface_km
    t_int = reference_temperature(z_int)
    coeff = geometry.interface_pressure[inner] / (GRAVITY * KAPPA * t_int[inner])  # (K-1,)
    rate = tide.heating_k_per_day / SECONDS_PER_DAY
    growth = np.exp((z_int[inner] - 80.0) / tide.growth_km)
    return coeff * rate * growth


def _heating_mass_tendency(flux_amp: np.ndarray, pattern: np.ndarray, layers: int) -> np.ndarray:
    """``(K, H, W)`` layer-mass tendency of a diabatic flux ``flux_amp * pattern`` across interfaces."""
    flux = np.zeros((layers + 1, *pattern.shape))
    flux[1:layers] = flux_amp[:, None, None] * pattern[None]
    return flux[:-1] - flux[1:]  # mass in from below minus mass out above


def _damping_rates(config: SimulatorConfig, layer_km: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(K,)`` Rayleigh (with top sponge) and radiative relaxation rates of each layer (s-1)."""
    sponge_start = config.top_km - 10.0
    depth = max(layer_km[-1] - sponge_start, 1e-9)
    sponge = np.clip((layer_km - sponge_start) / depth, 0.0, 1.0) ** 2
    growth = np.exp((layer_km - config.bottom_km) / config.damping_scale_km)
    rate = growth / (config.rayleigh_timescale_days * SECONDS_PER_DAY) + sponge / (
        config.sponge_timescale_days * SECONDS_PER_DAY
    )
    relax = growth / (config.radiative_timescale_days * SECONDS_PER_DAY)
    return rate, relax


def _noise_spectrum(
    config: SimulatorConfig, degree: torch.Tensor, triangle: torch.Tensor
) -> torch.Tensor:
    """``(l, m)`` amplitude of the stochastic forcing per spectral coefficient."""
    allowed = triangle & (degree >= config.gravity_wave_min_wavenumber)
    # Wind variance per mode ~ |coefficient|^2 / (l (l + 1)); coefficients
    # ~ sqrt(l (l + 1)) l^(-2) give a wind variance per degree ~ l^(-3): at
    # T21 the forced scales (>= 2000 km) are the synoptic end of the
    # spectrum, which falls as l^-3 (Nastrom & Gage 1985); gravity waves
    # themselves are sub-grid and enter only through this forcing and drag.
    return torch.where(
        allowed,
        (degree * (degree + 1)).clamp(min=1.0).sqrt() * degree.clamp(min=1.0) ** (-2.0),
        0.0,
    )


def _noise_vertical_factor(config: SimulatorConfig, layer_km: np.ndarray) -> np.ndarray:
    """``(K, K)`` Cholesky factor of the vertical noise correlation, scaled by amplitude per layer."""
    K = layer_km.size
    z_rel = np.minimum(layer_km, config.gravity_wave_saturation_km) - 80.0
    amplitude = np.exp(z_rel / (2.0 * SCALE_HEIGHT_KM))
    corr = np.exp(
        -np.abs(layer_km[:, None] - layer_km[None, :]) / config.gravity_wave_vertical_scale_km
    )
    return np.linalg.cholesky(corr + 1e-10 * np.eye(K)) * amplitude[:, None]


def _hyperdiffusion_factor(
    config: SimulatorConfig, degree: torch.Tensor, truncation: int
) -> torch.Tensor:
    """``(l, m)`` del^8 hyperdiffusion damping factor of one time step, for each ``degree``."""
    T = truncation
    scaled = (degree * (degree + 1) / (T * (T + 1))) ** 4
    tau = config.hyperdiffusion_timescale_hours * 3600.0
    return (
        torch.exp(-config.time_step / tau * scaled)
        if math.isfinite(tau)
        else torch.ones_like(scaled)
    )


class Forcing:
    """Deterministic forcing patterns plus the stochastic small-scale forcing.

    Args:
        config: model parameters.
        transforms: spectral transforms of the model grid.
        geometry: reference layers.
        rotation_rate: planetary rotation (rad s-1).
        seed: seeds the stochastic forcing (a CPU ``torch.Generator``, so runs are
            identical on any device).
    """

    def __init__(
        self,
        config: SimulatorConfig,
        transforms: SpectralTransforms,
        geometry: LayerGeometry,
        rotation_rate: float,
        seed: int,
    ) -> None:
        self.config = config
        self.tr = transforms
        self.geometry = geometry
        lat = transforms.latitude.cpu().numpy().astype(np.float64)
        lon = transforms.longitude.cpu().numpy().astype(np.float64)
        self._init_equilibrium(lat, lon, rotation_rate)
        self._init_boundary_waves(lat, lon)
        self._init_heating(lat, lon)
        self._init_damping()
        self._init_stochastic(seed)
        self._init_hyperdiffusion()

    # ------------------------------------------------------------------ set-up
    def _grid(self, a: np.ndarray) -> torch.Tensor:
        """A grid-point array as a tensor of the model's device and dtype."""
        return torch.as_tensor(np.ascontiguousarray(a), dtype=self.tr.dtype, device=self.tr.device)

    def _init_equilibrium(self, lat: np.ndarray, lon: np.ndarray, rotation_rate: float) -> None:
        """Spectral reference and radiative-equilibrium pseudo-density of the layers."""
        geometry, transforms = self.geometry, self.tr
        p_eq = _equilibrium_interface_pressure(self.config, geometry, lat, rotation_rate)
        weights = transforms.area_weights[:, 0].cpu().numpy() * len(lon)
        sigma_eq = _equilibrium_layer_density(p_eq, geometry, weights)
        sigma_eq_grid = np.repeat(sigma_eq[:, :, None], len(lon), axis=2)
        self.sigma_reference = transforms.to_spectral(
            self._grid(
                np.repeat(np.repeat(geometry.sigma[:, None, None], len(lat), 1), len(lon), 2)
            )
        )
        self.sigma_equilibrium_anomaly = (
            transforms.to_spectral(self._grid(sigma_eq_grid)) - self.sigma_reference
        )
        """``(K, l, m)`` equilibrium minus reference pseudo-density."""

    def _init_boundary_waves(self, lat: np.ndarray, lon: np.ndarray) -> None:
        """Lower boundary: planetary waves and tides from below."""
        config = self.config
        self.boundary_base = self._grid(
            np.full((len(lat), len(lon)), GRAVITY * config.bottom_km * 1e3)
        )
        terms = [_planetary_wave_terms(w, lat, lon) for w in config.planetary_waves]
        terms += [_tide_boundary_terms(tide, lat, lon) for tide in config.tides]
        self._waves: list[tuple[torch.Tensor, torch.Tensor, float, float]] = [
            (self._grid(cos_p), self._grid(sin_p), omega, phase)
            for cos_p, sin_p, omega, phase in terms
        ]

    def _init_heating(self, lat: np.ndarray, lon: np.ndarray) -> None:
        """Sun-synchronous heating as spectral layer-mass tendencies (diabatic mass flux)."""
        self._heating: list[tuple[torch.Tensor, torch.Tensor, int]] = []
        K = self.geometry.theta.size
        if K <= 1:
            return
        for tide in self.config.tides:
            n = tide.harmonic
            flux_amp = _heating_flux_amplitude(tide, self.geometry)
            patterns = []
            for trig in (np.cos, np.sin):
                pattern = (np.cos(lat) ** n)[:, None] * trig(n * lon[None, :])
                d_sigma = _heating_mass_tendency(flux_amp, pattern, K)
                patterns.append(self.tr.to_spectral(self._grid(d_sigma)))
            self._heating.append((patterns[0], patterns[1], n))

    def _init_damping(self) -> None:
        """Rayleigh friction (with the top sponge) and radiative relaxation rates."""
        dev, dtype = self.tr.device, self.tr.dtype
        rate, relax = _damping_rates(self.config, self.geometry.layer_km)
        self.rayleigh_rate = torch.as_tensor(rate, dtype=dtype, device=dev)[:, None, None]
        """``(K, 1, 1)`` momentum damping rate of each layer (s-1)."""
        self.relaxation_rate = torch.as_tensor(relax, dtype=dtype, device=dev)[:, None, None]
        """``(K, 1, 1)`` radiative relaxation rate of each layer (s-1)."""

    def _init_stochastic(self, seed: int) -> None:
        """Stochastic small-scale forcing: generator, spectrum, calibration and first draw."""
        config, layer_km = self.config, self.geometry.layer_km
        self._generator = torch.Generator(device="cpu").manual_seed(int(seed))
        degree = self.tr.degree.cpu().to(torch.float64)
        shape = _noise_spectrum(config, degree, self.tr.triangle.cpu())
        self._vertical = torch.as_tensor(
            _noise_vertical_factor(config, layer_km), dtype=torch.float64
        )
        self._shape = shape
        self._mask_m0 = torch.arange(shape.shape[1])[None, :] == 0
        target = config.gravity_wave_forcing_m_s_per_hour / 3600.0
        self._noise_scale = 0.0
        if target > 0:
            calib = torch.Generator(device="cpu").manual_seed(20240101)
            rms = self._calibration_rms(calib, layer_km)
            self._noise_scale = target / rms
        self._correlation = math.exp(
            -config.time_step / (config.gravity_wave_correlation_hours * 3600.0)
        )
        self._noise = self._draw() * self._noise_scale if self._noise_scale > 0 else None

    def _init_hyperdiffusion(self) -> None:
        """The del^8 hyperdiffusion factor of one time step."""
        degree = self.tr.degree.cpu().to(torch.float64)
        factor = _hyperdiffusion_factor(self.config, degree, self.tr.truncation)
        self.hyperdiffusion = factor.to(device=self.tr.device, dtype=self.tr.dtype)
        """``(l, m)`` damping factor applied once per time step."""

    # ------------------------------------------------------------------ stochastic part
    def _draw(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(K, 2, l, m)`` complex unit noise, vertically correlated, on the CPU.

        Drawn from the run's generator unless another is given (calibration).
        """
        generator = generator or self._generator
        K = self._vertical.shape[0]
        n = self._shape.shape[0]
        real = torch.randn((K, 2, n, n), generator=generator, dtype=torch.float64)
        imag = torch.randn((K, 2, n, n), generator=generator, dtype=torch.float64)
        imag = torch.where(self._mask_m0, 0.0, imag)  # m = 0 coefficients of a real field are real
        xi = torch.complex(real, imag) * (self._shape / math.sqrt(2.0))
        return torch.einsum("kj,j...->k...", self._vertical.to(xi.dtype), xi)

    def _calibration_rms(self, generator: torch.Generator, layer_km: np.ndarray) -> float:
        """RMS wind of unit noise at the layer nearest 80 km (8 draws of ``generator``)."""
        level = int(np.argmin(np.abs(layer_km - 80.0)))
        draws = torch.stack([self._draw(generator)[level] for _ in range(8)])
        coeffs = draws.to(
            device=self.tr.device,
            dtype=torch.complex128 if self.tr.dtype == torch.float64 else torch.complex64,
        )
        wind = self.tr.winds(coeffs)
        return float(wind.pow(2).sum(1).mean().sqrt())

    def advance_noise(self) -> None:
        """Move the AR(1) small-scale forcing forward by one time step."""
        if self._noise is None:
            return
        rho = self._correlation
        self._noise = rho * self._noise + math.sqrt(1.0 - rho**2) * self._noise_scale * self._draw()

    # ------------------------------------------------------------------ evaluation
    def surface_geopotential(self, time_seconds: float) -> torch.Tensor:
        """Lower-boundary geopotential ``(H, W)`` at a time (m2 s-2)."""
        r = ramp(time_seconds, self.config.ramp_days)
        phi = self.boundary_base
        for cos_p, sin_p, omega, phase in self._waves:
            angle = omega * time_seconds + phase
            # cos(s lon + angle) = cos(s lon) cos(angle) - sin(s lon) sin(angle)
            phi = phi + r * (math.cos(angle) * cos_p - math.sin(angle) * sin_p)
        return phi

    def tendency(self, state: torch.Tensor, time_seconds: float) -> torch.Tensor:
        """Forcing and linear damping tendency ``(K, 3, l, m)`` of a spectral state."""
        r = ramp(time_seconds, self.config.ramp_days)
        out = torch.zeros_like(state)
        target = self.sigma_reference + r * self.sigma_equilibrium_anomaly
        out[:, 0] = -self.relaxation_rate * (state[:, 0] - target)
        for cos_s, sin_s, n in self._heating:
            angle = n * (SOLAR_DAY_RATE * time_seconds - math.pi)
            out[:, 0] += r * (math.cos(angle) * cos_s - math.sin(angle) * sin_s)
        out[:, 1:3] = -self.rayleigh_rate[:, None] * state[:, 1:3]
        if self._noise is not None:
            out[:, 1:3] += r * self._noise.to(device=state.device, dtype=state.dtype)
        return out
