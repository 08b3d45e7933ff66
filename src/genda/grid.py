"""The grid a field lives on: latitudes, longitudes, altitude levels, variables.

A field tensor has shape ``(V, L, H, W)`` = (variables, altitude levels,
latitudes, longitudes), optionally with leading batch/time dimensions
``(..., V, L, H, W)``. Latitudes run from north to south (the order of the
spherical-harmonic transforms in torch-harmonics), longitudes eastward from
0 degrees, altitudes upward in km of log-pressure altitude
(:mod:`genda.constants`).

The default horizontal grid is the Gauss-Legendre grid: its quadrature is exact
for band-limited fields, so spherical-harmonic transforms (simulator, spectra)
are exact and global integrals (mass, energy) conserve to round-off; it has no
points on the poles, where winds are multivalued; and its even number of
latitudes halves cleanly in a U-Net. Equiangular grids (poles included, as in
torch-harmonics' ``"equiangular"``) are accepted for data from elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import xarray as xr

from genda.constants import REFERENCE_PRESSURE_PA, SCALE_HEIGHT_KM, altitude_km_to_pressure
from genda.errors import GendaError, InvalidValueError, UnknownNameError

LatitudeKind = Literal["legendre-gauss", "equiangular", "irregular"]

DIMS = ("time", "altitude", "latitude", "longitude")
"""Dimension names of a field in a Dataset, per variable."""

ALTITUDE_LONG_NAME = "log-pressure altitude"
"""``long_name`` of genda's ``altitude``: readers know genda's vertical by it (archives before
the CF auxiliaries below had ``long_name`` "log-pressure altitude H ln(p0/p), ...")."""
LN_PRESSURE = "lev"
"""Name of the CF ``atmosphere_ln_pressure_coordinate``, ``altitude / H``, on the ``altitude`` dim."""
AIR_PRESSURE = "air_pressure"
"""Name of the pressure of each level (Pa), on the ``altitude`` dim."""
REFERENCE_PRESSURE = "p0"
"""Name of the scalar reference pressure (Pa) of the log-pressure coordinate."""
VERTICAL_AUXILIARIES = (LN_PRESSURE, AIR_PRESSURE, REFERENCE_PRESSURE)
"""The auxiliary coordinates of the vertical that :meth:`Grid.coords` adds to the three axes."""


class GridMismatchError(GendaError, ValueError):
    """Raised when a field or dataset does not live on the expected grid."""


@dataclass(frozen=True)
class Variable:
    """A physical variable with its CF metadata."""

    name: str
    units: str
    standard_name: str
    long_name: str

    def cf_attrs(self) -> dict[str, str]:
        return {
            "units": self.units,
            "standard_name": self.standard_name,
            "long_name": self.long_name,
        }


VARIABLES: dict[str, Variable] = {
    v.name: v
    for v in (
        Variable("u", "m s-1", "eastward_wind", "zonal wind"),
        Variable("v", "m s-1", "northward_wind", "meridional wind"),
        Variable("T", "K", "air_temperature", "temperature"),
        Variable("w", "m s-1", "upward_air_velocity", "vertical wind"),
        Variable("geopotential_height", "m", "geopotential_height", "geopotential height"),
    )
}
"""Registry of variables genda knows, by name. u, v, T are the default set."""

DEFAULT_VARIABLES: tuple[str, ...] = ("u", "v", "T")


STATE_SUFFIX = re.compile(r"^(?P<base>.+)\+(?P<hours>[0-9]+)h$")
"""A variable of one hourly state of a trajectory: ``"u+2h"`` is ``u`` 2 hours after the
trajectory's first state (:mod:`genda.trajectory`)."""


def state_variable(name: str) -> tuple[str, int | None]:
    """``(registered name, hours after the first state)`` of ``name``; ``None`` for a plain variable."""
    match = STATE_SUFFIX.match(name)
    if match is None:
        return name, None
    return match["base"], int(match["hours"])


def lookup_variable(name: str) -> Variable:
    """The registered :class:`Variable` called ``name``; a clear error otherwise.

    A trajectory's ``"<name>+<k>h"`` is the registered variable ``<name>``, its
    ``long_name`` saying which hour it is.
    """
    base, hours = state_variable(name)
    try:
        variable = VARIABLES[base]
    except KeyError:
        known = ", ".join(sorted(VARIABLES))
        raise UnknownNameError(f"unknown variable {name!r}; known variables: {known}") from None
    if hours is None:
        return variable
    return Variable(
        name,
        variable.units,
        variable.standard_name,
        f"{variable.long_name}, {hours} h after the first state",
    )


VARIABLES_ATTR = "genda_variables"
"""Global attribute: JSON list of the variables in grid order (Zarr lists members alphabetically)."""


def _variable_order(ds: xr.Dataset) -> tuple[str, ...]:
    """Registered data variables of ``ds`` in grid order, whatever order the store lists them in.

    The order is that of the ``genda_variables`` attribute where present, the
    remaining variables following in :data:`VARIABLES` registry order.
    """
    present = {str(name) for name in ds.data_vars if name in VARIABLES}
    listed = ds.attrs.get(VARIABLES_ATTR, [])
    if isinstance(listed, str):
        try:
            listed = json.loads(listed)
        except json.JSONDecodeError:
            listed = listed.split()
    first: list[str] = []
    for name in np.atleast_1d(np.asarray(listed, dtype=object)).tolist():
        if str(name) in present and str(name) not in first:
            first.append(str(name))
    return (*first, *(name for name in VARIABLES if name in present and name not in first))


def gaussian_latitudes(nlat: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre latitudes (degrees, north to south) and quadrature weights.

    The weights sum to 2 (the integral of ``d(sin lat)`` over the sphere), the
    convention of torch-harmonics' ``legendre-gauss`` grid.
    """
    nodes, weights = np.polynomial.legendre.leggauss(nlat)  # nodes = sin(lat), ascending
    return np.rad2deg(np.arcsin(nodes[::-1])), weights[::-1].copy()


def equiangular_latitudes(nlat: int) -> np.ndarray:
    """Equiangular latitudes including both poles, north to south (degrees)."""
    return np.linspace(90.0, -90.0, nlat)


def harmonic_grid_kind(grid: Grid, what: str) -> str:
    """The torch-harmonics grid name (``"legendre-gauss"`` or ``"equiangular"``) of ``grid``.

    ``what`` names the caller in the errors (e.g. ``"spectra need"``).

    Raises:
        ValueError: another latitude kind, or latitudes that are not that kind's
            nodes (``Grid(...)`` labels any latitudes ``"legendre-gauss"`` by default).
    """
    kind = grid.latitude_kind
    if kind not in ("legendre-gauss", "equiangular"):
        raise InvalidValueError(f"{what} a Gauss-Legendre or equiangular grid, not {kind!r}")
    nodes = (
        gaussian_latitudes(grid.nlat)[0]
        if kind == "legendre-gauss"
        else equiangular_latitudes(grid.nlat)
    )
    if not np.allclose(grid.latitude, nodes, rtol=0, atol=1e-6):
        raise InvalidValueError(f"grid latitudes are not the {kind} nodes for nlat = {grid.nlat}")
    return kind


def default_altitudes(levels: int, bottom_km: float = 80.0, top_km: float = 115.0) -> np.ndarray:
    """``levels`` evenly spaced log-pressure altitudes from ``bottom_km`` to ``top_km``."""
    if levels < 1:
        raise InvalidValueError(f"levels must be >= 1, got {levels}")
    if levels == 1:
        return np.array([0.5 * (bottom_km + top_km)])
    return np.linspace(bottom_km, top_km, levels)


def nearest_level(altitude: np.ndarray, alt_km: float) -> int:
    """Index of the level nearest ``alt_km``; an error if it is more than half a level spacing away.

    The spacing is that of the interval on the requested side of the nearest
    level (the outermost interval beyond the column); a one-level grid
    accepts only its own altitude.
    """
    altitude = np.asarray(altitude, dtype=np.float64)
    if not math.isfinite(alt_km):
        raise InvalidValueError(f"altitude must be a finite number of km, got {alt_km}")
    index = int(np.argmin(np.abs(altitude - alt_km)))
    if altitude.size == 1:
        tolerance = 1e-6
    else:
        upper = alt_km > altitude[index]
        if (upper and index + 1 < altitude.size) or index == 0:
            spacing = altitude[index + 1] - altitude[index]
        else:
            spacing = altitude[index] - altitude[index - 1]
        tolerance = 0.5 * float(spacing) + 1e-9
    distance = abs(float(altitude[index]) - alt_km)
    if distance > tolerance:
        raise InvalidValueError(
            f"altitude {alt_km:g} km is {distance:.3g} km from the nearest level "
            f"({altitude[index]:g} km); the levels span {altitude[0]:g}-{altitude[-1]:g} km and a "
            f"query must lie within half a level spacing ({tolerance:.3g} km) of one"
        )
    return index


@dataclass(frozen=True, eq=False)
class Grid:
    """Coordinates and variables of a field (see module docstring for the layout).

    Attributes:
        latitude: ``(H,)`` degrees north, strictly decreasing.
        longitude: ``(W,)`` degrees east in ``[0, 360)``, strictly increasing, evenly spaced.
        altitude: ``(L,)`` log-pressure altitude in km, strictly increasing.
        variables: names of the variables, each in :data:`VARIABLES`.
        latitude_kind: how the latitudes were made.
    """

    latitude: np.ndarray
    longitude: np.ndarray
    altitude: np.ndarray
    variables: tuple[str, ...] = DEFAULT_VARIABLES
    latitude_kind: LatitudeKind = "legendre-gauss"

    def __post_init__(self) -> None:
        # Copies: the read-only flag set below must not freeze the caller's arrays
        # (a Grid made from them would lock them).
        lat = np.array(self.latitude, dtype=np.float64)
        lon = np.array(self.longitude, dtype=np.float64)
        alt = np.array(self.altitude, dtype=np.float64)
        for name, arr in (("latitude", lat), ("longitude", lon), ("altitude", alt)):
            if arr.ndim != 1 or arr.size == 0:
                raise GridMismatchError(
                    f"{name} must be a non-empty 1-D array, got shape {arr.shape}"
                )
            if not np.all(np.isfinite(arr)):
                raise GridMismatchError(f"{name} contains NaN or infinite values")
        if lat.size > 1 and not np.all(np.diff(lat) < 0):
            raise GridMismatchError("latitude must be strictly decreasing (north to south)")
        if np.any(np.abs(lat) > 90.0):
            raise GridMismatchError("latitude must lie within [-90, 90] degrees")
        if lon.size > 1 and not np.all(np.diff(lon) > 0):
            raise GridMismatchError("longitude must be strictly increasing")
        if np.any(lon < 0.0) or np.any(lon >= 360.0):
            raise GridMismatchError("longitude must lie within [0, 360) degrees east")
        if alt.size > 1 and not np.all(np.diff(alt) > 0):
            raise GridMismatchError("altitude must be strictly increasing (km, upward)")
        if len(set(self.variables)) != len(self.variables):
            raise GridMismatchError(f"duplicated variable names in {self.variables}")
        for name in self.variables:
            lookup_variable(name)
        for name, arr in (("latitude", lat), ("longitude", lon), ("altitude", alt)):
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "variables", tuple(self.variables))

    # ------------------------------------------------------------------ constructors
    @classmethod
    def gaussian(
        cls,
        nlat: int = 32,
        nlon: int = 64,
        levels: int | Sequence[float] = 8,
        variables: Sequence[str] = DEFAULT_VARIABLES,
    ) -> Grid:
        """A Gauss-Legendre grid; ``levels`` is a count (80-115 km) or altitudes in km."""
        altitude = default_altitudes(levels) if isinstance(levels, int) else np.asarray(levels)
        lat, _ = gaussian_latitudes(nlat)
        lon = np.arange(nlon) * (360.0 / nlon)
        return cls(lat, lon, altitude, tuple(variables), "legendre-gauss")

    @classmethod
    def equiangular(
        cls,
        nlat: int = 33,
        nlon: int = 64,
        levels: int | Sequence[float] = 8,
        variables: Sequence[str] = DEFAULT_VARIABLES,
    ) -> Grid:
        """An equiangular grid with both poles; ``levels`` as in :meth:`gaussian`."""
        altitude = default_altitudes(levels) if isinstance(levels, int) else np.asarray(levels)
        lon = np.arange(nlon) * (360.0 / nlon)
        return cls(equiangular_latitudes(nlat), lon, altitude, tuple(variables), "equiangular")

    # ------------------------------------------------------------------ properties
    @property
    def nlat(self) -> int:
        return int(self.latitude.size)

    @property
    def nlon(self) -> int:
        return int(self.longitude.size)

    @property
    def nlevels(self) -> int:
        return int(self.altitude.size)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(V, L, H, W)``."""
        return (len(self.variables), self.nlevels, self.nlat, self.nlon)

    def area_weights(self) -> np.ndarray:
        """``(H,)`` latitude weights summing to 1 over a latitude-longitude grid row.

        Gauss-Legendre weights on a Gaussian grid (exact quadrature), otherwise
        ``cos(latitude)`` normalised.
        """
        if self.latitude_kind == "legendre-gauss":
            lat, weights = gaussian_latitudes(self.nlat)
            if np.allclose(lat, self.latitude):
                return weights / weights.sum()
        weights = np.cos(np.deg2rad(self.latitude)).clip(min=0.0)
        return weights / weights.sum()

    def variable_index(self, name: str) -> int:
        try:
            return self.variables.index(name)
        except ValueError:
            raise UnknownNameError(
                f"variable {name!r} is not on this grid (variables: {self.variables})"
            ) from None

    # ------------------------------------------------------------------ comparison
    def nearest_level(self, alt_km: float) -> int:
        """Index of the level nearest ``alt_km`` (:func:`nearest_level`: within half a spacing)."""
        return nearest_level(self.altitude, alt_km)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Grid):
            return NotImplemented
        return not self.differences(other)

    def __hash__(self) -> int:
        return hash(self.fingerprint())

    def differences(self, other: Grid, atol: float = 1e-6) -> list[str]:
        """Human-readable list of what differs between two grids (empty if equal)."""
        problems: list[str] = []
        for name in ("latitude", "longitude", "altitude"):
            a, b = getattr(self, name), getattr(other, name)
            if a.shape != b.shape:
                problems.append(f"{name}: {a.size} points vs {b.size}")
            elif not np.allclose(a, b, atol=atol, rtol=0):
                worst = float(np.max(np.abs(a - b)))
                problems.append(f"{name}: values differ by up to {worst:.3g}")
        if self.variables != other.variables:
            problems.append(f"variables: {list(self.variables)} vs {list(other.variables)}")
        return problems

    def check_same(self, other: Grid, what: str = "field") -> None:
        """Raise :class:`GridMismatchError` naming every difference."""
        problems = self.differences(other)
        if problems:
            raise GridMismatchError(f"{what} is on a different grid: " + "; ".join(problems))

    def check_shape(self, shape: Sequence[int], what: str = "field") -> None:
        """Check that ``shape`` ends in ``(V, L, H, W)`` of this grid."""
        if tuple(shape[-4:]) != self.shape:
            raise GridMismatchError(
                f"{what} has trailing shape {tuple(shape[-4:])}, grid expects (V, L, H, W) = {self.shape}"
            )

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "latitude": self.latitude.tolist(),
            "longitude": self.longitude.tolist(),
            "altitude": self.altitude.tolist(),
            "variables": list(self.variables),
            "latitude_kind": self.latitude_kind,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Grid:
        missing = {"latitude", "longitude", "altitude", "variables"} - set(data)
        if missing:
            raise GridMismatchError(f"grid description lacks {sorted(missing)}")
        return cls(
            np.asarray(data["latitude"], dtype=np.float64),
            np.asarray(data["longitude"], dtype=np.float64),
            np.asarray(data["altitude"], dtype=np.float64),
            tuple(data["variables"]),
            data.get("latitude_kind", "irregular"),
        )

    def fingerprint(self) -> str:
        """Stable short hash of the coordinates (rounded to 1e-6) and variables."""
        payload = {
            "latitude": np.round(self.latitude, 6).tolist(),
            "longitude": np.round(self.longitude, 6).tolist(),
            "altitude": np.round(self.altitude, 6).tolist(),
            "variables": list(self.variables),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ xarray
    def coords(self) -> dict[str, xr.Variable]:
        """CF-annotated coordinates (no time): the three axes and the vertical's auxiliaries.

        ``altitude`` (km, the dimension every query uses) is log-pressure altitude
        ``z* = H ln(p0 / p)`` (:mod:`genda.constants`). CF has no standard name for
        it (CF's ``altitude`` is geometric height), so it has none; CF tools find
        the pressure of the levels through the auxiliaries on the ``altitude`` dim
        (CF conventions 1.10, sect. 4.3.3 and appendix D, "Atmosphere natural log
        pressure coordinate": ``p = p0 exp(-lev)``):

        - ``lev`` ``(L,)``, ``z* / H``, dimensionless,
          ``standard_name: atmosphere_ln_pressure_coordinate``,
          ``formula_terms: "p0: p0 lev: lev"``;
        - ``p0`` ``()``, the reference pressure (Pa);
        - ``air_pressure`` ``(L,)``, ``p0 exp(-z* / H)`` (Pa), ``standard_name: air_pressure``.

        The scale height is recorded as ``altitude.attrs["scale_height_km"]``.
        """
        altitude = self.altitude
        return {
            "altitude": xr.Variable(
                "altitude",
                altitude,
                {
                    "units": "km",
                    "long_name": ALTITUDE_LONG_NAME,
                    "axis": "Z",
                    "positive": "up",
                    "scale_height_km": SCALE_HEIGHT_KM,
                    "comment": (
                        f"z* = H ln(p0 / p) with scale height H = {SCALE_HEIGHT_KM:g} km and "
                        f"reference pressure p0 = {REFERENCE_PRESSURE_PA:g} Pa ({REFERENCE_PRESSURE}); "
                        f"{LN_PRESSURE} = z* / H is the CF atmosphere_ln_pressure_coordinate and "
                        f"{AIR_PRESSURE} the pressure of each level"
                    ),
                },
            ),
            "latitude": xr.Variable(
                "latitude",
                self.latitude,
                {
                    "units": "degrees_north",
                    "standard_name": "latitude",
                    "long_name": "latitude",
                    "axis": "Y",
                },
            ),
            "longitude": xr.Variable(
                "longitude",
                self.longitude,
                {
                    "units": "degrees_east",
                    "standard_name": "longitude",
                    "long_name": "longitude",
                    "axis": "X",
                },
            ),
            LN_PRESSURE: xr.Variable(
                "altitude",
                altitude / SCALE_HEIGHT_KM,
                {
                    "units": "1",
                    "standard_name": "atmosphere_ln_pressure_coordinate",
                    "long_name": "log-pressure altitude over the scale height, ln(p0 / p)",
                    "positive": "up",
                    "formula_terms": f"p0: {REFERENCE_PRESSURE} lev: {LN_PRESSURE}",
                },
            ),
            AIR_PRESSURE: xr.Variable(
                "altitude",
                altitude_km_to_pressure(altitude),
                {
                    "units": "Pa",
                    "standard_name": "air_pressure",
                    "long_name": "pressure of the log-pressure level, p0 exp(-altitude / H)",
                },
            ),
            REFERENCE_PRESSURE: xr.Variable(
                (),
                np.float64(REFERENCE_PRESSURE_PA),
                {"units": "Pa", "long_name": "reference pressure of the log-pressure altitude"},
            ),
        }

    def to_dataset(
        self,
        field: torch.Tensor | np.ndarray,
        time: Sequence[np.datetime64] | np.ndarray | None = None,
    ) -> xr.Dataset:
        """Tensor ``(V, L, H, W)`` or ``(T, V, L, H, W)`` -> Dataset with CF attributes.

        With ``time`` given the field must have a leading time axis of that length.
        """
        data = (
            field.detach().cpu().numpy() if isinstance(field, torch.Tensor) else np.asarray(field)
        )
        self.check_shape(data.shape)
        coords: dict[str, Any] = self.coords()
        if time is not None:
            times = np.asarray(time, dtype="datetime64[ns]")
            if data.ndim != 5 or data.shape[0] != times.size:
                raise GridMismatchError(
                    f"field shape {data.shape} does not match (T={times.size}, V, L, H, W)"
                )
            coords["time"] = xr.Variable("time", times, {"standard_name": "time", "axis": "T"})
            dims: tuple[str, ...] = DIMS
        else:
            if data.ndim != 4:
                raise GridMismatchError(
                    f"field without time must be (V, L, H, W), got {data.shape}"
                )
            dims = DIMS[1:]
        data_vars = {}
        for i, name in enumerate(self.variables):
            array = data[:, i] if time is not None else data[i]
            data_vars[name] = xr.Variable(dims, array, lookup_variable(name).cf_attrs())
        ds = xr.Dataset(data_vars, coords=coords)
        ds.attrs["Conventions"] = "CF-1.10"
        ds.attrs["genda_grid"] = json.dumps({"latitude_kind": self.latitude_kind})
        ds.attrs[VARIABLES_ATTR] = json.dumps(list(self.variables))
        return ds

    @classmethod
    def from_dataset(cls, ds: xr.Dataset, variables: Sequence[str] | None = None) -> Grid:
        """The grid of a Dataset with dims ``altitude, latitude, longitude`` in genda's order."""
        for dim in DIMS[1:]:
            if dim not in ds.coords:
                raise GridMismatchError(
                    f"dataset has no {dim!r} coordinate (coordinates: {list(ds.coords)})"
                )
        names = tuple(variables) if variables is not None else _variable_order(ds)
        kind: LatitudeKind = "irregular"
        lat = ds["latitude"].values
        if np.allclose(lat, gaussian_latitudes(lat.size)[0], atol=1e-6):
            kind = "legendre-gauss"
        elif lat.size > 1 and np.allclose(lat, equiangular_latitudes(lat.size), atol=1e-6):
            kind = "equiangular"
        return cls(lat, ds["longitude"].values, ds["altitude"].values, names, kind)

    def tensor_from_dataset(
        self, ds: xr.Dataset, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Dataset -> tensor ``(T, V, L, H, W)`` (or ``(V, L, H, W)`` without time).

        The dataset's coordinates must match this grid; reading is lazy until here.
        """
        self.check_same(Grid.from_dataset(ds, self.variables), what="dataset")
        arrays = []
        for name in self.variables:
            da = ds[name]
            order = [d for d in DIMS if d in da.dims]
            if set(da.dims) != set(order):
                raise GridMismatchError(
                    f"variable {name!r} has dims {da.dims}, expected a subset of {DIMS}"
                )
            arrays.append(np.asarray(da.transpose(*order).values))
        stacked = np.stack(arrays, axis=1 if "time" in ds[self.variables[0]].dims else 0)
        return torch.as_tensor(stacked, dtype=dtype)
