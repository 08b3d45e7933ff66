"""A whitened prior's observation operator by parts: ``A A^T``, ``A`` and ``A^T`` made cheap.

On whitened states (:mod:`genda.models.whitening`) the linear part of the
observation operator is ``A = H S F P`` with

* ``P``: the layout, real ``z`` -> complex ``w`` per mode ``(l, m)`` and
  coupling group (``E[w w^H] = I``; ``w_l0`` real);
* ``F``: per mode a ``P x P`` complex factor (``Q lam^(1/2) R``, or a long
  window's Markov chain of them), columns of fixed components left out;
* ``S``: the spherical-harmonic synthesis of every channel (scalar, or the
  vector synthesis of the winds), channel by channel;
* ``H``: a few grid points, levels and hours per observation.

Built by brute force, ``A A^T`` costs ``M`` reverse products through the
whole decode and ``M^2 N`` for the Gram matrix (``N`` the size of a state,
~10^5). But an observation's row of ``H S`` touches only the channels of
its levels, hours and variable (2-8 of ~100): its *spectral point
functional* ``g_m`` (a few channels x all modes) comes from the synthesis of
those channels alone, and

    (A A^T)_mn = sum_lm  c_m Re(g_m^H  C_lm  g_n),   C_lm = F_lm F_lm^H,

with ``c_m = 1/2`` for ``m > 0`` (``w`` circular: ``E[w w^T] = 0``) and the
real parts of ``g`` at ``m = 0`` (``w_l0`` real). Observations that touch the
same channels form a block, and each pair of blocks is one complex matrix
product over (their channels x modes): ``M^2 x ~6 x T^2/2`` in all, against
``M^2 x N`` (``N = ~100 x T^2``). The result is exact, not an approximation.

Each sampling step applies ``A`` and ``A^T`` to a batch of states. With
``F`` computed once per window, both run as one synthesis (or its adjoint)
and one product with ``F`` on the modes ``l >= m``: no reverse pass through
the whole decode (the adjoint synthesis alone is taken by reverse mode), and
no ``(M, N)`` matrix ``A`` in memory unless it is small. A long window's
``F`` (its chain as one matrix per mode, ``(L C)^2``) is used up to
:data:`FACTOR_BYTES_LIMIT`; a longer window takes the brute force.

``tests/test_spectral_factor.py`` checks all three against the brute force.

Shapes: ``M`` observations, ``Q = T (T + 1) / 2`` modes ``l >= m``, ``G P``
coupling-group channels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from genda.errors import InvalidValueError
from genda.models.whitening_harmonics import synthesise
from genda.models.whitening_layout import from_groups, pack_factor, to_groups
from genda.observations.operators import ObservationOperator

__all__ = [
    "SpectralFactor",
    "SpectralRows",
    "factor_rows",
    "spectral_factor",
    "spectral_gram",
    "spectral_rows",
]

FACTOR_BYTES_LIMIT = 2**31
"""Most bytes of a factor made as one matrix per mode (a long window's chain,
``(L C)^2`` per mode; the observation space then keeps its modes ``l >= m``,
half of it, and their ``F F^H``): beyond, the observation space takes the
brute force, whose cost grows only linearly with the window's hours
(``L <= 21`` on the default grid, 24 channels an hour)."""

SPREAD_BATCH = 128
"""Observations of a block whose ``C g_n`` on every channel is held at once (``(n, C, Q)``)."""

ROW_BATCH = 256
"""Observations whose rows of ``A`` are made at once (:func:`factor_rows`)."""

UNIT_BATCH = 2048
"""Most (observation, hour, level) units synthesised adjointly at once (~50 MB at 32 x 64)."""


@dataclass(frozen=True, eq=False)
class SpectralFactor:
    """The linear part of a whitened decode: fields ``= synth(from_groups(F w))``.

    Attributes:
        whitening: the :class:`~genda.models.whitening.SpectralWhitening` of one
            window or segment (its synthesis, layout and wind statistics).
        states: the hourly states of the window (its own ``K``, or a long window's ``L``).
        square_root: gives ``F`` ``(T, M, G, P, P)`` complex, column ``q`` the field
            coefficients of component ``q`` of ``w`` (``P`` = the window's
            channels); called when ``A A^T`` is built, not before.
        free: ``(G, P)`` bool, the components that vary (``None``: all).
    """

    whitening: Any
    states: int
    square_root: Callable[[], Tensor]
    free: Tensor | None = None

    def masked(self, fixed: Tensor) -> SpectralFactor | None:
        """This factor with the components ``fixed`` ``(V, L, D)`` held at 0.

        ``None`` when ``fixed`` is not the same for every entry of the last
        axis (every mode): the factor then has no per-mode form.
        """
        fixed = fixed.to(torch.bool)
        if not bool((fixed == fixed[..., :1]).all()):
            return None
        channels = fixed[..., 0].reshape(1, *fixed.shape[:-1], 1, 1)
        groups = to_groups(channels, self.whitening.coupling, self.states)[0, 0, 0]  # (G, P)
        free = ~groups.to(self.whitening.mean.device)
        if self.free is not None:
            free = free & self.free
        return replace(self, free=free)

    def modes(self) -> Tensor:
        """``F diag(free)`` on the modes ``l >= m``: ``(Q, G, P, P)`` complex."""
        valid = self.whitening.valid.to(self.whitening.mean.device)
        f = self.square_root()[valid]
        # w_l0 is real and the synthesis takes Re a_l0: at m = 0 only Re F acts
        # (F is real there up to the round-off of a long window's pseudo-inverses)
        order = _orders(valid)
        f[order == 0] = f[order == 0].real.to(f.dtype)
        if self.free is not None:
            f = f * self.free.to(f.real.dtype)[None, :, None, :]
        return f

    def linear(self, z: Tensor, modes: Tensor) -> Tensor:
        """The decode's linear part ``S F P z`` ``(B, V, L, H, W)`` of states ``z`` ``(B, V, L, D)``.

        ``modes``: :meth:`modes`. ``decode(z) - decode(0)``, with ``F`` on the modes ``l >= m``.
        """
        whitening = self.whitening
        dtype = whitening.mean.dtype
        valid = whitening.valid.to(z.device)
        groups = to_groups(whitening._unpack(z.to(dtype)), whitening.coupling, self.states)
        a = torch.zeros_like(groups)
        a[:, valid] = torch.einsum("qgpr,bqgr->bqgp", modes, groups[:, valid])
        nvar, nlev = z.shape[1], z.shape[2]
        coefficients = from_groups(a, whitening.coupling, nvar, nlev, self.states)
        fields = whitening._synthesise(coefficients, self.states)
        # the synthesis is affine (the winds' normalisation): take its value at 0 away
        origin = whitening._synthesise(torch.zeros_like(coefficients[:1]), self.states)
        return (fields - origin).to(z.dtype)

    def adjoint(self, fields: Tensor, modes: Tensor) -> Tensor:
        """``(S F P)^T`` of ``fields`` ``(B, V, L, H, W)``: ``(B, V, L, D)`` states.

        ``modes``: :meth:`modes`, computed once for many calls. The reverse of
        the decode's linear part, step by step: the adjoint synthesis, ``F^H``
        on the modes ``l >= m`` only (half of ``T x T``), and the layout's
        transpose (``w`` -> ``z``: ``1/sqrt 2`` on the real and imaginary
        parts of ``m > 0``, the transpose of its ``1/sqrt 2`` on unpacking).
        """
        whitening = self.whitening
        dtype = whitening.mean.dtype
        t = whitening.truncation
        nvar, nlev = fields.shape[1], fields.shape[2]
        valid = whitening.valid.to(fields.device)
        zeros = torch.zeros(
            (fields.shape[0], nvar, nlev, t, t), dtype=_complex(dtype), device=fields.device
        )
        with torch.enable_grad():
            _, pullback = torch.func.vjp(lambda a: whitening._synthesise(a, self.states), zeros)
            (spectral,) = pullback(fields.to(dtype))
        groups = to_groups(spectral, whitening.coupling, self.states)  # (B, T, M, G, P)
        w = torch.einsum("qgpr,bqgp->bqgr", modes.conj(), groups[:, valid])
        full = torch.zeros_like(groups)
        full[:, valid] = w
        spectral = from_groups(full, whitening.coupling, nvar, nlev, self.states)
        return (whitening._pack(spectral) / _pack_factor(whitening, dtype) ** 2).to(fields.dtype)

    def covariance(self, modes: Tensor | None = None) -> Tensor:
        """``C = F diag(free) F^H`` on the modes ``l >= m``: ``(Q, G P, G P)`` complex.

        ``modes``: :meth:`modes` if already at hand. Groups are independent:
        ``C`` is block-diagonal over them.
        """
        f = self.modes() if modes is None else modes  # (Q, G, P, P)
        blocks = f @ f.conj().transpose(-1, -2)  # (Q, G, P, P)
        g, p = blocks.shape[1], blocks.shape[2]
        if g == 1:
            return blocks[:, 0]
        out = blocks.new_zeros((blocks.shape[0], g * p, g * p))
        for group in range(g):
            out[:, group * p : (group + 1) * p, group * p : (group + 1) * p] = blocks[:, group]
        return out


@dataclass(frozen=True)
class SpectralRows:
    """The observations' spectral point functionals, grouped by the channels they touch.

    Attributes:
        blocks: per block, ``(rows (n,) long, channels (c,) long, g (n, c, Q) complex)``:
            the observations, the coupling-group channels they touch, and their
            functionals there (``m = 0`` already real and scaled by ``sqrt 2``).
        count: ``M``.
    """

    blocks: list[tuple[Tensor, Tensor, Tensor]]
    count: int


def _channel_groups(whitening: Any, states: int, nvar: int, nlev: int) -> Tensor:
    """``(V, L)`` long: the coupling-group channel ``g P + p`` of each field channel."""
    number = torch.arange(nvar * nlev).reshape(1, nvar, nlev, 1, 1)
    groups = to_groups(number, whitening.coupling, states)[0, 0, 0]  # (G, P): field channel
    out = torch.empty(nvar * nlev, dtype=torch.long)
    out[groups.reshape(-1)] = torch.arange(groups.numel())
    return out.reshape(nvar, nlev)


def _unit_functionals(
    whitening: Any, level: int, fields: Tensor, valid: Tensor, dtype: torch.dtype
) -> Tensor:
    """``(n, V_s, Q)`` complex: the adjoint synthesis of ``fields`` ``(n, V_s, H, W)`` of one level."""
    t = whitening.truncation
    transforms = whitening.transforms(dtype)
    std = whitening.wind_std.to(dtype)[:, level : level + 1]
    mean = whitening.wind_mean.to(dtype)[:, level : level + 1]
    gain = whitening._vector_gain(dtype, inverse=True)
    indices = (whitening.scalar_index, whitening.wind_index)
    a = torch.zeros(
        (fields.shape[0], fields.shape[1], 1, t, t), dtype=_complex(dtype), device=fields.device
    )

    def synth(coefficients: Tensor) -> Tensor:
        return synthesise(
            coefficients, (transforms.isht, transforms.ivsht), std, mean, gain, indices
        )

    with torch.enable_grad():
        _, pullback = torch.func.vjp(synth, a)
        (g,) = pullback(fields[:, :, None].to(dtype))
    return g[:, :, 0][:, :, valid]  # (n, V_s, Q)


def spectral_rows(structure: SpectralFactor, fields: ObservationOperator) -> SpectralRows:
    """The rows of ``H S`` (spectral point functionals) of ``fields``, grouped by channels.

    ``fields``: ``H`` on the window's normalised fields ``(V, L, H, W)``, ``V``
    the window's ``states`` x the variables of one state.
    """
    whitening = structure.whitening
    nvar, nlev, nlat, nlon = fields.field_shape
    per_state = nvar // structure.states
    if nvar != per_state * structure.states or nlev != whitening.field_shape[1]:
        raise InvalidValueError(
            f"the observation operator's fields {fields.field_shape} are not {structure.states} "
            f"states of the prior's {whitening.field_shape[:2]}"
        )
    dtype = whitening.mean.dtype
    device = whitening.mean.device
    valid = whitening.valid.to(device)
    channel_of = _channel_groups(whitening, structure.states, nvar, nlev).to(device)

    index = fields.index.to(device)
    weight = fields.weight.to(device, dtype)
    rows = torch.arange(index.shape[0], device=device)[:, None].expand_as(index)
    used = weight != 0
    index, weight, rows = index[used], weight[used], rows[used]
    var = index // (nlev * nlat * nlon)
    level = (index // (nlat * nlon)) % nlev
    pixel = index % (nlat * nlon)
    state, variable = var // per_state, var % per_state

    # one unit per (observation, hour, level): the functional of one level of one state
    key = (rows * structure.states + state) * nlev + level
    units, unit_of = torch.unique(key, return_inverse=True)
    unit_level = units % nlev
    unit_state = (units // nlev) % structure.states
    unit_row = units // (nlev * structure.states)

    functionals = torch.zeros(
        (units.numel(), per_state, valid.sum().item()), dtype=_complex(dtype), device=device
    )
    for lev in unit_level.unique().tolist():
        chosen = (unit_level == lev).nonzero().squeeze(1)
        for start in range(0, chosen.numel(), UNIT_BATCH):
            batch = chosen[start : start + UNIT_BATCH]
            position = torch.full((units.numel(),), -1, dtype=torch.long, device=device)
            position[batch] = torch.arange(batch.numel(), device=device)
            entries = position[unit_of] >= 0
            grid = torch.zeros((batch.numel(), per_state, nlat * nlon), dtype=dtype, device=device)
            grid.index_put_(
                (position[unit_of[entries]], variable[entries], pixel[entries]),
                weight[entries],
                accumulate=True,
            )
            functionals[batch] = _unit_functionals(
                whitening, lev, grid.reshape(-1, per_state, nlat, nlon), valid, dtype
            )

    # m = 0: w_l0 is real, so only Re g counts, with weight 1 against 1/2 for m > 0
    order = _orders(valid)
    functionals = torch.where(order == 0, math.sqrt(2.0) * functionals.real, functionals)

    # each observation's channels: (k V_s + v, level) -> coupling-group channel
    channel = channel_of[
        unit_state[:, None] * per_state + torch.arange(per_state, device=device)[None, :],
        unit_level[:, None].expand(-1, per_state),
    ]  # (units, V_s)
    touched = functionals.abs().amax(dim=-1) > 0  # (units, V_s): T rows do not touch u, v
    by_row: dict[int, list[tuple[int, int]]] = {}
    unit_rows, channels = unit_row.tolist(), channel.tolist()  # one transfer, not one per entry
    for u, v in touched.nonzero().tolist():
        by_row.setdefault(unit_rows[u], []).append((channels[u][v], u * per_state + v))
    flat = functionals.reshape(-1, functionals.shape[-1])
    by_channels: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
    for row, entries in by_row.items():
        entries.sort()
        signature = tuple(c for c, _ in entries)
        by_channels.setdefault(signature, []).append((row, [s for _, s in entries]))
    blocks = []
    for signature, members in by_channels.items():
        rows_of = torch.tensor([row for row, _ in members], dtype=torch.long, device=device)
        sources = torch.tensor([s for _, s in members], dtype=torch.long, device=device)
        blocks.append(
            (
                rows_of,
                torch.tensor(signature, dtype=torch.long, device=device),
                flat[sources.reshape(-1)].reshape(*sources.shape, -1),
            )
        )
    return SpectralRows(blocks, int(fields.n_obs))


def factor_rows(structure: SpectralFactor, rows: SpectralRows, modes: Tensor) -> Tensor:
    """``A`` ``(M, N)``: each row ``P^T F^H g_m`` from the functionals ``rows``.

    ``F^H`` acts on an observation's few channels only (``M x Q x P x ~6``);
    cheaper than ``M`` reverse products through the decode.
    """
    whitening = structure.whitening
    dtype = whitening.mean.dtype
    t = whitening.truncation
    valid = whitening.valid.to(modes.device)
    q, g, p = modes.shape[0], modes.shape[1], modes.shape[2]
    order = _orders(valid)
    undo = torch.ones(order.shape, dtype=dtype, device=modes.device)
    undo[order == 0] = 1.0 / math.sqrt(2.0)  # the sqrt 2 of spectral_rows
    columns = modes.conj().reshape(q, g * p, p)  # (Q, (g, p), r): F^H's rows
    nvar = whitening.field_shape[0] // whitening.states * structure.states
    nlev = whitening.field_shape[1]
    out = torch.zeros((rows.count, nvar * nlev * whitening.dofs), dtype=dtype, device=modes.device)
    chunks = [
        (members[lo : lo + ROW_BATCH], channels, functionals[lo : lo + ROW_BATCH])
        for members, channels, functionals in rows.blocks
        for lo in range(0, members.numel(), ROW_BATCH)
    ]
    for members, channels, functionals in chunks:
        w = torch.zeros((members.numel(), q, g, p), dtype=modes.dtype, device=modes.device)
        group = channels // p
        for one in group.unique().tolist():  # an observation's channels of one group
            chosen = (group == one).nonzero().squeeze(1)
            part = functionals[:, chosen] * undo  # (n, c, Q)
            w[:, :, one] += torch.einsum("qcr,ncq->nqr", columns[:, channels[chosen]], part)
        full = torch.zeros((members.numel(), t, t, g, p), dtype=modes.dtype, device=modes.device)
        full[:, valid] = w
        coefficients = from_groups(full, whitening.coupling, nvar, nlev, structure.states)
        z = whitening._pack(coefficients) / _pack_factor(whitening, dtype) ** 2
        out[members] = z.reshape(members.numel(), -1)
    return out


def spectral_factor(coordinates: Any) -> SpectralFactor | None:
    """The :class:`SpectralFactor` of a prior's coordinates, ``None`` when they have none.

    :class:`~genda.models.whitening.SpectralWhitening` and a long window's
    :class:`~genda.models.long_window.LongCoordinates` have one (their
    ``square_root``); the identity coordinates (a prior on the fields) do not.
    """
    square_root = getattr(coordinates, "square_root", None)
    if coordinates is None or not callable(square_root):
        return None
    if getattr(coordinates, "square_root_bytes", 0) > FACTOR_BYTES_LIMIT:
        return None  # a long window's chain as one matrix per mode: too large to hold
    whitening = getattr(coordinates, "whitening", coordinates)
    return SpectralFactor(whitening, int(coordinates.states), square_root)


def _pack_factor(whitening: Any, dtype: torch.dtype) -> Tensor:
    """``(D,)``: the layout's ``sqrt 2`` on ``m > 0`` (:func:`genda.models.whitening_layout.pack_factor`)."""
    return pack_factor(whitening.dof_order, dtype)


def _orders(valid: Tensor) -> Tensor:
    """``(Q,)``: the order ``m`` of each mode ``l >= m`` of ``valid`` ``(T, M)``."""
    return torch.arange(valid.shape[1], device=valid.device)[None, :].expand_as(valid)[valid]


def _complex(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def spectral_gram(
    structure: SpectralFactor,
    fields: ObservationOperator,
    modes: Tensor | None = None,
    functionals: SpectralRows | None = None,
) -> Tensor:
    """``A A^T`` ``(M, M)`` float64 of ``A = H S F P`` (module docstring).

    ``modes``, ``functionals``: :meth:`SpectralFactor.modes` and
    :func:`spectral_rows` if already at hand. An observation whose weights are
    all 0 has a row (and column) of zeros.
    """
    rows = functionals or spectral_rows(structure, fields)
    covariance = structure.covariance(modes)  # (Q, C, C)
    m = rows.count
    out = torch.zeros((m, m), dtype=torch.float64, device=covariance.device)
    blocks = rows.blocks
    for second, (rows2, channels2, g2) in enumerate(blocks):
        for lo in range(0, rows2.numel(), SPREAD_BATCH):  # (n2, C, Q) at most this many n2
            part, members = g2[lo : lo + SPREAD_BATCH], rows2[lo : lo + SPREAD_BATCH]
            spread = torch.einsum("qij,njq->niq", covariance[:, :, channels2], part)  # C g_n
            for rows1, channels1, g1 in blocks[: second + 1]:
                left = g1.reshape(g1.shape[0], -1).conj()
                right = spread[:, channels1].reshape(spread.shape[0], -1)
                block = 0.5 * (left @ right.T).real.double()
                out[rows1[:, None], members[None, :]] = block
                out[members[:, None], rows1[None, :]] = block.T
    return out
