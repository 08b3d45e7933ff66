"""Where training runs: the device, the ``torch.distributed`` ranks, the RNG and autocast."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist

from genda.devices import check_device

__all__ = ["autocast", "distributed", "own_rng", "resolve_device"]


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> ``cuda`` (the local rank's GPU under DDP) if available, else ``cpu``.

    A CUDA device without an index gets the local rank's (``LOCAL_RANK``) or the current one.
    """
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    resolved = check_device(device)
    if resolved.type == "cuda":
        if resolved.index is None:  # an explicit index: DDP and the RNG fork need one
            index = int(os.environ.get("LOCAL_RANK", torch.cuda.current_device()))
            resolved = torch.device("cuda", index)
    return resolved


def distributed() -> tuple[int, int]:
    """``(rank, world size)`` of an initialised ``torch.distributed``, else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@contextlib.contextmanager
def own_rng(device: torch.device) -> Iterator[None]:
    """Keep the caller's global RNG state: training reseeds it every step (dropout)."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA when ``enabled``; nothing on the CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
