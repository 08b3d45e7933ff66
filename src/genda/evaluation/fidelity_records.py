"""The records of a fidelity report: what was compared, and the report that judges it.

Per variable and level, :func:`genda.evaluation.fidelity.fidelity_report`
fills :class:`Moments` (area-weighted mean and standard deviation),
:class:`SpectrumComparison` (kinetic-energy spectra of ``(u, v)``),
:class:`CorrelationComparison` (vertical correlation of the anomalies) and
:class:`TideProfile` (diurnal and semidiurnal tides). :class:`FidelityReport`
holds them with the :class:`~genda.evaluation.fidelity_checks.AcceptanceThresholds`,
derives the :class:`~genda.evaluation.fidelity_checks.Check` records and
their verdict, and round-trips through JSON (``fidelity.json``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genda.atomic import write_file
from genda.errors import InvalidValueError
from genda.evaluation.fidelity_checks import (
    CRITERIA,
    SPECTRUM_VARIABLE,
    AcceptanceThresholds,
    Check,
)
from genda.grid import Grid

HARMONICS: tuple[int, ...] = (1, 2)
"""Tidal harmonics analysed, in cycles per day: 1 diurnal, 2 semidiurnal."""
FORMAT = "genda-fidelity-report"
FORMAT_VERSION = 1


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
        return write_file(Path(path), json.dumps(self.to_dict(), indent=1) + "\n")

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
        where tides were analysed, ``tides`` (:mod:`genda.evaluation.fidelity_plots`).
        """
        # Imported here: the figures module needs these records, and matplotlib
        # loads only when figures are drawn.
        from genda.evaluation.fidelity_plots import plot_report

        return plot_report(self, out_dir, prefix)


__all__ = [
    "HARMONICS",
    "CorrelationComparison",
    "FidelityReport",
    "Moments",
    "SpectrumComparison",
    "TideProfile",
    "TideTable",
]
