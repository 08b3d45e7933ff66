"""Adiabatic dynamics of stacked isentropic layers on the sphere.

Each layer k (k = 0 at the bottom) has a fixed potential temperature
``theta_k`` and carries pseudo-density ``sigma_k = dp_k / g``, vorticity
``zeta_k`` and divergence ``delta_k``. The layers interact only through
hydrostatic pressure, via the Montgomery potential ``M = c_p T + Phi``:

    p_{k}    = p_top + g sum_{j >= k} sigma_j          (interface k below layer k)
    M_0      = Phi_s + theta_0 Pi(p_0)                  (rigid lower boundary)
    M_k      = M_{k-1} + Pi(p_k) (theta_k - theta_{k-1})

    d sigma_k / dt = -div(sigma_k u_k)
    d zeta_k  / dt = -div((zeta_k + f) u_k)
    d delta_k / dt =  curl((zeta_k + f) u_k) - lap(M_k + |u_k|^2 / 2)

with ``Pi(p) = c_p (p / p0)^kappa``. These are the hydrostatic primitive
equations in isentropic coordinates, discretised in the vertical by layers of
constant theta (Hsu & Arakawa 1990, Mon. Wea. Rev. 118; Vallis 2017,
"Atmospheric and Oceanic Fluid Dynamics", sect. 3.10), and in the horizontal by
the spectral transform method in vorticity-divergence form (as torch-harmonics'
``ShallowWaterSolver``, of which this is the multi-layer, compressible
generalisation). The top is a surface of constant pressure ``p_top``; the
bottom is a material surface of prescribed geopotential ``Phi_s`` (constant
plus the planetary waves and tides arriving from below).

Total energy (J m-2, area mean), conserved without forcing and dissipation:

    E = <sum_k sigma_k (|u_k|^2 / 2 + theta_k Pi_k)> + <Phi_s p_s / g>

where ``Pi_k`` is the mass-weighted mean Exner function of layer k, so that
``theta_k Pi_k = c_p T_k``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genda.constants import DRY_AIR_CP, GRAVITY, KAPPA, REFERENCE_PRESSURE_PA
from genda.simulator.reference import LayerGeometry, exner, layer_mean_exner
from genda.simulator.spectral import SpectralTransforms


@dataclass
class GridState:
    """Grid-point diagnostics of a spectral state (each ``(K, H, W)`` unless noted).

    Attributes:
        sigma: pseudo-density (kg m-2).
        wind: ``(K, 2, H, W)`` eastward and northward wind (m s-1).
        vorticity: relative vorticity (s-1).
        interface_pressure: ``(K + 1, H, W)`` pressure at the bottom of each layer and the top (Pa).
        montgomery: Montgomery potential (J kg-1).
        temperature: layer temperature (K).
        layer_pressure: pressure of the layer's mean Exner function (Pa).
    """

    sigma: torch.Tensor
    wind: torch.Tensor
    vorticity: torch.Tensor
    interface_pressure: torch.Tensor
    montgomery: torch.Tensor
    temperature: torch.Tensor
    layer_pressure: torch.Tensor


class IsentropicLayers:
    """Right-hand side and diagnostics of the adiabatic equations above.

    The prognostic state is spectral, ``(K, 3, T+1, T+1)`` complex, with
    components (sigma, vorticity, divergence) of each layer.
    """

    def __init__(
        self,
        transforms: SpectralTransforms,
        geometry: LayerGeometry,
        rotation_rate: float,
        gravity: float = GRAVITY,
    ) -> None:
        self.transforms = transforms
        self.geometry = geometry
        self.gravity = gravity
        dev, dt = transforms.device, transforms.dtype
        self.theta = torch.as_tensor(geometry.theta, device=dev, dtype=dt)
        self.top_pressure = geometry.top_pressure
        self.coriolis = (2.0 * rotation_rate * torch.sin(transforms.latitude))[:, None]
        """``(H, 1)`` Coriolis parameter (s-1)."""

    @property
    def layers(self) -> int:
        return int(self.theta.numel())

    # ------------------------------------------------------------------ diagnostics
    def interface_pressure(self, sigma: torch.Tensor) -> torch.Tensor:
        """``(K, H, W)`` pseudo-density -> ``(K + 1, H, W)`` interface pressures, bottom first."""
        above = torch.flip(torch.cumsum(torch.flip(sigma, (0,)), 0), (0,))
        top = torch.zeros_like(sigma[:1])
        return self.top_pressure + self.gravity * torch.cat((above, top), 0)

    def montgomery(self, p_int: torch.Tensor, surface_geopotential: torch.Tensor) -> torch.Tensor:
        """``(K, H, W)`` Montgomery potential from interface pressures (hydrostatic)."""
        pi = exner(p_int[:-1])  # Exner at the bottom of each layer
        base = surface_geopotential + self.theta[0] * pi[0]
        increments = pi[1:] * (self.theta[1:] - self.theta[:-1])[:, None, None]
        return torch.cat((base[None], base[None] + torch.cumsum(increments, 0)), 0)

    def layer_exner(self, p_int: torch.Tensor) -> torch.Tensor:
        """``(K, H, W)`` mass-weighted mean Exner function of each layer."""
        return layer_mean_exner(p_int[:-1], p_int[1:])

    def diagnose(self, state: torch.Tensor, surface_geopotential: torch.Tensor) -> GridState:
        """Spectral state ``(K, 3, T+1, T+1)`` -> :class:`GridState`."""
        tr = self.transforms
        # one batched call per transform: at these sizes their cost is per call
        sigma, vorticity = tr.to_grid(state[:, 0:2]).unbind(1)
        wind = tr.winds(state[:, 1:3])
        p_int = self.interface_pressure(sigma)
        montgomery = self.montgomery(p_int, surface_geopotential)
        mean_exner = self.layer_exner(p_int)
        temperature = self.theta[:, None, None] * mean_exner / DRY_AIR_CP
        layer_pressure = REFERENCE_PRESSURE_PA * (mean_exner / DRY_AIR_CP) ** (1.0 / KAPPA)
        return GridState(sigma, wind, vorticity, p_int, montgomery, temperature, layer_pressure)

    # ------------------------------------------------------------------ dynamics
    def tendency(self, state: torch.Tensor, surface_geopotential: torch.Tensor) -> torch.Tensor:
        """Adiabatic tendency ``(K, 3, T+1, T+1)`` of a spectral state.

        ``surface_geopotential`` is the lower-boundary geopotential on the grid ``(H, W)``.
        """
        tr = self.transforms
        g = self.diagnose(state, surface_geopotential)
        absolute_vorticity = g.vorticity + self.coriolis
        fluxes = g.wind[:, None] * torch.stack((absolute_vorticity, g.sigma), 1)[:, :, None]
        K = fluxes.shape[0]
        # a single leading batch axis keeps torch-harmonics' einsum on its fast path
        curl_div = tr.vorticity_divergence(fluxes.reshape(2 * K, *fluxes.shape[2:])).reshape(
            K, 2, 2, *self.transforms.laplacian.shape
        )  # (K, flux: vorticity/mass, curl/div, l, m)
        bernoulli = tr.to_spectral(g.montgomery + 0.5 * (g.wind**2).sum(1))
        d_sigma = -curl_div[:, 1, 1]
        d_vort = -curl_div[:, 0, 1]
        d_div = curl_div[:, 0, 0] - tr.laplacian * bernoulli
        return torch.stack((d_sigma, d_vort, d_div), 1)

    # ------------------------------------------------------------------ invariants
    def layer_mass(self, state: torch.Tensor) -> torch.Tensor:
        """``(K,)`` area-mean pseudo-density of each layer (kg m-2), from the grid."""
        return self.transforms.area_mean(self.transforms.to_grid(state[:, 0]))

    def total_energy(self, state: torch.Tensor, surface_geopotential: torch.Tensor) -> torch.Tensor:
        """Area-mean total energy (J m-2): kinetic + enthalpy + lower-boundary potential."""
        g = self.diagnose(state, surface_geopotential)
        kinetic = 0.5 * g.sigma * (g.wind**2).sum(1)
        enthalpy = g.sigma * DRY_AIR_CP * g.temperature
        boundary = surface_geopotential * g.interface_pressure[0] / self.gravity
        return self.transforms.area_mean(kinetic.sum(0) + enthalpy.sum(0) + boundary)

    def kinetic_energy(
        self, state: torch.Tensor, surface_geopotential: torch.Tensor
    ) -> torch.Tensor:
        """Area-mean kinetic energy (J m-2)."""
        g = self.diagnose(state, surface_geopotential)
        return self.transforms.area_mean((0.5 * g.sigma * (g.wind**2).sum(1)).sum(0))
