"""How a model-output file's names, units and coordinate axes are recognised.

The name tables (what a source may call each variable and coordinate), the
unit conversions to genda's units, and the search for the latitude,
longitude, vertical and time axes of :func:`genda.storage.readers.open_archive`.

The vertical (:func:`find_vertical`) is one of:

- levels at one pressure everywhere, converted exactly to log-pressure
  altitude: pressures (``plev`` in Pa, hPa), genda's own log-pressure
  ``altitude``, CF's ``atmosphere_ln_pressure_coordinate`` (``p = p0 exp(-lev)``),
  or heights with a 1-D pressure of each level;
- levels whose pressure varies by column, interpolated later
  (:mod:`genda.storage.vertical_interpolation`): geometric or geopotential
  heights with the model's pressure at every point, and hybrid sigma-pressure
  levels (``hyam``, ``hybm``, ``P0``, ``PS``; CF conventions 1.10 appendix D).

Geometric heights are not log-pressure altitude (they differ by several km
in the MLT, a level or more), so heights without pressure are refused.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from genda.constants import REFERENCE_PRESSURE_PA, pressure_to_altitude_km
from genda.grid import ALTITUDE_LONG_NAME
from genda.storage.errors import ArchiveError
from genda.storage.vertical_interpolation import HybridSigmaPressure
from genda.units import LENGTH_UNITS_M, canonical_units

# ---------------------------------------------------------------------------- name tables
VARIABLE_ALIASES: dict[str, tuple[str, ...]] = {
    "u": ("u", "ua", "U", "eastward_wind", "uwnd", "UA"),
    "v": ("v", "va", "V", "northward_wind", "vwnd", "VA"),
    "T": ("T", "ta", "temperature", "air_temperature", "temp", "TA"),
    "w": ("w", "wa", "W", "upward_air_velocity", "WA"),
    "geopotential_height": ("geopotential_height", "zg", "ZG", "gph"),
}
"""Source names tried, in order, for each genda variable (then its ``standard_name``)."""

LATITUDE_NAMES = ("latitude", "lat", "nav_lat", "Latitude", "LAT", "lats")
LONGITUDE_NAMES = ("longitude", "lon", "nav_lon", "Longitude", "LON", "lons")
HEIGHT_NAMES = (
    "altitude",
    "alt",
    "height",
    "z",
    "zg",
    "geometric_height",
    "geopotential_height",
    "zalt",
)
PRESSURE_NAMES = (
    "plev",
    "lev",
    "level",
    "pressure",
    "pres",
    "pfull",
    "isobaricInhPa",
    "air_pressure",
)
TIME_NAMES = ("time", "valid_time", "Time", "t")
COLUMN_HEIGHT_NAMES = ("z_mc", "zg", "Z3", "geopotential_height", "z", "height", "zalt", "ZG")
"""Heights of every point (m, km), e.g. ICON's ``z_mc``, CESM's ``Z3``: they identify the
vertical dimension of a source that has no 1-D vertical coordinate."""
COLUMN_PRESSURE_NAMES = ("pres", "pfull", "air_pressure", "pressure", "PMID", "PRES")
"""Pressure of every point (ICON ``pres``, GFDL/FV3 ``pfull``, CESM ``PMID``), or of each level."""
HEIGHT_STANDARD_NAMES = (
    "altitude",
    "height",
    "geopotential_height",
    "height_above_mean_sea_level",
    "height_above_reference_ellipsoid",
    "height_above_geopotential_datum",
)
GEOPOTENTIAL_NAMES = ("zg", "Z3", "ZG", "geopotential_height", "gph")
HYBRID_STANDARD_NAME = "atmosphere_hybrid_sigma_pressure_coordinate"
LN_PRESSURE_STANDARD_NAME = "atmosphere_ln_pressure_coordinate"
HYBRID_A_NAMES = ("hyam",)
HYBRID_B_NAMES = ("hybm",)
REFERENCE_PRESSURE_NAMES = ("P0", "p0")
SURFACE_PRESSURE_NAMES = ("PS", "ps", "aps", "surface_pressure")
"""Terms of hybrid sigma-pressure levels looked for by name when ``formula_terms`` does not name them."""


_SPEED = {"m s-1": 1.0, "m/s": 1.0, "m.s-1": 1.0, "ms-1": 1.0, "m/sec": 1.0, "m sec-1": 1.0}
_SPEED.update({f"{m} second-1": 1.0 for m in ("meter", "meters", "metre", "metres")})
_SPEED.update({f"{m}/second": 1.0 for m in ("meter", "meters", "metre", "metres")})
_SPEED.update({"cm s-1": 0.01, "cm/s": 0.01})
_LENGTH_M = {**LENGTH_UNITS_M, "gpm": 1.0}
_PRESSURE_PA = {"pa": 1.0, "pascal": 1.0, "pascals": 1.0, "kpa": 1000.0}
_PRESSURE_PA.update({u: 100.0 for u in ("hpa", "mbar", "mbars", "millibar", "millibars", "mb")})
_KELVIN = {
    u: 0.0 for u in ("k", "kelvin", "degk", "deg_k", "degrees_k", "degree_k", "degrees kelvin")
}
_KELVIN.update(
    {
        u: 273.15
        for u in (
            *("degc", "deg_c", "degrees_c", "degree_c", "celsius", "degree_celsius"),
            *("degrees_celsius", "degrees celsius", "°c", "c"),
        )
    }
)

# (scale, offset) to genda's units, per genda variable, by canonical source unit.
UNIT_CONVERSIONS: dict[str, dict[str, tuple[float, float]]] = {
    "u": {k: (f, 0.0) for k, f in _SPEED.items()},
    "v": {k: (f, 0.0) for k, f in _SPEED.items()},
    "w": {k: (f, 0.0) for k, f in _SPEED.items()},
    "T": {k: (1.0, off) for k, off in _KELVIN.items()},
    "geopotential_height": {k: (f, 0.0) for k, f in _LENGTH_M.items()},
}


# ---------------------------------------------------------------------------- coordinates
@dataclass(frozen=True)
class Axis:
    """A coordinate found in the source: its variable name, its dimension, 1-D values."""

    name: Hashable
    dim: Hashable
    values: np.ndarray
    attrs: dict[str, Any]


def units_of(var: xr.Variable | xr.DataArray) -> str | None:
    units = var.attrs.get("units")
    return str(units) if units is not None else None


def _as_axis(ds: xr.Dataset, name: Hashable, what: str, source: str) -> Axis:
    """The 1-D axis of coordinate ``name``; a 2-D one must be constant along one dimension."""
    var = ds[name].variable
    if var.ndim == 1:
        return Axis(name, var.dims[0], np.asarray(var.values), dict(var.attrs))
    if var.ndim == 2:
        # NEMO-style nav_lat(y, x) on a regular grid: constant along x.
        values = np.asarray(var.values)
        if np.allclose(values, values[:, :1], equal_nan=True):
            return Axis(name, var.dims[0], values[:, 0], dict(var.attrs))
        if np.allclose(values, values[:1, :], equal_nan=True):
            return Axis(name, var.dims[1], values[0, :], dict(var.attrs))
    raise ArchiveError(
        f"{source}: {what} coordinate {name!r} has dims {var.dims} and is not a regular grid axis; "
        "remap to a regular latitude-longitude grid first (e.g. cdo remapbil)"
    )


def find_horizontal(
    ds: xr.Dataset, what: str, names: Sequence[str], units: Sequence[str], source: str
) -> Axis:
    for name in names:
        if name in ds.variables and ds[name].ndim >= 1:
            return _as_axis(ds, name, what, source)
    for name, var in ds.variables.items():
        unit = canonical_units(units_of(var) or "")
        if var.ndim >= 1 and (var.attrs.get("standard_name") == what or unit in units):
            return _as_axis(ds, name, what, source)
    raise ArchiveError(
        f"{source}: no {what} coordinate (looked for {', '.join(names)} or standard_name={what!r}); "
        f"variables and coordinates present: {sorted(map(str, ds.variables))}"
    )


@dataclass(frozen=True)
class VerticalSource:
    """The source's vertical: its dimension and how its levels map to log-pressure altitude.

    Exactly one of ``altitude_km``, ``pressure`` and ``hybrid`` is set.

    Attributes:
        name: the variable that identified the vertical.
        dim: the source's vertical dimension.
        description: what the source had, for ``altitude.attrs["genda_source_coordinate"]``.
        altitude_km: ``(n,)`` the exact log-pressure altitude of each level, when
            every column has its levels at the same pressures.
        pressure: pressure (Pa, lazy) of every point, dims include ``dim``,
            when it varies by column.
        hybrid: hybrid sigma-pressure levels, when the source has them.
    """

    name: Hashable
    dim: Hashable
    description: str
    altitude_km: np.ndarray | None = None
    pressure: xr.DataArray | None = None
    hybrid: HybridSigmaPressure | None = None


def parse_formula_terms(text: str) -> dict[str, str]:
    """CF ``formula_terms`` (``"a: hyam b: hybm p0: P0 ps: PS"``) as ``{term: variable}``."""
    tokens = str(text).replace(" :", ":").split()
    return {
        key.rstrip(":"): value
        for key, value in zip(tokens[::2], tokens[1::2], strict=False)
        if key.endswith(":")
    }


def _in_pa(ds: xr.Dataset, name: Hashable, what: str, source: str) -> xr.DataArray:
    """Variable ``name`` (a pressure) in Pa, float64, lazily; an error without pressure units."""
    raw = units_of(ds[name])
    unit = canonical_units(raw or "")
    if unit not in _PRESSURE_PA:
        raise ArchiveError(
            f"{source}: {what} {name!r} has "
            + (f"units {raw!r}" if raw is not None else "no 'units' attribute")
            + "; expected a pressure (Pa, hPa, mbar)"
        )
    return ds[name].astype(np.float64) * _PRESSURE_PA[unit]


def _exact(pressure_pa: np.ndarray, name: Hashable, source: str) -> np.ndarray:
    """Log-pressure altitude (km) of 1-D pressures; an error if any is missing or non-positive."""
    if np.any(~np.isfinite(pressure_pa)) or np.any(pressure_pa <= 0):
        raise ArchiveError(
            f"{source}: vertical coordinate {name!r} has non-positive or missing pressures"
        )
    return pressure_to_altitude_km(pressure_pa)


def _first(ds: xr.Dataset, names: Sequence[Hashable]) -> Hashable | None:
    return next((n for n in names if n in ds.variables), None)


def _hybrid(
    ds: xr.Dataset, name: Hashable, dim: Hashable, source: str
) -> HybridSigmaPressure | None:
    """Hybrid sigma-pressure levels on ``dim``, or None if the source has none.

    The terms are those of the coordinate's ``formula_terms`` (``a``/``ap``,
    ``b``, ``p0``, ``ps``; CF conventions 1.10 appendix D), else ``hyam``,
    ``hybm``, ``P0``/``p0`` and ``PS``/``ps`` (CESM, WACCM-X) by name.
    """
    attrs = ds[name].attrs
    terms = parse_formula_terms(attrs.get("formula_terms", ""))
    if not ("b" in terms and ("a" in terms or "ap" in terms)):
        named = {
            "a": _first(ds, HYBRID_A_NAMES),
            "b": _first(ds, HYBRID_B_NAMES),
            "p0": _first(ds, REFERENCE_PRESSURE_NAMES),
            "ps": _first(ds, SURFACE_PRESSURE_NAMES),
        }
        # Coefficients along another dimension (CESM output moved to plev keeps hyam(lev))
        # do not describe this vertical.
        along = [named[t] is not None and ds[named[t]].dims == (dim,) for t in ("a", "b")]
        if not all(along):
            if attrs.get("standard_name") == HYBRID_STANDARD_NAME:
                raise ArchiveError(
                    f"{source}: {name!r} is a hybrid sigma-pressure coordinate but its "
                    f"coefficients are missing (looked for formula_terms, {HYBRID_A_NAMES[0]!r} "
                    f"and {HYBRID_B_NAMES[0]!r})"
                )
            return None
        terms = {k: str(v) for k, v in named.items() if v is not None}
    what = f"hybrid sigma-pressure levels {name!r}"
    coefficient = "ap" if "ap" in terms else "a"
    for term in (coefficient, "b"):
        var = ds.variables.get(terms[term])
        if var is None or var.dims != (dim,):
            found = "absent" if var is None else f"with dims {var.dims}"
            raise ArchiveError(
                f"{source}: {what}: term {term!r} ({terms[term]!r}) is {found}; expected a 1-D "
                f"variable along {dim!r}"
            )
    if "ps" not in terms or terms["ps"] not in ds.variables:
        raise ArchiveError(
            f"{source}: {what} need the surface pressure (looked for "
            f"{', '.join(SURFACE_PRESSURE_NAMES)} or formula_terms 'ps: ...'); the pressure of "
            "each level varies with it"
        )
    ps = _in_pa(ds, terms["ps"], f"{what}: surface pressure", source)
    if dim in ps.dims:
        raise ArchiveError(
            f"{source}: {what}: surface pressure {terms['ps']!r} varies along {dim!r}"
        )
    b = np.asarray(ds[terms["b"]].values, dtype=np.float64)
    if coefficient == "ap":
        ap = np.asarray(_in_pa(ds, terms["ap"], f"{what}: term 'ap'", source).values)
        reference, names = REFERENCE_PRESSURE_PA, f"{terms['ap']}, {terms['b']}, {terms['ps']}"
    else:
        if "p0" not in terms or terms["p0"] not in ds.variables:
            raise ArchiveError(
                f"{source}: {what} need the reference pressure (looked for "
                f"{', '.join(REFERENCE_PRESSURE_NAMES)} or formula_terms 'p0: ...'): p = a p0 + b ps"
            )
        reference = float(_in_pa(ds, terms["p0"], f"{what}: reference pressure", source).values)
        ap = np.asarray(ds[terms["a"]].values, dtype=np.float64) * reference
        names = f"{terms['a']}, {terms['b']}, {terms['p0']}, {terms['ps']}"
    return HybridSigmaPressure(ap, b, ps, dim, reference, names)


def _ln_pressure(ds: xr.Dataset, name: Hashable, source: str) -> np.ndarray:
    """``(n,)`` pressure (Pa) of CF's ``atmosphere_ln_pressure_coordinate``: ``p = p0 exp(-lev)``."""
    terms = parse_formula_terms(ds[name].attrs.get("formula_terms", ""))
    if terms.get("p0") not in ds.variables or terms.get("lev") not in ds.variables:
        raise ArchiveError(
            f"{source}: {name!r} is an atmosphere_ln_pressure_coordinate without usable "
            "formula_terms (expected 'p0: <variable> lev: <variable>')"
        )
    p0 = float(_in_pa(ds, terms["p0"], f"reference pressure of {name!r}", source).values)
    return p0 * np.exp(-np.asarray(ds[terms["lev"]].values, dtype=np.float64))


def _column_pressure(ds: xr.Dataset, dim: Hashable) -> Hashable | None:
    """A pressure variable along ``dim`` (by name, then ``standard_name: air_pressure``)."""
    for name in COLUMN_PRESSURE_NAMES:
        if name in ds.variables and dim in ds[name].dims:
            return name
    for name, var in ds.variables.items():
        if var.attrs.get("standard_name") == "air_pressure" and dim in var.dims:
            return name
    return None


def _is_height(var: xr.DataArray) -> bool:
    unit = canonical_units(units_of(var) or "")
    return unit in _LENGTH_M or var.attrs.get("standard_name") in HEIGHT_STANDARD_NAMES


def _column_vertical(
    ds: xr.Dataset, data_dims: set[Hashable], other_dims: Sequence[Hashable]
) -> tuple[Hashable, Hashable] | None:
    """``(variable, dimension)`` of per-column heights or pressure, for a source without a 1-D vertical."""
    named = [n for n in (*COLUMN_HEIGHT_NAMES, *COLUMN_PRESSURE_NAMES) if n in ds.variables]
    by_standard_name = [
        n
        for n, v in ds.variables.items()
        if v.attrs.get("standard_name") in (*HEIGHT_STANDARD_NAMES, "air_pressure")
    ]
    for name in (*named, *by_standard_name):
        var = ds[name]
        dims = [d for d in var.dims if d not in other_dims]
        unit = canonical_units(units_of(var) or "")
        if (
            var.ndim >= 2
            and len(dims) == 1
            and dims[0] in data_dims
            and (_is_height(var) or unit in _PRESSURE_PA)
        ):
            return name, dims[0]
    return None


def _vertical_candidates(ds: xr.Dataset, data_dims: set[Hashable]) -> list[Hashable]:
    candidates: list[Hashable] = [n for n in (*HEIGHT_NAMES, *PRESSURE_NAMES) if n in ds.variables]
    for name, var in ds.variables.items():
        if name not in candidates and (
            var.attrs.get("standard_name")
            in (
                "altitude",
                "height",
                "air_pressure",
                HYBRID_STANDARD_NAME,
                LN_PRESSURE_STANDARD_NAME,
            )
            or var.attrs.get("axis") == "Z"
        ):
            candidates.append(name)
    # A vertical coordinate is 1-D along a dimension of the data, not a 4-D field like zg(time, plev, lat, lon).
    found = [n for n in candidates if ds[n].ndim == 1 and ds[n].dims[0] in data_dims]
    # Exact ones first: a file on pressure levels may also carry a height per level
    # (altitude(plev)), which alone would need the pressure that plev already is.
    return sorted(found, key=lambda name: _exactness(ds, name))


def _exactness(ds: xr.Dataset, name: Hashable) -> int:
    """0 for genda's own altitude, 1 for a pressure-like vertical, 2 for heights."""
    var = ds[name]
    unit = canonical_units(units_of(var) or "")
    if unit in _LENGTH_M and str(var.attrs.get("long_name", "")).startswith(ALTITUDE_LONG_NAME):
        return 0
    pressure_like = (
        unit in _PRESSURE_PA
        or var.attrs.get("standard_name")
        in ("air_pressure", HYBRID_STANDARD_NAME, LN_PRESSURE_STANDARD_NAME)
        or "formula_terms" in var.attrs
    )
    return 1 if pressure_like else 2


def find_vertical(
    ds: xr.Dataset, source: str, other_dims: Sequence[Hashable] = ()
) -> VerticalSource:
    """The source's vertical and how its levels map to log-pressure altitude.

    Args:
        ds: the source.
        source: the file, for messages.
        other_dims: the source's horizontal and time dimensions, which tell
            the vertical dimension of per-column heights apart.

    Raises:
        ArchiveError: no vertical, unknown units, heights without pressure,
            hybrid levels with a term missing.
    """
    data_dims = {d for v in ds.data_vars.values() for d in v.dims}
    candidates = _vertical_candidates(ds, data_dims)
    if candidates:
        name, dim = candidates[0], ds[candidates[0]].dims[0]
    else:
        column = _column_vertical(ds, data_dims, other_dims)
        if column is None:
            raise ArchiveError(
                f"{source}: no vertical coordinate (looked for {', '.join(HEIGHT_NAMES + PRESSURE_NAMES)} "
                f"or axis='Z', and for heights or pressure of every point: "
                f"{', '.join(COLUMN_HEIGHT_NAMES + COLUMN_PRESSURE_NAMES)}); coordinates present: "
                f"{sorted(map(str, ds.coords))}"
            )
        name, dim = column
    return _classified(ds, name, dim, source)


def _classified(ds: xr.Dataset, name: Hashable, dim: Hashable, source: str) -> VerticalSource:
    """How the levels of vertical ``name`` (along ``dim``) map to log-pressure altitude."""
    var = ds[name]
    raw_units = units_of(var)
    unit = canonical_units(raw_units or "")
    label = f"{name} ({raw_units})"
    hybrid = _hybrid(ds, name, dim, source)
    if hybrid is not None:
        if np.all(hybrid.b == 0):  # pure pressure levels: the same pressure in every column
            return VerticalSource(
                name,
                dim,
                f"{name} (hybrid levels, pure pressure: {hybrid.description})",
                altitude_km=_exact(hybrid.ap, name, source),
            )
        return VerticalSource(
            name, dim, f"{name} (hybrid sigma-pressure: {hybrid.description})", hybrid=hybrid
        )
    if var.ndim == 1 and var.attrs.get("standard_name") == LN_PRESSURE_STANDARD_NAME:
        return VerticalSource(
            name,
            dim,
            f"{name} (atmosphere_ln_pressure_coordinate)",
            altitude_km=_exact(_ln_pressure(ds, name, source), name, source),
        )
    if (
        var.ndim == 1
        and unit in _LENGTH_M
        and str(var.attrs.get("long_name", "")).startswith(ALTITUDE_LONG_NAME)
    ):
        # genda's own log-pressure altitude (its archives and stores): exact, as written.
        values = np.asarray(var.values, dtype=np.float64) * _LENGTH_M[unit] / 1000.0
        return VerticalSource(name, dim, label, altitude_km=values)
    if var.ndim == 1 and unit in _PRESSURE_PA:
        pressure = np.asarray(var.values, dtype=np.float64) * _PRESSURE_PA[unit]
        return VerticalSource(name, dim, label, altitude_km=_exact(pressure, name, source))
    # Per-column pressure chosen as the vertical itself, or a pressure beside heights.
    pressure_name = name if unit in _PRESSURE_PA else _column_pressure(ds, dim)
    if pressure_name is not None:
        pressure = _in_pa(ds, pressure_name, "pressure", source)
        with_pressure = f"{label} with pressure {pressure_name} ({units_of(ds[pressure_name])})"
        if pressure.ndim == 1:  # one pressure per level: exact
            values = np.asarray(pressure.values, dtype=np.float64)
            return VerticalSource(
                name, dim, with_pressure, altitude_km=_exact(values, pressure_name, source)
            )
        return VerticalSource(name, dim, f"{with_pressure} per column", pressure=pressure)
    if _is_height(var):
        kind = (
            "geopotential heights"
            if var.attrs.get("standard_name") == "geopotential_height"
            or name in GEOPOTENTIAL_NAMES
            or unit == "gpm"
            else "geometric heights"
        )
        raise ArchiveError(
            f"{source}: vertical {name!r} holds {kind} ({raw_units}) but the file has no pressure "
            f"along {dim!r}; genda's levels are log-pressure altitude H ln(p0/p), which differs "
            "from heights by several km in the MLT, so the pressure of every point is needed "
            f"(a variable named {', '.join(COLUMN_PRESSURE_NAMES)} or with "
            "standard_name='air_pressure', in Pa or hPa)"
        )
    if raw_units is None:
        raise ArchiveError(
            f"{source}: vertical coordinate {name!r} has no 'units' attribute; "
            "genda needs a pressure (Pa, hPa), heights (m, km) with the model's pressure, "
            "or hybrid sigma-pressure levels (hyam, hybm, P0, PS)"
        )
    raise ArchiveError(
        f"{source}: vertical coordinate {name!r} has units {raw_units!r}; expected a pressure "
        "(Pa, hPa, mbar), heights (m, km) with the model's pressure, or hybrid sigma-pressure "
        "levels (hyam, hybm, P0, PS)"
    )


def find_time(ds: xr.Dataset) -> tuple[Hashable | None, Hashable | None]:
    """``(coordinate name or None, dimension name or None)`` of time."""
    for name in TIME_NAMES:
        if name in ds.dims:
            return (name if name in ds.variables else None), name
    for name, var in ds.variables.items():
        if var.attrs.get("standard_name") == "time" or var.attrs.get("axis") == "T":
            if var.ndim == 1:
                return name, var.dims[0]
            if var.ndim == 0:
                return name, None
    for name in TIME_NAMES:
        if name in ds.variables and ds[name].ndim == 0:
            return name, None
    return None, None


def check_unique(values: np.ndarray, what: str, source: str) -> None:
    unique, counts = np.unique(values, return_counts=True)
    if np.any(counts > 1):
        raise ArchiveError(f"{source}: duplicated {what} values {unique[counts > 1].tolist()}")


def check_monotonic(values: np.ndarray, what: str, source: str) -> bool:
    """True if strictly increasing, False if strictly decreasing, else an error."""
    if values.size < 2:
        return True
    steps = np.diff(values)
    if np.all(steps > 0):
        return True
    if np.all(steps < 0):
        return False
    raise ArchiveError(f"{source}: {what} is not monotonic: {np.round(values, 3).tolist()}")
