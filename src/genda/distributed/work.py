"""The unit of ensemble work: which members of which window, and who makes them.

A :class:`WindowJob` says everything that determines a window's members (the
store, the window, its seed, the sampling settings, the validated
observations); it is small and picklable, so the driver hands it to every
worker once. A :class:`MemberGenerator` holds a loaded prior on one device
and turns ``(job, members)`` into members written straight into the store;
the in-process path and every Ray actor (:mod:`genda.distributed.actors`) run
this same code.

Batches are fixed by the member indices alone (:func:`member_blocks`): a
member's batch-mates depend on the batch size and the store's shard size, not
on which worker runs it, in which order, or whether it is a retry. Batched
network arithmetic rounds differently for different batch compositions, so
this is what makes a regenerated member bit-identical to the lost one.
"""

from __future__ import annotations

import resource
import time as clock
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from genda.assimilation.conditioning import (
    ConditionedGuidance,
    FixedStates,
    fixed_states,
    leading_mask,
)
from genda.assimilation.gaussian_tweedie import clear_observation_spaces
from genda.assimilation.posterior import (
    PosteriorSettings,
    likelihood_for,
    posterior_denoiser,
    sample_members,
    state_hours,
)
from genda.assimilation.start_update import StartUpdate, update_start
from genda.errors import InvalidValueError, RunFailedError
from genda.grid import Grid
from genda.models.checkpoint import LoadedPrior, load_checkpoint
from genda.models.long_window import long_window_prior
from genda.storage.ensemble_store import EnsembleStore
from genda.threads import cpu_threads
from genda.trajectory import HOUR, split_states, state_grid, trajectory_states


@dataclass(frozen=True)
class TrajectoryWindow:
    """A window of a trajectory prior: ``states`` hourly states from ``start``.

    Attributes:
        start: the time of the first state.
        states: ``K``.
        condition: the store's window whose members fix the first state
            (filtering: the previous window's last state), or ``None`` (a cold start).
        source: the store ``condition`` is in, when not the job's own (a
            forecast's first segment reads the analysis it starts from).
        writes_first: a cold start writes its first hour too, unless that hour
            belongs to another window (a cycle's cold start after a failed window).
        start_update: update the members' starts by the window's observations
            before fixing them (:mod:`genda.assimilation.start_update`); ``None``: fix
            them as they are.
    """

    start: np.datetime64
    states: int
    condition: np.datetime64 | None = None
    source: str | None = None
    writes_first: bool = True
    start_update: StartUpdate | None = None

    @property
    def times(self) -> tuple[np.datetime64, ...]:
        """The hours this window writes: all of them, or those after its first."""
        first = 0 if self.condition is None and self.writes_first else 1
        return tuple(self.start + k * HOUR for k in range(first, self.states))


@dataclass(frozen=True)
class WindowJob:
    """What determines the members of one window.

    Attributes:
        store: the ensemble store the members go to (the window is registered).
        time: the window's time.
        seed: the window seed (:func:`genda.assimilation.posterior.window_seed`).
        settings: method, steps, sampler, batch size.
        observations: the validated table; ``None`` samples the prior.
        observations_fingerprint: identity of the table (``""`` without one);
            a worker rebuilds its guided denoiser only when this changes.
        provenance: the window's provenance as registered; members are written
            only while the window still has it (``None``: not checked).
        trajectory: for a trajectory prior, its window (``time`` is then the last
            hour it writes, which is written last: a member complete there is
            complete at every hour).
    """

    store: EnsembleStore
    time: np.datetime64
    seed: int
    settings: PosteriorSettings
    observations: pd.DataFrame | None = field(default=None, repr=False)
    observations_fingerprint: str = ""
    provenance: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)
    trajectory: TrajectoryWindow | None = None

    @property
    def times(self) -> tuple[np.datetime64, ...]:
        """The store windows this job writes: ``(time,)``, or a trajectory's hours."""
        return (self.time,) if self.trajectory is None else self.trajectory.times

    @property
    def state_time(self) -> np.datetime64:
        """The time the prior's states start at: ``time``, or a trajectory's first hour."""
        return self.time if self.trajectory is None else self.trajectory.start

    @property
    def key(self) -> tuple[Any, ...]:
        """What the guided denoiser depends on (the time: a prior's mean may follow the hour;
        a trajectory window's length and what it is conditioned on)."""
        return (
            str(self.state_time),
            self.observations_fingerprint,
            self.settings.method,
            self.settings.guidance_options(),
            self.trajectory,
        )


def task_span(batch_size: int, members_per_shard: int) -> int:
    """Consecutive member indices per writer task: whole shards, at least one batch.

    ``members_per_shard * ceil(batch_size / members_per_shard)``: a task never
    shares a shard with another (zarr-python issue 3682) and keeps a worker busy.
    """
    if batch_size < 1 or members_per_shard < 1:
        raise InvalidValueError(
            f"batch_size and members_per_shard must be >= 1, got {batch_size}, {members_per_shard}"
        )
    return members_per_shard * -(-batch_size // members_per_shard)


def writer_tasks(
    members: Sequence[int], batch_size: int, members_per_shard: int
) -> list[list[int]]:
    """Split members into tasks of :func:`task_span` aligned indices, each for one writer, ascending."""
    span = task_span(batch_size, members_per_shard)
    tasks: dict[int, list[int]] = {}
    for m in sorted({int(m) for m in members}):
        tasks.setdefault(m // span, []).append(m)
    return [tasks[k] for k in sorted(tasks)]


def member_blocks(
    members: Sequence[int], batch_size: int, members_per_shard: int
) -> list[list[int]]:
    """Split members into the batches they are always sampled in, ascending.

    A block holds the given members that share ``m // batch_size`` and the
    task (:func:`task_span`): aligned to absolute indices, so the block of a
    member is the same in a first run, a retry and a resumed run, and never
    spans two writers.
    """
    span = task_span(batch_size, members_per_shard)
    blocks: dict[tuple[int, int], list[int]] = {}
    for m in sorted({int(m) for m in members}):
        blocks.setdefault((m // span, m // batch_size), []).append(m)
    return [blocks[k] for k in sorted(blocks)]


def full_block(member: int, batch_size: int, members_per_shard: int, n_members: int) -> list[int]:
    """Every member of the ensemble that shares ``member``'s block (:func:`member_blocks`).

    The batch ``member`` is sampled in when its whole task is missing, as in a first run.
    """
    span = task_span(batch_size, members_per_shard)
    low = max(member // span * span, member // batch_size * batch_size)
    high = min((member // span + 1) * span, (member // batch_size + 1) * batch_size, n_members)
    return list(range(low, high))


@dataclass
class TaskReport:
    """What one task did.

    Attributes:
        members: the task's members.
        written: those sampled and written (the others were complete already).
        seconds: wall time of the task.
        worker: ``host:pid`` of the worker.
        peak_memory_mib: the worker's peak so far: CUDA memory allocated by
            torch on a GPU, the process's peak resident set on a CPU.
    """

    members: list[int]
    written: list[int]
    seconds: float
    worker: str = ""
    peak_memory_mib: float = 0.0


# What no atmosphere can hold, in m s-1 and K (exclusive bounds). Members are held to
# these, not to the plausible ranges of observations
# (genda.observations.table.PHYSICAL_RANGES, 400 m/s and 80-1000 K): a member of a
# run with too few sampler steps is poor but not impossible (2 Heun steps with a
# barely trained prior reach 465 m/s and 30 K), and judging its quality is the job of
# the fit and the scores. Beyond 1000 m/s the flow would be over three times the speed
# of sound of the mesopause; no temperature is at or below 0 K, and none in the
# atmosphere above 3000 K (the exosphere stays below ~2000 K in the strongest storms).
MEMBER_LIMITS: dict[str, tuple[float, float]] = {
    "u": (-1000.0, 1000.0),
    "v": (-1000.0, 1000.0),
    "T": (0.0, 3000.0),
}
"""Exclusive ``(low, high)`` bounds of a written member per variable (m s-1 or K)."""


class ImplausibleMemberError(RunFailedError):
    """Sampled members hold NaN, infinite or physically impossible values; none was written."""


def implausible_members(
    fields: np.ndarray, grid: Grid, members: Sequence[int]
) -> dict[int, list[str]]:
    """What is impossible in each member of a batch: ``{member: ["T min -100 K <= 0", ...]}``.

    Args:
        fields: ``(B, V, L, H, W)`` physical fields, variables in ``grid`` order.
        grid: their grid.
        members: ``(B,)`` member indices of the batch, in order.

    Returns:
        The members with NaN or infinite values, or values outside
        :data:`MEMBER_LIMITS` (``T`` above 0 K, winds below 1000 m/s), each with
        what is wrong; empty when every member is possible.
    """
    found: dict[int, list[str]] = {}
    for b, member in enumerate(members):
        for v, name in enumerate(grid.variables):
            values = fields[b, v]
            finite = np.isfinite(values)
            if not finite.all():
                found.setdefault(int(member), []).append(
                    f"{name} has {int(np.sum(~finite))} NaN or infinite values"
                )
                values = values[finite]
                if values.size == 0:
                    continue
            if name not in MEMBER_LIMITS:
                continue
            low, high = MEMBER_LIMITS[name]
            unit = "K" if name == "T" else "m/s"
            if values.min() <= low:
                found.setdefault(int(member), []).append(
                    f"{name} min {values.min():.4g} {unit} <= {low:g}"
                )
            if values.max() >= high:
                found.setdefault(int(member), []).append(
                    f"{name} max {values.max():.4g} {unit} >= {high:g}"
                )
    return found


def check_members(
    fields: np.ndarray, grid: Grid, members: Sequence[int], time: object, guided: bool = True
) -> None:
    """Raise :class:`ImplausibleMemberError` if any member of the batch is impossible.

    ``fields``: ``(B, V, L, H, W)`` physical fields of ``members``; ``time``: the
    window, for the message; ``guided``: the members were conditioned on
    observations (the message then points at them).
    """
    found = implausible_members(fields, grid, members)
    if not found:
        return
    shown = "; ".join(f"member {m}: {', '.join(what)}" for m, what in list(found.items())[:5])
    more = f" (and {len(found) - 5} more members)" if len(found) > 5 else ""
    raise ImplausibleMemberError(
        f"window {np.datetime64(time, 's')}: members {sorted(found)} came out impossible "
        f"({shown}{more}); they were not written. "
        + (
            "The observations may be inconsistent with the prior: look for gross errors "
            "(the background check, outlier_k; keep_outliers off) and for wrong units or "
            "too small errors (sigma) in the table"
            if guided
            else "The prior itself produced them: check the checkpoint and the sampler settings"
        )
    )


def peak_memory_mib(device: str) -> float:
    """Peak memory of this worker: torch's CUDA peak on a GPU, the process's peak RSS on a CPU."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class MemberGenerator:
    """A prior loaded once on one device, producing members of any window into its store.

    Args:
        checkpoint: checkpoint directory or shipped name.
        device: torch device of this worker (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        threads: torch intra-op threads while sampling on the CPU (``None``: leave as is).
        layers_per_batch: ``layer2d`` priors: layers per network call (the memory knob).
        prior: an already loaded prior (skips loading ``checkpoint``).
    """

    def __init__(
        self,
        checkpoint: str,
        device: str = "cpu",
        threads: int | None = None,
        layers_per_batch: int | None = None,
        prior: LoadedPrior | None = None,
    ) -> None:
        self.device = device
        self.threads = threads
        self.prior = prior if prior is not None else load_checkpoint(checkpoint, device=device)
        if layers_per_batch is not None:
            set_layers_per_batch(self.prior, layers_per_batch)
        self._denoiser_key: tuple[Any, ...] | None = None
        self._denoiser: Any = None
        self._conditioned_key: tuple[Any, ...] | None = None
        self._conditioned: Any = None
        self._fixed_key: tuple[Any, ...] | None = None  # what _fixed was made from
        self._fixed: FixedStates | None = None
        self._long: LoadedPrior | None = None

    def prior_for(self, job: WindowJob) -> LoadedPrior:
        """The prior of the job's window: the loaded one, or composed for a longer window."""
        window = job.trajectory
        if window is None or window.states == trajectory_states(self.prior.grid):
            return self.prior
        if self._long is None or trajectory_states(self._long.grid) != window.states:
            self._long = long_window_prior(self.prior, window.states)
        return self._long

    def denoiser(self, job: WindowJob) -> Any:
        """The job's (guided) denoiser, built once per observation set and method."""
        if self._denoiser_key != job.key:
            self._denoiser = posterior_denoiser(
                self.prior_for(job), job.observations, job.settings, self.device, job.state_time
            )
            self._denoiser_key = job.key
        return self._denoiser

    def batch_denoiser(self, job: WindowJob, batch: Sequence[int]) -> Any:
        """The denoiser of one batch: the job's, or with the batch's first states fixed.

        A filtering window reads the members it is conditioned on from the
        store itself, so that they never pass through the driver.
        """
        window = job.trajectory
        if window is None or window.condition is None:
            return self.denoiser(job)
        prior = self.prior_for(job)
        fixed = self._fixed_states(job, prior, batch)
        return self._guidance(job, prior).for_batch(fixed, batch)

    def _guidance(self, job: WindowJob, prior: LoadedPrior) -> ConditionedGuidance:
        """The window's guidance with its first states fixed, built once per window."""
        window = job.trajectory
        assert window is not None
        if self._conditioned_key != job.key:
            guided = job.observations is not None
            settings = job.settings.for_prior(prior, guided=guided)
            likelihood = (
                likelihood_for(prior, job.observations, self.device, window.start)
                if guided
                else None
            )
            self._conditioned = ConditionedGuidance(
                prior,
                likelihood,
                leading_mask(prior),
                settings.method,
                window.start,
                **settings.guidance_options(),
            )
            self._conditioned_key = job.key
        return self._conditioned

    def _fixed_states(
        self, job: WindowJob, prior: LoadedPrior, batch: Sequence[int]
    ) -> FixedStates:
        """The first states of ``batch`` from the conditioning window, read from the store.

        With a start update every member of that window is read once per job
        and updated together (the update is the ensemble's); the members then do
        not depend on which worker reads them or in which batch.
        """
        window = job.trajectory
        assert window is not None and window.condition is not None
        store = job.store if window.source is None else EnsembleStore.open(window.source)
        hours = state_hours(prior, window.start, 1)
        hour = None if hours is None else float(hours[0])
        if window.start_update is None or job.observations is None:
            previous = store.read_members(window.condition, batch)
            return fixed_states(prior, torch.from_numpy(previous), batch, hour)
        # Kept per window on a long-lived actor; the key names the store and what
        # made the members conditioned on, so another store is never served from it.
        key = (
            job.key,
            job.seed,
            str(store.path),
            store.n_members,
            repr(store.provenance(window.condition)),
        )
        if self._fixed_key == key and self._fixed is not None:
            return self._fixed
        members = list(range(store.n_members))
        previous = store.read_members(window.condition, members)
        fixed = update_start(
            self._guidance(job, prior),
            previous,
            members,
            job.observations,
            window.start_update,
            job.seed,
            hour,
            window.start,
        )
        self._fixed_key, self._fixed = key, fixed
        return fixed

    def generate(
        self,
        job: WindowJob,
        members: Sequence[int],
        worker: str = "",
        on_step: Callable[[], None] | None = None,
    ) -> TaskReport:
        """Sample the members of ``members`` not yet complete, block by block, into the store.

        Each block is written (and flagged complete) as soon as it is sampled,
        so an interruption loses at most the block in progress. The caller
        gives one writer whole shards (:func:`writer_tasks`). ``on_step`` is
        called after every sampler step of every block (progress).

        Raises:
            ImplausibleMemberError: a block came out with NaN or impossible values
                (:func:`check_members`); nothing of that block is written.
        """
        started = clock.perf_counter()
        store = job.store
        complete = np.logical_and.reduce([store.complete(when) for when in job.times])
        written: list[int] = []
        batch_size, per_shard = job.settings.batch_size, store.members_per_shard
        with cpu_threads(self.threads, self.device):
            for block in member_blocks(members, batch_size, per_shard):
                todo = [m for m in block if not complete[m]]
                if not todo:
                    continue
                # The whole batch of a first run is sampled again, so that a
                # member regenerated alone (a repaired or lost one) keeps its
                # batch-mates and comes out bit-identical; only ``todo`` is written.
                batch = full_block(block[0], batch_size, per_shard, store.n_members)
                fields = sample_members(
                    self.prior_for(job),
                    self.batch_denoiser(job, batch),
                    batch,
                    job.seed,
                    job.settings,
                    guided=job.observations is not None,
                    device=self.device,
                    time=job.state_time,
                    on_step=on_step,
                )
                values = fields.numpy()[[batch.index(m) for m in todo]]
                self._write(job, todo, values)
                written.extend(todo)
        elapsed = clock.perf_counter() - started
        return TaskReport(list(members), written, elapsed, worker, peak_memory_mib(self.device))

    def _write(self, job: WindowJob, members: list[int], values: np.ndarray) -> None:
        """Write a block's members at each of the job's times, the last one last.

        A member with NaN or impossible values must never be flagged complete:
        the block is refused before anything of it is written.
        """
        guided = job.observations is not None
        grid = state_grid(self.prior.grid)
        window = job.trajectory
        if window is None:
            per_time = [(job.time, values)]
        else:
            states = split_states(torch.from_numpy(values), window.states).numpy()
            first = window.states - len(window.times)
            per_time = [(t, states[:, first + k]) for k, t in enumerate(window.times)]
        for when, fields in per_time:
            check_members(fields, grid, members, when, guided)
        for when, fields in per_time:
            # An hour a member already has is left as it is: that hour may be
            # finalised while another was repaired, and the member comes out the
            # same (bit for bit with the same batch size and device).
            done = job.store.complete(when) if len(per_time) > 1 else None
            keep = [i for i, m in enumerate(members) if done is None or not done[m]]
            if keep:
                chosen = [members[i] for i in keep]
                job.store.write_members(when, chosen, fields[keep], provenance=job.provenance)

    def probe_batch_size(
        self, job: WindowJob, memory_fraction: float = 0.8, largest: int = 256, share: int = 1
    ) -> int:
        """Members per batch for this device (``--batch-size auto``).

        The memory model of ``genda plan`` prices this prior's run with the
        job's settings and observations (:mod:`genda.planning.batch`) against
        ``memory_fraction`` of the memory available beyond the loaded weights.

        - On CUDA the model's batch is then confirmed: one guided denoiser call
          of that many members runs, and the batch is halved and bisected
          while a call runs out of memory or its peak exceeds the budget.
          Without a model of the run (SDA) the probe starts from ``largest``.
        - On a CPU the settings' batch is kept (its throughput is flat in the
          batch, and keeping it keeps a rerun's batch-mates, so its members
          bit-identical), unless the model says it does not fit the available
          memory: then the largest batch that does.

        ``share``: workers that sample on this host's memory at once (CPU): each
        plans for its share of the available memory.

        Raises:
            InvalidValueError: the model says not one member fits.
        """
        from genda.planning.batch import (
            available_host_bytes,
            confirm_batch,
            prior_batch,
            refuse,
        )

        device = torch.device(self.device)
        observations = None if job.observations is None else len(job.observations)
        if device.type == "cuda":
            # the previous window's guidance goes, and what the caching allocator holds
            # but does not use is free for this one
            self._denoiser, self._denoiser_key = None, None
            clear_observation_spaces()
            torch.cuda.empty_cache()
            free, _ = torch.cuda.mem_get_info(device)
            loaded = torch.cuda.memory_allocated(device)  # the weights, before the window
            free += torch.cuda.memory_reserved(device) - loaded
            budget = int(memory_fraction * free)
            where = f"{device} ({free / 2**30:.2f} GiB free)"
        else:
            host = available_host_bytes()
            if host is None:
                return job.settings.batch_size
            budget = int(memory_fraction * host / max(1, share))
            where = f"this machine ({host / 2**30:.2f} GiB available" + (
                f", shared by {share} workers)" if share > 1 else ")"
            )
        ceiling = largest if device.type == "cuda" else job.settings.batch_size
        plan = prior_batch(self.prior, job.settings, observations, budget, ceiling)
        if plan is not None and plan.batch == 0:
            refuse(plan, where)
        if device.type != "cuda":
            return ceiling if plan is None else plan.batch
        prior = self.prior_for(job)
        denoiser = self.denoiser(job)  # the window's guidance counts against the budget

        def fits(batch: int) -> bool:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            try:
                x = torch.randn(batch, *prior.state_shape, device=device)
                denoiser(x, torch.full((batch,), 1.0, device=device))
                torch.cuda.synchronize(device)
                del x
            except torch.OutOfMemoryError:
                return False
            except RuntimeError as error:  # cuBLAS and cuDNN report allocation failures so
                if "memory" not in str(error).lower() and "alloc" not in str(error).lower():
                    raise
                return False
            finally:
                torch.cuda.empty_cache()
            return torch.cuda.max_memory_allocated(device) - loaded <= budget

        batch = confirm_batch(largest if plan is None else plan.batch, fits)
        if batch == 0:
            raise InvalidValueError(f"not one posterior member fits {where}")
        return batch


def set_layers_per_batch(prior: LoadedPrior, layers_per_batch: int) -> None:
    """Set a ``layer2d`` prior's layers per network call; a clear error for other strategies."""
    if layers_per_batch < 1:
        raise InvalidValueError(f"layers_per_batch must be >= 1, got {layers_per_batch}")
    if not hasattr(prior.strategy, "layers_per_batch"):
        raise InvalidValueError(
            f"layers_per_batch applies to layer2d priors, not {prior.strategy.name}"
        )
    prior.strategy.layers_per_batch = layers_per_batch  # type: ignore[attr-defined]


__all__ = [
    "MEMBER_LIMITS",
    "ImplausibleMemberError",
    "MemberGenerator",
    "TaskReport",
    "WindowJob",
    "check_members",
    "implausible_members",
    "member_blocks",
    "peak_memory_mib",
    "set_layers_per_batch",
    "task_span",
    "writer_tasks",
]
