"""UA-ICON output on its native grid, remapped to a latitude-longitude grid.

:func:`remap_icon_native` turns a Dataset on ICON's cells (its layout and the
grid file: :mod:`genda.storage.icon_mesh`) into one on a latitude-longitude
grid (dims ``..., latitude, longitude``; latitude north to south, longitude in
[0, 360)), with every other dimension (time, the vertical) passed through, so
that :func:`genda.storage.open_archive` treats it like any other model output.
The weights come from :mod:`genda.storage.icon_remap` (barycentric on the
triangles by default, O(h^2); nearest; first-order conservative for
coarsening) and are applied lazily (dask), one sparse product per field.

Winds are remapped as 3-D vectors (``u e_east + v e_north``, interpolated, then
projected on the target's east and north), as ESMF's vector regridding does:
remapping u and v as two scalars ignores that the local east and north turn
between a cell centre and a nearby target point, which near the poles errs by
O(h |V| / distance to the pole) and does not converge as O(h^2) (measured in
tests/test_icon_native.py: 10-30 times the vector remap's error).

The target is, in this order: the ``grid`` given to ``open_archive``;
``IconRemap.target`` ``(nlat, nlon)`` (a Gaussian grid); or a Gaussian grid as
fine as the mesh (:func:`mesh_target`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np
import xarray as xr
from scipy.sparse import csr_array
from scipy.spatial import cKDTree

from genda.errors import InvalidValueError
from genda.grid import Grid, gaussian_latitudes
from genda.storage.errors import ArchiveError
from genda.storage.icon_mesh import IconMesh, grid_variables, is_icon_native, read_icon_mesh
from genda.storage.icon_remap import (
    REMAP_METHODS,
    RemapMethod,
    RemapWeights,
    grid_points,
    remap_weights,
    tangent_basis,
)
from genda.storage.source_conventions import VARIABLE_ALIASES, units_of

_GRID_ATTRS = ("CDI_grid_type", "number_of_grid_in_reference", "coordinates", "grid_mapping")


@dataclass(frozen=True)
class IconRemap:
    """How to read and remap ICON native output (all optional).

    Attributes:
        grid_file: the ICON grid file, for a data file without cell
            coordinates (or to check them).
        target: ``(nlat, nlon)`` of a Gaussian target grid; default
            :func:`mesh_target` (a grid given to ``open_archive`` wins).
        method: ``linear`` (barycentric, default), ``nearest`` or ``conservative``.
    """

    grid_file: str | os.PathLike[str] | None = None
    target: tuple[int, int] | None = None
    method: RemapMethod = "linear"


# ---------------------------------------------------------------------------- the target
def mesh_target(mesh: IconMesh) -> tuple[np.ndarray, np.ndarray]:
    """Latitudes and longitudes (degrees) of a Gaussian grid as fine as the mesh.

    Its spacing is at most ``sqrt(4 pi / N)``, the side of a square with a
    cell's mean area (R2B4, 20480 cells: 1.42 degrees -> 128 x 256); the number
    of latitudes is rounded up to a multiple of 8 so that a U-Net can halve it.
    """
    spacing = np.sqrt(4.0 * np.pi / mesh.size)
    nlat = int(8 * np.ceil(np.pi / spacing / 8.0))
    return gaussian_target(nlat, 2 * nlat)


def gaussian_target(nlat: int, nlon: int) -> tuple[np.ndarray, np.ndarray]:
    """Latitudes (north to south) and longitudes (degrees) of an ``nlat`` x ``nlon`` Gaussian grid."""
    if nlat < 2 or nlon < 4:
        raise InvalidValueError(
            f"a target grid needs >= 2 latitudes and >= 4 longitudes, got {nlat} x {nlon}"
        )
    return gaussian_latitudes(nlat)[0], np.arange(nlon) * (360.0 / nlon)


def parse_target(text: str) -> tuple[int, int]:
    """``"32x64"`` -> ``(32, 64)`` (latitudes x longitudes)."""
    parts = text.lower().replace(" ", "").split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise InvalidValueError(f"a target grid is NLATxNLON, e.g. 32x64; got {text!r}")
    return int(parts[0]), int(parts[1])


def icon_options(grid_file: str | os.PathLike[str] | None, target: str | None) -> IconRemap | None:
    """:class:`IconRemap` from the command line's ``--icon-grid`` and ``--icon-target``; None if neither."""
    if grid_file is None and target is None:
        return None
    return IconRemap(grid_file, parse_target(target) if target is not None else None)


# ---------------------------------------------------------------------------- remapping
def _on_cells(ds: xr.Dataset, name: str, standard_name: str, cell: Hashable) -> Hashable | None:
    """The variable on the cells that is genda's ``name`` (by alias, then ``standard_name``)."""
    candidates = [k for k in VARIABLE_ALIASES[name] if k in ds.data_vars]
    candidates += [
        k for k, v in ds.data_vars.items() if v.attrs.get("standard_name") == standard_name
    ]
    return next((k for k in candidates if cell in ds[k].dims), None)


def _wind_pair(ds: xr.Dataset, cell: Hashable) -> tuple[Hashable, Hashable] | None:
    """Names of the eastward and northward wind on the cells, if both are there alike."""
    u = _on_cells(ds, "u", "eastward_wind", cell)
    v = _on_cells(ds, "v", "northward_wind", cell)
    if u is None or v is None or ds[u].dims != ds[v].dims or units_of(ds[u]) != units_of(ds[v]):
        return None  # remapped as two scalars
    return u, v


def _scalar_kernel(matrix: csr_array, shape: tuple[int, int]) -> Callable[[np.ndarray], np.ndarray]:
    """``(..., N)`` cell values -> ``(..., H, W)``: ``matrix @ values`` per field, in float64."""

    def apply(values: np.ndarray) -> np.ndarray:
        flat = values.reshape(-1, values.shape[-1]).astype(np.float64)
        out = np.asarray(matrix @ flat.T).T
        return out.reshape(*values.shape[:-1], *shape).astype(np.result_type(values, np.float32))

    return apply


def _vector_kernel(
    matrix: csr_array, mesh: IconMesh, lat: np.ndarray, lon: np.ndarray
) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``(u, v)`` ``(..., N)`` -> ``(u, v)`` ``(..., H, W)`` through 3-D vectors (module docstring)."""
    east, north = tangent_basis(mesh.lon, mesh.lat)  # (N, 3) each
    lon2, lat2 = np.meshgrid(np.deg2rad(lon), np.deg2rad(lat))
    target_east, target_north = tangent_basis(lon2.ravel(), lat2.ravel())  # (M, 3)

    def apply(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lead, cells = u.shape[:-1], u.shape[-1]
        uu = u.reshape(-1, cells).astype(np.float64)
        vv = v.reshape(-1, cells).astype(np.float64)
        vectors = uu[..., None] * east + vv[..., None] * north  # (K, N, 3)
        moved = np.asarray(matrix @ vectors.transpose(1, 0, 2).reshape(cells, -1))
        moved = moved.reshape(-1, uu.shape[0], 3)  # (M, K, 3)
        dtype = np.result_type(u, np.float32)
        new_u = np.einsum("mkc,mc->km", moved, target_east).reshape(*lead, lat.size, lon.size)
        new_v = np.einsum("mkc,mc->km", moved, target_north).reshape(*lead, lat.size, lon.size)
        return new_u.astype(dtype), new_v.astype(dtype)

    return apply


def _apply(
    kernel: Callable[..., object],
    arrays: list[xr.DataArray],
    cell: Hashable,
    shape: tuple[int, int],
    outputs: int,
) -> xr.DataArray | tuple[xr.DataArray, ...]:
    """``kernel`` over the cell dimension of ``arrays``, lazily where they are dask arrays."""
    arrays = [a.chunk({cell: -1}) if a.chunks is not None else a for a in arrays]
    return xr.apply_ufunc(
        kernel,
        *arrays,
        input_core_dims=[[cell]] * len(arrays),
        output_core_dims=[["latitude", "longitude"]] * outputs,
        dask="parallelized",
        output_dtypes=[np.result_type(arrays[0].dtype, np.float32)] * outputs,
        dask_gufunc_kwargs={"output_sizes": {"latitude": shape[0], "longitude": shape[1]}},
        keep_attrs=True,
    )


def _clean(da: xr.DataArray) -> xr.DataArray:
    """``da`` without the attributes that describe the native grid."""
    da.attrs = {k: v for k, v in da.attrs.items() if k not in _GRID_ATTRS}
    return da


def remap_icon_native(
    ds: xr.Dataset,
    options: IconRemap | None = None,
    grid: Grid | None = None,
    source: str = "dataset",
) -> xr.Dataset:
    """ICON native output ``ds`` remapped to a latitude-longitude grid (lazy).

    Args:
        ds: as opened (e.g. :func:`genda.storage.open_raw`); fields ``(..., ncells)``.
        options: grid file, target size and method (:class:`IconRemap`).
        grid: the target's latitudes and longitudes, when given (its altitudes
            are not used here).
        source: the file, for messages.

    Returns:
        ``ds`` with every floating-point variable on the cells now ``(...,
        latitude, longitude)`` (latitude in degrees north, north to south;
        longitude in degrees east in [0, 360)), the other dimensions as they
        were, the cell coordinates and other variables on the cells dropped,
        and ``genda_remap`` saying how.

    Raises:
        ArchiveError: see :func:`read_icon_mesh`; a conservative remap to a
            target finer than the mesh.
        InvalidValueError: an unknown method or target size.
    """
    options = options or IconRemap()
    if options.method not in REMAP_METHODS:
        raise InvalidValueError(
            f"unknown remapping method {options.method!r}; known: {', '.join(REMAP_METHODS)}"
        )
    mesh, cell = read_icon_mesh(ds, options.grid_file, source)
    lat, lon = _target(mesh, options, grid)
    weights = _weights(options.method, mesh, lat, lon, source)
    ds = ds.drop_vars(grid_variables(ds))
    remapped = _remapped_fields(ds, cell, mesh, weights, lat, lon)
    kept = {n: v for n, v in ds.data_vars.items() if cell not in v.dims}
    result = xr.Dataset({**kept, **remapped}, attrs=dict(ds.attrs))
    result = result.drop_vars([n for n in result.coords if cell in result[n].dims])
    result = result.assign_coords(
        latitude=("latitude", lat, {"units": "degrees_north", "standard_name": "latitude"}),
        longitude=("longitude", lon, {"units": "degrees_east", "standard_name": "longitude"}),
    )
    result.attrs["genda_remap"] = (
        f"{options.method} from ICON's native grid ({mesh.size} cells, coordinates from "
        f"{mesh.origin}) to {lat.size} x {lon.size} latitude-longitude (genda.storage.icon_native)"
    )
    return result


def _target(mesh: IconMesh, options: IconRemap, grid: Grid | None) -> tuple[np.ndarray, np.ndarray]:
    """Latitudes and longitudes (degrees) of the target: ``grid``, ``options.target`` or the mesh's."""
    if grid is not None:
        return np.asarray(grid.latitude), np.asarray(grid.longitude)
    if options.target is not None:
        return gaussian_target(*options.target)
    return mesh_target(mesh)


def _remapped_fields(
    ds: xr.Dataset,
    cell: Hashable,
    mesh: IconMesh,
    weights: RemapWeights,
    lat: np.ndarray,
    lon: np.ndarray,
) -> dict[Hashable, xr.DataArray]:
    """Every floating-point field on the cells, remapped; the winds as one vector."""
    shape = (lat.size, lon.size)
    out: dict[Hashable, xr.DataArray] = {}
    wind = _wind_pair(ds, cell)
    if wind is not None:
        kernel = _vector_kernel(weights.matrix, mesh, lat, lon)
        u, v = _apply(kernel, [ds[wind[0]], ds[wind[1]]], cell, shape, outputs=2)
        out[wind[0]], out[wind[1]] = _clean(u), _clean(v)
    scalar = _scalar_kernel(weights.matrix, shape)
    for name, var in ds.data_vars.items():
        if name in out or cell not in var.dims or not np.issubdtype(var.dtype, np.floating):
            continue  # a remapped wind, a field elsewhere, or an index: none is remapped here
        out[name] = _clean(_apply(scalar, [var], cell, shape, outputs=1))
    return out


def _check_coverage(mesh: IconMesh, lat: np.ndarray, lon: np.ndarray, source: str) -> None:
    """Error unless every target point lies within 3 cell spacings of a cell centre.

    A limited-area ICON domain (or any set of points that is not a global
    mesh) would otherwise be extrapolated across the rest of the sphere.
    """
    centres = mesh.centres()
    if mesh.size < 4:
        raise ArchiveError(f"{source}: {mesh.size} cells are not a global mesh")
    tree = cKDTree(centres)
    spacing = float(np.median(tree.query(centres, k=2)[0][:, 1]))  # chord length
    gap = tree.query(grid_points(lat, lon))[0]
    far = int(np.sum(gap > 3.0 * spacing))
    if far:
        raise ArchiveError(
            f"{source}: {far} of the {lat.size} x {lon.size} target points lie more than 3 cell "
            f"spacings ({np.rad2deg(3.0 * spacing):.3g} degrees) from any of its {mesh.size} "
            "cells: the cells do not cover the target (a limited-area domain?); genda needs "
            "global fields or a target grid inside the domain"
        )


def _weights(
    method: str, mesh: IconMesh, lat: np.ndarray, lon: np.ndarray, source: str
) -> RemapWeights:
    if method == "conservative" and mesh.corners is None:
        raise ArchiveError(
            f"{source}: conservative remapping needs the cells' vertices: clon_bnds/clat_bnds "
            "(3 per cell) in the data file, or vlon/vlat/vertex_of_cell in the grid file "
            f"({mesh.origin} has neither); linear needs only the centres"
        )
    _check_coverage(mesh, lat, lon, source)
    weights = remap_weights(method, mesh.centres(), lat, lon, mesh.corners)
    if method == "conservative":
        empty = int(np.sum(np.diff(weights.matrix.indptr) == 0))
        if empty:
            raise ArchiveError(
                f"{source}: conservative remapping leaves {empty} of the {lat.size} x {lon.size} "
                f"target cells without a source cell: the target is finer than the mesh "
                f"({mesh.size} cells); use the linear method"
            )
    return weights


__all__ = [
    "IconRemap",
    "gaussian_target",
    "icon_options",
    "is_icon_native",
    "mesh_target",
    "parse_target",
    "remap_icon_native",
]
