"""A resumable Zarr v3 store of posterior ensembles over many assimilation windows.

Layout (CF-1.10, readable with plain ``xarray.open_zarr``)::

    time                     (time,)    int64 seconds since 2000-01-01, grows by one per window
    member                   (member,)  0 .. N-1, fixed at creation
    altitude, latitude, longitude       the grid's coordinates (:meth:`genda.grid.Grid.coords`)
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

The writer rule: a shard is read, modified and replaced as a whole, so two
processes writing different members of one shard at the same time lose one
of the writes (zarr-python issue 3682). **All members of one shard of one
window go to one writer at a time**: :meth:`EnsembleStore.shard_batches`
splits a member list into such batches. With ``members_per_shard=1`` the
store uses no sharding and any assignment of members to writers is safe.

Crash safety: :meth:`EnsembleStore.write_members` writes the member data
first and flips their ``complete`` flags only afterwards. Every chunk or
shard file is replaced atomically (Zarr's local store writes a temporary
file and renames it), so a member flagged complete has its data on disk; a
member whose flag is unset is recomputed by a rerun (:meth:`missing`), and
writing it again is harmless because a member's data depend only on its
seed. Metadata updates (new windows, provenance, finalisation) take the
store's lock (:meth:`EnsembleStore.metadata_lock`), so several drivers may
add and finalise windows of one store at once; :meth:`write_members` needs
no lock. Files damaged or removed behind genda's back are found by
:meth:`validate`, reported by every read (:mod:`genda.storage.damage`) and
made good for a rerun by :meth:`repair` (:mod:`genda.storage.integrity`).

Window provenance lives in the ``genda_windows`` global attribute, a JSON
object keyed by ISO time: ``{"provenance": {...}, "finalized": bool}``.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
import xarray as xr
import zarr

from genda.atomic import partial_path, publish_directory, remove_path
from genda.errors import InvalidValueError, MissingInputError, OutputExistsError, UnknownNameError
from genda.grid import Grid, lookup_variable
from genda.ownership import check_replaceable
from genda.storage.archive import consolidate, provenance_attrs
from genda.storage.damage import naming_reads, open_naming_group
from genda.storage.errors import ArchiveError

if TYPE_CHECKING:
    from genda.storage.integrity import StoreCheck, StoreRepair

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
_RESERVED_ATTRS = (KIND_ATTR, VERSION_ATTR, GRID_ATTR, MEMBERS_ATTR, SHARD_ATTR, WINDOWS_ATTR)

TIME_UNITS = "seconds since 2000-01-01 00:00:00"
_EPOCH = np.datetime64("2000-01-01T00:00:00", "s")
TIME_FILL = int(np.iinfo(np.int64).min)
"""Value of a time slot not yet written (a window whose registration was interrupted)."""
TIME_CHUNK = 1024
"""Chunk length of the ``time`` coordinate: years of 6-hourly windows in one small chunk."""

Stat = Literal["mean", "std", "q05", "q50", "q95"]
STATS: tuple[Stat, ...] = get_args(Stat)
QUANTILES: dict[str, float] = {"q05": 0.05, "q50": 0.50, "q95": 0.95}
QueryStat = Literal["mean", "std", "q05", "q50", "q95", "members"]

AUTO_SHARD_MIN_MEMBERS = 32
"""Below this many members the store shards nothing by default (few files anyway)."""
AUTO_MEMBERS_PER_SHARD = 16
AUTO_SHARD_MAX_BYTES = 256 * 2**20
"""Upper bound of one shard file chosen by default (a writer holds one in memory)."""

LOCK_FILE = ".genda-metadata.lock"
"""File that serialises metadata updates (:meth:`EnsembleStore.metadata_lock`). It lives
in the ``complete`` array's directory: Zarr lists only a group's directory for
members, so there it is invisible to readers (at the root Zarr warns of it)."""

FINALIZE_MEMORY_BYTES = 256 * 2**20
"""Working memory of :meth:`EnsembleStore.finalize` (float64 copies of an altitude block)."""


class EnsembleStoreError(ArchiveError):
    """An ensemble store is missing, not ours, inconsistent, or asked for something it lacks."""


# ---------------------------------------------------------------------------- helpers
TimeLike = np.datetime64 | datetime | str


def _as_time(time: TimeLike) -> np.datetime64:
    """``time`` as whole seconds; sub-second times are refused (the store encodes seconds)."""
    try:
        t = np.datetime64(time, "ns")
    except (TypeError, ValueError) as err:
        raise EnsembleStoreError(f"cannot read {time!r} as a time: {err}") from None
    if np.isnat(t):
        raise EnsembleStoreError("a window time cannot be NaT")
    seconds = t.astype("datetime64[s]")
    if seconds != t:
        raise EnsembleStoreError(f"window time {t} is not a whole second")
    return seconds


def _iso(time: np.datetime64) -> str:
    return str(np.datetime_as_string(time, unit="s"))


def _seconds(time: np.datetime64) -> int:
    return int((time - _EPOCH).astype(np.int64))


def _canonical(value: Any, what: str) -> Any:
    """``value`` through JSON, so tuples and lists, numpy and Python numbers compare alike."""
    try:
        return json.loads(json.dumps(value, sort_keys=True, default=_json_default))
    except (TypeError, ValueError) as err:
        raise EnsembleStoreError(f"{what} is not JSON-serialisable: {err}") from None


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike | datetime | np.datetime64):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _provenance_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Keys whose values differ, or that only one side has, sorted."""
    keys = set(old) | set(new)
    return sorted(k for k in keys if k not in old or k not in new or old[k] != new[k])


def _runs(indices: Sequence[int]) -> Iterator[tuple[int, int, int]]:
    """Contiguous runs of sorted ``indices`` as ``(start, stop, offset in indices)``."""
    start = 0
    for i in range(1, len(indices) + 1):
        if i == len(indices) or indices[i] != indices[i - 1] + 1:
            yield indices[start], indices[i - 1] + 1, start
            start = i


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


def damaged_members_message(path: Path, window: str, members: Sequence[int], what: str = "") -> str:
    """The error for members flagged complete whose data are missing or NaN."""
    shown = ", ".join(map(str, members[:20])) + (" ..." if len(members) > 20 else "")
    return (
        f"window {window} of {path}: member{'s' if len(members) > 1 else ''} {shown} "
        f"{'are' if len(members) > 1 else 'is'} flagged complete but {what or 'the'} data are "
        f"missing or NaN (a chunk file was removed or damaged); 'genda validate --repair {path}' "
        "clears the flags so that a rerun of the window regenerates them"
    )


def nearest_level(altitude: np.ndarray, alt_km: float) -> int:
    """Index of the level nearest ``alt_km``; an error if it is more than half a level spacing away.

    The spacing is that of the interval on the requested side of the nearest
    level (the outermost interval beyond the column); a one-level grid
    accepts only its own altitude.
    """
    altitude = np.asarray(altitude, dtype=np.float64)
    if not math.isfinite(alt_km):
        raise InvalidValueError(f"altitude must be a finite number of km, got {alt_km}")
    index = int(np.argmin(np.abs(altitude - alt_km)))
    if altitude.size == 1:
        tolerance = 1e-6
    else:
        upper = alt_km > altitude[index]
        if (upper and index + 1 < altitude.size) or index == 0:
            spacing = altitude[index + 1] - altitude[index]
        else:
            spacing = altitude[index] - altitude[index - 1]
        tolerance = 0.5 * float(spacing) + 1e-9
    distance = abs(float(altitude[index]) - alt_km)
    if distance > tolerance:
        raise InvalidValueError(
            f"altitude {alt_km:g} km is {distance:.3g} km from the nearest level "
            f"({altitude[index]:g} km); the levels span {altitude[0]:g}-{altitude[-1]:g} km and a "
            f"query must lie within half a level spacing ({tolerance:.3g} km) of one"
        )
    return index


def _open_group(path: Path, mode: Literal["r", "r+"]) -> zarr.Group:
    """The store's root group, read fresh from disk; a damaged chunk file it reads is named.

    Consolidated metadata is skipped: it may lag behind a window that the
    coordinator has just added, and writers must see the current shapes.
    Arrays read through :class:`~genda.storage.damage.NamingCodecPipeline`, so
    a file that cannot be decoded raises :class:`~genda.storage.damage.DamagedFileError`.
    """
    return open_naming_group(path, mode)


# ---------------------------------------------------------------------------- the store
class EnsembleStore:
    """Posterior ensembles of many windows in one Zarr v3 store (module docstring).

    The object holds only the path and what is fixed at creation (grid,
    members, shard size), so it pickles cheaply to worker processes; every
    operation reads the store's current state from disk.

    Attributes:
        path: the store (a directory).
        grid: the grid of every member.
        n_members: ``N``, members per window.
        members_per_shard: ``M``, consecutive members per shard file (1: no sharding).
    """

    def __init__(self, path: Path, grid: Grid, n_members: int, members_per_shard: int) -> None:
        self.path = Path(path)
        self.grid = grid
        self.n_members = int(n_members)
        self.members_per_shard = int(members_per_shard)

    def __repr__(self) -> str:
        return (
            f"EnsembleStore({str(self.path)!r}, members={self.n_members}, "
            f"members_per_shard={self.members_per_shard}, grid shape={self.grid.shape})"
        )

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        grid: Grid,
        members: int,
        attrs: Mapping[str, Any] | None = None,
        *,
        members_per_shard: int | None = None,
        overwrite: bool = False,
    ) -> EnsembleStore:
        """Create an empty store (no windows) for ensembles of ``members`` members on ``grid``.

        Args:
            path: the store to create (a directory).
            grid: coordinates, variables and CF attributes of every member.
            members: ``N``, members per window; ``member`` runs 0 .. N-1.
            attrs: global attributes (title, institution, ...); dicts become JSON strings.
            members_per_shard: consecutive members per shard file; 1 turns sharding
                off; ``None`` picks :func:`auto_members_per_shard`. See the
                writer rule in the module docstring.
            overwrite: replace an existing genda ensemble store at ``path``.

        Raises:
            OutputExistsError: ``path`` exists and ``overwrite`` is false, or it
                is not a genda ensemble store (:func:`genda.ownership.check_replaceable`).
            EnsembleStoreError: bad ``members``, ``members_per_shard`` or ``attrs``.

        The store is built in a sibling directory and renamed into place, so a
        failed creation leaves nothing at ``path``.
        """
        path = Path(path)
        check_replaceable(path, "ensemble store", overwrite)  # never a foreign directory
        if isinstance(members, bool) or not isinstance(members, int | np.integer) or members < 1:
            raise EnsembleStoreError(f"members must be a positive integer, got {members!r}")
        members = int(members)
        _, nlev, nlat, nlon = grid.shape
        field_bytes = nlev * nlat * nlon * np.dtype(np.float32).itemsize
        if members_per_shard is None:
            members_per_shard = auto_members_per_shard(members, field_bytes)
        if (
            isinstance(members_per_shard, bool)
            or not isinstance(members_per_shard, int | np.integer)
            or members_per_shard < 1
        ):
            raise EnsembleStoreError(
                f"members_per_shard must be a positive integer, got {members_per_shard!r}"
            )
        members_per_shard = min(int(members_per_shard), members)
        user_attrs = dict(attrs or {})
        clash = sorted(set(user_attrs) & set(_RESERVED_ATTRS))
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
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = partial_path(path)
        remove_path(partial)
        try:
            _create_layout(partial, grid, members, members_per_shard, global_attrs)
            consolidate(partial)
            publish_directory(partial, path, replace=overwrite)
        except BaseException:
            remove_path(partial)
            raise
        return cls(path, grid, members, members_per_shard)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> EnsembleStore:
        """Open an existing store; a clear error when ``path`` is not a genda ensemble store."""
        path = Path(path)
        if not path.exists():
            raise MissingInputError(f"no ensemble store at {path}")
        try:
            group = _open_group(path, "r")
        except Exception as err:  # zarr raises several types for "not a v3 group"
            raise EnsembleStoreError(
                f"{path} is not a Zarr v3 store ({type(err).__name__}: {err})"
            ) from None
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
            "time",
            MEMBER_DIM,
            "altitude",
            "latitude",
            "longitude",
            COMPLETE,
            *grid.variables,
            *(f"{name}_{stat}" for name in grid.variables for stat in STATS),
        }
        absent = sorted(expected - set(group.array_keys()))
        if absent:
            raise EnsembleStoreError(f"{path} lacks the arrays {absent}")
        return cls(path, grid, members, per_shard)

    @classmethod
    def open_or_create(
        cls,
        path: str | os.PathLike[str],
        grid: Grid,
        members: int,
        attrs: Mapping[str, Any] | None = None,
        *,
        members_per_shard: int | None = None,
        overwrite: bool = False,
    ) -> EnsembleStore:
        """The store at ``path``, created when absent (or when ``overwrite``) with :meth:`create`.

        An existing store must be on ``grid`` with ``members`` members per
        window; otherwise the error says what differs (its ``attrs`` are kept).
        """
        path = Path(path)
        if overwrite or not (path.exists() or path.is_symlink()):
            try:
                return cls.create(
                    path,
                    grid,
                    members,
                    attrs,
                    members_per_shard=members_per_shard,
                    overwrite=overwrite,
                )
            except OutputExistsError:
                if overwrite:
                    raise
                # another run created it meanwhile: add to that store instead
        store = cls.open(path)
        differ = store.grid.differences(grid)
        if differ:
            raise EnsembleStoreError(
                f"{path} holds ensembles on another grid ({'; '.join(differ)}); "
                "use another store or --overwrite"
            )
        if store.n_members != members:
            raise EnsembleStoreError(
                f"{path} holds {store.n_members} members per window, {members} were asked for; "
                f"ask for {store.n_members}, or use another store or --overwrite"
            )
        return store

    @contextmanager
    def metadata_lock(self) -> Iterator[None]:
        """Hold the store's metadata lock: one window registration or finalisation at a time.

        An exclusive ``flock`` on :data:`LOCK_FILE`, so windows may be added
        and finalised from several threads or processes (concurrent cycles);
        member writes need no lock (the writer rule). ``flock`` holds on
        local file systems and on NFS v4 and Lustre mounted with locking.
        """
        with open(self.path / COMPLETE / LOCK_FILE, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # ------------------------------------------------------------------ windows
    def _windows(self, group: zarr.Group | None = None) -> dict[str, dict[str, Any]]:
        group = group if group is not None else _open_group(self.path, "r")
        return json.loads(group.attrs[WINDOWS_ATTR])

    def _times(self, group: zarr.Group) -> np.ndarray:
        """``(T,)`` int64 seconds since 2000-01-01 of every time slot (:data:`TIME_FILL` if unset)."""
        return np.asarray(group["time"][:], dtype=np.int64)

    def windows(self) -> list[np.datetime64]:
        """Times of the registered windows, in store order."""
        group = _open_group(self.path, "r")
        registered = self._windows(group)
        times = self._times(group)
        out = []
        for seconds in times:
            if seconds == TIME_FILL:
                continue
            t = _EPOCH + np.timedelta64(int(seconds), "s")
            if _iso(t) in registered:
                out.append(t)
        return out

    def window_index(self, time: TimeLike) -> int:
        """Index along ``time`` of a registered window; a clear error for an unknown one."""
        return self._locate(_open_group(self.path, "r"), _as_time(time))

    def _locate(self, group: zarr.Group, t: np.datetime64) -> int:
        found = np.flatnonzero(self._times(group) == _seconds(t))
        if found.size == 0 or _iso(t) not in self._windows(group):
            known = [_iso(w) for w in self.windows()]
            shown = ", ".join(known[-5:]) if known else "none"
            raise EnsembleStoreError(
                f"window {_iso(t)} is not in {self.path} (add it with add_window first; "
                f"{len(known)} windows, latest: {shown})"
            )
        return int(found[0])

    def provenance(self, time: TimeLike) -> dict[str, Any]:
        """The provenance recorded for a window."""
        t = _as_time(time)
        group = _open_group(self.path, "r")
        self._locate(group, t)
        return self._windows(group)[_iso(t)]["provenance"]

    def is_finalized(self, time: TimeLike) -> bool:
        """Whether :meth:`finalize` has written the window's statistics."""
        t = _as_time(time)
        group = _open_group(self.path, "r")
        self._locate(group, t)
        return bool(self._windows(group)[_iso(t)].get("finalized", False))

    def _time_arrays(self, group: zarr.Group) -> list[zarr.Array]:
        """Every array with a ``time`` axis, the ``time`` coordinate last (see :meth:`add_window`)."""
        names = [
            *self.grid.variables,
            COMPLETE,
            *(f"{name}_{stat}" for name in self.grid.variables for stat in STATS),
            "time",
        ]
        return [group[name] for name in names]

    def add_window(self, time: TimeLike, provenance: Mapping[str, Any]) -> int:
        """Register a window (one more slot along ``time``) and its provenance; returns its index.

        Args:
            time: the window's time (whole seconds).
            provenance: what determines the members, e.g. ``checkpoint`` (fingerprint),
                ``observations`` (fingerprint of the observation set), ``method``,
                ``steps``, ``seed``, ``genda_version``. Keep run-dependent values
                (timings, host names) out: a rerun compares them.

        Adding a window that exists returns its index if ``provenance`` is the
        one recorded, and raises otherwise, naming the keys that differ: members
        sampled with other settings must not be mixed into one ensemble. A
        window without any complete member takes the new provenance instead.

        The slot is added in this order: every array grows by one (the ``time``
        coordinate last), the time value is written, the provenance recorded.
        A registration cut short leaves a last slot without provenance, which
        the next call reuses (and :meth:`validate` reports meanwhile). The
        store's metadata lock makes concurrent registrations wait their turn.
        """
        t = _as_time(time)
        key = _iso(t)
        if not isinstance(provenance, Mapping):
            raise EnsembleStoreError(
                f"provenance must be a mapping, got {type(provenance).__name__}"
            )
        record = _canonical(dict(provenance), f"provenance of window {key}")
        with self.metadata_lock():
            return self._add_window(t, record)

    def _add_window(self, t: np.datetime64, record: dict[str, Any]) -> int:
        key = _iso(t)
        group = _open_group(self.path, "r+")
        arrays = self._time_arrays(group)
        length = max(a.shape[0] for a in arrays)
        for array in arrays:  # finish a registration that stopped half way through resizing
            if array.shape[0] != length:
                array.resize((length, *array.shape[1:]))
        times = self._times(group)
        windows = self._windows(group)
        found = np.flatnonzero(times == _seconds(t))
        if found.size:
            index = int(found[0])
            if key in windows:
                old = windows[key]["provenance"]
                differ = _provenance_differences(old, record)
                # A window no member was written for holds nothing to mix with:
                # it is registered again under the new settings.
                if differ and not np.any(group[COMPLETE][index]):
                    windows[key] = {"provenance": record, "finalized": False}
                    group.attrs[WINDOWS_ATTR] = json.dumps(windows, sort_keys=True)
                    consolidate(self.path)
                    return index
                if differ:
                    details = "; ".join(
                        f"{k}: stored {old.get(k, '<absent>')!r}, given {record.get(k, '<absent>')!r}"
                        for k in differ
                    )
                    raise EnsembleStoreError(
                        f"window {key} is in {self.path} with other provenance ({details}); "
                        "members of different settings must not be mixed: use another store "
                        "or the stored settings"
                    )
                return index
        else:
            index = length
            last_orphan = (
                length > 0
                and (
                    times[-1] == TIME_FILL
                    or _iso(_EPOCH + np.timedelta64(int(times[-1]), "s")) not in windows
                )
                and not np.any(group[COMPLETE][length - 1])
            )
            if last_orphan:
                index = length - 1
            else:
                for array in arrays:
                    array.resize((length + 1, *array.shape[1:]))
            group["time"][index] = _seconds(t)
        windows[key] = {"provenance": record, "finalized": False}
        group.attrs[WINDOWS_ATTR] = json.dumps(windows, sort_keys=True)
        consolidate(self.path)
        return index

    # ------------------------------------------------------------------ members
    def shard_of(self, member: int) -> int:
        """The shard (along ``member``) that holds ``member``."""
        return int(member) // self.members_per_shard

    def shard_batches(self, members: Sequence[int] | None = None) -> list[list[int]]:
        """``members`` (default: all) grouped by shard, sorted: each list goes to one writer.

        Giving each list to a single writer keeps the writer rule (module
        docstring) whatever the members are, e.g. the :meth:`missing` ones of a rerun.
        """
        chosen = range(self.n_members) if members is None else sorted({int(m) for m in members})
        batches: dict[int, list[int]] = {}
        for member in chosen:
            self._check_member(member)
            batches.setdefault(self.shard_of(member), []).append(member)
        return [batches[k] for k in sorted(batches)]

    def _check_member(self, member: int) -> None:
        if not 0 <= member < self.n_members:
            raise EnsembleStoreError(
                f"member {member} is outside 0..{self.n_members - 1} of {self.path}"
            )

    def write_members(
        self,
        time: TimeLike,
        members: Sequence[int],
        fields: np.ndarray,
        provenance: Mapping[str, Any] | None = None,
    ) -> None:
        """Write members of a registered window, then flag them complete.

        Args:
            time: a window added with :meth:`add_window`, not finalised.
            members: ``(n,)`` distinct member indices in ``0 .. N-1``, any order.
            fields: ``(n, V, L, H, W)`` physical fields of those members, in that order.
            provenance: the provenance the members were made under; when given it
                must still be the window's, just before the data are written and
                again before they are flagged. A window with no complete member
                may be registered again under other settings (:meth:`add_window`):
                a run that is still sampling under the old ones then stops.

        Every check runs before anything is written: shapes, member range and
        uniqueness, finiteness (NaN or infinite values -> error naming the
        members and variables, nothing written). Members may be written again
        (the data are replaced). Safe from several processes at once when
        they keep the writer rule of the module docstring.
        """
        t = _as_time(time)
        indices = [int(m) for m in members]
        data = np.asarray(fields)
        if len(indices) == 0:
            raise EnsembleStoreError("write_members needs at least one member")
        if len(set(indices)) != len(indices):
            dup = sorted({m for m in indices if indices.count(m) > 1})
            raise EnsembleStoreError(f"members {dup} are given more than once")
        for member in indices:
            self._check_member(member)
        expected = (len(indices), *self.grid.shape)
        if data.shape != expected:
            raise EnsembleStoreError(
                f"fields have shape {data.shape}, expected (n, V, L, H, W) = {expected} "
                f"for {len(indices)} members on this store's grid"
            )
        if not np.issubdtype(data.dtype, np.number) or np.issubdtype(
            data.dtype, np.complexfloating
        ):
            raise EnsembleStoreError(f"fields must be real numbers, got dtype {data.dtype}")
        data32 = data.astype(np.float32)
        # Checked after the cast: float64 values beyond float32's range become inf.
        finite = np.isfinite(data32).reshape(len(indices), len(self.grid.variables), -1)
        if not finite.all():
            bad = [
                f"member {indices[i]} variable {self.grid.variables[v]!r}: "
                f"{int((~finite[i, v]).sum())} values"
                for i, v in zip(*np.nonzero(~finite.all(axis=2)), strict=True)
            ]
            raise EnsembleStoreError(
                f"fields contain NaN or infinite values (or values beyond float32) "
                f"({'; '.join(bad[:8])}{' ...' if len(bad) > 8 else ''}); nothing written"
            )
        group = _open_group(self.path, "r+")
        index = self._locate(group, t)
        if self._windows(group)[_iso(t)].get("finalized", False):
            raise EnsembleStoreError(
                f"window {_iso(t)} is finalised; its statistics would no longer match new members"
            )
        order = np.argsort(indices, kind="stable")
        sorted_members = [indices[i] for i in order]
        data32 = data32[order]
        runs = list(_runs(sorted_members))
        self._check_provenance(t, provenance, sorted_members)
        for v, name in enumerate(self.grid.variables):
            array = group[name]
            for start, stop, offset in runs:
                array[index, start:stop] = data32[offset : offset + stop - start, v]
        self._check_provenance(t, provenance, sorted_members)
        self._mark_complete(group, index, runs)

    def _check_provenance(
        self, t: np.datetime64, provenance: Mapping[str, Any] | None, members: Sequence[int]
    ) -> None:
        """Refuse members made under a provenance the window no longer has."""
        if provenance is None:
            return
        record = _canonical(dict(provenance), f"provenance of window {_iso(t)}")
        differ = _provenance_differences(self.provenance(t), record)
        if differ:
            raise EnsembleStoreError(
                f"window {_iso(t)} was registered again under other settings ({', '.join(differ)}) "
                f"while members {members[0]}..{members[-1]} were made; they are not flagged "
                "complete: run the window again with the settings you want"
            )

    def _mark_complete(
        self, group: zarr.Group, index: int, runs: Sequence[tuple[int, int, int]]
    ) -> None:
        """Flag members complete; called only after all of their data are written."""
        mask = group[COMPLETE]
        for start, stop, _ in runs:
            mask[index, start:stop] = True

    def complete(self, time: TimeLike) -> np.ndarray:
        """``(N,)`` bool: which members of the window are written."""
        group = _open_group(self.path, "r")
        index = self._locate(group, _as_time(time))
        return np.asarray(group[COMPLETE][index], dtype=bool)

    def read_members(self, time: TimeLike, members: Sequence[int] | None = None) -> np.ndarray:
        """``(n, V, L, H, W)`` float32 members of a window (default: all), in the order given.

        Members not yet written read as NaN (see :meth:`missing`).

        Raises:
            DamagedFileError: a chunk or shard file cannot be decoded (it is named).
            EnsembleStoreError: a member flagged complete has missing or NaN data
                (:meth:`repair` clears its flag so that a rerun regenerates it).
        """
        t = _as_time(time)
        group = _open_group(self.path, "r")
        index = self._locate(group, t)
        chosen = list(range(self.n_members)) if members is None else [int(m) for m in members]
        for member in chosen:
            self._check_member(member)
        out = np.empty((len(chosen), *self.grid.shape), np.float32)
        for v, name in enumerate(self.grid.variables):
            array = group[name]
            for i, member in enumerate(chosen):
                out[i, v] = array[index, member]
        flags = np.asarray(group[COMPLETE][index], dtype=bool)
        finite = np.isfinite(out.reshape(len(chosen), -1)).all(axis=1)
        damaged = sorted({m for m, ok in zip(chosen, finite, strict=True) if flags[m] and not ok})
        if damaged:
            raise EnsembleStoreError(damaged_members_message(self.path, _iso(t), damaged))
        return out

    def missing(self, time: TimeLike) -> list[int]:
        """Members of the window still to write (not flagged complete), ascending."""
        return [int(m) for m in np.flatnonzero(~self.complete(time))]

    # ------------------------------------------------------------------ statistics
    def _level_blocks(self) -> list[slice]:
        """Altitude blocks whose float64 copies of all members fit :data:`FINALIZE_MEMORY_BYTES`."""
        _, nlev, nlat, nlon = self.grid.shape
        # members (float64) plus np.quantile's sorted copy
        per_level = 2 * self.n_members * nlat * nlon * np.dtype(np.float64).itemsize
        step = max(1, min(nlev, FINALIZE_MEMORY_BYTES // max(per_level, 1)))
        return [slice(lo, min(lo + step, nlev)) for lo in range(0, nlev, step)]

    def finalize(self, time: TimeLike) -> None:
        """Write the window's statistics beside its members and mark it finalised.

        ``<var>_mean``, ``<var>_std`` (``ddof=1``; NaN for a one-member
        ensemble), ``<var>_q05``, ``<var>_q50``, ``<var>_q95`` (linear
        interpolation between members), computed in float64 and stored as
        float32. A finalised window is left as it is.

        Raises:
            EnsembleStoreError: members are missing (they are named), or a member
                flagged complete has NaN or missing data (nothing is written then).
        """
        with self.metadata_lock():
            self._finalize(_as_time(time))

    def _finalize(self, t: np.datetime64) -> None:
        key = _iso(t)
        group = _open_group(self.path, "r+")
        index = self._locate(group, t)
        if self._windows(group)[key].get("finalized", False):
            return
        missing = [int(m) for m in np.flatnonzero(~np.asarray(group[COMPLETE][index], bool))]
        if missing:
            shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
            raise EnsembleStoreError(
                f"window {key} of {self.path} lacks {len(missing)} of {self.n_members} members "
                f"({shown}); write them (see missing()) before finalising"
            )
        _, nlev, nlat, nlon = self.grid.shape
        results: dict[str, np.ndarray] = {}
        corrupt: set[tuple[int, str]] = set()
        for name in self.grid.variables:
            out = {stat: np.empty((nlev, nlat, nlon), np.float32) for stat in STATS}
            for block in self._level_blocks():
                members = np.asarray(group[name][index, :, block], dtype=np.float64)
                bad = ~np.isfinite(members).reshape(self.n_members, -1).all(axis=1)
                corrupt.update((int(m), name) for m in np.flatnonzero(bad))
                out["mean"][block] = members.mean(axis=0)
                out["std"][block] = (
                    members.std(axis=0, ddof=1)
                    if self.n_members > 1
                    else np.full_like(
                        members[0], np.nan
                    )  # one member has no spread (the scores' NaN)
                )
                q = np.quantile(members, [QUANTILES[s] for s in ("q05", "q50", "q95")], axis=0)
                for i, stat in enumerate(("q05", "q50", "q95")):
                    out[stat][block] = q[i]
            results.update({f"{name}_{stat}": field for stat, field in out.items()})
        if corrupt:
            listed = "; ".join(f"member {m} variable {v!r}" for m, v in sorted(corrupt)[:8])
            raise EnsembleStoreError(
                f"window {key}: members flagged complete have NaN or missing data ({listed}); "
                "nothing was finalised: repair() (genda validate --repair) clears their flags "
                "so that a rerun regenerates them"
            )
        for name, field in results.items():
            group[name][index] = field
        windows = self._windows(group)
        windows[key]["finalized"] = True
        group.attrs[WINDOWS_ATTR] = json.dumps(windows, sort_keys=True)
        consolidate(self.path)

    # ------------------------------------------------------------------ checks
    def validate(self) -> StoreCheck:
        """Every problem of the store, as a :class:`~genda.storage.integrity.StoreCheck`.

        Never raises for damaged data: members flagged complete whose data are
        missing, undecodable (the file is named) or not finite, damaged or
        premature statistics, interrupted registrations, stale consolidated
        metadata are all reported (``check.problems``, one sentence each; empty:
        the store is consistent). Reads every member flagged complete: meant for
        checks after a run, a crash or a copy, not for a loop. Members not
        flagged complete are not problems (a rerun writes them).
        """
        from genda.storage.integrity import check_store

        return check_store(self)

    def repair(self, check: StoreCheck | None = None) -> StoreRepair:
        """Remove undecodable files, unflag damaged members, un-finalise their windows.

        A rerun of each window then regenerates the unflagged members (bit for
        bit: a member's data depend only on its seed) and its statistics. See
        :func:`genda.storage.integrity.repair_store`.
        """
        from genda.storage.integrity import repair_store

        return repair_store(self, check)

    def recheck(self, time: TimeLike) -> list[int]:
        """Re-check the window's complete members; unflag (with a warning) and return the damaged ones.

        Called before a window is completed, so that a rerun regenerates
        damaged members instead of keeping them
        (:func:`genda.storage.integrity.recheck_window`).
        """
        from genda.storage.integrity import recheck_window

        return recheck_window(self, time)

    def _consolidation_problems(self, lengths: Mapping[str, int]) -> list[str]:
        """Arrays whose consolidated shape (what ``xarray.open_zarr`` reads) lags the real one."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
            group = zarr.open_group(str(self.path), mode="r", zarr_format=3)
        consolidated = group.metadata.consolidated_metadata
        if consolidated is None:
            return ["the store has no consolidated metadata (run add_window or finalize again)"]
        stale = sorted(
            name
            for name, n in lengths.items()
            if name not in consolidated.metadata or consolidated.metadata[name].shape[0] != n  # type: ignore[union-attr]
        )
        if stale:
            return [
                f"consolidated metadata is stale for {stale} (run add_window or finalize again)"
            ]
        return []


def _create_layout(
    path: Path,
    grid: Grid,
    members: int,
    members_per_shard: int,
    attrs: Mapping[str, Any],
) -> None:
    """Write the empty arrays of a store (module docstring) with no time slots."""
    _, nlev, nlat, nlon = grid.shape
    group = zarr.open_group(str(path), mode="w", zarr_format=3, attributes=dict(attrs))
    for name, var in grid.coords().items():
        array = group.create_array(
            name,
            shape=var.shape,
            dtype=np.float64,
            chunks=var.shape,
            attributes=dict(var.attrs),
            dimension_names=[name],
        )
        array[:] = var.values
    member = group.create_array(
        MEMBER_DIM,
        shape=(members,),
        dtype=np.int64,
        chunks=(members,),
        attributes={"long_name": "ensemble member index"},
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
            attributes=lookup_variable(name).cf_attrs(),
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
        for stat, stat_attrs in _stat_attrs(name).items():
            group.create_array(
                f"{name}_{stat}",
                shape=(0, nlev, nlat, nlon),
                dtype=np.float32,
                chunks=(1, nlev, nlat, nlon),
                fill_value=np.nan,
                attributes=stat_attrs,
                dimension_names=list(STAT_DIMS),
            )


def _stat_attrs(name: str) -> dict[str, dict[str, Any]]:
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


# ---------------------------------------------------------------------------- reading
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
            spacing (:func:`nearest_level`).
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
    level = nearest_level(store.grid.altitude, alt_km)
    ds = open_ensemble(path)
    da = ds[var if stat == "members" else f"{var}_{stat}"].isel(altitude=level)
    if time is not None:
        t = _as_time(time)
        index = store.window_index(t)
        if stat != "members" and not store.is_finalized(t):
            raise InvalidValueError(
                f"window {_iso(t)} of {path} is not finalised; run finalize for its {stat}"
            )
        chosen, keys = [index], [_iso(t)]
    else:
        times = store.windows()
        chosen = [store.window_index(w) for w in times]
        keys = [_iso(w) for w in times]
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


def to_file(da: xr.DataArray, path: str | os.PathLike[str]) -> Path:
    """Write a query result to ``.csv`` (one row per point) or ``.nc`` (CF NetCDF); returns ``path``.

    The file appears complete or not at all (written beside it, then renamed).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".nc"):
        raise InvalidValueError(
            f"cannot write {path}: the file must end in .csv or .nc, not {suffix!r}"
        )
    name = str(da.name) if da.name is not None else "value"
    # Zarr encodings (chunks, shards, codecs) mean nothing to CSV or NetCDF.
    clean = da.copy()
    clean.encoding = {}
    for coord in clean.coords.values():
        coord.encoding = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
    try:
        if suffix == ".csv":
            clean.to_dataframe(name=name).reset_index().to_csv(partial, index=False)
        else:
            ds = clean.to_dataset(name=name)
            ds.attrs["Conventions"] = "CF-1.10"
            encoding: dict[str, dict[str, Any]] = {}
            if "time" in ds.coords:
                encoding["time"] = {"units": TIME_UNITS, "dtype": "int64"}
            ds.to_netcdf(partial, encoding=encoding)
        partial.replace(path)
    except BaseException:
        remove_path(partial)
        raise
    return path
