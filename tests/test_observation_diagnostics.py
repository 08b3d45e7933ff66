"""Observation-space diagnostics of a window: numbers against direct computations, and the store."""

from __future__ import annotations

import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

from genda.assimilation.posterior import PosteriorSettings
from genda.errors import InvalidValueError, RunFailedError
from genda.grid import Grid
from genda.models.checkpoint import load_checkpoint
from genda.normalization import Normalization
from genda.observations import validate_observations, write_observations
from genda.observations.diagnostics import DIAGNOSTIC_COLUMNS, observation_diagnostics
from genda.observations.qc import background_check
from genda.orchestration import assimilate as assimilate_module
from genda.orchestration.assimilate import assimilate_window
from genda.storage import open_archive
from genda.storage.ensemble_diagnostics import diagnostics_key, read_diagnostics
from genda.storage.ensemble_query import open_ensemble, query
from genda.storage.ensemble_store import EnsembleStore
from genda.storage.errors import EnsembleStoreError

GRID = Grid.gaussian(8, 16, 3)
T0 = np.datetime64("2024-03-01T06:00:00")


def _row(i: int, j: int, level: int, variable: str, value: float, **extra) -> dict:
    return {
        "time": T0,
        "lat": GRID.latitude[i],
        "lon": GRID.longitude[j],
        "alt_km": GRID.altitude[level],
        "variable": variable,
        "value": value,
        "sigma": 2.0,
        **extra,
    }


def test_diagnostics_equal_a_direct_computation_at_grid_nodes() -> None:
    rng = np.random.default_rng(0)
    mean = np.array([[5.0, -3.0, 1.0], [0.0, 2.0, -1.0], [200.0, 190.0, 230.0]])
    std = np.array([[10.0, 12.0, 15.0], [8.0, 9.0, 11.0], [6.0, 7.0, 9.0]])
    normalization = Normalization(GRID.variables, mean, std)
    members = rng.normal(size=(5, *GRID.shape)) * std[None, :, :, None, None]
    members += mean[None, :, :, None, None]
    u, v, temperature = (GRID.variable_index(n) for n in ("u", "v", "T"))
    az, el = 30.0, 20.0
    rows = [
        _row(2, 3, 1, "u", 4.0),
        _row(5, 7, 2, "T", 236.0),
        _row(1, 0, 0, "T", 200.0 + 60.0),  # 60 K from the climatology: rejected
        # half-way between two columns: the mean of the two nodes
        {**_row(4, 9, 1, "v", -1.0), "lon": 0.5 * (GRID.longitude[9] + GRID.longitude[10])},
        _row(6, 12, 2, "los", 3.0, azimuth_deg=az, elevation_deg=el),
    ]
    table = validate_observations(pd.DataFrame(rows), GRID)
    check = background_check(table, GRID, normalization, k=5.0)
    assert check.rows == (2,)
    blocks = [members[:3], members[3:]]  # the members arrive in blocks
    out = observation_diagnostics(table, check, GRID, normalization, blocks)
    assert list(out.columns[-len(DIAGNOSTIC_COLUMNS) :]) == list(DIAGNOSTIC_COLUMNS)
    pd.testing.assert_frame_equal(out[table.columns], table)

    a, b = (
        math.cos(math.radians(el)) * math.sin(math.radians(az)),
        math.cos(math.radians(el)) * math.cos(math.radians(az)),
    )
    at_obs = np.stack(
        [
            members[:, u, 1, 2, 3],
            members[:, temperature, 2, 5, 7],
            members[:, temperature, 0, 1, 0],
            0.5 * (members[:, v, 1, 4, 9] + members[:, v, 1, 4, 10]),
            a * members[:, u, 2, 6, 12] + b * members[:, v, 2, 6, 12],
        ],
        axis=1,
    )
    prior_mean = [mean[u, 1], mean[temperature, 2], mean[temperature, 0], mean[v, 1]]
    prior_mean.append(a * mean[u, 2] + b * mean[v, 2])
    prior_spread = [std[u, 1], std[temperature, 2], std[temperature, 0], std[v, 1]]
    prior_spread.append(a * std[u, 2] + b * std[v, 2])  # |H| sigma_b: the check's bound
    value = table["value"].to_numpy()
    np.testing.assert_allclose(out["prior_mean"], prior_mean, rtol=1e-12)
    np.testing.assert_allclose(out["prior_spread"], prior_spread, rtol=1e-12)
    np.testing.assert_allclose(out["posterior_mean"], at_obs.mean(0), rtol=1e-12)
    np.testing.assert_allclose(out["posterior_spread"], at_obs.std(0, ddof=1), rtol=1e-12)
    np.testing.assert_allclose(out["innovation"], value - np.array(prior_mean), rtol=1e-12)
    np.testing.assert_allclose(out["residual"], value - at_obs.mean(0), rtol=1e-12)
    departure = (value - np.array(prior_mean)) / np.sqrt(np.array(prior_spread) ** 2 + 4.0)
    np.testing.assert_allclose(out["departure"], departure, rtol=1e-12)
    np.testing.assert_allclose(np.abs(out["departure"]), check.departures, rtol=1e-12)
    assert out["rejected"].tolist() == [False, False, True, False, False]
    assert out["assimilated"].tolist() == [True, True, False, True, True]
    kept = observation_diagnostics(table, check, GRID, normalization, [members], keep_outliers=True)
    assert kept["assimilated"].all() and kept["rejected"].sum() == 1
    one = observation_diagnostics(table, check, GRID, normalization, [members[:1]])
    assert one["posterior_spread"].isna().all()
    with pytest.raises(InvalidValueError, match="made on 5 observations"):
        observation_diagnostics(table.iloc[:3], check, GRID, normalization, [members])


# ---------------------------------------------------------------------- assimilate_window
@pytest.fixture(scope="module")
def window(tiny_archive: Path, tiny_prior: Path, tmp_path_factory) -> dict:
    """A table at grid nodes of the tiny prior, one row a gross error, and a 3-member window."""
    root = tmp_path_factory.mktemp("diagnostics")
    prior = load_checkpoint(tiny_prior)
    grid, norm = prior.grid, prior.normalization
    time = str(open_archive(tiny_archive).time.values[30])[:19]
    nodes = [(2, 3, 1, "u"), (5, 7, 2, "v"), (9, 20, 0, "T"), (12, 30, 3, "T")]
    rows = []
    for k, (i, j, level, name) in enumerate(nodes):
        v = grid.variable_index(name)
        rows.append(
            {
                "time": np.datetime64(time),
                "lat": grid.latitude[i],
                "lon": grid.longitude[j],
                "alt_km": grid.altitude[level],
                "variable": name,
                "value": norm.mean[v, level] + 0.5 * norm.std[v, level],
                "sigma": 1.0,
                "station": f"S{k}",
            }
        )
    # the last T row: far beyond 5 sigma of the climatology, still a possible temperature
    t = grid.variable_index("T")
    rows[-1]["value"] = norm.mean[t, 3] + 12.0 * math.hypot(norm.std[t, 3], 1.0)
    path = root / "obs.csv"
    write_observations(pd.DataFrame(rows), path)
    out = root / "ens.zarr"
    assimilate_window(
        tiny_prior,
        path,
        time,
        out,
        members=3,
        settings=PosteriorSettings(steps=4),
        progress=False,
    )
    return {
        "root": root,
        "out": out,
        "obs": path,
        "time": time,
        "nodes": nodes,
        "prior": prior,
        "checkpoint": tiny_prior,
    }


def test_assimilate_writes_the_diagnostics_of_every_row(window: dict) -> None:
    prior, nodes = window["prior"], window["nodes"]
    store = EnsembleStore.open(window["out"])
    table = read_diagnostics(window["out"], window["time"])
    assert table is not None and len(table) == len(nodes)
    members = store.read_members(window["time"]).astype(np.float64)
    for k, (i, j, level, name) in enumerate(nodes):
        v = prior.grid.variable_index(name)
        row = table.iloc[k]
        at = members[:, v, level, i, j]
        assert row["prior_mean"] == pytest.approx(prior.normalization.mean[v, level], rel=1e-12)
        assert row["prior_spread"] == pytest.approx(prior.normalization.std[v, level], rel=1e-12)
        assert row["posterior_mean"] == pytest.approx(at.mean(), rel=1e-9, abs=1e-9)
        assert row["posterior_spread"] == pytest.approx(at.std(ddof=1), rel=1e-9, abs=1e-9)
        assert row["innovation"] == pytest.approx(row["value"] - row["prior_mean"], rel=1e-12)
        assert row["residual"] == pytest.approx(row["value"] - at.mean(), rel=1e-9, abs=1e-9)
    # only the gross error is rejected, and it was left out of the assimilation
    assert table["rejected"].tolist() == [False, False, False, True]
    assert table["assimilated"].tolist() == [True, True, True, False]
    assert store.provenance(window["time"])["observations_count"] == 3
    assert table.attrs["checkpoint"] == str(window["checkpoint"])
    assert table.attrs["checkpoint_path"] == str(prior.path)
    assert table.attrs["outlier_k"] == 5.0 and table.attrs["keep_outliers"] is False
    # plain xarray reads the group; the store stays valid and opens without Zarr warnings
    group = xr.open_zarr(window["out"], group=diagnostics_key(window["time"]))
    np.testing.assert_allclose(group["residual"].values, table["residual"].to_numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.validate().ok
        open_ensemble(window["out"])
        level = query(window["out"], "T", float(prior.grid.altitude[0]), window["time"])
        assert np.isfinite(level.values).all()


def test_a_failed_window_writes_no_diagnostics(window: dict, monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise RunFailedError("the members could not be made")

    monkeypatch.setattr(assimilate_module, "_make_members", fail)
    out = window["root"] / "failed.zarr"
    with pytest.raises(RunFailedError):
        assimilate_window(
            window["prior"].path,
            window["obs"],
            window["time"],
            out,
            members=3,
            settings=PosteriorSettings(steps=4),
            progress=False,
        )
    assert read_diagnostics(out, window["time"]) is None
    assert not (out / "diagnostics").exists()


def test_diagnostics_of_other_settings_are_refused_as_stale(window: dict, tmp_path: Path) -> None:
    copy = tmp_path / "copy.zarr"
    shutil.copytree(window["out"], copy)
    key = diagnostics_key(window["time"])
    # the same group under another window's provenance: what a re-registration leaves
    attrs = zarr.open_group(str(copy / key), mode="r+").attrs
    attrs["provenance"] = attrs["provenance"].replace('"seed": 0', '"seed": 1')
    with pytest.raises(EnsembleStoreError, match="differing: seed"):
        read_diagnostics(copy, window["time"])
