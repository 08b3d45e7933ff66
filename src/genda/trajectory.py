"""Trajectories: ``K`` consecutive hourly states of a grid as one field.

A trajectory prior models ``K`` hourly states at once, so that an observation
acts at its own time and a window can be conditioned on the states it shares
with the previous one. Its field stacks the states along the variable axis,
time first: variable ``k * V + v`` of a trajectory grid is variable ``v`` of
the state grid ``k`` hours after the trajectory's first state, named
``"<v>+<k>h"`` (:func:`genda.grid.state_variable`). Everything that takes a
grid (the strategies, the whitened coordinates, the observation operator,
checkpoints, the training data) then takes a trajectory unchanged, and the
order of the variables is the order of causality: the Gaussian part of a
trajectory prior is factored lower-triangular in it
(:mod:`genda.models.whitening`, coupling ``"causal"``), so that fixing the
first states fixes the first components of ``z``.

Shapes: states ``(B, K, V, L, H, W)``; trajectory fields ``(B, K V, L, H, W)``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from genda.errors import InvalidValueError
from genda.grid import Grid, GridMismatchError, state_variable
from genda.normalization import Normalization

__all__ = [
    "HOUR",
    "MAX_STATES",
    "is_trajectory",
    "split_states",
    "stack_states",
    "state_grid",
    "state_normalization",
    "state_offsets",
    "trajectory_grid",
    "trajectory_normalization",
    "trajectory_states",
]

HOUR = np.timedelta64(3600, "s")
"""The spacing of a trajectory's states."""

MAX_STATES = 48
"""Most hourly states of one trajectory: two days, beyond any window a prior is trained on."""


def trajectory_grid(grid: Grid, states: int) -> Grid:
    """The grid of ``states`` consecutive hourly states of ``grid`` (a plain grid).

    Raises:
        InvalidValueError: ``states`` outside ``1..MAX_STATES``, or ``grid`` is
            itself a trajectory.
    """
    if not 1 <= int(states) <= MAX_STATES:
        raise InvalidValueError(f"a trajectory has 1 to {MAX_STATES} hourly states, not {states}")
    if trajectory_states(grid) != 1 or any(
        state_variable(n)[1] is not None for n in grid.variables
    ):
        raise InvalidValueError(f"{grid.variables} are already the states of a trajectory")
    names = tuple(f"{name}+{k}h" for k in range(int(states)) for name in grid.variables)
    return replace(grid, variables=names)


def trajectory_states(grid: Grid) -> int:
    """``K``, the hourly states of ``grid``: 1 for a plain grid.

    Raises:
        GridMismatchError: the variables are not ``K`` whole states in time order.
    """
    parsed = [state_variable(name) for name in grid.variables]
    hours = [k for _, k in parsed]
    if all(k is None for k in hours):
        return 1
    if any(k is None for k in hours):
        raise GridMismatchError(f"{grid.variables} mixes trajectory states and plain variables")
    first = [name for name, k in parsed if k == 0]
    count, rest = divmod(len(parsed), max(len(first), 1))
    expected = [(name, k) for k in range(count) for name in first]
    if not first or rest or parsed != expected:
        raise GridMismatchError(
            f"{grid.variables} are not whole hourly states in time order "
            f"(expected each of the first state's variables at +0h, +1h, ...)"
        )
    return count


def is_trajectory(grid: Grid) -> bool:
    """``grid``'s variables are hourly states (``"u+0h"``, ...), even a single one."""
    return state_variable(grid.variables[0])[1] is not None and trajectory_states(grid) >= 1


def state_grid(grid: Grid) -> Grid:
    """The grid of one state of a trajectory grid (``grid`` itself when it is plain)."""
    if not is_trajectory(grid):
        return grid
    states = trajectory_states(grid)
    count = len(grid.variables) // states
    return replace(grid, variables=tuple(state_variable(n)[0] for n in grid.variables[:count]))


def trajectory_normalization(normalization: Normalization, states: int) -> Normalization:
    """The statistics of one state repeated for each of ``states`` hourly states."""
    grid_names = tuple(f"{n}+{k}h" for k in range(int(states)) for n in normalization.variables)
    return Normalization(
        grid_names,
        np.tile(normalization.mean, (int(states), 1)),
        np.tile(normalization.std, (int(states), 1)),
    )


def state_normalization(normalization: Normalization, grid: Grid) -> Normalization:
    """The statistics of the first state of a trajectory's ``normalization`` (a plain one as it is)."""
    if not is_trajectory(grid):
        return normalization
    count = len(state_grid(grid).variables)
    return Normalization(
        state_grid(grid).variables, normalization.mean[:count], normalization.std[:count]
    )


def stack_states(x: torch.Tensor) -> torch.Tensor:
    """States ``(B, K, V, L, H, W)`` -> trajectory fields ``(B, K V, L, H, W)``."""
    if x.dim() != 6:
        raise InvalidValueError(f"states must have shape (B, K, V, L, H, W), got {tuple(x.shape)}")
    b, k, v = x.shape[:3]
    return x.reshape(b, k * v, *x.shape[3:])


def split_states(x: torch.Tensor, states: int) -> torch.Tensor:
    """Trajectory fields ``(B, K V, L, H, W)`` -> states ``(B, K, V, L, H, W)``."""
    if x.dim() != 5 or x.shape[1] % int(states):
        raise InvalidValueError(
            f"trajectory fields of {states} states must have shape (B, {states} V, L, H, W), "
            f"got {tuple(x.shape)}"
        )
    return x.reshape(x.shape[0], int(states), x.shape[1] // int(states), *x.shape[2:])


def state_offsets(times: np.ndarray, start: np.datetime64, states: int) -> np.ndarray:
    """Hours ``(N,)`` float64 of ``times`` after ``start``, each within ``[0, states - 1]``.

    Raises:
        InvalidValueError: a time before the first or after the last state,
            naming the first such time and the window.
    """
    start = np.datetime64(start, "ns")
    offsets = (np.asarray(times, dtype="datetime64[ns]") - start) / np.timedelta64(1, "h")
    outside = (offsets < 0) | (offsets > int(states) - 1)
    if np.any(outside):
        first = np.asarray(times, dtype="datetime64[s]")[np.argmax(outside)]
        end = np.datetime64(start, "s") + (int(states) - 1) * HOUR
        raise InvalidValueError(
            f"{int(outside.sum())} observation(s) lie outside the window "
            f"{np.datetime64(start, 's')} .. {end} (first: {first})"
        )
    return offsets.astype(np.float64)
