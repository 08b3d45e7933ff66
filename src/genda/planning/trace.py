"""One traced stretch of posterior sampling: FLOPs per denoiser call and the peak of memory.

:func:`trace_sampling` builds the run of a :class:`~genda.planning.spec.RunSpec`
(:mod:`genda.planning.build`) and runs, under :class:`~genda.planning.dispatch.CostMode`:

1. the window's guidance being built (the observation operator; for
   ``mmps-prior`` the rows of ``A = H U`` and the eigen-decomposition of
   ``A A^T``, :class:`genda.assimilation.gaussian_tweedie.ObservationSpace`):
   what it keeps is :attr:`SamplingTrace.window_bytes`;
2. :func:`genda.models.sampling.sample` itself, the code every member goes
   through, over the noise levels :data:`TRACE_SIGMAS`: one step of the
   ``exponential`` rule (two denoiser calls) and the last, Euler, step (one
   call). Every denoiser call of a run has the same shapes and so the same
   FLOPs and the same peak (the noise level is a value); a run of ``n``
   steps makes :meth:`RunSpec.calls_per_member` of them.

On the ``meta`` device (the default) no tensor holds data: a 0.25 degree
field of 150 levels costs what a 16 x 32 one does to trace, a second or so.
The same function on ``cpu`` runs the real computation, which
:mod:`genda.planning.measure` compares against the allocator.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from genda.models.diffusion import EDMDenoiser
from genda.models.sampling import sample
from genda.planning.build import planned_denoiser, planned_grid, planned_guidance, to_fake
from genda.planning.dispatch import CostMode, Workspace, no_workspace
from genda.planning.spec import RunSpec

__all__ = [
    "TRACED_CALLS",
    "TRACE_SIGMAS",
    "SamplingTrace",
    "device_bytes",
    "trace_sampling",
    "traced_stretch",
]

TRACE_SIGMAS: tuple[float, ...] = (80.0, 1.0, 0.0)
"""Noise levels of the traced stretch: an ``exponential`` step (80 -> 1, two calls) and
the Euler step to 0 (one call)."""

TRACED_CALLS = 3
"""Denoiser calls in the traced stretch."""


@dataclass(frozen=True)
class SamplingTrace:
    """What one traced stretch of sampling costs (bytes and FLOPs).

    Attributes:
        batch: members sampled at once.
        weights_bytes: the denoiser's parameters and buffers (with a whitened
            prior: its statistics and float32 harmonic tables) on the device.
        window_bytes: what the window's guidance keeps while the members are
            sampled (observation operator; ``mmps-prior``: ``A`` and the
            eigen-decomposition of ``A A^T``).
        window_peak_bytes: the peak while the guidance is built (transient).
        sampling_peak_bytes: the peak of the tensors made while sampling: the
            members' states, the denoiser's activations, the guidance's
            autograd graph and vectors.
        flops_per_call: FLOPs of one denoiser call of the whole batch.
        operators: aten operators traced while sampling.
    """

    batch: int
    weights_bytes: int
    window_bytes: int
    window_peak_bytes: int
    sampling_peak_bytes: int
    flops_per_call: int
    operators: int

    @property
    def peak_bytes(self) -> int:
        """The device memory the batch needs: weights, window and sampling together."""
        fixed = self.weights_bytes + self.window_bytes
        return fixed + max(self.sampling_peak_bytes, self.window_peak_bytes - self.window_bytes)


def device_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers, each storage once, plus the float32
    harmonic tables a whitened denoiser keeps on its device."""
    storages: dict[int, int] = {}
    tensors = [*module.parameters(), *module.buffers()]
    coordinates = getattr(module, "coordinates", None)
    if coordinates is not None and hasattr(coordinates, "transforms"):
        for transform in coordinates.transforms():
            tensors += list(transform.buffers())
    for tensor in tensors:
        storage = tensor.untyped_storage()
        storages[storage._cdata] = storage.nbytes()
    return sum(storages.values())


def trace_sampling(
    spec: RunSpec,
    batch: int,
    device: torch.device | str = "meta",
    workspace: Workspace = no_workspace,
    denoiser: EDMDenoiser | None = None,
) -> SamplingTrace:
    """Trace the window's guidance and :data:`TRACE_SIGMAS` of sampling for ``batch`` members.

    ``denoiser``: one already built for ``spec`` on ``device`` (it is built otherwise).
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")  # a caller's bug
    fake = str(device) == "meta"
    denoiser = denoiser if denoiser is not None else planned_denoiser(spec, device)
    # Traced on fake CPU tensors: shapes without data, and every tensor made
    # inside (the sampler's noise too) is fake.
    context: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    if fake:
        mode = FakeTensorMode(allow_non_fake_inputs=True)
        to_fake(denoiser, mode)
        context, device = mode, "cpu"
    with context, _ChecksPass(fake), warnings.catch_warnings():
        # deep copies of fake modules read their data pointers, which is harmless here
        warnings.filterwarnings("ignore", "Accessing the data pointer of FakeTensor")
        weights = device_bytes(denoiser)  # also builds the whitening's device tables
        state = denoiser.state_shape(planned_grid(spec).shape)
        with CostMode() as window:
            guided = planned_guidance(spec, denoiser, device)
        with CostMode(workspace) as sampling:
            traced_stretch(guided, state, batch, device)
    if sampling.flops % TRACED_CALLS:
        raise AssertionError(f"{sampling.flops} FLOPs over {TRACED_CALLS} calls of equal shapes")
    return SamplingTrace(
        batch=batch,
        weights_bytes=weights,
        window_bytes=window.live,
        window_peak_bytes=window.peak,
        sampling_peak_bytes=sampling.peak,
        flops_per_call=sampling.flops // TRACED_CALLS,
        operators=sampling.operators,
    )


def traced_stretch(
    guided: EDMDenoiser, state: tuple[int, ...], batch: int, device: torch.device | str
) -> None:
    """Sample ``batch`` members over :data:`TRACE_SIGMAS` (the stretch a trace prices)."""
    sample(
        guided,
        state,
        list(range(batch)),
        0,
        method="exponential",
        sigmas=TRACE_SIGMAS,
        device=device,
    )


class _ChecksPass(TorchDispatchMode):
    """On fake tensors, a value check (``bool(t)`` of a boolean tensor) reads as passed.

    The code traced checks its inputs (finite hours, positive errors) with
    ``if not tensor.all()``; fake tensors have no values to answer from, and
    the traced run is one whose inputs pass. Any other read of a value fails.
    """

    def __init__(self, active: bool) -> None:
        super().__init__()
        self.active = active

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if (
            self.active
            and func
            in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default)
            and args[0].dtype == torch.bool
        ):
            return True
        return func(*args, **kwargs)
