"""Refuse absurd requests before any work: output size against free disk.

A mistyped ``--members 100000000`` or ``--days 1e7`` would otherwise create a
store or start a run that can never finish. The estimate is the uncompressed
float32 size, an upper bound of what the compressed Zarr chunks take, so a
refusal is never wrong about the disk; a request that fits but is large asks
for confirmation (the ``yes`` setting, ``--yes`` on the command line).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from genda.errors import InvalidValueError

CONFIRM_BYTES = 50 * 2**30
"""Outputs larger than this (uncompressed) need ``yes`` even when they fit."""


def human_bytes(size: float) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(size) < 1024 or unit == "PiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} PiB"  # pragma: no cover


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Free bytes on the file system that holds ``path`` (or its nearest existing parent)."""
    folder = Path(path).absolute()
    while not folder.exists():
        folder = folder.parent
    return shutil.disk_usage(folder).free


def check_output_size(
    size_bytes: float, path: str | os.PathLike[str], what: str, *, yes: bool = False
) -> None:
    """Refuse an output of ``size_bytes`` at ``path`` that cannot fit, or is large and unconfirmed.

    Args:
        size_bytes: the estimated (uncompressed) size of what will be written.
        path: where it goes.
        what: how the request reads to the user, e.g. ``"100000000 members of 196.6 KiB"``.
        yes: the user confirmed a large output.

    Raises:
        InvalidValueError: more than the free disk at ``path``, or more than
            :data:`CONFIRM_BYTES` without ``yes``.
    """
    free = free_bytes(path)
    if size_bytes > free:
        raise InvalidValueError(
            f"{what} need up to {human_bytes(size_bytes)} at {path}, but only "
            f"{human_bytes(free)} are free there; ask for less"
        )
    if size_bytes > CONFIRM_BYTES and not yes:
        raise InvalidValueError(
            f"{what} need up to {human_bytes(size_bytes)} at {path}; set yes (--yes) to confirm "
            "an output this large"
        )


__all__ = ["CONFIRM_BYTES", "check_output_size", "free_bytes", "human_bytes"]
