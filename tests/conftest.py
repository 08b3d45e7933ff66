"""Fixtures shared by several test modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from genda.orchestration.simulate import simulate_archive
from genda.simulator import SimulatorConfig
from genda.threads import cpu_threads

TINY_ARCHIVE_CHUNK_HOURS = 12
"""Hours per chunk of :func:`tiny_archive`: its 48 hours make 4 chunks."""


@pytest.fixture(scope="session")
def tiny_archive(tmp_path_factory) -> Path:
    """Two days of hourly output of the built-in model on 16 x 32 x 4 (a few seconds, made once)."""
    out = tmp_path_factory.mktemp("tiny") / "archive.zarr"
    with cpu_threads(1):
        simulate_archive(
            out,
            SimulatorConfig(nlat=16, nlon=32, layers=4, levels=4),
            days=2,
            seed=1,
            spinup_days=0,
            progress=False,
            chunk_hours=TINY_ARCHIVE_CHUNK_HOURS,
        )
    return out
