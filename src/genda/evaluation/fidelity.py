"""Fidelity of a diffusion prior: unconditional samples against held-out model data.

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

The acceptance criteria of the "Diffusion prior" issue are :class:`Check`
records (value, bounds, pass/fail) under :class:`AcceptanceThresholds`:
spectra within +-20 % at every wavenumber up to the truncation, means within
0.1 reference std, std ratio in [0.9, 1.1], vertical-correlation error at most
0.1. :func:`compare_strategies` puts the reports of several strategies side by
side.

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
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from matplotlib import colormaps

from genda.errors import InvalidValueError, UnknownNameError
from genda.evaluation.plots import file_stem, hide_unused, new_figure, panel_grid, save_figure
from genda.evaluation.spectra import kinetic_energy_spectrum
from genda.evaluation.tides import tidal_harmonics
from genda.grid import VARIABLES, Grid, GridMismatchError

__all__ = [
    "CRITERIA",
    "AcceptanceThresholds",
    "Check",
    "CorrelationComparison",
    "FidelityReport",
    "Moments",
    "SpectrumComparison",
    "TideProfile",
    "compare_strategies",
    "fidelity_report",
]

SPACE_DIMS: tuple[str, str, str] = ("altitude", "latitude", "longitude")
SAMPLE_DIMS: tuple[str, str] = ("member", "time")
"""Dimensions a sample set may run along (one or both), pooled for every statistic."""
CRITERIA: tuple[str, ...] = ("spectrum", "mean", "std_ratio", "vertical_correlation")
SPECTRUM_VARIABLE = "kinetic_energy"
"""The ``variable`` of spectral checks (the spectrum is one of ``(u, v)`` together)."""
HARMONICS: tuple[int, ...] = (1, 2)
MAX_TIDAL_STEP_HOURS = 3.0
"""Coarsest time step analysed for tides: 8 samples a day resolve the background band to 3.5 cpd."""
BLOCK_BYTES = 256 * 2**20
"""Default memory of one block of samples (float64, all variables) read at a time."""
FORMAT = "genda-fidelity-report"
FORMAT_VERSION = 1


# ---------------------------------------------------------------------- records
@dataclass(frozen=True)
class AcceptanceThresholds:
    """The acceptance criteria of a prior (defaults: the "Diffusion prior" issue).

    Attributes:
        spectrum: bound on ``max_l |E_s(l) / E_r(l) - 1|`` per level.
        mean: bound on ``|mean_s - mean_r| / std_r`` per variable and level.
        std_ratio: interval for ``std_s / std_r`` per variable and level.
        vertical_correlation: bound on ``max |C_s - C_r|`` per variable.
    """

    spectrum: float = 0.2
    mean: float = 0.1
    std_ratio: tuple[float, float] = (0.9, 1.1)
    vertical_correlation: float = 0.1

    def __post_init__(self) -> None:
        for name in ("spectrum", "mean", "vertical_correlation"):
            if not getattr(self, name) > 0:
                raise InvalidValueError(
                    f"threshold {name} must be positive, got {getattr(self, name)}"
                )
        low, high = (float(x) for x in self.std_ratio)
        if not 0 <= low < high:
            raise InvalidValueError(
                f"std_ratio must be an interval 0 <= low < high, got {self.std_ratio}"
            )
        object.__setattr__(self, "std_ratio", (low, high))

    def bounds(self, criterion: str) -> tuple[float | None, float | None]:
        """``(lower, upper)`` of ``criterion`` (``None``: unbounded)."""
        if criterion == "std_ratio":
            return self.std_ratio
        if criterion in CRITERIA:
            return None, float(getattr(self, criterion))
        raise UnknownNameError(f"unknown criterion {criterion!r}; criteria: {CRITERIA}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "spectrum": self.spectrum,
            "mean": self.mean,
            "std_ratio": list(self.std_ratio),
            "vertical_correlation": self.vertical_correlation,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AcceptanceThresholds:
        return cls(
            float(data["spectrum"]),
            float(data["mean"]),
            (float(data["std_ratio"][0]), float(data["std_ratio"][1])),
            float(data["vertical_correlation"]),
        )


@dataclass(frozen=True)
class Check:
    """One acceptance check: a value against its bounds.

    Attributes:
        criterion: one of :data:`CRITERIA`.
        variable: ``"u"``, ``"v"``, ``"T"``, ... or :data:`SPECTRUM_VARIABLE`.
        altitude_km: the level checked; ``None`` for a whole-column check.
        value: the measured value (NaN or infinite fails).
        lower, upper: the bounds, inclusive (``None``: unbounded).
    """

    criterion: str
    variable: str
    altitude_km: float | None
    value: float
    lower: float | None
    upper: float | None

    @property
    def excess(self) -> float:
        """How far ``value`` lies outside its bounds (negative: inside); ``inf`` if not finite."""
        if not math.isfinite(self.value):
            return math.inf
        margins = []
        if self.lower is not None:
            margins.append(self.lower - self.value)
        if self.upper is not None:
            margins.append(self.value - self.upper)
        return max(margins) if margins else -math.inf

    @property
    def passed(self) -> bool:
        return self.excess <= 0

    @property
    def label(self) -> str:
        where = f" @ {self.altitude_km:.1f} km" if self.altitude_km is not None else ""
        return f"{self.criterion} {self.variable}{where}"

    def bounds_text(self) -> str:
        if self.lower is not None and self.upper is not None:
            return f"in [{self.lower:g}, {self.upper:g}]"
        if self.upper is not None:
            return f"<= {self.upper:g}"
        return f">= {self.lower:g}" if self.lower is not None else "unbounded"

    def describe(self) -> str:
        """One line, e.g. ``PASS mean T @ 80.0 km: 0.0312 (<= 0.1)``."""
        verdict = "PASS" if self.passed else "FAIL"
        return f"{verdict} {self.label}: {self.value:.4g} ({self.bounds_text()})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "criterion": self.criterion,
            "variable": self.variable,
            "altitude_km": self.altitude_km,
            "value": self.value,
            "lower": self.lower,
            "upper": self.upper,
            "passed": self.passed,
        }


def _array(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


@dataclass(frozen=True, eq=False)
class Moments:
    """Area-weighted moments of one variable per level, ``(L,)`` each, in physical units."""

    sample_mean: np.ndarray
    sample_std: np.ndarray
    reference_mean: np.ndarray
    reference_std: np.ndarray

    @property
    def mean_difference(self) -> np.ndarray:
        """``(L,)`` ``|mean_s - mean_r| / std_r`` (reference standard deviations)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.abs(self.sample_mean - self.reference_mean) / self.reference_std

    @property
    def std_ratio(self) -> np.ndarray:
        """``(L,)`` ``std_s / std_r``."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.sample_std / self.reference_std

    def to_dict(self) -> dict[str, Any]:
        return {
            "sample_mean": self.sample_mean.tolist(),
            "sample_std": self.sample_std.tolist(),
            "reference_mean": self.reference_mean.tolist(),
            "reference_std": self.reference_std.tolist(),
            "mean_difference": self.mean_difference.tolist(),
            "std_ratio": self.std_ratio.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Moments:
        return cls(
            _array(data["sample_mean"]),
            _array(data["sample_std"]),
            _array(data["reference_mean"]),
            _array(data["reference_std"]),
        )


@dataclass(frozen=True, eq=False)
class SpectrumComparison:
    """Mean kinetic-energy spectra per level for wavenumbers ``1..T``.

    Attributes:
        wavenumber: ``(T,)`` total wavenumbers ``l = 1..T``.
        sample, reference: ``(L, T)`` spectra (m2 s-2 per wavenumber).
    """

    wavenumber: np.ndarray
    sample: np.ndarray
    reference: np.ndarray

    @property
    def truncation(self) -> int:
        return int(self.wavenumber[-1])

    @property
    def relative_error(self) -> np.ndarray:
        """``(L, T)`` ``E_s(l) / E_r(l) - 1`` (0 where both vanish, ``inf`` where only ``E_r`` does)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            error = self.sample / self.reference - 1.0
        return np.where((self.reference == 0) & (self.sample == 0), 0.0, error)

    @property
    def max_relative_error(self) -> np.ndarray:
        """``(L,)`` ``max_l |E_s(l) / E_r(l) - 1|`` over ``l = 1..T``."""
        return np.abs(self.relative_error).max(axis=-1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "wavenumber": self.wavenumber.astype(int).tolist(),
            "sample": self.sample.tolist(),
            "reference": self.reference.tolist(),
            "relative_error": self.relative_error.tolist(),
            "max_relative_error": self.max_relative_error.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SpectrumComparison:
        return cls(
            np.asarray(data["wavenumber"], dtype=np.int64),
            _array(data["sample"]),
            _array(data["reference"]),
        )


@dataclass(frozen=True, eq=False)
class CorrelationComparison:
    """Vertical correlation matrices ``(L, L)`` of the anomalies of one variable."""

    sample: np.ndarray
    reference: np.ndarray

    @property
    def difference(self) -> np.ndarray:
        """``(L, L)`` ``C_s - C_r``."""
        return self.sample - self.reference

    @property
    def max_abs_difference(self) -> float:
        """``max |C_s - C_r|`` (NaN if a level does not vary in either set)."""
        difference = np.abs(self.difference)
        return float("nan") if np.isnan(difference).any() else float(difference.max())

    def to_dict(self) -> dict[str, Any]:
        return {
            "sample": self.sample.tolist(),
            "reference": self.reference.tolist(),
            "max_abs_difference": self.max_abs_difference,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CorrelationComparison:
        return cls(_array(data["sample"]), _array(data["reference"]))


@dataclass(frozen=True, eq=False)
class TideProfile:
    """One tidal harmonic of one variable against altitude, ``(L,)`` each.

    Attributes:
        amplitude: area mean of the pointwise amplitude (units of the variable).
        phase_north_hours, phase_south_hours: local solar time of the maximum of
            the hemispheric migrating component, in ``[0, 24 / n)`` h; NaN where
            the hemisphere has no points or the component vanishes.
    """

    amplitude: np.ndarray
    phase_north_hours: np.ndarray
    phase_south_hours: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {
            "amplitude": self.amplitude.tolist(),
            "phase_north_hours": self.phase_north_hours.tolist(),
            "phase_south_hours": self.phase_south_hours.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TideProfile:
        return cls(
            _array(data["amplitude"]),
            _array(data["phase_north_hours"]),
            _array(data["phase_south_hours"]),
        )


TideTable = dict[str, dict[int, TideProfile]]
"""Tidal profiles of one data set: variable -> harmonic (1 diurnal, 2 semidiurnal) -> profile."""


# ---------------------------------------------------------------------- report
@dataclass(frozen=True, eq=False)
class FidelityReport:
    """What :func:`fidelity_report` found; the checks are derived from the numbers and thresholds.

    Attributes:
        strategy: the caller's name for what made the samples (``"joint3d"``, ...).
        grid: the grid of both data sets.
        sample_dims: the dims the samples ran along (``("member",)``, ``("time",)``, ...).
        n_samples, n_reference: how many fields each set held.
        moments: per variable.
        spectra: ``None`` when the grid has no ``u`` and ``v``.
        vertical_correlation: per variable.
        tides: ``"reference"`` and/or ``"samples"`` -> :data:`TideTable`; a set
            that is not a suitable time series is absent (see ``notes``).
        thresholds: the acceptance criteria applied.
        notes: what was skipped and why.
    """

    strategy: str | None
    grid: Grid
    sample_dims: tuple[str, ...]
    n_samples: int
    n_reference: int
    moments: dict[str, Moments]
    spectra: SpectrumComparison | None
    vertical_correlation: dict[str, CorrelationComparison]
    tides: dict[str, TideTable] = field(default_factory=dict)
    thresholds: AcceptanceThresholds = field(default_factory=AcceptanceThresholds)
    notes: tuple[str, ...] = ()

    # ------------------------------------------------------------------ verdicts
    @property
    def checks(self) -> list[Check]:
        """Every acceptance check, in the order of :data:`CRITERIA`, then variable and level."""
        altitude = self.grid.altitude
        checks: list[Check] = []

        def add(criterion: str, variable: str, level: int | None, value: float) -> None:
            lower, upper = self.thresholds.bounds(criterion)
            where = None if level is None else float(altitude[level])
            checks.append(Check(criterion, variable, where, float(value), lower, upper))

        if self.spectra is not None:
            for level, value in enumerate(self.spectra.max_relative_error):
                add("spectrum", SPECTRUM_VARIABLE, level, value)
        for name, moments in self.moments.items():
            for level, value in enumerate(moments.mean_difference):
                add("mean", name, level, value)
        for name, moments in self.moments.items():
            for level, value in enumerate(moments.std_ratio):
                add("std_ratio", name, level, value)
        for name, correlation in self.vertical_correlation.items():
            add("vertical_correlation", name, None, correlation.max_abs_difference)
        return checks

    @property
    def passed(self) -> bool:
        """Whether every check passed."""
        return all(check.passed for check in self.checks)

    def failed_checks(self) -> list[Check]:
        return [check for check in self.checks if not check.passed]

    def criteria(self) -> dict[str, dict[str, Any]]:
        """Per criterion: ``passed``, ``checks``, ``failed`` (counts) and the ``worst`` check."""
        summary: dict[str, dict[str, Any]] = {}
        for criterion in CRITERIA:
            checks = [c for c in self.checks if c.criterion == criterion]
            if not checks:
                continue
            worst = max(checks, key=lambda c: c.excess)
            summary[criterion] = {
                "passed": all(c.passed for c in checks),
                "checks": len(checks),
                "failed": sum(not c.passed for c in checks),
                "worst": worst.to_dict(),
            }
        return summary

    def summary(self) -> str:
        """A human-readable table of the checks and notes."""
        name = self.strategy or "samples"
        lines = [
            f"fidelity of {name} ({self.n_samples} fields along {self.sample_dims}) "
            f"against {self.n_reference} reference fields: {'PASS' if self.passed else 'FAIL'}"
        ]
        lines += [f"  {check.describe()}" for check in self.checks]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able content; non-finite numbers stay ``NaN``/``Infinity`` (Python's json)."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "strategy": self.strategy,
            "passed": self.passed,
            "criteria": self.criteria(),
            "checks": [check.to_dict() for check in self.checks],
            "notes": list(self.notes),
            "thresholds": self.thresholds.to_dict(),
            "sample_dims": list(self.sample_dims),
            "n_samples": self.n_samples,
            "n_reference": self.n_reference,
            "grid": self.grid.to_dict(),
            "moments": {name: m.to_dict() for name, m in self.moments.items()},
            "spectra": None if self.spectra is None else self.spectra.to_dict(),
            "vertical_correlation": {
                name: c.to_dict() for name, c in self.vertical_correlation.items()
            },
            "tides": {
                source: {
                    name: {str(n): profile.to_dict() for n, profile in harmonics.items()}
                    for name, harmonics in table.items()
                }
                for source, table in self.tides.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FidelityReport:
        if data.get("format") != FORMAT:
            raise InvalidValueError(f"not a {FORMAT} (format: {data.get('format')!r})")
        if data.get("version") != FORMAT_VERSION:
            raise InvalidValueError(
                f"{FORMAT} version {data.get('version')!r} is not supported (expected {FORMAT_VERSION})"
            )
        return cls(
            strategy=data["strategy"],
            grid=Grid.from_dict(data["grid"]),
            sample_dims=tuple(data["sample_dims"]),
            n_samples=int(data["n_samples"]),
            n_reference=int(data["n_reference"]),
            moments={name: Moments.from_dict(m) for name, m in data["moments"].items()},
            spectra=None
            if data["spectra"] is None
            else SpectrumComparison.from_dict(data["spectra"]),
            vertical_correlation={
                name: CorrelationComparison.from_dict(c)
                for name, c in data["vertical_correlation"].items()
            },
            tides={
                source: {
                    name: {int(n): TideProfile.from_dict(p) for n, p in harmonics.items()}
                    for name, harmonics in table.items()
                }
                for source, table in data["tides"].items()
            },
            thresholds=AcceptanceThresholds.from_dict(data["thresholds"]),
            notes=tuple(data["notes"]),
        )

    def to_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as indented JSON to ``path`` (via a temporary file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_dict(), indent=1) + "\n"
        partial = path.with_name(path.name + ".partial")
        partial.write_text(text)
        partial.replace(path)  # no half-written report under the final name
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> FidelityReport:
        return cls.from_dict(json.loads(Path(path).read_text()))

    # ------------------------------------------------------------------ figures
    def plot(self, out_dir: str | Path, prefix: str | None = None) -> list[Path]:
        """Write the PNG figures to ``out_dir`` and return their paths.

        Files are named ``{prefix}_...png`` (``prefix`` defaults to
        ``fidelity_{strategy}``): ``profiles_{variable}`` (mean and std against
        altitude with the tolerance bands), ``spectra`` (per level, log-log, with
        the reference +-20 % band), ``spectral_ratio`` (``E_s / E_r - 1`` per
        level), ``vertical_correlation`` (sample, reference, difference) and,
        where tides were analysed, ``tides``.
        """
        out = Path(out_dir)
        stem = file_stem(prefix if prefix is not None else f"fidelity_{self.strategy or 'samples'}")
        paths = [_plot_profiles(self, out, stem, name) for name in self.moments]
        if self.spectra is not None:
            paths.append(_plot_spectra(self, out, stem))
            paths.append(_plot_spectral_ratio(self, out, stem))
        if self.vertical_correlation:
            paths.append(_plot_correlation(self, out, stem))
        if self.tides:
            paths.append(_plot_tides(self, out, stem))
        return paths


# ---------------------------------------------------------------------- computation
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
    if truncation is None:
        truncation = (grid.nlon - 1) // 3
    if not 1 <= truncation < min(grid.nlat, grid.nlon // 2 + 1):
        raise InvalidValueError(
            f"truncation {truncation} is not resolved by the grid ({grid.nlat} x {grid.nlon})"
        )
    notes: list[str] = []
    with_spectra = "u" in grid.variables and "v" in grid.variables
    if not with_spectra:
        notes.append("spectra: the grid has no u and v; kinetic-energy spectra skipped")
    elif grid.latitude_kind not in ("legendre-gauss", "equiangular"):
        with_spectra = False
        notes.append(
            f"spectra: no spherical-harmonic transform on {grid.latitude_kind!r} latitudes; "
            "kinetic-energy spectra skipped"
        )
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
    spectra = None
    if stats_s.spectrum is not None and stats_r.spectrum is not None:
        spectra = SpectrumComparison(
            np.arange(1, truncation + 1), stats_s.spectrum[:, 1:], stats_r.spectrum[:, 1:]
        )
    correlation = {
        name: CorrelationComparison(stats_s.correlation[name], stats_r.correlation[name])
        for name in grid.variables
    }
    for name in grid.variables:
        if np.isnan(correlation[name].max_abs_difference):
            notes.append(
                f"vertical correlation of {name}: a level does not vary; correlation undefined"
            )
    tides: dict[str, TideTable] = {}
    for source, ds, dims in (
        ("reference", reference, reference_dims),
        ("samples", samples, sample_dims),
    ):
        axis = _tidal_time_axis(ds, dims)
        if isinstance(axis, str):
            notes.append(f"tides of the {source}: {axis}; tidal analysis skipped")
        else:
            tides[source] = _tide_profiles(ds, grid, dims, *axis)
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


def compare_strategies(reports: Iterable[FidelityReport]) -> dict[str, dict[str, Any]]:
    """Acceptance side by side: strategy -> ``{"passed": bool, criterion: FidelityReport.criteria()[criterion]}``."""
    table: dict[str, dict[str, Any]] = {}
    for report in reports:
        name = report.strategy or "samples"
        if name in table:
            raise InvalidValueError(f"two reports for strategy {name!r}; name them apart")
        table[name] = {"passed": report.passed, **report.criteria()}
    return table


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


# ---------------------------------------------------------------------- figures
def _plot_profiles(report: FidelityReport, out: Path, stem: str, name: str) -> Path:
    moments = report.moments[name]
    altitude = report.grid.altitude
    units = _units(name)
    fig, axes = new_figure(1, 2, panel_size=(4.0, 4.0), sharey=True)
    ax_mean, ax_std = axes[0]
    tol = report.thresholds.mean * moments.reference_std
    ax_mean.fill_betweenx(
        altitude,
        moments.reference_mean - tol,
        moments.reference_mean + tol,
        color="0.85",
        label=f"reference +- {report.thresholds.mean:g} std",
    )
    ax_mean.plot(moments.reference_mean, altitude, "k-o", label="reference")
    ax_mean.plot(moments.sample_mean, altitude, "C3--s", label="samples")
    ax_mean.set(xlabel=f"mean {name} ({units})", ylabel="altitude (km)")
    low, high = report.thresholds.std_ratio
    ax_std.fill_betweenx(
        altitude,
        low * moments.reference_std,
        high * moments.reference_std,
        color="0.85",
        label=f"reference x [{low:g}, {high:g}]",
    )
    ax_std.plot(moments.reference_std, altitude, "k-o", label="reference")
    ax_std.plot(moments.sample_std, altitude, "C3--s", label="samples")
    ax_std.set(xlabel=f"std {name} ({units})")
    for ax in (ax_mean, ax_std):
        ax.legend(fontsize=7)
    fig.suptitle(f"{name}: {report.strategy or 'samples'} vs reference")
    return save_figure(fig, out / f"{stem}_profiles_{file_stem(name)}.png")


def _plot_spectra(report: FidelityReport, out: Path, stem: str) -> Path:
    spectra = report.spectra
    assert spectra is not None
    altitude = report.grid.altitude
    # at most 8 panels: evenly spaced levels (the ratio figure shows all of them)
    shown = np.unique(np.linspace(0, altitude.size - 1, min(8, altitude.size)).round().astype(int))
    nrows, ncols = panel_grid(shown.size)
    fig, axes = new_figure(nrows, ncols, panel_size=(3.4, 3.0))
    tol = report.thresholds.spectrum
    for ax, level in zip(axes.ravel(), shown, strict=False):
        reference = spectra.reference[level]
        ax.fill_between(
            spectra.wavenumber,
            (1 - tol) * reference,
            (1 + tol) * reference,
            color="0.85",
            label=f"reference +- {tol:.0%}",
        )
        ax.loglog(spectra.wavenumber, reference, "k-", label="reference")
        ax.loglog(spectra.wavenumber, spectra.sample[level], "C3--", label="samples")
        ax.set(title=f"{altitude[level]:.1f} km", xlabel="total wavenumber l")
        ax.set_ylabel("E(l) (m2 s-2)")
    axes.ravel()[0].legend(fontsize=7)
    hide_unused(axes, shown.size)
    fig.suptitle(f"kinetic-energy spectra: {report.strategy or 'samples'} vs reference")
    return save_figure(fig, out / f"{stem}_spectra.png")


def _plot_spectral_ratio(report: FidelityReport, out: Path, stem: str) -> Path:
    spectra = report.spectra
    assert spectra is not None
    tol = report.thresholds.spectrum
    fig, axes = new_figure(1, 1, panel_size=(6.0, 4.0))
    ax = axes[0, 0]
    ax.axhspan(-tol, tol, color="0.88", label=f"+- {tol:.0%}")
    ax.axhline(0.0, color="k", lw=0.8)
    error = spectra.relative_error
    for level, altitude in enumerate(report.grid.altitude):
        color = _level_color(level, report.grid.nlevels)
        ax.plot(
            spectra.wavenumber, error[level], "-o", ms=3, color=color, label=f"{altitude:.1f} km"
        )
    ax.set(
        xlabel="total wavenumber l",
        ylabel="E_s(l) / E_r(l) - 1",
        title=f"spectral error of {report.strategy or 'samples'} up to T = {spectra.truncation}",
    )
    ax.legend(fontsize=7, ncols=2)
    return save_figure(fig, out / f"{stem}_spectral_ratio.png")


def _plot_correlation(report: FidelityReport, out: Path, stem: str) -> Path:
    names = list(report.vertical_correlation)
    altitude = report.grid.altitude
    fig, axes = new_figure(len(names), 3, panel_size=(3.2, 2.9), sharex=True, sharey=True)
    extent = _cell_extent(altitude)
    shown = {}
    for row, name in enumerate(names):
        comparison = report.vertical_correlation[name]
        panels = (
            ("samples", comparison.sample, "RdBu_r", 1.0),
            ("reference", comparison.reference, "RdBu_r", 1.0),
            (
                f"difference, max {comparison.max_abs_difference:.2f}",
                comparison.difference,
                "PuOr_r",
                0.5,
            ),
        )
        for col, (title, matrix, cmap, limit) in enumerate(panels):
            ax = axes[row, col]
            shown[col] = ax.imshow(
                matrix, origin="lower", extent=extent, cmap=cmap, vmin=-limit, vmax=limit
            )
            ax.set_title(f"{name}: {title}", fontsize=9)
        axes[row, 0].set_ylabel("altitude (km)")
    for ax in axes[-1]:
        ax.set_xlabel("altitude (km)")
    # one colour bar per scale, not per panel (also keeps the layout cheap)
    fig.colorbar(shown[0], ax=axes[:, :2], shrink=0.6, label="correlation")
    fig.colorbar(shown[2], ax=axes[:, 2], shrink=0.6, label="samples - reference")
    fig.suptitle("vertical correlation of anomalies from the per-point mean")
    return save_figure(fig, out / f"{stem}_vertical_correlation.png")


def _plot_tides(report: FidelityReport, out: Path, stem: str) -> Path:
    """Rows: variables; columns: amplitudes of all harmonics, then the phase of each."""
    names = list(report.grid.variables)
    altitude = report.grid.altitude
    fig, axes = new_figure(len(names), 1 + len(HARMONICS), panel_size=(3.2, 2.9), sharey=True)
    colors = {"reference": "k", "samples": "C3"}
    lines = {1: ("-", "o"), 2: ("--", "s")}
    for row, name in enumerate(names):
        ax_amp = axes[row, 0]
        for source, table in report.tides.items():
            color = colors.get(source, "C0")
            for col, n in enumerate(HARMONICS, start=1):
                profile = table[name][n]
                line, marker = lines.get(n, (":", "x"))
                ax_amp.plot(
                    profile.amplitude,
                    altitude,
                    line,
                    marker=marker,
                    ms=3,
                    color=color,
                    label=f"{source}, {_harmonic(n)}",
                )
                ax_phase = axes[row, col]
                ax_phase.plot(
                    profile.phase_north_hours, altitude, "^", color=color, label=f"{source} N"
                )
                ax_phase.plot(
                    profile.phase_south_hours,
                    altitude,
                    "v",
                    color=color,
                    mfc="none",
                    label=f"{source} S",
                )
                ax_phase.set(xlim=(0, 24 / n), title=f"{name}: {_harmonic(n)} phase")
        ax_amp.set(title=f"{name}: amplitude ({_units(name)})", ylabel="altitude (km)")
    for col in range(1, 1 + len(HARMONICS)):
        axes[-1, col].set_xlabel("local solar time of maximum (h)")
    axes[-1, 0].set_xlabel("amplitude")
    axes[0, 0].legend(fontsize=6)
    axes[0, 1].legend(fontsize=6)
    fig.suptitle("tides: " + ", ".join(report.tides))
    return save_figure(fig, out / f"{stem}_tides.png")


def _harmonic(n: int) -> str:
    return {1: "diurnal", 2: "semidiurnal"}.get(n, f"{n} cpd")


def _units(name: str) -> str:
    return VARIABLES[name].units if name in VARIABLES else "?"


def _level_color(level: int, levels: int) -> tuple[float, float, float, float]:
    return colormaps["viridis"](level / max(levels - 1, 1))


def _cell_extent(altitude: np.ndarray) -> tuple[float, float, float, float]:
    """``imshow`` extent whose cells are centred on the levels (evenly spaced or not, roughly)."""
    if altitude.size == 1:
        low, high = altitude[0] - 0.5, altitude[0] + 0.5
    else:
        half = 0.5 * (altitude[-1] - altitude[0]) / (altitude.size - 1)
        low, high = altitude[0] - half, altitude[-1] + half
    return (float(low), float(high), float(low), float(high))
