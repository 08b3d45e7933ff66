"""Training the diffusion prior: EDM loss, AdamW, EMA, validation, checkpoints, resume.

:func:`train` fits an :class:`~genda.models.diffusion.EDMDenoiser` (built by
:func:`~genda.models.strategies.build_backbone`) to the normalised fields of
a :class:`~genda.models.data.TrainingData` with the EDM loss
(:func:`~genda.models.diffusion.edm_loss`: log-normal noise levels, weighting
``lambda(sigma)``), and writes a checkpoint (:mod:`genda.models.checkpoint`).

Reproducibility. Every random number of step ``s`` comes from generators
seeded by ``(seed, s, slot)`` -- one per sample slot of the global batch, for
its noise level and its noise -- and the batch itself is a pure function of
``(seed, s)`` (:class:`~genda.models.data.StepBatches`). Nothing random is
carried from one step to the next, so

* a run is deterministic for a seed on the CPU (the model's initial weights
  are the caller's: seed the global RNG before building the model);
* a run resumed from the checkpoint of step ``N`` and continued to ``N + M``
  follows the uninterrupted run (same batches, same noise, optimizer and EMA
  restored); on the CPU the weights agree bit for bit in practice;
* with ``torch.distributed`` (DDP) each rank takes the slots ``rank, rank +
  world, ...`` of the same global batch with the same per-slot generators,
  so ``world`` ranks compute the same gradient as one process would, up to
  the order of the floating-point sums.

EMA (:mod:`genda.models.ema`). ``ema_decay`` with the usual warm-up ``beta_s = min(ema_decay, (1 + s) /
(10 + s))``, or, when ``ema_halflife_samples`` is set, EDM's half-life in
samples ``beta = 0.5 ** (batch / halflife)`` with the half-life ramped up as
``ema_rampup * samples_seen`` (NVlabs/edm ``training_loop.py``).

Validation (:mod:`genda.models.validation`). The validation loss is the EDM loss of the EMA model on the
held-out fields at the fixed noise levels ``val_sigmas``, averaged over them;
the noise of each (field, level) comes from a generator seeded by the field's
time index and the level, so the number is the same whatever the batch size,
the training seed or the number of ranks, and comparable between runs on the
same archive and split. At most ``val_samples`` fields are used (evenly
spaced over the validation block).

Modules. The settings and the learning-rate schedule are in
:mod:`~genda.models.training_config`, the device, ranks and RNG in
:mod:`~genda.models.training_device`, one optimizer step in
:mod:`~genda.models.training_step`, the loss log in
:mod:`~genda.models.loss_log`, resuming in :mod:`~genda.models.training_resume`,
ending a run early (the stop hook, the plateau rule) in
:mod:`~genda.models.training_stop` and the loop in
:mod:`~genda.models.training_loop`; their public names are importable from here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from genda.errors import InvalidValueError, OutputExistsError
from genda.grid import Grid
from genda.models.checkpoint import (
    CheckpointError,
    check_replaceable,
    describe_denoiser,
    load_optimizer_state,
)
from genda.models.data import StepBatches, TrainingData
from genda.models.diffusion import EDMDenoiser
from genda.models.ema import EMA
from genda.models.loss_log import CSV_COLUMNS, LOSS_CSV, LOSS_PNG
from genda.models.training_config import TrainConfig, learning_rate
from genda.models.training_device import distributed, resolve_device
from genda.models.training_loop import TrainingDivergedError, TrainingLoop, TrainResult
from genda.models.training_resume import ResumeState, read_resume
from genda.models.training_step import optimization_step
from genda.models.training_stop import PlateauStop, StopRule
from genda.models.validation import validation_loss

__all__ = [
    "CSV_COLUMNS",
    "EMA",
    "LOSS_CSV",
    "LOSS_PNG",
    "PlateauStop",
    "StopRule",
    "TrainConfig",
    "TrainResult",
    "TrainingDivergedError",
    "learning_rate",
    "optimization_step",
    "resolve_device",
    "train",
    "validation_loss",
]


def train(
    denoiser: EDMDenoiser,
    data: TrainingData,
    config: TrainConfig,
    checkpoint_dir: str | os.PathLike[str],
    resume: str | os.PathLike[str] | None = None,
    progress: bool = True,
    *,
    overwrite: bool = False,
    description: Mapping[str, Any] | None = None,
    stop: StopRule | None = None,
) -> TrainResult:
    """Train ``denoiser`` on ``data`` and write the checkpoint ``checkpoint_dir``.

    Args:
        denoiser: ``EDMDenoiser(StrategyBackbone(strategy, UNet))`` on ``data.grid``
            (e.g. from :func:`genda.models.checkpoint.build_denoiser`); trained in
            place (its raw weights), moved to the training device.
        data: training and validation fields (normalised), archive description.
        config: the run's settings.
        checkpoint_dir: the checkpoint directory, rewritten atomically every
            ``checkpoint_every`` steps and at the end; it holds ``loss.csv`` and ``loss.png``.
        resume: a checkpoint to continue from (step count, weights, EMA,
            optimizer, loss log); its architecture, strategy, grid and archive
            fingerprint must match. ``config.steps`` is the total to reach.
        progress: show a progress bar (rank 0 only).
        overwrite: replace an existing ``checkpoint_dir`` when not resuming.
        description: facts stored in the checkpoint's ``run`` (e.g. the command line).
        stop: a stop rule, called with the loss log after each of its rows; a
            string it returns ends the run there (validated and checkpointed)
            and is :attr:`TrainResult.stopped` (:mod:`genda.models.training_stop`,
            e.g. :class:`~genda.models.training_stop.PlateauStop`).

    Returns:
        :class:`TrainResult`.

    Raises:
        FileExistsError: ``checkpoint_dir`` exists, not resuming and not ``overwrite``;
            or it exists and is not a checkpoint (never replaced).
        CheckpointError: the resume checkpoint is unreadable or does not fit.
        FloatingPointError: the training loss became NaN or infinite (nothing is saved).
    """
    strategy, _, backbone = describe_denoiser(denoiser)
    _check_levels(backbone.altitudes, data.grid)
    checkpoint_dir = Path(checkpoint_dir)
    rank, world = distributed()
    _check_output(checkpoint_dir, config, world, resume, overwrite)
    device = resolve_device(config.device)
    state = ResumeState() if resume is None else read_resume(resume, denoiser, data, config)

    denoiser.to(device).train()
    ema = EMA(denoiser, config)
    if state.ema is not None:
        ema.module.load_state_dict(state.ema, strict=True)
    optimizer = _optimizer(denoiser, config, state, resume)
    loop = TrainingLoop(
        denoiser=denoiser,
        forward=_forward_module(denoiser, device, world, config.compile),
        optimizer=optimizer,
        ema=ema,
        data=data,
        config=config,
        batches=StepBatches(data.train.sampler(seed=config.seed), config.batch_size),
        device=device,
        rank=rank,
        world=world,
        checkpoint_dir=checkpoint_dir,
        name=strategy.name,
        run_info={"world_size": world, "device": str(device), **dict(description or {})},
        history=state.history,
        wall_before=state.wall_s,
        stop=stop,
    )
    return loop.run(state.step, progress)


def _check_levels(altitudes: np.ndarray, grid: Grid) -> None:
    """The model's levels must be the data's."""
    if not np.allclose(altitudes, grid.altitude, atol=1e-6, rtol=0):
        raise InvalidValueError(
            f"the model's levels {altitudes.tolist()} km are not the data's "
            f"{grid.altitude.tolist()} km"
        )


def _check_output(
    checkpoint_dir: Path,
    config: TrainConfig,
    world: int,
    resume: str | os.PathLike[str] | None,
    overwrite: bool,
) -> None:
    """The batch must split over the ranks, and the output may be (re)written."""
    if config.batch_size % world:
        raise InvalidValueError(f"batch_size {config.batch_size} is not divisible by {world} ranks")
    # Continuing a checkpoint in place replaces it by design; writing a resumed run
    # to another existing directory replaces that one, which needs overwrite.
    in_place = resume is not None and Path(resume).resolve() == checkpoint_dir.resolve()
    if not in_place and (checkpoint_dir.exists() or checkpoint_dir.is_symlink()) and not overwrite:
        raise OutputExistsError(
            f"{checkpoint_dir} exists; pass overwrite=True (--overwrite) to replace it "
            "or resume=... (--resume) to continue it"
        )
    check_replaceable(checkpoint_dir)  # before training, not at the first save


def _optimizer(
    denoiser: EDMDenoiser,
    config: TrainConfig,
    state: ResumeState,
    resume: str | os.PathLike[str] | None,
) -> torch.optim.Optimizer:
    """AdamW over ``denoiser``'s parameters, with the resumed state if any."""
    optimizer = torch.optim.AdamW(
        denoiser.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
    )
    if state.optimizer is not None:
        load_optimizer_state(optimizer, denoiser, state.optimizer)
    elif resume is not None:
        raise CheckpointError(f"{resume}: no optimizer.safetensors; cannot resume the optimizer")
    return optimizer


def _forward_module(
    denoiser: EDMDenoiser, device: torch.device, world: int, compile_model: bool
) -> nn.Module:
    """The module the steps call: ``denoiser``, wrapped in DDP and compiled when asked."""
    forward: nn.Module = denoiser
    if world > 1:
        forward = nn.parallel.DistributedDataParallel(
            denoiser, device_ids=[device.index] if device.type == "cuda" else None
        )
    if compile_model:
        forward = torch.compile(forward)  # type: ignore[assignment]
    return forward
