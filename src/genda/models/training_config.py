"""The settings of a training run and its learning-rate schedule.

:class:`TrainConfig` holds everything that defines a run besides the model
and the data (checked when built, JSON round trip through :meth:`TrainConfig.to_dict`);
:func:`learning_rate` is the linear warm-up followed by a cosine or constant schedule.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from genda.errors import InvalidValueError

__all__ = ["TrainConfig", "learning_rate"]


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
