"""What a new user's walk through the README and the docs found, each fixed and held here.

One section per finding: a cycle whose baseline store holds several windows,
the flow's state against the command's exit status, torch threads of
in-process sampling, per-step progress, the cycle table, the snapped map
level, required ``--time`` options, provenance refusals that name the
differing keys, and the documented commands chaining from a fresh clone.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from typer.testing import CliRunner

from genda.cli import app
from genda.grid import Grid
from genda.storage.ensemble_store import EnsembleStore
from genda.storage.errors import EnsembleStoreError

runner = CliRunner()
GRID = Grid.gaussian(16, 32, 4)  # levels 80, 91.7, 103.3, 115 km
SPACE = ("altitude", "latitude", "longitude")
TIMES = np.array(["2030-03-01T00", "2030-03-01T06", "2030-03-01T12"], dtype="datetime64[ns]")
# stores written with consolidated metadata, which zarr 3 warns is outside its specification
pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")


def ensemble_dataset(fields: np.ndarray) -> xr.Dataset:
    """``(member, altitude, latitude, longitude)`` u, v, T of ``fields (N, V, L, H, W)``."""
    base = GRID.to_dataset(fields[0])
    data = {
        name: (("member", *SPACE), fields[:, i], base[name].attrs)
        for i, name in enumerate(GRID.variables)
    }
    return xr.Dataset(data, coords={**base.coords, "member": np.arange(fields.shape[0])})


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict:
    """A truth over TIMES, an ensemble at TIMES[1], a baseline store holding all three windows."""
    root = tmp_path_factory.mktemp("walkthrough-stores")
    rng = np.random.default_rng(3)
    climate = np.array([10.0, 0.0, 200.0])[:, None, None, None]
    truth = climate + 20 * rng.standard_normal((len(TIMES), *GRID.shape))
    GRID.to_dataset(truth, time=TIMES).to_zarr(root / "truth.zarr")
    members = truth[1] + 2 * rng.standard_normal((6, *GRID.shape))
    ensemble_dataset(members).expand_dims(time=TIMES[1:2]).to_zarr(root / "ensemble.zarr")
    # The baseline of every window, in one store (what a cycle's baseline is):
    # each window's members sit around that window's truth.
    windows = [ensemble_dataset(t + 5 * rng.standard_normal((6, *GRID.shape))) for t in truth]
    xr.concat(windows, dim="time").assign_coords(time=TIMES).to_zarr(root / "baselines.zarr")
    return {
        "root": root,
        "truth": root / "truth.zarr",
        "ensemble": root / "ensemble.zarr",
        "baselines": root / "baselines.zarr",
        "baseline_fields": windows,
        "truth_fields": truth,
    }


# ------------------------------------------------- 1. baselines of several windows
def test_a_baseline_store_of_several_windows_is_cut_to_the_verified_window(stores: dict) -> None:
    from genda.evaluation.report import evaluate_paths
    from genda.evaluation.scores import ensemble_scores

    metrics = evaluate_paths(
        stores["ensemble"],
        stores["truth"],
        stores["root"] / "report-baselines",
        baseline_paths={"enkf": stores["baselines"]},
    )
    got = metrics["baselines"]["enkf"]
    # the baseline's scores are those of its window TIMES[1] alone
    want = ensemble_scores(stores["baseline_fields"][1], GRID.to_dataset(stores["truth_fields"][1]))
    assert got["times"] == ["2030-03-01T06:00:00"]
    for name in GRID.variables:
        assert got["variables"][name]["total"]["crps"] == pytest.approx(
            want["variables"][name]["total"]["crps"], rel=1e-4
        )


def test_a_baseline_store_without_the_verified_window_is_refused(stores: dict) -> None:
    from genda.evaluation.report import evaluate_paths

    other = xr.open_zarr(stores["baselines"]).isel(time=[0, 2]).load()
    path = stores["root"] / "two-other-windows.zarr"
    other.to_zarr(path)
    with pytest.raises(ValueError, match="a baseline must be of the same window"):
        evaluate_paths(
            stores["ensemble"],
            stores["truth"],
            stores["root"] / "report-other",
            baseline_paths={"enkf": path},
        )


# ------------------------------------------------- 5. the map level actually plotted
def test_the_maps_are_named_for_the_level_they_show(stores: dict) -> None:
    out = stores["root"] / "report-level"
    result = runner.invoke(
        app,
        [
            *("evaluate", "--ensemble", str(stores["ensemble"]), "--truth", str(stores["truth"])),
            *("--out", str(out), "--level", "95"),
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    level = float(GRID.altitude[1])  # 91.67 km: the level nearest 95
    assert metrics["level_km"] == pytest.approx(level)
    assert Path(metrics["plots"]["map_T"]).name == "map_T_91.7km.png"
    assert not list(out.glob("*95km*"))
    assert "95 km" in result.stdout and "91.7 km" in result.stdout  # the snap is said
    assert "snapped" in result.stdout


def test_a_level_on_the_grid_is_not_reported_as_snapped(stores: dict) -> None:
    out = stores["root"] / "report-on-level"
    result = runner.invoke(
        app,
        [
            *("evaluate", "--ensemble", str(stores["ensemble"]), "--truth", str(stores["truth"])),
            *("--out", str(out), "--level", "80"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "map_u_80km.png").is_file()
    assert "snapped" not in result.stdout


# ------------------------------------------------- 6. required --time
def _command(name: str):
    import typer.main

    return typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["assimilate", "baseline", "observe"])
def test_a_time_that_is_required_is_declared_required(name: str) -> None:
    (option,) = [p for p in _command(name).params if "--time" in p.opts]
    assert option.required


def test_assimilate_without_time_is_a_usage_error() -> None:
    result = runner.invoke(app, ["assimilate", "--out", "x.zarr"])
    assert result.exit_code == 2 and "Missing option '--time'" in result.output


def test_every_time_option_is_required_or_has_a_documented_default() -> None:
    """An optional ``--time`` has ``None`` for "every window" or "the store's own", said in help."""
    import typer.main

    for name, command in typer.main.get_command(app).commands.items():  # type: ignore[attr-defined]
        for option in command.params:
            if "--time" not in getattr(option, "opts", ()) or option.required:
                continue
            said = (option.help or "").lower()
            assert option.default is None, (name, option.default)
            assert "default" in said or "when" in said, (name, option.help)


# ------------------------------------------------- 7. provenance refusals
def test_a_provenance_refusal_names_the_nested_keys_that_differ(tmp_path: Path) -> None:
    grid = Grid.gaussian(8, 16, 2)
    t0 = np.datetime64("2024-01-01T00:00:00")
    settings = {"sampler": "exponential", "steps": 16, "iterations": 1, "sigma_max": 80.0}
    provenance = {"kind": "posterior", "method": "mmps", "settings": settings, "seed": 0}
    store = EnsembleStore.create(tmp_path / "ens.zarr", grid, 2, {"title": "test"})
    store.add_window(t0, provenance)
    store.write_members(t0, [0], np.zeros((1, *grid.shape), np.float32))
    other = {**provenance, "settings": {**settings, "steps": 32}}
    with pytest.raises(EnsembleStoreError) as caught:
        store.add_window(t0, other)
    message = str(caught.value)
    assert "settings.steps: stored 16, given 32" in message
    # the keys that agree are not dumped
    assert "exponential" not in message and "sigma_max" not in message
    assert "iterations" not in message
    # a key only one side has is named with <absent>
    with pytest.raises(EnsembleStoreError, match=r"settings\.churn: stored <absent>, given 5"):
        store.add_window(t0, {**provenance, "settings": {**settings, "churn": 5}})


# ------------------------------------------------- a window of the tiny prior
@pytest.fixture(scope="module")
def window(tiny_archive: Path, tiny_prior: Path, tmp_path_factory) -> dict:
    """Radar observations of one hour of the tiny archive, for the tiny prior."""
    from genda.observations import draw_observations, write_observations
    from genda.storage import open_archive

    root = tmp_path_factory.mktemp("walkthrough-window")
    truth = open_archive(tiny_archive)
    time = str(truth.time.values[30])[:19]
    obs = root / "obs.parquet"
    write_observations(draw_observations(truth, Grid.from_dataset(truth), time, "radars"), obs)
    return {"root": root, "time": time, "obs": obs, "prior": tiny_prior}


def _assimilate(window: dict, out: str, **options):
    from genda.assimilation.posterior import PosteriorSettings
    from genda.orchestration.assimilate import assimilate_window

    settings = PosteriorSettings(steps=options.pop("steps", 2), batch_size=options.pop("batch", 1))
    return assimilate_window(
        window["prior"],
        window["obs"],
        window["time"],
        window["root"] / out,
        members=options.pop("members", 2),
        settings=settings,
        **options,
    )


# ------------------------------------------------- 2. threads of in-process sampling
def test_in_process_sampling_uses_the_threads_asked_and_restores_the_callers(
    window: dict, monkeypatch
) -> None:
    import genda.distributed.work as work

    seen: list[int] = []
    real = work.sample_members

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(work, "sample_members", spy)
    callers = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        _assimilate(window, "one-thread.zarr", threads_per_worker=1, progress=False)
        assert seen == [1, 1]  # one batch of one member each, on one thread
        assert torch.get_num_threads() == 2  # the caller's count is back
        seen.clear()
        torch.set_num_threads(1)
        _assimilate(window, "two-threads.zarr", threads_per_worker=2, progress=False)
        assert seen == [2, 2] and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(callers)


def test_the_threads_option_says_it_applies_in_process() -> None:
    (option,) = [p for p in _command("assimilate").params if "--threads-per-worker" in p.opts]
    assert "--workers 0" in option.help and option.default == 1


# ------------------------------------------------- 3. progress per sampler step
class _Terminal(io.StringIO):
    """A standard error that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_in_process_progress_moves_per_sampler_step(window: dict, monkeypatch) -> None:
    import sys

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    # 4 members in batches of 2: 2 batches of 3 steps
    _assimilate(window, "progress.zarr", members=4, batch=2, steps=3, progress=True)
    text = terminal.getvalue()
    assert "6/6" in text and "step" in text, text
    assert "members=4/4" in text, text


def test_no_progress_when_standard_error_is_not_a_terminal(window: dict, monkeypatch) -> None:
    import sys

    plain = io.StringIO()
    monkeypatch.setattr(sys, "stderr", plain)
    _assimilate(window, "quiet.zarr", progress=True)
    assert plain.getvalue() == ""


def test_the_sampler_reports_every_step() -> None:
    from genda.models.sampling import sample

    calls: list[int] = []
    for method, steps in (("heun", 5), ("exponential", 4), ("euler", 3)):
        calls.clear()
        sample(
            lambda x, sigma: 0.5 * x,
            (2, 3),
            [0, 1],
            7,
            steps=steps,
            method=method,
            on_step=lambda: calls.append(1),
        )
        assert len(calls) == steps, method


# ------------------------------------------------- 4. the cycle table
def _window_result(time: str, report: Path) -> dict:
    from genda.orchestration.summaries import WindowSummary

    made = WindowSummary(
        store="cycle.zarr",
        time=time,
        members=3,
        written=3,
        already_complete=0,
        strategy="joint3d",
        method="mmps",
        steps=2,
        batch_size=2,
        workers=0,
        cluster="",
        seconds=1.5,
        members_per_second=2.0,
        failures_retried=0,
    )
    scores = {
        "u": {"crps": 7.0612, "rmse": 13.2391, "spread_skill": 0.9812},
        "T": {"crps": 2.1234, "rmse": 4.4912, "spread_skill": 1.0931},
    }
    return {
        "time": time,
        "store": "cycle.zarr",
        "observations": 748,
        "ensemble": made.to_dict(),
        "evaluation": {
            "metrics_path": str(report / "metrics.json"),
            "plots": {},
            "scores": scores,
            "units": {"u": "m s-1", "T": "K"},
            "baselines": {},
        },
    }


def test_the_cycle_table_keeps_every_column_and_shows_the_scores_in_a_log(
    tmp_path: Path, monkeypatch
) -> None:
    import genda.orchestration.flows as flows

    deep = tmp_path / ("a-long-folder-name-that-a-log-must-keep-whole" * 2) / "reports"
    report = deep / "2000-02-01T120000"
    error = "FileNotFoundError: no observation table at obs/obs-20000201T13.parquet " + "x" * 60
    results = [
        _window_result("2000-02-01T12:00:00", report),
        {"time": "2000-02-01T13:00:00", "error": error},
    ]

    def cycle(config, progress=True):
        raise flows.CycleError("1 of 2 windows failed; rerun the cycle to resume them", results)

    if not hasattr(flows, "CycleError"):  # genda before the cycle's failure was an error

        def cycle(config):
            return results

    monkeypatch.setattr(flows, "assimilation_cycle", cycle)
    config = tmp_path / "cycle.yaml"
    config.write_text(
        "observations: obs/obs-{time:%Y%m%dT%H}.parquet\nstart: 2000-02-01T12:00\n"
        "end: 2000-02-01T13:00\nstore: cycle.zarr\n"
    )
    result = runner.invoke(app, ["cycle", "--config", str(config)])
    assert result.exit_code == 1  # a failed window: the command fails, as the flow does
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| window"))
    for column in ("u CRPS (m s-1)", "u RMSE (m s-1)", "u spread/skill", "T CRPS (K)"):
        assert f"| {column} |" in header, header
    row = next(line for line in lines if line.startswith("| 2000-02-01T12:00:00"))
    assert "| 7.06 | 13.2 | 0.981 | 2.12 | 4.49 | 1.09 |" in row, row
    assert f"report {report}" in row  # the whole path, on the row's one line
    failed = next(line for line in lines if line.startswith("| 2000-02-01T13:00:00"))
    assert error in failed
    assert "1 of 2 windows failed" in result.stderr


def test_the_cycle_table_on_a_terminal_is_a_rich_table_with_the_scores() -> None:
    from genda.cli.render import render_cycle
    from genda.orchestration.summaries import CycleTable

    table = CycleTable.from_results([_window_result("2000-02-01T12:00:00", Path("r/t"))])
    shown = render_cycle("cycle", table)
    headers = [str(column.header) for column in shown.columns]
    assert headers[5:8] == ["u CRPS (m s-1)", "u RMSE (m s-1)", "u spread/skill"]
    assert table.rows[0][5:11] == ("7.06", "13.2", "0.981", "2.12", "4.49", "1.09")


# ------------------------------------------------- 1. a cycle with baselines, and its state
@pytest.fixture(scope="module")
def cycle_config(window: dict, tiny_archive: Path) -> Path:
    """Two hourly windows, evaluated against the truth and a baseline store of both windows."""
    from genda.observations import draw_observations, write_observations
    from genda.storage import open_archive

    root = window["root"]
    truth = open_archive(tiny_archive)
    grid = Grid.from_dataset(truth)
    times = [np.datetime64(window["time"]) + np.timedelta64(h, "h") for h in (0, 1)]
    baselines = EnsembleStore.create(root / "baselines.zarr", grid, 3, {"title": "baseline"})
    rng = np.random.default_rng(5)
    for t in times:
        write_observations(
            draw_observations(truth, grid, t, "radars"),
            root / f"obs-{str(t).replace(':', '')}.parquet",
        )
        state = grid.tensor_from_dataset(truth.sel(time=t)).numpy()
        baselines.add_window(t, {"method": "test"})
        noise = rng.standard_normal((3, *grid.shape)).astype(np.float32)
        baselines.write_members(t, range(3), state[None] + 5 * noise)
        baselines.finalize(t)
    config = root / "cycle.yaml"
    config.write_text(
        f"checkpoint: {window['prior']}\n"
        "observations: obs-{time:%Y-%m-%dT%H%M%S}.parquet\n"
        f"start: {times[0]}\nend: {times[1]}\nevery_hours: 1\n"
        "members: 3\nsteps: 2\nbatch_size: 2\nstore: cycle.zarr\n"
        f"truth: {tiny_archive}\nbaselines: {{clim: baselines.zarr}}\n"
    )
    return config


@pytest.mark.slow
def test_a_cycle_scores_a_baseline_store_of_every_window(harness, cycle_config: Path) -> None:
    """What ``genda cycle`` runs (the flow is called here: Prefect's log handlers keep
    the stream of their first flow run, which a CliRunner closes)."""
    from genda.orchestration.config import load_cycle_config
    from genda.orchestration.flows import assimilation_cycle

    results = assimilation_cycle(load_cycle_config(cycle_config), progress=False)
    assert all("error" not in result for result in results), results
    reports = sorted((cycle_config.parent / "cycle-reports").glob("*/metrics.json"))
    assert len(reports) == 2
    for path in reports:
        metrics = json.loads(path.read_text())
        (time,) = metrics["ensemble"]["times"]
        assert metrics["baselines"]["clim"]["times"] == [time]  # its own window only
        assert metrics["baselines"]["clim"]["variables"]["u"]["total"]["crps"] > 0
    from genda.orchestration.summaries import CycleTable

    table = CycleTable.from_results(results)
    assert "u CRPS (m s-1)" in table.columns and not any(table.failed)


@pytest.mark.slow
def test_a_cycle_with_a_failed_window_ends_failed_like_the_command(
    harness, cycle_config: Path
) -> None:
    from genda.orchestration import flows
    from genda.orchestration.config import load_cycle_config

    config = load_cycle_config(cycle_config)
    # a third window, whose observations never arrived; no evaluation, to be quick
    config = config.model_copy(
        update={
            "store": cycle_config.parent / "failing.zarr",
            "start": config.end,
            "end": (np.datetime64(config.end) + np.timedelta64(1, "h")).astype(object),
            "truth": None,
            "baselines": {},
        }
    )
    state = flows.assimilation_cycle(config, progress=False, return_state=True)
    assert state.is_failed(), state  # as `genda cycle` exits 1
    assert "1 of 2 windows failed" in state.message
    error = state.result(raise_on_failure=False)
    assert isinstance(error, flows.CycleError)
    assert ["error" in r for r in error.results] == [False, True]
    with pytest.raises(flows.CycleError) as caught:
        flows.assimilation_cycle(config, progress=False)  # a rerun resumes the good window
    assert caught.value.results[0]["ensemble"]["already_complete"] == 3


@pytest.mark.slow
def test_progress_on_ray_actors_moves_per_sampler_step(window: dict, monkeypatch) -> None:
    """The demo's path: 2 actors count their steps on a tiny actor that the driver's bar reads."""
    import os
    import sys

    monkeypatch.setitem(os.environ, "RAY_AUTH_MODE", "disabled")
    monkeypatch.setitem(os.environ, "GENDA_RAY_INSECURE", "1")  # loopback-only test machine
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    # 4 members in batches of 2 on 2 actors: 2 batches of 3 steps
    summary = _assimilate(
        window, "ray-progress.zarr", members=4, batch=2, steps=3, workers=2, progress=True
    )
    assert summary.workers == 2 and summary.written == 4
    bars = [line for line in terminal.getvalue().split("\r") if line.startswith("sampling")]
    assert bars and "6/6" in bars[-1] and "members=4/4" in bars[-1], bars[-3:]
    import ray

    assert not ray.is_initialized()  # the cluster it started is gone, the counter with it


# ------------------------------------------------- 8. the documented commands chain
def test_the_documented_commands_chain_from_a_fresh_clone() -> None:
    """Every path a ``bash`` block's command reads was written before it, or is shipped."""
    from doc_commands import DOC_ORDER, check_docs

    problems, count = check_docs()
    assert not problems, "\n".join(problems)
    assert count >= 30, count  # the README's tour and the docs' examples were read
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert all(doc in readme for doc in DOC_ORDER[1:])  # the README says the reading order


def test_the_chain_check_sees_a_broken_chain(tmp_path: Path, monkeypatch) -> None:
    """The check itself: a missing input, a second write and a bad option are each found."""
    import doc_commands

    doc = tmp_path / "doc.md"
    doc.write_text(
        "```bash\n"
        "genda simulate --out a.zarr --days 1 --seed 1\n"
        "genda simulate --out a.zarr --days 1 --seed 2\n"
        "genda observe --truth missing.zarr --time 2000-01-01T12:00 --out o.parquet\n"
        "genda assimilate --obs o.parquet --time 2000-01-01T12:00 --membres 4\n"
        "cat > c.yaml <<'EOF'\n"
        "observations: o-{time:%H}.parquet\nstart: 2000-01-01T12:00\nend: 2000-01-01T13:00\n"
        "store: s.zarr\n"
        "EOF\n"
        "genda cycle --config c.yaml\n"
        "```\n"
        "```\ngenda summary not-checked.zarr\n```\n"
    )
    monkeypatch.setattr(doc_commands, "ROOT", tmp_path)
    problems, count = doc_commands.check_docs(("doc.md",))
    assert count == 6
    text = "\n".join(problems)
    assert "writes a.zarr again" in text
    assert "reads missing.zarr" in text
    assert "--membres" in text
    assert "reads o-12.parquet" in text and "reads o-13.parquet" in text
    assert "not-checked" not in text
