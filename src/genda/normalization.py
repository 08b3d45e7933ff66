"""Per-variable, per-level normalisation statistics of a training archive.

Diffusion models work on fields scaled to zero mean and unit variance. The
statistics are area-weighted means and standard deviations over time,
latitude and longitude, one per (variable, altitude level): the vertical
growth of tidal amplitudes would otherwise let the top levels dominate the loss.
They are stored with the archive (variable attributes) and later in checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr

from genda.errors import InvalidValueError, UnknownNameError
from genda.grid import Grid, GridMismatchError

MEAN_ATTR = "genda_normalization_mean"
STD_ATTR = "genda_normalization_std"


@dataclass(frozen=True, eq=False)
class Normalization:
    """Affine scaling ``x_norm = (x - mean) / std`` per variable and level.

    Attributes:
        variables: variable names, in grid order.
        mean: ``(V, L)`` means in physical units.
        std: ``(V, L)`` standard deviations in physical units (strictly positive).
    """

    variables: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float64)
        std = np.asarray(self.std, dtype=np.float64)
        if mean.shape != std.shape or mean.ndim != 2 or mean.shape[0] != len(self.variables):
            raise GridMismatchError(
                f"normalisation mean {mean.shape} / std {std.shape} do not match (V={len(self.variables)}, L)"
            )
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
            raise InvalidValueError("normalisation statistics contain NaN or infinite values")
        # A constant field's computed std is round-off (~1e-15 of its mean), not 0;
        # below 1e-10 |mean| no archive (float32: ~6e-8) resolves any variation.
        degenerate = std <= 1e-10 * np.abs(mean)
        if np.any(degenerate):
            bad = [self.variables[i] for i in sorted(set(np.nonzero(degenerate)[0]))]
            raise InvalidValueError(
                f"normalisation std is not positive for variables {bad} (constant field?)"
            )
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "variables", tuple(self.variables))

    def _broadcast(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if tuple(x.shape[-4:-2]) != self.mean.shape:
            raise GridMismatchError(
                f"field has (V, L) = {tuple(x.shape[-4:-2])}, normalisation has {self.mean.shape}"
            )
        mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device)[..., None, None]
        std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device)[..., None, None]
        return mean, std

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Physical ``(..., V, L, H, W)`` -> normalised."""
        mean, std = self._broadcast(x)
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``(..., V, L, H, W)`` -> physical."""
        mean, std = self._broadcast(x)
        return x * std + mean

    def to_dict(self) -> dict[str, Any]:
        return {
            "variables": list(self.variables),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalization:
        return cls(tuple(data["variables"]), np.asarray(data["mean"]), np.asarray(data["std"]))

    # ------------------------------------------------------------------ datasets
    @classmethod
    def from_dataset(cls, ds: xr.Dataset, grid: Grid) -> Normalization:
        """Area-weighted statistics over ``time, latitude, longitude`` (lazy with dask)."""
        weights = xr.DataArray(
            grid.area_weights(), dims="latitude", coords={"latitude": grid.latitude}
        )
        means, stds = [], []
        for name in grid.variables:
            da = ds[name]
            reduce_dims = [d for d in ("time", "latitude", "longitude") if d in da.dims]
            weighted = da.weighted(weights)
            mean = weighted.mean(reduce_dims)
            var = ((da - mean) ** 2).weighted(weights).mean(reduce_dims)
            means.append(mean.transpose("altitude").values)
            stds.append(np.sqrt(var.transpose("altitude").values))
        return cls(tuple(grid.variables), np.stack(means), np.stack(stds))

    def attach(self, ds: xr.Dataset) -> xr.Dataset:
        """Copy of ``ds`` with the statistics in each variable's attributes."""
        ds = ds.copy()
        for i, name in enumerate(self.variables):
            ds[name].attrs[MEAN_ATTR] = self.mean[i].tolist()
            ds[name].attrs[STD_ATTR] = self.std[i].tolist()
        return ds

    @classmethod
    def from_attrs(cls, ds: xr.Dataset, variables: Sequence[str]) -> Normalization:
        """Statistics stored by :meth:`attach`; a clear error if they are absent."""
        means, stds = [], []
        for name in variables:
            attrs = ds[name].attrs
            if MEAN_ATTR not in attrs or STD_ATTR not in attrs:
                raise UnknownNameError(
                    f"variable {name!r} carries no normalisation statistics; "
                    "compute them with Normalization.from_dataset"
                )
            means.append(np.atleast_1d(np.asarray(attrs[MEAN_ATTR], dtype=np.float64)))
            stds.append(np.atleast_1d(np.asarray(attrs[STD_ATTR], dtype=np.float64)))
        return cls(tuple(variables), np.stack(means), np.stack(stds))
