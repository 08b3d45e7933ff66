"""The traced cost against the real one: the same stretch of sampling, run and measured.

:func:`measure_sampling` builds the run of a :class:`~genda.planning.spec.RunSpec`
for real on a device and runs what :func:`genda.planning.trace.trace_sampling`
traces: the window's guidance, then :data:`~genda.planning.trace.TRACE_SIGMAS`
of :func:`genda.models.sampling.sample`. Memory comes from the allocator:

* CPU: torch's CPU allocator as the profiler records it
  (``torch.profiler.profile(profile_memory=True)``: every allocation and free
  with its size, in order), summed into the peak above what was allocated
  before; this sees the scratch memory inside operators too (oneDNN's
  reordered copies), which no tensor shows.
* CUDA: ``torch.cuda.max_memory_allocated`` above ``memory_allocated`` before
  (the caching allocator's blocks, rounded to 512 bytes, with cuDNN's workspace).

FLOPs are counted on the real run by the same counter as the trace
(:class:`~genda.planning.dispatch.FlopCount`), in a run of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile

from genda.planning.build import planned_denoiser, planned_grid, planned_guidance
from genda.planning.dispatch import FlopCount
from genda.planning.spec import RunSpec
from genda.planning.trace import TRACED_CALLS, device_bytes, traced_stretch

__all__ = ["MeasuredSampling", "allocator_peak", "measure_sampling"]


@dataclass(frozen=True)
class MeasuredSampling:
    """What the real stretch of sampling took (bytes and FLOPs).

    Attributes:
        device: where it ran.
        weights_bytes: the denoiser's parameters, buffers and device tables.
        window_bytes, window_peak_bytes: the guidance's build, kept and at its peak.
        sampling_peak_bytes: the allocator's peak while sampling, above the start.
        flops_per_call: FLOPs of one denoiser call of the batch (counted).
        rss_increase_bytes: the process's peak resident memory while sampling
            above its resident memory before, when a ``rss`` probe was given.
    """

    device: str
    weights_bytes: int
    window_bytes: int
    window_peak_bytes: int
    sampling_peak_bytes: int
    flops_per_call: int
    rss_increase_bytes: int | None = None


def allocator_peak(run: Callable[[], Any]) -> tuple[int, int, Any]:
    """Run ``run()`` under the CPU profiler: ``(peak, kept, result)`` in bytes.

    ``peak``: the most bytes the CPU allocator held at once above what it held
    before; ``kept``: what it still holds at the end (the allocations made
    inside and not freed, e.g. the result).
    """
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = run()
    events: list[tuple[int, int]] = []

    def walk(nodes: Any) -> None:
        for node in nodes:
            if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
                events.append((node.start_time_ns, node.extra_fields.alloc_size))
            walk(node.children)

    walk(prof.profiler.kineto_results.experimental_event_tree())
    live = peak = 0
    for _, size in sorted(events, key=lambda e: e[0]):
        live += size
        peak = max(peak, live)
    return peak, live, result


def _cuda_peak(run: Callable[[], Any], device: torch.device) -> tuple[int, int, Any]:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    result = run()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    return peak, torch.cuda.memory_allocated(device) - before, result


def measure_sampling(
    spec: RunSpec,
    batch: int,
    device: torch.device | str = "cpu",
    rss: Callable[[Callable[[], Any]], int] | None = None,
) -> MeasuredSampling:
    """Run the traced stretch for real on ``device`` (``cpu`` or ``cuda``) and measure it.

    ``rss``: runs a callable and returns the rise of the process's peak
    resident memory over it (a sanity check of the allocator's count; the
    benchmarks' ``_common`` has the probes).
    """
    device = torch.device(device)
    denoiser = planned_denoiser(spec, device)
    weights = device_bytes(denoiser)  # builds the whitening's device tables first
    state = denoiser.state_shape(planned_grid(spec).shape)

    def peak_of(run: Callable[[], Any]) -> tuple[int, int, Any]:
        return _cuda_peak(run, device) if device.type == "cuda" else allocator_peak(run)

    window_peak, window_kept, guided = peak_of(lambda: planned_guidance(spec, denoiser, device))

    def run() -> None:
        traced_stretch(guided, state, batch, device)

    run()  # warm-up: kernels, the allocator's first blocks
    sampling_peak, _, _ = peak_of(run)
    rise = rss(run) if rss is not None else None
    with FlopCount() as counter:
        run()
    return MeasuredSampling(
        device=str(device),
        weights_bytes=weights,
        window_bytes=window_kept,
        window_peak_bytes=window_peak,
        sampling_peak_bytes=sampling_peak,
        flops_per_call=counter.total // TRACED_CALLS,
        rss_increase_bytes=rise,
    )
