"""Reading an ensemble store: the lazy Dataset and queries of one level and statistic.

:func:`open_ensemble` opens a store as a lazy xarray Dataset (plain
``xarray.open_zarr`` works as well); :func:`query` picks one variable at the
level nearest an altitude, a statistic or the members, of one window or all.
What a query returns is checked as it is read: a member flagged complete, or
a finalised statistic, whose data are missing or NaN raises
:class:`~genda.storage.errors.EnsembleStoreError` naming window and members,
and an undecodable file raises :class:`~genda.storage.damage.DamagedFileError`
naming the file. :func:`genda.storage.ensemble_export.to_file` writes a result
to CSV or NetCDF (docs/store.md).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import xarray as xr

from genda.errors import InvalidValueError, UnknownNameError
from genda.storage.damage import naming_reads
from genda.storage.ensemble_layout import COMPLETE, _as_time, _open_group
from genda.storage.ensemble_store import EnsembleStore
from genda.storage.errors import EnsembleStoreError, damaged_members_message
from genda.times import TimeLike, iso

QueryStat = Literal["mean", "std", "q05", "q50", "q95", "members"]
"""What :func:`query` returns: a statistic of the members, or the members themselves."""


def open_ensemble(path: str | os.PathLike[str]) -> xr.Dataset:
    """A lazy Dataset of a multi-window ensemble store (``xarray.open_zarr`` works as well).

    Checks that ``path`` is a genda ensemble store first (:meth:`EnsembleStore.open`).
    """
    EnsembleStore.open(path)
    # Opened so that a chunk file that cannot be decoded is named when it is read.
    with warnings.catch_warnings(), naming_reads():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        return xr.open_zarr(Path(path), zarr_format=3)


def _check_block(
    block: np.ndarray,
    block_info: dict[Any, Any] | None = None,
    *,
    expected: np.ndarray,
    windows: Sequence[str],
    path: Path,
    label: str,
) -> np.ndarray:
    """``block`` unchanged, or an error where data that must exist are missing or NaN.

    ``expected`` covers the leading axes of the whole queried array:
    ``(time, member)`` for members, ``(time,)`` for the statistic ``label``;
    where it is True, the rest of the block must be finite.
    """
    if block_info is None or block.size == 0:  # dask probing the output type
        return block
    lead = expected.ndim
    location = block_info[0]["array-location"][:lead]
    first = np.asarray([lo for lo, _ in location], dtype=int)
    wanted = expected[tuple(slice(lo, hi) for lo, hi in location)]
    finite = np.isfinite(block.reshape(*block.shape[:lead], -1)).all(axis=-1)
    bad = np.argwhere(wanted & ~finite) + first
    if bad.size == 0:
        return block
    window = int(bad[0, 0])
    if lead == 2:
        members = sorted(int(m) for t, m in bad if t == window)
        raise EnsembleStoreError(damaged_members_message(path, windows[window], members))
    raise EnsembleStoreError(
        f"window {windows[window]} of {path} is finalised but its {label} has missing or NaN "
        f"values (a chunk file was removed or damaged); 'genda validate --repair {path}' clears "
        "the statistics so that a rerun of the window computes them again"
    )


def _checked(
    da: xr.DataArray, expected: np.ndarray, windows: Sequence[str], path: Path, name: str
) -> xr.DataArray:
    """``da`` (lazy) whose blocks, when read, raise where ``expected`` data are missing or NaN."""
    data = da.data.map_blocks(
        _check_block,
        dtype=da.dtype,
        expected=expected,
        windows=list(windows),
        path=path,
        label=name,  # map_blocks takes name= itself
    )
    return da.copy(data=data)


def query(
    path: str | os.PathLike[str],
    var: str,
    alt_km: float,
    time: TimeLike | None = None,
    stat: QueryStat = "mean",
) -> xr.DataArray:
    """One variable at the level nearest ``alt_km``: a statistic or the members, lazily.

    Args:
        path: an ensemble store.
        var: a variable of the store (``u``, ``v``, ``T``).
        alt_km: altitude in km; the nearest level must lie within half a level
            spacing (:meth:`genda.grid.Grid.nearest_level`).
        time: one window; ``None``: every window (every finalised one for a statistic).
        stat: ``mean``, ``std``, ``q05``, ``q50``, ``q95`` or ``members``.

    Returns:
        ``(time, latitude, longitude)`` for a statistic, ``(time, member,
        latitude, longitude)`` for the members, without ``time`` when one is
        given; ``altitude`` stays as a scalar coordinate.

    Raises:
        KeyError: ``var`` is not in the store.
        ValueError: ``stat`` unknown, altitude off the levels, window not
            finalised (for a statistic) or absent.

    Reading the result raises :class:`~genda.storage.damage.DamagedFileError`
    (naming the file) where a chunk or shard file cannot be decoded, and
    :class:`EnsembleStoreError` (naming window and members) where a member
    flagged complete, or a finalised statistic, has missing or NaN data;
    ``genda validate --repair`` makes such a store whole for a rerun.
    """
    if stat not in get_args(QueryStat):
        raise InvalidValueError(f"stat must be one of {list(get_args(QueryStat))}, got {stat!r}")
    store = EnsembleStore.open(path)
    if var not in store.grid.variables:
        raise UnknownNameError(
            f"variable {var!r} is not in {path} (variables: {list(store.grid.variables)})"
        )
    level = store.grid.nearest_level(alt_km)
    ds = open_ensemble(path)
    da = ds[var if stat == "members" else f"{var}_{stat}"].isel(altitude=level)
    if time is not None:
        t = _as_time(time)
        index = store.window_index(t)
        if stat != "members" and not store.is_finalized(t):
            raise InvalidValueError(
                f"window {iso(t)} of {path} is not finalised; run finalize for its {stat}"
            )
        chosen, keys = [index], [iso(t)]
    else:
        times = store.windows()
        chosen = [store.window_index(w) for w in times]
        keys = [iso(w) for w in times]
        if stat != "members":
            kept = [
                (i, k) for i, k, w in zip(chosen, keys, times, strict=True) if store.is_finalized(w)
            ]
            if not kept:
                raise InvalidValueError(
                    f"{path} has no finalised window; run finalize for its {stat}"
                )
            chosen, keys = [i for i, _ in kept], [k for _, k in kept]
    # Reading a member flagged complete (or a finalised statistic) that is NaN is
    # an error, not a value: its file was removed or damaged.
    if stat == "members":
        flags = np.asarray(_open_group(store.path, "r")[COMPLETE][:], dtype=bool)[chosen]
        name = var
    else:
        one_member_std = stat == "std" and store.n_members == 1  # NaN by definition
        flags = np.full(len(chosen), not one_member_std)
        name = f"{var}_{stat}"
    selected = da.isel(time=chosen)
    selected = _checked(selected, flags, keys, store.path, name)
    return selected.isel(time=0) if time is not None else selected
