"""Checking a torch device before any work: a sentence instead of a CUDA traceback."""

from __future__ import annotations

import torch

from genda.errors import DeviceError


def check_device(device: str | torch.device) -> torch.device:
    """The torch device named by ``device``, checked to exist in this build and on this machine.

    Args:
        device: ``cpu``, ``cuda`` or ``cuda:N`` (a :class:`torch.device` too).

    Raises:
        DeviceError: the name is not a torch device, another kind than CPU or
            CUDA, or CUDA (or that GPU) is not available here.
    """
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(f"{device!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if resolved.type == "cpu":
        return resolved
    if resolved.type != "cuda":
        raise DeviceError(f"device {device!r}: genda runs on cpu or cuda (cuda:N)")
    if not torch.cuda.is_available():
        raise DeviceError(
            f"device {device!r} requested but CUDA is not available in this torch build "
            "or on this machine; use device cpu"
        )
    if resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise DeviceError(
            f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return resolved


__all__ = ["check_device"]
