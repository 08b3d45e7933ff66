"""Hand a window's missing members to worker actors; survive losing actors.

The driver keeps one task in flight per actor (a task is whole shards of
members, :func:`genda.distributed.work.writer_tasks`) and hands out the next as
each finishes, so faster workers take more. When an actor dies mid-task its
task goes back to the front of the queue and a replacement actor is started;
the replacement skips the blocks the dead actor had already written and
regenerates the rest bit-identically (each member's noise comes from its own
seed, each block's composition from the member indices). A task that keeps
killing its actors (``max_retries`` times) stops the window with an error;
what was written stays, and a rerun completes it.

An exception raised inside a task (bad data, a NaN field) is not a lost
actor: it is not retried, and the driver raises it.
"""

from __future__ import annotations

import time as clock
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from genda.distributed.actors import WorkerSpec, start_step_counter
from genda.distributed.work import TaskReport, WindowJob, member_blocks
from genda.errors import GendaError
from genda.progress import sampling_bar

if TYPE_CHECKING:
    from ray.exceptions import RayTaskError


STEP_POLL_SECONDS = 0.5
"""How often the driver reads the actors' step count while it waits for tasks."""


class EnsembleRunError(GendaError, RuntimeError):
    """A window could not be completed (a task lost its actor too often)."""


@dataclass
class ActorPool:
    """Worker actors of one kind, replaced when they die.

    Attributes:
        spec: how to start a replacement.
        actors: the live actor handles, one slot each.
    """

    spec: WorkerSpec
    actors: list[Any] = field(default_factory=list)

    @classmethod
    def start(cls, spec: WorkerSpec, count: int) -> ActorPool:
        return cls(spec, spec.start_many(count))

    def replace(self, slot: int) -> None:
        """Kill what is left of the actor in ``slot`` and start a fresh one there."""
        import ray

        try:
            ray.kill(self.actors[slot])
        except Exception:  # already gone: nothing to kill
            pass
        self.actors[slot] = self.spec.start()

    def shutdown(self) -> None:
        import ray

        for actor in self.actors:
            try:
                ray.kill(actor)
            except Exception:
                pass
        self.actors.clear()


@dataclass
class RunReport:
    """What running one window's tasks took.

    Attributes:
        members: members handed out.
        written: members sampled and written (the others were complete already).
        tasks: tasks completed.
        failures_retried: tasks whose actor died and that were handed out again.
        seconds: wall time of the run.
        by_worker: members written per worker (``host:pid``).
        peak_memory_mib: the largest peak a worker reported
            (:func:`genda.distributed.work.peak_memory_mib`).
    """

    members: int = 0
    written: int = 0
    tasks: int = 0
    failures_retried: int = 0
    seconds: float = 0.0
    by_worker: dict[str, int] = field(default_factory=dict)
    peak_memory_mib: float = 0.0

    def add(self, done: TaskReport) -> None:
        """Count a finished task."""
        self.tasks += 1
        self.written += len(done.written)
        self.by_worker[done.worker] = self.by_worker.get(done.worker, 0) + len(done.written)
        self.peak_memory_mib = max(self.peak_memory_mib, done.peak_memory_mib)

    @property
    def members_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else float("nan")


def run_tasks(
    pool: ActorPool,
    job: WindowJob,
    tasks: Sequence[Sequence[int]],
    *,
    max_retries: int = 3,
    progress: bool = True,
    on_report: Callable[[TaskReport], None] | None = None,
) -> RunReport:
    """Run ``tasks`` (lists of member indices) of ``job`` on the pool's actors.

    Args:
        pool: live actors; dead ones are replaced in place.
        job: the window; put in Ray's object store once for all tasks.
        tasks: disjoint member lists, each for one writer.
        max_retries: times one task may lose its actor before the run stops.
        progress: a progress bar over the actors' sampler steps (batches x
            steps; on a terminal only), with the members written beside it.
        on_report: called in the driver after each finished task.

    Raises:
        EnsembleRunError: a task lost its actor more than ``max_retries`` times.
        Exception: what a task raised (the cause, not Ray's wrapper).
    """
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    started = clock.perf_counter()
    report = RunReport(members=sum(len(t) for t in tasks))
    if not tasks:
        return report
    job_ref = ray.put(job)
    queue: deque[tuple[int, list[int]]] = deque((i, list(t)) for i, t in enumerate(tasks))
    attempts = [0] * len(tasks)
    in_flight: dict[Any, tuple[int, int, list[int]]] = {}  # ref -> (slot, task id, members)
    size, per_shard = job.settings.batch_size, job.store.members_per_shard
    batches = [len(member_blocks(t, size, per_shard)) for t in tasks]
    bar = sampling_bar(sum(batches), job.settings.steps, progress)
    # The actors count their sampler steps on a tiny actor that the bar reads
    # while the driver waits: a task (whole shards of batches) takes minutes.
    counter = None if bar.disable else start_step_counter()

    def hand_out(slot: int) -> None:
        if queue:
            task_id, members = queue.popleft()
            ref = pool.actors[slot].generate.remote(job_ref, members, counter)
            in_flight[ref] = (slot, task_id, members)

    with bar:
        try:
            for slot in range(len(pool.actors)):
                hand_out(slot)
            while in_flight:
                wait = None if counter is None else STEP_POLL_SECONDS
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=wait)
                if counter is not None:
                    bar.update(ray.get(counter.total.remote()) - bar.n)
                if not ready:
                    continue
                (ref,) = ready
                slot, task_id, members = in_flight.pop(ref)
                try:
                    done: TaskReport = ray.get(ref)
                except RayActorError as lost:
                    attempts[task_id] += 1
                    if attempts[task_id] > max_retries:
                        raise _lost_too_often(members, attempts[task_id], lost) from lost
                    report.failures_retried += 1
                    # the task runs again: its steps are counted again
                    bar.total += batches[task_id] * job.settings.steps
                    _show_counts(bar, report)
                    pool.replace(slot)
                    queue.appendleft((task_id, members))
                except RayTaskError as failed:
                    raise _task_cause(failed) from None
                else:
                    report.add(done)
                    _show_counts(bar, report)
                    if on_report is not None:
                        on_report(done)
                hand_out(slot)
        finally:
            # Stopping early (an error above): the other tasks' members would
            # be written for nothing. Their actors are killed by the caller.
            _cancel(in_flight)
            if counter is not None:
                ray.kill(counter)
    report.seconds = clock.perf_counter() - started
    return report


def _show_counts(bar: tqdm, report: RunReport) -> None:
    """Members written (and tasks retried, if any) beside the bar of sampler steps."""
    counts = {"members": f"{report.written}/{report.members}"}
    if report.failures_retried:
        counts["retried"] = str(report.failures_retried)
    bar.set_postfix(counts)


def _lost_too_often(members: Sequence[int], attempts: int, lost: Exception) -> EnsembleRunError:
    """The error that stops a run: the task of ``members`` lost its worker ``attempts`` times."""
    return EnsembleRunError(
        f"members {members[0]}..{members[-1]} lost their worker "
        f"{attempts} times; last: {lost}. Members written so far "
        "are kept: run the window again to complete it"
    )


def _task_cause(failed: RayTaskError) -> BaseException:
    """What to raise for an exception raised inside a task (a ``RayTaskError``)."""
    if isinstance(failed.cause, GendaError):
        # an error of the input, raised in a worker: its sentence, not the remote traceback
        return failed.cause
    return failed.as_instanceof_cause()


def _cancel(in_flight: Iterable[Any]) -> None:
    """Ask Ray to cancel the tasks still in flight, if any (best effort)."""
    import ray

    for ref in in_flight:
        try:
            ray.cancel(ref, force=False)
        except Exception:  # already finished or its actor is gone
            pass


__all__ = ["ActorPool", "EnsembleRunError", "RunReport", "run_tasks"]
