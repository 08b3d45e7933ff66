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

EMA. ``ema_decay`` with the usual warm-up ``beta_s = min(ema_decay, (1 + s) /
(10 + s))``, or, when ``ema_halflife_samples`` is set, EDM's half-life in
samples ``beta = 0.5 ** (batch / halflife)`` with the half-life ramped up as
``ema_rampup * samples_seen`` (NVlabs/edm ``training_loop.py``).

Validation. The validation loss is the EDM loss of the EMA model on the
held-out fields at the fixed noise levels ``val_sigmas``, averaged over them;
the noise of each (field, level) comes from a generator seeded by the field's
time index and the level, so the number is the same whatever the batch size,
the training seed or the number of ranks, and comparable between runs on the
same archive and split. At most ``val_samples`` fields are used (evenly
spaced over the validation block).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import io
import json
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from genda.devices import check_device
from genda.errors import GendaError, InvalidValueError, OutputExistsError
from genda.grid import Grid
from genda.models.checkpoint import (
    MODEL_FILE,
    CheckpointError,
    check_replaceable,
    check_tensors,
    describe_denoiser,
    load_optimizer_state,
    read_checkpoint,
    save_checkpoint,
)
from genda.models.data import FieldDataset, StepBatches, TrainingData, stable_seed
from genda.models.diffusion import EDMDenoiser

__all__ = [
    "EMA",
    "TrainConfig",
    "TrainResult",
    "learning_rate",
    "resolve_device",
    "train",
    "validation_loss",
]

LOSS_CSV = "loss.csv"
LOSS_PNG = "loss.png"
CSV_COLUMNS = ("step", "train_loss", "val_loss", "lr", "wall_s")


class TrainingDivergedError(GendaError, FloatingPointError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run besides the model and the data.

    Attributes:
        steps: total optimizer steps (a resumed run continues to this count).
        batch_size: fields per step (the global batch, over all DDP ranks).
        lr: peak learning rate of AdamW.
        lr_schedule: ``"cosine"`` (from ``lr`` after warm-up down to
            ``lr * final_lr_fraction`` at ``steps``) or ``"constant"``.
        warmup_steps: linear warm-up from ``lr / warmup_steps`` to ``lr``.
        final_lr_fraction: end of the cosine schedule, relative to ``lr``.
        weight_decay: AdamW's decoupled weight decay.
        betas: AdamW's moment decay rates.
        ema_decay: EMA decay per step (with warm-up, module docstring).
        ema_halflife_samples: if set, EDM's EMA half-life in samples instead of ``ema_decay``.
        ema_rampup: EDM's half-life ramp-up ratio (``None``: none), with ``ema_halflife_samples``.
        grad_clip: clip the global gradient norm to this (``None``: no clipping).
        p_mean, p_std: training noise levels ``ln(sigma) ~ N(p_mean, p_std^2)``.
        seed: seed of batches and noise.
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        val_every: validate every this many steps (and at the start and the end).
        val_samples: at most this many validation fields.
        val_sigmas: the fixed validation noise levels.
        log_every: add a row to the loss log every this many steps.
        checkpoint_every: save the checkpoint every this many steps (and at the end).
        keep_checkpoints: also keep each periodic checkpoint as ``<dir>-step<N>``.
        mixed_precision: bf16 autocast of the forward pass (CUDA only; ignored on the CPU).
        compile: ``torch.compile`` the model for training.
    """

    steps: int = 10_000
    batch_size: int = 16
    lr: float = 2e-4
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = 500
    final_lr_fraction: float = 0.0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    ema_decay: float = 0.999
    ema_halflife_samples: float | None = None
    ema_rampup: float | None = 0.05
    grad_clip: float | None = 1.0
    p_mean: float = -1.2
    p_std: float = 1.2
    seed: int = 0
    device: str = "auto"
    val_every: int = 500
    val_samples: int = 32
    val_sigmas: tuple[float, ...] = (0.05, 0.15, 0.5, 1.5, 5.0)
    log_every: int = 50
    checkpoint_every: int = 1000
    keep_checkpoints: bool = False
    mixed_precision: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        object.__setattr__(self, "val_sigmas", tuple(float(s) for s in self.val_sigmas))
        positive = ("steps", "batch_size", "val_every", "val_samples", "log_every")
        for name in (*positive, "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InvalidValueError(f"lr must be positive, got {self.lr}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise InvalidValueError(
                f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}"
            )
        if self.warmup_steps < 0:
            raise InvalidValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0.0 <= self.final_lr_fraction <= 1.0:
            raise InvalidValueError(
                f"final_lr_fraction must lie in [0, 1], got {self.final_lr_fraction}"
            )
        if self.weight_decay < 0:
            raise InvalidValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise InvalidValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise InvalidValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if self.ema_halflife_samples is not None and self.ema_halflife_samples <= 0:
            raise InvalidValueError(
                f"ema_halflife_samples must be positive, got {self.ema_halflife_samples}"
            )
        if self.ema_rampup is not None and self.ema_rampup <= 0:
            raise InvalidValueError(f"ema_rampup must be positive or None, got {self.ema_rampup}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise InvalidValueError(f"grad_clip must be positive or None, got {self.grad_clip}")
        if self.p_std <= 0:
            raise InvalidValueError(f"p_std must be positive, got {self.p_std}")
        if not self.val_sigmas or not all(math.isfinite(s) and s > 0 for s in self.val_sigmas):
            raise InvalidValueError(f"val_sigmas must be positive numbers, got {self.val_sigmas}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields."""
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        out["val_sigmas"] = list(self.val_sigmas)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Rebuild from :meth:`to_dict`; missing fields take their defaults.

        Raises:
            ValueError: unknown fields (named).
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InvalidValueError(f"unknown training options {unknown}; known: {sorted(names)}")
        return cls(**dict(data))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` (``None`` values are ignored: "not given")."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def learning_rate(config: TrainConfig, step: int) -> float:
    """The learning rate of the update from step ``step`` to ``step + 1``."""
    if config.warmup_steps and step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.lr_schedule == "constant":
        return config.lr
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, max(0.0, (step - config.warmup_steps) / span))
    floor = config.final_lr_fraction
    return config.lr * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> ``cuda`` (the local rank's GPU under DDP) if available, else ``cpu``.

    A CUDA device without an index gets the local rank's (``LOCAL_RANK``) or the current one.
    """
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    resolved = check_device(device)
    if resolved.type == "cuda":
        if resolved.index is None:  # an explicit index: DDP and the RNG fork need one
            index = int(os.environ.get("LOCAL_RANK", torch.cuda.current_device()))
            resolved = torch.device("cuda", index)
    return resolved


# ---------------------------------------------------------------------------- EMA
class EMA:
    """Exponential moving average of a model's parameters (a frozen copy in eval mode).

    Args:
        model: the trained module; copied once.
        config: ``ema_decay`` / ``ema_halflife_samples`` / ``ema_rampup`` (module docstring).
    """

    def __init__(self, model: nn.Module, config: TrainConfig) -> None:
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.config = config

    def beta(self, step: int, batch_size: int) -> float:
        """Weight of the old average after step ``step`` (0-based) of ``batch_size`` samples."""
        c = self.config
        if c.ema_halflife_samples is not None:
            halflife = c.ema_halflife_samples
            if c.ema_rampup is not None:
                halflife = min(halflife, (step + 1) * batch_size * c.ema_rampup)
            return 0.5 ** (batch_size / max(halflife, 1e-8))
        return min(c.ema_decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, beta: float) -> None:
        """``ema <- beta ema + (1 - beta) model`` for parameters; buffers are copied."""
        for avg, param in zip(self.module.parameters(), model.parameters(), strict=True):
            avg.lerp_(param.detach(), 1.0 - beta)
        for avg, buf in zip(self.module.buffers(), model.buffers(), strict=True):
            avg.copy_(buf)


# ---------------------------------------------------------------------------- losses
def _weighted_loss(
    forward: nn.Module, denoiser: EDMDenoiser, x0: Tensor, sigma: Tensor, noise: Tensor
) -> Tensor:
    """Per-sample EDM loss ``lambda(sigma) mean((D(x0 + sigma n, sigma) - x0)^2)``, ``(B,)``.

    ``forward`` is the module called (the denoiser, or its DDP / compiled
    wrapper), ``denoiser`` gives the weighting; as in :func:`~genda.models.diffusion.edm_loss`.
    """
    s = sigma.reshape(-1, *([1] * (x0.ndim - 1)))
    denoised = forward(x0 + s * noise, sigma)
    weight = denoiser.precond.weight(sigma)
    return weight * (denoised.to(x0.dtype) - x0).square().reshape(x0.shape[0], -1).mean(dim=1)


def _slot_noise(
    slots: Sequence[int],
    seed: int,
    step: int,
    shape: tuple[int, ...],
    config: TrainConfig,
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """Noise levels ``(b,)`` and noise ``(b, *shape)`` of the given batch slots of step ``step``.

    One generator per slot, on ``device``: ``ln sigma`` first, then the noise.
    """
    sigmas, noises = [], []
    for slot in slots:
        gen = torch.Generator(device=device)
        gen.manual_seed(stable_seed("train", seed, step, int(slot)))
        normal = torch.randn(1, generator=gen, device=device)
        sigmas.append(torch.exp(config.p_mean + config.p_std * normal))
        noises.append(torch.randn(shape, generator=gen, device=device))
    return torch.cat(sigmas), torch.stack(noises)


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _validation_positions(dataset: FieldDataset, count: int) -> np.ndarray:
    n = len(dataset)
    if n <= count:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, count).round().astype(np.int64))


@torch.no_grad()
def validation_loss(
    denoiser: EDMDenoiser,
    dataset: FieldDataset,
    sigmas: Sequence[float],
    *,
    max_samples: int = 32,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    mixed_precision: bool = False,
    rank: int = 0,
    world: int = 1,
) -> tuple[float, list[float]]:
    """EDM loss of ``denoiser`` on ``dataset`` at fixed noise levels: ``(mean, per sigma)``.

    The noise of a field at ``sigmas[j]`` comes from a generator seeded by
    ``("validation", j, time index)``: the result does not depend on
    ``batch_size``, on ``world`` or on anything of the training run.
    With ``world > 1`` (initialised ``torch.distributed``) each rank
    evaluates a share and the sums are all-reduced.
    """
    device = torch.device(device)
    positions = _validation_positions(dataset, max_samples)
    mine = positions[rank::world]
    shape = denoiser.state_shape(tuple(dataset.grid.shape))
    was_training = denoiser.training
    denoiser.eval()
    sums = torch.zeros(len(sigmas), dtype=torch.float64)
    for j, sigma in enumerate(sigmas):
        for start in range(0, mine.size, batch_size):
            part = mine[start : start + batch_size]
            x0 = denoiser.encode(dataset.batch(part).to(device), dataset.hours(part))
            noise = []
            for pos in part:
                gen = torch.Generator().manual_seed(
                    stable_seed("validation", j, int(dataset.indices[pos]))
                )
                noise.append(torch.randn(shape, generator=gen))
            sig = torch.full((part.size,), float(sigma), device=device)
            with _autocast(device, mixed_precision):
                losses = _weighted_loss(denoiser, denoiser, x0, sig, torch.stack(noise).to(device))
            sums[j] += losses.double().sum().cpu()
    denoiser.train(was_training)
    if world > 1:
        sums = sums.to(device)
        dist.all_reduce(sums)
        sums = sums.cpu()
    per_sigma = (sums / max(1, positions.size)).tolist()
    return float(np.mean(per_sigma)), per_sigma


# ---------------------------------------------------------------------------- log
def _sigma_column(sigma: float) -> str:
    return f"val_loss_sigma_{sigma:g}"


def _format(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.8g}"
    return str(value)


def _csv_text(history: Sequence[Mapping[str, Any]], sigmas: Sequence[float]) -> str:
    columns = [*CSV_COLUMNS, *(_sigma_column(s) for s in sigmas)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in history:
        writer.writerow([_format(row.get(c)) for c in columns])
    return buffer.getvalue()


def _read_history(path: Path, until_step: int) -> list[dict[str, Any]]:
    """Rows of a ``loss.csv`` up to ``until_step`` (numbers parsed, blanks as ``None``)."""
    if not path.is_file():
        return []
    rows: list[dict[str, Any]] = []
    with path.open(newline="") as handle:
        for raw in csv.DictReader(handle):
            row: dict[str, Any] = {}
            for key, text in raw.items():
                if key is None:
                    continue
                row[key] = None if text in ("", None) else float(text)
            if row.get("step") is None:
                continue
            row["step"] = int(row["step"])
            if row["step"] <= until_step:
                rows.append(row)
    return rows


def _plot_png(history: Sequence[Mapping[str, Any]], title: str) -> bytes:
    """Loss curves as PNG bytes (matplotlib's Agg canvas; no pyplot, no global backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for key, style, label in (
        ("train_loss", "-", "training (batch mean)"),
        ("val_loss", "o-", "validation (EMA, fixed noise)"),
    ):
        points = [(r["step"], r[key]) for r in history if r.get(key) is not None]
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, style, label=label, markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("EDM loss")
    if any(r.get("train_loss") or r.get("val_loss") for r in history):
        ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


# ---------------------------------------------------------------------------- result
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

    @property
    def loss_csv(self) -> Path:
        return self.checkpoint / LOSS_CSV

    @property
    def loss_plot(self) -> Path:
        return self.checkpoint / LOSS_PNG


# ---------------------------------------------------------------------------- train
def _distributed() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@contextlib.contextmanager
def _own_rng(device: torch.device) -> Iterator[None]:
    """Keep the caller's global RNG state: training reseeds it every step (dropout)."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def optimization_step(
    forward: nn.Module,
    denoiser: EDMDenoiser,
    optimizer: torch.optim.Optimizer,
    ema: EMA,
    x0: torch.Tensor,
    slots: Sequence[int],
    step: int,
    config: TrainConfig,
    device: torch.device,
    rank: int = 0,
    hours: np.ndarray | None = None,
) -> torch.Tensor:
    """One optimizer step of :func:`train` on the batch ``x0`` ``(len(slots), V, L, H, W)``.

    ``x0`` is encoded into the denoiser's diffusion states first (itself
    unless the denoiser runs in whitened coordinates, whose mean may follow
    the UT ``hours`` ``(len(slots),)`` of the fields).

    The noise of each slot of the global batch, the dropout seed, the learning
    rate of ``step``, the weighted EDM loss (under autocast when asked),
    backward, gradient clipping, AdamW and the EMA update. ``forward`` is
    ``denoiser`` or its DDP/compiled wrapper. Returns the detached mean loss.
    """
    with torch.no_grad():  # the coordinates are fixed statistics, not trained
        x0 = denoiser.encode(x0, hours)
    shape = tuple(x0.shape[1:])
    sigma, noise = _slot_noise(list(slots), config.seed, step, shape, config, device)
    torch.manual_seed(stable_seed("global", config.seed, step, rank))  # dropout
    lr = learning_rate(config, step)
    for group in optimizer.param_groups:
        group["lr"] = lr
    with _autocast(device, config.mixed_precision):
        loss = _weighted_loss(forward, denoiser, x0, sigma, noise).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip is not None:
        nn.utils.clip_grad_norm_(denoiser.parameters(), config.grad_clip)
    optimizer.step()
    ema.update(denoiser, ema.beta(step, config.batch_size))
    return loss.detach()


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

    Returns:
        :class:`TrainResult`.

    Raises:
        FileExistsError: ``checkpoint_dir`` exists, not resuming and not ``overwrite``;
            or it exists and is not a checkpoint (never replaced).
        CheckpointError: the resume checkpoint is unreadable or does not fit.
        FloatingPointError: the training loss became NaN or infinite (nothing is saved).
    """
    strategy, _, backbone = describe_denoiser(denoiser)
    grid = data.grid
    if not np.allclose(backbone.altitudes, grid.altitude, atol=1e-6, rtol=0):
        raise InvalidValueError(
            f"the model's levels {backbone.altitudes.tolist()} km are not the data's "
            f"{grid.altitude.tolist()} km"
        )
    checkpoint_dir = Path(checkpoint_dir)
    rank, world = _distributed()
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
    device = resolve_device(config.device)

    start_step, history, wall_before = 0, [], 0.0
    optimizer_state = None
    ema_state = None
    if resume is not None:
        contents = read_checkpoint(resume, with_optimizer=True)
        _check_resume(contents.config, denoiser, data, contents.path)
        check_tensors(contents.model, denoiser, "raw", contents.path / MODEL_FILE)
        check_tensors(contents.ema, denoiser, "EMA", contents.path / MODEL_FILE)
        denoiser.load_state_dict(contents.model, strict=True)
        ema_state = contents.ema
        optimizer_state = contents.optimizer
        start_step = int(contents.config["step"])
        history = _read_history(contents.path / LOSS_CSV, start_step)
        wall_before = float(contents.config.get("metrics", {}).get("wall_s") or 0.0)
        if start_step > config.steps:
            raise CheckpointError(
                f"{contents.path}: the checkpoint is at step {start_step}, beyond steps={config.steps}"
            )

    denoiser.to(device).train()
    ema = EMA(denoiser, config)
    if ema_state is not None:
        ema.module.load_state_dict(ema_state, strict=True)
    optimizer = torch.optim.AdamW(
        denoiser.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
    )
    if optimizer_state is not None:
        load_optimizer_state(optimizer, denoiser, optimizer_state)
    elif resume is not None:
        raise CheckpointError(f"{resume}: no optimizer.safetensors; cannot resume the optimizer")

    forward: nn.Module = denoiser
    if world > 1:
        forward = nn.parallel.DistributedDataParallel(
            denoiser, device_ids=[device.index] if device.type == "cuda" else None
        )
    if config.compile:
        forward = torch.compile(forward)  # type: ignore[assignment]

    parameters = sum(p.numel() for p in denoiser.parameters())
    batches = StepBatches(data.train.sampler(seed=config.seed), config.batch_size)
    sigmas = config.val_sigmas
    lead = rank == 0
    run_info = {"world_size": world, "device": str(device), **dict(description or {})}

    started = time.perf_counter()
    overhead = 0.0  # validation and checkpoints, left out of the throughput
    periodic: list[Path] = []

    def wall() -> float:
        return wall_before + time.perf_counter() - started

    def validate() -> dict[str, Any]:
        """Validation columns of a log row (empty without a validation set)."""
        nonlocal overhead
        if data.validation is None:
            return {}
        tick = time.perf_counter()
        mean, per_sigma = validation_loss(
            ema.module,
            data.validation,
            sigmas,
            max_samples=config.val_samples,
            batch_size=config.batch_size,
            device=device,
            mixed_precision=config.mixed_precision,
            rank=rank,
            world=world,
        )
        overhead += time.perf_counter() - tick
        return {"val_loss": mean} | {
            _sigma_column(s): v for s, v in zip(sigmas, per_sigma, strict=True)
        }

    def save(step: int, final: bool) -> None:
        nonlocal overhead
        tick = time.perf_counter()
        files = {
            LOSS_CSV: _csv_text(history, sigmas).encode(),
            LOSS_PNG: _plot_png(history, f"{strategy.name}, step {step}"),
        }
        kwargs: dict[str, Any] = {
            "grid": grid,
            "normalization": data.normalization,
            "ema": ema.module,
            "training": config.to_dict(),
            "run": run_info,
            "step": step,
            "archive": data.archive,
            "optimizer": optimizer,
            "metrics": {
                "train_loss": _last(history, "train_loss"),
                "val_loss": _last(history, "val_loss"),
                "wall_s": wall(),
            },
            "extra_files": files,
        }
        save_checkpoint(checkpoint_dir, denoiser, **kwargs)
        if config.keep_checkpoints and not final:
            target = checkpoint_dir.with_name(f"{checkpoint_dir.name}-step{step:08d}")
            save_checkpoint(target, denoiser, **kwargs)
            periodic.append(target)
        overhead += time.perf_counter() - tick

    step = start_step
    with _own_rng(device):
        if not history:
            columns = validate()
            if columns:
                history.append(
                    {"step": step, "lr": learning_rate(config, step), "wall_s": wall()} | columns
                )
        initial_val = _last(history, "val_loss")
        bar = tqdm(
            total=config.steps,
            initial=start_step,
            desc=f"training {strategy.name}",
            unit="step",
            disable=not progress or not lead,
        )
        running = torch.zeros((), dtype=torch.float64, device=device)
        running_count = 0
        slots = np.arange(config.batch_size)[rank::world]
        try:
            while step < config.steps:
                positions = batches.positions(step)[slots]
                x0 = data.train.batch(positions).to(device, non_blocking=True)
                loss = optimization_step(
                    forward,
                    denoiser,
                    optimizer,
                    ema,
                    x0,
                    slots.tolist(),
                    step,
                    config,
                    device,
                    rank,
                    hours=data.train.hours(positions),
                )
                running += loss.double()
                running_count += 1
                step += 1
                bar.update(1)

                log_now = step % config.log_every == 0 or step == config.steps
                val_now = step % config.val_every == 0 or step == config.steps
                if log_now or val_now:
                    total = running.clone()
                    if world > 1:
                        dist.all_reduce(total)
                    train_loss = float(total) / (running_count * world)
                    if not math.isfinite(train_loss):
                        raise TrainingDivergedError(
                            f"training loss is {train_loss} at step {step}; nothing was saved "
                            "after the last checkpoint (lower the learning rate, check the data)"
                        )
                    running.zero_()
                    running_count = 0
                    # the learning rate of the step just taken
                    row = {
                        "step": step,
                        "train_loss": train_loss,
                        "lr": learning_rate(config, step - 1),
                    }
                    if val_now:
                        row |= validate()
                    history.append(row | {"wall_s": wall()})
                    bar.set_postfix(
                        {k: f"{row[k]:.4f}" for k in ("train_loss", "val_loss") if k in row}
                    )
                if step % config.checkpoint_every == 0 and step < config.steps and lead:
                    save(step, final=False)
        finally:
            bar.close()
        if lead:
            save(step, final=True)
    if world > 1:
        dist.barrier()

    elapsed = time.perf_counter() - started
    stepping = elapsed - overhead
    done = step - start_step
    return TrainResult(
        checkpoint=checkpoint_dir,
        step=step,
        train_loss=_last(history, "train_loss"),
        val_loss=_last(history, "val_loss"),
        initial_val_loss=initial_val,
        samples_per_second=done * config.batch_size / stepping if stepping > 0 else 0.0,
        wall_seconds=elapsed,
        parameters=parameters,
        history=history,
        periodic=periodic,
    )


def _last(history: Sequence[Mapping[str, Any]], key: str) -> float | None:
    """The last non-empty ``key`` of the log, or ``None``."""
    return next((r[key] for r in reversed(history) if r.get(key) is not None), None)


def _check_resume(
    config: Mapping[str, Any], denoiser: EDMDenoiser, data: TrainingData, path: Path
) -> None:
    """The resumed checkpoint must describe this model and this data."""
    strategy, network, _ = describe_denoiser(denoiser)
    problems = []
    stored = config.get("strategy", {})
    if stored.get("name") != strategy.name or stored.get("options") != _plain(strategy.options()):
        problems.append(
            f"strategy {stored.get('name')!r} {stored.get('options')} in the checkpoint, "
            f"{strategy.name!r} {strategy.options()} here"
        )
    arch = config.get("architecture", {}).get("config")
    if arch != _plain(network.config):
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


def _plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples -> lists)."""
    return json.loads(json.dumps(value))
