"""The typed configuration of an assimilation cycle, read from YAML.

Example (``docs/cycles.md`` explains every key)::

    checkpoint: default
    observations: obs/{time:%Y%m%dT%H%M}.parquet   # one table per window
    start: 2000-02-10T00:00
    end: 2000-02-10T06:00
    every_hours: 3
    members: 16
    method: mmps
    steps: 16
    store: cycle.zarr
    truth: heldout.zarr          # optional: evaluate each window against it
    baselines: {enkf: enkf.zarr} # optional: baseline stores scored beside it
    ray:
      workers: 2                 # 0: sample in the flow's process
      address: null              # a running cluster; else RAY_ADDRESS, else a local one

Unknown keys, wrong types, an ``end`` before ``start`` or an observation
pattern without ``{time}`` are errors that name the key
(:func:`load_cycle_config`).
"""

from __future__ import annotations

import os
import string
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from genda.assimilation.guidance import GuidanceMethod, TweedieCovariance
from genda.assimilation.posterior import PosteriorSettings
from genda.assimilation.start_update import StartUpdate
from genda.errors import GendaError, InvalidValueError
from genda.models.sampling import SamplingMethod
from genda.observations.qc import DEFAULT_OUTLIER_K

_SETTINGS: Final = PosteriorSettings()
"""The defaults of the sampling keys (``method`` to ``batch_size``): :class:`PosteriorSettings`'."""


class ConfigError(GendaError, ValueError):
    """A cycle configuration that cannot be used; the message names every problem."""


class RayConfig(BaseModel):
    """Where the members are made."""

    model_config = ConfigDict(extra="forbid")

    workers: int = Field(0, ge=0, description="Ray actors; 0 samples in the flow's process.")
    address: str | None = Field(None, description="A running cluster (else RAY_ADDRESS).")
    threads_per_worker: int = Field(1, ge=1, description="CPU actors: torch threads each.")
    device: Literal["cpu", "cuda"] = "cpu"
    insecure: bool = Field(
        False,
        description="Allow a local cluster without Ray token authentication "
        "(RAY_AUTH_MODE=disabled): its ports are open to the network.",
    )


class StartUpdateConfig(BaseModel):
    """How a filtering window updates its members' starts
    (:class:`genda.assimilation.start_update.StartUpdate`)."""

    model_config = ConfigDict(extra="forbid")

    horizontal_km: float = Field(1500.0, gt=0, description="Localisation half-width (.inf: none).")
    vertical_km: float = Field(30.0, gt=0, description="Vertical localisation half-width.")
    rtps: float = Field(
        0.5, ge=0, le=1, allow_inf_nan=False, description="Relaxation to the starts' spread."
    )

    def settings(self) -> StartUpdate:
        """The :class:`~genda.assimilation.start_update.StartUpdate` of these keys."""
        return StartUpdate(self.horizontal_km, self.vertical_km, self.rtps)


class CycleConfig(BaseModel):
    """One assimilation cycle: windows from ``start`` to ``end`` every ``every_hours``."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: str = Field("default", description="Checkpoint directory or shipped name.")
    observations: str = Field(
        description="Observation table per window: a path pattern with {time:...} (strftime)."
    )
    start: datetime
    end: datetime
    every_hours: float = Field(1.0, gt=0)
    window_hours: float = Field(1.0, ge=0)
    states: int | None = Field(
        None,
        ge=2,
        description="Hourly states per window of a trajectory prior, its own K or more: "
        "longer windows are composed from its segments (every_hours = states - 1). "
        "None: the prior's own.",
    )
    start_update: StartUpdateConfig | None = Field(
        None,
        description="Trajectory priors: each filtering window updates its members' starts by "
        "its observations (a localised EnKF step) before fixing them; null fixes them as "
        "they are.",
    )
    outlier_k: float = Field(
        DEFAULT_OUTLIER_K,
        gt=0,
        allow_inf_nan=False,
        description="Background check: observations beyond k standard deviations are flagged.",
    )
    keep_outliers: bool = Field(False, description="Assimilate the flagged observations too.")
    members: int = Field(16, ge=1)
    method: GuidanceMethod = Field(_SETTINGS.method)
    steps: int = Field(_SETTINGS.steps, ge=1)
    sampler: SamplingMethod = Field(_SETTINGS.sampler)
    iterations: int = Field(
        _SETTINGS.iterations, ge=1, description="MMPS solver (GMRES) iterations."
    )
    covariance: TweedieCovariance = Field(
        _SETTINGS.covariance,
        description="MMPS's Tweedie covariance: auto (the whitened prior's Gaussian part "
        "for a whitened prior, else the Jacobian), jacobian (the network's) or prior (the "
        "whitened prior's Gaussian part, no backward pass).",
    )
    zeta: float = Field(
        _SETTINGS.zeta, ge=0, allow_inf_nan=False, description="DPS guidance strength."
    )
    gamma: float = Field(
        _SETTINGS.gamma, ge=0, allow_inf_nan=False, description="SDA likelihood inflation."
    )
    corrections: int | None = Field(
        _SETTINGS.corrections, ge=0, description="Langevin corrections per step (SDA default 1)."
    )
    batch_size: int | Literal["auto"] = _SETTINGS.batch_size
    seed: int = 0
    store: Path
    truth: Path | None = Field(None, description="Model data to evaluate each window against.")
    withheld: str | None = Field(None, description="Withheld observations per window (pattern).")
    reports: Path | None = Field(None, description="Folder of the per-window reports.")
    baselines: dict[str, Path] = Field(
        default_factory=dict, description="Baseline ensemble stores scored beside each window."
    )
    ray: RayConfig = Field(default_factory=RayConfig)

    @field_validator("observations", "withheld")
    @classmethod
    def _has_time_field(cls, value: str | None) -> str | None:
        if value is not None:
            check_time_pattern(value)
        return value

    @field_validator("start", "end")
    @classmethod
    def _naive_utc(cls, value: datetime) -> datetime:
        """Times are naive UTC throughout genda: an aware time is converted."""
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    @field_validator("batch_size")
    @classmethod
    def _positive_batch(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise InvalidValueError("must be >= 1 or 'auto'")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> CycleConfig:
        if self.end < self.start:
            raise InvalidValueError(f"end ({self.end}) is before start ({self.start})")
        if self.start_update is not None and self.members < 2:
            raise InvalidValueError(
                f"start_update updates an ensemble's starts: it needs members >= 2, not "
                f"{self.members}"
            )
        return self

    def windows(self) -> list[np.datetime64]:
        """Centres of the cycle's windows, ``start`` to ``end`` inclusive."""
        step = timedelta(hours=self.every_hours)
        times, t = [], self.start
        while t <= self.end:
            times.append(np.datetime64(t.replace(microsecond=0), "s"))
            t += step
        return times

    def observation_path(self, time: np.datetime64) -> Path:
        """The observation table of the window at ``time``."""
        return _expand(self.observations, time)

    def withheld_path(self, time: np.datetime64) -> Path | None:
        return None if self.withheld is None else _expand(self.withheld, time)

    @property
    def auto_batch(self) -> bool:
        """Whether each device is probed for the batch size (``batch_size: auto``)."""
        return resolve_batch_size(self.batch_size)[1]

    def settings(self) -> PosteriorSettings:
        """The sampling settings (an ``auto`` batch size: :func:`resolve_batch_size`)."""
        batch, _ = resolve_batch_size(self.batch_size)
        return PosteriorSettings(
            method=self.method,
            steps=self.steps,
            sampler=self.sampler,
            iterations=self.iterations,
            covariance=self.covariance,
            zeta=self.zeta,
            gamma=self.gamma,
            corrections=self.corrections,
            batch_size=batch,
        )


def resolve_batch_size(batch_size: int | Literal["auto"]) -> tuple[int, bool]:
    """A batch-size setting -> (members per denoiser batch, whether to probe the device).

    ``"auto"`` starts from :class:`PosteriorSettings`' default batch size; a
    GPU replaces it by the largest batch that fits its memory, a CPU keeps it
    unless its memory does not hold it (the memory model of ``genda plan``,
    :meth:`genda.distributed.work.MemberGenerator.probe_batch_size`).
    """
    if batch_size == "auto":
        return _SETTINGS.batch_size, True
    return int(batch_size), False


def check_time_pattern(pattern: str) -> None:
    """Refuse a path pattern whose fields are anything but ``{time}`` or ``{time:<strftime>}``.

    ``str.format`` would otherwise evaluate attribute and index access
    (``{time.__class__}``) and fail at every window on an unknown field.

    Raises:
        InvalidValueError: the pattern names another field, uses attribute or
            index access or a conversion, has no ``{time}``, or its format fails.
    """
    try:
        parsed = list(string.Formatter().parse(pattern))
    except ValueError as error:
        raise InvalidValueError(f"is not a valid path pattern ({error})") from None
    fields = [(name, spec, conversion) for _, name, spec, conversion in parsed if name is not None]
    for name, spec, conversion in fields:
        if name != "time" or conversion is not None or "{" in (spec or ""):
            shown = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise InvalidValueError(
                f"has the field {{{shown}}}; only {{time}} or {{time:<strftime format>}} "
                "is allowed, e.g. obs/{time:%Y%m%dT%H}.parquet"
            )
    if not fields:
        raise InvalidValueError(
            "must contain {time} or {time:<strftime format>}, e.g. obs/{time:%Y%m%dT%H}.parquet"
        )
    try:
        pattern.format(time=datetime(2000, 1, 1))
    except (ValueError, TypeError) as error:
        raise InvalidValueError(f"cannot be formatted with a time ({error})") from None


def _expand(pattern: str, time: np.datetime64) -> Path:
    when = datetime.fromisoformat(str(np.datetime64(time, "s")))
    return Path(os.path.expanduser(pattern.format(time=when)))


def load_cycle_config(path: str | os.PathLike[str]) -> CycleConfig:
    """Read and validate a cycle configuration; relative paths are taken from the file's folder.

    Raises:
        ConfigError: the file is missing or not YAML, or keys are unknown,
            missing or of the wrong type (each named with its location).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no cycle configuration at {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not UTF-8); expected YAML") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys, got {type(data).__name__}")
    try:
        config = CycleConfig.model_validate(data)
    except ValidationError as error:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or '<top>'}: {e['msg']}" for e in error.errors()
        ]
        raise ConfigError(f"{path}: " + "; ".join(problems)) from None
    base = path.resolve().parent

    def here(value: Path | None) -> Path | None:
        return None if value is None or value.is_absolute() else base / value

    updates: dict[str, object] = {
        "baselines": {name: here(p) or p for name, p in config.baselines.items()},
        "store": here(config.store) or config.store,
        "truth": here(config.truth) or config.truth,
        "reports": here(config.reports) or config.reports,
    }
    for key in ("observations", "withheld"):
        pattern = getattr(config, key)
        if pattern is not None and not os.path.isabs(os.path.expanduser(pattern)):
            updates[key] = str(base / pattern)
    if not Path(config.checkpoint).is_absolute() and (base / config.checkpoint).exists():
        updates["checkpoint"] = str(base / config.checkpoint)
    return config.model_copy(update=updates)


__all__ = [
    "ConfigError",
    "CycleConfig",
    "RayConfig",
    "load_cycle_config",
    "resolve_batch_size",
]
