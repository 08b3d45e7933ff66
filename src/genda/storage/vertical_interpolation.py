"""Interpolating columns from a source's own vertical coordinate to log-pressure levels.

genda's levels are log-pressure altitudes ``z* = H ln(p0 / p)`` (km,
:mod:`genda.constants`). Model output whose levels do not sit at one pressure
everywhere has in every column (time, latitude, longitude) its own ``z*``:

- geometric or geopotential heights (UA-ICON ``height``/``z_mc``, CESM ``Z3``)
  with the model's pressure at every point (``pres``, ``pfull``);
- hybrid sigma-pressure levels (WACCM-X, CESM), ``p = a p0 + b ps`` (CF
  conventions 1.10, appendix D, "Atmosphere hybrid sigma pressure coordinate";
  the form ``p = ap + b ps`` too).

:func:`to_levels` interpolates a field in each column linearly in ``z*``
(that is, linearly in ``ln p``) to fixed levels. Linear interpolation of a
smooth ``f`` on a column spacing ``h`` errs by at most ``h**2 / 8 max|f''|``
and creates no new extrema (temperatures stay positive).

Levels must lie inside every column (:class:`ColumnLevels` finds the range
all columns share): genda archives hold no NaN, and extrapolating a column
would invent data. :func:`target_levels` chooses the default levels inside
that range or checks the caller's against it.

Why not a library: ``numpy.interp`` and ``xarray.interp`` interpolate along
one coordinate shared by all columns; MetPy's ``log_interpolate_1d`` and
geocat's ``interp_hybrid_to_pressure`` would add their dependency trees for
the same few lines. The per-column search is torch's batched
``searchsorted`` (numpy's is 1-D only).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import dask
import numpy as np
import torch
import xarray as xr

from genda.constants import REFERENCE_PRESSURE_PA, SCALE_HEIGHT_KM
from genda.storage.errors import ArchiveError

EDGE_TOLERANCE_KM = 1e-9
"""Round-off allowed when a level equals the edge of the range the columns share."""


def log_pressure_altitude(pressure_pa: xr.DataArray) -> xr.DataArray:
    """``H ln(p0 / p)`` in km of a (lazy) pressure in Pa, computed in float64.

    Non-positive or missing pressures give NaN or infinities, which
    :func:`column_levels_from_altitude` refuses.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        return SCALE_HEIGHT_KM * np.log(REFERENCE_PRESSURE_PA / pressure_pa.astype(np.float64))


# ---------------------------------------------------------------------------- hybrid levels
@dataclass(frozen=True)
class HybridSigmaPressure:
    """Hybrid sigma-pressure levels: ``p = ap + b ps`` (``ap = a p0`` in the ``a`` form).

    Attributes:
        ap: ``(n,)`` pressure part of each level (Pa).
        b: ``(n,)`` sigma part of each level (dimensionless).
        ps: surface pressure (Pa), e.g. ``(time, latitude, longitude)``, lazy.
        dim: the levels' dimension.
        reference_ps: the reference surface pressure (Pa): the file's ``P0``
            in the ``a`` form, genda's ``p0`` otherwise.
        description: names of the terms, for messages and attributes.
    """

    ap: np.ndarray
    b: np.ndarray
    ps: xr.DataArray
    dim: Hashable
    reference_ps: float
    description: str

    def pressure(self) -> xr.DataArray:
        """Pressure (Pa) of every point, ``(dim, *ps.dims)``, lazy where ``ps`` is."""
        ap = xr.DataArray(self.ap, dims=[self.dim])
        b = xr.DataArray(self.b, dims=[self.dim])
        return ap + b * self.ps.astype(np.float64)

    def at(self, surface_pressure: float) -> np.ndarray:
        """``(n,)`` pressure (Pa) of the levels over a surface pressure (Pa)."""
        return self.ap + self.b * surface_pressure


# ---------------------------------------------------------------------------- column ranges
@dataclass(frozen=True)
class ColumnLevels:
    """The log-pressure altitude of every source point and the range all columns share.

    Attributes:
        altitude: ``z*`` (km) of every source point, dims include ``dim``, lazy.
        dim: the source's vertical dimension.
        increasing: whether ``z*`` increases along ``dim`` in every column (else
            it decreases in every column).
        low_km, high_km: the range every column covers: the highest column
            bottom and the lowest column top.
        typical_km: ``(n,)`` a representative ``z*`` of each source level,
            increasing: the default levels before restriction to the range.
        typical: what ``typical_km`` is, for the documentation of the result.
    """

    altitude: xr.DataArray
    dim: Hashable
    increasing: bool
    low_km: float
    high_km: float
    typical_km: np.ndarray
    typical: str


def _common_range(
    lowest: np.ndarray, highest: np.ndarray, increasing: bool, what: str
) -> tuple[float, float]:
    """``(low, high)`` covered by every column, from each level's lowest and highest ``z*``."""
    bottom, top = (0, -1) if increasing else (-1, 0)
    low, high = float(highest[bottom]), float(lowest[top])
    if not low < high:
        raise ArchiveError(
            f"{what}: the columns share no log-pressure range (highest column bottom "
            f"{low:.4g} km, lowest column top {high:.4g} km); nothing can be interpolated"
        )
    return low, high


def _orientation(up: bool, down: bool, what: str) -> bool:
    if not (up or down):
        raise ArchiveError(
            f"{what}: pressure does not change monotonically along the levels in every column "
            "(all increasing or all decreasing); genda cannot order the levels"
        )
    return up


def column_levels_from_altitude(
    altitude: xr.DataArray, dim: Hashable, typical: str, what: str
) -> ColumnLevels:
    """:class:`ColumnLevels` of ``z*`` given at every point (km), in one pass over it.

    Reads ``altitude`` once (one ``dask.compute``): each level's minimum,
    maximum and mean, and whether the columns are monotonic. The mean of each
    level is its typical altitude.

    Raises:
        ArchiveError: fewer than two levels, missing or non-positive pressures,
            columns that are not monotonic or share no range; ``what`` names
            the file and variable.
    """
    if altitude.sizes[dim] < 2:
        raise ArchiveError(f"{what}: interpolating needs at least two levels, got one")
    others = [d for d in altitude.dims if d != dim]
    steps = altitude.diff(dim)
    lowest, highest, mean, finite, up, down = dask.compute(
        altitude.min(others),
        altitude.max(others),
        altitude.mean(others),
        np.isfinite(altitude).all(),
        (steps > 0).all(),
        (steps < 0).all(),
    )
    if not bool(finite):
        raise ArchiveError(
            f"{what}: pressure has missing, zero or negative values; genda needs it at every point"
        )
    increasing = _orientation(bool(up), bool(down), what)
    low, high = _common_range(np.asarray(lowest), np.asarray(highest), increasing, what)
    return ColumnLevels(
        altitude, dim, increasing, low, high, np.sort(np.asarray(mean, dtype=np.float64)), typical
    )


def column_levels_from_hybrid(levels: HybridSigmaPressure, what: str) -> ColumnLevels:
    """:class:`ColumnLevels` of hybrid sigma-pressure levels, reading only ``ps``.

    A level's pressure is affine in ``ps``, so its extremes over all columns
    and the monotonicity of every column follow from the levels at the
    smallest and the largest surface pressure. The typical altitudes are
    those at the reference surface pressure (``P0``).
    """
    if levels.ap.size < 2:
        raise ArchiveError(f"{what}: interpolating needs at least two levels, got one")
    ps_min, ps_max, finite = dask.compute(
        levels.ps.min(), levels.ps.max(), levels.ps.notnull().all()
    )
    ps_min, ps_max = float(ps_min), float(ps_max)
    if not bool(finite) or not ps_min > 0:
        raise ArchiveError(f"{what}: surface pressure has missing, zero or negative values")
    ends = np.stack([levels.at(ps_min), levels.at(ps_max)])  # (2, n) Pa
    if not np.all(ends > 0):
        raise ArchiveError(f"{what}: the hybrid coefficients give non-positive pressures")
    z_ends = SCALE_HEIGHT_KM * np.log(REFERENCE_PRESSURE_PA / ends)
    steps = np.diff(z_ends, axis=1)
    increasing = _orientation(bool(np.all(steps > 0)), bool(np.all(steps < 0)), what)
    low, high = _common_range(z_ends.min(axis=0), z_ends.max(axis=0), increasing, what)
    reference = SCALE_HEIGHT_KM * np.log(REFERENCE_PRESSURE_PA / levels.at(levels.reference_ps))
    return ColumnLevels(
        log_pressure_altitude(levels.pressure()),
        levels.dim,
        increasing,
        low,
        high,
        np.sort(reference),
        f"the log-pressure altitude of the levels at the reference surface pressure "
        f"{levels.reference_ps:g} Pa",
    )


def target_levels(
    columns: ColumnLevels,
    levels_km: Sequence[float] | np.ndarray | None,
    what: str,
    tolerance_km: float = EDGE_TOLERANCE_KM,
) -> np.ndarray:
    """The levels (km, increasing) to interpolate to.

    Without ``levels_km``: ``columns.typical_km`` inside the range every
    column covers (levels outside it are left out). With ``levels_km``: those,
    each within the range or at most ``tolerance_km`` beyond it (then moved
    onto its edge: the edge value is used).

    Raises:
        ArchiveError: levels not finite or not strictly increasing, reaching
            beyond the range, or no typical level inside it.
    """
    low, high = columns.low_km, columns.high_km
    if levels_km is None:
        typical = columns.typical_km
        inside = typical[
            (typical >= low - EDGE_TOLERANCE_KM) & (typical <= high + EDGE_TOLERANCE_KM)
        ]
        if inside.size == 0:
            raise ArchiveError(
                f"{what}: no level lies within the log-pressure range [{low:.4g}, {high:.4g}] km "
                "that every column covers; give the levels (levels_km)"
            )
        return np.clip(inside, low, high)
    levels = np.asarray(levels_km, dtype=np.float64)
    if levels.ndim != 1 or levels.size == 0 or not np.all(np.isfinite(levels)):
        raise ArchiveError(f"{what}: levels_km must be a non-empty 1-D list of finite km")
    if np.any(np.diff(levels) <= 0):
        raise ArchiveError(f"{what}: levels_km must be strictly increasing, got {levels.tolist()}")
    if levels[0] < low - tolerance_km or levels[-1] > high + tolerance_km:
        raise ArchiveError(
            f"{what}: levels [{levels[0]:.4g}, {levels[-1]:.4g}] km reach beyond the "
            f"log-pressure range [{low:.4g}, {high:.4g}] km that every column covers "
            f"(tolerance {tolerance_km:.3g} km); genda does not extrapolate"
        )
    return np.clip(levels, low, high)


# ---------------------------------------------------------------------------- interpolation
def interpolate_columns(values: np.ndarray, altitude: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Interpolate each column linearly in ``z*`` to ``levels``.

    Args:
        values: ``(..., n)`` the field at the source points.
        altitude: ``(..., n)`` (broadcastable to ``values``) ``z*`` of the
            source points, strictly increasing along the last axis.
        levels: ``(m,)`` target ``z*``, increasing, inside every column
            (a level beyond a column's end gets the end value).

    Returns:
        ``(..., m)`` float64.
    """
    values, altitude = np.broadcast_arrays(values, altitude)
    lead, n = altitude.shape[:-1], altitude.shape[-1]
    levels = np.asarray(levels, dtype=np.float64)
    # Writable C-ordered copies: torch shares their memory (broadcast views are read-only).
    x = np.array(altitude, dtype=np.float64, order="C").reshape(-1, n)
    f = np.asarray(values, dtype=np.float64).reshape(-1, n)
    targets = np.repeat(levels[None, :], x.shape[0], axis=0)
    # Index of each level's upper neighbour: torch.searchsorted batches over columns.
    upper = torch.searchsorted(torch.from_numpy(x), torch.from_numpy(targets), right=True)
    upper = upper.clamp_(1, n - 1).numpy()
    x0, x1 = np.take_along_axis(x, upper - 1, axis=1), np.take_along_axis(x, upper, axis=1)
    f0, f1 = np.take_along_axis(f, upper - 1, axis=1), np.take_along_axis(f, upper, axis=1)
    weight = np.clip((targets - x0) / (x1 - x0), 0.0, 1.0)
    # This form returns the source values exactly at the source points (weight 0 or 1).
    return ((1.0 - weight) * f0 + weight * f1).reshape(*lead, levels.size)


def to_levels(
    field: xr.DataArray, columns: ColumnLevels, levels: np.ndarray, new_dim: str = "altitude"
) -> xr.DataArray:
    """``field`` (dims include ``columns.dim``) interpolated to ``levels`` along ``new_dim``.

    Lazy on dask (the vertical is gathered into one chunk per column block);
    float64, without attributes; ``new_dim`` comes last.
    """
    dim, altitude = columns.dim, columns.altitude
    if not columns.increasing:
        field = field.isel({dim: slice(None, None, -1)})
        altitude = altitude.isel({dim: slice(None, None, -1)})
    if field.chunks is not None:
        field = field.chunk({dim: -1})
    if altitude.chunks is not None:
        altitude = altitude.chunk({dim: -1})
    return xr.apply_ufunc(
        interpolate_columns,
        field,
        altitude,
        kwargs={"levels": np.asarray(levels, dtype=np.float64)},
        input_core_dims=[[dim], [dim]],
        output_core_dims=[[new_dim]],
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {new_dim: len(levels)}},
        keep_attrs=False,
    )
