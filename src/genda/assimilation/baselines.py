"""Classical baselines: a climatological ensemble, optimal interpolation, EnOI, a climatological EnKF.

The diffusion posterior is judged against what a classical system gets from
the same training archive and the same observations (docs/baselines.md):

* **climatology**: ``K`` states of the archive drawn at random times, away
  from the window (:func:`draw_climatology`); or drawn only among the states
  within an hour of the window's time of day (:func:`hour_matched_indices`),
  whose migrating tides then share the window's phase;
* **optimal interpolation (OI)**: background ``x_b`` = the mean of those
  states, background covariance ``B`` = their sample covariance
  Schur-multiplied by a localisation ``rho`` (Gaspari & Cohn 1999), and the
  analysis ``x_a = x_b + B H^T (H B H^T + R)^{-1} (y - H x_b)``
  (:func:`oi_analysis`);
* **EnKF with a climatological ensemble** (stochastic, perturbed
  observations; Burgers et al. 1998, Evensen 2009; "ensemble OI" when the
  ensemble is climatological, Oke et al. 2002, Evensen 2003): every member
  ``x_k + B H^T (H B H^T + R)^{-1} (y + e_k - H x_k)``, ``e_k ~ N(0, R)``,
  with the same localised gain (:func:`enkf_analysis`);
* **EnOI**: the OI analysis whose ``B`` comes from every eligible state
  (of any hour, or hour-matched) rather than ``K`` of them.

``B`` (``N x N``, ``N = V L H W``) is never formed. With ``X'`` the ``N x K``
anomalies, the gain needs only

    B H^T   = (X' (H X')^T / (K - 1)) o rho(grid points, observations)   (N x M)
    H B H^T = ((H X')(H X')^T / (K - 1)) o rho(observations, observations) (M x M)

and ``B H^T`` is itself built and applied one (variable, level) block of
grid points at a time, so memory grows with ``H W x M``, not ``N x M``.
The localisation between a grid point and an observation uses the
observation's location (``lat``, ``lon``, ``alt_km``); it is the product of
a Gaspari-Cohn function of great-circle distance and one of altitude
distance, the same for every pair of variables (cross-variable covariances
are kept as sampled). Solves are in float64.

References:
    Gaspari, G. and Cohn, S. E. (1999), Construction of correlation functions
    in two and three dimensions, Q. J. R. Meteorol. Soc. 125, 723-757, eq. (4.10).
    Burgers, G., van Leeuwen, P. J. and Evensen, G. (1998), Analysis scheme in
    the ensemble Kalman filter, Mon. Wea. Rev. 126, 1719-1724.
    Evensen, G. (2003), The Ensemble Kalman Filter: theoretical formulation and
    practical implementation, Ocean Dynamics 53, 343-367 (section 4.4, EnOI).
    Evensen, G. (2009), Data Assimilation: The Ensemble Kalman Filter, 2nd ed., Springer.
    Oke, P. R. et al. (2002), Assimilation of surface velocity data into a
    primitive equation coastal ocean model, J. Geophys. Res. 107, 3122.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
import scipy.linalg
import xarray as xr

from genda.constants import EARTH_RADIUS_M
from genda.errors import InvalidValueError
from genda.grid import Grid
from genda.observations.operators import ObservationOperator
from genda.times import iso

EARTH_RADIUS_KM = EARTH_RADIUS_M / 1000.0

BASELINE_METHODS: tuple[str, ...] = ("enkf", "enoi", "oi", "climatology")
"""The baselines, by the name written to ``genda_method``."""

CLIMATOLOGY_SIZE = 200
"""``K`` of ``oi`` and ``enkf`` when their states are of any hour and no size is given."""

HOUR_MATCH_HOURS = 1.0
"""Half-width (hours) of the time-of-day interval of hour-matched states."""

_MEMBER_CHUNK = 64
"""Members per gather when applying ``H``: bounds the ``(chunk, M, stencil)`` temporary."""


# ---------------------------------------------------------------------------- localisation
def gaspari_cohn(distance: np.ndarray | float, half_width: float) -> np.ndarray:
    """Gaspari & Cohn (1999, eq. 4.10) fifth-order piecewise rational function.

    A compactly supported stand-in for a Gaussian of width about ``half_width``:
    1 at distance 0, exactly 0 at and beyond ``2 * half_width``, twice
    continuously differentiable in between.

    Args:
        distance: distances (any shape, same unit as ``half_width``; the sign is ignored).
        half_width: ``c`` of the paper, > 0; ``math.inf`` means no localisation (all ones).

    Returns:
        Values in ``[0, 1]``, float64, the shape of ``distance``.
    """
    if not half_width > 0:
        raise InvalidValueError(f"the localisation half-width must be > 0, got {half_width}")
    r = np.abs(np.asarray(distance, dtype=np.float64)) / half_width
    out = np.zeros_like(r)
    inner = r <= 1.0
    outer = (r > 1.0) & (r < 2.0)
    ri = r[inner]
    out[inner] = (((-0.25 * ri + 0.5) * ri + 0.625) * ri - 5.0 / 3.0) * ri**2 + 1.0
    ro = r[outer]
    out[outer] = (
        ((((ro / 12.0 - 0.5) * ro + 0.625) * ro + 5.0 / 3.0) * ro - 5.0) * ro
        + 4.0
        - 2.0 / (3.0 * ro)
    )
    # Round-off near r = 2 can leave -1e-16: keep rho a proper taper.
    return np.clip(out, 0.0, 1.0)


def great_circle_km(
    lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray
) -> np.ndarray:
    """Great-circle distance in km between points in degrees (broadcasting).

    Haversine form: accurate at short distances, where ``arccos`` of a dot
    product loses half its digits.
    """
    phi1, phi2 = np.deg2rad(lat1), np.deg2rad(lat2)
    dphi = phi2 - phi1
    dlam = np.deg2rad(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dphi / 2) ** 2 + np.cos(phi1) * np.cos(phi2) * np.sin(dlam / 2) ** 2
    return 2.0 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


@dataclass(frozen=True)
class Localization:
    """Separable Gaspari-Cohn localisation: horizontal times vertical.

    Attributes:
        horizontal_km: half-width ``c`` of great-circle distance (support ``2 c``).
        vertical_km: half-width ``c`` of log-pressure altitude distance.
            Either may be ``math.inf``: no localisation in that direction.

    Twice each half-width must be well above the grid spacing: an observation
    updates the grid only through ``rho(grid point, observation)``, so grid
    points that its operator reads but the taper cuts off leave the analysis
    unable to fit it (docs/baselines.md).
    """

    horizontal_km: float = 1500.0
    vertical_km: float = 15.0

    def __post_init__(self) -> None:
        for name in ("horizontal_km", "vertical_km"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value > 0):
                raise InvalidValueError(f"localisation {name} must be a number > 0, got {value!r}")

    def grid_to_obs(self, grid: Grid, obs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Factors of ``rho(grid point, observation)``.

        Returns:
            ``(horizontal (H*W, M), vertical (L, M))``: ``rho`` of the point
            ``(v, l, i, j)`` and observation ``m`` is
            ``horizontal[i * W + j, m] * vertical[l, m]``, whatever ``v``.
        """
        lat, lon = np.meshgrid(grid.latitude, grid.longitude, indexing="ij")
        olat, olon, oalt = _locations(obs)
        distance = great_circle_km(lat.reshape(-1, 1), lon.reshape(-1, 1), olat, olon)
        horizontal = gaspari_cohn(distance, self.horizontal_km)
        vertical = gaspari_cohn(grid.altitude[:, None] - oalt[None, :], self.vertical_km)
        return horizontal, vertical

    def obs_to_obs(self, obs: pd.DataFrame) -> np.ndarray:
        """``(M, M)`` ``rho`` between the observations' locations."""
        lat, lon, alt = _locations(obs)
        distance = great_circle_km(lat[:, None], lon[:, None], lat[None, :], lon[None, :])
        return gaspari_cohn(distance, self.horizontal_km) * gaspari_cohn(
            alt[:, None] - alt[None, :], self.vertical_km
        )


NO_LOCALIZATION = Localization(math.inf, math.inf)
"""The sample covariance as it is (for tests and for very large ensembles)."""

DEFAULT_LOCALIZATION: dict[tuple[str, bool], Localization] = {
    # Tuned by the multi-window OSSE on windows that are not scored (docs/assimilation.md,
    # "Many windows, tuned baselines"; benchmarks/results/osse-windows-cpu.json, "tuning"):
    # the half-widths of 500-100000 km x 5-1000 km with the lowest ensemble-mean RMSE, on the
    # default 32 x 64 x 8 grid and a 120-day archive. Of any hour (oi, enkf with K = 200, enoi
    # with every state) the best is in effect no localisation (100000 km / 1000 km: the taper
    # is above 0.93 anywhere on the globe between 50 and 120 km); hour-matched states (about
    # 350) want
    # 3000 km and 15 km (enoi) or 30 km (enkf). oi of hour-matched states was not tuned on
    # its own: with its default K (every hour-matched state) it is the hour-matched enoi.
    ("oi", False): Localization(100000.0, 1000.0),
    ("enkf", False): Localization(100000.0, 1000.0),
    ("enoi", False): Localization(100000.0, 1000.0),
    ("oi", True): Localization(3000.0, 15.0),
    ("enoi", True): Localization(3000.0, 15.0),
    ("enkf", True): Localization(3000.0, 30.0),
}
"""Default localisation of the analysis baselines, by ``(method, hour_matched)``."""


def _locations(obs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lat, lon, alt_km)`` of the rows, ``(M,)`` each, float64."""
    return (
        obs["lat"].to_numpy(dtype=np.float64),
        obs["lon"].to_numpy(dtype=np.float64),
        obs["alt_km"].to_numpy(dtype=np.float64),
    )


# ---------------------------------------------------------------------------- climatology
@dataclass(frozen=True)
class ClimatologicalDraw:
    """States of an archive drawn at random times.

    Attributes:
        states: ``(K, V, L, H, W)`` float32, physical units, in draw order.
        times: ``(K,)`` datetime64[ns], the archive time of each state.
    """

    states: np.ndarray
    times: np.ndarray


def _check_draw(
    times: np.ndarray, time: np.datetime64, size: int | None, minimum: int, exclude_hours: float
) -> tuple[np.ndarray, np.datetime64, np.ndarray]:
    """Checked ``(times as datetime64[ns], centre, mask of times more than exclude_hours away)``."""
    if size is not None and size < 1:
        raise InvalidValueError(
            f"the climatological ensemble needs at least one state, got size={size}"
        )
    if minimum < 1:
        raise InvalidValueError(f"minimum must be >= 1, got {minimum}")
    if not exclude_hours >= 0:
        raise InvalidValueError(f"exclude_hours must be >= 0, got {exclude_hours}")
    t = np.asarray(times).astype("datetime64[ns]")
    if np.isnat(t).any():
        raise InvalidValueError(
            "the archive has missing (NaT) times; cannot tell which are near the window"
        )
    centre = np.datetime64(time, "ns")
    away = np.abs((t - centre).astype(np.int64)) / 3.6e12 > exclude_hours
    return t, centre, away


def climatology_indices(
    times: np.ndarray,
    time: np.datetime64,
    size: int | None,
    rng: np.random.Generator,
    exclude_hours: float = 48.0,
    *,
    minimum: int = 1,
) -> np.ndarray:
    """Indices into ``times`` of ``size`` distinct states, drawn at random away from ``time``.

    Times with ``|t - time| <= exclude_hours`` are never drawn, so that the
    weather of the window (the truth, when the archive holds it) does not
    leak into the ensemble. The draw is the first ``size`` entries of a random
    permutation of the eligible indices, so a smaller ``size`` with the same
    generator state gives a prefix of a larger one (the climatology baseline
    is then the background of the EnKF's members).

    Args:
        times: ``(T,)`` the archive's times (datetime64).
        time: the window's centre.
        size: how many states, >= 1; ``None``: every eligible state.
        rng: the generator (seeded by the caller).
        exclude_hours: half-width of the excluded interval, >= 0.
        minimum: with ``size=None``, the fewest eligible states accepted.

    Returns:
        ``(size,)`` int64 (``(E,)`` for every one of ``E`` eligible states), in draw order.

    Raises:
        ValueError: fewer than ``size`` (or ``minimum``) eligible times.
    """
    t, centre, away = _check_draw(times, time, size, minimum, exclude_hours)
    eligible = np.flatnonzero(away)
    needed = minimum if size is None else size
    if eligible.size < needed:
        raise InvalidValueError(
            f"only {eligible.size} of the archive's {t.size} times lie more than {exclude_hours:g} h "
            f"from the window at {iso(centre)}; {needed} are needed "
            "(use a longer archive, a smaller climatology size or a smaller exclude_hours)"
        )
    return rng.permutation(eligible)[:size].astype(np.int64)


def hour_matched_indices(
    times: np.ndarray,
    time: np.datetime64,
    rng: np.random.Generator,
    size: int | None = None,
    *,
    exclude_hours: float = 48.0,
    within_hours: float = HOUR_MATCH_HOURS,
    minimum: int = 1,
) -> np.ndarray:
    """Indices into ``times`` of states at the window's time of day, away from the window.

    A state is eligible when its time of day (UTC) is within ``within_hours``
    of ``time``'s, across midnight (23:30 is 1 h from 00:30), and
    ``|t - time| > exclude_hours`` (as in :func:`climatology_indices`). The
    migrating tides, which dominate the MLT, are locked to the time of day, so
    these states share their phase with the window's and their sample
    covariance holds the day-to-day variability rather than the tides. The
    draw is the first ``size`` entries of a random permutation of the
    eligible indices: a smaller ``size`` with the same generator state gives
    a prefix of a larger one.

    Args:
        times: ``(T,)`` the archive's times (datetime64).
        time: the window's centre.
        rng: the generator (seeded by the caller).
        size: how many states, >= 1; ``None``: every eligible state.
        exclude_hours: archive times this close to ``time`` are never drawn, >= 0.
        within_hours: half-width of the time-of-day interval, in ``[0, 12]``.
        minimum: with ``size=None``, the fewest eligible states accepted.

    Returns:
        ``(size,)`` int64 (``(E,)`` for every one of ``E`` eligible states), in draw order.

    Raises:
        ValueError: fewer than ``size`` (or ``minimum``) eligible times, naming the
            time of day and the counts.
    """
    if not 0 <= within_hours <= 12:
        raise InvalidValueError(f"within_hours must lie in [0, 12], got {within_hours}")
    t, centre, away = _check_draw(times, time, size, minimum, exclude_hours)
    day = 86_400 * 10**9  # ns
    time_of_day = (t - t.astype("datetime64[D]")).astype(np.int64)
    centre_of_day = int((centre - centre.astype("datetime64[D]")).astype(np.int64))
    apart = np.abs(time_of_day - centre_of_day) % day
    near = np.minimum(apart, day - apart) <= round(within_hours * 3.6e12)
    eligible = np.flatnonzero(near & away)
    needed = minimum if size is None else size
    if eligible.size < needed:
        clock = str(np.datetime_as_string(centre, unit="m"))[11:]
        raise InvalidValueError(
            f"only {eligible.size} of the archive's {t.size} times lie within "
            f"{within_hours:g} h of the window's time of day ({clock} UTC) and more than "
            f"{exclude_hours:g} h from the window at {iso(centre)}; "
            f"{needed} are needed (use an archive of more days, fewer states, a smaller "
            "exclude_hours, or states of any hour)"
        )
    return rng.permutation(eligible)[:size].astype(np.int64)


def draw_climatology(
    ds: xr.Dataset,
    time: np.datetime64,
    size: int | None,
    rng: np.random.Generator,
    *,
    exclude_hours: float = 48.0,
    hour_matched: bool = False,
    minimum: int = 1,
    grid: Grid | None = None,
) -> ClimatologicalDraw:
    """``size`` states of an archive at random times away from ``time``.

    The times are those of :func:`climatology_indices` or, with
    ``hour_matched``, of :func:`hour_matched_indices` (within
    :data:`HOUR_MATCH_HOURS` of the window's time of day); they are chosen
    and checked before any state is read.

    Args:
        ds: an archive in genda's conventions (``genda.storage.open_archive``):
            dims ``time, altitude, latitude, longitude``, with time values.
        time: the window's centre.
        size: ``K``; ``None``: every eligible state.
        rng: the generator (seeded by the caller: the draw is reproducible).
        exclude_hours: times within this many hours of ``time`` are not drawn.
        hour_matched: draw only states near the window's time of day.
        minimum: with ``size=None``, the fewest eligible states accepted.
        grid: the grid to read (default: the archive's, ``Grid.from_dataset``).

    Returns:
        The states ``(K, V, L, H, W)`` float32 and their times.
    """
    if "time" not in ds.coords or ds["time"].size == 0:
        raise InvalidValueError("the archive has no time values to draw climatological states from")
    if not np.issubdtype(ds["time"].dtype, np.datetime64):
        raise InvalidValueError(
            f"the archive's time coordinate has dtype {ds['time'].dtype}, not datetime64 "
            "(non-standard calendars are not supported here)"
        )
    grid = grid or Grid.from_dataset(ds)
    times = ds["time"].values
    if hour_matched:
        drawn = hour_matched_indices(
            times, time, rng, size, exclude_hours=exclude_hours, minimum=minimum
        )
    else:
        drawn = climatology_indices(times, time, size, rng, exclude_hours, minimum=minimum)
    # Read in time order (contiguous chunks), then put back in draw order.
    order = np.argsort(drawn, kind="stable")
    fields = grid.tensor_from_dataset(ds.isel(time=drawn[order])).numpy()
    states = np.empty_like(fields, dtype=np.float32)
    states[order] = fields
    if not np.all(np.isfinite(states)):
        raise InvalidValueError("the drawn archive states contain NaN or infinite values")
    return ClimatologicalDraw(states, np.asarray(times[drawn], dtype="datetime64[ns]"))


# ---------------------------------------------------------------------------- analysis
@dataclass(frozen=True)
class Analysis:
    """The result of :func:`localized_analysis`.

    Attributes:
        background: ``(V, L, H, W)`` float64, the climatological mean ``x_b``.
        mean: ``(V, L, H, W)`` float64, the OI analysis ``x_a``.
        members: ``(n, V, L, H, W)`` float32, the EnKF members (``n`` may be 0).
    """

    background: np.ndarray
    mean: np.ndarray
    members: np.ndarray


def _apply_operator(operator: ObservationOperator, flat: np.ndarray) -> np.ndarray:
    """``H x`` for ``flat (K, N)`` -> ``(K, M)`` float64, a chunk of members at a time."""
    index = operator.index.numpy()
    weight = operator.weight.numpy().astype(np.float64)
    out = np.empty((flat.shape[0], operator.n_obs), dtype=np.float64)
    for start in range(0, flat.shape[0], _MEMBER_CHUNK):
        chunk = flat[start : start + _MEMBER_CHUNK]
        out[start : start + _MEMBER_CHUNK] = np.einsum(
            "kms,ms->km", chunk[:, index].astype(np.float64), weight
        )
    return out


def _solver(s: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """``b -> S^{-1} b`` for the symmetric innovation covariance ``S``.

    Cholesky when ``S`` is positive definite, as it is whenever ``rho`` is a
    proper correlation; a Gaspari-Cohn taper of great-circle (rather than
    chordal) distance is not guaranteed to be one, so LU is the fallback.
    """
    try:
        factor = scipy.linalg.cho_factor(s, lower=True)
    except np.linalg.LinAlgError:
        lu = scipy.linalg.lu_factor(s)
        return lambda b: scipy.linalg.lu_solve(lu, b)
    return lambda b: scipy.linalg.cho_solve(factor, b)


def _square_root(covariance: np.ndarray) -> np.ndarray:
    """``L`` with ``L L^T = covariance``: Cholesky, or for a covariance that rounding has
    left a little indefinite, the eigenvectors scaled by the clamped eigenvalues' roots."""
    try:
        return np.linalg.cholesky(covariance)
    except np.linalg.LinAlgError:
        values, vectors = np.linalg.eigh(0.5 * (covariance + covariance.T))
        return vectors * np.sqrt(np.clip(values, 0.0, None))


def _check_analysis_inputs(
    states: np.ndarray, grid: Grid, members: int, rng: np.random.Generator | None
) -> None:
    """Raise :class:`InvalidValueError` unless :func:`localized_analysis` can use its inputs."""
    grid.check_shape(states.shape, what="climatological states")
    if states.ndim != 5:
        raise InvalidValueError(f"states must be (K, V, L, H, W), got shape {states.shape}")
    _check_ensemble(states.shape[0], members, rng)


def _check_ensemble(k: int, members: int, rng: np.random.Generator | None) -> None:
    """Raise :class:`InvalidValueError` unless ``k`` states can update ``members`` of them."""
    if k < 2:
        raise InvalidValueError(f"a sample covariance needs at least 2 states, got {k}")
    if not 0 <= members <= k:
        raise InvalidValueError(f"members must lie in [0, K = {k}], got {members}")
    if members > 0 and rng is None:
        raise InvalidValueError(
            "the EnKF members need a random generator for their perturbed observations"
        )


def localized_analysis(
    states: np.ndarray,
    obs: pd.DataFrame,
    grid: Grid,
    *,
    members: int = 0,
    rng: np.random.Generator | None = None,
    localization: Localization | None = None,
) -> Analysis:
    """OI analysis and perturbed-observation EnKF members from one localised gain.

    The gain ``B H^T (H B H^T + R)^{-1}`` comes from all ``K`` states; the
    EnKF updates the first ``members`` of them (in the order given, a random
    order for :func:`draw_climatology`), each with its own perturbed
    observations ``y + e_k``, ``e_k ~ N(0, R)``. The rest would be updated
    only to be thrown away.

    Args:
        states: ``(K, V, L, H, W)`` climatological states, physical units, ``K >= 2``.
        obs: a validated observation table (``M`` rows) on ``grid``.
        grid: the states' grid.
        members: EnKF members to return, ``0 <= members <= K``.
        rng: draws the perturbations; required when ``members > 0``.
        localization: the taper (default :class:`Localization()`).

    Returns:
        The background mean, the OI mean and the EnKF members (:class:`Analysis`).
    """
    states = np.asarray(states)
    _check_analysis_inputs(states, grid, members, rng)
    k = states.shape[0]
    operator = ObservationOperator.from_table(obs, grid)
    flat = states.reshape(k, -1)
    return localized_update(
        flat,
        _apply_operator(operator, flat),
        obs,
        grid,
        members=members,
        rng=rng,
        localization=localization,
    )


class PointLayout(Protocol):
    """Where the values of a state vector lie: ``shape = (V, L, H, W)`` over the
    ``latitude`` ``(H,)``, ``longitude`` ``(W,)`` (degrees) and ``altitude`` ``(L,)``
    (km) a :class:`~genda.grid.Grid` has (or a model's layers)."""

    @property
    def shape(self) -> tuple[int, int, int, int]: ...

    latitude: np.ndarray
    longitude: np.ndarray
    altitude: np.ndarray


def localized_update(
    flat: np.ndarray,
    hx: np.ndarray,
    obs: pd.DataFrame,
    layout: PointLayout,
    *,
    members: int = 0,
    rng: np.random.Generator | None = None,
    localization: Localization | None = None,
    error_covariance: np.ndarray | None = None,
) -> Analysis:
    """:func:`localized_analysis` of states given with their observed values ``H x``.

    The state need not be the fields the observations see: a forecast
    model's prognostic variables on its own layers are updated with the
    ensemble's covariances with ``H`` of its output (a cycled EnKF,
    :mod:`genda.assimilation.cycled_enkf`).

    Args:
        flat: ``(K, N)`` states, ``N = V L H W`` in ``layout``'s order.
        hx: ``(K, M)`` the states' values at the observations.
        obs: the ``M`` observations (``value``, ``sigma``, ``lat``, ``lon``, ``alt_km``).
        layout: where the ``N`` values lie (localisation).
        members, rng, localization: as :func:`localized_analysis`.
        error_covariance: ``(M, M)`` the observations' error covariance ``R``, for
            errors that are correlated (default ``diag(sigma^2)``); the perturbed
            observations are drawn from it.
    """
    k = flat.shape[0]
    nvar, nlev, nlat, nlon = layout.shape
    if flat.shape != (k, nvar * nlev * nlat * nlon) or hx.shape != (k, len(obs)):
        raise InvalidValueError(
            f"states {flat.shape} and observed values {hx.shape} do not match {k} states of "
            f"{layout.shape} and {len(obs)} observations"
        )
    _check_ensemble(k, members, rng)
    localization = localization or Localization()
    y = obs["value"].to_numpy(dtype=np.float64)
    sigma = obs["sigma"].to_numpy(dtype=np.float64)
    m = len(obs)
    # Background mean in float64: a float32 sum over hundreds of ~200 K states loses digits.
    x_b = flat.mean(axis=0, dtype=np.float64)
    hx_b = hx.mean(axis=0)
    hx_anomaly = hx - hx_b  # (K, M), (H X')^T

    rho_h, rho_v = localization.grid_to_obs(layout, obs)  # (H*W, M), (L, M)
    hbh = (hx_anomaly.T @ hx_anomaly) / (k - 1) * localization.obs_to_obs(obs)
    if error_covariance is None:
        error_covariance = np.diag(sigma**2)
    elif error_covariance.shape != (m, m):
        raise InvalidValueError(
            f"an error covariance of {error_covariance.shape} for {m} observations"
        )
    solve = _solver(hbh + error_covariance)

    # Right-hand sides: the mean's innovation, then one perturbed innovation per member.
    innovations = np.empty((m, 1 + members), dtype=np.float64)
    innovations[:, 0] = y - hx_b
    if members and rng is not None:
        draws = rng.standard_normal((members, m))
        if np.count_nonzero(error_covariance - np.diag(np.diag(error_covariance))):
            perturbations = draws @ _square_root(error_covariance).T  # e_k ~ N(0, R)
        else:  # the diagonal R of independent errors, as drawn before R could be given
            perturbations = draws * np.sqrt(np.diag(error_covariance))
        innovations[:, 1:] = (y + perturbations - hx[:members]).T
    weights = solve(innovations)  # (M, 1 + members)

    mean = x_b.copy()
    updated = np.empty((members, flat.shape[1]), dtype=np.float32)
    block = nlat * nlon
    for var in range(nvar):
        for level in range(nlev):
            rows = slice((var * nlev + level) * block, (var * nlev + level + 1) * block)
            anomaly = flat[:, rows].astype(np.float64) - x_b[rows]  # (K, H*W)
            gain = (anomaly.T @ hx_anomaly) / (k - 1)  # (H*W, M) block of B H^T, unlocalised
            gain *= rho_h * rho_v[level]
            increments = gain @ weights  # (H*W, 1 + members)
            mean[rows] += increments[:, 0]
            if members:
                updated[:, rows] = (flat[:members, rows] + increments[:, 1:].T).astype(np.float32)
    shape = tuple(layout.shape)
    return Analysis(x_b.reshape(shape), mean.reshape(shape), updated.reshape(members, *shape))


def oi_analysis(
    states: np.ndarray,
    obs: pd.DataFrame,
    grid: Grid,
    *,
    localization: Localization | None = None,
) -> np.ndarray:
    """The OI analysis ``x_a`` ``(V, L, H, W)`` float64 (:func:`localized_analysis`)."""
    return localized_analysis(states, obs, grid, localization=localization).mean


def enkf_analysis(
    states: np.ndarray,
    obs: pd.DataFrame,
    grid: Grid,
    members: int,
    rng: np.random.Generator,
    *,
    localization: Localization | None = None,
) -> np.ndarray:
    """``(members, V, L, H, W)`` float32 stochastic EnKF members (:func:`localized_analysis`)."""
    if members < 1:
        raise InvalidValueError(f"members must be >= 1, got {members}")
    return localized_analysis(
        states, obs, grid, members=members, rng=rng, localization=localization
    ).members


__all__: Sequence[str] = [
    "BASELINE_METHODS",
    "CLIMATOLOGY_SIZE",
    "DEFAULT_LOCALIZATION",
    "HOUR_MATCH_HOURS",
    "NO_LOCALIZATION",
    "Analysis",
    "ClimatologicalDraw",
    "Localization",
    "PointLayout",
    "climatology_indices",
    "draw_climatology",
    "enkf_analysis",
    "gaspari_cohn",
    "great_circle_km",
    "hour_matched_indices",
    "localized_analysis",
    "localized_update",
    "oi_analysis",
]
