"""Dispatch modes that count what torch operators cost: FLOPs and the bytes of live tensors.

Both modes sit at the Python dispatch key (``TorchDispatchMode``), so they see
the aten operators that autograd, ``torch.func`` and composite functions such
as ``einsum`` decompose into, forward and backward alike, on real tensors and
on tensors of the ``meta`` device (shapes without data) the same way:

* :class:`FlopCount` sums ``torch.utils.flop_counter.flop_registry`` over the
  operators run inside (matrix products, convolutions, attention, forward and
  backward). ``torch.utils.flop_counter.FlopCounterMode`` counts the same
  operators but attributes them to modules with hooks that
  ``torch.autograd.grad`` refuses (MMPS guidance calls it inside the
  denoiser), so this mode counts without attributing. Element-wise operators,
  reductions and FFTs are not in the registry and are not counted.
* :class:`CostMode` counts FLOPs the same way and tracks the bytes of the
  tensors that operators create: a storage is allocated when an operator
  first returns it (views and in-place results share an input's storage and
  are not counted again; a zero tensor, forward-mode AD's zero tangent, allocates
  nothing) and freed when its last tensor is garbage collected
  (a ``weakref.finalize`` on the storage). Its ``peak`` is the peak of tensor
  memory made inside the mode; tensors that existed before (weights, inputs)
  are not counted. An optional :data:`Workspace` model adds the scratch memory
  a backend holds only while an operator runs (oneDNN's reordered copies on
  the CPU: :func:`onednn_workspace`), which no tensor shows; the copies a
  matrix product makes of lazily conjugated operands are always added.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

__all__ = [
    "CostMode",
    "FlopCount",
    "Workspace",
    "no_workspace",
    "onednn_workspace",
    "operator_flops",
]

Workspace = Callable[[Any, tuple[Any, ...], dict[str, Any], Any], int]
"""``workspace(func, args, kwargs, out) -> bytes`` held only while ``func`` runs."""


def operator_flops(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> int:
    """FLOPs of one aten operator by ``flop_registry`` (0 for operators it does not list)."""
    counter = flop_registry.get(func._overloadpacket)
    if counter is None:
        return 0
    return int(counter(*args, **kwargs, out_val=out))


_MATRIX_PRODUCTS = {
    torch.ops.aten.mm.default,
    torch.ops.aten.bmm.default,
    torch.ops.aten.addmm.default,
    torch.ops.aten.baddbmm.default,
}


def _materialised(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """Bytes a matrix product copies its lazily conjugated operands into while it runs.

    ``x.conj()`` only sets a bit; BLAS takes no conjugated operand in every
    layout, so torch resolves it into a copy for the product (seen in the
    CPU profiler as an allocation inside ``bmm``: the whitening's
    ``Q^H`` in the vector-Jacobian products of its decode).
    """
    if func not in _MATRIX_PRODUCTS:
        return 0
    return sum(
        t.numel() * t.element_size()
        for t in tree_flatten((args, kwargs))[0]
        if isinstance(t, torch.Tensor) and t.is_conj()
    )


def no_workspace(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> int:
    """No scratch memory besides the tensors (the default; cuDNN's workspace is not modelled)."""
    return 0


_CONVOLUTIONS = {torch.ops.aten.convolution.default}


def _tensor_bytes(values: Any) -> int:
    return sum(
        t.numel() * t.element_size() for t in tree_flatten(values)[0] if isinstance(t, torch.Tensor)
    )


def onednn_workspace(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> int:
    """oneDNN's scratch copies during a CPU convolution: its inputs and output once more.

    torch's CPU forward convolution (``mkldnn_convolution``) reorders the
    input, the weights and the result into oneDNN's blocked layouts and copies
    the result back (seen in the profiler as allocations made and freed inside
    the operator), so while it runs, about the bytes of its tensor arguments
    and result are held a second time. Its backward showed no such copies at
    the peak. Padding of the channels to the blocking (8 or 16) is not modelled.
    """
    if func not in _CONVOLUTIONS:
        return 0
    return _tensor_bytes(args) + _tensor_bytes(out)


class FlopCount(TorchDispatchMode):
    """Count the FLOPs of the torch operators run inside, including those of ``autograd.grad``.

    ``total`` holds the count (module docstring).
    """

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.total += operator_flops(func, args, kwargs, out)
        return out


class CostMode(TorchDispatchMode):
    """FLOPs and the peak bytes of the tensors made inside (module docstring).

    Args:
        workspace: scratch bytes an operator holds while it runs
            (:func:`no_workspace`, :func:`onednn_workspace`).

    Attributes:
        flops: FLOPs counted so far.
        live: bytes of the storages made inside that are still alive.
        peak: the largest ``live`` (plus the running operator's workspace) so far.
        operators: aten operators dispatched.
    """

    def __init__(self, workspace: Workspace = no_workspace) -> None:
        super().__init__()
        self.workspace = workspace
        self.flops = 0
        self.live = 0
        self.peak = 0
        self.operators = 0
        self._alive: set[int] = set()

    def reset_peak(self) -> None:
        """Start the peak again from the bytes alive now."""
        self.peak = self.live

    def _free(self, key: int, size: int) -> None:
        if key in self._alive:
            self._alive.discard(key)
            self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.operators += 1
        self.flops += operator_flops(func, args, kwargs, out)
        inputs = {
            t.untyped_storage()._cdata
            for t in tree_flatten((args, kwargs))[0]
            if isinstance(t, torch.Tensor)
        }
        for tensor in tree_flatten(out)[0]:
            # a zero tensor (forward-mode AD's zero tangents) allocates nothing
            if not isinstance(tensor, torch.Tensor) or tensor._is_zerotensor():
                continue
            storage = tensor.untyped_storage()
            key = storage._cdata
            # A view or an in-place result shares an input's storage: nothing new.
            if key in inputs or key in self._alive:
                continue
            size = storage.nbytes()
            self._alive.add(key)
            self.live += size
            weakref.finalize(storage, self._free, key, size)
        held = _materialised(func, args, kwargs) + self.workspace(func, args, kwargs, out)
        self.peak = max(self.peak, self.live + held)
        return out
