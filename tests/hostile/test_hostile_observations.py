"""Hostile observation tables: physical ranges, units, the background check, impossible members.

Every refused input must fail with exit code 1 and a message that names the
rows (or the setting), and must leave no store behind (or an existing one
byte for byte as it was). Members with NaN or impossible values are never
flagged complete.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import genda.cli
import genda.distributed.work as work
from genda.cli import app
from genda.grid import Grid
from genda.models.checkpoint import load_checkpoint
from genda.observations import draw_observations, write_observations
from genda.observations.qc import DEFAULT_OUTLIER_K, background_check, screen_observations
from genda.observations.table import ObservationError
from genda.orchestration.config import ConfigError, load_cycle_config
from genda.storage import EnsembleStore, open_archive

runner = CliRunner()


# ---------------------------------------------------------------------------- helpers
def flat(text: str) -> str:
    """The message with rich's line wrapping undone."""
    return " ".join(text.split())


def table_row(text: str, label: str) -> str:
    """The first line of the value of the row ``label`` of a printed rich table."""
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if len(cells) == 2 and cells[0] == label:
            return cells[1]
    raise AssertionError(f"no row {label!r} in\n{text}")


def snapshot(path: Path) -> dict[str, str]:
    """SHA-256 of every file under ``path`` (empty when it does not exist)."""
    if not path.exists():
        return {}
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def hostile(tiny_archive: Path, tiny_prior: Path, tmp_path_factory) -> dict:
    """A valid table of the tiny archive, the prior, and a store made from that table."""
    root = tmp_path_factory.mktemp("hostile")
    truth = open_archive(tiny_archive)
    time = str(truth.time.values[30])[:19]
    # Noise-free radar winds and lidar temperatures: a table every rule accepts.
    base = draw_observations(truth, Grid.from_dataset(truth), time, "radars,lidars", noise=False)
    store = root / "existing.zarr"
    made = assimilate(tiny_prior, write(base, root / "base.parquet"), time, store)
    assert made.exit_code == 0, made.output
    return {"root": root, "time": time, "base": base, "prior": tiny_prior, "store": store}


def write(df: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
        return path
    return write_observations(df, path)


def assimilate(prior: Path, obs: Path, time: str, out: Path, *extra: str):
    return runner.invoke(
        app,
        [
            "assimilate",
            "--checkpoint",
            str(prior),
            "--obs",
            str(obs),
            "--time",
            time,
            "--out",
            str(out),
            "--members",
            "2",
            "--steps",
            "2",
            "--no-progress",
            *extra,
        ],
    )


def first(base: pd.DataFrame, variable: str) -> int:
    """Position of the first row observing ``variable``."""
    return int(np.flatnonzero(base["variable"].to_numpy() == variable)[0])


def refused(hostile: dict, df: pd.DataFrame, name: str, *extra: str) -> str:
    """Assimilate ``df`` into a new store and into the existing one: both refused, nothing written.

    Returns the message (wrapping undone).
    """
    path = write(df, hostile["root"] / f"{name}.csv")
    new = hostile["root"] / f"{name}.zarr"
    result = assimilate(hostile["prior"], path, hostile["time"], new, *extra)
    assert result.exit_code == 1, result.output
    assert not new.exists()  # no store created
    message = flat(result.stderr)
    assert message.startswith("error:"), message
    assert "Traceback" not in result.output
    before = snapshot(hostile["store"])
    again = assimilate(hostile["prior"], path, hostile["time"], hostile["store"], *extra)
    assert again.exit_code == 1, again.output
    assert snapshot(hostile["store"]) == before  # the existing store is unchanged
    return message


def rows_text(positions: np.ndarray) -> str:
    """How a message lists rows: ``row 3``, ``rows 3, 4`` or ``12 rows, first 3, 4, 5, 6, 7``."""
    shown = ", ".join(str(p) for p in positions[:5])
    if len(positions) == 1:
        return f"row {shown}"
    return f"rows {shown}" if len(positions) <= 5 else f"{len(positions)} rows, first {shown}"


def changed(base: pd.DataFrame, row: int, **values: object) -> pd.DataFrame:
    df = base.copy()
    for column, value in values.items():
        df.loc[row, column] = value
    return df


# ---------------------------------------------------------------------------- units
def test_celsius_table_without_units_is_refused(hostile: dict) -> None:
    base = hostile["base"]
    is_t = base["variable"] == "T"
    celsius = base.assign(value=np.where(is_t, base["value"] - 273.15, base["value"]))
    message = refused(hostile, celsius, "celsius")
    rows = rows_text(np.flatnonzero(is_t.to_numpy()))
    assert f"T values look like degrees Celsius, not kelvin, in {rows}" in message
    assert "'units' column" in message and "degC" in message


def test_celsius_with_a_units_column_is_accepted(hostile: dict, tmp_path: Path) -> None:
    base = hostile["base"]
    is_t = base["variable"] == "T"
    celsius = base.assign(
        value=np.where(is_t, base["value"] - 273.15, base["value"]),
        units=np.where(is_t, "degC", "m/s"),
    )
    out = tmp_path / "degc.zarr"
    result = assimilate(
        hostile["prior"], write(celsius, tmp_path / "degc.csv"), hostile["time"], out
    )
    assert result.exit_code == 0, result.output
    # the same values as the kelvin table, so the same window
    kelvin = EnsembleStore.open(hostile["store"]).provenance(hostile["time"])
    assert EnsembleStore.open(out).provenance(hostile["time"]) == kelvin


def test_evaluate_refuses_a_celsius_withheld_table(hostile: dict, tiny_archive: Path) -> None:
    base = hostile["base"]
    is_t = base["variable"] == "T"
    celsius = base.assign(value=np.where(is_t, base["value"] - 273.15, base["value"]))
    path = write(celsius, hostile["root"] / "withheld-celsius.csv")
    report = hostile["root"] / "report-celsius"
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--ensemble",
            str(hostile["store"]),
            "--truth",
            str(tiny_archive),
            "--out",
            str(report),
            "--withheld",
            str(path),
        ],
    )
    assert result.exit_code == 1, result.output
    message = flat(result.stderr)
    assert "withheld-celsius.csv" in message
    rows = rows_text(np.flatnonzero(is_t.to_numpy()))
    assert f"T values look like degrees Celsius, not kelvin, in {rows}" in message
    assert not report.exists()


# ---------------------------------------------------------------------------- ranges
@pytest.mark.parametrize(
    ("variable", "column", "value", "expected"),
    [
        ("u", "value", 1e6, "u value outside the plausible range [-400, 400] m/s"),
        ("v", "value", 500.0, "v value outside the plausible range [-400, 400] m/s"),
        ("u", "value", -500.0, "u value outside the plausible range [-400, 400] m/s"),
        ("T", "value", 5000.0, "T value outside the plausible range [80, 1000] K"),
        ("T", "value", 50.0, "T value outside the plausible range [80, 1000] K"),
        ("T", "value", -5.0, "T values look like degrees Celsius, not kelvin,"),
        ("u", "sigma", 1e-30, "u sigma below 0.1 m/s"),
        ("T", "sigma", 1e-30, "T sigma below 0.1 K"),
        ("T", "sigma", 1e30, "T sigma above 1000 K"),
        ("u", "sigma", 0.0, "sigma <= 0"),
        ("v", "sigma", -2.0, "sigma <= 0"),
        ("T", "sigma", np.nan, "sigma is missing, NaN or infinite"),
        ("u", "sigma", np.inf, "sigma is missing, NaN or infinite"),
    ],
)
def test_implausible_rows_are_refused_by_row(
    hostile: dict, variable: str, column: str, value: float, expected: str
) -> None:
    row = first(hostile["base"], variable)
    name = f"{variable}-{column}-{value}".replace(".", "p")
    message = refused(hostile, changed(hostile["base"], row, **{column: value}), name)
    assert f"{expected} in row {row}" in message, message
    assert "1 problem(s)" in message


def test_line_of_sight_winds_are_bounded_too(hostile: dict) -> None:
    base = hostile["base"]
    row = first(base, "u")
    los = changed(base, row, variable="los", value=1e6, azimuth_deg=90.0, elevation_deg=70.0)
    message = refused(hostile, los, "los-1e6")
    assert f"los value outside the plausible range [-400, 400] m/s in row {row}" in message


def test_every_problem_is_listed_together(hostile: dict) -> None:
    base = hostile["base"]
    u, t = first(base, "u"), first(base, "T")
    df = changed(changed(base, u, value=1e6), t, sigma=1e-30)
    message = refused(hostile, df, "two-problems")
    assert "2 problem(s)" in message
    assert f"in row {u}" in message and f"in row {t}" in message


# ---------------------------------------------------------------------------- background check
def planted(hostile: dict) -> tuple[pd.DataFrame, int]:
    """The valid table with one zonal wind of 150 m/s: plausible, but not at this station."""
    row = first(hostile["base"], "u")
    return changed(hostile["base"], row, value=150.0), row


def test_background_check_flags_a_planted_outlier(hostile: dict) -> None:
    df, row = planted(hostile)
    prior = load_checkpoint(hostile["prior"])
    check = background_check(df, prior.grid, prior.normalization)
    assert check.rows == (row,)
    assert check.flagged == {"u": 1, "v": 0, "T": 0}
    assert check.checked == {v: int((df["variable"] == v).sum()) for v in ("u", "v", "T")}
    assert check.departures[row] > DEFAULT_OUTLIER_K
    assert np.delete(check.departures, row).max() < DEFAULT_OUTLIER_K
    kept = check.kept(df)
    assert len(kept) == len(df) - 1 and list(kept.index) == list(range(len(df) - 1))
    assert (kept["value"] != 150.0).all()


def test_background_check_departure_is_the_closed_form(hostile: dict) -> None:
    """At a grid node: |y - mu_b| / sqrt(sigma_b^2 + sigma_o^2), with the checkpoint's statistics."""
    prior = load_checkpoint(hostile["prior"])
    grid = prior.grid
    level, v = 1, grid.variable_index("T")
    mu, sd = prior.normalization.mean[v, level], prior.normalization.std[v, level]
    obs = pd.DataFrame(
        {
            "time": [np.datetime64(hostile["time"], "ns")],
            "lat": [float(grid.latitude[3])],
            "lon": [float(grid.longitude[5])],
            "alt_km": [float(grid.altitude[level])],
            "variable": ["T"],
            "value": [mu + 12.0],
            "sigma": [2.0],
        }
    )
    check = background_check(obs, grid, prior.normalization, k=1.0)
    assert check.departures[0] == pytest.approx(12.0 / np.sqrt(sd**2 + 4.0), rel=1e-9)


def test_assimilate_leaves_the_outlier_out_and_counts_it(hostile: dict) -> None:
    df, _ = planted(hostile)
    out = hostile["root"] / "outlier.zarr"
    result = assimilate(
        hostile["prior"], write(df, hostile["root"] / "outlier.csv"), hostile["time"], out
    )
    assert result.exit_code == 0, result.output
    assert table_row(result.stdout, "outliers") == "1 (u 1), left out"
    assert table_row(result.stdout, "observations") == str(len(df) - 1)
    provenance = EnsembleStore.open(out).provenance(hostile["time"])
    assert provenance["observations_count"] == len(df) - 1


def test_keep_outliers_assimilates_it(hostile: dict) -> None:
    df, _ = planted(hostile)
    out = hostile["root"] / "kept.zarr"
    path = write(df, hostile["root"] / "kept.csv")
    result = assimilate(hostile["prior"], path, hostile["time"], out, "--keep-outliers")
    assert result.exit_code == 0, result.output
    assert table_row(result.stdout, "outliers") == "1 (u 1), kept"
    assert table_row(result.stdout, "observations") == str(len(df))
    assert EnsembleStore.open(out).provenance(hostile["time"])["observations_count"] == len(df)


def test_a_clean_table_keeps_its_provenance(hostile: dict) -> None:
    """Nothing flagged: the window's provenance is that of the whole table (older stores match)."""
    from genda.orchestration.assimilate import observation_fingerprint

    provenance = EnsembleStore.open(hostile["store"]).provenance(hostile["time"])
    assert provenance["observations_count"] == len(hostile["base"])
    assert provenance["observations_sha256"] == observation_fingerprint(hostile["base"])
    assert not [key for key in provenance if "outlier" in key]
    assert not [key for key in provenance["settings"] if "outlier" in key]


def test_every_observation_flagged_is_refused(hostile: dict) -> None:
    path = write(hostile["base"], hostile["root"] / "all-flagged.csv")
    out = hostile["root"] / "all-flagged.zarr"
    result = assimilate(hostile["prior"], path, hostile["time"], out, "--outlier-k", "1e-9")
    assert result.exit_code == 1, result.output
    message = flat(result.stderr)
    assert "every observation is beyond 1e-09 sigma" in message and "keep_outliers" in message
    assert not out.exists()
    prior = load_checkpoint(hostile["prior"])
    with pytest.raises(ObservationError, match="every observation"):
        screen_observations(hostile["base"], prior.grid, prior.normalization, k=1e-9)


@pytest.mark.parametrize("k", ["0", "-1", "nan", "inf"])
def test_bad_outlier_k_is_refused_before_the_store_is_touched(hostile: dict, k: str) -> None:
    path = write(hostile["base"], hostile["root"] / "bad-k.csv")
    out = hostile["root"] / f"bad-k-{k}.zarr"
    result = assimilate(hostile["prior"], path, hostile["time"], out, f"--outlier-k={k}")
    assert result.exit_code == 1, result.output
    assert "outlier_k must be a finite number > 0" in flat(result.stderr)
    assert not out.exists()
    before = snapshot(hostile["store"])
    again = assimilate(
        hostile["prior"], path, hostile["time"], hostile["store"], f"--outlier-k={k}"
    )
    assert again.exit_code == 1
    assert snapshot(hostile["store"]) == before


def test_outlier_settings_have_one_default() -> None:
    assert inspect.signature(genda.cli.assimilate).parameters["outlier_k"].default == (
        DEFAULT_OUTLIER_K
    )


@pytest.mark.parametrize("k", ["0", "-1", ".nan"])
def test_cycle_config_refuses_bad_outlier_k(tmp_path: Path, k: str) -> None:
    config = tmp_path / "cycle.yaml"
    base = "observations: obs/{time:%H}.csv\nstart: 2000-01-01T00:00\nend: 2000-01-01T01:00\nstore: s.zarr\n"
    config.write_text(base)
    loaded = load_cycle_config(config)
    assert loaded.outlier_k == DEFAULT_OUTLIER_K and loaded.keep_outliers is False
    config.write_text(base + f"outlier_k: {k}\nkeep_outliers: true\n")
    with pytest.raises(ConfigError, match="outlier_k"):
        load_cycle_config(config)


def test_a_cycle_passes_its_outlier_settings_to_the_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import genda.orchestration.assimilate as assimilate_module
    from genda.orchestration import flows

    config = tmp_path / "cycle.yaml"
    config.write_text(
        "observations: obs/{time:%H}.csv\nstart: 2000-01-01T00:00\nend: 2000-01-01T00:00\n"
        "store: s.zarr\noutlier_k: 3.5\nkeep_outliers: true\n"
    )
    seen: dict = {}

    class Seen(Exception):
        pass

    def record(*args, **kwargs):
        seen.update(kwargs)
        raise Seen

    monkeypatch.setattr(assimilate_module, "assimilate_window", record)
    with pytest.raises(Seen):
        flows.make_ensemble.fn(load_cycle_config(config), "2000-01-01T00:00:00")
    assert seen["outlier_k"] == 3.5 and seen["keep_outliers"] is True


# ---------------------------------------------------------------------------- impossible members
def spoil(how: Callable[[torch.Tensor], None], members: set[int]):
    """A ``sample_members`` that spoils the given members of each batch with ``how``."""
    original = work.sample_members

    def sample(prior, denoiser, block, *args, **kwargs):
        fields = original(prior, denoiser, block, *args, **kwargs)
        for b, m in enumerate(block):
            if int(m) in members:
                how(fields[b])
        return fields

    return sample


def set_temperature(value: float) -> Callable[[torch.Tensor], None]:
    def change(field: torch.Tensor) -> None:
        field[2, 0, 0, 0] = value  # T (grid order u, v, T), lowest level, one point

    return change


@pytest.mark.parametrize(
    ("how", "what"),
    [
        (set_temperature(-100.0), "T min -100 K <= 0"),
        (set_temperature(float("nan")), "T has 1 NaN or infinite values"),
        (lambda field: field[0].fill_(4e5), "u max 4e+05 m/s >= 1000"),
    ],
    ids=["T-100K", "T-NaN", "u-4e5"],
)
def test_impossible_members_are_never_flagged_complete(
    hostile: dict,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    how: Callable[[torch.Tensor], None],
    what: str,
) -> None:
    monkeypatch.setattr(work, "sample_members", spoil(how, {1}))
    path = write(hostile["base"], tmp_path / "spoiled.csv")
    out = tmp_path / "spoiled.zarr"
    # One member per batch: member 0 is fine and written, member 1 is refused.
    result = assimilate(hostile["prior"], path, hostile["time"], out, "--batch-size", "1")
    assert result.exit_code == 1, result.output
    message = flat(result.stderr)
    assert f"window {hostile['time']}: members [1] came out impossible" in message
    assert what in message and "outlier_k" in message
    complete = EnsembleStore.open(out).complete(hostile["time"])
    assert complete.tolist() == [True, False]


def test_an_impossible_batch_writes_none_of_its_members(
    hostile: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(work, "sample_members", spoil(set_temperature(-100.0), {0}))
    path = write(hostile["base"], hostile["root"] / "spoiled-batch.csv")
    out = hostile["root"] / "spoiled-batch.zarr"
    result = assimilate(hostile["prior"], path, hostile["time"], out)  # both in one batch
    assert result.exit_code == 1, result.output
    assert "members [0] came out impossible" in flat(result.stderr)
    assert not EnsembleStore.open(out).complete(hostile["time"]).any()
    # the prior alone: the message points at the checkpoint, not at observations
    prior_out = hostile["root"] / "spoiled-prior.zarr"
    alone = runner.invoke(
        app,
        [
            "assimilate",
            "--checkpoint",
            str(hostile["prior"]),
            "--time",
            hostile["time"],
            "--out",
            str(prior_out),
            "--members",
            "2",
            "--steps",
            "2",
            "--no-progress",
        ],
    )
    assert alone.exit_code == 1, alone.output
    assert "The prior itself produced them" in flat(alone.stderr)
    assert not EnsembleStore.open(prior_out).complete(hostile["time"]).any()
