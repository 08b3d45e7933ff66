"""genda.evaluation.report: metrics.json and figures from datasets and from files.

The observations sit on grid points, where the observation operator returns
the grid values exactly, so the expected point scores follow from indexing
the members directly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from genda.evaluation.report import evaluate_ensemble, evaluate_paths
from genda.evaluation.scores import ensemble_scores, point_scores
from genda.grid import Grid
from genda.observations import ObservationOperator, write_observations

GRID = Grid.gaussian(16, 32, 4)
SPACE = ("altitude", "latitude", "longitude")
MEMBERS = 8
# stores written with consolidated metadata, which zarr 3 warns is outside its specification
pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")
TIMES = np.array(["2030-03-01T00", "2030-03-01T06", "2030-03-01T12"], dtype="datetime64[ns]")


def ensemble_dataset(fields: np.ndarray) -> xr.Dataset:
    base = GRID.to_dataset(fields[0])
    data = {
        name: (("member", *SPACE), fields[:, i], base[name].attrs)
        for i, name in enumerate(GRID.variables)
    }
    return xr.Dataset(data, coords={**base.coords, "member": np.arange(fields.shape[0])})


def observation_table(
    truth: np.ndarray, rng: np.random.Generator, stations: list[str], variables: list[str]
) -> pd.DataFrame:
    """Profiles at grid points: every level of ``variables`` at each station, sigma = 1."""
    rows = []
    for station in stations:
        h, w = int(rng.integers(GRID.nlat)), int(rng.integers(GRID.nlon))
        for name in variables:
            for level, altitude in enumerate(GRID.altitude):
                value = truth[GRID.variable_index(name), level, h, w] + rng.standard_normal()
                rows.append(
                    {
                        "time": pd.Timestamp(TIMES[1]),
                        "lat": GRID.latitude[h],
                        "lon": GRID.longitude[w],
                        "alt_km": altitude,
                        "variable": name,
                        "value": value,
                        "sigma": 1.0,
                        "station": station,
                    }
                )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def case() -> dict:
    rng = np.random.default_rng(0)
    spread = np.array([5.0, 3.0, 2.0])[:, None, None, None]
    c = np.array([10.0, 0.0, 200.0])[:, None, None, None] + 20 * rng.standard_normal(GRID.shape)
    truth = c + spread * rng.standard_normal(GRID.shape)
    members = c + spread * rng.standard_normal((MEMBERS, *GRID.shape))
    prior = c + 3 * spread * rng.standard_normal((MEMBERS, *GRID.shape))
    return {
        "truth": truth,
        "members": members,
        "ensemble": ensemble_dataset(members),
        "prior": ensemble_dataset(prior),
        "obs": observation_table(truth, rng, ["a", "b", "c"], ["u", "T"]),
        "withheld": observation_table(truth, rng, ["w1", "w2"], ["T", "v"]),
    }


def test_report_writes_metrics_and_figures(case, tmp_path: Path) -> None:
    out = tmp_path / "report"
    metrics = evaluate_ensemble(
        case["ensemble"],
        GRID.to_dataset(case["truth"]),
        out,
        obs=case["obs"],
        withheld=case["withheld"],
        baselines={"prior": case["prior"]},
        point_operator=ObservationOperator.from_table(case["withheld"], GRID),
    )
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert not list(out.glob("*.partial*"))
    assert set(metrics["plots"]) == {
        "map_u",
        "map_v",
        "map_T",
        "spread_skill",
        "rank_histograms",
        "profiles",
        "posterior_fidelity",
    }
    for path in metrics["plots"].values():
        assert Path(path).parent == out
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert Path(path).stat().st_size > 10_000  # drawn, not blank
    assert metrics["level_km"] == pytest.approx(GRID.altitude[2])
    # the gridded scores are those of ensemble_scores
    direct = ensemble_scores(case["ensemble"], GRID.to_dataset(case["truth"]))
    assert metrics["ensemble"] == direct
    # a baseline three times too wide is seen as over-dispersive beside the ensemble
    for name in GRID.variables:
        ours = metrics["ensemble"]["variables"][name]["total"]["spread_skill"]
        prior = metrics["baselines"]["prior"]["variables"][name]["total"]["spread_skill"]
        assert prior > 2 * ours
    # the withheld scores are those of the members read at the stations' grid points
    table = case["withheld"]
    v = [GRID.variable_index(name) for name in table["variable"]]
    lev = np.abs(GRID.altitude[:, None] - table["alt_km"].to_numpy()).argmin(0)
    h = np.abs(GRID.latitude[:, None] - table["lat"].to_numpy()).argmin(0)
    w = np.abs(GRID.longitude[:, None] - table["lon"].to_numpy()).argmin(0)
    values = case["members"][:, v, lev, h, w].astype(np.float32)
    expected = point_scores(values.astype(np.float64), table)
    withheld = metrics["withheld"]
    assert set(withheld["variables"]) == {"T", "v"}
    for name in ("T", "v"):
        got, want = withheld["variables"][name], expected["variables"][name]
        assert got["count"] == 2 * GRID.nlevels
        assert set(got["stations"]) == {"w1", "w2"}
        for kind in ("total", "with_obs_error"):
            assert got[kind]["crps"] == pytest.approx(want[kind]["crps"], rel=1e-5)
            assert got[kind]["rmse"] == pytest.approx(want[kind]["rmse"], rel=1e-5)


def test_report_without_observations(case, tmp_path: Path) -> None:
    ensemble, truth = case["ensemble"][["T"]], GRID.to_dataset(case["truth"])
    with pytest.raises(ValueError, match=r"altitude 200 km is outside the levels 80\.\.115 km"):
        evaluate_ensemble(ensemble, truth, tmp_path / "high", level_km=200.0)
    assert not (tmp_path / "high").exists()  # nothing written
    metrics = evaluate_ensemble(ensemble, truth, tmp_path, level_km=80.0)
    assert list(metrics["ensemble"]["variables"]) == ["T"]  # the ensemble's variables
    assert metrics["withheld"] is None and metrics["baselines"] == {}
    assert set(metrics["plots"]) == {
        "map_T",
        "spread_skill",
        "rank_histograms",
        "posterior_fidelity",
    }
    fidelity = metrics["posterior_fidelity"]
    assert set(fidelity["worst_power_error"]) == {"T"}
    assert len(fidelity["power_ratio"]["T"]) == GRID.nlevels
    assert Path(metrics["plots"]["map_T"]).name == "map_T_80km.png"


@pytest.fixture
def stores(case, tmp_path: Path) -> dict:
    """An ensemble store at TIMES[1], a truth archive over TIMES, observation files."""
    truth = np.stack([case["truth"] - 1.0, case["truth"], case["truth"] + 1.0])
    truth_path = tmp_path / "truth.zarr"
    GRID.to_dataset(truth, time=TIMES).to_zarr(truth_path)
    # v and T only (the withheld variables), with a summary variable to ignore
    ensemble = case["ensemble"][["v", "T"]].expand_dims(time=TIMES[1:2])
    ensemble["T_mean"] = ensemble["T"].mean("member")
    ensemble_path = tmp_path / "ensemble.zarr"
    ensemble.to_zarr(ensemble_path)
    write_observations(case["obs"], tmp_path / "obs.parquet")
    write_observations(case["withheld"], tmp_path / "withheld.parquet")
    return {"truth": truth_path, "ensemble": ensemble_path, "dir": tmp_path}


def test_evaluate_paths(case, stores) -> None:
    out = stores["dir"] / "from_files"
    metrics = evaluate_paths(
        stores["ensemble"],
        stores["truth"],
        out,
        obs_path=stores["dir"] / "obs.parquet",
        withheld_path=stores["dir"] / "withheld.parquet",
    )
    assert metrics["ensemble"]["times"] == ["2030-03-01T06:00:00"]
    assert list(metrics["ensemble"]["variables"]) == ["v", "T"]
    direct = ensemble_scores(case["ensemble"], GRID.to_dataset(case["truth"]))
    for name in ("v", "T"):
        # the truth archive is float32
        got = metrics["ensemble"]["variables"][name]["total"]["rmse"]
        assert got == pytest.approx(direct["variables"][name]["total"]["rmse"], rel=1e-4)
    assert set(metrics["withheld"]["variables"]) == {"T", "v"}
    assert (out / "metrics.json").stat().st_size > 0
    assert (out / "profiles.png").stat().st_size > 0


def test_evaluate_paths_names_the_truth_range(stores) -> None:
    ensemble = xr.open_zarr(stores["ensemble"]).load()
    late = ensemble.assign_coords(time=np.array(["2031-01-01"], dtype="datetime64[ns]"))
    late_path = stores["dir"] / "late.zarr"
    late.to_zarr(late_path)
    with pytest.raises(ValueError, match=r"no time 2031-01-01T00:00:00; it covers 2030-03-01T00"):
        evaluate_paths(late_path, stores["truth"], stores["dir"] / "late")
    assert not (stores["dir"] / "late").exists()  # nothing written


def test_a_baseline_of_another_window_is_refused(stores) -> None:
    other = xr.open_zarr(stores["ensemble"]).load().assign_coords(time=TIMES[2:3])
    other_path = stores["dir"] / "other.zarr"
    other.to_zarr(other_path)
    with pytest.raises(ValueError, match="a baseline must be of the same window"):
        evaluate_paths(
            stores["ensemble"],
            stores["truth"],
            stores["dir"] / "mixed",
            baseline_paths={"prior": other_path},
        )
