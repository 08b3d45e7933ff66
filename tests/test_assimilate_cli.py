"""`genda observe`, `genda assimilate` and `genda evaluate` end to end on a tiny prior."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from typer.testing import CliRunner

from genda.assimilation.posterior import PosteriorSettings, observation_fit
from genda.cli import app
from genda.grid import Grid
from genda.models.checkpoint import load_checkpoint
from genda.observations import draw_observations, read_observations, write_observations
from genda.orchestration.assimilate import assimilate_window
from genda.storage import EnsembleStore, open_archive

runner = CliRunner()


@pytest.fixture(scope="module")
def setup(tiny_archive: Path, tiny_prior: Path, train_prior, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("assimilate")
    time = str(open_archive(tiny_archive).time.values[30])[:19]
    observed = runner.invoke(
        app,
        [
            "observe",
            "--truth",
            str(tiny_archive),
            "--time",
            time,
            "--out",
            str(root / "obs.parquet"),
            "--network",
            "radars,lidars,limb",
            "--withhold",
            "Collm,Davis",
            "--seed",
            "4",
        ],
    )
    assert observed.exit_code == 0, observed.output
    # The tiny archive starts from rest: the catalogue's errors (5-15 m/s, 2-5 K)
    # exceed its variability. Precise observations (the truth seen through H,
    # errors a tenth of the catalogue's) make the guidance measurable.
    truth = open_archive(tiny_archive)
    precise = draw_observations(truth, Grid.from_dataset(truth), time, "radars,lidars", noise=False)
    precise["sigma"] = precise["sigma"] / 10.0
    write_observations(precise, root / "precise.parquet")
    hourly = {}
    for hours in (0, 1):
        t = str(np.datetime64(time) + np.timedelta64(hours, "h"))
        hourly[t] = root / f"obs-{hours}.parquet"
        write_observations(
            draw_observations(truth, Grid.from_dataset(truth), t, "radars"), hourly[t]
        )
    return {
        "archive_obs": hourly,
        "precise": root / "precise.parquet",
        "root": root,
        "time": time,
        "archive": tiny_archive,
        "obs": root / "obs.parquet",
        "withheld": root / "obs-withheld.parquet",
        "joint3d": tiny_prior,
        "layer2d": train_prior(tiny_archive, root / "layer2d", "layer2d"),
    }


@pytest.mark.parametrize("strategy", ["joint3d", "layer2d"])
def test_assimilate_writes_a_store_that_fits_the_observations(setup: dict, strategy: str) -> None:
    out = setup["root"] / f"{strategy}.zarr"
    result = runner.invoke(
        app,
        [
            "assimilate",
            "--checkpoint",
            str(setup[strategy]),
            "--obs",
            str(setup["obs"]),
            "--time",
            setup["time"],
            "--out",
            str(out),
            "--members",
            "3",
            "--steps",
            "6",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    ds = xr.open_zarr(out)
    assert ds["u"].dims == ("time", "member", "altitude", "latitude", "longitude")
    assert ds.sizes["member"] == 3
    np.testing.assert_allclose(ds["T_mean"].values, ds["T"].mean("member").values, rtol=1e-5)
    np.testing.assert_allclose(
        ds["u_std"].values, ds["u"].std("member", ddof=1).values, rtol=1e-4, atol=1e-5
    )
    provenance = EnsembleStore.open(out).provenance(setup["time"])
    assert provenance["method"] == "mmps"
    assert "covariance" not in provenance["settings"]  # a grid prior's "auto": the Jacobian
    assert provenance["checkpoint_strategy"] == strategy
    assert len(provenance["observations_sha256"]) == 64
    assert provenance["checkpoint_sha256"] == load_checkpoint(setup[strategy]).weights_sha256
    assert ds["T"].attrs["units"] == "K" and ds.attrs["Conventions"] == "CF-1.10"
    assert "training mean per level" in result.stdout


@pytest.mark.parametrize("method", ["mmps", "dps", "sda"])
def test_guidance_pulls_the_ensemble_to_the_observations(setup: dict, method: str) -> None:
    stores = {}
    for name, obs in ((method, setup["precise"]), ("prior", None)):
        stores[name] = setup["root"] / f"fit-{method}-{name}.zarr"
        summary = assimilate_window(
            setup["joint3d"],
            obs,
            setup["time"],
            stores[name],
            members=2,
            settings=PosteriorSettings(method=method, steps=6),
            progress=False,
        )
        assert summary.method == name
    table = read_observations(setup["precise"])
    grid = Grid.from_dataset(xr.open_zarr(stores["prior"]))

    def fit(store: Path) -> float:
        ds = xr.open_zarr(store).isel(time=0)
        members = torch.from_numpy(np.stack([ds[v].values for v in grid.variables], axis=1))
        return observation_fit(members, table, grid)["rms_normalised_innovation"]

    # The same prior, guided or not: guidance must bring the members to the data;
    # MMPS, with the Tweedie covariance, much closer than the cruder DPS and SDA.
    assert fit(stores[method]) < (0.5 if method == "mmps" else 0.9) * fit(stores["prior"])


def test_members_do_not_depend_on_the_batch(setup: dict) -> None:
    stores = []
    for batch in (1, 3):
        out = setup["root"] / f"batch{batch}.zarr"
        assimilate_window(
            setup["joint3d"],
            setup["obs"],
            setup["time"],
            out,
            members=3,
            settings=PosteriorSettings(steps=4, batch_size=batch),
            progress=False,
        )
        stores.append(xr.open_zarr(out)["T"].values)
    np.testing.assert_allclose(stores[0], stores[1], rtol=0, atol=1e-4)


def test_auto_batch_size_comes_from_the_memory_model(setup: dict, monkeypatch) -> None:
    """``--batch-size auto`` on a CPU: the settings' batch where memory holds it; where
    not one member fits, a clear error and no member written."""
    from genda.planning import batch

    def run(out: Path):
        args = _assimilate_args(setup, setup["obs"], out)
        args[args.index("--members") + 1] = "3"
        return runner.invoke(app, [*args, "--batch-size", "auto"])

    result = run(setup["root"] / "auto.zarr")
    assert result.exit_code == 0, result.output
    assert xr.open_zarr(setup["root"] / "auto.zarr").sizes["member"] == 3
    monkeypatch.setattr(batch, "available_host_bytes", lambda: 4096)
    small = setup["root"] / "auto-small.zarr"
    refused = run(small)
    assert refused.exit_code != 0
    assert "one posterior member needs" in refused.output
    if small.exists():
        store = EnsembleStore.open(small)
        assert all(not store.complete(t).any() for t in store.windows())


def test_evaluate_scores_the_store_and_the_withheld_stations(setup: dict) -> None:
    store = setup["root"] / "joint3d-eval.zarr"
    prior = setup["root"] / "joint3d-prior.zarr"
    for obs, out in ((setup["obs"], store), (None, prior)):
        assimilate_window(
            setup["joint3d"],
            obs,
            setup["time"],
            out,
            members=3,
            settings=PosteriorSettings(steps=4),
            progress=False,
        )
    report = setup["root"] / "report"
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--ensemble",
            str(store),
            "--truth",
            str(setup["archive"]),
            "--out",
            str(report),
            "--obs",
            str(setup["obs"]),
            "--withheld",
            str(setup["withheld"]),
            "--baseline",
            f"prior={prior}",
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((report / "metrics.json").read_text())
    assert set(metrics["ensemble"]["variables"]) == {"u", "v", "T"}
    assert "prior" in metrics["baselines"]
    assert metrics["withheld"]["variables"]
    assert (report / "spread_skill.png").stat().st_size > 0


def _assimilate_args(setup: dict, obs: Path, out: Path, time: str | None = None) -> list[str]:
    return [
        "assimilate",
        "--checkpoint",
        str(setup["joint3d"]),
        "--obs",
        str(obs),
        "--time",
        time or setup["time"],
        "--out",
        str(out),
        "--members",
        "1",
        "--steps",
        "2",
        "--no-progress",
    ]


def test_bad_observations_are_named_and_nothing_is_written(setup: dict) -> None:
    root = setup["root"]
    table = read_observations(setup["obs"])
    cases: dict[str, pd.DataFrame] = {}
    bad = table.copy()
    bad.loc[3, "value"] = np.nan
    cases["NaN"] = bad
    bad = table.copy()
    bad.loc[5, "variable"] = "ozone"
    cases["unknown variable"] = bad
    bad = table.copy()
    bad.loc[2, "alt_km"] = 150.0
    cases["altitude"] = bad
    cases["no observations"] = table.iloc[:0]
    for i, (needle, frame) in enumerate(cases.items()):
        path = root / f"bad{i}.csv"
        frame.to_csv(path, index=False) if frame.empty else write_observations(frame, path)
        out = root / f"bad{i}.zarr"
        result = runner.invoke(app, _assimilate_args(setup, path, out))
        assert result.exit_code != 0
        assert needle.split()[0].lower() in result.output.lower(), result.output
        assert not out.exists()
        assert not list(root.glob(f"bad{i}.zarr*"))


def test_observations_outside_the_window_are_refused(setup: dict) -> None:
    out = setup["root"] / "late.zarr"
    result = runner.invoke(
        app, _assimilate_args(setup, setup["obs"], out, time="2000-03-01T00:00:00")
    )
    assert result.exit_code != 0
    assert "window" in result.output.lower()
    assert not out.exists()


def test_a_directory_that_is_not_a_store_is_refused(setup: dict) -> None:
    out = setup["root"] / "exists.zarr"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = runner.invoke(app, _assimilate_args(setup, setup["obs"], out))
    assert result.exit_code != 0 and "not a zarr v3 store" in " ".join(
        result.output.lower().split()
    )
    assert (out / "notes.txt").read_text() == "mine"


def test_a_window_with_other_settings_is_not_mixed_into_a_store(setup: dict) -> None:
    out = setup["root"] / "mixed.zarr"
    first = runner.invoke(app, _assimilate_args(setup, setup["obs"], out))
    assert first.exit_code == 0, first.output
    before = xr.open_zarr(out)["T"].values
    other = runner.invoke(app, [*_assimilate_args(setup, setup["obs"], out), "--method", "dps"])
    message = " ".join(other.output.split())
    assert other.exit_code != 0 and "other provenance" in message and "method" in message
    np.testing.assert_array_equal(xr.open_zarr(out)["T"].values, before)
    rerun = runner.invoke(app, _assimilate_args(setup, setup["obs"], out))
    assert rerun.exit_code == 0 and "already stored" in rerun.output
    np.testing.assert_array_equal(xr.open_zarr(out)["T"].values, before)


def test_windows_accumulate_in_one_store_and_query_reads_them(setup: dict) -> None:
    out = setup["root"] / "cycle.zarr"
    first = np.datetime64(setup["time"])
    times = [str(first + np.timedelta64(h, "h")) for h in (0, 1)]
    for t in times:
        args = _assimilate_args(setup, setup["archive_obs"][t], out, time=t)
        result = runner.invoke(app, [*args, "--members", "3"])
        assert result.exit_code == 0, result.output
    store = EnsembleStore.open(out)
    assert [str(t) for t in store.windows()] == times and store.validate().ok
    csv = setup["root"] / "t.csv"
    queried = runner.invoke(
        app, ["query", str(out), "--var", "T", "--alt", "90", "--stat", "q95", "--out", str(csv)]
    )
    assert queried.exit_code == 0, queried.output
    table = pd.read_csv(csv)
    ds = xr.open_zarr(out)
    level = int(np.abs(ds["altitude"].values - 90.0).argmin())
    assert len(table) == 2 * ds.sizes["latitude"] * ds.sizes["longitude"]
    expected = np.quantile(ds["T"].values[:, :, level].astype(np.float64), 0.95, axis=1)
    np.testing.assert_allclose(
        table["T_q95"].to_numpy().reshape(expected.shape), expected, rtol=1e-6
    )
    wrong = runner.invoke(app, ["query", str(out), "--var", "w", "--alt", "90"])
    assert wrong.exit_code != 0 and "'w'" in wrong.output


def test_baseline_command_writes_a_store_scored_like_the_posterior(setup: dict) -> None:
    out = setup["root"] / "enkf.zarr"
    result = runner.invoke(
        app,
        [
            "baseline",
            "--archive",
            str(setup["archive"]),
            "--obs",
            str(setup["precise"]),
            "--time",
            setup["time"],
            "--out",
            str(out),
            "--members",
            "4",
            "--any-hour",  # two days of archive: too few states at the window's time of day
            "--climatology-size",
            "8",
            "--exclude-hours",
            "6",
            "--horizontal-km",
            "8000",
            "--vertical-km",
            "40",
        ],
    )
    assert result.exit_code == 0, result.output
    ds = xr.open_zarr(out)
    assert ds.sizes["member"] == 4
    assert EnsembleStore.open(out).provenance(setup["time"])["method"] == "enkf"
    bad = runner.invoke(
        app,
        [
            "baseline",
            "--archive",
            str(setup["archive"]),
            "--time",
            setup["time"],
            "--out",
            str(setup["root"] / "oi.zarr"),
            "--method",
            "oi",
        ],
    )
    assert bad.exit_code != 0 and "observations" in bad.output
    assert not (setup["root"] / "oi.zarr").exists()


@pytest.mark.parametrize("strategy", ["joint3d", "layer2d"])
def test_an_observation_informs_the_layers_around_it(setup: dict, strategy: str) -> None:
    from genda.assimilation.posterior import posterior_members
    from genda.models.checkpoint import load_checkpoint

    prior = load_checkpoint(setup[strategy])
    grid = prior.grid
    level = 1
    obs = pd.DataFrame(
        {
            "time": [np.datetime64(setup["time"])],
            "lat": [grid.latitude[5]],
            "lon": [grid.longitude[7]],
            "alt_km": [grid.altitude[level]],
            "variable": ["T"],
            "value": [
                float(prior.normalization.mean[2, level] + 3 * prior.normalization.std[2, level])
            ],
            "sigma": [0.1],
        }
    )
    settings = PosteriorSettings(steps=6)
    guided = posterior_members(prior, obs, [0, 1], seed=5, settings=settings)
    free = posterior_members(prior, None, [0, 1], seed=5, settings=settings)
    change = (guided - free)[:, grid.variable_index("T")].abs().amax(dim=(0, 2, 3))  # per level
    # The same members with and without the observation: it moves its own level
    # and, through the prior, the levels above and below (a decoupled prior: exactly 0).
    assert change[level] > 1.0
    assert change[level - 1] > 0.01 * change[level]
    assert change[level + 1] > 0.01 * change[level]
