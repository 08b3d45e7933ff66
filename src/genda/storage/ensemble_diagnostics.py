"""The observation-space diagnostics of each window, kept in the ensemble store as a Zarr group.

Where: the group ``diagnostics/<YYYYMMDDTHHMMSS>`` of the store (the window's
time in ISO 8601 basic format, which needs no ``:`` in a file name), one per
window, inside the ``diagnostics`` group::

    STORE/
      zarr.json, u/, v/, T/, complete/, ...    the ensemble (docs/store.md)
      diagnostics/zarr.json                    a Zarr group
      diagnostics/20240101T060000/             one group per window: 1-D arrays along ``obs``

(Zarr v3 groups and arrays,
https://zarr-specs.readthedocs.io/en/latest/v3/core/index.html; text
columns in Zarr's ``vlen-utf8`` codec, times as CF-encoded integers, as
xarray writes them.)

A group of the store rather than a Parquet file beside the arrays: Zarr
lists every entry of the store's root and warns of each file it cannot read
as a Zarr node, on every open; a group is part of the hierarchy, travels
with the store (copies, ``--overwrite``) and is left alone by
:meth:`~genda.storage.ensemble_store.EnsembleStore.validate` and ``repair``,
which check only the window arrays. Read it with :func:`read_diagnostics`, or
with plain xarray::

    xr.open_zarr(STORE, group="diagnostics/20240101T060000").to_dataframe()

The columns are those of :func:`genda.observations.diagnostics.observation_diagnostics`:
the observation table and the prior, posterior and background-check values
at each row. Group attributes: ``format`` (:data:`FORMAT`), ``format_version``,
``window`` (ISO time), ``provenance`` (the window's, JSON: what determined
the members; a table whose provenance is not the window's current one is
refused as stale), ``columns`` (JSON list, the table's column order),
``created``, ``genda_version`` and the caller's extra attributes (the
checkpoint as given, the background check's ``k``).

The group is written whole in a sibling folder and renamed into place
(:func:`genda.atomic.publish_directory`), then the store's consolidated
metadata is refreshed, all under the store's metadata lock: a reader sees
the old table or the new one, never a part.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr
import zarr

from genda import __version__
from genda.atomic import partial_path, publish_directory, remove_path
from genda.storage.archive import consolidate
from genda.storage.ensemble_layout import _as_time
from genda.storage.ensemble_store import EnsembleStore
from genda.storage.ensemble_windows import canonical, provenance_differences
from genda.storage.errors import EnsembleStoreError
from genda.times import TimeLike, iso

__all__ = [
    "DIAGNOSTICS_GROUP",
    "FORMAT",
    "diagnostics_attrs",
    "diagnostics_key",
    "read_diagnostics",
    "write_diagnostics",
]

DIAGNOSTICS_GROUP = "diagnostics"
"""The store's group that holds one group per window."""
FORMAT = "genda-observation-diagnostics"
FORMAT_VERSION = 1
OBS_DIM = "obs"

_COLUMN_ATTRS: dict[str, dict[str, str]] = {
    "value": {"long_name": "observed value (m s-1 for u, v, los; K for T)"},
    "sigma": {"long_name": "observation-error standard deviation"},
    "prior_mean": {"long_name": "prior climatology at the observation, H mu_b"},
    "prior_spread": {"long_name": "prior climatological standard deviation there, |H| sigma_b"},
    "posterior_mean": {"long_name": "posterior ensemble mean at the observation, mean_n H x_n"},
    "posterior_spread": {"long_name": "posterior ensemble spread there, std_n H x_n (ddof=1)"},
    "innovation": {"long_name": "observation minus prior mean, y - H mu_b"},
    "residual": {"long_name": "observation minus posterior mean, y - mean_n H x_n"},
    "departure": {"long_name": "innovation / sqrt(prior_spread^2 + sigma^2)"},
    "rejected": {"long_name": "flagged by the background check"},
    "assimilated": {"long_name": "entered the guidance"},
}


def diagnostics_key(time: TimeLike) -> str:
    """The store-relative group of a window's diagnostics: ``diagnostics/20240101T060000``."""
    t = _as_time(time)
    return f"{DIAGNOSTICS_GROUP}/{iso(t).replace('-', '').replace(':', '')}"


def _to_dataset(table: pd.DataFrame, attrs: Mapping[str, Any]) -> xr.Dataset:
    """The table as 1-D variables along :data:`OBS_DIM`; text columns as Python strings."""
    frame = table.reset_index(drop=True).copy()
    for name in frame.columns:
        column = frame[name]
        if not (
            pd.api.types.is_numeric_dtype(column)
            or pd.api.types.is_bool_dtype(column)
            or pd.api.types.is_datetime64_dtype(column)
        ):
            frame[name] = column.astype(object).where(column.notna(), "").astype(str)
    ds = xr.Dataset.from_dataframe(frame.rename_axis(OBS_DIM))
    for name, extra in _COLUMN_ATTRS.items():
        if name in ds:
            ds[name].attrs.update(extra)
    ds.attrs.update(attrs)
    return ds


def write_diagnostics(
    store_path: str | os.PathLike[str],
    time: TimeLike,
    table: pd.DataFrame,
    attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Write a window's diagnostics table into its store; returns the group's directory.

    Args:
        store_path: a genda ensemble store holding the window.
        time: the window.
        table: :func:`genda.observations.diagnostics.observation_diagnostics`'s table.
        attrs: extra group attributes (text, numbers, booleans; a dict or list
            becomes a JSON string).

    Raises:
        EnsembleStoreError: the store or the window does not exist, or the
            table is empty.
    """
    store = EnsembleStore.open(store_path)
    t = _as_time(time)
    provenance = store.provenance(t)  # the window must exist
    if len(table) == 0:
        raise EnsembleStoreError(f"no observations to write as the diagnostics of {iso(t)}")
    extra = {
        k: json.dumps(v, sort_keys=True) if isinstance(v, Mapping | list | tuple) else v
        for k, v in (attrs or {}).items()
    }
    group_attrs = {
        **extra,
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "window": iso(t),
        "provenance": json.dumps(provenance, sort_keys=True),
        "columns": json.dumps([str(c) for c in table.columns]),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "genda_version": __version__,
    }
    target = store.path / diagnostics_key(t)
    parent = target.parent
    partial = partial_path(target)
    remove_path(partial)
    dataset = _to_dataset(table, group_attrs)
    # Under the lock, so that no consolidation (add_window, finalize) of another
    # process meets the half-made group (a few kB: the wait is short).
    try:
        with store.metadata_lock():
            if not (parent / "zarr.json").is_file():
                zarr.open_group(
                    str(parent),
                    mode="a",
                    zarr_format=3,
                    attributes={"long_name": "observation-space diagnostics of each window"},
                )
            dataset.to_zarr(partial, mode="w", zarr_format=3, consolidated=False)
            publish_directory(partial, target, replace=True)
            consolidate(store.path)
    except BaseException:
        remove_path(partial)
        raise
    return target


def read_diagnostics(store_path: str | os.PathLike[str], time: TimeLike) -> pd.DataFrame | None:
    """A window's diagnostics table, or ``None`` when the store holds none for it.

    The group's attributes come back in ``table.attrs`` (``provenance`` and
    other JSON strings decoded).

    Raises:
        EnsembleStoreError: the store or window is missing, the group is not
            genda's diagnostics, or it was written under another provenance than
            the window's current one (stale: rerun the window).
    """
    store = EnsembleStore.open(store_path)
    t = _as_time(time)
    current = store.provenance(t)
    group = store.path / diagnostics_key(t)
    if not (group / "zarr.json").is_file():
        return None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        ds = xr.open_zarr(group, consolidated=False, zarr_format=3).load()
    attrs = dict(ds.attrs)
    if attrs.get("format") != FORMAT:
        raise EnsembleStoreError(
            f"{group} is not genda observation diagnostics (format {attrs.get('format')!r})"
        )
    for key in ("provenance", "columns"):
        attrs[key] = json.loads(attrs[key])
    differ = provenance_differences(current, canonical(attrs["provenance"], "provenance"))
    if differ:
        raise EnsembleStoreError(
            f"the diagnostics {group} were written under other settings than window {iso(t)} "
            f"now has (differing: {', '.join(differ)}); rerun the window to rewrite them"
        )
    table = ds.to_dataframe().reset_index(drop=True)[attrs["columns"]]
    for name in table.columns:
        if table[name].dtype == object:
            table[name] = table[name].astype(str)
    table.attrs = attrs
    return table


def diagnostics_attrs(store_path: str | os.PathLike[str], time: TimeLike) -> dict[str, Any] | None:
    """The attributes of a window's diagnostics group, or ``None`` (none, or stale).

    Reads only the group's metadata; a group written under another provenance
    than the window's current one counts as none.
    """
    store = EnsembleStore.open(store_path)
    t = _as_time(time)
    group = store.path / diagnostics_key(t)
    if not (group / "zarr.json").is_file():
        return None
    attrs = dict(zarr.open_group(str(group), mode="r", zarr_format=3).attrs)
    try:
        recorded = json.loads(str(attrs.get("provenance")))
    except ValueError:
        return None
    if attrs.get("format") != FORMAT or provenance_differences(store.provenance(t), recorded):
        return None
    return attrs
