"""Figures of ensemble verification: maps, spread-skill, rank histograms, station profiles.

PNG figures drawn with :class:`matplotlib.figure.Figure` through the helpers of
:mod:`genda.evaluation.plots` (no ``pyplot`` state, Agg rendering). The score
figures take the dictionaries of :mod:`genda.evaluation.scores`, so they can be
redrawn from a ``metrics.json`` without the data. Maps are plain
latitude-longitude ``pcolormesh`` plots (longitude 0-360 degrees east).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from genda.errors import InvalidValueError, UnknownNameError
from genda.evaluation.plots import hide_unused, new_figure, panel_grid, save_figure
from genda.evaluation.scores import units_of

__all__ = ["plot_maps", "plot_profiles", "plot_rank_histograms", "plot_spread_skill"]

DIVERGING = ("u", "v", "w", "los")
"""Variables shown with a colour scale centred on zero."""
MAX_MEMBER_LINES = 30
"""Up to this many members are drawn one by one in profiles; more as mean +- spread."""


# ---------------------------------------------------------------------- maps
def plot_maps(
    truth: xr.Dataset | xr.DataArray,
    mean: xr.Dataset | xr.DataArray,
    spread: xr.Dataset | xr.DataArray,
    variable: str,
    altitude: float,
    obs: pd.DataFrame | None = None,
    *,
    path: str | Path,
    withheld: pd.DataFrame | None = None,
) -> Path:
    """Truth, ensemble mean and ensemble spread of ``variable`` at the level nearest ``altitude``.

    Args:
        truth, mean, spread: Datasets holding ``variable`` (or its DataArrays)
            with dims ``(altitude, latitude, longitude)``.
        variable: the variable to show.
        altitude: km; the nearest level is shown (error beyond half a spacing).
        obs: observation table (``lat``, ``lon``, ``alt_km``); rows within
            +-half a level spacing of the level are drawn as triangles (all
            rows, with a note in the title, when none are).
        path: PNG file to write.
        withheld: another table, drawn as circles (withheld stations).

    Returns:
        ``path``.
    """
    fields = [
        _level_field(x, variable, altitude, what)
        for x, what in ((truth, "truth"), (mean, "ensemble mean"), (spread, "ensemble spread"))
    ]
    levels = np.asarray(_as_array(truth, variable)["altitude"].values, dtype=np.float64)
    index = int(np.argmin(np.abs(levels - altitude)))
    low, high = level_layer(levels, index)
    units = str(_as_array(truth, variable).attrs.get("units", ""))
    fig, axes = new_figure(1, 3, panel_size=(4.6, 2.8), sharey=True)
    both = np.concatenate([fields[0].values.ravel(), fields[1].values.ravel()])
    vmin, vmax = np.nanpercentile(both, [1, 99]) if both.size else (0.0, 1.0)
    cmap = "viridis"
    if variable in DIVERGING:
        vmax = float(max(abs(vmin), abs(vmax)))
        vmin, cmap = -vmax, "RdBu_r"
    notes: list[str] = []
    titles = ("truth", "ensemble mean", "ensemble spread")
    for ax, field, title in zip(axes[0], fields, titles, strict=True):
        limits: dict[str, Any] = {"vmin": vmin, "vmax": vmax, "cmap": cmap}
        if title == "ensemble spread":
            limits = {"vmin": 0.0, "vmax": float(np.nanmax(field.values)) or 1.0, "cmap": "magma"}
        mesh = ax.pcolormesh(
            field["longitude"].values,
            field["latitude"].values,
            field.values,
            shading="nearest",
            **limits,
        )
        fig.colorbar(mesh, ax=ax, shrink=0.8, label=f"{variable} ({units})")
        ax.set(title=title, xlim=(0, 360), ylim=(-90, 90), xlabel="longitude (deg E)")
        ax.set_xticks(range(0, 361, 90))
        for table, marker, label in ((obs, "^", "observations"), (withheld, "o", "withheld")):
            if table is not None and len(table):
                note = _overplot(ax, table, low, high, marker, label)
                if note and note not in notes:
                    notes.append(note)
    axes[0, 0].set_ylabel("latitude (deg N)")
    if obs is not None or withheld is not None:
        axes[0, 0].legend(fontsize=7, loc="lower left")
    heading = f"{variable} at {levels[index]:.1f} km"
    fig.suptitle("; ".join([heading, *notes]), fontsize=10)
    return save_figure(fig, Path(path))


def _as_array(data: xr.Dataset | xr.DataArray, variable: str) -> xr.DataArray:
    if isinstance(data, xr.Dataset):
        if variable not in data.data_vars:
            raise UnknownNameError(
                f"no variable {variable!r} to map (present: {list(data.data_vars)})"
            )
        return data[variable]
    return data


def _level_field(
    data: xr.Dataset | xr.DataArray, variable: str, altitude: float, what: str
) -> xr.DataArray:
    """``(latitude, longitude)`` at the level nearest ``altitude``; clear errors otherwise."""
    da = _as_array(data, variable)
    if set(da.dims) != {"altitude", "latitude", "longitude"}:
        raise InvalidValueError(
            f"the {what} of {variable!r} has dims {da.dims}; expected (altitude, latitude, longitude)"
        )
    levels = np.asarray(da["altitude"].values, dtype=np.float64)
    index = int(np.argmin(np.abs(levels - altitude)))
    low, high = level_layer(levels, index)
    if not low <= altitude <= high:
        raise InvalidValueError(
            f"altitude {altitude:g} km is outside the levels {levels.min():g}..{levels.max():g} km"
        )
    return da.isel(altitude=index).transpose("latitude", "longitude").load()


def level_layer(levels: np.ndarray, index: int) -> tuple[float, float]:
    """The layer of level ``index``: half-way to its neighbours (a lone level: all altitudes)."""
    if levels.size == 1:
        return -math.inf, math.inf
    below = levels[index] - levels[index - 1] if index > 0 else levels[1] - levels[0]
    above = levels[index + 1] - levels[index] if index < levels.size - 1 else below
    return float(levels[index] - below / 2), float(levels[index] + above / 2)


def _overplot(
    ax: Axes, table: pd.DataFrame, low: float, high: float, marker: str, label: str
) -> str | None:
    """Mark the rows of ``table`` in the layer ``[low, high]``; a note when none were."""
    missing = [c for c in ("lat", "lon", "alt_km") if c not in table.columns]
    if missing:
        raise UnknownNameError(f"the {label} table lacks column(s) {missing}")
    inside = table[(table["alt_km"] >= low) & (table["alt_km"] <= high)]
    note = None
    if inside.empty:
        inside, note = table, f"all {label} shown (none within {low:.1f}-{high:.1f} km)"
    # one marker per place: several variables or times at a station share it
    places = inside[["lat", "lon"]].drop_duplicates()
    ax.scatter(
        np.mod(places["lon"].to_numpy(dtype=np.float64), 360.0),
        places["lat"].to_numpy(dtype=np.float64),
        marker=marker,
        s=22,
        facecolors="none" if marker == "o" else "k",
        edgecolors="k" if marker == "o" else "w",
        linewidths=0.8,
        label=f"{label} ({len(places)})",
    )
    return note


# ---------------------------------------------------------------------- scores
def plot_spread_skill(
    metrics: Mapping[str, Any],
    path: str | Path,
    *,
    baselines: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Spread (times ``sqrt((N+1)/N)``) against RMSE per variable and altitude, with the 1:1 line.

    Args:
        metrics: :func:`~genda.evaluation.scores.ensemble_scores` output (per
            level) or :func:`~genda.evaluation.scores.point_scores` (totals).
        path: PNG file to write.
        baselines: name -> metrics of other ensembles, drawn in grey shades.

    Returns:
        ``path``.
    """
    names = list(metrics["variables"])
    nrows, ncols = panel_grid(len(names), max_columns=3)
    fig, axes = new_figure(nrows, ncols, panel_size=(3.6, 3.4))
    sources = {"ensemble": metrics, **dict(baselines or {})}
    for ax, name in zip(axes.ravel(), names, strict=False):
        top = 0.0
        for k, (source, data) in enumerate(sources.items()):
            entry = data["variables"].get(name)
            if entry is None:
                continue
            top = max(top, _draw_spread_skill(fig, ax, source, data, entry, k, len(sources)))
        top = 1.05 * top or 1.0
        ax.plot([0, top], [0, top], "k:", lw=1, label="1:1")
        units = metrics["variables"][name]["units"]
        ax.set(xlim=(0, top), ylim=(0, top), title=name, xlabel=f"RMSE of the mean ({units})")
        ax.set_ylabel(f"spread x sqrt((N+1)/N) ({units})")
        ax.set_aspect("equal")
        ax.legend(fontsize=6, loc="best")  # over-dispersive points sit upper left
    hide_unused(axes, len(names))
    fig.suptitle("spread-skill (points: levels)" if "altitude_km" in metrics else "spread-skill")
    return save_figure(fig, Path(path))


def _draw_spread_skill(
    fig: Figure,
    ax: Axes,
    source: str,
    data: Mapping[str, Any],
    entry: Mapping[str, Any],
    k: int,
    count: int,
) -> float:
    """Spread against RMSE of source ``k`` of ``count`` on ``ax``; the largest finite value drawn."""
    markers = "os^vDP*X"
    factor = math.sqrt((data["n_members"] + 1) / data["n_members"])
    values = entry.get("levels", {k2: [v] for k2, v in entry["total"].items()})
    rmse = np.asarray(values["rmse"], dtype=np.float64)
    spread = factor * np.asarray(values["spread"], dtype=np.float64)
    label = f"{source} (SSR {entry['total']['spread_skill']:.2f})"
    if k == 0 and "levels" in entry:
        ax.plot(rmse, spread, "-", color="0.6", lw=0.8, zorder=1)
        points = ax.scatter(
            rmse,
            spread,
            c=np.asarray(data["altitude_km"], dtype=np.float64),
            cmap="viridis",
            marker=markers[0],
            zorder=2,
            label=label,
        )
        if rmse.size > 1:
            fig.colorbar(points, ax=ax, shrink=0.8, label="altitude (km)")
    elif k == 0:  # totals only (point scores)
        ax.plot(rmse, spread, "o", color="C0", zorder=2, label=label)
    else:
        shade = str(0.2 + 0.5 * (k - 1) / max(count - 2, 1))
        ax.plot(
            rmse,
            spread,
            "--",
            marker=markers[k % len(markers)],
            color=shade,
            ms=4,
            lw=0.8,
            label=label,
        )
    finite = np.concatenate([rmse, spread])
    finite = finite[np.isfinite(finite)]
    return float(finite.max()) if finite.size else 0.0


def plot_rank_histograms(
    metrics: Mapping[str, Any],
    path: str | Path,
    *,
    baselines: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Rank histograms over all levels, one panel per variable.

    Frequencies are shown times ``N + 1`` against the rank's position in
    ``[0, 1]``, so a flat histogram is 1 whatever the ensemble size and
    ensembles of different sizes (``baselines``, step lines) share the axes.

    Returns:
        ``path``.
    """
    names = list(metrics["variables"])
    nrows, ncols = panel_grid(len(names), max_columns=3)
    fig, axes = new_figure(nrows, ncols, panel_size=(3.6, 3.0), sharey=True)
    for ax, name in zip(axes.ravel(), names, strict=False):
        total = metrics["variables"][name]["total"]
        frequencies = np.asarray(total["rank_histogram"], dtype=np.float64)
        bins = frequencies.size
        centres = (np.arange(bins) + 0.5) / bins
        ax.bar(
            centres,
            frequencies * bins,
            width=1.0 / bins,
            color="C0",
            alpha=0.8,
            label=f"ensemble (RI {total['reliability_index']:.2f})",
        )
        for k, (source, data) in enumerate((baselines or {}).items()):
            entry = data["variables"].get(name)
            if entry is None:
                continue
            other = np.asarray(entry["total"]["rank_histogram"], dtype=np.float64)
            edges = np.arange(other.size + 1) / other.size
            ax.stairs(
                other * other.size,
                edges,
                color=f"C{k + 1}",
                lw=1.2,
                label=f"{source} (RI {entry['total']['reliability_index']:.2f})",
            )
        ax.axhline(1.0, color="k", ls="--", lw=0.8)
        ax.set(title=name, xlim=(0, 1), xlabel="rank / (N + 1)")
        ax.legend(fontsize=6)
    for ax in axes[:, 0]:
        ax.set_ylabel("frequency x (N + 1)")
    hide_unused(axes, len(names))
    fig.suptitle(f"rank histograms ({metrics.get('n_members', '?')} members; flat = 1)")
    return save_figure(fig, Path(path))


# ---------------------------------------------------------------------- profiles
def plot_profiles(
    member_values: np.ndarray,
    obs: pd.DataFrame,
    path: str | Path,
    *,
    max_panels: int = 6,
) -> Path:
    """Vertical profiles at the stations with the most observations.

    A panel is one station (column ``station``; else one place, ``lat, lon``),
    one variable and one time (when there is a ``time`` column): the observed
    values with +-sigma error bars against ``alt_km``, the members as thin
    lines (more than :data:`MAX_MEMBER_LINES`: the mean +- spread band) and
    the ensemble mean.

    Args:
        member_values: ``(N, M)`` ensemble values at the ``M`` rows of ``obs``.
        obs: table with ``variable, value, sigma, alt_km`` (and ``lat, lon``
            without ``station``).
        path: PNG file to write.
        max_panels: most profiles shown.

    Returns:
        ``path``.
    """
    values = np.asarray(member_values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(obs):
        raise InvalidValueError(
            f"member_values {values.shape} does not match the {len(obs)} observation rows"
        )
    table = obs.reset_index(drop=True)
    keys = _profile_keys(table)
    groups = sorted(
        table.groupby(keys, sort=False).indices.items(), key=lambda item: -len(item[1])
    )[:max_panels]
    nrows, ncols = panel_grid(max(len(groups), 1), max_columns=3)
    fig, axes = new_figure(nrows, ncols, panel_size=(3.2, 3.6))
    n = values.shape[0]
    for ax, (key, rows) in zip(axes.ravel(), groups, strict=False):
        _draw_profile(ax, table, values, key if isinstance(key, tuple) else (key,), rows)
    if groups:
        axes.ravel()[0].legend(fontsize=6)
    else:
        axes[0, 0].text(0.5, 0.5, "no observations", ha="center", va="center")
    hide_unused(axes, max(len(groups), 1))
    shown = f"{len(groups)} of {table.groupby(keys).ngroups}" if groups else "no"
    fig.suptitle(f"profiles at stations ({shown} profiles, {n} members)", fontsize=10)
    return save_figure(fig, Path(path))


def _profile_keys(table: pd.DataFrame) -> list[pd.Series]:
    """What makes a profile: the station (else the place), the variable and the time if any."""
    if "station" in table.columns:
        place = table["station"].astype(str)
    else:
        place = table["lat"].round(2).astype(str) + "N " + table["lon"].round(2).astype(str) + "E"
    keys = [place, table["variable"].astype(str)]
    if "time" in table.columns:
        keys.append(table["time"].astype(str))
    return keys


def _draw_profile(
    ax: Axes, table: pd.DataFrame, values: np.ndarray, key: tuple[Any, ...], rows: np.ndarray
) -> None:
    """One profile panel: members (or their band), ensemble mean and observations +- sigma."""
    rows = np.asarray(rows)[np.argsort(table["alt_km"].to_numpy()[rows], kind="stable")]
    altitude = table["alt_km"].to_numpy(dtype=np.float64)[rows]
    members = values[:, rows]
    style = "-" if rows.size > 1 else "."
    _draw_members(ax, members, altitude, style)
    ax.plot(
        members.mean(0),
        altitude,
        "C3" + (style if rows.size > 1 else "s"),
        lw=1.5,
        label="ensemble mean",
    )
    ax.errorbar(
        table["value"].to_numpy(dtype=np.float64)[rows],
        altitude,
        xerr=table["sigma"].to_numpy(dtype=np.float64)[rows],
        fmt="ko",
        ms=3,
        capsize=2,
        label="observed +- sigma",
    )
    name = str(key[1])
    ax.set(
        title=" ".join(str(k) for k in key)[:48],
        ylabel="altitude (km)",
        xlabel=f"{name} ({units_of(name)})",
    )
    ax.title.set_fontsize(8)


def _draw_members(ax: Axes, members: np.ndarray, altitude: np.ndarray, style: str) -> None:
    """Members ``(N, K)`` as thin lines, or more than :data:`MAX_MEMBER_LINES` as mean +- spread."""
    if members.shape[0] <= MAX_MEMBER_LINES:
        lines = ax.plot(members.T, altitude, style, color="C0", lw=0.5, alpha=0.4)
        lines[0].set_label("members")
    else:
        mean, spread = members.mean(0), members.std(0, ddof=1)
        ax.fill_betweenx(
            altitude,
            mean - spread,
            mean + spread,
            color="C0",
            alpha=0.3,
            label="mean +- spread",
        )
