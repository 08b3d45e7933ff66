"""Fixtures shared by several test modules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from genda.cli import app
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


def train_tiny_prior(archive: Path, out: Path, strategy: str) -> Path:
    """A prior of a few thousand parameters trained for 20 steps (seconds): for plumbing, not skill."""
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--data",
            str(archive),
            "--out",
            str(out),
            "--strategy",
            strategy,
            "--no-progress",
            "--base-channels",
            "8",
            "--channel-mult",
            "1,2",
            "--val-gap-hours",
            "2",
            "--steps",
            "20",
            "--batch-size",
            "4",
            "--warmup-steps",
            "2",
            "--lr",
            "2e-3",
        ],
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def tiny_prior(tiny_archive: Path, tmp_path_factory) -> Path:
    """A ``joint3d`` checkpoint of :func:`train_tiny_prior` on :func:`tiny_archive` (made once)."""
    return train_tiny_prior(tiny_archive, tmp_path_factory.mktemp("prior") / "joint3d", "joint3d")


@pytest.fixture(scope="session")
def train_prior():
    """:func:`train_tiny_prior`, for modules that train their own (e.g. ``layer2d``)."""
    return train_tiny_prior


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    """One Prefect test harness (temporary database and server) per module that asks."""
    os.environ.setdefault("PREFECT_HOME", str(tmp_path_factory.mktemp("prefect-home")))
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
