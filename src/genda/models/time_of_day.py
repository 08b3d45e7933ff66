"""The hour of the day as a prior sees it: UT hours and their solar-day harmonics.

The migrating tides of the mesosphere and lower thermosphere are locked to
local solar time: at universal time ``t`` a tide of period ``24 / k`` hours
and zonal wavenumber ``s`` has the phase ``k Omega t + s lambda``. Each
spherical-harmonic coefficient of order ``m`` therefore oscillates in UT
with the harmonics of the solar day, which is what a prior's time-of-day
mean is built from (:class:`genda.models.whitening.SpectralWhitening`,
``tides``). Non-migrating tides, locked to UT at a given longitude, are
periodic in UT too and come along.

Shapes: ``hours`` ``(B,)`` float64 UT hours in ``[0, 24)``; harmonics
``(B, 2 N)``: ``cos(k Omega h), sin(k Omega h)`` for ``k = 1..N``, in that
interleaved order, with ``Omega = 2 pi / 24 h``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from genda.errors import InvalidValueError

__all__ = ["HOURS_PER_DAY", "day_harmonics", "hours_of_day"]

HOURS_PER_DAY = 24.0


def hours_of_day(times: np.datetime64 | Sequence[np.datetime64] | np.ndarray) -> np.ndarray:
    """UT hours ``[0, 24)`` of ``times`` (a datetime64 or an array of them): float64 ``(N,)``.

    Raises:
        InvalidValueError: a time that is not a datetime (NaT included).
    """
    values = np.atleast_1d(np.asarray(times))
    if not np.issubdtype(values.dtype, np.datetime64):
        try:
            values = values.astype("datetime64[ns]")
        except (TypeError, ValueError):
            raise InvalidValueError(f"times must be datetimes, got {times!r}") from None
    if np.isnat(values).any():
        raise InvalidValueError("a time of day is needed, got NaT")
    seconds = (values - values.astype("datetime64[D]")) / np.timedelta64(1, "s")
    return np.asarray(seconds, dtype=np.float64) / 3600.0


def day_harmonics(hours: Tensor, count: int) -> Tensor:
    """``(B, 2 count)`` ``[cos(Omega h), sin(Omega h), cos(2 Omega h), ...]`` of ``hours`` ``(B,)``."""
    if count == 0:
        return hours.new_zeros((*hours.shape, 0))
    k = torch.arange(1, count + 1, dtype=hours.dtype, device=hours.device)
    phase = hours[..., None] * k * (2.0 * math.pi / HOURS_PER_DAY)
    return torch.stack([phase.cos(), phase.sin()], dim=-1).reshape(*hours.shape, 2 * count)
