"""Training pipeline behind ``genda train``: open the archive, build the model, train.

:func:`train_prior` opens an archive with :func:`genda.storage.open_archive`,
splits it by time (:class:`genda.models.data.TrainingData`), builds an
:class:`~genda.models.diffusion.EDMDenoiser` around a U-Net for the chosen
strategy, and runs :func:`genda.models.training.train`. When resuming, the
strategy, architecture, split and training settings come from the checkpoint
unless given explicitly; a conflicting strategy or architecture is an error.

Under ``torchrun`` (``WORLD_SIZE > 1`` in the environment) it initialises the
process group itself (NCCL on GPUs, gloo on CPUs) and destroys it at the end;
a process group that is already initialised is used and left alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import xarray as xr

from genda.errors import InvalidValueError, OutputExistsError
from genda.grid import Grid
from genda.models.calendar import DEFAULT_CALENDAR, Calendar
from genda.models.checkpoint import CheckpointError, build_skip, read_checkpoint
from genda.models.coordinates import COORDINATES, build_coordinates, fit_coordinates
from genda.models.data import DEFAULT_GAP_HOURS, DEFAULT_MEMORY_LIMIT, TimeSplit, TrainingData
from genda.models.diffusion import EDMDenoiser
from genda.models.gaussian_skip import GaussianSkip
from genda.models.strategies import build_backbone, get_strategy
from genda.models.training import StopRule, TrainConfig, TrainResult, resolve_device, train
from genda.models.trajectory_data import TrajectoryFields
from genda.models.whitening import SpectralWhitening
from genda.storage import IconRemap, open_archive
from genda.trajectory import MAX_STATES, trajectory_states

__all__ = ["DEFAULT_ARCHITECTURE", "TrainingRun", "train_prior"]

DEFAULT_ARCHITECTURE: dict[str, Any] = {
    "base_channels": 32,
    "channel_mult": [1, 2, 2],
    "blocks_per_level": 1,
    "attention_levels": [],
    "noise_embedding_dim": 128,
    "dropout": 0.0,
}
"""U-Net options (besides the channels the strategy sets) of a new model."""


@dataclass
class TrainingRun:
    """A finished run: the training result and what it was trained on.

    Attributes:
        result: :class:`~genda.models.training.TrainResult` (losses, throughput, checkpoint).
        strategy: strategy name.
        strategy_options: its options.
        architecture: the U-Net configuration.
        grid: the grid of the fields.
        split: the time split.
        config: the training settings used.
        archive: the archive path (or ``"dataset"``).
        device: the training device.
    """

    result: TrainResult
    strategy: str
    strategy_options: dict[str, Any]
    architecture: dict[str, Any]
    grid: Grid
    split: TimeSplit
    config: TrainConfig
    archive: str
    device: str


@contextmanager
def _process_group(device: str) -> Iterator[None]:
    """Initialise ``torch.distributed`` from torchrun's environment if needed; tear down what we started."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available() or dist.is_initialized():
        yield
        return
    backend = "nccl" if resolve_device(device).type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively (JSON's view)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


SKIP_CHOICES = ("gaussian", "scalar")
FIT_BATCH = 256
"""Fields per batch when fitting the Gaussian skip or the coordinates (one pass)."""


def _training_batches(training_data: TrainingData) -> Iterator[torch.Tensor]:
    """The training split in batches of :data:`FIT_BATCH` normalised fields, one pass."""
    for fields, _ in _training_batches_with_hours(training_data):
        yield fields


def _training_batches_with_hours(
    training_data: TrainingData,
) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
    """:func:`_training_batches` with the UT hours ``(B,)`` of each batch's fields."""
    fields = training_data.train
    for start in range(0, len(fields), FIT_BATCH):
        items = np.arange(start, min(start + FIT_BATCH, len(fields)))
        yield fields.batch(items), fields.hours(items)


def _keep_resumed(
    requested: str | None,
    stored: Mapping[str, Any],
    key: str,
    kinds: tuple[str, str],
    resume: str | os.PathLike[str] | None,
    what: str,
) -> None:
    """A resumed run keeps its checkpoint's ``key``: ``kinds`` names it absent, then present."""
    stored_kind = kinds[0] if stored.get(key) is None else kinds[1]
    if requested is not None and requested != stored_kind:
        raise CheckpointError(
            f"{resume}: the checkpoint was trained with {what.format(stored_kind)}, "
            f"not {requested!r}"
        )


def _skip_module(
    skip: str | None,
    stored: Mapping[str, Any],
    resume: str | os.PathLike[str] | None,
    grid: Grid,
    training_data: TrainingData,
) -> GaussianSkip | None:
    """The skip of a new model (fitted to the training split) or of a resumed one (unfitted)."""
    if skip is not None and skip not in SKIP_CHOICES:
        raise InvalidValueError(f"unknown skip {skip!r}; choose one of {SKIP_CHOICES}")
    if stored:
        _keep_resumed(skip, stored, "skip", ("scalar", "gaussian"), resume, "the {} skip")
        return build_skip(grid, stored.get("skip"))  # its buffers come with the weights
    if (skip or "scalar") == "scalar":
        return None
    return GaussianSkip(grid).fit(_training_batches(training_data))


def _coordinates_module(
    coordinates: str | None,
    stored: Mapping[str, Any],
    resume: str | os.PathLike[str] | None,
    strategy: str,
    grid: Grid,
    training_data: TrainingData,
    tides: int | None = None,
) -> SpectralWhitening | None:
    """The coordinates of a new model (fitted to the training split) or of a resumed one."""
    if coordinates is not None and coordinates not in COORDINATES:
        raise InvalidValueError(f"unknown coordinates {coordinates!r}; choose one of {COORDINATES}")
    normalization = training_data.train.normalization
    if stored:
        names = ("grid", "whitened")
        _keep_resumed(coordinates, stored, "coordinates", names, resume, "{} coordinates")
        kept = int((stored.get("coordinates") or {}).get("tides", 0))
        if tides is not None and tides != kept:
            raise CheckpointError(
                f"{resume}: the checkpoint's mean has {kept} tidal harmonics, not {tides}; "
                "a resumed run keeps its coordinates"
            )
        # unfitted here: its statistics come with the weights
        return build_coordinates(grid, normalization, stored.get("coordinates"))
    batches = _training_batches_with_hours(training_data)
    return fit_coordinates(coordinates or "grid", strategy, grid, normalization, batches, tides)


def _states_setting(states: int | None, stored: Mapping[str, Any], coordinates: str | None) -> int:
    """The hourly states per sample: ``states``, the resumed checkpoint's, or 1."""
    kept = trajectory_states(Grid.from_dict(stored["grid"])) if stored.get("grid") else None
    if kept is not None and states is not None and states != kept:
        raise CheckpointError(
            f"the checkpoint models {kept} hourly state(s) per sample, not {states}; "
            "a resumed run keeps them"
        )
    count = kept if kept is not None else 1 if states is None else int(states)
    if not 1 <= count <= MAX_STATES:
        raise InvalidValueError(f"states must be 1..{MAX_STATES} hourly states, got {count}")
    if count > 1 and kept is None and coordinates != "whitened":
        raise InvalidValueError(
            "a trajectory prior (states > 1) needs whitened coordinates: its causal square root "
            "is what lets a window's first states be fixed (--coordinates whitened)"
        )
    return count


def _calendar_setting(
    time_inputs: bool | None,
    stored: Mapping[str, Any],
    resume: str | os.PathLike[str] | None,
) -> Calendar | None:
    """The network's time inputs: asked for, the resumed checkpoint's, or none."""
    if resume is not None:  # a resumed run keeps its inputs
        requested = None if time_inputs is None else "on" if time_inputs else "off"
        _keep_resumed(requested, stored, "calendar", ("off", "on"), resume, "time inputs {}")
        return Calendar.from_config(stored.get("calendar"))
    return DEFAULT_CALENDAR if time_inputs else None


def _trajectories(training_data: TrainingData, states: int) -> TrainingData:
    """The splits of ``training_data`` as trajectories of ``states`` hourly fields."""
    validation = training_data.validation
    return replace(
        training_data,
        train=TrajectoryFields(training_data.train, states),  # type: ignore[arg-type]
        validation=(
            None if validation is None else TrajectoryFields(validation, states, "validation")  # type: ignore[arg-type]
        ),
    )


def _check_output(out: Path, resume: str | os.PathLike[str] | None, overwrite: bool) -> None:
    """Refuse an existing ``out`` unless resuming it in place or ``overwrite``."""
    # Continuing a checkpoint in place replaces it by design; writing a resumed run
    # to another existing directory replaces that one, which needs overwrite.
    in_place = resume is not None and Path(resume).resolve() == out.resolve()
    if not in_place and (out.exists() or out.is_symlink()) and not overwrite:
        raise OutputExistsError(
            f"{out} exists; pass overwrite=True (--overwrite) to replace it "
            "or resume=... (--resume) to continue it"
        )


def _run_config(
    config: TrainConfig | None,
    overrides: Mapping[str, Any] | None,
    stored: Mapping[str, Any],
    resume: str | os.PathLike[str] | None,
) -> TrainConfig:
    """``config``, else the resumed checkpoint's, else the defaults; with ``overrides``."""
    base = config
    if base is None:
        try:
            base = TrainConfig.from_dict(stored["training"]) if stored else TrainConfig()
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"{resume}: invalid training settings: {error}") from error
    return base.replace(**dict(overrides or {}))


@dataclass
class _ModelSettings:
    """The strategy (name and options) and U-Net options of the model to train."""

    strategy: str
    options: dict[str, Any]
    architecture: dict[str, Any]


def _model_settings(
    stored: Mapping[str, Any],
    resume: str | os.PathLike[str] | None,
    strategy: str | None,
    strategy_options: Mapping[str, Any] | None,
    architecture: Mapping[str, Any] | None,
) -> _ModelSettings:
    """Explicit settings, else the resumed checkpoint's, else the defaults.

    Raises:
        CheckpointError: a strategy or architecture that conflicts with the resumed checkpoint.
    """
    if not stored:
        return _ModelSettings(
            strategy or "joint3d",
            dict(strategy_options or {}),
            {**DEFAULT_ARCHITECTURE, **_plain(dict(architecture or {}))},
        )
    name = stored["strategy"]["name"]
    if strategy is not None and strategy != name:
        raise CheckpointError(
            f"{resume}: the checkpoint was trained with strategy {name!r}, not {strategy!r}"
        )
    options = {**stored["strategy"].get("options", {}), **dict(strategy_options or {})}
    arch = {
        k: v
        for k, v in stored["architecture"]["config"].items()
        if k not in ("in_channels", "out_channels", "cond_dim", "pole_sign")
    }
    changed = {k: v for k, v in _plain(dict(architecture or {})).items() if arch.get(k) != v}
    if changed:
        raise CheckpointError(
            f"{resume}: cannot change the architecture of a resumed model: {changed} "
            f"(the checkpoint has {{{', '.join(f'{k!r}: {arch.get(k)!r}' for k in changed)}}})"
        )
    return _ModelSettings(name, options, arch)


def _split_settings(
    stored: Mapping[str, Any], val_fraction: float | None, val_gap_hours: float | None
) -> tuple[float, float]:
    """The time split: explicit, else the resumed run's, else 0.1 and the default gap."""
    split = stored.get("archive", {}).get("split", {}) if stored else {}
    if val_fraction is None:
        val_fraction = split.get("val_fraction", 0.1)
    if val_gap_hours is None:
        val_gap_hours = split.get("gap_hours", DEFAULT_GAP_HOURS)
    val_fraction = 0.1 if val_fraction is None else val_fraction
    val_gap_hours = DEFAULT_GAP_HOURS if val_gap_hours is None else val_gap_hours
    return val_fraction, val_gap_hours


def train_prior(
    data: str | os.PathLike[str] | xr.Dataset,
    out: str | os.PathLike[str],
    *,
    strategy: str | None = None,
    strategy_options: Mapping[str, Any] | None = None,
    architecture: Mapping[str, Any] | None = None,
    config: TrainConfig | None = None,
    overrides: Mapping[str, Any] | None = None,
    val_fraction: float | None = None,
    val_gap_hours: float | None = None,
    resume: str | os.PathLike[str] | None = None,
    skip: str | None = None,
    coordinates: str | None = None,
    tides: int | None = None,
    states: int | None = None,
    time_inputs: bool | None = None,
    overwrite: bool = False,
    progress: bool = True,
    memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT,
    command: str | None = None,
    icon: IconRemap | None = None,
    stop: StopRule | None = None,
) -> TrainingRun:
    """Train a diffusion prior on an archive and write the checkpoint ``out``.

    Args:
        data: archive path (Zarr or NetCDF) or an open Dataset in genda's conventions.
        out: checkpoint directory to write (:func:`genda.models.training.train`).
        strategy: ``"joint3d"`` or ``"layer2d"``; default ``"joint3d"``, or the
            resumed checkpoint's.
        strategy_options: e.g. ``{"window": 2}`` for layer2d; merged over the resumed ones.
        architecture: U-Net options (``base_channels``, ``channel_mult``, ...)
            merged over :data:`DEFAULT_ARCHITECTURE` (or the resumed checkpoint's,
            which they must then equal).
        config: training settings; default :class:`TrainConfig` (or the resumed checkpoint's).
        overrides: changes to ``config``, ``None`` values ignored (the CLI's options).
        val_fraction, val_gap_hours: the time split (default 0.1 and 24 h, or the resumed run's).
        resume: checkpoint to continue from.
        skip: ``"scalar"`` (default for a new model): EDM's ``c_skip x``;
            ``"gaussian"``: the posterior mean of a Gaussian fitted to the
            training fields (:class:`genda.models.gaussian_skip.GaussianSkip`;
            docs/training.md weighs the two). A resumed run keeps its checkpoint's.
        coordinates: ``"grid"`` (default for a new model): diffusion on the
            normalised fields; ``"whitened"``: on the control variables of a
            spectral whitening fitted to the training fields
            (:mod:`genda.models.coordinates`). A resumed run keeps its checkpoint's.
        tides: solar-day harmonics in the whitened coordinates' mean (default
            :data:`genda.models.coordinates.DEFAULT_TIDES`; 0: one mean for every
            hour); whitened coordinates only.
        states: hourly states per sample: ``K > 1`` trains a trajectory prior of
            ``K`` consecutive hours (:mod:`genda.trajectory`; whitened
            coordinates); default 1, or the resumed checkpoint's.
        time_inputs: the network sees the UT hour and the day of the year
            (:data:`genda.models.calendar.DEFAULT_CALENDAR`); default off, or
            the resumed checkpoint's.
        overwrite: replace an existing ``out`` when not resuming.
        progress: progress bar.
        memory_limit_bytes: splits up to this size are held in memory.
        command: the command line, stored in the checkpoint.
        icon: grid file, target and method for UA-ICON native output
            (:func:`genda.storage.open_archive`).
        stop: a stop rule that may end the run before ``config.steps``
            (:mod:`genda.models.training_stop`, e.g. ``PlateauStop``); its
            reason is ``result.stopped``.

    Returns:
        :class:`TrainingRun`.

    Raises:
        genda.storage.ArchiveError: the archive cannot be read.
        CheckpointError: the resume checkpoint is unusable or conflicts with the options.
        FileExistsError: ``out`` exists (neither resuming nor ``overwrite``).
        ValueError, KeyError: invalid options (unknown strategy, split leaving no data...).
    """
    out = Path(out)
    _check_output(out, resume, overwrite)  # before reading anything: a refused run fails fast
    stored: dict[str, Any] = {}
    if resume is not None:
        stored = read_checkpoint(resume).config
    run_config = _run_config(config, overrides, stored, resume)
    model = _model_settings(stored, resume, strategy, strategy_options, architecture)
    name, options, arch = model.strategy, model.options, model.architecture
    val_fraction, val_gap_hours = _split_settings(stored, val_fraction, val_gap_hours)
    strategy_obj = get_strategy(name, **options)

    ds = open_archive(data, icon=icon)
    source = str(data) if not isinstance(data, xr.Dataset) else "dataset"
    grid = Grid.from_dataset(ds)
    training_data = TrainingData.from_dataset(
        ds, val_fraction, val_gap_hours, grid=grid, memory_limit_bytes=memory_limit_bytes
    )
    states = _states_setting(states, stored, coordinates)
    if states > 1:
        training_data = _trajectories(training_data, states)
        grid = training_data.grid
    if coordinates == "whitened" and skip == "gaussian":
        raise InvalidValueError(
            "whitened coordinates need no Gaussian skip: the scalar skip is already "
            "the Gaussian posterior mean there; choose one"
        )
    skip_module = _skip_module(skip, stored, resume, grid, training_data)
    coordinates_module = _coordinates_module(
        coordinates, stored, resume, name, grid, training_data, tides
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(run_config.seed)  # the initial weights follow the seed
        denoiser = EDMDenoiser(
            build_backbone(
                strategy_obj, grid, _calendar_setting(time_inputs, stored, resume), **arch
            ),
            skip=skip_module,
            coordinates=coordinates_module,
        )
    network_config = denoiser.backbone.network.config  # type: ignore[union-attr]

    with _process_group(run_config.device):
        result = train(
            denoiser,
            training_data,
            run_config,
            out,
            resume=resume,
            progress=progress,
            overwrite=overwrite,
            description={"archive": source, **({"command": command} if command else {})},
            stop=stop,
        )
    return TrainingRun(
        result=result,
        strategy=name,
        strategy_options=strategy_obj.options(),
        architecture=dict(network_config),
        grid=grid,
        split=training_data.split,
        config=run_config,
        archive=source,
        device=str(resolve_device(run_config.device)),
    )
