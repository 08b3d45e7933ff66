"""Regridding of a Dataset in genda's conventions onto a :class:`~genda.grid.Grid`.

Linear in latitude and in (log-pressure) altitude, periodic-linear in
longitude: a global source is padded with its last column at ``lon - 360`` and
its first at ``lon + 360`` so that target points between the last source
longitude and 360 (across the dateline of the [0, 360) convention)
interpolate between neighbours instead of becoming NaN. Interpolation is
``xarray.Dataset.interp`` (scipy), lazy on dask arrays.

Linear interpolation of a smooth field ``f`` on spacing ``h`` errs by at most
``h**2 / 8 * max|f''|`` per dimension; it never creates new extrema, which
keeps temperatures positive and winds bounded.

Targets beyond the source's latitude or altitude range are an error, except
within a small tolerance (round-off of unit conversions; half a grid spacing
in latitude, where a pole-less source meets a grid reaching further
poleward), where the edge value is used.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from genda.grid import Grid
from genda.normalization import MEAN_ATTR, STD_ATTR
from genda.storage.errors import ArchiveError

ALTITUDE_TOLERANCE_KM = 1e-3
"""Default tolerance beyond the source's altitude range: only round-off (pressure -> km)."""


def _clamped_targets(
    source_values: np.ndarray,
    target: np.ndarray,
    what: str,
    units: str,
    tolerance: tuple[float, float],
    source: str,
) -> np.ndarray:
    """``target`` clipped into the source range; an error beyond ``tolerance`` (below, above)."""
    low, high = float(np.min(source_values)), float(np.max(source_values))
    below = low - float(np.min(target))
    above = float(np.max(target)) - high
    if below > tolerance[0] or above > tolerance[1]:
        raise ArchiveError(
            f"{source}: target {what} [{np.min(target):.4g}, {np.max(target):.4g}] {units} reaches beyond "
            f"the source's {what} range [{low:.4g}, {high:.4g}] {units} (tolerance "
            f"{tolerance[0]:.3g} below, {tolerance[1]:.3g} above); regridding does not extrapolate"
        )
    return np.clip(target, low, high)


def _edge_half_spacing(values: np.ndarray) -> tuple[float, float]:
    """Half the grid spacing at the low and the high end of sorted ``values``."""
    if values.size < 2:
        return (1e-6, 1e-6)
    ordered = np.sort(values)
    return (0.5 * float(ordered[1] - ordered[0]), 0.5 * float(ordered[-1] - ordered[-2]))


def is_periodic_longitude(longitude: np.ndarray) -> bool:
    """Whether sorted longitudes in [0, 360) cover the globe (gap across 360 like the other steps)."""
    if longitude.size < 3:
        return False
    steps = np.diff(longitude)
    gap = longitude[0] + 360.0 - longitude[-1]
    return bool(gap <= 1.5 * float(np.max(steps)) + 1e-9)


def wrap_longitude(ds: xr.Dataset) -> xr.Dataset:
    """Pad a global Dataset with one wrapped column on each side (``lon - 360``, ``lon + 360``)."""
    lon = ds["longitude"].values
    west = ds.isel(longitude=[-1]).assign_coords(longitude=[lon[-1] - 360.0])
    east = ds.isel(longitude=[0]).assign_coords(longitude=[lon[0] + 360.0])
    return xr.concat(
        [west, ds, east], dim="longitude", data_vars="all", coords="minimal", compat="override"
    )


def _check_axes(ds: xr.Dataset, source: str) -> None:
    """Error unless ``ds`` has 1-D altitude, latitude and longitude coordinates."""
    for dim in ("altitude", "latitude", "longitude"):
        if dim not in ds.coords or ds[dim].ndim != 1:
            raise ArchiveError(f"{source}: cannot regrid, no 1-D {dim!r} coordinate")


def _on_target(source_values: np.ndarray, target: np.ndarray) -> bool:
    """Whether the source coordinate already is the target one (to round-off)."""
    return source_values.shape == target.shape and np.allclose(
        source_values, target, atol=1e-9, rtol=0
    )


def _longitude_targets(ds: xr.Dataset, grid: Grid, source: str) -> tuple[xr.Dataset, np.ndarray]:
    """Target longitudes, with ``ds`` wrapped across 360 when it is global (else clamped targets)."""
    src_lon = ds["longitude"].values
    if is_periodic_longitude(src_lon):
        return wrap_longitude(ds), np.asarray(grid.longitude)
    targets = _clamped_targets(
        src_lon,
        grid.longitude,
        "longitude",
        "degrees_east",
        _edge_half_spacing(src_lon),
        source,
    )
    return ds, targets


def _targets(
    ds: xr.Dataset,
    grid: Grid,
    source: str,
    altitude_tolerance_km: float,
    latitude_tolerance_deg: float | None,
) -> tuple[xr.Dataset, dict[str, np.ndarray]]:
    """Target coordinates of each dimension not already on ``grid`` (``ds`` wrapped if needed)."""
    src_lat = ds["latitude"].values
    src_alt = ds["altitude"].values
    lat_tol = (
        (latitude_tolerance_deg, latitude_tolerance_deg)
        if latitude_tolerance_deg is not None
        else _edge_half_spacing(src_lat)
    )
    targets: dict[str, np.ndarray] = {}
    if not _on_target(src_alt, grid.altitude):
        targets["altitude"] = _clamped_targets(
            src_alt,
            grid.altitude,
            "altitude",
            "km",
            (altitude_tolerance_km, altitude_tolerance_km),
            source,
        )
    if not _on_target(src_lat, grid.latitude):
        targets["latitude"] = _clamped_targets(
            src_lat, grid.latitude, "latitude", "degrees_north", lat_tol, source
        )
    if not _on_target(ds["longitude"].values, grid.longitude):
        ds, targets["longitude"] = _longitude_targets(ds, grid, source)
    return ds, targets


def _interpolated(ds: xr.Dataset, targets: dict[str, np.ndarray]) -> xr.Dataset:
    """``ds`` linearly interpolated to ``targets`` (unchanged without targets)."""
    if not targets:
        return ds
    if "latitude" in targets:
        # scipy's interpolators want increasing coordinates; the output order follows the targets.
        ds = ds.isel(latitude=slice(None, None, -1))
    return ds.interp(targets, method="linear", assume_sorted=True)


def _on_grid(ds: xr.Dataset, grid: Grid, regridded_altitude: bool) -> xr.Dataset:
    """``ds`` with ``grid``'s exact coordinates and CF attributes, data variables float32."""
    # Exact target coordinates (clipping moved some) with genda's CF attributes, and the
    # vertical's auxiliaries of the target levels (interpolating air_pressure would not give them).
    out = ds.assign_coords(grid.coords())
    for name in out.data_vars:
        attrs = dict(out[name].attrs)
        if regridded_altitude:
            # Statistics per source level do not describe the new levels.
            attrs.pop(MEAN_ATTR, None)
            attrs.pop(STD_ATTR, None)
        out[name] = out[name].astype(np.float32)
        out[name].attrs = attrs
    return out


def regrid(
    ds: xr.Dataset,
    grid: Grid,
    source: str = "dataset",
    altitude_tolerance_km: float = ALTITUDE_TOLERANCE_KM,
    latitude_tolerance_deg: float | None = None,
) -> xr.Dataset:
    """Interpolate ``ds`` (genda conventions, see :func:`genda.storage.open_archive`) to ``grid``.

    Args:
        ds: data variables ``(time, altitude, latitude, longitude)``; latitude
            north to south, longitude increasing in [0, 360), altitude
            increasing (km).
        grid: the target; its variables are selected from ``ds`` if all present,
            else every data variable is regridded.
        source: the file name for error messages.
        altitude_tolerance_km: how far (km) the target altitudes may reach
            beyond the source's; those points take the edge value.
        latitude_tolerance_deg: the same in latitude; default half the
            source's latitude spacing at each edge.

    Returns:
        Dataset on exactly ``grid``'s coordinates (with its CF attributes),
        float32, lazy where ``ds`` is.

    Raises:
        ArchiveError: the target reaches beyond the source (more than the
            tolerance), or the source lacks a coordinate.
    """
    _check_axes(ds, source)
    names = [n for n in grid.variables if n in ds.data_vars]
    if len(names) == len(grid.variables):
        ds = ds[names]
    ds, targets = _targets(ds, grid, source, altitude_tolerance_km, latitude_tolerance_deg)
    out = _on_grid(_interpolated(ds, targets), grid, "altitude" in targets)
    out.attrs["genda_regrid"] = (
        "linear in latitude and altitude, periodic-linear in longitude (genda.storage.regrid)"
        if targets
        else "none (source already on the grid)"
    )
    return out
