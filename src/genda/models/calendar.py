"""The time of day and the season as network inputs.

The migrating tides are locked to local solar time and the mean state of
the mesosphere and lower thermosphere follows the season (the summer
mesopause, the reversal of the zonal jets). A prior in whitened coordinates
already has a mean that follows UT (:mod:`genda.models.time_of_day`); its
network sees only the noisy state. With a :class:`Calendar` the network
also sees when the state is valid, so the non-Gaussian remainder it learns
(how tides break, how waves grow with the season) can follow the hour and
the day of the year.

The calendar enters the U-Net the way layer2d's altitude does: a vector
``(B, F)`` mapped linearly into the noise embedding, which modulates every
residual block (FiLM; :mod:`genda.models.unet`). The features are

    [cos(k Omega_d h), sin(k Omega_d h)]_{k=1..day_harmonics},
    [cos(k Omega_y d), sin(k Omega_y d)]_{k=1..year_harmonics}

with ``h`` the UT hour, ``Omega_d = 2 pi / 24 h``, ``d`` the (fractional)
day of the year and ``Omega_y = 2 pi / 365.2425 d``: smooth, periodic, and
the same features whatever the year. A trajectory sample is dated by its
first hourly state.

A prior trained without a calendar has none (``config.json`` without
``"calendar"``) and is called as before; a prior with one refuses to run
without the time (:class:`CalendarDenoiser` binds it).

Shapes: ``times`` ``(B,)`` datetime64; features ``(B, F)``, ``F = 2
(day_harmonics + year_harmonics)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from genda.errors import InvalidValueError
from genda.models.time_of_day import day_harmonics, hours_of_day

__all__ = [
    "DAYS_PER_YEAR",
    "DEFAULT_CALENDAR",
    "NEEDS_TIME",
    "Calendar",
    "CalendarDenoiser",
    "calendar_condition",
    "calendar_of",
    "days_of_year",
    "denoiser_at",
]

DAYS_PER_YEAR = 365.2425
"""The mean Gregorian year in days: the period of the seasonal features."""

NEEDS_TIME = (
    "this prior's network sees the time of day and the day of the year: give the window's time"
)
"""What a network with a calendar says when it is called without the time."""


def days_of_year(times: np.datetime64 | Sequence[np.datetime64] | np.ndarray) -> np.ndarray:
    """Days since 1 January 00 UT of each time's year, fractional: float64 ``(N,)``.

    Raises:
        InvalidValueError: a time that is not a datetime (NaT included).
    """
    hours_of_day(times)  # the same checks (datetimes, no NaT)
    values = np.atleast_1d(np.asarray(times)).astype("datetime64[ns]")
    since = values - values.astype("datetime64[Y]").astype("datetime64[ns]")
    return np.asarray(since / np.timedelta64(1, "D"), dtype=np.float64)


@dataclass(frozen=True)
class Calendar:
    """Which harmonics of the day and of the year the network sees.

    Args:
        day_harmonics: harmonics of the solar day (2: diurnal and semidiurnal).
        year_harmonics: harmonics of the year (2: annual and semiannual).
    """

    day_harmonics: int = 2
    year_harmonics: int = 2

    def __post_init__(self) -> None:
        for name in ("day_harmonics", "year_harmonics"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 12:
                raise InvalidValueError(f"{name} must be an integer in 0..12, got {value!r}")
        if self.size == 0:
            raise InvalidValueError("a calendar needs at least one harmonic of the day or year")

    @property
    def size(self) -> int:
        """``F``: the number of features."""
        return 2 * (self.day_harmonics + self.year_harmonics)

    def config(self) -> dict[str, int]:
        """``config.json``'s ``"calendar"``."""
        return {"day_harmonics": self.day_harmonics, "year_harmonics": self.year_harmonics}

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> Calendar | None:
        """The calendar ``config.json`` describes (``None``: a prior without one)."""
        if config is None:
            return None
        unknown = set(config) - {"day_harmonics", "year_harmonics"}
        if unknown:
            raise InvalidValueError(f"unknown calendar settings {sorted(unknown)}")
        return cls(**dict(config))  # integers only (checked by the constructor)

    def features(self, times: Any) -> Tensor:
        """``(B, F)`` float64 features of ``times`` (one datetime64 or ``(B,)``)."""
        hours = torch.from_numpy(hours_of_day(times))
        days = torch.from_numpy(days_of_year(times))
        day = day_harmonics(hours, self.day_harmonics)
        k = torch.arange(1, self.year_harmonics + 1, dtype=torch.float64)
        phase = days[:, None] * k * (2.0 * math.pi / DAYS_PER_YEAR)
        year = torch.stack([phase.cos(), phase.sin()], dim=-1).reshape(len(days), -1)
        return torch.cat([day, year], dim=1)

    def shift(self, features: Tensor, hours: float) -> Tensor:
        """The features ``(B, F)`` of times ``hours`` later: each harmonic's phase rotated."""
        day = torch.arange(1, self.day_harmonics + 1, dtype=torch.float64)
        year = torch.arange(1, self.year_harmonics + 1, dtype=torch.float64)
        angle = torch.cat(
            [
                day * (2.0 * math.pi * hours / 24.0),
                year * (2.0 * math.pi * hours / 24.0 / DAYS_PER_YEAR),
            ]
        ).to(features.device, features.dtype)
        cos, sin = features[..., 0::2], features[..., 1::2]
        rotated = torch.stack(
            [cos * angle.cos() - sin * angle.sin(), sin * angle.cos() + cos * angle.sin()], dim=-1
        )
        return rotated.flatten(-2)


DEFAULT_CALENDAR = Calendar()
"""What ``genda train --time-inputs`` gives the network."""


def calendar_of(denoiser: Any) -> Calendar | None:
    """The calendar of a denoiser's backbone (``None``: the network sees no time)."""
    backbone = getattr(denoiser, "backbone", None)
    return getattr(backbone, "calendar", None)


class CalendarDenoiser(nn.Module):
    """A denoiser whose network is told when its states are valid: ``D(x, sigma)``.

    Args:
        denoiser: an :class:`~genda.models.diffusion.EDMDenoiser` with a calendar.
        features: ``(F,)`` for every member, or ``(B, F)`` one row per member
            (:meth:`Calendar.features`).

    Everything but the call (``decode``, ``coordinates``, ``sigma_data``, ...)
    is the wrapped denoiser's.
    """

    def __init__(self, denoiser: nn.Module, features: Tensor) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.features = features

    def forward(self, x: Tensor, sigma: Tensor | float, cond: Tensor | None = None) -> Tensor:
        if cond is not None:
            raise InvalidValueError("the calendar is bound already; pass no cond")
        features = self.features.to(x.device, x.dtype)
        if features.dim() == 1:
            features = features.expand(x.shape[0], -1)
        elif features.shape[0] != x.shape[0]:
            raise InvalidValueError(
                f"times for {features.shape[0]} members, a batch of {x.shape[0]}"
            )
        return self.denoiser(x, sigma, features)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["denoiser"], name)


def calendar_condition(
    denoiser: Any, times: Any, device: torch.device | str = "cpu"
) -> Tensor | None:
    """The backbone's ``cond`` ``(B, F)`` float32 for fields valid at ``times`` (``(B,)``).

    ``None`` when the denoiser's network sees no time (training and validation
    batches of such priors pass none).
    """
    calendar = calendar_of(denoiser)
    if calendar is None:
        return None
    return calendar.features(times).to(device=device, dtype=torch.float32)


def denoiser_at(denoiser: nn.Module, times: Any) -> nn.Module:
    """``denoiser`` told the time ``times`` (one, or one per member) if its network wants it.

    A denoiser without a calendar comes back as it is, whatever ``times``.

    Raises:
        InvalidValueError: the network sees the time and ``times`` is ``None``.
    """
    calendar = calendar_of(denoiser)
    if calendar is None:
        return denoiser
    if times is None:
        raise InvalidValueError(NEEDS_TIME)
    features = calendar.features(times)
    return CalendarDenoiser(denoiser, features[0] if features.shape[0] == 1 else features)
