"""Hostile inputs to every command: nothing deleted, everything checked first, one sentence each.

Each case asserts the message (it names the problem), the exit code and that
nothing was written or lost: a snapshot of the files before and after.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import numpy as np
import pytest
from hostile_checks import foreign_folder, observed_window, refused, snapshot
from typer.testing import CliRunner

import genda.cli
from genda import errors
from genda.cli import app
from genda.storage import EnsembleStore

runner = CliRunner()


@pytest.fixture(scope="module")
def world(tiny_archive: Path, tiny_prior: Path, tmp_path_factory) -> dict:
    """A tiny archive, prior, observation table and one complete store of 2 members."""
    root = tmp_path_factory.mktemp("hostile-cli")
    time, obs = observed_window(tiny_archive, root)
    store = root / "complete.zarr"
    result = runner.invoke(app, [*assimilate_args(tiny_prior, obs, time, store), "--steps", "2"])
    assert result.exit_code == 0, result.output
    return {
        "root": root,
        "archive": tiny_archive,
        "prior": tiny_prior,
        "obs": obs,
        "time": time,
        "store": store,
    }


def assimilate_args(prior: Path, obs: Path | None, time: str, out: Path) -> list[str]:
    args = ["assimilate", "--checkpoint", str(prior), "--time", time, "--out", str(out)]
    args += ["--members", "2", "--steps", "2", "--batch-size", "2", "--no-progress"]
    return args + (["--obs", str(obs)] if obs is not None else [])


def base(world: dict, out: Path) -> list[str]:
    return assimilate_args(world["prior"], world["obs"], world["time"], out)


# ------------------------------------------------------------------ never delete what is not genda's
def test_assimilate_overwrite_refuses_a_foreign_folder(world: dict, tmp_path: Path) -> None:
    folder = foreign_folder(tmp_path)
    before = snapshot(folder)
    refused([*base(world, folder), "--overwrite"], str(folder), "not write")
    assert snapshot(folder) == before


def test_assimilate_overwrite_refuses_a_file(world: dict, tmp_path: Path) -> None:
    path = tmp_path / "results.zarr"
    path.write_text("not a store")
    refused([*base(world, path), "--overwrite"], str(path), "a file")
    assert path.read_text() == "not a store"


def test_assimilate_into_a_foreign_folder_is_refused(world: dict, tmp_path: Path) -> None:
    folder = foreign_folder(tmp_path)
    before = snapshot(folder)
    refused(base(world, folder), str(folder), "not a genda ensemble store")
    assert snapshot(folder) == before


def test_assimilate_into_an_existing_file_is_refused(world: dict, tmp_path: Path) -> None:
    path = tmp_path / "ensemble.zarr"
    path.write_bytes(b"\x00\x01")
    refused(base(world, path), str(path), "a file")
    assert path.read_bytes() == b"\x00\x01"


def test_assimilate_overwrite_refuses_a_genda_archive(world: dict, tmp_path: Path) -> None:
    import shutil

    archive = tmp_path / "archive.zarr"
    shutil.copytree(world["archive"], archive)
    before = snapshot(archive)
    refused([*base(world, archive), "--overwrite"], "a genda archive")
    assert snapshot(archive) == before


def test_simulate_overwrite_refuses_a_foreign_folder(tmp_path: Path) -> None:
    folder = foreign_folder(tmp_path)
    before = snapshot(folder)
    args = ["simulate", "--out", str(folder), "--days", "0.25", "--seed", "1", "--overwrite"]
    refused([*args, "--nlat", "16", "--nlon", "32", "--spinup-days", "0"], str(folder))
    assert snapshot(folder) == before


def test_simulate_overwrite_refuses_a_file(tmp_path: Path) -> None:
    path = tmp_path / "archive.zarr"
    path.write_text("keep me")
    args = ["simulate", "--out", str(path), "--days", "0.25", "--seed", "1", "--overwrite"]
    refused([*args, "--nlat", "16", "--nlon", "32", "--spinup-days", "0"], "a file")
    assert path.read_text() == "keep me"


def test_simulate_overwrite_refuses_an_ensemble_store(world: dict, tmp_path: Path) -> None:
    import shutil

    store = tmp_path / "store.zarr"
    shutil.copytree(world["store"], store)
    before = snapshot(store)
    args = ["simulate", "--out", str(store), "--days", "0.25", "--seed", "1", "--overwrite"]
    refused([*args, "--nlat", "16", "--nlon", "32", "--spinup-days", "0"], "genda ensemble store")
    assert snapshot(store) == before


def test_simulate_without_overwrite_keeps_an_archive(world: dict, tmp_path: Path) -> None:
    import shutil

    archive = tmp_path / "archive.zarr"
    shutil.copytree(world["archive"], archive)
    before = snapshot(archive)
    args = ["simulate", "--out", str(archive), "--days", "0.25", "--seed", "1"]
    refused([*args, "--nlat", "16", "--nlon", "32", "--spinup-days", "0"], "set overwrite")
    assert snapshot(archive) == before


def test_baseline_overwrite_refuses_a_foreign_folder(world: dict, tmp_path: Path) -> None:
    folder = foreign_folder(tmp_path)
    before = snapshot(folder)
    args = ["baseline", "--archive", str(world["archive"]), "--time", world["time"]]
    args += ["--out", str(folder), "--method", "climatology", "--members", "2", "--overwrite"]
    refused([*args, "--exclude-hours", "1"], str(folder), "did not write")
    assert snapshot(folder) == before


def test_demo_refuses_a_foreign_folder(tmp_path: Path) -> None:
    folder = foreign_folder(tmp_path)
    (folder / "obs").mkdir()
    (folder / "obs" / "my-radar.csv").write_text("station\nAndenes\n")
    (folder / "reports").mkdir()
    (folder / "reports" / "draft.md").write_text("# draft\n")
    before = snapshot(folder)
    refused(["demo", "--out", str(folder), "--workers", "0"], str(folder), "did not make")
    assert snapshot(folder) == before


def test_demo_keeps_the_users_files_in_its_own_folder(tmp_path: Path, monkeypatch) -> None:
    """A rerun into a demo folder removes only the demo's stores, never obs/ or reports/."""
    from genda.orchestration import demo
    from genda.ownership import DEMO_MARKER

    folder = tmp_path / "demo"
    (folder / "obs").mkdir(parents=True)
    (folder / DEMO_MARKER).write_text("")
    (folder / "obs" / "my-radar.csv").write_text("station\nAndenes\n")
    (folder / "reports").mkdir()
    (folder / "reports" / "draft.md").write_text("# draft\n")
    (folder / "truth.zarr").mkdir()  # not an archive: must not be removed either
    (folder / "truth.zarr" / "mine.txt").write_text("x")

    def stop(*args, **kwargs):
        raise AssertionError("the demo must refuse before simulating")

    monkeypatch.setattr(demo, "simulate_archive", stop)
    with pytest.raises(errors.OutputExistsError, match=r"truth\.zarr"):
        demo.run_demo(folder, workers=0)
    assert (folder / "obs" / "my-radar.csv").read_text() == "station\nAndenes\n"
    assert (folder / "reports" / "draft.md").is_file()
    assert (folder / "truth.zarr" / "mine.txt").is_file()


def test_observe_does_not_replace_without_overwrite(world: dict) -> None:
    before = snapshot(world["obs"])
    args = ["observe", "--truth", str(world["archive"]), "--time", world["time"]]
    refused([*args, "--out", str(world["obs"]), "--seed", "9"], str(world["obs"]), "overwrite")
    assert snapshot(world["obs"]) == before


def test_observe_overwrite_refuses_a_file_that_is_not_a_table(world: dict, tmp_path: Path) -> None:
    path = tmp_path / "budget.csv"
    path.write_text("item,cost\nGPU,100\n")
    args = ["observe", "--truth", str(world["archive"]), "--time", world["time"]]
    refused([*args, "--out", str(path), "--overwrite"], "not an observation table")
    assert path.read_text() == "item,cost\nGPU,100\n"


def test_observe_overwrite_replaces_its_own_table(world: dict, tmp_path: Path) -> None:
    import shutil

    path = tmp_path / "obs.parquet"
    shutil.copy(world["obs"], path)
    args = ["observe", "--truth", str(world["archive"]), "--time", world["time"]]
    result = runner.invoke(app, [*args, "--out", str(path), "--overwrite", "--seed", "7"])
    assert result.exit_code == 0, result.output
    assert snapshot(path) != snapshot(world["obs"])


def test_observe_overwrite_refuses_a_stale_withheld_file_that_is_foreign(
    world: dict, tmp_path: Path
) -> None:
    import shutil

    path = tmp_path / "obs.parquet"
    shutil.copy(world["obs"], path)
    withheld = tmp_path / "obs-withheld.parquet"
    withheld.write_text("mine")
    args = ["observe", "--truth", str(world["archive"]), "--time", world["time"]]
    refused([*args, "--out", str(path), "--overwrite"], "obs-withheld.parquet")
    assert withheld.read_text() == "mine"


def test_observe_into_a_directory(world: dict, tmp_path: Path) -> None:
    folder = tmp_path / "obs.csv"
    folder.mkdir()
    args = ["observe", "--truth", str(world["archive"]), "--time", world["time"]]
    refused([*args, "--out", str(folder)], str(folder), "not a file")
    assert folder.is_dir() and not any(folder.iterdir())


def test_observe_unknown_suffix_writes_nothing(world: dict, tmp_path: Path) -> None:
    out = tmp_path / "obs.xlsx"
    args = ["observe", "--truth", str(world["archive"]), "--time", world["time"]]
    refused([*args, "--out", str(out)], ".xlsx")
    assert list(tmp_path.iterdir()) == []


def test_evaluate_into_an_existing_file(world: dict, tmp_path: Path) -> None:
    path = tmp_path / "report"
    path.write_text("keep")
    args = ["evaluate", "--ensemble", str(world["store"]), "--truth", str(world["archive"])]
    refused([*args, "--out", str(path)], "a file")
    assert path.read_text() == "keep"


def test_evaluate_into_a_foreign_folder(world: dict, tmp_path: Path) -> None:
    folder = foreign_folder(tmp_path)
    before = snapshot(folder)
    args = ["evaluate", "--ensemble", str(world["store"]), "--truth", str(world["archive"])]
    refused([*args, "--out", str(folder)], "evaluation report")
    assert snapshot(folder) == before


def test_fidelity_into_an_existing_file(world: dict, tmp_path: Path) -> None:
    path = tmp_path / "fidelity"
    path.write_text("keep")
    args = ["fidelity", "--checkpoint", str(world["prior"]), "--data", str(world["archive"])]
    refused([*args, "--out", str(path), "--members", "2", "--steps", "2"], "a file")
    assert path.read_text() == "keep"


@pytest.mark.parametrize("members", ["0", "1", "-3"])
def test_fidelity_too_few_members(world: dict, tmp_path: Path, members: str) -> None:
    args = ["fidelity", "--checkpoint", str(world["prior"]), "--data", str(world["archive"])]
    refused([*args, "--out", str(tmp_path / "f"), "--members", members], "members")
    assert not (tmp_path / "f").exists()


def test_query_does_not_replace_a_file_without_overwrite(world: dict, tmp_path: Path) -> None:
    path = tmp_path / "u.csv"
    path.write_text("mine")
    refused(
        ["query", str(world["store"]), "--var", "u", "--alt", "90", "--out", str(path)],
        "overwrite",
    )
    assert path.read_text() == "mine"


def test_query_into_a_directory(world: dict, tmp_path: Path) -> None:
    folder = tmp_path / "u.nc"
    folder.mkdir()
    refused(
        ["query", str(world["store"]), "--var", "u", "--alt", "90", "--out", str(folder)],
        "is a directory",
    )


def test_train_refuses_a_foreign_folder(world: dict, tmp_path: Path) -> None:
    folder = foreign_folder(tmp_path)
    before = snapshot(folder)
    args = ["train", "--data", str(world["archive"]), "--out", str(folder), "--steps", "1"]
    refused([*args, "--overwrite", "--no-progress"], str(folder), "not a genda checkpoint")
    assert snapshot(folder) == before


def test_train_overwrite_refuses_another_tools_model_folder(world: dict, tmp_path: Path) -> None:
    """A folder with a config.json (another tool's model, a project) is not a genda checkpoint."""
    folder = tmp_path / "hf-model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert"}')
    (folder / "model.safetensors").write_bytes(b"weights")
    before = snapshot(folder)
    args = ["train", "--data", str(world["archive"]), "--out", str(folder), "--steps", "1"]
    refused([*args, "--overwrite", "--no-progress"], "not a genda checkpoint")
    assert snapshot(folder) == before


def test_resume_into_another_existing_folder_needs_overwrite(world: dict, tmp_path: Path) -> None:
    import shutil

    other = tmp_path / "other"
    shutil.copytree(world["prior"], other)
    before = snapshot(other)
    args = ["train", "--data", str(world["archive"]), "--resume", str(world["prior"])]
    refused([*args, "--out", str(other), "--steps", "30", "--no-progress"], "overwrite")
    assert snapshot(other) == before


def test_a_link_to_a_store_is_added_to_but_never_replaced(world: dict, tmp_path: Path) -> None:
    import shutil

    store = tmp_path / "scratch" / "store.zarr"
    shutil.copytree(world["store"], store)
    link = tmp_path / "link.zarr"
    link.symlink_to(store)
    later = str(np.datetime64(world["time"]) + np.timedelta64(3, "h"))
    result = runner.invoke(app, assimilate_args(world["prior"], None, later, link))
    assert result.exit_code == 0, result.output
    assert EnsembleStore.open(store).complete(later).all()
    before = snapshot(store)
    refused([*base(world, link), "--overwrite"], "symbolic link")
    assert link.is_symlink() and snapshot(store) == before


def test_brackets_in_a_path_are_printed_as_they_are(tmp_path: Path) -> None:
    missing = tmp_path / "[run]" / "[/tmp]" / "x.zarr"
    refused(["summary", str(missing)], "[run]", "[/tmp]")


# ------------------------------------------------------------------ check everything first
@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--iterations", "0", "iterations"),
        ("--steps", "0", "steps"),
        ("--batch-size", "0", "batch-size"),
        ("--gamma", "-1", "gamma"),
        ("--corrections", "-1", "corrections"),
        ("--window-hours", "nan", "window_hours"),
        ("--threads-per-worker", "0", "threads_per_worker"),
        ("--members", "0", "members"),
        ("--layers-per-batch", "0", "layers_per_batch"),
        ("--method", "kalman", "kalman"),
        ("--sampler", "rk4", "rk4"),
        ("--device", "cuda", "CUDA is not available"),
        ("--device", "tpu", "tpu"),
    ],
)
def test_bad_settings_touch_no_store(
    world: dict, tmp_path: Path, option: str, value: str, needle: str
) -> None:
    import torch

    if value == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "new.zarr"
    refused([*base(world, out), option, value], needle)
    assert not out.exists()


def test_dps_with_zeta_nan_touches_no_store(world: dict, tmp_path: Path) -> None:
    out = tmp_path / "new.zarr"
    refused([*base(world, out), "--method", "dps", "--zeta", "nan"], "zeta")
    assert not out.exists()


def test_bad_setting_with_overwrite_keeps_the_complete_store(world: dict, tmp_path: Path) -> None:
    import shutil

    store = tmp_path / "store.zarr"
    shutil.copytree(world["store"], store)
    before = snapshot(store)
    refused([*base(world, store), "--overwrite", "--iterations", "0"], "iterations")
    assert snapshot(store) == before
    assert EnsembleStore.open(store).complete(world["time"]).all()


def test_bad_setting_registers_no_window(world: dict, tmp_path: Path) -> None:
    import shutil

    store = tmp_path / "store.zarr"
    shutil.copytree(world["store"], store)
    later = str(np.datetime64(world["time"]) + np.timedelta64(1, "h"))
    args = assimilate_args(world["prior"], None, later, store)
    refused([*args, "--iterations", "0"], "iterations")
    assert [str(t) for t in EnsembleStore.open(store).windows()] == [world["time"]]


def test_a_window_without_members_takes_new_settings(world: dict, tmp_path: Path) -> None:
    """A window registered by a run that wrote no member can be run again with other settings."""
    import shutil

    store_path = tmp_path / "store.zarr"
    shutil.copytree(world["store"], store_path)
    later = str(np.datetime64(world["time"]) + np.timedelta64(2, "h"))
    store = EnsembleStore.open(store_path)
    store.add_window(later, {"method": "mmps", "steps": 99, "note": "interrupted before a member"})
    result = runner.invoke(app, assimilate_args(world["prior"], None, later, store_path))
    assert result.exit_code == 0, result.output
    reopened = EnsembleStore.open(store_path)
    assert reopened.complete(later).all()
    assert reopened.provenance(later)["settings"]["steps"] == 2


def test_a_window_with_members_still_refuses_other_settings(world: dict, tmp_path: Path) -> None:
    import shutil

    store = tmp_path / "store.zarr"
    shutil.copytree(world["store"], store)
    before = snapshot(store)
    refused([*base(world, store), "--steps", "3"], "other provenance")
    assert snapshot(store) == before


def test_absurd_member_count_is_refused_before_the_store(world: dict, tmp_path: Path) -> None:
    out = tmp_path / "huge.zarr"
    refused([*base(world, out), "--members", "100000000"], "100000000 members", "free")
    assert not out.exists()


def test_absurd_simulation_length_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "long.zarr"
    refused(["simulate", "--out", str(out), "--days", "1e7", "--seed", "1"], "snapshots", "free")
    assert list(tmp_path.iterdir()) == []


def test_large_output_asks_for_confirmation(tmp_path: Path, monkeypatch) -> None:
    from genda import budget

    monkeypatch.setattr(budget, "CONFIRM_BYTES", 1000)
    args = ["simulate", "--out", str(tmp_path / "a.zarr"), "--days", "0.25", "--seed", "1"]
    args += ["--nlat", "16", "--nlon", "32", "--spinup-days", "0"]
    refused(args, "set yes")
    assert list(tmp_path.iterdir()) == []


def test_closed_ray_port_touches_no_store(world: dict, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "new.zarr"
    refused([*base(world, out), "--workers", "1", "--ray-address", f"127.0.0.1:{port}"], str(port))
    assert not out.exists()


@pytest.mark.parametrize("command", ["simulate", "train", "fidelity"])
def test_cuda_on_a_cpu_build_is_a_sentence(world: dict, tmp_path: Path, command: str) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "out"
    args = {
        "simulate": ["simulate", "--out", str(out), "--days", "0.25", "--seed", "1"],
        "train": ["train", "--data", str(world["archive"]), "--out", str(out), "--steps", "1"],
        "fidelity": [
            *("fidelity", "--checkpoint", str(world["prior"])),
            *("--data", str(world["archive"]), "--out", str(out), "--members", "2"),
        ],
    }[command]
    refused([*args, "--device", "cuda"], "CUDA is not available")
    assert not out.exists()


# ------------------------------------------------------------------ cycle configurations
def write_cycle(tmp_path: Path, observations: str) -> Path:
    config = tmp_path / "cycle.yaml"
    config.write_text(
        f"observations: '{observations}'\nstart: 2000-01-01T00:00\nend: 2000-01-01T00:00\n"
        "store: cycle.zarr\n"
    )
    return config


@pytest.mark.parametrize(
    ("pattern", "needle"),
    [
        ("obs/{oops}.parquet", "{oops}"),
        ("obs/{time.__class__.__name__}.parquet", "time.__class__"),
        ("obs/{time!r}.parquet", "time!r"),
        ("obs/{time[0]}.parquet", "time[0]"),
        ("obs/{time:{nested}}.parquet", "time:{nested}"),
        ("obs/plain.parquet", "must contain {time}"),
        ("obs/{time.parquet", "not a valid path pattern"),
    ],
)
def test_cycle_patterns_are_checked_before_any_window(
    tmp_path: Path, pattern: str, needle: str
) -> None:
    config = write_cycle(tmp_path, pattern)
    refused(["cycle", "--config", str(config)], "observations", needle)
    assert not (tmp_path / "cycle.zarr").exists()


def test_binary_cycle_configuration(tmp_path: Path) -> None:
    config = tmp_path / "cycle.yaml"
    config.write_bytes(bytes(range(256)))
    refused(["cycle", "--config", str(config)], str(config), "not a text file")


# ------------------------------------------------------------------ one error base
def test_every_error_class_derives_from_the_base() -> None:
    from genda.distributed.cluster import ClusterConnectionError
    from genda.distributed.scheduler import EnsembleRunError
    from genda.grid import GridMismatchError
    from genda.models.checkpoint import CheckpointError
    from genda.models.training import TrainingDivergedError
    from genda.observations import ObservationError
    from genda.orchestration.config import ConfigError
    from genda.simulator import SimulationError
    from genda.storage import ArchiveError, EnsembleStoreError

    for cls in (
        ArchiveError,
        CheckpointError,
        ClusterConnectionError,
        ConfigError,
        EnsembleRunError,
        EnsembleStoreError,
        GridMismatchError,
        ObservationError,
        SimulationError,
        TrainingDivergedError,
        *(getattr(errors, name) for name in errors.__all__),
    ):
        assert issubclass(cls, errors.GendaError), cls


def test_a_name_error_reads_as_a_sentence() -> None:
    assert str(errors.UnknownNameError("unknown variable 'q'")) == "unknown variable 'q'"


def test_the_cli_catches_no_builtin_errors() -> None:
    """Bugs must not look like user errors: the CLI catches only GendaError (and parses ints)."""
    package = getattr(genda.cli, "__path__", [])  # every module of the package
    modules = [genda.cli.__name__]
    modules += [info.name for info in pkgutil.iter_modules(package, "genda.cli.")]
    caught, imported = [], {}
    for name in modules:
        tree = ast.parse(inspect.getsource(importlib.import_module(name)))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:  # module level or deferred
                imported.update({alias.name: node.module for alias in node.names})
            if isinstance(node, ast.ExceptHandler) and node.type is not None:
                names = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
                caught.extend(ast.unparse(n) for n in names)

    def is_genda_error(text: str) -> bool:
        where = imported.get(text)
        value = getattr(importlib.import_module(where), text, None) if where else None
        return isinstance(value, type) and issubclass(value, errors.GendaError)

    # a command may catch a genda error to print more of it (a summary, a table)
    builtin = [text for text in caught if not is_genda_error(text)]
    assert set(builtin) <= {"ValueError"}, builtin
    # float("...") / int("...") of --batch-size, --channel-mult, --grid and plot's --at
    assert builtin.count("ValueError") <= 4


def test_a_bug_keeps_its_traceback(world: dict, tmp_path: Path, monkeypatch) -> None:
    import genda.orchestration.assimilate as assimilate

    def bug(*args, **kwargs):
        return 1 / 0

    monkeypatch.setattr(assimilate, "check_guidance", bug)
    result = runner.invoke(app, base(world, tmp_path / "s.zarr"))
    assert isinstance(result.exception, ZeroDivisionError)
    assert "error:" not in result.output


def test_a_genda_error_is_one_sentence(world: dict, tmp_path: Path) -> None:
    text = refused(["summary", str(tmp_path / "nothing.zarr")], "nothing.zarr")
    assert text.count("error:") == 1


def test_a_run_whose_window_was_registered_again_flags_nothing(world: dict, tmp_path: Path) -> None:
    """Members made under settings the window no longer has are never flagged complete."""
    import shutil

    store_path = tmp_path / "store.zarr"
    shutil.copytree(world["store"], store_path)
    later = str(np.datetime64(world["time"]) + np.timedelta64(4, "h"))
    store = EnsembleStore.open(store_path)
    store.add_window(later, {"method": "prior", "steps": 2})
    store.add_window(later, {"method": "prior", "steps": 3})  # another run, nothing complete
    fields = np.zeros((1, *store.grid.shape), dtype=np.float32) + 200.0
    with pytest.raises(errors.GendaError, match="registered again"):
        store.write_members(later, [0], fields, provenance={"method": "prior", "steps": 2})
    assert not store.complete(later).any()
    store.write_members(later, [0], fields, provenance={"method": "prior", "steps": 3})
    assert store.complete(later)[0]
