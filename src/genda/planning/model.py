"""The cost of a posterior member: device memory, FLOPs and time on a GPU.

From two traces (:func:`genda.planning.trace.trace_sampling`, batches 1 and 2)
:func:`member_cost` gives the memory of a batch of ``B`` members as

    memory(B) = weights + window + max(base + per_member B, window transient)

(every tensor of the sampling scales with ``B`` except the weights and the
window's; the traces make ``base`` and ``per_member`` exact for the network
and sampler as they are), and the FLOPs of a denoiser call as ``a + b B``
(``a``: the observation operator's ``A(0)`` of a whitened prior, once per
call), times the calls of a run (:meth:`RunSpec.calls_per_member`). Time per
member is FLOPs over a stated fraction of the GPU's dense bf16 peak
(:data:`GPUS`): the rate the benchmarks report as ``fraction_of_bf16_peak``.
Memory is that of genda's float32 sampling (weights, states and activations
in float32, as ``genda assimilate`` runs); bf16 autocast would lower the
activations, which this model does not price.

The memory a device offers a run is its memory less :data:`CONTEXT_GIB` (the
CUDA context and library handles, which no allocator statistic shows) and
:data:`HEADROOM` of the rest (the caching allocator's rounding and
fragmentation, cuDNN's workspace).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from genda.errors import UnknownNameError
from genda.planning.spec import PlanError, RunSpec
from genda.planning.trace import SamplingTrace, trace_sampling

__all__ = [
    "CONTEXT_GIB",
    "DEFAULT_FRACTION",
    "GIB",
    "GPUS",
    "HEADROOM",
    "MAX_BATCH",
    "GpuSpec",
    "MemberCost",
    "chunked_cost",
    "full_truncation",
    "get_gpu",
    "largest_truncation",
    "member_cost",
    "usable_bytes",
    "whitening_bytes",
]

GIB = 2**30


@dataclass(frozen=True)
class GpuSpec:
    """A GPU: its memory (GiB, as sold: 40, 80, 141) and dense bf16 tensor-core peak (TFLOP/s)."""

    name: str
    memory_gib: float
    bf16_tflops: float


GPUS: dict[str, GpuSpec] = {
    "a100-40": GpuSpec("NVIDIA A100 40GB (SXM)", 40.0, 312.0),
    "a100-80": GpuSpec("NVIDIA A100 80GB (SXM)", 80.0, 312.0),
    "h100": GpuSpec("NVIDIA H100 SXM 80GB", 80.0, 989.0),
    "h200": GpuSpec("NVIDIA H200 SXM 141GB", 141.0, 989.0),
}
"""Dense bf16 peaks from NVIDIA's data sheets: A100 (2020) "BFLOAT16 Tensor Core 312
TFLOPS" (624 with sparsity); H100 SXM (2022) and H200 SXM (2024) "BFLOAT16 Tensor Core
1,979 TFLOPS" with sparsity, 989 dense; ``benchmarks/strategies.py`` uses the same."""

DEFAULT_FRACTION = 0.4
"""The default fraction of the bf16 peak a run is assumed to reach."""

CONTEXT_GIB = 1.0
"""GiB of a GPU taken by the CUDA context and library handles (outside the allocator)."""

HEADROOM = 0.05
"""Fraction of the remaining memory kept free for the caching allocator and cuDNN."""

MAX_BATCH = 65536
"""The largest batch reported (beyond, the window's members are the limit)."""


def get_gpu(name: str) -> GpuSpec:
    """The GPU of :data:`GPUS` named ``name``; a clear error otherwise."""
    try:
        return GPUS[name]
    except KeyError:
        known = ", ".join(GPUS)
        raise UnknownNameError(f"unknown GPU {name!r}; known GPUs: {known}") from None


def usable_bytes(memory_gib: float) -> int:
    """The bytes a run can allocate on a device of ``memory_gib`` GiB (module docstring)."""
    return int(max(0.0, memory_gib - CONTEXT_GIB) * (1.0 - HEADROOM) * GIB)


def whitening_bytes(spec: RunSpec, truncation: int) -> int:
    """Device bytes of a whitened prior's transform at ``truncation`` ``T``, closed form.

    ``P = V L`` channels in one coupling group (``columns`` for ``joint3d``,
    ``cascade`` for ``layer2d``), float32 buffers of
    :class:`genda.models.whitening.SpectralWhitening`: ``mean`` ``T^2 P 2``,
    ``eigenvalues`` ``T^2 P``, ``eigenvectors`` ``T^2 P^2 2``, ``tidal_mean``
    ``2 tides T^2 P 2``, the cascade's ``rotation`` ``T^2 P^2 2``; the winds'
    statistics ``2 x 2 L``; int64 layout tables ``3 T^2 + 2 T^2`` and the
    bool ``valid`` ``T^2``; and torch-harmonics' four tables in float32,
    ``(1 + 1 + 2 + 2) T^2 nlat``. The tests check it against the buffers of
    the module itself.
    """
    t2 = truncation * truncation
    p = spec.variables * spec.levels
    rotations = 2 if spec.strategy == "layer2d" else 1
    floats = (
        t2 * p * 2
        + t2 * p
        + rotations * t2 * p * p * 2
        + 2 * spec.tides * t2 * p * 2
        + 4 * spec.levels
        + 6 * t2 * spec.nlat
    )
    return 4 * floats + 8 * 5 * t2 + t2


@dataclass(frozen=True)
class MemberCost:
    """Memory (bytes) and FLOPs of the members of one run (module docstring).

    Attributes:
        spec: the run.
        weights_bytes: the denoiser's parameters, buffers and device tables.
        window_bytes: what the window's guidance keeps.
        window_transient_bytes: what building the guidance needs on top, once per window.
        base_bytes: the sampling's memory that does not grow with the batch.
        per_member_bytes: the sampling's memory per member of a batch.
        flops_per_call: FLOPs per member of one denoiser call.
        call_flops: FLOPs of one denoiser call that do not grow with the batch
            (with a whitened prior, ``A(0)`` of the observation operator).
        traces: the traces it rests on.
    """

    spec: RunSpec
    weights_bytes: int
    window_bytes: int
    window_transient_bytes: int
    base_bytes: int
    per_member_bytes: int
    flops_per_call: int
    call_flops: int
    traces: tuple[SamplingTrace, ...]

    @property
    def fixed_bytes(self) -> int:
        """Weights and window: held whatever the batch."""
        return self.weights_bytes + self.window_bytes

    def batch_bytes(self, batch: int) -> int:
        """Device memory of ``batch`` members at once."""
        sampling = self.base_bytes + self.per_member_bytes * batch
        return self.fixed_bytes + max(sampling, self.window_transient_bytes)

    def flops_per_member(self, batch: int = 1) -> float:
        """FLOPs of one member over the whole run, sampled ``batch`` at a time."""
        return (self.flops_per_call + self.call_flops / batch) * self.spec.calls_per_member()

    def seconds_per_member(
        self, gpu: GpuSpec, fraction: float = DEFAULT_FRACTION, batch: int = 1
    ) -> float:
        """Time per member at ``fraction`` of ``gpu``'s dense bf16 peak."""
        return self.flops_per_member(batch) / (fraction * gpu.bf16_tflops * 1e12)

    def largest_batch(self, memory_gib: float) -> int:
        """The most members at once on a device of ``memory_gib`` GiB (0: not one fits)."""
        room = usable_bytes(memory_gib) - self.fixed_bytes
        if self.batch_bytes(1) > usable_bytes(memory_gib):
            return 0
        if self.per_member_bytes <= 0:
            return MAX_BATCH
        batch = (room - self.base_bytes) // self.per_member_bytes
        return int(min(MAX_BATCH, max(1, batch)))


def member_cost(spec: RunSpec) -> MemberCost:
    """Trace ``spec`` at batches 1 and 2 (on ``meta``) and fit :class:`MemberCost`.

    FLOPs and memory are both ``a + b B``: the traces at 1 and 2 give ``a`` and ``b``.
    """
    one = trace_sampling(spec, 1)
    two = trace_sampling(spec, 2)
    per_member = two.sampling_peak_bytes - one.sampling_peak_bytes
    flops = two.flops_per_call - one.flops_per_call
    return MemberCost(
        spec=spec,
        weights_bytes=one.weights_bytes,
        window_bytes=one.window_bytes,
        window_transient_bytes=max(0, one.window_peak_bytes - one.window_bytes),
        base_bytes=one.sampling_peak_bytes - per_member,
        per_member_bytes=per_member,
        flops_per_call=flops,
        call_flops=one.flops_per_call - flops,
        traces=(one, two),
    )


def chunked_cost(spec: RunSpec, chunk: int, whole: MemberCost) -> MemberCost:
    """The cost of ``layer2d`` with ``chunk`` layer samples per network call.

    A trace of ``L = 150`` levels in chunks of 4 would run 38 chunks, each
    recomputed in every backward pass; instead the run is traced with
    ``2 chunk`` and ``3 chunk`` levels (two and three chunks, one member) and
    extended in ``L``: what the chunks hold (the activations of one chunk and
    its recomputation) does not depend on ``L``, and everything else (states,
    network inputs and outputs, the checkpoints' saved inputs) grows as the
    member's ``B L`` layer samples, so ``memory = base + B L u`` and the FLOPs
    per member grow as ``L``. The weights and the window are ``whole``'s (the
    same network at the full ``L``). The tests check the extension against a
    trace at the full ``L``.
    """
    if spec.strategy != "layer2d":
        raise PlanError(f"layers per network call apply to layer2d, not {spec.strategy}")
    two = trace_sampling(replace(spec, levels=2 * chunk, layers_per_batch=chunk), 1)
    three = trace_sampling(replace(spec, levels=3 * chunk, layers_per_batch=chunk), 1)
    per_level = (three.sampling_peak_bytes - two.sampling_peak_bytes) / chunk
    flops_per_level = (three.flops_per_call - two.flops_per_call) / chunk
    levels = spec.levels
    return MemberCost(
        spec=replace(spec, layers_per_batch=chunk),
        weights_bytes=whole.weights_bytes,
        window_bytes=whole.window_bytes,
        window_transient_bytes=whole.window_transient_bytes,
        base_bytes=round(two.sampling_peak_bytes - per_level * 2 * chunk),
        per_member_bytes=round(per_level * levels),
        flops_per_call=round(flops_per_level * levels),
        call_flops=round(two.flops_per_call - flops_per_level * 2 * chunk),
        traces=(two, three),
    )


def largest_truncation(spec: RunSpec, budget_bytes: int) -> int:
    """The largest whitening truncation whose transform fits ``budget_bytes`` (0: none)."""
    top = min(spec.nlat, (spec.nlon + 1) // 2)
    low, high = 0, top
    while low < high:  # whitening_bytes grows with T
        middle = (low + high + 1) // 2
        if whitening_bytes(spec, middle) <= budget_bytes:
            low = middle
        else:
            high = middle - 1
    return low


def full_truncation(spec: RunSpec) -> int:
    """The whitening's truncation of ``spec`` (its largest on a Gauss-Legendre grid by default)."""
    top = min(spec.nlat, (spec.nlon + 1) // 2)
    return top if spec.truncation is None else min(spec.truncation, top)
