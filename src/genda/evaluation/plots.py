"""Shared plotting helpers for evaluation figures.

Figures are made with :class:`matplotlib.figure.Figure` directly, not through
``pyplot``: no global backend is selected, no figure registry keeps figures
alive, and plotting from a library call (or a worker thread) leaves the
caller's matplotlib state alone. ``Figure.savefig`` renders PNGs with Agg.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from genda.errors import InvalidValueError

__all__ = ["file_stem", "hide_unused", "level_label", "new_figure", "panel_grid", "save_figure"]

DPI = 110


def new_figure(
    nrows: int = 1,
    ncols: int = 1,
    *,
    panel_size: tuple[float, float] = (4.0, 3.2),
    sharex: bool | str = False,
    sharey: bool | str = False,
) -> tuple[Figure, np.ndarray]:
    """A constrained-layout figure and its axes as an ``(nrows, ncols)`` object array."""
    fig = Figure(figsize=(ncols * panel_size[0], nrows * panel_size[1]), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=sharex, sharey=sharey)
    return fig, axes


def panel_grid(count: int, max_columns: int = 4) -> tuple[int, int]:
    """``(nrows, ncols)`` of a grid with room for ``count`` panels, at most ``max_columns`` wide."""
    if count < 1:
        raise InvalidValueError(f"need at least one panel, got {count}")
    ncols = min(count, max_columns)
    return math.ceil(count / ncols), ncols


def hide_unused(axes: np.ndarray, used: int) -> None:
    """Switch off the panels after the first ``used`` ones (row-major)."""
    ax: Axes
    for ax in axes.ravel()[used:]:
        ax.set_axis_off()


def save_figure(fig: Figure, path: Path, dpi: int = DPI) -> Path:
    """Write ``fig`` to ``path`` (parent folders created) and return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def file_stem(text: str) -> str:
    """``text`` reduced to characters safe in a file name (letters, digits, ``-_.``)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._")
    return stem or "figure"


def level_label(level_km: float) -> str:
    """An altitude level as file names and messages write it: ``90``, ``91.7`` (0.1 km)."""
    return f"{level_km:.1f}".rstrip("0").rstrip(".")
