"""Figures of an analysis without a truth: level maps, station profiles, the fit to observations.

What ``genda plot`` draws (:mod:`genda.evaluation.analysis_products` reads
the store and calls these):

- :func:`plot_level_map`: the ensemble mean and spread of one variable on
  one level, with coastlines (:mod:`genda.evaluation.coastlines`), the valid
  time and the level as log-pressure altitude and pressure in the title;
- :func:`plot_station_profiles`: mean +- spread against altitude at a few
  stations, one row per station and a column per variable, with the
  observations made there (+- sigma);
- the fit to the observations is :mod:`genda.evaluation.analysis_fit`.

Figures are :class:`matplotlib.figure.Figure` objects (no ``pyplot`` state,
Agg rendering), written whole through :func:`genda.atomic.write_file`.
Longitudes run over [0, 360) degrees east, as on genda's grids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from genda.atomic import write_file
from genda.constants import altitude_km_to_pressure
from genda.errors import InvalidValueError
from genda.evaluation.coastlines import draw_coastlines
from genda.evaluation.plots import DPI, new_figure
from genda.evaluation.scores import units_of

__all__ = [
    "MapLevel",
    "StationProfile",
    "level_title",
    "place",
    "plot_level_map",
    "plot_station_profiles",
    "save_png",
]

DIVERGING = ("u", "v", "los")
"""Variables drawn with a colour scale centred on zero."""
VARIABLE_COLOURS = {"u": "C0", "v": "C1", "los": "C2", "T": "C3"}
"""Colour of each observed variable in the fit and the profiles."""


def save_png(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as PNG to ``path`` all at once (the file appears complete or not at all)."""
    return write_file(path, lambda partial: fig.savefig(partial, format="png", dpi=DPI))


def place(lat: float, lon: float) -> str:
    """``"69.3N 16.0E"``, ``"7.9S 345.6E"``: a place in degrees, longitude east in [0, 360)."""
    return f"{abs(lat):.1f}{'N' if lat >= 0 else 'S'} {lon % 360.0:.1f}E"


def level_title(altitude_km: float) -> str:
    """``"90.0 km log-pressure altitude (0.00262 hPa)"``: a level as the titles name it."""
    hpa = float(altitude_km_to_pressure(altitude_km)) / 100.0
    return f"{altitude_km:.1f} km log-pressure altitude ({hpa:.3g} hPa)"


@dataclass(frozen=True)
class MapLevel:
    """One variable on one level of one window, ready to map.

    Attributes:
        variable: ``u``, ``v`` or ``T``.
        units: of the variable (``m s-1``, ``K``).
        altitude_km: the level's log-pressure altitude.
        latitude: ``(H,)`` degrees north; longitude: ``(W,)`` degrees east in [0, 360).
        mean, spread: ``(H, W)`` ensemble mean and standard deviation.
        valid: the valid time as text (ISO, UTC).
        subtitle: what made the ensemble (method, members), shown under the title.
    """

    variable: str
    units: str
    altitude_km: float
    latitude: np.ndarray
    longitude: np.ndarray
    mean: np.ndarray
    spread: np.ndarray
    valid: str
    subtitle: str = ""


def _periodic(longitude: np.ndarray, field: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The field with its first column repeated 360 degrees east, so the map has no gap."""
    return np.append(longitude, longitude[0] + 360.0), np.concatenate([field, field[:, :1]], axis=1)


def plot_level_map(
    level: MapLevel,
    path: str | Path,
    *,
    points: pd.DataFrame | None = None,
) -> Path:
    """Ensemble mean and spread of ``level`` side by side, with coastlines; returns ``path``.

    Args:
        level: the fields and their labels.
        path: PNG file to write.
        points: observation places to mark (columns ``lat``, ``lon``), e.g.
            those within the level's layer.
    """
    if level.mean.shape != (level.latitude.size, level.longitude.size):
        raise InvalidValueError(
            f"the mean of {level.variable} has shape {level.mean.shape}, expected "
            f"({level.latitude.size}, {level.longitude.size})"
        )
    fig, axes = new_figure(1, 2, panel_size=(6.2, 3.6))
    finite = level.mean[np.isfinite(level.mean)]
    low, high = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
    mean_style: dict[str, object] = {"vmin": low, "vmax": high, "cmap": "RdYlBu_r"}
    if level.variable in DIVERGING:
        top = float(max(abs(low), abs(high))) or 1.0
        mean_style = {"vmin": -top, "vmax": top, "cmap": "RdBu_r"}
    spread_top = float(np.nanmax(level.spread)) if np.isfinite(level.spread).any() else 1.0
    spread_style = {"vmin": 0.0, "vmax": spread_top or 1.0, "cmap": "YlOrRd"}
    panels = (
        ("ensemble mean", level.mean, mean_style),
        ("ensemble spread (standard deviation)", level.spread, spread_style),
    )
    for ax, (what, field, style) in zip(axes[0], panels, strict=True):
        lon, values = _periodic(level.longitude, field)
        mesh = ax.pcolormesh(lon, level.latitude, values, shading="nearest", **style)
        fig.colorbar(mesh, ax=ax, shrink=0.85, label=f"{level.variable} ({level.units})")
        draw_coastlines(ax, 0.0)
        if points is not None and len(points):
            places = points[["lat", "lon"]].drop_duplicates()
            ax.scatter(
                np.mod(places["lon"].to_numpy(dtype=np.float64), 360.0),
                places["lat"].to_numpy(dtype=np.float64),
                marker="^",
                s=24,
                c="k",
                edgecolors="w",
                linewidths=0.7,
                zorder=4,
                label=f"observations in this layer ({len(places)})",
            )
            ax.legend(fontsize=7, loc="lower left")
        ax.set(title=what, xlim=(0, 360), ylim=(-90, 90), xlabel="longitude (degrees east)")
        ax.set_xticks(range(0, 361, 60))
        ax.set_yticks(range(-90, 91, 30))
        ax.set_aspect("equal")
    axes[0, 0].set_ylabel("latitude (degrees north)")
    heading = f"{level.variable} at {level_title(level.altitude_km)}, valid {level.valid} UTC"
    fig.suptitle(heading + (f"\n{level.subtitle}" if level.subtitle else ""), fontsize=10)
    return save_png(fig, Path(path))


@dataclass(frozen=True)
class StationProfile:
    """The ensemble at one station: mean and spread per variable against altitude.

    Attributes:
        name: the station (``"point"`` for a place asked for by its coordinates).
        lat, lon: degrees north, degrees east.
        altitude_km: ``(L,)`` the grid's levels.
        mean, spread: variable -> ``(L,)`` ensemble mean and spread there.
        observations: the station's observations (``variable, value, sigma, alt_km``),
            perhaps empty.
    """

    name: str
    lat: float
    lon: float
    altitude_km: np.ndarray
    mean: Mapping[str, np.ndarray]
    spread: Mapping[str, np.ndarray]
    observations: pd.DataFrame


def plot_station_profiles(
    profiles: Sequence[StationProfile],
    path: str | Path,
    *,
    valid: str,
    level_km: float | None = None,
    note: str = "",
) -> Path:
    """Mean +- spread profiles, a row per station and a column per variable; returns ``path``.

    Args:
        profiles: the stations (at least one).
        path: PNG file to write.
        valid: the valid time (ISO, UTC) for the title.
        level_km: the level of the maps, marked by a dotted line.
        note: added to the title (e.g. how many stations are left out).
    """
    if not profiles:
        raise InvalidValueError("no station to draw a profile at")
    variables = list(profiles[0].mean)
    fig, axes = new_figure(len(profiles), len(variables), panel_size=(3.3, 3.0), sharey=True)
    for row, profile in enumerate(profiles):
        for col, name in enumerate(variables):
            _draw_profile(axes[row, col], profile, name, level_km)
        axes[row, 0].set_ylabel(
            f"{profile.name}\n({place(profile.lat, profile.lon)})\naltitude (km)"
        )
    # one legend for all panels: a station without observations still shows their marker
    legend: dict[str, object] = {}
    for ax in axes.ravel():
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    fig.legend(list(legend.values()), list(legend), loc="outside lower center", ncols=4, fontsize=7)
    title = f"ensemble mean +- spread at stations, valid {valid} UTC"
    fig.suptitle(title + (f" ({note})" if note else ""), fontsize=10)
    return save_png(fig, Path(path))


def _draw_profile(ax: Axes, profile: StationProfile, name: str, level_km: float | None) -> None:
    """One panel: mean line, +- spread band, the station's observations of ``name``."""
    colour = VARIABLE_COLOURS.get(name, "C4")
    altitude = profile.altitude_km
    mean, spread = profile.mean[name], profile.spread[name]
    ax.fill_betweenx(altitude, mean - spread, mean + spread, color=colour, alpha=0.25, lw=0)
    ax.plot(mean, altitude, "-", color=colour, lw=1.6, label="ensemble mean")
    ax.plot([], [], "s", color=colour, alpha=0.25, label="+- spread")
    seen = profile.observations
    if len(seen):
        rows = seen[seen["variable"] == name]
        if len(rows):
            ax.errorbar(
                rows["value"].to_numpy(dtype=np.float64),
                rows["alt_km"].to_numpy(dtype=np.float64),
                xerr=rows["sigma"].to_numpy(dtype=np.float64),
                fmt="ko",
                ms=3,
                capsize=2,
                lw=0.8,
                label="observed +- sigma",
            )
    if level_km is not None:
        ax.axhline(level_km, color="0.4", ls=":", lw=0.8, label="level of the maps")
    ax.set_xlabel(f"{name} ({units_of(name)})")
    ax.grid(alpha=0.3)
