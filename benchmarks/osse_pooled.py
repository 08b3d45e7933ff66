"""Statistics of the multi-window OSSE pooled over windows: member power and rank histograms.

One window of 16 members cannot test "the members' power is within 20 % of
model data at every degree and level": the power of one degree ``l`` at one
level has ``N (2 l + 1)`` degrees of freedom, about 10 % noise at ``l = 6``,
and the worst of several hundred degree-level pairs sits near 3.5 times that.
Pooled over the windows (``W N`` members), the noise falls by ``sqrt(W)``.

The reference matters as much as the members. ``genda evaluate``'s per-window
ratio divides by the power of 96 times of the truth run: fine for one window,
but the same 96 fields sit under every window of a run, so their own sampling
error (10-15 % at single degree-level pairs, measured as the worst of two
interleaved halves of a 100-day run) does not average out and shows up as a
pattern shared by every method, model states included. Here the pooled ratio
is a ratio of means: the members' mean power over all windows, over the mean
power of :data:`REFERENCE_FIELDS` times of a long model run (the 100-day
held-out run). The climatology baseline's members are model states drawn from
the training run, so its row is the measurement's floor: how close real model
states come under the same test.

Rank histograms are averaged over windows: one window's histogram of 17 bins
over ~2000 grid points is dominated by the spatial correlation of its errors.

Shapes: power ``(L, T + 1)`` per variable (degrees ``0 .. T``, T the 2/3
truncation); the ratios drop ``l = 0``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from genda.evaluation.posterior_fidelity import scalar_power
from genda.grid import Grid

SMALL_SCALES_FROM = 6
"""The degrees of the acceptance check: ``l >= 6``."""

REFERENCE_FIELDS = 960
"""Times of the reference run whose mean power is the model data's (evenly spread)."""

MEMBER_ORDER = ("member", "altitude", "latitude", "longitude")


def window_member_power(store: Path, grid: Grid) -> tuple[dict[str, np.ndarray], int]:
    """Summed power per degree over the complete members of the store's one window.

    Returns variable -> ``(L, T + 1)`` (sum over members of ``sum_m |a_lm|^2``) and the
    number of members summed.
    """
    ds = xr.open_zarr(store).isel(time=0)
    keep = np.asarray(ds["complete"].values, dtype=bool)
    count = int(keep.sum())
    sums = {}
    for name in grid.variables:
        members = ds[name].transpose(*MEMBER_ORDER).values[keep]
        if count:
            sums[name] = scalar_power(members, grid) * count
        else:  # a window without complete members adds nothing (not NaN) to the sums
            sums[name] = np.zeros((grid.nlevels, (grid.nlon - 1) // 3 + 1))
    return sums, count


def reference_power(
    run: xr.Dataset, grid: Grid, fields: int = REFERENCE_FIELDS
) -> dict[str, np.ndarray]:
    """Mean power per degree ``(L, T + 1)`` of ``fields`` evenly spread times of a model run."""
    count = run.sizes["time"]
    picks = np.unique(np.linspace(0, count - 1, min(count, fields)).round().astype(int))
    chosen = run.isel(time=picks)
    order = ("time", "altitude", "latitude", "longitude")
    return {
        name: scalar_power(chosen[name].transpose(*order).values, grid) for name in grid.variables
    }


def pooled_member_power(
    sums: dict[str, np.ndarray], members: int, windows: int, reference: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Members' mean power over the windows, over the reference's; worst and median ``|ratio - 1|`` at ``l >= 6``.

    Args:
        sums: variable -> ``(L, T + 1)`` power summed over every member of every window.
        members: how many members were summed; windows: over how many windows.
        reference: variable -> ``(L, T + 1)`` mean power of the model run.
    """
    degree = np.arange(next(iter(reference.values())).shape[1])[1:]
    keep = degree >= SMALL_SCALES_FROM
    ratio = {name: (sums[name] / members)[:, 1:] / reference[name][:, 1:] for name in sums}
    return {
        "windows": windows,
        "members": members,
        "reference_fields": REFERENCE_FIELDS,
        "degree": degree.tolist(),
        "power_ratio": {name: r.tolist() for name, r in ratio.items()},
        "worst_power_error": {
            name: float(np.nanmax(np.abs(r[:, keep] - 1.0))) for name, r in ratio.items()
        },
        "median_power_error": {
            name: float(np.nanmedian(np.abs(r[:, keep] - 1.0))) for name, r in ratio.items()
        },
        "mean_power_ratio": {name: float(np.nanmean(r[:, keep])) for name, r in ratio.items()},
    }


def pooled_rank_histograms(metrics: Sequence[dict[str, Any]]) -> dict[str, list[float]]:
    """Mean rank histogram over windows per variable (frequencies, summing to 1)."""
    out: dict[str, list[float]] = {}
    names = metrics[0]["ensemble"]["variables"] if metrics else {}
    for name in names:
        histograms = [
            np.asarray(m["ensemble"]["variables"][name]["total"]["rank_histogram"], dtype=float)
            for m in metrics
            if m["ensemble"]["variables"][name]["total"].get("rank_histogram")
        ]
        if histograms and len({h.size for h in histograms}) == 1:
            out[name] = np.mean(histograms, axis=0).tolist()
    return out


def pooled_figure(
    pooled: dict[str, dict[str, Any]], altitudes: Sequence[float], path: Path
) -> Path:
    """Pooled power ratio per degree (one panel per variable) and rank histograms, per method.

    ``pooled``: ``{method: {"member_power": pooled_member_power(...), "rank_histograms": ...}}``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # ensembles only: a one-member analysis is a mean, smooth by construction
    methods = [
        m
        for m, p in pooled.items()
        if p.get("member_power") and p["member_power"]["members"] > p["member_power"]["windows"]
    ]
    variables = list(pooled[methods[0]]["member_power"]["power_ratio"]) if methods else []
    fig, axes = plt.subplots(
        2, max(1, len(variables)), figsize=(4.2 * max(1, len(variables)), 7.0), squeeze=False
    )
    colours = plt.get_cmap("tab20")
    for column, name in enumerate(variables):
        ax = axes[0, column]
        ax.axhspan(0.8, 1.2, color="0.9", label="+-20 %")
        for i, method in enumerate(methods):
            power = pooled[method]["member_power"]
            ratio = np.asarray(power["power_ratio"][name])
            degree = np.asarray(power["degree"])
            for level in range(ratio.shape[0]):
                ax.plot(
                    degree[1:],
                    ratio[level, 1:],
                    color=colours(i),
                    lw=0.8,
                    alpha=0.7,
                    label=method if level == 0 else None,
                )
        ax.axhline(1.0, color="k", lw=0.8)
        ax.axvline(SMALL_SCALES_FROM, color="0.5", ls=":", lw=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("total wavenumber l")
        ax.set_title(f"{name}: member power / reference run (all levels)", fontsize=9)
        ax = axes[1, column]
        for i, method in enumerate(methods):
            histogram = pooled[method].get("rank_histograms", {}).get(name)
            if histogram is None or len(histogram) < 3:
                continue
            bins = np.arange(len(histogram))
            ax.step(
                bins,
                np.asarray(histogram) * len(histogram),
                where="mid",
                color=colours(i),
                label=method,
            )
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xlabel("rank of the truth among the members")
        ax.set_title(f"{name}: rank histogram (1 = flat)", fontsize=9)
    axes[0, 0].set_ylabel("power ratio")
    axes[1, 0].set_ylabel("frequency x bins")
    axes[0, 0].legend(fontsize=7)
    axes[1, 0].legend(fontsize=7)
    fig.suptitle(
        f"multi-window OSSE, pooled over windows (levels {', '.join(f'{a:g}' for a in altitudes)} km)",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
