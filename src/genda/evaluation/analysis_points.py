"""The ensemble of a window at points: station profiles, and values at observations.

``genda plot`` (:mod:`genda.evaluation.analysis_products`) draws profiles at
stations and, for a store without observation diagnostics, the fit to the
rows of an observation file. Both need the members at points off the grid:
they are interpolated as ``genda evaluate`` interpolates them,
:func:`genda.evaluation.report.member_values` with the rows'
:class:`~genda.observations.operators.ObservationOperator` (bilinear in
latitude and longitude, linear in altitude), so that the spread at a point
is that of the interpolated members.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from genda.evaluation.analysis_plots import StationProfile
from genda.evaluation.report import member_values
from genda.grid import Grid
from genda.observations import ObservationOperator
from genda.storage.ensemble_store import EnsembleStore
from genda.storage.errors import EnsembleStoreError
from genda.times import iso

__all__ = [
    "STATION_TOLERANCE_DEG",
    "fit_from_members",
    "station_places",
    "station_profiles",
    "values_at",
]

STATION_TOLERANCE_DEG = 0.01
"""Rows of one station lie within this many degrees of latitude and longitude of each other."""


def station_places(
    table: pd.DataFrame | None, points: Sequence[tuple[float, float]]
) -> list[tuple[str, float, float]]:
    """``(name, lat, lon)``: ``points`` (asked for, so first), then the table's stations (most
    observations first).

    A station is a name observed at one place; a name seen at several places
    (a limb sounder's track) has no profile.
    """
    places: list[tuple[str, float, float]] = [("point", lat, lon) for lat, lon in points]
    if table is not None and "station" in table.columns:
        named = table[table["station"].astype(str) != ""]
        counts = (
            named.groupby("station")["value"].count().sort_values(ascending=False, kind="stable")
        )
        for station in counts.index:
            rows = named[named["station"] == station]
            lat, lon = rows["lat"].to_numpy(), rows["lon"].to_numpy()
            if np.ptp(lat) > STATION_TOLERANCE_DEG or np.ptp(lon) > STATION_TOLERANCE_DEG:
                continue
            places.append((str(station), float(lat[0]), float(lon[0])))
    return places


def values_at(
    rows: pd.DataFrame, members: xr.Dataset, grid: Grid, store: EnsembleStore, t: np.datetime64
) -> np.ndarray:
    """``(N, M)``: the members at the rows of ``rows``, as ``genda evaluate`` interpolates them."""
    values = member_values(members, grid, ObservationOperator.from_table(rows, grid))
    if not np.isfinite(values).all():
        raise EnsembleStoreError(
            f"window {iso(t)} of {store.path} has members with missing or NaN data; "
            f"'genda validate {store.path}' names them"
        )
    return values


def spread_of(values: np.ndarray) -> np.ndarray:
    """Standard deviation over members (``ddof=1``, as the store's); NaN for one member."""
    if values.shape[0] < 2:
        return np.full(values.shape[1:], np.nan)
    return values.std(axis=0, ddof=1)


def station_profiles(
    places: Sequence[tuple[str, float, float]],
    members: xr.Dataset,
    grid: Grid,
    observed: pd.DataFrame | None,
    store: EnsembleStore,
    t: np.datetime64,
) -> list[StationProfile]:
    """Each place's column of every variable on the grid's levels, with its observations."""
    rows = pd.DataFrame(
        [
            {"lat": lat, "lon": lon, "alt_km": alt, "variable": name}
            for _, lat, lon in places
            for name in grid.variables
            for alt in grid.altitude
        ]
    )
    values = values_at(rows, members, grid, store, t)
    mean = values.mean(axis=0).reshape(len(places), len(grid.variables), grid.nlevels)
    spread = spread_of(values).reshape(mean.shape)
    profiles = []
    for k, (name, lat, lon) in enumerate(places):
        seen = pd.DataFrame(columns=["variable", "value", "sigma", "alt_km"])
        if observed is not None and len(observed):
            east = np.abs(np.mod(observed["lon"] - lon + 180.0, 360.0) - 180.0)
            near = (np.abs(observed["lat"] - lat) <= STATION_TOLERANCE_DEG) & (
                east <= STATION_TOLERANCE_DEG
            )
            seen = observed[near]
        profiles.append(
            StationProfile(
                name,
                lat,
                lon,
                grid.altitude,
                {v: mean[k, i] for i, v in enumerate(grid.variables)},
                {v: spread[k, i] for i, v in enumerate(grid.variables)},
                seen,
            )
        )
    return profiles


def fit_from_members(
    rows: pd.DataFrame, members: xr.Dataset, grid: Grid, store: EnsembleStore, t: np.datetime64
) -> pd.DataFrame:
    """``rows`` on the store's variables with the ensemble mean and spread at each.

    No background check is known for these rows: none is marked rejected.
    """
    variables = set(grid.variables)
    known = rows["variable"].isin(variables) | (
        (rows["variable"] == "los") & {"u", "v"}.issubset(variables)
    )
    fit = rows[known].reset_index(drop=True)
    values = values_at(fit, members, grid, store, t)
    fit["posterior_mean"] = values.mean(axis=0)
    fit["posterior_spread"] = spread_of(values)
    return fit
