"""The fit to the observations of an analysed window: each observed value against the ensemble mean.

What ``genda plot`` draws as ``obs_fit_<time>.png``
(:mod:`genda.evaluation.analysis_products`): every observation's value (+-
its sigma) against the ensemble mean at it (+- the ensemble spread there),
coloured by variable, a panel per unit (winds in m s-1, temperature in K),
with the 1:1 line, the mean and RMS of observed minus ensemble mean per
variable, and the rows the background check rejected in grey (left out of
the statistics). The numbers come from the window's observation diagnostics
(:mod:`genda.observations.diagnostics`) or from the members interpolated to
an observation table.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from genda.errors import InvalidValueError
from genda.evaluation.analysis_plots import VARIABLE_COLOURS, save_png
from genda.evaluation.plots import new_figure
from genda.evaluation.scores import units_of

__all__ = ["FIT_PANELS", "plot_observation_fit"]

FIT_PANELS: dict[str, tuple[str, ...]] = {"winds": ("u", "v", "los"), "temperature": ("T",)}
"""Panels of the observation fit: the variables sharing a unit."""


def plot_observation_fit(
    fit: pd.DataFrame,
    path: str | Path,
    *,
    valid: str,
    source: str,
) -> Path:
    """Observed value against the ensemble mean at each observation; returns ``path``.

    Args:
        fit: one row per observation: ``variable``, ``value``, ``sigma``,
            ``posterior_mean``, ``posterior_spread`` and, optionally,
            ``rejected`` (drawn in grey, left out of the statistics).
        path: PNG file to write.
        valid: the valid time (ISO, UTC) for the title.
        source: where the numbers come from, for the title.
    """
    missing = [
        c
        for c in ("variable", "value", "sigma", "posterior_mean", "posterior_spread")
        if c not in fit.columns
    ]
    if missing:
        raise InvalidValueError(f"the observation fit lacks column(s) {missing}")
    panels = [
        (title, names) for title, names in FIT_PANELS.items() if fit["variable"].isin(names).any()
    ]
    if not panels:
        raise InvalidValueError("no observation of u, v, los or T to draw the fit of")
    fig, axes = new_figure(1, len(panels), panel_size=(4.6, 4.4))
    rejected = (
        fit["rejected"].to_numpy(dtype=bool)
        if "rejected" in fit.columns
        else np.zeros(len(fit), bool)
    )
    for ax, (title, names) in zip(axes[0], panels, strict=True):
        _draw_fit(ax, fit, rejected, names, title)
    fig.suptitle(f"fit to the observations, valid {valid} UTC ({source})", fontsize=10)
    return save_png(fig, Path(path))


def _draw_fit(
    ax: Axes, fit: pd.DataFrame, rejected: np.ndarray, names: Sequence[str], title: str
) -> None:
    """One panel: the variables ``names`` (one unit), 1:1 line, statistics per variable."""
    lines = []
    every = []
    for name in names:
        chosen = (fit["variable"] == name).to_numpy()
        if not chosen.any():
            continue
        for mask, style in (
            (chosen & ~rejected, {"color": VARIABLE_COLOURS.get(name, "C4"), "fmt": "o"}),
            (chosen & rejected, {"color": "0.6", "fmt": "x"}),
        ):
            if not mask.any():
                continue
            observed = fit["value"].to_numpy(dtype=np.float64)[mask]
            mean = fit["posterior_mean"].to_numpy(dtype=np.float64)[mask]
            every.append(np.concatenate([observed, mean]))
            ax.errorbar(
                observed,
                mean,
                xerr=fit["sigma"].to_numpy(dtype=np.float64)[mask],
                yerr=np.nan_to_num(fit["posterior_spread"].to_numpy(dtype=np.float64)[mask]),
                ms=3,
                lw=0.6,
                capsize=0,
                alpha=0.8,
                label=(
                    f"{name} ({int(mask.sum())})"
                    if style["fmt"] == "o"
                    else f"{name} rejected by the background check ({int(mask.sum())})"
                ),
                **style,
            )
        kept = chosen & ~rejected
        if kept.any():
            residual = (fit["value"] - fit["posterior_mean"]).to_numpy(dtype=np.float64)[kept]
            lines.append(
                f"{name}: mean {residual.mean():+.2f}, RMS {np.sqrt(np.mean(residual**2)):.2f}"
            )
    if every:
        values = np.concatenate(every)
        low, high = float(np.nanmin(values)), float(np.nanmax(values))
        pad = 0.05 * (high - low or 1.0)
        ax.plot([low - pad, high + pad], [low - pad, high + pad], "k:", lw=1, label="1:1")
        ax.set(xlim=(low - pad, high + pad), ylim=(low - pad, high + pad))
    ax.set_aspect("equal")
    units = units_of(names[0])
    ax.set(
        title=f"{title} ({', '.join(n for n in names if (fit['variable'] == n).any())})",
        xlabel=f"observed +- sigma ({units})",
        ylabel=f"ensemble mean +- spread ({units})",
    )
    ax.title.set_fontsize(8)
    ax.legend(fontsize=6, loc="upper left")
    if lines:
        ax.text(
            0.98,
            0.02,
            "\n".join([f"observed - ensemble mean ({units}):", *lines]),
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=7,
            bbox={"facecolor": "w", "alpha": 0.8, "lw": 0},
        )
    ax.grid(alpha=0.3)
