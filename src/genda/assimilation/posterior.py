"""Posterior ensemble members of one assimilation window, from a trained prior.

``posterior_members`` is the library entry point: a validated observation
table, a loaded prior and a list of member indices in, physical fields
``(N, V, L, H, W)`` out. Every member is drawn from its own generator seeded
by ``(window_seed, member)``, so a member is the same whatever batch, worker or
rerun produces it (``genda.models.sampling``); the window seed is a stable
hash of the user's seed and the window's time (:func:`window_seed`).

Both strategies go through the same code: the guidance wraps the field-level
denoiser, so with ``layer2d`` the Jacobian of each layer's network with respect
to its neighbouring layers carries an observation at one altitude to the
layers above and below (MMPS's Tweedie covariance and DPS's gradient both flow
through it).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import torch

from genda.assimilation.conditioning import ConditionedGuidance, FixedStates
from genda.assimilation.guidance import (
    GUIDANCE_METHODS,
    TWEEDIE_COVARIANCES,
    GaussianLikelihood,
    guided_denoiser,
    resolve_covariance,
)
from genda.assimilation.spectral_factor import spectral_factor
from genda.assimilation.state_operator import StateOperator
from genda.errors import InvalidValueError
from genda.grid import Grid
from genda.models.calendar import denoiser_at
from genda.models.checkpoint import LoadedPrior
from genda.models.data import stable_seed
from genda.models.sampling import METHODS as SAMPLERS
from genda.models.sampling import sample
from genda.models.time_of_day import hours_of_day
from genda.observations.operators import ObservationOperator
from genda.progress import sampling_bar
from genda.trajectory import is_trajectory


@dataclass(frozen=True)
class PosteriorSettings:
    """How the posterior is sampled.

    Attributes:
        method: guidance, ``"mmps"`` (default), ``"dps"`` or ``"sda"``.
        steps: sampler steps (noise levels before 0).
        sampler: ``"exponential"`` (default: Heun with the unit Gaussian's part
            integrated exactly, right for whitened priors), ``"heun"``, ``"euler"``
            or ``"stochastic"`` (:mod:`genda.models.sampling`).
        iterations: MMPS solver (GMRES) iterations.
        covariance: MMPS's Tweedie covariance: ``"auto"`` (default: ``"prior"``
            for a prior in whitened coordinates, else ``"jacobian"``;
            :meth:`for_prior` resolves it), ``"jacobian"`` (the network's, by
            vector-Jacobian products, azula's MMPS) or ``"prior"`` (the whitened
            prior's Gaussian part, no backward pass:
            :mod:`genda.assimilation.gaussian_tweedie`; whitened priors only).
        zeta: DPS guidance strength.
        gamma: SDA's ``gamma`` in ``Sigma_y + gamma sigma^2 A A^T``.
        corrections: Langevin corrector steps per step (SDA uses 1 by default).
        sigma_max: the first noise level (the prior's data have unit variance).
        batch_size: members per denoiser batch: the memory knob.
    """

    method: str = "mmps"
    steps: int = 32
    sampler: str = "exponential"
    iterations: int = 3
    covariance: str = "auto"
    zeta: float = 1.0
    gamma: float = 0.1
    corrections: int | None = None
    sigma_max: float = 80.0
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.method not in GUIDANCE_METHODS:
            raise InvalidValueError(
                f"unknown method {self.method!r}; choose one of {GUIDANCE_METHODS}"
            )
        if self.covariance not in TWEEDIE_COVARIANCES:
            raise InvalidValueError(
                f"unknown covariance {self.covariance!r}; choose one of {TWEEDIE_COVARIANCES}"
            )
        if self.sampler not in SAMPLERS:
            raise InvalidValueError(f"unknown sampler {self.sampler!r}; choose one of {SAMPLERS}")
        for name in ("steps", "batch_size", "iterations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.corrections is not None and (
            isinstance(self.corrections, bool)
            or not isinstance(self.corrections, int)
            or self.corrections < 0
        ):
            raise InvalidValueError(
                f"corrections must be an integer >= 0, got {self.corrections!r}"
            )
        for name in ("zeta", "gamma"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise InvalidValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not (isinstance(self.sigma_max, int | float) and 0 < self.sigma_max < math.inf):
            raise InvalidValueError(
                f"sigma_max must be a finite number > 0, got {self.sigma_max!r}"
            )

    def for_prior(self, prior: LoadedPrior, guided: bool = True) -> PosteriorSettings:
        """These settings with ``covariance`` resolved for ``prior`` (:func:`resolve_covariance`).

        Only guided MMPS uses a Tweedie covariance: for DPS, SDA and the
        unguided prior ``"auto"`` becomes ``"jacobian"``, which the record
        leaves out (:meth:`to_dict`), as before ``"auto"`` existed.
        """
        if self.covariance == "auto" and (self.method != "mmps" or not guided):
            return replace(self, covariance="jacobian")
        whitened = prior.denoiser.coordinates is not None
        return replace(self, covariance=resolve_covariance(self.covariance, whitened))

    @property
    def langevin_corrections(self) -> int:
        if self.corrections is not None:
            return self.corrections
        return 1 if self.method == "sda" else 0

    def guidance_options(self) -> dict[str, Any]:
        return {
            "mmps": {"iterations": self.iterations, "covariance": self.covariance},
            "dps": {"zeta": self.zeta},
            "sda": {"gamma": self.gamma},
        }[self.method]

    def to_dict(self) -> dict[str, Any]:
        """The settings as a window's provenance records them.

        The covariance appears only when it is not the Jacobian, so that
        windows made before it existed keep their provenance; resolve
        ``"auto"`` first (:meth:`for_prior`), so that the record says which.
        """
        if self.covariance == "auto":
            raise InvalidValueError(
                "the covariance 'auto' is resolved for a prior before it is recorded (for_prior)"
            )
        settings = asdict(self) | {"corrections": self.langevin_corrections}
        if self.covariance == "jacobian":
            del settings["covariance"]
        return settings


_GUIDANCE_CHECK = threading.Lock()


def window_seed(seed: int, time: np.datetime64) -> int:
    """The seed of the window at ``time`` for the user's ``seed`` (a stable hash of both)."""
    return stable_seed("window", int(seed), str(np.datetime64(time, "s")))


def state_hours(prior: LoadedPrior, time: Any, count: int) -> np.ndarray | None:
    """UT hours ``(count,)`` of the states of a prior whose mean follows the time of day.

    ``time``: the window's valid time (datetime64), or one per member. ``None``
    for a prior with one mean for every hour.

    Raises:
        InvalidValueError: the prior needs the time and none, or not one per member, was given.
    """
    if not prior.denoiser.tides:
        return None
    if time is None:
        raise InvalidValueError(
            "this prior's mean follows the time of day: give the window's valid time"
        )
    hours = hours_of_day(time)
    if hours.size == 1:
        return np.full(count, hours[0])
    if hours.size != count:
        raise InvalidValueError(f"give one time or one per member ({count}), got {hours.size}")
    return hours


def state_decoder(prior: LoadedPrior, time: Any = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The prior's states -> normalised fields map at the window's ``time``."""
    hours = state_hours(prior, time, 1)
    hour = None if hours is None else float(hours[0])
    return partial(prior.denoiser.decode, hours=hour)


def _decoder_key(prior: LoadedPrior, time: Any) -> tuple[Any, ...] | None:
    """What identifies :func:`state_decoder`'s map: the weights (with the coordinates'
    statistics), the window's shape and hour; ``None`` for a prior not read from a checkpoint."""
    try:
        weights = prior.weights_sha256
    except KeyError:  # built in memory, not read from a checkpoint
        return None
    hours = state_hours(prior, time, 1)
    return ("decode", weights, tuple(prior.state_shape), None if hours is None else float(hours[0]))


def likelihood_for(
    prior: LoadedPrior,
    obs: pd.DataFrame,
    device: torch.device | str = "cpu",
    time: Any = None,
) -> GaussianLikelihood:
    """The Gaussian likelihood of a validated table, on the prior's diffusion states.

    Those are the normalised fields, or for a prior in whitened coordinates
    its control variables ``z``, seen through ``A = H U`` (:class:`StateOperator`)
    with ``U``'s mean at the window's ``time``. For a trajectory prior
    (:mod:`genda.trajectory`) ``time`` is that of its first state, and each
    observation acts at its own time.
    """
    operator: ObservationOperator | StateOperator
    start = None if time is None or not is_trajectory(prior.grid) else np.datetime64(time, "ns")
    operator = ObservationOperator.from_table(obs, prior.grid, start)
    operator = operator.normalized(prior.normalization)
    if prior.denoiser.coordinates is not None:
        operator = StateOperator(
            operator.to(device, torch.float32),
            state_decoder(prior, time),
            prior.state_shape,
            _decoder_key(prior, time),
            spectral_factor(prior.denoiser.coordinates),
        )
    y = torch.tensor(obs["value"].to_numpy(dtype=np.float64))
    sigma = torch.tensor(obs["sigma"].to_numpy(dtype=np.float64))
    return GaussianLikelihood(operator, y, sigma).to(device, torch.float32)


def posterior_denoiser(
    prior: LoadedPrior,
    obs: pd.DataFrame | None,
    settings: PosteriorSettings,
    device: torch.device | str = "cpu",
    time: Any = None,
) -> Any:
    """The denoiser to sample the window with: the prior's, guided by ``obs`` when given.

    Building it (the observation operator from the table) is the costly part
    that a worker holding the prior does once per window, not per batch.
    ``time``: the window's valid time, for a prior whose mean follows the hour.
    """
    if obs is None:  # the prior's, told the window's time if its network sees it
        return denoiser_at(prior.denoiser, time)
    settings = settings.for_prior(prior)
    likelihood = likelihood_for(prior, obs, device, time)
    return guided_denoiser(
        denoiser_at(prior.denoiser, time),
        likelihood,
        settings.method,
        **settings.guidance_options(),
    )


def check_guidance(
    prior: LoadedPrior,
    obs: pd.DataFrame | None,
    settings: PosteriorSettings,
    device: torch.device | str = "cpu",
    time: Any = None,
    fixed: torch.Tensor | None = None,
) -> None:
    """Build the window's denoiser and take one sampler step with one member.

    Run before a store is touched, so that settings the guidance cannot work
    with fail before a window is registered, not in every worker afterwards.
    The step costs two or three denoiser calls of one member. ``fixed``: the
    mask of the components a filtering window fixes
    (:func:`genda.assimilation.conditioning.leading_mask`); the check then
    builds the guidance its workers build
    (:class:`~genda.assimilation.conditioning.ConditionedGuidance`, with the
    fixed components at 0), which a worker in this process finds again
    (:func:`~genda.assimilation.gaussian_tweedie.observation_space`).

    Raises:
        InvalidValueError: the step gives non-finite values with these settings.
    """
    settings = settings.for_prior(prior, guided=obs is not None)
    if fixed is None:
        denoiser = posterior_denoiser(prior, obs, settings, device, time)
    else:
        likelihood = None if obs is None else likelihood_for(prior, obs, device, time)
        guidance = ConditionedGuidance(
            prior, likelihood, fixed, settings.method, time, **settings.guidance_options()
        )
        zeros = torch.zeros((1, *prior.state_shape))
        denoiser = guidance.for_batch(FixedStates(1, fixed, zeros, (0,)), [0])
    # Forward-mode AD levels (MMPS's Jacobian-vector products) are global to the
    # process: windows checked from several threads of one driver take turns.
    with _GUIDANCE_CHECK:
        # the one sampling path, cut to one step of one member
        one_step = replace(settings, steps=1, batch_size=1)
        x = sample_members(
            prior, denoiser, [0], 0, one_step, guided=obs is not None, device=device, time=time
        )
    if not torch.isfinite(x).all():
        raise InvalidValueError(
            f"the {settings.method} guidance gives non-finite values with these settings "
            f"({settings.guidance_options()}); the observations may be inconsistent with the prior"
        )


def sample_members(
    prior: LoadedPrior,
    denoiser: Any,
    members: Sequence[int],
    seed: int,
    settings: PosteriorSettings,
    *,
    guided: bool,
    device: torch.device | str = "cpu",
    time: Any = None,
    on_step: Callable[[], None] | None = None,
) -> torch.Tensor:
    """One batch: members ``(len(members), V, L, H, W)`` in physical units, on the CPU.

    ``denoiser`` comes from :func:`posterior_denoiser`; ``guided`` says
    whether it carries observations (Langevin corrections apply only then).
    The batch is sampled in one pass: ``members`` is the batch. ``time``: the
    window's valid time, or one per member (unguided only), which a prior
    whose mean follows the hour decodes its states at. ``on_step``: called
    after each of the ``settings.steps`` sampler steps (progress).
    """
    hours = state_hours(prior, time, len(members))
    if denoiser is prior.denoiser:  # the bare prior (genda fidelity: a time per member)
        denoiser = denoiser_at(denoiser, time)
    state = sample(
        denoiser,
        prior.state_shape,
        [int(m) for m in members],
        seed,
        steps=settings.steps,
        method=settings.sampler,  # type: ignore[arg-type]
        sigma_max=settings.sigma_max,
        corrections=settings.langevin_corrections if guided else 0,
        device=device,
        on_step=on_step,
    )
    with torch.no_grad():
        fields = prior.denoiser.decode(state, hours)
    return prior.normalization.denormalize(fields).cpu()


def posterior_members(
    prior: LoadedPrior,
    obs: pd.DataFrame | None,
    members: Sequence[int],
    seed: int,
    settings: PosteriorSettings | None = None,
    *,
    device: torch.device | str = "cpu",
    progress: bool = False,
    time: Any = None,
) -> torch.Tensor:
    """Posterior members ``(len(members), V, L, H, W)`` in physical units, on the CPU.

    Args:
        prior: the trained prior (:func:`genda.models.checkpoint.load_checkpoint`).
        obs: a table validated against ``prior.grid``
            (:func:`genda.observations.validate_observations`); ``None`` draws
            from the prior (the unconditional baseline).
        members: member indices, sampled in consecutive batches of
            ``settings.batch_size``.
        seed: the window seed (:func:`window_seed`).
        settings: method, steps and batch size.
        device: where the prior lives and sampling runs.
        progress: a progress bar over sampler steps (batches x steps;
            :func:`genda.progress.sampling_bar`: on a terminal only).
        time: the window's valid time (datetime64), which a prior whose mean
            follows the time of day needs.
    """
    settings = settings or PosteriorSettings()
    members = [int(m) for m in members]
    settings = settings.for_prior(prior, guided=obs is not None)
    denoiser = posterior_denoiser(prior, obs, settings, device, time)
    out = []
    batches = [
        members[i : i + settings.batch_size] for i in range(0, len(members), settings.batch_size)
    ]
    with sampling_bar(len(batches), settings.steps, progress) as bar:
        for batch in batches:
            out.append(
                sample_members(
                    prior,
                    denoiser,
                    batch,
                    seed,
                    settings,
                    guided=obs is not None,
                    device=device,
                    time=time,
                    on_step=None if bar.disable else bar.update,
                )
            )
    return torch.cat(out) if out else torch.empty(0, *prior.grid.shape)


def observation_fit(
    members: torch.Tensor,
    obs: pd.DataFrame,
    grid: Grid,
    operator: ObservationOperator | None = None,
) -> dict[str, float]:
    """How the ensemble fits the observations it was given.

    Returns the root-mean-square normalised innovation of the ensemble mean,
    ``sqrt(mean(((y - H mean) / sigma)^2))`` (about 1 for an analysis that fits
    within the errors; the prior's is usually much larger), the mean ensemble
    spread at the observations over their error, and the count. ``operator``
    is the table's physical operator when the caller has it already.
    """
    operator = operator or ObservationOperator.from_table(obs, grid)
    values = operator.to(dtype=torch.float64)(members.double())  # (N, M)
    return fit_of_values(values, obs)


def fit_of_values(values: torch.Tensor, obs: pd.DataFrame) -> dict[str, float]:
    """:func:`observation_fit` from the members' values at the observations ``(N, M)``.

    For ensembles too large to hold: apply the operator block by block and
    concatenate the (small) values.
    """
    values = values.double()
    y = torch.tensor(obs["value"].to_numpy(dtype=np.float64))
    sigma = torch.tensor(obs["sigma"].to_numpy(dtype=np.float64))
    innovation = (y - values.mean(0)) / sigma
    spread = values.std(0) if values.shape[0] > 1 else torch.zeros_like(y)
    return {
        "observations": len(obs),
        "rms_normalised_innovation": float(innovation.square().mean().sqrt()),
        "mean_spread_over_sigma": float((spread / sigma).mean()),
    }


__all__ = [
    "PosteriorSettings",
    "fit_of_values",
    "likelihood_for",
    "observation_fit",
    "posterior_denoiser",
    "posterior_members",
    "sample_members",
    "state_decoder",
    "state_hours",
    "window_seed",
]
