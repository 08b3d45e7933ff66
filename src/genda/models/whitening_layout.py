"""The layout of the spectral whitening's control variables ``z``, as plain tensor maths.

:class:`genda.models.whitening.SpectralWhitening` holds per mode ``(l, m)``
and coupling group ``g`` the whitened coefficients ``w`` of ``P`` components;
this module fixes where they sit in ``z`` ``(B, V, L, K)``:

* Components: group ``g``'s component ``p`` (``p = 0`` the largest) lands in
  ``z`` channel ``(p // L, p % L)`` for ``"columns"`` (the ``C`` components
  reshaped to ``(V, L)``: eigen-directions, not physical variables),
  ``(p, g)`` for ``"levels"`` (variable slot ``p`` of level ``g``) and
  ``(p % V, p // V)`` for ``"cascade"`` (channel order ``c = level * V + v``)
  and, for ``"causal"`` on ``K`` stacked hourly states of ``V_s`` variables,
  ``(k V_s + p % V_s, (p // V_s) % L)`` with ``k = p // (L V_s)`` (channel
  order ``c = (k L + level) V_s + v``: time first, then the cascade's order)
  (:func:`to_groups`, :func:`from_groups`).
* Real degrees of freedom, the fixed layout of the last axis of ``z``
  (``K = T * T``; checkpoints depend on it): degree ``l`` owns
  ``k in [l^2, (l + 1)^2)``; ``k = l^2`` is ``w_l0`` (real), ``k = l^2 + 2m - 1``
  is ``sqrt(2) Re w_lm`` and ``k = l^2 + 2m`` is ``sqrt(2) Im w_lm``, ``m = 1..l``.
  Under the fitted Gaussian each of the ``K`` entries is ``N(0, 1)`` and all
  are independent (:func:`dof_tables`, :func:`pack`, :func:`unpack`).

The ``sqrt(2)`` factors are built in the working dtype on each call (a few
hundred numbers): float32 buffers cast up to float64 would spoil exact round trips.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["dof_tables", "from_groups", "pack", "to_groups", "unpack"]


def dof_tables(t: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Index tables between ``(T, M, 2)`` complex coefficients and the ``K`` real dofs.

    Returns the degree and order ``(K,)`` of each dof, the pack index ``(K,)``
    into the flattened ``(T, M, 2)`` and the unpack index ``(T * M * 2,)`` into
    ``z`` with a zero appended at index ``K``.
    """
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
    return deg, mo, flat, unpack_index


def pack_factor(order: Tensor, dtype: torch.dtype) -> Tensor:
    """``(K,)``: 1 for ``m = 0``, ``sqrt(2)`` for the real and imaginary parts of ``m > 0``."""
    factor = torch.ones(order.shape[0], dtype=dtype, device=order.device)
    factor[order > 0] = math.sqrt(2.0)
    return factor


def unpack_factor(order: Tensor, pack_index: Tensor, dtype: torch.dtype) -> Tensor:
    """``(T * M * 2,)``: the inverse of :func:`pack_factor` on the triangle, 0 elsewhere."""
    factor = torch.zeros(order.shape[0] * 2, dtype=dtype, device=order.device)
    factor[pack_index] = 1.0 / pack_factor(order, dtype)
    return factor


def pack(w: Tensor, pack_index: Tensor, order: Tensor) -> Tensor:
    """Complex ``(..., T, M)`` -> real ``(..., K)`` in the documented layout."""
    flat = torch.view_as_real(w).reshape(*w.shape[:-2], -1)
    return flat.index_select(-1, pack_index) * pack_factor(order, flat.dtype)


def unpack(z: Tensor, unpack_index: Tensor, pack_index: Tensor, order: Tensor, t: int) -> Tensor:
    """Real ``(..., K)`` -> complex ``(..., T, M)`` (0 off the triangle and for Im of m = 0)."""
    padded = torch.cat([z, z.new_zeros(*z.shape[:-1], 1)], dim=-1)
    flat = padded.index_select(-1, unpack_index) * unpack_factor(order, pack_index, z.dtype)
    return torch.view_as_complex(flat.reshape(*z.shape[:-1], t, t, 2).contiguous())


def to_groups(a: Tensor, coupling: str, states: int = 1) -> Tensor:
    """``(B, V, L, T, M)`` -> ``(B, T, M, G, P)`` in the coupling's channel order.

    ``states``: the hourly states stacked in ``V`` (:mod:`genda.trajectory`),
    which ``"causal"`` puts first.
    """
    b, nvar, nlev, t, m = a.shape
    if coupling == "causal":  # time order, then level order: c = (k * L + level) * V + v
        a = a.reshape(b, states, nvar // states, nlev, t, m)
        return a.permute(0, 4, 5, 1, 3, 2).reshape(b, t, m, 1, nvar * nlev)
    if coupling == "columns":
        return a.reshape(b, nvar * nlev, t, m).permute(0, 2, 3, 1).unsqueeze(3)
    if coupling == "cascade":  # level order: c = level * V + v
        return a.permute(0, 3, 4, 2, 1).reshape(b, t, m, 1, nlev * nvar)
    return a.permute(0, 3, 4, 2, 1)


def from_groups(g: Tensor, coupling: str, nvar: int, nlev: int, states: int = 1) -> Tensor:
    """``(B, T, M, G, P)`` -> ``(B, V, L, T, M)``, the inverse of :func:`to_groups`."""
    b, t, m = g.shape[:3]
    if coupling == "causal":
        g = g.reshape(b, t, m, states, nlev, nvar // states)
        return g.permute(0, 3, 5, 4, 1, 2).reshape(b, nvar, nlev, t, m)
    if coupling == "columns":
        return g.squeeze(3).permute(0, 3, 1, 2).reshape(b, nvar, nlev, t, m)
    if coupling == "cascade":
        return g.reshape(b, t, m, nlev, nvar).permute(0, 4, 3, 1, 2)
    return g.permute(0, 4, 3, 1, 2)
