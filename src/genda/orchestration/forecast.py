"""Ensemble forecasts from an analysis: the trajectory prior run on with no observations.

``genda forecast`` takes the finalised window ``time`` of an analysis store
and a trajectory prior of ``K`` hourly states, and writes the ``hours`` after
it to a forecast store. The forecast is the machinery of a filtering window
without observations: a segment of ``K`` states whose first state is fixed,
member by member, to the analysis, samples the ``K - 1`` hours after it;
the next segment starts from the last hour of the one before, until
``hours`` are covered: whole segments, so the forecast reaches the next
multiple of ``K - 1`` hours (``ForecastSummary.hours`` lists them). Member ``m`` of the forecast continues member ``m``
of the analysis, so the forecast ensemble carries the analysis' spread
forward; each segment's members are read from the store by whoever samples
them, as in a cycle.

The forecast store is a store like any other (one slot per hour, opened by
plain xarray); each hour's provenance says which analysis window and store
it started from (``forecast``) and the segment it belongs to
(``trajectory``). A forecast never writes into the analysis store: those
hours belong to the analyses still to come.
"""

from __future__ import annotations

import math
import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genda.assimilation.posterior import PosteriorSettings
from genda.budget import check_output_size, human_bytes
from genda.distributed import WorkerSpec, complete_window
from genda.distributed.cluster import check_cluster, ray_session
from genda.distributed.cluster import ray_address as ray_address_of
from genda.distributed.scheduler import ActorPool
from genda.distributed.work import MemberGenerator
from genda.errors import InvalidValueError, MissingInputError
from genda.models.checkpoint import LoadedPrior, load_checkpoint
from genda.orchestration.assimilate import window_provenance
from genda.orchestration.trajectory_window import (
    check_condition,
    trajectory_job,
    trajectory_provenance,
)
from genda.ownership import check_store_output
from genda.seeds import stable_seed
from genda.storage import EnsembleStore
from genda.storage.ensemble_store import EnsembleStoreError
from genda.times import as_datetime64, iso
from genda.trajectory import HOUR, is_trajectory, state_grid, trajectory_states

__all__ = ["ForecastSummary", "forecast"]


@dataclass(frozen=True)
class ForecastSummary:
    """What ``genda forecast`` made.

    Attributes:
        store: the forecast store.
        analysis: the analysis store and ``start``, its window the forecast starts from.
        hours: the valid times written, one per lead hour.
        members: ensemble size.
        written: members sampled now, over all segments (0 for a finished forecast).
        seconds: wall time of the sampling.
    """

    store: str
    analysis: str
    start: str
    hours: tuple[str, ...]
    members: int
    written: int
    seconds: float


def forecast(
    checkpoint: str | os.PathLike[str],
    analysis: str | os.PathLike[str],
    time: str | np.datetime64,
    hours: int,
    out: str | os.PathLike[str],
    *,
    settings: PosteriorSettings | None = None,
    seed: int = 0,
    device: str = "cpu",
    threads: int = 1,
    workers: int = 0,
    ray_address: str | None = None,
    insecure: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    yes: bool = False,
) -> ForecastSummary:
    """Forecast ``hours`` hours from the analysis window ``time`` of ``analysis`` into ``out``.

    ``workers``: Ray actors that sample every segment (``threads`` torch
    threads each; one pool for the whole forecast, each actor reading its
    members' first states from the store); 0: in this process with
    ``threads``. ``ray_address``, ``insecure``: as ``genda assimilate``'s.
    ``yes``: confirm a store larger than :data:`genda.budget.CONFIRM_BYTES`.

    Raises:
        InvalidValueError: not a trajectory prior, ``hours < 1``, ``out`` is the
            analysis store, the analysis window is missing, not finalised or
            of another grid (:func:`~genda.orchestration.trajectory_window.check_condition`),
            or the forecast's hours would not fit on the disk or are large and
            unconfirmed (:func:`~genda.budget.check_output_size`).
    """
    start = as_datetime64(time)
    if int(hours) < 1:
        raise InvalidValueError(f"a forecast needs at least one hour, not {hours}")
    if int(workers) < 0:
        raise InvalidValueError(f"workers must be >= 0 (0: in this process), not {workers}")
    if Path(out).resolve() == Path(analysis).resolve():
        raise InvalidValueError(
            "a forecast goes to its own store: the analysis store's later hours belong to the "
            "analyses still to come"
        )
    settings = settings or PosteriorSettings()
    prior = load_checkpoint(checkpoint, device=device)
    if not is_trajectory(prior.grid):
        raise InvalidValueError(
            "a forecast runs a trajectory prior on from the analysis (genda train --states K); "
            f"{checkpoint} models one instant"
        )
    try:
        members = EnsembleStore.open(analysis).n_members
    except (EnsembleStoreError, MissingInputError) as error:
        raise InvalidValueError(f"a forecast starts from an analysis store: {error}") from None
    check_condition(analysis, prior, start, members, forecast=True)
    check_store_output(out, overwrite)
    if workers > 0:  # the cluster must answer, or be allowed, before the store is touched
        check_cluster(ray_address_of(ray_address), insecure=insecure)
    states = trajectory_states(prior.grid)
    segments = math.ceil(int(hours) / (states - 1))
    hour_bytes = members * math.prod(state_grid(prior.grid).shape) * 4  # float32 members
    check_output_size(
        segments * (states - 1) * hour_bytes,
        out,
        f"{segments * (states - 1)} forecast hours of {members} members "
        f"({human_bytes(hour_bytes)} an hour)",
        yes=yes,
    )
    store = EnsembleStore.open_or_create(
        out,
        state_grid(prior.grid),
        members,
        {"title": "genda ensemble forecast", "forecast_from": iso(start)},
        overwrite=overwrite,
    )
    cpus = workers * threads if device == "cpu" else None
    with ray_session(ray_address, num_cpus=cpus, insecure=insecure) if workers else nullcontext():
        pool = (
            ActorPool.start(WorkerSpec(str(prior.path), device, threads), workers)
            if workers
            else None
        )
        try:
            written, seconds, times = _run_segments(
                store,
                prior,
                analysis,
                start,
                segments,
                settings,
                seed,
                pool,
                threads,
                device,
                progress,
            )
        finally:
            if pool is not None:
                pool.shutdown()
    return ForecastSummary(
        str(store.path),
        str(Path(analysis).resolve()),
        iso(start),
        tuple(times),
        members,
        written,
        seconds,
    )


def _run_segments(
    store: EnsembleStore,
    prior: LoadedPrior,
    analysis: str | os.PathLike[str],
    start: np.datetime64,
    segments: int,
    settings: PosteriorSettings,
    seed: int,
    pool: ActorPool | None,
    threads: int,
    device: str,
    progress: bool,
) -> tuple[int, float, list[str]]:
    """Sample the forecast's segments in order: ``(members written, seconds, valid times)``.

    On the actors of ``pool``, or in this process without one.
    """
    states = trajectory_states(prior.grid)
    generator = None if pool else MemberGenerator(str(prior.path), device, threads, prior=prior)
    written, seconds, times = 0, 0.0, []
    for segment in range(segments):
        begin = start + segment * (states - 1) * HOUR
        provenance = trajectory_provenance(
            window_provenance(prior, None, settings, seed, begin, 0.0), prior, begin, True
        )
        provenance["forecast"] = {
            "from": iso(start),
            "analysis": str(Path(analysis).resolve()),
            "segment": segment,
        }
        job = trajectory_job(
            store,
            prior,
            begin,
            seed,
            settings,
            None,
            provenance,
            True,
            source=str(Path(analysis).resolve()) if segment == 0 else None,
            job_seed=stable_seed("forecast", int(seed), iso(begin)),
        )
        report = complete_window(job, generator=generator, pool=pool, progress=progress)
        written += report.run.written
        seconds += report.run.seconds
        times.extend(iso(t) for t in job.times)
    return written, seconds, times
