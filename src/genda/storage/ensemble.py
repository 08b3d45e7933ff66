"""Posterior ensembles on disk: one Zarr v3 store per assimilation window.

Layout (CF-1.10, readable with plain ``xarray.open_zarr``)::

    u, v, T                 (time, member, altitude, latitude, longitude)  the members
    u_mean, v_mean, T_mean  (time, altitude, latitude, longitude)          ensemble mean
    u_spread, ...           (time, altitude, latitude, longitude)          ensemble standard deviation (ddof=1; NaN for one member)

One chunk holds one member of one variable at one time (the unit a worker
writes), the statistics one field per chunk. Global attributes carry the
provenance of the window (checkpoint, observations, method, steps, seeds,
genda version) as JSON strings where they are structured.

The store is written to a temporary sibling and renamed into place, so a
reader never sees a half-written ensemble and a failed run leaves nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from genda.atomic import partial_path, publish_directory, remove_path
from genda.grid import Grid, lookup_variable
from genda.storage.archive import consolidate

MEMBER_DIM = "member"


def ensemble_dataset(
    members: np.ndarray,
    grid: Grid,
    time: np.datetime64,
    attrs: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Members ``(N, V, L, H, W)`` in physical units -> the window's Dataset (module docstring)."""
    members = np.asarray(members)
    if members.ndim != 5 or tuple(members.shape[1:]) != tuple(grid.shape):
        raise ValueError(
            f"members must be (N, {', '.join(map(str, grid.shape))}), got {members.shape}"
        )
    if members.shape[0] < 1:
        raise ValueError("an ensemble needs at least one member")
    if not np.all(np.isfinite(members)):
        raise ValueError("the ensemble contains NaN or infinite values; nothing written")
    coords: dict[str, Any] = grid.coords()
    coords["time"] = xr.Variable(
        "time", np.asarray([time], dtype="datetime64[ns]"), {"standard_name": "time", "axis": "T"}
    )
    coords[MEMBER_DIM] = xr.Variable(
        MEMBER_DIM, np.arange(members.shape[0]), {"long_name": "ensemble member index"}
    )
    dims = ("time", MEMBER_DIM, "altitude", "latitude", "longitude")
    data_vars: dict[str, xr.Variable] = {}
    for i, name in enumerate(grid.variables):
        cf = lookup_variable(name).cf_attrs()
        field = members[None, :, i].astype(np.float32)
        data_vars[name] = xr.Variable(dims, field, cf)
        # One member has no spread to estimate: NaN, as the scores report it, not 0.
        spread = (
            field.std(axis=1, ddof=1) if members.shape[0] > 1 else np.full_like(field[:, 0], np.nan)
        )
        data_vars[f"{name}_mean"] = xr.Variable(
            dims[:1] + dims[2:],
            field.mean(axis=1),
            {
                **cf,
                "long_name": f"ensemble mean of {cf.get('long_name', name)}",
                "cell_methods": "member: mean",
            },
        )
        data_vars[f"{name}_spread"] = xr.Variable(
            dims[:1] + dims[2:],
            spread.astype(np.float32),
            {
                "units": cf["units"],
                "long_name": f"ensemble standard deviation of {cf.get('long_name', name)}",
                "cell_methods": "member: standard_deviation",
            },
        )
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs["Conventions"] = "CF-1.10"
    ds.attrs["genda_variables"] = json.dumps(list(grid.variables))
    for key, value in (attrs or {}).items():
        ds.attrs[key] = value if isinstance(value, str | int | float) else json.dumps(value)
    return ds


def write_ensemble(
    path: str | os.PathLike[str],
    members: np.ndarray,
    grid: Grid,
    time: np.datetime64,
    attrs: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write one window's ensemble store atomically (module docstring); returns ``path``."""
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    ds = ensemble_dataset(members, grid, time, attrs)
    _, nlev, nlat, nlon = grid.shape
    encoding: dict[str, dict[str, Any]] = {}
    for name in ds.data_vars:
        per_member = MEMBER_DIM in ds[name].dims
        encoding[str(name)] = {
            "chunks": (1, 1, nlev, nlat, nlon) if per_member else (1, nlev, nlat, nlon)
        }
    encoding["time"] = {"units": "seconds since 2000-01-01 00:00:00", "dtype": "int64"}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(path)
    remove_path(partial)
    try:
        ds.to_zarr(partial, mode="w", zarr_format=3, consolidated=False, encoding=encoding)
        consolidate(partial)
        publish_directory(partial, path)
    except BaseException:
        remove_path(partial)
        raise
    return path


def open_ensemble(path: str | os.PathLike[str]) -> xr.Dataset:
    """A lazy Dataset of an ensemble store (``xarray.open_zarr`` works as well)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no ensemble store at {path}")
    return xr.open_zarr(path, zarr_format=3)
