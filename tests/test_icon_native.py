"""UA-ICON output on its native grid: reading, remapping, errors (genda.storage.icon_native).

The meshes are made here: an icosahedron whose triangles are cut in four
``level`` times, projected to the sphere (20 * 4**level cells; level 4 has
5120, ICON's R2B2). The fields are low-degree polynomials in (x, y, z), i.e.
combinations of spherical harmonics of degree <= 3, so the remapped values
can be compared with the exact ones at the target points.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

from genda.errors import InvalidValueError
from genda.grid import Grid, gaussian_latitudes
from genda.storage import ArchiveError, open_archive
from genda.storage.icon_mesh import IconMesh
from genda.storage.icon_native import (
    IconRemap,
    is_icon_native,
    mesh_target,
    parse_target,
    read_icon_mesh,
    remap_icon_native,
)
from genda.storage.icon_remap import (
    conservative_weights,
    grid_points,
    linear_weights,
    spherical_triangle_area,
    tangent_basis,
    unit_vectors,
)

PLEV_PA = np.array([1.0, 0.3, 0.1])  # ~80, 88, 97 km of log-pressure altitude
TIMES = np.array(["2024-01-01T00", "2024-01-01T06"], dtype="datetime64[ns]")


# ---------------------------------------------------------------------------- a mesh
def icosahedral_mesh(level: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(vertices (V, 3), vertex_of_cell (F, 3) 0-based, centres (F, 3))`` on the unit sphere.

    Centres are the triangles' circumcentres, as ICON's ``clon``/``clat``.
    """
    phi = (1.0 + 5.0**0.5) / 2.0
    vertices = np.array(
        [
            *[(-1, phi, 0), (1, phi, 0), (-1, -phi, 0), (1, -phi, 0)],
            *[(0, -1, phi), (0, 1, phi), (0, -1, -phi), (0, 1, -phi)],
            *[(phi, 0, -1), (phi, 0, 1), (-phi, 0, -1), (-phi, 0, 1)],
        ],
        dtype=np.float64,
    )
    vertices /= np.linalg.norm(vertices, axis=1, keepdims=True)
    faces = np.array(
        [
            *[(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4)],
            *[(11, 10, 2), (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8)],
            *[(3, 8, 9), (4, 9, 5), (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1)],
        ]
    )
    for _ in range(level):
        edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), 1)
        unique, inverse = np.unique(edges, axis=0, return_inverse=True)
        middle = vertices[unique[:, 0]] + vertices[unique[:, 1]]
        middle /= np.linalg.norm(middle, axis=1, keepdims=True)
        ab, bc, ca = inverse.reshape(3, -1) + len(vertices)
        vertices = np.concatenate([vertices, middle])
        a, b, c = faces.T
        faces = np.concatenate(
            [np.stack(t, 1) for t in ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))]
        )
    corners = vertices[faces]
    normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    normal *= np.sign(np.sum(normal * corners[:, 0], axis=1))[:, None]
    return vertices, faces, normal


def lonlat(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Longitude and latitude (radians) of unit vectors ``(..., 3)``."""
    return np.arctan2(points[..., 1], points[..., 0]), np.arcsin(np.clip(points[..., 2], -1, 1))


# ---------------------------------------------------------------------------- fields
def temperature(p: np.ndarray, level: int = 0, time: int = 0) -> np.ndarray:
    """A smooth T (K): degrees 0-3 in (x, y, z), varying with level and time."""
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    return (
        200.0
        + 10.0 * level
        + 8.0 * x * y
        + 5.0 * (3 * z**2 - 1)
        + 4.0 * x * z * (1 + time)
        - 3.0 * y
        + 2.0 * x * y * z
    )


def wind(p: np.ndarray, level: int = 0, time: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(u, v)`` (m s-1) of a smooth tangent field: rotation about a tilted axis plus a gradient.

    ``V = 40 (a x r) + 20 P grad(x y z)``, ``P`` the projection on the tangent plane.
    """
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    axis = np.array([0.3, -0.2, 1.0])
    field = 40.0 * (1 + 0.5 * level) * np.cross(axis, p) + 20.0 * (1 + time) * np.stack(
        [y * z, x * z, x * y], -1
    )
    east, north = tangent_basis(*lonlat(p))
    return np.sum(field * east, -1), np.sum(field * north, -1)


def icon_dataset(level: int, *, coordinates: bool = True, bounds: bool = True) -> xr.Dataset:
    """A UA-ICON-like data file on an icosahedral mesh, in ICON's (CDI's) layout."""
    vertices, faces, centres = icosahedral_mesh(level)
    clon, clat = lonlat(centres)
    shape = (TIMES.size, PLEV_PA.size, centres.shape[0])
    fields = {name: np.empty(shape, np.float32) for name in ("u", "v", "temp")}
    for t in range(TIMES.size):
        for k in range(PLEV_PA.size):
            fields["temp"][t, k] = temperature(centres, k, t)
            fields["u"][t, k], fields["v"][t, k] = wind(centres, k, t)
    grid_attrs = {"CDI_grid_type": "unstructured", "number_of_grid_in_reference": 1}
    ds = xr.Dataset(
        {
            "u": (
                ("time", "plev", "ncells"),
                fields["u"],
                {"units": "m s-1", "standard_name": "eastward_wind", **grid_attrs},
            ),
            "v": (
                ("time", "plev", "ncells"),
                fields["v"],
                {"units": "m s-1", "standard_name": "northward_wind", **grid_attrs},
            ),
            "temp": (
                ("time", "plev", "ncells"),
                fields["temp"],
                {"units": "K", "standard_name": "air_temperature", **grid_attrs},
            ),
        },
        coords={
            "time": ("time", TIMES, {"standard_name": "time", "axis": "T"}),
            "plev": (
                "plev",
                PLEV_PA,
                {"units": "Pa", "standard_name": "air_pressure", "axis": "Z"},
            ),
        },
        attrs={"uuidOfHGrid": f"icosahedron-level-{level}", "number_of_grid_used": 42},
    )
    if coordinates:
        corner_lon, corner_lat = lonlat(vertices[faces])
        ds = ds.assign_coords(
            clon=(
                "ncells",
                clon,
                {"units": "radian", "standard_name": "longitude", "bounds": "clon_bnds"},
            ),
            clat=(
                "ncells",
                clat,
                {"units": "radian", "standard_name": "latitude", "bounds": "clat_bnds"},
            ),
        )
        if bounds:
            ds["clon_bnds"] = (("ncells", "vertices"), corner_lon)
            ds["clat_bnds"] = (("ncells", "vertices"), corner_lat)
    return ds


def icon_grid_file(level: int) -> xr.Dataset:
    """An ICON grid file (``icon_grid_*.nc`` layout) of the same mesh."""
    vertices, faces, centres = icosahedral_mesh(level)
    clon, clat = lonlat(centres)
    vlon, vlat = lonlat(vertices)
    corners = vertices[faces]
    area = spherical_triangle_area(corners[:, 0], corners[:, 1], corners[:, 2]) * 6371229.0**2
    return xr.Dataset(
        {
            "vertex_of_cell": (("nv", "cell"), (faces.T + 1).astype(np.int32)),
            "cell_area": ("cell", area, {"units": "m2"}),
        },
        coords={
            "clon": ("cell", clon, {"units": "radian"}),
            "clat": ("cell", clat, {"units": "radian"}),
            "vlon": ("vertex", vlon, {"units": "radian"}),
            "vlat": ("vertex", vlat, {"units": "radian"}),
        },
        attrs={"uuidOfHGrid": f"icosahedron-level-{level}"},
    )


def target_points(ds: xr.Dataset) -> np.ndarray:
    """``(H, W, 3)`` unit vectors of a remapped Dataset's latitude-longitude grid."""
    lat, lon = ds["latitude"].values, ds["longitude"].values
    return grid_points(lat, lon).reshape(lat.size, lon.size, 3)


def remap_errors(
    ds: xr.Dataset, names: tuple[str, str, str] = ("u", "v", "temp")
) -> dict[str, float]:
    """Largest |remapped - exact| of u, v, T over all times, levels and target points."""
    p = target_points(ds)
    errors = dict.fromkeys(names, 0.0)
    for t in range(TIMES.size):
        for k in range(PLEV_PA.size):
            exact_u, exact_v = wind(p, k, t)
            exact = dict(zip(names, (exact_u, exact_v, temperature(p, k, t)), strict=True))
            for name in names:
                error = np.max(np.abs(ds[name].values[t, k] - exact[name]))
                errors[name] = max(errors[name], float(error))
    return errors


# ---------------------------------------------------------------------------- accuracy
def test_linear_remap_converges_as_h_squared():
    """Barycentric interpolation errs by O(h^2); h halves per level, so the error falls ~4x.

    Measured (max over 2 times x 3 levels x 32 x 64 points): level 3 (1280 cells,
    h ~ 5.7 deg): T 0.142 K, u 0.71, v 0.54 m/s; level 4 (5120 cells): T 0.035 K,
    u 0.18, v 0.12 m/s; ratios 4.0, 4.0, 4.6.
    """
    coarse = remap_errors(remap_icon_native(icon_dataset(3), IconRemap(target=(32, 64))))
    fine = remap_errors(remap_icon_native(icon_dataset(4), IconRemap(target=(32, 64))))
    for name in ("u", "v", "temp"):
        assert fine[name] < coarse[name] / 3.0, (name, coarse[name], fine[name])
    assert fine["temp"] < 0.05  # K, for T varying by ~40 K over the sphere
    assert max(fine["u"], fine["v"]) < 0.25  # m/s, for winds of ~60 m/s


def test_winds_are_remapped_as_vectors():
    """Remapping u and v as scalars ignores the turning of east/north near the poles."""
    ds = icon_dataset(4)
    as_vector = remap_errors(remap_icon_native(ds, IconRemap(target=(32, 64))))
    scalars = ds.rename(u="a", v="b")
    for name in ("a", "b"):
        del scalars[name].attrs["standard_name"]
    as_scalars = remap_errors(
        remap_icon_native(scalars, IconRemap(target=(32, 64))), names=("a", "b", "temp")
    )
    # measured: 0.18 vs 6.1 m/s for u
    assert as_vector["u"] < as_scalars["a"] / 5.0
    assert as_vector["v"] < as_scalars["b"] / 5.0


def test_linear_weights_reproduce_constants_and_the_source_points():
    _, _, centres = icosahedral_mesh(3)
    rng = np.random.default_rng(0)
    targets = rng.normal(size=(500, 3))
    targets /= np.linalg.norm(targets, axis=1, keepdims=True)
    matrix = linear_weights(centres, targets).matrix
    assert np.all(matrix.data > 0) and np.all(np.diff(matrix.indptr) <= 3)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-12)
    # At a cell centre the interpolant is that cell's value.
    at_centres = linear_weights(centres, centres).matrix
    values = temperature(centres)
    np.testing.assert_allclose(at_centres @ values, values, atol=1e-9)


def test_a_missing_value_reaches_only_the_points_that_use_it():
    ds = icon_dataset(3)
    ds["temp"][0, 0, 17] = np.nan
    out = remap_icon_native(ds, IconRemap(target=(32, 64)))
    matrix = linear_weights(icosahedral_mesh(3)[2], target_points(out).reshape(-1, 3)).matrix
    users = np.asarray(matrix[:, [17]].todense()).ravel() > 0
    assert users.sum() > 0
    np.testing.assert_array_equal(np.isnan(out["temp"].values[0, 0]).ravel(), users)
    assert np.all(np.isfinite(out["temp"].values[1]))


def test_nearest_picks_the_nearest_centre():
    ds = icon_dataset(3)
    out = remap_icon_native(ds, IconRemap(target=(16, 32), method="nearest"))
    centres = icosahedral_mesh(3)[2]
    closeness = target_points(out).reshape(-1, 3) @ centres.T  # brute force
    # the mesh's symmetry puts some targets at equal distance from two centres: either will do
    nearest = closeness >= closeness.max(axis=1, keepdims=True) - 1e-12
    remapped = out["temp"].values[1, 2].ravel()
    values = ds["temp"].values[1, 2]
    assert all(remapped[i] in values[nearest[i]] for i in range(remapped.size))


def cell_means(latitude: np.ndarray, longitude: np.ndarray, level: int = 0) -> np.ndarray:
    """Exact means of :func:`temperature` over the latitude-longitude cells (8 x 8 Gauss points)."""
    nodes, weights = np.polynomial.legendre.leggauss(8)
    edges = np.deg2rad(np.concatenate([[90.0], 0.5 * (latitude[1:] + latitude[:-1]), [-90.0]]))
    half = np.deg2rad(0.5 * (longitude[1] - longitude[0]))
    means = np.empty((latitude.size, longitude.size))
    for i in range(latitude.size):
        top, bottom = np.sin(edges[i]), np.sin(edges[i + 1])
        sin_lat = 0.5 * (top - bottom) * nodes + 0.5 * (top + bottom)  # area is uniform in sin(lat)
        for j, centre in enumerate(np.deg2rad(longitude)):
            lon = centre + half * nodes
            s, lo = np.meshgrid(sin_lat, lon, indexing="ij")
            values = temperature(unit_vectors(lo, np.arcsin(s)), level)
            means[i, j] = np.sum(np.outer(weights, weights) * values) / 4.0
    return means


def test_conservative_remap_conserves_the_integral_and_converges():
    """Sum of area x value is the same on both grids; the cell means err by O(h)."""
    latitude, _ = gaussian_latitudes(16)
    longitude = np.arange(32) * 11.25
    exact = cell_means(latitude, longitude)
    errors = []
    for level in (3, 4):
        vertices, faces, centres = icosahedral_mesh(level)
        corners = vertices[faces]
        weights = conservative_weights(corners, latitude, longitude)
        area = spherical_triangle_area(corners[:, 0], corners[:, 1], corners[:, 2])
        values = temperature(centres)
        remapped = weights.matrix @ values
        np.testing.assert_allclose(area.sum(), 4 * np.pi, rtol=1e-12)
        np.testing.assert_allclose(weights.target_area.sum(), 4 * np.pi, rtol=1e-12)
        np.testing.assert_allclose(
            np.sum(weights.target_area * remapped), np.sum(area * values), rtol=1e-12
        )
        exact_area = np.diff(
            -np.sin(
                np.deg2rad(np.concatenate([[90.0], 0.5 * (latitude[1:] + latitude[:-1]), [-90.0]]))
            )
        )
        exact_area = np.repeat(exact_area * np.deg2rad(11.25), 32)
        assert np.max(np.abs(weights.target_area / exact_area - 1)) < 0.1
        errors.append(float(np.max(np.abs(remapped - exact.ravel()))))
    assert errors[1] < errors[0] / 1.8, errors  # first order: h halves


# ---------------------------------------------------------------------------- through open_archive
@pytest.fixture
def icon_file(tmp_path):
    path = tmp_path / "ua-icon_ml_20240101.nc"
    icon_dataset(3).to_netcdf(path)
    return path


def test_open_archive_remaps_icon_native_output(icon_file):
    assert is_icon_native(xr.open_dataset(icon_file))
    ds = open_archive(icon_file)
    assert dict(ds.sizes) == {"time": 2, "altitude": 3, "latitude": 32, "longitude": 64}
    assert ds["T"].chunks is not None  # lazy: remapped when read
    grid = Grid.from_dataset(ds)
    assert grid.latitude_kind == "legendre-gauss" and grid.variables == ("u", "v", "T")
    assert np.all(np.diff(ds["altitude"].values) > 0)
    np.testing.assert_array_equal(ds["time"].values, TIMES)
    p = target_points(ds)
    # altitude increases upward: source level k = 0 (1 Pa) is the lowest
    for t, k in ((0, 0), (1, 2)):
        np.testing.assert_allclose(ds["T"].values[t, k], temperature(p, k, t), atol=0.2)
        np.testing.assert_allclose(ds["u"].values[t, k], wind(p, k, t)[0], atol=1.0)
    assert "ICON" in ds.attrs["genda_remap"]


def test_open_archive_remaps_straight_to_a_given_grid(icon_file):
    grid = Grid.gaussian(16, 32, levels=[82.0, 90.0])
    ds = open_archive(icon_file, grid=grid)
    assert Grid.from_dataset(ds) == grid
    assert np.all(np.isfinite(ds["T"].values))


def test_a_grid_file_gives_the_cells_of_a_bare_data_file(tmp_path, icon_file):
    bare, grid_file = tmp_path / "bare.nc", tmp_path / "icon_grid_0001_R02B01_G.nc"
    icon_dataset(3, coordinates=False).to_netcdf(bare)
    icon_grid_file(3).to_netcdf(grid_file)
    with_file = open_archive(bare, icon=IconRemap(grid_file=grid_file)).compute()
    with_coordinates = open_archive(icon_file).compute()
    xr.testing.assert_allclose(with_file[["u", "v", "T"]], with_coordinates[["u", "v", "T"]])
    # both: the grid file is checked against the data file's clon/clat
    open_archive(icon_file, icon=IconRemap(grid_file=grid_file))
    # the grid file's vertices serve the conservative method
    mesh, cell = read_icon_mesh(xr.open_dataset(bare), grid_file)
    assert cell == "ncells" and mesh.corners is not None and mesh.corners.shape == (1280, 3, 3)


# ---------------------------------------------------------------------------- bad input
def test_a_bare_data_file_without_a_grid_file_is_refused(tmp_path):
    bare = tmp_path / "bare.nc"
    icon_dataset(3, coordinates=False).to_netcdf(bare)
    with pytest.raises(ArchiveError) as error:
        open_archive(bare)
    message = str(error.value)
    for part in (str(bare), "'ncells'", "1280 cells", "clon", "clat", "grid file", "--icon-grid"):
        assert part in message, (part, message)


def test_a_grid_file_of_another_grid_is_refused(tmp_path, icon_file):
    other = tmp_path / "icon_grid_other.nc"
    icon_grid_file(4).to_netcdf(other)
    with pytest.raises(ArchiveError, match=r"1280 cells.*5120 cells"):
        open_archive(icon_file, icon=IconRemap(grid_file=other))
    # same count, other grid: named by its uuid, or by its centres where it has none
    renamed = icon_grid_file(3).assign_attrs(uuidOfHGrid="another-grid")
    renamed.to_netcdf(other)
    with pytest.raises(ArchiveError, match="uuidOfHGrid"):
        open_archive(icon_file, icon=IconRemap(grid_file=other))
    rotated = icon_grid_file(3)
    rotated.attrs.clear()
    rotated["clon"] = rotated["clon"] + 0.1
    rotated.to_netcdf(other)
    with pytest.raises(ArchiveError, match="cell centres"):
        open_archive(icon_file, icon=IconRemap(grid_file=other))


def test_bad_methods_and_targets_are_refused(tmp_path):
    ds = icon_dataset(2, bounds=False)
    with pytest.raises(ArchiveError, match="clon_bnds"):
        remap_icon_native(ds, IconRemap(method="conservative", target=(8, 16)))
    with pytest.raises(ArchiveError, match="finer than the mesh"):
        remap_icon_native(icon_dataset(2), IconRemap(method="conservative", target=(64, 128)))
    with pytest.raises(InvalidValueError, match="unknown remapping method"):
        remap_icon_native(ds, IconRemap(method="cubic"))  # type: ignore[arg-type]
    assert parse_target("32x64") == (32, 64)
    with pytest.raises(InvalidValueError, match="NLATxNLON"):
        parse_target("32 by 64")
    with pytest.raises(ArchiveError, match="no cell dimension"):
        regular = xr.Dataset({"T": (("lat",), np.ones(3))}, coords={"lat": [1.0, 2.0, 3.0]})
        remap_icon_native(regular, IconRemap())


def test_a_limited_area_domain_or_degrees_without_units_are_refused():
    ds = icon_dataset(3)
    northern = ds.isel(ncells=np.flatnonzero(ds["clat"].values > 0.3))
    with pytest.raises(ArchiveError, match="do not cover the target"):
        remap_icon_native(northern, IconRemap(target=(16, 32)))
    # ... while a target inside the domain is fine
    inside = Grid(np.array([60.0, 50.0]), np.array([10.0, 20.0]), np.array([85.0]))
    assert remap_icon_native(northern, grid=inside)["temp"].notnull().all()
    degrees = ds.assign_coords(clat=("ncells", np.rad2deg(ds["clat"].values)))  # no units
    with pytest.raises(ArchiveError, match="in degrees without a units attribute"):
        remap_icon_native(degrees)


def test_the_default_target_is_as_fine_as_the_mesh():
    lat, lon = mesh_target(read_icon_mesh(icon_dataset(3))[0])
    assert (lat.size, lon.size) == (32, 64)  # 1280 cells: sqrt(4 pi / 1280) = 5.7 deg
    r2b4 = IconMesh(np.zeros(20480), np.zeros(20480), None, "R2B4")
    assert mesh_target(r2b4)[0].size == 128  # 1.42 deg


def test_genda_summary_reads_icon_native_output_with_a_grid_file(tmp_path):
    from genda.cli import app

    bare, grid_file = tmp_path / "bare.nc", tmp_path / "icon_grid.nc"
    icon_dataset(2, coordinates=False).to_netcdf(bare)
    icon_grid_file(2).to_netcdf(grid_file)
    result = CliRunner().invoke(app, ["summary", str(bare), "--icon-grid", str(grid_file)])
    assert result.exit_code == 0, result.output
    assert "16" in result.output and "32" in result.output  # 320 cells -> 16 x 32
    refused = CliRunner().invoke(app, ["summary", str(bare)])
    assert refused.exit_code == 1 and "--icon-grid" in refused.output
