"""Resuming training: read a checkpoint, check that it fits, restore the raw weights.

A run resumed from the checkpoint of step ``N`` continues with the same
batches and noise as the uninterrupted run, with the optimizer, the EMA and
the loss log restored; the checkpoint must describe the same strategy,
architecture, grid and archive.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from genda.grid import Grid
from genda.json_values import json_round_trip
from genda.models.checkpoint import (
    MODEL_FILE,
    CheckpointError,
    check_tensors,
    describe_denoiser,
    read_checkpoint,
)
from genda.models.data import TrainingData
from genda.models.diffusion import EDMDenoiser
from genda.models.loss_log import LOSS_CSV, read_history
from genda.models.training_config import TrainConfig

__all__ = ["ResumeState", "check_resume", "read_resume"]


@dataclass
class ResumeState:
    """Where a run starts: step 0 with an empty log, or a checkpoint's state.

    Attributes:
        step: optimizer steps already done.
        history: the rows of the loss log up to ``step``.
        wall_s: wall time already spent.
        ema: the EMA weights to restore (``None``: start from the raw weights).
        optimizer: the optimizer state to restore (``None``: a fresh optimizer).
    """

    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    ema: dict[str, Tensor] | None = None
    optimizer: dict[str, Tensor] | None = None


def read_resume(
    resume: str | os.PathLike[str],
    denoiser: EDMDenoiser,
    data: TrainingData,
    config: TrainConfig,
) -> ResumeState:
    """Check the checkpoint ``resume`` against the run, load its raw weights into ``denoiser``.

    Raises:
        CheckpointError: the checkpoint is unreadable, does not fit, or is
            beyond ``config.steps``.
    """
    contents = read_checkpoint(resume, with_optimizer=True)
    check_resume(contents.config, denoiser, data, contents.path)
    raw = check_tensors(contents.model, denoiser, "raw", contents.path / MODEL_FILE)
    ema = check_tensors(contents.ema, denoiser, "EMA", contents.path / MODEL_FILE)
    denoiser.load_state_dict(raw, strict=True)
    step = int(contents.config["step"])
    state = ResumeState(
        step=step,
        history=read_history(contents.path / LOSS_CSV, step),
        wall_s=float(contents.config.get("metrics", {}).get("wall_s") or 0.0),
        ema=ema,
        optimizer=contents.optimizer,
    )
    if step > config.steps:
        raise CheckpointError(
            f"{contents.path}: the checkpoint is at step {step}, beyond steps={config.steps}"
        )
    return state


def check_resume(
    config: Mapping[str, Any], denoiser: EDMDenoiser, data: TrainingData, path: Path
) -> None:
    """The resumed checkpoint must describe this model and this data.

    Raises:
        CheckpointError: listing every difference.
    """
    strategy, network, _ = describe_denoiser(denoiser)
    problems = []
    stored = config.get("strategy", {})
    if stored.get("name") != strategy.name or stored.get("options") != json_round_trip(
        strategy.options()
    ):
        problems.append(
            f"strategy {stored.get('name')!r} {stored.get('options')} in the checkpoint, "
            f"{strategy.name!r} {strategy.options()} here"
        )
    arch = config.get("architecture", {}).get("config")
    if arch != json_round_trip(network.config):
        problems.append(f"architecture {arch} in the checkpoint, {network.config} here")
    differences = data.grid.differences(_grid_of(config, path))
    if differences:
        problems.append("grid: " + "; ".join(differences))
    fingerprint = config.get("archive", {}).get("fingerprint")
    if fingerprint != data.fingerprint:
        problems.append(
            f"archive fingerprint {str(fingerprint)[:12]}... in the checkpoint, "
            f"{data.fingerprint[:12]}... for this archive (resume on the same archive)"
        )
    if problems:
        raise CheckpointError(f"{path}: cannot resume: " + "; ".join(problems))


def _grid_of(config: Mapping[str, Any], path: Path) -> Grid:
    try:
        return Grid.from_dict(config["grid"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: invalid grid: {error}") from error
