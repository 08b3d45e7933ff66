"""The statistics of one window of an ensemble store, computed in blocks of levels.

``<var>_mean``, ``<var>_std`` (``ddof=1``; NaN for a one-member ensemble),
``<var>_q05``, ``<var>_q50``, ``<var>_q95`` (linear interpolation between
members), computed in float64 from the stored members and returned as float32
fields. The members are read one block of altitude levels at a time, so the
working memory stays within :data:`FINALIZE_MEMORY_BYTES` whatever the
ensemble size. :meth:`~genda.storage.ensemble_store.EnsembleStore.finalize`
writes the result.
"""

from __future__ import annotations

import numpy as np
import zarr

from genda.grid import Grid
from genda.storage.ensemble_layout import QUANTILES, STATS

FINALIZE_MEMORY_BYTES = 256 * 2**20
"""Working memory of :meth:`EnsembleStore.finalize` (float64 copies of an altitude block)."""

QUANTILE_STATS: tuple[str, ...] = ("q05", "q50", "q95")


def level_blocks(grid: Grid, n_members: int) -> list[slice]:
    """Altitude blocks whose float64 copies of all members fit :data:`FINALIZE_MEMORY_BYTES`."""
    _, nlev, nlat, nlon = grid.shape
    # members (float64) plus np.quantile's sorted copy
    per_level = 2 * n_members * nlat * nlon * np.dtype(np.float64).itemsize
    step = max(1, min(nlev, FINALIZE_MEMORY_BYTES // max(per_level, 1)))
    return [slice(lo, min(lo + step, nlev)) for lo in range(0, nlev, step)]


def window_statistics(
    group: zarr.Group, index: int, grid: Grid, n_members: int
) -> tuple[dict[str, np.ndarray], set[tuple[int, str]]]:
    """The statistics of the window at time slot ``index``, and the members that spoil them.

    Args:
        group: the store's root group.
        index: the window's slot along ``time``.
        grid: the store's grid.
        n_members: ``N``, members per window (all flagged complete).

    Returns:
        ``({"<var>_<stat>": (L, H, W) float32}, {(member, variable)})``: the
        statistics by array name, and the members whose data are NaN or
        missing (then the statistics must not be written).
    """
    _, nlev, nlat, nlon = grid.shape
    results: dict[str, np.ndarray] = {}
    corrupt: set[tuple[int, str]] = set()
    for name in grid.variables:
        out = {stat: np.empty((nlev, nlat, nlon), np.float32) for stat in STATS}
        for block in level_blocks(grid, n_members):
            members = np.asarray(group[name][index, :, block], dtype=np.float64)
            bad = ~np.isfinite(members).reshape(n_members, -1).all(axis=1)
            corrupt.update((int(m), name) for m in np.flatnonzero(bad))
            out["mean"][block] = members.mean(axis=0)
            out["std"][block] = (
                members.std(axis=0, ddof=1)
                if n_members > 1
                else np.full_like(members[0], np.nan)  # one member has no spread (the scores' NaN)
            )
            q = np.quantile(members, [QUANTILES[s] for s in QUANTILE_STATS], axis=0)
            for i, stat in enumerate(QUANTILE_STATS):
                out[stat][block] = q[i]
        results.update({f"{name}_{stat}": field for stat, field in out.items()})
    return results, corrupt
