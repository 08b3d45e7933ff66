"""Ending a training run early: the loop's stop hook and a plateau rule.

A stop rule is any callable ``rule(history) -> str | None`` (:data:`StopRule`).
:class:`~genda.models.training_loop.TrainingLoop` calls it after every row it
appends to the loss log (every ``log_every`` and ``val_every`` steps), with
the whole log so far (the rows of ``loss.csv``, :mod:`genda.models.loss_log`;
on rank 0 only, its answer is broadcast to the other ranks). A string ends
the run at that step: the loop validates that step if it was not a
validation step, writes the final checkpoint as at a normal end, and returns
the string as :attr:`~genda.models.training_loop.TrainResult.stopped`.
``None`` continues. ``TrainConfig.steps`` stays the most steps a run may take.

:class:`PlateauStop` is the rule of "train to the plateau": stop when the
best validation loss has improved by less than a relative tolerance over the
last ``window`` validations, or when the run's wall time exceeds a limit.
The validation loss is the EMA model's at fixed noise levels and noise
(:mod:`genda.models.validation`), so it is a deterministic function of the
weights and the curve's flattening is not sampling noise. Use it with a
constant learning rate (``lr_schedule="constant"``): a cosine schedule
anneals towards ``steps`` and would make the plateau a property of the
schedule, not of the network.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from genda.errors import InvalidValueError

__all__ = ["PLATEAU", "TIME_LIMIT", "PlateauStop", "StopRule", "trained_validations"]

StopRule = Callable[[Sequence[Mapping[str, Any]]], str | None]
"""``rule(history) -> reason or None``: called with the loss log after each of its rows."""

PLATEAU = "plateau"
"""The reason :class:`PlateauStop` gives when the validation loss stopped improving."""
TIME_LIMIT = "time"
"""The reason :class:`PlateauStop` gives when the run reached its wall-time limit."""


def trained_validations(history: Sequence[Mapping[str, Any]]) -> list[tuple[int, float]]:
    """``(step, val_loss)`` of the validations after training steps, in log order.

    The run's initial validation (the untrained network; its row has no
    ``train_loss``) is left out: a plateau is a property of the training
    curve, and a whitened prior's untrained network (the Gaussian posterior
    mean) can score better than its first trained weights.
    """
    return [
        (int(row["step"]), float(row["val_loss"]))
        for row in history
        if row.get("val_loss") is not None and row.get("train_loss") is not None
    ]


@dataclass(frozen=True)
class PlateauStop:
    """Stop at the plateau of the validation loss, or at a wall-time limit.

    With ``v_1, ..., v_n`` the validation losses after training steps
    (:func:`trained_validations`), the run stops with :data:`PLATEAU` at the
    first ``n > window`` (and ``step >= min_steps``) where

        ``min(v_1..v_{n-window}) - min(v_1..v_n) < tol * |min(v_1..v_{n-window})|``,

    that is, when the best loss improved by less than the fraction ``tol``
    over the last ``window`` validations; and with :data:`TIME_LIMIT` at the
    first log row whose ``wall_s`` reaches ``max_wall_s`` (checked first).

    Attributes:
        tol: relative improvement of the best loss below which the curve is flat.
        window: validations over which the improvement is measured.
        max_wall_s: wall-time limit of the run in seconds (``wall_s`` of the
            log: training, validation and checkpoints; ``None``: none).
        min_steps: never stop for a plateau before this step (the loss of a
            whitened prior can first rise as the zero-initialised network
            leaves the Gaussian posterior mean).
    """

    tol: float = 0.01
    window: int = 5
    max_wall_s: float | None = None
    min_steps: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.tol) and self.tol >= 0):
            raise InvalidValueError(f"PlateauStop: tol must be a number >= 0, got {self.tol}")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise InvalidValueError(
                f"PlateauStop: window must be an integer >= 1, got {self.window}"
            )
        if self.max_wall_s is not None and not self.max_wall_s > 0:
            raise InvalidValueError(
                f"PlateauStop: max_wall_s must be positive or None, got {self.max_wall_s}"
            )
        if self.min_steps < 0:
            raise InvalidValueError(f"PlateauStop: min_steps must be >= 0, got {self.min_steps}")

    def __call__(self, history: Sequence[Mapping[str, Any]]) -> str | None:
        if not history:
            return None
        last = history[-1]
        wall = last.get("wall_s")
        if self.max_wall_s is not None and wall is not None and wall >= self.max_wall_s:
            return TIME_LIMIT
        # a plateau is judged at validation rows only, on the losses they add
        if last.get("val_loss") is None or int(last.get("step", 0)) < self.min_steps:
            return None
        losses = [loss for _, loss in trained_validations(history)]
        if len(losses) <= self.window:
            return None
        before = min(losses[: -self.window])
        if before - min(losses) < self.tol * abs(before):
            return PLATEAU
        return None
