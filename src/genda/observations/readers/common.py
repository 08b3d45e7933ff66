"""What the readers of instrument files share: the reader record, the read summary, the errors.

A reader turns one instrument file into rows of an observation table
(:mod:`genda.observations.table`) and counts what it left out and why. Each
row is counted once, under the first check it fails, in the order the reader
applies them; the reasons are :data:`SKIP_REASONS`. The vertical coordinate of
the rows is one of two kinds (:data:`VerticalKind`):

- ``"log-pressure"``: instruments that report pressure (MLS, SABER) fill
  ``alt_km`` with the log-pressure altitude of :func:`genda.constants.pressure_to_altitude_km`;
- ``"geometric"``: instruments that report geometric height (radars, lidars)
  fill ``height_km`` (km above mean sea level) and leave ``alt_km`` out;
  :mod:`genda.observations.heights` turns it into ``alt_km``.

:func:`genda.observations.readers.read_instrument_files` runs a reader over
files and gathers the :class:`ReadSummary`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from genda.observations.table import ObservationError

VerticalKind = Literal["log-pressure", "geometric"]
"""What a reader's rows carry: ``alt_km`` (log-pressure) or ``height_km`` (geometric)."""

SKIP_REASONS: dict[str, str] = {
    "fill value": "the value, its uncertainty, its time or its position is missing or a fill value",
    "flagged": "a quality flag of the file marks the value or its profile bad",
    "pressure range": "outside the pressure range recommended for the product",
    "status": "MLS Status is odd (bit 0: do not use the profile)",
    "quality": "MLS Quality is not above the threshold of its pressure",
    "convergence": "MLS Convergence is not below the threshold",
    "precision": "the uncertainty is not positive (MLS: negative precision means do not use)",
    "time range": "outside the requested time range (genda ingest --start/--end)",
    "implausible": "the value or its uncertainty lies outside the physical ranges of the "
    "observation table (PHYSICAL_RANGES, SIGMA_RANGES: a unit or decoding error; genda ingest)",
    "outside levels": "the geometric height lies outside the heights of the levels (genda ingest)",
    "outside grid": "outside the altitudes of the grid (genda ingest --grid)",
}
"""Why a row of an instrument file is left out, by name, in the order the checks run."""

SOURCE_COLUMN = "source_file"
"""Column naming the file each row of :func:`read_instrument_files` came from."""


class InstrumentFileError(ObservationError):
    """An instrument file cannot be read: wrong format, missing variables or attributes, no rows.

    The message names the file and what is missing. ``summary`` is the
    :class:`ReadSummary` of the files read so far when the error concerns a
    set of files (refused files, no rows left), else ``None``.
    """

    def __init__(self, message: str, problems: tuple[str, ...] = (), summary: object = None):
        super().__init__(message, problems)
        self.summary = summary


@dataclass
class FileRead:
    """What a reader returns for one file.

    Attributes:
        table: the rows kept: columns ``time`` (naive UTC datetime64[ns]),
            ``lat``, ``lon``, ``alt_km`` or ``height_km``, ``variable``,
            ``value``, ``sigma``, ``station``, ``fwhm_km``, ``network`` and
            optionally ``units`` (the unit of ``value``, converted by
            :func:`~genda.observations.table.validate_observations`).
        rows_read: values the file holds (kept or not).
        skipped: rows left out, by reason of :data:`SKIP_REASONS`.
    """

    table: pd.DataFrame
    rows_read: int
    skipped: dict[str, int]


@dataclass(frozen=True)
class Reader:
    """A format of instrument file and the function that reads it.

    Attributes:
        name: the format's name (``genda ingest FORMAT``).
        description: one line: instrument and file layout.
        vertical: the vertical coordinate of its rows (:data:`VerticalKind`).
        reference: the documentation of the layout.
        read: ``path -> FileRead``; raises :class:`InstrumentFileError`.
    """

    name: str
    description: str
    vertical: VerticalKind
    reference: str
    read: Callable[[Path], FileRead]


@dataclass
class FileSummary:
    """The reading of one file: rows read, kept and skipped by reason, or why it was refused."""

    path: str
    rows_read: int = 0
    rows_kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    refused: str = ""
    """Why the whole file was refused; ``''`` when it was read."""


@dataclass
class ReadSummary:
    """The reading of a set of files of one format (:func:`read_instrument_files`).

    For every file that was read, ``rows_read == rows_kept + sum(skipped.values())``.
    """

    format: str
    files: list[FileSummary] = field(default_factory=list)

    @property
    def rows_read(self) -> int:
        return sum(f.rows_read for f in self.files)

    @property
    def rows_kept(self) -> int:
        return sum(f.rows_kept for f in self.files)

    @property
    def skipped(self) -> dict[str, int]:
        """Rows skipped over all files, by reason, in the order of :data:`SKIP_REASONS`."""
        totals = {
            reason: sum(f.skipped.get(reason, 0) for f in self.files) for reason in SKIP_REASONS
        }
        return {reason: n for reason, n in totals.items() if n}

    @property
    def refused(self) -> list[FileSummary]:
        return [f for f in self.files if f.refused]

    def drop(self, table: pd.DataFrame, mask: np.ndarray, reason: str) -> pd.DataFrame:
        """``table`` without the rows of ``mask``, counted per file under ``reason``.

        ``table`` carries :data:`SOURCE_COLUMN`, as :func:`read_instrument_files` returns it.
        """
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            self._count(table.loc[mask, SOURCE_COLUMN].value_counts(), reason)
        return table.loc[~mask].reset_index(drop=True)

    def _count(self, per_file: pd.Series, reason: str) -> None:
        if reason not in SKIP_REASONS:
            raise KeyError(f"unknown skip reason {reason!r}")
        for summary in self.files:
            n = int(per_file.get(summary.path, 0))
            if n:
                summary.rows_kept -= n
                summary.skipped[reason] = summary.skipped.get(reason, 0) + n


class Screen:
    """Rows of one file, left out by checks applied in order; each row counts once.

    ``keep`` is the ``(N,)`` mask of rows that passed every check so far;
    ``counts`` the rows left out by reason (the first check they failed).
    """

    def __init__(self, n: int) -> None:
        self.keep = np.ones(n, dtype=bool)
        self.counts: dict[str, int] = {}

    def reject(self, mask: np.ndarray, reason: str) -> None:
        """Leave out the rows of ``mask`` still kept, counted under ``reason``."""
        if reason not in SKIP_REASONS:
            raise KeyError(f"unknown skip reason {reason!r}")
        new = np.asarray(mask, dtype=bool) & self.keep
        if new.any():
            self.counts[reason] = self.counts.get(reason, 0) + int(new.sum())
            self.keep &= ~new


def profile_rows(columns: Mapping[str, np.ndarray | str | float], keep: np.ndarray) -> pd.DataFrame:
    """The table of the rows ``keep`` (an ``(N,)`` mask) of same-length columns.

    ``columns`` maps column names to ``(N,)`` arrays or to one value for every
    row; the frame keeps their order and only the rows where ``keep`` is set.
    """
    keep = np.asarray(keep, dtype=bool)
    data: dict[str, np.ndarray] = {}
    for name, values in columns.items():
        if isinstance(values, str):
            data[name] = np.full(int(keep.sum()), values, dtype=object)
        else:
            data[name] = np.broadcast_to(np.asarray(values), keep.shape)[keep]
    return pd.DataFrame(data)


def as_float(values: object) -> np.ndarray:
    """``values`` as a float64 array (a copy)."""
    return np.array(values, dtype=np.float64)


def decoded(text: object) -> str:
    """A file's attribute or string field (text, bytes, or an array of one of them) as stripped text."""
    if isinstance(text, np.ndarray) and text.size == 1:
        text = text.item()
    if isinstance(text, bytes | np.bytes_):
        text = bytes(text).decode("utf-8", errors="replace")
    return str(text).strip().strip("\x00").strip()


def refuse(path: Path, what: str) -> InstrumentFileError:
    """The error for a file that lacks ``what`` (a sentence naming the variable or attribute)."""
    return InstrumentFileError(f"{path}: {what}", (what,))


__all__ = [
    "SKIP_REASONS",
    "SOURCE_COLUMN",
    "FileRead",
    "FileSummary",
    "InstrumentFileError",
    "ReadSummary",
    "Reader",
    "Screen",
    "VerticalKind",
    "as_float",
    "decoded",
    "profile_rows",
    "refuse",
]
