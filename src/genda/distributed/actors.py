"""Ray actors that keep a prior resident on one device each.

One :class:`EnsembleWorker` actor per GPU (``num_gpus=1``), or on CPUs a
configurable number of actors with a thread budget each (``num_cpus=threads``
and as many torch threads). An actor loads the checkpoint once, keeps the
guided denoiser of the current window, and writes the members it makes into
the store itself: fields never travel back through the driver, only a
:class:`~genda.distributed.work.TaskReport`.

Actors are created with ``max_restarts=0``: when one dies the driver sees it
(:class:`ray.exceptions.RayActorError`), counts it, starts a replacement and
hands the task out again (:mod:`genda.distributed.scheduler`). Ray's own restart
and retry would hide the failure from the window's summary.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from genda.distributed.work import MemberGenerator, TaskReport, WindowJob
from genda.errors import InvalidValueError


class EnsembleWorker:
    """The body of a worker actor (wrapped with ``ray.remote`` by :class:`WorkerSpec`)."""

    def __init__(
        self,
        checkpoint: str,
        device: str = "cpu",
        threads: int | None = None,
        layers_per_batch: int | None = None,
    ) -> None:
        if threads is not None and device.startswith("cpu"):
            import torch

            torch.set_num_threads(threads)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.generator = MemberGenerator(checkpoint, device, threads, layers_per_batch)

    def generate(self, job: WindowJob, members: Sequence[int], steps: Any = None) -> TaskReport:
        """The task's members into the store; each sampler step is counted on ``steps``.

        ``steps``: a :class:`StepCounter` actor (the driver's progress bar), or ``None``.
        """
        if steps is None:
            return self.generator.generate(job, members, worker=self.name)
        import ray

        last: list[Any] = []  # the latest count sent: a step takes far longer than a call

        def counted() -> None:
            last[:] = [steps.add.remote(1)]

        report = self.generator.generate(job, members, worker=self.name, on_step=counted)
        if last:  # one caller's calls run in order: the task's counts land before it ends
            ray.get(last[0])
        return report

    def probe_batch_size(self, job: WindowJob, share: int = 1) -> int:
        return self.generator.probe_batch_size(job, share=share)

    def describe(self) -> dict[str, Any]:
        """Where the actor runs: host:pid, device and its name."""
        import torch

        device = self.generator.device
        name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
        return {"worker": self.name, "device": device, "device_name": name}


class StepCounter:
    """Sampler steps done by the actors of one run (the body of a tiny Ray actor).

    Actors add to it after every step; the driver reads it to move its
    progress bar while it waits for whole tasks (:func:`start_step_counter`).
    """

    def __init__(self) -> None:
        self.steps = 0

    def add(self, count: int = 1) -> None:
        self.steps += count

    def total(self) -> int:
        return self.steps


def start_step_counter() -> Any:
    """A :class:`StepCounter` actor; it takes no CPU, so a cluster sized to the workers fits it."""
    import ray

    return ray.remote(num_cpus=0, max_restarts=0)(StepCounter).remote()


@dataclass(frozen=True)
class WorkerSpec:
    """How to make worker actors.

    Attributes:
        checkpoint: checkpoint directory or shipped name (every node must reach it).
        device: ``"cpu"`` or ``"cuda"``; a CUDA actor takes one GPU.
        threads: CPU actors: CPUs reserved and torch threads used per actor.
        layers_per_batch: ``layer2d`` memory knob.
    """

    checkpoint: str
    device: str = "cpu"
    threads: int = 1
    layers_per_batch: int | None = None

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise InvalidValueError(f"workers run on 'cpu' or 'cuda', got device {self.device!r}")
        if self.threads < 1:
            raise InvalidValueError(f"threads per worker must be >= 1, got {self.threads}")

    def start(self) -> Any:
        """A new actor (a Ray actor handle); it loads the checkpoint in the background."""
        import ray

        if self.device == "cuda":
            options: dict[str, Any] = {"num_gpus": 1, "num_cpus": 1}
        else:
            options = {"num_cpus": self.threads}
        remote = ray.remote(max_restarts=0, max_task_retries=0, **options)(EnsembleWorker)
        return remote.remote(self.checkpoint, self.device, self.threads, self.layers_per_batch)

    def start_many(self, count: int) -> list[Any]:
        """``count`` actors, checked to have loaded the checkpoint (a bad one fails here, once)."""
        import ray

        if count < 1:
            raise InvalidValueError(f"count (actors to start) must be >= 1, got {count}")
        actors = [self.start() for _ in range(count)]
        try:
            ray.get([a.describe.remote() for a in actors])
        except Exception:
            for actor in actors:
                ray.kill(actor)
            raise
        return actors


__all__ = ["EnsembleWorker", "StepCounter", "WorkerSpec", "start_step_counter"]
