"""Do the trajectory OSSE's members keep the model's power per degree?

    python benchmarks/member_spectra.py --work outputs/cycled_osse

Run after ``benchmarks/trajectory_osse.py``: it reads that run's stores
(``--work``): the filtering cycle (``cycled.zarr``), the independent windows
(``genda.zarr``) and the model EnKF (``enkf.zarr``). At the analysis times
of the last day that all three hold, each member's horizontal kinetic-energy
spectrum (:func:`genda.evaluation.spectra.kinetic_energy_spectrum`) is
averaged over the members and divided by the truth's, level by level.

Reports the geometric mean of that ratio over times and levels per degree,
and per band of degrees 1-3 / 4-8 / 9-21 (planetary waves and tides; the
synoptic scales the radars see; the small scales that only the prior
fills). 1 means the members carry the truth's power; below 1, too smooth;
above, too noisy. Writes ``benchmarks/results/member_spectra-cpu.json`` and
``docs/figures/cycles/member_spectra.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from _common import RESULTS, machine, print_table
from genda.atomic import write_file
from genda.evaluation.spectra import kinetic_energy_spectrum
from genda.grid import Grid

ROOT = Path(__file__).resolve().parents[1]
FIGURE = ROOT / "docs" / "figures" / "cycles" / "member_spectra.png"
SYSTEMS = {
    "genda-cycled": "cycled.zarr",
    "genda-independent": "genda.zarr",
    "cycled-enkf": "enkf.zarr",
}
BANDS = {"1-3": (1, 3), "4-8": (4, 8), "9-21": (9, 21)}


def spectra(ds: xr.Dataset, grid: Grid, time: np.datetime64, members: bool) -> np.ndarray:
    """``(L, l)``: the members' mean spectrum at ``time`` (or the truth's), per level."""
    state = ds.sel(time=time)
    order = ("member", "altitude", "latitude", "longitude") if members else ("altitude", ...)
    u = state["u"].transpose(*order).values
    v = state["v"].transpose(*order).values
    power = kinetic_energy_spectrum(u, v, grid)
    return power.mean(0) if members else power


def ratios(work: Path, hours: int) -> tuple[dict[str, np.ndarray], list[np.datetime64]]:
    """Per system the ratio ``(times, L, l)`` of member to truth power, degrees ``l >= 1``
    (degree 0 of a wind has no power), at the analysis times of the last ``hours``."""
    truth = xr.open_zarr(work / "truth.zarr")
    grid = Grid.from_dataset(truth)
    stores = {name: xr.open_zarr(work / path) for name, path in SYSTEMS.items()}
    shared = set.intersection(*(set(ds.time.values) for ds in stores.values()))
    last = max(shared)
    times = sorted(t for t in shared if t > last - np.timedelta64(hours, "h"))
    out = {}
    for name, ds in stores.items():
        out[name] = np.stack(
            [
                spectra(ds, grid, t, True)[..., 1:] / spectra(truth, grid, t, False)[..., 1:]
                for t in times
            ]
        )
    return out, times


def geometric_mean(values: np.ndarray) -> float:
    return float(np.exp(np.mean(np.log(values))))


def figure(per_degree: dict[str, list[float]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.0), constrained_layout=True)
    for name, values in per_degree.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=name)
    ax.axhline(1.0, color="k", linewidth=0.8)
    for band, (low, high) in BANDS.items():
        ax.axvline(high + 0.5, color="0.7", linewidth=0.8)
        ax.text(
            (low + high) / 2, 0.98, band, transform=ax.get_xaxis_transform(), ha="center", va="top"
        )
    ax.set_yscale("log")
    ticks = [0.5, 0.7, 1.0, 1.4, 2.0, 3.0, 4.0]
    ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("spherical-harmonic degree l")
    ax.set_ylabel("member kinetic energy / truth's")
    ax.set_title("power per degree, last day of the trajectory OSSE (all levels)")
    ax.legend()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("outputs") / "cycled_osse")
    parser.add_argument("--hours", type=int, default=24, help="the last hours to pool")
    args = parser.parse_args()
    by_system, times = ratios(args.work, args.hours)
    rows: list[dict[str, Any]] = []
    per_degree: dict[str, list[float]] = {}
    for name, ratio in by_system.items():
        per_degree[name] = [geometric_mean(ratio[..., d]) for d in range(ratio.shape[-1])]
        rows.append(
            {
                "system": name,
                **{
                    band: geometric_mean(ratio[..., low - 1 : high])
                    for band, (low, high) in BANDS.items()
                },
            }
        )
    print_table(
        f"members' kinetic energy over the truth's, geometric mean over {len(times)} analysis "
        "times of the last day and every level",
        rows,
    )
    payload = {
        "benchmark": "member_spectra",
        "machine": machine(),
        "times": [str(t)[:19] for t in times],
        "rows": rows,
        "per_degree": per_degree,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_file(RESULTS / "member_spectra-cpu.json", json.dumps(payload, indent=2) + "\n")
    figure(per_degree, FIGURE)


if __name__ == "__main__":
    main()
