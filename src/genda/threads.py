"""Torch intra-op thread control for small CPU workloads.

Spherical-harmonic transforms at genda's grid sizes are many small batched
matrix products; torch's CPU ``bmm`` then loops over the batch, and extra
OpenMP threads only spin. With several processes on few cores (tests, Ray
workers) the spinning oversubscribes the machine and slows a step tenfold.
One thread is the fast and polite choice for these kernels.

Sampling honours ``threads_per_worker`` (``--threads-per-worker``, default 1)
wherever it runs: a Ray actor sets it once for its process, and in-process
sampling (``--workers 0``) runs under :func:`cpu_threads`, so the caller's
count is back afterwards (:class:`genda.distributed.work.MemberGenerator`;
the measurements are in docs/distributed.md, "Threads and progress").
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def cpu_threads(count: int | None, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the block with ``count`` torch intra-op threads on the CPU, then restore.

    Does nothing when ``count`` is ``None`` or the work runs on another device.
    """
    if count is None or torch.device(device).type != "cpu" or count == torch.get_num_threads():
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
