"""The writer of a resumable Zarr v3 store of posterior ensembles over many assimilation windows.

:class:`EnsembleStore` creates a store, registers windows, writes members and
finalises windows with their statistics. The arrays and attributes it writes
are :mod:`genda.storage.ensemble_layout`; reading and queries are
:mod:`genda.storage.ensemble_query`; the statistics are
:mod:`genda.storage.ensemble_stats` (docs/store.md).

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
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from genda.atomic import partial_path, publish_directory, remove_path
from genda.errors import MissingInputError, OutputExistsError
from genda.grid import Grid
from genda.ownership import check_replaceable
from genda.storage.archive import consolidate
from genda.storage.ensemble_layout import (
    _EPOCH,
    COMPLETE,
    LOCK_FILE,
    TIME_FILL,
    WINDOWS_ATTR,
    _as_time,
    _open_group,
    _seconds,
    auto_members_per_shard,
    create_layout,
    read_store_attrs,
    store_attrs,
    time_array_names,
)
from genda.storage.ensemble_stats import window_statistics
from genda.storage.ensemble_windows import (
    canonical,
    describe_differences,
    provenance_differences,
    register_window,
)
from genda.storage.errors import EnsembleStoreError, damaged_members_message
from genda.times import TimeLike, iso

if TYPE_CHECKING:
    from genda.storage.integrity import StoreCheck, StoreRepair

__all__ = ["EnsembleStore", "EnsembleStoreError"]


# ---------------------------------------------------------------------------- helpers
def _runs(indices: Sequence[int]) -> Iterator[tuple[int, int, int]]:
    """Contiguous runs of sorted ``indices`` as ``(start, stop, offset in indices)``."""
    start = 0
    for i in range(1, len(indices) + 1):
        if i == len(indices) or indices[i] != indices[i - 1] + 1:
            yield indices[start], indices[i - 1] + 1, start
            start = i


# ---------------------------------------------------------------------------- the store
class EnsembleStore:
    """Posterior ensembles of many windows in one Zarr v3 store (module docstring).

    The arrays and attributes are those of :mod:`genda.storage.ensemble_layout`.
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
                off; ``None`` picks
                :func:`~genda.storage.ensemble_layout.auto_members_per_shard`. See the
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
        global_attrs = store_attrs(attrs, grid, members, members_per_shard)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = partial_path(path)
        remove_path(partial)
        try:
            create_layout(partial, grid, members, members_per_shard, global_attrs)
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
        grid, members, per_shard = read_store_attrs(path, group)
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
                "use another store or set overwrite (--overwrite) to replace it"
            )
        if store.n_members != members:
            raise EnsembleStoreError(
                f"{path} holds {store.n_members} members per window, {members} were asked for; "
                f"ask for {store.n_members}, or use another store or set overwrite (--overwrite) "
                "to replace it"
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
            if iso(t) in registered:
                out.append(t)
        return out

    def window_index(self, time: TimeLike) -> int:
        """Index along ``time`` of a registered window; a clear error for an unknown one."""
        return self._locate(_open_group(self.path, "r"), _as_time(time))

    def _locate(self, group: zarr.Group, t: np.datetime64) -> int:
        found = np.flatnonzero(self._times(group) == _seconds(t))
        if found.size == 0 or iso(t) not in self._windows(group):
            known = [iso(w) for w in self.windows()]
            shown = ", ".join(known[-5:]) if known else "none"
            raise EnsembleStoreError(
                f"window {iso(t)} is not in {self.path} (add it with add_window first; "
                f"{len(known)} windows, latest: {shown})"
            )
        return int(found[0])

    def provenance(self, time: TimeLike) -> dict[str, Any]:
        """The provenance recorded for a window."""
        t = _as_time(time)
        group = _open_group(self.path, "r")
        self._locate(group, t)
        return self._windows(group)[iso(t)]["provenance"]

    def is_finalized(self, time: TimeLike) -> bool:
        """Whether :meth:`finalize` has written the window's statistics."""
        t = _as_time(time)
        group = _open_group(self.path, "r")
        self._locate(group, t)
        return bool(self._windows(group)[iso(t)].get("finalized", False))

    def _time_arrays(self, group: zarr.Group) -> list[zarr.Array]:
        """Every array with a ``time`` axis, the ``time`` coordinate last (see :meth:`add_window`)."""
        return [group[name] for name in time_array_names(self.grid.variables)]

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
        key = iso(t)
        if not isinstance(provenance, Mapping):
            raise EnsembleStoreError(
                f"provenance must be a mapping, got {type(provenance).__name__}"
            )
        record = canonical(dict(provenance), f"provenance of window {key}")
        with self.metadata_lock():
            return register_window(self, t, record)

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
        if self._windows(group)[iso(t)].get("finalized", False):
            raise EnsembleStoreError(
                f"window {iso(t)} is finalised; its statistics would no longer match new members"
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
        record = canonical(dict(provenance), f"provenance of window {iso(t)}")
        stored = self.provenance(t)
        if provenance_differences(stored, record):
            raise EnsembleStoreError(
                f"window {iso(t)} was registered again under other settings "
                f"({describe_differences(stored, record)}) "
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
            raise EnsembleStoreError(damaged_members_message(self.path, iso(t), damaged))
        return out

    def missing(self, time: TimeLike) -> list[int]:
        """Members of the window still to write (not flagged complete), ascending."""
        return [int(m) for m in np.flatnonzero(~self.complete(time))]

    # ------------------------------------------------------------------ statistics
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
        key = iso(t)
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
        results, corrupt = window_statistics(group, index, self.grid, self.n_members)
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
