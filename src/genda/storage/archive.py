"""Training archives: model output streamed into a Zarr v3 store.

An archive holds one Dataset with dims ``(time, altitude, latitude, longitude)``,
one float32 data variable per grid variable (CF attributes from
:meth:`genda.grid.Grid.to_dataset`), provenance in the global attributes and the
per-(variable, level) normalisation statistics of :mod:`genda.normalization` in
each variable's attributes. It opens with plain ``xarray.open_zarr(path)``.

When the snapshots carry it (the built-in model's do), the archive also holds
``zg``: the geopotential height of each output level (m, ``(time, altitude,
latitude, longitude)`` float32, ``standard_name: geopotential_height``), so that
geometric heights of observations can be placed with the model's own heights
(:mod:`genda.observations.heights`). It is no state variable: it is not in
``genda_variables``, carries no normalisation statistics, and
:func:`genda.storage.open_archive` returns it only when asked for
(``variables=["geopotential_height"]``).

Layout, chosen for training reads (a random time index reads one chunk per
variable and nothing else):

- a chunk is ``chunk_hours`` consecutive snapshots x all levels x the full
  horizontal field of one variable;
- the ``time`` coordinate is int64 ``seconds since <first time>`` so it stays
  exact whatever the output interval, in large chunks (one read on opening).

Writing is streamed (at most ``chunk_hours`` snapshots in memory) and atomic:
everything goes to a sibling ``<path>.partial-<pid>`` directory that is renamed
to ``path`` only once data, statistics and consolidated metadata are complete.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import xarray as xr
import zarr
from tqdm.auto import tqdm

import genda
from genda.atomic import partial_path, publish_directory, remove_path
from genda.constants import STANDARD_GRAVITY
from genda.errors import InvalidValueError, UnknownNameError
from genda.grid import DEFAULT_VARIABLES, VARIABLES, Grid
from genda.normalization import MEAN_ATTR, STD_ATTR, Normalization
from genda.ownership import check_replaceable
from genda.storage.errors import ArchiveError
from genda.storage.readers import VARIABLES_ATTR, open_raw

if TYPE_CHECKING:
    from genda.simulator import Snapshot

TIME_CHUNK = 8760
"""Chunk length of the 1-D ``time`` coordinate: a year of hourly output, so opening reads one chunk."""

HEIGHT_VARIABLE = "zg"
"""Name of the levels' geopotential height in an archive (CMIP's name; not a grid variable)."""

HEIGHT_ATTRS: dict[str, str] = {
    "units": "m",
    "standard_name": "geopotential_height",
    "long_name": "geopotential height of the output level",
    "comment": f"geopotential of the level divided by the standard gravity g0 = {STANDARD_GRAVITY} "
    "m s-2, as diagnosed by the model that wrote the archive; not a state variable",
}
"""CF attributes of :data:`HEIGHT_VARIABLE`."""


# ---------------------------------------------------------------------------- helpers
def _json_safe_attr(key: str, value: Any) -> Any:
    """An attribute value that Zarr (JSON) and NetCDF both accept.

    Mappings become JSON strings (NetCDF has no nested attributes); numpy
    scalars become Python scalars.
    """
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, Sequence) and all(isinstance(v, str | bool | int | float) for v in value):
        return list(value)
    raise ArchiveError(
        f"attribute {key!r} has type {type(value).__name__}; use str, a number, a list of those or a dict"
    )


def provenance_attrs(attrs: Mapping[str, Any], grid: Grid) -> dict[str, Any]:
    """Global attributes of an archive: ``attrs`` plus genda version, creation time, conventions.

    Keys given in ``attrs`` win over the defaults, except ``Conventions`` (the
    file is CF-1.10 because we wrote it so).
    """
    out: dict[str, Any] = {
        "genda_version": genda.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    out.update({k: _json_safe_attr(k, v) for k, v in attrs.items()})
    out["Conventions"] = "CF-1.10"
    out[VARIABLES_ATTR] = json.dumps(list(grid.variables))
    return out


def _float32(data: Any) -> np.ndarray:
    if isinstance(data, torch.Tensor):
        data = data.detach().to("cpu", torch.float32).numpy()
    return np.asarray(data, dtype=np.float32)


def _heights_of(snap: Snapshot, i: int, grid: Grid, expected: bool | None) -> np.ndarray | None:
    """The snapshot's ``(L, H, W)`` geopotential height, checked; all snapshots have one or none."""
    heights = getattr(snap, "geopotential_height", None)
    if expected is not None and (heights is not None) != expected:
        raise ArchiveError(
            f"snapshot {i} {'lacks' if expected else 'has'} a geopotential height while the "
            f"first snapshot {'has' if expected else 'lacks'} one"
        )
    if heights is None:
        return None
    shape = (grid.nlevels, grid.nlat, grid.nlon)
    if tuple(heights.shape) != shape:
        raise ArchiveError(
            f"snapshot {i}: geopotential height has shape {tuple(heights.shape)}, expected {shape}"
        )
    return _float32(heights)


def _batches(
    snapshots: Iterable[Snapshot], size: int, grid: Grid, bar: tqdm
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """Group snapshots into batches of ``size``.

    Yields ``(times (n,), fields (n, V, L, H, W) float32, heights (n, L, H, W)
    float32 or None)``. Checks each snapshot against the grid and that times
    strictly increase, so a bad snapshot fails the write before it reaches the store.
    """
    times: list[np.datetime64] = []
    fields: list[np.ndarray] = []
    heights: list[np.ndarray] = []
    with_heights: bool | None = None
    last: np.datetime64 | None = None
    for i, snap in enumerate(snapshots):
        grid.check_shape(tuple(snap.fields.shape), what=f"snapshot {i}")
        t = np.datetime64(snap.time, "ns")
        if last is not None and not t > last:
            raise ArchiveError(f"snapshot {i} at {t} does not follow the previous one at {last}")
        last = t
        height = _heights_of(snap, i, grid, with_heights)
        with_heights = height is not None
        times.append(t)
        fields.append(_float32(snap.fields))
        if height is not None:
            heights.append(height)
        bar.update(1)
        if len(times) == size:
            yield np.asarray(times), np.stack(fields), np.stack(heights) if heights else None
            times, fields, heights = [], [], []
    if times:
        yield np.asarray(times), np.stack(fields), np.stack(heights) if heights else None


def _with_heights(ds: xr.Dataset, heights: np.ndarray | None) -> xr.Dataset:
    """``ds`` with :data:`HEIGHT_VARIABLE` added when there are heights."""
    if heights is None:
        return ds
    dims = ("time", "altitude", "latitude", "longitude")
    return ds.assign({HEIGHT_VARIABLE: xr.Variable(dims, heights, dict(HEIGHT_ATTRS))})


def _encoding(
    grid: Grid, chunk_hours: int, first_time: np.datetime64, heights: bool = False
) -> dict[str, dict[str, Any]]:
    chunks = (chunk_hours, grid.nlevels, grid.nlat, grid.nlon)
    names = [*grid.variables, *([HEIGHT_VARIABLE] if heights else [])]
    encoding: dict[str, dict[str, Any]] = {
        name: {"chunks": chunks, "dtype": "float32"} for name in names
    }
    encoding["time"] = {
        "units": f"seconds since {np.datetime_as_string(first_time, unit='s')}",
        "calendar": "proleptic_gregorian",
        "dtype": "int64",
        "chunks": (TIME_CHUNK,),
    }
    return encoding


def consolidate(path: str | os.PathLike[str]) -> None:
    """Re-consolidate the store's metadata so ``xarray.open_zarr`` sees all attributes.

    Zarr 3 warns that consolidated metadata is not (yet) part of the v3
    specification; xarray reads it all the same, so the warning is silenced.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(str(path))


def _attach_normalization(path: Path, grid: Grid) -> Normalization:
    """Compute the statistics of the written data and store them as variable attributes.

    Lazy (dask) in float64: the sums over a long run lose digits in float32.
    Only the attributes are rewritten, the chunks are untouched.
    """
    ds = xr.open_zarr(path, consolidated=False)
    stats = Normalization.from_dataset(ds[list(grid.variables)].astype(np.float64), grid)
    group = zarr.open_group(str(path), mode="r+", zarr_format=3)
    for i, name in enumerate(grid.variables):
        group[name].attrs.update(
            {MEAN_ATTR: stats.mean[i].tolist(), STD_ATTR: stats.std[i].tolist()}
        )
    consolidate(path)
    return stats


# ---------------------------------------------------------------------------- public
def write_archive(
    path: str | os.PathLike[str],
    snapshots: Iterable[Snapshot],
    grid: Grid,
    attrs: Mapping[str, Any],
    chunk_hours: int = 24,
    progress: bool = True,
    total: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Stream snapshots into a Zarr v3 training archive at ``path``.

    Args:
        path: the store to create (a directory).
        snapshots: ``Snapshot(time, fields)`` with ``fields`` ``(V, L, H, W)`` on
            ``grid``, times strictly increasing (e.g. ``Simulator.snapshots``). When
            they carry ``geopotential_height`` ``(L, H, W)`` (all of them or none),
            it is written as :data:`HEIGHT_VARIABLE`.
        grid: the grid of every snapshot; gives coordinates and CF attributes.
        attrs: provenance for the global attributes (model name, parameters,
            seed, ...); dict values are stored as JSON strings.
        chunk_hours: snapshots per chunk along ``time`` (hours for hourly
            output) and per write; bounds the memory to one chunk.
        progress: show a progress bar over snapshots (on stderr).
        total: number of snapshots, for the progress bar only.
        overwrite: replace an existing genda archive at ``path`` (only once the new
            archive is complete); anything else there is never replaced.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is false, or it is
            not a genda archive (:func:`genda.ownership.check_replaceable`).
        ArchiveError: no snapshots, or times that do not increase.
        genda.grid.GridMismatchError: a snapshot not shaped like ``grid``.

    On any error nothing is left at ``path`` (an existing archive is kept) and
    the temporary directory is removed.
    """
    if chunk_hours < 1:
        raise InvalidValueError(f"chunk_hours must be >= 1, got {chunk_hours}")
    path = Path(path)
    check_replaceable(path, "archive", overwrite)  # never a foreign file or directory
    global_attrs = provenance_attrs(attrs, grid)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(path)
    remove_path(partial)  # a leftover of a crashed run of a process with our pid
    bar = tqdm(total=total, desc=f"writing {path.name}", unit="snapshot", disable=not progress)
    try:
        written = 0
        for times, fields, heights in _batches(snapshots, chunk_hours, grid, bar):
            ds = _with_heights(grid.to_dataset(fields, time=times), heights)
            # Every write carries the same global attributes: an append rewrites them.
            ds.attrs.update(global_attrs)
            if written == 0:
                ds.to_zarr(
                    partial,
                    mode="w",
                    zarr_format=3,
                    consolidated=False,
                    encoding=_encoding(grid, chunk_hours, times[0], heights is not None),
                )
            else:
                # Appending keeps the first write's encoding (chunks, time units).
                ds.to_zarr(partial, append_dim="time", consolidated=False)
            written += times.size
        if written == 0:
            raise ArchiveError(f"no snapshots to write to {path}")
        _attach_normalization(partial, grid)
        check_replaceable(path, "archive", overwrite)  # it may have appeared meanwhile
        publish_directory(partial, path, replace=overwrite)
    except BaseException:
        remove_path(partial)
        raise
    finally:
        bar.close()
    return path


def read_normalization(
    path_or_ds: str | os.PathLike[str] | xr.Dataset, variables: Sequence[str] | None = None
) -> Normalization:
    """The normalisation statistics stored in an archive by :func:`write_archive`.

    Args:
        path_or_ds: an archive path (Zarr directory or NetCDF file) or an open Dataset.
        variables: which variables, in this order; default: the archive's own
            variables in grid order (``genda_variables`` attribute), else those of
            u, v, T, ... that carry statistics.

    Raises:
        KeyError: a variable carries no statistics.
    """
    if isinstance(path_or_ds, xr.Dataset):
        ds = path_or_ds
    else:
        ds = open_raw(Path(path_or_ds))
    if variables is None:
        if VARIABLES_ATTR in ds.attrs:
            variables = json.loads(ds.attrs[VARIABLES_ATTR])
        else:
            order = [*DEFAULT_VARIABLES, *(v for v in VARIABLES if v not in DEFAULT_VARIABLES)]
            variables = [v for v in order if v in ds.data_vars and MEAN_ATTR in ds[v].attrs]
        if not variables:
            raise UnknownNameError(
                f"no variable carries normalisation statistics (variables: {list(ds.data_vars)})"
            )
    return Normalization.from_attrs(ds, list(variables))
