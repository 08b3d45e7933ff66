"""Training data from an archive: normalised fields, a time split, deterministic batches.

The input is an :class:`xarray.Dataset` in genda's conventions (as returned by
:func:`genda.storage.open_archive`, usually lazy with dask): dims ``(time,
altitude, latitude, longitude)``, one data variable per grid variable, the
per-(variable, level) normalisation statistics in the variables' attributes.
This module never opens files itself (``models`` knows nothing of Zarr).

* :func:`split_by_time` holds out the last ``val_fraction`` of the times for
  validation and drops the times less than ``gap_hours`` before the first
  validation time, so that no training field is a near copy (the next hour's
  weather) of a validation field. The default gap is 24 hours: one period of
  the diurnal tide, and longer than the hour-to-hour persistence of the
  fields; planetary waves of several days' period stay correlated across it,
  which a validation set from the same run cannot avoid.
* :class:`FieldDataset` yields normalised fields ``(V, L, H, W)`` float32.
  It reads whole time chunks (one read per variable and chunk, the archive
  layout of :func:`genda.storage.write_archive`) and keeps the whole split
  in memory when it fits ``memory_limit_bytes`` (the default archive is a few
  hundred MB); otherwise it keeps a few decoded chunks in an LRU cache.
* :class:`ChunkShuffleSampler` gives an epoch order that visits the data
  chunk group by chunk group (shuffled chunks, shuffled items within a
  group), so that a lazy dataset reads each chunk once per epoch; for an
  in-memory dataset it is a plain permutation.
* :class:`StepBatches` turns epoch orders into the batch of any training
  step, a pure function of ``(seed, step)``: a resumed run sees exactly the
  batches the uninterrupted run would have.
* :func:`archive_fingerprint` identifies the data a checkpoint was trained on.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch.utils.data import Dataset, Sampler

from genda.errors import InvalidValueError
from genda.grid import Grid, GridMismatchError
from genda.models.time_of_day import hours_of_day
from genda.normalization import Normalization
from genda.seeds import stable_seed
from genda.times import iso

__all__ = [
    "ChunkShuffleSampler",
    "FieldDataset",
    "StepBatches",
    "TimeSplit",
    "TrainingData",
    "archive_description",
    "archive_fingerprint",
    "split_by_time",
    "stable_seed",
]

DEFAULT_GAP_HOURS = 24.0
"""Default minimum separation between the last training and the first validation time."""
DEFAULT_MEMORY_LIMIT = 4 * 2**30
"""Splits up to this many bytes (float32) are kept in memory."""
READ_BYTES = 256 * 2**20
"""Upper bound of one read (whole chunks) when loading a split into memory."""

VOLATILE_ATTRS = frozenset({"created", "history", "genda_source"})
"""Global attributes left out of the fingerprint: they name the file or the moment, not the data."""


# ---------------------------------------------------------------------------- split
@dataclass(frozen=True)
class TimeSplit:
    """Indices (into the archive's ``time``) of the training and validation fields.

    Attributes:
        train: ``(N_train,)`` increasing time indices.
        validation: ``(N_val,)`` increasing time indices, a contiguous block at the end.
        val_fraction: the fraction of the times held out.
        gap_hours: the minimum separation between any training and any validation time.
        dropped: number of times in neither split (the gap).
    """

    train: np.ndarray
    validation: np.ndarray
    val_fraction: float
    gap_hours: float
    dropped: int

    def to_dict(self, times: np.ndarray | None = None) -> dict[str, Any]:
        """JSON description (counts, and time ranges when ``times`` is given)."""
        out: dict[str, Any] = {
            "val_fraction": self.val_fraction,
            "gap_hours": self.gap_hours,
            "train_count": int(self.train.size),
            "validation_count": int(self.validation.size),
            "dropped": self.dropped,
        }
        if times is not None:
            for name, idx in (("train", self.train), ("validation", self.validation)):
                out[f"{name}_range"] = (
                    [iso(times[idx[0]]), iso(times[idx[-1]])] if idx.size else None
                )
        return out


def split_by_time(
    times: np.ndarray | Sequence[Any],
    val_fraction: float = 0.1,
    gap_hours: float = DEFAULT_GAP_HOURS,
) -> TimeSplit:
    """Hold out the last ``ceil(val_fraction * T)`` times, and a gap before them.

    Training times are all times at least ``gap_hours`` before the first
    validation time; the times in between belong to neither split.

    Args:
        times: ``(T,)`` strictly increasing ``datetime64`` values.
        val_fraction: in ``[0, 1)``; 0 gives no validation set (and no gap).
        gap_hours: ``>= 0``.

    Raises:
        ValueError: bad arguments, or a split that leaves no training time
            (the message says how many times there are and what to lower).
    """
    t = np.asarray(times).astype("datetime64[ns]")
    if t.ndim != 1 or t.size == 0:
        raise InvalidValueError(f"need a non-empty 1-D array of times, got shape {t.shape}")
    if t.size > 1 and not np.all(np.diff(t) > np.timedelta64(0, "ns")):
        raise InvalidValueError("times must be strictly increasing")
    if not 0.0 <= val_fraction < 1.0:
        raise InvalidValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    if not (math.isfinite(gap_hours) and gap_hours >= 0):
        raise InvalidValueError(f"gap_hours must be finite and >= 0, got {gap_hours}")
    count = t.size
    n_val = math.ceil(val_fraction * count) if val_fraction > 0 else 0
    if n_val == 0:
        return TimeSplit(np.arange(count), np.arange(0), val_fraction, gap_hours, 0)
    first_val = count - n_val
    gap = np.timedelta64(round(gap_hours * 3600e9), "ns")
    n_train = int(np.searchsorted(t[:first_val], t[first_val] - gap, side="right"))
    if n_train == 0:
        raise InvalidValueError(
            f"the archive's {count} times ({iso(t[0])} .. {iso(t[-1])}) leave no "
            f"training time after holding out {n_val} for validation (val_fraction={val_fraction}) "
            f"and a gap of {gap_hours} h before them; lower val_fraction or gap_hours, "
            "or use a longer archive"
        )
    return TimeSplit(
        np.arange(n_train),
        np.arange(first_val, count),
        val_fraction,
        gap_hours,
        first_val - n_train,
    )


# ---------------------------------------------------------------------------- fingerprint
def _attr_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def archive_fingerprint(ds: xr.Dataset, grid: Grid | None = None) -> str:
    """SHA-256 (hex) identifying the data of an archive.

    Hashes the provenance attributes (without :data:`VOLATILE_ATTRS`: the path
    and creation time), the grid's coordinates and variables, the number and
    range of the times, and the stored normalisation statistics. Two archives
    written by the same model run with the same settings have the same
    fingerprint; a different seed, length or grid gives another. Reads only
    metadata and the ``time`` coordinate.
    """
    grid = grid if grid is not None else Grid.from_dataset(ds)
    times = np.asarray(ds["time"].values).astype("datetime64[s]") if "time" in ds.coords else None
    attrs = {str(k): _attr_value(v) for k, v in sorted(ds.attrs.items()) if k not in VOLATILE_ATTRS}
    stats = {
        name: {k: _attr_value(v) for k, v in sorted(ds[name].attrs.items()) if "normalization" in k}
        for name in grid.variables
    }
    payload = {
        "attrs": attrs,
        "grid": {
            "latitude": np.round(grid.latitude, 6).tolist(),
            "longitude": np.round(grid.longitude, 6).tolist(),
            "altitude": np.round(grid.altitude, 6).tolist(),
            "variables": list(grid.variables),
        },
        "time": None
        if times is None or times.size == 0
        else {"count": int(times.size), "first": str(times[0]), "last": str(times[-1])},
        "normalization": stats,
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def archive_description(ds: xr.Dataset, grid: Grid | None = None) -> dict[str, Any]:
    """JSON description of an archive for a checkpoint: fingerprint, source, times."""
    grid = grid if grid is not None else Grid.from_dataset(ds)
    times = np.asarray(ds["time"].values)
    out: dict[str, Any] = {
        "fingerprint": archive_fingerprint(ds, grid),
        "source": str(ds.attrs.get("genda_source", ds.encoding.get("source", "dataset"))),
        "times": int(times.size),
        "time_range": [iso(times[0]), iso(times[-1])] if times.size else None,
    }
    for key in ("source", "seed", "model_config", "genda_version"):
        if key in ds.attrs:
            out[f"attr_{key}"] = _attr_value(ds.attrs[key])
    return out


# ---------------------------------------------------------------------------- dataset
def _time_chunks(ds: xr.Dataset, variables: Sequence[str]) -> tuple[int, ...]:
    """Chunk lengths along ``time`` of the (first) variable; one chunk if not chunked."""
    count = ds.sizes["time"]
    da = ds[variables[0]]
    sizes = da.chunksizes.get("time") if da.chunks is not None else None
    if sizes:
        return tuple(int(s) for s in sizes)
    preferred = da.encoding.get("preferred_chunks", {}).get("time")
    if preferred:
        size = int(preferred)
        return tuple(min(size, count - start) for start in range(0, count, size))
    return (count,)


class FieldDataset(Dataset[torch.Tensor]):
    """Normalised fields ``(V, L, H, W)`` float32 at selected times of an archive.

    Args:
        ds: Dataset in genda's conventions ``(time, altitude, latitude, longitude)``.
        indices: time indices (into ``ds.time``) of the items, increasing; all by default.
        normalization: statistics to apply; default: those stored in ``ds``.
        grid: the expected grid (checked against ``ds``); default: ``ds``'s own.
        in_memory: keep all items in memory; default: when they fit ``memory_limit_bytes``.
        memory_limit_bytes: see ``in_memory``.
        cache_chunks: decoded chunks kept by a lazy dataset (LRU).

    Item ``i`` is the field at time index ``indices[i]``. Reading is by whole
    time chunks (the archive's layout), normalised in float64 then stored as
    float32.
    """

    def __init__(
        self,
        ds: xr.Dataset,
        indices: Sequence[int] | np.ndarray | None = None,
        normalization: Normalization | None = None,
        *,
        grid: Grid | None = None,
        in_memory: bool | None = None,
        memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT,
        cache_chunks: int = 4,
    ) -> None:
        if "time" not in ds.dims:
            raise GridMismatchError(f"dataset has no 'time' dimension (dims: {dict(ds.sizes)})")
        own = Grid.from_dataset(ds, grid.variables if grid is not None else None)
        if grid is not None:
            grid.check_same(own, what="archive")
        self.grid: Grid = grid if grid is not None else own
        if normalization is None:
            normalization = Normalization.from_attrs(ds, self.grid.variables)
        if normalization.variables != self.grid.variables or normalization.mean.shape != (
            len(self.grid.variables),
            self.grid.nlevels,
        ):
            raise GridMismatchError(
                f"normalisation is for variables {list(normalization.variables)} x "
                f"{normalization.mean.shape[1]} levels, the archive has "
                f"{list(self.grid.variables)} x {self.grid.nlevels}"
            )
        self.normalization = normalization
        count = ds.sizes["time"]
        idx = np.arange(count) if indices is None else np.asarray(indices, dtype=np.int64)
        if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= count)):
            raise IndexError(f"time indices must be 1-D within [0, {count}), got {idx}")
        if idx.size > 1 and not np.all(np.diff(idx) > 0):
            raise InvalidValueError("time indices must be strictly increasing")
        self.indices = idx
        self._ds = ds[list(self.grid.variables)]
        self.times = np.asarray(ds["time"].values)[idx]
        sizes = _time_chunks(ds, self.grid.variables)
        self._chunk_starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.chunk_ids = np.searchsorted(self._chunk_starts, idx, side="right") - 1
        self.item_bytes = 4 * math.prod(self.grid.shape)
        self.nbytes = self.item_bytes * idx.size
        self.in_memory = self.nbytes <= memory_limit_bytes if in_memory is None else in_memory
        self.cache_chunks = max(1, int(cache_chunks))
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._data: torch.Tensor | None = self._load_all() if self.in_memory else None

    # -------------------------------------------------------------- reading
    def _read(self, start: int, stop: int) -> torch.Tensor:
        """Normalised fields at time indices ``start:stop``: ``(T, V, L, H, W)`` float32."""
        block = self.grid.tensor_from_dataset(
            self._ds.isel(time=slice(start, stop)), dtype=torch.float64
        )
        return self.normalization.normalize(block).to(torch.float32)

    def _load_all(self) -> torch.Tensor:
        """All items, reading runs of needed chunks up to :data:`READ_BYTES` at a time."""
        out = torch.empty((self.indices.size, *self.grid.shape), dtype=torch.float32)
        chunks = np.unique(self.chunk_ids)
        per_read = max(1, READ_BYTES // (2 * self.item_bytes))  # float64 while normalising
        i = 0
        while i < chunks.size:
            j = i
            # a run of consecutive chunks, at most `per_read` times long
            while (
                j + 1 < chunks.size
                and chunks[j + 1] == chunks[j] + 1
                and self._chunk_starts[chunks[j + 1] + 1] - self._chunk_starts[chunks[i]]
                <= per_read
            ):
                j += 1
            start, stop = int(self._chunk_starts[chunks[i]]), int(self._chunk_starts[chunks[j] + 1])
            block = self._read(start, stop)
            mask = (self.indices >= start) & (self.indices < stop)
            out[torch.from_numpy(np.nonzero(mask)[0])] = block[
                torch.from_numpy(self.indices[mask] - start)
            ]
            i = j + 1
        return out

    def _chunk(self, chunk: int) -> torch.Tensor:
        if chunk in self._cache:
            self._cache.move_to_end(chunk)
            return self._cache[chunk]
        block = self._read(int(self._chunk_starts[chunk]), int(self._chunk_starts[chunk + 1]))
        self._cache[chunk] = block
        while len(self._cache) > self.cache_chunks:
            self._cache.popitem(last=False)
        return block

    # -------------------------------------------------------------- Dataset
    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitem__(self, item: int) -> torch.Tensor:
        """The normalised field ``(V, L, H, W)`` float32 of item ``item``."""
        if not -len(self) <= item < len(self):
            raise IndexError(f"item {item} out of range for {len(self)} fields")
        item = int(item) % len(self)
        if self._data is not None:
            return self._data[item]
        chunk = int(self.chunk_ids[item])
        return self._chunk(chunk)[int(self.indices[item] - self._chunk_starts[chunk])]

    def batch(self, items: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Items stacked: ``(B, V, L, H, W)`` float32 (a new tensor)."""
        positions = np.asarray(items, dtype=np.int64)
        if self._data is not None:
            return self._data[torch.from_numpy(positions)]
        return torch.stack([self[int(i)] for i in positions])

    def hours(self, items: Sequence[int] | np.ndarray) -> np.ndarray:
        """UT hours ``[0, 24)`` of the items' times: float64 ``(B,)``."""
        return hours_of_day(self.times_of(items))

    def times_of(self, items: Sequence[int] | np.ndarray) -> np.ndarray:
        """The items' valid times: datetime64 ``(B,)``."""
        return self.times[np.asarray(items, dtype=np.int64)]

    def sampler(self, seed: int = 0, group_chunks: int = 1) -> ChunkShuffleSampler:
        """A :class:`ChunkShuffleSampler` suited to this dataset (plain shuffling in memory)."""
        ids = np.zeros(len(self), dtype=np.int64) if self.in_memory else self.chunk_ids
        return ChunkShuffleSampler(ids, seed=seed, group_chunks=group_chunks)


# ---------------------------------------------------------------------------- sampling
class ChunkShuffleSampler(Sampler[int]):
    """Epoch orders over items grouped by chunk: shuffled groups, shuffled items within.

    Args:
        chunk_ids: ``(N,)`` chunk of each item (items of one chunk are read together).
        seed: the orders are a pure function of ``(seed, epoch)``.
        group_chunks: chunks whose items are mixed together (more mixing, more cache).

    With all items in one chunk this is a uniform random permutation. Iterating
    gives the order of the current epoch (:meth:`set_epoch`), as for
    ``torch.utils.data.DistributedSampler``.
    """

    def __init__(self, chunk_ids: Sequence[int] | np.ndarray, seed: int = 0, group_chunks: int = 1):
        self.chunk_ids = np.asarray(chunk_ids, dtype=np.int64)
        if group_chunks < 1:
            raise InvalidValueError(f"group_chunks must be >= 1, got {group_chunks}")
        self.seed = int(seed)
        self.group_chunks = int(group_chunks)
        self.epoch = 0
        self._chunks = np.unique(self.chunk_ids)

    def order(self, epoch: int) -> np.ndarray:
        """``(N,)`` item positions of ``epoch``, a permutation of ``range(N)``."""
        rng = np.random.default_rng([stable_seed("epoch", self.seed), int(epoch)])
        chunks = rng.permutation(self._chunks)
        parts = []
        for start in range(0, chunks.size, self.group_chunks):
            members = np.nonzero(np.isin(self.chunk_ids, chunks[start : start + self.group_chunks]))
            parts.append(rng.permutation(members[0]))
        return np.concatenate(parts) if parts else np.arange(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order(self.epoch).tolist())

    def __len__(self) -> int:
        return int(self.chunk_ids.size)


class StepBatches:
    """The item positions of the batch of any training step, epoch after epoch.

    Step ``s`` takes positions ``s * B .. (s + 1) * B - 1`` of the endless
    sequence ``order(0), order(1), ...`` of ``sampler``; a batch may span an
    epoch boundary. Pure in ``step``: resuming at step ``s`` continues exactly.
    """

    def __init__(self, sampler: ChunkShuffleSampler, batch_size: int) -> None:
        if batch_size < 1:
            raise InvalidValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(sampler) == 0:
            raise InvalidValueError("cannot draw batches from an empty dataset")
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self._epoch: int | None = None
        self._order = np.arange(0)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if self._epoch != epoch:
            self._epoch, self._order = epoch, self.sampler.order(epoch)
        return self._order

    def positions(self, step: int) -> np.ndarray:
        """``(batch_size,)`` item positions of step ``step``."""
        n = len(self.sampler)
        start = step * self.batch_size
        out = []
        while len(out) < self.batch_size:
            epoch, offset = divmod(start + len(out), n)
            order = self._epoch_order(epoch)
            out.extend(order[offset : offset + self.batch_size - len(out)].tolist())
        return np.asarray(out, dtype=np.int64)


# ---------------------------------------------------------------------------- bundle
@dataclass
class TrainingData:
    """What :func:`genda.models.training.train` needs from an archive.

    Attributes:
        train: training fields.
        validation: held-out fields (``None`` with ``val_fraction = 0``).
        split: the time split.
        archive: :func:`archive_description` of the source (fingerprint, times).
    """

    train: FieldDataset
    validation: FieldDataset | None
    split: TimeSplit
    archive: dict[str, Any]

    @property
    def grid(self) -> Grid:
        return self.train.grid

    @property
    def normalization(self) -> Normalization:
        return self.train.normalization

    @property
    def fingerprint(self) -> str:
        return str(self.archive["fingerprint"])

    @classmethod
    def from_dataset(
        cls,
        ds: xr.Dataset,
        val_fraction: float = 0.1,
        gap_hours: float = DEFAULT_GAP_HOURS,
        normalization: Normalization | None = None,
        *,
        grid: Grid | None = None,
        memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT,
    ) -> TrainingData:
        """Split ``ds`` by time (:func:`split_by_time`) into training and validation datasets.

        ``normalization`` defaults to the statistics stored in ``ds``, else
        those of the training split; the memory limit applies to each split.
        """
        grid = grid if grid is not None else Grid.from_dataset(ds)
        split = split_by_time(ds["time"].values, val_fraction, gap_hours)
        if normalization is None:
            try:
                normalization = Normalization.from_attrs(ds, grid.variables)
            except KeyError:
                # e.g. model output converted from other units: statistics of the
                # training split only, so that nothing of the validation set leaks in
                subset = ds[list(grid.variables)].isel(time=split.train).astype(np.float64)
                normalization = Normalization.from_dataset(subset, grid)
        train = FieldDataset(
            ds, split.train, normalization, grid=grid, memory_limit_bytes=memory_limit_bytes
        )
        validation = (
            FieldDataset(
                ds,
                split.validation,
                train.normalization,
                grid=grid,
                memory_limit_bytes=memory_limit_bytes,
            )
            if split.validation.size
            else None
        )
        archive = archive_description(ds, grid)
        archive["split"] = split.to_dict(np.asarray(ds["time"].values))
        return cls(train, validation, split, archive)
