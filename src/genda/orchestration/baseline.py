"""One window of a classical baseline: training archive + observations file -> ensemble store.

``baseline_window`` mirrors :func:`genda.orchestration.assimilate.assimilate_window`
so that the baselines are scored exactly like the diffusion posterior: the
same observation checks (against the archive's grid), the same multi-window
store (:class:`genda.storage.ensemble_store.EnsembleStore`) and a summary
(:class:`BaselineSummary`) whose keys in common with the posterior's mean the
same. Methods
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
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr

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
from genda.orchestration.summaries import ObservationFit
from genda.ownership import check_store_output
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


@dataclass(frozen=True)
class BaselineSummary:
    """What writing one window's baseline ensemble did.

    The baselines' counterpart of :class:`~genda.orchestration.summaries.WindowSummary`
    (whose sampler, worker and retry fields a baseline has not): the keys they
    share (``store``, ``members``, ``method``, ``seconds``, ``members_per_second``,
    ``observations``, ``fit``) mean the same, so both are scored alike.

    Attributes:
        store: the ensemble store.
        members: members written (1 for ``"oi"`` and ``"enoi"``).
        method: ``"enkf"``, ``"enoi"``, ``"oi"`` or ``"climatology"``.
        seconds: wall time of the draw and the analysis (not of the writing).
        members_per_second: ``members / seconds`` (NaN for no measurable time).
        observations: observations in the window (0 without a table).
        hour_matched: whether the states were drawn within
            :data:`~genda.assimilation.baselines.HOUR_MATCH_HOURS` of the window's time of day.
        states: how many archive states were drawn.
        horizontal_km: the Gaspari-Cohn half-width in the horizontal (``"inf"``:
            unlocalised; ``None`` for ``"climatology"``).
        vertical_km: the same in altitude.
        fit: :func:`~genda.assimilation.posterior.observation_fit` of the written
            members (``None`` without observations).
        climatology_fit: the fit of the mean of the drawn states, the reference
            (``None`` without observations).
    """

    store: str
    members: int
    method: str
    seconds: float
    members_per_second: float
    observations: int
    hour_matched: bool
    states: int
    horizontal_km: float | str | None
    vertical_km: float | str | None
    fit: ObservationFit | None = None
    climatology_fit: ObservationFit | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BaselineSummary:
        """Read the JSON form (:meth:`to_dict`) back."""
        values = dict(data)
        for name in ("fit", "climatology_fit"):
            if values.get(name) is not None:
                values[name] = ObservationFit.from_dict(values[name])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; ``fit`` and ``climatology_fit`` only when there were observations."""
        data = asdict(self)
        for name in ("fit", "climatology_fit"):
            if data[name] is None:
                del data[name]
        return data


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
) -> BaselineSummary:
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
        The window's :class:`BaselineSummary`. Its JSON form
        (:meth:`BaselineSummary.to_dict`) has these keys of ``assimilate_window``'s:
        ``store``, ``members``, ``method``, ``seconds``, ``members_per_second``,
        ``observations``; then ``hour_matched``, ``states`` (how many archive
        states were drawn), ``horizontal_km`` and ``vertical_km`` (``None`` for
        ``"climatology"``); and with observations ``fit`` and ``climatology_fit``
        (:func:`genda.assimilation.posterior.observation_fit` of the written
        members and of the mean of the drawn states).

    Raises:
        InvalidValueError: among others, an archive with too few eligible
            states (with ``hour_matched``: too few within an hour of the
            window's time of day), before any store is created or changed.
    """
    _check_arguments(method, members, climatology_size, observations)
    localization = None
    if method != "climatology":
        localization = baseline_localization(method, hour_matched, horizontal_km, vertical_km)
    size, minimum = _draw_size(method, members, climatology_size, hour_matched)
    out = Path(out)
    check_store_output(out, overwrite)  # before the analysis: a refused output costs nothing
    when = as_datetime64(time)
    ds, grid, obs = _load_inputs(archive, observations, when, window_hours)
    draw_rng, perturbation_rng = _generators(seed, when, hour_matched)

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
    background = draw.states.mean(axis=0, dtype=np.float64)
    fields = _analyse(draw.states, obs, grid, method, members, perturbation_rng, localization)
    elapsed = clock.perf_counter() - started
    drawn = int(draw.states.shape[0])

    settings = _settings(
        method,
        written=int(fields.shape[0]),
        drawn=drawn,
        hour_matched=hour_matched,
        exclude_hours=exclude_hours,
        localization=localization,
        horizontal_km=horizontal_km,
        vertical_km=vertical_km,
    )
    provenance = _provenance(method, settings, archive, seed, when, window_hours, draw.times, obs)
    write_ensemble_window(
        out, grid, when, f"genda baseline ensemble ({method})", fields, provenance, overwrite
    )
    return _summarise(
        out,
        method,
        fields=fields,
        background=background,
        drawn=drawn,
        seconds=elapsed,
        obs=obs,
        grid=grid,
        hour_matched=hour_matched,
        localization=localization,
    )


def _check_arguments(
    method: str,
    members: int,
    climatology_size: int | None,
    observations: str | os.PathLike[str] | None,
) -> None:
    """Refuse an unknown method, a bad size or a missing table before anything is read."""
    if method not in BASELINE_METHODS:
        raise InvalidValueError(f"unknown baseline {method!r}; choose one of {BASELINE_METHODS}")
    if members < 1:
        raise InvalidValueError(f"members must be >= 1, got {members}")
    if method == "climatology":
        return
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


def _draw_size(
    method: str, members: int, climatology_size: int | None, hour_matched: bool
) -> tuple[int | None, int]:
    """``(size, minimum)``: the states to draw and the fewest eligible ones accepted.

    ``size`` is ``None`` for every eligible state (``"enoi"``, and ``"oi"`` and
    ``"enkf"`` of hour-matched states without a ``climatology_size``); the
    climatology draws its members; each EnKF member is the update of one state.
    """
    if method == "climatology":
        size: int | None = members
    elif method == "enoi" or (climatology_size is None and hour_matched):
        size = None
    else:
        size = CLIMATOLOGY_SIZE if climatology_size is None else climatology_size
    minimum = max(2, members) if method == "enkf" else 2
    return size, minimum


def _load_inputs(
    archive: str | os.PathLike[str],
    observations: str | os.PathLike[str] | None,
    when: np.datetime64,
    window_hours: float,
) -> tuple[xr.Dataset, Grid, pd.DataFrame | None]:
    """The archive, its grid (the output grid) and the window's observations checked on it."""
    ds = open_archive(archive)
    grid = Grid.from_dataset(ds)
    obs = None
    if observations is not None:
        obs = load_window_observations(observations, grid, when, window_hours)
    return ds, grid, obs


def _generators(
    seed: int, when: np.datetime64, hour_matched: bool
) -> tuple[np.random.Generator, np.random.Generator]:
    """``(draw, perturbations)``: the streams of the archive draw and of the EnKF's observations.

    The draw is :func:`hour_matched_generator`'s with ``hour_matched``, else the
    climatology stream of :func:`baseline_generators`; the perturbations are
    always the latter's second stream.
    """
    climatology_rng, perturbation_rng = baseline_generators(seed, when)
    draw_rng = hour_matched_generator(seed, when) if hour_matched else climatology_rng
    return draw_rng, perturbation_rng


def _analyse(
    states: np.ndarray,
    obs: pd.DataFrame | None,
    grid: Grid,
    method: str,
    members: int,
    rng: np.random.Generator,
    localization: Localization | None,
) -> np.ndarray:
    """The members to write, ``(N, V, L, H, W)`` float32, from the drawn ``(K, V, L, H, W)`` states.

    Without localisation (the climatology) the states themselves; the OI and
    EnOI write the analysis mean as one member (``N = 1``); the EnKF its first
    ``members`` states updated with perturbed observations drawn from ``rng``.
    """
    if localization is None:
        return states
    assert obs is not None  # checked by _check_arguments; narrows the type
    analysis = localized_analysis(
        states,
        obs,
        grid,
        members=members if method == "enkf" else 0,
        rng=rng,
        localization=localization,
    )
    return analysis.members if method == "enkf" else analysis.mean[None].astype(np.float32)


def _half_widths(
    localization: Localization | None,
) -> tuple[float | str | None, float | str | None]:
    """``(horizontal, vertical)`` as recorded: ``"inf"`` when unlocalised, ``None`` without."""
    if localization is None:
        return None, None
    return _finite(localization.horizontal_km), _finite(localization.vertical_km)


def _settings(
    method: str,
    *,
    written: int,
    drawn: int,
    hour_matched: bool,
    exclude_hours: float,
    localization: Localization | None,
    horizontal_km: float | None,
    vertical_km: float | None,
) -> dict[str, Any]:
    """The provenance's ``settings``: what, besides the inputs, the members depend on.

    ``horizontal_km`` and ``vertical_km`` are the half-widths as given (``None``:
    tuned), recorded only as the localisation's source.
    """
    horizontal, vertical = _half_widths(localization)
    return {
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


def _provenance(
    method: str,
    settings: dict[str, Any],
    archive: str | os.PathLike[str],
    seed: int,
    when: np.datetime64,
    window_hours: float,
    times: np.ndarray,
    obs: pd.DataFrame | None,
) -> dict[str, Any]:
    """What determines the window's members, recorded in the store and compared on reruns.

    ``times`` are the ``(K,)`` archive times of the drawn states, in draw order.
    """
    return {
        "kind": "baseline",
        "method": method,
        "settings": settings,
        "archive": str(Path(archive).resolve()),
        "seed": int(seed),
        "window_seed": str(window_seed(seed, when)),
        "window_hours": float(window_hours),
        "climatology_times": [str(np.datetime64(t, "s")) for t in times],
        "observations_sha256": "" if obs is None else observation_fingerprint(obs),
        "observations_count": 0 if obs is None else len(obs),
        "genda_version": __version__,
    }


def write_ensemble_window(
    out: Path,
    grid: Grid,
    when: np.datetime64,
    title: str,
    fields: np.ndarray,
    provenance: dict[str, Any],
    overwrite: bool = False,
) -> None:
    """Register the window at ``when`` in ``out`` and write its ``(N, V, L, H, W)`` members.

    Only called once the members are computed, so a failed draw or analysis
    leaves the store as it was. ``title`` names the store when it is created.
    """
    store = EnsembleStore.open_or_create(
        out,
        grid,
        int(fields.shape[0]),
        {"title": title, "source": f"genda {__version__}"},
        overwrite=overwrite,
    )
    store.add_window(when, provenance)
    for batch in store.shard_batches(store.missing(when)):
        store.write_members(when, batch, np.asarray(fields)[batch])
    store.finalize(when)


def _summarise(
    out: Path,
    method: str,
    *,
    fields: np.ndarray,
    background: np.ndarray,
    drawn: int,
    seconds: float,
    obs: pd.DataFrame | None,
    grid: Grid,
    hour_matched: bool,
    localization: Localization | None,
) -> BaselineSummary:
    """The window's :class:`BaselineSummary`.

    ``fields`` are the written ``(N, V, L, H, W)`` members; ``background`` the
    ``(V, L, H, W)`` float64 mean of the drawn states, the fit's reference.
    """
    written = int(fields.shape[0])
    horizontal, vertical = _half_widths(localization)
    fit = climatology_fit = None
    if obs is not None:
        members = torch.from_numpy(np.asarray(fields))
        fit = ObservationFit.from_dict(observation_fit(members, obs, grid))
        reference = torch.from_numpy(background[None])
        climatology_fit = ObservationFit.from_dict(observation_fit(reference, obs, grid))
    return BaselineSummary(
        store=str(out),
        members=written,
        method=method,
        seconds=seconds,
        members_per_second=written / seconds if seconds > 0 else float("nan"),
        observations=0 if obs is None else len(obs),
        hour_matched=bool(hour_matched),
        states=drawn,
        horizontal_km=horizontal,
        vertical_km=vertical,
        fit=fit,
        climatology_fit=climatology_fit,
    )


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
    "BaselineSummary",
    "baseline_generators",
    "baseline_localization",
    "baseline_window",
    "hour_matched_generator",
    "write_ensemble_window",
]
