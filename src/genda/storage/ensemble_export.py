"""Writing a query result of an ensemble store to a CSV or NetCDF file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import xarray as xr

from genda.atomic import write_file
from genda.errors import InvalidValueError
from genda.storage.ensemble_layout import TIME_UNITS


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
            clean.to_dataframe(name=name).reset_index().to_csv(partial, index=False)
            return
        ds = clean.to_dataset(name=name)
        ds.attrs["Conventions"] = "CF-1.10"
        encoding: dict[str, dict[str, Any]] = {}
        if "time" in ds.coords:
            encoding["time"] = {"units": TIME_UNITS, "dtype": "int64"}
        ds.to_netcdf(partial, encoding=encoding)

    return write_file(path, write)
