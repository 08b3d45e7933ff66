"""The on-disk layout of an ensemble store: arrays, attributes, time encoding, chunks and shards.

Layout (CF-1.10, readable with plain ``xarray.open_zarr``)::

    time                     (time,)    int64 seconds since 2000-01-01, grows by one per window
    member                   (member,)  0 .. N-1, fixed at creation
    altitude, latitude, longitude       the grid's coordinates (:meth:`genda.grid.Grid.coords`)
    lev, air_pressure        (altitude,) the vertical's CF auxiliaries, and p0 () (:meth:`~genda.grid.Grid.coords`)
    u, v, T                  (time, member, altitude, latitude, longitude)  float32 members
    complete                 (time, member)  bool, True once a member's data have landed
    u_mean, u_std, u_q05, u_q50, u_q95, ...
                             (time, altitude, latitude, longitude)  float32 statistics

Chunks and shards:

- a member chunk is one member x one variable x one time (the full field),
  a statistics chunk one field, a ``complete`` chunk one flag;
- with sharding (``members_per_shard`` = M > 1) a shard file holds M
  consecutive members of one variable at one time, and a ``complete`` shard
  the M matching flags. A window then costs ``(V + 1) * ceil(N / M)`` files
  instead of ``(V + 1) * N``.

Window provenance lives in the ``genda_windows`` global attribute, a JSON
object keyed by ISO time: ``{"provenance": {...}, "finalized": bool}``.

:class:`~genda.storage.ensemble_store.EnsembleStore` writes this layout,
:mod:`genda.storage.ensemble_query` reads it, :mod:`genda.storage.integrity`
checks and repairs it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import zarr

from genda.grid import VERTICAL_AUXILIARIES, Grid, lookup_variable
from genda.storage.archive import provenance_attrs
from genda.storage.damage import open_naming_group
from genda.storage.errors import EnsembleStoreError
from genda.times import TimeLike, as_datetime64

MEMBER_DIM = "member"
MEMBER_DIMS = ("time", MEMBER_DIM, "altitude", "latitude", "longitude")
"""Dimensions of a member variable."""
STAT_DIMS = ("time", "altitude", "latitude", "longitude")
"""Dimensions of a statistics variable."""

COMPLETE = "complete"
"""Name of the ``(time, member)`` completion mask."""

STORE_KIND = "ensemble"
STORE_VERSION = 1
KIND_ATTR = "genda_store"
VERSION_ATTR = "genda_store_version"
GRID_ATTR = "genda_grid"
MEMBERS_ATTR = "genda_members"
SHARD_ATTR = "genda_members_per_shard"
WINDOWS_ATTR = "genda_windows"
RESERVED_ATTRS = (KIND_ATTR, VERSION_ATTR, GRID_ATTR, MEMBERS_ATTR, SHARD_ATTR, WINDOWS_ATTR)

TIME_UNITS = "seconds since 2000-01-01 00:00:00"
_EPOCH = np.datetime64("2000-01-01T00:00:00", "s")
TIME_FILL = int(np.iinfo(np.int64).min)
"""Value of a time slot not yet written (a window whose registration was interrupted)."""
TIME_CHUNK = 1024
"""Chunk length of the ``time`` coordinate: years of 6-hourly windows in one small chunk."""

Stat = Literal["mean", "std", "q05", "q50", "q95"]
STATS: tuple[Stat, ...] = get_args(Stat)
QUANTILES: dict[str, float] = {"q05": 0.05, "q50": 0.50, "q95": 0.95}

AUTO_SHARD_MIN_MEMBERS = 32
"""Below this many members the store shards nothing by default (few files anyway)."""
AUTO_MEMBERS_PER_SHARD = 16
AUTO_SHARD_MAX_BYTES = 256 * 2**20
"""Upper bound of one shard file chosen by default (a writer holds one in memory)."""

LOCK_FILE = ".genda-metadata.lock"
"""File that serialises metadata updates
(:meth:`~genda.storage.ensemble_store.EnsembleStore.metadata_lock`). It lives
in the ``complete`` array's directory: Zarr lists only a group's directory for
members, so there it is invisible to readers (at the root Zarr warns of it)."""


# ---------------------------------------------------------------------------- time
def _as_time(time: TimeLike) -> np.datetime64:
    """``time`` as whole seconds; sub-second times are refused (the store encodes seconds)."""
    try:
        t = as_datetime64(time)
    except (TypeError, ValueError) as err:
        raise EnsembleStoreError(f"cannot read {time!r} as a time: {err}") from None
    if np.isnat(t):
        raise EnsembleStoreError("a window time cannot be NaT")
    seconds = t.astype("datetime64[s]")
    if seconds != t:
        raise EnsembleStoreError(f"window time {t} is not a whole second")
    return seconds


def _seconds(time: np.datetime64) -> int:
    return int((time - _EPOCH).astype(np.int64))


# ---------------------------------------------------------------------------- arrays
def auto_members_per_shard(members: int, field_bytes: int) -> int:
    """The default ``members_per_shard`` for ``members`` members of ``field_bytes`` each.

    1 (no sharding) below :data:`AUTO_SHARD_MIN_MEMBERS` members; otherwise
    :data:`AUTO_MEMBERS_PER_SHARD`, halved until a shard stays within
    :data:`AUTO_SHARD_MAX_BYTES`.
    """
    if members < AUTO_SHARD_MIN_MEMBERS:
        return 1
    per_shard = AUTO_MEMBERS_PER_SHARD
    while per_shard > 1 and per_shard * field_bytes > AUTO_SHARD_MAX_BYTES:
        per_shard //= 2
    return per_shard


def _open_group(path: Path, mode: Literal["r", "r+"]) -> zarr.Group:
    """The store's root group, read fresh from disk; a damaged chunk file it reads is named.

    Consolidated metadata is skipped: it may lag behind a window that the
    coordinator has just added, and writers must see the current shapes.
    Arrays read through :class:`~genda.storage.damage.NamingCodecPipeline`, so
    a file that cannot be decoded raises :class:`~genda.storage.damage.DamagedFileError`.
    """
    return open_naming_group(path, mode)


def time_array_names(variables: Sequence[str]) -> list[str]:
    """Every array with a ``time`` axis, the ``time`` coordinate last (the order a new window grows them)."""
    return [
        *variables,
        COMPLETE,
        *(f"{name}_{stat}" for name in variables for stat in STATS),
        "time",
    ]


def store_attrs(
    attrs: Mapping[str, Any] | None, grid: Grid, members: int, members_per_shard: int
) -> dict[str, Any]:
    """The global attributes of a new store: the caller's ``attrs``, provenance and the store's own.

    Raises:
        EnsembleStoreError: ``attrs`` uses a name the store reserves (:data:`RESERVED_ATTRS`).
    """
    user_attrs = dict(attrs or {})
    clash = sorted(set(user_attrs) & set(RESERVED_ATTRS))
    if clash:
        raise EnsembleStoreError(f"attributes {clash} are reserved for the store's own use")
    global_attrs = provenance_attrs(user_attrs, grid)
    global_attrs.update(
        {
            KIND_ATTR: STORE_KIND,
            VERSION_ATTR: STORE_VERSION,
            GRID_ATTR: json.dumps(grid.to_dict()),
            MEMBERS_ATTR: members,
            SHARD_ATTR: members_per_shard,
            WINDOWS_ATTR: json.dumps({}),
        }
    )
    return global_attrs


def read_store_attrs(path: Path, group: zarr.Group) -> tuple[Grid, int, int]:
    """``(grid, members, members_per_shard)`` of the store ``group`` at ``path``, after checking it.

    Raises:
        EnsembleStoreError: the group is not a genda ensemble store of this
            version, its attributes are damaged or it lacks arrays.
    """
    attrs = dict(group.attrs)
    if attrs.get(KIND_ATTR) != STORE_KIND:
        raise EnsembleStoreError(
            f"{path} is not a genda ensemble store (its {KIND_ATTR!r} attribute is "
            f"{attrs.get(KIND_ATTR)!r}, expected {STORE_KIND!r}); open other Zarr stores with xarray.open_zarr"
        )
    if attrs.get(VERSION_ATTR) != STORE_VERSION:
        raise EnsembleStoreError(
            f"{path} has ensemble store version {attrs.get(VERSION_ATTR)!r}; "
            f"this genda reads version {STORE_VERSION}"
        )
    try:
        grid = Grid.from_dict(json.loads(attrs[GRID_ATTR]))
        members = int(attrs[MEMBERS_ATTR])
        per_shard = int(attrs[SHARD_ATTR])
        json.loads(attrs[WINDOWS_ATTR])
    except (KeyError, TypeError, ValueError) as err:
        raise EnsembleStoreError(
            f"{path}: the store's attributes are damaged ({type(err).__name__}: {err})"
        ) from None
    expected = {
        MEMBER_DIM,
        "altitude",
        "latitude",
        "longitude",
        *time_array_names(grid.variables),
    }
    absent = sorted(expected - set(group.array_keys()))
    if absent:
        raise EnsembleStoreError(f"{path} lacks the arrays {absent}")
    return grid, members, per_shard


def create_layout(
    path: Path,
    grid: Grid,
    members: int,
    members_per_shard: int,
    attrs: Mapping[str, Any],
) -> None:
    """Write the empty arrays of a store (module docstring) with no time slots at ``path``."""
    _, nlev, nlat, nlon = grid.shape
    group = zarr.open_group(str(path), mode="w", zarr_format=3, attributes=dict(attrs))
    for name, var in grid.coords().items():
        array = group.create_array(
            name,
            shape=var.shape,
            dtype=np.float64,
            chunks=var.shape,
            attributes=dict(var.attrs),
            dimension_names=list(var.dims),
        )
        array[...] = var.values
    # CF lists auxiliary coordinates in the data variables' "coordinates" attribute;
    # xarray reads them back as coordinates (not data variables) from it.
    auxiliaries = {"coordinates": " ".join(sorted(VERTICAL_AUXILIARIES))}
    member = group.create_array(
        MEMBER_DIM,
        shape=(members,),
        dtype=np.int64,
        chunks=(members,),
        attributes={"standard_name": "realization", "long_name": "ensemble member index"},
        dimension_names=[MEMBER_DIM],
    )
    member[:] = np.arange(members)
    group.create_array(
        "time",
        shape=(0,),
        dtype=np.int64,
        chunks=(TIME_CHUNK,),
        fill_value=TIME_FILL,
        attributes={
            "standard_name": "time",
            "long_name": "time of the assimilation window",
            "axis": "T",
            "units": TIME_UNITS,
            "calendar": "proleptic_gregorian",
            # an unwritten slot (interrupted add_window) reads as NaT, not as a date
            "_FillValue": TIME_FILL,
        },
        dimension_names=["time"],
    )
    sharded = members_per_shard > 1
    member_chunks = (1, 1, nlev, nlat, nlon)
    for name in grid.variables:
        group.create_array(
            name,
            shape=(0, members, nlev, nlat, nlon),
            dtype=np.float32,
            chunks=member_chunks,
            shards=(1, members_per_shard, nlev, nlat, nlon) if sharded else None,
            fill_value=np.nan,
            attributes={**lookup_variable(name).cf_attrs(), **auxiliaries},
            dimension_names=list(MEMBER_DIMS),
        )
    group.create_array(
        COMPLETE,
        shape=(0, members),
        dtype=bool,
        chunks=(1, 1),
        shards=(1, members_per_shard) if sharded else None,
        fill_value=False,
        attributes={"long_name": "member data written completely"},
        dimension_names=["time", MEMBER_DIM],
    )
    for name in grid.variables:
        for stat, attributes in stat_attrs(name).items():
            group.create_array(
                f"{name}_{stat}",
                shape=(0, nlev, nlat, nlon),
                dtype=np.float32,
                chunks=(1, nlev, nlat, nlon),
                fill_value=np.nan,
                attributes={**attributes, **auxiliaries},
                dimension_names=list(STAT_DIMS),
            )


def stat_attrs(name: str) -> dict[str, dict[str, Any]]:
    """CF attributes of the statistics of variable ``name``, by statistic."""
    cf = lookup_variable(name).cf_attrs()
    out: dict[str, dict[str, Any]] = {
        "mean": {
            **cf,
            "long_name": f"ensemble mean of {cf['long_name']}",
            "cell_methods": "member: mean",
        },
        "std": {
            "units": cf["units"],
            "long_name": f"ensemble standard deviation of {cf['long_name']} (ddof=1)",
            "cell_methods": "member: standard_deviation",
        },
    }
    for stat, q in QUANTILES.items():
        # CF has no cell method for quantiles: the level travels as an attribute.
        out[stat] = {
            **cf,
            "long_name": f"ensemble {round(100 * q)} % quantile of {cf['long_name']}",
            "quantile": q,
        }
    return out
