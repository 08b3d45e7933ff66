"""One window of a classical baseline: training archive + observations file -> ensemble store.

``baseline_window`` mirrors :func:`genda.orchestration.assimilate.assimilate_window`
so that the baselines are scored exactly like the diffusion posterior: the
same observation checks (against the archive's grid), the same multi-window
store (:class:`genda.storage.ensemble_store.EnsembleStore`) and the same summary. Methods
(:mod:`genda.assimilation.baselines`, docs/baselines.md):

* ``"climatology"``: ``members`` archive states at random times away from the window;
* ``"oi"``: the localised OI analysis of the climatological mean, written as a
  single member (it is deterministic: its CRPS is its mean absolute error);
* ``"enoi"``: the same analysis with every eligible archive state behind ``B``;
* ``"enkf"``: ``members`` stochastic EnKF members updated with the localised
  gain of ``climatology_size`` climatological states.

With ``hour_matched`` the states are drawn only among those within
:data:`~genda.assimilation.baselines.HOUR_MATCH_HOURS` of the window's time of
day (:func:`genda.assimilation.baselines.hour_matched_indices`). The
localisation defaults to the tuned half-widths of
:data:`~genda.assimilation.baselines.DEFAULT_LOCALIZATION`.

Everything is checked before any computing and the members are written only
once computed, so a bad archive, observation table or time writes nothing.
"""

from __future__ import annotations

import math
import os
import time as clock
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genda import __version__
from genda.assimilation.baselines import (
    BASELINE_METHODS,
    CLIMATOLOGY_SIZE,
    DEFAULT_LOCALIZATION,
    HOUR_MATCH_HOURS,
    Localization,
    draw_climatology,
    localized_analysis,
)
from genda.assimilation.posterior import observation_fit, window_seed
from genda.errors import InvalidValueError
from genda.grid import Grid
from genda.orchestration.assimilate import load_window_observations, observation_fingerprint
from genda.ownership import check_extendable, check_replaceable
from genda.storage.ensemble_store import EnsembleStore
from genda.storage.readers import open_archive
from genda.times import as_datetime64


def baseline_generators(
    seed: int, time: np.datetime64
) -> tuple[np.random.Generator, np.random.Generator]:
    """``(climatology, perturbations)`` generators of the window at ``time`` for ``seed``.

    Both derive from the window seed of the diffusion path
    (:func:`genda.assimilation.posterior.window_seed`); they are independent
    streams, so the climatological draw is the same whatever the method (the
    climatology baseline is then the background of the EnKF members).
    """
    base = window_seed(seed, time)
    return np.random.default_rng([base, 0]), np.random.default_rng([base, 1])


def hour_matched_generator(seed: int, time: np.datetime64) -> np.random.Generator:
    """The generator of the hour-matched draw of the window at ``time`` for ``seed``.

    A third stream of the window seed (``[window seed, 2]``), independent of
    those of :func:`baseline_generators`; the climatology, EnOI and EnKF of
    hour-matched states all draw from it, so the hour-matched climatology is
    again the background of the EnKF's members.
    """
    return np.random.default_rng([window_seed(seed, time), 2])


def baseline_localization(
    method: str,
    hour_matched: bool,
    horizontal_km: float | None = None,
    vertical_km: float | None = None,
) -> Localization:
    """The localisation of ``method``: the given half-widths, else the tuned defaults.

    Args:
        method: ``"oi"``, ``"enoi"`` or ``"enkf"``.
        hour_matched: whether the states are hour-matched (the defaults differ).
        horizontal_km, vertical_km: Gaspari-Cohn half-widths; ``None``: the value of
            :data:`~genda.assimilation.baselines.DEFAULT_LOCALIZATION`.
    """
    default = DEFAULT_LOCALIZATION[method, bool(hour_matched)]
    return Localization(
        default.horizontal_km if horizontal_km is None else horizontal_km,
        default.vertical_km if vertical_km is None else vertical_km,
    )


def baseline_window(
    archive: str | os.PathLike[str],
    observations: str | os.PathLike[str] | None,
    time: str | np.datetime64,
    out: str | os.PathLike[str],
    *,
    method: str = "enkf",
    members: int = 16,
    climatology_size: int | None = None,
    hour_matched: bool = False,
    seed: int = 0,
    window_hours: float = 1.0,
    horizontal_km: float | None = None,
    vertical_km: float | None = None,
    exclude_hours: float = 48.0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Compute one window's baseline ensemble and write it to ``out``.

    Args:
        archive: the training archive (Zarr or NetCDF, ``genda.storage.open_archive``)
            the climatological states are drawn from; its grid is the output grid.
        observations: CSV, Parquet or NetCDF table (docs/observations.md);
            required for ``"oi"``, ``"enoi"`` and ``"enkf"``; with
            ``"climatology"`` it is optional and only used for the fit in the summary.
        time: the window's centre (ISO text or datetime64), naive UTC.
        out: the ensemble store (Zarr v3 directory; created when absent, may hold other windows).
        method: ``"enkf"``, ``"enoi"``, ``"oi"`` or ``"climatology"``.
        members: ensemble size (``"oi"`` and ``"enoi"`` always write one member).
        climatology_size: ``K``, the states behind ``B`` (``"oi"``, ``"enkf"``);
            ``None``: :data:`~genda.assimilation.baselines.CLIMATOLOGY_SIZE` of
            any hour, every eligible state when ``hour_matched``. ``"enoi"``
            always uses every eligible state and takes none.
        hour_matched: draw only archive states within
            :data:`~genda.assimilation.baselines.HOUR_MATCH_HOURS` of the
            window's time of day (:func:`hour_matched_generator`); otherwise
            states of any hour (:func:`baseline_generators`).
        seed: the experiment's seed; the draws depend on it and on ``time``.
        window_hours: observations within ``time +- window_hours / 2`` are accepted.
        horizontal_km: Gaspari-Cohn half-width in great-circle distance (support
            twice that); ``None``: the tuned default (:func:`baseline_localization`).
        vertical_km: Gaspari-Cohn half-width in altitude; ``None``: the tuned default.
        exclude_hours: archive times within this many hours of ``time`` are never drawn.
        overwrite: replace an existing genda store (every window in it); nothing
            that is not a genda ensemble store is ever replaced.

    Returns:
        A summary with the keys of ``assimilate_window``'s: ``store``,
        ``members``, ``method``, ``seconds``, ``members_per_second``,
        ``observations``; ``hour_matched``, ``states`` (how many archive
        states were drawn), ``horizontal_km`` and ``vertical_km`` (``None`` for
        ``"climatology"``); and with observations ``fit`` and ``climatology_fit``
        (:func:`genda.assimilation.posterior.observation_fit` of the written
        members and of the mean of the drawn states).

    Raises:
        InvalidValueError: among others, an archive with too few eligible
            states (with ``hour_matched``: too few within an hour of the
            window's time of day), before any store is created or changed.
    """
    if method not in BASELINE_METHODS:
        raise InvalidValueError(f"unknown baseline {method!r}; choose one of {BASELINE_METHODS}")
    if members < 1:
        raise InvalidValueError(f"members must be >= 1, got {members}")
    localization = None
    if method != "climatology":
        if climatology_size is not None:
            if method == "enoi":
                raise InvalidValueError(
                    "the 'enoi' baseline uses every eligible archive state; "
                    "climatology_size applies to 'oi' and 'enkf'"
                )
            if climatology_size < 2:
                raise InvalidValueError(
                    f"climatology_size must be >= 2 for a sample covariance, got {climatology_size}"
                )
            if method == "enkf" and members > climatology_size:
                raise InvalidValueError(
                    f"members ({members}) cannot exceed climatology_size ({climatology_size}): "
                    "each EnKF member is the update of one climatological state"
                )
        if observations is None:
            raise InvalidValueError(f"the {method!r} baseline needs observations; got none")
        localization = baseline_localization(method, hour_matched, horizontal_km, vertical_km)
    # How many states to draw (None: every eligible one, at least `minimum`).
    if method == "climatology":
        size: int | None = members
    elif method == "enoi" or (climatology_size is None and hour_matched):
        size = None
    else:
        size = CLIMATOLOGY_SIZE if climatology_size is None else climatology_size
    minimum = max(2, members) if method == "enkf" else 2
    out = Path(out)
    # Before the analysis, so that a refused output costs nothing.
    if overwrite:
        check_replaceable(out, "ensemble store", overwrite=True)
    else:
        check_extendable(out, "ensemble store")
    when = as_datetime64(time)
    ds = open_archive(archive)
    grid = Grid.from_dataset(ds)
    obs = None
    if observations is not None:
        obs = load_window_observations(observations, grid, when, window_hours)
    climatology_rng, perturbation_rng = baseline_generators(seed, when)
    draw_rng = hour_matched_generator(seed, when) if hour_matched else climatology_rng

    started = clock.perf_counter()
    # The times are chosen and checked (too few eligible states) before any state is read.
    draw = draw_climatology(
        ds,
        when,
        size,
        draw_rng,
        exclude_hours=exclude_hours,
        hour_matched=hour_matched,
        minimum=minimum,
        grid=grid,
    )
    drawn = int(draw.states.shape[0])
    background = draw.states.mean(axis=0, dtype=np.float64)
    if localization is None:
        fields = draw.states
    else:
        assert obs is not None  # checked above; narrows the type
        analysis = localized_analysis(
            draw.states,
            obs,
            grid,
            members=members if method == "enkf" else 0,
            rng=perturbation_rng,
            localization=localization,
        )
        fields = analysis.members if method == "enkf" else analysis.mean[None].astype(np.float32)
    elapsed = clock.perf_counter() - started
    written = int(fields.shape[0])
    horizontal = None if localization is None else _finite(localization.horizontal_km)
    vertical = None if localization is None else _finite(localization.vertical_km)

    settings = {
        "members": written,
        "climatology_size": drawn,
        "hour_matched": bool(hour_matched),
        "hour_match_hours": HOUR_MATCH_HOURS if hour_matched else None,
        "exclude_hours": exclude_hours,
        "horizontal_km": horizontal,
        "vertical_km": vertical,
        "localization": None
        if localization is None
        else _localization_source(horizontal_km, vertical_km),
        "perturbed_observations": method == "enkf",
    }
    provenance = {
        "kind": "baseline",
        "method": method,
        "settings": settings,
        "archive": str(Path(archive).resolve()),
        "seed": int(seed),
        "window_seed": str(window_seed(seed, when)),
        "window_hours": float(window_hours),
        "climatology_times": [str(np.datetime64(t, "s")) for t in draw.times],
        "observations_sha256": "" if obs is None else observation_fingerprint(obs),
        "observations_count": 0 if obs is None else len(obs),
        "genda_version": __version__,
    }
    store = EnsembleStore.open_or_create(
        out,
        grid,
        written,
        {"title": f"genda baseline ensemble ({method})", "source": f"genda {__version__}"},
        overwrite=overwrite,
    )
    store.add_window(when, provenance)
    for batch in store.shard_batches(store.missing(when)):
        store.write_members(when, batch, np.asarray(fields)[batch])
    store.finalize(when)
    summary: dict[str, Any] = {
        "store": str(out),
        "members": written,
        "method": method,
        "seconds": elapsed,
        "members_per_second": written / elapsed if elapsed > 0 else float("nan"),
        "observations": 0 if obs is None else len(obs),
        "hour_matched": bool(hour_matched),
        "states": drawn,
        "horizontal_km": horizontal,
        "vertical_km": vertical,
    }
    if obs is not None:
        summary["fit"] = observation_fit(torch.from_numpy(np.asarray(fields)), obs, grid)
        summary["climatology_fit"] = observation_fit(torch.from_numpy(background[None]), obs, grid)
    return summary


def _localization_source(horizontal_km: float | None, vertical_km: float | None) -> str:
    """Where the half-widths came from, for the provenance."""
    given = (horizontal_km is not None, vertical_km is not None)
    return {
        (False, False): "tuned default",
        (True, True): "given",
        (True, False): "given horizontal, tuned vertical",
        (False, True): "tuned horizontal, given vertical",
    }[given]


def _finite(value: float) -> float | str:
    """JSON has no infinity: an unlocalised direction is written as ``"inf"``."""
    return value if math.isfinite(value) else "inf"


__all__ = [
    "baseline_generators",
    "baseline_localization",
    "baseline_window",
    "hour_matched_generator",
]
