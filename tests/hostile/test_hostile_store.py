"""Damaged stores and archives: chunk files deleted or truncated behind genda's back.

Each case asserts the message (it names the file or the member), the exit
code, and that nothing was lost: a check changes no file, a repair removes
only the damaged file, and a rerun regenerates the damaged members bit for
bit (a member's data depend only on its seed).
"""

from __future__ import annotations

import hashlib
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from hostile_checks import observed_window
from typer.testing import CliRunner

from genda.cli import app
from genda.grid import Grid
from genda.storage import EnsembleStore, EnsembleStoreError
from genda.storage.damage import DamagedFileError, chunk_file
from genda.storage.integrity import StoreCheck, StoreRepairWarning

runner = CliRunner()
MEMBERS = 3


# ---------------------------------------------------------------------------- helpers
def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> content hash of every file under ``root``."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def flat(text: str) -> str:
    """``text`` without white space: the console folds long lines, paths included."""
    return "".join(text.split())


def refused(args: list[str], *needles: str) -> str:
    """Run ``genda args``; assert exit 1, a one-sentence error naming ``needles``, no traceback."""
    result = runner.invoke(app, args)
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception  # not a traceback
    text = " ".join(result.output.split())
    assert "error:" in text and "Traceback" not in text, text
    for needle in needles:
        assert flat(needle) in flat(text), (needle, text)
    return text


def members(path: Path) -> dict[str, np.ndarray]:
    """Every member variable of the store, ``(time, member, L, H, W)``, read eagerly."""
    with xr.open_zarr(path) as ds:
        return {name: ds[name].values for name in ("u", "v", "T")}


def member_file(path: Path, name: str, member: int, index: int = 0) -> Path:
    """The chunk (or shard) file of ``member``'s variable ``name`` in window slot ``index``."""
    array = zarr.open_group(str(path), mode="r")[name]
    file = chunk_file(array, (index, member, 0, 0, 0))
    assert isinstance(file, Path) and file.is_file(), file
    return file


def truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: max(1, file.stat().st_size // 3)])


def damage(file: Path, kind: str) -> None:
    if kind == "deleted":
        file.unlink()
    else:
        truncate(file)


def assimilate_args(world: dict, out: Path) -> list[str]:
    """One window, few members, two steps: a rerun uses exactly these settings.

    The default batch size (8): every member shares one batch, so a member
    regenerated alone is bit-identical only because the generator samples its
    whole first-run batch again (CPU kernels depend on the batch; see
    test_members_do_not_depend_on_the_batch).
    """
    return [
        *("assimilate", "--checkpoint", str(world["prior"]), "--obs", str(world["obs"])),
        *("--time", world["time"], "--out", str(out), "--members", str(MEMBERS)),
        *("--steps", "2", "--no-progress"),
    ]


@pytest.fixture(scope="module")
def world(tiny_archive: Path, tiny_prior: Path, tmp_path_factory) -> dict:
    """Observations of the tiny archive and one complete, finalised store of 3 members."""
    root = tmp_path_factory.mktemp("hostile-store")
    time, obs = observed_window(tiny_archive, root)
    world = {"root": root, "archive": tiny_archive, "prior": tiny_prior, "obs": obs, "time": time}
    store = root / "pristine.zarr"
    result = runner.invoke(app, assimilate_args(world, store))
    assert result.exit_code == 0, result.output
    world["store"] = store
    world["members"] = members(store)
    return world


@pytest.fixture
def store(world: dict, tmp_path: Path) -> Path:
    """A private copy of the pristine store, to damage."""
    copy = tmp_path / "ensemble.zarr"
    shutil.copytree(world["store"], copy)
    return copy


def assert_regenerated(world: dict, path: Path) -> None:
    """The store is whole again and every member equals the original, bit for bit."""
    ensemble = EnsembleStore.open(path)
    assert ensemble.validate().ok, ensemble.validate().problems
    assert ensemble.missing(world["time"]) == [] and ensemble.is_finalized(world["time"])
    again = members(path)
    for name, original in world["members"].items():
        assert np.array_equal(again[name], original), name


# ---------------------------------------------------------------------------- validate
def test_validate_on_a_clean_store_exits_0(store: Path) -> None:
    before = snapshot(store)
    result = runner.invoke(app, ["validate", str(store)])
    assert result.exit_code == 0, result.output
    assert "no problems" in result.output
    assert snapshot(store) == before


def test_validate_reports_a_deleted_chunk_and_changes_nothing(world: dict, store: Path) -> None:
    file = member_file(store, "u", 1)
    file.unlink()
    before = snapshot(store)
    text = refused(["validate", str(store)], "member 1 is flagged complete", str(file), "missing")
    assert "'u'" in text and "--repair" in text
    assert snapshot(store) == before  # a check without --repair writes nothing
    check = EnsembleStore.open(store).validate()
    assert not check.ok and check.repairable
    assert dict(check.damaged) == {world["time"]: (1,)} and check.bad_files == ()
    assert check.stale == (world["time"],)  # finalised over a member that is gone


def test_validate_reports_a_truncated_chunk_without_a_traceback(world: dict, store: Path) -> None:
    file = member_file(store, "T", 2)
    truncate(file)
    before = snapshot(store)
    refused(
        ["validate", str(store)], "member 2 is flagged complete", str(file), "cannot be decoded"
    )
    assert snapshot(store) == before
    check = EnsembleStore.open(store).validate()  # reports, never raises
    assert dict(check.damaged) == {world["time"]: (2,)}
    assert check.bad_files == (file,)


def test_validate_on_paths_that_are_not_stores(tmp_path: Path) -> None:
    refused(["validate", str(tmp_path / "nowhere.zarr")], "no ensemble store", "nowhere.zarr")
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my thesis\n")
    refused(["validate", str(folder), "--repair"], str(folder), "not a Zarr v3 store")
    assert (folder / "notes.txt").read_text() == "my thesis\n"


def test_validate_on_an_archive_is_refused(world: dict, tmp_path: Path) -> None:
    archive = tmp_path / "archive.zarr"
    shutil.copytree(world["archive"], archive)
    before = snapshot(archive)
    refused(["validate", str(archive), "--repair"], "not a genda ensemble store")
    assert snapshot(archive) == before


# ---------------------------------------------------------------------------- repair and rerun
@pytest.mark.parametrize("kind", ["deleted", "truncated"])
def test_repair_then_rerun_regenerates_bit_identical_members(
    world: dict, store: Path, kind: str
) -> None:
    file = member_file(store, "v", 1)
    untouched = {k: v for k, v in snapshot(store).items() if k != str(file.relative_to(store))}
    damage(file, kind)
    result = runner.invoke(app, ["validate", str(store), "--repair"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"a rerun of window {world['time']} (same settings) regenerates members [1]" in text
    assert ("removed:" in text) == (kind == "truncated")
    assert not file.exists()  # the damaged file is gone, so the rewrite cannot trip on it
    ensemble = EnsembleStore.open(store)
    assert ensemble.missing(world["time"]) == [1] and not ensemble.is_finalized(world["time"])
    kept = snapshot(store)
    for key in ("v/c/0/0/0/0/0", "v/c/0/2/0/0/0", "u/c/0/1/0/0/0", "T/c/0/1/0/0/0"):
        assert kept[key] == untouched[key]  # nothing else was lost
    rerun = runner.invoke(app, assimilate_args(world, store))
    assert rerun.exit_code == 0, rerun.output
    assert "made now" in rerun.output and "nan" not in rerun.output.lower()
    assert_regenerated(world, store)


@pytest.mark.parametrize("kind", ["deleted", "truncated"])
def test_rerun_without_repair_rechecks_and_regenerates(world: dict, store: Path, kind: str) -> None:
    damage(member_file(store, "u", 0), kind)
    with pytest.warns(StoreRepairWarning, match=r"members \[0\] are regenerated"):
        rerun = runner.invoke(app, assimilate_args(world, store))
    assert rerun.exit_code == 0, rerun.output
    # The bug this guards against: a rerun that kept the NaN member and reported "fit nan".
    assert "nan" not in rerun.output.lower()
    assert_regenerated(world, store)


def test_repair_of_damaged_statistics_recomputes_them(world: dict, store: Path) -> None:
    before = xr.open_zarr(store)["T_mean"].values
    mean = store / "T_mean" / "c" / "0" / "0" / "0" / "0"
    truncate(mean)
    refused(["validate", str(store)], "T_mean", str(mean), "cannot be decoded")
    result = runner.invoke(app, ["validate", str(store), "--repair"])
    assert result.exit_code == 0, result.output
    assert "recomputes its statistics" in result.output
    assert EnsembleStore.open(store).missing(world["time"]) == []  # no member is remade
    rerun = runner.invoke(app, assimilate_args(world, store))
    assert rerun.exit_code == 0, rerun.output
    np.testing.assert_array_equal(xr.open_zarr(store)["T_mean"].values, before)
    assert_regenerated(world, store)


# ---------------------------------------------------------------------------- reads
def query_args(store: Path, stat: str, var: str = "u") -> list[str]:
    return ["query", str(store), "--var", var, "--alt", "90", "--stat", stat]


def test_query_members_with_a_deleted_member_names_it(world: dict, store: Path) -> None:
    member_file(store, "u", 2).unlink()
    before = snapshot(store)
    refused(query_args(store, "members"), "member 2 is flagged complete", "validate --repair")
    assert snapshot(store) == before
    ok = runner.invoke(app, query_args(store, "members", var="T"))  # T is whole
    assert ok.exit_code == 0, ok.output


def test_query_members_with_a_truncated_chunk_names_the_file(store: Path, tmp_path: Path) -> None:
    file = member_file(store, "u", 1)
    truncate(file)
    out = tmp_path / "members.csv"
    refused([*query_args(store, "members"), "--out", str(out)], str(file), "cannot be read")
    assert not out.exists() and not list(tmp_path.glob("members.csv*"))  # nothing half-written


def test_query_mean_with_damaged_statistics(world: dict, store: Path) -> None:
    mean = store / "u_mean" / "c" / "0" / "0" / "0" / "0"
    truncate(mean)
    refused(query_args(store, "mean"), str(mean), "cannot be read", "validate --repair")
    mean.unlink()
    refused(query_args(store, "mean"), world["time"], "u_mean", "missing or NaN", "--repair")


def test_read_members_refuses_damaged_members(world: dict, store: Path) -> None:
    ensemble = EnsembleStore.open(store)
    member_file(store, "T", 0).unlink()
    with pytest.raises(EnsembleStoreError, match=r"member 0 is flagged complete.*--repair"):
        ensemble.read_members(world["time"])
    file = member_file(store, "u", 2)
    truncate(file)
    with pytest.raises(DamagedFileError, match="cannot be read") as caught:
        ensemble.read_members(world["time"], [2])
    assert caught.value.file == file


# ---------------------------------------------------------------------------- shards and flags
GRID = Grid.gaussian(8, 16, 2)
T0 = np.datetime64("2024-01-01T00:00:00")


def synthetic(tmp_path: Path, per_shard: int) -> tuple[EnsembleStore, np.ndarray]:
    """A finalised 4-member store of known fields, ``per_shard`` members per shard file."""
    fields = np.random.default_rng(5).normal(size=(4, *GRID.shape)).astype(np.float32)
    store = EnsembleStore.create(tmp_path / "s.zarr", GRID, 4, members_per_shard=per_shard)
    store.add_window(T0, {"seed": 1})
    store.write_members(T0, range(4), fields)
    store.finalize(T0)
    return store, fields


def test_a_truncated_shard_unflags_every_member_it_holds(tmp_path: Path) -> None:
    store, fields = synthetic(tmp_path, per_shard=2)
    shard = member_file(store.path, "u", 2)  # holds members 2 and 3
    truncate(shard)
    check = store.validate()
    assert dict(check.damaged) == {"2024-01-01T00:00:00": (2, 3)}
    assert any("also holds members [3]" in p for p in check.problems), check.problems
    other = snapshot(store.path)
    repair = store.repair(check)
    assert repair.removed == (shard,) and repair.unflagged == {"2024-01-01T00:00:00": (2, 3)}
    assert store.missing(T0) == [2, 3]
    after = snapshot(store.path)
    for key in ("u/c/0/0/0/0/0", "v/c/0/1/0/0/0", "T/c/0/1/0/0/0"):
        assert after[key] == other[key]
    store.write_members(T0, [2, 3], fields[2:])  # the rewrite no longer reads the bad shard
    store.finalize(T0)
    assert store.validate().ok
    np.testing.assert_array_equal(store.read_members(T0), fields)


def test_truncated_complete_flags_are_reported_and_repaired(tmp_path: Path) -> None:
    store, fields = synthetic(tmp_path, per_shard=1)
    flags = chunk_file(zarr.open_group(str(store.path))["complete"], (0, 1))
    truncate(flags)
    check = store.validate()
    assert any(str(flags) in p and "complete flags" in p for p in check.problems), check.problems
    assert dict(check.damaged) == {"2024-01-01T00:00:00": (1,)}
    store.repair(check)
    assert store.missing(T0) == [1] and not store.is_finalized(T0)
    store.write_members(T0, [1], fields[1:2])
    store.finalize(T0)
    assert store.validate().ok


def test_repair_never_removes_a_file_outside_the_store(tmp_path: Path) -> None:
    store, _ = synthetic(tmp_path, per_shard=1)
    outside = tmp_path / "notes.txt"
    outside.write_text("mine\n")
    metadata = store.path / "u" / "zarr.json"
    from genda.storage.integrity import _remove_damaged_file

    for file in (outside, metadata):
        # A check that names them is not acted on: the repair's own check does not confirm it,
        forged = StoreCheck(store.path, ("forged",), bad_files=(file,))
        store.repair(forged)
        assert file.is_file()
        # and the removal itself refuses anything but the store's own chunk files.
        with pytest.raises(EnsembleStoreError, match="not removing it"):
            _remove_damaged_file(store, file)
        assert file.is_file()
    assert outside.read_text() == "mine\n" and store.validate().ok


def test_recheck_of_a_whole_window_changes_nothing(tmp_path: Path) -> None:
    store, _ = synthetic(tmp_path, per_shard=2)
    before = snapshot(store.path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreRepairWarning)
        assert store.recheck(T0) == []
    assert snapshot(store.path) == before and store.is_finalized(T0)


# ---------------------------------------------------------------------------- archives
@pytest.fixture
def damaged_archive(world: dict, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the tiny archive with the chunk of T holding hour 30 truncated."""
    archive = tmp_path / "archive.zarr"
    shutil.copytree(world["archive"], archive)
    chunk = archive / "T" / "c" / "2" / "0" / "0" / "0"  # hours 24-35 (12-hour chunks)
    truncate(chunk)
    return archive, chunk


def test_summary_of_an_archive_with_a_truncated_chunk(damaged_archive: tuple[Path, Path]) -> None:
    archive, chunk = damaged_archive
    before = snapshot(archive)
    refused(["summary", str(archive)], str(chunk), "cannot be read", "damaged")
    assert snapshot(archive) == before


def test_observe_from_an_archive_with_a_truncated_chunk(
    world: dict, damaged_archive: tuple[Path, Path], tmp_path: Path
) -> None:
    archive, chunk = damaged_archive
    out = tmp_path / "obs.parquet"
    args = ["observe", "--truth", str(archive), "--time", world["time"], "--out", str(out)]
    refused(args, str(chunk), "cannot be read")
    assert not out.exists() and not list(tmp_path.glob("obs*"))


def test_a_file_system_error_is_never_taken_for_damage() -> None:
    """A shard another user's umask makes unreadable is reported, not removed by a repair."""
    from genda.storage.damage import DamagedFileError
    from genda.storage.integrity import _bad_file, _Findings

    found = _Findings()
    try:
        try:
            raise PermissionError(13, "Permission denied")
        except PermissionError as cause:
            raise DamagedFileError("cannot read", "u/c/0/0", "PermissionError") from cause
    except DamagedFileError as error:
        assert not _bad_file(found, error, "u/c/0/0", "2000-01-01T00:00:00")
    assert not found.bad_files and found.unreadable and "not damaged data" in found.problems[0]
    try:
        raise DamagedFileError("cannot decode", "u/c/0/1", "Zstd") from RuntimeError("Zstd")
    except DamagedFileError as error:
        assert _bad_file(found, error, "u/c/0/1", "2000-01-01T00:00:00")
    assert list(found.bad_files) == ["u/c/0/1"]
