"""docs/examples/ runs as a user would run it, with small settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"


@pytest.mark.slow
def test_instrument_files_to_analysis_and_figures(tmp_path: Path) -> None:
    out = tmp_path / "example"
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "instrument_files.py"), "--out", str(out), "--small"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # every format was written, ingested and assimilated
    for kind in ("radar-netcdf", "lidar-netcdf", "mls"):
        table = pd.read_parquet(out / f"obs_{kind}.parquet")
        assert len(table) > 0, kind
    radar = pd.read_parquet(out / "obs_radar-netcdf.parquet")
    drawn = pd.read_parquet(out / "drawn.parquet")
    # MLS's TAI93 time stamps (leap seconds counted) come back as the drawn UTC times
    mls = pd.read_parquet(out / "obs_mls.parquet")
    drawn_times = set(drawn.loc[drawn["station"] == "MLS", "time"])
    assert set(mls["time"]) <= drawn_times
    # geometric heights written from the model's level heights land back on the levels
    levels = np.unique(drawn["alt_km"])
    offsets = np.abs(radar["alt_km"].to_numpy()[:, None] - levels[None, :]).min(axis=1)
    assert offsets.max() < 1e-6
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert len(figures) == 5, figures
    with xr.open_dataset(out / "analysis.nc") as analysis:
        assert {"u_mean", "v_mean", "T_mean", "u_std"} <= set(analysis.data_vars)
        assert "genda_provenance" in analysis.attrs
        assert np.isfinite(analysis["T_mean"].values).all()
