"""The loop of a training run: steps, the loss log, validation and checkpoints.

:class:`TrainingLoop` takes a prepared run (model on its device, EMA,
optimizer, resumed state) from :func:`genda.models.training.train`, runs the
steps up to ``config.steps``, logs the losses every ``log_every`` steps,
validates every ``val_every`` steps (and at the start and the end), writes
the checkpoint every ``checkpoint_every`` steps and at the end (rank 0
only), and returns a :class:`TrainResult`. A stop rule
(:mod:`genda.models.training_stop`) may end the run before ``config.steps``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from genda.errors import GendaError
from genda.models.calendar import calendar_condition
from genda.models.checkpoint import save_checkpoint
from genda.models.data import StepBatches, TrainingData
from genda.models.diffusion import EDMDenoiser
from genda.models.ema import EMA
from genda.models.loss_log import LOSS_CSV, LOSS_PNG, csv_text, last, plot_png, sigma_column
from genda.models.training_config import TrainConfig, learning_rate
from genda.models.training_device import own_rng
from genda.models.training_step import optimization_step
from genda.models.training_stop import StopRule
from genda.models.validation import validation_loss

__all__ = ["TrainResult", "TrainingDivergedError", "TrainingLoop"]


class TrainingDivergedError(GendaError, FloatingPointError):
    """The training loss became NaN or infinite."""


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        checkpoint: the final checkpoint directory.
        step: optimizer steps done (including those before a resume).
        train_loss: last logged training loss (mean over the last ``log_every`` steps).
        val_loss: last validation loss (``None`` without a validation set).
        initial_val_loss: the validation loss at the start of this run.
        samples_per_second: training throughput of this run (steps only,
            validation and checkpoints excluded; over all ranks).
        wall_seconds: wall time of this run.
        parameters: number of model parameters.
        history: the rows of ``loss.csv``.
        periodic: periodic checkpoints kept (``keep_checkpoints``).
        stopped: why the run ended before ``config.steps``: the stop rule's
            reason (:mod:`genda.models.training_stop`); ``None`` when it ran
            to ``config.steps``.
    """

    checkpoint: Path
    step: int
    train_loss: float | None
    val_loss: float | None
    initial_val_loss: float | None
    samples_per_second: float
    wall_seconds: float
    parameters: int
    history: list[dict[str, Any]] = field(repr=False)
    periodic: list[Path] = field(default_factory=list)
    stopped: str | None = None

    @property
    def loss_csv(self) -> Path:
        return self.checkpoint / LOSS_CSV

    @property
    def loss_plot(self) -> Path:
        return self.checkpoint / LOSS_PNG


@dataclass
class TrainingLoop:
    """One prepared training run, from its first step to its final checkpoint.

    Attributes:
        denoiser: the trained model (raw weights), on ``device``.
        forward: ``denoiser`` or its DDP / compiled wrapper.
        optimizer: AdamW over ``denoiser``'s parameters.
        ema: the EMA of the weights.
        data: training and validation fields.
        config: the run's settings.
        batches: the batch positions of each step.
        device: the training device.
        rank, world: this process's rank and the number of ranks.
        checkpoint_dir: the checkpoint written every ``checkpoint_every`` steps and at the end.
        name: the strategy's name (progress bar and plot title).
        run_info: facts stored in the checkpoint's ``run``.
        history: the loss log (rows of ``loss.csv``), extended in place.
        wall_before: wall time spent before a resume.
        stop: a stop rule called after every row of the log (``None``: run to
            ``config.steps``); :mod:`genda.models.training_stop`.
    """

    denoiser: EDMDenoiser
    forward: nn.Module
    optimizer: torch.optim.Optimizer
    ema: EMA
    data: TrainingData
    config: TrainConfig
    batches: StepBatches
    device: torch.device
    rank: int
    world: int
    checkpoint_dir: Path
    name: str
    run_info: dict[str, Any]
    history: list[dict[str, Any]]
    wall_before: float = 0.0
    stop: StopRule | None = None
    stopped: str | None = None  # the stop rule's reason, once it ended the run
    started: float = field(default_factory=time.perf_counter)
    overhead: float = 0.0  # validation and checkpoints, left out of the throughput
    periodic: list[Path] = field(default_factory=list)

    @property
    def lead(self) -> bool:
        """Rank 0 writes the checkpoints and shows the progress bar."""
        return self.rank == 0

    def wall(self) -> float:
        """Wall time of the run so far, including the time before a resume."""
        return self.wall_before + time.perf_counter() - self.started

    def run(self, start_step: int, progress: bool) -> TrainResult:
        """Train from ``start_step`` to ``config.steps`` and write the final checkpoint."""
        with own_rng(self.device):
            if not self.history:
                self._initial_validation(start_step)
            initial_val = last(self.history, "val_loss")
            bar = tqdm(
                total=self.config.steps,
                initial=start_step,
                desc=f"training {self.name}",
                unit="step",
                disable=not progress or not self.lead,
            )
            try:
                step = self._steps(start_step, bar)
            finally:
                bar.close()
            if self.lead:
                self.save(step, final=True)
        if self.world > 1:
            dist.barrier()
        return self._result(step, start_step, initial_val)

    def _initial_validation(self, step: int) -> None:
        columns = self.validate()
        if columns:
            row = {"step": step, "lr": learning_rate(self.config, step), "wall_s": self.wall()}
            self.history.append(row | columns)

    def _steps(self, step: int, bar: Any) -> int:
        """Optimizer steps from ``step`` to ``config.steps``; returns the last step reached."""
        config = self.config
        running = torch.zeros((), dtype=torch.float64, device=self.device)
        running_count = 0
        slots = np.arange(config.batch_size)[self.rank :: self.world]
        while step < config.steps:
            positions = self.batches.positions(step)[slots]
            x0 = self.data.train.batch(positions).to(self.device, non_blocking=True)
            loss = optimization_step(
                self.forward,
                self.denoiser,
                self.optimizer,
                self.ema,
                x0,
                slots.tolist(),
                step,
                config,
                self.device,
                self.rank,
                hours=self.data.train.hours(positions),
                cond=calendar_condition(
                    self.denoiser, self.data.train.times_of(positions), self.device
                ),
            )
            running += loss.double()
            running_count += 1
            step += 1
            bar.update(1)

            log_now = step % config.log_every == 0 or step == config.steps
            val_now = step % config.val_every == 0 or step == config.steps
            if log_now or val_now:
                row = self._log(step, running, running_count, validate=val_now)
                running.zero_()
                running_count = 0
                bar.set_postfix(
                    {k: f"{row[k]:.4f}" for k in ("train_loss", "val_loss") if k in row}
                )
                self.stopped = self._stop_reason()
                if self.stopped is not None:
                    if not val_now:  # a run ends validated, wherever it ends
                        self.history[-1] |= self.validate()
                    break
            if step % config.checkpoint_every == 0 and step < config.steps and self.lead:
                self.save(step, final=False)
        return step

    def _stop_reason(self) -> str | None:
        """The stop rule's answer on the log so far: rank 0 decides, every rank follows."""
        if self.stop is None:
            return None
        reason = self.stop(self.history) if self.lead else None
        if self.world > 1:
            # the rows hold all-reduced losses but each rank's own wall time: one decision
            box = [reason]
            dist.broadcast_object_list(box, src=0)
            reason = box[0]
        return reason

    def _log(self, step: int, running: Tensor, count: int, *, validate: bool) -> dict[str, Any]:
        """Append the row of ``step`` (mean training loss since the last row) to the log.

        Raises:
            TrainingDivergedError: the training loss is not finite.
        """
        total = running.clone()
        if self.world > 1:
            dist.all_reduce(total)
        train_loss = float(total) / (count * self.world)
        if not math.isfinite(train_loss):
            raise TrainingDivergedError(
                f"training loss is {train_loss} at step {step}; nothing was saved "
                "after the last checkpoint (lower the learning rate, check the data)"
            )
        # the learning rate of the step just taken
        row = {"step": step, "train_loss": train_loss, "lr": learning_rate(self.config, step - 1)}
        if validate:
            row |= self.validate()
        self.history.append(row | {"wall_s": self.wall()})
        return row

    def validate(self) -> dict[str, Any]:
        """Validation columns of a log row (empty without a validation set)."""
        if self.data.validation is None:
            return {}
        tick = time.perf_counter()
        sigmas = self.config.val_sigmas
        mean, per_sigma = validation_loss(
            self.ema.module,
            self.data.validation,
            sigmas,
            max_samples=self.config.val_samples,
            batch_size=self.config.batch_size,
            device=self.device,
            mixed_precision=self.config.mixed_precision,
            rank=self.rank,
            world=self.world,
        )
        self.overhead += time.perf_counter() - tick
        return {"val_loss": mean} | {
            sigma_column(s): v for s, v in zip(sigmas, per_sigma, strict=True)
        }

    def save(self, step: int, final: bool) -> None:
        """Write the checkpoint of ``step`` (and keep a copy if ``keep_checkpoints``)."""
        tick = time.perf_counter()
        files = {
            LOSS_CSV: csv_text(self.history, self.config.val_sigmas).encode(),
            LOSS_PNG: plot_png(self.history, f"{self.name}, step {step}"),
        }
        kwargs: dict[str, Any] = {
            "grid": self.data.grid,
            "normalization": self.data.normalization,
            "ema": self.ema.module,
            "training": self.config.to_dict(),
            "run": self.run_info,
            "step": step,
            "archive": self.data.archive,
            "optimizer": self.optimizer,
            "metrics": {
                "train_loss": last(self.history, "train_loss"),
                "val_loss": last(self.history, "val_loss"),
                "wall_s": self.wall(),
            },
            "extra_files": files,
        }
        save_checkpoint(self.checkpoint_dir, self.denoiser, **kwargs)
        if self.config.keep_checkpoints and not final:
            target = self.checkpoint_dir.with_name(f"{self.checkpoint_dir.name}-step{step:08d}")
            save_checkpoint(target, self.denoiser, **kwargs)
            self.periodic.append(target)
        self.overhead += time.perf_counter() - tick

    def _result(self, step: int, start_step: int, initial_val: float | None) -> TrainResult:
        elapsed = time.perf_counter() - self.started
        stepping = elapsed - self.overhead
        done = step - start_step
        return TrainResult(
            checkpoint=self.checkpoint_dir,
            step=step,
            train_loss=last(self.history, "train_loss"),
            val_loss=last(self.history, "val_loss"),
            initial_val_loss=initial_val,
            samples_per_second=done * self.config.batch_size / stepping if stepping > 0 else 0.0,
            wall_seconds=elapsed,
            parameters=sum(p.numel() for p in self.denoiser.parameters()),
            history=self.history,
            periodic=self.periodic,
            stopped=self.stopped,
        )
