"""Readers of instrument files: from each documented file layout to an observation table.

One module per family of formats, each citing the documentation of its layout:

- :mod:`~genda.observations.readers.madrigal`: meteor-radar hourly winds in
  Madrigal HDF5 (``radar-madrigal``);
- :mod:`~genda.observations.readers.cf_profiles`: meteor-radar wind profiles
  (``radar-netcdf``) and lidar temperature profiles (``lidar-netcdf``) in CF NetCDF;
- :mod:`~genda.observations.readers.saber`: TIMED/SABER Level 2A temperature (``saber``);
- :mod:`~genda.observations.readers.mls`: Aura MLS Level 2 temperature, screened (``mls``);
- :mod:`~genda.observations.readers.common`: the :class:`Reader` record, the
  :class:`ReadSummary` and :class:`InstrumentFileError`.

:func:`read_instrument_files` reads files of one format into one table (times
in UTC, errors, station names) and a :class:`ReadSummary`. Readers of pressure
instruments fill ``alt_km``; readers of geometric heights fill ``height_km``
instead, which :mod:`genda.observations.heights` places on the log-pressure
altitude (``genda ingest`` does, then validates and writes the table;
docs/observations.md, "Instrument files").
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from genda.errors import InvalidValueError, MissingInputError, UnknownNameError
from genda.observations.readers import cf_profiles, madrigal, mls, saber
from genda.observations.readers.common import (
    SKIP_REASONS,
    SOURCE_COLUMN,
    FileRead,
    FileSummary,
    InstrumentFileError,
    Reader,
    ReadSummary,
)
from genda.times import TimeLike, as_datetime64, iso

READERS: dict[str, Reader] = {
    reader.name: reader
    for reader in (
        madrigal.READER,
        cf_profiles.RADAR_READER,
        cf_profiles.LIDAR_READER,
        saber.READER,
        mls.READER,
    )
}
"""The formats ``genda ingest`` reads, by name."""


def reader_for(format: str) -> Reader:
    """The :class:`Reader` of ``format``; an error listing the known formats otherwise."""
    try:
        return READERS[format]
    except KeyError:
        known = ", ".join(READERS)
        raise UnknownNameError(
            f"unknown instrument file format {format!r}; known: {known}"
        ) from None


def read_instrument_files(
    format: str,
    paths: Sequence[str | os.PathLike[str]],
    *,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    skip_refused: bool = False,
) -> tuple[pd.DataFrame, ReadSummary]:
    """Read instrument files of one format into one observation table.

    Every file is read, and its rows screened, by the format's reader. A file
    the reader refuses (wrong layout, missing variables) or that has no usable
    row after screening is recorded as refused.

    Args:
        format: a name of :data:`READERS`.
        paths: the files.
        start, end: keep only rows with ``start <= time <= end`` (UTC); the
            others are counted as ``"time range"``.
        skip_refused: go on without the refused files instead of failing.

    Returns:
        ``(table, summary)``: the rows of all files (the reader's columns, see
        :class:`~genda.observations.readers.common.FileRead`, plus
        :data:`SOURCE_COLUMN`), not yet validated; and the :class:`ReadSummary`.

    Raises:
        UnknownNameError: unknown format.
        MissingInputError: a path is not a file (nothing is read).
        InstrumentFileError: files refused (unless ``skip_refused``), or no row
            left; its ``summary`` is the :class:`ReadSummary`.
    """
    reader = reader_for(format)
    files = [Path(p) for p in paths]
    if not files:
        raise InvalidValueError(f"no {format} files given")
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise MissingInputError(f"no such file(s): {', '.join(missing)}")
    lower, upper = _time_bound(start, "start"), _time_bound(end, "end")
    if lower is not None and upper is not None and upper < lower:
        raise InvalidValueError(
            f"the time range ends ({iso(upper)}) before it starts ({iso(lower)})"
        )

    summary = ReadSummary(format)
    tables = []
    for path in files:
        entry = FileSummary(str(path))
        summary.files.append(entry)
        try:
            read = reader.read(path)
        except InstrumentFileError as exc:
            entry.refused = str(exc)
            continue
        entry.rows_read, entry.rows_kept, entry.skipped = (
            read.rows_read,
            len(read.table),
            read.skipped,
        )
        if not len(read.table):
            reasons = ", ".join(f"{n} {r}" for r, n in read.skipped.items()) or "no values"
            entry.refused = f"{path}: no usable rows after screening ({reasons})"
            continue
        tables.append(read.table.assign(**{SOURCE_COLUMN: str(path)}))
    if summary.refused and not skip_refused:
        listing = "\n  - ".join(f.refused for f in summary.refused)
        raise InstrumentFileError(
            f"{len(summary.refused)} of {len(files)} {format} file(s) refused:\n  - {listing}",
            tuple(f.refused for f in summary.refused),
            summary,
        )
    if not tables:
        raise InstrumentFileError(
            f"no usable rows in {len(files)} {format} file(s)", ("no rows",), summary
        )
    table = pd.concat(tables, ignore_index=True)
    if lower is not None or upper is not None:
        times = table["time"].to_numpy()
        outside = np.zeros(len(table), dtype=bool)
        if lower is not None:
            outside |= times < lower
        if upper is not None:
            outside |= times > upper
        table = summary.drop(table, outside, "time range")
        if not len(table):
            window = f"{'...' if lower is None else iso(lower)} to {'...' if upper is None else iso(upper)}"
            raise InstrumentFileError(
                f"no rows of the {len(files)} {format} file(s) lie within {window}",
                ("no rows in the time range",),
                summary,
            )
    return table, summary


def _time_bound(value: TimeLike | None, what: str) -> np.datetime64 | None:
    """A bound of the time range as naive UTC, or ``None``; an error naming it if it is no time."""
    if value is None:
        return None
    try:
        return as_datetime64(value)
    except (TypeError, ValueError) as exc:
        raise InvalidValueError(
            f"the {what} of the time range, {value!r}, is not a time ({exc})"
        ) from None


__all__ = [
    "READERS",
    "SKIP_REASONS",
    "SOURCE_COLUMN",
    "FileRead",
    "FileSummary",
    "InstrumentFileError",
    "ReadSummary",
    "Reader",
    "read_instrument_files",
    "reader_for",
]
