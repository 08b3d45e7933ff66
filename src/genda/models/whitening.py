"""Control variables in which the model data are white: ``x = mu + U z``.

Variational assimilation does not minimise over the state ``x`` but over a
control variable ``z`` with ``x = mu + U z`` and ``B = U U^T``: the background
term becomes ``|z|^2 / 2`` and every direction of ``z`` has unit prior
variance (Bannister 2008, "A review of forecast error covariance statistics
in atmospheric variational data assimilation", Q. J. R. Meteorol. Soc. 134,
sections 3-4). :class:`SpectralWhitening` builds ``U`` from the training
fields: a spherical-harmonic synthesis times a per-mode square root of the
climatological covariance, so that the diffusion prior can run in ``z``.

Maths, per mode ``(l, m)``, ``m <= l < T``:

    a = A(x)                      (B, V, L, T, M) complex, M = T
    S_lm = Q_lm diag(lam_lm) Q_lm^H
    w_lm = diag(lam_lm)^(-1/2) Q_lm^H (a_lm - mu_lm)     (encode, per coupling group)
    z = pack(w)                   (B, V, L, K) real, K = T * T
    x = A^-1(mu + Q diag(lam)^(1/2) unpack(z))           (decode)

* ``A`` is the analysis. Winds go through the vector transform
  (torch-harmonics ``RealVectorSHT``, Schaeffer 2013, G3 14:751-758):
  poloidal and toroidal (divergence and vorticity potential) coefficients
  ``s_lm``, ``t_lm`` take the channels of ``u`` and ``v``. The transform acts
  on the physical-scale winds ``u = std_u x_u + mean_u`` (and so for ``v``):
  ``u`` and ``v`` normalised with different statistics are no vector field,
  and a constant ``u`` is not a band-limited vector field either. The vector
  coefficients are then multiplied by ``sqrt(l (l + 1)) / s_ref`` with
  ``s_ref = sqrt((std_u^2 + std_v^2) / 2)`` of that level, so that
  ``sum_lm |a_lm|^2`` is the kinetic energy in normalised units, comparable
  with the scalar channels: the whitening then equalises kinetic energy. All
  other variables (T, ...) go through the scalar ``RealSHT`` of the
  normalised field. The map stays affine. Without ``u`` or ``v`` on the grid
  every variable is scalar.
* ``mu_lm`` and ``S_lm`` (Hermitian) are the mean and covariance of the
  coefficients of the training fields, the Gaussian that is stationary in
  longitude (its pseudo-covariance ``E[a a^T]`` is taken as 0 for ``m > 0``).
  ``coupling="columns"`` (``joint3d``): one group of all ``C = V * L``
  channels per mode, channel ``c = v * L + level``. ``coupling="levels"``:
  one group of the ``V`` variables per level and mode, so the ``z`` of a
  level depends on the ``x`` of that level only. ``coupling="cascade"``
  (``layer2d``): one group of all channels in level order, ``c = level * V +
  v``, with a lower-triangular square root (below).
* With ``tides = N > 0`` the mean follows the time of day: ``mu_lm(h) =
  mu_lm + sum_k (c_lm,k cos(k Omega h) + s_lm,k sin(k Omega h))``, ``k =
  1..N``, ``Omega = 2 pi / 24 h``, ``h`` the UT hour
  (:mod:`genda.models.time_of_day`): the migrating and non-migrating tides
  are periodic in UT in every coefficient. ``mu``, ``c``, ``s`` are one
  least-squares fit over the training fields and ``S_lm`` is the covariance
  of its residuals, so the tides' phase-locked part is in the mean and only
  the day-to-day variability is whitened. ``encode`` and ``decode`` then take
  the fields' hours; the map stays affine in ``z`` at each hour.
* Eigen-directions are sorted by decreasing eigenvalue. Those with
  ``lam <= 1e-10`` times the largest of their group and mode, or ``lam <=
  1e-14`` times the largest of all, are dropped: their ``z`` component is 0
  on encode and ignored on decode (so fewer fields than channels give a
  rank-deficient but usable fit; the vector coefficients of degree 0, which
  are 0, are always dropped). ``m = 0`` coefficients are real and their
  eigenvectors are real.
* Components: group ``g``'s component ``p`` (``p = 0`` the largest) lands in
  ``z`` channel ``(p // L, p % L)`` for ``"columns"`` (the ``C`` components
  reshaped to ``(V, L)``: eigen-directions, not physical variables) and
  ``(p, g)`` for ``"levels"`` (variable slot ``p`` of level ``g``).
* ``"cascade"`` rotates the eigen-square-root into a lower-triangular one,
  ``L_lm = Q_lm diag(lam_lm)^(1/2) R_lm`` with ``R_lm`` unitary (from the QR
  factorisation of ``(Q diag(lam)^(1/2))^H``; Golub & Van Loan, "Matrix
  Computations", 4th ed., 5.2): ``S_lm = L_lm L_lm^H`` as before, but channel
  ``(level k, v)`` is made of the ``z`` of levels ``<= k`` only, and ``z``
  channel ``(v, k)`` is the part of variable ``v`` at level ``k`` that the
  levels below and the earlier variables of level ``k`` do not predict
  (Cholesky's innovations). Under the fitted Gaussian ``z`` is as white
  as with the other couplings, and the whole vertical covariance of the
  Gaussian part sits in the transform, so a network that sees one layer of
  ``z`` and its neighbours (``layer2d``) need not make the vertical coupling
  itself, which the levels-apart square root left to it. Encoding applies
  ``R^H diag(lam)^(-1/2) Q^H``, the (pseudo-)inverse of ``L``.
* Real degrees of freedom, the fixed layout of the last axis of ``z``
  (``K = T * T``; checkpoints depend on it): degree ``l`` owns
  ``k in [l^2, (l + 1)^2)``; ``k = l^2`` is ``w_l0`` (real), ``k = l^2 + 2m - 1``
  is ``sqrt(2) Re w_lm`` and ``k = l^2 + 2m`` is ``sqrt(2) Im w_lm``, ``m = 1..l``.
  Under the fitted Gaussian each of the ``K`` entries is ``N(0, 1)`` and all
  are independent.

:meth:`SpectralWhitening.image` is a *linear* grid picture of ``z`` for a
network: every channel's ``w`` is synthesised with the scalar transform,
times ``sqrt(4 pi / K)``. The real functions behind the ``K`` entries are
orthonormal on the unit sphere and, by the addition theorem, ``sum_m
|Y_lm|^2 = (2l + 1) / (4 pi)`` at every point, so the image of ``z ~ N(0,
I)`` has variance exactly 1 at every grid point.
:meth:`SpectralWhitening.coefficients` inverts it on band-limited images.

The transforms use quadrature (torch-harmonics), and ``T`` is limited to where
it is exact (Gauss-Legendre: ``T <= nlat``; equiangular, Clenshaw-Curtis:
``T <= (nlat + 1) // 2``), so round trips (``decode(encode(x))`` of ``x`` whose scalars and physical winds
are band-limited, scalar and vector fields respectively,
``coefficients(image(z))``) are exact to round-off on both kinds of grid.

Shapes: ``x`` ``(B, V, L, H, W)`` normalised fields of the grid; ``z``
``(B, V, L, K)``. Everything is differentiable and runs in the dtype and on
the device of the module's buffers (float32 after construction).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from typing import Any, NamedTuple

import torch
import torch_harmonics as th
from torch import Tensor, nn

from genda.errors import InvalidValueError
from genda.grid import Grid, GridMismatchError, harmonic_grid_kind
from genda.models.time_of_day import day_harmonics
from genda.normalization import Normalization

__all__ = ["COUPLINGS", "WHITENING_KIND", "HarmonicTransforms", "SpectralWhitening"]

WHITENING_KIND = "spectral-whitening"
"""The name of this transform in a checkpoint's ``config.json``."""

COUPLINGS = ("columns", "levels", "cascade")
"""``"columns"``: all variables and levels of a mode together (``joint3d``);
``"levels"``: the variables of each level, levels separable (``layer2d`` priors
until the cascade); ``"cascade"``: all together, with a square root that is
lower-triangular in level order (``layer2d``)."""

RELATIVE_FLOOR = 1e-10
"""Eigenvalues at or below this fraction of the largest of their group and mode are dropped."""

GLOBAL_FLOOR = 1e-14
"""Eigenvalues at or below this fraction of the largest of all modes are dropped (empty modes)."""

MAX_TIDES = 11
"""Most solar-day harmonics in the mean: hourly fields resolve periods down to 2 h."""

COVERAGE_FLOOR = 0.05
"""The hours of the fields must cover the day: the smallest eigenvalue of the regressors'
normalised Gram matrix (``1/2`` per harmonic for evenly spread hours) must exceed this."""


_TRANSFORM_KINDS = (th.RealSHT, th.InverseRealSHT, th.RealVectorSHT, th.InverseRealVectorSHT)


class HarmonicTransforms(NamedTuple):
    """The torch-harmonics transforms of one grid, truncation, dtype and device."""

    sht: nn.Module
    isht: nn.Module
    vsht: nn.Module
    ivsht: nn.Module


class SpectralWhitening(nn.Module):
    """The affine control-variable transform ``x = mu + U z`` with ``z ~ N(0, I)`` under the fit.

    Args:
        grid: the grid of the fields (Gauss-Legendre or equiangular latitudes).
        normalization: the statistics the fields were normalised with; only
            the ``u`` and ``v`` rows are used, to run the vector transform on
            physical-scale winds. ``None``: the winds are taken as they come
            (right when ``u`` and ``v`` share their scale and have zero mean).
        truncation: number of degrees ``T`` kept, ``l = 0..T-1``; at most and by
            default ``min(nlat, (nlon + 1) // 2)`` on Gauss-Legendre grids (``nlat``
            for ``nlon = 2 nlat``) and ``min((nlat + 1) // 2, (nlon + 1) // 2)`` on
            equiangular ones, where the quadrature is exact.
        coupling: ``"columns"``, ``"levels"`` or ``"cascade"`` (see :data:`COUPLINGS`).
        tides: solar-day harmonics in the mean (0: one mean for every hour;
            3: the diurnal, semidiurnal and terdiurnal tides).

    Buffers saved with the weights: ``mean`` ``(T, M, G, P, 2)`` (real,
    imaginary), ``eigenvalues`` ``(T, M, G, P)`` (0 where dropped) and
    ``eigenvectors`` ``(T, M, G, P, P, 2)`` (column ``p`` is component
    ``p``), with ``tides`` also ``tidal_mean`` ``(2 tides, T, M, G, P, 2)``
    (cosine then sine coefficients of each harmonic), all zero until
    :meth:`fit`; ``wind_std`` and ``wind_mean`` ``(2, L)``; ``"cascade"`` also
    ``rotation`` ``(T, M, G, P, P, 2)``, the unitary ``R``, not saved but derived
    from the eigen-decomposition after fitting and after loading. ``G, P = 1, V * L``
    for ``"columns"`` and ``"cascade"``, ``L, V`` for ``"levels"``.
    ``dof_degree``, ``dof_order`` ``(K,)`` give the ``(l, m)`` of each entry
    of ``z``'s last axis (not saved).
    """

    mean: Tensor
    eigenvalues: Tensor
    eigenvectors: Tensor
    wind_std: Tensor
    wind_mean: Tensor
    dof_degree: Tensor
    dof_order: Tensor
    valid: Tensor
    _pack_index: Tensor
    _unpack_index: Tensor

    def __init__(
        self,
        grid: Grid,
        normalization: Normalization | None = None,
        *,
        truncation: int | None = None,
        coupling: str = "columns",
        tides: int = 0,
    ):
        super().__init__()
        kind = harmonic_grid_kind(grid, "the spectral whitening needs")
        nlat, nlon = grid.nlat, grid.nlon
        # Exact quadrature of products of degree < T: Gauss-Legendre integrates
        # polynomials of degree 2 nlat - 1, Clenshaw-Curtis only nlat - 1. And m = T - 1
        # must stay below the Nyquist order nlon / 2, whose sine part the grid cannot
        # hold (its coefficients would not be circular).
        by_latitude = nlat if kind == "legendre-gauss" else (nlat + 1) // 2
        largest = min(by_latitude, (nlon + 1) // 2)
        t = int(truncation) if truncation is not None else largest
        if not 1 <= t <= largest:
            raise InvalidValueError(
                f"truncation must be in 1..{largest} on a {kind} grid of {nlat} x {nlon} "
                f"(too few latitudes or longitudes for more), got {t}"
            )
        if coupling not in COUPLINGS:
            raise InvalidValueError(f"coupling must be one of {COUPLINGS}, got {coupling!r}")
        if isinstance(tides, bool) or not isinstance(tides, int) or not 0 <= tides <= MAX_TIDES:
            raise InvalidValueError(
                f"tides must be a whole number of solar-day harmonics in 0..{MAX_TIDES} "
                f"(hourly fields resolve periods down to 2 h), got {tides!r}"
            )
        self.tides = tides
        nvar, nlev = len(grid.variables), grid.nlevels
        self.grid, self.truncation, self.coupling = grid, t, coupling
        self.field_shape = (nvar, nlev, nlat, nlon)
        self.groups, self.group_size = (nlev, nvar) if coupling == "levels" else (1, nvar * nlev)
        self.dofs = t * t
        self._options: dict[str, Any] = {"lmax": t, "mmax": t, "grid": kind, "csphase": False}

        # Winds (u, v) are one vector field; everything else is scalar.
        names = grid.variables
        self.wind_index: tuple[int, int] | None = (
            (names.index("u"), names.index("v")) if "u" in names and "v" in names else None
        )
        self.scalar_index = tuple(
            i for i in range(nvar) if self.wind_index is None or i not in self.wind_index
        )
        std, mean = torch.ones(2, nlev), torch.zeros(2, nlev)
        if normalization is not None:
            if normalization.variables != names or normalization.mean.shape != (nvar, nlev):
                raise GridMismatchError(
                    f"normalisation of {normalization.variables} with (V, L) = "
                    f"{normalization.mean.shape} does not match the grid's {names}, {nlev} levels"
                )
            if self.wind_index is not None:
                rows = list(self.wind_index)
                std = torch.as_tensor(normalization.std[rows], dtype=torch.float32)
                mean = torch.as_tensor(normalization.mean[rows], dtype=torch.float32)
        self.register_buffer("wind_std", std.clone())
        self.register_buffer("wind_mean", mean.clone())

        # The transform tables are kept in float64 outside the module's buffers and
        # cast per (dtype, device) on first use: module.float() then .double() would
        # otherwise leave float32-rounded tables and spoil float64 round trips.
        self._master = HarmonicTransforms(*(self._transform(k) for k in _TRANSFORM_KINDS))
        self._cache: dict[tuple[torch.dtype, torch.device], HarmonicTransforms] = {}

        self.register_buffer(
            "valid", torch.arange(t)[None, :] <= torch.arange(t)[:, None], persistent=False
        )
        self._register_layout(t)

        g, p = self.groups, self.group_size
        self.register_buffer("mean", torch.zeros(t, t, g, p, 2))
        self.register_buffer("eigenvalues", torch.zeros(t, t, g, p))
        self.register_buffer("eigenvectors", torch.zeros(t, t, g, p, p, 2))
        if tides:
            self.register_buffer("tidal_mean", torch.zeros(2 * tides, t, t, g, p, 2))
        if coupling == "cascade":
            # Derived from the eigen-decomposition, so not saved: recomputed after
            # fitting and after loading the saved statistics.
            self.register_buffer("rotation", torch.zeros(t, t, g, p, p, 2), persistent=False)
            self.register_load_state_dict_post_hook(lambda module, _: module._refresh_rotation())

    def _transform(self, kind: type[nn.Module]) -> nn.Module:
        """A float64 torch-harmonics transform of this grid on the CPU."""
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)  # torch-harmonics builds its tables in it
        try:
            return kind(*self.field_shape[-2:], **self._options)
        finally:
            torch.set_default_dtype(previous)

    def _register_layout(self, t: int) -> None:
        """Index tables between ``(T, M, 2)`` complex coefficients and the ``K`` real dofs."""
        degree, order, part = [], [], []
        for ell in range(t):
            degree.append(ell)
            order.append(0)
            part.append(0)
            for m in range(1, ell + 1):
                degree += [ell, ell]
                order += [m, m]
                part += [0, 1]
        deg, mo, pa = (torch.tensor(v, dtype=torch.long) for v in (degree, order, part))
        flat = (deg * t + mo) * 2 + pa
        # Unpacking gathers from z with a zero appended at index K: the imaginary
        # parts of m = 0 and the modes m > l point there.
        unpack_index = torch.full((t * t * 2,), t * t, dtype=torch.long)
        unpack_index[flat] = torch.arange(t * t)
        self.register_buffer("dof_degree", deg, persistent=False)
        self.register_buffer("dof_order", mo, persistent=False)
        self.register_buffer("_pack_index", flat, persistent=False)
        self.register_buffer("_unpack_index", unpack_index, persistent=False)

    # The factors below are built in the working dtype on each call (a few hundred
    # numbers): float32 buffers cast up to float64 would spoil exact round trips.
    def _pack_factor(self, dtype: torch.dtype) -> Tensor:
        """``(K,)``: 1 for ``m = 0``, ``sqrt(2)`` for the real and imaginary parts of ``m > 0``."""
        factor = torch.ones(self.dofs, dtype=dtype, device=self.dof_order.device)
        factor[self.dof_order > 0] = math.sqrt(2.0)
        return factor

    def _unpack_factor(self, dtype: torch.dtype) -> Tensor:
        """``(T * M * 2,)``: the inverse of :meth:`_pack_factor` on the triangle, 0 elsewhere."""
        factor = torch.zeros(self.dofs * 2, dtype=dtype, device=self.dof_order.device)
        factor[self._pack_index] = 1.0 / self._pack_factor(dtype)
        return factor

    def _vector_gain(self, dtype: torch.dtype, inverse: bool = False) -> Tensor:
        """``(T,)`` ``sqrt(l (l + 1))`` (or its inverse, 0 at ``l = 0``)."""
        degree = torch.arange(self.truncation, dtype=dtype, device=self.dof_order.device)
        gain = torch.sqrt(degree * (degree + 1.0))
        if inverse:
            gain = torch.where(gain > 0, 1.0 / gain.clamp(min=1.0), 0.0)
        return gain

    def transforms(self, dtype: torch.dtype | None = None) -> HarmonicTransforms:
        """The four torch-harmonics transforms in ``dtype`` (default: the buffers') on their device."""
        dtype = dtype or self.mean.dtype
        key = (dtype, self.mean.device)
        if key not in self._cache:
            self._cache[key] = HarmonicTransforms(
                *(copy.deepcopy(t).to(device=key[1], dtype=dtype) for t in self._master)
            )
        return self._cache[key]

    # ------------------------------------------------------------------ properties
    @property
    def state_shape(self) -> tuple[int, int, int]:
        """``(V, L, K)``, the shape of one ``z``."""
        return (self.field_shape[0], self.field_shape[1], self.dofs)

    def config(self) -> dict[str, Any]:
        """What a checkpoint stores to rebuild this module (the buffers go with the weights)."""
        return {
            "kind": WHITENING_KIND,
            "truncation": self.truncation,
            "coupling": self.coupling,
            "tides": self.tides,
        }

    @classmethod
    def from_config(
        cls, grid: Grid, config: dict[str, Any], normalization: Normalization | None = None
    ) -> SpectralWhitening:
        """The module described by :meth:`config` (load the buffers from the weights after)."""
        if config.get("kind") != WHITENING_KIND:
            raise InvalidValueError(
                f"expected a {WHITENING_KIND!r} configuration, got kind {config.get('kind')!r}"
            )
        return cls(
            grid,
            normalization,
            truncation=int(config["truncation"]),
            coupling=str(config["coupling"]),
            tides=int(config.get("tides", 0)),
        )

    # ------------------------------------------------------------------ layout helpers
    def _check(self, x: Tensor, what: str, shape: tuple[int, ...]) -> None:
        if x.dim() != 1 + len(shape) or tuple(x.shape[1:]) != shape:
            raise InvalidValueError(
                f"{what} must have shape (B, {', '.join(map(str, shape))}), got {tuple(x.shape)}"
            )

    def _to_groups(self, a: Tensor) -> Tensor:
        """``(B, V, L, T, M)`` -> ``(B, T, M, G, P)`` in the coupling's channel order."""
        b, nvar, nlev, t, m = a.shape
        if self.coupling == "columns":
            return a.reshape(b, nvar * nlev, t, m).permute(0, 2, 3, 1).unsqueeze(3)
        if self.coupling == "cascade":  # level order: c = level * V + v
            return a.permute(0, 3, 4, 2, 1).reshape(b, t, m, 1, nlev * nvar)
        return a.permute(0, 3, 4, 2, 1)

    def _from_groups(self, g: Tensor) -> Tensor:
        """``(B, T, M, G, P)`` -> ``(B, V, L, T, M)``, the inverse of :meth:`_to_groups`."""
        b, t, m = g.shape[:3]
        nvar, nlev = self.field_shape[:2]
        if self.coupling == "columns":
            return g.squeeze(3).permute(0, 3, 1, 2).reshape(b, nvar, nlev, t, m)
        if self.coupling == "cascade":
            return g.reshape(b, t, m, nlev, nvar).permute(0, 4, 3, 1, 2)
        return g.permute(0, 4, 3, 1, 2)

    def _pack(self, w: Tensor) -> Tensor:
        """Complex ``(..., T, M)`` -> real ``(..., K)`` in the documented layout."""
        flat = torch.view_as_real(w).reshape(*w.shape[:-2], -1)
        return flat.index_select(-1, self._pack_index) * self._pack_factor(flat.dtype)

    def _unpack(self, z: Tensor) -> Tensor:
        """Real ``(..., K)`` -> complex ``(..., T, M)`` (0 off the triangle and for Im of m = 0)."""
        t = self.truncation
        padded = torch.cat([z, z.new_zeros(*z.shape[:-1], 1)], dim=-1)
        flat = padded.index_select(-1, self._unpack_index) * self._unpack_factor(z.dtype)
        return torch.view_as_complex(flat.reshape(*z.shape[:-1], t, t, 2).contiguous())

    # ------------------------------------------------------------------ transforms
    def _analyse(
        self, x: Tensor, sht: nn.Module, vsht: nn.Module, std: Tensor, mean: Tensor
    ) -> Tensor:
        """Normalised fields ``(B, V, L, H, W)`` -> coefficients ``(B, V, L, T, M)``."""
        parts: dict[int, Tensor] = {}
        if self.scalar_index:
            scalars = sht(x[:, list(self.scalar_index)])
            for j, i in enumerate(self.scalar_index):
                parts[i] = scalars[:, j]
        if self.wind_index is not None:
            winds = x[:, list(self.wind_index)] * std[..., None, None] + mean[..., None, None]
            spectral = vsht(winds.transpose(1, 2))  # (B, L, 2, T, M): poloidal, toroidal
            reference = std.square().mean(dim=0).sqrt()  # (L,)
            gain = self._vector_gain(x.dtype)[:, None] / reference[:, None, None, None]
            spectral = spectral * gain
            for j, i in enumerate(self.wind_index):
                parts[i] = spectral[:, :, j]
        return torch.stack([parts[i] for i in range(self.field_shape[0])], dim=1)

    def _synthesise(self, a: Tensor) -> Tensor:
        """Coefficients ``(B, V, L, T, M)`` -> normalised fields ``(B, V, L, H, W)``."""
        dtype = self.wind_std.dtype
        transforms = self.transforms(dtype)
        parts: dict[int, Tensor] = {}
        if self.scalar_index:
            scalars = transforms.isht(a[:, list(self.scalar_index)].contiguous())
            for j, i in enumerate(self.scalar_index):
                parts[i] = scalars[:, j]
        if self.wind_index is not None:
            std, mean = self.wind_std, self.wind_mean
            reference = std.square().mean(dim=0).sqrt()
            gain = self._vector_gain(dtype, inverse=True)[:, None] * reference[:, None, None, None]
            spectral = a[:, list(self.wind_index)].transpose(1, 2) * gain  # (B, L, 2, T, M)
            winds = transforms.ivsht(spectral.contiguous()).transpose(1, 2)  # (B, 2, L, H, W)
            winds = (winds - mean[..., None, None]) / std[..., None, None]
            for j, i in enumerate(self.wind_index):
                parts[i] = winds[:, j]
        return torch.stack([parts[i] for i in range(self.field_shape[0])], dim=1)

    # ------------------------------------------------------------------ fitting
    @torch.no_grad()
    def fit(self, batches: Iterable[Tensor | tuple[Tensor, Any]]) -> SpectralWhitening:
        """Estimate ``mu_lm`` (and its tides) and ``S_lm`` from normalised fields.

        ``batches`` yields fields ``(B, V, L, H, W)``, or ``(fields, hours)``
        pairs with the UT hours ``(B,)`` of the fields, which a transform with
        ``tides > 0`` needs. The mean is the least-squares fit of ``1, cos(k
        Omega h), sin(k Omega h)``, ``k = 1..tides``, to each coefficient, and
        ``S_lm`` the covariance of the residuals (divided by ``n - 1 - 2
        tides``): with ``tides = 0`` the sample mean and covariance. One pass,
        accumulated in float64; then stores the eigen-decomposition of each
        group's ``S_lm``. Fewer fields than ``P + 1`` give a rank-deficient
        estimate whose empty directions are dropped. Returns ``self``.

        Raises:
            InvalidValueError: fewer than ``2 + 2 tides`` fields, a batch of the
                wrong shape, NaN, missing hours, or hours that do not cover the
                day well enough for the harmonics.
        """
        t, g, p = self.truncation, self.groups, self.group_size
        sht, vsht = self._master.sht, self._master.vsht
        std, mean = self.wind_std.detach().cpu().double(), self.wind_mean.detach().cpu().double()
        regressors = 1 + 2 * self.tides
        gram = torch.zeros(regressors, regressors, dtype=torch.float64)
        moments = torch.zeros(regressors, t, t, g, p, dtype=torch.complex128)
        outer = torch.zeros(t, t, g, p, p, dtype=torch.complex128)
        count = 0
        for number, item in enumerate(batches):
            batch, hours = item if isinstance(item, tuple) else (item, None)
            self._check(batch, "fields for the spectral whitening", self.field_shape)
            x = batch.detach().to("cpu", torch.float64)
            if not torch.isfinite(x).all():
                raise InvalidValueError(
                    f"the fields for the spectral whitening hold NaN or infinite values "
                    f"(batch {number})"
                )
            r = self._regressors(hours, x.shape[0], torch.float64, torch.device("cpu"))
            a = self._to_groups(self._analyse(x, sht, vsht, std, mean))
            gram += r.T @ r
            moments += torch.einsum("br,btmgp->rtmgp", r.to(a.dtype), a)
            outer += torch.einsum("btmgp,btmgq->tmgpq", a, a.conj())
            count += a.shape[0]
        if count < regressors + 1:
            estimated = f"a mean and {self.tides} tidal harmonics" if self.tides else "a mean"
            raise InvalidValueError(
                f"the spectral whitening needs at least {regressors + 1} fields, got {count} "
                f"({estimated}, then a covariance)"
            )
        coverage = float(torch.linalg.eigvalsh(gram / count).min())
        if coverage <= COVERAGE_FLOOR:
            raise InvalidValueError(
                f"the hours of the {count} training fields do not cover the day well enough "
                f"to fit {self.tides} tidal harmonics (coverage {max(coverage, 0.0):.3f}, needs more "
                f"than {COVERAGE_FLOOR}); train on fields spread over the day, or with fewer tides"
            )
        inverse_gram = torch.linalg.inv(gram).to(moments.dtype)
        coefficients = torch.einsum("rs,stmgp->rtmgp", inverse_gram, moments)
        explained = torch.einsum("rtmgp,rs,stmgq->tmgpq", moments, inverse_gram, moments.conj())
        covariance = (outer - explained) / (count - regressors)
        covariance = 0.5 * (covariance + covariance.mH)  # Hermitian up to round-off
        mu = coefficients[0]
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        # m = 0 coefficients are real: real eigenvectors keep their whitened values real.
        real_values, real_vectors = torch.linalg.eigh(covariance[:, 0].real)
        eigenvalues[:, 0] = real_values
        eigenvectors[:, 0] = real_vectors.to(eigenvectors.dtype)
        mu[:, 0] = mu[:, 0].real.to(mu.dtype)
        eigenvalues, eigenvectors = eigenvalues.flip(-1), eigenvectors.flip(-1)  # largest first
        valid = self.valid.cpu()[:, :, None, None]
        eigenvalues = torch.where(valid, eigenvalues, 0.0)
        largest = eigenvalues.amax(dim=-1, keepdim=True)
        dropped = (eigenvalues <= RELATIVE_FLOOR * largest) | (
            eigenvalues <= GLOBAL_FLOOR * eigenvalues.max()
        )
        eigenvalues = torch.where(dropped, 0.0, eigenvalues)
        mu = torch.where(valid, mu, 0.0)
        device, dtype = self.mean.device, self.mean.dtype
        self.mean.copy_(torch.view_as_real(mu).to(device, dtype))
        if self.tides:
            tidal = torch.where(valid, coefficients[1:], 0.0)
            tidal[:, :, 0] = tidal[:, :, 0].real.to(tidal.dtype)  # m = 0 stays real
            self.tidal_mean.copy_(torch.view_as_real(tidal).to(device, dtype))
        self.eigenvalues.copy_(eigenvalues.to(device, dtype))
        self.eigenvectors.copy_(torch.view_as_real(eigenvectors).to(device, dtype))
        if self.coupling == "cascade":
            self._refresh_rotation()
        return self

    def _refresh_rotation(self) -> None:
        """The cascade's ``R`` from the stored eigen-decomposition (in float64), so that
        fitting and loading a checkpoint give the same rotation."""
        vectors = torch.view_as_complex(self.eigenvectors.detach().cpu().double().contiguous())
        rotation = _triangular_rotation(vectors, self.eigenvalues.detach().cpu().double())
        self.rotation.copy_(torch.view_as_real(rotation).to(self.rotation))

    # ------------------------------------------------------------------ time of day
    def _regressors(
        self, hours: Any, batch: int, dtype: torch.dtype, device: torch.device
    ) -> Tensor:
        """``(batch, 1 + 2 tides)``: ``1`` and the solar-day harmonics of ``hours``.

        ``hours``: UT hours, one per field ``(batch,)`` or one for all (a
        number or 0-d tensor); ignored, and may be ``None``, when ``tides`` is 0.
        """
        ones = torch.ones(batch, 1, dtype=dtype, device=device)
        if not self.tides:
            return ones
        if hours is None:
            raise InvalidValueError(
                f"this transform's mean follows the time of day ({self.tides} solar-day "
                "harmonics): give the UT hour of the fields"
            )
        h = torch.as_tensor(hours, dtype=dtype, device=device)
        if h.dim() == 0:
            h = h.expand(batch)
        if h.shape != (batch,):
            raise InvalidValueError(
                f"hours must be one number or one per field ({batch}), got shape {tuple(h.shape)}"
            )
        if not torch.isfinite(h).all():
            raise InvalidValueError("the hours of the fields hold NaN or infinite values")
        return torch.cat([ones, day_harmonics(h, self.tides)], dim=1)

    def mean_at(self, hours: Any, batch: int = 1) -> Tensor:
        """The mean coefficients ``(batch, T, M, G, P)`` complex at UT ``hours``.

        Without tides, the one mean for every hour (``hours`` may be ``None``).
        """
        mu = torch.view_as_complex(self.mean)
        if not self.tides:
            return mu.expand(batch, *mu.shape)
        r = self._regressors(hours, batch, self.mean.dtype, self.mean.device)
        tidal = torch.view_as_complex(self.tidal_mean)
        return mu + torch.einsum("br,rtmgp->btmgp", r[:, 1:].to(tidal.dtype), tidal)

    # ------------------------------------------------------------------ applying
    def _statistics(self) -> tuple[Tensor, Tensor, Tensor]:
        """``Q`` ``(T, M, G, P, P)`` complex, ``lam^(1/2)``, ``lam^(-1/2)`` (the mean: :meth:`mean_at`)."""
        vectors = torch.view_as_complex(self.eigenvectors)
        lam = self.eigenvalues
        root = lam.clamp(min=0.0).sqrt()
        inverse_root = torch.where(lam > 0, 1.0 / torch.where(lam > 0, root, 1.0), 0.0)
        return vectors, root, inverse_root

    def encode(self, x: Tensor, hours: Any = None) -> Tensor:
        """Normalised fields ``(B, V, L, H, W)`` -> control variables ``z`` ``(B, V, L, K)``.

        ``hours``: the fields' UT hours (``(B,)`` or one number), needed with ``tides``.
        """
        self._check(x, "fields", self.field_shape)
        dtype = self.mean.dtype
        transforms = self.transforms(dtype)
        a = self._analyse(
            x.to(dtype), transforms.sht, transforms.vsht, self.wind_std, self.wind_mean
        )
        vectors, _, inverse_root = self._statistics()
        mu = self.mean_at(hours, x.shape[0])
        projected = torch.einsum("tmgpq,btmgp->btmgq", vectors.conj(), self._to_groups(a) - mu)
        projected = projected * inverse_root
        if self.coupling == "cascade":
            rotation = torch.view_as_complex(self.rotation)
            projected = torch.einsum("tmgpq,btmgp->btmgq", rotation.conj(), projected)
        w = self._from_groups(projected)
        return self._pack(w).to(x.dtype)

    def decode(self, z: Tensor, hours: Any = None) -> Tensor:
        """Control variables ``z`` ``(B, V, L, K)`` -> normalised fields ``(B, V, L, H, W)``.

        ``hours``: the fields' UT hours (``(B,)`` or one number), needed with ``tides``.
        """
        self._check(z, "control variables", self.state_shape)
        dtype = self.mean.dtype
        w = self._to_groups(self._unpack(z.to(dtype)))
        if self.coupling == "cascade":
            w = torch.einsum("tmgpq,btmgq->btmgp", torch.view_as_complex(self.rotation), w)
        vectors, root, _ = self._statistics()
        mu = self.mean_at(hours, z.shape[0])
        a = mu + torch.einsum("tmgpq,btmgq->btmgp", vectors, w * root)
        return self._synthesise(self._from_groups(a)).to(z.dtype)

    def image(self, z: Tensor) -> Tensor:
        """A linear grid picture ``(B, V, L, H, W)`` of ``z`` ``(B, V, L, K)``.

        Each channel's ``w`` through the scalar synthesis times ``sqrt(4 pi / K)``:
        the image of ``z ~ N(0, I)`` has variance 1 at every grid point.
        """
        self._check(z, "control variables", self.state_shape)
        w = self._unpack(z.to(self.mean.dtype)) * math.sqrt(4.0 * math.pi / self.dofs)
        return self.transforms().isht(w).to(z.dtype)

    def coefficients(self, image: Tensor) -> Tensor:
        """The inverse of :meth:`image`: ``(B, V, L, H, W)`` -> ``z`` ``(B, V, L, K)``.

        Exact on band-limited images (Gauss-Legendre grids); what lies beyond
        the truncation is discarded.
        """
        self._check(image, "images", self.field_shape)
        w = self.transforms().sht(image.to(self.mean.dtype)) / math.sqrt(4.0 * math.pi / self.dofs)
        return self._pack(w).to(image.dtype)


def _triangular_rotation(vectors: Tensor, eigenvalues: Tensor) -> Tensor:
    """The unitary ``R`` ``(T, M, G, P, P)`` that makes ``U R`` lower-triangular, ``U = Q diag(lam)^(1/2)``.

    QR of ``U^H = R T`` (``T`` upper-triangular) gives ``U R = T^H``. Channels
    without variance (the vector potentials of degree 0; every channel of the
    modes ``m > l``) have zero columns in ``U^H``, and a QR that meets a zero
    column before live ones spends a direction on nothing and leaves later
    channels a zero diagonal, whose inverse is no longer triangular. So each
    such channel's column gets a 1 in the row of one dropped eigen-direction
    first: those rows are orthogonal to everything live, ``T`` keeps a
    non-zero diagonal on the live channels, and ``U R`` is ``T^H`` with the
    dead rows and columns zero. The columns of ``R`` are then rephased so that
    the diagonal is real and non-negative (a channel's innovation enters it
    with a positive sign); ``m = 0`` modes, whose ``Q`` is real, get a real
    ``R``. Float64 or complex128 in and out.
    """
    factor = vectors * eigenvalues.clamp(min=0.0).sqrt()[..., None, :].to(vectors.dtype)
    target = factor.mH.clone()  # rows: eigen-directions; columns: channels
    variance = factor.abs().square().sum(dim=-1)  # (T, M, G, P) per channel
    dead = variance <= RELATIVE_FLOOR * variance.amax(dim=-1, keepdim=True)
    dropped = eigenvalues <= 0
    for t, m, g in torch.nonzero(dead.any(dim=-1)).tolist():
        channels = torch.nonzero(dead[t, m, g]).flatten().tolist()
        spare = torch.nonzero(dropped[t, m, g]).flatten().tolist()
        if len(spare) < len(channels):  # a channel without variance needs a free direction
            raise InvalidValueError(
                f"mode (l={t}, m={m}) has {len(channels)} channels without variance but only "
                f"{len(spare)} dropped directions; the cascade cannot be built"
            )
        target[t, m, g][:, channels] = 0.0
        for channel, direction in zip(channels, spare, strict=False):
            target[t, m, g, direction, channel] = 1.0
    rotation, upper = torch.linalg.qr(target)
    diagonal = upper.diagonal(dim1=-2, dim2=-1)
    size = diagonal.abs()
    phase = torch.where(size > 0, diagonal / torch.where(size > 0, size, 1.0), 1.0)
    rotation = rotation * phase[..., None, :]
    rotation[:, 0] = rotation[:, 0].real.to(rotation.dtype)
    return rotation
