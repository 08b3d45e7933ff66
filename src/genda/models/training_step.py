"""One optimizer step of training: per-slot noise, the weighted EDM loss, AdamW, the EMA.

Every random number of step ``s`` comes from generators seeded by ``(seed, s,
slot)`` -- one per sample slot of the global batch, for its noise level and
its noise -- and dropout is seeded by ``(seed, s, rank)``, so nothing random
is carried from one step to the next.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from genda.models.data import stable_seed
from genda.models.diffusion import EDMDenoiser
from genda.models.ema import EMA
from genda.models.training_config import TrainConfig, learning_rate
from genda.models.training_device import autocast

__all__ = ["optimization_step", "slot_noise", "weighted_loss"]


def weighted_loss(
    forward: nn.Module,
    denoiser: EDMDenoiser,
    x0: Tensor,
    sigma: Tensor,
    noise: Tensor,
    cond: Tensor | None = None,
) -> Tensor:
    """Per-sample EDM loss ``lambda(sigma) mean((D(x0 + sigma n, sigma) - x0)^2)``, ``(B,)``.

    ``forward`` is the module called (the denoiser, or its DDP / compiled
    wrapper), ``denoiser`` gives the weighting; as in :func:`~genda.models.diffusion.edm_loss`.
    ``cond``: the backbone's field-level conditioning ``(B, F)`` (the calendar), if any.
    """
    s = sigma.reshape(-1, *([1] * (x0.ndim - 1)))
    if cond is None:
        denoised = forward(x0 + s * noise, sigma)
    else:
        denoised = forward(x0 + s * noise, sigma, cond)
    weight = denoiser.precond.weight(sigma)
    return weight * (denoised.to(x0.dtype) - x0).square().reshape(x0.shape[0], -1).mean(dim=1)


def slot_noise(
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
    cond: torch.Tensor | None = None,
) -> torch.Tensor:
    """One optimizer step of :func:`~genda.models.training.train` on ``x0`` ``(len(slots), V, L, H, W)``.

    ``x0`` is encoded into the denoiser's diffusion states first (itself
    unless the denoiser runs in whitened coordinates, whose mean may follow
    the UT ``hours`` ``(len(slots),)`` of the fields). ``cond``: the
    calendar features ``(len(slots), F)`` of a network that sees the time.

    The noise of each slot of the global batch, the dropout seed, the learning
    rate of ``step``, the weighted EDM loss (under autocast when asked),
    backward, gradient clipping, AdamW and the EMA update. ``forward`` is
    ``denoiser`` or its DDP/compiled wrapper. Returns the detached mean loss.
    """
    with torch.no_grad():  # the coordinates are fixed statistics, not trained
        x0 = denoiser.encode(x0, hours)
    shape = tuple(x0.shape[1:])
    sigma, noise = slot_noise(list(slots), config.seed, step, shape, config, device)
    torch.manual_seed(stable_seed("global", config.seed, step, rank))  # dropout
    lr = learning_rate(config, step)
    for group in optimizer.param_groups:
        group["lr"] = lr
    with autocast(device, config.mixed_precision):
        loss = weighted_loss(forward, denoiser, x0, sigma, noise, cond).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip is not None:
        nn.utils.clip_grad_norm_(denoiser.parameters(), config.grad_clip)
    optimizer.step()
    ema.update(denoiser, ema.beta(step, config.batch_size))
    return loss.detach()
