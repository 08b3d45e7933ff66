"""The background check: observations far from the prior's climatology are flagged.

A validated table can still hold gross errors that are physically possible
(a 150 m/s wind at a station whose winds never leave +-30 m/s, a spike of a
lidar). Such a value, given its small ``sigma``, drags every member towards
it. The check compares each observation with the prior's climatology, the
per-variable, per-level mean ``mu_b`` and standard deviation ``sigma_b`` of
its training archive (:class:`genda.normalization.Normalization`, stored in
the checkpoint), and flags it when

    |y - H mu_b| > k * sqrt((|H| sigma_b)^2 + sigma_o^2)

``H`` is the row's observation operator; ``|H|`` (its weights' absolute
values) applied to ``sigma_b`` is the climatological spread at the
observation: exact for an interpolated point (the std is constant along a
level), an upper bound for a line-of-sight wind or a vertical kernel (it
assumes the components fully correlated), so the check errs towards keeping.

:func:`background_check` returns a :class:`BackgroundCheck` (counts per
variable, the flagged rows); :meth:`BackgroundCheck.kept` is the table
without them. :func:`screen_observations` gives the table to assimilate:
without the flagged rows unless ``keep_outliers`` (the settings of
:func:`genda.orchestration.assimilate.assimilate_window`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from genda.errors import InvalidValueError
from genda.grid import Grid
from genda.normalization import Normalization
from genda.observations.operators import ObservationOperator
from genda.observations.table import OBSERVED_VARIABLES, ObservationError

DEFAULT_OUTLIER_K = 5.0
"""Default threshold, in climatological-plus-observation standard deviations.

A Gaussian departure exceeds 5 sigma once in ~1.7 million: a correct observation
is almost never flagged, even in tables of 10^5 rows."""


def check_outlier_k(k: float) -> float:
    """``k`` as a float if it is a finite number > 0; else an error naming ``outlier_k``."""
    try:
        value = float(k)
    except (TypeError, ValueError):
        raise InvalidValueError(f"outlier_k must be a number > 0, got {k!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise InvalidValueError(f"outlier_k must be a finite number > 0, got {k!r}")
    return value


@dataclass(frozen=True)
class BackgroundCheck:
    """The outcome of :func:`background_check` on one table.

    Attributes:
        k: the threshold used.
        checked: rows per observed variable (``u``, ``v``, ``T``, ``los``; absent: none).
        flagged: flagged rows per observed variable (every key of ``checked``, 0 if none).
        rows: ``(F,)`` positions (0-based, table order) of the flagged rows, ascending.
        departures: ``(M,)`` ``|y - H mu_b| / sqrt((|H| sigma_b)^2 + sigma_o^2)`` per row.
    """

    k: float
    checked: dict[str, int]
    flagged: dict[str, int]
    rows: tuple[int, ...]
    departures: np.ndarray = field(repr=False)

    @property
    def n_flagged(self) -> int:
        """How many rows are flagged."""
        return len(self.rows)

    def kept(self, obs: pd.DataFrame) -> pd.DataFrame:
        """``obs`` without the flagged rows, index ``0..M'-1`` (a new frame).

        ``obs`` must be the table that was checked (same rows, same order).
        """
        if len(obs) != len(self.departures):
            raise InvalidValueError(
                f"the background check was made on {len(self.departures)} observations, "
                f"not on this table of {len(obs)}"
            )
        keep = np.ones(len(obs), dtype=bool)
        keep[list(self.rows)] = False
        return obs.loc[keep].reset_index(drop=True)

    def describe(self) -> str:
        """``"3 of 120 beyond 5 sigma of the prior climatology (u 2, T 1; rows 4, 7, 9)"``."""
        total = sum(self.checked.values())
        if not self.rows:
            return f"none of {total} beyond {self.k:g} sigma of the prior climatology"
        per = ", ".join(f"{name} {count}" for name, count in self.flagged.items() if count)
        shown = ", ".join(str(r) for r in self.rows[:5])
        more = f" and {len(self.rows) - 5} more" if len(self.rows) > 5 else ""
        return (
            f"{len(self.rows)} of {total} beyond {self.k:g} sigma of the prior climatology "
            f"({per}; rows {shown}{more})"
        )


def background_check(
    obs: pd.DataFrame,
    grid: Grid,
    normalization: Normalization,
    k: float = DEFAULT_OUTLIER_K,
) -> BackgroundCheck:
    """Flag the rows of ``obs`` farther than ``k`` standard deviations from the climatology.

    Args:
        obs: a validated table (:func:`genda.observations.validate_observations`), ``M >= 1`` rows.
        grid: the prior's grid (the table was validated against it).
        normalization: the prior's statistics, ``mean`` and ``std`` ``(V, L)`` in
            physical units, variables in ``grid`` order.
        k: the threshold (finite, > 0).

    Returns:
        The counts per variable, the flagged rows and every row's departure.
    """
    k = check_outlier_k(k)
    if tuple(normalization.variables) != tuple(grid.variables):
        raise InvalidValueError(
            f"normalisation variables {list(normalization.variables)} are not the grid's "
            f"{list(grid.variables)}"
        )
    operator = ObservationOperator.from_table(obs, grid)
    nlat, nlon = grid.nlat, grid.nlon
    mean = torch.as_tensor(normalization.mean, dtype=torch.float64)[..., None, None]
    std = torch.as_tensor(normalization.std, dtype=torch.float64)[..., None, None]
    with torch.no_grad():
        background = operator(mean.expand(-1, -1, nlat, nlon)).numpy()  # (M,)
        spread_op = ObservationOperator(
            operator.index, operator.weight.abs(), operator.offset, operator.field_shape
        )
        spread = spread_op(std.expand(-1, -1, nlat, nlon)).numpy()  # (M,)
    value = obs["value"].to_numpy(dtype=np.float64)
    sigma = obs["sigma"].to_numpy(dtype=np.float64)
    departures = np.abs(value - background) / np.sqrt(spread**2 + sigma**2)
    flagged = departures > k
    names = obs["variable"].to_numpy()
    checked = {n: int(np.sum(names == n)) for n in OBSERVED_VARIABLES if np.any(names == n)}
    counts = {n: int(np.sum(flagged & (names == n))) for n in checked}
    return BackgroundCheck(
        k, checked, counts, tuple(int(r) for r in np.flatnonzero(flagged)), departures
    )


def screen_observations(
    obs: pd.DataFrame,
    grid: Grid,
    normalization: Normalization,
    k: float = DEFAULT_OUTLIER_K,
    keep_outliers: bool = False,
    source: str = "observations",
) -> tuple[pd.DataFrame, BackgroundCheck]:
    """:func:`background_check`, then the table to assimilate: without the flagged rows
    unless ``keep_outliers``.

    Returns:
        ``(table, check)``: the table (index ``0..M'-1``; ``obs`` itself when
        nothing is left out) and the check's result.

    Raises:
        ObservationError: every row is flagged and none is kept (nothing would
            be assimilated), naming ``source``.
    """
    check = background_check(obs, grid, normalization, k)
    if keep_outliers or not check.rows:
        return obs, check
    if check.n_flagged == len(obs):
        raise ObservationError(
            f"{source}: every observation is beyond {check.k:g} sigma of the prior "
            f"climatology ({check.describe()}); check the units and values, raise outlier_k "
            "or set keep_outliers",
            ["every observation flagged by the background check"],
        )
    return check.kept(obs), check


__all__ = [
    "DEFAULT_OUTLIER_K",
    "BackgroundCheck",
    "background_check",
    "check_outlier_k",
    "screen_observations",
]
