"""Files out of an ensemble store: a query result as CSV or NetCDF, a window as CF NetCDF.

- :func:`to_file` writes what :func:`genda.storage.ensemble_query.query`
  returns (one variable at one level) to ``.csv`` or ``.nc``;
- :func:`export_window` writes a whole window (``genda export``): the
  ensemble mean and spread of every variable, the members if asked, and the
  window's provenance, as a CF-1.10 NetCDF file (layout below);
- :func:`find_window` resolves a time to a window of the store, naming the
  nearest windows when there is none at that time (``genda plot`` uses it too).

Every file appears complete or not at all (:func:`genda.atomic.write_file`).

NetCDF layout of :func:`export_window` (CF conventions 1.10,
https://cfconventions.org/Data/cf-conventions/cf-conventions-1.10/cf-conventions.html)::

    dimensions: time = 1, nv = 2, altitude = L, latitude = H, longitude = W[, member = N]
    time(time)             int64 seconds since 2000-01-01: the valid time (window centre),
                           bounds time_bnds(time, nv): the assimilation window
    altitude, latitude, longitude (and the grid's other coordinates, :meth:`Grid.coords`)
    member(member)         standard_name realization (with --members)
    <var>_mean(time, altitude, latitude, longitude)  float32, cell_methods "realization: mean"
    <var>_std(time, altitude, latitude, longitude)   float32, "realization: standard_deviation"
    <var>(time, member, altitude, latitude, longitude)  float32 members (with --members)

Global attributes: ``Conventions = "CF-1.10"``, ``title``, ``source``,
``history``, ``date_created`` (ISO, UTC), ``valid_time``,
``time_coverage_start`` / ``time_coverage_end`` (ACDD 1.3), ``genda_version``
(that made the members; the exporter's is in ``history``), ``genda_store``, ``genda_window``, ``genda_members``,
``genda_provenance`` (the window's whole provenance as JSON), one
``genda_<key>`` per provenance key (``genda_checkpoint_sha256``,
``genda_observations_sha256``, ``genda_method``, ``genda_settings`` as JSON,
...), ``genda_sampler`` (from the settings) and ``genda_checkpoint`` (the
checkpoint as ``genda assimilate`` was given it, where the window's
observation diagnostics recorded it). NetCDF attributes hold text and
numbers, so mappings and lists become JSON strings and booleans 0 or 1.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from genda import __version__
from genda.atomic import write_file
from genda.errors import GendaError, InvalidValueError
from genda.grid import VERTICAL_AUXILIARIES
from genda.ownership import check_file_replaceable
from genda.storage.ensemble_diagnostics import diagnostics_attrs
from genda.storage.ensemble_layout import TIME_UNITS, _as_time, stat_attrs
from genda.storage.ensemble_query import open_ensemble
from genda.storage.ensemble_store import EnsembleStore
from genda.storage.errors import EnsembleStoreError
from genda.times import TimeLike, iso

__all__ = [
    "UnwritableOutputError",
    "check_output_file",
    "export_window",
    "find_window",
    "to_file",
]

NEAREST_SHOWN = 3
"""How many of the nearest windows an unknown time's error names."""


class UnwritableOutputError(GendaError, PermissionError):
    """An output cannot be written where it was asked for (its folder is a file, read-only, ...)."""


def check_output_file(
    path: str | os.PathLike[str], suffixes: tuple[str, ...], overwrite: bool
) -> Path:
    """``path`` checked as a new output file before any work: suffix, existing file, its folder.

    Raises:
        InvalidValueError: the suffix is not one of ``suffixes``.
        OutputExistsError: ``path`` is a directory, or a file and not ``overwrite``.
        UnwritableOutputError: the folder that would hold it is a file or not writable.
    """
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise InvalidValueError(
            f"cannot write {path}: the file must end in {' or '.join(suffixes)}, "
            f"not {path.suffix or 'nothing'!r}"
        )
    check_file_replaceable(path, overwrite)
    check_writable_folder(path.parent)
    return path


def check_writable_folder(folder: Path) -> None:
    """``folder`` exists as a writable directory, or can be made (its first existing parent is one).

    Raises:
        UnwritableOutputError: naming the folder and what is in the way.
    """
    existing = Path(folder).absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UnwritableOutputError(
            f"cannot write into {folder}: {existing} is a file, not a folder"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UnwritableOutputError(f"cannot write into {folder}: {existing} is not writable")


def find_window(store: EnsembleStore, time: TimeLike) -> np.datetime64:
    """The window of ``store`` at ``time`` (whole seconds); an error naming the nearest ones.

    Raises:
        EnsembleStoreError: ``time`` is no time, or no window is registered at it
            (the message lists the :data:`NEAREST_SHOWN` nearest windows).
    """
    t = _as_time(time)
    windows = store.windows()
    if any(w == t for w in windows):
        return t
    if not windows:
        raise EnsembleStoreError(f"{store.path} holds no windows yet (asked for {iso(t)})")
    offsets = np.asarray([(w - t) / np.timedelta64(1, "s") for w in windows], dtype=np.float64)
    order = np.argsort(np.abs(offsets), kind="stable")[:NEAREST_SHOWN]
    nearest = ", ".join(f"{iso(windows[i])} ({_offset(offsets[i])})" for i in order)
    count = len(windows)
    raise EnsembleStoreError(
        f"window {iso(t)} is not in {store.path} ({count} window{'s' if count != 1 else ''}; "
        f"nearest: {nearest})"
    )


def _offset(seconds: float) -> str:
    """``"6 h later"``, ``"30 min earlier"``: a window's offset from the time asked for."""
    size = abs(seconds)
    text = f"{size / 3600:g} h" if size >= 3600 else f"{size / 60:g} min"
    return f"{text} {'later' if seconds > 0 else 'earlier'}"


# ---------------------------------------------------------------------- query results
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

    def write(partial: Path) -> None:
        if suffix == ".csv":
            # one column per coordinate a row varies along: the CF auxiliaries of the
            # vertical (lev, air_pressure, p0) restate altitude in other units
            table = clean.drop_vars(VERTICAL_AUXILIARIES, errors="ignore")
            table.to_dataframe(name=name).reset_index().to_csv(partial, index=False)
            return
        ds = clean.to_dataset(name=name)
        ds.attrs["Conventions"] = "CF-1.10"
        encoding: dict[str, dict[str, Any]] = {}
        if "time" in ds.coords:
            encoding["time"] = {"units": TIME_UNITS, "dtype": "int64"}
        ds.to_netcdf(partial, encoding=encoding)

    return write_file(path, write)


# ---------------------------------------------------------------------- a whole window
def export_window(
    store_path: str | os.PathLike[str],
    time: TimeLike,
    out: str | os.PathLike[str],
    *,
    members: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write a finalised window as CF NetCDF with its provenance (module docstring); returns ``out``.

    Args:
        store_path: a genda ensemble store.
        time: the window (its valid time, the window's centre).
        out: the ``.nc`` file to write.
        members: include every member (``N`` times the size of the mean).
        overwrite: replace an existing file at ``out``.

    Raises:
        MissingInputError: no store at ``store_path``.
        EnsembleStoreError: not a genda store, no window at ``time`` (the nearest
            are named), the window not finalised, or damaged data in it.
        InvalidValueError: ``out`` does not end in ``.nc``.
        OutputExistsError: ``out`` exists (without ``overwrite``) or is a directory.
        UnwritableOutputError: ``out``'s folder cannot be written.
    """
    out = check_output_file(out, (".nc",), overwrite)
    store = EnsembleStore.open(store_path)
    t = find_window(store, time)
    if not store.is_finalized(t):
        raise EnsembleStoreError(
            f"window {iso(t)} of {store.path} is not finalised (members missing: "
            f"{len(store.missing(t))} of {store.n_members}); rerun it to complete it"
        )
    ds = window_dataset(store, t, members=members)
    encoding: dict[str, dict[str, Any]] = {
        "time": {"units": TIME_UNITS, "calendar": "proleptic_gregorian", "dtype": "int64"},
        "time_bnds": {"units": TIME_UNITS, "calendar": "proleptic_gregorian", "dtype": "int64"},
    }
    for name, var in ds.data_vars.items():
        if var.dtype == np.float32:
            encoding[str(name)] = {"zlib": True, "complevel": 4, "_FillValue": np.float32(np.nan)}
    return write_file(out, lambda partial: ds.to_netcdf(partial, encoding=encoding))


def window_dataset(store: EnsembleStore, t: np.datetime64, *, members: bool) -> xr.Dataset:
    """The Dataset :func:`export_window` writes, loaded (window ``t`` must be finalised)."""
    index = store.window_index(t)
    grid = store.grid
    source = open_ensemble(store.path).isel(time=index)
    dims = ("time", "altitude", "latitude", "longitude")
    data_vars: dict[str, xr.Variable] = {}
    for name in grid.variables:
        attrs = stat_attrs(name)
        for stat, method in (("mean", "mean"), ("std", "standard_deviation")):
            values = np.asarray(source[f"{name}_{stat}"].values, dtype=np.float32)
            _check_finite(values, store, t, f"{name}_{stat}", stat == "std")
            var_attrs = {**attrs[stat], "cell_methods": f"realization: {method}"}
            data_vars[f"{name}_{stat}"] = xr.Variable(dims, values[None], var_attrs)
    coords: dict[str, Any] = dict(grid.coords())
    if members:
        fields = store.read_members(t)  # raises naming damaged members
        for v, name in enumerate(grid.variables):
            data_vars[name] = xr.Variable(
                ("time", "member", *dims[1:]),
                fields[None, :, v],
                {k: a for k, a in source[name].attrs.items() if k != "_FillValue"},
            )
        coords["member"] = xr.Variable(
            "member",
            np.arange(store.n_members, dtype=np.int64),
            {"standard_name": "realization", "long_name": "ensemble member index"},
        )
    provenance = store.provenance(t)
    hours = float(provenance.get("window_hours", 0.0))
    half = np.timedelta64(round(hours * 1800.0), "s")
    coords["time"] = xr.Variable(
        "time",
        np.array([t], dtype="datetime64[ns]"),
        {
            "standard_name": "time",
            "long_name": "valid time (centre of the assimilation window)",
            "axis": "T",
            "bounds": "time_bnds",
        },
    )
    coords["time_bnds"] = xr.Variable(
        ("time", "nv"), np.array([[t - half, t + half]], dtype="datetime64[ns]")
    )
    ds = xr.Dataset(data_vars, coords)
    ds.attrs = _global_attrs(store, t, provenance, half)
    return ds


def _check_finite(
    values: np.ndarray, store: EnsembleStore, t: np.datetime64, name: str, is_std: bool
) -> None:
    """A finalised statistic must be finite (a spread of one member is NaN by definition)."""
    if is_std and store.n_members == 1:
        return
    if not np.isfinite(values).all():
        raise EnsembleStoreError(
            f"window {iso(t)} of {store.path} is finalised but {name} has missing or NaN values "
            f"(a chunk file was removed or damaged); 'genda validate --repair {store.path}' "
            "clears the statistics so that a rerun of the window computes them again"
        )


def _attr_value(value: Any) -> str | int | float:
    """A provenance value as a NetCDF attribute: text and numbers as they are, the rest as JSON."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str | int | float):
        return value
    return json.dumps(value, sort_keys=True)


def _global_attrs(
    store: EnsembleStore, t: np.datetime64, provenance: dict[str, Any], half: np.timedelta64
) -> dict[str, Any]:
    """The file's global attributes (module docstring)."""
    created = datetime.now(UTC).isoformat(timespec="seconds")
    kind = provenance.get("kind", "ensemble")
    attrs: dict[str, Any] = {
        "Conventions": "CF-1.10",
        "title": f"genda {kind} ensemble mean and spread, valid {iso(t)} UTC",
        "source": f"genda {provenance.get('genda_version', __version__)}",
        "history": f"{created} genda {__version__} export {store.path} --time {iso(t)}",
        "date_created": created,
        "valid_time": iso(t),
        "time_coverage_start": iso(t - half),
        "time_coverage_end": iso(t + half),
        "genda_version": __version__,  # the provenance's, when it has one (below)
        "genda_store": str(store.path.absolute()),
        "genda_window": iso(t),
        "genda_members": store.n_members,
        "genda_provenance": json.dumps(provenance, sort_keys=True),
    }
    for key, value in provenance.items():
        attrs[key if key.startswith("genda_") else f"genda_{key}"] = _attr_value(value)
    settings = provenance.get("settings")
    if isinstance(settings, dict) and "sampler" in settings:
        attrs["genda_sampler"] = _attr_value(settings["sampler"])
    recorded = diagnostics_attrs(store.path, t)
    if recorded and "checkpoint" in recorded:
        attrs["genda_checkpoint"] = _attr_value(recorded["checkpoint"])
    return attrs
