"""Complete one window of an ensemble store: in this process, or on Ray actors.

``complete_window`` re-checks the members an earlier run flagged complete
(a damaged one loses its flag), reads which members of the window are
missing, makes exactly those (a rerun after a crash fills the gaps and
nothing else), and writes the window's statistics once every member is in.
With ``workers=0`` the members are made in this process by the caller's prior; otherwise by
``workers`` Ray actors (:mod:`genda.distributed.actors`) on the cluster of
:func:`genda.distributed.cluster.ray_session`, or on a pool the caller
already holds.
"""

from __future__ import annotations

import dataclasses
import time as clock
from collections.abc import Callable
from dataclasses import dataclass, field

from genda.distributed.actors import WorkerSpec
from genda.distributed.cluster import ray_session
from genda.distributed.scheduler import ActorPool, RunReport, run_tasks
from genda.distributed.work import (
    MemberGenerator,
    TaskReport,
    WindowJob,
    member_blocks,
    writer_tasks,
)
from genda.errors import InvalidValueError
from genda.progress import sampling_bar


@dataclass
class WindowReport:
    """What completing a window did.

    Attributes:
        run: members written, tasks, retries, wall time (:class:`RunReport`).
        workers: actors used (0: in this process).
        batch_size: members per denoiser batch (probed on GPUs).
        already_complete: members that were in the store before this run.
        cluster: the Ray cluster's address (``""`` in this process).
        started_cluster: whether this run started (and stopped) that cluster.
        damaged: members an earlier run had flagged complete whose data were
            found damaged (a file removed or undecodable): unflagged and made again.
    """

    run: RunReport
    workers: int
    batch_size: int
    already_complete: int
    cluster: str = ""
    started_cluster: bool = False
    damaged: list[int] = field(default_factory=list)


def complete_window(
    job: WindowJob,
    *,
    workers: int = 0,
    spec: WorkerSpec | None = None,
    generator: MemberGenerator | None = None,
    pool: ActorPool | None = None,
    address: str | None = None,
    auto_batch: bool = False,
    progress: bool = True,
    on_report: Callable[[TaskReport], None] | None = None,
    max_retries: int = 3,
) -> WindowReport:
    """Make the window's missing members and finalise it.

    Members flagged complete are re-checked first (``EnsembleStore.recheck``):
    damaged ones are unflagged and regenerated, bit for bit.

    Args:
        job: the window (registered in ``job.store``).
        workers: Ray actors to start; 0 samples in this process with ``generator``.
        spec: how to start actors (needed for ``workers > 0`` without ``pool``).
        generator: the in-process prior (``workers == 0``).
        pool: live actors to use instead of starting ``workers`` new ones
            (they are left running for the caller).
        address: a Ray cluster (``RAY_ADDRESS`` when ``None``); without one
            and without a running Ray, a local cluster is started and stopped.
        auto_batch: probe each actor's device for the batch size (GPUs) and use
            the smallest; otherwise ``job.settings.batch_size``.
        progress: progress bar over sampler steps (batches x steps), on a terminal.
        on_report: called in the driver after each finished task.
        max_retries: times one task may lose its actor.
    """
    store = job.store
    # Members flagged complete by an earlier run are read back once: one whose
    # file was removed or damaged since loses its flag (with a warning) and is
    # made again below, instead of staying NaN or failing every read.
    damaged = sorted({m for when in job.times for m in store.recheck(when)})
    missing = sorted({m for when in job.times for m in store.missing(when)})
    result = WindowReport(RunReport(), 0, job.settings.batch_size, store.n_members - len(missing))
    result.damaged = damaged
    if not missing:  # a finished window: no workers to start
        pass
    elif workers == 0 and pool is None:
        if generator is None:
            raise ValueError("workers=0 samples in this process and needs a MemberGenerator")
        if auto_batch:
            job = _with_batch_size(job, generator.probe_batch_size(job))
        result.run = _run_here(generator, job, missing, progress, on_report)
    elif pool is not None:
        job, result.run = _run_on(pool, job, missing, auto_batch, progress, on_report, max_retries)
        result.workers = len(pool.actors)
    else:
        job, result = _run_on_new_actors(
            job,
            missing,
            result,
            workers,
            spec,
            address,
            auto_batch,
            progress,
            on_report,
            max_retries,
        )
    result.batch_size = job.settings.batch_size
    for when in job.times:
        store.finalize(when)
    return result


def _run_on_new_actors(
    job: WindowJob,
    missing: list[int],
    result: WindowReport,
    workers: int,
    spec: WorkerSpec | None,
    address: str | None,
    auto_batch: bool,
    progress: bool,
    on_report: Callable[[TaskReport], None] | None,
    max_retries: int,
) -> tuple[WindowJob, WindowReport]:
    """Start ``workers`` actors on the session's cluster, run the window, stop them."""
    if spec is None:
        raise ValueError("workers > 0 needs a WorkerSpec to start actors")
    if workers < 1:
        raise InvalidValueError(f"workers must be >= 0, got {workers}")
    # A local cluster gets exactly the CPUs the actors reserve: more would
    # only oversubscribe a small machine, fewer would leave actors pending.
    cpu = spec.device == "cpu"
    needed = workers * spec.threads if cpu else workers
    with ray_session(address, num_cpus=needed if cpu else None) as session:
        have = session.cpus if cpu else session.gpus
        if needed > have:
            raise InvalidValueError(
                f"{workers} {spec.device} workers need {needed:g} {'CPUs' if cpu else 'GPUs'}; "
                f"the Ray cluster at {session.address} has {have:g}"
            )
        started = ActorPool.start(spec, workers)
        try:
            job, result.run = _run_on(
                started, job, missing, auto_batch, progress, on_report, max_retries
            )
        finally:
            started.shutdown()
    result.workers, result.cluster, result.started_cluster = (
        workers,
        session.address,
        session.started,
    )
    return job, result


def _with_batch_size(job: WindowJob, batch_size: int) -> WindowJob:
    settings = dataclasses.replace(job.settings, batch_size=max(1, int(batch_size)))
    return dataclasses.replace(job, settings=settings)


def _run_here(
    generator: MemberGenerator,
    job: WindowJob,
    missing: list[int],
    progress: bool,
    on_report: Callable[[TaskReport], None] | None,
) -> RunReport:
    started = clock.perf_counter()
    report = RunReport(members=len(missing))
    size, per_shard = job.settings.batch_size, job.store.members_per_shard
    tasks = writer_tasks(missing, size, per_shard)
    # The bar moves per sampler step: a batch of many steps is minutes on a CPU.
    batches = len(member_blocks(missing, size, per_shard))
    with sampling_bar(batches, job.settings.steps, progress) as bar:
        for task in tasks:
            done = generator.generate(
                job, task, worker="driver", on_step=None if bar.disable else bar.update
            )
            report.add(done)
            bar.set_postfix(members=f"{report.written}/{len(missing)}")
            if on_report is not None:
                on_report(done)
    report.seconds = clock.perf_counter() - started
    return report


def _run_on(
    pool: ActorPool,
    job: WindowJob,
    missing: list[int],
    auto_batch: bool,
    progress: bool,
    on_report: Callable[[TaskReport], None] | None,
    max_retries: int,
) -> tuple[WindowJob, RunReport]:
    import ray

    if auto_batch and missing:
        # CPU actors may share one host's memory: each plans for its share of it
        share = len(pool.actors)
        sizes = ray.get([actor.probe_batch_size.remote(job, share) for actor in pool.actors])
        job = _with_batch_size(job, min(sizes))
    tasks = writer_tasks(missing, job.settings.batch_size, job.store.members_per_shard)
    report = run_tasks(
        pool, job, tasks, max_retries=max_retries, progress=progress, on_report=on_report
    )
    return job, report


__all__ = ["WindowReport", "complete_window"]
