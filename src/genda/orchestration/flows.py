"""Prefect flows: one assimilation window, and a cycle of windows.

``assimilate_window_flow`` runs one window as four thin tasks around library
functions: check the observations (fail fast, before any actor starts),
make the ensemble (:func:`genda.orchestration.assimilate.assimilate_window`:
Ray actors created inside the task, members straight into the store, the
window's statistics), evaluate it against model data when the configuration
names some (:func:`genda.evaluation.report.evaluate_paths`), and publish a
markdown artifact with the scores and the plot paths. Tasks pass store
paths, window times and small summaries, never arrays.

The ensemble task retries on failure; a retry, like a rerun of the flow,
resumes the window: members already in the store are not made again.

``assimilation_cycle`` runs the windows from ``start`` to ``end`` one after
the other. With a prior of one instant a window passes nothing to the next
but the store they share: the prior is climatological, so windows are
independent draws and a failed window does not spoil the ones after it; it
is reported and the cycle goes on. With a trajectory prior of ``K`` hourly
states (windows every ``K - 1`` hours) each window after the first filters:
its first state is, member by member, the previous window's last hour, read
from the store (:func:`genda.orchestration.trajectory_window.cycle_mode`);
the window after a failed one starts cold and leaves its first hour, the
failed window's last, to that window's rerun; its provenance says so. A window fails when any of its steps fails, its evaluation included. A
cycle with a failed window ends ``Failed`` once every window has run (the
state ``genda cycle`` mirrors with exit status 1): calling the flow raises
:class:`CycleError`, which carries every window's result. Either way the
cycle's table (:class:`genda.orchestration.summaries.CycleTable`) is
published as the markdown artifact ``cycle-<store>``.

Prefect runs offline by default (:func:`prefect_environment`): no
telemetry, ``PREFECT_HOME`` under the working directory unless set.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from genda.errors import RunFailedError
from genda.orchestration.config import CycleConfig
from genda.orchestration.summaries import CycleTable, WindowSummary
from genda.trajectory import is_trajectory, trajectory_states


class CycleError(RunFailedError):
    """Windows of a cycle failed; every window ran, and ``results`` holds what each did.

    ``results``: one dict per window, as :func:`assimilation_cycle` returns them
    (``{"time", "error"}`` for a failed one).
    """

    def __init__(self, message: str, results: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.results = list(results or [])

    def __reduce__(self) -> tuple[Any, ...]:
        # Prefect may pickle a flow's final state; keep the results across it.
        return (type(self), (str(self), self.results))


def prefect_environment(home: str | os.PathLike[str] | None = None) -> None:
    """Offline defaults for Prefect, set before it is imported; the user's settings win.

    ``PREFECT_HOME`` goes under ``home`` (default: ``./.prefect``), analytics
    and update checks are off, a temporary server listens on 127.0.0.1 and is
    given 120 s to start.
    """
    os.environ.setdefault("PREFECT_HOME", str(Path(home or Path.cwd() / ".prefect").resolve()))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_API_HOST", "127.0.0.1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # Prefect waits 20 s for its temporary server; on a busy two-core machine or a
    # shared login node its database migrations alone can take longer.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


prefect_environment()

from prefect import flow, get_run_logger, task  # noqa: E402  (after the environment)
from prefect.artifacts import create_markdown_artifact  # noqa: E402
from prefect.cache_policies import NONE  # noqa: E402
from prefect.states import Failed, State  # noqa: E402


@task(name="check observations", cache_policy=NONE)
def check_observations(config: CycleConfig, time: str) -> dict[str, Any]:
    """Read and validate the window's table against the prior's grid; count and fingerprint."""
    from genda.orchestration.assimilate import load_window_observations, observation_fingerprint
    from genda.orchestration.trajectory_window import trajectory_observations

    path = config.observation_path(np.datetime64(time))
    grid = _grid_of(config)
    if is_trajectory(grid):
        obs = trajectory_observations(path, grid, np.datetime64(time))
    else:
        obs = load_window_observations(path, grid, np.datetime64(time), config.window_hours)
    return {"path": str(path), "count": len(obs), "sha256": observation_fingerprint(obs)}


def prior_states(config: CycleConfig) -> int:
    """The hourly states of the cycle's windows (1: one instant per window): the
    prior's ``K``, or ``config.states``.

    Raises:
        InvalidValueError: windows that would not meet end to start
            (``every_hours`` must be their hours less one), or bad ``states``.
    """
    from genda.errors import InvalidValueError

    grid = _grid_of(config)
    states = trajectory_states(grid) if is_trajectory(grid) else 1
    if states == 1 and config.start_update is not None:
        raise InvalidValueError(
            "start_update updates the states a filtering window fixes; this cycle's prior is "
            "of one instant, whose windows fix none"
        )
    if states > 1 and config.every_hours != states - 1:
        raise InvalidValueError(
            f"the cycle's windows are {states} hourly states: a cycle of them runs every "
            f"{states - 1} h (each window starts at the last hour of the one before), not every "
            f"{config.every_hours:g} h"
        )
    return states


@task(name="ensemble", retries=2, retry_delay_seconds=5, cache_policy=NONE)
def make_ensemble(config: CycleConfig, time: str, progress: bool = True) -> dict[str, Any]:
    """The window's members and statistics in the store (resumes what a failed try left).

    ``progress``: a bar over the sampler steps, drawn only when standard error
    is a terminal (a person watching, not a log). Returns the window's summary
    in its JSON form (:meth:`genda.orchestration.summaries.WindowSummary.to_dict`).
    """
    from genda.orchestration.assimilate import assimilate_window
    from genda.orchestration.trajectory_window import COLD_AFTER, FILTER, cycle_mode

    mode = None
    if prior_states(config) > 1:  # each window fixes its first hour to the previous window's last
        first = np.datetime64(time, "s") == config.windows()[0]
        mode = cycle_mode(config.store, np.datetime64(time), first)
    summary = assimilate_window(
        config.checkpoint,
        config.observation_path(np.datetime64(time)),
        time,
        config.store,
        members=config.members,
        settings=config.settings(),
        seed=config.seed,
        window_hours=config.window_hours,
        outlier_k=config.outlier_k,
        keep_outliers=config.keep_outliers,
        device=config.ray.device,
        workers=config.ray.workers,
        threads_per_worker=config.ray.threads_per_worker,
        ray_address=config.ray.address,
        insecure=config.ray.insecure,
        auto_batch=config.auto_batch,
        progress=progress,  # drawn on a terminal only (genda.progress)
        filtering=mode == FILTER,
        writes_first=mode != COLD_AFTER,
        start_update=(
            config.start_update.settings()
            if mode == FILTER and config.start_update is not None
            else None
        ),
        states=config.states,
    )
    get_run_logger().info(
        "window %s: %d members made, %d already stored, %.2f members/s, %d retried",
        time,
        summary.written,
        summary.already_complete,
        summary.members_per_second,
        summary.failures_retried,
    )
    return summary.to_dict()  # plain data between tasks and in the flow's result


@task(name="evaluate", cache_policy=NONE)
def evaluate_window(config: CycleConfig, time: str) -> dict[str, Any]:
    """Scores against ``config.truth``: ``metrics.json`` and PNGs in the window's report folder."""
    from genda.evaluation.report import evaluate_paths
    from genda.evaluation.scores import SCORE_NAMES

    assert config.truth is not None  # the flow checks
    out = report_dir(config, time)
    when, obs_path, withheld_path = (
        np.datetime64(time),
        config.observation_path(np.datetime64(time)),
        config.withheld_path(np.datetime64(time)),
    )
    states = prior_states(config)
    if states > 1:
        # A trajectory window is scored at its last hour, the filter's analysis; its
        # tables hold every hour's rows, which that hour's scores would mix in.
        when, obs_path, withheld_path = when + np.timedelta64(states - 1, "h"), None, None
    metrics = evaluate_paths(
        config.store,
        config.truth,
        out,
        time=str(when),
        obs_path=obs_path,
        withheld_path=withheld_path,
        baseline_paths=config.baselines,
        overwrite=True,  # the window's own report folder: a rerun evaluates it again
    )
    return {
        "metrics_path": str(out / "metrics.json"),
        "plots": {k: str(v) for k, v in metrics["plots"].items()},
        "scores": {  # the table's numbers; the rank histograms stay in metrics.json
            name: {k: v for k, v in entry["total"].items() if k in SCORE_NAMES}
            for name, entry in metrics["ensemble"]["variables"].items()
        },
        "units": {name: entry["units"] for name, entry in metrics["ensemble"]["variables"].items()},
        "baselines": {
            baseline: {
                name: {k: v for k, v in entry["total"].items() if k in SCORE_NAMES}
                for name, entry in scores["variables"].items()
            }
            for baseline, scores in metrics["baselines"].items()
        },
    }


def report_dir(config: CycleConfig, time: str) -> Path:
    """Where a window's report goes: ``reports/<time>`` (beside the store by default)."""
    base = config.reports or config.store.with_name(config.store.stem + "-reports")
    return base / str(np.datetime64(time, "s")).replace(":", "")


def markdown_report(time: str, ensemble: dict[str, Any], evaluation: dict[str, Any] | None) -> str:
    """The window's artifact: what was made, the fit, the scores and the plot paths."""
    made = WindowSummary.from_dict(ensemble)
    lines = [
        f"# Window {time}",
        "",
        f"- store: `{made.store}`",
        f"- members: {made.members} ({made.written} made now, "
        f"{made.already_complete} already stored), {made.method}, "
        f"{made.steps} steps, {made.strategy}",
        f"- workers: {made.workers or 'in process'}, "
        + (f"{made.members_per_second:.2f} members/s, " if made.written else "")
        + f"{made.failures_retried} tasks retried",
    ]
    if made.fit is not None and made.level_mean_fit is not None:
        lines.append(
            f"- fit to the {made.observations} observations, rms (y - Hx)/sigma: "
            f"{made.fit.rms_normalised_innovation:.2f} (training mean per level: "
            f"{made.level_mean_fit.rms_normalised_innovation:.2f})"
        )
    if evaluation:
        names = list(next(iter(evaluation["scores"].values())))
        lines += [
            "",
            "| variable | units | " + " | ".join(names) + " |",
            "|---|---|" + "---|" * len(names),
        ]
        for variable, scores in evaluation["scores"].items():
            cells = " | ".join(f"{scores[n]:.3g}" for n in names)
            lines.append(f"| {variable} | {evaluation['units'][variable]} | {cells} |")
        for baseline, table in evaluation.get("baselines", {}).items():
            for variable, scores in table.items():
                cells = " | ".join(f"{scores[n]:.3g}" for n in names)
                units = evaluation["units"][variable]
                lines.append(f"| {variable} ({baseline}) | {units} | {cells} |")
        lines += ["", f"metrics: `{evaluation['metrics_path']}`", ""]
        lines += [f"- {name}: `{path}`" for name, path in evaluation["plots"].items()]
    return "\n".join(lines) + "\n"


@flow(name="assimilate-window", log_prints=True)
def assimilate_window_flow(config: CycleConfig, time: str, progress: bool = True) -> dict[str, Any]:
    """One window: observations -> ensemble (+ statistics) -> evaluation -> artifact.

    Any step that fails fails the window (its evaluation too: members that
    cannot be scored against the configured truth are not a finished window).
    ``progress``: the sampling's bar on a terminal.
    """
    time = str(np.datetime64(time, "s"))
    checked = check_observations(config, time)
    ensemble = make_ensemble(config, time, progress)
    evaluation = evaluate_window(config, time) if config.truth is not None else None
    key = "window-" + time.lower().replace(":", "").replace("t", "-")
    create_markdown_artifact(
        markdown_report(time, ensemble, evaluation), key=key, description=f"window {time}"
    )
    return {
        "time": time,
        "store": str(config.store),
        "observations": checked["count"],
        "ensemble": ensemble,
        "evaluation": evaluation,
    }


def _grid_of(config: CycleConfig) -> Any:
    """The grid of the cycle's windows: the prior's, as its checkpoint records it, or
    ``config.states`` hours of it (long windows composed from a trajectory prior).

    Raises:
        InvalidValueError: ``states`` for a prior of one instant, or outside ``K..MAX_STATES``.
    """
    from genda.errors import InvalidValueError
    from genda.grid import Grid
    from genda.models.checkpoint import read_checkpoint
    from genda.trajectory import MAX_STATES, state_grid, trajectory_grid

    grid = Grid.from_dict(read_checkpoint(config.checkpoint).config["grid"])
    if config.states is None:
        return grid
    if not is_trajectory(grid):
        raise InvalidValueError(
            f"states: {config.states} composes long windows from a trajectory prior (genda train "
            f"--states K); {config.checkpoint} models one instant"
        )
    own = trajectory_states(grid)
    if not own <= config.states <= MAX_STATES:
        raise InvalidValueError(
            f"a window of this prior has {own} to {MAX_STATES} hours, not states: {config.states}"
        )
    return trajectory_grid(state_grid(grid), config.states)


def cycle_artifact_key(config: CycleConfig) -> str:
    """The key of a cycle's table artifact: ``cycle-<store name>`` (Prefect keys: a-z, 0-9, -)."""
    slug = re.sub(r"[^a-z0-9]+", "-", config.store.stem.lower()).strip("-")
    return f"cycle-{slug or 'store'}"


@flow(name="assimilation-cycle", log_prints=True)
def assimilation_cycle(config: CycleConfig, progress: bool = True) -> list[dict[str, Any]] | State:
    """Every window of the configuration, in time order: one result dict per window.

    A failed window is reported and the cycle goes on; once every window
    has run, a cycle with failed windows ends ``Failed`` and calling it raises
    :class:`CycleError` (its ``results`` are the list otherwise returned).
    The cycle's table is published as the markdown artifact
    :func:`cycle_artifact_key` (``prefect artifact inspect cycle-<store>``).
    ``progress``: the sampling's bar on a terminal.
    """
    from contextlib import nullcontext

    from genda.distributed.cluster import ray_session

    prior_states(config)  # windows that do not meet: refused once, before any window
    results = []
    # One Ray for the whole cycle: each window's actors then start in seconds
    # instead of each window starting (and stopping) a local cluster.
    workers = config.ray
    cpus = workers.workers * workers.threads_per_worker if workers.device == "cpu" else None
    session = ray_session(workers.address, num_cpus=cpus, insecure=workers.insecure)
    with session if workers.workers else nullcontext():
        for when in config.windows():
            time = str(when)
            try:
                results.append(assimilate_window_flow(config, time, progress))
            except Exception as error:  # the cycle goes on; the summary names the failure
                get_run_logger().error("window %s failed: %s", time, error)
                results.append({"time": time, "error": f"{type(error).__name__}: {error}"})
    table = CycleTable.from_results(results)
    create_markdown_artifact(
        f"# Cycle of {config.store.name}\n\n{table.to_markdown()}",
        key=cycle_artifact_key(config),
        description=f"cycle {config.start} .. {config.end} into {config.store}",
    )
    failed = sum("error" in result for result in results)
    if failed:
        # A returned Failed state ends the run Failed without a traceback in
        # the log; calling the flow raises its data, the error with the results.
        message = f"{failed} of {len(results)} windows failed; rerun the cycle to resume them"
        return Failed(message=message, data=CycleError(message, results))
    return results


def next_window(config: CycleConfig, now: np.datetime64 | None = None) -> np.datetime64 | None:
    """The window a scheduled run takes: the earliest not yet finalised whose observations exist.

    Windows after ``now`` (default: the current UTC time) are not due yet; a
    window whose observation file is absent waits for a later run.
    """
    from genda.storage.ensemble_store import EnsembleStore, EnsembleStoreError

    now = now if now is not None else np.datetime64(datetime.now(UTC).replace(tzinfo=None), "s")
    # a trajectory window is done when its last hour is (its first is the previous window's)
    last = np.timedelta64(prior_states(config) - 1, "h")
    done: set[np.datetime64] = set()
    if config.store.exists():
        try:
            store = EnsembleStore.open(config.store)
            done = {t for t in store.windows() if store.is_finalized(t)}
        except EnsembleStoreError:
            pass  # the window's flow reports a store it cannot use
    for when in config.windows():
        if when > now:
            return None
        if when + last not in done and config.observation_path(when).is_file():
            return when
    return None


@flow(name="scheduled-window", log_prints=True)
def scheduled_window(config_path: str) -> dict[str, Any] | None:
    """One scheduled step of a cycle: the next due window (:func:`next_window`), if any.

    The configuration is read at each run, so edits take effect at the next one.
    """
    from genda.orchestration.config import load_cycle_config

    config = load_cycle_config(config_path)
    when = next_window(config)
    if when is None:
        get_run_logger().info("no window is due: every due window is done or lacks observations")
        return None
    return assimilate_window_flow(config, str(when))


__all__ = [
    "CycleError",
    "assimilate_window_flow",
    "assimilation_cycle",
    "cycle_artifact_key",
    "markdown_report",
    "next_window",
    "prefect_environment",
    "report_dir",
    "scheduled_window",
]
