"""The ensemble-verification report: scores, baselines, scores at withheld stations, figures.

:func:`evaluate_ensemble` verifies a posterior ensemble against a truth on the
same grid (an OSSE's nature run, or model data) with
:func:`~genda.evaluation.scores.ensemble_scores`, does the same for baseline
ensembles (``prior``, ``oi``, ``enkf``, ...) so the numbers sit side by side,
scores the ensemble at withheld observations with
:func:`~genda.evaluation.scores.point_scores` after interpolating every member
to them with the observation operator
(:meth:`genda.observations.operators.ObservationOperator.from_table`), draws
the figures of :mod:`genda.evaluation.ensemble_plots` and writes
``metrics.json``. :func:`evaluate_paths` does the same from an ensemble Zarr
store, a truth archive and observation files.

``metrics.json``::

    {"format": "genda-ensemble-evaluation", "version": 1,
     "level_km": <altitude of the level the maps show>, "ensemble": <ensemble_scores>,
     "baselines": {name: <ensemble_scores>},
     "withheld": <point_scores> | null,
     "plots": {name: path}}
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr

from genda.atomic import write_file
from genda.errors import InvalidValueError, MissingInputError, UnknownNameError
from genda.evaluation.ensemble_plots import (
    plot_maps,
    plot_profiles,
    plot_rank_histograms,
    plot_spread_skill,
)
from genda.evaluation.plots import file_stem, level_label
from genda.evaluation.posterior_fidelity import (
    PosteriorFidelity,
    plot_posterior_fidelity,
    posterior_fidelity,
)
from genda.evaluation.scores import MEMBER_DIM, align_time, ensemble_scores, point_scores
from genda.grid import DEFAULT_VARIABLES, Grid
from genda.ownership import check_replaceable, written_kind

__all__ = ["PointOperator", "evaluate_ensemble", "evaluate_paths", "member_values"]

FORMAT = "genda-ensemble-evaluation"
FORMAT_VERSION = 1
BLOCK_BYTES = 256 * 2**20
"""Memory of one block of members interpolated to the observations at a time."""

PointOperator = Callable[[torch.Tensor], torch.Tensor]
"""Maps fields ``(..., V, L, H, W)`` in physical units to ``(..., M)`` observation values."""


def member_values(
    ensemble: xr.Dataset,
    grid: Grid,
    operator: PointOperator,
    block_bytes: int = BLOCK_BYTES,
) -> np.ndarray:
    """``(N, M)``: every member of ``ensemble`` seen through ``operator``.

    Members go through in blocks of about ``block_bytes`` (float32), so a
    large, lazily opened store never sits in memory whole.

    Args:
        ensemble: ``grid``'s variables ``(member, altitude, latitude, longitude)``.
        grid: the grid the operator was built for (its variable order is the
            tensor's ``V`` axis).
        operator: fields ``(B, V, L, H, W)`` -> ``(B, M)``.
        block_bytes: memory of one block.
    """
    n = int(ensemble.sizes[MEMBER_DIM])
    size = max(1, block_bytes // (4 * int(np.prod(grid.shape))))
    blocks = []
    for start in range(0, n, size):
        part = ensemble.isel({MEMBER_DIM: slice(start, start + size)})
        fields = np.stack(
            [
                np.asarray(
                    part[name].transpose(MEMBER_DIM, "altitude", "latitude", "longitude").values,
                    dtype=np.float32,
                )
                for name in grid.variables
            ],
            axis=1,
        )
        with torch.no_grad():
            out = operator(torch.from_numpy(fields))
        out = np.asarray(out.detach().cpu().numpy() if torch.is_tensor(out) else out)
        if out.ndim != 2 or out.shape[0] != fields.shape[0]:
            raise InvalidValueError(
                f"the observation operator returned shape {out.shape} for fields "
                f"{fields.shape}; expected ({fields.shape[0]}, M)"
            )
        blocks.append(out.astype(np.float64))
    return np.concatenate(blocks, axis=0)


def evaluate_ensemble(
    ensemble: xr.Dataset,
    truth: xr.Dataset,
    out_dir: str | os.PathLike[str],
    *,
    obs: pd.DataFrame | None = None,
    withheld: pd.DataFrame | None = None,
    baselines: Mapping[str, xr.Dataset] | None = None,
    level_km: float | None = None,
    point_operator: PointOperator | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Verify ``ensemble`` (and ``baselines``) against ``truth``; write metrics and figures.

    Args:
        ensemble: ``(member, altitude, latitude, longitude)`` (and perhaps a
            length-1 ``time``), u, v, T in physical units; other variables
            (``u_mean``, ``u_std``, ...) are ignored.
        truth: the same grid without ``member`` (a ``time`` is reduced to the
            ensemble's, :func:`~genda.evaluation.scores.align_time`).
        out_dir: folder for ``metrics.json`` and the PNGs (created).
        obs: the assimilated observations (``lat, lon, alt_km, ...``), marked
            on the maps.
        withheld: observations left out of the assimilation: scored with
            :func:`~genda.evaluation.scores.point_scores`, marked on the maps,
            profiles drawn.
        baselines: name -> ensemble on the same grid, scored alike.
        level_km: altitude of the maps (default: the middle level); the maps
            show the level nearest it, and ``metrics.json``'s ``level_km`` is
            that level's altitude.
        point_operator: maps ``(N, V, L, H, W)`` -> ``(N, M)`` values at the
            rows of ``withheld``; default
            ``ObservationOperator.from_table(withheld, grid)``.
        seed: of the observation-error perturbations of the point scores.

    Returns:
        The content of ``metrics.json`` (see the module docstring), plot paths
        as strings.
    """
    out = Path(out_dir)
    scores = ensemble_scores(ensemble, truth)
    grid = Grid.from_dataset(ensemble, list(scores["variables"]))
    model_data = truth  # every time of the run: the model states the members should resemble
    ensemble, truth = _one_time(ensemble, truth)
    level_km = _map_level(grid, level_km)
    verified = _times(ensemble)
    baseline_scores = {
        name: ensemble_scores(_baseline_window(data, name, verified), truth, grid)
        for name, data in (baselines or {}).items()
    }
    values, withheld_scores = _score_withheld(ensemble, grid, withheld, point_operator, seed)
    plots = _draw_maps(ensemble, truth, grid, level_km, out, obs, withheld)
    plots.update(_draw_scores(scores, baseline_scores, out, values, withheld))
    fidelity = _posterior_fidelity(ensemble, model_data, grid)
    if fidelity is not None:
        plots["posterior_fidelity"] = str(
            plot_posterior_fidelity(fidelity, grid, out / "posterior_fidelity.png")
        )
    metrics: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "posterior_fidelity": None if fidelity is None else fidelity.to_dict(),
        "level_km": level_km,
        "ensemble": scores,
        "baselines": baseline_scores,
        "withheld": withheld_scores,
        "plots": plots,
    }
    write_file(out / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    return metrics


def _one_time(ensemble: xr.Dataset, truth: xr.Dataset) -> tuple[xr.Dataset, xr.Dataset]:
    """Ensemble and truth at the ensemble's one time (an error for several times)."""
    ensemble, truth, _ = align_time(ensemble, truth)
    if "time" in ensemble.dims:
        raise InvalidValueError(
            f"the ensemble has {ensemble.sizes['time']} times; the report maps one, select it first"
        )
    return ensemble, truth


def _baseline_window(data: xr.Dataset, name: str, verified: list[np.datetime64]) -> xr.Dataset:
    """Baseline ``name`` at the verified window: a store of a cycle's baselines holds every window.

    Without a ``time`` dimension the baseline is taken as it is (one window,
    or a baseline for any time). With one, the verified time is selected; a
    baseline of several times for an ensemble that names none is an error.
    """
    if "time" not in data.dims:
        return data
    if not verified:
        if data.sizes["time"] == 1:
            return data.isel(time=0)
        raise InvalidValueError(
            f"baseline {name!r} holds {data.sizes['time']} windows and the ensemble names no "
            "time to pick one: give the time to verify"
        )
    held = {np.datetime64(t, "s") for t in np.atleast_1d(data["time"].values)}
    absent = [str(t) for t in verified if t not in held]
    if absent:
        raise InvalidValueError(
            f"baseline {name!r} has no window {', '.join(absent)} (it holds "
            f"{', '.join(str(t) for t in sorted(held))}): a baseline must be of the same window"
        )
    chosen = data.sel(time=np.array(verified, dtype=data["time"].dtype))
    return chosen.isel(time=0) if len(verified) == 1 else chosen


def _map_level(grid: Grid, level_km: float | None) -> float:
    """The altitude of the level the maps show: the one nearest ``level_km``, or the middle one.

    ``level_km`` may lie anywhere in the layer around a level
    (:func:`_check_level`); the maps show that level
    (:func:`genda.evaluation.ensemble_plots.plot_maps` picks the same one), so
    their files, titles and ``metrics.json`` name it rather than what was asked.
    """
    if level_km is None:
        return float(grid.altitude[grid.nlevels // 2])
    _check_level(grid, level_km)
    return float(grid.altitude[int(np.argmin(np.abs(grid.altitude - level_km)))])


def _score_withheld(
    ensemble: xr.Dataset,
    grid: Grid,
    withheld: pd.DataFrame | None,
    point_operator: PointOperator | None,
    seed: int,
) -> tuple[np.ndarray | None, dict[str, Any] | None]:
    """``(member values, point scores)`` at the withheld observations; ``(None, None)`` without."""
    if withheld is None or not len(withheld):
        return None, None
    if point_operator is None:
        from genda.observations.operators import ObservationOperator

        point_operator = ObservationOperator.from_table(withheld, grid)
    values = member_values(ensemble, grid, point_operator)
    return values, point_scores(values, withheld, seed=seed)


def _draw_maps(
    ensemble: xr.Dataset,
    truth: xr.Dataset,
    grid: Grid,
    level_km: float,
    out: Path,
    obs: pd.DataFrame | None,
    withheld: pd.DataFrame | None,
) -> dict[str, str]:
    """``map_<variable>`` -> path: truth, ensemble mean and spread at ``level_km``."""
    plots: dict[str, str] = {}
    mean = ensemble[list(grid.variables)].mean(MEMBER_DIM)
    spread = ensemble[list(grid.variables)].std(MEMBER_DIM, ddof=1)
    for name in grid.variables:
        # units travel with the truth's attributes to the colour bars
        plots[f"map_{name}"] = str(
            plot_maps(
                truth,
                mean,
                spread,
                name,
                level_km,
                obs,
                path=out / f"map_{file_stem(name)}_{level_label(level_km)}km.png",
                withheld=withheld,
            )
        )
    return plots


def _draw_scores(
    scores: dict[str, Any],
    baseline_scores: dict[str, dict[str, Any]],
    out: Path,
    values: np.ndarray | None,
    withheld: pd.DataFrame | None,
) -> dict[str, str]:
    """Name -> path of the score figures: spread-skill, rank histograms, withheld profiles."""
    plots = {
        "spread_skill": str(
            plot_spread_skill(scores, out / "spread_skill.png", baselines=baseline_scores)
        ),
        "rank_histograms": str(
            plot_rank_histograms(scores, out / "rank_histograms.png", baselines=baseline_scores)
        ),
    }
    if withheld is not None and values is not None:
        plots["profiles"] = str(plot_profiles(values, withheld, out / "profiles.png"))
    return plots


MODEL_FIELDS = 96
"""Times of the model data used for the posterior fidelity (evenly spread over the run)."""


def _posterior_fidelity(
    ensemble: xr.Dataset, model_data: xr.Dataset, grid: Grid
) -> PosteriorFidelity | None:
    """Members against the model data; ``None`` on latitudes without a spherical-harmonic transform."""
    if grid.latitude_kind not in ("legendre-gauss", "equiangular"):
        return None
    return posterior_fidelity(_members(ensemble, grid), _model_fields(model_data, grid), grid)


def _members(ensemble: xr.Dataset, grid: Grid) -> dict[str, np.ndarray]:
    """variable -> ``(N, L, H, W)`` members of the one verified time."""
    order = (MEMBER_DIM, "altitude", "latitude", "longitude")
    return {name: ensemble[name].transpose(*order).values for name in grid.variables}


def _model_fields(model: xr.Dataset, grid: Grid) -> dict[str, np.ndarray]:
    """variable -> ``(T, L, H, W)`` model data, at most :data:`MODEL_FIELDS` times of the run."""
    if "time" not in model.dims:
        model = model.expand_dims("time")
    count = model.sizes["time"]
    picks = np.unique(np.linspace(0, count - 1, min(count, MODEL_FIELDS)).round().astype(int))
    chosen = model.isel(time=picks)
    order = ("time", "altitude", "latitude", "longitude")
    return {name: chosen[name].transpose(*order).values for name in grid.variables}


def _check_level(grid: Grid, level_km: float) -> None:
    """The maps' altitude must lie within half a level spacing of the grid's levels."""
    half = 0.5 * float(np.diff(grid.altitude).max()) if grid.nlevels > 1 else np.inf
    if not grid.altitude[0] - half <= level_km <= grid.altitude[-1] + half:
        raise InvalidValueError(
            f"altitude {level_km:g} km is outside the levels "
            f"{grid.altitude[0]:g}..{grid.altitude[-1]:g} km"
        )


def evaluate_paths(
    ensemble_path: str | os.PathLike[str],
    truth_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    time: Any = None,
    obs_path: str | os.PathLike[str] | None = None,
    withheld_path: str | os.PathLike[str] | None = None,
    *,
    baseline_paths: Mapping[str, str | os.PathLike[str]] | None = None,
    level_km: float | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """:func:`evaluate_ensemble` from files.

    Args:
        ensemble_path: ensemble Zarr store (``xarray.open_zarr``): u, v, T
            ``(member, altitude, latitude, longitude)``, perhaps a length-1
            ``time``.
        truth_path: archive or model output (:func:`genda.storage.open_archive`).
        out_dir: where the report goes.
        time: the time to verify, when the ensemble does not say (or has several).
        obs_path, withheld_path: observation tables
            (:func:`genda.observations.read_observations`).
        baseline_paths: name -> baseline ensemble store, opened like the ensemble.
        level_km: altitude of the maps.
        overwrite: replace an earlier report at ``out_dir``; a file or a folder
            that is not an evaluation report is never written into.

    Raises:
        ValueError: the truth lacks the ensemble's time (its range is named).
        OutputExistsError: ``out_dir`` may not be written (checked before anything is read).
    """
    from genda.storage import open_archive

    check_replaceable(out_dir, "evaluation report", overwrite)

    ensemble = _open_ensemble(ensemble_path)
    grid = Grid.from_dataset(ensemble)
    truth = open_archive(truth_path, variables=grid.variables)
    ensemble, truth, _ = align_time(ensemble, truth, time)
    verified = _times(ensemble) or _times(truth)
    obs = withheld = None
    if obs_path is not None or withheld_path is not None:
        obs, withheld = _read_tables(ensemble_path, grid, verified, obs_path, withheld_path)
    baselines = _open_baselines(baseline_paths, verified)
    return evaluate_ensemble(
        ensemble,
        truth,
        out_dir,
        obs=obs,
        withheld=withheld,
        baselines=baselines,
        level_km=level_km,
    )


def _read_tables(
    ensemble_path: str | os.PathLike[str],
    grid: Grid,
    verified: list[np.datetime64],
    obs_path: str | os.PathLike[str] | None,
    withheld_path: str | os.PathLike[str] | None,
) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """``(obs, withheld)`` tables, checked and cut to the window of the one verified time."""
    from genda.observations import read_observations, validate_observations
    from genda.observations.table import window_bounds

    # Withheld observations of another time would be scored against this one.
    window = None
    if len(verified) == 1:
        window = window_bounds(verified[0], _window_hours(ensemble_path, verified[0]))

    def table(path: str | os.PathLike[str] | None, against: Grid) -> pd.DataFrame | None:
        if path is None:
            return None
        return validate_observations(
            read_observations(path), against, window=window, source=str(path)
        )

    # The assimilated observations are only drawn on the maps: any variable
    # of the registry may appear; the withheld ones are scored, so the
    # ensemble must carry their variables.
    every_variable = Grid(
        grid.latitude, grid.longitude, grid.altitude, DEFAULT_VARIABLES, grid.latitude_kind
    )
    return table(obs_path, every_variable), table(withheld_path, grid)


def _open_baselines(
    baseline_paths: Mapping[str, str | os.PathLike[str]] | None, verified: list[np.datetime64]
) -> dict[str, xr.Dataset]:
    """Name -> baseline ensemble; an error for one of another time than ``verified``."""
    baselines = {name: _open_ensemble(p) for name, p in (baseline_paths or {}).items()}
    for name, data in baselines.items():
        theirs = _times(data)
        if theirs and verified and not set(theirs) & set(verified):
            raise InvalidValueError(
                f"baseline {name!r} is for {[str(t) for t in theirs]}, the ensemble for "
                f"{[str(t) for t in verified]}: a baseline must be of the same window"
            )
    return baselines


def _window_hours(path: str | os.PathLike[str], time: np.datetime64) -> float:
    """The window length recorded for ``time`` in a genda ensemble store (1 h for other stores)."""
    from genda.storage.ensemble_store import EnsembleStore, EnsembleStoreError

    try:
        return float(EnsembleStore.open(path).provenance(time).get("window_hours", 1.0))
    except EnsembleStoreError:
        return 1.0


def _times(ds: xr.Dataset) -> list[np.datetime64]:
    """The time values a data set carries (a dimension or a scalar coordinate), else ``[]``."""
    if "time" not in ds.coords:
        return []
    return [np.datetime64(t, "s") for t in np.atleast_1d(ds["time"].values)]


def _open_ensemble(path: str | os.PathLike[str]) -> xr.Dataset:
    """The registered variables (u, v, T, ...) of an ensemble store; a clear error without them."""
    if not Path(path).exists():
        raise MissingInputError(f"no ensemble store at {path}")
    if written_kind(path) == "ensemble store":
        from genda.storage import open_ensemble

        ds = open_ensemble(path)  # a damaged chunk is named when it is read
    else:
        ds = xr.open_zarr(path)
    names = list(Grid.from_dataset(ds).variables)
    if not names:
        raise UnknownNameError(f"{path} holds no known variables (present: {list(ds.data_vars)})")
    if MEMBER_DIM not in ds[names[0]].dims:
        raise InvalidValueError(f"{path}: variable {names[0]!r} has no {MEMBER_DIM!r} dimension")
    return ds[names]
