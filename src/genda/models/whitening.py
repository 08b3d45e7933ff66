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

* ``A`` is the analysis: the vector transform of the physical-scale winds,
  scaled so that ``sum_lm |a_lm|^2`` is their kinetic energy in normalised
  units, and the scalar transform of every other variable
  (:mod:`genda.models.whitening_harmonics`). The map stays affine.
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
* Eigen-directions are sorted by decreasing eigenvalue; those with no
  variance to speak of are dropped: their ``z`` component is 0 on encode and
  ignored on decode. ``m = 0`` coefficients and eigenvectors are real.
* ``"cascade"`` rotates the eigen-square-root into a lower-triangular one,
  ``L_lm = Q_lm diag(lam_lm)^(1/2) R_lm`` with ``R_lm`` unitary: channel
  ``(level k, v)`` is made of the ``z`` of levels ``<= k`` only, and the whole
  vertical covariance of the Gaussian part sits in the transform, so a network
  that sees one layer of ``z`` and its neighbours (``layer2d``) need not make
  the vertical coupling itself. Encoding applies ``R^H diag(lam)^(-1/2) Q^H``,
  the (pseudo-)inverse of ``L``.
* The fit's statistics, floors and square roots:
  :mod:`genda.models.whitening_covariance`.
* The layout of ``z`` (where each group's components and the real and
  imaginary parts of each mode sit; checkpoints depend on it):
  :mod:`genda.models.whitening_layout`. Under the fitted Gaussian each of
  the ``K = T * T`` entries of a channel is ``N(0, 1)`` and all are independent.

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
from typing import Any

import torch
from torch import Tensor, nn

from genda.errors import InvalidValueError
from genda.grid import Grid
from genda.models.whitening_covariance import (
    COVERAGE_FLOOR,
    GLOBAL_FLOOR,
    RELATIVE_FLOOR,
    accumulate_moments,
    eigen_decomposition,
    empty_moments,
    fitted_means,
    mean_and_covariance,
    regressors,
    triangular_rotation,
)
from genda.models.whitening_harmonics import (
    HarmonicTransforms,
    analyse,
    checked_truncation,
    float64_transforms,
    synthesise,
    vector_gain,
    wind_statistics,
)
from genda.models.whitening_layout import dof_tables, from_groups, pack, to_groups, unpack
from genda.normalization import Normalization
from genda.trajectory import state_grid, state_normalization, trajectory_states

__all__ = [
    "COUPLINGS",
    "COVERAGE_FLOOR",
    "GLOBAL_FLOOR",
    "MAX_TIDES",
    "RELATIVE_FLOOR",
    "WHITENING_KIND",
    "HarmonicTransforms",
    "SpectralWhitening",
]

WHITENING_KIND = "spectral-whitening"
"""The name of this transform in a checkpoint's ``config.json``."""

COUPLINGS = ("columns", "levels", "cascade", "causal")
"""``"columns"``: all variables and levels of a mode together (``joint3d``);
``"levels"``: the variables of each level, levels separable (``layer2d`` priors
until the cascade); ``"cascade"``: all together, with a square root that is
lower-triangular in level order (``layer2d``); ``"causal"``: all together,
lower-triangular in time order and then level order (trajectory priors of
both strategies)."""

TRIANGULAR = ("cascade", "causal")
"""The couplings whose square root is lower-triangular in their channel order."""

MAX_TIDES = 11
"""Most solar-day harmonics in the mean: hourly fields resolve periods down to 2 h."""

_triangular_rotation = triangular_rotation
"""The cascade's rotation, :func:`genda.models.whitening_covariance.triangular_rotation`."""


def _check_options(coupling: str, tides: int) -> None:
    """``coupling`` is one of :data:`COUPLINGS`, ``tides`` a whole number up to :data:`MAX_TIDES`."""
    if coupling not in COUPLINGS:
        raise InvalidValueError(f"coupling must be one of {COUPLINGS}, got {coupling!r}")
    if isinstance(tides, bool) or not isinstance(tides, int) or not 0 <= tides <= MAX_TIDES:
        raise InvalidValueError(
            f"tides must be a whole number of solar-day harmonics in 0..{MAX_TIDES} "
            f"(hourly fields resolve periods down to 2 h), got {tides!r}"
        )


def pinv_rtol(dtype: torch.dtype) -> float:
    """Relative cut of the singular values in a pseudo-inverse of the fitted factors:
    the float64 fit's round-off, or float32's, not the data's."""
    return 1e-10 if dtype == torch.float64 else 1e-5


class SpectralWhitening(nn.Module):
    """The affine control-variable transform ``x = mu + U z`` with ``z ~ N(0, I)`` under the fit.

    Args:
        grid: the grid of the fields (Gauss-Legendre or equiangular latitudes),
            or of ``K`` hourly states of one (:mod:`genda.trajectory`), each
            state transformed alone and all coupled in the statistics.
        normalization: the statistics the fields were normalised with; only
            the ``u`` and ``v`` rows are used, to run the vector transform on
            physical-scale winds. ``None``: the winds are taken as they come
            (right when ``u`` and ``v`` share their scale and have zero mean).
        truncation: number of degrees ``T`` kept, ``l = 0..T-1``; at most and by
            default ``min(nlat, (nlon + 1) // 2)`` on Gauss-Legendre grids (``nlat``
            for ``nlon = 2 nlat``) and ``min((nlat + 1) // 2, (nlon + 1) // 2)`` on
            equiangular ones, where the quadrature is exact.
        coupling: ``"columns"``, ``"levels"``, ``"cascade"`` or ``"causal"`` (see
            :data:`COUPLINGS`).
        tides: solar-day harmonics in the mean (0: one mean for every hour;
            3: the diurnal, semidiurnal and terdiurnal tides).

    Buffers saved with the weights: ``mean`` ``(T, M, G, P, 2)`` (real,
    imaginary), ``eigenvalues`` ``(T, M, G, P)`` (0 where dropped) and
    ``eigenvectors`` ``(T, M, G, P, P, 2)`` (column ``p`` is component
    ``p``), with ``tides`` also ``tidal_mean`` ``(2 tides, T, M, G, P, 2)``
    (cosine then sine coefficients of each harmonic), all zero until
    :meth:`fit`; ``wind_std`` and ``wind_mean`` ``(2, L)``; ``"cascade"`` and ``"causal"`` also
    ``rotation`` ``(T, M, G, P, P, 2)``, the unitary ``R``, not saved but derived
    from the eigen-decomposition after fitting and after loading. ``G, P = 1, V * L``
    for ``"columns"``, ``"cascade"`` and ``"causal"``, ``L, V`` for ``"levels"``.
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
        kind, t = checked_truncation(grid, truncation)
        _check_options(coupling, tides)
        self.tides = tides
        self.states = trajectory_states(grid)
        nvar, nlev = len(grid.variables), grid.nlevels
        self.grid, self.truncation, self.coupling = grid, t, coupling
        self.field_shape = (nvar, nlev, grid.nlat, grid.nlon)
        self.groups, self.group_size = (nlev, nvar) if coupling == "levels" else (1, nvar * nlev)
        self.dofs = t * t
        self._options: dict[str, Any] = {"lmax": t, "mmax": t, "grid": kind, "csphase": False}
        self._register_winds(normalization)

        # The transform tables are kept in float64 outside the module's buffers and
        # cast per (dtype, device) on first use: module.float() then .double() would
        # otherwise leave float32-rounded tables and spoil float64 round trips.
        self._master = float64_transforms(grid.nlat, grid.nlon, self._options)
        self._cache: dict[tuple[torch.dtype, torch.device], HarmonicTransforms] = {}

        self.register_buffer(
            "valid", torch.arange(t)[None, :] <= torch.arange(t)[:, None], persistent=False
        )
        self._register_layout(t)
        self._register_statistics()

    def _register_winds(self, normalization: Normalization | None) -> None:
        """``wind_index``, ``scalar_index`` and the buffers ``wind_std``, ``wind_mean`` ``(2, L)``.

        Winds (u, v) are one vector field; everything else is scalar.
        """
        state = state_grid(self.grid)  # the transforms act on one hourly state at a time
        if normalization is not None and normalization.variables == self.grid.variables:
            normalization = state_normalization(normalization, self.grid)
        wind_index, std, mean = wind_statistics(normalization, state.variables, state.nlevels)
        self.wind_index: tuple[int, int] | None = wind_index
        self.scalar_index = tuple(
            i for i in range(len(state.variables)) if wind_index is None or i not in wind_index
        )
        self.register_buffer("wind_std", std.clone())
        self.register_buffer("wind_mean", mean.clone())

    def _register_statistics(self) -> None:
        """The fitted buffers, zero until :meth:`fit`; the cascade's ``rotation`` and its hook."""
        t, g, p = self.truncation, self.groups, self.group_size
        self.register_buffer("mean", torch.zeros(t, t, g, p, 2))
        self.register_buffer("eigenvalues", torch.zeros(t, t, g, p))
        self.register_buffer("eigenvectors", torch.zeros(t, t, g, p, p, 2))
        if self.tides:
            self.register_buffer("tidal_mean", torch.zeros(2 * self.tides, t, t, g, p, 2))
        if self.coupling in TRIANGULAR:
            # Derived from the eigen-decomposition, so not saved: recomputed after
            # fitting and after loading the saved statistics.
            self.register_buffer("rotation", torch.zeros(t, t, g, p, p, 2), persistent=False)
            self.register_load_state_dict_post_hook(lambda module, _: module._refresh_rotation())

    def _register_layout(self, t: int) -> None:
        """Index tables between ``(T, M, 2)`` complex coefficients and the ``K`` real dofs."""
        names = ("dof_degree", "dof_order", "_pack_index", "_unpack_index")
        for name, table in zip(names, dof_tables(t), strict=True):
            self.register_buffer(name, table, persistent=False)

    def _vector_gain(self, dtype: torch.dtype, inverse: bool = False) -> Tensor:
        """``(T,)`` ``sqrt(l (l + 1))`` (or its inverse, 0 at ``l = 0``)."""
        return vector_gain(self.truncation, dtype, self.dof_order.device, inverse)

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
        return to_groups(a, self.coupling, self.states)

    def _from_groups(self, g: Tensor) -> Tensor:
        """``(B, T, M, G, P)`` -> ``(B, V, L, T, M)``, the inverse of :meth:`_to_groups`."""
        return from_groups(g, self.coupling, *self.field_shape[:2], self.states)

    def _per_state(self, x: Tensor, states: int | None = None) -> Tensor:
        """``(B, K V, ...)`` -> ``(B K, V, ...)``: the hourly states of a trajectory apart.

        ``states``: ``K`` (default: this transform's), e.g. the hours of a longer window.
        """
        k = states or self.states
        return x.reshape(x.shape[0] * k, x.shape[1] // k, *x.shape[2:])

    def _per_trajectory(self, x: Tensor, states: int | None = None) -> Tensor:
        """``(B K, V, ...)`` -> ``(B, K V, ...)``, the inverse of :meth:`_per_state`."""
        k = states or self.states
        return x.reshape(x.shape[0] // k, x.shape[1] * k, *x.shape[2:])

    def _pack(self, w: Tensor) -> Tensor:
        """Complex ``(..., T, M)`` -> real ``(..., K)`` in the documented layout."""
        return pack(w, self._pack_index, self.dof_order)

    def _unpack(self, z: Tensor) -> Tensor:
        """Real ``(..., K)`` -> complex ``(..., T, M)`` (0 off the triangle and for Im of m = 0)."""
        return unpack(z, self._unpack_index, self._pack_index, self.dof_order, self.truncation)

    # ------------------------------------------------------------------ transforms
    def _analyse(
        self, x: Tensor, sht: nn.Module, vsht: nn.Module, std: Tensor, mean: Tensor
    ) -> Tensor:
        """Normalised fields ``(B, V, L, H, W)`` -> coefficients ``(B, V, L, T, M)``."""
        gain = self._vector_gain(x.dtype)
        indices = (self.scalar_index, self.wind_index)
        return self._per_trajectory(
            analyse(self._per_state(x), (sht, vsht), std, mean, gain, indices)
        )

    def _synthesise(self, a: Tensor, states: int | None = None) -> Tensor:
        """Coefficients ``(B, V, L, T, M)`` -> normalised fields ``(B, V, L, H, W)``.

        ``states``: the hourly states stacked in ``V`` (default: this transform's ``K``).
        """
        dtype = self.wind_std.dtype
        transforms = self.transforms(dtype)
        fields = synthesise(
            self._per_state(a, states),
            (transforms.isht, transforms.ivsht),
            self.wind_std,
            self.wind_mean,
            self._vector_gain(dtype, inverse=True),
            (self.scalar_index, self.wind_index),
        )
        return self._per_trajectory(fields, states)

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
        sht, vsht = self._master.sht, self._master.vsht
        std, mean = self.wind_std.detach().cpu().double(), self.wind_mean.detach().cpu().double()
        sums = empty_moments(self.tides, self.truncation, self.groups, self.group_size)
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
            sums = accumulate_moments(sums, r, a)
        coefficients, covariance = mean_and_covariance(sums, self.tides)
        valid = self.valid.cpu()
        eigenvalues, eigenvectors = eigen_decomposition(covariance, valid)
        mu, tidal = fitted_means(coefficients, valid)
        device, dtype = self.mean.device, self.mean.dtype
        self.mean.copy_(torch.view_as_real(mu).to(device, dtype))
        if self.tides:
            self.tidal_mean.copy_(torch.view_as_real(tidal).to(device, dtype))
        self.eigenvalues.copy_(eigenvalues.to(device, dtype))
        self.eigenvectors.copy_(torch.view_as_real(eigenvectors).to(device, dtype))
        if self.coupling in TRIANGULAR:
            self._refresh_rotation()
        return self

    def _refresh_rotation(self) -> None:
        """The cascade's ``R`` from the stored eigen-decomposition (in float64), so that
        fitting and loading a checkpoint give the same rotation."""
        # One degree at a time: the float64 factors of every mode at once would hold
        # several times the rotation's size (GBs with 64 levels on 32 x 64).
        eigenvalues = self.eigenvalues.detach().cpu().double()
        for degree in range(self.truncation):
            vectors = self.eigenvectors[degree : degree + 1].detach().cpu().double()
            rotation = triangular_rotation(
                torch.view_as_complex(vectors.contiguous()),
                eigenvalues[degree : degree + 1],
                first_degree=degree,
            )
            self.rotation[degree : degree + 1].copy_(torch.view_as_real(rotation).to(self.rotation))

    # ------------------------------------------------------------------ time of day
    def _regressors(
        self, hours: Any, batch: int, dtype: torch.dtype, device: torch.device
    ) -> Tensor:
        """``(batch, 1 + 2 tides)``: :func:`~genda.models.whitening_covariance.regressors`."""
        return regressors(hours, batch, self.tides, dtype, device)

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

    def _anomalies(self, x: Tensor, hours: Any) -> Tensor:
        """Coefficients of ``x`` ``(B, V, L, H, W)`` less the mean at ``hours``: ``(B, T, M, G, P)``."""
        self._check(x, "fields", self.field_shape)
        dtype = self.mean.dtype
        transforms = self.transforms(dtype)
        a = self._analyse(
            x.to(dtype), transforms.sht, transforms.vsht, self.wind_std, self.wind_mean
        )
        return self._to_groups(a) - self.mean_at(hours, x.shape[0])

    def encode(self, x: Tensor, hours: Any = None) -> Tensor:
        """Normalised fields ``(B, V, L, H, W)`` -> control variables ``z`` ``(B, V, L, K)``.

        ``hours``: the fields' UT hours (``(B,)`` or one number), needed with ``tides``.
        """
        vectors, _, inverse_root = self._statistics()
        projected = torch.einsum("tmgpq,btmgp->btmgq", vectors.conj(), self._anomalies(x, hours))
        projected = projected * inverse_root
        if self.coupling in TRIANGULAR:
            rotation = torch.view_as_complex(self.rotation)
            projected = torch.einsum("tmgpq,btmgp->btmgq", rotation.conj(), projected)
        w = self._from_groups(projected)
        return self._pack(w).to(x.dtype)

    def causal_factor(self) -> Tensor:
        """``L = Q lam^(1/2) R`` ``(T, M, G, P, P)`` complex: the coefficients' anomalies are ``L w``.

        Lower-triangular in the coupling's channel order for ``"cascade"`` and
        ``"causal"`` (:mod:`genda.models.whitening_covariance`).
        """
        vectors, root, _ = self._statistics()
        rotation = torch.view_as_complex(self.rotation)
        return torch.einsum("tmgpq,tmgqr->tmgpr", vectors * root[..., None, :], rotation)

    def square_root(self) -> Tensor:
        """``U``'s per-mode factor ``(T, M, G, P, P)`` complex: the anomalies are ``factor @ w``.

        ``Q lam^(1/2)``, times ``R`` for the triangular couplings (:meth:`causal_factor`).
        """
        if self.coupling in TRIANGULAR:
            return self.causal_factor()
        vectors, root, _ = self._statistics()
        return vectors * root[..., None, :]

    def encode_leading(self, x: Tensor, states: int, hours: Any = None) -> Tensor:
        """The ``z`` of a trajectory's first ``states`` hourly states, from those states alone.

        ``x``: ``(B, K V, L, H, W)`` normalised fields whose first ``states``
        states are given (the rest is ignored); returns ``z`` ``(B, K V, L, D)``
        with the components of those states and zeros elsewhere. With the
        causal square root ``L`` lower-triangular in time order, those states
        are ``L_11 z_1``: ``z_1`` is the least-squares solution of that block
        alone (``pinv(L_11)``, per mode). :meth:`encode` applies the
        pseudo-inverse of the whole ``L``, which is triangular only while no
        eigen-direction is dropped: with fewer training trajectories than
        channels its first components would depend on the later states.

        Raises:
            InvalidValueError: not the causal square root, or ``states`` outside ``1..K``.
        """
        if self.coupling != "causal":
            raise InvalidValueError(
                f"the first states of a trajectory have their own z only under the causal "
                f"square root, not {self.coupling!r}"
            )
        if not 1 <= int(states) <= self.states:
            raise InvalidValueError(f"1..{self.states} leading states, not {states}")
        d = self._anomalies(x, hours)
        dtype = self.mean.dtype
        factor = self.causal_factor()
        count = int(states) * self.group_size // self.states  # the first channels, time first
        lead = factor[..., :count, :count]
        inverse = torch.linalg.pinv(lead, rtol=pinv_rtol(dtype))
        w = torch.zeros_like(d)
        w[..., :count] = torch.einsum("tmgpq,btmgq->btmgp", inverse, d[..., :count])
        return self._pack(self._from_groups(w)).to(x.dtype)

    def decode(self, z: Tensor, hours: Any = None) -> Tensor:
        """Control variables ``z`` ``(B, V, L, K)`` -> normalised fields ``(B, V, L, H, W)``.

        ``hours``: the fields' UT hours (``(B,)`` or one number), needed with ``tides``.
        """
        self._check(z, "control variables", self.state_shape)
        dtype = self.mean.dtype
        w = self._to_groups(self._unpack(z.to(dtype)))
        if self.coupling in TRIANGULAR:
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
