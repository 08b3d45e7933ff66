"""From instrument files to a validated observation table on disk (``genda ingest``).

:func:`ingest_files` reads the files (:func:`read_instrument_files`), leaves out
rows whose value or uncertainty no atmosphere produces (``"implausible"``: the
ranges :func:`~genda.observations.table.validate_observations` checks, so that
one decoding error does not refuse a whole set of files), places geometric
heights on the log-pressure altitude (:mod:`genda.observations.heights`: a
model archive's level heights, or the documented approximation), leaves out
rows outside the levels or the grid (all counted in the summary), validates the
table (:func:`~genda.observations.table.validate_observations`) and writes it
whole (:func:`~genda.observations.files.write_observations`). Nothing is written
when any step fails.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from genda.grid import Grid
from genda.observations.files import write_observations
from genda.observations.heights import (
    LevelHeights,
    approximate_level_heights,
    level_heights_from_archive,
    place_geometric_heights,
)
from genda.observations.observe import check_table_replaceable
from genda.observations.readers import read_instrument_files, reader_for
from genda.observations.readers.common import InstrumentFileError, ReadSummary, VerticalKind
from genda.observations.table import ObservationError, implausible_rows, validate_observations
from genda.times import TimeLike

if TYPE_CHECKING:
    from genda.storage.icon_native import IconRemap

EDGE_TOLERANCE_KM = 1e-3
"""Rows this close outside the grid's altitudes are put on its edge (float32 pressures
of a level differ from it by about 1e-6 km)."""


@dataclass(frozen=True)
class IngestResult:
    """What :func:`ingest_files` did.

    Attributes:
        summary: rows read, kept and skipped per file.
        out: the table written.
        rows: rows written (after validation).
        vertical: the instruments' vertical coordinate (``"log-pressure"`` or ``"geometric"``).
        heights_source: for geometric heights, where the levels' heights came
            from (:attr:`LevelHeights.source`); ``None`` for pressure instruments.
        heights_approximate: the heights are the documented approximation, not a model's.
        grid_altitudes: ``(lowest, highest)`` altitude of the grid checked against, if any.
    """

    summary: ReadSummary
    out: Path
    rows: int
    vertical: VerticalKind
    heights_source: str | None
    heights_approximate: bool
    grid_altitudes: tuple[float, float] | None


def ingest_files(
    format: str,
    paths: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    heights: str | os.PathLike[str] | None = None,
    icon: IconRemap | None = None,
    grid: Grid | None = None,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    skip_refused: bool = False,
    overwrite: bool = False,
) -> IngestResult:
    """Read instrument files of one format and write them as one validated observation table.

    Args:
        format: a name of :data:`~genda.observations.readers.READERS`.
        paths: the instrument files.
        out: the table to write (``.parquet``, ``.csv``, ``.nc``).
        heights: an archive whose level heights place geometric heights
            (:func:`level_heights_from_archive`); ``None``: the approximation
            (:func:`approximate_level_heights`). Unused for pressure instruments.
        icon: how to read ``heights`` when it is ICON output on its native
            grid (grid file, target, method: :class:`~genda.storage.icon_native.IconRemap`).
        grid: rows outside its altitudes are left out (``"outside grid"``) and
            the rest validated against it (its variables); ``None``: validated
            without an altitude range.
        start, end: keep rows within this time range (UTC, inclusive).
        skip_refused: go on without refused files.
        overwrite: replace an existing observation table at ``out``.

    Raises:
        UnknownNameError: unknown format.
        MissingInputError: a file does not exist.
        OutputExistsError: ``out`` exists (without ``overwrite``) or is not a table.
        InstrumentFileError: files refused, no rows left, or rows that do not
            validate; its ``summary`` is the :class:`ReadSummary`. Nothing is written.
    """
    out = Path(out)
    reader = reader_for(format)
    check_table_replaceable(out, overwrite)
    table, summary = read_instrument_files(
        format, paths, start=start, end=end, skip_refused=skip_refused
    )
    level_heights: LevelHeights | None = None
    table = summary.drop(table, implausible_rows(table), "implausible")
    try:
        if reader.vertical == "geometric":
            level_heights = (
                approximate_level_heights()
                if heights is None
                else level_heights_from_archive(heights, icon=icon)
            )
            table = summary.drop(table, _outside_levels(table, level_heights), "outside levels")
            table = place_geometric_heights(table, level_heights)
        if grid is not None:
            low, high = float(grid.altitude.min()), float(grid.altitude.max())
            alt = table["alt_km"].to_numpy(dtype=np.float64)
            # A level at the grid's edge, stored as a float32 pressure, comes back a
            # hair outside it: rows within the tolerance are put on the edge.
            near = (alt >= low - EDGE_TOLERANCE_KM) & (alt <= high + EDGE_TOLERANCE_KM)
            table = table.assign(alt_km=np.where(near, np.clip(alt, low, high), alt))
            table = summary.drop(table, ~near, "outside grid")
        if not len(table):
            raise ObservationError(f"no {format} rows left to write", ("no rows",))
        valid = validate_observations(
            table, grid if grid is not None else _any_altitude_grid(table), source=f"{format} files"
        )
    except ObservationError as error:
        raise InstrumentFileError(str(error), error.problems, summary) from error
    write_observations(valid, out)
    return IngestResult(
        summary=summary,
        out=out,
        rows=len(valid),
        vertical=reader.vertical,
        heights_source=None if level_heights is None else level_heights.source,
        heights_approximate=bool(level_heights is not None and level_heights.approximate),
        grid_altitudes=None
        if grid is None
        else (float(grid.altitude.min()), float(grid.altitude.max())),
    )


def _outside_levels(table: pd.DataFrame, heights: LevelHeights) -> np.ndarray:
    """``(M,)`` rows whose geometric height lies outside the levels' heights at their latitude."""
    height = table["height_km"].to_numpy(dtype=np.float64)
    columns = heights.columns(table["lat"].to_numpy(dtype=np.float64))
    return (height < columns[:, 0]) | (height > columns[:, -1])


def _any_altitude_grid(table: pd.DataFrame) -> Grid:
    """A grid that accepts every altitude of ``table`` and every variable: no domain check.

    Validation without ``--grid`` checks everything but the altitude range.
    """
    alt = table["alt_km"].to_numpy(dtype=np.float64)
    finite = alt[np.isfinite(alt)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    levels = np.array([low]) if high <= low else np.array([low, high])
    return Grid(np.array([0.0]), np.array([0.0]), levels, latitude_kind="irregular")


__all__ = ["IngestResult", "ingest_files"]
