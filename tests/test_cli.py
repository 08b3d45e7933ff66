"""The ``genda`` command, end to end with a tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import genda
from genda.cli import app
from genda.normalization import Normalization
from genda.orchestration import fit_time_step
from genda.simulator import SimulatorConfig
from genda.storage import open_archive, read_normalization

runner = CliRunner()
TINY = ["--nlat", "16", "--nlon", "32", "--levels", "4", "--layers", "4", "--spinup-days", "0"]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """``genda simulate`` for 6 model hours on a 16 x 32 x 4 grid (a few seconds)."""
    out = tmp_path_factory.mktemp("sim") / "archive.zarr"
    result = runner.invoke(
        app, ["simulate", "--out", str(out), "--days", "0.25", "--seed", "3", *TINY]
    )
    return out, result


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"genda {genda.__version__}"


def test_simulate_writes_an_archive_that_open_archive_reads(simulated) -> None:
    out, result = simulated
    assert result.exit_code == 0, result.output
    ds = open_archive(out)
    assert dict(ds.sizes) == {"time": 6, "altitude": 4, "latitude": 16, "longitude": 32}
    assert list(ds.data_vars) == ["u", "v", "T"]
    assert np.all(np.isfinite(ds["T"].values))
    assert 100.0 < float(ds["T"].min()) and float(ds["T"].max()) < 500.0
    assert ds.attrs["seed"] == 3
    assert ds.attrs["spinup_days"] == 0.0
    assert ds.attrs["source"].startswith("genda built-in isentropic-layer MLT model")
    config = json.loads(ds.attrs["model_config"])
    assert (config["nlat"], config["nlon"], config["levels"], config["layers"]) == (16, 32, 4, 4)
    assert "genda simulate --out" in ds.attrs["history"]
    assert ds.attrs["genda_version"] == genda.__version__
    assert isinstance(read_normalization(out), Normalization)
    # the summary table
    for text in ("min", "mean", "max", "time 6 x altitude 4", "2000-01-01T06:00:00", "wall time"):
        assert text in result.stdout


def test_summary_and_refusal_to_overwrite(simulated) -> None:
    out, _ = simulated
    result = runner.invoke(app, ["summary", str(out)])
    assert result.exit_code == 0, result.output
    assert "time 6 x altitude 4" in result.stdout and "m s-1" in result.stdout

    again = runner.invoke(
        app, ["simulate", "--out", str(out), "--days", "0.25", "--seed", "4", *TINY]
    )
    assert again.exit_code == 1
    assert "exists" in again.stderr and "--overwrite" in again.stderr

    missing = runner.invoke(app, ["summary", str(out.parent / "absent.zarr")])
    assert missing.exit_code == 1
    assert "no such file" in missing.stderr


def test_time_step_fits_the_output_interval() -> None:
    config = SimulatorConfig(nlat=16, nlon=32, layers=4, levels=4)
    assert fit_time_step(config, 1.0) is config  # the automatic step already divides an hour
    quarter = fit_time_step(config, 0.25)
    assert 900.0 % quarter.time_step == 0 and quarter.time_step <= config.time_step
    explicit = SimulatorConfig(nlat=16, nlon=32, layers=4, levels=4, dt_seconds=700.0)
    assert fit_time_step(explicit, 1.0) is explicit  # an explicit step is the user's choice
