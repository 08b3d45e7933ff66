"""Observation-space diagnostics of a window: prior, posterior and the background check at each row.

In the spirit of DART's ``obs_seq.final`` (Anderson et al. 2009, BAMS 90,
1283-1296; the file: https://docs.dart.ucar.edu/en/latest/guide/introduction-obs-seq-file.html,
its copies "observation", "prior/posterior ensemble mean", "... spread" and
"DART quality control": the ``obs_diag`` program's documentation in DART,
``assimilation_code/programs/obs_diag/threed_sphere/obs_diag.rst``):
one row per observation of the window, with what the assimilation saw and
made of it. :func:`observation_diagnostics` returns the window's table
(:mod:`genda.observations.table`), every row of it, including those the
background check rejected, with these columns added:

=====================  =====================================================================
column                 meaning (units of the row's variable: m s-1 for u, v, los; K for T)
=====================  =====================================================================
``prior_mean``         ``H mu_b``: the prior's climatology at the observation, the per-variable,
                       per-level training mean of the checkpoint's normalisation
``prior_spread``       ``|H| sigma_b``: the climatological standard deviation there
``posterior_mean``     mean over the members of ``H x_n``
``posterior_spread``   standard deviation (``ddof=1``) over the members of ``H x_n``;
                       NaN for a one-member ensemble
``innovation``         ``y - H mu_b`` (observation minus prior mean)
``residual``           ``y - mean_n H x_n`` (observation minus posterior mean)
``departure``          ``innovation / sqrt(prior_spread^2 + sigma^2)``: the background
                       check compares ``|departure|`` with its threshold ``k``
``rejected``           flagged by :func:`genda.observations.qc.background_check`
``assimilated``        the row entered the guidance (not rejected, or rejected and kept)
=====================  =====================================================================

The prior here is the climatology that the background check uses
(:mod:`genda.observations.qc`), not an ensemble: genda's prior is
climatological (docs/cycles.md), and its mean and spread
per level are what the check and the normalisation define. ``|H|`` applied to
``sigma_b`` is exact for a point interpolated within a level and an upper
bound for a line-of-sight wind or a vertical kernel, as in the check.

The posterior values are the members seen through the row's operator
(:class:`~genda.observations.operators.ObservationOperator`, float64), so the
spread is that of ``H x`` (not ``H`` applied to the field's spread).
:mod:`genda.storage.ensemble_diagnostics` writes the table into the ensemble
store beside the window.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import torch

from genda.errors import InvalidValueError
from genda.grid import Grid
from genda.normalization import Normalization
from genda.observations.operators import ObservationOperator
from genda.observations.qc import BackgroundCheck

__all__ = ["DIAGNOSTIC_COLUMNS", "observation_diagnostics", "operator_values"]

DIAGNOSTIC_COLUMNS: tuple[str, ...] = (
    "prior_mean",
    "prior_spread",
    "posterior_mean",
    "posterior_spread",
    "innovation",
    "residual",
    "departure",
    "rejected",
    "assimilated",
)
"""Columns added to the observation table, in order."""


def operator_values(operator: ObservationOperator, members: Iterable[np.ndarray]) -> np.ndarray:
    """``(N, M)`` float64: each member ``(V, L, H, W)`` seen through ``operator``.

    Args:
        operator: the table's operator on physical fields.
        members: blocks of members, each ``(n, V, L, H, W)`` in physical units
            (the blocks are read one at a time: a large ensemble never sits in
            memory whole).
    """
    operator = operator.to(dtype=torch.float64)
    values = []
    with torch.no_grad():
        for block in members:
            values.append(operator(torch.from_numpy(np.asarray(block)).double()).numpy())
    if not values:
        raise InvalidValueError("no members to compute the posterior at the observations from")
    return np.concatenate(values, axis=0)


def _climatology(
    operator: ObservationOperator, grid: Grid, normalization: Normalization
) -> tuple[np.ndarray, np.ndarray]:
    """``(H mu_b, |H| sigma_b)``, ``(M,)`` each: the background check's prior at each row."""
    if tuple(normalization.variables) != tuple(grid.variables):
        raise InvalidValueError(
            f"normalisation variables {list(normalization.variables)} are not the grid's "
            f"{list(grid.variables)}"
        )
    shape = (-1, -1, grid.nlat, grid.nlon)
    mean = torch.as_tensor(normalization.mean, dtype=torch.float64)[..., None, None].expand(*shape)
    std = torch.as_tensor(normalization.std, dtype=torch.float64)[..., None, None].expand(*shape)
    magnitude = ObservationOperator(
        operator.index, operator.weight.abs(), operator.offset, operator.field_shape
    )
    with torch.no_grad():
        return operator(mean).numpy(), magnitude(std).numpy()


def observation_diagnostics(
    table: pd.DataFrame,
    check: BackgroundCheck,
    grid: Grid,
    normalization: Normalization,
    members: Iterable[np.ndarray],
    *,
    keep_outliers: bool = False,
) -> pd.DataFrame:
    """The window's observation-space diagnostics (module docstring), one row per observation.

    Args:
        table: the window's validated table, every row (before the background
            check removed any), ``M`` rows.
        check: the background check made on ``table`` (same rows, same order).
        grid: the prior's grid (the table was validated against it).
        normalization: the prior's per-variable, per-level ``mean`` and ``std``
            ``(V, L)``, physical units.
        members: the posterior members in blocks ``(n, V, L, H, W)``.
        keep_outliers: the rejected rows were assimilated all the same.

    Returns:
        ``table`` (index ``0..M-1``) with :data:`DIAGNOSTIC_COLUMNS` added.

    Raises:
        InvalidValueError: ``check`` was made on another number of rows.
    """
    if len(check.departures) != len(table):
        raise InvalidValueError(
            f"the background check was made on {len(check.departures)} observations, "
            f"not on this table of {len(table)}"
        )
    out = table.reset_index(drop=True).copy()
    operator = ObservationOperator.from_table(out, grid)
    prior_mean, prior_spread = _climatology(operator, grid, normalization)
    values = operator_values(operator, members)
    value = out["value"].to_numpy(dtype=np.float64)
    sigma = out["sigma"].to_numpy(dtype=np.float64)
    rejected = np.zeros(len(out), dtype=bool)
    rejected[list(check.rows)] = True
    out["prior_mean"] = prior_mean
    out["prior_spread"] = prior_spread
    out["posterior_mean"] = values.mean(axis=0)
    # ddof=1 as the store's <var>_std; one member has no spread
    out["posterior_spread"] = (
        values.std(axis=0, ddof=1) if values.shape[0] > 1 else np.full(len(out), np.nan)
    )
    out["innovation"] = value - prior_mean
    out["residual"] = value - out["posterior_mean"].to_numpy()
    out["departure"] = out["innovation"].to_numpy() / np.sqrt(prior_spread**2 + sigma**2)
    out["rejected"] = rejected
    out["assimilated"] = ~rejected | bool(keep_outliers)
    return out
