"""Skill of the posterior in an observing-system simulation experiment (OSSE).

    python benchmarks/osse.py [--truth heldout.zarr --archive train.zarr] [--time 2000-02-10T12:00]
    python benchmarks/osse.py --truths heldout.zarr[,heldout3.zarr] --archive train.zarr --windows 8

Without ``--truth`` and ``--archive`` the two model runs of the shipped
priors' documentation (``docs/training.md``) are made under ``--work`` first
(120 days with seed 1, 20 days with seed 2; about 11 minutes on one CPU
thread) and reused by later runs.

A held-out model run is the truth. The real station catalogue (meteor radars,
lidars) and an MLS-like limb track observe it with their errors
(``genda observe``), two stations are withheld for verification, and every
method makes an ensemble of the same window:

* the diffusion prior without observations (``prior``);
* the diffusion posterior with MMPS, DPS and SDA guidance (``joint3d``), and
  MMPS with the ``layer2d`` prior;
* the classical baselines from the training archive: climatology, localised
  OI and an EnKF with a climatological ensemble.

Each is scored against the truth (``genda evaluate``: CRPS, RMSE, spread,
spread-skill, on the grid and at the withheld stations). Writes
``benchmarks/results/osse-<machine>.json``, the reports under ``--work`` and
prints a table.

With ``--windows N`` the experiment is repeated on ``N`` windows per truth
run, on different days and at hours 0, 3, ..., 21 of the day, and the scores
are averaged over windows (mean and standard deviation). The localisation of
the OI, the EnKF and the EnOI (OI whose ``B`` is the sample covariance of
every archive state away from the window) is first tuned on ``--tune-windows``
other windows of the first truth run (other days, other hours, never scored):
every pair of Gaspari-Cohn half-widths of ``--horizontal-km`` x
``--vertical-km`` is tried and the one with the lowest ensemble-mean RMSE,
summed over the variables in units of their climatological standard
deviation, is used on the scored windows. The same is done for an EnOI and an
EnKF whose ensemble is the archive states within an hour of the window's time
of day (``enoi-hour``, ``enkf-hour``): the tides, which dominate the region,
then share the truth's phase. The members' power per degree, pooled over
the windows, is compared with that of a long model run (``--reference``,
:mod:`osse_pooled`). Writes
``benchmarks/results/osse-windows-<machine>.json`` (after every window, so
that an interrupted run keeps what it measured) and the tuning curves
``--figures/osse_tuning.png``.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.progress import Progress

from _common import print_table, write_result
from genda.assimilation.baselines import (
    Localization,
    _apply_operator,
    _solver,
    climatology_indices,
    hour_matched_indices,
)
from genda.assimilation.posterior import PosteriorSettings
from genda.evaluation.report import evaluate_paths
from genda.grid import Grid
from genda.observations import observe_to_file
from genda.observations.operators import ObservationOperator
from genda.observations.table import as_datetime64
from genda.orchestration.assimilate import assimilate_window, load_window_observations
from genda.orchestration.baseline import (
    BaselineSummary,
    baseline_generators,
    baseline_window,
    hour_matched_generator,
)
from genda.orchestration.simulate import simulate_archive
from genda.orchestration.summaries import WindowSummary
from genda.simulator import SimulatorConfig
from genda.storage.readers import open_archive
from osse_pooled import (
    pooled_figure,
    pooled_member_power,
    pooled_rank_histograms,
    reference_power,
    window_member_power,
)

CLIMATOLOGY_SIZE = 200
"""``K`` of the OI and the EnKF (``baseline_window``'s default)."""

EXCLUDE_HOURS = 48.0
"""Archive times this close to a window are never drawn (``baseline_window``'s default)."""

LOCALISED = ("oi", "enkf", "enoi")
"""The baselines of ``baseline_window`` whose localisation is tuned."""

HOUR_MATCHED = ("enoi-hour", "enkf-hour")
"""EnOI and EnKF whose ensemble is the archive states within an hour of the window's time of
day (away from the window): the migrating tides, which dominate the region, then share their
phase with the truth's, and ``B`` holds the day-to-day variability rather than the tides."""


def _model_run(path: Path, days: float, seed: int) -> Path:
    """``genda simulate --out path --days days --seed seed`` unless ``path`` exists."""
    if not path.exists():
        print(f"simulating {days:g} days with seed {seed} into {path}")
        simulate_archive(path, SimulatorConfig(), days=days, seed=seed)
    return path


def _run_method(
    method: str,
    args: argparse.Namespace,
    obs: Path,
    when: str,
    store: Path,
    localisation: dict[str, tuple[float, float]],
    eligible: int,
) -> BaselineSummary | WindowSummary:
    """Make ``method``'s ensemble of the window at ``when`` in ``store``; return its summary."""
    if method in HOUR_MATCHED or method in ("climatology", "oi", "enkf", "enoi"):
        hour_matched = method in HOUR_MATCHED
        horizontal, vertical = localisation.get(method, (1500.0, 15.0))
        return baseline_window(
            args.archive,
            obs,
            when,
            store,
            # EnOI is the OI analysis with every eligible archive state behind B
            method="oi" if method == "enoi" else method.removesuffix("-hour"),
            members=args.members,
            climatology_size=None
            if hour_matched
            else (eligible if method == "enoi" else CLIMATOLOGY_SIZE),
            hour_matched=hour_matched,
            seed=args.seed,
            horizontal_km=horizontal,
            vertical_km=vertical,
            exclude_hours=EXCLUDE_HOURS,
            overwrite=True,
        )
    layer2d = method.endswith("layer2d")
    guidance, *variant = method.split("-")
    return assimilate_window(
        args.layer2d_checkpoint if layer2d else args.checkpoint,
        None if guidance == "prior" else obs,
        when,
        store,
        members=args.layer2d_members if layer2d else args.members,
        settings=PosteriorSettings(
            method="mmps" if guidance == "prior" else guidance,
            # "mmps-prior": MMPS with the whitened prior's Gaussian Tweedie covariance
            covariance="prior" if "prior" in variant else "jacobian",
            steps=args.steps,
            batch_size=4,
        ),
        seed=args.seed,
        overwrite=True,
        progress=False,
    )


def _score(
    method: str,
    summary: BaselineSummary | WindowSummary,
    seconds: float,
    metrics: dict[str, Any],
) -> dict[str, Any]:
    """One table row from a window's summary and ``genda evaluate`` metrics."""
    row: dict[str, Any] = {"method": method, "members": summary.members, "seconds": seconds}
    fit = summary.fit
    row["obs_fit"] = fit.rms_normalised_innovation if fit is not None else float("nan")
    for name, entry in metrics["ensemble"]["variables"].items():
        total = entry["total"]
        row[f"{name}_crps"] = total["crps"]
        row[f"{name}_rmse"] = total["rmse"]
        row[f"{name}_ssr"] = total["spread_skill"]
    points = (metrics.get("withheld") or {}).get("variables", {})
    for name, entry in points.items():
        row[f"withheld_{name}_crps"] = entry["with_obs_error"]["crps"]
    return row


def one_window(args: argparse.Namespace) -> None:
    """The OSSE of a single window (``--time``), every method in ``--methods``."""
    work = args.work
    obs = work / "obs.parquet"
    drawn = observe_to_file(
        args.truth,
        args.time,
        "radars,lidars,limb",
        obs,
        args.seed,
        withhold=[s for s in args.withhold.split(",") if s],
        overwrite=True,  # the benchmark's own work folder: redrawn every run
    )
    withheld = drawn.withheld_path
    eligible = _eligible(open_archive(args.archive)["time"].values, args.time)

    rows: list[dict[str, Any]] = []
    for method in args.methods.split(","):
        store = work / f"{method}.zarr"
        start = time.perf_counter()
        summary = _run_method(method, args, obs, args.time, store, {}, eligible)
        seconds = time.perf_counter() - start
        metrics = evaluate_paths(
            store, args.truth, work / f"report-{method}", obs_path=obs, withheld_path=withheld
        )
        rows.append(_score(method, summary, seconds, metrics))
        print_table(f"OSSE at {args.time} (so far)", rows)

    path = write_result(
        "osse",
        rows,
        {
            "time": args.time,
            # file names only: the result says what was run, not where
            "truth": args.truth.name,
            "archive": args.archive.name,
            "observations": drawn.observations,
            "withheld": drawn.withheld,
            "steps": args.steps,
            "sampler": PosteriorSettings().sampler,
            "work": work.name,
        },
    )
    print(f"wrote {path}")


# ---------------------------------------------------------------------------- multi-window
def window_times(times: np.ndarray, count: int, *, shift: float = 0.0) -> list[str]:
    """``count`` window centres spread over the days of ``times``, at different hours of the day.

    Window ``i`` lies on day ``i + shift`` of ``count`` equal spans of the run
    (a day's margin at either end) at hour ``24 i / count`` of the day (one
    more when ``shift`` is not 0), moved to the archive's nearest time. A
    ``shift`` in ``(0, 1)`` gives windows on other days and at other hours
    than ``shift = 0``: the tuning windows, never scored.

    Args:
        times: ``(T,)`` the truth run's times (datetime64, hourly or finer).
        count: how many windows, >= 1.
        shift: fraction of a span to move every window by.

    Returns:
        ISO times to the minute, in time order.
    """
    t = np.asarray(times).astype("datetime64[m]")
    first = t[0].astype("datetime64[D]") + np.timedelta64(1, "D")
    last = t[-1].astype("datetime64[D]") - np.timedelta64(1, "D")
    span = int((last - first).astype(int)) / count
    out = []
    for i in range(count):
        day = first + np.timedelta64(int((i + shift) * span), "D")
        hour = (round(24 * i / count) + (1 if shift else 0)) % 24
        when = day.astype("datetime64[m]") + np.timedelta64(60 * hour, "m")
        out.append(str(t[np.argmin(np.abs((t - when).astype(np.int64)))]))
    return out


def _eligible(times: np.ndarray, when: str) -> int:
    """How many archive times lie more than :data:`EXCLUDE_HOURS` from ``when``."""
    t = np.asarray(times).astype("datetime64[ns]")
    hours = np.abs((t - np.datetime64(when, "ns")).astype(np.int64)) / 3.6e12
    return int((hours > EXCLUDE_HOURS).sum())


def _normalised_rmse(
    field: np.ndarray, truth: np.ndarray, area: np.ndarray, std: np.ndarray
) -> float:
    """Area-weighted RMSE per variable over the grid, in units of ``std``, summed over variables."""
    error = (field - truth) ** 2  # (V, L, H, W)
    mse = np.einsum("vlhw,h->v", error, area) / (error.shape[1] * error.shape[3])
    return float((np.sqrt(mse) / std).sum())


def same_hour_indices(times: np.ndarray, when: str, seed: int) -> np.ndarray:
    """Archive states within an hour of ``when``'s time of day, more than :data:`EXCLUDE_HOURS` away.

    In a random order fixed by ``seed`` and ``when`` (``genda baseline``'s hour-matched
    draw): the first ones are the EnKF's members.
    """
    centre = as_datetime64(when)
    return hour_matched_indices(
        times, centre, hour_matched_generator(seed, centre), exclude_hours=EXCLUDE_HOURS
    )


def tune_window(
    states: np.ndarray,
    times: np.ndarray,
    truth: np.ndarray,
    obs: pd.DataFrame,
    grid: Grid,
    when: str,
    seed: int,
    members: int,
    settings: list[tuple[float, float]],
    std: np.ndarray,
) -> dict[str, list[float]]:
    """Score every localisation of ``settings`` for the OI, the EnKF and the EnOI on one window.

    The ensembles are those ``baseline_window`` draws for ``seed`` at
    ``when`` (the same generators), and the analyses are those of
    :func:`genda.assimilation.baselines.localized_analysis`; only the
    unlocalised ``B H^T`` and ``H B H^T`` are computed once per ensemble and
    Schur-multiplied by each taper in turn, which is what makes a grid of
    settings affordable with ``K`` in the thousands. The EnKF is scored by the
    mean of its members, which is linear in the perturbed innovations, so the
    mean innovation's single solve gives it.

    Args:
        states: ``(T, V, L, H, W)`` float32, every state of the training archive.
        times: ``(T,)`` their times.
        truth: ``(V, L, H, W)`` the truth at ``when``.
        obs: the window's observations, validated on ``grid``.
        grid: the archive's grid.
        when: the window's centre.
        seed: the experiment's seed.
        members: EnKF members.
        settings: ``(horizontal_km, vertical_km)`` pairs.
        std: ``(V,)`` the variables' climatological standard deviations.

    Returns:
        ``{method: [summed normalised RMSE per setting]}``, the methods of
        :data:`LOCALISED` and :data:`HOUR_MATCHED`.
    """
    centre = as_datetime64(when)
    climatology_rng, perturbation_rng = baseline_generators(seed, centre)
    small = climatology_indices(times, centre, CLIMATOLOGY_SIZE, climatology_rng, EXCLUDE_HOURS)
    everything = climatology_indices(
        times, centre, _eligible(times, when), np.random.default_rng(0), EXCLUDE_HOURS
    )
    same_hour = same_hour_indices(times, when, seed)
    operator = ObservationOperator.from_table(obs, grid)
    y = obs["value"].to_numpy(dtype=np.float64)
    sigma = obs["sigma"].to_numpy(dtype=np.float64)
    m = operator.n_obs
    nvar, nlev, nlat, nlon = grid.shape
    block = nlat * nlon
    area = grid.area_weights()
    # The perturbations the EnKF members get in baseline_window (the same stream, drawn first).
    perturbations = perturbation_rng.standard_normal((members, m)) * sigma
    tapers = {}
    for horizontal, vertical in settings:
        loc = Localization(horizontal, vertical)
        rho_h, rho_v = loc.grid_to_obs(grid, obs)
        tapers[horizontal, vertical] = (rho_h, rho_v, loc.obs_to_obs(obs))

    scores: dict[str, list[float]] = {name: [] for name in LOCALISED + HOUR_MATCHED}
    sets = ((("oi", "enkf"), small), (("enoi",), everything), (HOUR_MATCHED, same_hour))
    for names, indices in sets:
        flat = states[indices].reshape(indices.size, -1)
        k = indices.size
        x_b = flat.mean(axis=0, dtype=np.float64)
        hx = _apply_operator(operator, flat)
        hx_b = hx.mean(axis=0)
        hx_anomaly = hx - hx_b
        hbh_raw = (hx_anomaly.T @ hx_anomaly) / (k - 1)
        gain_raw = np.empty((flat.shape[1], m), dtype=np.float64)  # B H^T, unlocalised
        for start in range(0, flat.shape[1], block):
            rows = slice(start, start + block)
            gain_raw[rows] = (flat[:, rows].astype(np.float64) - x_b[rows]).T @ hx_anomaly / (k - 1)
        innovations = np.stack([y - hx_b, (y + perturbations - hx[:members]).mean(axis=0)], axis=1)
        members_mean = flat[:members].mean(axis=0, dtype=np.float64)
        for setting in settings:
            rho_h, rho_v, rho_obs = tapers[setting]
            weights = _solver(hbh_raw * rho_obs + np.diag(sigma**2))(innovations)
            increments = np.empty((flat.shape[1], 2), dtype=np.float64)
            for var, level in itertools.product(range(nvar), range(nlev)):
                rows = slice((var * nlev + level) * block, (var * nlev + level + 1) * block)
                increments[rows] = (gain_raw[rows] * (rho_h * rho_v[level])) @ weights
            analysis = (x_b + increments[:, 0]).reshape(grid.shape)
            scores[names[0]].append(_normalised_rmse(analysis, truth, area, std))
            if len(names) > 1:
                ensemble_mean = (members_mean + increments[:, 1]).reshape(grid.shape)
                scores[names[1]].append(_normalised_rmse(ensemble_mean, truth, area, std))
        del gain_raw
    return scores


def _tuning_figure(
    curves: dict[str, np.ndarray], horizontal: list[float], vertical: list[float], path: Path
) -> None:
    """One panel per baseline: mean summed normalised RMSE against the horizontal half-width."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.6), sharey=False)
    for ax, (name, table) in zip(np.atleast_1d(axes), curves.items(), strict=True):
        for j, v in enumerate(vertical):
            ax.plot(horizontal, table[:, j], marker="o", label=f"{v:g} km")
        best = np.unravel_index(np.argmin(table), table.shape)
        ax.plot(horizontal[best[0]], table[best], marker="*", color="k", markersize=14)
        ax.set_xscale("log")
        ax.set_xlabel("horizontal half-width (km)")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("RMSE u + v + T (climatological std)")
    np.atleast_1d(axes)[-1].legend(title="vertical half-width", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _mean_std(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over windows of every numeric column of one method's rows."""
    out: dict[str, Any] = {"method": rows[0]["method"], "windows": len(rows)}
    for key, value in rows[0].items():
        if isinstance(value, int | float) and key != "window":
            values = np.array([row[key] for row in rows], dtype=np.float64)
            out[key] = float(values.mean())
            out[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
    return out


def multi_window(args: argparse.Namespace) -> None:
    """Tune the localised baselines on unscored windows, then score every method on ``--windows``."""
    work = args.work
    truths = [Path(p) for p in args.truths.split(",")] if args.truths else [args.truth]
    methods = args.methods.split(",")
    withhold = [s for s in args.withhold.split(",") if s]
    horizontal = [float(x) for x in args.horizontal_km.split(",")]
    vertical = [float(x) for x in args.vertical_km.split(",")]
    settings = list(itertools.product(horizontal, vertical))

    # ---- tuning
    ds = open_archive(args.archive)
    grid = Grid.from_dataset(ds)
    archive_times = ds["time"].values
    localisation: dict[str, tuple[float, float]] = {}
    tuning: dict[str, Any] = {}
    if any(m in LOCALISED + HOUR_MATCHED for m in methods):
        started = time.perf_counter()
        states = grid.tensor_from_dataset(ds).numpy()
        # Standard deviation over every time and point: the unit the variables' errors are added in.
        std = states.std(axis=(0, 2, 3, 4), dtype=np.float64)
        truth_ds = open_archive(truths[0])
        # Half-way between the scored windows' days (and at hours 1, 4, ..., 22): a few
        # days from any scored window, so the tuning sees none of the scored weather.
        between = window_times(truth_ds["time"].values, max(args.windows, 1), shift=0.5)
        picks = np.unique(np.linspace(0, len(between) - 1, args.tune_windows).round().astype(int))
        tune_at = [between[i] for i in picks]
        per_window = []
        with Progress() as progress:
            task = progress.add_task("tuning windows", total=len(tune_at))
            for i, when in enumerate(tune_at):
                obs_path = work / f"tune-obs-{i}.parquet"
                observe_to_file(
                    truths[0],
                    when,
                    "radars,lidars,limb",
                    obs_path,
                    args.seed,
                    withhold=withhold,
                    overwrite=True,
                )
                obs = load_window_observations(obs_path, grid, as_datetime64(when), 1.0)
                truth = grid.tensor_from_dataset(
                    truth_ds.sel(time=np.datetime64(when, "ns"))
                ).numpy()
                per_window.append(
                    tune_window(
                        states,
                        archive_times,
                        truth,
                        obs,
                        grid,
                        when,
                        args.seed,
                        args.members,
                        settings,
                        std,
                    )
                )
                progress.advance(task)
        del states
        curves = {}
        for name in LOCALISED + HOUR_MATCHED:
            table = np.mean([w[name] for w in per_window], axis=0).reshape(
                len(horizontal), len(vertical)
            )
            curves[name] = table
            best = np.unravel_index(np.argmin(table), table.shape)
            localisation[name] = (horizontal[best[0]], vertical[best[1]])
            rows = [
                {
                    "horizontal_km": h,
                    **{f"{v:g} km": float(table[a, b]) for b, v in enumerate(vertical)},
                }
                for a, h in enumerate(horizontal)
            ]
            print_table(
                f"tuning {name}: mean RMSE u+v+T (std units) over {len(tune_at)} windows", rows
            )
        _tuning_figure(curves, horizontal, vertical, args.figures / "osse_tuning.png")
        tuning = {
            "windows": tune_at,
            "horizontal_km": horizontal,
            "vertical_km": vertical,
            "climatological_std": dict(zip(grid.variables, std.tolist(), strict=True)),
            "criterion": "area-weighted ensemble-mean RMSE per variable / climatological std, "
            "summed over variables, mean over tuning windows",
            "curves": {name: table.tolist() for name, table in curves.items()},
            "per_window": per_window,
            "best": {
                name: {"horizontal_km": h, "vertical_km": v}
                for name, (h, v) in localisation.items()
            },
            "seconds": time.perf_counter() - started,
        }
        print("tuned localisation:", localisation)

    # ---- scored windows
    # Truths interleaved: a run stopped early has scored them evenly.
    per_truth = [window_times(open_archive(t)["time"].values, args.windows) for t in truths]
    windows = [
        (t, times[i])
        for i in range(args.windows)
        for t, times in zip(truths, per_truth, strict=True)
    ]
    rows: list[dict[str, Any]] = []
    scored: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}  # metrics per window
    pooled: dict[str, dict[str, Any]] = {}
    # The model data of the member-power test: a long run, not each window's 96 fields
    reference_run = args.reference or max(truths, key=lambda t: open_archive(t).sizes["time"])
    reference = reference_power(open_archive(reference_run), grid)
    power_sums: dict[str, dict[str, np.ndarray]] = {}
    power_members: dict[str, int] = dict.fromkeys(methods, 0)
    with Progress() as progress:
        task = progress.add_task("scored windows", total=len(windows))
        for index, (truth, when) in enumerate(windows):
            obs = work / "obs.parquet"
            drawn = observe_to_file(
                truth,
                when,
                "radars,lidars,limb",
                obs,
                args.seed,
                withhold=withhold,
                overwrite=True,
            )
            eligible = _eligible(archive_times, when)
            for method in methods:
                store = work / f"{method}.zarr"
                start = time.perf_counter()
                summary = _run_method(method, args, obs, when, store, localisation, eligible)
                seconds = time.perf_counter() - start
                metrics = evaluate_paths(
                    store,
                    truth,
                    work / f"report-{method}",
                    obs_path=obs,
                    withheld_path=drawn.withheld_path,
                    overwrite=True,
                )
                scored[method].append(metrics)
                sums, count = window_member_power(store, grid)
                if method in power_sums:
                    for name, value in sums.items():
                        power_sums[method][name] += value
                else:
                    power_sums[method] = sums
                power_members[method] += count
                row = _score(method, summary, seconds, metrics)
                row.update(
                    window=index, truth=truth.name, time=when, observations=drawn.observations
                )
                rows.append(row)
            progress.advance(task)
            # Written after every window: an interrupted run keeps what it measured.
            pooled = {
                m: {
                    "member_power": pooled_member_power(
                        power_sums[m], power_members[m], len(found), reference
                    ),
                    "rank_histograms": pooled_rank_histograms(found),
                }
                for m, found in scored.items()
                if found
            }
            path = _write_windows(
                args,
                truths,
                windows[: index + 1],
                rows,
                tuning,
                localisation,
                pooled,
                reference_run,
            )
    _print_summary(_summary(rows, methods), len(windows))
    _print_pooled(pooled)
    altitudes = open_archive(truths[0])["altitude"].values.tolist()
    figure = pooled_figure(pooled, altitudes, args.figures / "osse_pooled.png")
    print(f"wrote {path} and {figure}")


def _summary(rows: list[dict[str, Any]], methods: list[str]) -> list[dict[str, Any]]:
    """Mean and standard deviation over windows, one row per method."""
    return [_mean_std([r for r in rows if r["method"] == m]) for m in methods]


def _write_windows(
    args: argparse.Namespace,
    truths: list[Path],
    windows: list[tuple[Path, str]],
    rows: list[dict[str, Any]],
    tuning: dict[str, Any],
    localisation: dict[str, tuple[float, float]],
    pooled: dict[str, dict[str, Any]],
    reference_run: Path,
) -> Path:
    """``benchmarks/results/osse-windows-<machine>.json`` of the windows scored so far."""
    return write_result(
        "osse-windows",
        _summary(rows, args.methods.split(",")),
        {
            "windows": [{"truth": t.name, "time": w} for t, w in windows],
            "windows_planned": args.windows * len(truths),
            "per_window": rows,
            "pooled": pooled,
            "tuning": tuning,
            "localisation": {
                k: {"horizontal_km": h, "vertical_km": v} for k, (h, v) in localisation.items()
            },
            # file names only: the result says what was run, not where
            "truths": [t.name for t in truths],
            "member_power_reference": reference_run.name,
            "archive": args.archive.name,
            "members": args.members,
            "steps": args.steps,
            "sampler": PosteriorSettings().sampler,
            "climatology_size": CLIMATOLOGY_SIZE,
            "work": args.work.name,
        },
    )


def _print_pooled(pooled: dict[str, dict[str, Any]]) -> None:
    """Worst and median ``|power ratio - 1|`` at ``l >= 6`` over the windows' pooled members."""
    shown = []
    for method, entry in pooled.items():
        power = entry.get("member_power")
        if not power:
            continue
        row: dict[str, Any] = {"method": method, "members": power["members"]}
        for name, worst in power["worst_power_error"].items():
            median = power["median_power_error"][name]
            row[f"{name} worst / median"] = f"{worst:.2f} / {median:.2f}"
        shown.append(row)
    if shown:
        print_table(
            "member power / the reference run's, |ratio - 1| at l >= 6, pooled over windows",
            shown,
        )


def _print_summary(table: list[dict[str, Any]], windows: int) -> None:
    """Mean +- std over windows, one row per method."""
    shown = []
    for row in table:
        out: dict[str, Any] = {"method": row["method"]}
        out["s"] = f"{row['seconds']:.0f}"
        fit = row.get("obs_fit", math.nan)
        out["fit"] = "-" if math.isnan(fit) else f"{fit:.2f}±{row['obs_fit_std']:.2f}"
        for score in ("crps", "rmse", "ssr"):
            for name in ("u", "v", "T"):
                key = f"{name}_{score}"
                if key in row:
                    digits = 2 if score == "ssr" else 1
                    out[key] = f"{row[key]:.{digits}f}±{row[key + '_std']:.{digits}f}"
        shown.append(out)
    print_table(f"OSSE over {windows} windows: mean ± std over windows", shown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--truth", type=Path, help="held-out archive (default: made in --work)")
    parser.add_argument("--truths", help="comma-separated held-out archives (with --windows)")
    parser.add_argument("--archive", type=Path, help="training archive (default: made in --work)")
    parser.add_argument("--time", default="2000-02-10T12:00")
    parser.add_argument("--windows", type=int, default=0, help="windows per truth (0: --time only)")
    parser.add_argument(
        "--reference",
        type=Path,
        help="model run whose mean power the pooled members are compared with "
        "(default: the longest of --truths)",
    )
    parser.add_argument("--tune-windows", type=int, default=4)
    parser.add_argument("--horizontal-km", default="500,1500,3000,6000,12000,100000")
    parser.add_argument("--vertical-km", default="5,15,30,60,1000")
    parser.add_argument("--figures", type=Path, default=Path("docs/figures/osse"))
    parser.add_argument("--work", type=Path, default=Path("outputs/osse"))
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--layer2d-members", type=int, default=8)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--layer2d-checkpoint", default="default-layer2d")
    parser.add_argument("--withhold", default="Collm,Davis,Boulder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--methods",
        default=None,
        help="comma-separated subset (default: prior,mmps,dps,sda,mmps-layer2d,climatology,oi,enkf; "
        "with --windows: prior,mmps,dps,climatology,oi,enkf,enoi,enoi-hour,enkf-hour)",
    )
    args = parser.parse_args()
    if args.methods is None:
        args.methods = (
            "prior,mmps,dps,climatology,oi,enkf,enoi,enoi-hour,enkf-hour"
            if args.windows
            else "prior,mmps,dps,sda,mmps-layer2d,climatology,oi,enkf"
        )
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    if not args.truths:
        args.truth = args.truth or _model_run(work / "heldout.zarr", days=20, seed=2)
    args.archive = args.archive or _model_run(work / "train.zarr", days=120, seed=1)
    if args.windows:
        multi_window(args)
    else:
        one_window(args)


if __name__ == "__main__":
    main()
