"""The validation loss: the EDM loss at fixed noise levels on held-out fields.

The noise of each (field, level) comes from a generator seeded by the
field's time index and the level, so the number is the same whatever the
batch size, the training seed or the number of ranks, and comparable between
runs on the same archive and split. At most ``max_samples`` fields are used
(evenly spaced over the validation block).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist

from genda.models.calendar import calendar_condition
from genda.models.data import FieldDataset, stable_seed
from genda.models.diffusion import EDMDenoiser
from genda.models.training_device import autocast
from genda.models.training_step import weighted_loss

__all__ = ["validation_loss", "validation_positions"]


def validation_positions(dataset: FieldDataset, count: int) -> np.ndarray:
    """At most ``count`` positions of ``dataset``, evenly spaced over it."""
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
    positions = validation_positions(dataset, max_samples)
    mine = positions[rank::world]
    shape = denoiser.state_shape(tuple(dataset.grid.shape))
    was_training = denoiser.training
    denoiser.eval()
    sums = torch.zeros(len(sigmas), dtype=torch.float64)
    for j, sigma in enumerate(sigmas):
        for start in range(0, mine.size, batch_size):
            part = mine[start : start + batch_size]
            x0 = denoiser.encode(dataset.batch(part).to(device), dataset.hours(part))
            cond = calendar_condition(denoiser, dataset.times_of(part), device)
            noise = []
            for pos in part:
                gen = torch.Generator().manual_seed(
                    stable_seed("validation", j, int(dataset.indices[pos]))
                )
                noise.append(torch.randn(shape, generator=gen))
            sig = torch.full((part.size,), float(sigma), device=device)
            with autocast(device, mixed_precision):
                losses = weighted_loss(
                    denoiser, denoiser, x0, sig, torch.stack(noise).to(device), cond
                )
            sums[j] += losses.double().sum().cpu()
    denoiser.train(was_training)
    if world > 1:
        sums = sums.to(device)
        dist.all_reduce(sums)
        sums = sums.cpu()
    per_sigma = (sums / max(1, positions.size)).tolist()
    return float(np.mean(per_sigma)), per_sigma
