"""The training loss log: rows of losses, ``loss.csv`` and its plot ``loss.png``.

A row is a mapping with ``step``, ``train_loss``, ``val_loss``, ``lr``,
``wall_s`` and one validation column per noise level
(:func:`sigma_column`); missing or non-finite values are blank in the CSV
and read back as ``None``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "CSV_COLUMNS",
    "LOSS_CSV",
    "LOSS_PNG",
    "csv_text",
    "last",
    "plot_png",
    "read_history",
    "sigma_column",
]

LOSS_CSV = "loss.csv"
LOSS_PNG = "loss.png"
CSV_COLUMNS = ("step", "train_loss", "val_loss", "lr", "wall_s")


def sigma_column(sigma: float) -> str:
    """The CSV column of the validation loss at noise level ``sigma``."""
    return f"val_loss_sigma_{sigma:g}"


def _format(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.8g}"
    return str(value)


def csv_text(history: Sequence[Mapping[str, Any]], sigmas: Sequence[float]) -> str:
    """The rows of ``history`` as the text of ``loss.csv``."""
    columns = [*CSV_COLUMNS, *(sigma_column(s) for s in sigmas)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in history:
        writer.writerow([_format(row.get(c)) for c in columns])
    return buffer.getvalue()


def read_history(path: Path, until_step: int) -> list[dict[str, Any]]:
    """Rows of a ``loss.csv`` up to ``until_step`` (numbers parsed, blanks as ``None``)."""
    if not path.is_file():
        return []
    rows: list[dict[str, Any]] = []
    with path.open(newline="") as handle:
        for raw in csv.DictReader(handle):
            row: dict[str, Any] = {}
            for key, text in raw.items():
                if key is None:
                    continue
                row[key] = None if text in ("", None) else float(text)
            if row.get("step") is None:
                continue
            row["step"] = int(row["step"])
            if row["step"] <= until_step:
                rows.append(row)
    return rows


def last(history: Sequence[Mapping[str, Any]], key: str) -> float | None:
    """The last non-empty ``key`` of the log, or ``None``."""
    return next((r[key] for r in reversed(history) if r.get(key) is not None), None)


def plot_png(history: Sequence[Mapping[str, Any]], title: str) -> bytes:
    """Loss curves as PNG bytes (matplotlib's Agg canvas; no pyplot, no global backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for key, style, label in (
        ("train_loss", "-", "training (batch mean)"),
        ("val_loss", "o-", "validation (EMA, fixed noise)"),
    ):
        points = [(r["step"], r[key]) for r in history if r.get(key) is not None]
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, style, label=label, markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("EDM loss")
    if any(r.get("train_loss") or r.get("val_loss") for r in history):
        ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()
