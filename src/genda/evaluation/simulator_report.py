"""Long-run acceptance report of the built-in model, with the figures of docs/simulator.md.

    python -m genda.evaluation.simulator_report --days 365 --out docs/figures

Runs the model for ``--days`` (checking for NaN and recording the daily
kinetic and total energy), keeps hourly output of the last ``--analysis-days``,
and writes ``simulator_report.json`` plus PNGs: a map, zonal-mean wind and
temperature against latitude and altitude, tidal amplitude against altitude,
kinetic-energy spectra, and the energy time series.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from genda.evaluation.circulation import (
    band_amplitude,
    band_background,
    jet_extremes,
    spectral_slopes,
)
from genda.evaluation.spectra import kinetic_energy_spectrum
from genda.evaluation.tides import tidal_harmonics
from genda.grid import Grid
from genda.simulator import Simulator, SimulatorConfig


def run(days: int, analysis_days: int, seed: int, config: SimulatorConfig) -> dict[str, Any]:
    """Integrate and collect the energy series and the hourly fields of the last days."""
    sim = Simulator(config, seed=seed)
    phi = sim.surface_geopotential
    energy, kinetic = [], []
    start = time.perf_counter()
    for _ in tqdm(range(days - analysis_days), desc="model days", unit="day"):
        sim.run_days(1)
        energy.append(float(sim.dynamics.total_energy(sim.state, phi())))
        kinetic.append(float(sim.dynamics.kinetic_energy(sim.state, phi())))
    fields = []
    for hour in tqdm(range(24 * analysis_days), desc="analysis hours", unit="h"):
        sim.advance(3600.0)
        fields.append(sim.snapshot().cpu().numpy())
        if (hour + 1) % 24 == 0:
            energy.append(float(sim.dynamics.total_energy(sim.state, phi())))
            kinetic.append(float(sim.dynamics.kinetic_energy(sim.state, phi())))
    return {
        "sim": sim,
        "fields": np.stack(fields),  # (T, V, L, H, W)
        "energy": np.asarray(energy),
        "kinetic": np.asarray(kinetic),
        "wall_s": time.perf_counter() - start,
    }


def analyse(result: dict[str, Any]) -> dict[str, Any]:
    sim: Simulator = result["sim"]
    grid = sim.output_grid
    fields = result["fields"]
    lat = grid.latitude
    u, v, temp = fields[:, 0], fields[:, 1], fields[:, 2]
    tides = {
        name: tidal_harmonics(fields[:, i], longitude_deg=grid.longitude)
        for i, name in ((0, "u"), (2, "T"))
    }
    tidal: dict[str, Any] = {}
    for name, ta in tides.items():
        for n, label in ((1, "diurnal_low_latitudes"), (2, "semidiurnal_midlatitudes")):
            amplitude = band_amplitude(ta, n, lat)
            background = band_background(ta, n, lat)
            tidal[f"{name}_{label}"] = {
                "amplitude": amplitude.round(3).tolist(),
                "background": background.round(3).tolist(),
                "ratio": (amplitude / background).round(2).tolist(),
                "grows_with_altitude": bool(amplitude[-1] > amplitude[0]),
            }
    spectrum = kinetic_energy_spectrum(u, v, grid).mean(0)  # (L, l)
    degrees = np.arange(spectrum.shape[-1])
    fit = slice(4, max(5, (spectrum.shape[-1] * 2) // 3))
    tail = slice(max(5, (spectrum.shape[-1] * 2) // 3), spectrum.shape[-1])
    slopes = {
        "large_scales": spectral_slopes(spectrum, fit),
        "small_scales": spectral_slopes(spectrum, tail),
        "large_scales_degrees": [int(degrees[fit][0]), int(degrees[fit][-1])],
        "small_scales_degrees": [int(degrees[tail][0]), int(degrees[tail][-1])],
    }
    energy, kinetic = result["energy"], result["kinetic"]
    half = len(kinetic) // 2
    return {
        "altitude_km": grid.altitude.tolist(),
        "finite": bool(np.isfinite(fields).all() and np.isfinite(energy).all()),
        "kinetic_energy_J_m2": {
            "min": float(kinetic.min()),
            "max": float(kinetic.max()),
            "mean_first_half": float(kinetic[:half].mean()),
            "mean_second_half": float(kinetic[half:].mean()),
        },
        "total_energy_relative_range": float((energy.max() - energy.min()) / energy.mean()),
        "zonal_mean_u_extremes_m_s": jet_extremes(u, lat),
        "temperature_K": {"min": float(temp.min()), "max": float(temp.max())},
        "tides": tidal,
        "spectral_slopes": slopes,
        "spectrum_mean": spectrum.tolist(),
    }


def plot(result: dict[str, Any], summary: dict[str, Any], out: Path) -> list[Path]:
    """Write the report's figures to ``out``: map, zonal means, tides, spectrum, energy."""
    sim: Simulator = result["sim"]
    grid = sim.output_grid
    fields = result["fields"]
    return [
        _plot_map(sim, fields[-1], out / "simulator_map.png"),
        _plot_zonal_mean(grid, fields, out / "simulator_zonal_mean.png"),
        _plot_tides(summary["tides"], grid.altitude, out / "simulator_tides.png"),
        _plot_spectrum(summary, grid.altitude, out / "simulator_spectrum.png"),
        _plot_energy(result["kinetic"], out / "simulator_energy.png"),
    ]


def _save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` to ``path`` and close it."""
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_map(sim: Simulator, last: np.ndarray, path: Path) -> Path:
    """T and wind vectors of the last fields ``(V, L, H, W)`` at the level nearest 95 km."""
    grid = sim.output_grid
    lat, lon, alt = grid.latitude, grid.longitude, grid.altitude
    level = int(np.argmin(np.abs(alt - 95.0)))
    fig, ax = plt.subplots(figsize=(8, 4), constrained_layout=True)
    mesh = ax.pcolormesh(lon, lat, last[2, level], cmap="RdBu_r", shading="auto")
    step = max(1, grid.nlon // 24)
    ax.quiver(
        lon[::step],
        lat[::step],
        last[0, level, ::step, ::step],
        last[1, level, ::step, ::step],
        scale=1500,
    )
    fig.colorbar(mesh, ax=ax, label="T (K)")
    ax.set(
        xlabel="longitude (deg E)",
        ylabel="latitude (deg N)",
        title=f"T and wind at {alt[level]:.0f} km, {np.datetime_as_string(sim.time, unit='h')}",
    )
    return _save(fig, path)


def _plot_zonal_mean(grid: Grid, fields: np.ndarray, path: Path) -> Path:
    """Time- and zonal-mean u and T of ``fields`` ``(T, V, L, H, W)`` against latitude and altitude."""
    lat, alt = grid.latitude, grid.altitude
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True, sharey=True)
    zonal_u = fields[:, 0].mean(axis=(0, 3))
    zonal_t = fields[:, 2].mean(axis=(0, 3))
    limit = np.abs(zonal_u).max()
    m0 = axes[0].contourf(lat, alt, zonal_u, levels=np.linspace(-limit, limit, 17), cmap="RdBu_r")
    fig.colorbar(m0, ax=axes[0], label="zonal-mean u (m/s)")
    m1 = axes[1].contourf(lat, alt, zonal_t, levels=16, cmap="viridis")
    fig.colorbar(m1, ax=axes[1], label="zonal-mean T (K)")
    for ax in axes:
        ax.set(xlabel="latitude (deg N; northern winter)")
    axes[0].set(ylabel="altitude (km)")
    return _save(fig, path)


def _plot_tides(entry: dict[str, Any], alt: np.ndarray, path: Path) -> Path:
    """Tidal amplitude and background of u and T (the summary's ``tides``) against altitude."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 4), constrained_layout=True, sharey=True)
    for ax, name, unit in ((axes[0], "u", "m/s"), (axes[1], "T", "K")):
        for key, label, style in (
            ("diurnal_low_latitudes", "diurnal, |lat| < 35", "-o"),
            ("semidiurnal_midlatitudes", "semidiurnal, 35-65", "-s"),
        ):
            values = entry[f"{name}_{key}"]
            ax.plot(values["amplitude"], alt, style, label=label)
            ax.plot(
                values["background"],
                alt,
                ":",
                color=ax.lines[-1].get_color(),
                label=f"background ({label.split(',')[0]})",
            )
        ax.set(xlabel=f"amplitude of {name} ({unit})", xscale="log")
        ax.legend(fontsize=7)
    axes[0].set(ylabel="altitude (km)")
    return _save(fig, path)


def _plot_spectrum(summary: dict[str, Any], alt: np.ndarray, path: Path) -> Path:
    """The mean kinetic-energy spectrum at about four levels, with an ``l^-3`` line."""
    spectrum = np.asarray(summary["spectrum_mean"])
    degrees = np.arange(spectrum.shape[-1])
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    for i in range(0, len(alt), max(1, len(alt) // 4)):
        ax.loglog(degrees[1:], spectrum[i, 1:], label=f"{alt[i]:.0f} km")
    ref = spectrum[0, 5] * (degrees[1:] / 5.0) ** -3.0
    ax.loglog(degrees[1:], ref, "k--", lw=0.8, label="l^-3")
    ax.set(
        xlabel="total wavenumber l",
        ylabel="kinetic energy (m2 s-2)",
        title="horizontal kinetic-energy spectrum",
    )
    ax.legend(fontsize=8)
    return _save(fig, path)


def _plot_energy(kinetic: np.ndarray, path: Path) -> Path:
    """The daily global kinetic energy against model day."""
    fig, ax = plt.subplots(figsize=(7, 3), constrained_layout=True)
    ax.plot(np.arange(1, len(kinetic) + 1), kinetic)
    ax.set(xlabel="model day", ylabel="kinetic energy (J m-2)", title="global kinetic energy")
    return _save(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--analysis-days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("docs/figures"))
    args = parser.parse_args()
    # one intra-op thread: the transforms are small (see genda.threads)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    config = SimulatorConfig()
    result = run(args.days, args.analysis_days, args.seed, config)
    summary = analyse(result)
    summary.update(
        {
            "days": args.days,
            "analysis_days": args.analysis_days,
            "seed": args.seed,
            "wall_s": result["wall_s"],
            "seconds_per_model_day": result["wall_s"] / args.days,
        }
    )
    summary["figures"] = [str(p) for p in plot(result, summary, args.out)]
    (args.out / "simulator_report.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k not in ("spectrum_mean",)}, indent=1))


if __name__ == "__main__":
    main()
