"""Coastlines for latitude-longitude maps, from data shipped with genda (nothing is downloaded).

The outlines are Natural Earth's 1:110m land (public domain), stored as one
GeoJSON ``MultiLineString`` of ``[lon, lat]`` pairs in degrees, longitudes in
``[-180, 180]`` (RFC 7946, https://datatracker.ietf.org/doc/html/rfc7946,
sect. 3.1.5); ``data/README.md`` says how the file was made. genda's grids run
over longitudes ``[0, 360)``, so :func:`coastline_segments` moves every line
to the map's longitude range and cuts it where it crosses the seam, adding
the crossing point on both sides so the outline reaches the map's edges.

Plain matplotlib lines on ``lon/lat`` axes are all genda's regular grids
need; cartopy would fetch the same Natural Earth data from the network at run
time.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection

from genda.errors import InvalidValueError

__all__ = ["COASTLINE_FILE", "coastline_segments", "draw_coastlines"]

COASTLINE_FILE = "ne_110m_coastline.geojson"
"""The shipped coastline file, in ``genda/evaluation/data/``."""


@lru_cache(maxsize=1)
def _lines() -> tuple[np.ndarray, ...]:
    """The shipped lines as ``(K, 2)`` float64 ``[lon, lat]`` arrays, longitudes in [-180, 180]."""
    text = resources.files("genda.evaluation").joinpath("data", COASTLINE_FILE).read_text("utf-8")
    collection = json.loads(text)
    lines: list[np.ndarray] = []
    for feature in collection["features"]:
        geometry = feature["geometry"]
        parts = (
            geometry["coordinates"]
            if geometry["type"] == "MultiLineString"
            else [geometry["coordinates"]]
        )
        lines.extend(np.asarray(part, dtype=np.float64) for part in parts if len(part) > 1)
    return tuple(lines)


def _cut_at_seam(line: np.ndarray, west: float) -> list[np.ndarray]:
    """``line`` with longitudes in ``[west, west + 360)``, cut where it wraps round.

    A step of more than 180 degrees after wrapping is the seam being crossed
    (no coastline segment of the 1:110m data spans half the globe): the line
    ends on the edge it leaves and a new one starts on the opposite edge, at
    the latitude interpolated linearly in longitude.
    """
    lon = west + np.mod(line[:, 0] - west, 360.0)
    lat = line[:, 1]
    pieces: list[np.ndarray] = []
    start = 0
    current: list[np.ndarray] = []
    for k in np.flatnonzero(np.abs(np.diff(lon)) > 180.0):
        a, b = lon[k], lon[k + 1]
        # crossing eastwards: a near west + 360, b near west (and the reverse)
        edge_a, edge_b = (west + 360.0, west) if a > b else (west, west + 360.0)
        span = (edge_a - a) + (b - edge_b)
        fraction = (edge_a - a) / span if span else 0.0
        crossing = lat[k] + fraction * (lat[k + 1] - lat[k])
        current.append(np.column_stack([lon[start : k + 1], lat[start : k + 1]]))
        current.append(np.array([[edge_a, crossing]]))
        pieces.append(np.concatenate(current))
        current = [np.array([[edge_b, crossing]])]
        start = k + 1
    current.append(np.column_stack([lon[start:], lat[start:]]))
    pieces.append(np.concatenate(current))
    return [piece for piece in pieces if len(piece) > 1]


@lru_cache(maxsize=8)
def _segments(west: float) -> tuple[np.ndarray, ...]:
    return tuple(piece for line in _lines() for piece in _cut_at_seam(line, west))


def coastline_segments(west: float = 0.0) -> list[np.ndarray]:
    """The coastlines as ``(K, 2)`` ``[lon, lat]`` lines, longitudes in ``[west, west + 360]``.

    Args:
        west: the map's western edge in degrees east (0 for genda's grids,
            -180 for maps centred on Greenwich).

    Returns:
        Lines in degrees (copies); a line crossing the seam is cut in two,
        each part ending exactly on the map's edge.
    """
    if not np.isfinite(west):
        raise InvalidValueError(f"the map's western edge must be a finite longitude, got {west}")
    return [piece.copy() for piece in _segments(float(west))]


def draw_coastlines(
    ax: Axes,
    west: float = 0.0,
    *,
    color: str = "0.15",
    linewidth: float = 0.6,
    zorder: float = 3.0,
) -> LineCollection:
    """Draw the coastlines on ``lon/lat`` axes (degrees east, degrees north); returns the lines.

    The axes' limits are left as they are (a collection does not autoscale them).
    """
    lines = LineCollection(
        coastline_segments(west),
        colors=color,
        linewidths=linewidth,
        zorder=zorder,
        label="_coastline",  # matplotlib leaves labels starting with "_" out of legends
    )
    ax.add_collection(lines, autolim=False)
    return lines
