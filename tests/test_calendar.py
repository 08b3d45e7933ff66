"""The time of day and the season as network inputs: features, networks, checkpoints, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from typer.testing import CliRunner

from genda.cli import app
from genda.errors import InvalidValueError
from genda.grid import Grid
from genda.models.calendar import (
    DAYS_PER_YEAR,
    Calendar,
    calendar_of,
    days_of_year,
    denoiser_at,
)
from genda.models.checkpoint import load_checkpoint, save_checkpoint
from genda.models.checkpoint_format import CheckpointError
from genda.models.diffusion import EDMDenoiser
from genda.models.strategies import build_backbone, get_strategy
from genda.normalization import Normalization

runner = CliRunner()
GRID = Grid.gaussian(8, 16, 3)


def _denoiser(strategy: str, calendar: Calendar | None) -> EDMDenoiser:
    torch.manual_seed(0)
    backbone = build_backbone(
        get_strategy(strategy), GRID, calendar, base_channels=8, channel_mult=(1, 2)
    )
    for parameter in backbone.parameters():  # an untrained U-Net's output layer is zero
        parameter.data.normal_(0.0, 0.05)
    if backbone.network.cond_embedding is not None:  # conditioning that is felt
        backbone.network.cond_embedding.weight.data.normal_(0.0, 1.0)
    return EDMDenoiser(backbone).eval().requires_grad_(False)


def test_the_features_are_the_harmonics_of_the_day_and_of_the_year() -> None:
    calendar = Calendar(day_harmonics=2, year_harmonics=1)
    times = np.array(["2001-01-01T00:00", "2001-01-01T06:00", "2001-07-02T18:00"], "datetime64[ns]")
    features = calendar.features(times)
    assert features.shape == (3, 6) and calendar.size == 6
    # midnight of 1 January: every phase is zero
    torch.testing.assert_close(features[0], torch.tensor([1.0, 0, 1, 0, 1, 0], dtype=torch.float64))
    # 06 UT: a quarter of the day, half of the semidiurnal period
    torch.testing.assert_close(features[1, :4], torch.tensor([0.0, 1, -1, 0], dtype=torch.float64))
    assert days_of_year(times[2])[0] == pytest.approx(182.75)
    angle = 2 * math.pi * 182.75 / DAYS_PER_YEAR
    assert features[2, 4].item() == pytest.approx(math.cos(angle))
    # the same hour a day later differs only in the season, and by one day's worth
    later = calendar.features(times[2] + np.timedelta64(1, "D"))
    torch.testing.assert_close(later[0, :4], features[2, :4])
    assert 0 < abs(later[0, 5] - features[2, 5]).item() < 2 * math.pi / DAYS_PER_YEAR


def test_bad_calendars_and_times_are_refused() -> None:
    with pytest.raises(InvalidValueError, match="at least one harmonic"):
        Calendar(0, 0)
    with pytest.raises(InvalidValueError, match="day_harmonics must be an integer"):
        Calendar(day_harmonics=-1)
    with pytest.raises(InvalidValueError, match="unknown calendar settings"):
        Calendar.from_config({"day_harmonics": 1, "weekday": 1})
    with pytest.raises(InvalidValueError, match="NaT"):
        Calendar().features(np.array(["NaT"], "datetime64[ns]"))


@pytest.mark.parametrize("strategy", ["joint3d", "layer2d"])
def test_a_network_with_a_calendar_follows_the_time_and_refuses_to_run_without_it(
    strategy,
) -> None:
    denoiser = _denoiser(strategy, Calendar())
    x = torch.randn(2, *GRID.shape, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([0.7, 0.7])
    noon = denoiser_at(denoiser, np.datetime64("2000-06-01T12:00"))
    midnight = denoiser_at(denoiser, np.datetime64("2000-06-01T00:00"))
    winter = denoiser_at(denoiser, np.datetime64("2000-12-01T12:00"))
    a, b, c = noon(x, sigma), midnight(x, sigma), winter(x, sigma)
    assert (a - b).abs().max() > 1e-4 and (a - c).abs().max() > 1e-4
    # per-member times: member 1 at midnight is the batch at midnight's member 1
    both = denoiser_at(denoiser, np.array(["2000-06-01T12:00", "2000-06-01T00:00"], "M8[ns]"))
    out = both(x, sigma)
    torch.testing.assert_close(out[0], a[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1], b[1], atol=1e-5, rtol=1e-5)
    assert noon.sigma_data == denoiser.sigma_data and noon.decode is not None
    with pytest.raises(InvalidValueError, match="sees the time of day"):
        denoiser(x, sigma)
    with pytest.raises(InvalidValueError, match="give the window's time"):
        denoiser_at(denoiser, None)
    with pytest.raises(InvalidValueError, match="times for 2 members, a batch of 3"):
        both(torch.randn(3, *GRID.shape), torch.full((3,), 0.7))


def test_a_network_without_a_calendar_is_as_before() -> None:
    denoiser = _denoiser("joint3d", None)
    assert calendar_of(denoiser) is None
    assert denoiser_at(denoiser, np.datetime64("2000-06-01")) is denoiser
    assert denoiser_at(denoiser, None) is denoiser
    x = torch.randn(1, *GRID.shape)
    with pytest.raises(InvalidValueError, match="sees no time"):
        denoiser(x, torch.tensor([1.0]), torch.zeros(1, 8))


def test_the_calendar_round_trips_through_a_checkpoint_and_old_ones_load(
    tmp_path, tiny_prior
) -> None:
    denoiser = _denoiser("layer2d", Calendar(day_harmonics=3, year_harmonics=1))
    normalization = Normalization(GRID.variables, np.zeros((3, 3)), np.ones((3, 3)))
    save_checkpoint(tmp_path / "ckpt", denoiser, grid=GRID, normalization=normalization, step=1)
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["calendar"] == {"day_harmonics": 3, "year_harmonics": 1}
    prior = load_checkpoint(tmp_path / "ckpt")
    assert calendar_of(prior.denoiser) == Calendar(3, 1)
    x = torch.randn(1, *GRID.shape)
    when = np.datetime64("2000-03-01T05:00")
    torch.testing.assert_close(
        denoiser_at(prior.denoiser, when)(x, torch.tensor([0.5])),
        denoiser_at(denoiser, when)(x, torch.tensor([0.5])),
    )
    # a prior trained without time inputs has no calendar entry and none after loading
    assert "calendar" not in load_checkpoint(tiny_prior).config
    assert calendar_of(load_checkpoint(tiny_prior).denoiser) is None
    # a calendar the weights do not fit is a checkpoint error, not a crash
    config["calendar"] = {"day_harmonics": 1, "year_harmonics": 1}
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "ckpt")


def _train(archive: Path, out: Path, *extra: str):
    return runner.invoke(
        app,
        [
            *("train", "--data", str(archive), "--out", str(out), "--no-progress"),
            *("--base-channels", "8", "--channel-mult", "1,2", "--val-gap-hours", "2"),
            *("--steps", "4", "--batch-size", "4", "--warmup-steps", "1", *extra),
        ],
    )


def _observations(path: Path, when: np.datetime64) -> Path:
    pd.DataFrame(
        {
            "time": [pd.Timestamp(when)] * 2,
            "variable": ["u", "T"],
            "lat": [54.0, 40.0],
            "lon": [13.0, 100.0],
            "alt_km": [90.0, 92.0],
            "value": [10.0, 190.0],
            "sigma": [5.0, 3.0],
        }
    ).to_csv(path, index=False)
    return path


def test_genda_train_time_inputs_then_assimilate_and_resume(tiny_archive, tmp_path) -> None:
    """`--time-inputs` end to end: train, a window sampled at its time, a resume that keeps it."""
    prior = tmp_path / "timed"
    result = _train(tiny_archive, prior, "--time-inputs", "--coordinates", "whitened")
    assert result.exit_code == 0, result.output
    assert calendar_of(load_checkpoint(prior).denoiser) == Calendar()
    when = np.datetime64(str(xr.open_zarr(tiny_archive).time.values[-1]), "h")
    args = ["assimilate", "--checkpoint", str(prior), "--time", str(when), "--members", "3"]
    args += ["--steps", "4", "--no-progress", "--obs", str(_observations(tmp_path / "o.csv", when))]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "a.zarr")])
    assert result.exit_code == 0, result.output
    ds = xr.open_zarr(tmp_path / "a.zarr")
    assert bool(ds.complete.all()) and np.isfinite(ds.T.values).all()

    result = _train(tiny_archive, tmp_path / "again", "--resume", str(prior), "--no-time-inputs")
    assert result.exit_code != 0 and "trained with time inputs on, not 'off'" in " ".join(
        result.output.split()
    )
    assert not (tmp_path / "again").exists()
    result = _train(tiny_archive, tmp_path / "more", "--resume", str(prior), "--steps", "6")
    assert result.exit_code == 0, result.output
    assert calendar_of(load_checkpoint(tmp_path / "more").denoiser) == Calendar()


@pytest.mark.slow
def test_a_trajectory_prior_with_time_inputs_cycles_and_forecasts(
    tiny_archive, tmp_path, monkeypatch
) -> None:
    """Each window's network is told its first hour: cold, filtering and forecast windows."""
    prior = tmp_path / "timed-k3"
    result = _train(
        tiny_archive, prior, "--time-inputs", "--coordinates", "whitened", "--states", "3"
    )
    assert result.exit_code == 0, result.output
    told: list[np.datetime64] = []  # the times the network is told, window by window
    features = Calendar.features

    def recording(self, times):
        told.extend(np.atleast_1d(np.asarray(times, dtype="datetime64[ns]")).tolist())
        return features(self, times)

    monkeypatch.setattr(Calendar, "features", recording)
    start = np.datetime64("2000-01-02T12:00")
    store = tmp_path / "cycle.zarr"
    for when, extra in ((start, ()), (start + np.timedelta64(2, "h"), ("--filter",))):
        args = ["assimilate", "--checkpoint", str(prior), "--time", str(when), "--members", "3"]
        args += ["--steps", "4", "--no-progress", "--out", str(store), *extra]
        obs = _observations(tmp_path / f"{len(extra)}.csv", when + np.timedelta64(1, "h"))
        told.clear()
        result = runner.invoke(app, [*args, "--obs", str(obs)])
        assert result.exit_code == 0, result.output
        assert told and set(told) == {np.datetime64(when, "ns").astype(int)}, (when, told)
    last = start + np.timedelta64(4, "h")
    args = ["forecast", "--checkpoint", str(prior), "--analysis", str(store), "--time", str(last)]
    args += ["--hours", "4", "--out", str(tmp_path / "forecast.zarr"), "--steps", "4"]
    told.clear()
    result = runner.invoke(app, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    segments = {np.datetime64(last + np.timedelta64(h, "h"), "ns").astype(int) for h in (0, 2)}
    assert set(told) == segments  # each segment at its own first hour
    for path in (store, tmp_path / "forecast.zarr"):
        ds = xr.open_zarr(path)
        assert bool(ds.complete.all()) and np.isfinite(ds.u.values).all()
    assert xr.open_zarr(store).sizes["time"] == 5
