"""Linear observation operators ``H``: fields on the grid -> values at observations.

Every observation is a weighted sum of a few grid values, so ``H`` is a sparse
``(M, N)`` matrix with ``N = V * L * H * W``. It is stored row-wise as padded
``(M, K)`` index and weight arrays and applied with a gather (``H x``) and a
scatter-add (``H^T r``): both are plain tensor operations, so they run batched
on any device and are differentiable in forward and reverse mode (the posterior
samplers take Jacobian-vector products through them, which sparse matrix
kernels do not all support).

The weights of one row are the product of three factors:

* **horizontal**: bilinear in latitude and longitude; longitude is periodic
  (across the dateline); poleward of the outermost latitude row the point lies
  between that row at its own longitude and the same row 180 degrees away,
  along the meridian through the pole, and the wind components of the far
  node change sign (local east and north turn round across the pole), as in
  the spherical padding of the networks (:mod:`genda.models.padding`);
* **vertical**: linear in altitude, or, for a profile point with a full width
  at half maximum ``fwhm_km``, the Gaussian kernel integrated against the
  piecewise-linear profile between the levels (weights -> linear
  interpolation as the width -> 0; the kernel is renormalised over the part
  that lies within the grid's altitude range);
* **variable**: 1 for ``u``, ``v`` or ``T``; for a radar line-of-sight wind
  (``variable == "los"``) ``cos(el) sin(az)`` on ``u`` and ``cos(el) cos(az)``
  on ``v`` (azimuth clockwise from north, elevation above the horizon; the
  vertical wind, ``sin(el) w``, is not a field of the prior and is left out:
  MLT vertical winds are ~1 m/s, against horizontal winds of tens of m/s).

:meth:`ObservationOperator.normalized` folds the per-variable, per-level
normalisation of the prior into the weights, giving the affine operator
``A(x_norm) = H (mean + std * x_norm)`` on normalised fields that the
posterior samplers use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from genda.errors import InvalidValueError
from genda.grid import Grid
from genda.normalization import Normalization
from genda.trajectory import is_trajectory, state_offsets, trajectory_states

#: Variables whose sign flips across a pole (vector components in the local frame).
_VECTOR = {"u", "v"}
_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def _horizontal(grid: Grid, lat: float, lon: float) -> list[tuple[int, int, float, float]]:
    """Bilinear stencil ``[(i_lat, i_lon, weight, vector_sign), ...]`` of a point.

    Latitudes of ``grid`` run north to south; ``lon`` is in [0, 360).
    """
    lats = grid.latitude
    nlon = grid.nlon
    dlon = 360.0 / nlon
    # Columns are evenly spaced from the grid's first longitude (not always 0 E).
    position = ((lon - float(grid.longitude[0])) % 360.0) / dlon
    j0 = math.floor(position) % nlon
    j1 = (j0 + 1) % nlon
    fx = position - math.floor(position)
    columns = [(j0, 1.0 - fx), (j1, fx)]

    def ring(
        i: int, sign: float, weight: float, shift: int = 0
    ) -> list[tuple[int, int, float, float]]:
        return [((i), (j + shift) % nlon, weight * w, sign) for j, w in columns]

    if lat >= lats[0] or lat <= lats[-1]:
        # Between the outermost row and the pole: interpolate along the meridian
        # through the pole to the same row half a turn away.
        i = 0 if lat >= lats[0] else len(lats) - 1
        edge = abs(float(lats[i]))
        if edge >= 90.0:  # a grid with pole points: the point is on the pole row
            return ring(i, 1.0, 1.0)
        far = (abs(lat) - edge) / (2.0 * (90.0 - edge))
        if nlon % 2:
            raise InvalidValueError(
                f"interpolation across the pole needs an even number of longitudes, got {nlon}"
            )
        return ring(i, 1.0, 1.0 - far) + ring(i, -1.0, far, shift=nlon // 2)
    # lats decreasing: find i with lats[i] > lat >= lats[i + 1]
    i = int(np.searchsorted(-lats, -lat, side="right")) - 1
    i = min(max(i, 0), len(lats) - 2)
    fy = (lats[i] - lat) / (lats[i] - lats[i + 1])
    return ring(i, 1.0, 1.0 - fy) + ring(i + 1, 1.0, fy)


def _vertical(altitude: np.ndarray, alt: float, fwhm: float | None) -> list[tuple[int, float]]:
    """Weights ``[(level, weight), ...]`` over the levels for an altitude (km)."""
    if altitude.size == 1:
        return [(0, 1.0)]
    if fwhm is None or not np.isfinite(fwhm):
        k = int(np.searchsorted(altitude, alt, side="right")) - 1
        k = min(max(k, 0), altitude.size - 2)
        f = (alt - altitude[k]) / (altitude[k + 1] - altitude[k])
        f = min(max(f, 0.0), 1.0)
        return [(k, 1.0 - f), (k + 1, f)]
    # Kernel times the piecewise-linear profile, integrated on a fine mesh: the
    # weight of level l is the integral of K(z - alt) * hat_l(z) dz.
    s = fwhm * _FWHM_TO_SIGMA
    lo, hi = max(altitude[0], alt - 5.0 * s), min(altitude[-1], alt + 5.0 * s)
    z = np.linspace(lo, hi, 2001)
    kernel = np.exp(-0.5 * ((z - alt) / s) ** 2)
    eye = np.eye(altitude.size)
    hats = np.stack([np.interp(z, altitude, eye[level]) for level in range(altitude.size)])
    weights = np.trapezoid(hats * kernel, z, axis=1)
    weights = weights / weights.sum()
    return [(level, float(w)) for level, w in enumerate(weights) if w > 1e-12]


def _variables(grid: Grid, row: pd.Series, hours: float | None) -> list[tuple[int, float, bool]]:
    """``[(variable index, coefficient, is vector component), ...]`` of a row.

    ``hours``: on a trajectory grid, the row's time in hours after the first
    state; the row is then linear in time between the states on either side.
    """
    name = row["variable"]
    if name == "los":
        az = math.radians(float(row["azimuth_deg"]))
        el = math.radians(float(row["elevation_deg"]))
        parts = [("u", math.cos(el) * math.sin(az)), ("v", math.cos(el) * math.cos(az))]
    else:
        parts = [(str(name), 1.0)]
    if hours is None:
        return [(grid.variable_index(n), c, n in _VECTOR) for n, c in parts]
    before = min(math.floor(hours), trajectory_states(grid) - 1)
    after = min(before + 1, trajectory_states(grid) - 1)
    weights = [(before, 1.0 - (hours - before)), (after, hours - before)]
    return [
        (grid.variable_index(f"{n}+{k}h"), c * w, n in _VECTOR)
        for n, c in parts
        for k, w in weights
        if w != 0.0
    ]


def _state_hours(obs: pd.DataFrame, grid: Grid, start: np.datetime64 | None) -> np.ndarray | None:
    """Each row's hours after a trajectory's first state; ``None`` on a plain grid."""
    if not is_trajectory(grid):
        return None
    if start is None:
        raise InvalidValueError(
            f"observations on a trajectory of {trajectory_states(grid)} hourly states need "
            "the time of its first state"
        )
    return state_offsets(obs["time"].to_numpy(), start, trajectory_states(grid))


@dataclass(frozen=True, eq=False)
class ObservationOperator:
    """``y = H x + offset`` for fields ``x`` of shape ``(..., V, L, H, W)``.

    Attributes:
        index: ``(M, K)`` int64, flat indices into ``V * L * H * W`` (row-padded with 0).
        weight: ``(M, K)`` weights (0 on padding), float64 until :meth:`to` says
            otherwise; they are cast to the field's dtype when applied.
        offset: ``(M,)`` constant term (0 for physical fields; the normalisation
            mean for :meth:`normalized`).
        field_shape: ``(V, L, H, W)``.
    """

    index: torch.Tensor
    weight: torch.Tensor
    offset: torch.Tensor
    field_shape: tuple[int, int, int, int]

    @classmethod
    def from_table(
        cls, obs: pd.DataFrame, grid: Grid, start: np.datetime64 | None = None
    ) -> ObservationOperator:
        """The operator of a validated table (``genda.observations.validate_observations``).

        Rows are observations in table order; ``lon`` must be in [0, 360) and
        ``alt_km`` within the grid's altitudes. The grid's longitudes must be
        evenly spaced around the circle (a global grid). On a trajectory grid
        (:mod:`genda.trajectory`) ``start`` is the time of its first state and
        each row acts at its own ``time``, linearly between the hourly states
        on either side.

        Raises:
            InvalidValueError: an empty table, a grid that is not global, a
                trajectory without ``start`` or a row outside its hours.
        """
        spacing = np.diff(np.append(grid.longitude, grid.longitude[0] + 360.0))
        if not np.allclose(spacing, 360.0 / grid.nlon, rtol=0, atol=1e-6):
            raise InvalidValueError(
                "the observation operator needs evenly spaced longitudes covering 360 degrees; "
                f"the grid's spacing ranges {spacing.min():.4g}-{spacing.max():.4g} degrees"
            )
        if len(obs) == 0:
            raise InvalidValueError(
                "the observation table is empty: nothing to build an operator from"
            )
        _, nlev, nlat, nlon = grid.shape
        has_fwhm = "fwhm_km" in obs.columns
        offsets = _state_hours(obs, grid, start)
        rows: list[dict[int, float]] = []
        for number, (_, row) in enumerate(obs.iterrows()):
            fwhm = float(row["fwhm_km"]) if has_fwhm and pd.notna(row["fwhm_km"]) else None
            entries: dict[int, float] = {}
            horizontal = _horizontal(grid, float(row["lat"]), float(row["lon"]))
            vertical = _vertical(grid.altitude, float(row["alt_km"]), fwhm)
            hours = None if offsets is None else float(offsets[number])
            for var, coefficient, is_vector in _variables(grid, row, hours):
                for level, wz in vertical:
                    for i, j, wxy, sign in horizontal:
                        w = coefficient * wz * wxy * (sign if is_vector else 1.0)
                        flat = ((var * nlev + level) * nlat + i) * nlon + j
                        entries[flat] = entries.get(flat, 0.0) + w
            rows.append(entries)
        width = max(len(entries) for entries in rows)
        index = np.zeros((len(rows), width), dtype=np.int64)
        weight = np.zeros((len(rows), width), dtype=np.float64)
        for m, entries in enumerate(rows):
            index[m, : len(entries)] = list(entries)
            weight[m, : len(entries)] = list(entries.values())
        return cls(
            torch.from_numpy(index),
            torch.from_numpy(weight),
            torch.zeros(len(rows), dtype=torch.float64),
            tuple(grid.shape),  # type: ignore[arg-type]
        )

    @property
    def n_obs(self) -> int:
        return int(self.index.shape[0])

    @property
    def field_size(self) -> int:
        return math.prod(self.field_shape)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> ObservationOperator:
        return ObservationOperator(
            self.index.to(device),
            self.weight.to(device=device, dtype=dtype),
            self.offset.to(device=device, dtype=dtype),
            self.field_shape,
        )

    def _check(self, x: torch.Tensor) -> None:
        if tuple(x.shape[-4:]) != self.field_shape:
            raise InvalidValueError(
                f"fields of shape (..., V, L, H, W) = (..., {', '.join(map(str, self.field_shape))}) "
                f"expected, got {tuple(x.shape)}"
            )

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """``H x`` without the offset: ``(..., V, L, H, W) -> (..., M)``."""
        self._check(x)
        flat = x.reshape(*x.shape[:-4], self.field_size)
        gathered = flat[..., self.index]  # (..., M, K)
        return (gathered * self.weight.to(x.dtype)).sum(-1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``H x + offset``: ``(..., V, L, H, W) -> (..., M)``."""
        return self.linear(x) + self.offset.to(x.dtype)

    def adjoint(self, r: torch.Tensor) -> torch.Tensor:
        """``H^T r``: ``(..., M) -> (..., V, L, H, W)``."""
        if r.shape[-1] != self.n_obs:
            raise InvalidValueError(
                f"{self.n_obs} observation values expected, got shape {tuple(r.shape)}"
            )
        lead = r.shape[:-1]
        contributions = (r[..., None] * self.weight.to(r.dtype)).reshape(*lead, -1)
        out = torch.zeros(*lead, self.field_size, dtype=r.dtype, device=r.device)
        out.index_add_(-1, self.index.reshape(-1), contributions)
        return out.reshape(*lead, *self.field_shape)

    def normalized(self, normalization: Normalization) -> ObservationOperator:
        """The operator on normalised fields: ``A(x) = H (mean + std * x)``.

        ``normalization`` holds per-variable, per-level statistics ``(V, L)``.
        """
        mean = torch.as_tensor(np.asarray(normalization.mean), dtype=torch.float64)
        std = torch.as_tensor(np.asarray(normalization.std), dtype=torch.float64)
        nvar, nlev, nlat, nlon = self.field_shape
        if tuple(mean.shape) != (nvar, nlev):
            raise InvalidValueError(
                f"normalisation statistics of shape {tuple(mean.shape)} do not match "
                f"{nvar} variables x {nlev} levels"
            )
        var_level = self.index // (nlat * nlon)  # flat index of (variable, level)
        w = self.weight.double()
        weight = w * std.reshape(-1)[var_level]
        offset = self.offset.double() + (w * mean.reshape(-1)[var_level]).sum(-1)
        return ObservationOperator(self.index, weight, offset, self.field_shape)


__all__: Sequence[str] = ["ObservationOperator"]
