"""The resumable multi-window ensemble store: writer, layout, statistics, queries and export."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from genda.grid import Grid, lookup_variable, nearest_level
from genda.storage import ensemble_layout as layout
from genda.storage.ensemble_export import to_file
from genda.storage.ensemble_query import open_ensemble, query
from genda.storage.ensemble_store import EnsembleStore
from genda.storage.errors import EnsembleStoreError

GRID = Grid.gaussian(8, 16, 2)
T0 = np.datetime64("2024-01-01T00:00:00")
T1 = np.datetime64("2024-01-01T06:00:00")
PROV = {
    "checkpoint": "ck-1234",
    "observations": "obs-abcd",
    "method": "mmps",
    "steps": 32,
    "seed": 7,
    "genda_version": "0.1",
}


def fields(members, time=T0) -> np.ndarray:
    """``(n, V, L, H, W)`` float32 fields that differ by member and window."""
    rng = np.random.default_rng(int(time.astype("datetime64[h]").astype(np.int64)))
    base = rng.normal(size=GRID.shape).astype(np.float32)
    return np.stack([base + np.float32(m) for m in members]).astype(np.float32)


def make(tmp_path: Path, members: int = 4, per_shard: int = 2, **kw) -> EnsembleStore:
    return EnsembleStore.create(
        tmp_path / "ens.zarr", GRID, members, {"title": "test"}, members_per_shard=per_shard, **kw
    )


def _write_shards(path: str, batches: list[list[int]], barrier=None) -> None:
    """Write whole shards of window T0 (also run in a spawned process), after ``barrier``."""
    store = EnsembleStore.open(path)
    if barrier is not None:
        barrier.wait(timeout=120)  # both processes write at the same moment
    for batch in batches:
        store.write_members(T0, batch, fields(batch))


def test_round_trip_two_windows(tmp_path):
    store = make(tmp_path)
    assert store.add_window(T0, PROV) == 0
    assert store.add_window(T1, PROV) == 1
    store.write_members(T0, [0, 1, 2, 3], fields(range(4)))
    store.write_members(T1, [3, 1, 0, 2], fields([3, 1, 0, 2], T1))  # any order
    again = EnsembleStore.open(store.path)
    assert again.windows() == [T0, T1]
    assert again.provenance(T1) == PROV
    ds = open_ensemble(store.path)
    assert ds["u"].dims == layout.MEMBER_DIMS
    for i, t in enumerate((T0, T1)):
        stored = np.stack([ds[v].isel(time=i).values for v in GRID.variables], axis=1)
        np.testing.assert_array_equal(stored, fields(range(4), t))
    assert store.missing(T0) == [] and store.missing(T1) == []
    assert store.validate().ok
    # re-adding returns the index and changes nothing
    assert store.add_window(T0, dict(PROV)) == 0
    assert len(store.windows()) == 2


def test_members_in_two_calls_and_missing(tmp_path):
    store = make(tmp_path, members=6, per_shard=3)
    store.add_window(T0, PROV)
    assert store.missing(T0) == list(range(6))
    store.write_members(T0, [0, 1, 2], fields([0, 1, 2]))
    assert store.missing(T0) == [3, 4, 5]
    assert store.complete(T0).tolist() == [True] * 3 + [False] * 3
    store.write_members(T0, [3, 4, 5], fields([3, 4, 5]))
    assert store.missing(T0) == []
    u = open_ensemble(store.path)["u"].isel(time=0).values
    np.testing.assert_array_equal(u, fields(range(6))[:, 0])


def test_two_processes_write_disjoint_shards(tmp_path):
    store = make(tmp_path, members=8, per_shard=2)
    store.add_window(T0, PROV)
    batches = store.shard_batches()
    assert batches == [[0, 1], [2, 3], [4, 5], [6, 7]]
    # One spawned writer beside this process: a second spawned one would only add
    # another interpreter start-up (seconds) to the same concurrency.
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    child = ctx.Process(target=_write_shards, args=(str(store.path), batches[1::2], barrier))
    child.start()
    try:
        _write_shards(str(store.path), batches[0::2], barrier)
    finally:
        child.join(timeout=120)
    assert child.exitcode == 0
    assert store.missing(T0) == []
    ds = xr.open_zarr(store.path)
    stored = np.stack([ds[v].isel(time=0).values for v in GRID.variables], axis=1)
    np.testing.assert_array_equal(stored, fields(range(8)))
    assert store.validate().ok


def test_crash_between_data_and_mask(tmp_path, monkeypatch):
    store = make(tmp_path)
    store.add_window(T0, PROV)
    store.write_members(T0, [0, 1], fields([0, 1]))

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("worker killed after the data landed")

    monkeypatch.setattr(EnsembleStore, "_mark_complete", killed)
    with pytest.raises(KeyboardInterrupt):
        store.write_members(T0, [2, 3], fields([2, 3]))
    monkeypatch.undo()
    assert store.missing(T0) == [2, 3]
    assert store.validate().ok  # unflagged data are not a problem, only work to redo
    with pytest.raises(EnsembleStoreError, match=r"lacks 2 of 4 members \(2, 3\)"):
        store.finalize(T0)
    store.write_members(T0, store.missing(T0), fields([2, 3]))
    store.finalize(T0)
    assert store.validate().ok


def test_validate_reports_flag_without_data_and_premature_statistics(tmp_path):
    store = make(tmp_path)
    store.add_window(T0, PROV)
    store.write_members(T0, [0, 1], fields([0, 1]))
    group = zarr.open_group(str(store.path), mode="r+", use_consolidated=False)
    group["complete"][0, 3] = True  # flag without data
    group["u_mean"][0] = np.zeros(GRID.shape[1:], np.float32)  # statistics too early
    problems = store.validate().problems
    assert any("member 3 is flagged complete" in p and "'u'" in p for p in problems)
    assert any("statistics present for the incomplete window" in p for p in problems)
    with pytest.raises(EnsembleStoreError, match="lacks 1 of 4 members"):
        store.finalize(T0)


def test_statistics_match_numpy(tmp_path):
    store = make(tmp_path, members=5, per_shard=2)
    store.add_window(T0, PROV)
    rng = np.random.default_rng(3)
    data = rng.normal(200.0, 10.0, size=(5, *GRID.shape)).astype(np.float32)
    store.write_members(T0, range(5), data)
    assert not store.is_finalized(T0)
    store.finalize(T0)
    assert store.is_finalized(T0)
    ds = xr.open_zarr(store.path)
    ref64 = data.astype(np.float64)
    expected = {
        "mean": ref64.mean(axis=0),
        "std": ref64.std(axis=0, ddof=1),
        "q05": np.quantile(ref64, 0.05, axis=0),
        "q50": np.quantile(ref64, 0.50, axis=0),
        "q95": np.quantile(ref64, 0.95, axis=0),
    }
    for v, name in enumerate(GRID.variables):
        for stat, ref in expected.items():
            da = ds[f"{name}_{stat}"]
            assert da.dims == layout.STAT_DIMS
            np.testing.assert_allclose(da.isel(time=0).values, ref[v], rtol=1e-6, atol=1e-4)
    assert ds["T_mean"].attrs["cell_methods"] == "member: mean"
    assert ds["T_q95"].attrs["quantile"] == 0.95
    assert store.validate().ok
    with pytest.raises(EnsembleStoreError, match="finalised"):
        store.write_members(T0, [0], data[:1])
    store.finalize(T0)  # a finalised window is left as it is


def test_provenance_mismatch_names_keys(tmp_path):
    store = make(tmp_path)
    store.add_window(T0, PROV)
    # A window without members takes new provenance; one with members must refuse it.
    store.write_members(T0, [0], fields([0]))
    other = {**PROV, "steps": 64, "seed": 8}
    with pytest.raises(EnsembleStoreError, match=r"seed: stored 7, given 8; steps: stored 32"):
        store.add_window(T0, other)
    with pytest.raises(EnsembleStoreError, match="genda_version"):
        store.add_window(T0, {k: v for k, v in PROV.items() if k != "genda_version"})
    assert store.provenance(T0) == PROV


def test_bad_members_rejected_and_nothing_written(tmp_path):
    store = make(tmp_path)
    store.add_window(T0, PROV)
    data = fields([0, 1])
    data[1, 2, 0, 3, 4] = np.nan
    with pytest.raises(
        EnsembleStoreError, match=r"member 1 variable 'T': 1 values.*nothing written"
    ):
        store.write_members(T0, [0, 1], data)
    assert store.missing(T0) == [0, 1, 2, 3]
    assert np.isnan(open_ensemble(store.path)["u"].values).all()
    assert not any((store.path / "u" / "c").rglob("*"))
    with pytest.raises(EnsembleStoreError, match=r"member 4 is outside 0..3"):
        store.write_members(T0, [4], fields([4]))
    with pytest.raises(EnsembleStoreError, match="expected"):
        store.write_members(T0, [0, 1], fields([0]))
    with pytest.raises(EnsembleStoreError, match="more than once"):
        store.write_members(T0, [1, 1], fields([1, 1]))
    with pytest.raises(EnsembleStoreError, match="add it with add_window"):
        store.write_members(T1, [0], fields([0]))


def test_open_rejects_other_stores(tmp_path):
    with pytest.raises(FileNotFoundError):
        EnsembleStore.open(tmp_path / "nowhere.zarr")
    plain = tmp_path / "plain.zarr"
    GRID.to_dataset(fields([0])[0]).to_zarr(plain, zarr_format=3, consolidated=False)
    with pytest.raises(EnsembleStoreError, match="not a genda ensemble store"):
        EnsembleStore.open(plain)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EnsembleStoreError, match="not a"):
        EnsembleStore.open(tmp_path / "empty")
    make(tmp_path)
    with pytest.raises(FileExistsError):
        make(tmp_path)
    with pytest.raises(EnsembleStoreError, match="reserved"):
        EnsembleStore.create(tmp_path / "x.zarr", GRID, 2, {"genda_windows": "{}"})


def test_open_zarr_reads_cf_attributes(tmp_path):
    store = make(tmp_path)
    store.add_window(T1, PROV)
    ds = xr.open_zarr(store.path)
    assert ds.sizes == {"time": 1, "member": 4, "altitude": 2, "latitude": 8, "longitude": 16}
    assert ds["time"].values[0] == T1.astype("datetime64[ns]")
    assert ds["time"].attrs["standard_name"] == "time"
    assert ds["time"].encoding["units"] == layout.TIME_UNITS
    assert ds["time"].encoding["dtype"] == np.int64
    for name in GRID.variables:
        assert ds[name].dtype == np.float32
        for key, value in lookup_variable(name).cf_attrs().items():
            assert ds[name].attrs[key] == value
    for name, var in GRID.coords().items():
        assert ds[name].attrs == var.attrs
        np.testing.assert_array_equal(ds[name].values, var.values)
    assert ds["member"].values.tolist() == [0, 1, 2, 3]
    assert ds["complete"].dtype == bool
    assert ds.attrs["Conventions"] == "CF-1.10"
    assert json.loads(ds.attrs["genda_windows"])["2024-01-01T06:00:00"]["provenance"] == PROV
    assert Grid.from_dataset(ds) == GRID


def test_interrupted_add_window_is_repaired(tmp_path):
    store = make(tmp_path)
    store.add_window(T0, PROV)
    group = zarr.open_group(str(store.path), mode="r+", use_consolidated=False)
    # a registration killed after growing two arrays: the slot has neither time nor provenance
    for name in ("u", "v"):
        group[name].resize((2, *group[name].shape[1:]))
    assert any("disagree" in p for p in store.validate().problems)
    assert store.add_window(T1, PROV) == 1
    assert store.windows() == [T0, T1]
    assert store.validate().ok


def test_query_and_files(tmp_path):
    store = make(tmp_path)
    for t in (T0, T1):
        store.add_window(t, PROV)
        store.write_members(t, range(4), fields(range(4), t))
    store.finalize(T0)
    level = int(np.argmin(np.abs(GRID.altitude - 114.0)))
    mean = query(store.path, "T", 114.0, time=T0, stat="mean")
    assert mean.dims == ("latitude", "longitude")
    assert float(mean["altitude"]) == GRID.altitude[level]
    expected = fields(range(4)).astype(np.float64).mean(axis=0)[2, level]
    np.testing.assert_allclose(mean.values, expected, rtol=1e-6)
    # every finalised window; members of all windows
    assert query(store.path, "T", 114.0, stat="q50").sizes["time"] == 1
    members = query(store.path, "u", 80.0, stat="members")
    assert members.dims == ("time", "member", "latitude", "longitude")
    np.testing.assert_array_equal(members.isel(time=1).values, fields(range(4), T1)[:, 0, 0])
    with pytest.raises(ValueError, match=r"half a level spacing"):
        query(store.path, "T", 135.0)
    with pytest.raises(ValueError, match="not finalised"):
        query(store.path, "T", 80.0, time=T1)
    with pytest.raises(KeyError, match="'w' is not in"):
        query(store.path, "w", 80.0)
    csv = to_file(mean, tmp_path / "out" / "mean.csv")
    table = np.genfromtxt(csv, delimiter=",", names=True)
    assert len(table) == GRID.nlat * GRID.nlon
    np.testing.assert_allclose(table["T_mean"], mean.values.ravel(), rtol=1e-6)
    assert "altitude" in table.dtype.names and "air_pressure" not in table.dtype.names
    nc = to_file(members, tmp_path / "out" / "members.nc")
    back = xr.open_dataset(nc)
    np.testing.assert_array_equal(back["u"].values, members.values)
    assert back["u"].attrs["standard_name"] == "eastward_wind"
    back.close()
    with pytest.raises(ValueError, match=r"\.csv or \.nc"):
        to_file(mean, tmp_path / "mean.txt")


def test_nearest_level_tolerance():
    alts = np.array([80.0, 90.0, 110.0])
    assert nearest_level(alts, 84.9) == 0
    assert nearest_level(alts, 99.0) == 1
    assert nearest_level(alts, 101.0) == 2
    assert nearest_level(alts, 119.0) == 2
    with pytest.raises(ValueError, match="half a level spacing"):
        nearest_level(alts, 74.0)
    with pytest.raises(ValueError):
        nearest_level(np.array([90.0]), 91.0)


def test_sharding_bounds_file_count(tmp_path):
    def count(path: Path) -> int:
        return sum(1 for p in path.rglob("*") if p.is_file())

    data = fields(range(16))
    paths = {}
    for per_shard in (4, 1):
        store = EnsembleStore.create(
            tmp_path / f"s{per_shard}.zarr", GRID, 16, members_per_shard=per_shard
        )
        store.add_window(T0, PROV)
        for batch in store.shard_batches():
            store.write_members(T0, batch, data[batch])
        paths[per_shard] = store.path
    assert EnsembleStore.open(paths[4]).validate().ok
    sharded, plain = paths[4], paths[1]
    # one file per (variable, shard of 4 members) of a window, and the same for the mask
    assert count(sharded / "u" / "c") == 4
    assert count(sharded / "complete" / "c") == 4
    assert count(plain / "u" / "c") == 16
    assert count(plain / "complete" / "c") == 16
    # (V + 1) * (16 - 4) fewer chunk files, the metadata being the same
    assert count(plain) - count(sharded) == (len(GRID.variables) + 1) * 12
    assert xr.open_zarr(sharded)["u"].encoding["shards"] == (1, 4, *GRID.shape[1:])
    np.testing.assert_array_equal(xr.open_zarr(sharded)["v"].isel(time=0).values, data[:, 1])


def test_auto_members_per_shard():
    assert layout.auto_members_per_shard(8, 10_000) == 1
    assert layout.auto_members_per_shard(64, 10_000) == 16
    assert layout.auto_members_per_shard(64, 100 * 2**20) == 2
