"""Training items of a trajectory prior: ``K`` consecutive hourly fields of an archive.

:class:`TrajectoryFields` turns the fields of a split (:class:`genda.models.data.FieldDataset`)
into trajectories ``(K V, L, H, W)``, the states stacked time first
(:mod:`genda.trajectory`), with the same interface as the fields, so that
training, validation and fitting the coordinates take either. An item starts
at every field that is followed by ``K - 1`` fields of the same split, each
one hour after the last: a gap in the archive (a missing hour, the gap between
the training and validation splits) ends the trajectories before it. The hour
of an item is that of its first state.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from genda.errors import InvalidValueError
from genda.grid import Grid
from genda.models.data import ChunkShuffleSampler, FieldDataset
from genda.normalization import Normalization
from genda.trajectory import HOUR, trajectory_grid, trajectory_normalization

__all__ = ["TrajectoryFields", "trajectory_starts"]


def trajectory_starts(times: np.ndarray, states: int) -> np.ndarray:
    """Positions ``p`` of ``times`` with ``times[p + k] = times[p] + k h`` for ``k < states``."""
    times = np.asarray(times, dtype="datetime64[s]")
    count = times.size - int(states) + 1
    if count <= 0:
        return np.arange(0)
    hourly = np.diff(times) == HOUR
    ok = np.ones(count, dtype=bool)
    for k in range(int(states) - 1):
        ok &= hourly[k : k + count]
    return np.nonzero(ok)[0]


class TrajectoryFields:
    """``K`` consecutive hourly fields of a split as one item ``(K V, L, H, W)`` float32.

    Args:
        fields: the split's fields.
        states: ``K``.
        split: its name, for the message.

    Raises:
        InvalidValueError: the split holds no run of ``K`` hourly fields.
    """

    def __init__(self, fields: FieldDataset, states: int, split: str = "training") -> None:
        self.fields = fields
        self.states = int(states)
        self.starts = trajectory_starts(fields.times, self.states)
        if self.starts.size == 0:
            raise InvalidValueError(
                f"no {self.states} consecutive hourly fields in the {fields.times.size} fields "
                f"of the {split} split (from {fields.times[0] if fields.times.size else '-'}): "
                "a trajectory prior needs runs of hourly fields in each split (an hourly "
                "archive, and a validation fraction of at least that many hours)"
            )
        self.grid: Grid = trajectory_grid(fields.grid, self.states)
        self.normalization: Normalization = trajectory_normalization(
            fields.normalization, self.states
        )
        self.indices = fields.indices[self.starts]
        self.times = fields.times[self.starts]
        self.chunk_ids = fields.chunk_ids[self.starts]
        self.in_memory = fields.in_memory

    def __len__(self) -> int:
        return int(self.starts.size)

    def __getitem__(self, item: int) -> torch.Tensor:
        """The trajectory ``(K V, L, H, W)`` of item ``item``."""
        return self.batch([item])[0]

    def batch(self, items: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Items stacked: ``(B, K V, L, H, W)`` float32."""
        first = self.starts[np.asarray(items, dtype=np.int64)]
        positions = first[:, None] + np.arange(self.states)[None, :]  # (B, K)
        fields = self.fields.batch(positions.reshape(-1))
        return fields.reshape(first.size, self.states * fields.shape[1], *fields.shape[2:])

    def hours(self, items: Sequence[int] | np.ndarray) -> np.ndarray:
        """UT hours ``(B,)`` of the items' first states."""
        return self.fields.hours(self.starts[np.asarray(items, dtype=np.int64)])

    def times_of(self, items: Sequence[int] | np.ndarray) -> np.ndarray:
        """The valid times ``(B,)`` of the items' first states: datetime64."""
        return self.fields.times_of(self.starts[np.asarray(items, dtype=np.int64)])

    def sampler(self, seed: int = 0, group_chunks: int = 1) -> ChunkShuffleSampler:
        """Epoch orders as :meth:`FieldDataset.sampler`, grouped by the first state's chunk."""
        ids = np.zeros(len(self), dtype=np.int64) if self.in_memory else self.chunk_ids
        return ChunkShuffleSampler(ids, seed=seed, group_chunks=group_chunks)
