"""The exponential moving average (EMA) of the weights during training.

``ema_decay`` with the usual warm-up ``beta_s = min(ema_decay, (1 + s) /
(10 + s))``, or, when ``ema_halflife_samples`` is set, EDM's half-life in
samples ``beta = 0.5 ** (batch / halflife)`` with the half-life ramped up as
``ema_rampup * samples_seen`` (NVlabs/edm ``training_loop.py``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from genda.models.training_config import TrainConfig

__all__ = ["EMA"]


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
