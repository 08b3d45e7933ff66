"""Drawing synthetic observations of a truth by observing networks, for OSSEs.

A network says where and how well the mesosphere/lower thermosphere is
observed; :func:`draw_observations` samples a "truth" (an archive opened with
:func:`genda.storage.open_archive`) there, through
:class:`~genda.observations.operators.ObservationOperator`, and adds Gaussian
noise with each row's ``sigma`` (docs/observations.md).

Networks (:data:`NETWORKS`): ``radars`` (the meteor radars of
:data:`~genda.observations.catalog.METEOR_RADARS`), ``lidars``
(:data:`~genda.observations.catalog.LIDARS`), ``limb`` (= ``mls``) and
``saber`` (limb sounders); where each observes is
:mod:`genda.observations.geometry`, the instruments are
:mod:`genda.observations.catalog`.

Simplifications: every station reports every hour (no meteor-count gaps, no
daylight or cloud for lidars); all drawn values are the truth at one time,
the window only spreads the track.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
import xarray as xr

from genda.errors import InvalidValueError
from genda.grid import Grid
from genda.observations.catalog import STATIONS, Station, station
from genda.observations.geometry import lidar_geometry, limb_track, radar_geometry
from genda.observations.operators import ObservationOperator
from genda.observations.solar import is_dark
from genda.observations.table import validate_observations
from genda.times import TimeLike, as_datetime64, iso

NETWORKS: dict[str, tuple[str, ...]] = {
    "radars": ("u", "v"),
    "lidars": ("T",),
    "limb": ("T",),
    "mls": ("T",),
    "saber": ("T",),
}
"""Network names accepted by :func:`draw_observations` and the variables they need."""

DEFAULT_NETWORKS: tuple[str, ...] = ("radars", "lidars", "limb")


def network_names(networks: str | Sequence[str]) -> list[str]:
    """Canonical, de-duplicated network names (``limb`` is ``mls``); comma lists accepted."""
    items = networks.split(",") if isinstance(networks, str) else list(networks)
    names: list[str] = []
    for item in items:
        name = item.strip().lower()
        if name not in NETWORKS:
            raise InvalidValueError(
                f"unknown network {item!r}; known networks: {', '.join(NETWORKS)}"
            )
        name = "mls" if name == "limb" else name
        if name not in names:
            names.append(name)
    if not names:
        raise InvalidValueError("no network given")
    return names


def select_time(truth: xr.Dataset, time: TimeLike, source: str = "truth") -> xr.Dataset:
    """The field of ``truth`` at ``time`` (exactly), without the time dimension.

    Raises:
        ValueError: ``time`` is not in ``truth``, naming ``source`` and its time range.
    """
    when = as_datetime64(time)
    if "time" not in truth.dims:
        return truth
    if "time" not in truth.coords:
        if truth.sizes["time"] == 1:
            return truth.isel(time=0)
        raise InvalidValueError(f"{source} has {truth.sizes['time']} times but no time values")
    try:
        times = np.asarray(truth["time"].values, dtype="datetime64[ns]")
    except (TypeError, ValueError):
        raise InvalidValueError(
            f"{source}: time values of type {truth['time'].dtype} (a non-standard calendar?) "
            "cannot be compared with UTC times"
        ) from None
    found = np.flatnonzero(times == when)
    if found.size == 0:
        if times.size == 0:
            raise InvalidValueError(f"{source} holds no times; {iso(when)} is not in it")
        raise InvalidValueError(
            f"time {iso(when)} is not in {source}, which holds {times.size} time(s) "
            f"from {iso(times.min())} to {iso(times.max())}"
        )
    return truth.isel(time=int(found[0]))


def _check_network_variables(names: Sequence[str], grid: Grid) -> None:
    """Refuse a network that observes a variable the grid does not carry."""
    for name in names:
        absent = [v for v in NETWORKS[name] if v not in grid.variables]
        if absent:
            raise InvalidValueError(
                f"network {name!r} observes {', '.join(absent)}, which the grid does not carry "
                f"(grid variables: {', '.join(grid.variables)})"
            )


def _network_geometry(
    names: Sequence[str],
    grid: Grid,
    when: np.datetime64,
    sites: tuple[Station, ...],
    los: bool,
    half_window_minutes: float,
    saber_yaw: Literal["north", "south"],
    lidars_at_night: bool = False,
) -> pd.DataFrame:
    """Where the networks observe: one row per observation, values not yet drawn."""
    parts = []
    for name in names:
        if name == "radars":
            parts.append(radar_geometry(grid, sites, los=los))
        elif name == "lidars":
            lidars = sites
            if lidars_at_night:
                lidars = tuple(
                    s for s in sites if s.kind != "lidar" or bool(is_dark(when, s.lat, s.lon))
                )
            parts.append(lidar_geometry(grid, lidars))
        else:
            track = limb_track(
                when, name, grid, half_window_minutes=half_window_minutes, yaw=saber_yaw
            )
            parts.append(track)
    parts = [part for part in parts if len(part)]
    if not parts:
        raise InvalidValueError(
            f"networks {names} observe nothing on this grid (altitudes "
            f"{grid.altitude.min():g}-{grid.altitude.max():g} km)"
        )
    return pd.concat(parts, ignore_index=True)


def draw_observations(
    truth: xr.Dataset,
    grid: Grid,
    time: TimeLike,
    networks: str | Sequence[str] = DEFAULT_NETWORKS,
    seed: int = 0,
    *,
    stations: Iterable[Station | str] | None = None,
    los: bool = False,
    half_window_minutes: float = 30.0,
    saber_yaw: Literal["north", "south"] = "north",
    noise: bool = True,
    lidars_at_night: bool = False,
) -> pd.DataFrame:
    """Synthetic observations of ``truth`` at ``time`` by the given networks.

    Args:
        truth: Dataset ``(time, altitude, latitude, longitude)`` (or without
            ``time``) with the grid's variables in physical units, e.g. from
            :func:`genda.storage.open_archive`; only the field at ``time`` is read.
        grid: the grid of ``truth`` (checked).
        time: the truth time; every row gets it as ``time``.
        networks: names from :data:`NETWORKS` (or one comma-separated string).
        seed: seed of the noise, ``numpy.random.default_rng(seed)``; one
            standard normal per row, in table order.
        stations: radars and lidars to use (catalog entries or names);
            default :data:`METEOR_RADARS` and :data:`LIDARS`.
        los: radar line-of-sight winds instead of u, v (:func:`radar_geometry`).
        half_window_minutes: the limb tracks cover ``time`` +- this.
        saber_yaw: the side SABER views.
        noise: add the Gaussian noise (``False``: the truth seen through ``H``).
        lidars_at_night: a lidar observes only while the Sun is 6 degrees or more
            below its horizon (:func:`genda.observations.solar.is_dark`), as
            resonance lidars without daylight filters do.

    Returns:
        A validated table (:func:`~genda.observations.validate_observations`)
        with a ``network`` column (``radars``, ``lidars``, ``mls``, ``saber``).

    Raises:
        ValueError: unknown network or station, a network whose variables the
            grid lacks, ``time`` not in ``truth``, or no observation at all.
    """
    when = as_datetime64(time)
    snapshot = select_time(truth, when)
    names = network_names(networks)
    _check_network_variables(names, grid)
    sites = (
        STATIONS
        if stations is None
        else tuple(s if isinstance(s, Station) else station(s) for s in stations)
    )
    geometry = _network_geometry(
        names, grid, when, sites, los, half_window_minutes, saber_yaw, lidars_at_night
    )
    # The tracks' own times only placed the profiles; the values are the truth at `time`.
    geometry["time"] = when
    geometry["value"] = 0.0  # a placeholder: the values are drawn below
    table = validate_observations(geometry, grid, source="observation geometry", check_values=False)

    field_ = grid.tensor_from_dataset(snapshot, dtype=torch.float64)
    with torch.no_grad():
        values = ObservationOperator.from_table(table, grid)(field_).cpu().numpy()
    if noise:
        rng = np.random.default_rng(seed)
        values = values + rng.standard_normal(len(table)) * table["sigma"].to_numpy()
    table["value"] = values.astype(np.float64)
    return validate_observations(table, grid, source=f"observations drawn at {iso(when)}")


def split_withheld(obs: pd.DataFrame, stations: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a table into ``(assimilated, withheld)`` by station name (case-insensitive).

    Both parts keep the table's columns and order, with a fresh index ``0..``.

    Raises:
        ValueError: a name that no row of ``obs`` has, listing the stations present.
    """
    if "station" not in obs.columns:
        raise InvalidValueError("the table has no 'station' column to withhold stations by")
    present = obs["station"].astype(str).str.lower()
    wanted = [s.strip().lower() for s in stations if s.strip()]
    unknown = [s for s in wanted if not (present == s).any()]
    if unknown:
        have = ", ".join(sorted(set(obs["station"].astype(str)) - {""}))
        raise InvalidValueError(
            f"no observations from station(s) {unknown}; stations present: {have}"
        )
    mask = present.isin(wanted).to_numpy()
    return obs[~mask].reset_index(drop=True), obs[mask].reset_index(drop=True)


__all__ = [
    "DEFAULT_NETWORKS",
    "NETWORKS",
    "draw_observations",
    "network_names",
    "select_time",
    "split_withheld",
]
