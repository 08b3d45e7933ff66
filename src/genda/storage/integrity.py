"""Integrity of an ensemble store: find damaged members, repair the store so a rerun regenerates them.

A member flagged complete has its data on disk as long as nothing outside
genda touches the store (:mod:`genda.storage.ensemble_store`, crash safety).
Disks, copies and people do touch stores: a chunk file deleted reads as NaN,
one truncated fails to decode. Three entry points, all reached through
:class:`~genda.storage.ensemble_store.EnsembleStore`:

- :func:`check_store` (``EnsembleStore.validate``) reads every member flagged
  complete and every statistic and reports, never raises, what is wrong: a
  :class:`StoreCheck` with the problems as sentences, the damaged members per
  window and the files that cannot be decoded (named by their path);
- :func:`repair_store` (``EnsembleStore.repair``) removes the undecodable chunk
  and shard files, clears the complete flags of the damaged members (and of
  every member a removed file held) and un-finalises their windows, so that
  a rerun of the window regenerates exactly those members, bit for bit (a
  member's data depend only on its seed), and recomputes the statistics;
- :func:`recheck_window` (``EnsembleStore.recheck``, called before a window
  is completed) does both for one window, with a warning, so a rerun never
  leaves a damaged member in place.

Files are only ever removed inside the store, under its metadata lock, and
only chunk or shard files of the store's own time-dimensioned arrays.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import zarr

from genda.grid import VERTICAL_AUXILIARIES
from genda.storage.archive import consolidate
from genda.storage.damage import READ_ERRORS, DamagedFileError, chunk_file, reason_of
from genda.storage.ensemble_layout import (
    _EPOCH,
    COMPLETE,
    STATS,
    TIME_FILL,
    WINDOWS_ATTR,
    _as_time,
    _open_group,
)
from genda.storage.ensemble_store import _runs
from genda.storage.errors import EnsembleStoreError
from genda.times import TimeLike, iso

if TYPE_CHECKING:
    from genda.storage.ensemble_store import EnsembleStore


class StoreRepairWarning(UserWarning):
    """A rerun found members flagged complete with damaged data and regenerates them."""


@dataclass(frozen=True)
class StoreCheck:
    """What :func:`check_store` found.

    Attributes:
        path: the store.
        problems: one sentence each; empty when the store is consistent.
        damaged: window (ISO time) -> members whose complete flag a repair
            clears, ascending: flagged complete with data missing, undecodable or
            not finite, held in a file that cannot be decoded, or with an
            unreadable flag. A rerun of the window regenerates them.
        bad_files: chunk or shard files that cannot be read or decoded; a
            repair removes them.
        stale: windows whose statistics a repair clears (finalised over
            damaged members, statistics damaged or NaN, or present early).
        unrepairable: problems a repair cannot fix (damaged coordinates,
            interrupted window registrations: ``add_window`` finishes those).
    """

    path: Path
    problems: tuple[str, ...] = ()
    damaged: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    bad_files: tuple[Path | str, ...] = ()
    stale: tuple[str, ...] = ()
    unrepairable: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """No problem at all."""
        return not self.problems

    @property
    def repairable(self) -> bool:
        """A repair leaves the store consistent (no problem outside its reach)."""
        return not self.unrepairable


@dataclass(frozen=True)
class StoreRepair:
    """What :func:`repair_store` changed.

    Attributes:
        removed: chunk or shard files removed (undecodable).
        unflagged: window (ISO time) -> members whose complete flag was cleared:
            what a rerun of the window regenerates.
        unfinalised: windows whose statistics and finalised mark were cleared:
            a rerun computes them again.
    """

    removed: tuple[Path | str, ...] = ()
    unflagged: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    unfinalised: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.removed or self.unflagged or self.unfinalised)


@dataclass
class _Findings:
    """Problems of one window (or of the store's frame), accumulated by the checks."""

    problems: list[str] = field(default_factory=list)
    damaged: set[int] = field(default_factory=set)
    bad_files: dict[Path | str, None] = field(default_factory=dict)  # ordered set
    stale: bool = False
    unreadable: list[str] = field(default_factory=list)  # access errors: never "damage"


# ---------------------------------------------------------------------------- checks
def _access_error(error: BaseException) -> bool:
    """The read failed in the file system (permissions, I/O, a stale handle), not in a codec.

    Such a file may be intact: it is reported, never counted as damage, never removed.
    """
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError):
            return True
        seen = seen.__cause__
    return False


def _bad_file(found: _Findings, error: Exception, file: Path | str, key: str) -> bool:
    """Record ``file`` as undecodable, or as unreadable for an access error; True when damaged."""
    if _access_error(error):
        found.unreadable.append(
            f"window {key}: {file} cannot be read ({reason_of(error)}); that is the file "
            "system's answer, not damaged data: fix the access and check again"
        )
        found.problems.append(found.unreadable[-1])
        return False
    found.bad_files[file] = None
    return True


def _failure(error: Exception, file: Path | str) -> tuple[Path | str, str]:
    """``(file, reason)`` of a failed read; the pipeline names the file, else ``file`` is it."""
    if isinstance(error, DamagedFileError):
        return error.file, error.reason
    return file, reason_of(error)


def _read_flags(
    store: EnsembleStore, group: zarr.Group, index: int, key: str, found: _Findings
) -> np.ndarray:
    """``(N,)`` complete flags of a window; unreadable flags count as unset and their members as damaged."""
    mask = group[COMPLETE]
    try:
        return np.asarray(mask[index], dtype=bool)
    except READ_ERRORS:
        pass  # find which file: flag by flag
    flags = np.zeros(store.n_members, dtype=bool)
    for member in range(store.n_members):
        try:
            flags[member] = bool(mask[index, member])
        except READ_ERRORS as error:
            file, reason = _failure(error, chunk_file(mask, (index, member)))
            known = file in found.bad_files
            if not _bad_file(found, error, file, key):
                continue
            if not known:
                found.problems.append(
                    f"window {key}: the complete flags in {file} cannot be read ({reason})"
                )
            found.damaged.add(member)
    return flags


def _shard_members(store: EnsembleStore, member: int) -> range:
    """Members stored in the same file as ``member`` (its shard; itself without sharding)."""
    first = store.shard_of(member) * store.members_per_shard
    return range(first, min(first + store.members_per_shard, store.n_members))


def _check_members(
    store: EnsembleStore,
    group: zarr.Group,
    index: int,
    key: str,
    flagged: Sequence[int],
    found: _Findings,
) -> None:
    """Read each flagged member's fields: undecodable, missing or non-finite data are damage."""
    for name in store.grid.variables:
        array = group[name]
        for member in flagged:
            file = chunk_file(array, (index, member, 0, 0, 0))
            if file in found.bad_files:
                found.damaged.add(member)
                continue
            try:
                data = np.asarray(array[index, member])
            except READ_ERRORS as error:
                file, reason = _failure(error, file)
                if not _bad_file(found, error, file, key):
                    continue
                # Removing the file takes every member it holds with it.
                held = [m for m in _shard_members(store, member) if m in set(flagged)]
                found.damaged.update(held)
                others = [m for m in held if m != member]
                found.problems.append(
                    f"window {key}: member {member} is flagged complete but its {name!r} file "
                    f"{file} cannot be decoded ({reason})"
                    + (f"; the file also holds members {others}" if others else "")
                )
                continue
            bad = int((~np.isfinite(data)).sum())
            if bad:
                found.damaged.add(member)
                where = (
                    f"its chunk file {file} is missing"
                    if isinstance(file, Path) and not file.exists()
                    else f"{bad} of {data.size} values are missing or NaN (in {file})"
                )
                found.problems.append(
                    f"window {key}: member {member} is flagged complete but its {name!r} data "
                    f"are damaged: {where}"
                )


def _check_statistics(
    store: EnsembleStore,
    group: zarr.Group,
    index: int,
    key: str,
    finalized: bool,
    flags: np.ndarray,
    found: _Findings,
) -> None:
    """Statistics of a finalised window must be finite; an unfinished window has none."""
    present = []
    for name in store.grid.variables:
        for stat in STATS:
            array = group[f"{name}_{stat}"]
            try:
                values = np.asarray(array[index])
            except READ_ERRORS as error:
                file, reason = _failure(error, chunk_file(array, (index, 0, 0, 0)))
                if not _bad_file(found, error, file, key):
                    continue
                found.stale = True
                found.problems.append(
                    f"window {key}: the statistic {name}_{stat} in {file} cannot be decoded ({reason})"
                )
                continue
            one_member_std = stat == "std" and store.n_members == 1  # NaN by definition
            if finalized and not one_member_std and not np.isfinite(values).all():
                found.stale = True
                found.problems.append(
                    f"window {key} is finalised but {name}_{stat} has missing or NaN values"
                )
            if not finalized and np.isfinite(values).any():
                present.append(f"{name}_{stat}")
    if finalized and not flags.all():
        found.stale = True
        found.problems.append(
            f"window {key} is finalised but members {np.flatnonzero(~flags).tolist()} "
            "are not flagged complete"
        )
    if finalized and found.damaged:
        found.stale = True  # its statistics were computed from, or over, damaged members
    if present:
        found.stale = True
        state = "incomplete" if not flags.all() else "not finalised"
        found.problems.append(
            f"statistics present for the {state} window {key} ({', '.join(present[:5])}"
            f"{' ...' if len(present) > 5 else ''})"
        )


def _check_window(
    store: EnsembleStore, group: zarr.Group, index: int, key: str, finalized: bool
) -> _Findings:
    found = _Findings()
    flags = _read_flags(store, group, index, key, found)
    flagged = np.flatnonzero(flags).tolist()
    _check_members(store, group, index, key, flagged, found)
    _check_statistics(store, group, index, key, finalized, flags, found)
    return found


def _check_coordinates(store: EnsembleStore, group: zarr.Group) -> list[str]:
    """Coordinates genda does not rewrite: damage there is reported, not repaired."""
    problems = []
    # The vertical's auxiliaries (lev, air_pressure, p0) exist in stores made since they were added.
    auxiliaries = [name for name in VERTICAL_AUXILIARIES if name in group]
    for name in ("member", "altitude", "latitude", "longitude", *auxiliaries):
        try:
            values = np.asarray(group[name][...])
        except READ_ERRORS as error:
            file, reason = _failure(error, store.path / name)
            problems.append(
                f"the {name!r} coordinate cannot be read from {file} ({reason}); "
                "genda cannot repair it: restore the file from a copy"
            )
            continue
        if not np.isfinite(values).all():
            problems.append(
                f"the {name!r} coordinate has missing values (a file under {store.path / name} "
                "was removed); genda cannot repair it: restore the file from a copy"
            )
    return problems


def _frame_problems(
    store: EnsembleStore, group: zarr.Group, lengths: Mapping[str, int]
) -> list[str]:
    """Unrepairable problems of the arrays' time lengths and of the coordinates."""
    problems = []
    if len(set(lengths.values())) > 1:
        problems.append(
            f"arrays disagree on the number of time slots ({lengths}); "
            "a window registration was interrupted: add the window again"
        )
    return problems + _check_coordinates(store, group)


def _slot_problems(
    times: np.ndarray, windows: Mapping[str, object]
) -> tuple[list[str], dict[str, int]]:
    """Unrepairable problems of the time slots, and window (ISO time) -> slot of the sound ones."""
    problems: list[str] = []
    seen: dict[str, int] = {}
    slots: dict[str, int] = {}
    for i, seconds in enumerate(times):
        if seconds == TIME_FILL:
            problems.append(f"time slot {i} has no time (an interrupted add_window)")
            continue
        key = iso(_EPOCH + np.timedelta64(int(seconds), "s"))
        if key in seen:
            problems.append(f"window {key} occupies time slots {seen[key]} and {i}")
            continue
        seen[key] = i
        if key not in windows:
            problems.append(f"time slot {i} ({key}) has no provenance (an interrupted add_window)")
        else:
            slots[key] = i
    for key in sorted(set(windows) - set(seen)):
        problems.append(f"window {key} has provenance but no time slot")
    return problems, slots


def _store_check(
    path: Path, problems: Sequence[str], unrepairable: Sequence[str], found: Mapping[str, _Findings]
) -> StoreCheck:
    """The :class:`StoreCheck` of the store's own problems plus each window's findings."""
    all_problems, all_unrepairable = list(problems), list(unrepairable)
    damaged: dict[str, tuple[int, ...]] = {}
    bad_files: dict[Path | str, None] = {}  # ordered set
    stale: list[str] = []
    for key, window in found.items():
        all_problems += window.problems
        all_unrepairable += window.unreadable
        bad_files.update(window.bad_files)
        if window.damaged:
            damaged[key] = tuple(sorted(window.damaged))
        if window.stale:
            stale.append(key)
    return StoreCheck(
        path,
        tuple(all_problems),
        damaged,
        tuple(bad_files),
        tuple(stale),
        tuple(all_unrepairable),
    )


def check_store(store: EnsembleStore) -> StoreCheck:
    """Every problem of ``store``, as a :class:`StoreCheck`; never raises for damaged data.

    Reads every member flagged complete and every statistic: a check after a
    run, a crash or a copy, not for a loop.
    """
    group = _open_group(store.path, "r")
    try:
        lengths = {a.basename: a.shape[0] for a in store._time_arrays(group)}
    except READ_ERRORS as error:  # an array's zarr.json, not its data
        problem = (
            f"the metadata of the store's arrays cannot be read ({reason_of(error)}); "
            "genda cannot repair it: restore the store from a copy"
        )
        return StoreCheck(store.path, (problem,), unrepairable=(problem,))
    problems = _frame_problems(store, group, lengths)
    unrepairable = list(problems)
    try:
        times = store._times(group)
    except DamagedFileError as error:
        problems.append(
            f"the time coordinate cannot be read from {error.file} ({error.reason}); genda cannot "
            "repair it: restore the file from a copy"
        )
        unrepairable.append(problems[-1])
        return StoreCheck(store.path, tuple(problems), unrepairable=tuple(unrepairable))
    windows = store._windows(group)
    slot_problems, slots = _slot_problems(times, windows)
    problems += slot_problems
    unrepairable += slot_problems
    # A repair re-consolidates, so stale consolidated metadata is within its reach.
    problems.extend(_consolidation_problems(store.path, lengths))
    length = min(lengths.values())
    found = {
        key: _check_window(store, group, index, key, bool(windows[key].get("finalized", False)))
        for key, index in slots.items()
        if index < length
    }
    return _store_check(store.path, problems, unrepairable, found)


def _consolidation_problems(path: Path, lengths: Mapping[str, int]) -> list[str]:
    """Arrays whose consolidated shape (what ``xarray.open_zarr`` reads) lags the real one."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        group = zarr.open_group(str(path), mode="r", zarr_format=3)
    consolidated = group.metadata.consolidated_metadata
    if consolidated is None:
        return ["the store has no consolidated metadata (run add_window or finalize again)"]
    stale = sorted(
        name
        for name, n in lengths.items()
        if name not in consolidated.metadata or consolidated.metadata[name].shape[0] != n  # type: ignore[union-attr]
    )
    if stale:
        return [f"consolidated metadata is stale for {stale} (run add_window or finalize again)"]
    return []


# ---------------------------------------------------------------------------- repair
def _remove_damaged_file(store: EnsembleStore, file: Path | str) -> None:
    """Remove one undecodable chunk or shard file, after checking it is one of the store's."""
    path = Path(file)
    root = store.path.resolve()
    try:
        relative = path.parent.resolve().joinpath(path.name).relative_to(root)
    except ValueError:
        raise EnsembleStoreError(
            f"{file} is not inside the ensemble store {store.path}; not removing it"
        ) from None
    arrays = {a.basename for a in store._time_arrays(_open_group(store.path, "r"))}
    if len(relative.parts) < 3 or relative.parts[0] not in arrays or relative.parts[1] != "c":
        raise EnsembleStoreError(
            f"{file} is not a chunk or shard file of {store.path}'s arrays; not removing it"
        )
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        raise EnsembleStoreError(f"{file} is not a file; remove it by hand")


def _clear_flags(group: zarr.Group, index: int, members: Sequence[int]) -> None:
    mask = group[COMPLETE]
    for start, stop, _ in _runs(sorted(members)):
        mask[index, start:stop] = False


def _clear_statistics(store: EnsembleStore, group: zarr.Group, index: int) -> None:
    _, nlev, nlat, nlon = store.grid.shape
    empty = np.full((nlev, nlat, nlon), np.nan, np.float32)  # the fill value: no file is left
    for name in store.grid.variables:
        for stat in STATS:
            group[f"{name}_{stat}"][index] = empty


def _apply(
    store: EnsembleStore,
    bad_files: Sequence[Path | str],
    damaged: Mapping[str, Sequence[int]],
    stale: Sequence[str],
) -> StoreRepair:
    """Remove, unflag and un-finalise; the caller holds the metadata lock."""
    from genda.storage.ensemble_store import EnsembleStore

    EnsembleStore.open(store.path)  # only ever change a verified genda ensemble store
    for file in bad_files:
        _remove_damaged_file(store, file)
    group = _open_group(store.path, "r+")
    windows = store._windows(group)
    unflagged: dict[str, tuple[int, ...]] = {}
    unfinalised: list[str] = []
    for key in sorted(set(damaged) | set(stale)):
        if key not in windows:
            continue
        index = store._locate(group, _as_time(key))
        members = sorted(set(damaged.get(key, ())))
        if members:
            _clear_flags(group, index, members)
            unflagged[key] = tuple(members)
        if key in stale or windows[key].get("finalized", False):
            # Finalised over members that are now unflagged: the statistics go too.
            _clear_statistics(store, group, index)
            if windows[key].get("finalized", False):
                windows[key]["finalized"] = False
                unfinalised.append(key)
    group.attrs[WINDOWS_ATTR] = json.dumps(windows, sort_keys=True)
    consolidate(store.path)
    return StoreRepair(tuple(bad_files), unflagged, tuple(unfinalised))


def repair_store(store: EnsembleStore, check: StoreCheck | None = None) -> StoreRepair:
    """Make ``store`` consistent again, so that a rerun regenerates what was damaged.

    Removes the files of ``check.bad_files`` (chunk or shard files of the
    store's own arrays, nothing else), clears the complete flags of
    ``check.damaged`` and clears the statistics and finalised mark of the
    windows involved; re-consolidates the metadata. Problems listed in
    ``check.unrepairable`` stay. The repair acts on a fresh :func:`check_store`
    taken under the store's metadata lock, never on ``check`` alone: a rerun
    that regenerated members since ``check`` was taken is not undone. Of
    ``check`` only what the fresh check confirms is repaired.
    """
    with store.metadata_lock():
        fresh = check_store(store)
        if check is None:
            return _apply(store, fresh.bad_files, fresh.damaged, fresh.stale)
        files = tuple(f for f in fresh.bad_files if f in set(check.bad_files))
        damaged = {
            key: tuple(m for m in members if m in set(check.damaged.get(key, ())))
            for key, members in fresh.damaged.items()
        }
        damaged = {key: members for key, members in damaged.items() if members}
        stale = tuple(key for key in fresh.stale if key in set(check.stale))
        return _apply(store, files, damaged, stale)


def recheck_window(store: EnsembleStore, time: TimeLike) -> list[int]:
    """Check one window's complete members and statistics; repair what is damaged, with a warning.

    Returns:
        The members whose complete flags were cleared (ascending): a run of the
        window regenerates them. Empty when nothing was damaged.
    """
    t = _as_time(time)
    key = iso(t)
    group = _open_group(store.path, "r")
    index = store._locate(group, t)
    finalized = bool(store._windows(group)[key].get("finalized", False))
    found = _check_window(store, group, index, key, finalized)
    if not (found.damaged or found.bad_files or found.stale):
        return []
    with store.metadata_lock():
        repair = _apply(store, list(found.bad_files), {key: sorted(found.damaged)}, [key])
    members = list(repair.unflagged.get(key, ()))
    shown = "; ".join(found.problems[:5]) + (" ..." if len(found.problems) > 5 else "")
    what = f"members {members} are regenerated" if members else "its statistics are recomputed"
    warnings.warn(
        f"window {key} of {store.path} was damaged ({shown}); {what}",
        StoreRepairWarning,
        stacklevel=2,
    )
    return members


__all__ = [
    "StoreCheck",
    "StoreRepair",
    "StoreRepairWarning",
    "check_store",
    "recheck_window",
    "repair_store",
]
