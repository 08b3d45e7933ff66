"""Typed summaries of an assimilated window and their JSON form.

:func:`genda.orchestration.assimilate.assimilate_window` returns a
:class:`WindowSummary`. Its JSON form (:meth:`WindowSummary.to_dict`) is the
plain data that crosses Prefect tasks and that the benchmarks write; the
flows' report and the cycle and demo commands read it back with
:meth:`WindowSummary.from_dict` and use its attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class ObservationFit:
    """How an ensemble fits the observations it was given.

    The fields of :func:`genda.assimilation.posterior.fit_of_values`.

    Attributes:
        observations: how many observations.
        rms_normalised_innovation: ``sqrt(mean(((y - H mean) / sigma)^2))`` of the
            ensemble mean (about 1 for an analysis that fits within the errors).
        mean_spread_over_sigma: the mean ensemble spread at the observations
            over their error.
    """

    observations: int
    rms_normalised_innovation: float
    mean_spread_over_sigma: float

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ObservationFit:
        """Read the dict of :func:`~genda.assimilation.posterior.fit_of_values`."""
        return cls(**{f.name: data[f.name] for f in fields(cls)})

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: the dict :meth:`from_dict` reads."""
        return asdict(self)


@dataclass(frozen=True)
class WindowSummary:
    """What completing one window of an ensemble store did.

    Attributes:
        store: the ensemble store.
        time: the window's centre (ISO, seconds).
        members: the ensemble size.
        written: members made by this run.
        already_complete: members that were in the store before this run.
        strategy: the prior's strategy (``joint3d``, ``layer2d``).
        method: the guidance, or ``"prior"`` without observations.
        steps: sampler steps.
        batch_size: members per denoiser batch (probed on GPUs with ``auto``).
        workers: Ray actors used (0: in this process).
        cluster: the Ray cluster's address (``""`` in this process).
        seconds: wall time of the members made now.
        members_per_second: throughput over the members made now.
        failures_retried: tasks handed out again after their actor died.
        by_worker: members written per worker (``host:pid``).
        peak_memory_mib: the largest peak memory a worker reported.
        observations: observations assimilated (0 for the prior).
        outliers: observations the background check flagged.
        outliers_by_variable: the flagged observations per variable (non-zero only).
        outliers_kept: whether the flagged observations were assimilated.
        fit: the ensemble's fit to the observations (``None`` for the prior).
        level_mean_fit: the fit of the prior's training mean per variable and
            level, the reference (``None`` for the prior).
    """

    store: str
    time: str
    members: int
    written: int
    already_complete: int
    strategy: str
    method: str
    steps: int
    batch_size: int
    workers: int
    cluster: str
    seconds: float
    members_per_second: float
    failures_retried: int
    by_worker: dict[str, int] = field(default_factory=dict)
    peak_memory_mib: float = 0.0
    observations: int = 0
    outliers: int = 0
    outliers_by_variable: dict[str, int] = field(default_factory=dict)
    outliers_kept: bool = False
    fit: ObservationFit | None = None
    level_mean_fit: ObservationFit | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WindowSummary:
        """Read the JSON form (:meth:`to_dict`) back."""
        values = dict(data)
        for name in ("fit", "level_mean_fit"):
            if values.get(name) is not None:
                values[name] = ObservationFit.from_dict(values[name])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; ``fit`` and ``level_mean_fit`` only when there were observations."""
        data = asdict(self)
        for name in ("fit", "level_mean_fit"):
            if data[name] is None:
                del data[name]
        return data


__all__ = ["ObservationFit", "WindowSummary"]
