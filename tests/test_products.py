"""A scientist's products of a window without a truth: coastlines, `genda plot`, `genda export`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from typer.testing import CliRunner

from genda.cli import app
from genda.errors import InvalidValueError, MissingInputError, OutputExistsError
from genda.evaluation.analysis_plots import level_title, place
from genda.evaluation.analysis_products import plot_analysis
from genda.evaluation.coastlines import _cut_at_seam, coastline_segments
from genda.grid import Grid
from genda.observations import write_observations
from genda.storage.ensemble_diagnostics import diagnostics_attrs, write_diagnostics
from genda.storage.ensemble_export import UnwritableOutputError, export_window, find_window
from genda.storage.ensemble_query import open_ensemble
from genda.storage.ensemble_store import EnsembleStore
from genda.storage.errors import EnsembleStoreError

runner = CliRunner()
GRID = Grid.gaussian(8, 16, 3)
T0 = np.datetime64("2024-03-01T06:00:00")
T1 = np.datetime64("2024-03-01T12:00:00")
N = 4
PROVENANCE = {
    "kind": "posterior",
    "method": "mmps",
    "settings": {"sampler": "exponential", "steps": 8, "method": "mmps"},
    "checkpoint_sha256": "ab" * 32,
    "checkpoint_strategy": "joint3d",
    "checkpoint_step": 40,
    "observations_sha256": "cd" * 32,
    "observations_count": 2,
    "seed": 3,
    "window_hours": 1.0,
    "genda_version": "0.1.0",
}
PNG = b"\x89PNG\r\n\x1a\n"


def said(result) -> str:
    """What a command printed, with the console's line breaks undone."""
    return " ".join(result.output.split())


def _fields(seed: int) -> np.ndarray:
    """``(N, V, L, H, W)`` physical-looking members: winds around 0 m/s, T around 200 K."""
    rng = np.random.default_rng(seed)
    out = rng.normal(0.0, 15.0, size=(N, *GRID.shape))
    out[:, GRID.variable_index("T")] += 200.0
    return out.astype(np.float32)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """Two finalised windows (T0 with observation diagnostics) and one incomplete (T1 + 1 h)."""
    path = tmp_path_factory.mktemp("products") / "ens.zarr"
    ensemble = EnsembleStore.create(path, GRID, N, {"title": "test"})
    for k, t in enumerate((T0, T1)):
        ensemble.add_window(t, PROVENANCE)
        ensemble.write_members(t, range(N), _fields(k))
        ensemble.finalize(t)
    ensemble.add_window(T1 + np.timedelta64(1, "h"), PROVENANCE)
    table = pd.DataFrame(
        {
            "time": [T0, T0],
            "lat": [GRID.latitude[2]] * 2,
            "lon": [GRID.longitude[3]] * 2,
            "alt_km": [GRID.altitude[1]] * 2,
            "variable": ["u", "T"],
            "value": [5.0, 210.0],
            "sigma": [2.0, 1.0],
            "station": ["Here", "Here"],
            "posterior_mean": [4.0, 205.0],
            "posterior_spread": [1.0, 2.0],
            "rejected": [False, True],
        }
    )
    write_diagnostics(path, T0, table, {"checkpoint": "my-prior/"})
    return path


# ---------------------------------------------------------------------- coastlines
def test_a_line_across_the_seam_is_cut_at_the_edges_at_the_interpolated_latitude() -> None:
    line = np.array([[-10.0, 0.0], [10.0, 10.0], [20.0, 10.0]])
    west, east = _cut_at_seam(line, 0.0)
    np.testing.assert_allclose(west, [[350.0, 0.0], [360.0, 5.0]])
    np.testing.assert_allclose(east, [[0.0, 5.0], [10.0, 10.0], [20.0, 10.0]])
    # westwards, and a map from -180: the same line needs no cut there
    np.testing.assert_allclose(_cut_at_seam(line[::-1], 0.0)[1], [[360.0, 5.0], [350.0, 0.0]])
    (whole,) = _cut_at_seam(line, -180.0)
    np.testing.assert_allclose(whole, line)


def test_coastlines_lie_in_0_360_and_put_known_capes_where_they_are() -> None:
    lines = coastline_segments(0.0)
    points = np.concatenate(lines)
    assert points[:, 0].min() >= 0.0 and points[:, 0].max() <= 360.0
    assert all(np.abs(np.diff(line[:, 0])).max() < 180.0 for line in lines)

    def near(lon: float, lat: float) -> float:
        east = np.abs(np.mod(points[:, 0] - lon + 180.0, 360.0) - 180.0)
        return float(np.min(np.hypot(east, points[:, 1] - lat)))

    # Cape Horn (67.3 W = 292.7 E), Cape Agulhas (20.0 E), Cape York (142.5 E): Natural
    # Earth 1:110m keeps them within about a degree
    assert near(292.7, -55.98) < 1.0
    assert near(20.0, -34.83) < 1.0
    assert near(142.5, -10.7) < 1.0
    # the open Pacific and the Sahara's interior have no coastline
    assert near(210.0, -30.0) > 10.0 and near(15.0, 22.0) > 5.0
    # a map from -180 holds the same points, shifted
    shifted = np.concatenate(coastline_segments(-180.0))
    assert shifted[:, 0].min() >= -180.0 and shifted[:, 0].max() <= 180.0
    assert abs(len(shifted) - len(points)) < 0.01 * len(points)


def test_titles_name_the_level_in_km_and_hpa_and_places_by_hemisphere() -> None:
    hpa = 1000.0 * np.exp(-90.0 / 7.0)  # z* = H ln(p0 / p), H = 7 km, p0 = 1000 hPa
    assert level_title(90.0) == f"90.0 km log-pressure altitude ({hpa:.3g} hPa)"
    assert "0.00261 hPa" in level_title(90.0)
    assert place(-7.94, 345.6) == "7.9S 345.6E" and place(69.3, -16.0) == "69.3N 344.0E"


# ---------------------------------------------------------------------- export
def test_export_round_trips_through_plain_xarray(store: Path, tmp_path: Path) -> None:
    out = export_window(store, "2024-03-01T06:00", tmp_path / "analysis.nc", members=True)
    ensemble = EnsembleStore.open(store)
    stored = open_ensemble(store).sel(time=T0)
    with xr.open_dataset(out) as ds:
        assert ds.attrs["Conventions"] == "CF-1.10"
        assert ds["time"].values[0] == T0
        np.testing.assert_array_equal(
            ds["time_bnds"].values[0], [T0 - np.timedelta64(30, "m"), T0 + np.timedelta64(30, "m")]
        )
        for name in GRID.variables:
            for stat in ("mean", "std"):
                np.testing.assert_array_equal(
                    ds[f"{name}_{stat}"].values[0], stored[f"{name}_{stat}"].values
                )
            np.testing.assert_array_equal(
                ds[name].values[0], ensemble.read_members(T0)[:, GRID.variable_index(name)]
            )
            assert ds[f"{name}_mean"].attrs["units"] == stored[name].attrs["units"]
        assert ds["u_mean"].attrs["cell_methods"] == "realization: mean"
        assert ds["member"].attrs["standard_name"] == "realization"
        np.testing.assert_array_equal(ds["altitude"].values, GRID.altitude)
        attrs = ds.attrs
    assert json.loads(attrs["genda_provenance"]) == ensemble.provenance(T0)
    assert attrs["genda_checkpoint_sha256"] == PROVENANCE["checkpoint_sha256"]
    assert attrs["genda_observations_sha256"] == PROVENANCE["observations_sha256"]
    assert attrs["genda_method"] == "mmps" and attrs["genda_sampler"] == "exponential"
    assert json.loads(attrs["genda_settings"]) == PROVENANCE["settings"]
    assert attrs["genda_checkpoint"] == "my-prior/"  # recorded by the window's diagnostics
    assert attrs["genda_version"] == "0.1.0" and attrs["genda_members"] == N
    assert attrs["valid_time"] == "2024-03-01T06:00:00"
    assert attrs["time_coverage_start"] == "2024-03-01T05:30:00"
    assert "date_created" in attrs and "genda" in attrs["history"]
    assert not list(tmp_path.glob("*.partial-*"))


def test_export_without_members_and_without_diagnostics(store: Path, tmp_path: Path) -> None:
    out = export_window(store, T1, tmp_path / "t1.nc")
    with xr.open_dataset(out) as ds:
        assert "member" not in ds.dims and "u" not in ds and "T_std" in ds
        np.testing.assert_allclose(
            ds["T_mean"].values[0], _fields(1)[:, GRID.variable_index("T")].mean(0), rtol=1e-6
        )
        assert "genda_checkpoint" not in ds.attrs
    assert diagnostics_attrs(store, T1) is None


def test_export_errors_name_the_problem(store: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidValueError, match=r"must end in \.nc"):
        export_window(store, T0, tmp_path / "analysis.csv")
    with pytest.raises(MissingInputError, match="no ensemble store"):
        export_window(tmp_path / "absent.zarr", T0, tmp_path / "a.nc")
    (tmp_path / "taken.nc").write_text("x")
    with pytest.raises(OutputExistsError, match="overwrite"):
        export_window(store, T0, tmp_path / "taken.nc")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UnwritableOutputError, match="is a file"):
        export_window(store, T0, tmp_path / "file" / "sub" / "a.nc")
    with pytest.raises(EnsembleStoreError, match="not finalised"):
        export_window(store, T1 + np.timedelta64(1, "h"), tmp_path / "a.nc")
    assert (tmp_path / "taken.nc").read_text() == "x"
    assert not (tmp_path / "a.nc").exists()


def test_an_unknown_time_names_the_nearest_windows(store: Path) -> None:
    ensemble = EnsembleStore.open(store)
    assert find_window(ensemble, "2024-03-01T06:00:00") == T0
    with pytest.raises(EnsembleStoreError) as info:
        find_window(ensemble, "2024-03-01T11:00")
    message = str(info.value)
    # nearest first: 12:00 (1 h later), 13:00 (2 h later), then 06:00 (5 h earlier)
    assert "3 windows" in message
    assert (
        message.index("2024-03-01T12:00:00 (1 h later)")
        < message.index("2024-03-01T13:00:00 (2 h later)")
        < message.index("2024-03-01T06:00:00 (5 h earlier)")
    )


# ---------------------------------------------------------------------- plot
def test_plot_draws_maps_profiles_and_the_fit_from_the_diagnostics(
    store: Path, tmp_path: Path
) -> None:
    out = tmp_path / "plots"
    result = runner.invoke(
        app,
        [
            "plot",
            str(store),
            "--time",
            "2024-03-01T06:00",
            "--level",
            str(GRID.altitude[1] + 1),
            "--out",
            str(out),
            "--at",
            "-30,200",
        ],
    )
    assert result.exit_code == 0, result.output
    level = f"{GRID.altitude[1]:.1f}".rstrip("0").rstrip(".")
    expected = {f"map_{v}_{level}km_20240301T060000.png" for v in GRID.variables} | {
        "profiles_20240301T060000.png",
        "obs_fit_20240301T060000.png",
    }
    assert {p.name for p in out.iterdir()} == expected
    for path in out.iterdir():
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 10_000
    assert "observation diagnostics" in result.stdout
    # a second run refuses to replace them, then does with --overwrite
    again = ["plot", str(store), "--time", "2024-03-01T06:00", "--level", "90", "--out", str(out)]
    refused = runner.invoke(app, again)
    assert refused.exit_code == 1 and "--overwrite" in said(refused)
    assert runner.invoke(app, [*again, "--overwrite"]).exit_code == 0


def test_plot_takes_stations_and_the_fit_from_an_observation_file(
    store: Path, tmp_path: Path
) -> None:
    i, j, level = 3, 5, 2
    table = pd.DataFrame(
        {
            "time": [T1] * 3 + [T0],  # the last row is of another window
            "lat": [GRID.latitude[i]] * 4,
            "lon": [GRID.longitude[j]] * 4,
            "alt_km": [GRID.altitude[level]] * 4,
            "variable": ["u", "v", "T", "T"],
            "value": [1.0, -2.0, 205.0, 200.0],
            "sigma": [3.0, 3.0, 2.0, 2.0],
            "station": ["Somewhere"] * 4,
        }
    )
    write_observations(table, tmp_path / "obs.csv")
    drawn = plot_analysis(store, T1, 95.0, tmp_path / "p", stations=tmp_path / "obs.csv")
    assert drawn.profiles is not None and drawn.fit is not None
    assert "rows within the window" in drawn.fit_source
    assert drawn.level_km == pytest.approx(GRID.altitude[GRID.nearest_level(95.0)])
    assert not drawn.notes


def test_plot_errors_name_the_problem(store: Path, tmp_path: Path) -> None:
    base = ["plot", str(store), "--time", "2024-03-01T06:00", "--out", str(tmp_path / "p")]
    off_grid = runner.invoke(app, [*base, "--level", "150"])
    assert off_grid.exit_code == 1 and "150 km" in said(off_grid)
    assert "levels span" in said(off_grid)
    absent = runner.invoke(app, ["plot", str(store), "--time", "2024-03-02T00:00", "--level", "90"])
    assert absent.exit_code == 1 and "nearest: 2024-03-01T13:00:00" in said(absent)
    (tmp_path / "file").write_text("x")
    blocked = runner.invoke(
        app,
        [
            "plot",
            str(store),
            "--time",
            "2024-03-01T06:00",
            "--level",
            "90",
            "--out",
            str(tmp_path / "file"),
        ],
    )
    assert blocked.exit_code == 1 and "is a file" in said(blocked)
    bad_point = runner.invoke(app, [*base, "--level", "90", "--at", "north"])
    assert bad_point.exit_code == 1 and "LAT,LON" in said(bad_point)
    with pytest.raises(InvalidValueError, match="latitude in"):
        plot_analysis(store, T0, 90.0, tmp_path / "q", at=[(95.0, 10.0)])
    missing = runner.invoke(
        app, ["plot", str(tmp_path / "none.zarr"), "--time", "2024-03-01", "--level", "90"]
    )
    assert missing.exit_code == 1 and "no ensemble store" in said(missing)
    assert not (tmp_path / "p").exists() and not (tmp_path / "q").exists()


def test_plot_without_observations_draws_the_maps_and_says_what_it_left_out(
    store: Path, tmp_path: Path
) -> None:
    drawn = plot_analysis(store, T1, float(GRID.altitude[0]), tmp_path / "maps")
    assert set(drawn.maps) == set(GRID.variables) and drawn.profiles is None and drawn.fit is None
    assert any("no profiles" in note for note in drawn.notes)
    assert any("no observation fit" in note for note in drawn.notes)
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == sorted(
        p.name for p in drawn.paths()
    )


def test_export_command_writes_the_file_and_refuses_a_wrong_suffix(
    store: Path, tmp_path: Path
) -> None:
    out = tmp_path / "a.nc"
    done = runner.invoke(app, ["export", str(store), "--time", "2024-03-01T12", "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert "2024-03-01T12:00:00" in said(done) and out.read_bytes()[:4] == b"\x89HDF"
    wrong = runner.invoke(
        app, ["export", str(store), "--time", "2024-03-01T12", "--out", str(tmp_path / "a.zarr")]
    )
    assert wrong.exit_code == 1 and "must end in .nc" in said(wrong)


def test_a_failure_at_the_stations_leaves_no_figure(
    store: Path, tmp_path: Path, monkeypatch
) -> None:
    """Every value is computed before the first PNG: nothing partial blocks a rerun."""
    import genda.evaluation.analysis_products as products

    def unreadable(*args, **kwargs):
        raise EnsembleStoreError("members with NaN data at a station")

    monkeypatch.setattr(products, "station_profiles", unreadable)
    out = tmp_path / "p"
    with pytest.raises(EnsembleStoreError, match="NaN"):
        plot_analysis(store, T1, 95.0, out, at=[(10.0, 20.0)])
    assert not out.exists() or not list(out.glob("*.png"))
