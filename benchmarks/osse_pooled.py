"""Statistics of the multi-window OSSE pooled over windows: member power and rank histograms.

One window of 16 members cannot test "the members' power is within 20 % of
model data at every degree and level": the power of one degree ``l`` at one
level has ``N (2 l + 1)`` degrees of freedom, about 10 % noise at ``l = 6``,
and the worst of several hundred degree-level pairs sits near 3.5 times that.
Averaged over the windows (``W N`` members), the noise falls by ``sqrt(W)``,
so the pooled ratio answers the question. Rank histograms are averaged the
same way: one window's histogram of 17 bins over ~2000 grid points is
dominated by the spatial correlation of its errors.

Inputs are the ``metrics.json`` dictionaries of ``genda evaluate``
(``posterior_fidelity.power_ratio``: ``{variable: (L, D)}``, ``degree``
``(D,)``; ``ensemble.variables.<v>.total.rank_histogram``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

SMALL_SCALES_FROM = 6
"""The degrees of the acceptance check: ``l >= 6``."""


def pooled_member_power(metrics: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Mean power ratio over windows per variable ``(L, D)`` and its worst ``|ratio - 1|`` at ``l >= 6``.

    ``None`` when no window has a posterior-fidelity section (baselines of one member).
    """
    parts = [m["posterior_fidelity"] for m in metrics if m.get("posterior_fidelity")]
    if not parts:
        return None
    degree = np.asarray(parts[0]["degree"])
    keep = degree >= SMALL_SCALES_FROM
    ratio = {
        name: np.mean([np.asarray(p["power_ratio"][name], dtype=float) for p in parts], axis=0)
        for name in parts[0]["power_ratio"]
    }
    return {
        "windows": len(parts),
        "members": int(sum(p["members"] for p in parts)),
        "degree": degree.tolist(),
        "power_ratio": {name: r.tolist() for name, r in ratio.items()},
        "worst_power_error": {
            name: float(np.nanmax(np.abs(r[:, keep] - 1.0))) for name, r in ratio.items()
        },
        "median_power_error": {
            name: float(np.nanmedian(np.abs(r[:, keep] - 1.0))) for name, r in ratio.items()
        },
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
        ax.set_title(f"{name}: member power / model data (all levels)", fontsize=9)
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
