"""The main job on the embedded default (``genda demo``).

Until the assimilation pipeline lands, the demo exercises what exists end to
end: it spins up the built-in model on the default 32 x 64 x 8 grid, writes a
short training archive, reopens it with plain xarray, and reports the
circulation it holds (jets, tides, spectrum) next to a map.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import xarray as xr

from genda.evaluation.circulation import band_amplitude, jet_extremes, spectral_slopes
from genda.evaluation.spectra import kinetic_energy_spectrum
from genda.evaluation.tides import tidal_harmonics
from genda.grid import Grid
from genda.orchestration.simulate import simulate_archive
from genda.simulator import SimulatorConfig


@dataclass
class DemoResult:
    """Where the demo wrote its files and what it measured."""

    archive: Path
    figure: Path
    metrics_path: Path
    metrics: dict[str, Any] = field(default_factory=dict)


def circulation_metrics(ds: xr.Dataset) -> dict[str, Any]:
    """Per-level jets, migrating-tide amplitudes and the spectral slope of an archive."""
    grid = Grid.from_dataset(ds, ("u", "v", "T"))
    u = ds["u"].transpose("time", "altitude", "latitude", "longitude").values
    v = ds["v"].transpose("time", "altitude", "latitude", "longitude").values
    temp = ds["T"].transpose("time", "altitude", "latitude", "longitude").values
    lat = grid.latitude
    tides_u = tidal_harmonics(u, longitude_deg=grid.longitude)
    tides_t = tidal_harmonics(temp, longitude_deg=grid.longitude)
    spectrum = kinetic_energy_spectrum(u, v, grid).mean(0)
    jets = jet_extremes(u, lat)
    return {
        "altitude_km": grid.altitude.tolist(),
        "winter_jet_max_m_s": jets["northern_max"],
        "winter_jet_min_m_s": jets["northern_min"],
        "summer_jet_max_m_s": jets["southern_max"],
        "summer_jet_min_m_s": jets["southern_min"],
        "diurnal_u_m_s": band_amplitude(tides_u, 1, lat).round(1).tolist(),
        "semidiurnal_u_m_s": band_amplitude(tides_u, 2, lat).round(1).tolist(),
        "diurnal_T_K": band_amplitude(tides_t, 1, lat).round(1).tolist(),
        "temperature_mean_K": temp.mean(axis=(0, 2, 3)).round(1).tolist(),
        "spectral_slope_l4_14": [round(x, 2) for x in spectral_slopes(spectrum, slice(4, 15))],
    }


def run_demo(
    out_dir: Path,
    days: float = 2.0,
    spinup_days: float = 10.0,
    seed: int = 1,
    progress: bool = True,
    config: SimulatorConfig | None = None,
) -> DemoResult:
    """Simulate, write, reopen and summarise; files go under ``out_dir``.

    ``days`` must be at least 2 (the tidal analysis needs two whole days).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = simulate_archive(
        out_dir / "archive.zarr",
        config or SimulatorConfig(),
        days=days,
        seed=seed,
        spinup_days=spinup_days,
        overwrite=True,
        progress=progress,
        history=f"genda demo (days={days}, spinup_days={spinup_days}, seed={seed})",
    )
    ds = xr.open_zarr(archive)  # plain xarray, as a user would
    metrics = circulation_metrics(ds)
    metrics_path = out_dir / "circulation.json"
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")

    level = 95.0
    snap = ds.isel(time=-1).sel(altitude=level, method="nearest")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), constrained_layout=True)
    snap["T"].plot(ax=axes[0], cmap="RdBu_r", cbar_kwargs={"label": "T (K)"})
    step = max(1, ds.sizes["longitude"] // 21)
    axes[0].quiver(
        snap.longitude[::step],
        snap.latitude[::step],
        snap["u"].values[::step, ::step],
        snap["v"].values[::step, ::step],
        scale=1500,
    )
    axes[0].set_title(f"T and wind at {float(snap.altitude):.0f} km, {str(snap.time.values)[:16]}")
    zonal = ds["u"].mean(("time", "longitude"))
    zonal.plot.contourf(
        ax=axes[1],
        x="latitude",
        y="altitude",
        levels=17,
        cmap="RdBu_r",
        cbar_kwargs={"label": "zonal-mean u (m/s)"},
    )
    axes[1].set_title("zonal-mean zonal wind (northern winter)")
    figure = out_dir / "demo_map.png"
    fig.savefig(figure, dpi=110)
    plt.close(fig)
    return DemoResult(archive, figure, metrics_path, metrics)
