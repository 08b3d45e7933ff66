"""The brute-force Kalman analysis that the baselines' tests compare with."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from genda.grid import Grid
from genda.observations.operators import ObservationOperator


def dense_kalman(
    states: np.ndarray, obs: pd.DataFrame, grid: Grid, rho: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Kalman mean ``(V, L, H, W)`` and covariance ``(N, N)`` with the full sample ``B`` (o ``rho``).

    ``x_b + B H^T (H B H^T + R)^-1 (y - H x_b)`` and ``B - K H B``, where ``B`` is the
    sample covariance of ``states`` ``(n, V, L, H, W)`` (``N = V L H W``), tapered
    element-wise by ``rho`` when given, and ``R`` the diagonal of ``obs["sigma"]**2``.
    """
    flat = states.reshape(states.shape[0], -1).astype(np.float64)
    x_b = flat.mean(0)
    anomalies = flat - x_b
    b = anomalies.T @ anomalies / (flat.shape[0] - 1)
    if rho is not None:
        b = b * rho
    operator = ObservationOperator.from_table(obs, grid)
    h = operator.adjoint(torch.eye(operator.n_obs, dtype=torch.float64)).reshape(operator.n_obs, -1)
    h = h.numpy()
    r = np.diag(obs["sigma"].to_numpy() ** 2)
    gain = np.linalg.solve(h @ b @ h.T + r, h @ b).T
    mean = x_b + gain @ (obs["value"].to_numpy() - h @ x_b)
    return mean.reshape(grid.shape), b - gain @ h @ b
