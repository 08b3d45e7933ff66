"""Checkpoints of the diffusion prior: safetensors plus JSON, nothing that can run code.

A checkpoint is a directory::

    config.json             everything needed to rebuild and check the model (below)
    model.safetensors       EMA weights "ema.<name>" and raw weights "model.<name>"
                            (names of EDMDenoiser.state_dict())
    optimizer.safetensors   optional: AdamW state "<parameter name>.<key>" (resuming)
    loss.csv, loss.png      optional: the training log and its plot (not checksummed)

``config.json`` holds the format name and version, the genda version, the grid
(:meth:`genda.grid.Grid.to_dict`), the strategy (name and options), the
architecture (:attr:`genda.models.unet.UNet.config`), ``sigma_data``, the
skip (``null`` for EDM's scalar ``c_skip``, or the settings of a
:class:`genda.models.gaussian_skip.GaussianSkip`, whose statistics are
buffers among the weights; absent in older checkpoints, read as ``null``), the
normalisation statistics (:meth:`genda.normalization.Normalization.to_dict`),
the training configuration, the step count, a description of the archive with
its fingerprint (:func:`genda.models.data.archive_fingerprint`), and the
SHA-256 of each safetensors file.

:func:`save_checkpoint` writes into a temporary sibling directory and renames
it into place, so a reader never sees a half-written checkpoint and a crash
leaves the previous one intact. :func:`load_checkpoint` checks the files
against their checksums, the tensors against the architecture and the grid
against the caller's, and raises :class:`CheckpointError` naming the file and
the problem. Weights are read with ``safetensors`` and the configuration with
``json``; nothing is unpickled.

Shipped checkpoints are found by name (:func:`resolve_checkpoint`):
``"default"`` (``joint3d``) and ``"default-layer2d"`` live in
``genda/models/checkpoints/<name>/``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

import genda
from genda.atomic import partial_path, publish_directory, remove_path
from genda.devices import check_device
from genda.errors import GendaError, InvalidValueError, OutputExistsError
from genda.grid import Grid, GridMismatchError
from genda.json_values import json_round_trip
from genda.models.coordinates import build_coordinates, coordinates_config, unfitted_statistics
from genda.models.diffusion import EDMDenoiser
from genda.models.gaussian_skip import SKIP_KIND, GaussianSkip
from genda.models.strategies import Strategy, StrategyBackbone, build_backbone, get_strategy
from genda.models.unet import UNet
from genda.normalization import Normalization
from genda.ownership import CHECKPOINT_FORMAT, is_empty_directory, written_kind

__all__ = [
    "CHECKPOINTS_DIR",
    "CONFIG_FILE",
    "FORMAT",
    "FORMAT_VERSION",
    "MODEL_FILE",
    "OPTIMIZER_FILE",
    "SHIPPED_CHECKPOINTS",
    "CheckpointContents",
    "CheckpointError",
    "CheckpointGridMismatchError",
    "LoadedPrior",
    "build_denoiser",
    "check_replaceable",
    "check_tensors",
    "describe_denoiser",
    "load_checkpoint",
    "load_optimizer_state",
    "optimizer_tensors",
    "read_checkpoint",
    "resolve_checkpoint",
    "restore_denoiser",
    "save_checkpoint",
]

FORMAT = CHECKPOINT_FORMAT
FORMAT_VERSION = 1
"""The version written; :func:`read_checkpoint` reads this version only."""
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
EMA_PREFIX = "ema."
RAW_PREFIX = "model."

CHECKPOINTS_DIR = Path(__file__).resolve().parent / "checkpoints"
"""Where shipped checkpoints live inside the package."""
SHIPPED_CHECKPOINTS: dict[str, str] = {
    "default": "joint3d prior trained on the built-in model's default archive",
    "default-layer2d": "layer2d prior trained on the built-in model's default archive",
}
"""Names accepted by :func:`resolve_checkpoint`, with what they hold."""

REQUIRED_KEYS = (
    "format",
    "format_version",
    "genda_version",
    "grid",
    "strategy",
    "architecture",
    "sigma_data",
    "normalization",
    "training",
    "step",
    "archive",
    "files",
)


class CheckpointError(GendaError, ValueError):
    """A checkpoint is missing, corrupt, inconsistent or does not fit; the message says which file and why."""


class CheckpointGridMismatchError(CheckpointError, GridMismatchError):
    """The checkpoint's grid is not the expected one (also a :class:`~genda.grid.GridMismatchError`)."""


# ---------------------------------------------------------------------------- names
def resolve_checkpoint(name_or_path: str | os.PathLike[str]) -> Path:
    """The directory of a checkpoint given by a shipped name or a path.

    A bare name in :data:`SHIPPED_CHECKPOINTS` (``"default"``,
    ``"default-layer2d"``) means the checkpoint shipped inside the package
    (write ``./default`` for a local directory of that name); anything else is
    a path.

    Raises:
        CheckpointError: the shipped checkpoint is not installed, or the path
            is not a directory.
    """
    if isinstance(name_or_path, str) and name_or_path in SHIPPED_CHECKPOINTS:
        path = CHECKPOINTS_DIR / name_or_path
        if not (path / CONFIG_FILE).is_file():
            raise CheckpointError(
                f"no shipped checkpoint named {name_or_path!r} in this installation "
                f"(looked in {path}); train one with `genda train` and pass its directory"
            )
        return path
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(
            f"{path} is a file; a checkpoint is a directory holding {CONFIG_FILE} and {MODEL_FILE}"
        )
    text = str(name_or_path)
    if isinstance(name_or_path, str) and "/" not in text and os.sep not in text:
        shipped = ", ".join(SHIPPED_CHECKPOINTS)
        raise CheckpointError(
            f"no checkpoint directory {text!r} and no shipped checkpoint of that name "
            f"(shipped names: {shipped})"
        )
    raise CheckpointError(f"no checkpoint at {path} (no such directory)")


# ---------------------------------------------------------------------------- model <-> config
def describe_denoiser(denoiser: EDMDenoiser) -> tuple[Strategy, UNet, StrategyBackbone]:
    """The strategy, U-Net and field backbone of a checkpointable denoiser.

    Raises:
        TypeError: ``denoiser`` is not ``EDMDenoiser(StrategyBackbone(strategy, UNet))``,
            the only structure a checkpoint describes.
    """
    if not isinstance(denoiser, EDMDenoiser):
        raise TypeError(f"expected an EDMDenoiser, got {type(denoiser).__name__}")
    backbone = denoiser.backbone
    if not isinstance(backbone, StrategyBackbone) or not isinstance(backbone.network, UNet):
        raise TypeError(
            "checkpoints describe EDMDenoiser(StrategyBackbone(strategy, UNet)) "
            "(genda.models.strategies.build_backbone); got a backbone of type "
            f"{type(backbone).__name__}"
        )
    return backbone.strategy, backbone.network, backbone


def _skip_config(denoiser: EDMDenoiser) -> dict[str, Any] | None:
    """``config.json``'s ``"skip"``: ``None`` for EDM's scalar ``c_skip``."""
    skip = denoiser.skip
    if skip is None:
        return None
    if not isinstance(skip, GaussianSkip):
        raise TypeError(f"checkpoints describe a GaussianSkip or none, not {type(skip).__name__}")
    return skip.config()


def build_skip(grid: Grid, config: Mapping[str, Any] | None) -> GaussianSkip | None:
    """The (unfitted) skip module that ``config.json``'s ``"skip"`` describes.

    Raises:
        CheckpointError: an unknown kind, or settings that do not fit ``grid``.
    """
    if config is None:
        return None
    if not isinstance(config, Mapping) or config.get("kind") != SKIP_KIND:
        raise CheckpointError(f"unknown skip {config!r}; this genda builds {SKIP_KIND!r} or none")
    try:
        return GaussianSkip(
            grid, truncation=config.get("truncation"), channels=config.get("channels")
        )
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"invalid skip {dict(config)}: {error}") from error


def build_denoiser(
    strategy: Strategy,
    grid: Grid,
    architecture: Mapping[str, Any],
    sigma_data: float = 1.0,
    skip: Mapping[str, Any] | None = None,
    coordinates: Mapping[str, Any] | None = None,
    normalization: Normalization | None = None,
) -> EDMDenoiser:
    """``EDMDenoiser(build_backbone(strategy, grid, ...))`` from a stored ``UNet.config``.

    The channel counts, ``cond_dim`` and ``pole_sign`` of ``architecture`` must
    be those that ``strategy`` gives on ``grid``. ``skip`` is the stored skip
    configuration (``None``: EDM's scalar ``c_skip``); its buffers come with the weights.
    ``coordinates`` is the stored ``"coordinates"`` entry (``None``: grid
    coordinates; :mod:`genda.models.coordinates`), which needs ``normalization``.

    Raises:
        CheckpointError: the architecture or skip does not fit the strategy and grid,
            or is not a valid U-Net configuration.
    """
    fixed = ("in_channels", "out_channels", "cond_dim", "pole_sign")
    options = {k: v for k, v in architecture.items() if k not in fixed}
    try:
        backbone = build_backbone(strategy, grid, **options)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"invalid architecture {dict(architecture)}: {error}") from error
    built = backbone.network.config
    wrong = [
        f"{k}: {architecture.get(k)!r} stored, {built[k]!r} for strategy {strategy.name!r} on this grid"
        for k in built
        if k in architecture and json_round_trip(architecture[k]) != json_round_trip(built[k])
    ]
    missing = [k for k in built if k not in architecture]
    if wrong or missing:
        details = "; ".join(wrong + [f"{k}: missing" for k in missing])
        raise CheckpointError(f"architecture does not match strategy and grid: {details}")
    transform = None
    if coordinates is not None:
        if normalization is None:
            raise CheckpointError("coordinates need the checkpoint's normalization")
        try:
            transform = build_coordinates(grid, normalization, coordinates)
        except InvalidValueError as error:
            raise CheckpointError(str(error)) from error
    return EDMDenoiser(
        backbone, sigma_data=sigma_data, skip=build_skip(grid, skip), coordinates=transform
    )


# ---------------------------------------------------------------------------- optimizer
def optimizer_tensors(
    optimizer: torch.optim.Optimizer, model: nn.Module
) -> dict[str, torch.Tensor]:
    """The optimizer's per-parameter state as ``{"<parameter name>.<key>": tensor}`` on the CPU.

    Parameters are named by ``model.named_parameters()``; hyper-parameters
    (learning rate, betas) are not stored: they come from the training config.

    Raises:
        TypeError: a state entry is not a tensor (the format holds tensors only).
    """
    names = {id(p): name for name, p in model.named_parameters()}
    out: dict[str, torch.Tensor] = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            if id(param) not in names:
                raise InvalidValueError("the optimizer holds a parameter that is not in the model")
            for key, value in optimizer.state.get(param, {}).items():
                if not isinstance(value, torch.Tensor):
                    raise TypeError(
                        f"optimizer state {key!r} of {names[id(param)]} is a {type(value).__name__}, "
                        "not a tensor"
                    )
                out[f"{names[id(param)]}.{key}"] = value.detach().to("cpu").clone().contiguous()
    return out


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, model: nn.Module, tensors: Mapping[str, torch.Tensor]
) -> None:
    """Restore the state written by :func:`optimizer_tensors` into a fresh ``optimizer``.

    Raises:
        CheckpointError: a tensor names no parameter of ``model``, or has the wrong shape.
    """
    params = dict(model.named_parameters())
    index = {
        id(p): i
        for i, p in enumerate(p for group in optimizer.param_groups for p in group["params"])
    }
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        name, _, entry = key.rpartition(".")
        if name not in params or id(params[name]) not in index:
            raise CheckpointError(
                f"{OPTIMIZER_FILE}: tensor {key!r} names no parameter of the model"
            )
        if entry != "step" and value.shape != params[name].shape:
            raise CheckpointError(
                f"{OPTIMIZER_FILE}: {key!r} has shape {tuple(value.shape)}, "
                f"the parameter has {tuple(params[name].shape)}"
            )
        state.setdefault(index[id(params[name])], {})[entry] = value
    current = optimizer.state_dict()
    optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})


# ---------------------------------------------------------------------------- save
def _state_tensors(module: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {
        prefix + name: t.detach().to("cpu").clone().contiguous()
        for name, t in module.state_dict().items()
    }


def _json_clean(value: Any) -> Any:
    """NaN and infinities -> ``None`` (valid JSON), numpy scalars -> Python, tuples -> lists."""
    if isinstance(value, Mapping):
        return {str(k): _json_clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def check_replaceable(path: str | os.PathLike[str]) -> None:
    """Refuse to let a checkpoint replace something that is not a checkpoint.

    ``path`` may be absent, an empty directory, or an earlier genda checkpoint,
    recognised by its ``config.json`` naming genda's format and its weights
    (:func:`genda.ownership.written_kind`): another tool's ``config.json`` does not count.

    Raises:
        OutputExistsError: ``path`` is a file, a link, or a non-empty directory
            that is not a genda checkpoint.
    """
    path = Path(path)
    if not (path.exists() or path.is_symlink()) or is_empty_directory(path):
        return
    if written_kind(path) == "checkpoint":
        return
    raise OutputExistsError(
        f"{path} exists and is not a genda checkpoint (no {CONFIG_FILE} of format {FORMAT!r} "
        f"with {MODEL_FILE}); refusing to replace it: choose another directory"
    )


_NUMBER_LIST = re.compile(r"\[\s*(-?[0-9][-+0-9.eE]*(?:,\s*-?[0-9][-+0-9.eE]*)*)\s*\]")


def _compact_number_lists(text: str) -> str:
    """Indented JSON with each list of numbers on one line (coordinates stay readable)."""
    return _NUMBER_LIST.sub(
        lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text
    )


def save_checkpoint(
    path: str | os.PathLike[str],
    denoiser: EDMDenoiser,
    *,
    grid: Grid,
    normalization: Normalization,
    ema: nn.Module | None = None,
    training: Mapping[str, Any] | None = None,
    run: Mapping[str, Any] | None = None,
    step: int = 0,
    archive: Mapping[str, Any] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    metrics: Mapping[str, Any] | None = None,
    extra_files: Mapping[str, bytes] | None = None,
) -> Path:
    """Write a checkpoint directory at ``path`` atomically (replacing one that is there).

    Args:
        path: the checkpoint directory.
        denoiser: ``EDMDenoiser(StrategyBackbone(strategy, UNet))``; its weights are the raw ones.
        grid: the grid the model works on (its altitudes must be the backbone's levels).
        normalization: statistics that map physical fields to the model's space.
        ema: module with the same state-dict names holding the EMA weights;
            default: the raw weights again.
        training: the training configuration (JSON-serialisable).
        run: facts about the run (number of ranks, device, command line...).
        step: optimizer steps done.
        archive: description of the training data (e.g.
            :func:`genda.models.data.archive_description`, with ``fingerprint``).
        optimizer: written to ``optimizer.safetensors`` for resuming.
        metrics: last losses and the like, for information.
        extra_files: more files ``{name: bytes}`` (e.g. ``loss.csv``), not checksummed.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        TypeError: the denoiser has another structure.
        GridMismatchError: ``grid`` or ``normalization`` do not fit the model.
        FileExistsError: ``path`` exists and is not a checkpoint (:func:`check_replaceable`).
    """
    strategy, network, backbone = describe_denoiser(denoiser)
    if not np.allclose(backbone.altitudes, grid.altitude, atol=1e-6, rtol=0):
        raise GridMismatchError(
            f"the backbone's levels {backbone.altitudes.tolist()} km are not the grid's "
            f"{grid.altitude.tolist()} km"
        )
    expected = strategy.network_channels(grid)
    actual = (network.in_channels, network.out_channels, network.cond_dim)
    if expected != actual:
        raise GridMismatchError(
            f"the network has (in, out, cond) channels {actual}; strategy {strategy.name!r} "
            f"needs {expected} on this grid"
        )
    if normalization.variables != grid.variables or normalization.mean.shape != (
        len(grid.variables),
        grid.nlevels,
    ):
        raise GridMismatchError(
            f"normalisation for {list(normalization.variables)} x {normalization.mean.shape[1]} "
            f"levels does not fit the grid's {list(grid.variables)} x {grid.nlevels}"
        )
    tensors = _state_tensors(ema if ema is not None else denoiser, EMA_PREFIX)
    tensors.update(_state_tensors(denoiser, RAW_PREFIX))
    blobs = {MODEL_FILE: save_safetensors(tensors, metadata={"format": "pt", "genda": FORMAT})}
    if optimizer is not None:
        blobs[OPTIMIZER_FILE] = save_safetensors(
            optimizer_tensors(optimizer, denoiser), metadata={"format": "pt", "genda": FORMAT}
        )
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "genda_version": genda.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "grid": grid.to_dict(),
        "strategy": {"name": strategy.name, "options": strategy.options()},
        "architecture": {"backbone": "unet", "config": network.config},
        "sigma_data": denoiser.sigma_data,
        "skip": _skip_config(denoiser),
        # absent for grid coordinates, so that such checkpoints read as before
        **({"coordinates": c} if (c := coordinates_config(denoiser)) else {}),
        "normalization": normalization.to_dict(),
        "training": dict(training or {}),
        "run": dict(run or {}),
        "step": int(step),
        "parameters": int(sum(p.numel() for p in denoiser.parameters())),
        "archive": dict(archive or {}),
        "metrics": dict(metrics or {}),
        "files": {
            name: {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
            for name, blob in blobs.items()
        },
    }
    text = _compact_number_lists(json.dumps(_json_clean(config), indent=2, allow_nan=False)) + "\n"
    for name in extra_files or {}:
        if name in (CONFIG_FILE, MODEL_FILE, OPTIMIZER_FILE) or Path(name).name != name:
            raise InvalidValueError(
                f"extra file name {name!r} is reserved or not a plain file name"
            )

    path = Path(os.path.abspath(path))
    check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(path)
    remove_path(partial)
    try:
        partial.mkdir()
        for name, blob in {**blobs, **(extra_files or {})}.items():
            (partial / name).write_bytes(blob)
        (partial / CONFIG_FILE).write_text(text, encoding="utf-8")  # last: marks completeness
        publish_directory(partial, path)
    except BaseException:
        remove_path(partial)
        raise
    return path


# ---------------------------------------------------------------------------- read
@dataclass
class CheckpointContents:
    """A checkpoint's files, read and checked against their checksums (not yet against a model).

    Attributes:
        path: the directory.
        config: the parsed ``config.json``.
        ema: EMA weights by state-dict name (prefix removed), on the CPU.
        model: raw weights by state-dict name.
        optimizer: optimizer state tensors, if read and present.
    """

    path: Path
    config: dict[str, Any]
    ema: dict[str, torch.Tensor]
    model: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor] | None = None


def _read_verified(path: Path, name: str, files: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Read ``path / name`` once, check its SHA-256 against ``files[name]``, parse it."""
    entry = files.get(name)
    if not isinstance(entry, Mapping) or not isinstance(entry.get("sha256"), str):
        raise CheckpointError(f"{path / CONFIG_FILE}: 'files' has no sha256 for {name}")
    file = path / name
    if not file.is_file():
        raise CheckpointError(f"{file}: missing (the checkpoint lists it in {CONFIG_FILE})")
    blob = file.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != entry["sha256"]:
        raise CheckpointError(
            f"{file}: checksum mismatch (SHA-256 {digest[:16]}..., {CONFIG_FILE} says "
            f"{entry['sha256'][:16]}...); the file is corrupt or was changed after saving"
        )
    try:
        return load_safetensors(blob)
    except (SafetensorError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{file}: not a readable safetensors file: {error}") from error


def read_checkpoint(
    name_or_path: str | os.PathLike[str], *, with_optimizer: bool = False
) -> CheckpointContents:
    """Read and check a checkpoint's files (see :func:`resolve_checkpoint` for names).

    Checks: the directory and files exist, ``config.json`` is a JSON object of
    this format and version with all keys, each safetensors file matches its
    SHA-256, and every weight is named ``ema.*`` or ``model.*``.

    Raises:
        CheckpointError: naming the file and the problem.
    """
    path = resolve_checkpoint(name_or_path)
    config_file = path / CONFIG_FILE
    if not config_file.is_file():
        present = sorted(p.name for p in path.iterdir())
        raise CheckpointError(
            f"{path}: not a checkpoint, {CONFIG_FILE} is missing (files present: {present})"
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise CheckpointError(f"{config_file}: not UTF-8 text ({error})") from error
    except json.JSONDecodeError as error:
        raise CheckpointError(
            f"{config_file}: not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})"
        ) from error
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_file}: expected a JSON object, got {type(config).__name__}")
    if config.get("format") != FORMAT:
        raise CheckpointError(
            f"{config_file}: not a genda checkpoint (format {config.get('format')!r}, expected {FORMAT!r})"
        )
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{config_file}: checkpoint format version {version!r} is not supported by genda "
            f"{genda.__version__}, which reads version {FORMAT_VERSION}"
            + ("; upgrade genda" if isinstance(version, int) and version > FORMAT_VERSION else "")
        )
    missing = [key for key in REQUIRED_KEYS if key not in config]
    if missing:
        raise CheckpointError(f"{config_file}: missing keys {missing}")
    files = config["files"]
    if not isinstance(files, Mapping):
        raise CheckpointError(f"{config_file}: 'files' must be an object of file checksums")
    if not (path / MODEL_FILE).is_file():
        raise CheckpointError(f"{path / MODEL_FILE}: missing; the checkpoint has no weights")
    tensors = _read_verified(path, MODEL_FILE, files)
    ema = {k.removeprefix(EMA_PREFIX): v for k, v in tensors.items() if k.startswith(EMA_PREFIX)}
    raw = {k.removeprefix(RAW_PREFIX): v for k, v in tensors.items() if k.startswith(RAW_PREFIX)}
    stray = sorted(k for k in tensors if not k.startswith((EMA_PREFIX, RAW_PREFIX)))
    if stray:
        raise CheckpointError(
            f"{path / MODEL_FILE}: tensors {stray[:5]} are neither EMA ('{EMA_PREFIX}') "
            f"nor raw ('{RAW_PREFIX}') weights"
        )
    optimizer = None
    if with_optimizer and OPTIMIZER_FILE in files:
        optimizer = _read_verified(path, OPTIMIZER_FILE, files)
    return CheckpointContents(path, config, ema, raw, optimizer)


def check_tensors(
    tensors: Mapping[str, torch.Tensor], module: nn.Module, what: str, file: Path
) -> None:
    """Check names, shapes and dtype kinds of ``tensors`` against ``module.state_dict()``.

    Raises:
        CheckpointError: naming ``file``, with up to five examples of each problem.
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [
        f"{name} {tuple(tensors[name].shape)} (expected {tuple(t.shape)})"
        for name, t in expected.items()
        if name in tensors and tensors[name].shape != t.shape
    ]
    dtypes = [
        f"{name} {tensors[name].dtype}"
        for name, t in expected.items()
        if name in tensors and tensors[name].is_floating_point() != t.is_floating_point()
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensors, e.g. {missing[:5]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors, e.g. {unexpected[:5]}")
    if wrong:
        problems.append(f"{len(wrong)} with the wrong shape, e.g. {wrong[:5]}")
    if dtypes:
        problems.append(f"wrong dtypes: {dtypes[:5]}")
    if problems:
        raise CheckpointError(
            f"{file}: {what} weights do not match the architecture in {CONFIG_FILE}: "
            + "; ".join(problems)
        )


# ---------------------------------------------------------------------------- load
@dataclass
class LoadedPrior:
    """A trained prior, ready to sample or to wrap with guidance.

    Attributes:
        denoiser: ``D(x (B, V, L, H, W), sigma (B,))`` on normalised fields, in
            eval mode with frozen parameters.
        strategy: how fields are presented to the network (``joint3d`` / ``layer2d``).
        grid: the grid of the fields ``(V, L, H, W)``.
        normalization: physical <-> normalised fields.
        config: the checkpoint's ``config.json``.
        path: the checkpoint directory.
    """

    denoiser: EDMDenoiser
    strategy: Strategy
    grid: Grid
    normalization: Normalization
    config: dict[str, Any] = field(repr=False)
    path: Path

    @property
    def step(self) -> int:
        """Optimizer steps the weights were trained for."""
        return int(self.config["step"])

    @property
    def sigma_data(self) -> float:
        return self.denoiser.sigma_data

    @property
    def state_shape(self) -> tuple[int, ...]:
        """The shape of one diffusion state: ``grid.shape``, or the whitened ``(V, L, K)``."""
        return self.denoiser.state_shape(tuple(self.grid.shape))

    @property
    def weights_sha256(self) -> str:
        """SHA-256 of ``model.safetensors``: the identity of the weights (checked at loading)."""
        return str(self.config["files"][MODEL_FILE]["sha256"])

    @property
    def fingerprint(self) -> str | None:
        """Fingerprint of the training archive, if recorded."""
        value = self.config.get("archive", {}).get("fingerprint")
        return None if value is None else str(value)


def _objects_from_config(
    config: Mapping[str, Any], config_file: Path, expected_grid: Grid | None
) -> tuple[Grid, Normalization, Strategy, EDMDenoiser]:
    """Grid, normalisation, strategy and an (untrained) denoiser from ``config.json``."""
    try:
        grid = Grid.from_dict(config["grid"])
    except (GridMismatchError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{config_file}: invalid grid: {error}") from error
    if expected_grid is not None:
        problems = grid.differences(expected_grid)
        if problems:
            raise CheckpointGridMismatchError(
                f"{config_file}: the checkpoint's grid differs from the expected grid (checkpoint "
                "vs expected): " + "; ".join(problems)
            )
    try:
        normalization = Normalization.from_dict(config["normalization"])
    except (GridMismatchError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{config_file}: invalid normalization: {error}") from error
    if normalization.variables != grid.variables or normalization.mean.shape != (
        len(grid.variables),
        grid.nlevels,
    ):
        raise CheckpointError(
            f"{config_file}: normalization for {list(normalization.variables)} x "
            f"{normalization.mean.shape[1]} levels does not fit the grid "
            f"({list(grid.variables)} x {grid.nlevels})"
        )
    spec = config["strategy"]
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
        raise CheckpointError(f"{config_file}: 'strategy' must be {{'name': ..., 'options': ...}}")
    try:
        strategy = get_strategy(spec["name"], **dict(spec.get("options") or {}))
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{config_file}: invalid strategy: {error}") from error
    arch = config["architecture"]
    if not isinstance(arch, Mapping) or arch.get("backbone") != "unet":
        raise CheckpointError(
            f"{config_file}: unknown architecture {arch!r}; this genda builds 'unet' backbones"
        )
    if not isinstance(arch.get("config"), Mapping):
        raise CheckpointError(f"{config_file}: architecture has no 'config' object")
    sigma_data = config["sigma_data"]
    if not isinstance(sigma_data, int | float) or not (
        math.isfinite(sigma_data) and sigma_data > 0
    ):
        raise CheckpointError(
            f"{config_file}: sigma_data must be a positive number, got {sigma_data!r}"
        )
    try:
        denoiser = build_denoiser(
            strategy,
            grid,
            arch["config"],
            float(sigma_data),
            config.get("skip"),
            config.get("coordinates"),
            normalization,
        )
    except CheckpointError as error:
        raise CheckpointError(f"{config_file}: {error}") from error
    return grid, normalization, strategy, denoiser


def restore_denoiser(
    contents: CheckpointContents,
    expected_grid: Grid | None = None,
    weights: str = "ema",
) -> tuple[EDMDenoiser, Grid, Normalization, Strategy]:
    """Rebuild the denoiser of ``contents`` with its ``"ema"`` or ``"model"`` (raw) weights, on the CPU.

    Both weight sets are checked against the architecture (names, shapes).

    Raises:
        CheckpointError: see :func:`load_checkpoint`.
    """
    config_file = contents.path / CONFIG_FILE
    grid, normalization, strategy, denoiser = _objects_from_config(
        contents.config, config_file, expected_grid
    )
    if weights not in ("ema", "model"):
        raise InvalidValueError(f"weights must be 'ema' or 'model', got {weights!r}")
    model_file = contents.path / MODEL_FILE
    check_tensors(contents.ema, denoiser, "EMA", model_file)
    check_tensors(contents.model, denoiser, "raw", model_file)
    tensors = contents.ema if weights == "ema" else contents.model
    denoiser.load_state_dict(dict(tensors), strict=True)
    if unfitted_statistics(denoiser.coordinates):
        raise CheckpointError(
            f"{model_file}: the statistics of the whitened coordinates are all zero "
            "(never fitted, or damaged); retrain or restore the checkpoint"
        )
    return denoiser, grid, normalization, strategy


def load_checkpoint(
    name_or_path: str | os.PathLike[str],
    expected_grid: Grid | None = None,
    device: torch.device | str = "cpu",
    *,
    weights: str = "ema",
) -> LoadedPrior:
    """Load a checkpoint into a ready-to-use prior (EMA weights, eval mode, frozen).

    Args:
        name_or_path: a checkpoint directory or a shipped name (:func:`resolve_checkpoint`).
        expected_grid: the grid the caller works on; a different grid is an error
            that lists the differences.
        device: where the denoiser lives.
        weights: ``"ema"`` (default, the weights to sample with) or ``"model"``
            (the raw weights of the last step).

    Raises:
        CheckpointError: missing files, bad JSON, unknown format version,
            checksum mismatch, weights that do not fit the architecture;
            :class:`CheckpointGridMismatchError` for a grid mismatch.
    """
    contents = read_checkpoint(name_or_path)
    denoiser, grid, normalization, strategy = restore_denoiser(contents, expected_grid, weights)
    denoiser = denoiser.to(check_device(device)).eval().requires_grad_(False)
    return LoadedPrior(denoiser, strategy, grid, normalization, contents.config, contents.path)
