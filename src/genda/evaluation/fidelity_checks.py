"""The acceptance criteria of a diffusion prior's fidelity, and one check against them.

:class:`AcceptanceThresholds` holds the bounds of the criteria in
:data:`CRITERIA` (defaults: the "Diffusion prior" issue): kinetic-energy
spectra within +-20 % at every wavenumber up to the truncation, means within
0.1 reference std, std ratio in [0.9, 1.1], largest difference of the
vertical correlation of the anomalies at most 0.1. A :class:`Check` is one
value against its bounds;
:attr:`genda.evaluation.fidelity_records.FidelityReport.checks` derives them
from the report's numbers. The spectrum and correlation criteria bound the
largest error; the means that :mod:`genda.evaluation.structure` computes for
posterior members and benchmarks are other scores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from genda.errors import InvalidValueError, UnknownNameError

CRITERIA: tuple[str, ...] = ("spectrum", "mean", "std_ratio", "vertical_correlation")
SPECTRUM_VARIABLE = "kinetic_energy"
"""The ``variable`` of spectral checks (the spectrum is one of ``(u, v)`` together)."""


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


__all__ = ["CRITERIA", "SPECTRUM_VARIABLE", "AcceptanceThresholds", "Check"]
