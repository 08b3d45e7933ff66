"""Typed summaries of an assimilated window and of a cycle, and their JSON and table forms.

:func:`genda.orchestration.assimilate.assimilate_window` returns a
:class:`WindowSummary`. Its JSON form (:meth:`WindowSummary.to_dict`) is the
plain data that crosses Prefect tasks and that the benchmarks write; the
flows' report and the cycle and demo commands read it back with
:meth:`WindowSummary.from_dict` and use its attributes. A cycle's results
(one dict per window, :func:`genda.orchestration.flows.assimilation_cycle`)
become a :class:`CycleTable`: the rows ``genda cycle`` prints and the cycle's
Prefect artifact holds, as a GitHub-flavoured markdown table
(https://github.github.com/gfm/#tables-extension-) where the output is not a
terminal, so that a log keeps every column whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
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


CYCLE_SCORES: tuple[tuple[str, str, bool], ...] = (
    ("crps", "CRPS", True),
    ("rmse", "RMSE", True),
    ("spread_skill", "spread/skill", False),
)
"""The scores a cycle's table shows per variable: ``(key, heading, in the variable's units)``.

CRPS, the RMSE of the ensemble mean and the spread-skill ratio
(:data:`genda.evaluation.scores.SCORE_NAMES`; ``metrics.json`` has the others)."""


@dataclass(frozen=True)
class CycleTable:
    """A cycle's results as a table: one row per window, in the order run.

    Attributes:
        columns: the headings: window, observations, members made, members/s,
            retried, then for every variable any window was evaluated on its
            CRPS, RMSE (of the ensemble mean) and spread/skill, then the result.
        rows: the cells, text; ``-`` where a window has no value.
        failed: per row, whether the window failed (its result is the error).
    """

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    failed: tuple[bool, ...]

    @classmethod
    def from_results(cls, results: list[Mapping[str, Any]]) -> CycleTable:
        """The table of :func:`~genda.orchestration.flows.assimilation_cycle`'s results."""
        units: dict[str, str] = {}  # the evaluated variables, in the order first met
        for result in results:
            for name, unit in ((result.get("evaluation") or {}).get("units") or {}).items():
                units.setdefault(name, unit)
        scores = [
            f"{name} {heading}" + (f" ({unit})" if with_units and unit else "")
            for name, unit in units.items()
            for _, heading, with_units in CYCLE_SCORES
        ]
        columns = (
            "window",
            "observations",
            "members made",
            "members/s",
            "retried",
            *scores,
            "result",
        )
        rows = tuple(_cycle_row(result, list(units)) for result in results)
        return cls(columns, rows, tuple("error" in result for result in results))

    def to_markdown(self) -> str:
        """The table in markdown, one line per row whatever its width (for logs and artifacts)."""
        lines = [
            _markdown_row(self.columns),
            "|" + "|".join("---" for _ in self.columns) + "|",
        ]
        lines += [_markdown_row(row) for row in self.rows]
        return "\n".join(lines) + "\n"


def _cycle_row(result: Mapping[str, Any], variables: list[str]) -> tuple[str, ...]:
    """The cells of one window's row (:class:`CycleTable`)."""
    blank = ["-"] * (len(variables) * len(CYCLE_SCORES))
    if "error" in result:
        return (str(result["time"]), "-", "-", "-", "-", *blank, f"failed: {result['error']}")
    made = WindowSummary.from_dict(result["ensemble"])
    evaluation = result.get("evaluation") or {}
    cells = []
    for name in variables:
        values = (evaluation.get("scores") or {}).get(name, {})
        cells += [_number(values.get(key)) for key, _, _ in CYCLE_SCORES]
    outcome = "stored"
    if evaluation:
        outcome = f"report {Path(evaluation['metrics_path']).parent}"
    return (
        str(result["time"]),
        str(result["observations"]),
        f"{made.written} (+{made.already_complete} stored)",
        f"{made.members_per_second:.2f}" if made.written else "-",
        str(made.failures_retried),
        *cells,
        outcome,
    )


def _number(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3g}"


def _markdown_row(cells: tuple[str, ...]) -> str:
    """``| a | b |``: a pipe inside a cell is escaped, line breaks become spaces."""
    shown = (" ".join(str(cell).split()).replace("|", "\\|") for cell in cells)
    return "| " + " | ".join(shown) + " |"


__all__ = ["CYCLE_SCORES", "CycleTable", "ObservationFit", "WindowSummary"]
