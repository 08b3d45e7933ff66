"""Parameters of the built-in MLT model (see docs/simulator.md for their meaning)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from genda.devices import check_device
from genda.errors import InvalidValueError


@dataclass(frozen=True)
class PlanetaryWave:
    """A planetary wave imposed as a geopotential perturbation at the lower boundary.

    ``period_days`` is ``None`` for a stationary wave; a positive period means
    westward propagation (the quasi-2-day and 5-day normal modes are westward).
    The meridional envelope is a Gaussian in latitude.
    """

    zonal_wavenumber: int
    amplitude_m: float
    center_latitude: float
    width_deg: float
    period_days: float | None = None
    phase_deg: float = 0.0


@dataclass(frozen=True)
class TidalForcing:
    """Migrating (sun-synchronous) tide of harmonic ``n`` (1 diurnal, 2 semidiurnal).

    Two sources: a lower-boundary geopotential wave (the tide propagating up
    from the stratosphere and troposphere) and an in-situ heating that follows
    the sun, whose rate grows with altitude as ``exp((z* - 80 km) / growth_km)``.
    """

    harmonic: int
    boundary_amplitude_m: float
    heating_k_per_day: float
    growth_km: float = 20.0


@dataclass(frozen=True)
class SimulatorConfig:
    """Everything that defines a run of the model except its seed and length.

    Grid: ``nlat x nlon`` Gauss-Legendre points (triangular truncation at
    ``(nlon - 1) // 3``, the 2/3 rule), ``layers`` isentropic layers between
    log-pressure altitudes ``bottom_km`` and ``top_km``; output on ``levels``
    altitudes between ``output_bottom_km`` and ``output_top_km``.
    """

    nlat: int = 32
    nlon: int = 64
    layers: int = 8
    levels: int = 8
    output_bottom_km: float = 80.0
    output_top_km: float = 115.0
    bottom_km: float = 70.0
    top_km: float = 125.0
    dt_seconds: float | None = None
    """Time step; ``None`` picks a stable one from the resolution."""

    # Forcing and dissipation -----------------------------------------------------
    radiative_timescale_days: float = 5.0
    """Newtonian relaxation of the mass field towards radiative equilibrium, at the bottom."""
    solstice_temperature_contrast_k: float = 60.0
    """Winter-minus-summer pole contrast of the equilibrium temperature at the mesopause."""
    bottom_jet_m_s: float = 45.0
    """Peak of the winter westerly / summer easterly jets that the equilibrium
    surface-pressure pattern at the bottom supports (gradient-wind balance)."""
    rayleigh_timescale_days: float = 10.0
    """Momentum damping at the bottom (a stand-in for gravity-wave drag and ion drag)."""
    damping_scale_km: float = 20.0
    """Rayleigh and radiative damping rates grow with altitude as exp((z - bottom) / scale)."""
    sponge_timescale_days: float = 0.5
    """Momentum damping time in the top layer; the sponge spans the top 10 km."""
    hyperdiffusion_timescale_hours: float = 3.0
    """e-folding time of del^8 hyperdiffusion at the truncation wavenumber."""
    planetary_waves: tuple[PlanetaryWave, ...] = (
        PlanetaryWave(1, 200.0, 60.0, 15.0, None, 0.0),  # stationary wave 1, winter hemisphere
        PlanetaryWave(3, 60.0, -30.0, 15.0, 2.1, 0.0),  # quasi-2-day wave, summer hemisphere
        PlanetaryWave(1, 40.0, 0.0, 35.0, 5.0, 90.0),  # 5-day wave
    )
    tides: tuple[TidalForcing, ...] = (
        TidalForcing(1, 400.0, 20.0),
        TidalForcing(2, 40.0, 3.0),
    )
    gravity_wave_forcing_m_s_per_hour: float = 1.0
    """RMS wind tendency of the stochastic small-scale forcing at 80 km."""
    gravity_wave_correlation_hours: float = 3.0
    gravity_wave_vertical_scale_km: float = 10.0
    gravity_wave_min_wavenumber: int = 6
    gravity_wave_saturation_km: float = 95.0
    """The stochastic forcing grows as exp(z / 2H) up to this altitude and is constant above."""
    min_layer_fraction: float = 0.2
    """Layers thinner than this fraction of their reference mass are refilled from
    their neighbours (convective adjustment, :mod:`genda.simulator.adjustment`)."""
    ramp_days: float = 5.0
    """Forcing switches on smoothly over this time from a state of rest."""

    # Numerics --------------------------------------------------------------------
    dtype: str = "float64"
    device: str = "cpu"
    cpu_threads: int | None = 1
    """Intra-op threads while stepping on the CPU (``None``: leave torch's setting).
    The transforms are many small batched matrix products: one thread is
    fastest, and several processes sharing the cores do not oversubscribe."""

    def __post_init__(self) -> None:
        if not 1 <= self.layers <= 64:
            raise InvalidValueError(f"layers must be between 1 and 64, got {self.layers}")
        if self.nlat < 8 or self.nlon < 2 * self.nlat - 1:
            raise InvalidValueError(
                f"grid {self.nlat}x{self.nlon} too small or not ~1:2 (nlon >= 2 nlat - 1)"
            )
        if not self.bottom_km < self.output_bottom_km <= self.output_top_km < self.top_km:
            raise InvalidValueError(
                "output levels must lie strictly inside the model layers: "
                f"{self.bottom_km} < {self.output_bottom_km} <= {self.output_top_km} < {self.top_km}"
            )
        if self.dtype not in ("float32", "float64"):
            raise InvalidValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        check_device(self.device)  # a sentence now, not a CUDA traceback at the first step

    @property
    def truncation(self) -> int:
        """Triangular truncation T (number of total wavenumbers kept is T + 1)."""
        return (self.nlon - 1) // 3

    @property
    def time_step(self) -> float:
        """Seconds per step: about 1200 s at T21, shorter in proportion at higher
        resolution, rounded down to a whole fraction of an hour (hourly output)."""
        if self.dt_seconds is not None:
            return float(self.dt_seconds)
        target = 1200.0 * 21.0 / self.truncation
        return 3600.0 / math.ceil(3600.0 / target)

    def unforced(self) -> SimulatorConfig:
        """The same model with every forcing and every dissipation switched off."""
        return dataclasses.replace(
            self,
            radiative_timescale_days=float("inf"),
            rayleigh_timescale_days=float("inf"),
            sponge_timescale_days=float("inf"),
            hyperdiffusion_timescale_hours=float("inf"),
            planetary_waves=(),
            tides=(),
            gravity_wave_forcing_m_s_per_hour=0.0,
            bottom_jet_m_s=0.0,
            min_layer_fraction=0.0,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimulatorConfig:
        data = dict(data)
        data["planetary_waves"] = tuple(PlanetaryWave(**w) for w in data.get("planetary_waves", ()))
        data["tides"] = tuple(TidalForcing(**t) for t in data.get("tides", ()))
        return cls(**data)
