"""Trajectory priors end to end: `genda train --states`, hourly windows in the store, filtering."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
from typer.testing import CliRunner

from genda.cli import app
from genda.models.checkpoint import load_checkpoint
from genda.storage import EnsembleStore

runner = CliRunner()
START = np.datetime64("2000-01-02T12:00")
MEMBERS = 6


def _train(archive: Path, out: Path, strategy: str, *extra: str):
    return runner.invoke(
        app,
        [
            *("train", "--data", str(archive), "--out", str(out), "--strategy", strategy),
            *("--no-progress", "--base-channels", "8", "--channel-mult", "1,2"),
            *("--val-gap-hours", "2", "--steps", "6", "--batch-size", "4"),
            *("--warmup-steps", "2", "--lr", "2e-3", *extra),
        ],
    )


@pytest.fixture(scope="module")
def trajectory_priors(tiny_archive: Path, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trajectory")
    priors = {}
    for strategy in ("joint3d", "layer2d"):
        out = root / strategy
        result = _train(tiny_archive, out, strategy, "--coordinates", "whitened", "--states", "3")
        assert result.exit_code == 0, result.output
        priors[strategy] = out
    return priors


def _observations(path: Path, start: np.datetime64, hours: list[float]) -> Path:
    rows = [
        ("u", 54.0, 13.0, 90.0, 10.0, 5.0),
        ("v", -20.0, 200.0, 88.0, -3.0, 5.0),
        ("T", 40.0, 100.0, 92.0, 190.0, 3.0),
    ]
    table = pd.DataFrame(
        [
            {
                "time": pd.Timestamp(start) + pd.Timedelta(hours=h),
                "variable": v,
                "lat": lat,
                "lon": lon,
                "alt_km": alt,
                "value": value,
                "sigma": sigma,
            }
            for h in hours
            for v, lat, lon, alt, value, sigma in rows
        ]
    )
    table.to_csv(path, index=False)
    return path


def _assimilate(prior: Path, obs: Path | None, start: np.datetime64, out: Path, *extra: str):
    args = ["assimilate", "--checkpoint", str(prior), "--time", str(start), "--out", str(out)]
    args += ["--members", str(MEMBERS), "--steps", "6", "--no-progress", *extra]
    if obs is not None:
        args += ["--obs", str(obs)]
    return runner.invoke(app, args)


def _said(result) -> str:
    """The command's output as one line (the console wraps long messages)."""
    return " ".join(result.output.split())


def _anomaly_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of the members' anomalies (from the ensemble mean) of two fields ``(N, ...)``."""
    a, b = a - a.mean(0), b - b.mean(0)
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_trajectory_priors_of_both_strategies_have_causal_coordinates(trajectory_priors) -> None:
    for strategy, path in trajectory_priors.items():
        prior = load_checkpoint(path)
        assert prior.grid.variables[:4] == ("u+0h", "v+0h", "T+0h", "u+1h")
        assert len(prior.grid.variables) == 9
        assert prior.denoiser.coordinates.coupling == "causal", strategy
        assert prior.state_shape[0] == 9


def test_a_trajectory_prior_needs_whitened_coordinates_and_keeps_its_states(
    tiny_archive, trajectory_priors, tmp_path
) -> None:
    result = _train(tiny_archive, tmp_path / "grid", "joint3d", "--states", "3")
    assert result.exit_code != 0 and "needs whitened coordinates" in _said(result)
    result = _train(
        tiny_archive,
        tmp_path / "again",
        "joint3d",
        *("--resume", str(trajectory_priors["joint3d"]), "--states", "2"),
    )
    assert result.exit_code != 0 and "3 hourly state(s) per sample, not 2" in _said(result)
    assert not (tmp_path / "grid").exists() and not (tmp_path / "again").exists()


@pytest.mark.parametrize("strategy", ["joint3d", pytest.param("layer2d", marks=pytest.mark.slow)])
def test_a_cycle_of_filtering_windows_writes_hourly_states_and_carries_each_member(
    trajectory_priors, strategy, tmp_path
) -> None:
    prior, store = trajectory_priors[strategy], tmp_path / "cycle.zarr"
    first = _observations(tmp_path / "a.csv", START, [0.0, 0.5, 2.0])
    result = _assimilate(prior, first, START, store)
    assert result.exit_code == 0, result.output
    second_start = START + np.timedelta64(2, "h")
    second = _observations(tmp_path / "b.csv", second_start, [1.0, 1.5])
    result = _assimilate(prior, second, second_start, store, "--filter")
    assert result.exit_code == 0, result.output

    ds = xr.open_zarr(store)
    hours = START + np.arange(5) * np.timedelta64(1, "h")
    np.testing.assert_array_equal(ds.time.values, hours.astype("datetime64[ns]"))
    assert bool(ds.complete.all())
    windows = json.loads(ds.attrs["genda_windows"])
    chain = windows["2000-01-02T15:00:00"]["provenance"]["trajectory"]
    assert chain == {
        "start": "2000-01-02T14:00:00",
        "states": 3,
        "conditioned_on": "2000-01-02T14:00:00",
        "member_conditioned_on": "same member",
        "writes_first": False,
    }
    assert windows["2000-01-02T13:00:00"]["provenance"]["trajectory"]["conditioned_on"] is None
    assert all(w["finalized"] for w in windows.values())
    # each member goes on from its own state: its anomaly one hour on follows its own
    shared = ds.T.sel(time=hours[2]).values
    after = ds.T.sel(time=hours[3]).values
    own = _anomaly_correlation(after, shared)
    shuffled = _anomaly_correlation(after, np.roll(shared, 1, axis=0))
    assert own > 0.5 and own > shuffled + 0.3, (own, shuffled)


def test_a_rerun_after_an_interruption_is_bit_identical(trajectory_priors, tmp_path) -> None:
    prior = trajectory_priors["joint3d"]
    obs = _observations(tmp_path / "a.csv", START, [0.0, 1.0])
    whole, cut = tmp_path / "whole.zarr", tmp_path / "cut.zarr"
    for out in (whole, cut):
        assert _assimilate(prior, obs, START, out).exit_code == 0
    # a kill while the window's hours were being finalised: the first hour is, the
    # others are not; two members of the last hour and one of the middle hour never landed
    store = EnsembleStore.open(cut)
    group = zarr.open_group(cut, mode="r+")
    windows = json.loads(group.attrs["genda_windows"])
    for hours in (1, 2):
        windows[str(np.datetime64(START + np.timedelta64(hours, "h"), "s"))]["finalized"] = False
    group.attrs["genda_windows"] = json.dumps(windows)
    for hours, lost in ((2, [1, 4]), (1, [2])):
        group["complete"][store.window_index(START + np.timedelta64(hours, "h")), lost] = False
    assert store.is_finalized(START)
    result = _assimilate(prior, obs, START, cut)
    assert result.exit_code == 0, result.output
    a, b = xr.open_zarr(whole), xr.open_zarr(cut)
    for name in ("u", "v", "T"):
        np.testing.assert_array_equal(a[name].values, b[name].values)


def test_bad_filtering_windows_are_refused_and_nothing_is_written(
    trajectory_priors, tiny_prior, tmp_path
) -> None:
    prior, store = trajectory_priors["joint3d"], tmp_path / "cycle.zarr"
    later = START + np.timedelta64(2, "h")
    obs = _observations(tmp_path / "b.csv", later, [1.0])
    result = _assimilate(prior, obs, later, store, "--filter")  # no store yet
    assert result.exit_code != 0 and "start again without --filter" in _said(result)
    assert not store.exists()
    assert (
        _assimilate(prior, _observations(tmp_path / "a.csv", START, [1.0]), START, store).exit_code
        == 0
    )
    before = EnsembleStore.open(store).windows()

    gap = START + np.timedelta64(5, "h")
    result = _assimilate(
        prior, _observations(tmp_path / "c.csv", gap, [1.0]), gap, store, "--filter"
    )
    assert result.exit_code != 0 and "the cycle has a gap" in _said(result)
    args = ["assimilate", "--checkpoint", str(prior), "--time", str(later), "--out", str(store)]
    result = runner.invoke(app, [*args, "--members", "4", "--filter", "--obs", str(obs)])
    assert result.exit_code != 0 and "6 members" in _said(result)
    outside = _observations(tmp_path / "d.csv", later, [2.5])
    result = _assimilate(prior, outside, later, store, "--filter")
    assert result.exit_code != 0 and "outside the window" in _said(result)
    result = _assimilate(prior, obs, later, store, "--filter", "--overwrite")
    assert result.exit_code != 0 and "would delete it first" in _said(result)
    result = _assimilate(tiny_prior, obs, later, store, "--filter")
    assert result.exit_code != 0 and "first hourly state" in _said(result)
    result = _assimilate(prior, obs, later, store, "--update-start", "1500")
    assert result.exit_code != 0 and "it needs --filter" in _said(result)
    result = _assimilate(prior, obs, later, store, "--filter", "--update-start", "0")
    assert result.exit_code != 0 and "half-width > 0 km" in _said(result)
    result = _assimilate(prior, obs, later, store, "--filter", "--start-rtps", "0.3")
    assert result.exit_code != 0 and "--start-rtps needs --update-start" in _said(result)
    result = _assimilate(prior, None, later, store, "--filter", "--update-start", "1e3")
    assert result.exit_code != 0 and "it needs --obs" in _said(result)
    at_start = _observations(tmp_path / "f.csv", later, [0.0])
    result = _assimilate(prior, at_start, later, store, "--filter", "--update-start", "1e3")
    assert result.exit_code != 0 and "no observation after its start" in _said(result)
    result = _assimilate(
        prior, obs, later, store, "--filter", "--update-start", "1e3", "--start-rtps", "2"
    )
    assert result.exit_code != 0 and "--start-rtps" in _said(result)
    assert EnsembleStore.open(store).windows() == before

    # a window that is registered but not finished cannot be conditioned on
    EnsembleStore.open(store).add_window(START + np.timedelta64(7, "h"), {"kind": "prior"})
    late = START + np.timedelta64(7, "h")
    result = _assimilate(
        prior, _observations(tmp_path / "e.csv", late, [1.0]), late, store, "--filter"
    )
    assert result.exit_code != 0 and "not finalised" in _said(result)


def _cycle_config(root: Path, prior: Path, every: int) -> Path:
    for k in range(3):
        start = START + np.timedelta64(2 * k, "h")
        name = str(start).replace(":", "")
        _observations(root / f"obs-{name}.csv", start, [0.5, 1.0, 2.0] if k == 0 else [1.0, 2.0])
    text = (
        f"checkpoint: {prior}\n"
        "observations: obs-{time:%Y-%m-%dT%H%M}.csv\n"
        f"start: {START}\nend: {START + np.timedelta64(4, 'h')}\nevery_hours: {every}\n"
        "members: 4\nsteps: 4\nbatch_size: 2\nstore: cycle.zarr\n"
    )
    path = root / "cycle.yaml"
    path.write_text(text)
    return path


@pytest.mark.slow
def test_the_cycle_flow_filters_every_window_after_the_first_and_resumes_bit_identically(
    harness, trajectory_priors, tmp_path
) -> None:
    from genda.orchestration.config import load_cycle_config
    from genda.orchestration.flows import assimilation_cycle, next_window

    config = load_cycle_config(_cycle_config(tmp_path, trajectory_priors["joint3d"], 2))
    assert next_window(config) == START
    first = assimilation_cycle(config)
    assert all("error" not in r for r in first), first
    assert [r["ensemble"]["written"] for r in first] == [4, 4, 4]
    ds = xr.open_zarr(config.store)
    assert ds.sizes["time"] == 7 and bool(ds.complete.all())
    windows = json.loads(ds.attrs["genda_windows"])
    chain = [windows[iso]["provenance"]["trajectory"]["conditioned_on"] for iso in sorted(windows)]
    assert (
        chain
        == [None, None, None, "2000-01-02T14:00:00", "2000-01-02T14:00:00"]
        + ["2000-01-02T16:00:00"] * 2
    )
    assert next_window(config) is None  # every window's last hour is finalised
    before = ds.T.values

    # a kill before the last window was finalised: half of its members never landed
    group = zarr.open_group(config.store, mode="r+")
    recorded = json.loads(group.attrs["genda_windows"])
    for hour in ("2000-01-02T17:00:00", "2000-01-02T18:00:00"):
        recorded[hour]["finalized"] = False
        group["complete"][
            EnsembleStore.open(config.store).window_index(np.datetime64(hour)), 2:
        ] = False
    group.attrs["genda_windows"] = json.dumps(recorded)
    again = assimilation_cycle(config)
    assert [r["ensemble"]["written"] for r in again] == [0, 0, 2]
    np.testing.assert_array_equal(xr.open_zarr(config.store).T.values, before)


@pytest.mark.slow
def test_after_a_failed_window_the_next_starts_cold_and_the_rerun_fills_the_gap(
    harness, trajectory_priors, tmp_path
) -> None:
    from genda.orchestration.config import load_cycle_config
    from genda.orchestration.flows import assimilation_cycle

    config = load_cycle_config(_cycle_config(tmp_path, trajectory_priors["joint3d"], 2))
    middle = START + np.timedelta64(2, "h")
    table = tmp_path / f"obs-{str(middle).replace(':', '')}.csv"
    table.rename(tmp_path / "held-back.csv")  # the middle window's observations are late
    with pytest.raises(Exception, match="1 of 3 windows failed"):
        assimilation_cycle(config)
    windows = json.loads(xr.open_zarr(config.store).attrs["genda_windows"])
    # the last window started cold and left its first hour (16:00) to the failed window
    assert sorted(windows) == [
        "2000-01-02T12:00:00", "2000-01-02T13:00:00", "2000-01-02T14:00:00",
        "2000-01-02T17:00:00", "2000-01-02T18:00:00",
    ]  # fmt: skip
    last = windows["2000-01-02T17:00:00"]["provenance"]["trajectory"]
    assert last["conditioned_on"] is None and last["writes_first"] is False

    (tmp_path / "held-back.csv").rename(table)
    again = assimilation_cycle(config)
    assert [r["ensemble"]["written"] for r in again] == [0, 4, 0]
    ds = xr.open_zarr(config.store)
    assert ds.sizes["time"] == 7 and bool(ds.complete.all())
    windows = json.loads(ds.attrs["genda_windows"])
    assert windows["2000-01-02T15:00:00"]["provenance"]["trajectory"]["conditioned_on"] == (
        "2000-01-02T14:00:00"
    )


def test_a_trajectory_cycle_runs_windows_that_meet(trajectory_priors, tiny_prior, tmp_path) -> None:
    from pydantic import ValidationError

    from genda.errors import InvalidValueError
    from genda.orchestration.config import CycleConfig, StartUpdateConfig, load_cycle_config
    from genda.orchestration.flows import prior_states

    config = load_cycle_config(_cycle_config(tmp_path, trajectory_priors["joint3d"], 1))
    with pytest.raises(InvalidValueError, match="runs every 2 h"):
        prior_states(config)
    long = config.model_copy(update={"states": 5, "every_hours": 4.0})
    assert prior_states(long) == 5
    with pytest.raises(InvalidValueError, match="3 to 48 hours, not states: 2"):
        prior_states(long.model_copy(update={"states": 2}))
    with pytest.raises(InvalidValueError, match="models one instant"):
        prior_states(long.model_copy(update={"checkpoint": str(tiny_prior)}))
    update = StartUpdateConfig(horizontal_km=1000.0)
    with pytest.raises(ValidationError, match="members >= 2, not 1"):
        CycleConfig.model_validate(
            {**config.model_dump(), "members": 1, "start_update": update.model_dump()}
        )
    one_instant = config.model_copy(update={"checkpoint": str(tiny_prior), "start_update": update})
    with pytest.raises(InvalidValueError, match=r"start_update updates .* of one instant"):
        prior_states(one_instant)


@pytest.mark.slow
def test_a_cycle_of_long_windows_filters_on_each_last_hour(
    harness, trajectory_priors, tmp_path
) -> None:
    """``states: 4`` on a 3-hour prior: windows of 4 hours, every 3 h, composed from segments."""
    from genda.orchestration.config import load_cycle_config
    from genda.orchestration.flows import assimilation_cycle

    path = _cycle_config(tmp_path, trajectory_priors["joint3d"], 3)
    _observations(tmp_path / "obs-2000-01-02T1200.csv", START, [0.5, 1.0, 2.0, 3.0])
    later = START + np.timedelta64(3, "h")
    _observations(tmp_path / f"obs-{str(later).replace(':', '')}.csv", later, [1.0, 3.0])
    path.write_text(path.read_text() + "states: 4\nstart_update: {horizontal_km: .inf}\n")
    config = load_cycle_config(path)
    results = assimilation_cycle(config)
    assert [r["ensemble"]["written"] for r in results] == [4, 4], results
    ds = xr.open_zarr(config.store)
    assert ds.sizes["time"] == 7 and bool(ds.complete.all())
    windows = json.loads(ds.attrs["genda_windows"])
    second = windows["2000-01-02T16:00:00"]["provenance"]["trajectory"]
    assert second["states"] == 4 and second["conditioned_on"] == "2000-01-02T15:00:00"
    # the start update, on the filtering windows only (no localisation: recorded as None)
    assert second["start_update"] == {"horizontal_km": None, "vertical_km": 30.0, "rtps": 0.5}
    assert "start_update" not in windows["2000-01-02T13:00:00"]["provenance"]["trajectory"]


def test_a_forecast_carries_each_member_on_from_the_analysis(
    trajectory_priors, tiny_prior, tmp_path
) -> None:
    prior, analysis = trajectory_priors["joint3d"], tmp_path / "analysis.zarr"
    assert (
        _assimilate(
            prior, _observations(tmp_path / "a.csv", START, [1.0]), START, analysis
        ).exit_code
        == 0
    )
    last = START + np.timedelta64(2, "h")
    out = tmp_path / "forecast.zarr"
    args = ["forecast", "--checkpoint", str(prior), "--analysis", str(analysis)]
    args += [
        "--time",
        str(last),
        "--hours",
        "3",
        "--out",
        str(out),
        "--steps",
        "6",
        "--no-progress",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    ds = xr.open_zarr(out)
    leads = last + np.arange(1, 5) * np.timedelta64(1, "h")  # two segments of two hours
    np.testing.assert_array_equal(ds.time.values, leads.astype("datetime64[ns]"))
    windows = json.loads(ds.attrs["genda_windows"])
    iso = [str(np.datetime64(t, "s")) for t in (last, *leads)]
    assert {w["provenance"]["forecast"]["from"] for w in windows.values()} == {iso[0]}
    assert windows[iso[3]]["provenance"]["trajectory"]["conditioned_on"] == iso[2]
    shared = xr.open_zarr(analysis).T.sel(time=last).values
    assert _anomaly_correlation(ds.T.sel(time=leads[0]).values, shared) > 0.5
    again = runner.invoke(app, args)  # a rerun makes nothing again
    assert again.exit_code == 0 and "0 made now" in _said(again)

    refused = [
        (["--time", str(last + np.timedelta64(1, "h"))], "no window at"),
        (["--out", str(analysis)], "its own store"),
        (["--checkpoint", str(tiny_prior)], "models one instant"),
        (["--hours", "100000000"], "100000000 forecast hours of 6 members"),
    ]
    for change, needle in refused:
        bad = list(args)
        bad[bad.index(change[0]) + 1] = change[1]
        bad[bad.index("--out") + 1] = (
            str(tmp_path / "refused.zarr") if change[0] != "--out" else str(analysis)
        )
        result = runner.invoke(app, bad)
        assert result.exit_code != 0 and needle in _said(result), (change, result.output)
        assert not (tmp_path / "refused.zarr").exists()


@pytest.mark.slow
def test_filtering_on_ray_actors_reads_the_store_and_matches_this_process(
    trajectory_priors, tmp_path
) -> None:
    """Two actors fix their members' first states from the store: the members of one
    process, in a filtering window that updates them first (each actor updates the
    whole ensemble, not its batch) and in a forecast of two segments."""
    import os
    import tempfile

    from genda.assimilation.posterior import PosteriorSettings
    from genda.assimilation.start_update import StartUpdate
    from genda.orchestration.assimilate import assimilate_window
    from genda.orchestration.forecast import forecast
    from genda.threads import cpu_threads

    ray = pytest.importorskip("ray")
    prior = trajectory_priors["joint3d"]
    settings = PosteriorSettings(steps=4, batch_size=2)
    first = _observations(tmp_path / "a.csv", START, [0.5, 2.0])
    later = START + np.timedelta64(2, "h")
    second = _observations(tmp_path / "b.csv", later, [1.0, 2.0])
    stores = {}
    for name in ("here", "actors", "kept"):
        stores[name] = tmp_path / f"{name}.zarr"
        with cpu_threads(1):
            assimilate_window(
                prior, first, START, stores[name], members=4, settings=settings, progress=False
            )
    update = StartUpdate(horizontal_km=2000.0, rtps=0.5)
    with cpu_threads(1):
        for name, start_update in (("here", update), ("kept", None)):
            assimilate_window(
                prior,
                second,
                later,
                stores[name],
                members=4,
                settings=settings,
                progress=False,
                filtering=True,
                start_update=start_update,
            )
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _temp_dir=tempfile.mkdtemp(prefix="ray-", dir="/tmp"),
        logging_level="ERROR",
    )
    try:
        summary = assimilate_window(
            prior,
            second,
            later,
            stores["actors"],
            members=4,
            settings=settings,
            workers=2,
            progress=False,
            filtering=True,
            start_update=update,
        )
        # a forecast of two segments on two actors, each reading its members' first states
        last = later + np.timedelta64(2, "h")
        forecasts = {name: tmp_path / f"forecast-{name}.zarr" for name in stores}
        on_actors = forecast(
            prior, stores["actors"], last, 3, forecasts["actors"], settings=settings, workers=2,
            progress=False,
        )  # fmt: skip
    finally:
        ray.shutdown()
    assert summary.workers == 2 and summary.written == 4
    here, actors = EnsembleStore.open(stores["here"]), EnsembleStore.open(stores["actors"])
    kept = EnsembleStore.open(stores["kept"])
    for hour in (3, 4):
        when = START + np.timedelta64(hour, "h")
        np.testing.assert_array_equal(actors.read_members(when), here.read_members(when))
        assert not np.array_equal(here.read_members(when), kept.read_members(when))
    chain = here.provenance(later + np.timedelta64(1, "h"))["trajectory"]
    assert chain["start_update"] == {"horizontal_km": 2000.0, "vertical_km": 30.0, "rtps": 0.5}
    assert "start_update" not in kept.provenance(later + np.timedelta64(1, "h"))["trajectory"]
    with cpu_threads(1):
        in_process = forecast(
            prior, stores["here"], last, 3, forecasts["here"], settings=settings, progress=False
        )
    assert on_actors.written == in_process.written > 0 and len(in_process.hours) == 4
    assert on_actors.hours == in_process.hours
    for hour in in_process.hours:
        when = np.datetime64(hour)
        np.testing.assert_array_equal(
            EnsembleStore.open(forecasts["actors"]).read_members(when),
            EnsembleStore.open(forecasts["here"]).read_members(when),
        )


def test_a_window_builds_its_observation_covariance_once(
    trajectory_priors, tmp_path, monkeypatch
) -> None:
    """The check before the store is touched and the sampling share A A^T (in one process),
    and a filtering window's check builds the conditioned one its members use."""
    from genda.assimilation import gaussian_tweedie

    built = []
    original = gaussian_tweedie.ObservationSpace.__init__

    def counting(self, operator, sigma_y):
        built.append(operator.key)
        original(self, operator, sigma_y)

    monkeypatch.setattr(gaussian_tweedie.ObservationSpace, "__init__", counting)
    prior, store = trajectory_priors["joint3d"], tmp_path / "cycle.zarr"
    result = _assimilate(prior, _observations(tmp_path / "a.csv", START, [0.5, 2.0]), START, store)
    assert result.exit_code == 0, result.output
    assert len(built) == 1 and built[0][0] == "decode"
    later = START + np.timedelta64(2, "h")
    obs = _observations(tmp_path / "b.csv", later, [1.0])
    result = _assimilate(prior, obs, later, store, "--filter")
    assert result.exit_code == 0, result.output
    assert len(built) == 2 and built[1][1] == "free"
