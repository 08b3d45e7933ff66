"""Observation files: reading and writing tables as CSV, Parquet or NetCDF.

The format is chosen by the file's suffix. :func:`read_observations` restores
the dtypes a format loses; its result still goes through
:func:`~genda.observations.table.validate_observations`.
:func:`write_observations` writes a validated table atomically
(docs/observations.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from genda.atomic import write_file
from genda.errors import MissingInputError
from genda.observations.table import (
    _FLOAT_COLUMNS,
    _TEXT_COLUMNS,
    OBSERVATION_COLUMNS,
    ObservationError,
    _as_text,
)

# Extra attributes of the columns in a NetCDF file.
_NETCDF_ATTRS: dict[str, dict[str, str]] = {
    "time": {"standard_name": "time", "long_name": "valid time (UTC)"},
    "lat": {"units": "degrees_north", "standard_name": "latitude"},
    "lon": {"units": "degrees_east", "standard_name": "longitude"},
    "alt_km": {"units": "km", "long_name": "log-pressure altitude H ln(p0/p), H = 7 km"},
    "variable": {"long_name": "observed quantity: u, v, T or los (line-of-sight wind)"},
    "value": {"long_name": "observed value, in m s-1 for u, v and los, in K for T"},
    "sigma": {"long_name": "observation-error standard deviation, unit of value"},
    "station": {"long_name": "station or instrument"},
    "azimuth_deg": {"units": "degree", "long_name": "beam azimuth, clockwise from north"},
    "elevation_deg": {"units": "degree", "long_name": "beam elevation above the horizon"},
    "fwhm_km": {"units": "km", "long_name": "FWHM of the Gaussian vertical kernel (NaN: point)"},
}


def _read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path)


def _read_parquet(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path, engine="pyarrow")


def _read_netcdf(path: Path) -> pd.DataFrame:
    with xr.open_dataset(path) as ds:
        if "obs" not in ds.dims:
            raise ObservationError(
                f"{path}: no 'obs' dimension (dimensions: {sorted(map(str, ds.dims))}); "
                "an observation file holds one entry per observation along 'obs'"
            )
        columns = {
            str(name): var.values
            for name, var in ds.variables.items()
            if var.dims == ("obs",) and name != "obs"
        }
    return pd.DataFrame(columns)


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    df.to_csv(path, index=False)


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    df.to_parquet(path, engine="pyarrow", index=False)


def _write_netcdf(df: pd.DataFrame, path: Path) -> None:
    data_vars = {}
    for column in df.columns:
        values = df[column].to_numpy()
        if column in _TEXT_COLUMNS or values.dtype == object:
            # netCDF strings cannot be missing: '' stands for none, as in a validated table.
            values = _as_text(df[column]).to_numpy(dtype=object)
        data_vars[str(column)] = xr.Variable("obs", values, _NETCDF_ATTRS.get(str(column), {}))
    ds = xr.Dataset(
        data_vars,
        attrs={
            "Conventions": "CF-1.10",
            "title": "genda observation table (docs/observations.md)",
        },
    )
    ds.to_netcdf(path, format="NETCDF4", engine="netcdf4")


_READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    ".csv": _read_csv,
    ".parquet": _read_parquet,
    ".pq": _read_parquet,
    ".nc": _read_netcdf,
    ".nc4": _read_netcdf,
}
_WRITERS: dict[str, Callable[[pd.DataFrame, Path], None]] = {
    ".csv": _write_csv,
    ".parquet": _write_parquet,
    ".pq": _write_parquet,
    ".nc": _write_netcdf,
    ".nc4": _write_netcdf,
}


def _file_type(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in _READERS:
        raise ObservationError(
            f"{path}: unknown observation file type {path.suffix!r}; "
            f"expected one of {', '.join(_READERS)}"
        )
    return suffix


def _restore_dtypes(df: pd.DataFrame) -> pd.DataFrame:
    """The column types a file format loses (CSV) or varies in: times, numbers, strings.

    Values that do not convert are left as read, for :func:`validate_observations`
    to report by row.
    """
    out = df.copy()
    if "time" in out.columns and not pd.api.types.is_datetime64_any_dtype(out["time"]):
        try:
            out["time"] = pd.to_datetime(out["time"], format="ISO8601")
        except (ValueError, TypeError):
            pass
    if "time" in out.columns and pd.api.types.is_datetime64_dtype(out["time"]):
        out["time"] = out["time"].astype("datetime64[ns]")
    for column in _FLOAT_COLUMNS:
        if column in out.columns and pd.api.types.is_numeric_dtype(out[column]):
            out[column] = out[column].astype(np.float64)
    for column in _TEXT_COLUMNS:
        if column in out.columns:
            out[column] = _as_text(out[column])
    return out


def read_observations(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read an observation table from CSV, Parquet or NetCDF (by suffix).

    NetCDF files hold one variable per column along an ``obs`` dimension.
    Times, numbers and strings get the dtypes of a validated table where they
    convert; validate the result with :func:`validate_observations`.

    Raises:
        FileNotFoundError: no such file.
        ObservationError: unknown suffix or unreadable content, naming the file.
    """
    path = Path(path)
    reader = _READERS[_file_type(path)]
    if not path.is_file():
        raise MissingInputError(f"{path}: no such observation file")
    try:
        df = reader(path)
    except ObservationError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise ObservationError(f"{path}: cannot read observations: {exc}") from exc
    return _restore_dtypes(df)


def write_observations(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a (validated) observation table to CSV, Parquet or NetCDF, by suffix.

    The file is written to a temporary sibling and moved into place
    (:func:`genda.atomic.write_file`): ``path`` holds either the old or the
    complete new table.
    The index is not written (a validated table has ``0..M-1``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ObservationError: unknown suffix, missing required columns, or times that
            are not naive UTC datetimes (validate first).
    """
    path = Path(path)
    writer = _WRITERS[_file_type(path)]
    missing = [c for c in OBSERVATION_COLUMNS if c not in df.columns]
    if missing:
        raise ObservationError(f"{path}: not writing a table without column(s) {missing}")
    if not pd.api.types.is_datetime64_dtype(df["time"]):
        raise ObservationError(
            f"{path}: column 'time' has dtype {df['time'].dtype}; write a table returned by "
            "validate_observations (naive UTC datetime64)"
        )
    return write_file(path, lambda partial: writer(df.reset_index(drop=True), partial))


__all__ = ["read_observations", "write_observations"]
