"""The built-in MLT model: time stepping and output on altitude levels.

A stand-in for UA-ICON / HIAMCM output of the mesosphere and lower
thermosphere: stacked isentropic layers (:mod:`genda.simulator.dynamics`)
forced as in :mod:`genda.simulator.forcing`, stepped with the classical
fourth-order Runge-Kutta scheme, hyperdiffusion applied once per step, and
interpolated linearly in log-pressure altitude to fixed output levels. The
geopotential height of each output level comes from the model's own hydrostatic
diagnosis (:func:`level_geopotential`). See docs/simulator.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from genda.constants import (
    EARTH_ROTATION_RATE,
    REFERENCE_PRESSURE_PA,
    SCALE_HEIGHT_KM,
    SECONDS_PER_DAY,
    STANDARD_GRAVITY,
)
from genda.errors import GendaError, InvalidValueError
from genda.grid import Grid, default_altitudes
from genda.simulator.adjustment import thickness_adjustment
from genda.simulator.config import SimulatorConfig
from genda.simulator.dynamics import GridState, IsentropicLayers
from genda.simulator.forcing import Forcing
from genda.simulator.reference import exner, layer_geometry
from genda.simulator.spectral import SpectralTransforms
from genda.threads import cpu_threads

START_TIME = np.datetime64("2000-01-01T00:00:00", "ns")
"""Model time zero (perpetual northern-winter solstice; midnight UTC)."""


class SimulationError(GendaError, RuntimeError):
    """The model state became unphysical (NaN, vanishing layer)."""


@dataclass(frozen=True)
class Snapshot:
    """One output time on :attr:`Simulator.output_grid`.

    Attributes:
        time: the model time.
        fields: ``(V, L, H, W)`` the grid's variables (u, v, T).
        geopotential_height: ``(L, H, W)`` geopotential height of each output level (m,
            geopotential / g0), or ``None`` (snapshots not made by the model). It is no
            state variable: archives store it beside the fields (``zg``).
    """

    time: np.datetime64
    fields: torch.Tensor
    geopotential_height: torch.Tensor | None = None


def interpolate_to_levels(
    values: torch.Tensor, layer_km: torch.Tensor, levels_km: torch.Tensor
) -> torch.Tensor:
    """Linear interpolation in altitude of layer values to fixed levels, column by column.

    Args:
        values: ``(C, K, H, W)`` values at the layers (C fields).
        layer_km: ``(K, H, W)`` altitude of each layer, increasing with K.
        levels_km: ``(L,)`` target altitudes.

    Returns:
        ``(C, L, H, W)``; levels outside a column's layer range take the end value.
    """
    K, H, W = layer_km.shape
    columns = layer_km.permute(1, 2, 0).reshape(-1, K).contiguous()  # (H*W, K)
    targets = levels_km.to(columns.dtype).expand(columns.shape[0], -1).contiguous()
    upper = (
        torch.searchsorted(columns, targets).clamp(1, K - 1)
        if K > 1
        else torch.zeros_like(targets, dtype=torch.long)
    )
    lower = (upper - 1).clamp(min=0)
    z_lo, z_hi = columns.gather(1, lower), columns.gather(1, upper)
    weight = (
        ((targets - z_lo) / (z_hi - z_lo).clamp(min=1e-9)).clamp(0.0, 1.0)
        if K > 1
        else torch.zeros_like(targets)
    )
    flat = values.permute(0, 2, 3, 1).reshape(values.shape[0], -1, K)
    idx_lo = lower.expand(values.shape[0], -1, -1)
    idx_hi = upper.expand(values.shape[0], -1, -1)
    out = flat.gather(2, idx_lo) * (1 - weight) + flat.gather(2, idx_hi) * weight
    return out.reshape(values.shape[0], H, W, -1).permute(0, 3, 1, 2)


def level_geopotential(
    interface_pressure: torch.Tensor,
    montgomery: torch.Tensor,
    theta: torch.Tensor,
    level_pressure: torch.Tensor,
) -> torch.Tensor:
    """Geopotential (m2 s-2) at fixed pressures, from the model's hydrostatic diagnosis.

    Inside isentropic layer ``k`` the Montgomery potential ``M = c_p T + Phi`` is
    constant and ``T = theta_k Pi(p) / c_p``, so the geopotential at any pressure
    of the layer is ``Phi(p) = M_k - theta_k Pi(p)`` (hydrostatic balance in
    isentropic coordinates, ``dM/dtheta = Pi``; see :mod:`genda.simulator.dynamics`).
    This is exact within the model's discretisation, continuous across interfaces
    (where ``M`` jumps by ``Pi (theta_k - theta_{k-1})``), and anchored to the
    model's own lower-boundary geopotential through ``M_0``. Linear interpolation
    of the layers' geopotential would instead err where the profile curves.
    A pressure below the bottom interface (above the top) continues the bottom
    (top) layer's adiabatic profile.

    Args:
        interface_pressure: ``(K + 1, H, W)`` interface pressures (Pa), bottom first.
        montgomery: ``(K, H, W)`` Montgomery potential of each layer (J kg-1).
        theta: ``(K,)`` potential temperature of each layer (K).
        level_pressure: ``(L,)`` pressures of the levels (Pa).

    Returns:
        ``(L, H, W)`` geopotential (m2 s-2).
    """
    K = montgomery.shape[0]
    p = level_pressure.to(interface_pressure.dtype)[:, None, None, None]  # (L, 1, 1, 1)
    # layer of each level: how many inner interfaces lie below it (at higher pressure)
    layer = (p < interface_pressure[None, 1:K]).sum(1)  # (L, H, W)
    m = montgomery.gather(0, layer)
    return m - theta.to(montgomery.dtype)[layer] * exner(p[:, 0])


class Simulator:
    """A deterministic run of the built-in model for one seed.

    Example:
        >>> sim = Simulator(SimulatorConfig(), seed=1)
        >>> sim.run_days(30)                      # spin up
        >>> snap = sim.snapshot()                 # (3, 8, 32, 64) u, v, T
    """

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        seed: int = 0,
        rotation_rate: float = EARTH_ROTATION_RATE,
    ) -> None:
        self.config = config or SimulatorConfig()
        self.seed = int(seed)
        cfg = self.config
        dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
        self.transforms = SpectralTransforms(
            cfg.nlat, cfg.nlon, cfg.truncation, device=cfg.device, dtype=dtype
        )
        self.geometry = layer_geometry(cfg.layers, cfg.bottom_km, cfg.top_km)
        self.dynamics = IsentropicLayers(self.transforms, self.geometry, rotation_rate)
        self.forcing = Forcing(cfg, self.transforms, self.geometry, rotation_rate, seed=self.seed)
        self.dt = cfg.time_step
        self.time_seconds = 0.0
        self.steps = 0
        self.adjustments = 0
        """Steps in which a thin layer was refilled (see :mod:`genda.simulator.adjustment`)."""
        self.state = self.rest_state()
        levels = default_altitudes(cfg.levels, cfg.output_bottom_km, cfg.output_top_km)
        self.output_grid = Grid.gaussian(cfg.nlat, cfg.nlon, levels.tolist())
        self._levels = torch.as_tensor(levels, dtype=dtype, device=self.transforms.device)
        self._level_pressure = REFERENCE_PRESSURE_PA * torch.exp(-self._levels / SCALE_HEIGHT_KM)

    # ------------------------------------------------------------------ state
    def rest_state(self) -> torch.Tensor:
        """``(K, 3, l, m)`` resting reference state (flat isentropes, no wind)."""
        state = torch.zeros_like(self.forcing.sigma_reference).unsqueeze(1).repeat(1, 3, 1, 1)
        state[:, 0] = self.forcing.sigma_reference
        return state

    @property
    def time(self) -> np.datetime64:
        return START_TIME + np.timedelta64(round(self.time_seconds), "s")

    def surface_geopotential(self) -> torch.Tensor:
        return self.forcing.surface_geopotential(self.time_seconds)

    def diagnose(self) -> GridState:
        """Grid-point diagnostics of the current state."""
        with cpu_threads(self.config.cpu_threads, self.transforms.device):
            return self.dynamics.diagnose(self.state, self.surface_geopotential())

    # ------------------------------------------------------------------ stepping
    def _rhs(self, state: torch.Tensor, t: float) -> torch.Tensor:
        phi_s = self.forcing.surface_geopotential(t)
        return self.dynamics.tendency(state, phi_s) + self.forcing.tendency(state, t)

    def step(self) -> None:
        """One RK4 step of ``dt`` seconds, then hyperdiffusion and the next noise sample."""
        s, t, dt = self.state, self.time_seconds, self.dt
        k1 = self._rhs(s, t)
        k2 = self._rhs(s + 0.5 * dt * k1, t + 0.5 * dt)
        k3 = self._rhs(s + 0.5 * dt * k2, t + 0.5 * dt)
        k4 = self._rhs(s + dt * k3, t + dt)
        new = s + (dt / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        self.state = new * self.forcing.hyperdiffusion
        if self.config.min_layer_fraction > 0:
            self._adjust_thin_layers()
        self.forcing.advance_noise()
        self.steps += 1
        self.time_seconds = self.steps * dt

    def _adjust_thin_layers(self) -> None:
        sigma = self.transforms.to_grid(self.state[:, 0])
        reference = torch.as_tensor(self.geometry.sigma, dtype=sigma.dtype, device=sigma.device)
        increment = thickness_adjustment(sigma, reference, self.config.min_layer_fraction)
        if increment is not None:
            self.state[:, 0] += self.transforms.to_spectral(increment)
            self.adjustments += 1

    def check(self) -> None:
        """Raise :class:`SimulationError` if the state is not finite or a layer vanished."""
        sigma = self.transforms.to_grid(self.state[:, 0])
        if not bool(torch.isfinite(self.state).all()):
            raise SimulationError(
                f"non-finite state at model day {self.time_seconds / SECONDS_PER_DAY:.2f}"
            )
        thinnest = sigma.amin(dim=(-2, -1)) / torch.as_tensor(
            self.geometry.sigma, dtype=sigma.dtype, device=sigma.device
        )
        if bool((thinnest <= 0.02).any()):
            k = int(torch.argmin(thinnest))
            raise SimulationError(
                f"layer {k} thinned to {float(thinnest[k]):.3f} of its reference mass at model day "
                f"{self.time_seconds / SECONDS_PER_DAY:.2f}; reduce forcing or the time step"
            )

    def advance(self, seconds: float) -> None:
        """Step forward by ``seconds`` (a whole number of steps; checked once per model hour)."""
        n = round(seconds / self.dt)
        if abs(n * self.dt - seconds) > 1e-6 * max(seconds, 1.0):
            raise InvalidValueError(f"{seconds} s is not a whole number of {self.dt} s steps")
        check_every = max(1, round(3600.0 / self.dt))
        with cpu_threads(self.config.cpu_threads, self.transforms.device):
            for i in range(n):
                self.step()
                if (i + 1) % check_every == 0:
                    self.check()
            self.check()

    def run_days(self, days: float) -> None:
        self.advance(days * SECONDS_PER_DAY)

    # ------------------------------------------------------------------ output
    def _fields(self, g: GridState) -> torch.Tensor:
        layer_km = pressure_to_altitude_torch(g.layer_pressure)
        values = torch.stack((g.wind[:, 0], g.wind[:, 1], g.temperature), 0)
        return interpolate_to_levels(values, layer_km, self._levels)

    def _geopotential_height(self, g: GridState) -> torch.Tensor:
        phi = level_geopotential(
            g.interface_pressure, g.montgomery, self.dynamics.theta, self._level_pressure
        )
        return phi / STANDARD_GRAVITY

    def snapshot(self) -> torch.Tensor:
        """``(3, L, H, W)`` u, v, T on the output altitude levels."""
        return self._fields(self.diagnose())

    def geopotential_height(self) -> torch.Tensor:
        """``(L, H, W)`` geopotential height (m) of the output levels: :func:`level_geopotential` / g0.

        The geopotential is the model's own (its lower boundary sits at
        ``Phi_s = g bottom_km`` with the model's ``g`` = 9.5 m s-2, plus the waves
        from below); dividing by the standard gravity g0 = 9.80665 m s-2 makes it
        the geopotential height of the WMO and CF conventions.
        """
        return self._geopotential_height(self.diagnose())

    def snapshots(self, hours: int, every_hours: float = 1.0) -> Iterator[Snapshot]:
        """Yield ``hours / every_hours`` snapshots, one every ``every_hours`` of model time.

        Each carries the fields and the levels' geopotential height (one diagnosis for both).
        """
        count = round(hours / every_hours)
        for _ in range(count):
            self.advance(every_hours * 3600.0)
            g = self.diagnose()
            yield Snapshot(self.time, self._fields(g), self._geopotential_height(g))


def pressure_to_altitude_torch(pressure: torch.Tensor) -> torch.Tensor:
    """Log-pressure altitude (km) of pressures (Pa), on the tensor's device."""
    return SCALE_HEIGHT_KM * torch.log(REFERENCE_PRESSURE_PA / pressure)


__all__ = [
    "START_TIME",
    "SimulationError",
    "Simulator",
    "Snapshot",
    "interpolate_to_levels",
    "level_geopotential",
]
