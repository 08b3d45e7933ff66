"""From instrument files to an analysis and its figures, with the ``genda`` command.

Run from the repository root (``make demo`` made the environment)::

    .venv/bin/python docs/examples/instrument_files.py --out example/
    .venv/bin/python docs/examples/instrument_files.py --out example/ --small   # about a minute

What it does, each step printed with the command a user would type:

1. **A model run stands in for the real atmosphere.** ``genda simulate`` runs
   the built-in model on the shipped prior's grid. Its archive carries each
   level's geopotential height (``zg``), as UA-ICON and WACCM-X output do.
2. **Instrument files in their own formats.** The run is observed by the
   catalogue's meteor radars and lidars and by the MLS limb track
   (``genda observe``). Each instrument's values are then written the way the
   instrument's data centre writes them: meteor-radar winds and lidar
   temperatures as CF NetCDF profiles on *geometric* height (m), MLS
   temperatures as an HDF-EOS5 Level 2 file on pressure levels (hPa) with its
   precision, status, quality and convergence fields. From here on, nothing
   uses the observation table that made them: swap in files from Madrigal,
   a lidar group or the MLS archive and the rest is the same.
3. **Ingest** (``genda ingest``): each format is read, screened, its heights
   placed on the prior's log-pressure levels with the model run's own heights
   (``--heights``), and validated against the prior's grid.
4. **Assimilate** the three tables in one window with the shipped ``default``
   prior (``genda assimilate``).
5. **Products without a truth**: maps of mean and spread with coastlines,
   profiles at the stations and the observations' fit (``genda plot``), and a
   CF NetCDF export with the provenance (``genda export``).

Everything lands under ``--out``; the last lines printed list the files.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import xarray as xr

from genda.constants import altitude_km_to_pressure
from genda.observations import read_observations, write_observations
from genda.observations.heights import LevelHeights, level_heights_from_archive
from genda.observations.readers.mls import LEAP_SECONDS_SINCE_1993

GENDA = str(Path(sys.executable).with_name("genda"))
TAI93 = np.datetime64("1993-01-01T00:00:00", "s")


def utc_to_tai93(time: np.ndarray) -> np.ndarray:
    """MLS's time stamps: seconds since 1993-01-01 counting the leap seconds inserted since."""
    leaps = np.array(LEAP_SECONDS_SINCE_1993, dtype="datetime64[s]")
    utc = np.asarray(time).astype("datetime64[s]")
    inserted = np.searchsorted(leaps, utc, side="right")
    return (utc - TAI93).astype(np.float64) + inserted


def run(*args: str) -> None:
    """Run one ``genda`` command, printed as a user would type it."""
    print(f"\n$ genda {shlex.join(args)}", flush=True)
    subprocess.run([GENDA, *args], check=True)


# ---------------------------------------------------------------------------- writing the formats
def geometric_height_km(rows: pd.DataFrame, heights: LevelHeights) -> np.ndarray:
    """Geometric height (km) of rows at log-pressure ``alt_km``: the model's own level heights."""
    columns = heights.columns(rows["lat"].to_numpy())
    return np.array(
        [np.interp(a, heights.altitude_km, c) for a, c in zip(rows["alt_km"], columns, strict=True)]
    )


def write_radar(rows: pd.DataFrame, heights: LevelHeights, path: Path) -> None:
    """Hourly winds of one meteor radar: a CF NetCDF profile on geometric height (m)."""
    rows = rows.assign(height_m=1e3 * geometric_height_km(rows, heights))
    wind = rows.pivot_table(index="height_m", columns="variable", values=["value", "sigma"])
    time = np.array([rows["time"].iloc[0]], dtype="datetime64[ns]")

    def profile(kind: str, variable: str) -> np.ndarray:
        return wind[(kind, variable)].to_numpy()[None, :]

    dims = ("time", "height")
    ds = xr.Dataset(
        {
            "u": (dims, profile("value", "u"), {"standard_name": "eastward_wind",
                                                "units": "m s-1", "ancillary_variables": "u_err"}),
            "u_err": (dims, profile("sigma", "u"), {"standard_name": "eastward_wind standard_error",
                                                    "units": "m s-1"}),
            "v": (dims, profile("value", "v"), {"standard_name": "northward_wind",
                                                "units": "m s-1", "ancillary_variables": "v_err"}),
            "v_err": (dims, profile("sigma", "v"), {"standard_name": "northward_wind standard_error",
                                                    "units": "m s-1"}),
        },
        coords={"time": ("time", time), "height": ("height", wind.index.to_numpy(),
                {"standard_name": "altitude", "units": "m", "positive": "up"})},
        attrs={"Conventions": "CF-1.10", "station_name": rows["station"].iloc[0],
               "latitude": float(rows["lat"].iloc[0]), "longitude": float(rows["lon"].iloc[0]),
               "source": "meteor radar hourly winds"},
    )  # fmt: skip
    ds.to_netcdf(path)


def write_lidar(rows: pd.DataFrame, heights: LevelHeights, path: Path) -> None:
    """One temperature profile of a lidar: CF NetCDF on geometric altitude (km)."""
    altitude = geometric_height_km(rows, heights)
    time = np.array([rows["time"].iloc[0]], dtype="datetime64[ns]")
    dims = ("time", "altitude")
    ds = xr.Dataset(
        {
            "temperature": (dims, rows["value"].to_numpy()[None, :],
                            {"standard_name": "air_temperature", "units": "K",
                             "ancillary_variables": "temperature_err"}),
            "temperature_err": (dims, rows["sigma"].to_numpy()[None, :],
                                {"standard_name": "air_temperature standard_error", "units": "K"}),
        },
        coords={"time": ("time", time),
                "altitude": ("altitude", altitude, {"standard_name": "altitude", "units": "km"})},
        attrs={"Conventions": "CF-1.10", "site": rows["station"].iloc[0],
               "station_latitude": float(rows["lat"].iloc[0]),
               "station_longitude": float(rows["lon"].iloc[0])},
    )  # fmt: skip
    ds.to_netcdf(path)


def write_mls(rows: pd.DataFrame, path: Path) -> None:
    """MLS temperatures as an HDF-EOS5 Level 2 (L2GP) swath: profiles x pressure levels.

    Every profile passes the quality document's screening (status 0, quality
    1.5, convergence 1.0); the reader keeps the recommended pressure range.
    """
    rows = rows.assign(profile=rows.groupby(["lat", "lon"], sort=False).ngroup())
    levels = np.sort(rows["alt_km"].unique())
    temperature = np.full((rows["profile"].max() + 1, levels.size), -999.99, dtype="f4")
    precision = np.full_like(temperature, -999.99)
    at = np.searchsorted(levels, rows["alt_km"])
    temperature[rows["profile"], at] = rows["value"]
    precision[rows["profile"], at] = rows["sigma"]
    first = rows.groupby("profile").first()
    n = len(first)
    fields = {
        "Data Fields": {
            "Temperature": temperature,
            "L2gpPrecision": precision,
            "Status": np.zeros(n, dtype="i4"),
            "Quality": np.full(n, 1.5, dtype="f4"),
            "Convergence": np.full(n, 1.0, dtype="f4"),
        },
        "Geolocation Fields": {
            "Latitude": first["lat"].to_numpy(dtype="f4"),
            "Longitude": ((first["lon"].to_numpy() + 180.0) % 360.0 - 180.0).astype("f4"),
            "Time": utc_to_tai93(first["time"].to_numpy()),
            "Pressure": (altitude_km_to_pressure(levels) / 100.0).astype("f4"),
        },
    }
    with h5py.File(path, "w") as f:
        for group, values in fields.items():
            for name, data in values.items():
                dataset = f.create_dataset(f"HDFEOS/SWATHS/Temperature/{group}/{name}", data=data)
                dataset.attrs["MissingValue"] = np.array([-999.99], dtype=data.dtype)


def write_instrument_files(drawn: Path, world: Path, folder: Path) -> dict[str, list[Path]]:
    """Write the drawn observations in each instrument's own format; the files per format."""
    table = read_observations(drawn)
    heights = level_heights_from_archive(world)
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[Path]] = {"radar-netcdf": [], "lidar-netcdf": [], "mls": []}
    winds = table[table["variable"].isin(["u", "v"]) & (table["network"] == "radars")]
    for station, rows in winds.groupby("station"):
        path = folder / f"radar_{station}.nc"
        write_radar(rows, heights, path)
        files["radar-netcdf"].append(path)
    lidar = table[(table["network"] == "lidars") & (table["variable"] == "T")]
    for station, rows in lidar.groupby("station"):
        path = folder / f"lidar_{station}.nc"
        write_lidar(rows.sort_values("alt_km"), heights, path)
        files["lidar-netcdf"].append(path)
    limb = table[table["station"] == "MLS"]
    if len(limb):
        path = folder / "MLS-Aura_L2GP-Temperature_example.he5"
        write_mls(limb, path)
        files["mls"].append(path)
    return {kind: paths for kind, paths in files.items() if paths}


# ---------------------------------------------------------------------------- the walkthrough
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("example"), help="folder for everything")
    parser.add_argument("--small", action="store_true", help="short spin-up, few members and steps")
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    world, drawn = out / "world.zarr", out / "drawn.parquet"
    # days of spin-up, then hourly output from 01:00; the small run's 2 days leave a
    # young atmosphere, which is all the file formats and commands need
    spinup = 2 if args.small else 10
    time = str(np.datetime64("2000-01-01T06:00") + np.timedelta64(spinup, "D"))
    members, steps = ("4", "8") if args.small else ("16", "32")

    # 1. the "real" atmosphere: a run of the built-in model on the default prior's grid
    run("simulate", "--out", str(world), "--days", "0.5", "--spinup-days", str(spinup),
        "--seed", "11", "--overwrite", "--no-progress")  # fmt: skip
    # 2. what the instruments saw, written in their own formats
    run("observe", "--truth", str(world), "--time", time, "--out", str(drawn),
        "--network", "radars,lidars,mls", "--seed", "3", "--overwrite")  # fmt: skip
    files = write_instrument_files(drawn, world, out / "instruments")
    print(f"\ninstrument files: {sum(len(p) for p in files.values())} in {out / 'instruments'}")

    # 3. ingest each format onto the prior's grid, with the model run's own level heights
    tables = []
    for kind, paths in files.items():
        table = out / f"obs_{kind}.parquet"
        run("ingest", kind, *map(str, paths), "--out", str(table), "--grid", "default",
            "--heights", str(world), "--overwrite")  # fmt: skip
        tables.append(read_observations(table))
    obs = out / "obs.parquet"
    write_observations(pd.concat(tables, ignore_index=True), obs)

    # 4. one window, assimilated with the shipped prior
    store = out / "analysis.zarr"
    run("assimilate", "--checkpoint", "default", "--obs", str(obs), "--time", time,
        "--out", str(store), "--members", members, "--steps", steps, "--overwrite",
        "--no-progress")  # fmt: skip

    # 5. figures and a CF NetCDF file, without any truth
    run("plot", str(store), "--time", time, "--level", "90", "--stations", str(obs),
        "--out", str(out / "figures"), "--overwrite")  # fmt: skip
    run("export", str(store), "--time", time, "--out", str(out / "analysis.nc"), "--overwrite")
    print("\nfigures:", *sorted(p.name for p in (out / "figures").glob("*.png")), sep="\n  ")
    print(f"analysis: {out / 'analysis.nc'}")


if __name__ == "__main__":
    main()
