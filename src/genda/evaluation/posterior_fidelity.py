"""Do posterior members look like model states? Power per degree and vertical coherence.

A posterior ensemble can match the observations and still be made of fields
that no model would produce: too smooth, too noisy at small scales, or with
levels that do not hang together. Two measures against model data, which
need no truth at the ensemble's time (``genda evaluate`` uses the truth
archive's other times as the model data):

* the power per total wavenumber ``l`` of each variable and level, members
  over model data, ``P_members(l) / P_model(l)`` (scalar spherical harmonics
  of u, v and T separately; 1 is the model's spectrum), up to the 2/3
  truncation ``(W - 1) // 3``;
* the vertical correlation of the eddies (departures from the zonal mean),
  members against model data: the mean ``|C_members - C_model|`` over pairs of
  levels (:func:`genda.evaluation.structure.eddy_correlation_mean_abs_difference`),
  stored under the JSON key ``vertical_correlation_error``.

Shapes: members ``(N, L, H, W)`` and model data ``(T, L, H, W)`` per variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch_harmonics as th

from genda.errors import InvalidValueError
from genda.evaluation.structure import eddy_correlation_mean_abs_difference
from genda.grid import Grid, harmonic_grid_kind
from genda.threads import cpu_threads

__all__ = ["PosteriorFidelity", "plot_posterior_fidelity", "posterior_fidelity", "scalar_power"]

SMALL_SCALES_FROM = 6
"""The smallest degree of the "members look like model states" check (larger scales
carry the observations' information and differ from a climatology on purpose)."""


def _scalar_transform(grid: Grid, truncation: int) -> th.RealSHT:
    kind = harmonic_grid_kind(grid, "power spectra need")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # torch-harmonics builds its tables in it
    try:
        return th.RealSHT(
            grid.nlat, grid.nlon, lmax=truncation + 1, mmax=truncation + 1, grid=kind, csphase=False
        )
    finally:
        torch.set_default_dtype(previous)


def scalar_power(fields: np.ndarray, grid: Grid, truncation: int | None = None) -> np.ndarray:
    """Mean power per degree ``(L, T + 1)`` of fields ``(N, L, H, W)``: ``sum_m |a_lm|^2`` (m > 0 twice)."""
    truncation = truncation if truncation is not None else (grid.nlon - 1) // 3
    x = torch.as_tensor(np.asarray(fields), dtype=torch.float64)
    if x.ndim != 4 or tuple(x.shape[1:]) != (grid.nlevels, grid.nlat, grid.nlon):
        raise InvalidValueError(f"fields must be (N, L, H, W) on the grid, got {tuple(x.shape)}")
    with cpu_threads(1):
        coefficients = _scalar_transform(grid, truncation)(x)  # (N, L, l, m)
    power = coefficients.abs() ** 2
    power[..., 1:] *= 2.0  # a real field's m > 0 coefficient stands for +m and -m
    return power.sum(dim=-1).mean(dim=0).numpy()


@dataclass(frozen=True, eq=False)
class PosteriorFidelity:
    """Members against model data.

    Attributes:
        degree: ``(T,)`` total wavenumbers ``1 .. T``.
        power_ratio: variable -> ``(L, T)`` ``P_members(l) / P_model(l)``.
        eddy_correlation_mean_abs_difference: variable -> mean ``|C_members - C_model|``
            over pairs of levels of the eddies' vertical correlation.
        members, model_fields: how many fields each side had.
    """

    degree: np.ndarray
    power_ratio: Mapping[str, np.ndarray]
    eddy_correlation_mean_abs_difference: Mapping[str, float]
    members: int
    model_fields: int

    def worst_power_error(self, from_degree: int = SMALL_SCALES_FROM) -> dict[str, float]:
        """Per variable: ``max |ratio - 1|`` over every level and ``l >= from_degree``."""
        keep = self.degree >= from_degree
        return {
            name: float(np.abs(ratio[:, keep] - 1.0).max()) if keep.any() else float("nan")
            for name, ratio in self.power_ratio.items()
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "degree": self.degree.astype(int).tolist(),
            "power_ratio": {name: ratio.tolist() for name, ratio in self.power_ratio.items()},
            "worst_power_error_from_degree": SMALL_SCALES_FROM,
            "worst_power_error": self.worst_power_error(),
            "vertical_correlation_error": dict(self.eddy_correlation_mean_abs_difference),
            "members": self.members,
            "model_fields": self.model_fields,
        }


def posterior_fidelity(
    members: Mapping[str, np.ndarray],
    model: Mapping[str, np.ndarray],
    grid: Grid,
    truncation: int | None = None,
) -> PosteriorFidelity:
    """Power per degree and eddy vertical correlation of ``members`` against ``model`` data.

    Args:
        members: variable -> ``(N, L, H, W)`` members of one window.
        model: variable -> ``(T, L, H, W)`` model data (other times of the run).
        grid: the grid of both (Gauss-Legendre or equiangular latitudes).
        truncation: largest degree compared (default ``(W - 1) // 3``).
    """
    truncation = truncation if truncation is not None else (grid.nlon - 1) // 3
    ratio = {}
    for name in grid.variables:
        mine = scalar_power(members[name], grid, truncation)[:, 1:]
        theirs = scalar_power(model[name], grid, truncation)[:, 1:]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio[name] = np.where(theirs > 0, mine / theirs, np.nan)
    correlation = eddy_correlation_mean_abs_difference(members, model, grid)
    first = next(iter(members.values()))
    count = next(iter(model.values())).shape[0]
    return PosteriorFidelity(
        np.arange(1, truncation + 1), ratio, correlation, int(first.shape[0]), int(count)
    )


def plot_posterior_fidelity(report: PosteriorFidelity, grid: Grid, path: Path) -> Path:
    """Power ratio per degree, one panel per variable, one line per level; PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report.power_ratio)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), sharey=True)
    axes = np.atleast_1d(axes)
    colours = plt.cm.viridis(np.linspace(0, 1, grid.nlevels))
    for ax, name in zip(axes, names, strict=True):
        ax.axhspan(0.8, 1.2, color="0.9", label="+-20 %")
        for level, colour in enumerate(colours):
            ax.plot(
                report.degree,
                report.power_ratio[name][level],
                color=colour,
                lw=1.2,
                label=f"{grid.altitude[level]:g} km",
            )
        ax.axhline(1.0, color="k", lw=0.8)
        ax.axvline(SMALL_SCALES_FROM, color="0.5", ls=":", lw=0.8)
        error = report.eddy_correlation_mean_abs_difference[name]
        ax.set_title(f"{name} (vertical corr. error {error:.3f})", fontsize=10)
        ax.set_xlabel("total wavenumber l")
        ax.set_yscale("log")
    axes[0].set_ylabel("power, members / model data")
    axes[-1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
