"""The 3D-versus-layers study at equal quality: a width sweep, each prior trained to its plateau.

    python benchmarks/strategies_pareto.py [--grids 16x32] [--levels 8,16,32,64]
        [--widths joint3d=x0.5,x1,x2 layer2d=8,16,32] [--max-width 64] [--window 1]
        [--val-every 200] [--plateau-tol 0.005] [--plateau-window 5]
        [--plateau-min-steps 1000] [--max-train-s 600] [--members 8] [--steps 12]
        [--jobs 2] [--device cpu] [--data DIR] [--work DIR] [--figures DIR]
        [--fresh] [--estimate] [--quick]

``benchmarks/strategies.py`` compares ``joint3d`` and ``layer2d-wK`` at one
network width after a fixed 120 s of training. That ranks nothing: at 64
levels ``joint3d`` squeezes 3 x 64 input channels into 16 first-level
features where ``layer2d`` gives 16 features to 3 (2K + 1) channels, and no
prior had reached its plateau. This study sweeps the width (the U-Net's
``base_channels``, the width of its first level; the deeper levels keep their
multipliers 1, 2, 2), trains every prior to the plateau of its validation
loss in whitened coordinates, measures it as ``strategies.py`` does, and
reports per horizontal grid and number of levels ``L`` the Pareto front of
each strategy -- memory and time per posterior member against quality -- and
where the cheaper strategy changes (the crossover).

Widths. ``--widths`` gives the sweep per strategy: a number is a fixed
width, ``auto`` is the width rule below and ``xF`` is ``F`` times it (a
multiple of 8, at least 8); widths above ``--max-width`` are left out. The
default sweeps ``joint3d`` at half, once and twice the rule, so that its
widths grow with its channel count, and ``layer2d`` at 8, 16 and 32.

Width rule: ``base = max(16, 8 ceil(C_in / 24))`` for ``C_in`` input
channels (``joint3d``: ``3 L``, ``layer2d``: ``3 (2K + 1)``), that is ``C_in
/ 3`` rounded up to a multiple of 8, at least 16: 16, 16, 32 and 64 for
``joint3d`` at 8, 16, 32 and 64 levels, 16 for every ``layer2d``. Why: the
first convolution then maps at most 3 input channels -- one level's u, v and
T -- to each first-level feature, so it can keep at least one feature per
level, and no vertical structure is lost to its rank before the network can
use it (``layer2d`` at width 16 keeps more than one feature per input
channel). Its cost stays within ``layer2d``'s: a U-Net pass costs about
``base^2 H W`` operations, so ``joint3d`` at the rule's width costs ``(L /
16)^2`` passes of a width-16 network per member where ``layer2d`` costs
``L``: at least 4 times fewer up to 64 levels, as many only at 256. Multiples of 8
keep GroupNorm's groups whole.

Training to the plateau. Each prior trains with AdamW at a constant
learning rate ``1e-3`` after a warm-up of ``--val-every`` steps (a cosine
schedule would make its end a property of the schedule), on the batches of
``strategies.py`` (16 fields for ``joint3d``, about 64 layer samples for
``layer2d``), in whitened coordinates with a time-of-day mean, one CPU
thread. Every ``--val-every`` steps the loop validates: the EMA model's EDM
loss at the fixed noise levels ``(0.05, 0.15, 0.5, 1.5, 5)`` with noise
seeded by field and level (:mod:`genda.models.validation`), on the
training run's last days behind a 12 h gap (the held-out block of the time
split; the held-out run, seed 2, stays the OSSE's truth and never decides
when training stops), so the curves of all priors are comparable. The
rule (:class:`genda.models.training_stop.PlateauStop`, the loop's stop
hook): stop when the best validation loss improved by less than
``--plateau-tol`` (relative) over the last ``--plateau-window`` validations,
not before step ``--plateau-min-steps``; or when the run's wall time reaches
``--max-train-s`` (``stopped: time``: that prior did not reach its plateau,
and the table says so). Each prior records its curve ``(step, wall_s,
val_loss)``, its steps and why it stopped. The validation losses of the two
strategies are comparable: both whiten with the same fitted Gaussian (per
spherical-harmonic mode, ``joint3d`` by its eigen-directions and ``layer2d``
by the cascade), which differ by a rotation of ``z`` per mode, and the EDM
loss is a mean square, unchanged by a rotation in expectation
(``val_loss_start``, the untrained networks' loss, agrees between the
strategies to about 0.1 % in ``strategies.py``'s results).

Measures, per prior, by ``strategies.py``'s sampling stage (its own
process, one CPU thread): time and peak memory per posterior member (MMPS
with the network's Jacobian, ``--members`` at once, ``--steps`` steps), FLOPs
per member, CRPS over the model data's standard deviation and the
spread-skill ratio on the OSSE window, the vertical-correlation and spectrum
errors against the model data, and the final validation loss; the parameter
count of each prior.

Pareto. Per grid and ``L``, for each cost (``mib_per_member``,
``s_per_member``) and each quality (``crps_norm``, ``val_loss``,
``vcorr_error``, ``spectrum_error``, ``ssr_gap = |1 - ssr|``; lower is better
for all), each strategy's non-dominated priors (:func:`pareto_front`), and
their comparison (:func:`compare_fronts`): for every quality ``q``, the
cheapest prior of each strategy at least as good as ``q``; the segments of
``q`` where one strategy is cheaper, and the crossovers, the qualities at
which the cheaper strategy changes (or "none within the sweep").

Data: the model runs, levels and observations of ``strategies.py``
(``--data``, by default its own cache ``outputs/strategies``: the runs are
the same, so a machine that ran that study reuses them). Each stage runs in
its own process, ``--jobs`` at a time, and is cached under ``--work``
(default ``outputs/strategies_pareto``; the file names hold the settings):
a rerun only does what is missing.

Writes ``benchmarks/results/strategies_pareto-<machine>.json`` and ``.md``,
figures under ``docs/figures/strategies/pareto/`` (cost against quality,
one panel per ``L``, both strategies, points labelled by width) and prints
the tables. ``--quick``: a tiny study for tests (16 x 32, ``L = 8``, two
widths per strategy, a few steps), written under ``--work`` only.
``--estimate``: measures the training step time of every prior of the sweep
(a few synthetic steps each) and prints the compute the study needs, without
running it.

The full study (at most about 2.2 h on two free CPU cores, below):

    python benchmarks/strategies_pareto.py --jobs 2

Compute estimate for the defaults (16 x 32; 23 priors: ``joint3d`` at
widths 8, 16, 32 for 8 and 16 levels, 16, 32, 64 for 32 levels and 32, 64
for 64 levels; ``layer2d-w1`` at 8, 16, 32 for every ``L``). ``--estimate``
measured training steps of 0.027-0.32 s on one thread (``joint3d`` 0.027 s
at width 8 and 8 levels to 0.27 s at width 64; ``layer2d-w1`` 0.06, 0.11
and 0.31 s at widths 8, 16 and 32, whatever ``L``), so a prior's 1000
minimum steps take 26-324 s and every prior can reach its plateau before
the 600 s limit. Training: 0.84 h of one thread if every prior stops at its
minimum steps (about 1 h with the data loading the synthetic steps leave
out; ``strategies.py``'s loops ran 1.1-1.4 times the measured step time),
3.8 h if every one runs to the limit. Sampling (8 members, 12 MMPS steps,
the warm-up and the FLOP count, about 9 members' worth per prior, plus
about 6 s of process start and loading measured by ``--quick``): at most
0.5 h, from ``strategies.py``'s per-member times at width 16 scaled by the
FLOPs per doubling of the width (3.0-3.7 times in ``--quick``). In all
1.5-4.4 h of one thread, 0.8-2.2 h with ``--jobs 2`` on two free cores,
plus a few minutes for the model runs unless ``strategies.py`` cached them.
``--quick`` takes about 45 s on one core (9 child processes of about 2.5 s
start-up each, 4 priors, 4 posteriors).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

import strategies as study
from _common import RESULTS, machine, machine_tag, print_table
from genda.atomic import write_file
from genda.errors import InvalidValueError

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "docs" / "figures" / "strategies" / "pareto"
STUDY_SCRIPT = Path(study.__file__).resolve()
"""``strategies.py``: its ``data`` and ``sample`` stages run as its own children."""

STRATEGIES = ("joint3d", "layer2d")
DEFAULT_WIDTHS = {"joint3d": "x0.5,x1,x2", "layer2d": "8,16,32"}
UNET_REST = {k: v for k, v in study.UNET.items() if k != "base_channels"}
"""The U-Net of ``strategies.py`` but its width: multipliers 1, 2, 2, noise embedding 64."""
RULE_FLOOR = 16
"""The width rule's least width (``strategies.py``'s one width)."""
CHANNELS_PER_FEATURE = 3
"""The rule's input channels per first-level feature: one level's u, v and T."""
WIDTH_STEP = 8
"""Widths are multiples of this (GroupNorm's groups stay whole)."""
LEARNING_RATE = 1e-3
VAL_SAMPLES = 32
"""Validation fields at most (all of the held-out block at the study's sizes)."""
VAL_GAP_HOURS = 12.0
MAX_STEPS = 10**7
"""``TrainConfig.steps``: never reached; the plateau rule or the time limit ends a run."""

COSTS = {"mib_per_member": "peak memory per member (MiB)", "s_per_member": "time per member (s)"}
QUALITIES = {
    "crps_norm": "CRPS / model std",
    "val_loss": "validation loss",
    "vcorr_error": "vertical correlation error",
    "spectrum_error": "spectrum error",
    "ssr_gap": "|1 - spread-skill|",
}
"""The quality axes of the fronts; lower is better for every one."""
FIGURE_QUALITIES = ("crps_norm", "val_loss")
TABLE_COLUMNS = (
    "grid",
    "levels",
    "variant",
    "width",
    "rule_width",
    "parameters",
    "train_steps",
    "stopped",
    "train_wall_s",
    "val_loss",
    "s_per_member",
    "mib_per_member",
    "gflop_per_member",
    "crps_norm",
    "ssr",
    "vcorr_error",
    "spectrum_error",
)
QUICK = {
    "grids": "16x32",
    "levels": "8",
    "widths": ["joint3d=8,auto", "layer2d=8,16"],
    "val_every": 2,
    "plateau_window": 2,
    "plateau_tol": 0.01,
    "plateau_min_steps": 0,
    "max_train_s": 0.5,
    "members": 2,
    "steps": 2,
}
FULL = {
    "grids": "16x32",
    "levels": "8,16,32,64",
    "widths": [f"{k}={v}" for k, v in DEFAULT_WIDTHS.items()],
    "val_every": 200,
    "plateau_window": 5,
    "plateau_tol": 0.005,
    "plateau_min_steps": 1000,
    "max_train_s": 600.0,
    "members": 8,
    "steps": 12,
}


class SweepError(InvalidValueError):
    """An invalid ``--widths`` specification or comparison (named in the message)."""


# ------------------------------------------------------------------------- widths
def rule_width(channels_in: int) -> int:
    """The width rule: ``max(16, 8 ceil(C_in / 24))``, ``C_in / 3`` rounded up to a multiple of 8.

    Args:
        channels_in: the U-Net's input channels (``joint3d``: ``3 L``; ``layer2d``: ``3 (2K + 1)``).
    """
    per_step = CHANNELS_PER_FEATURE * WIDTH_STEP
    return max(RULE_FLOOR, WIDTH_STEP * math.ceil(channels_in / per_step))


def parse_widths(items: Sequence[str]) -> dict[str, list[str]]:
    """``["joint3d=x0.5,x1", "layer2d=8,16"]`` -> ``{"joint3d": ["x0.5", "x1"], ...}``.

    Strategies not named keep :data:`DEFAULT_WIDTHS`.

    Raises:
        SweepError: an unknown strategy, an empty list or a token that is not
            a positive multiple of 8, ``auto`` or ``xF`` with ``F > 0``.
    """
    sweep = {name: spec.split(",") for name, spec in DEFAULT_WIDTHS.items()}
    for item in items:
        name, sep, spec = item.partition("=")
        if not sep or name not in STRATEGIES:
            raise SweepError(
                f"--widths {item!r}: expected STRATEGY=W1,W2 with STRATEGY in {STRATEGIES}"
            )
        tokens = [t.strip() for t in spec.split(",") if t.strip()]
        if not tokens:
            raise SweepError(f"--widths {item!r}: no widths for {name}")
        for token in tokens:
            width_of(token, 3)  # checks the token
        sweep[name] = tokens
    return sweep


def width_of(token: str, channels_in: int) -> int:
    """One ``--widths`` token for a network of ``channels_in`` input channels.

    Raises:
        SweepError: not a positive multiple of 8, ``auto`` or ``xF`` (``F > 0``).
    """
    if token == "auto":
        return rule_width(channels_in)
    if token.startswith("x"):
        try:
            factor = float(token[1:])
        except ValueError:
            factor = math.nan
        if not (math.isfinite(factor) and factor > 0):
            raise SweepError(f"--widths: {token!r} is no multiple xF of the rule with F > 0")
        scaled = round(factor * rule_width(channels_in) / WIDTH_STEP) * WIDTH_STEP
        return max(WIDTH_STEP, scaled)
    if not token.isdigit() or int(token) < WIDTH_STEP or int(token) % WIDTH_STEP:
        raise SweepError(f"--widths: {token!r} is no multiple of {WIDTH_STEP}, 'auto' or 'xF'")
    return int(token)


def sweep_widths(tokens: Sequence[str], channels_in: int, max_width: int) -> list[int]:
    """The distinct widths of ``tokens`` up to ``max_width``, ascending."""
    return sorted({w for w in (width_of(t, channels_in) for t in tokens) if w <= max_width})


def channels_in(strategy: str, levels: int, window: int) -> int:
    """The U-Net's input channels: ``3 L`` for ``joint3d``, ``3 (2 window + 1)`` for ``layer2d``."""
    variables = 3  # u, v, T
    return variables * (levels if strategy == "joint3d" else 2 * window + 1)


# ------------------------------------------------------------------------- Pareto
def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated ``(cost, quality)`` points, by ascending cost.

    Lower is better on both axes. A point is dominated when another is no
    worse on both and better on one; of equal points the first is kept.
    Points with a non-finite value are left out.
    """
    finite = [i for i, (c, q) in enumerate(points) if math.isfinite(c) and math.isfinite(q)]
    # ascending cost, then quality: a point is on the front iff it is strictly
    # better in quality than every point before it
    order = sorted(finite, key=lambda i: (points[i][0], points[i][1], i))
    front: list[int] = []
    best = math.inf
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def cheapest(front: Sequence[tuple[float, float]], quality: float) -> float:
    """The least cost of the points at least as good as ``quality`` (``inf`` if none).

    Points with a non-finite cost or quality count as not reached.
    """
    finite = ((c, q) for c, q in front if math.isfinite(c) and math.isfinite(q))
    return min((c for c, q in finite if q <= quality), default=math.inf)


@dataclass(frozen=True)
class Segment:
    """Qualities ``[best, worst)`` over which one strategy is the cheaper.

    Attributes:
        best, worst: the range of quality (``worst`` may be ``inf``: any worse quality).
        cheaper: the strategy that needs less, or ``"tie"``.
        only: only ``cheaper`` reaches these qualities.
        costs: each strategy's least cost over the range (``inf``: not reached).
    """

    best: float
    worst: float
    cheaper: str
    only: bool
    costs: dict[str, float]


@dataclass(frozen=True)
class Comparison:
    """Two strategies' fronts compared over quality.

    Attributes:
        segments: from the best quality either reaches to any worse one.
        crossovers: qualities at which the cheaper strategy changes (the
            best end of the segment where the new one is cheaper).
    """

    segments: list[Segment]
    crossovers: list[float]


def compare_fronts(fronts: Mapping[str, Sequence[tuple[float, float]]]) -> Comparison:
    """Which of two strategies needs less cost at each quality, and where that changes.

    For every quality ``q`` each strategy's cost is that of its cheapest point
    at least as good as ``q`` (:func:`cheapest`; a step function that only
    changes at the points' qualities). Between consecutive distinct
    qualities of the points the cheaper strategy is constant; adjacent
    ranges with the same answer are merged. A crossover is a quality where
    the cheaper strategy changes from one to the other (ties in between are
    skipped); where only one strategy reaches a quality it is the cheaper.

    Args:
        fronts: two strategies' ``(cost, quality)`` points (fronts or all
            points: dominated points change nothing).

    Raises:
        SweepError: not exactly two strategies.
    """
    if len(fronts) != 2:
        raise SweepError(f"compare_fronts needs two strategies, got {sorted(fronts)}")
    names = list(fronts)
    qualities = sorted({q for pts in fronts.values() for _, q in pts if math.isfinite(q)})
    segments: list[Segment] = []
    for k, quality in enumerate(qualities):
        worst = qualities[k + 1] if k + 1 < len(qualities) else math.inf
        costs = {name: cheapest(fronts[name], quality) for name in names}
        a, b = (costs[n] for n in names)
        cheaper = names[0] if a < b else names[1] if b < a else "tie"
        only = math.isinf(a) != math.isinf(b)
        last = segments[-1] if segments else None
        if last is not None and (last.cheaper, last.only) == (cheaper, only):
            # merged: the range grows, the costs are those at its worst end
            segments[-1] = Segment(last.best, worst, cheaper, only, costs)
        else:
            segments.append(Segment(quality, worst, cheaper, only, costs))
    crossovers = []
    previous = None
    for segment in segments:
        if segment.cheaper == "tie":
            continue
        if previous is not None and segment.cheaper != previous:
            crossovers.append(segment.best)
        previous = segment.cheaper
    return Comparison(segments, crossovers)


def describe(comparison: Comparison, cost: str, quality: str) -> str:
    """One sentence per segment, best quality first, and the crossovers."""
    what = {"mib_per_member": "less memory", "s_per_member": "less time"}.get(cost, f"less {cost}")
    parts = []
    for s in comparison.segments:
        span = (
            f"{quality} >= {s.best:.4g}"
            if math.isinf(s.worst)
            else (f"{s.best:.4g} <= {quality} < {s.worst:.4g}")
        )
        if s.cheaper == "tie":
            parts.append(f"{span}: a tie")
        elif s.only:
            parts.append(f"{span}: only {s.cheaper} reaches it")
        else:
            parts.append(f"{span}: {s.cheaper} needs {what}")
    crossing = (
        "crossover at " + ", ".join(f"{q:.4g}" for q in comparison.crossovers)
        if comparison.crossovers
        else "no crossover within the sweep"
    )
    return "; ".join(parts) + f". {crossing}."


def _segment_json(segment: Segment) -> dict[str, Any]:
    """A segment for JSON, which has no infinity: ``worst`` ``None`` is unbounded, a cost
    ``None`` not reached."""
    out = asdict(segment)
    out["worst"] = None if math.isinf(segment.worst) else segment.worst
    out["costs"] = {k: None if math.isinf(v) else v for k, v in segment.costs.items()}
    return out


def analyse(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Fronts and their comparison per grid, ``L``, cost and quality (the JSON's ``pareto``).

    Each entry: ``grid``, ``levels``, ``cost``, ``quality``, ``fronts`` (per
    strategy its non-dominated priors ``{width, cost, quality}``, cheapest
    first) and, where both strategies have priors, ``segments``
    (:class:`Segment`; ``worst`` ``None``: unbounded), ``crossovers`` and a
    ``statement`` (:func:`describe`).
    """
    out = []
    for grid, levels in dict.fromkeys((r["grid"], r["levels"]) for r in rows):
        here = [r for r in rows if r["grid"] == grid and r["levels"] == levels]
        for cost in COSTS:
            for quality in QUALITIES:
                points = {}
                fronts = {}
                for strategy in STRATEGIES:
                    mine = [r for r in here if r["strategy"] == strategy]
                    pts = [(float(r[cost]), float(r[quality])) for r in mine]
                    points[strategy] = pts
                    fronts[strategy] = [
                        {"width": mine[i]["width"], "cost": pts[i][0], "quality": pts[i][1]}
                        for i in pareto_front(pts)
                    ]
                entry: dict[str, Any] = {
                    "grid": grid,
                    "levels": levels,
                    "cost": cost,
                    "quality": quality,
                    "fronts": fronts,
                }
                if all(points[s] for s in STRATEGIES):
                    comparison = compare_fronts(points)
                    entry["segments"] = [_segment_json(s) for s in comparison.segments]
                    entry["crossovers"] = comparison.crossovers
                    entry["statement"] = describe(comparison, cost, quality)
                out.append(entry)
    return out


# ---------------------------------------------------------------------- training
def train_width(spec: dict[str, Any]) -> dict[str, Any]:
    """Child: train one prior of one width to its plateau (or time limit); its curve and steps."""
    from genda.models.training import PlateauStop, TrainConfig
    from genda.orchestration.train import train_prior

    torch.set_num_threads(1)
    strategy, levels = spec["strategy"], spec["levels"]
    config = TrainConfig(
        steps=MAX_STEPS,
        batch_size=study.train_batch_size(strategy, levels),
        lr=LEARNING_RATE,
        lr_schedule="constant",
        warmup_steps=spec["val_every"],
        val_every=spec["val_every"],
        val_samples=VAL_SAMPLES,
        log_every=spec["val_every"],
        checkpoint_every=MAX_STEPS,
        device=spec["device"],
    )
    plateau = spec["plateau"]
    rule = PlateauStop(
        tol=plateau["tol"],
        window=plateau["window"],
        max_wall_s=plateau["max_train_s"],
        min_steps=plateau["min_steps"],
    )
    tick = time.perf_counter()
    run = train_prior(
        spec["archive"],
        spec["out"],
        strategy=strategy,
        strategy_options=spec["options"],
        architecture={"base_channels": spec["width"], **UNET_REST},
        config=config,
        val_gap_hours=VAL_GAP_HOURS,
        coordinates="whitened",
        overwrite=True,
        progress=False,
        stop=rule,
    )
    result = run.result
    curve = [
        [int(r["step"]), float(r["wall_s"]), float(r["val_loss"])]
        for r in result.history
        if r.get("val_loss") is not None
    ]
    trained = [loss for step, _, loss in curve if step > 0]
    return {
        "parameters": result.parameters,
        "train_steps": result.step,
        "train_batch": config.batch_size,
        "stopped": result.stopped or "max_steps",
        "train_wall_s": time.perf_counter() - tick,
        "train_loop_s": result.wall_seconds,
        "step_s": config.batch_size / result.samples_per_second
        if result.samples_per_second
        else math.nan,
        "val_loss_start": result.initial_val_loss,
        "val_loss": result.val_loss,
        "val_loss_best": min(trained) if trained else result.val_loss,
        "curve": curve,
    }


CHILDREN = {"train": train_width}


# ------------------------------------------------------------------------ estimate
def estimate(
    configs: Sequence[dict[str, Any]], plateau: Mapping[str, Any], jobs: int, device: str
) -> str:
    """Measure each prior's training step time (synthetic batches) and bound the training time.

    A prior trains at least ``min_steps`` steps (unless the time limit comes
    first) and at most ``max_train_s``; the markdown table lists both per
    prior and sums them, over one thread and over ``jobs``.
    """
    from genda.grid import Grid

    torch.set_num_threads(1)
    lines = [
        "| grid | L | variant | width | s / step | s to min steps | bound (s) |",
        "|" + "---|" * 7,
    ]
    low = high = 0.0
    for c in configs:
        grid = Grid.gaussian(*c["grid"], c["levels"])
        unet = {"base_channels": c["width"], **UNET_REST}
        step_s = study.time_training_step(c["strategy"], c["options"], grid, unet, device)
        least = min(plateau["max_train_s"], plateau["min_steps"] * step_s)
        low += least
        high += plateau["max_train_s"]
        lines.append(
            f"| {c['tag']} | {c['levels']} | {c['variant']} | {c['width']} | {step_s:.3g} "
            f"| {plateau['min_steps'] * step_s:.0f} | {least:.0f}-{plateau['max_train_s']:.0f} |"
        )
    lines.append(
        f"\n{len(configs)} priors: training {low / 3600:.2f}-{high / 3600:.2f} h of one thread, "
        f"{low / 3600 / jobs:.2f}-{high / 3600 / jobs:.2f} h with --jobs {jobs} "
        "(sampling and data not included)"
    )
    return "\n".join(lines)


# -------------------------------------------------------------------------- report
def markdown(rows: Sequence[Mapping[str, Any]], pareto: Sequence[Mapping[str, Any]]) -> str:
    """The priors' table and, per grid and ``L``, the fronts and crossovers."""
    table_rows = [
        {**r, "stopped": r["stopped"] + ("" if r["stopped"] == "plateau" else " (!)")} for r in rows
    ]
    text = study.markdown_table(table_rows, TABLE_COLUMNS)
    text += (
        "\n`stopped`: `plateau` (the rule), `time` (the --max-train-s limit: not at its "
        "plateau).\n\nFronts (widths of the non-dominated priors, cheapest first) and "
        "crossovers\n\n| grid | L | cost | quality | joint3d front | layer2d front | "
        "crossover | segments |\n|---|---|---|---|---|---|---|---|\n"
    )
    for p in pareto:
        fronts = [",".join(str(f["width"]) for f in p["fronts"][s]) or "-" for s in STRATEGIES]
        crossing = ", ".join(f"{q:.4g}" for q in p.get("crossovers", [])) or "none within the sweep"
        statement = p.get("statement", "one strategy has no priors here").rsplit(". ", 1)[0]
        text += (
            f"| {p['grid']} | {p['levels']} | {p['cost']} | {p['quality']} | {fronts[0]} | "
            f"{fronts[1]} | {crossing} | {statement} |\n"
        )
    return text


def plot(
    rows: Sequence[Mapping[str, Any]], pareto: Sequence[Mapping[str, Any]], out: Path
) -> list[Path]:
    """Cost against quality, one panel per ``L``, both strategies, points labelled by width.

    One PNG per grid, cost and quality of :data:`FIGURE_QUALITIES`: every
    prior as a point (hollow when its training hit the time limit), each
    strategy's front as a staircase, crossovers as dashed lines.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    colours = {"joint3d": "C0", "layer2d": "C1"}
    paths = []
    for grid in dict.fromkeys(r["grid"] for r in rows):
        levels = sorted({r["levels"] for r in rows if r["grid"] == grid})
        for cost, cost_label in COSTS.items():
            for quality in FIGURE_QUALITIES:
                fig, axes = plt.subplots(
                    1, len(levels), figsize=(max(4.6, 3.6 * len(levels)), 3.6), squeeze=False
                )
                for ax, n in zip(axes[0], levels, strict=True):
                    for strategy in STRATEGIES:
                        mine = [
                            r
                            for r in rows
                            if r["grid"] == grid and r["levels"] == n and r["strategy"] == strategy
                        ]
                        for r in mine:
                            plateau = r["stopped"] == "plateau"
                            ax.scatter(
                                r[quality],
                                r[cost],
                                s=28,
                                edgecolors=colours[strategy],
                                facecolors=colours[strategy] if plateau else "none",
                                zorder=3,
                            )
                            ax.annotate(
                                str(r["width"]),
                                (r[quality], r[cost]),
                                textcoords="offset points",
                                xytext=(4, 3),
                                fontsize=7,
                            )
                        entry = next(
                            p
                            for p in pareto
                            if (p["grid"], p["levels"], p["cost"], p["quality"])
                            == (grid, n, cost, quality)
                        )
                        # the front as the cheapest cost at each quality: a staircase from
                        # the best quality on, held to the worst quality of the panel
                        front = sorted(entry["fronts"][strategy], key=lambda f: f["quality"])
                        if front:
                            worst = max(
                                r[quality] for r in rows if r["grid"] == grid and r["levels"] == n
                            )
                            xs = [f["quality"] for f in front] + [worst]
                            ys = [f["cost"] for f in front] + [front[-1]["cost"]]
                            ax.step(
                                xs,
                                ys,
                                where="post",
                                color=colours[strategy],
                                lw=1.0,
                                label=strategy,
                            )
                        for q in entry.get("crossovers", []):
                            ax.axvline(q, color="0.4", lw=0.8, ls="--")
                    ax.set_yscale("log")
                    ax.yaxis.set_major_formatter(ScalarFormatter())
                    ax.yaxis.set_minor_formatter(ScalarFormatter())
                    ax.tick_params(axis="y", which="minor", labelsize=7)
                    ax.set_xlabel(QUALITIES[quality])
                    ax.set_title(f"{grid} x {n} levels", fontsize=9)
                axes[0][0].set_ylabel(cost_label)
                axes[0][0].legend(fontsize=8)
                fig.suptitle("by width; hollow: stopped at the time limit", fontsize=9)
                fig.tight_layout()
                path = out / f"{grid}-{cost}-{quality}.png"
                write_file(path, lambda target, f=fig: f.savefig(target, dpi=110, format="png"))
                plt.close(fig)
                paths.append(path)
    return paths


# --------------------------------------------------------------------------- main
def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--grids", help=f"nlat x nlon, comma-separated ({FULL['grids']})")
    parser.add_argument("--levels", help=f"level counts ({FULL['levels']}; at most 64)")
    parser.add_argument(
        "--widths",
        nargs="+",
        help="widths per strategy, e.g. joint3d=x0.5,x1,x2 layer2d=8,16,32: a multiple of 8, "
        "'auto' (the width rule) or 'xF' (F times it)",
    )
    parser.add_argument("--max-width", type=int, default=64, help="leave out wider priors (64)")
    parser.add_argument("--window", type=int, default=1, help="layer2d's neighbours each side (1)")
    parser.add_argument("--val-every", type=int, help="steps between validations (200)")
    parser.add_argument(
        "--plateau-tol",
        type=float,
        help="relative improvement of the best loss that counts (0.005)",
    )
    parser.add_argument("--plateau-window", type=int, help="validations it is measured over (5)")
    parser.add_argument("--plateau-min-steps", type=int, help="no plateau stop before (1000)")
    parser.add_argument("--max-train-s", type=float, help="wall-time limit per prior (600)")
    parser.add_argument("--members", type=int, help="posterior members per prior (8)")
    parser.add_argument("--steps", type=int, help="MMPS sampler steps (12)")
    parser.add_argument("--jobs", type=int, default=2, help="stages run at once")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", type=Path, help="model runs (default: strategies.py's cache)")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "strategies_pareto")
    parser.add_argument("--figures", type=Path, default=FIGURES)
    parser.add_argument("--fresh", action="store_true", help="redo every cached stage")
    parser.add_argument(
        "--estimate",
        action="store_true",
        help="measure each prior's step time and print the training compute; run nothing",
    )
    parser.add_argument("--quick", action="store_true", help="a tiny study for tests")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return args
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.data is None:
        args.data = args.work if args.quick else ROOT / "outputs" / "strategies"
    try:
        args.sweep = parse_widths(args.widths)
    except SweepError as error:
        parser.error(str(error))
    if args.val_every < 1 or args.plateau_window < 1 or args.max_train_s <= 0:
        parser.error("--val-every and --plateau-window must be >= 1, --max-train-s positive")
    return args


def _cached(path: Path, stage: str, spec: dict[str, Any], logs: Path, script: Path) -> dict:
    """``stage`` of ``script`` for ``spec``, or its result file ``path`` if there is one."""
    if path.exists():
        return json.loads(path.read_text())
    result = study._run_child(stage, spec, logs / f"{stage}-{spec['name']}.log", script=script)
    write_file(path, json.dumps(result, indent=1))
    return result


def main() -> None:
    from genda.assimilation.posterior import PosteriorSettings
    from genda.models.coordinates import coupling_for

    args = _arguments()
    if args.child:
        stage, spec = args.child
        print(json.dumps(CHILDREN[stage](json.loads(spec))))
        return
    grids = [tuple(int(n) for n in g.split("x")) for g in args.grids.split(",")]
    levels = [int(n) for n in args.levels.split(",")]
    data, source_levels, model_layers = (
        (study.QUICK_DATA, 8, 8)
        if args.quick
        else (study.DATA, study.SOURCE_LEVELS, study.MODEL_LAYERS)
    )
    if max(levels) > source_levels:
        sys.exit(f"at most {source_levels} levels")
    plateau = {
        "tol": args.plateau_tol,
        "window": args.plateau_window,
        "min_steps": args.plateau_min_steps,
        "max_train_s": args.max_train_s,
    }
    layered = f"layer2d-w{args.window}"

    # the sweep: one prior per grid, L, strategy and width
    configs = []
    for nlat, nlon in grids:
        tag = study._grid_tag(nlat, nlon)
        for n in levels:
            for strategy in STRATEGIES:
                options = {} if strategy == "joint3d" else {"window": args.window}
                c_in = channels_in(strategy, n, args.window)
                for width in sweep_widths(args.sweep[strategy], c_in, args.max_width):
                    variant = strategy if strategy == "joint3d" else layered
                    configs.append(
                        {
                            "tag": tag,
                            "grid": [nlat, nlon],
                            "levels": n,
                            "strategy": strategy,
                            "options": options,
                            "variant": variant,
                            "width": width,
                            "channels_in": c_in,
                            "rule_width": rule_width(c_in),
                        }
                    )
    if args.estimate:
        print(estimate(configs, plateau, args.jobs, args.device))
        return

    work: Path = args.work
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"

    # 1. data: strategies.py's model runs and observations, one child per grid
    data_tasks = []
    for nlat, nlon in grids:
        tag = study._grid_tag(nlat, nlon)
        spec = {
            "name": tag,
            "dir": str(args.data / tag),
            "grid": [nlat, nlon],
            "levels": levels,
            "data": data,
            "source_levels": source_levels,
            "model_layers": model_layers,
            "device": args.device,
        }
        log = logs / f"data-{tag}.log"
        data_tasks.append(
            (tag, lambda s=spec, g=log: study._run_child("data", s, g, script=STUDY_SCRIPT))
        )
    windows = study._parallel(args.jobs, data_tasks, "model runs")

    # 2. training to the plateau: one child per prior, cached by its result file, whose
    # name holds the settings (and layer2d's coupling, which the package decides)
    rule = (
        f"p{args.plateau_tol:g}-w{args.plateau_window}-m{args.plateau_min_steps}"
        f"-v{args.val_every}-t{args.max_train_s:g}"
    )

    def name(c: dict[str, Any]) -> str:
        return f"{c['tag']}-L{c['levels']}-{c['variant']}-c{c['width']}"

    def prior(c: dict[str, Any]) -> Path:
        coupling = coupling_for(c["strategy"])
        return (
            work
            / c["tag"]
            / "priors"
            / f"L{c['levels']}-{c['variant']}-c{c['width']}-{coupling}-{rule}"
        )

    train_tasks = []
    for c in configs:
        spec = {
            "name": name(c),
            "strategy": c["strategy"],
            "options": c["options"],
            "levels": c["levels"],
            "width": c["width"],
            "val_every": args.val_every,
            "plateau": plateau,
            "device": args.device,
            "archive": str(args.data / c["tag"] / f"train-L{c['levels']}.zarr"),
            "out": str(prior(c)),
        }
        result = prior(c).parent / f"{prior(c).name}.json"
        train_tasks.append(
            (spec["name"], lambda r=result, s=spec: _cached(r, "train", s, logs, Path(__file__)))
        )
    trained = study._parallel(args.jobs, train_tasks, "priors to their plateau")

    # 3. posterior ensembles: strategies.py's sampling stage, one child per prior
    sampler = PosteriorSettings().sampler
    sampling = f"-m{args.members}-s{args.steps}-{sampler}"
    sample_tasks = []
    for c in configs:
        spec = {
            "name": name(c),
            "checkpoint": str(prior(c)),
            "obs": str(args.data / c["tag"] / "obs.parquet"),
            "heldout": str(args.data / c["tag"] / f"heldout-L{c['levels']}.zarr"),
            "time": windows[c["tag"]]["time"],
            "members": args.members,
            "steps": args.steps,
            "device": args.device,
            "precision": "fp32",
            "compile": None,
            "max_batch": 0,
        }
        result = work / c["tag"] / "posteriors" / f"{prior(c).name}{sampling}.json"
        sample_tasks.append(
            (spec["name"], lambda r=result, s=spec: _cached(r, "sample", s, logs, STUDY_SCRIPT))
        )
    sampled = study._parallel(args.jobs, sample_tasks, "posteriors")

    references = {
        (c["tag"], c["levels"]): study.truth_reference(
            args.data / c["tag"] / f"heldout-L{c['levels']}.zarr", windows[c["tag"]]["time"]
        )
        for c in {(c["tag"], c["levels"]): c for c in configs}.values()
    }
    rows = []
    for c in configs:
        key = name(c)
        measured = {**sampled[key], **trained[key]}  # the training's parameter count
        rows.append(
            {
                "grid": c["tag"],
                "levels": c["levels"],
                "strategy": c["strategy"],
                "variant": c["variant"],
                "strategy_options": c["options"],
                "width": c["width"],
                "channels_in": c["channels_in"],
                "rule_width": c["rule_width"],
                **measured,
                "ssr_gap": abs(1.0 - measured["ssr"]),
                **references[(c["tag"], c["levels"])],
            }
        )
    pareto = analyse(rows)
    settings = {
        "grids": [study._grid_tag(*g) for g in grids],
        "levels": levels,
        "widths": args.sweep,
        "max_width": args.max_width,
        "width_rule": "max(16, 8 ceil(C_in / 24))",
        "unet": UNET_REST,
        "layer2d_window": args.window,
        "layer2d_coupling": coupling_for("layer2d"),
        "coordinates": "whitened",
        "learning_rate": LEARNING_RATE,
        "lr_schedule": "constant",
        "val_every": args.val_every,
        "val_samples": VAL_SAMPLES,
        "val_gap_hours": VAL_GAP_HOURS,
        "plateau": plateau,
        "members": args.members,
        "sampling_steps": args.steps,
        "sampler": sampler,
        "guidance": "mmps",
        "covariance": "jacobian",
        "device": args.device,
        "cpu_threads_per_stage": 1,
        "jobs": args.jobs,
        "data": data,
        "source_levels": source_levels,
        "model_layers": model_layers,
        "windows": windows,
    }
    cuda = torch.device(args.device).type == "cuda"
    payload = {
        "benchmark": "strategies_pareto",
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "device_name": torch.cuda.get_device_name(0) if cuda else machine()["cpu"],
        "settings": settings,
        "rows": rows,
        "pareto": pareto,
    }
    out_dir = work if args.quick else RESULTS
    out_json = out_dir / f"strategies_pareto-{machine_tag() if cuda else 'cpu'}.json"
    write_file(out_json, json.dumps(payload, indent=2, default=float) + "\n")
    title = (
        f"strategies at equal quality ({args.device}, {payload['device_name']}; plateau "
        f"{args.plateau_tol:g} over {args.plateau_window} validations every {args.val_every} "
        f"steps, at most {args.max_train_s:g} s; {args.members} members, {args.steps} MMPS steps)"
    )
    write_file(out_json.with_suffix(".md"), f"{title}\n\n{markdown(rows, pareto)}")
    figures = plot(rows, pareto, work / "figures" if args.quick else args.figures)
    print_table(title, [{k: row.get(k) for k in TABLE_COLUMNS} for row in rows])
    print_table(
        "crossovers",
        [
            {
                "grid": p["grid"],
                "L": p["levels"],
                "cost": p["cost"],
                "quality": p["quality"],
                "crossover": ", ".join(f"{q:.4g}" for q in p.get("crossovers", []))
                or "none within the sweep",
            }
            for p in pareto
        ],
    )
    print(f"wrote {out_json} and {len(figures)} figures")


if __name__ == "__main__":
    main()
