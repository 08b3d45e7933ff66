"""A cycled ensemble Kalman filter whose forecast model is the built-in model itself.

The classical anchor of a twin experiment: the truth is a run of the
built-in model (:class:`genda.simulator.Simulator`), and so is every member
here, each with its own realisation of the stochastic gravity-wave forcing
(the only model error). Each window the members are

1. **forecast** from the previous analysis to the window's time by the
   model (:meth:`ModelEnsemble.advance`);
2. **observed**: ``H`` of each member's output fields (u, v, T on the output
   levels, :class:`genda.observations.operators.ObservationOperator`);
3. **analysed** in the model's own prognostic variables, the pseudo-density
   ``sigma`` and the winds ``u, v`` of every isentropic layer on the Gauss
   grid: a stochastic EnKF with perturbed observations and Gaspari-Cohn
   localisation of the gain (:func:`genda.assimilation.baselines.localized_update`,
   the same code as the climatological baselines; a layer's distance to an
   observation is taken at its reference altitude), then relaxation to the
   prior spread (RTPS; Whitaker and Hamill 2012) against the collapse of
   spread that sampling error and the missing model error cause;
4. **put back** into the spectral state (``sigma`` transformed, the winds
   as vorticity and divergence), with every layer kept at least
   :attr:`EnkfSettings.min_thickness` of its reference mass.

The initial ensemble is climatological: states of one spun-up run of
another seed, a day apart at the first window's time of day (so that
their tides are in its phase), each given the window's clock.

References:
    Burgers, G., van Leeuwen, P. J. and Evensen, G. (1998), Analysis scheme in
    the ensemble Kalman filter, Mon. Wea. Rev. 126, 1719-1724.
    Houtekamer, P. L. and Mitchell, H. L. (2001), A sequential ensemble Kalman
    filter for atmospheric data assimilation, Mon. Wea. Rev. 129, 123-137.
    Whitaker, J. S. and Hamill, T. M. (2012), Evaluating methods to account for
    system errors in ensemble data assimilation, Mon. Wea. Rev. 140, 3078-3089.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from genda.assimilation.baselines import Localization, localized_update
from genda.errors import InvalidValueError
from genda.grid import Grid
from genda.observations.operators import ObservationOperator
from genda.simulator import START_TIME, Simulator, SimulatorConfig
from genda.threads import cpu_threads

__all__ = [
    "EnkfSettings",
    "LayerLayout",
    "ModelEnsemble",
    "WindowAnalysis",
]

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class EnkfSettings:
    """How the cycled EnKF analyses.

    Attributes:
        members: ensemble size ``K``.
        localization: Gaspari-Cohn half-widths of the gain (horizontal and
            vertical, km; the layers' reference altitudes against the
            observations').
        rtps: relaxation to the prior spread, ``alpha`` in ``[0, 1]``:
            ``x'_a <- x'_a (alpha s_b + (1 - alpha) s_a) / s_a`` per value.
        min_thickness: the least pseudo-density a layer keeps, as a fraction of
            its reference value (an update may not empty a layer).
        spacing_hours: hours between the climatological run's states that
            make the initial ensemble (whole days keep every member at the first
            window's time of day, so that their tides are in its phase).
        seed: the initial ensemble's run is seed ``seed``; member ``k`` forces
            with seed ``seed + 1 + k``; the perturbed observations of a cycle
            come from one generator seeded by ``seed``, window after window.
    """

    members: int = 32
    # tuned on a day of hourly windows of a truth that is not scored
    # (benchmarks/cycled_osse.py --tune; docs/cycles.md)
    localization: Localization = field(default_factory=lambda: Localization(1500.0, 30.0))
    rtps: float = 0.5
    min_thickness: float = 0.1
    spacing_hours: float = 24.0
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.members, bool) or not isinstance(self.members, int) or self.members < 2:
            raise InvalidValueError(f"members must be an integer >= 2, got {self.members!r}")
        if not 0.0 <= self.rtps <= 1.0:
            raise InvalidValueError(f"rtps must lie in [0, 1], got {self.rtps}")
        if not 0.0 < self.min_thickness < 1.0:
            raise InvalidValueError(f"min_thickness must lie in (0, 1), got {self.min_thickness}")
        if not self.spacing_hours > 0:
            raise InvalidValueError(f"spacing_hours must be > 0, got {self.spacing_hours}")


@dataclass(frozen=True)
class LayerLayout:
    """Where the analysed values lie: ``(sigma, u, v) x layers x latitude x longitude``.

    Attributes:
        latitude, longitude: the model's Gauss grid (degrees).
        altitude: ``(K,)`` the layers' reference log-pressure altitudes (km).
    """

    latitude: np.ndarray
    longitude: np.ndarray
    altitude: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (3, self.altitude.size, self.latitude.size, self.longitude.size)


@dataclass(frozen=True)
class WindowAnalysis:
    """What one analysis did (spreads are ensemble standard deviations at the observations).

    Attributes:
        observations: observations assimilated.
        prior_rmse, posterior_rmse: of the ensemble mean's ``H x`` against them.
        prior_spread, posterior_spread: rms of the members' ``H x`` spread.
    """

    observations: int
    prior_rmse: float
    posterior_rmse: float
    prior_spread: float
    posterior_spread: float


class ModelEnsemble:
    """``K`` members of the built-in model on one clock.

    Args:
        members: one :class:`Simulator` per member, same configuration and time.
    """

    def __init__(self, members: Sequence[Simulator]) -> None:
        if len(members) < 2:
            raise InvalidValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        steps = {m.steps for m in members}
        if len(steps) != 1 or len({m.config for m in members}) != 1:
            raise InvalidValueError("the members must share the configuration and the clock")
        self.members = list(members)
        first = self.members[0]
        self.config: SimulatorConfig = first.config
        self.grid: Grid = first.output_grid
        geometry = first.geometry
        self.layout = LayerLayout(
            np.asarray(self.grid.latitude, dtype=np.float64),
            np.asarray(self.grid.longitude, dtype=np.float64),
            0.5 * (geometry.interface_km[:-1] + geometry.interface_km[1:]),
        )
        self._reference_sigma = np.asarray(geometry.sigma, dtype=np.float64)

    # ------------------------------------------------------------------ building
    @classmethod
    def climatological(
        cls,
        config: SimulatorConfig,
        time: np.datetime64,
        settings: EnkfSettings,
        spinup_days: float = 30.0,
    ) -> ModelEnsemble:
        """Members from one run of seed ``settings.seed``, spun up ``spinup_days``, brought
        to ``time``'s time of day and then taken every ``settings.spacing_hours``,
        each set to ``time`` and forced with its own seed."""
        run = Simulator(config, seed=settings.seed)
        run.run_days(spinup_days)
        day = np.timedelta64(86400, "s")
        behind = (np.datetime64(time, "s") - np.datetime64(run.time, "s")) % day
        run.advance(float(behind / np.timedelta64(1, "s")))
        states = []
        for _ in range(settings.members):
            run.advance(settings.spacing_hours * SECONDS_PER_HOUR)
            states.append(run.state.clone())
        return cls.from_states(config, states, time, settings.seed)

    @classmethod
    def from_states(
        cls,
        config: SimulatorConfig,
        states: Sequence[torch.Tensor],
        time: np.datetime64,
        seed: int,
    ) -> ModelEnsemble:
        """Member ``k`` starts from ``states[k]`` (spectral model states) at ``time`` and
        forces with seed ``seed + 1 + k``."""
        members = []
        for k, state in enumerate(states):
            member = Simulator(config, seed=seed + 1 + k)
            member.state = state.clone()
            set_clock(member, time)
            members.append(member)
        return cls(members)

    # ------------------------------------------------------------------ time
    @property
    def time(self) -> np.datetime64:
        return self.members[0].time

    def advance_to(self, time: np.datetime64) -> None:
        """Forecast every member to ``time`` (not before the ensemble's own)."""
        seconds = (np.datetime64(time, "ns") - np.datetime64(self.time, "ns")) / np.timedelta64(
            1, "s"
        )
        if seconds < 0:
            raise InvalidValueError(
                f"the ensemble is at {self.time}; it cannot be forecast back to {time}"
            )
        for member in self.members:
            member.advance(float(seconds))

    # ------------------------------------------------------------------ state
    def fields(self) -> np.ndarray:
        """``(K, 3, L, H, W)`` float32: u, v, T of every member on the output levels."""
        return np.stack([m.snapshot().cpu().numpy() for m in self.members]).astype(np.float32)

    def layer_state(self) -> np.ndarray:
        """``(K, 3, Kl, H, W)`` float64: every member's ``sigma, u, v`` on its layers."""
        values = []
        for member in self.members:
            with cpu_threads(member.config.cpu_threads, member.transforms.device):
                tr = member.transforms
                sigma = tr.to_grid(member.state[:, 0])
                wind = tr.winds(member.state[:, 1:3])  # (Kl, 2, H, W)
            values.append(torch.cat((sigma[None], wind.permute(1, 0, 2, 3)), 0).cpu().numpy())
        return np.stack(values).astype(np.float64)

    def set_layer_state(self, values: np.ndarray, min_thickness: float = 0.0) -> None:
        """Put ``(K, 3, Kl, H, W)`` ``sigma, u, v`` back into the members' spectral states,
        every layer's ``sigma`` at least ``min_thickness`` of its reference value."""
        for member, value in zip(self.members, values, strict=True):
            tr = member.transforms
            v = torch.as_tensor(value, dtype=tr.dtype, device=tr.device)
            floor = torch.as_tensor(
                min_thickness * self._reference_sigma, dtype=tr.dtype, device=tr.device
            )
            sigma = torch.maximum(v[0], floor[:, None, None])
            with cpu_threads(member.config.cpu_threads, tr.device):
                state = member.state.clone()
                state[:, 0] = tr.to_spectral(sigma) * tr.triangle
                state[:, 1:3] = tr.vorticity_divergence(v[1:3].permute(1, 0, 2, 3)) * tr.triangle
            member.state = state

    # ------------------------------------------------------------------ analysis
    def analyse(
        self, obs: pd.DataFrame, settings: EnkfSettings, rng: np.random.Generator
    ) -> WindowAnalysis:
        """Update every member with ``obs`` (a validated table on :attr:`grid`)."""
        if len(obs) == 0:
            raise InvalidValueError("the observation table is empty: nothing to analyse")
        operator = ObservationOperator.from_table(obs, self.grid)
        y = obs["value"].to_numpy(dtype=np.float64)
        prior_hx = _observed(operator, self.fields())
        state = self.layer_state()
        k = state.shape[0]
        analysis = localized_update(
            state.reshape(k, -1),
            prior_hx,
            obs,
            self.layout,
            members=k,
            rng=rng,
            localization=settings.localization,
        )
        updated = relax_to_prior_spread(state, analysis.members.astype(np.float64), settings.rtps)
        self.set_layer_state(updated, settings.min_thickness)
        posterior_hx = _observed(operator, self.fields())
        return WindowAnalysis(
            observations=len(obs),
            prior_rmse=_rms(prior_hx.mean(0) - y),
            posterior_rmse=_rms(posterior_hx.mean(0) - y),
            prior_spread=_rms(prior_hx.std(0, ddof=1)),
            posterior_spread=_rms(posterior_hx.std(0, ddof=1)),
        )


def set_clock(member: Simulator, time: np.datetime64) -> None:
    """Put ``member``'s clock at ``time`` (a whole number of its time steps after
    :data:`~genda.simulator.START_TIME`): its forcing (season, tides) follows."""
    seconds = (np.datetime64(time, "ns") - START_TIME) / np.timedelta64(1, "s")
    steps = round(seconds / member.dt)
    if seconds < 0 or abs(steps * member.dt - seconds) > 1e-6:
        raise InvalidValueError(
            f"{time} is not a whole number of {member.dt:g} s model steps after {START_TIME}"
        )
    member.steps = int(steps)
    member.time_seconds = steps * member.dt


def relax_to_prior_spread(prior: np.ndarray, posterior: np.ndarray, alpha: float) -> np.ndarray:
    """RTPS (Whitaker and Hamill 2012, eq. 9): each value's analysis perturbations scaled
    by ``alpha s_b / s_a + 1 - alpha``; the analysis mean is kept. Arrays ``(K, ...)``."""
    if alpha == 0.0:
        return posterior
    mean = posterior.mean(0)
    perturbation = posterior - mean
    s_b = prior.std(0, ddof=1)
    s_a = perturbation.std(0, ddof=1)
    factor = np.where(s_a > 0, alpha * s_b / np.where(s_a > 0, s_a, 1.0) + 1.0 - alpha, 1.0)
    return mean + perturbation * factor


def _observed(operator: ObservationOperator, fields: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return operator(torch.as_tensor(fields, dtype=torch.float64)).numpy()


def _rms(values: np.ndarray) -> float:
    return float(math.sqrt(np.mean(np.square(values))))
