"""ICON's native grid: recognising its output and reading its cells.

ICON (Zängl et al. 2015, Q. J. R. Meteorol. Soc. 141; UA-ICON: Borchert et al.
2019, Geosci. Model Dev. 12) writes its fields on the cells of a triangular
mesh. The layout read here is that of CDI's NetCDF output and of ICON's grid
files (the ICON tutorial's chapter on grid files, DWD; CDI's ``unstructured``
grid type):

- a data file: variables ``(time, height, ncells)`` (the cell dimension is
  ``ncells``, or ``cell`` after some post-processing); cell centres ``clon``,
  ``clat`` ``(ncells,)`` in radians (``standard_name`` longitude/latitude),
  with vertices ``clon_bnds``, ``clat_bnds`` ``(ncells, vertices=3)`` named by
  their ``bounds`` attribute. CMOR-ised ICON output (``latitude(i)``,
  ``longitude(i)`` in degrees, ``vertices_latitude``) has the same shape and is
  read the same way.
- a grid file ``icon_grid_*.nc``: ``clon``, ``clat`` ``(cell,)``, ``vlon``,
  ``vlat`` ``(vertex,)`` in radians, ``vertex_of_cell`` ``(nv=3, cell)``
  1-based, ``cell_area``, ...; needed when the data file carries no
  coordinates. When both name their grid (``uuidOfHGrid``) the names must agree.
"""

from __future__ import annotations

import os
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np
import xarray as xr

from genda.storage.errors import ArchiveError
from genda.storage.icon_remap import unit_vectors
from genda.storage.source_conventions import LATITUDE_NAMES, LONGITUDE_NAMES, units_of
from genda.units import canonical_units

CELL_DIMS = ("ncells", "cell")
"""Names of ICON's cell dimension, recognised even without cell coordinates."""

_RADIANS = ("radian", "radians", "rad")
_DEGREES = ("degrees", "degree", "degrees_north", "degrees_east", "degree_north", "degree_east")
_COORDINATES_MISSING = (
    "the cell centres are missing: it has neither 'clon'/'clat' (radians, with "
    "'clon_bnds'/'clat_bnds') nor another pair of 1-D longitude/latitude on that dimension; give "
    "the ICON grid file (icon_grid_*.nc) with open_archive(..., icon=IconRemap(grid_file=...)) "
    "or --icon-grid FILE on the command line"
)


@dataclass(frozen=True)
class IconMesh:
    """The cells of an ICON mesh.

    Attributes:
        lon, lat: ``(N,)`` cell centres, radians.
        corners: ``(N, 3, 3)`` unit vectors of each cell's vertices, or None
            where the file has none (``conservative`` needs them).
        origin: the file the coordinates came from, for messages.
        uuid: the grid's ``uuidOfHGrid`` where the file names it.
    """

    lon: np.ndarray
    lat: np.ndarray
    corners: np.ndarray | None
    origin: str
    uuid: str | None = None

    def __post_init__(self) -> None:
        if self.lon.shape != self.lat.shape or self.lon.ndim != 1:
            raise ArchiveError(
                f"{self.origin}: cell longitudes {self.lon.shape} and latitudes "
                f"{self.lat.shape} are not two 1-D arrays of one length"
            )
        if np.any(np.abs(self.lat) > np.pi / 2 + 1e-9):
            # Most often degrees in a variable without units (taken as radians, ICON's own).
            raise ArchiveError(
                f"{self.origin}: cell latitudes reach {np.max(np.abs(self.lat)):.4g} rad, beyond "
                "the poles; are they in degrees without a units attribute?"
            )

    @property
    def size(self) -> int:
        return int(self.lon.size)

    def centres(self) -> np.ndarray:
        """``(N, 3)`` unit vectors of the cell centres."""
        return unit_vectors(self.lon, self.lat)


# ---------------------------------------------------------------------------- detection
def centre_names(ds: xr.Dataset) -> tuple[Hashable, Hashable] | None:
    """``(lon, lat)`` names of 1-D cell-centre coordinates sharing one dimension, if any."""

    def one_d(names: list[Hashable]) -> list[Hashable]:
        return [n for n in names if n in ds.variables and ds[n].ndim == 1]

    lons = one_d(["clon", *LONGITUDE_NAMES])
    lons += one_d(
        [n for n, v in ds.variables.items() if v.attrs.get("standard_name") == "longitude"]
    )
    lats = one_d(["clat", *LATITUDE_NAMES])
    lats += one_d(
        [n for n, v in ds.variables.items() if v.attrs.get("standard_name") == "latitude"]
    )
    for lon in lons:
        for lat in lats:
            if ds[lon].dims == ds[lat].dims:
                return lon, lat
    return None


def cell_dimension(ds: xr.Dataset) -> Hashable | None:
    """The dimension of the cells if ``ds`` is on an unstructured (ICON native) grid, else None."""
    names = centre_names(ds)
    if names is not None:
        return ds[names[0]].dims[0]
    data_dims = {d for v in ds.data_vars.values() for d in v.dims}
    return next((d for d in CELL_DIMS if d in data_dims), None)


def is_icon_native(ds: xr.Dataset) -> bool:
    """Whether ``ds`` holds fields on ICON's native cells (see the module docstring)."""
    return cell_dimension(ds) is not None


# ---------------------------------------------------------------------------- the mesh
def _radians(var: xr.DataArray, what: str, source: str) -> np.ndarray:
    """Values of an angle in radians, from radians (ICON's default) or degrees."""
    units = canonical_units(units_of(var) or "radian")
    values = np.asarray(var.values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ArchiveError(f"{source}: {what} {var.name!r} has missing values")
    if units in _RADIANS:
        return values
    if units in _DEGREES:
        return np.deg2rad(values)
    raise ArchiveError(
        f"{source}: {what} {var.name!r} has units {units!r}; expected radian or degrees"
    )


def _corners_from_bounds(
    ds: xr.Dataset, names: tuple[Hashable, Hashable], cell: Hashable, source: str
) -> np.ndarray | None:
    """``(N, 3, 3)`` corner unit vectors from ``clon_bnds``/``clat_bnds``; None without them."""
    found = [ds[n].attrs.get("bounds", f"{n}_bnds") for n in names]
    if not all(b in ds.variables and cell in ds[b].dims and ds[b].ndim == 2 for b in found):
        return None
    lon, lat = (ds[b].transpose(cell, ...) for b in found)
    if lon.shape[1] != 3:
        return None  # not triangles: linear and nearest need only the centres
    return unit_vectors(_radians(lon, "cell bounds", source), _radians(lat, "cell bounds", source))


def _grid_file_mesh(path: str | os.PathLike[str]) -> IconMesh:
    """The mesh of an ICON grid file (``clon``, ``clat``, ``vlon``, ``vlat``, ``vertex_of_cell``)."""
    # Deferred: readers imports this module for open_archive's hook.
    from genda.storage.readers import open_raw

    grid = open_raw(path)
    source = str(path)
    missing = [n for n in ("clon", "clat") if n not in grid.variables]
    if missing:
        raise ArchiveError(
            f"{source}: not an ICON grid file, it lacks {missing} (cell centres in radians)"
        )
    lon, lat = (
        _radians(grid["clon"], "cell longitude", source),
        _radians(grid["clat"], "cell latitude", source),
    )
    corners = None
    if all(n in grid.variables for n in ("vlon", "vlat", "vertex_of_cell")):
        vertices = unit_vectors(
            _radians(grid["vlon"], "vertex longitude", source),
            _radians(grid["vlat"], "vertex latitude", source),
        )
        of_cell = grid["vertex_of_cell"]
        index = np.asarray(of_cell.transpose(grid["clon"].dims[0], ...).values, dtype=np.int64) - 1
        if index.min() < 0 or index.max() >= vertices.shape[0]:
            raise ArchiveError(
                f"{source}: vertex_of_cell holds indices outside 1..{vertices.shape[0]} "
                "(it is 1-based, into vlon/vlat)"
            )
        corners = vertices[index]
    else:
        corners = _corners_from_bounds(grid, ("clon", "clat"), grid["clon"].dims[0], source)
    uuid = grid.attrs.get("uuidOfHGrid")
    return IconMesh(lon, lat, corners, source, str(uuid) if uuid is not None else None)


def _data_file_mesh(ds: xr.Dataset, cell: Hashable, source: str) -> IconMesh | None:
    """The mesh from the data file's own cell coordinates; None without them."""
    names = centre_names(ds)
    if names is None:
        return None
    lon = _radians(ds[names[0]], "cell longitude", source)
    lat = _radians(ds[names[1]], "cell latitude", source)
    uuid = ds.attrs.get("uuidOfHGrid")
    corners = _corners_from_bounds(ds, names, cell, source)
    return IconMesh(lon, lat, corners, source, str(uuid) if uuid is not None else None)


def _check_same_mesh(data: IconMesh, grid: IconMesh, source: str) -> None:
    """Error unless the grid file describes the data file's cells (count, uuid, centres)."""
    if data.uuid is not None and grid.uuid is not None and data.uuid != grid.uuid:
        raise ArchiveError(
            f"{source}: its grid (uuidOfHGrid {data.uuid}) is not the one of the grid file "
            f"{grid.origin} (uuidOfHGrid {grid.uuid})"
        )
    distance = np.linalg.norm(data.centres() - grid.centres(), axis=1)
    if np.max(distance) > 1e-5:  # radians: ~60 m, well above float32 round-off of clon/clat
        raise ArchiveError(
            f"{source}: its cell centres (clon/clat) differ from those of the grid file "
            f"{grid.origin} by up to {np.rad2deg(np.max(distance)):.3g} degrees; "
            "the grid file belongs to another grid"
        )


def read_icon_mesh(
    ds: xr.Dataset, grid_file: str | os.PathLike[str] | None = None, source: str = "dataset"
) -> tuple[IconMesh, Hashable]:
    """The mesh of ICON native output ``ds`` and the name of its cell dimension.

    The coordinates come from the grid file when one is given (checked against
    the data file's own where it has them), else from the data file.

    Raises:
        ArchiveError: ``ds`` is not on an unstructured grid, has no cell
            coordinates and no grid file is given, or the grid file's cell
            count (or grid) differs from the data file's.
    """
    cell = cell_dimension(ds)
    if cell is None:
        raise ArchiveError(
            f"{source}: options for ICON's native grid were given, but the file has no cell "
            f"dimension ({', '.join(CELL_DIMS)}) nor 1-D cell centres (clon/clat)"
        )
    count = int(ds.sizes[cell])
    own = _data_file_mesh(ds, cell, source)
    if grid_file is None:
        if own is None:
            raise ArchiveError(
                f"{source}: data on an unstructured grid (dimension {cell!r}, {count} cells), but "
                + _COORDINATES_MISSING
            )
        return own, cell
    mesh = _grid_file_mesh(grid_file)
    if mesh.size != count:
        raise ArchiveError(
            f"{source}: {count} cells along {cell!r}, but the grid file {grid_file} has "
            f"{mesh.size} cells; it belongs to another grid"
        )
    if own is not None:
        _check_same_mesh(own, mesh, source)
    return mesh, cell


def grid_variables(ds: xr.Dataset) -> list[Hashable]:
    """The variables that describe the cells (centres and their bounds), not fields."""
    names = centre_names(ds)
    if names is None:
        return []
    bounds = [ds[n].attrs.get("bounds", f"{n}_bnds") for n in names]
    return [*names, *(b for b in bounds if b in ds.variables)]


__all__ = [
    "CELL_DIMS",
    "IconMesh",
    "cell_dimension",
    "centre_names",
    "grid_variables",
    "is_icon_native",
    "read_icon_mesh",
]
