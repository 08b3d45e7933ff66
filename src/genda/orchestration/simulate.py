"""Run the built-in model and write its output as a training archive.

The library side of ``genda simulate``: spin-up, streamed output, provenance.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

import genda
from genda.budget import check_output_size, human_bytes
from genda.constants import SECONDS_PER_DAY
from genda.errors import InvalidValueError
from genda.ownership import check_replaceable
from genda.simulator import Simulator, SimulatorConfig
from genda.storage import write_archive

SOURCE = "genda built-in isentropic-layer MLT model (stand-in for UA-ICON/HIAMCM output)"


def fit_time_step(config: SimulatorConfig, every_hours: float) -> SimulatorConfig:
    """``config`` with a time step that divides the output interval and a day.

    The model advances in whole steps; its automatic step is a whole fraction
    of an hour, which need not divide other intervals (1800 s does not divide
    a 15-minute output). When ``dt_seconds`` is unset and the automatic step
    does not fit, the largest
    step no longer than it that divides ``gcd(output interval, 1 day)`` is set
    explicitly (so it is recorded in the archive's ``model_config``). An
    explicit ``dt_seconds`` is left alone: the model then says if it does not fit.
    """
    if config.dt_seconds is not None:
        return config
    interval = every_hours * 3600.0
    if abs(interval - round(interval)) > 1e-9 or round(interval) <= 0:
        raise InvalidValueError(
            f"every_hours={every_hours} is not a positive whole number of seconds"
        )
    period = math.gcd(round(interval), round(SECONDS_PER_DAY))
    dt = config.time_step
    if abs(period / dt - round(period / dt)) < 1e-9:
        return config
    return dataclasses.replace(config, dt_seconds=period / math.ceil(period / dt))


def simulation_attrs(
    config: SimulatorConfig, seed: int, spinup_days: float, history: str | None = None
) -> dict[str, Any]:
    """Provenance attributes of a simulated archive (``source``, ``model_config`` JSON, ...)."""
    created = datetime.now(UTC).isoformat(timespec="seconds")
    return {
        "source": SOURCE,
        "model_config": json.dumps(config.to_dict(), sort_keys=True),
        "seed": int(seed),
        "spinup_days": float(spinup_days),
        "genda_version": genda.__version__,
        "history": f"{created} {history or 'genda.orchestration.simulate.simulate_archive'} "
        f"(genda {genda.__version__})",
    }


def spin_up(sim: Simulator, days: float, progress: bool = True) -> None:
    """Advance ``sim`` by ``days`` (day by day, with a progress bar); fractional days allowed."""
    whole = int(days)
    for _ in tqdm(range(whole), desc="spin-up", unit="day", disable=not progress or whole == 0):
        sim.run_days(1)
    if days > whole:
        sim.run_days(days - whole)


def simulate_archive(
    out: str | os.PathLike[str],
    config: SimulatorConfig,
    days: float,
    seed: int,
    spinup_days: float = 30.0,
    every_hours: float = 1.0,
    overwrite: bool = False,
    progress: bool = True,
    chunk_hours: int = 24,
    history: str | None = None,
    extra_attrs: Mapping[str, Any] | None = None,
    yes: bool = False,
) -> Path:
    """Spin the model up, then write ``days`` of output every ``every_hours`` to ``out``.

    The archive holds u, v, T and, beside them, ``zg``: the geopotential height of
    each output level from the model's own hydrostatic diagnosis
    (:meth:`genda.simulator.Simulator.geopotential_height`).

    Args:
        out: archive path (Zarr v3, see :func:`genda.storage.write_archive`).
        config: model configuration; its time step may be adjusted (:func:`fit_time_step`).
        days: length of the output in days; ``24 * days`` must be a whole number
            of output intervals.
        seed: random seed of the model's stochastic forcing.
        spinup_days: model days run before the first output.
        every_hours: output interval in hours.
        overwrite: replace an existing genda archive (nothing else is ever replaced).
        progress: progress bars on stderr.
        chunk_hours: snapshots per chunk along time.
        history: the command line, for the ``history`` attribute.
        extra_attrs: more global attributes.
        yes: confirm an output larger than :data:`genda.budget.CONFIRM_BYTES`.

    Returns:
        The archive path. Nothing is written at ``out`` if the run fails
        (e.g. :class:`genda.simulator.SimulationError`).
    """
    if days <= 0 or spinup_days < 0 or every_hours <= 0:
        raise InvalidValueError(
            f"need days > 0, spinup_days >= 0, every_hours > 0; got {days}, {spinup_days}, {every_hours}"
        )
    count = 24.0 * days / every_hours
    if abs(count - round(count)) > 1e-6:
        raise InvalidValueError(
            f"{days} days is not a whole number of {every_hours}-hour output intervals"
        )
    count = round(count)
    out = Path(out)
    # Checked here too so that a refused run does not first spend the spin-up.
    check_replaceable(out, "archive", overwrite)
    config = fit_time_step(config, every_hours)
    # u, v, T and the levels' geopotential height (zg), float32
    field_bytes = 4 * config.levels * config.nlat * config.nlon * 4
    check_output_size(
        count * field_bytes, out, f"{count} snapshots of {human_bytes(field_bytes)}", yes=yes
    )
    sim = Simulator(config, seed=seed)
    spin_up(sim, spinup_days, progress=progress)
    attrs = simulation_attrs(config, seed, spinup_days, history)
    attrs.update(extra_attrs or {})
    return write_archive(
        out,
        sim.snapshots(hours=count * every_hours, every_hours=every_hours),  # type: ignore[arg-type]
        sim.output_grid,
        attrs=attrs,
        chunk_hours=chunk_hours,
        progress=progress,
        total=count,
        overwrite=overwrite,
    )
