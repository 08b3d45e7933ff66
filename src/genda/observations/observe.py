"""``genda observe``: draw observations of an archive at one time and write them to files.

The file-writing step of an OSSE: it reads a truth archive through
:func:`genda.storage.open_archive`, draws with
:func:`~genda.observations.networks.draw_observations`, optionally withholds
stations into a second table, and writes both atomically without replacing
anything that is not an observation table. ``genda.storage`` is imported when
:func:`observe_to_file` runs, so that importing ``genda.observations`` (as the
assimilation layer does, for the operators) does not load the storage stack.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from genda.errors import InvalidValueError, OutputExistsError
from genda.grid import Grid
from genda.observations.files import read_observations, write_observations
from genda.observations.networks import (
    draw_observations,
    network_names,
    select_time,
    split_withheld,
)
from genda.observations.table import OBSERVATION_COLUMNS, ObservationError
from genda.times import TimeLike, as_datetime64, iso


@dataclass(frozen=True)
class ObservationDraw:
    """What :func:`observe_to_file` drew and wrote.

    Attributes:
        time: the archive time observed (ISO, seconds).
        seed: the noise seed.
        networks: the canonical network names drawn (:func:`network_names`).
        observations: rows written to the main table (the ones to assimilate).
        withheld: rows written to the withheld table (0 without one).
        counts: rows of the main table per network and variable.
        withheld_counts: rows of the withheld table per network and variable.
        observations_path: the main table.
        withheld_path: the withheld table, ``None`` when nothing was withheld.
    """

    time: str
    seed: int
    networks: tuple[str, ...]
    observations: int
    withheld: int
    counts: dict[str, dict[str, int]]
    withheld_counts: dict[str, dict[str, int]]
    observations_path: str
    withheld_path: str | None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: plain data, new dicts and lists.

        ``{"time", "seed", "networks", "observations", "withheld", "counts",
        "withheld_counts", "paths": {"observations", "withheld"}}``, in that order.
        """
        return {
            "time": self.time,
            "seed": self.seed,
            "networks": list(self.networks),
            "observations": self.observations,
            "withheld": self.withheld,
            "counts": {k: dict(v) for k, v in self.counts.items()},
            "withheld_counts": {k: dict(v) for k, v in self.withheld_counts.items()},
            "paths": {"observations": self.observations_path, "withheld": self.withheld_path},
        }


def _counts(obs: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Number of rows per network and variable."""
    if obs.empty:
        return {}
    groups = obs.groupby(["network", "variable"], sort=True).size()
    counts: dict[str, dict[str, int]] = {}
    for (network, variable), n in groups.items():
        counts.setdefault(str(network), {})[str(variable)] = int(n)
    return counts


def withheld_path(out: str | os.PathLike[str]) -> Path:
    """``<stem>-withheld<suffix>`` next to ``out``."""
    out = Path(out)
    return out.with_name(f"{out.stem}-withheld{out.suffix}")


def check_table_replaceable(path: Path, overwrite: bool) -> None:
    """Refuse to write an observation table over anything but a table, and without ``overwrite``.

    Raises:
        ObservationError: the suffix is not a table format.
        OutputExistsError: ``path`` is a directory, or exists and ``overwrite``
            is false, or exists and is not an observation table.
    """
    if path.suffix.lower() not in (".csv", ".parquet", ".pq", ".nc", ".nc4"):
        raise ObservationError(
            f"{path}: unknown observation file type {path.suffix!r}; "
            "expected .csv, .parquet, .pq, .nc or .nc4"
        )
    if not (path.exists() or path.is_symlink()):
        return
    if not path.is_file():
        raise OutputExistsError(f"{path} exists and is not a file; choose a file name")
    if not overwrite:
        raise OutputExistsError(f"{path} exists; set overwrite (--overwrite) to replace it")
    try:
        columns = read_observations(path).columns
    except ObservationError:
        columns = ()
    if any(name not in columns for name in OBSERVATION_COLUMNS):
        raise OutputExistsError(
            f"{path} exists and is not an observation table; genda replaces only a table "
            "it can read: choose another path, or move it away yourself"
        )


def observe_to_file(
    truth_path: str | os.PathLike[str],
    time: TimeLike,
    networks: str | Sequence[str],
    out: str | os.PathLike[str],
    seed: int,
    withhold: Sequence[str] = (),
    overwrite: bool = False,
    lidars_at_night: bool = False,
) -> ObservationDraw:
    """Draw observations of an archive at one time and write them (``genda observe``).

    Args:
        truth_path: Zarr store or NetCDF file readable by :func:`genda.storage.open_archive`.
        time: a time of the archive.
        networks: as in :func:`draw_observations`.
        out: ``.csv``, ``.parquet`` or ``.nc`` file, written atomically.
        seed: noise seed.
        withhold: stations whose rows go to :func:`withheld_path` instead.
        lidars_at_night: lidars observe only at night (as :func:`draw_observations`).
        overwrite: replace existing observation tables at ``out`` and its
            withheld file (nothing that is not an observation table is replaced).

    Returns:
        The :class:`ObservationDraw`: counts per network and variable and the
        paths written; :meth:`ObservationDraw.to_dict` is its JSON form.
    """
    from genda.storage import open_archive  # deferred: see the module docstring

    out = Path(out)
    check_table_replaceable(out, overwrite)
    # The withheld file of this table is written, or removed as stale, either way.
    check_table_replaceable(withheld_path(out), overwrite)
    truth = open_archive(truth_path)
    grid = Grid.from_dataset(truth)
    when = as_datetime64(time)
    snapshot = select_time(truth, when, source=str(truth_path))
    obs = draw_observations(snapshot, grid, when, networks, seed, lidars_at_night=lidars_at_night)
    assimilated, withheld = split_withheld(obs, withhold) if withhold else (obs, obs.iloc[:0])
    if assimilated.empty:
        raise InvalidValueError(f"withholding {list(withhold)} leaves no observation to assimilate")
    withheld_file: str | None = None
    if not withheld.empty:
        # The withheld file first, so that a complete main file has its withheld one.
        withheld_file = str(write_observations(withheld, withheld_path(out)))
    elif withheld_path(out).exists():
        # A withheld file of an earlier draw would hold stations this table assimilates.
        withheld_path(out).unlink()
    write_observations(assimilated, out)
    return ObservationDraw(
        time=iso(when),
        seed=int(seed),
        networks=tuple(network_names(networks)),
        observations=len(assimilated),
        withheld=len(withheld),
        counts=_counts(assimilated),
        withheld_counts=_counts(withheld),
        observations_path=str(out),
        withheld_path=withheld_file,
    )


__all__ = ["ObservationDraw", "check_table_replaceable", "observe_to_file", "withheld_path"]
