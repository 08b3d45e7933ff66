"""Which strategy to run on a GPU, how many members at once, and why: :func:`recommend`.

For each strategy (``joint3d``; ``layer2d`` whole, or in chunks of layer
samples per network call when one member does not fit whole) the cost of a
member comes from traces of the real network and sampler
(:func:`genda.planning.model.member_cost`); a strategy *fits* when one member
with the weights and the window's guidance fits the device's usable memory
(:func:`genda.planning.model.usable_bytes`). Of the strategies that fit, the
one with the least time per member at its largest batch is recommended.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, replace
from typing import Any

from genda.planning.build import planned_denoiser
from genda.planning.model import (
    DEFAULT_FRACTION,
    GIB,
    GpuSpec,
    MemberCost,
    chunked_cost,
    full_truncation,
    get_gpu,
    largest_truncation,
    member_cost,
    usable_bytes,
    whitening_bytes,
)
from genda.planning.spec import STRATEGY_NAMES, PlanError, RunSpec
from genda.planning.trace import device_bytes

__all__ = ["Plan", "StrategyPlan", "cached_cost", "recommend"]


@dataclass(frozen=True)
class StrategyPlan:
    """One strategy on one device.

    Attributes:
        strategy: ``joint3d`` or ``layer2d``.
        fits: whether one member fits.
        members_at_once: the largest batch that fits (0 when none does).
        layers_per_batch: ``layer2d``'s layer samples per network call
            (``None``: all at once; ``genda assimilate --layers-per-batch``).
        one_member_gib: device memory of one member with weights and window.
        weights_gib: parameters and buffers (with a whitened prior, its statistics).
        whitening_gib: of which the whitened prior's transform (0 in grid coordinates).
        window_gib: what the window's guidance keeps.
        window_build_gib: the transient of building the guidance (once per window).
        per_member_gib: what each further member of a batch adds.
        tflop_per_member: FLOPs of a member over the run (10^12), at the largest batch.
        seconds_per_member: at the plan's fraction of the GPU's bf16 peak.
        note: why it does not fit, or what it needs.
    """

    strategy: str
    fits: bool
    members_at_once: int
    layers_per_batch: int | None
    one_member_gib: float
    weights_gib: float
    whitening_gib: float
    window_gib: float
    window_build_gib: float
    per_member_gib: float
    tflop_per_member: float
    seconds_per_member: float
    note: str


@dataclass(frozen=True)
class Plan:
    """The plan of a run on a device (:func:`recommend`).

    Attributes:
        spec: the run (its ``strategy`` is the recommended one, or the first asked).
        gpu: the device (name, memory, bf16 peak).
        usable_gib: the memory a run can allocate there.
        fraction: the assumed fraction of the bf16 peak.
        options: one :class:`StrategyPlan` per strategy considered.
        recommended: the strategy to run (``None``: none fits).
        reason: why, in one sentence.
    """

    spec: RunSpec
    gpu: GpuSpec
    usable_gib: float
    fraction: float
    options: tuple[StrategyPlan, ...]
    recommended: str | None
    reason: str

    def option(self, strategy: str) -> StrategyPlan | None:
        return next((o for o in self.options if o.strategy == strategy), None)

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON values."""
        spec = asdict(self.spec)
        spec["channel_mult"] = list(self.spec.channel_mult)
        spec["attention_levels"] = list(self.spec.attention_levels)
        return {
            "spec": spec,
            "gpu": asdict(self.gpu),
            "usable_gib": self.usable_gib,
            "fraction_of_bf16_peak": self.fraction,
            "recommended": self.recommended,
            "reason": self.reason,
            "options": [asdict(o) for o in self.options],
        }


@functools.lru_cache(maxsize=256)
def cached_cost(spec: RunSpec) -> MemberCost:
    """:func:`~genda.planning.model.member_cost`, kept for the specs seen (a table re-plans
    each field for several GPUs)."""
    return member_cost(spec)


@functools.lru_cache(maxsize=256)
def _chunked(spec: RunSpec, chunk: int) -> MemberCost:
    return chunked_cost(spec, chunk, cached_cost(replace(spec, layers_per_batch=None)))


def _largest_chunk(spec: RunSpec, whole: MemberCost, usable: int) -> MemberCost | None:
    """``layer2d`` in the largest chunk of layer samples with which one member fits.

    The memory grows with the chunk (its activations), nearly linearly from
    one sample per call to the whole member: the line through the two
    predicts the chunk, whose own trace then decides, stepping down while it
    does not fit. ``None``: not even one sample per call fits.
    """
    one = _chunked(spec, 1)
    if one.batch_bytes(1) > usable:
        return None
    slope = max(1, (whole.batch_bytes(1) - one.batch_bytes(1)) // max(1, spec.levels - 1))
    chunk = int(max(1, min(spec.levels - 1, 1 + (usable - one.batch_bytes(1)) // slope)))
    while chunk > 1:
        cost = _chunked(spec, chunk)
        if cost.batch_bytes(1) <= usable:
            return cost
        chunk = max(1, int(chunk * usable / cost.batch_bytes(1)) - 1)
    return one


def _strategy_plan(
    cost: MemberCost, gpu: GpuSpec, memory_gib: float, fraction: float, note: str = ""
) -> StrategyPlan:
    spec = cost.spec
    batch = cost.largest_batch(memory_gib)
    whitening = (
        whitening_bytes(spec, full_truncation(spec)) if spec.coordinates == "whitened" else 0
    )
    if not note and batch == 0:
        note = _why_not(cost, memory_gib)
    return StrategyPlan(
        strategy=spec.strategy,
        fits=batch > 0,
        members_at_once=batch,
        layers_per_batch=spec.layers_per_batch,
        one_member_gib=cost.batch_bytes(1) / GIB,
        weights_gib=cost.weights_bytes / GIB,
        whitening_gib=whitening / GIB,
        window_gib=cost.window_bytes / GIB,
        window_build_gib=cost.window_transient_bytes / GIB,
        per_member_gib=cost.per_member_bytes / GIB,
        tflop_per_member=cost.flops_per_member(max(1, batch)) / 1e12,
        seconds_per_member=cost.seconds_per_member(gpu, fraction, max(1, batch)),
        note=note,
    )


def _why_not(cost: MemberCost, memory_gib: float) -> str:
    usable = usable_bytes(memory_gib)
    spec = cost.spec
    parts = [f"one member needs {cost.batch_bytes(1) / GIB:.1f} GiB of {usable / GIB:.1f} usable"]
    if spec.coordinates == "whitened":
        stats = whitening_bytes(spec, full_truncation(spec))
        if stats > usable / 2:
            fitting = largest_truncation(spec, usable // 2)
            parts.append(
                f"the whitening's statistics alone take {stats / GIB:.1f} GiB at truncation "
                f"{full_truncation(spec)} (up to {fitting} would keep them within half the device)"
            )
    if cost.window_transient_bytes > usable / 2:
        parts.append(
            f"building the window's guidance takes {cost.window_transient_bytes / GIB:.1f} GiB"
        )
    return "; ".join(parts)


def _reason(chosen: StrategyPlan, others: list[StrategyPlan]) -> str:
    text = f"{chosen.strategy}: {chosen.members_at_once} member(s) at once"
    if chosen.layers_per_batch:
        text += f" with --layers-per-batch {chosen.layers_per_batch}"
    text += f", {chosen.seconds_per_member:.3g} s per member"
    for other in others:
        if other.fits:
            ratio = other.tflop_per_member / max(chosen.tflop_per_member, 1e-30)
            text += (
                f"; {other.strategy} would take {other.seconds_per_member:.3g} s "
                f"({ratio:.1f}x the FLOPs per member)"
            )
        else:
            text += f"; {other.strategy} does not fit ({other.note})"
    return text


def _layer2d_in_chunks(
    spec: RunSpec,
    whole: MemberCost,
    usable: int,
    options: list[StrategyPlan],
    device: GpuSpec,
    memory: float,
    fraction: float,
) -> StrategyPlan:
    """``layer2d`` when a whole member does not fit: in the largest chunk that fits.

    Chunks only add FLOPs (each is recomputed in every backward pass), so when
    a strategy already planned fits and is faster than even a whole
    ``layer2d`` member, no chunk can win and none is searched.
    """
    lower_bound = whole.seconds_per_member(device, fraction)
    faster = [o for o in options if o.fits and o.seconds_per_member <= lower_bound]
    if faster:
        note = (
            f"a whole member needs {whole.batch_bytes(1) / GIB:.1f} GiB of "
            f"{usable / GIB:.1f} usable; in chunks it would take at least "
            f"{lower_bound / faster[0].seconds_per_member:.1f}x {faster[0].strategy}'s time "
            "(chunks not searched)"
        )
        return _strategy_plan(whole, device, memory, fraction, note=note)
    if whole.fixed_bytes >= usable:
        return _strategy_plan(whole, device, memory, fraction)
    chunked = _largest_chunk(spec, whole, usable)
    if chunked is None:
        one = _chunked(spec, 1)
        note = f"even one layer sample per call needs {one.batch_bytes(1) / GIB:.1f} GiB"
        return _strategy_plan(one, device, memory, fraction, note=note)
    return _strategy_plan(chunked, device, memory, fraction)


def _check_weights(specs: list[RunSpec], memory: float, usable: int) -> None:
    """Refuse a device smaller than every strategy's weights (built on ``meta``: no tracing)."""
    weights = {spec.strategy: device_bytes(planned_denoiser(spec)) for spec in specs}
    if min(weights.values()) <= usable:
        return
    strategy = min(weights, key=weights.__getitem__)
    spec = next(s for s in specs if s.strategy == strategy)
    whitening = (
        whitening_bytes(spec, full_truncation(spec)) if spec.coordinates == "whitened" else 0
    )
    detail = f", of which {whitening / GIB:.1f} GiB the whitening's statistics" if whitening else ""
    raise PlanError(
        f"{memory:g} GiB of GPU memory ({usable / GIB:.1f} usable) is smaller than the weights "
        f"of the prior ({weights[strategy] / GIB:.1f} GiB with {strategy}{detail})"
    )


def recommend(
    nlat: int,
    nlon: int,
    levels: int,
    variables: int = 3,
    *,
    gpu: str = "h100",
    gpu_memory: float | None = None,
    strategy: str = "auto",
    fraction: float = DEFAULT_FRACTION,
    layers_per_batch: int | None = None,
    **settings: Any,
) -> Plan:
    """Plan a posterior run of ``variables`` x ``levels`` x ``nlat`` x ``nlon`` on a GPU.

    Args:
        nlat, nlon, levels, variables: the field.
        gpu: a name of :data:`genda.planning.model.GPUS` (its bf16 peak sets the time).
        gpu_memory: the device's memory in GiB (default: ``gpu``'s).
        strategy: ``joint3d``, ``layer2d`` or ``auto`` (both, the faster that fits).
        fraction: the fraction of the bf16 peak assumed for the time per member.
        layers_per_batch: ``layer2d``'s chunk; ``None`` chooses (whole if it fits).
        settings: further :class:`~genda.planning.spec.RunSpec` fields
            (``base_channels``, ``channel_mult``, ``guidance``, ``iterations``,
            ``steps``, ``coordinates``, ``truncation``, ``observations``, ``window``...).

    Raises:
        PlanError: levels or grid out of range, a grid the U-Net cannot pool, a
            device smaller than the weights, a fraction outside (0, 1].
        UnknownNameError: an unknown strategy, GPU, guidance or sampler.
    """
    device = get_gpu(gpu)
    memory = device.memory_gib if gpu_memory is None else float(gpu_memory)
    if not memory > 0:
        raise PlanError(f"GPU memory must be > 0 GiB, got {gpu_memory}")
    if not 0 < fraction <= 1:
        raise PlanError(f"the fraction of the bf16 peak must lie in (0, 1], got {fraction}")
    names = STRATEGY_NAMES if strategy == "auto" else (strategy,)
    base = RunSpec(nlat, nlon, levels, variables, strategy=names[0], **settings)
    specs = [replace(base, strategy=name) for name in names]  # each validated on its own
    usable = usable_bytes(memory)
    _check_weights(specs, memory, usable)
    options: list[StrategyPlan] = []
    for spec in specs:  # joint3d first: a faster fit spares layer2d's search for a chunk
        whole = cached_cost(replace(spec, layers_per_batch=None))
        if spec.strategy == "layer2d" and layers_per_batch is not None:
            cost = _chunked(spec, layers_per_batch)
        elif spec.strategy == "layer2d" and whole.batch_bytes(1) > usable:
            plan = _layer2d_in_chunks(spec, whole, usable, options, device, memory, fraction)
            options.append(plan)
            continue
        else:
            cost = whole
        options.append(_strategy_plan(cost, device, memory, fraction))
    fitting = [o for o in options if o.fits]
    if not fitting:
        reason = "nothing fits: " + "; ".join(f"{o.strategy}: {o.note}" for o in options)
        return Plan(base, device, usable / GIB, fraction, tuple(options), None, reason)
    chosen = min(fitting, key=lambda o: (o.seconds_per_member, o.strategy != "joint3d"))
    others = [o for o in options if o is not chosen]
    spec = replace(base, strategy=chosen.strategy, layers_per_batch=chosen.layers_per_batch)
    return Plan(
        spec,
        device,
        usable / GIB,
        fraction,
        tuple(options),
        chosen.strategy,
        _reason(chosen, others),
    )
