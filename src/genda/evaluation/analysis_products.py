"""``genda plot``: the figures of one analysed window, from its ensemble store alone (no truth).

:func:`plot_analysis` reads a finalised window of an ensemble store and draws
(:mod:`genda.evaluation.analysis_plots`, :mod:`genda.evaluation.analysis_fit`;
the ensemble at points: :mod:`genda.evaluation.analysis_points`):

- ``map_<var>_<level>km_<time>.png`` for every variable: ensemble mean and
  spread on the level nearest the altitude asked for, with coastlines;
- ``profiles_<time>.png``: mean +- spread against altitude at stations: those
  of an observation file, points given as ``(lat, lon)``, or else the stations
  of the window's observation diagnostics;
- ``obs_fit_<time>.png``: each observation against the ensemble mean there,
  from the window's observation diagnostics
  (:mod:`genda.storage.ensemble_diagnostics`, written by ``genda
  assimilate``) when the store has them, else from an observation file's rows
  within the window, interpolated as ``genda evaluate`` does
  (:func:`genda.evaluation.report.member_values` with the table's
  :class:`~genda.observations.operators.ObservationOperator`).

``<time>`` is the window in ISO 8601 basic format (``20240101T060000``).
Every check runs before anything is read in bulk or written: the store, the
window (the nearest ones are named when it is absent), the level (within
half a level spacing of the grid's), the observation file and the output
folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from genda.errors import InvalidValueError, OutputExistsError
from genda.evaluation.analysis_fit import plot_observation_fit
from genda.evaluation.analysis_plots import MapLevel, plot_level_map, plot_station_profiles
from genda.evaluation.analysis_points import fit_from_members, station_places, station_profiles
from genda.evaluation.ensemble_plots import level_layer
from genda.evaluation.plots import level_label
from genda.grid import DEFAULT_VARIABLES, Grid
from genda.observations import read_observations, validate_observations
from genda.observations.table import window_bounds
from genda.storage.ensemble_diagnostics import diagnostics_key, read_diagnostics
from genda.storage.ensemble_export import UnwritableOutputError, check_writable_folder, find_window
from genda.storage.ensemble_query import open_ensemble
from genda.storage.ensemble_store import EnsembleStore
from genda.storage.errors import EnsembleStoreError
from genda.times import TimeLike, iso

__all__ = ["AnalysisPlots", "plot_analysis"]

MAX_STATIONS = 6
"""Most stations drawn in the profiles (those with the most observations first)."""


@dataclass(frozen=True)
class AnalysisPlots:
    """What :func:`plot_analysis` drew.

    Attributes:
        store: the ensemble store.
        time: the window (ISO).
        level_km: the altitude of the level mapped (the grid's, nearest the one asked for).
        maps: variable -> PNG path.
        profiles: the station profiles' PNG, or ``None`` (no station).
        fit: the observation fit's PNG, or ``None`` (no observations).
        fit_source: where the fit's numbers came from.
        notes: what was left out, and why.
    """

    store: Path
    time: str
    level_km: float
    maps: dict[str, Path]
    profiles: Path | None = None
    fit: Path | None = None
    fit_source: str = ""
    notes: list[str] = field(default_factory=list)

    def paths(self) -> list[Path]:
        """Every PNG written."""
        return [*self.maps.values(), *(p for p in (self.profiles, self.fit) if p is not None)]


def plot_analysis(
    store_path: str | os.PathLike[str],
    time: TimeLike,
    level_km: float,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    stations: str | os.PathLike[str] | None = None,
    at: Sequence[tuple[float, float]] = (),
    overwrite: bool = False,
) -> AnalysisPlots:
    """Draw the maps, station profiles and observation fit of one window (module docstring).

    Args:
        store_path: a genda ensemble store.
        time: the window (its valid time).
        level_km: log-pressure altitude of the maps (km); the nearest level is
            shown, and must lie within half a level spacing.
        out_dir: folder for the PNGs (created); default ``<store>-plots`` beside the store.
        stations: an observation file (CSV, Parquet, NetCDF): its stations get
            profiles, and its rows within the window give the fit when the store
            has no diagnostics for the window.
        at: further profile points ``(lat, lon)`` in degrees.
        overwrite: replace PNGs of the same names in ``out_dir``.

    Raises:
        MissingInputError: no store (or no observation file) at the path.
        EnsembleStoreError: not a genda store, no window at ``time`` (nearest
            named), window not finalised, damaged data.
        InvalidValueError: the level is off the grid, a point is off the globe.
        ObservationError: the observation file is invalid.
        OutputExistsError: a PNG exists and ``overwrite`` is false.
        UnwritableOutputError: ``out_dir`` cannot be made or written.
    """
    store = EnsembleStore.open(store_path)
    t = find_window(store, time)
    grid = store.grid
    try:
        level = grid.nearest_level(float(level_km))
    except InvalidValueError as err:
        raise InvalidValueError(f"the level of the maps of {store.path}: {err}") from None
    if not store.is_finalized(t):
        raise EnsembleStoreError(
            f"window {iso(t)} of {store.path} is not finalised ({len(store.missing(t))} of "
            f"{store.n_members} members missing); rerun it to complete it"
        )
    points = [_point(lat, lon) for lat, lon in at]
    table = _read_table(stations, grid) if stations is not None else None
    out = Path(out_dir) if out_dir is not None else store.path.with_name(f"{store.path.stem}-plots")
    stamp = diagnostics_key(t).rsplit("/", 1)[1]
    names = _file_names(grid, float(grid.altitude[level]), stamp)
    _check_outputs(out, names.values(), overwrite)

    provenance = store.provenance(t)
    diagnostics = read_diagnostics(store.path, t)
    in_window = None
    if table is not None:
        start, end = window_bounds(t, float(provenance.get("window_hours", 1.0)))
        in_window = table[(table["time"] >= start) & (table["time"] <= end)].reset_index(drop=True)
    observed = diagnostics if diagnostics is not None else in_window
    notes: list[str] = []
    members = open_ensemble(store.path).isel(time=store.window_index(t))[list(grid.variables)]

    # Every value is computed before the first PNG is drawn: a window whose members
    # cannot be read at a station leaves no partial set of figures behind.
    places = station_places(table if table is not None else diagnostics, points)
    shown = places[:MAX_STATIONS]
    station_values = station_profiles(shown, members, grid, observed, store, t) if shown else None
    if not places:
        notes.append("no profiles: no station (give an observation file or --at LAT,LON)")
    fit_values, source = None, ""
    if diagnostics is not None:
        fit_values, source = diagnostics, f"observation diagnostics in {store.path.name}"
    elif in_window is not None and len(in_window):
        fit_values = fit_from_members(in_window, members, grid, store, t)
        source = f"{Path(str(stations)).name}, rows within the window"
    else:
        notes.append(
            "no observation fit: the store has no diagnostics for this window and no "
            "observation file with rows in the window was given"
        )

    maps = _draw_maps(store, t, level, out, names, observed, _subtitle(store, provenance))
    profiles = None
    if station_values is not None:
        note = f"{len(shown)} of {len(places)} stations" if len(places) > len(shown) else ""
        profiles = plot_station_profiles(
            station_values,
            out / names["profiles"],
            valid=iso(t),
            level_km=float(grid.altitude[level]),
            note=note,
        )
    fit = None
    if fit_values is not None:
        fit = plot_observation_fit(fit_values, out / names["fit"], valid=iso(t), source=source)
    return AnalysisPlots(
        store.path, iso(t), float(grid.altitude[level]), maps, profiles, fit, source, notes
    )


def _point(lat: float, lon: float) -> tuple[float, float]:
    if not (np.isfinite(lat) and np.isfinite(lon) and -90.0 <= lat <= 90.0):
        raise InvalidValueError(
            f"a profile point needs a latitude in [-90, 90] and a finite longitude, "
            f"got {lat:g}, {lon:g}"
        )
    return float(lat), float(np.mod(lon, 360.0))


def _read_table(path: str | os.PathLike[str], grid: Grid) -> pd.DataFrame:
    """The observation file, validated on the store's grid (any registered variable)."""
    every_variable = Grid(
        grid.latitude, grid.longitude, grid.altitude, DEFAULT_VARIABLES, grid.latitude_kind
    )
    return validate_observations(read_observations(path), every_variable, source=str(path))


def _file_names(grid: Grid, altitude: float, stamp: str) -> dict[str, str]:
    level = level_label(altitude)
    names = {name: f"map_{name}_{level}km_{stamp}.png" for name in grid.variables}
    names.update(profiles=f"profiles_{stamp}.png", fit=f"obs_fit_{stamp}.png")
    return names


def _check_outputs(out: Path, names: Iterable[str], overwrite: bool) -> None:
    """The folder can be written and holds none of the PNGs (unless ``overwrite``)."""
    if out.exists() and not out.is_dir():
        raise UnwritableOutputError(f"cannot write the plots into {out}: it is a file")
    check_writable_folder(out)
    existing = [str(out / name) for name in names if (out / name).exists()]
    if existing and not overwrite:
        raise OutputExistsError(
            f"{', '.join(existing)} exist{'s' if len(existing) == 1 else ''}; "
            "set overwrite (--overwrite) to replace them"
        )


def _subtitle(store: EnsembleStore, provenance: dict[str, object]) -> str:
    """``"genda posterior (mmps, sampler exponential, 32 steps), 64 members, 120 observations"``."""
    settings = provenance.get("settings")
    parts = [str(provenance.get("method", "?"))]
    if isinstance(settings, dict):
        if "sampler" in settings:
            parts.append(f"sampler {settings['sampler']}")
        if "steps" in settings:
            parts.append(f"{settings['steps']} steps")
    count = provenance.get("observations_count")
    observations = f", {count} observations" if count else ""
    kind = provenance.get("kind", "ensemble")
    return f"genda {kind} ({', '.join(parts)}), {store.n_members} members{observations}"


def _draw_maps(
    store: EnsembleStore,
    t: np.datetime64,
    level: int,
    out: Path,
    names: dict[str, str],
    observed: pd.DataFrame | None,
    subtitle: str,
) -> dict[str, Path]:
    """variable -> PNG of its mean and spread on ``level``."""
    grid = store.grid
    window = open_ensemble(store.path).isel(time=store.window_index(t), altitude=level)
    low, high = level_layer(grid.altitude, level)
    points = None
    if observed is not None and len(observed):
        points = observed[(observed["alt_km"] >= low) & (observed["alt_km"] <= high)]
    maps = {}
    for name in grid.variables:
        mean = np.asarray(window[f"{name}_mean"].values, dtype=np.float64)
        spread = np.asarray(window[f"{name}_std"].values, dtype=np.float64)
        if not np.isfinite(mean).all():
            raise EnsembleStoreError(
                f"window {iso(t)} of {store.path}: {name}_mean has missing or NaN values at "
                f"{grid.altitude[level]:g} km; 'genda validate {store.path}' names the damage"
            )
        level_map = MapLevel(
            name,
            str(window[f"{name}_mean"].attrs.get("units", "")),
            float(grid.altitude[level]),
            grid.latitude,
            grid.longitude,
            mean,
            spread,
            iso(t),
            subtitle,
        )
        # a wind map marks the wind observations (line-of-sight ones too), a T map the T ones
        observes = ("u", "v", "los") if name in ("u", "v") else (name,)
        shown = None if points is None else points[points["variable"].isin(observes)]
        maps[name] = plot_level_map(level_map, out / names[name], points=shown)
    return maps
