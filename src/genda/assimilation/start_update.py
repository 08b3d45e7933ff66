"""A filtering window's start, updated by the window's observations: a localised EnKF step.

A filtering window fixes member ``m``'s first state ``x_1`` to member ``m`` of
the previous window's last hour and samples the later states from
``p(x_2.. | x_1^m, y)`` (:mod:`genda.assimilation.conditioning`). The exact
filter draws the start from ``p(x_1 | y_past, y)`` first: the window's
observations also say which starts were right. Without that step the
observations never correct the part of the later states that the start
carries. For one component with regression ``phi`` on the start, innovation
variance ``Q`` and error variance ``R``, the ensemble mean's gain is
``Q / (Q + R)`` where the Kalman filter's is ``(phi^2 P + Q) / (phi^2 P + Q +
R)`` (``P`` the start's spread): slow components, whose ``Q`` is small, hardly
see the observations, and their error can grow window by window.

:func:`update_start` is that step for an ensemble: a perturbed-observation
EnKF of the members' starts (:func:`genda.assimilation.baselines.localized_update`,
the same as the built-in model's cycled EnKF), with

* the observations' predicted values ``h_m = A(z_m)``: each member's start and
  the later states' regression on it (:meth:`ConditionedGuidance.predicted`);
* their error covariance ``Sigma_y + A_free A_free^T``: the observation errors
  and what the free later states add, correlated between observations
  (:meth:`ConditionedGuidance.error_covariance`);
* a Gaspari-Cohn localisation of the start's covariance with them, and RTPS
  (Whitaker and Hamill 2012) towards the start's spread before the update.

With no localisation and a large ensemble of a Gaussian prior, the members of
the window are the Kalman filter's of an uncertain start
(tests/test_trajectory_prior.py). The updated starts are fixed as before.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from genda.assimilation.baselines import Localization, localized_update
from genda.assimilation.conditioning import ConditionedGuidance, FixedStates, fixed_states
from genda.assimilation.cycled_enkf import relax_to_prior_spread
from genda.errors import InvalidValueError
from genda.trajectory import state_grid

__all__ = ["StartUpdate", "update_start"]


@dataclass(frozen=True)
class StartUpdate:
    """How a filtering window updates its members' starts.

    Attributes:
        horizontal_km: Gaspari-Cohn half-width of great-circle distance
            (``math.inf``: no horizontal localisation).
        vertical_km: half-width of altitude distance.
        rtps: relaxation of the updated starts' spread towards their spread
            before the update, in ``[0, 1]``.
    """

    horizontal_km: float = 1500.0
    vertical_km: float = 30.0
    rtps: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.rtps <= 1.0:  # also refuses NaN
            raise InvalidValueError(f"the start update's rtps must lie in [0, 1], got {self.rtps}")
        self.localization  # noqa: B018 -- the half-widths are checked there

    @property
    def localization(self) -> Localization:
        """The update's :class:`~genda.assimilation.baselines.Localization`."""
        return Localization(self.horizontal_km, self.vertical_km)

    def to_dict(self) -> dict[str, float | None]:
        """Plain data for provenance (``None`` for no localisation)."""
        return {
            "horizontal_km": None if math.isinf(self.horizontal_km) else self.horizontal_km,
            "vertical_km": None if math.isinf(self.vertical_km) else self.vertical_km,
            "rtps": self.rtps,
        }


def update_start(
    guidance: ConditionedGuidance,
    previous: np.ndarray,
    members: Sequence[int],
    observations: pd.DataFrame,
    update: StartUpdate,
    seed: int,
    hours: float | None = None,
    start: np.datetime64 | None = None,
) -> FixedStates:
    """The fixed states of a whole ensemble, their starts updated by the window's observations.

    Observations at the start's own time (``start``) are left out: that hour is
    the previous window's analysis, which has assimilated them already.

    Args:
        guidance: the window's (its prior, observations and free part).
        previous: ``(N, V, L, H, W)`` every member's start, physical units, ``N >= 2``.
        members: the member of each row.
        observations: the window's table, in the likelihood's order (``lat``,
            ``lon``, ``alt_km``: where the localisation measures from).
        update: localisation and RTPS.
        seed: draws the perturbed observations (the window's seed: a rerun is the same).
        hours: the UT hour of the start (a prior with tides).
        start: the start's time, when ``observations`` has a ``time`` column.

    Raises:
        InvalidValueError: fewer than two members, or a window without observations
            after its start.
    """
    if len(members) < 2:
        raise InvalidValueError(
            f"updating the starts needs an ensemble of at least 2 members, got {len(members)}"
        )
    prior = guidance.prior
    fixed = fixed_states(prior, torch.from_numpy(previous), members, hours)
    likelihood = guidance.likelihood
    if likelihood is None:
        raise InvalidValueError("a window without observations has nothing to update its start")
    keep = np.ones(len(observations), dtype=bool)
    if start is not None and "time" in observations:
        times = observations["time"].to_numpy().astype("datetime64[s]")
        keep = times != np.datetime64(start, "s")
    if not keep.any():
        raise InvalidValueError(
            "the window has no observation after its start: nothing to update the start with"
        )
    predicted = guidance.predicted(fixed).cpu().numpy()[:, keep]
    table = pd.DataFrame(
        {
            "lat": observations["lat"].to_numpy()[keep],
            "lon": observations["lon"].to_numpy()[keep],
            "alt_km": observations["alt_km"].to_numpy()[keep],
            "value": likelihood.y.double().cpu().numpy()[keep],
            "sigma": likelihood.sigma.double().cpu().numpy()[keep],
        }
    )
    flat = previous.reshape(len(members), -1).astype(np.float64)
    analysis = localized_update(
        flat,
        predicted,
        table,
        state_grid(prior.grid),
        members=len(members),
        rng=np.random.default_rng(seed),
        localization=update.localization,
        error_covariance=guidance.error_covariance().cpu().numpy()[np.ix_(keep, keep)],
    )
    updated = analysis.members.reshape(previous.shape).astype(np.float64)
    updated = relax_to_prior_spread(previous.astype(np.float64), updated, update.rtps)
    return fixed_states(prior, torch.from_numpy(updated.astype(previous.dtype)), members, hours)
