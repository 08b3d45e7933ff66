"""Computing the fidelity of a diffusion prior: unconditional samples against held-out model data.

:func:`fidelity_report` compares a set of samples (a Dataset with dims
``member`` and/or ``time``, then ``altitude, latitude, longitude``) with
reference model data (dims ``time, altitude, latitude, longitude``) on the same
:class:`~genda.grid.Grid`. It does not care how the samples were made (a
``joint3d`` or ``layer2d`` prior, a baseline, another model's output), so the
same numbers answer "is this prior faithful?" for every strategy. What is
computed, per variable ``x`` and altitude level ``l``:

* moments: the area-weighted mean ``mu_l`` and standard deviation ``s_l`` of
  ``x`` over the samples and the sphere (reference: over time and the sphere),
  with the weights of :meth:`Grid.area_weights` (the statistics of
  :class:`~genda.normalization.Normalization`: population moments, ``1/n``).
  Compared as ``|mu_s - mu_r| / s_r`` and ``s_s / s_r``.
* kinetic-energy spectra ``E(l)`` of ``(u, v)`` at each level
  (:func:`~genda.evaluation.spectra.kinetic_energy_spectrum`, Boer 1983),
  averaged over samples, compared as ``E_s(l) / E_r(l) - 1`` for total
  wavenumbers ``1..T`` (``T`` the 2/3-rule truncation ``(W - 1) // 3`` unless
  given) and summarised by its largest magnitude over ``l``.
* vertical correlation: the ``(L, L)`` correlation matrix between levels of
  the anomalies ``x - m(level, lat, lon)`` from the per-point mean ``m`` (over
  the samples), pooled over samples and the sphere with the area weights;
  compared by the largest absolute entry of the difference of the matrices.
* tides (no acceptance flag): amplitude and phase of the diurnal and
  semidiurnal harmonics against altitude (:func:`~genda.evaluation.tides.tidal_harmonics`),
  for a data set only when it is a time series with a regular step that
  divides the day (hourly in practice, at most 3 h) over whole days. The
  amplitude at a level is the area mean of the pointwise amplitude, the phase
  (hour of the maximum, local solar time) that of the area- and
  amplitude-weighted mean of the local-time harmonic over each hemisphere
  (the migrating tide; hemispheres apart because antisymmetric modes would
  cancel). Member-only samples have no time to analyse: the report says so in
  its notes and carries no tidal numbers for them.

The acceptance criteria of the "Diffusion prior" issue are
:class:`~genda.evaluation.fidelity_checks.Check` records (value, bounds,
pass/fail) under :class:`~genda.evaluation.fidelity_checks.AcceptanceThresholds`:
spectra within +-20 % at every wavenumber up to the truncation, means within
0.1 reference std, std ratio in [0.9, 1.1], largest difference of the vertical
correlation at most 0.1 (maxima, unlike the means of
:mod:`genda.evaluation.structure`). The report and its records are
:mod:`genda.evaluation.fidelity_records`, its figures
:mod:`genda.evaluation.fidelity_plots`; this module computes.

Plain numpy and xarray rather than the ``scores`` library (which does the
ensemble scores, :mod:`genda.evaluation.scores`): the moments and
correlations are a few sums, written out so that
moments, correlations and spectra come from one read of a data set, in blocks
along its sample axis (lazy, dask-backed data sets are fine), with per-point
sums shifted by the first block's mean against cancellation. The tidal
analysis reads a time series once more, one variable and level at a time. The definitions follow the style of
google-research/weatherbench2 ``metrics.py``: stated on xarray data and tested
against brute-force computations (``tests/test_fidelity.py``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import xarray as xr

from genda.errors import InvalidValueError, UnknownNameError
from genda.evaluation.fidelity_checks import AcceptanceThresholds
from genda.evaluation.fidelity_records import (
    HARMONICS,
    CorrelationComparison,
    FidelityReport,
    Moments,
    SpectrumComparison,
    TideProfile,
    TideTable,
)
from genda.evaluation.spectra import kinetic_energy_spectrum
from genda.evaluation.tides import tidal_harmonics
from genda.grid import Grid, GridMismatchError

__all__ = ["FidelityReport", "fidelity_report"]

SPACE_DIMS: tuple[str, str, str] = ("altitude", "latitude", "longitude")
SAMPLE_DIMS: tuple[str, str] = ("member", "time")
"""Dimensions a sample set may run along (one or both), pooled for every statistic."""
MAX_TIDAL_STEP_HOURS = 3.0
"""Coarsest time step analysed for tides: 8 samples a day resolve the background band to 3.5 cpd."""
BLOCK_BYTES = 256 * 2**20
"""Default memory of one block of samples (float64, all variables) read at a time."""


def fidelity_report(
    samples: xr.Dataset,
    reference: xr.Dataset,
    grid: Grid,
    *,
    strategy: str | None = None,
    thresholds: AcceptanceThresholds | None = None,
    truncation: int | None = None,
    block_size: int | None = None,
) -> FidelityReport:
    """Compare unconditional ``samples`` with ``reference`` model data on ``grid``.

    Args:
        samples: variables of ``grid`` with dims ``(member and/or time, altitude,
            latitude, longitude)``, physical units.
        reference: the same variables with dims ``(time, altitude, latitude,
            longitude)`` (``member`` is accepted too), held out from training.
        grid: the grid both live on (checked; also gives the area weights).
        strategy: the caller's name for what made the samples, kept in the report.
        thresholds: acceptance criteria (default: the issue's).
        truncation: largest total wavenumber compared (default ``(W - 1) // 3``).
        block_size: fields read at a time along the sample axis (default: about
            :data:`BLOCK_BYTES` of float64).

    Returns:
        The :class:`FidelityReport`.

    Raises:
        KeyError: a variable of ``grid`` is missing.
        GridMismatchError: coordinates or dims do not match ``grid``.
        ValueError: fewer than 2 fields, or NaN / infinite values (the variable is named).
    """
    thresholds = thresholds if thresholds is not None else AcceptanceThresholds()
    sample_dims = _sample_dims(samples, grid, "samples")
    reference_dims = _sample_dims(reference, grid, "reference")
    truncation = _truncation(grid, truncation)
    notes: list[str] = []
    with_spectra = _with_spectra(grid, notes)
    stats_s = _statistics(
        samples, grid, sample_dims, "samples", with_spectra, truncation, block_size
    )
    stats_r = _statistics(
        reference, grid, reference_dims, "reference", with_spectra, truncation, block_size
    )
    moments = {
        name: Moments(stats_s.mean[name], stats_s.std[name], stats_r.mean[name], stats_r.std[name])
        for name in grid.variables
    }
    spectra = _spectra(stats_s, stats_r, truncation)
    correlation = _correlations(stats_s, stats_r, grid, notes)
    tides = _tides(
        {"reference": (reference, reference_dims), "samples": (samples, sample_dims)}, grid, notes
    )
    return FidelityReport(
        strategy=strategy,
        grid=grid,
        sample_dims=sample_dims,
        n_samples=stats_s.count,
        n_reference=stats_r.count,
        moments=moments,
        spectra=spectra,
        vertical_correlation=correlation,
        tides=tides,
        thresholds=thresholds,
        notes=tuple(notes),
    )


def _truncation(grid: Grid, truncation: int | None) -> int:
    """The largest total wavenumber compared: ``truncation`` checked, or ``(W - 1) // 3``."""
    if truncation is None:
        truncation = (grid.nlon - 1) // 3
    if not 1 <= truncation < min(grid.nlat, grid.nlon // 2 + 1):
        raise InvalidValueError(
            f"truncation {truncation} is not resolved by the grid ({grid.nlat} x {grid.nlon})"
        )
    return truncation


def _with_spectra(grid: Grid, notes: list[str]) -> bool:
    """Whether kinetic-energy spectra can be computed on ``grid``; why not goes to ``notes``."""
    if "u" not in grid.variables or "v" not in grid.variables:
        notes.append("spectra: the grid has no u and v; kinetic-energy spectra skipped")
        return False
    if grid.latitude_kind not in ("legendre-gauss", "equiangular"):
        notes.append(
            f"spectra: no spherical-harmonic transform on {grid.latitude_kind!r} latitudes; "
            "kinetic-energy spectra skipped"
        )
        return False
    return True


def _spectra(
    stats_s: _SetStatistics, stats_r: _SetStatistics, truncation: int
) -> SpectrumComparison | None:
    """Kinetic-energy spectra of samples against reference at wavenumbers ``1..truncation``."""
    if stats_s.spectrum is None or stats_r.spectrum is None:
        return None
    return SpectrumComparison(
        np.arange(1, truncation + 1), stats_s.spectrum[:, 1:], stats_r.spectrum[:, 1:]
    )


def _correlations(
    stats_s: _SetStatistics, stats_r: _SetStatistics, grid: Grid, notes: list[str]
) -> dict[str, CorrelationComparison]:
    """Vertical correlations of samples against reference; undefined ones noted in ``notes``."""
    correlation = {
        name: CorrelationComparison(stats_s.correlation[name], stats_r.correlation[name])
        for name in grid.variables
    }
    for name in grid.variables:
        if np.isnan(correlation[name].max_abs_difference):
            notes.append(
                f"vertical correlation of {name}: a level does not vary; correlation undefined"
            )
    return correlation


def _tides(
    sources: dict[str, tuple[xr.Dataset, tuple[str, ...]]], grid: Grid, notes: list[str]
) -> dict[str, TideTable]:
    """Tidal profiles per source ``(data set, sample dims)``; skipped ones noted in ``notes``."""
    tides: dict[str, TideTable] = {}
    for source, (ds, dims) in sources.items():
        axis = _tidal_time_axis(ds, dims)
        if isinstance(axis, str):
            notes.append(f"tides of the {source}: {axis}; tidal analysis skipped")
        else:
            tides[source] = _tide_profiles(ds, grid, dims, *axis)
    return tides


def _sample_dims(ds: xr.Dataset, grid: Grid, what: str) -> tuple[str, ...]:
    """The sample dims of ``ds`` (in :data:`SAMPLE_DIMS` order) after checking it against ``grid``."""
    missing = [name for name in grid.variables if name not in ds.data_vars]
    if missing:
        raise UnknownNameError(
            f"{what} lack variable(s) {missing} of the grid (present: {list(ds.data_vars)})"
        )
    grid.check_same(Grid.from_dataset(ds, grid.variables), what=what)
    found: tuple[str, ...] | None = None
    for name in grid.variables:
        dims = tuple(str(d) for d in ds[name].dims)
        extra = tuple(d for d in SAMPLE_DIMS if d in dims)
        if set(dims) != {*extra, *SPACE_DIMS} or not extra:
            raise GridMismatchError(
                f"{what} variable {name!r} has dims {dims}; expected {' and/or '.join(SAMPLE_DIMS)} "
                f"and {SPACE_DIMS}"
            )
        if found is not None and extra != found:
            raise GridMismatchError(
                f"{what} variable {name!r} runs along {extra}, the others along {found}"
            )
        found = extra
    assert found is not None  # a Grid has at least one variable
    count = math.prod(ds.sizes[d] for d in found)
    if count < 2:
        raise InvalidValueError(f"{what} need at least 2 fields along {found}, got {count}")
    return found


@dataclass(frozen=True)
class _SetStatistics:
    """Statistics of one data set: ``(L,)`` moments, ``(L, L)`` correlations, ``(L, T+1)`` spectrum."""

    count: int
    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]
    correlation: dict[str, np.ndarray]
    spectrum: np.ndarray | None


def _statistics(
    ds: xr.Dataset,
    grid: Grid,
    dims: tuple[str, ...],
    what: str,
    with_spectra: bool,
    truncation: int,
    block_size: int | None,
) -> _SetStatistics:
    """One pass over ``ds`` in blocks of fields ``(n, L, H, W)``.

    Per variable it accumulates, with ``y = x - K`` (``K`` the first block's
    per-point mean, against cancellation) and area weights ``w`` summing to 1
    over ``(H, W)``: ``S1 = sum_s y`` per point ``(L, H, W)`` and
    ``S2 = sum_{s,h,w} w y_l y_k`` ``(L, L)``. With ``N`` fields and ``m = S1 / N``:
    the per-point mean is ``K + m``; the overall mean ``mu = sum w (K + m)``; the
    variance ``diag(S2) / N + sum w (2 d m + d^2)`` with ``d = K - mu``; the
    pooled anomaly covariance ``S2 / N - sum w m_l m_k``.
    """
    levels, nlat, nlon = grid.nlevels, grid.nlat, grid.nlon
    weights = grid.area_weights() / nlon  # (H,): sums to 1 over (H, W)
    arrays = {
        name: ds[name].transpose(*dims, *SPACE_DIMS).data.reshape((-1, levels, nlat, nlon))
        for name in grid.variables
    }
    count = int(next(iter(arrays.values())).shape[0])
    if block_size is None:
        block_size = max(1, BLOCK_BYTES // (8 * len(arrays) * levels * nlat * nlon))
    if block_size < 1:
        raise InvalidValueError(f"block_size must be >= 1, got {block_size}")
    shift: dict[str, np.ndarray] = {}
    first: dict[str, np.ndarray] = {}
    cross: dict[str, np.ndarray] = {}
    energy: np.ndarray | None = None
    for start in range(0, count, block_size):
        stop = min(start + block_size, count)
        block: dict[str, np.ndarray] = {}
        for name, array in arrays.items():
            values = np.asarray(array[start:stop], dtype=np.float64)
            if not np.isfinite(values).all():
                raise InvalidValueError(
                    f"{what} variable {name!r} contains NaN or infinite values "
                    f"(fields {start}..{stop - 1} along {dims})"
                )
            block[name] = values
            if start == 0:
                shift[name] = values.mean(axis=0)
                first[name] = np.zeros((levels, nlat, nlon))
                cross[name] = np.zeros((levels, levels))
            y = values - shift[name]
            first[name] += y.sum(axis=0)
            cross[name] += np.tensordot(y * weights[:, None], y, axes=([0, 2, 3], [0, 2, 3]))
        if with_spectra:
            spectrum = kinetic_energy_spectrum(block["u"], block["v"], grid, truncation).sum(0)
            energy = spectrum if energy is None else energy + spectrum
    means, stds, correlations = {}, {}, {}
    for name in grid.variables:
        m = first[name] / count
        mean = np.einsum("lhw,h->l", shift[name] + m, weights)
        d = shift[name] - mean[:, None, None]
        variance = np.diagonal(cross[name]) / count + np.einsum(
            "lhw,h->l", 2.0 * d * m + d * d, weights
        )
        covariance = cross[name] / count - np.einsum("lhw,khw,h->lk", m, m, weights)
        means[name] = mean
        stds[name] = np.sqrt(np.clip(variance, 0.0, None))
        correlations[name] = _correlation(0.5 * (covariance + covariance.T))
    return _SetStatistics(
        count, means, stds, correlations, None if energy is None else energy / count
    )


def _correlation(covariance: np.ndarray) -> np.ndarray:
    """``(L, L)`` covariance -> correlation; rows and columns of a constant level are NaN."""
    scale = np.sqrt(np.clip(np.diagonal(covariance), 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        correlation = covariance / np.outer(scale, scale)
    correlation = np.where(np.outer(scale, scale) > 0, correlation, np.nan)
    correlation = np.clip(correlation, -1.0, 1.0)
    np.fill_diagonal(correlation, np.where(scale > 0, 1.0, np.nan))
    return correlation


def _tidal_time_axis(ds: xr.Dataset, dims: tuple[str, ...]) -> tuple[float, float] | str:
    """``(hours per step, UTC hour of the first step)`` of a usable time axis, else why not."""
    if "time" not in dims:
        return f"no time axis (fields along {dims})"
    times = ds["time"].values
    if times.size < 2:
        return f"{times.size} time step(s) are no series"
    if np.issubdtype(times.dtype, np.datetime64):
        times = times.astype("datetime64[ns]")
        steps = np.diff(times).astype(np.int64) / 1e9
        day = times[0].astype("datetime64[D]").astype("datetime64[ns]")
        start_hour = float((times[0] - day) / np.timedelta64(1, "h"))
    elif times.dtype == object and hasattr(times[0], "hour"):  # cftime: model calendars
        steps = np.array([(b - a).total_seconds() for a, b in itertools.pairwise(times)])
        t0 = times[0]
        start_hour = t0.hour + t0.minute / 60 + t0.second / 3600
    else:
        return f"the time coordinate (dtype {times.dtype}) holds no dates"
    step = float(steps[0]) / 3600.0
    if step <= 0 or not np.allclose(steps, steps[0], rtol=0, atol=1e-3):
        return "the time steps are not regular"
    per_day = 24.0 / step
    if step > MAX_TIDAL_STEP_HOURS or abs(per_day - round(per_day)) > 1e-6:
        return f"a time step of {step:g} h does not divide a day into >= 8 samples"
    days = times.size / round(per_day)
    if abs(days - round(days)) > 1e-9 or days < 2:
        return f"{times.size} steps of {step:g} h are not a whole number (>= 2) of days"
    return step, start_hour


def _tide_profiles(
    ds: xr.Dataset, grid: Grid, dims: tuple[str, ...], step_hours: float, start_hour: float
) -> TideTable:
    """Tidal profiles of every variable, one level at a time (series ``(T, [M,] H, W)`` in memory)."""
    weights = grid.area_weights()
    # tidal_harmonics counts time from 00 UTC; a later start shifts local time like longitude
    longitude = grid.longitude + 15.0 * start_hour
    others = tuple(d for d in dims if d != "time")
    hemispheres = (grid.latitude > 0, grid.latitude < 0)
    table: TideTable = {}
    for name in grid.variables:
        amplitude = {n: np.empty(grid.nlevels) for n in HARMONICS}
        phases = {n: np.full((2, grid.nlevels), np.nan) for n in HARMONICS}
        for level in range(grid.nlevels):
            da = ds[name].isel(altitude=level).transpose("time", *others, "latitude", "longitude")
            analysis = tidal_harmonics(
                np.asarray(da.values, dtype=np.float64), step_hours, HARMONICS, longitude
            )
            for n in HARMONICS:
                period = 24.0 / n
                amp = analysis.amplitude[n].reshape(-1, grid.nlat, grid.nlon)
                phase = analysis.phase_hours[n].reshape(amp.shape)
                amplitude[n][level] = np.einsum("mhw,h->", amp, weights) / (
                    amp.shape[0] * grid.nlon
                )
                local = amp * np.exp(2j * np.pi * phase / period)
                for i, band in enumerate(hemispheres):
                    total = np.einsum("mhw,h->", local[:, band], weights[band])
                    size = np.einsum("mhw,h->", amp[:, band], weights[band])
                    if band.any() and abs(total) > 1e-9 * size:
                        phases[n][i, level] = (np.angle(total) * period / (2 * np.pi)) % period
        table[name] = {n: TideProfile(amplitude[n], phases[n][0], phases[n][1]) for n in HARMONICS}
    return table
