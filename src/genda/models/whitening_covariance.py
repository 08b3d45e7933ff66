"""Per-mode statistics of the spectral whitening and their square roots, as plain tensor maths.

:class:`genda.models.whitening.SpectralWhitening` is the control-variable
transform ``x = mu + U z`` with ``B = U U^T`` (Bannister 2008, "A review of
forecast error covariance statistics in atmospheric variational data
assimilation", Q. J. R. Meteorol. Soc. 134, sections 3-4), built per
spherical-harmonic mode ``(l, m)`` and coupling group. This module holds the
steps of its fit that need none of the module's state, on tensors
``(T, M, G, P)`` of modes, groups and channels:

* the regressors ``r(h) = (1, cos(k Omega h), sin(k Omega h))``, ``k =
  1..tides``, of the time-of-day mean (:func:`regressors`);
* one pass of moments over the training coefficients ``a``: ``sum r r^T``,
  ``sum r a`` and ``sum a a^H`` (:class:`Moments`, :func:`accumulate_moments`);
* the least-squares mean and tides, ``c = (sum r r^T)^-1 sum r a``, and the
  residual covariance ``S = (sum a a^H - m^T (sum r r^T)^-1 conj(m)) / (n - 1 -
  2 tides)``, ``m = sum r a`` (:func:`mean_and_covariance`, :func:`fitted_means`);
* the eigen-square-root ``S = Q diag(lam) Q^H``, ``U = Q diag(lam)^(1/2)``
  (:func:`eigen_decomposition`). Eigen-directions are sorted by decreasing
  eigenvalue. Those with ``lam <=`` :data:`RELATIVE_FLOOR` (``1e-10``) times
  the largest of their group and mode, or ``lam <=`` :data:`GLOBAL_FLOOR`
  (``1e-14``) times the largest of all, are dropped (so fewer fields than
  channels give a rank-deficient but usable fit; the vector coefficients of
  degree 0, which are 0, are always dropped). ``m = 0`` coefficients are real
  and their eigenvectors are real.
* the cascade's triangular rotation (:func:`triangular_rotation`): the
  unitary ``R`` with ``L = U R`` lower-triangular in level order, from the QR
  factorisation of ``U^H`` (Golub & Van Loan, "Matrix Computations", 4th ed.,
  5.2). ``S = L L^H`` as before, but channel ``(level k, v)`` is made of the
  ``z`` of levels ``<= k`` only, and ``z`` channel ``(v, k)`` is the part of
  variable ``v`` at level ``k`` that the levels below and the earlier
  variables of level ``k`` do not predict (Cholesky's innovations). Under the
  fitted Gaussian ``z`` is as white as with the other couplings, and the
  whole vertical covariance of the Gaussian part sits in the transform, which
  the levels-apart square root left to the network.

The fit runs these in float64 / complex128 on the CPU; :func:`regressors` also
gives the mean at the fields' hours in the module's dtype.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from genda.errors import InvalidValueError
from genda.models.time_of_day import day_harmonics

__all__ = [
    "COVERAGE_FLOOR",
    "GLOBAL_FLOOR",
    "RELATIVE_FLOOR",
    "Moments",
    "accumulate_moments",
    "eigen_decomposition",
    "empty_moments",
    "fitted_means",
    "mean_and_covariance",
    "regressors",
    "triangular_rotation",
]

RELATIVE_FLOOR = 1e-10
"""Eigenvalues at or below this fraction of the largest of their group and mode are dropped."""

GLOBAL_FLOOR = 1e-14
"""Eigenvalues at or below this fraction of the largest of all modes are dropped (empty modes)."""

COVERAGE_FLOOR = 0.05
"""The hours of the fields must cover the day: the smallest eigenvalue of the regressors'
normalised Gram matrix (``1/2`` per harmonic for evenly spread hours) must exceed this."""


def regressors(
    hours: Any, batch: int, tides: int, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """``(batch, 1 + 2 tides)``: ``1`` and the solar-day harmonics of ``hours``.

    ``hours``: UT hours, one per field ``(batch,)`` or one for all (a
    number or 0-d tensor); ignored, and may be ``None``, when ``tides`` is 0.
    """
    ones = torch.ones(batch, 1, dtype=dtype, device=device)
    if not tides:
        return ones
    if hours is None:
        raise InvalidValueError(
            f"this transform's mean follows the time of day ({tides} solar-day "
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
    return torch.cat([ones, day_harmonics(h, tides)], dim=1)


class Moments(NamedTuple):
    """Sums over the training fields, float64 / complex128.

    ``gram`` ``(R, R)`` ``sum r r^T``; ``moments`` ``(R, T, M, G, P)`` ``sum r a``;
    ``outer`` ``(T, M, G, P, P)`` ``sum a a^H``; ``count`` the number of fields;
    ``R = 1 + 2 tides``.
    """

    gram: Tensor
    moments: Tensor
    outer: Tensor
    count: int


def empty_moments(tides: int, t: int, g: int, p: int) -> Moments:
    """Zero :class:`Moments` for ``tides`` harmonics and ``(T, M, G, P) = (t, t, g, p)``."""
    size = 1 + 2 * tides
    return Moments(
        torch.zeros(size, size, dtype=torch.float64),
        torch.zeros(size, t, t, g, p, dtype=torch.complex128),
        torch.zeros(t, t, g, p, p, dtype=torch.complex128),
        0,
    )


def accumulate_moments(sums: Moments, r: Tensor, a: Tensor) -> Moments:
    """``sums`` plus a batch: regressors ``r`` ``(B, R)`` and coefficients ``a`` ``(B, T, M, G, P)``."""
    return Moments(
        sums.gram + r.T @ r,
        sums.moments + torch.einsum("br,btmgp->rtmgp", r.to(a.dtype), a),
        sums.outer + torch.einsum("btmgp,btmgq->tmgpq", a, a.conj()),
        sums.count + a.shape[0],
    )


def mean_and_covariance(sums: Moments, tides: int) -> tuple[Tensor, Tensor]:
    """The least-squares coefficients ``(R, T, M, G, P)`` (mean, then cosine and sine of each
    harmonic) and the Hermitian residual covariance ``(T, M, G, P, P)``.

    Raises:
        InvalidValueError: fewer than ``2 + 2 tides`` fields, or hours that do not
            cover the day well enough for the harmonics.
    """
    count, size = sums.count, 1 + 2 * tides
    if count < size + 1:
        estimated = f"a mean and {tides} tidal harmonics" if tides else "a mean"
        raise InvalidValueError(
            f"the spectral whitening needs at least {size + 1} fields, got {count} "
            f"({estimated}, then a covariance)"
        )
    coverage = float(torch.linalg.eigvalsh(sums.gram / count).min())
    if coverage <= COVERAGE_FLOOR:
        raise InvalidValueError(
            f"the hours of the {count} training fields do not cover the day well enough "
            f"to fit {tides} tidal harmonics (coverage {max(coverage, 0.0):.3f}, needs more "
            f"than {COVERAGE_FLOOR}); train on fields spread over the day, or with fewer tides"
        )
    moments = sums.moments
    inverse_gram = torch.linalg.inv(sums.gram).to(moments.dtype)
    coefficients = torch.einsum("rs,stmgp->rtmgp", inverse_gram, moments)
    explained = torch.einsum("rtmgp,rs,stmgq->tmgpq", moments, inverse_gram, moments.conj())
    covariance = (sums.outer - explained) / (count - size)
    covariance = 0.5 * (covariance + covariance.mH)  # Hermitian up to round-off
    return coefficients, covariance


def fitted_means(coefficients: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """The mean ``(T, M, G, P)`` and tidal coefficients ``(2 tides, T, M, G, P)`` of
    :func:`mean_and_covariance`'s ``coefficients``, 0 off the ``(T, M)`` triangle
    ``valid`` and real for ``m = 0``."""
    valid = valid[:, :, None, None]
    mu = coefficients[0]
    mu[:, 0] = mu[:, 0].real.to(mu.dtype)
    mu = torch.where(valid, mu, 0.0)
    tidal = torch.where(valid, coefficients[1:], 0.0)
    tidal[:, :, 0] = tidal[:, :, 0].real.to(tidal.dtype)  # m = 0 stays real
    return mu, tidal


def eigen_decomposition(covariance: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues ``(T, M, G, P)`` and eigenvectors ``(T, M, G, P, P)`` of ``covariance``.

    Largest first; 0 off the ``(T, M)`` triangle ``valid`` and where at or below
    :data:`RELATIVE_FLOOR` times the largest of the group and mode or
    :data:`GLOBAL_FLOOR` times the largest of all. ``m = 0`` eigenvectors are real.
    """
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    # m = 0 coefficients are real: real eigenvectors keep their whitened values real.
    real_values, real_vectors = torch.linalg.eigh(covariance[:, 0].real)
    eigenvalues[:, 0] = real_values
    eigenvectors[:, 0] = real_vectors.to(eigenvectors.dtype)
    eigenvalues, eigenvectors = eigenvalues.flip(-1), eigenvectors.flip(-1)  # largest first
    eigenvalues = torch.where(valid[:, :, None, None], eigenvalues, 0.0)
    largest = eigenvalues.amax(dim=-1, keepdim=True)
    dropped = (eigenvalues <= RELATIVE_FLOOR * largest) | (
        eigenvalues <= GLOBAL_FLOOR * eigenvalues.max()
    )
    return torch.where(dropped, 0.0, eigenvalues), eigenvectors


def triangular_rotation(vectors: Tensor, eigenvalues: Tensor, first_degree: int = 0) -> Tensor:
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
    ``R``. Float64 or complex128 in and out. ``first_degree``: the degree of
    the first row of ``T`` (for a slice of the degrees), for the messages.
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
                f"mode (l={first_degree + t}, m={m}) has {len(channels)} channels without variance but only "
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
