"""Ensemble verification scores: CRPS, RMSE, spread, spread-skill, rank histograms, bias.

Two entry points, one set of definitions:

* :func:`ensemble_scores` verifies a gridded posterior ensemble ``(member,
  altitude, latitude, longitude)`` against a gridded truth (an OSSE's nature
  run, or model data), per variable and altitude level and over all levels;
* :func:`point_scores` verifies ensemble values at observation points
  (withheld stations) against the observed values, per variable and station,
  with and without the observation error.

The scoring is done by the ``scores`` library (Leeuwenburg et al. 2024,
https://scores.readthedocs.io), with the latitude weights of
:meth:`Grid.area_weights` (Gauss-Legendre weights on a Gaussian grid) passed as
its ``weights`` where gridded; per score, with ``N`` members ``x_i``, ensemble
mean ``m`` and truth ``y``:

========================  ===================================================
score                     computed with
========================  ===================================================
``crps``                  ``scores.probability.crps_for_ensemble(...,
                          method="fair")``, the fair CRPS ``mean|x_i - y| -
                          sum_ij |x_i - x_j| / (2 N (N - 1))`` (Ferro 2014),
                          an unbiased estimate of the CRPS of the distribution
                          the members are drawn from; a single member has no
                          fair CRPS, so ``N = 1`` uses ``method="ecdf"``,
                          which is then the absolute error
``rmse``                  ``sqrt(scores.continuous.mse(m, y))``, the RMSE of
                          the ensemble mean
``bias``                  ``scores.continuous.additive_bias(m, y)`` = mean of
                          ``m - y``
``spread``                ``sqrt(aggregate(var(x, ddof=1)))``: the unbiased
                          ensemble variance (``xarray .var(ddof=1)``) averaged
                          by ``scores.processing.aggregate`` with the same
                          weights, then the square root (neither ``scores``
                          nor ``xskillscore`` has an ensemble-spread score);
                          NaN for ``N = 1``
``spread_skill``          ``sqrt((N + 1) / N) * spread / rmse``: 1 for a
                          calibrated ensemble of any size, the factor
                          correcting for the ensemble mean's own sampling
                          error (Fortin et al. 2014, J. Hydrometeor. 15)
``rank_histogram``        ``scores.probability.rank_histogram``: ``N + 1``
                          (weighted) relative frequencies of the rank of
                          ``y`` among the members, ties shared (Hamill 2001)
``reliability_index``     ``sum_k |f_k - 1 / (N + 1)|`` over the ``N + 1``
                          frequencies ``f_k`` of the rank histogram (Delle
                          Monache et al. 2006, J. Geophys. Res. 111, D05308):
                          0 for a flat histogram, at most ``2 N / (N + 1)``;
                          chosen over a chi-square statistic because grid
                          points are correlated, so no count of independent
                          cases exists to scale a chi-square by
========================  ===================================================

``xskillscore`` is not used: ``scores`` has every score above that either
library has.

Aggregation. Per level the scores are area-weighted means over latitude and
longitude (and over time, see below). The total over altitude weights every
level equally: CRPS, bias and rank histograms are the means of the levels'
values, RMSE and spread the square roots of the levels' mean squared values,
which is what the library would return reducing over ``(altitude, latitude,
longitude)`` at once with the same weights on each level; one level at a time
keeps only ``(N, H, W)`` in memory, so Zarr stores of any size are fine.

Time. A length-1 ``time`` dimension is squeezed; the truth is reduced to the
ensemble's time(s) first (:func:`align_time`). An ensemble with several times
is scored over all of them pooled: each score is then the mean over times of
the per-time area means (RMSE and spread: of the squared values).

Observation error. Observations carry errors ``e ~ N(0, sigma^2)``, so even a
perfect ensemble scatters less than the observations around it. Following
Candille and Talagrand (2008, Q. J. R. Meteorol. Soc. 134), :func:`point_scores`
also scores an ensemble whose members are perturbed by independent draws of
``N(0, sigma^2)`` (one seeded :class:`numpy.random.Generator` over the whole
table, so every subset sees the same perturbed values); perturbing members,
rather than adding ``sigma^2`` to the spread, also corrects the CRPS and the
rank histogram, which a variance correction cannot.

All numbers are plain Python floats and lists (JSON-serialisable); non-finite
values stay ``NaN``/``Infinity`` as Python's ``json`` writes them. Units are in
the output: ``units`` per variable, with those of each score under
``score_units``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from rich.table import Table
from scores.continuous import additive_bias, mse
from scores.probability import crps_for_ensemble, rank_histogram
from scores.processing import aggregate

from genda.errors import InvalidValueError, UnknownNameError
from genda.grid import VARIABLES, Grid, GridMismatchError
from genda.times import iso

__all__ = [
    "MEMBER_DIM",
    "SCORE_NAMES",
    "align_time",
    "ensemble_scores",
    "format_table",
    "point_scores",
    "reliability_index",
    "score_members",
    "units_of",
]

MEMBER_DIM = "member"
SPACE_DIMS: tuple[str, str, str] = ("altitude", "latitude", "longitude")
SCORE_NAMES: tuple[str, ...] = (
    "crps",
    "rmse",
    "bias",
    "spread",
    "spread_skill",
    "reliability_index",
)
"""Scalar scores in every score record (``rank_histogram`` is a list beside them)."""
TABLE_HEADERS: dict[str, str] = {
    "crps": "CRPS",
    "rmse": "RMSE",
    "bias": "bias",
    "spread": "spread",
    "spread_skill": "SSR",
    "reliability_index": "RI",
}
"""Column headings of :func:`format_table` (SSR: spread-skill ratio, RI: reliability index)."""
FORMAT = "genda-ensemble-scores"
POINT_FORMAT = "genda-point-scores"
FORMAT_VERSION = 1
OBSERVATION_UNITS: dict[str, str] = {"los": "m s-1"}
"""Units of observed quantities that are not grid variables (line-of-sight wind)."""
REQUIRED_COLUMNS: tuple[str, ...] = ("variable", "value", "sigma")
POINT_DIM = "point"


# ---------------------------------------------------------------------- core
def score_members(
    members: np.ndarray,
    truth: np.ndarray,
    weights: np.ndarray | None = None,
) -> dict[str, Any]:
    """The scores of one sample of cases with the ``scores`` library.

    Args:
        members: ``(N, *S)`` ensemble values (``S`` any case shape).
        truth: ``S`` verifying values.
        weights: broadcastable to ``S`` from the right (e.g. ``(H, 1)`` latitude
            weights for ``S = (..., H, W)``), non-negative; ``None``: equal.

    Returns:
        ``crps``, ``rmse``, ``bias``, ``spread``, ``spread_skill``,
        ``reliability_index`` (floats), ``rank_histogram`` (``N + 1`` floats)
        and ``mse``, ``variance`` (floats, for pooling several samples).
    """
    members = np.asarray(members, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if members.shape[1:] != truth.shape:
        raise InvalidValueError(
            f"members {members.shape} do not match the truth {truth.shape}: expected (N, *truth.shape)"
        )
    n = members.shape[0]
    if n < 1:
        raise InvalidValueError("the ensemble has no members")
    case_dims = tuple(f"case{i}" for i in range(truth.ndim))
    fcst = xr.DataArray(members, dims=(MEMBER_DIM, *case_dims))
    obs = xr.DataArray(truth, dims=case_dims)
    mean = fcst.mean(MEMBER_DIM)
    w = None
    if weights is not None:
        w_values = np.broadcast_to(np.asarray(weights, dtype=np.float64), truth.shape)
        w = xr.DataArray(w_values, dims=case_dims)
    method = "fair" if n > 1 else "ecdf"  # a single member has no fair CRPS
    crps = float(crps_for_ensemble(fcst, obs, MEMBER_DIM, method=method, weights=w))
    mse_value = float(mse(mean, obs, weights=w))
    bias = float(additive_bias(mean, obs, weights=w))
    if n > 1:
        variance = float(aggregate(fcst.var(MEMBER_DIM, ddof=1), reduce_dims=case_dims, weights=w))
    else:
        variance = math.nan
    frequencies = rank_histogram(fcst, obs, MEMBER_DIM, weights=w).values.astype(np.float64)
    record = {"mse": mse_value, "variance": variance, "crps": crps, "bias": bias}
    return _finish(record, frequencies, n)


def _finish(record: dict[str, float], frequencies: np.ndarray, n: int) -> dict[str, Any]:
    """Add the derived scores (RMSE, spread, spread-skill, reliability index) to ``record``."""
    rmse = math.sqrt(record["mse"])
    spread = math.sqrt(record["variance"]) if math.isfinite(record["variance"]) else math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = float(np.float64(math.sqrt((n + 1) / n) * spread) / np.float64(rmse))
    return {
        "crps": record["crps"],
        "rmse": rmse,
        "bias": record["bias"],
        "spread": spread,
        "spread_skill": ratio,
        "reliability_index": reliability_index(frequencies),
        "rank_histogram": [float(f) for f in frequencies],
        "mse": record["mse"],
        "variance": record["variance"],
    }


def reliability_index(frequencies: np.ndarray | Sequence[float]) -> float:
    """``sum_k |f_k - 1/K|`` of ``K`` rank-histogram frequencies summing to 1 (Delle Monache et al. 2006)."""
    f = np.asarray(frequencies, dtype=np.float64)
    return float(np.abs(f - 1.0 / f.size).sum())


def _pool(records: Sequence[dict[str, Any]], n: int) -> dict[str, Any]:
    """Equal-weight mean of several score records (levels): squared scores pooled before the root."""
    pooled = {
        key: float(np.mean([r[key] for r in records]))
        for key in ("mse", "variance", "crps", "bias")
    }
    frequencies = np.mean([r["rank_histogram"] for r in records], axis=0)
    return _finish(pooled, frequencies, n)


def _public(record: dict[str, Any]) -> dict[str, Any]:
    """A score record without the pooling intermediates."""
    return {key: value for key, value in record.items() if key not in ("mse", "variance")}


def units_of(name: str) -> str:
    """Units of a grid variable or observed quantity (``"unknown"`` if neither)."""
    if name in VARIABLES:
        return VARIABLES[name].units
    return OBSERVATION_UNITS.get(name, "unknown")


def _score_units(units: str) -> dict[str, str]:
    return {
        "crps": units,
        "rmse": units,
        "bias": units,
        "spread": units,
        "spread_skill": "1",
        "reliability_index": "1",
        "rank_histogram": "1 (relative frequency per rank)",
    }


# ---------------------------------------------------------------------- gridded
def align_time(
    ensemble: xr.Dataset, truth: xr.Dataset, time: Any = None
) -> tuple[xr.Dataset, xr.Dataset, list[str]]:
    """Reduce ``truth`` to the ensemble's time(s); squeeze length-1 ``time`` dims.

    Args:
        ensemble: with or without a ``time`` dimension (or a scalar ``time``
            coordinate).
        truth: with or without a ``time`` dimension.
        time: a time to select in both (the ensemble's own when it has none).

    Returns:
        ``(ensemble, truth, times)``: both without a ``time`` dimension, or both
        with the same ``K > 1`` times in the same order; ``times`` as ISO strings
        (the truth's, else the ensemble's; empty when nothing says which time).

    Raises:
        ValueError: the truth lacks the ensemble's time (its range is named),
            or several truth times and no way to choose one.
    """
    if time is not None and "time" in ensemble.dims:
        ensemble = _select_time(ensemble, [time], "ensemble")
    ensemble_times: np.ndarray | None = None
    if "time" in ensemble.dims:
        if "time" in ensemble.coords:
            ensemble_times = np.atleast_1d(ensemble["time"].values)
    elif "time" in ensemble.coords:
        ensemble_times = np.atleast_1d(ensemble["time"].values)
    elif time is not None:
        ensemble_times = np.atleast_1d(np.asarray(time))
    if "time" in truth.dims:
        if ensemble_times is not None and "time" in truth.coords:
            truth = _select_time(truth, list(ensemble_times), "truth")
        elif truth.sizes["time"] != 1 and truth.sizes["time"] != ensemble.sizes.get("time", 1):
            raise InvalidValueError(
                f"the truth has {truth.sizes['time']} times and the ensemble says none of its own; "
                f"pass time= (truth covers {_time_range(truth)})"
            )
    elif ensemble.sizes.get("time", 1) > 1:
        raise InvalidValueError(
            f"the ensemble has {ensemble.sizes['time']} times but the truth has no time axis"
        )
    if ensemble.sizes.get("time", 1) == 1 and "time" in ensemble.dims:
        ensemble = ensemble.isel(time=0)
    if truth.sizes.get("time", 1) == 1 and "time" in truth.dims:
        truth = truth.isel(time=0)
    if ("time" in ensemble.dims) != ("time" in truth.dims):
        raise InvalidValueError(
            f"time axes differ: ensemble {ensemble.sizes.get('time', 0)}, "
            f"truth {truth.sizes.get('time', 0)} times"
        )
    # the truth's labels once selected: the same instants, in its calendar and format
    if "time" in truth.coords:
        ensemble_times = np.atleast_1d(truth["time"].values)
    times = [] if ensemble_times is None else [iso(t) for t in ensemble_times]
    return ensemble, truth, times


def _select_time(ds: xr.Dataset, times: list[Any], what: str) -> xr.Dataset:
    if "time" not in ds.coords:
        raise InvalidValueError(f"the {what} has a time axis without values; cannot select {times}")
    if np.issubdtype(ds["time"].dtype, np.datetime64):
        try:  # strings, datetimes and datetime64 of any unit alike
            times = list(pd.to_datetime(times).to_numpy())
        except (TypeError, ValueError):
            pass
    try:
        return ds.sel(time=times)
    except (KeyError, TypeError, ValueError):
        wanted = ", ".join(iso(t) for t in times)
        raise InvalidValueError(
            f"the {what} has no time {wanted}; it covers {_time_range(ds)}"
        ) from None


def _time_range(ds: xr.Dataset) -> str:
    if "time" not in ds.coords:
        return f"{ds.sizes.get('time', 0)} steps without time values"
    values = np.atleast_1d(ds["time"].values)
    if values.size == 0:
        return "no times"
    return f"{iso(values[0])} to {iso(values[-1])} ({values.size} steps)"


def _check_dataset(ds: xr.Dataset, grid: Grid, what: str, member: bool) -> None:
    """Check variables, coordinates and dims of ``ds`` against ``grid`` (clear errors)."""
    missing = [name for name in grid.variables if name not in ds.data_vars]
    if missing:
        present = [str(name) for name in ds.data_vars]
        raise UnknownNameError(f"the {what} lacks variable(s) {missing} (present: {present})")
    grid.check_same(Grid.from_dataset(ds, grid.variables), what=f"the {what}")
    expected = {*SPACE_DIMS, *((MEMBER_DIM,) if member else ())}
    for name in grid.variables:
        dims = set(ds[name].dims)
        if not expected <= dims or not dims - expected <= {"time"}:
            want = " and ".join(sorted(expected))
            raise GridMismatchError(
                f"the {what}'s variable {name!r} has dims {tuple(ds[name].dims)}; "
                f"expected {want} (and perhaps time)"
            )


def ensemble_scores(
    ensemble: xr.Dataset,
    truth: xr.Dataset,
    grid: Grid | None = None,
    *,
    time: Any = None,
) -> dict[str, Any]:
    """Verify a gridded ensemble against a gridded truth (see the module docstring).

    Args:
        ensemble: variables ``(member, altitude, latitude, longitude)``, perhaps
            with ``time``, physical units; other variables (``u_mean``, ...) are
            ignored.
        truth: the same variables ``([time,] altitude, latitude, longitude)``
            on the same grid.
        grid: what to verify (its variables) and where; default: the
            registered variables of ``ensemble`` (u, v, T, ...) on its grid.
        time: select this time in both (see :func:`align_time`).

    Returns:
        ``{"format", "version", "n_members", "times", "altitude_km",
        "weighting", "variables": {name: {"units", "score_units", "levels":
        {score: [L values]}, "total": {score: value}}}}``; ``rank_histogram``
        is ``(L, N + 1)`` under ``levels`` and ``(N + 1,)`` under ``total``.

    Raises:
        KeyError: a variable is missing in the ensemble or the truth.
        GridMismatchError: coordinates or dims differ (each difference named).
        ValueError: times that do not match, NaN or infinite values (the
            variable and level are named).
    """
    grid = _check_inputs(ensemble, truth, grid)
    ensemble, truth, times = align_time(ensemble, truth, time)
    n = int(ensemble.sizes[MEMBER_DIM])
    pooled_time = ("time",) if "time" in ensemble.dims else ()
    weights = grid.area_weights()[:, None]  # (H, 1): broadcast over longitude
    variables: dict[str, Any] = {}
    for name in grid.variables:
        fcst = ensemble[name].transpose(MEMBER_DIM, *pooled_time, *SPACE_DIMS)
        obs = truth[name].transpose(*pooled_time, *SPACE_DIMS)
        records = _level_records(fcst, obs, name, grid, weights)
        levels = {
            key: [_public(r)[key] for r in records] for key in (*SCORE_NAMES, "rank_histogram")
        }
        units = units_of(name)
        variables[name] = {
            "units": units,
            "score_units": _score_units(units),
            "levels": levels,
            "total": _public(_pool(records, n)),
        }
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "n_members": n,
        "times": times,
        "altitude_km": grid.altitude.tolist(),
        "weighting": (
            f"area ({grid.latitude_kind} latitude weights) per level; levels equally in totals"
        ),
        "variables": variables,
    }


def _check_inputs(ensemble: xr.Dataset, truth: xr.Dataset, grid: Grid | None) -> Grid:
    """The grid to verify on (default: the ensemble's), ensemble and truth checked against it."""
    if MEMBER_DIM not in ensemble.dims:
        raise GridMismatchError(
            f"the ensemble has no {MEMBER_DIM!r} dimension (dims: {dict(ensemble.sizes)})"
        )
    if MEMBER_DIM in truth.dims:
        raise GridMismatchError(f"the truth has a {MEMBER_DIM!r} dimension; give one field")
    if grid is None:
        grid = Grid.from_dataset(ensemble)
        if not grid.variables:
            raise UnknownNameError(
                f"the ensemble has no known variables (present: {list(ensemble.data_vars)}; "
                f"known: {sorted(VARIABLES)})"
            )
    _check_dataset(ensemble, grid, "ensemble", member=True)
    _check_dataset(truth, grid, "truth", member=False)
    return grid


def _level_records(
    fcst: xr.DataArray, obs: xr.DataArray, name: str, grid: Grid, weights: np.ndarray
) -> list[dict[str, Any]]:
    """The score records of variable ``name``, one level at a time (NaN or infinity named)."""
    records = []
    for level, altitude in enumerate(grid.altitude):
        x = np.asarray(fcst.isel(altitude=level).values, dtype=np.float64)
        y = np.asarray(obs.isel(altitude=level).values, dtype=np.float64)
        for what, values in (("ensemble", x), ("truth", y)):
            if not np.isfinite(values).all():
                raise InvalidValueError(
                    f"the {what}'s variable {name!r} has NaN or infinite values at {altitude:g} km"
                )
        records.append(score_members(x, y, weights))
    return records


# ---------------------------------------------------------------------- points
def point_scores(
    member_values: np.ndarray,
    obs: pd.DataFrame,
    *,
    seed: int = 0,
) -> dict[str, Any]:
    """Verify ensemble values at observation points against the observations.

    Args:
        member_values: ``(N, M)`` ensemble values at the ``M`` rows of ``obs``,
            in its row order (e.g. from an observation operator).
        obs: the observation table, columns ``variable``, ``value``, ``sigma``
            (observation error standard deviation, the value's units) and
            optionally ``station``; ``time, lat, lon, alt_km`` are not used here.
        seed: of the generator of observation-error perturbations.

    Returns:
        ``{"format", "version", "n_members", "seed", "obs_error", "variables":
        {name: {"units", "score_units", "count", "total": scores,
        "with_obs_error": scores, "stations": {station: {"count", "total",
        "with_obs_error"}}}}}``, ``stations`` only with a ``station`` column.

    Raises:
        ValueError: shapes that disagree, missing columns, NaN values or
            negative errors (the first bad row is named).
    """
    values = np.asarray(member_values, dtype=np.float64)
    observed, sigma = _check_points(values, obs)
    n, m = values.shape
    rng = np.random.default_rng(seed)
    perturbed = values + rng.standard_normal(values.shape) * sigma  # one draw per (member, row)
    names = obs["variable"].astype(str).to_numpy()
    stations = obs["station"].astype(str).to_numpy() if "station" in obs.columns else None
    variables: dict[str, Any] = {}
    for name in pd.unique(names):
        rows = names == name
        units = units_of(name)
        entry: dict[str, Any] = {
            "units": units,
            "score_units": _score_units(units),
            **_point_entry(values, perturbed, observed, rows),
        }
        if stations is not None:
            entry["stations"] = {
                str(station): _point_entry(
                    values, perturbed, observed, rows & (stations == station)
                )
                for station in pd.unique(stations[rows])
            }
        variables[str(name)] = entry
    return {
        "format": POINT_FORMAT,
        "version": FORMAT_VERSION,
        "n_members": n,
        "n_observations": m,
        "seed": seed,
        "obs_error": "members perturbed with N(0, sigma^2) (Candille and Talagrand 2008)",
        "variables": variables,
    }


def _check_points(values: np.ndarray, obs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``(observed values, sigma)`` of ``obs`` after checking them and ``values`` ``(N, M)``."""
    if values.ndim != 2:
        raise InvalidValueError(
            f"member_values must be (N members, M points), got shape {values.shape}"
        )
    missing = [c for c in REQUIRED_COLUMNS if c not in obs.columns]
    if missing:
        raise InvalidValueError(
            f"the observation table lacks column(s) {missing} (columns: {list(obs.columns)})"
        )
    m = values.shape[1]
    if m != len(obs):
        raise InvalidValueError(
            f"member_values has {m} points but the observation table {len(obs)} rows"
        )
    if m == 0:
        raise InvalidValueError("the observation table is empty")
    observed = obs["value"].to_numpy(dtype=np.float64)
    sigma = obs["sigma"].to_numpy(dtype=np.float64)
    for what, bad in (
        ("value is NaN or infinite", ~np.isfinite(observed)),
        ("sigma is NaN, infinite or negative", ~np.isfinite(sigma) | (sigma < 0)),
        ("a member value is NaN or infinite", ~np.isfinite(values).all(axis=0)),
    ):
        if bad.any():
            row = obs.index[int(np.argmax(bad))]
            raise InvalidValueError(f"observation row {row!r}: {what}")
    return observed, sigma


def _point_entry(
    values: np.ndarray, perturbed: np.ndarray, observed: np.ndarray, rows: np.ndarray
) -> dict[str, Any]:
    return {
        "count": int(rows.sum()),
        "total": _public(score_members(values[:, rows], observed[rows])),
        "with_obs_error": _public(score_members(perturbed[:, rows], observed[rows])),
    }


# ---------------------------------------------------------------------- table
def format_table(metrics: Mapping[str, Any], title: str | None = None) -> Table:
    """A :class:`rich.table.Table`: variables (rows) x total scores (columns).

    Takes the result of :func:`ensemble_scores` or :func:`point_scores`; for
    point scores each variable has a second row with the observation error.
    """
    if "variables" not in metrics:
        raise UnknownNameError(
            "metrics has no 'variables'; expected ensemble_scores or point_scores output"
        )
    points = metrics.get("format") == POINT_FORMAT
    default = f"{'point' if points else 'gridded'} scores, {metrics.get('n_members', '?')} members"
    table = Table(title=title or default, caption="SSR: spread-skill ratio, RI: reliability index")
    table.add_column("variable")
    table.add_column("units")
    if points:
        table.add_column("count", justify="right")
    for name in SCORE_NAMES:
        table.add_column(TABLE_HEADERS[name], justify="right", no_wrap=True)
    for name, entry in metrics["variables"].items():
        kinds = [("total", name)]
        if points:
            kinds.append(("with_obs_error", f"{name} + obs error"))
        for key, label in kinds:
            scores = entry[key]
            row = [label, entry["units"]]
            if points:
                row.append(str(entry["count"]))
            row += [f"{scores[s]:.3g}" for s in SCORE_NAMES]
            table.add_row(*row)
    return table
