"""Run the cycled model EnKF over windows in order and write every analysis to a store.

The twin experiment's classical anchor (:mod:`genda.assimilation.cycled_enkf`):
the truth archive written by ``genda simulate`` gives the model's
configuration (its ``model_config`` attribute) and the grid; the members
start from a climatological run of another seed at the first window and
are carried from window to window by the model. Each window's analysed
members are written to an ensemble store of the format ``genda assimilate``
writes (``genda_method: cycled-enkf``), so that ``genda evaluate``,
``genda query`` and plain xarray read it like any other.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from genda import __version__
from genda.assimilation.cycled_enkf import EnkfSettings, ModelEnsemble, WindowAnalysis
from genda.errors import InvalidValueError
from genda.grid import Grid
from genda.orchestration.assimilate import load_window_observations, observation_fingerprint
from genda.orchestration.baseline import write_ensemble_window
from genda.orchestration.config import check_time_pattern
from genda.ownership import check_store_output
from genda.simulator import SimulatorConfig
from genda.storage.readers import open_archive
from genda.times import as_datetime64, iso

__all__ = ["METHOD", "enkf_cycle", "enkf_cycle_files", "model_config_of"]

METHOD = "cycled-enkf"
"""The store's ``genda_method`` of the cycled EnKF's windows."""


def model_config_of(archive: str | os.PathLike[str]) -> SimulatorConfig:
    """The built-in model's configuration that wrote ``archive`` (``genda simulate``).

    Raises:
        InvalidValueError: the archive was not written by the built-in model.
    """
    attrs = open_archive(archive).attrs
    if "model_config" not in attrs:
        raise InvalidValueError(
            f"{archive} has no 'model_config' attribute: the cycled EnKF's forecast model is "
            "the built-in model, and needs an archive that `genda simulate` wrote"
        )
    return SimulatorConfig.from_dict(json.loads(attrs["model_config"]))


def enkf_cycle(
    archive: str | os.PathLike[str],
    windows: Sequence[tuple[np.datetime64, pd.DataFrame]],
    out: str | os.PathLike[str],
    settings: EnkfSettings | None = None,
    *,
    spinup_days: float = 30.0,
    on_window: Callable[[np.datetime64, np.ndarray, WindowAnalysis], None] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> list[WindowAnalysis]:
    """Cycle the EnKF through ``windows`` (times in increasing order, each with its
    validated observations) and write each analysis to the store ``out``.

    ``on_window(time, fields, analysis)`` sees each window's ``(K, V, L, H, W)``
    analysed members after they are written (scores, plots).

    Raises:
        InvalidValueError: no windows, times that do not increase, an empty table,
            or an archive the built-in model did not write; nothing is written.
    """
    settings = settings or EnkfSettings()
    if not windows:
        raise InvalidValueError("no windows to cycle through")
    times = [np.datetime64(t, "ns") for t, _ in windows]
    if any(b <= a for a, b in pairwise(times)):
        raise InvalidValueError("the windows' times must increase")
    for when, obs in windows:
        if len(obs) == 0:
            raise InvalidValueError(f"the window at {iso(when)} has no observations")
    out = Path(out)
    check_store_output(out, overwrite)
    config = model_config_of(archive)
    truth_seed = open_archive(archive).attrs.get("seed")
    if truth_seed is not None and int(truth_seed) == settings.seed:
        raise InvalidValueError(
            f"the EnKF's seed {settings.seed} is the seed of the run that wrote {archive}: "
            "its initial members would be states of that very run; choose another --seed"
        )
    ensemble = ModelEnsemble.climatological(config, times[0], settings, spinup_days)
    rng = np.random.default_rng([settings.seed, 7919])
    reports = []
    for index, (when, obs) in enumerate(tqdm(windows, desc="EnKF windows", disable=not progress)):
        ensemble.advance_to(times[index])
        report = ensemble.analyse(obs, settings, rng)
        fields = ensemble.fields()
        provenance = _provenance(archive, settings, times, index, obs, spinup_days)
        write_ensemble_window(
            out,
            ensemble.grid,
            times[index],
            "genda cycled EnKF ensemble (built-in model)",
            fields,
            provenance,
            overwrite=overwrite and index == 0,
        )
        reports.append(report)
        if on_window is not None:
            on_window(when, fields, report)
    return reports


def _provenance(
    archive: str | os.PathLike[str],
    settings: EnkfSettings,
    times: list[np.datetime64],
    index: int,
    obs: pd.DataFrame,
    spinup_days: float,
) -> dict[str, Any]:
    """What determines a window's members: the settings, the chain of windows before it."""
    recorded = asdict(settings)
    recorded["localization"] = asdict(settings.localization)
    return {
        "kind": "baseline",
        "method": METHOD,
        "settings": recorded,
        "archive": str(Path(archive).resolve()),
        "seed": int(settings.seed),
        "spinup_days": float(spinup_days),
        "cycle_start": iso(times[0]),
        "previous_window": iso(times[index - 1]) if index else None,
        "observations_sha256": observation_fingerprint(obs),
        "observations_count": len(obs),
        "genda_version": __version__,
    }


def enkf_cycle_files(
    archive: str | os.PathLike[str],
    observations: str,
    start: str | np.datetime64,
    hours: int,
    out: str | os.PathLike[str],
    settings: EnkfSettings | None = None,
    *,
    every_hours: float = 1.0,
    spinup_days: float = 30.0,
    overwrite: bool = False,
    progress: bool = True,
) -> list[tuple[np.datetime64, WindowAnalysis]]:
    """:func:`enkf_cycle` over ``hours / every_hours`` windows from ``start``, each reading
    the table ``observations.format(time=...)`` (``{time}`` or ``{time:<strftime>}``).

    Every table is read and validated (within ``+- every_hours / 2`` of its window, on
    the archive's grid) before the first forecast: a missing or bad file stops the
    cycle with nothing written.
    """
    check_time_pattern(observations)
    if every_hours <= 0 or hours <= 0:
        raise InvalidValueError("hours and every_hours must be > 0")
    count = hours / every_hours
    if abs(count - round(count)) > 1e-9:
        raise InvalidValueError(f"{hours} h is not a whole number of {every_hours} h windows")
    first = as_datetime64(start)
    step = np.timedelta64(round(every_hours * 3600), "s")
    grid = Grid.from_dataset(open_archive(archive))
    windows = []
    for index in range(round(count)):
        when = first + index * step
        path = Path(observations.format(time=when.astype("datetime64[s]").item()))
        if not path.exists():
            raise InvalidValueError(f"no observation file {path} for the window at {iso(when)}")
        windows.append((when, load_window_observations(path, grid, when, every_hours)))
    reports = enkf_cycle(
        archive,
        windows,
        out,
        settings,
        spinup_days=spinup_days,
        overwrite=overwrite,
        progress=progress,
    )
    return [(when, report) for (when, _), report in zip(windows, reports, strict=True)]
