"""Checkpoints of the diffusion prior: safetensors plus JSON, nothing that can run code.

A checkpoint is a directory holding ``config.json`` (everything needed to
rebuild and check the model: the format and its version, the genda version,
the grid, strategy, architecture, ``sigma_data``, skip, coordinates and
normalisation, the training configuration, the step count, a description of
the archive with its fingerprint (:func:`genda.models.data.archive_fingerprint`)
and the SHA-256 of each safetensors file), ``model.safetensors`` (EMA and raw
weights), optionally ``optimizer.safetensors`` and the training log.

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

This module is the entry point: names, saving, reading and loading. The
format (files, checksums, ``config.json``) is :mod:`genda.models.checkpoint_format`,
the objects built from it :mod:`genda.models.checkpoint_build`, the optimizer
state :mod:`genda.models.checkpoint_optimizer`; their names are importable from here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

import genda
from genda.devices import check_device
from genda.grid import Grid
from genda.models.checkpoint_build import (
    build_denoiser,
    build_skip,
    describe_denoiser,
    model_config,
    restore_denoiser,
)
from genda.models.checkpoint_format import (
    CONFIG_FILE,
    EMA_PREFIX,
    FORMAT,
    FORMAT_VERSION,
    MODEL_FILE,
    OPTIMIZER_FILE,
    RAW_PREFIX,
    REQUIRED_KEYS,
    CheckpointContents,
    CheckpointError,
    CheckpointGridMismatchError,
    check_replaceable,
    check_tensors,
    config_text,
    file_checksums,
    read_directory,
    safetensors_blob,
    state_tensors,
    without_derived,
    write_directory,
)
from genda.models.checkpoint_optimizer import load_optimizer_state, optimizer_tensors
from genda.models.diffusion import EDMDenoiser
from genda.models.strategies import Strategy
from genda.normalization import Normalization

__all__ = [
    "CHECKPOINTS_DIR",
    "CONFIG_FILE",
    "EMA_PREFIX",
    "FORMAT",
    "FORMAT_VERSION",
    "MODEL_FILE",
    "OPTIMIZER_FILE",
    "RAW_PREFIX",
    "REQUIRED_KEYS",
    "SHIPPED_CHECKPOINTS",
    "CheckpointContents",
    "CheckpointError",
    "CheckpointGridMismatchError",
    "LoadedPrior",
    "build_denoiser",
    "build_skip",
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
    "without_derived",
]

CHECKPOINTS_DIR = Path(__file__).resolve().parent / "checkpoints"
"""Where shipped checkpoints live inside the package."""
SHIPPED_CHECKPOINTS: dict[str, str] = {
    "default": "joint3d prior trained on the built-in model's default archive",
    "default-layer2d": "layer2d prior trained on the built-in model's default archive",
}
"""Names accepted by :func:`resolve_checkpoint`, with what they hold."""


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


# ---------------------------------------------------------------------------- save
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
    model = model_config(denoiser, grid, normalization)  # checks the model first
    tensors = state_tensors(ema if ema is not None else denoiser, EMA_PREFIX)
    tensors.update(state_tensors(denoiser, RAW_PREFIX))
    blobs = {MODEL_FILE: safetensors_blob(tensors)}
    if optimizer is not None:
        blobs[OPTIMIZER_FILE] = safetensors_blob(optimizer_tensors(optimizer, denoiser))
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "genda_version": genda.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **model,
        "training": dict(training or {}),
        "run": dict(run or {}),
        "step": int(step),
        "parameters": int(sum(p.numel() for p in denoiser.parameters())),
        "archive": dict(archive or {}),
        "metrics": dict(metrics or {}),
        "files": file_checksums(blobs),
    }
    return write_directory(path, blobs, config_text(config), extra_files)


# ---------------------------------------------------------------------------- read
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
    return read_directory(resolve_checkpoint(name_or_path), with_optimizer=with_optimizer)


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
