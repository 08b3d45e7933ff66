"""Finding a model's own heights in its output file, as a climatological profile.

The reading side of :func:`genda.observations.heights.level_heights_from_archive`:
which variable of a model-output file holds the heights of its levels (by
``standard_name``, then by name), in which units, on full or half levels, and
their mean over time and longitude. The file is opened through
:mod:`genda.storage` (its names, units and axes: :mod:`genda.storage.readers`),
imported when :func:`mean_height_profile` runs so that importing
``genda.observations`` does not load the storage stack.
"""

from __future__ import annotations

import os
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from genda.constants import STANDARD_GRAVITY
from genda.observations.standard_heights import geopotential_to_geometric_km
from genda.units import LENGTH_UNITS_M, canonical_units

if TYPE_CHECKING:
    from genda.storage.icon_native import IconRemap

# What a model-output file may call its heights, in order of preference: geometric
# heights of full levels need no conversion; half levels are averaged to full ones.
_GEOMETRIC_STANDARD_NAMES = (
    "altitude",
    "height",
    "height_above_mean_sea_level",
    "geometric_height_at_full_level",  # ICON's zg (AES physics)
    "geometric_height_at_full_level_center",  # ICON's z_mc
)
_HALF_LEVEL_STANDARD_NAMES = (
    "geometric_height_at_half_level",  # ICON's zghalf
    "geometric_height_at_half_level_center",  # ICON's z_ifc
)
_GEOPOTENTIAL_HEIGHT_NAMES = ("zg", "Z3", "geopotential_height", "ZG", "gph", "hgt")
_GEOMETRIC_NAMES = ("z_mc", "zf", "geometric_height", "height", "altitude")
_HALF_LEVEL_NAMES = ("zghalf", "z_ifc", "zh")
_GEOPOTENTIAL_NAMES = ("z", "Z", "geopotential", "phi", "PHI", "geop")
_GEOPOTENTIAL_UNITS = ("m2 s-2", "m2/s2", "m2.s-2", "m2s-2", "j kg-1", "j/kg")
_LOOKED_FOR = (
    f"geopotential height {', '.join(_GEOPOTENTIAL_HEIGHT_NAMES)} (m) or "
    f"standard_name=geopotential_height; geopotential {', '.join(_GEOPOTENTIAL_NAMES)} "
    "(m2 s-2) or standard_name=geopotential; "
    f"geometric height {', '.join(_GEOMETRIC_NAMES + _HALF_LEVEL_NAMES)} or standard_name "
    f"{', '.join(_GEOMETRIC_STANDARD_NAMES + _HALF_LEVEL_STANDARD_NAMES)} (m)"
)


@dataclass(frozen=True)
class HeightProfile:
    """The mean geometric height of a file's levels.

    Attributes:
        altitude_km: ``(L,)`` log-pressure altitude of the levels (km), increasing.
        height_km: ``(L, n_lat)`` geometric height above mean sea level (km).
        latitude: ``(n_lat,)`` deg N, increasing.
        variable: the file's variable the heights came from.
        description: what was read and how it was converted.
    """

    altitude_km: np.ndarray
    height_km: np.ndarray
    latitude: np.ndarray
    variable: str
    description: str


def _kind(name: Hashable, var: xr.DataArray) -> str | None:
    """``"geometric"``, ``"half"``, ``"geopotential_height"``, ``"geopotential"`` or None."""
    units = canonical_units(str(var.attrs.get("units", "")))
    standard_name = var.attrs.get("standard_name")
    if units in _GEOPOTENTIAL_UNITS:
        # m2 s-2 is also the unit of kinetic energy: a name or standard_name must say geopotential
        geopotential = standard_name == "geopotential" or (
            standard_name is None and name in _GEOPOTENTIAL_NAMES
        )
        return "geopotential" if geopotential else None
    if standard_name in _GEOMETRIC_STANDARD_NAMES:
        return "geometric"
    if standard_name in _HALF_LEVEL_STANDARD_NAMES:
        return "half"
    if standard_name == "geopotential_height":
        return "geopotential_height"
    if standard_name is None:  # a name decides only where no standard_name says otherwise
        if name in _GEOPOTENTIAL_HEIGHT_NAMES:
            return "geopotential_height"
        if name in _GEOMETRIC_NAMES:
            return "geometric"
        if name in _HALF_LEVEL_NAMES:
            return "half"
    return None


def _find_height(ds: xr.Dataset) -> tuple[Hashable, str] | None:
    """The best height variable of ``ds``: a field (2-D or more), not a coordinate axis."""
    order = ("geometric", "geopotential_height", "geopotential", "half")
    found: dict[str, Hashable] = {}
    for name, var in ds.variables.items():
        if var.ndim < 2 or name in ds.dims:
            continue
        kind = _kind(name, ds[name])
        if kind is not None and kind not in found:
            found[kind] = name
    for kind in order:
        if kind in found:
            return found[kind], kind
    return None


def _full_levels(ds: xr.Dataset, name: Hashable, source: str) -> xr.DataArray:
    """Half-level heights averaged to full levels, as ICON defines ``z_mc`` from ``z_ifc``.

    The full levels are the dimension of the other data variables that is one
    shorter than one of the variable's own (the interfaces).
    """
    var = ds[name]
    other_dims = {d for n, v in ds.data_vars.items() if n != name for d in v.dims}
    pairs = [
        (half, full)
        for half in var.dims
        if half not in other_dims
        for full in other_dims
        if full not in var.dims and ds.sizes[full] == var.sizes[half] - 1
    ]
    if len(pairs) != 1:
        raise archive_error(
            f"{source}: half-level heights {name!r} have dims {dict(var.sizes)}; expected one "
            "dimension of interfaces, one longer than the levels of the other variables "
            f"({ {str(d): ds.sizes[d] for d in sorted(other_dims, key=str)} })"
        )
    half, full = pairs[0]
    mid = 0.5 * (var.isel({half: slice(None, -1)}).data + var.isel({half: slice(1, None)}).data)
    return xr.DataArray(mid, dims=[full if d == half else d for d in var.dims], attrs=var.attrs)


def _in_metres(var: xr.DataArray, name: Hashable, kind: str, source: str) -> xr.DataArray:
    """The heights in m (geopotential / g0 for geopotential).

    Lengths in the spellings :func:`genda.storage.open_archive` reads
    (:data:`genda.units.LENGTH_UNITS_M`, and ``gpm``): a file whose heights open
    there is read here alike.
    """
    lengths = {**LENGTH_UNITS_M, "gpm": 1.0}
    raw = str(var.attrs.get("units", ""))
    units = canonical_units(raw)
    if kind == "geopotential":
        return var.astype(np.float64) / STANDARD_GRAVITY
    if units not in lengths:
        raise archive_error(
            f"{source}: height variable {name!r} has units {raw!r}; expected m or km "
            "(or geopotential in m2 s-2)"
        )
    scale = lengths[units]
    return var.astype(np.float64) * scale


def _over_time(var: xr.DataArray, ds: xr.Dataset, time_names: tuple[str, ...]) -> xr.DataArray:
    """``var`` broadcast (lazily) over the time dimensions of ``ds`` that it lacks.

    ICON writes ``z_mc`` and ``z_ifc`` once, without time, beside fields with
    time: the heights are the same at every time, and where the levels'
    pressure varies in time each time places them anew.
    """
    missing = {
        d: ds.sizes[d]
        for d in ds.dims
        if d not in var.dims
        and (
            d in time_names
            or (d in ds.coords and np.issubdtype(ds[d].dtype, np.datetime64))
            or (d in ds.coords and ds[d].attrs.get("standard_name") == "time")
        )
    }
    return var.expand_dims(missing) if missing else var


def archive_error(message: str) -> Exception:
    """An :class:`~genda.storage.errors.ArchiveError` (imported late: see the module docstring)."""
    from genda.storage.errors import ArchiveError

    return ArchiveError(message)


def mean_height_profile(
    path: str | os.PathLike[str], icon: IconRemap | None = None
) -> HeightProfile:
    """The geometric height of a file's levels averaged over time and longitude, per latitude.

    ICON output on its native grid (recognised as :func:`genda.storage.open_archive`
    recognises it, or named by ``icon``) is first remapped to a latitude-longitude
    grid by :func:`genda.storage.icon_native.remap_icon_native`, which remaps every
    floating-point variable on the cells, the heights (``z_mc``, ``z_ifc``, ``zg``)
    among them; ``icon`` gives its grid file, target and method.

    The heights are the first found of: geometric heights of the levels
    (``z_mc``, ICON's ``zg`` with ``standard_name:
    geometric_height_at_full_level``, ``standard_name`` ``height`` /
    ``altitude``); geopotential height (``zg``, ``Z3``, ``geopotential_height``,
    m); geopotential (m2 s-2, divided by g0); geometric heights of half levels
    (``zghalf``, ``z_ifc``), averaged to full levels. Geometric heights are
    taken as above mean sea level (ICON's are). Geopotential height is averaged,
    then converted to geometric height with latitude-dependent gravity
    (:func:`~genda.observations.standard_heights.geopotential_to_geometric_km`;
    converting before averaging would change the result by centimetres).

    Raises:
        ArchiveError: no height variable (naming those looked for), or units
            that are no length (or geopotential).
    """
    from genda.storage.icon_native import is_icon_native, remap_icon_native
    from genda.storage.readers import open_raw, to_genda_conventions
    from genda.storage.source_conventions import TIME_NAMES

    source = str(path)
    raw = open_raw(path)
    if icon is not None or is_icon_native(raw):
        raw = remap_icon_native(raw, icon, source=source)
    found = _find_height(raw)
    if found is None:
        raise archive_error(
            f"{source}: no height variable to place geometric heights (looked for {_LOOKED_FOR}); "
            f"variables present: {sorted(map(str, raw.data_vars))}. Archives of 'genda simulate' "
            "carry zg; for other model output add the geopotential height of each level as zg (m)"
        )
    name, kind = found
    var = _full_levels(raw, name, source) if kind == "half" else raw[name]
    metres = _over_time(_in_metres(var, name, kind, source), raw, TIME_NAMES)
    renamed = raw.drop_vars([v for v in ("geopotential_height",) if v in raw.variables])
    renamed["geopotential_height"] = metres.assign_attrs(units="m")
    heights = to_genda_conventions(renamed, ("geopotential_height",), source)["geopotential_height"]
    mean_m = heights.astype(np.float64).mean(("time", "longitude")).values  # (L, n_lat)
    latitude = heights["latitude"].values.astype(np.float64)
    order = np.argsort(latitude)
    mean_km = mean_m[:, order] / 1e3
    is_geometric = kind in ("geometric", "half")
    height_km = mean_km if is_geometric else geopotential_to_geometric_km(mean_km, latitude[order])
    what = "geometric height" if is_geometric else "geopotential height, converted to geometric"
    description = (
        f"{source}: {name} ({what}), mean over {heights.sizes['time']} times and "
        f"{heights.sizes['longitude']} longitudes, per latitude"
    )
    return HeightProfile(
        heights["altitude"].values.astype(np.float64),
        height_km,
        latitude[order],
        str(name),
        description,
    )


__all__ = ["HeightProfile", "archive_error", "mean_height_profile"]
