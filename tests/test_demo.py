"""The demo pipeline end to end on a small grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr

from genda.orchestration import run_demo
from genda.simulator import SimulatorConfig


def test_demo_writes_archive_figure_and_metrics(tmp_path: Path) -> None:
    config = SimulatorConfig(nlat=16, nlon=32, layers=4, levels=4)
    result = run_demo(
        tmp_path / "demo", days=2, spinup_days=1, seed=3, progress=False, config=config
    )
    ds = xr.open_zarr(result.archive)
    assert ds.sizes == {"time": 48, "altitude": 4, "latitude": 16, "longitude": 32}
    assert result.figure.stat().st_size > 10_000  # a real PNG, not an empty file
    metrics = json.loads(result.metrics_path.read_text())
    assert metrics == result.metrics
    for key in ("winter_jet_max_m_s", "diurnal_u_m_s", "semidiurnal_u_m_s", "temperature_mean_K"):
        values = np.asarray(metrics[key])
        assert values.shape == (4,) and np.isfinite(values).all()
    # mean temperature follows the reference profile: mesopause below the top
    assert 150 < min(metrics["temperature_mean_K"]) < max(metrics["temperature_mean_K"]) < 450
