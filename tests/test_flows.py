"""Cycle configuration and the Prefect flows (under prefect_test_harness, in-process and on Ray)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from genda.cli import app
from genda.grid import Grid
from genda.observations import draw_observations, write_observations
from genda.observations.networks import split_withheld
from genda.orchestration.config import ConfigError, load_cycle_config
from genda.storage import EnsembleStore, open_archive

runner = CliRunner()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------- configuration
def test_a_config_reads_windows_and_resolves_paths_beside_it(tmp_path: Path) -> None:
    config = load_cycle_config(
        _write(
            tmp_path / "cycle.yaml",
            "observations: obs/{time:%Y%m%dT%H}.parquet\n"
            "start: 2000-01-02T06:00\nend: 2000-01-02T12:00\nevery_hours: 3\n"
            "store: out/cycle.zarr\nbatch_size: auto\nray: {workers: 2}\n",
        )
    )
    assert [str(t) for t in config.windows()] == [
        "2000-01-02T06:00:00",
        "2000-01-02T09:00:00",
        "2000-01-02T12:00:00",
    ]
    assert config.observation_path(np.datetime64("2000-01-02T09:00")) == (
        tmp_path / "obs" / "20000102T09.parquet"
    )
    assert config.store == tmp_path / "out" / "cycle.zarr"
    assert config.ray.workers == 2 and config.settings().batch_size == 8


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("observations: o.csv\nstart: 2000-01-01\nend: 2000-01-02\nstore: s.zarr\n", ["{time"]),
        (
            "observations: o{time}.csv\nstart: 2000-01-02\nend: 2000-01-01\nstore: s.zarr\n",
            ["before start"],
        ),
        (
            "observations: o{time}.csv\nstart: 2000-01-01\nend: 2000-01-01\nstore: s.zarr\n"
            "membres: 4\nmethod: kalman\n",
            ["membres", "method"],
        ),
        ("start: 2000-01-01\nend: x\n", ["observations", "store", "end"]),
        (
            "observations: o{time}.csv\nstart: 2000-01-01\nend: 2000-01-01\nstore: s.zarr\n"
            "ray: {workers: -1}\nbatch_size: 0\n",
            ["ray.workers", "batch_size"],
        ),
        ("- a list\n", ["mapping"]),
        ("observations: [unclosed\n", ["not valid YAML"]),
    ],
)
def test_bad_configs_name_every_problem(tmp_path: Path, text: str, needles: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_cycle_config(_write(tmp_path / "bad.yaml", text))
    for needle in needles:
        assert needle in str(caught.value), str(caught.value)


def test_the_cycle_command_refuses_a_bad_config(tmp_path: Path) -> None:
    result = runner.invoke(app, ["cycle", "--config", str(tmp_path / "absent.yaml")])
    assert result.exit_code != 0 and "no cycle configuration" in result.output


# ---------------------------------------------------------------------------- flows
@pytest.fixture(scope="module")
def cycle_files(tiny_archive: Path, tiny_prior: Path, tmp_path_factory) -> dict:
    """Observations of two hourly windows of the tiny archive, and a config for them."""
    root = tmp_path_factory.mktemp("cycle")
    truth = open_archive(tiny_archive)
    grid = Grid.from_dataset(truth)
    first = np.datetime64(str(truth.time.values[30])[:19])
    times = [first, first + np.timedelta64(1, "h")]
    for t in times:
        name = str(t).replace(":", "")
        kept, withheld = split_withheld(
            draw_observations(truth, grid, t, "radars,lidars"), ["Collm"]
        )
        write_observations(kept, root / f"obs-{name}.parquet")
        write_observations(withheld, root / f"withheld-{name}.parquet")
    text = (
        f"checkpoint: {tiny_prior}\n"
        "observations: obs-{time:%Y-%m-%dT%H%M%S}.parquet\n"
        "withheld: withheld-{time:%Y-%m-%dT%H%M%S}.parquet\n"
        f"start: {times[0]}\nend: {times[1]}\nevery_hours: 1\n"
        "members: 3\nsteps: 2\nbatch_size: 2\nstore: cycle.zarr\n"
        f"truth: {tiny_archive}\n"
    )
    return {"root": root, "config": _write(root / "cycle.yaml", text), "times": times}


@pytest.mark.slow
def test_a_cycle_runs_every_window_and_a_rerun_makes_nothing_twice(
    harness, cycle_files: dict
) -> None:
    from genda.orchestration.flows import assimilation_cycle

    config = load_cycle_config(cycle_files["config"])
    first = assimilation_cycle(config)
    assert [r["time"] for r in first] == [str(t) for t in cycle_files["times"]]
    assert all("error" not in r for r in first), first
    assert [r["ensemble"]["written"] for r in first] == [3, 3]
    store = EnsembleStore.open(config.store)
    assert store.windows() == cycle_files["times"] and store.validate().ok
    for result in first:
        metrics = json.loads(Path(result["evaluation"]["metrics_path"]).read_text())
        assert metrics["ensemble"]["variables"]["u"]["total"]["crps"] > 0
        assert metrics["withheld"]  # the withheld station is scored
        assert all(Path(p).is_file() for p in result["evaluation"]["plots"].values())
    before = store.read_members(cycle_files["times"][1])

    again = assimilation_cycle(config)
    assert [r["ensemble"]["written"] for r in again] == [0, 0]
    assert [r["ensemble"]["already_complete"] for r in again] == [3, 3]
    np.testing.assert_array_equal(store.read_members(cycle_files["times"][1]), before)


def test_a_window_flow_publishes_its_scores_as_an_artifact(harness, cycle_files: dict) -> None:
    from prefect.client.orchestration import get_client

    from genda.orchestration.flows import assimilate_window_flow

    config = load_cycle_config(cycle_files["config"]).model_copy(
        update={"store": cycle_files["root"] / "artifact.zarr"}
    )
    time = str(cycle_files["times"][0])
    result = assimilate_window_flow(config, time)
    assert result["observations"] > 0 and result["ensemble"]["written"] == 3

    async def markdown() -> str:
        async with get_client() as client:
            artifacts = await client.read_artifacts()
        found = [
            a
            for a in artifacts
            if a.key == "window-" + time.lower().replace(":", "").replace("t", "-")
        ]
        return found[0].data

    import asyncio

    text = asyncio.run(markdown())
    assert f"# Window {time}" in text and "| u |" in text and "crps" in text
    assert "metrics.json" in text


def test_a_bad_window_is_reported_and_the_cycle_goes_on(harness, cycle_files: dict) -> None:
    from genda.orchestration.flows import CycleError, assimilation_cycle

    root = cycle_files["root"]
    times = cycle_files["times"]
    config = load_cycle_config(cycle_files["config"]).model_copy(
        update={
            "store": root / "partial.zarr",
            "end": (times[1] + np.timedelta64(1, "h")).astype(object),
            "truth": None,
        }
    )
    with pytest.raises(CycleError, match="1 of 3 windows failed") as caught:
        assimilation_cycle(config)  # every window runs; then the cycle fails
    results = caught.value.results
    assert [("error" in r) for r in results] == [False, False, True]
    assert "FileNotFoundError" in results[2]["error"] or "no such" in results[2]["error"].lower()
    assert EnsembleStore.open(root / "partial.zarr").windows() == times


@pytest.mark.slow
def test_a_window_flow_on_ray_actors_matches_the_in_process_one(harness, cycle_files: dict) -> None:
    """The flow makes Ray actors inside its task, on a local cluster it starts and stops."""
    from genda.orchestration.config import RayConfig
    from genda.orchestration.flows import assimilate_window_flow
    from genda.threads import cpu_threads

    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["GENDA_RAY_INSECURE"] = "1"  # the documented opt-in: loopback-only test machine
    base = load_cycle_config(cycle_files["config"]).model_copy(update={"truth": None})
    time = str(cycle_files["times"][0])
    here = base.model_copy(update={"store": cycle_files["root"] / "here.zarr"})
    on_ray = base.model_copy(
        update={"store": cycle_files["root"] / "ray.zarr", "ray": RayConfig(workers=2)}
    )
    with cpu_threads(1):  # as the actors: the same summation order, bit for bit
        assimilate_window_flow(here, time)
    result = assimilate_window_flow(on_ray, time)
    assert result["ensemble"]["workers"] == 2 and len(result["ensemble"]["by_worker"]) == 2
    import ray

    assert not ray.is_initialized()  # the cluster it started is gone
    np.testing.assert_array_equal(
        EnsembleStore.open(on_ray.store).read_members(time),
        EnsembleStore.open(here.store).read_members(time),
    )


@pytest.mark.slow
def test_the_demo_simulates_observes_assimilates_and_scores(
    harness, tiny_prior: Path, tmp_path: Path
) -> None:
    from genda.orchestration import run_demo
    from genda.simulator import SimulatorConfig

    def tiny_demo():
        return run_demo(
            tmp_path / "demo",
            checkpoint=str(tiny_prior),
            members=3,
            steps=2,
            workers=0,
            spinup_days=0.5,
            days=2,
            simulator=SimulatorConfig(nlat=16, nlon=32, layers=4, levels=4),
            progress=False,
        )

    result = tiny_demo()
    window = result.window
    assert window["time"].endswith("T12:00:00")
    assert window["observations"] > 0 and window["ensemble"]["written"] == 3
    store = EnsembleStore.open(result.store)
    assert store.validate().ok and store.is_finalized(window["time"])
    evaluation = window["evaluation"]
    assert set(evaluation["baselines"]) == {"enkf"}
    for scores in (evaluation["scores"], evaluation["baselines"]["enkf"]):
        assert all(np.isfinite(scores[v]["crps"]) for v in ("u", "v", "T"))
    assert result.withheld is not None and result.withheld.is_file()
    assert all(Path(p).stat().st_size > 10_000 for p in evaluation["plots"].values())
    # Running it again replaces the earlier demo rather than mixing into it.
    again = tiny_demo()
    assert again.window["ensemble"]["written"] == 3


def test_a_scheduled_run_takes_the_next_due_window(cycle_files: dict, tmp_path: Path) -> None:
    from genda.orchestration.flows import next_window

    config = load_cycle_config(cycle_files["config"]).model_copy(
        update={"store": tmp_path / "next.zarr"}
    )
    first, second = cycle_files["times"]
    assert next_window(config) == first
    assert next_window(config, now=first - np.timedelta64(1, "s")) is None  # not due yet
    grid = Grid.from_dataset(open_archive(config.truth))
    store = EnsembleStore.create(config.store, grid, config.members)
    store.add_window(first, {"test": 1})
    assert next_window(config) == first  # registered but not finalised
    store.write_members(first, range(3), np.zeros((3, *grid.shape), np.float32))
    store.finalize(first)
    assert next_window(config) == second
    missing = config.model_copy(update={"observations": str(tmp_path / "none-{time}.csv")})
    assert next_window(missing) is None  # observations not there yet


def test_serve_builds_cron_and_interval_schedules() -> None:
    from genda.orchestration.flows import scheduled_window

    hourly = scheduled_window.to_deployment(
        name="t", cron="0 * * * *", parameters={"config_path": "c.yaml"}
    )
    assert hourly.schedules[0].schedule.cron == "0 * * * *"
    assert hourly.parameters == {"config_path": "c.yaml"}
    every = scheduled_window.to_deployment(name="t", interval=30)
    assert every.schedules[0].schedule.interval.total_seconds() == 30
    result = runner.invoke(app, ["serve", "--config", "x.yaml", "--cron", "* * * * *"])
    assert result.exit_code != 0 and "no cycle configuration" in result.output


@pytest.mark.slow
def test_genda_serve_owns_a_server_whose_schedule_runs_a_window(
    cycle_files: dict, tmp_path: Path
) -> None:
    """`genda serve` starts `prefect server start` on 127.0.0.1; the schedule fires; stop is clean."""
    import signal
    import subprocess
    import sys
    import time as clock
    import urllib.request

    from genda.orchestration.serve import stop_process_group

    config = tmp_path / "served.yaml"
    text = cycle_files["config"].read_text().replace("store: cycle.zarr", "store: served.zarr")
    text = text.replace("truth:", "# truth:")
    root = cycle_files["root"]
    config.write_text(
        text.replace("obs-{time", f"{root}/obs-{{time").replace(
            "withheld-{time", f"{root}/withheld-{{time"
        )
    )
    # A user's shell: no Prefect or Ray settings left behind by the tests that ran
    # in this process before (the harness, the flows), only those named here.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RAY_ADDRESS"))}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    log = tmp_path / "server.log"
    genda = Path(sys.executable).with_name("genda")
    # Its output goes to a file, not a pipe: a pipe nobody drains fills up with the
    # runs' logs and blocks the process, which then cannot stop when asked.
    output = tmp_path / "serve.out"
    with output.open("w") as sink:
        served = subprocess.Popen(
            [
                *(str(genda), "serve", "--config", str(config), "--interval", "5"),
                *("--server-log", str(log)),
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            # A shell without job control starts background commands with SIGINT
            # ignored, and a child inherits that: restore Ctrl-C for the server.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    store = tmp_path / "served.zarr"
    first = cycle_files["times"][0]
    url = None
    try:
        deadline = clock.monotonic() + 240
        while url is None:
            lines = output.read_text().splitlines()
            serving = [line for line in lines if line.startswith("serving deployment")]
            if serving:
                url = serving[0].split(" on ")[-1].strip()
                break
            assert served.poll() is None, output.read_text()
            assert clock.monotonic() < deadline, output.read_text()
            clock.sleep(0.5)
        assert url.startswith("http://127.0.0.1:")
        while clock.monotonic() < deadline:
            if store.exists():
                opened = EnsembleStore.open(store)
                if first in opened.windows() and opened.is_finalized(first):
                    break
            assert served.poll() is None, output.read_text()
            clock.sleep(1)
        else:
            raise AssertionError(f"no scheduled run finished a window; server log: {log}")
    finally:
        # A loaded machine may take a while to cancel the runner and stop the
        # server: generous, since a KILL would orphan the server it must stop.
        stop_process_group(served, signal.SIGINT, timeout=240)
    assert served.returncode != -signal.SIGKILL, (
        f"genda serve had to be killed (environment: {sorted(env)}):\n{output.read_text()[-4000:]}"
    )
    assert EnsembleStore.open(store).validate().ok
    # The server `genda serve` started is gone with it.
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/health", timeout=2)


def test_stopping_a_process_group_waits_for_children_that_outlive_the_leader(
    monkeypatch,
) -> None:
    """The leader exits on SIGTERM, its child ignores it: the child is killed before returning."""
    import signal
    import subprocess
    import sys

    from genda.orchestration import serve

    monkeypatch.setattr(serve, "GROUP_EXIT_SECONDS", 0.5)
    child = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    leader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time; "
            f"subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(60)",
        ],
        start_new_session=True,
    )
    try:
        import time as clock

        clock.sleep(1.0)  # the child is running
        assert serve._group_alive(leader.pid)
        serve.stop_process_group(leader, signal.SIGTERM, timeout=5)
        assert not serve._group_alive(leader.pid)
    finally:
        if serve._group_alive(leader.pid):
            os.killpg(leader.pid, signal.SIGKILL)
