"""Posterior ensembles on a real local Ray cluster: identical members, lost actors, lost drivers.

Every test compares with members made in one process without Ray: each
member's noise comes from its own seed and each batch's composition from the
member indices (genda.distributed.work), so the comparisons are bit-for-bit.
The references use one torch thread, as the actors do: CPU kernels sum in
another order with another thread count (differences ~1e-6 relative).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time as clock
from pathlib import Path

import numpy as np
import pytest

from genda.assimilation.posterior import PosteriorSettings
from genda.distributed import ActorPool, WorkerSpec, member_blocks, writer_tasks
from genda.grid import Grid
from genda.observations import draw_observations, write_observations
from genda.orchestration.assimilate import assimilate_window
from genda.storage import EnsembleStore, open_archive
from genda.threads import cpu_threads

ray = pytest.importorskip("ray")

SETTINGS = PosteriorSettings(steps=3, batch_size=2)
MEMBERS = 8


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of 4 CPUs for the module (token auth off: loopback tests only)."""
    os.environ["RAY_AUTH_MODE"] = "disabled"
    # Short: Ray's socket paths must fit in 107 characters.
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    ray.init(num_cpus=4, include_dashboard=False, _temp_dir=temp_dir, logging_level="ERROR")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _one_process(
    prior: Path, obs: Path, time: str, out: Path, members: int, settings
) -> np.ndarray:
    """The members made in this process with one torch thread, as an actor makes them."""
    with cpu_threads(1):
        assimilate_window(prior, obs, time, out, members=members, settings=settings, progress=False)
    return EnsembleStore.open(out).read_members(time)


@pytest.fixture(scope="module")
def window(tiny_archive: Path, tiny_prior: Path, tmp_path_factory) -> dict:
    """Observations of one window and a reference store made in this process, without Ray."""
    root = tmp_path_factory.mktemp("ray")
    truth = open_archive(tiny_archive)
    time = str(truth.time.values[30])[:19]
    obs = root / "obs.parquet"
    write_observations(draw_observations(truth, Grid.from_dataset(truth), time, "radars"), obs)
    return {
        "root": root,
        "time": time,
        "obs": obs,
        "prior": tiny_prior,
        "reference": _one_process(
            tiny_prior, obs, time, root / "reference.zarr", MEMBERS, SETTINGS
        ),
    }


def _pool(window: dict, count: int) -> ActorPool:
    return ActorPool.start(WorkerSpec(str(window["prior"]), "cpu", threads=1), count)


def test_blocks_and_tasks_follow_member_indices_and_shards() -> None:
    assert member_blocks([5, 0, 1, 2, 7], batch_size=2, members_per_shard=1) == [
        [0, 1],
        [2],
        [5],
        [7],
    ]
    # A batch never crosses a shard, and a task always holds whole shards.
    assert member_blocks(range(8), batch_size=3, members_per_shard=4) == [
        [0, 1, 2],
        [3],
        [4, 5],
        [6, 7],
    ]
    tasks = writer_tasks(range(12), batch_size=6, members_per_shard=4)
    assert tasks == [list(range(8)), list(range(8, 12))]
    shards = [{m // 4 for m in task} for task in tasks]
    assert not shards[0] & shards[1]
    with pytest.raises(ValueError, match="batch_size"):
        member_blocks([0], batch_size=0, members_per_shard=1)


@pytest.mark.slow
def test_two_actors_make_the_members_one_process_makes(cluster: str, window: dict) -> None:
    pool = _pool(window, 2)
    try:
        out = window["root"] / "two-actors.zarr"
        summary = assimilate_window(
            window["prior"],
            window["obs"],
            window["time"],
            out,
            members=MEMBERS,
            settings=SETTINGS,
            pool=pool,
            progress=False,
        )
    finally:
        pool.shutdown()
    assert summary.written == MEMBERS and summary.failures_retried == 0
    assert len(summary.by_worker) == 2, summary.by_worker  # both actors took tasks
    store = EnsembleStore.open(out)
    np.testing.assert_array_equal(store.read_members(window["time"]), window["reference"])
    assert store.is_finalized(window["time"]) and store.validate().ok


@pytest.mark.slow
def test_auto_batch_on_actors_keeps_a_batch_the_memory_holds(cluster: str, window: dict) -> None:
    """``--batch-size auto`` on CPU actors: each prices the window with the memory model
    for its share of the host; the settings' batch fits, so the members are the
    reference's, bit for bit."""
    pool = _pool(window, 2)
    try:
        out = window["root"] / "auto-actors.zarr"
        summary = assimilate_window(
            window["prior"],
            window["obs"],
            window["time"],
            out,
            members=MEMBERS,
            settings=SETTINGS,
            pool=pool,
            auto_batch=True,
            progress=False,
        )
    finally:
        pool.shutdown()
    assert summary.batch_size == SETTINGS.batch_size
    np.testing.assert_array_equal(
        EnsembleStore.open(out).read_members(window["time"]), window["reference"]
    )


@pytest.mark.slow
def test_an_actor_killed_mid_window_loses_no_member(cluster: str, window: dict) -> None:
    out = window["root"] / "killed-actor.zarr"
    settings = PosteriorSettings(steps=3, batch_size=1)  # many small tasks: the kill lands mid-run
    reference = _one_process(
        window["prior"], window["obs"], window["time"], window["root"] / "killed-reference.zarr",
        MEMBERS, settings,
    )  # fmt: skip
    pool = _pool(window, 2)
    killed = threading.Event()

    def kill_after_two_members() -> None:
        deadline = clock.monotonic() + 120
        while clock.monotonic() < deadline:
            if out.exists() and EnsembleStore.open(out).windows():
                if EnsembleStore.open(out).complete(window["time"]).sum() >= 2:
                    ray.kill(pool.actors[0])
                    killed.set()
                    return
            clock.sleep(0.02)

    killer = threading.Thread(target=kill_after_two_members, daemon=True)
    killer.start()
    try:
        summary = assimilate_window(
            window["prior"],
            window["obs"],
            window["time"],
            out,
            members=MEMBERS,
            settings=settings,
            pool=pool,
            progress=False,
        )
    finally:
        killer.join(timeout=5)
        pool.shutdown()
    assert killed.is_set()
    assert summary.failures_retried >= 1, summary
    store = EnsembleStore.open(out)
    assert store.missing(window["time"]) == [] and store.validate().ok
    # Each member once: members written add up to at most the ensemble (a
    # block the dead actor finished is not made twice), and every value is
    # the undisturbed run's.
    assert sum(summary.by_worker.values()) <= MEMBERS
    np.testing.assert_array_equal(
        store.read_members(window["time"]),
        reference,
    )


@pytest.mark.slow
def test_a_killed_driver_is_resumed_with_only_the_missing_members(
    cluster: str, window: dict
) -> None:
    out = window["root"] / "killed-driver.zarr"
    members = 12
    reference = _one_process(
        window["prior"], window["obs"], window["time"], window["root"] / "driver-reference.zarr",
        members, SETTINGS,
    )  # fmt: skip
    genda = Path(sys.executable).with_name("genda")
    command = [
        str(genda), "assimilate", "--checkpoint", str(window["prior"]), "--obs", str(window["obs"]),
        "--time", window["time"], "--out", str(out), "--members", str(members),
        "--steps", str(SETTINGS.steps), "--batch-size", str(SETTINGS.batch_size),
        "--workers", "2", "--ray-address", cluster, "--no-progress",
    ]  # fmt: skip
    driver = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
    )
    done_at_kill = 0
    deadline = clock.monotonic() + 180
    try:
        while clock.monotonic() < deadline and driver.poll() is None:
            if out.exists() and EnsembleStore.open(out).windows():
                done_at_kill = int(EnsembleStore.open(out).complete(window["time"]).sum())
                if done_at_kill >= 2:
                    driver.send_signal(signal.SIGKILL)
                    break
            clock.sleep(0.02)
    finally:
        driver.kill()
        driver.wait(timeout=30)
    assert driver.returncode == -signal.SIGKILL, "the driver finished before it could be killed"
    store = EnsembleStore.open(out)
    missing = store.missing(window["time"])
    assert 0 < len(missing) < members
    assert not store.is_finalized(window["time"])

    with cpu_threads(1):
        summary = assimilate_window(
            window["prior"],
            window["obs"],
            window["time"],
            out,
            members=members,
            settings=SETTINGS,
            progress=False,
        )
    assert summary.written == len(missing)
    assert summary.already_complete == members - len(missing)
    assert store.validate().ok and store.is_finalized(window["time"])
    np.testing.assert_array_equal(
        store.read_members(window["time"]),
        reference,
    )


@pytest.mark.slow
def test_two_windows_written_concurrently_do_not_corrupt_each_other(
    cluster: str, window: dict, tiny_archive: Path
) -> None:
    truth = open_archive(tiny_archive)
    later = str(np.datetime64(window["time"]) + np.timedelta64(1, "h"))
    later_obs = window["root"] / "obs-later.parquet"
    write_observations(
        draw_observations(truth, Grid.from_dataset(truth), later, "radars,lidars"), later_obs
    )
    later_reference = _one_process(
        window["prior"], later_obs, later, window["root"] / "later-reference.zarr",
        MEMBERS, SETTINGS,
    )  # fmt: skip
    out = window["root"] / "concurrent.zarr"
    # Sharded, two members per shard: the writer rule is what keeps this safe.
    EnsembleStore.create(out, Grid.from_dataset(truth), MEMBERS, members_per_shard=2)
    pools = [_pool(window, 1), _pool(window, 1)]
    errors: list[BaseException] = []

    def run(pool: ActorPool, obs: Path, time: str) -> None:
        try:
            assimilate_window(
                window["prior"],
                obs,
                time,
                out,
                members=MEMBERS,
                settings=SETTINGS,
                pool=pool,
                progress=False,
            )
        except BaseException as error:  # re-raised in the test thread
            errors.append(error)

    threads = [
        threading.Thread(target=run, args=(pools[0], window["obs"], window["time"])),
        threading.Thread(target=run, args=(pools[1], later_obs, later)),
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
    finally:
        for pool in pools:
            pool.shutdown()
    assert not errors, errors
    store = EnsembleStore.open(out)
    assert sorted(str(t) for t in store.windows()) == sorted([window["time"], later])
    assert store.validate().ok
    assert all(store.is_finalized(t) for t in store.windows())
    np.testing.assert_array_equal(store.read_members(window["time"]), window["reference"])
    np.testing.assert_array_equal(store.read_members(later), later_reference)


@pytest.mark.slow
def test_the_command_uses_a_running_cluster_and_leaves_it_running(
    cluster: str, window: dict
) -> None:
    out = window["root"] / "command.zarr"
    genda = Path(sys.executable).with_name("genda")
    command = [
        str(genda), "assimilate", "--checkpoint", str(window["prior"]), "--obs", str(window["obs"]),
        "--time", window["time"], "--out", str(out), "--members", "4", "--steps", "2",
        "--workers", "2", "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": cluster}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    text = " ".join(result.stdout.split())
    assert "2 Ray workers on" in text and cluster in text
    assert EnsembleStore.open(out).is_finalized(window["time"])
    # The cluster the command connected to is still up and serving.
    assert ray.get(ray.remote(lambda: 41 + 1).remote(), timeout=60) == 42
    assert ray.cluster_resources().get("CPU") == 4


def test_workers_the_cluster_cannot_hold_are_refused(cluster: str, window: dict) -> None:
    with pytest.raises(ValueError, match=r"need 6 CPUs.*has 4"):
        assimilate_window(
            window["prior"],
            window["obs"],
            window["time"],
            window["root"] / "too-many.zarr",
            members=4,
            settings=SETTINGS,
            workers=3,
            threads_per_worker=2,
            progress=False,
        )
    assert ray.is_initialized()  # a Ray it did not start is left as it was


def test_a_cluster_address_nobody_answers_fails_fast_and_writes_nothing(window: dict) -> None:
    out = window["root"] / "nobody.zarr"
    started = clock.monotonic()
    with pytest.raises(ConnectionError, match=r"no Ray cluster answers at 127\.0\.0\.1:1"):
        assimilate_window(
            window["prior"],
            window["obs"],
            window["time"],
            out,
            members=2,
            settings=SETTINGS,
            workers=2,
            ray_address="127.0.0.1:1",
            progress=False,
        )
    assert clock.monotonic() - started < 30  # Ray alone would retry for minutes
    assert not out.exists()
