"""Readers of instrument files: small files in each documented layout, read back to the number."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from genda.constants import pressure_to_altitude_km
from genda.errors import InvalidValueError, MissingInputError, UnknownNameError
from genda.grid import Grid
from genda.observations import validate_observations
from genda.observations.readers import (
    READERS,
    SKIP_REASONS,
    SOURCE_COLUMN,
    InstrumentFileError,
    ReadSummary,
    read_instrument_files,
)
from genda.observations.readers.mls import (
    MLS_T_CONVERGENCE_MAX,
    mls_quality_threshold,
    mls_temperature_fwhm_km,
    tai93_to_utc,
)

T0 = np.datetime64("2024-03-01T12:30:00", "ns")


def _strings(pairs: dict[str, str]) -> np.ndarray:
    text = h5py.string_dtype()
    records = np.zeros(len(pairs), dtype=[("name", text), ("value", text)])
    records["name"] = list(pairs)
    records["value"] = list(pairs.values())
    return records


# ---------------------------------------------------------------------------- Madrigal
def write_madrigal(
    path: Path, *, parameters: dict[str, str] | None = None, drop: tuple = ()
) -> Path:
    """Two hourly records x 3 heights of a meteor radar, in the Madrigal 3 HDF5 layout.

    Record 1 (12:30 UT): vn1 = 10, 20, 30 m/s (dvn1 2, 3, 4), vn2 = -5, NaN, 7 (dvn2 1.5, 1.5, -2).
    Record 2 (13:30 UT): vn1 = 11, 21, 31 (dvn1 -1, 3, 4), vn2 = -4, 0, 8 (dvn2 0, 2, 2).
    """
    fields = [
        "year", "month", "day", "hour", "min", "sec", "recno", "kindat", "kinst",
        "ut1_unix", "ut2_unix", "gdalt", "vn1", "dvn1", "vn2", "dvn2",
    ]  # fmt: skip
    fields = [f for f in fields if f not in drop]
    rows = np.zeros(6, dtype=[(f, "f8") for f in fields])
    hours = np.repeat([12.0, 13.0], 3)
    columns = {
        "year": 2024, "month": 3, "day": 1, "hour": hours, "min": 30.0, "sec": 0.0,
        "recno": np.repeat([0, 1], 3), "kindat": 17001, "kinst": 1790,
        "ut1_unix": 0.0, "ut2_unix": 0.0, "gdalt": np.tile([82.0, 90.0, 98.0], 2),
        "vn1": [10, 20, 30, 11, 21, 31], "dvn1": [2, 3, 4, -1, 3, 4],
        "vn2": [-5, np.nan, 7, -4, 0, 8], "dvn2": [1.5, 1.5, -2, 0, 2, 2],
    }  # fmt: skip
    for name in fields:
        rows[name] = columns[name]
    if parameters is None:
        parameters = {
            "instrument": "Andes Meteor Radar",
            "instrument latitude": "-30.3",
            "instrument longitude": "-70.0",
        }
    with h5py.File(path, "w") as f:
        f.create_dataset("Data/Table Layout", data=rows)
        f.create_dataset("Metadata/Experiment Parameters", data=_strings(parameters))
    return path


def test_madrigal_winds_values_times_errors_and_skips(tmp_path) -> None:
    path = write_madrigal(tmp_path / "amr.hdf5")
    table, summary = read_instrument_files("radar-madrigal", [path])
    entry = summary.files[0]
    assert entry.rows_read == 12
    # vn2 NaN -> fill; dvn2 = -2 (known bad) and dvn1 = -1 (assumed) -> flagged; dvn2 = 0 -> precision
    assert entry.skipped == {"fill value": 1, "flagged": 2, "precision": 1}
    assert entry.rows_kept == 8 == len(table)
    assert "alt_km" not in table.columns
    u = table[table["variable"] == "u"].reset_index(drop=True)
    assert u["value"].tolist() == [10, 20, 30, 21, 31]
    assert u["sigma"].tolist() == [2, 3, 4, 3, 4]
    assert u["height_km"].tolist() == [82, 90, 98, 90, 98]
    assert (
        u["time"].tolist() == [pd.Timestamp(T0)] * 3 + [pd.Timestamp(T0) + pd.Timedelta("1h")] * 2
    )
    v = table[table["variable"] == "v"]
    assert v["value"].tolist() == [-5, 0, 8]
    assert set(table["station"]) == {"Andes Meteor Radar"}
    assert np.allclose(table["lat"], -30.3) and np.allclose(table["lon"], -70.0)
    assert set(table[SOURCE_COLUMN]) == {str(path)}
    assert set(table["units"]) == {"m/s"} and set(table["network"]) == {"radars"}


def test_madrigal_per_row_positions_win_over_the_metadata(tmp_path) -> None:
    path = tmp_path / "amr.hdf5"
    write_madrigal(path)
    with h5py.File(path, "a") as f:
        rows = f["Data/Table Layout"][()]
        extended = np.zeros(rows.shape, dtype=[*rows.dtype.descr, ("gdlat", "f8"), ("glon", "f8")])
        for name in rows.dtype.names:
            extended[name] = rows[name]
        extended["gdlat"], extended["glon"] = -31.0, 290.5
        del f["Data/Table Layout"]
        f.create_dataset("Data/Table Layout", data=extended)
    table, _ = read_instrument_files("radar-madrigal", [path])
    assert np.allclose(table["lat"], -31.0) and np.allclose(table["lon"], 290.5)


@pytest.mark.parametrize(
    ("drop", "parameters", "message"),
    [
        (("gdalt",), None, "no field(s) ['gdalt']"),
        (("dvn1",), None, "has wind vn1 but not its error dvn1"),
        (("vn1", "dvn1", "vn2", "dvn2"), None, "no eastward or northward wind"),
        ((), {"instrument": "X"}, "no position"),
        ((), {"instrument latitude": "1", "instrument longitude": "2"}, "names no instrument"),
    ],
)
def test_madrigal_missing_fields_are_named(tmp_path, drop, parameters, message) -> None:
    path = write_madrigal(tmp_path / "bad.hdf5", parameters=parameters, drop=drop)
    with pytest.raises(InstrumentFileError) as info:
        read_instrument_files("radar-madrigal", [path])
    assert str(path) in str(info.value) and message in str(info.value)
    assert info.value.summary.refused[0].path == str(path)


# ---------------------------------------------------------------------------- CF winds
def write_cf_winds(
    path: Path,
    *,
    height: tuple[np.ndarray, dict] | None = None,
    attrs: dict | None = None,
    time_units: str = "seconds since 2024-03-01 00:00:00",
    transpose: bool = False,
    uncertainty: bool = True,
) -> Path:
    """3 hours x 4 heights of u and v with standard errors, a flag, one fill value."""
    z, z_attrs = height or (
        np.array([80e3, 85e3, 90e3, 95e3]),
        {"units": "m", "standard_name": "altitude"},
    )
    seconds = 45000.0 + 3600.0 * np.arange(3)  # 12:30, 13:30, 14:30
    u = 10.0 * np.arange(12.0).reshape(3, 4)
    u[1, 2] = np.nan
    v = -u.copy()
    v[1, 2] = 3.0
    flag = np.zeros((3, 4), dtype=np.int8)
    flag[2, 0] = 1
    dims = ("time", "z")
    ds = xr.Dataset(
        {
            "zonal": (dims, u, {"standard_name": "eastward_wind", "units": "m s-1",
                                "ancillary_variables": "zonal_error zonal_flag"}),
            "zonal_error": (dims, np.full((3, 4), 2.5),
                            {"standard_name": "eastward_wind standard_error", "units": "m s-1"}),
            "zonal_flag": (dims, flag, {"standard_name": "status_flag", "flag_values": np.array([0, 1], "i1"),
                                        "flag_meanings": "good bad"}),
            "meridional": (dims, v, {"standard_name": "northward_wind", "units": "m/s",
                                     "ancillary_variables": "meridional_error"}),
            "meridional_error": (dims, np.full((3, 4), 4.0),
                                 {"standard_name": "northward_wind standard_error", "units": "m/s"}),
        },
        coords={"time": ("time", seconds, {"units": time_units}), "z": ("z", z, z_attrs)},
        attrs={"station_name": "Collm", "latitude": 51.31, "longitude": 13.0, **(attrs or {})},
    )  # fmt: skip
    if not uncertainty:
        ds = ds.drop_vars(["zonal_error", "meridional_error"])
    if transpose:
        ds = ds.transpose("z", "time")
    ds.to_netcdf(path)
    return path


def test_cf_winds_values_heights_times_and_flags(tmp_path) -> None:
    path = write_cf_winds(tmp_path / "collm.nc", transpose=True)
    table, summary = read_instrument_files("radar-netcdf", [path])
    entry = summary.files[0]
    assert entry.rows_read == 24
    assert entry.skipped == {"fill value": 1, "flagged": 1}  # u NaN at (13:30, 90 km); u flagged
    u = table[table["variable"] == "u"]
    first = u[u["time"] == pd.Timestamp(T0)]
    assert first["value"].tolist() == [0, 10, 20, 30]
    assert first["height_km"].tolist() == [80, 85, 90, 95]
    assert np.all(u["sigma"] == 2.5) and np.all(table.loc[table["variable"] == "v", "sigma"] == 4.0)
    assert len(u) == 10 and len(table) == 22
    v = table[(table["variable"] == "v") & (table["time"] == pd.Timestamp(T0) + pd.Timedelta("1h"))]
    assert v["value"].tolist() == [-40, -50, 3, -70]
    assert set(table["station"]) == {"Collm"} and set(table["lat"]) == {51.31}


def test_cf_winds_km_heights_above_the_surface_and_utc_offsets(tmp_path) -> None:
    path = write_cf_winds(
        tmp_path / "w.nc",
        height=(np.array([78.0, 83.0, 88.0, 93.0]), {"units": "km", "standard_name": "height"}),
        attrs={"station_altitude": 2000.0},
        time_units="seconds since 2024-03-01T02:00:00+02:00",
    )
    table, _ = read_instrument_files("radar-netcdf", [path])
    assert sorted(set(table["height_km"])) == [80.0, 85.0, 90.0, 95.0]
    assert table["time"].min() == pd.Timestamp(T0)  # 02:00+02:00 is 00:00 UTC


def test_cf_station_from_scalar_variables(tmp_path) -> None:
    path = tmp_path / "s.nc"
    write_cf_winds(path, attrs={})
    with xr.open_dataset(path) as ds:
        ds = ds.load()
    ds.attrs = {}
    ds["lat"] = ((), 54.63, {"standard_name": "latitude", "units": "degrees_north"})
    ds["lon"] = ((), 13.37, {"standard_name": "longitude", "units": "degrees_east"})
    ds["station"] = ((), "Juliusruh", {"cf_role": "timeseries_id"})
    ds.to_netcdf(tmp_path / "scalar.nc")
    table, _ = read_instrument_files("radar-netcdf", [tmp_path / "scalar.nc"])
    assert set(table["station"]) == {"Juliusruh"}
    assert set(table["lat"]) == {54.63} and set(table["lon"]) == {13.37}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"uncertainty": False}, "no uncertainty for 'zonal'"),
        ({"attrs": {"station_name": ""}}, "no station name"),
        (
            {"height": (np.arange(4.0), {"units": "m", "standard_name": "height"})},
            "no surface altitude",
        ),
        ({"height": (np.arange(4.0), {"units": "hPa"})}, "expected m or km"),
    ],
)
def test_cf_missing_metadata_is_named(tmp_path, kwargs, message) -> None:
    path = write_cf_winds(tmp_path / "bad.nc", **kwargs)
    with pytest.raises(InstrumentFileError, match=r"bad\.nc") as info:
        read_instrument_files("radar-netcdf", [path])
    assert message in str(info.value)


def test_cf_station_position_missing_is_named(tmp_path) -> None:
    path = tmp_path / "nopos.nc"
    write_cf_winds(path)
    with xr.open_dataset(path) as ds:
        ds = ds.load()
    del ds.attrs["latitude"]
    ds.to_netcdf(tmp_path / "nolat.nc")
    with pytest.raises(InstrumentFileError, match="no station latitude"):
        read_instrument_files("radar-netcdf", [tmp_path / "nolat.nc"])


# ---------------------------------------------------------------------------- CF lidar
def write_lidar(path: Path) -> Path:
    """2 profiles x 3 altitudes of temperature (K); profile 2 flagged by a per-time quality flag."""
    seconds = np.array([0.0, 3600.0])
    t = np.array([[200.0, 190.0, np.nan], [201.0, 191.0, 181.0]])
    ds = xr.Dataset(
        {
            "temperature": (("time", "altitude"), t, {"standard_name": "air_temperature", "units": "K",
                                                      "ancillary_variables": "t_err qc"}),
            "t_err": (("time", "altitude"), np.array([[1.0, 2.0, 3.0], [1.0, 2.0, -1.0]]),
                      {"standard_name": "air_temperature standard_error", "units": "K"}),
            "qc": ("time", np.array([0, 2], dtype="i1"),
                   {"standard_name": "quality_flag", "flag_values": np.array([0, 1, 2], "i1"),
                    "flag_meanings": "good_data suspect bad"}),
        },
        coords={"time": ("time", seconds, {"units": "seconds since 2024-03-01"}),
                "altitude": ("altitude", [85.0, 90.0, 95.0], {"units": "km", "standard_name": "altitude"})},
        attrs={"site": "ALOMAR", "station_latitude": 69.28, "station_longitude": 16.01},
    )  # fmt: skip
    ds.to_netcdf(path)
    return path


def test_lidar_temperatures_with_profile_flags(tmp_path) -> None:
    path = write_lidar(tmp_path / "alomar.nc")
    table, summary = read_instrument_files("lidar-netcdf", [path])
    assert summary.files[0].skipped == {"fill value": 1, "flagged": 3}
    assert table["value"].tolist() == [200.0, 190.0]
    assert table["sigma"].tolist() == [1.0, 2.0]
    assert table["height_km"].tolist() == [85.0, 90.0]
    assert set(table["variable"]) == {"T"} and set(table["station"]) == {"ALOMAR"}
    assert set(table["network"]) == {"lidars"} and table["fwhm_km"].isna().all()


# ---------------------------------------------------------------------------- SABER
def write_saber(path: Path, *, time_1d: bool = False, drop: tuple = ()) -> Path:
    """3 events x 4 samples; fill -999 in event 1, sample 2; event 2 is all fill."""
    ktemp = np.array([[180.0, 190.0, 200.0, 210.0], [181.0, 191.0, -999.0, 211.0], [-999.0] * 4])
    pressure = np.array([[0.01, 0.003, 0.001, 0.0003]] * 3)
    ms = 45_000_000.0 + 1000.0 * np.arange(4)[None, :] + 60_000.0 * np.arange(3)[:, None]
    ds = xr.Dataset(
        {
            "event": ("event", np.arange(3, dtype="i2")),
            "date": ("event", np.array([2024061, 2024061, 2024061], dtype="i4")),
            "time": (("event",), ms[:, 0]) if time_1d else (("event", "altitude"), ms),
            "ktemp": (("event", "altitude"), ktemp, {"units": "K"}),
            "pressure": (("event", "altitude"), pressure, {"units": "mb"}),
            "tpaltitude": (("event", "altitude"), np.array([[80.0, 88.0, 96.0, 104.0]] * 3)),
            "tplatitude": (("event", "altitude"), np.full((3, 4), 40.0)),
            "tplongitude": (("event", "altitude"), np.full((3, 4), 350.0)),
        }
    )
    ds.drop_vars(list(drop)).to_netcdf(path)
    return path


def test_saber_uses_pressure_and_the_documented_layout(tmp_path) -> None:
    path = write_saber(tmp_path / "SABER_L2A_2024061.nc")
    table, summary = read_instrument_files("saber", [path])
    assert summary.files[0].rows_read == 12
    assert summary.files[0].skipped == {"fill value": 5}
    assert len(table) == 7 and "height_km" not in table.columns
    first = table.iloc[:4]
    assert np.allclose(
        first["alt_km"], 7.0 * np.log(1000.0 / np.array([0.01, 0.003, 0.001, 0.0003]))
    )
    assert np.allclose(first["alt_km"], pressure_to_altitude_km(np.array([1.0, 0.3, 0.1, 0.03])))
    # 2024 day 061 is March 1; 45 000 000 ms is 12:30:00; one second per sample, a minute per event
    expected = [T0 + np.timedelta64(k, "s") for k in range(4)]
    assert first["time"].tolist() == [pd.Timestamp(t) for t in expected]
    assert table.iloc[4]["time"] == pd.Timestamp(T0 + np.timedelta64(60, "s"))
    assert first["value"].tolist() == [180.0, 190.0, 200.0, 210.0]
    assert np.all(table["sigma"] == 3.0) and np.all(table["fwhm_km"] == 2.0)
    assert set(table["station"]) == {"SABER"} and np.all(table["lon"] == 350.0)


def test_saber_time_per_event(tmp_path) -> None:
    table, _ = read_instrument_files("saber", [write_saber(tmp_path / "s.nc", time_1d=True)])
    assert table.iloc[:4]["time"].nunique() == 1


def test_saber_missing_variable_is_named(tmp_path) -> None:
    path = write_saber(tmp_path / "s.nc", drop=("pressure",))
    with pytest.raises(InstrumentFileError, match=r"s\.nc: no variable\(s\) \['pressure'\]"):
        read_instrument_files("saber", [path])


# ---------------------------------------------------------------------------- MLS
LEVELS_HPA = np.array([316.2278, 261.0157, 100.0, 82.54, 10.0, 1.0, 0.1, 0.001, 0.0001])
# Seconds of TAI93 at 2017-01-01T00:00:00 UTC: 8766 days and the 10 leap seconds since 1993.
TAI93_2017 = 8766 * 86400.0 + 10


def write_mls(path: Path, *, drop: str = "") -> Path:
    """5 profiles x 9 levels of the L2GP Temperature swath, each profile failing one check.

    0: good; 1: Status 1 (odd); 2: Quality 0.5 (fails at 100 hPa and above);
    3: Convergence 1.05; 4: Status 16 (cloud: informational), one negative
    precision, one missing value.
    """
    n = 5
    temperature = 200.0 + np.arange(n)[:, None] + 0.1 * np.arange(LEVELS_HPA.size)[None, :]
    precision = np.full((n, LEVELS_HPA.size), 1.5)
    precision[4, 5] = -1.5
    temperature[4, 6] = -999.99
    data = {
        "Temperature": temperature.astype("f4"),
        "L2gpPrecision": precision.astype("f4"),
        "Status": np.array([0, 1, 0, 0, 16], dtype="i4"),
        "Quality": np.array([1.2, 1.2, 0.5, 1.2, 1.2], dtype="f4"),
        "Convergence": np.array([1.0, 1.0, 1.0, 1.05, 1.0], dtype="f4"),
    }
    geo = {
        "Latitude": np.linspace(-60.0, 60.0, n).astype("f4"),
        "Longitude": np.array([-170.0, -90.0, 0.0, 90.0, 170.0], dtype="f4"),
        "Time": TAI93_2017 + 24.7 * np.arange(n),
        "Pressure": LEVELS_HPA.astype("f4"),
    }
    with h5py.File(path, "w") as f:
        for group, fields in (("Data Fields", data), ("Geolocation Fields", geo)):
            for name, values in fields.items():
                if name == drop:
                    continue
                dataset = f.create_dataset(f"HDFEOS/SWATHS/Temperature/{group}/{name}", data=values)
                dataset.attrs["MissingValue"] = np.array([-999.99], dtype=values.dtype)
    return path


def test_mls_screening_follows_the_quality_document(tmp_path) -> None:
    path = write_mls(tmp_path / "MLS-Aura_L2GP-Temperature_v05-01_2017d001.he5")
    table, summary = read_instrument_files("mls", [path])
    entry = summary.files[0]
    assert entry.rows_read == 45
    # out of range: 316 and 0.0001 hPa in every profile (10); status: profile 1 in range (7);
    # quality: profile 2 at 261 and 100 hPa (2); convergence: profile 3 (7); profile 4: one
    # fill, one negative precision.
    assert entry.skipped == {
        "fill value": 1,
        "pressure range": 10,
        "status": 7,
        "quality": 2,
        "convergence": 7,
        "precision": 1,
    }
    assert entry.rows_kept == 17 == len(table)
    assert entry.rows_read == entry.rows_kept + sum(entry.skipped.values())
    good = table[table["station"] == "MLS"].iloc[:7]
    assert np.allclose(good["value"], 200.0 + 0.1 * np.arange(1, 8), atol=1e-4)
    assert np.allclose(
        good["alt_km"], pressure_to_altitude_km(LEVELS_HPA[1:8].astype("f4") * 100.0)
    )
    assert np.allclose(good["sigma"], 1.5)
    assert np.allclose(good["fwhm_km"], mls_temperature_fwhm_km(LEVELS_HPA[1:8].astype("f4")))
    assert good["time"].iloc[0] == pd.Timestamp("2017-01-01T00:00:00")
    profile2 = table[np.isclose(table["lat"], 0.0)]
    assert len(profile2) == 5 and profile2["alt_km"].min() > pressure_to_altitude_km(10000.0)
    assert set(table["lon"].round(3)) == {-170.0, 0.0, 170.0}


def test_mls_missing_field_is_named(tmp_path) -> None:
    path = write_mls(tmp_path / "mls.he5", drop="Convergence")
    with pytest.raises(
        InstrumentFileError, match="no /HDFEOS/SWATHS/Temperature/Data Fields/Convergence"
    ):
        read_instrument_files("mls", [path])


def test_tai93_leap_seconds() -> None:
    times = tai93_to_utc(
        np.array([0.0, 220838405.0, TAI93_2017, TAI93_2017 - 1, TAI93_2017 - 2, np.nan])
    )
    expected = ["1993-01-01T00:00:00", "2000-01-01T00:00:00", "2017-01-01T00:00:00",
                "2016-12-31T23:59:59", "2016-12-31T23:59:59"]  # fmt: skip
    assert [str(t)[:19] for t in times[:5]] == expected
    assert np.isnat(times[5])
    # 1993-07-01: the first leap second; half a second after it, 181 days + 1 s of TAI93
    assert str(tai93_to_utc(np.array([181 * 86400.0 + 1.5]))[0]) == "1993-07-01T00:00:00.500000000"


def test_mls_resolution_and_quality_thresholds() -> None:
    assert np.allclose(mls_temperature_fwhm_km(np.array([316.0, 31.6, 0.001])), [6.0, 3.0, 13.0])
    # linear in log pressure: at 1 hPa, 3 + 10 * log10(31.6) / log10(31.6 / 0.001)
    expected = 3.0 + 10.0 * np.log10(31.6) / np.log10(31.6e3)
    assert np.isclose(mls_temperature_fwhm_km(np.array([1.0]))[0], expected)
    assert np.allclose(mls_temperature_fwhm_km(np.array([1000.0, 1e-5])), [6.0, 13.0])
    assert mls_quality_threshold(np.array([0.001, 82.54, 100.0, 261.0])).tolist() == [
        0.2,
        0.2,
        0.9,
        0.9,
    ]
    assert MLS_T_CONVERGENCE_MAX == 1.03


# ---------------------------------------------------------------------------- several files
def test_unknown_format_missing_file_and_wrong_layout(tmp_path) -> None:
    with pytest.raises(UnknownNameError, match="known: radar-madrigal"):
        read_instrument_files("lidar-csv", [tmp_path / "x"])
    with pytest.raises(MissingInputError, match=r"absent\.he5"):
        read_instrument_files("mls", [tmp_path / "absent.he5"])
    text = tmp_path / "notes.he5"
    text.write_text("not HDF5")
    with pytest.raises(InstrumentFileError, match=r"notes\.he5: cannot be read as HDF5"):
        read_instrument_files("mls", [text])


def test_refused_files_are_listed_or_skipped(tmp_path) -> None:
    good = write_mls(tmp_path / "good.he5")
    wrong = write_saber(tmp_path / "wrong.nc")
    with pytest.raises(InstrumentFileError, match="1 of 2 mls file") as info:
        read_instrument_files("mls", [good, wrong])
    summary = info.value.summary
    assert isinstance(summary, ReadSummary) and [f.path for f in summary.refused] == [str(wrong)]
    table, summary = read_instrument_files("mls", [good, wrong], skip_refused=True)
    assert len(table) == 17 and summary.rows_kept == 17 and len(summary.refused) == 1


def test_a_file_without_usable_rows_is_refused(tmp_path) -> None:
    path = tmp_path / "flagged.nc"
    write_lidar(path)
    with xr.open_dataset(path) as ds:
        ds = ds.load()
    ds["qc"][:] = 2
    ds.to_netcdf(tmp_path / "all_flagged.nc")
    with pytest.raises(
        InstrumentFileError, match=r"no usable rows after screening \(1 fill value, 5 flagged\)"
    ):
        read_instrument_files("lidar-netcdf", [tmp_path / "all_flagged.nc"])


def test_time_range_is_counted_per_file(tmp_path) -> None:
    a = write_cf_winds(tmp_path / "a.nc")
    table, summary = read_instrument_files(
        "radar-netcdf", [a], start="2024-03-01T13:00", end="2024-03-01T14:00"
    )
    assert set(table["time"]) == {pd.Timestamp(T0) + pd.Timedelta("1h")}
    entry = summary.files[0]
    assert entry.skipped["time range"] == 15 and entry.rows_kept == 7
    assert entry.rows_read == entry.rows_kept + sum(entry.skipped.values())
    with pytest.raises(InstrumentFileError, match=r"lie within 2030-01-01T00:00:00 to \.\.\."):
        read_instrument_files("radar-netcdf", [a], start="2030-01-01")
    with pytest.raises(InvalidValueError, match="the end of the time range, 'noon'"):
        read_instrument_files("radar-netcdf", [a], end="noon")


def test_pressure_tables_validate(tmp_path) -> None:
    """The rows of a pressure instrument are a valid table (units applied, longitudes wrapped)."""
    table, _ = read_instrument_files("mls", [write_mls(tmp_path / "m.he5")])
    grid = Grid(np.array([0.0]), np.array([0.0]), np.array([0.0, 120.0]), latitude_kind="irregular")
    valid = validate_observations(table, grid, source="mls")
    assert len(valid) == 17 and "units" not in valid.columns
    assert valid["lon"].between(0.0, 360.0).all() and SOURCE_COLUMN in valid.columns


def test_every_reader_is_registered_with_its_vertical_kind() -> None:
    assert {name: r.vertical for name, r in READERS.items()} == {
        "radar-madrigal": "geometric",
        "radar-netcdf": "geometric",
        "lidar-netcdf": "geometric",
        "saber": "log-pressure",
        "mls": "log-pressure",
    }
    assert list(SKIP_REASONS)[:2] == ["fill value", "flagged"]


# ---------------------------------------------------------------------------- review fixes
def _rewritten(path: Path, out: Path, change) -> Path:
    """``path`` read whole, changed by ``change(ds)`` (in place), written to ``out``."""
    with xr.open_dataset(path) as ds:
        ds = ds.load()
    change(ds)
    ds.to_netcdf(out)
    return out


@pytest.mark.parametrize(
    ("data_units", "error_units"), [("m s-1", "m/s"), ("m/s", "m s-1"), ("m s**-1", "m.s-1")]
)
def test_cf_uncertainty_units_are_compared_as_units_not_text(tmp_path, data_units, error_units):
    def change(ds: xr.Dataset) -> None:
        ds["zonal"].attrs["units"] = data_units
        ds["zonal_error"].attrs["units"] = error_units

    path = _rewritten(write_cf_winds(tmp_path / "w.nc"), tmp_path / "units.nc", change)
    table, _ = read_instrument_files("radar-netcdf", [path])
    assert np.all(table.loc[table["variable"] == "u", "sigma"] == 2.5)


@pytest.mark.parametrize(
    ("data_units", "error_units"),
    [
        ("degree_Celsius", "K"),
        ("K", "degC"),
        ("degrees_Celsius", "degree_Celsius"),
        ("K", "kelvin"),
    ],
)
def test_cf_temperature_uncertainty_in_celsius_or_kelvin_is_one_scale(
    tmp_path, data_units, error_units
) -> None:
    """An uncertainty is a difference: 1 degC of error is 1 K (scale only, no offset)."""

    def change(ds: xr.Dataset) -> None:
        if data_units.lower().startswith("deg"):
            ds["temperature"] = (ds["temperature"] - 273.15).assign_attrs(ds["temperature"].attrs)
        ds["temperature"].attrs["units"] = data_units
        ds["t_err"].attrs["units"] = error_units

    path = _rewritten(write_lidar(tmp_path / "l.nc"), tmp_path / "units.nc", change)
    table, _ = read_instrument_files("lidar-netcdf", [path])
    grid = Grid(np.array([0.0]), np.array([0.0]), np.array([0.0, 120.0]), latitude_kind="irregular")
    valid = validate_observations(table.rename(columns={"height_km": "alt_km"}), grid)
    np.testing.assert_allclose(valid["value"], [200.0, 190.0])
    np.testing.assert_allclose(valid["sigma"], [1.0, 2.0])


def test_cf_uncertainty_in_another_quantity_is_refused(tmp_path) -> None:
    def change(ds: xr.Dataset) -> None:
        ds["zonal_error"].attrs["units"] = "K"

    path = _rewritten(write_cf_winds(tmp_path / "w.nc"), tmp_path / "bad.nc", change)
    with pytest.raises(InstrumentFileError, match=r"bad\.nc.*'zonal_error' is in 'K'.*'m s-1'"):
        read_instrument_files("radar-netcdf", [path])


@pytest.mark.parametrize("good", ["no_flag", "good_value", "not_flagged", "no_qc_flag", "pass"])
def test_cf_flag_meanings_of_good_data_in_common_spellings(tmp_path, good) -> None:
    def change(ds: xr.Dataset) -> None:
        ds["qc"].attrs["flag_meanings"] = f"{good} suspect bad"

    path = _rewritten(write_lidar(tmp_path / "l.nc"), tmp_path / "flags.nc", change)
    table, summary = read_instrument_files("lidar-netcdf", [path])
    assert summary.files[0].skipped == {"fill value": 1, "flagged": 3}
    assert table["value"].tolist() == [200.0, 190.0]


def test_cf_flag_without_a_good_meaning_is_refused_not_emptied(tmp_path) -> None:
    def change(ds: xr.Dataset) -> None:
        ds["qc"].attrs["flag_meanings"] = "fine_data suspect bad"

    path = _rewritten(write_lidar(tmp_path / "l.nc"), tmp_path / "flags.nc", change)
    with pytest.raises(InstrumentFileError) as info:
        read_instrument_files("lidar-netcdf", [path])
    message = str(info.value)
    for text in ("flags.nc", "'qc'", "flag_meanings", "fine_data", "suspect", "bad", "no_flag"):
        assert text in message, text


def test_one_constant_converts_hpa_to_pa() -> None:
    from genda import constants
    from genda.observations.readers import mls, saber

    assert mls.HPA_TO_PA is constants.HPA_TO_PA and saber.HPA_TO_PA is constants.HPA_TO_PA
    assert constants.HPA_TO_PA == 100.0


def test_cf_heights_read_every_length_unit_of_the_model_readers(tmp_path) -> None:
    """The CF readers and :func:`genda.storage.open_archive` share one table of length units."""
    from genda.storage.source_conventions import UNIT_CONVERSIONS

    for unit, (scale, _) in UNIT_CONVERSIONS["geopotential_height"].items():
        heights = np.array([80e3, 85e3, 90e3, 95e3]) / scale
        attrs = {"units": unit, "standard_name": "altitude"}
        path = write_cf_winds(tmp_path / "w.nc", height=(heights, attrs))
        if unit == "gpm":  # geopotential metres are no geometric height
            with pytest.raises(InstrumentFileError, match="'gpm'"):
                read_instrument_files("radar-netcdf", [path])
            continue
        table, _ = read_instrument_files("radar-netcdf", [path])
        np.testing.assert_allclose(sorted(set(table["height_km"])), [80, 85, 90, 95], err_msg=unit)


@pytest.mark.parametrize("missing", ["n/a", b"none"])
def test_mls_missing_value_that_is_no_number_is_named(tmp_path, missing) -> None:
    path = write_mls(tmp_path / "mls.he5")
    with h5py.File(path, "a") as f:
        f["HDFEOS/SWATHS/Temperature/Data Fields/Quality"].attrs["MissingValue"] = missing
    with pytest.raises(InstrumentFileError) as info:
        read_instrument_files("mls", [path])
    message = str(info.value)
    assert "mls.he5" in message and "Data Fields/Quality" in message and "MissingValue" in message


def test_mls_missing_value_as_numeric_text_is_read(tmp_path) -> None:
    path = write_mls(tmp_path / "mls.he5")
    with h5py.File(path, "a") as f:
        f["HDFEOS/SWATHS/Temperature/Data Fields/Temperature"].attrs["MissingValue"] = "-999.99"
    table, summary = read_instrument_files("mls", [path])
    assert summary.files[0].skipped["fill value"] == 1 and len(table) == 17


@pytest.mark.parametrize("path_in_file", ["Data/Table Layout", "Metadata/Experiment Parameters"])
def test_madrigal_group_instead_of_a_dataset_is_named(tmp_path, path_in_file) -> None:
    path = write_madrigal(tmp_path / "amr.hdf5")
    with h5py.File(path, "a") as f:
        del f[path_in_file]
        f.create_group(path_in_file).create_dataset("x", data=np.zeros(3))
    with pytest.raises(InstrumentFileError) as info:
        read_instrument_files("radar-madrigal", [path])
    message = str(info.value)
    assert "amr.hdf5" in message and f"/{path_in_file}" in message and "group" in message
