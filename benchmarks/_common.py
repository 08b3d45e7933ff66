"""Shared helpers of the benchmarks: machine description, JSON results, tables.

``FlopCount`` (FLOPs of torch operators, forward and backward) lives in
:mod:`genda.planning.dispatch`, which the run planner shares; it is re-exported here.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

import genda
from genda.planning.dispatch import FlopCount

RESULTS = Path(__file__).resolve().parent / "results"


def _status_mib(field: str) -> float | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in MiB; ``None`` off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def rss_now_mib() -> float | None:
    """Resident set size of this process now (Linux ``/proc``; ``None`` elsewhere)."""
    return _status_mib("VmRSS")


def reset_peak_rss() -> bool:
    """Start the peak resident set size again from now (Linux: ``/proc/self/clear_refs``).

    Without it the peak of a measured span includes whatever came before it
    (loading a model, a warm-up). Returns whether the peak could be reset.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """Peak resident set size of this process since it started or since :func:`reset_peak_rss`.

    Linux: ``VmHWM`` of ``/proc/self/status``; elsewhere ``ru_maxrss`` (KiB on
    Linux, bytes on macOS), which cannot be reset.
    """
    high_water = _status_mib("VmHWM")
    if high_water is not None:
        return high_water
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "genda": genda.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def machine_tag() -> str:
    return (
        "gpu-" + torch.cuda.get_device_name(0).replace(" ", "-")
        if torch.cuda.is_available()
        else "cpu"
    )


def write_result(
    name: str, rows: list[dict[str, Any]], extra: dict[str, Any] | None = None
) -> Path:
    """Write ``benchmarks/results/<name>-<machine>.json`` and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{machine_tag()}.json"
    payload = {
        "benchmark": name,
        "measured": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "rows": rows,
        **(extra or {}),
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    table = Table(title=title)
    for key in rows[0]:
        table.add_column(key, justify="right" if isinstance(rows[0][key], int | float) else "left")
    for row in rows:
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()))
    Console(width=max(200, Console().width)).print(table)


__all__ = [
    "RESULTS",
    "FlopCount",
    "machine",
    "machine_tag",
    "peak_rss_mib",
    "print_table",
    "reset_peak_rss",
    "rss_now_mib",
    "write_result",
]
