"""One window of a trajectory prior: its hourly states, each observation at its own time.

A trajectory prior (``genda train --states K``) samples ``K`` consecutive
hourly states at once. Its window starts at ``time`` and ends ``K - 1``
hours later; every observation in it acts at its own time, linearly between
the hours on either side (:class:`genda.observations.ObservationOperator`).
The store keeps one slot per hour: the members of hour ``t`` are the
variables ``u, v, T`` at ``time = t``, as any other window's, so queries and
plain xarray see an hourly series.

* A cold start (``filter=False``) writes all ``K`` hours; in a cycle, the cold
  start after a failed window writes the ``K - 1`` after its first, which
  stays the failed window's.
* Filtering (``filter=True``) fixes the first state of member ``m`` to member
  ``m`` of the store's finalised hour ``time`` (the previous window's last
  state) and writes the ``K - 1`` hours after it. Consecutive windows share
  that one hour, which only the earlier window writes: the later one's first
  state is, by construction, the same field. The chain is in the provenance
  of each hour: ``trajectory.conditioned_on`` names the hour each member was
  conditioned on.

Windows are checked before anything is written: the observations lie within
the window, the hour conditioned on exists in the store, is finalised, and
holds the prior's grid and the store's members.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
import torch

from genda.assimilation.posterior import PosteriorSettings, window_seed
from genda.assimilation.start_update import StartUpdate
from genda.distributed import TrajectoryWindow, WindowJob
from genda.errors import InvalidValueError, MissingInputError
from genda.grid import Grid
from genda.models.checkpoint import LoadedPrior
from genda.observations import ObservationOperator, validate_observations
from genda.observations.files import read_observations
from genda.storage import EnsembleStore
from genda.storage.ensemble_store import EnsembleStoreError
from genda.storage.ensemble_windows import canonical, describe_differences, provenance_differences
from genda.times import iso
from genda.trajectory import HOUR, state_grid, trajectory_states

__all__ = [
    "COLD",
    "COLD_AFTER",
    "FILTER",
    "check_condition",
    "check_hours_free",
    "cycle_mode",
    "stored_rows",
    "trajectory_job",
    "trajectory_observations",
    "trajectory_operator",
    "trajectory_provenance",
    "trajectory_times",
    "trajectory_values",
]


def trajectory_times(grid: Grid, start: np.datetime64) -> tuple[np.datetime64, ...]:
    """The valid times of the ``K`` states of a window of a trajectory ``grid``."""
    return tuple(np.datetime64(start, "s") + k * HOUR for k in range(trajectory_states(grid)))


def trajectory_observations(
    path: str | os.PathLike[str], grid: Grid, start: np.datetime64
) -> pd.DataFrame:
    """Read and validate the observations of the window's hours ``start .. start + K - 1 h``.

    Raises:
        ObservationError: a row outside the window (naming it), or any other
            problem of the table (:func:`genda.observations.validate_observations`).
    """
    times = trajectory_times(grid, start)
    window = (times[0], times[-1])
    return validate_observations(
        read_observations(path), state_grid(grid), window=window, source=str(path)
    )


FILTER, COLD, COLD_AFTER = "filter", "cold", "cold-after"
"""How a cycle's trajectory window starts (:func:`cycle_mode`): fixed to the previous
window's last hour; cold, writing every hour; cold, leaving its first hour to the window
before (which failed: a rerun may still complete it)."""


def cycle_mode(out: str | os.PathLike[str], start: np.datetime64, first: bool) -> str:
    """How a cycle's trajectory window at ``start`` starts, decided the same on every rerun.

    A window registered before keeps what it was (its provenance says); the
    cycle's first window starts cold; a later one filters on the previous
    window's last hour when that hour is finalised in ``out``, and otherwise
    (the previous window failed) starts cold without writing that hour, which
    stays the failed window's, and its provenance records both.
    """
    second = np.datetime64(start, "s") + HOUR  # the first hour every kind of window writes
    try:
        store = EnsembleStore.open(out)
    except (EnsembleStoreError, MissingInputError):
        return COLD
    windows = {np.datetime64(t, "s") for t in store.windows()}
    if second in windows:
        recorded = store.provenance(second).get("trajectory") or {}
        if recorded.get("conditioned_on") is not None:
            return FILTER
        return COLD if recorded.get("writes_first", True) else COLD_AFTER
    if first:
        return COLD
    if np.datetime64(start, "s") in windows and store.is_finalized(start):
        return FILTER
    return COLD_AFTER


def check_condition(
    out: str | os.PathLike[str],
    prior: LoadedPrior,
    start: np.datetime64,
    members: int,
    *,
    forecast: bool = False,
) -> None:
    """The hour a window is conditioned on is in ``out``, finalised and matching.

    ``forecast``: the messages speak of the analysis a forecast starts from,
    else of the previous window of a filtering cycle.

    Raises:
        InvalidValueError: no store, another grid or ensemble size, or the hour is
            missing (a gap in the cycle) or not finalised.
    """
    what = "a forecast starts from" if forecast else "filtering conditions on"
    way_out = "" if forecast else "; run the windows in order or start again without --filter"
    try:
        store = EnsembleStore.open(out)
    except (EnsembleStoreError, MissingInputError) as error:
        raise InvalidValueError(
            f"{what} the store's window at {iso(start)}, but {out} is not a store genda can "
            f"read ({error}){way_out}"
        ) from None
    grid = state_grid(prior.grid)
    if store.grid != grid:
        raise InvalidValueError(
            f"{out} holds another grid than the prior's ({'; '.join(store.grid.differences(grid))})"
        )
    if store.n_members != members:
        raise InvalidValueError(
            f"{out} has {store.n_members} members; a window conditioned on it must have as "
            f"many, not {members}"
        )
    windows = [np.datetime64(t, "s") for t in store.windows()]
    if np.datetime64(start, "s") not in windows:
        latest = iso(max(windows)) if windows else "none"
        gap = "" if forecast else ": the cycle has a gap"
        raise InvalidValueError(
            f"no window at {iso(start)} in {out} that {what} (latest: {latest}){gap}{way_out}"
        )
    if not store.is_finalized(start):
        raise InvalidValueError(
            f"the window at {iso(start)} in {out} is not finalised (complete it first): "
            f"{what} finished members only"
        )


def trajectory_provenance(
    provenance: dict[str, Any],
    prior: LoadedPrior,
    start: np.datetime64,
    filtering: bool,
    writes_first: bool = True,
    start_update: StartUpdate | None = None,
) -> dict[str, Any]:
    """The window's provenance with its trajectory: start, states, the hour conditioned on,
    whether it writes its first hour, and how a filtering window updates its start
    (``start_update``, recorded when it does). ``window_hours`` is left out: the
    window's hours are its own."""
    kept = {k: v for k, v in provenance.items() if k != "window_hours"}
    trajectory: dict[str, Any] = {
        "start": iso(start),
        "states": trajectory_states(prior.grid),
        "conditioned_on": iso(start) if filtering else None,
        "member_conditioned_on": "same member" if filtering else None,
        "writes_first": not filtering and writes_first,
    }
    if filtering and start_update is not None:
        trajectory["start_update"] = start_update.to_dict()
    return {**kept, "trajectory": trajectory}


def trajectory_job(
    store: EnsembleStore,
    prior: LoadedPrior,
    start: np.datetime64,
    seed: int,
    settings: PosteriorSettings,
    obs: pd.DataFrame | None,
    provenance: dict[str, Any],
    filtering: bool,
    writes_first: bool = True,
    *,
    source: str | None = None,
    job_seed: int | None = None,
    start_update: StartUpdate | None = None,
) -> WindowJob:
    """The job of a trajectory window: every hour it writes is registered in ``store``.

    ``source``: the store a filtering window's first state is read from, when
    not ``store`` (a forecast's first segment reads the analysis); ``job_seed``:
    the window's seed (default :func:`window_seed` of ``seed`` and ``start``);
    ``start_update``: how a filtering window updates its members' starts.

    Raises:
        EnsembleStoreError: an hour holds members of another window (checked for
            every hour before any is registered).
    """
    window = TrajectoryWindow(
        np.datetime64(start, "s"),
        trajectory_states(prior.grid),
        start if filtering else None,
        source,
        writes_first=writes_first,
        start_update=start_update if filtering else None,
    )
    check_hours_free(store, window.times, provenance)
    for when in window.times:
        store.add_window(when, provenance)
    return WindowJob(
        store,
        window.times[-1],
        window_seed(seed, np.datetime64(start, "s")) if job_seed is None else job_seed,
        settings,
        obs,
        provenance.get("observations_sha256") or "",
        provenance,
        window,
    )


def check_hours_free(
    store: EnsembleStore, times: tuple[np.datetime64, ...], provenance: dict[str, Any]
) -> None:
    """No hour of ``times`` holds complete members of other provenance in ``store``.

    Raises:
        EnsembleStoreError: naming the first such hour and how the provenance differs.
    """
    registered = {np.datetime64(t, "s") for t in store.windows()}
    record = canonical(dict(provenance), "provenance of the window")
    for when in times:
        if np.datetime64(when, "s") not in registered or not store.complete(when).any():
            continue
        old = store.provenance(when)
        if provenance_differences(old, record):
            raise EnsembleStoreError(
                f"hour {iso(when)} of {store.path} holds members of another window "
                f"({describe_differences(old, record)}); nothing was registered: windows of a "
                "cycle must not share the hours they write"
            )


def _first_hour_kept(store: EnsembleStore, prior: LoadedPrior, start: np.datetime64) -> bool:
    """Whether the window at ``start`` stands on its first hour: it wrote it (a cold start)
    or was fixed to it (filtering); not when it left that hour to a failed window."""
    recorded = store.provenance(trajectory_times(prior.grid, start)[1]).get("trajectory") or {}
    return recorded.get("conditioned_on") is not None or recorded.get("writes_first", True)


def trajectory_values(
    store: EnsembleStore, prior: LoadedPrior, start: np.datetime64, members: range
) -> torch.Tensor:
    """Stored ``members`` of every hour of the window ``(n, K V, L, H, W)`` float64; the
    first hour is zero when the window left it to a failed window (:func:`stored_rows`)."""
    grid = state_grid(prior.grid)
    kept = _first_hour_kept(store, prior, start)
    hours = [
        torch.from_numpy(store.read_members(t, members))
        if k > 0 or kept
        else torch.zeros((len(members), *grid.shape), dtype=torch.float32)
        for k, t in enumerate(trajectory_times(prior.grid, start))
    ]
    return torch.cat(hours, dim=1).double()


def stored_rows(
    store: EnsembleStore, prior: LoadedPrior, start: np.datetime64, obs: pd.DataFrame
) -> np.ndarray:
    """``(M,)`` bool: the rows of ``obs`` the window's own hours explain: all of them, but
    those touching its first hour when it left that hour to a failed window."""
    if _first_hour_kept(store, prior, start):
        return np.ones(len(obs), dtype=bool)
    operator = trajectory_operator(obs, prior, start)
    per_state = int(np.prod(state_grid(prior.grid).shape))
    touches = (operator.index < per_state).numpy() & (operator.weight.numpy() != 0)
    return ~touches.any(axis=1)


def trajectory_operator(
    obs: pd.DataFrame, prior: LoadedPrior, start: np.datetime64
) -> ObservationOperator:
    """The window's physical operator on stacked hourly states, float64."""
    return ObservationOperator.from_table(obs, prior.grid, np.datetime64(start, "ns")).to(
        dtype=torch.float64
    )
