"""Observation tables: validation rules and their messages, canonical form, file round trips."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genda.grid import Grid
from genda.observations import (
    OBSERVATION_COLUMNS,
    OPTIONAL_COLUMNS,
    ObservationError,
    read_observations,
    validate_observations,
    write_observations,
)

GRID = Grid.gaussian(16, 32, 4)  # altitudes 80, 91.7, 103.3, 115 km


def table() -> pd.DataFrame:
    """Five valid rows in the loose form a user might give (strings, -180..180, aliases)."""
    return pd.DataFrame(
        {
            "time": ["2024-03-01T12:00:00"] * 4 + ["2024-03-01T13:00:00+01:00"],
            "lat": [69.3, -68.6, 40.0, 54.1, 0.0],
            "lon": [16.0, -170.0, -105.3, 11.8, 359.5],
            "alt_km": [90.0, 85.0, 95.0, 80.0, 115.0],
            "variable": ["u", "va", "Temperature", "los", "T"],
            "value": [10.0, -5.0, 190.0, 3.0, 250.0],
            "sigma": [5.0, 7.5, 2.0, 6.0, 3.0],
            "station": ["Andenes", "Davis", "Boulder", "Kuehlungsborn", None],
            "azimuth_deg": [np.nan, np.nan, np.nan, -90.0, np.nan],
            "elevation_deg": [np.nan, np.nan, np.nan, 70.0, np.nan],
            "fwhm_km": [np.nan, np.nan, np.nan, np.nan, 4.0],
        }
    )


def problem(df: pd.DataFrame, grid: Grid = GRID, **kwargs) -> str:
    with pytest.raises(ObservationError) as info:
        validate_observations(df, grid, source="obs.csv", **kwargs)
    message = str(info.value)
    assert message.startswith("obs.csv:"), message
    return message


# ---------------------------------------------------------------------------- canonical form
def test_canonical_form_and_input_untouched() -> None:
    raw = table()
    before = raw.copy(deep=True)
    out = validate_observations(raw, GRID)
    pd.testing.assert_frame_equal(raw, before)  # never mutates
    assert list(out.columns) == [*OBSERVATION_COLUMNS, *OPTIONAL_COLUMNS]
    assert list(out.index) == list(range(5))
    assert out["time"].dtype == np.dtype("datetime64[ns]")
    for column in ("lat", "lon", "alt_km", "value", "sigma", *OPTIONAL_COLUMNS[1:]):
        assert out[column].dtype == np.float64, column
    assert out["variable"].tolist() == ["u", "v", "T", "los", "T"]
    np.testing.assert_allclose(out["lon"], [16.0, 190.0, 254.7, 11.8, 359.5])
    # +01:00 is converted to naive UTC
    assert out["time"].iloc[4] == np.datetime64("2024-03-01T12:00:00")
    assert out["station"].tolist() == ["Andenes", "Davis", "Boulder", "Kuehlungsborn", ""]
    assert out["azimuth_deg"].iloc[3] == 270.0  # wrapped to [0, 360)
    assert np.isnan(out["azimuth_deg"].iloc[0])


def test_validation_is_idempotent_and_optional_columns_are_added() -> None:
    raw = table().drop(columns=["station", "fwhm_km"]).iloc[[0, 1, 2]]
    out = validate_observations(raw, GRID)
    assert out["station"].tolist() == ["", "", ""]
    assert out["fwhm_km"].isna().all()
    pd.testing.assert_frame_equal(validate_observations(out, GRID), out)


def test_extra_columns_are_kept_after_the_known_ones() -> None:
    raw = table().assign(quality=[1, 2, 3, 4, 5], network="radars")
    out = validate_observations(raw, GRID)
    assert list(out.columns[-2:]) == ["quality", "network"]
    assert out["quality"].tolist() == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("given", "expected"),
    [(-180.0, 180.0), (-0.0, 0.0), (-1e-20, 0.0), (0.0, 0.0), (359.999, 359.999), (180.0, 180.0)],
)
def test_longitude_wrapping(given: float, expected: float) -> None:
    out = validate_observations(table().assign(lon=[given, 1.0, 2.0, 3.0, 4.0]), GRID)
    assert out["lon"].iloc[0] == pytest.approx(expected, abs=1e-12)
    assert 0.0 <= out["lon"].iloc[0] < 360.0


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("ua", "u"),
        ("eastward_wind", "u"),
        ("U", "u"),
        ("VA", "v"),
        ("Northward_Wind", "v"),
        ("ta", "T"),
        ("t", "T"),
        ("air_temperature", "T"),
        (" temperature ", "T"),
        ("LOS", "los"),
    ],
)
def test_variable_aliases(alias: str, canonical: str) -> None:
    # 190: plausible for a wind (m/s) and a temperature (K) alike
    raw = table().iloc[[3]].assign(variable=alias, value=190.0)
    assert validate_observations(raw, GRID)["variable"].iloc[0] == canonical


# ---------------------------------------------------------------------------- units
@pytest.mark.parametrize("unit", ["m/s", "m s-1", "m s**-1", "M S-1", "", None])
def test_wind_units_accepted(unit: str | None) -> None:
    raw = table().iloc[[0]].assign(units=unit)
    out = validate_observations(raw, GRID)
    assert "units" not in out.columns
    assert out["value"].iloc[0] == 10.0


@pytest.mark.parametrize(
    ("unit", "value", "kelvin"),
    [
        ("K", 190.0, 190.0),
        ("degC", -80.0, 193.15),
        ("C", -80.0, 193.15),
        ("degree_Celsius", -80.0, 193.15),  # UDUNITS / CF spellings
        ("degrees_celsius", -80.0, 193.15),
        ("degree_C", -80.0, 193.15),
    ],
)
def test_temperature_units_converted(unit: str, value: float, kelvin: float) -> None:
    raw = table().iloc[[2]].assign(value=value, units=unit)
    out = validate_observations(raw, GRID)
    assert out["value"].iloc[0] == pytest.approx(kelvin)
    assert out["sigma"].iloc[0] == 2.0  # a difference: no offset


def test_other_units_rejected_naming_rows() -> None:
    raw = table().assign(units=["km/h", "m/s", "K", "K", "degF"])
    message = problem(raw)
    assert "units not accepted in rows 0, 3, 4: 'km/h' for u, 'K' for los, 'degF' for T" in message


def test_bounds_are_inclusive() -> None:
    raw = table().assign(value=[-400.0, 400.0, 80.0, -400.0, 1000.0])
    raw["sigma"] = [0.1, 400.0, 1000.0, 0.1, 0.1]
    assert len(validate_observations(raw, GRID)) == 5


def test_celsius_without_units_is_refused_with_a_units_hint() -> None:
    # every T row is named when their median is below 100 K (here 45 K)...
    raw = table().assign(value=[10.0, -5.0, 25.0, 3.0, 65.0])
    message = problem(raw)
    assert "T values look like degrees Celsius, not kelvin, in rows 2, 4 (median 45" in message
    assert "'units' column ('degC' is converted to K)" in message
    assert "1 problem(s)" in message  # not again as outside [80, 1000] K
    # ... otherwise those at or below 0 K
    raw = table().assign(variable=["T", "T", "T", "los", "T"], value=[200, 210, 190, 3, 0.0])
    assert "degrees Celsius, not kelvin, in row 4 (median 0, 1 at or below 0 K)" in problem(raw)


def test_celsius_with_units_is_converted_and_range_checked() -> None:
    raw = table().assign(value=[10.0, -5.0, -80.0, 3.0, -250.0], units=["", "", "degC", "", "C"])
    message = problem(raw)  # -250 degC is 23 K
    assert "T value outside the plausible range [80, 1000] K in row 4" in message
    assert "Celsius" not in message
    out = validate_observations(raw.assign(value=[10.0, -5.0, -80.0, 3.0, -50.0]), GRID)
    assert out["value"].tolist()[2:] == [pytest.approx(193.15), 3.0, pytest.approx(223.15)]


def test_a_row_in_a_refused_unit_is_not_reported_twice() -> None:
    message = problem(table().assign(units=["", "", "degF", "", ""], value=[10, -5, 5000, 3, 250]))
    assert "units not accepted in row 2" in message and "1 problem(s)" in message


def test_placeholder_values_may_skip_the_range_checks_but_not_sigma() -> None:
    raw = table().assign(value=0.0)
    assert (validate_observations(raw, GRID, check_values=False)["value"] == 0.0).all()
    raw.loc[1, "sigma"] = 1e-30
    with pytest.raises(ObservationError, match=r"v sigma below 0\.1 m/s in row 1"):
        validate_observations(raw, GRID, check_values=False)


# ---------------------------------------------------------------------------- errors
def _set(column: str, row: int, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(df: pd.DataFrame) -> pd.DataFrame:
        df = df.astype({column: object}) if not isinstance(value, float) else df
        df.loc[row, column] = value
        return df

    return change


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_set("value", 2, np.nan), "value is missing, NaN or infinite in row 2"),
        (_set("lat", 1, np.inf), "lat is missing, NaN or infinite in row 1"),
        (_set("alt_km", 0, -np.inf), "alt_km is missing, NaN or infinite in row 0"),
        (_set("value", 1, "abc"), "value is not a number in row 1"),
        (_set("sigma", 1, 0.0), "sigma <= 0 in row 1"),
        (_set("sigma", 4, -1.0), "sigma <= 0 in row 4"),
        (_set("lat", 0, 90.5), "|lat| > 90 in row 0"),
        (_set("lon", 2, -180.5), "lon outside [-180, 360) in row 2"),
        (_set("lon", 2, 360.0), "lon outside [-180, 360) in row 2"),
        (_set("alt_km", 3, 79.9), "alt_km outside the grid's altitudes [80, 115] km in row 3"),
        (_set("alt_km", 3, 115.1), "alt_km outside the grid's altitudes [80, 115] km in row 3"),
        (_set("variable", 1, "w"), "unknown variable(s) ['w'] in row 1"),
        (_set("variable", 1, None), "unknown variable(s) ['None'] in row 1"),
        (_set("azimuth_deg", 3, np.nan), "los azimuth_deg missing, NaN or infinite in row 3"),
        (_set("elevation_deg", 3, np.nan), "los elevation_deg missing, NaN or infinite in row 3"),
        (_set("elevation_deg", 3, 0.0), "los elevation_deg outside (0, 85] in row 3"),
        (_set("elevation_deg", 3, 88.0), "los elevation_deg outside (0, 85] in row 3"),
        (_set("fwhm_km", 4, 0.0), "fwhm_km <= 0 in row 4"),
        (_set("fwhm_km", 4, np.inf), "fwhm_km is infinite in row 4"),
        (_set("time", 2, "yesterday"), "time missing or not a date-time in row 2"),
        (_set("time", 2, None), "time missing or not a date-time in row 2"),
        (_set("value", 0, 400.5), "u value outside the plausible range [-400, 400] m/s in row 0"),
        (_set("value", 1, -1e6), "v value outside the plausible range [-400, 400] m/s in row 1"),
        (_set("value", 3, 450.0), "los value outside the plausible range [-400, 400] m/s in row 3"),
        (_set("value", 2, 1000.5), "T value outside the plausible range [80, 1000] K in row 2"),
        (_set("value", 4, 79.0), "T value outside the plausible range [80, 1000] K in row 4"),
        (_set("sigma", 0, 0.09), "u sigma below 0.1 m/s in row 0"),
        (_set("sigma", 4, 1e-30), "T sigma below 0.1 K in row 4"),
        (_set("sigma", 1, 401.0), "v sigma above 400 m/s in row 1"),
        (_set("sigma", 2, 1e20), "T sigma above 1000 K in row 2"),
    ],
)
def test_each_rule_names_its_rows(
    change: Callable[[pd.DataFrame], pd.DataFrame], expected: str
) -> None:
    message = problem(change(table()))
    assert expected in message
    assert "1 problem(s) in 5 observation(s)" in message


def test_missing_required_column() -> None:
    message = problem(table().drop(columns=["sigma", "alt_km"]))
    assert "missing required column(s) ['alt_km', 'sigma']" in message


def test_empty_table() -> None:
    assert "holds no observations" in problem(table().iloc[:0])


def test_los_without_beam_columns() -> None:
    message = problem(table().drop(columns=["azimuth_deg"]))
    assert "los observation without a 'azimuth_deg' column in row 3" in message


def test_variables_the_grid_lacks() -> None:
    winds = Grid.gaussian(16, 32, 4, variables=("u",))
    message = problem(table(), grid=winds)
    assert "variable 'v' needs v, which the grid does not carry" in message
    assert "variable 'T' needs T" in message and "rows 2, 4" in message
    assert "variable 'los' needs v" in message and "row 3" in message


def test_duplicates_after_wrapping_and_aliases() -> None:
    raw = pd.concat([table(), table().iloc[[1]]], ignore_index=True)
    raw.loc[5, "lon"] = 190.0  # -170 degrees east again
    raw.loc[5, "variable"] = "northward_wind"
    message = problem(raw)
    assert "duplicated observations" in message and "row 5 repeats row 1" in message


def test_same_place_other_azimuth_or_station_is_not_a_duplicate() -> None:
    raw = pd.concat([table(), table().iloc[[3, 0]]], ignore_index=True)
    raw.loc[5, "azimuth_deg"] = 0.0
    raw.loc[6, "station"] = "Tromso"
    assert len(validate_observations(raw, GRID)) == 7


def test_time_window_is_inclusive() -> None:
    raw = table()
    window = (np.datetime64("2024-03-01T12:00"), np.datetime64("2024-03-01T12:00"))
    assert len(validate_observations(raw, GRID, window=window)) == 5
    message = problem(
        raw, window=(np.datetime64("2024-03-01T11:00"), np.datetime64("2024-03-01T11:59"))
    )
    assert "time outside the window" in message and "rows 0, 1, 2, 3, 4" in message


def test_long_row_lists_are_cut_with_a_count() -> None:
    raw = pd.concat([table()] * 3, ignore_index=True)
    raw["station"] = [f"s{i}" for i in range(15)]  # no duplicates
    raw["sigma"] = -1.0
    assert "sigma <= 0 in 15 rows, first 0, 1, 2, 3, 4" in problem(raw)


def test_all_problems_are_reported_together() -> None:
    raw = table()
    raw.loc[0, "sigma"] = 0.0
    raw.loc[2, "lat"] = -95.0
    with pytest.raises(ObservationError) as info:
        validate_observations(raw, GRID)
    assert len(info.value.problems) == 2
    assert "2 problem(s)" in str(info.value)


def test_numeric_times_are_refused() -> None:
    assert "expected datetimes or ISO 8601 strings" in problem(table().assign(time=1.7e9))


# ---------------------------------------------------------------------------- files
def canonical() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    out = validate_observations(table(), GRID)
    # digits that a lossy format would lose (positive: temperatures are kelvin)
    out["value"] = 300.0 + rng.normal(size=len(out)) * 1e2
    out["time"] = out["time"] + np.array([1, 0, 123456789, 0, 7], dtype="timedelta64[ns]")
    out["network"] = ["radars", "radars", "lidars", "radars", "mls"]
    return validate_observations(out, GRID)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".nc"])
def test_round_trip_is_exact(tmp_path: Path, suffix: str) -> None:
    obs = canonical()
    path = write_observations(obs, tmp_path / f"sub/obs{suffix}")
    assert path == tmp_path / f"sub/obs{suffix}"
    back = read_observations(path)
    pd.testing.assert_frame_equal(back, obs, check_exact=True)
    pd.testing.assert_frame_equal(validate_observations(back, GRID), obs, check_exact=True)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary left


def test_write_replaces_and_leaves_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "obs.parquet"
    write_observations(canonical(), path)
    write_observations(canonical().iloc[:2], path)
    assert len(read_observations(path)) == 2
    bad = canonical().assign(value=object())  # pyarrow cannot store it
    with pytest.raises(Exception):  # noqa: B017 - whatever the writer raises
        write_observations(bad, path)
    assert len(read_observations(path)) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["obs.parquet"]


def test_write_refuses_unvalidated_times_and_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(ObservationError, match=r"obs\.csv: column 'time' has dtype"):
        write_observations(table(), tmp_path / "obs.csv")
    with pytest.raises(ObservationError, match=r"obs\.xlsx: unknown observation file type"):
        write_observations(canonical(), tmp_path / "obs.xlsx")
    with pytest.raises(ObservationError, match=r"without column\(s\) \['sigma'\]"):
        write_observations(canonical().drop(columns="sigma"), tmp_path / "obs.csv")


def test_read_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.csv"):
        read_observations(tmp_path / "missing.csv")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet at all")
    with pytest.raises(ObservationError, match=r"junk\.parquet: cannot read observations"):
        read_observations(junk)
    grid_file = tmp_path / "field.nc"
    GRID.to_dataset(np.zeros(GRID.shape)).to_netcdf(grid_file)
    with pytest.raises(ObservationError, match=r"field\.nc: no 'obs' dimension"):
        read_observations(grid_file)


def test_hand_written_csv(tmp_path: Path) -> None:
    path = tmp_path / "obs.csv"
    path.write_text(
        "time,lat,lon,alt_km,variable,value,sigma,units,station\n"
        "2024-03-01T12:00Z,69.3,16.0,90,ua,12.5,5,m/s,Andenes\n"
        "2024-03-01 12:00,-67.6,-68.1,85,ta,-75,2,degC,\n"
    )
    out = validate_observations(read_observations(path), GRID, source=str(path))
    assert out["variable"].tolist() == ["u", "T"]
    assert out["value"].tolist() == [12.5, pytest.approx(198.15)]
    assert out["lon"].tolist() == [16.0, pytest.approx(291.9)]
    assert out["station"].tolist() == ["Andenes", ""]


def test_implausible_rows_are_those_validation_finds_out_of_range() -> None:
    """``implausible_rows`` applies the units and the bounds of validation, row by row."""
    from genda.observations.table import implausible_rows

    raw = table().assign(
        value=[401.0, -5.0, -250.0, 3.0, 250.0],  # 401 m/s; -250 degC = 23 K
        sigma=[5.0, 0.05, 2.0, 6.0, 1001.0],  # 0.05 m/s below the floor; 1001 K above the ceiling
        units=["m/s", "", "degree_Celsius", "", "K"],
    )
    assert implausible_rows(raw).tolist() == [True, True, True, False, True]
    for row in (0, 1, 2, 4):
        problem(raw.iloc[[row]])  # each marked row alone is refused by validation
    validate_observations(raw.iloc[[3]], GRID)
    # unitless temperatures that look like Celsius are left to validation's hint, not dropped
    celsius = table().assign(value=[10.0, -5.0, -60.0, 3.0, -50.0])
    assert not implausible_rows(celsius).any()
    # unknown units and variables are left to validation too
    assert not implausible_rows(table().assign(units="km/h", value=1e6)).any()
