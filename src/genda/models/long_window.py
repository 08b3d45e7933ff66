"""Windows longer than a trajectory prior's ``K`` hours, composed from overlapping segments.

A trajectory prior models ``K`` consecutive hours (:mod:`genda.trajectory`)
in whitened coordinates with the causal square root: per spherical-harmonic
mode the anomalies of the ``K`` states are ``d = F w`` with ``F``
lower-triangular in time order, ``w ~ N(0, I)`` under the fitted Gaussian.
Its last block row is a linear inverse model of the last hour given the
``K - 1`` before it,

    d_K = F_K,<K F_<K,<K^+ d_<K + F_KK w_K,

which extends the Gaussian part to any length ``L >= K`` as a Markov chain
of order ``K - 1``: the first ``K`` hours are a segment, and each later hour
``t`` is that regression on its ``K - 1`` predecessors plus its own
innovation ``F_KK w_t``. The long window's diffusion states are
``w_1..w_K, w_{K+1}, ..., w_L`` (the first segment's ``z``, then one
innovation per hour), white under the Gaussian part like a segment's.

The network is the segment prior's, applied to every segment of ``K``
consecutive hours of the window at once (SDA, Rozet and Louppe 2023, and
Appa compose the score of a long trajectory from short windows the same
way). A noisy long state maps to each segment's noisy ``z`` linearly; for a
stationary Gaussian the map is orthogonal (``T T^T = I``), so each segment
sees noise of the level it was trained on. The denoised window takes the
first segment's estimate of its ``K`` hours and, for each later hour, the
estimate of the innovation by the segment that ends at that hour, the only
one whose ``z`` contains it. All segments are denoised together at every
noise level and the observations of the whole window guide every hour, so
nothing is sampled autoregressively. For the Gaussian part (an untrained
network) the composed denoiser is exactly ``c_skip`` on the long state and
the posterior is the Kalman smoother of the Markov chain
(tests/test_long_window.py).

With a mean that follows UT (``tides``), hour ``t >= K`` takes the mean of
the last state of the segment that ends at it, and a segment's ``z`` is
read from the window's anomalies about those means; the fitted means of
the same hour seen as different states of a segment differ by their
sampling error, which the segment then sees as a small offset. The
segment prior's statistics are taken when the window is built: it is built
on the device it runs on. Where the fit dropped directions of a mode
(no variance, e.g. the winds' ``l = 0``), a segment after the first sees
zeros in those of its first ``K - 1`` hours, which the fields ignore.

Shapes: a window of ``L`` hours has fields ``(B, L V, Lev, H, W)`` and
states ``(B, L V, Lev, D)`` (hours stacked time first, as a segment's);
``S = L - K + 1`` segments.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from genda.errors import InvalidValueError
from genda.models.calendar import calendar_of
from genda.models.checkpoint import LoadedPrior
from genda.models.whitening import SpectralWhitening, pinv_rtol
from genda.models.whitening_layout import from_groups, to_groups
from genda.trajectory import (
    MAX_STATES,
    is_trajectory,
    state_grid,
    state_normalization,
    trajectory_grid,
    trajectory_normalization,
    trajectory_states,
)

__all__ = ["LongCoordinates", "LongWindowDenoiser", "long_window_prior"]


class LongCoordinates:
    """The Gaussian part of a window of ``hours`` hours from a causal whitening of ``K``.

    Args:
        whitening: the segment prior's :class:`SpectralWhitening` (coupling ``"causal"``).
        hours: ``L``, the window's hourly states, ``K <= L <= MAX_STATES``.
    """

    coupling = "causal"

    def __init__(self, whitening: SpectralWhitening, hours: int) -> None:
        if whitening.coupling != "causal" or whitening.states < 2:
            raise InvalidValueError(
                "a long window is composed from a trajectory prior with the causal square root "
                "(genda train --states K --coordinates whitened)"
            )
        if not whitening.states <= int(hours) <= MAX_STATES:
            raise InvalidValueError(
                f"a window of this prior has {whitening.states} to {MAX_STATES} hours, not {hours}"
            )
        self.whitening, self.hours, self.segment = whitening, int(hours), whitening.states
        self.channels = whitening.group_size // whitening.states  # C = V Lev per hour
        nvar, nlev = whitening.field_shape[:2]
        self.state_variables = nvar // self.segment
        self.state_shape = (self.state_variables * self.hours, nlev, whitening.dofs)
        factor = whitening.causal_factor()  # (T, M, 1, K C, K C)
        lead = (self.segment - 1) * self.channels
        rtol = pinv_rtol(whitening.mean.dtype)
        self.factor = factor
        self.lead_inverse = torch.linalg.pinv(factor[..., :lead, :lead], rtol=rtol)
        self.cross = factor[..., lead:, :lead]
        self.innovation = factor[..., lead:, lead:]
        self.innovation_inverse = torch.linalg.pinv(self.innovation, rtol=rtol)
        # the innovation's components the fit dropped (no variance): kept as they are
        eye = torch.eye(self.channels, dtype=factor.dtype, device=factor.device)
        self.innovation_null = eye - self.innovation_inverse @ self.innovation
        self.regression = self.cross @ self.lead_inverse  # (T, M, 1, C, (K - 1) C)

    @property
    def states(self) -> int:
        """``L``, the window's hourly states."""
        return self.hours

    def square_root(self) -> Tensor:
        """The chain's per-mode map ``(T, M, 1, L C, L C)`` complex: the anomalies are ``it @ w``.

        Read off by applying :meth:`anomalies` to the identity, a degree at a
        time; ``(L C)^2`` per mode, so made only when asked (see
        :attr:`square_root_bytes`), not kept.
        """
        size = self.hours * self.channels
        t = self.whitening.truncation
        eye = torch.eye(size, dtype=self.factor.dtype, device=self.factor.device)
        out = torch.empty((t, t, 1, size, size), dtype=self.factor.dtype, device=self.factor.device)
        identity = eye.reshape(size, 1, 1, 1, size).expand(size, 1, t, 1, size)
        for degree in range(t):  # one degree's columns at a time: a 1/T share of the peak
            columns = self.anomalies(identity, slice(degree, degree + 1))
            out[degree] = columns[:, 0].permute(1, 2, 3, 0)
        return out

    @property
    def square_root_bytes(self) -> int:
        """The bytes :meth:`square_root` allocates (the observation space then keeps half)."""
        t, size = self.whitening.truncation, self.hours * self.channels
        return t * t * size * size * self.factor.element_size()

    @property
    def mean(self) -> Tensor:
        """The segment transform's mean buffer (its dtype is the working dtype)."""
        return self.whitening.mean

    @property
    def tides(self) -> int:
        return self.whitening.tides

    @property
    def segments(self) -> int:
        """``S = L - K + 1``."""
        return self.hours - self.segment + 1

    # ------------------------------------------------------------------ coefficients
    def _groups(self, z: Tensor) -> Tensor:
        """States ``(B, L V, Lev, D)`` -> ``w`` ``(B, T, M, 1, L C)`` complex."""
        return to_groups(self.whitening._unpack(z.to(self.mean.dtype)), "causal", self.hours)

    def _block(self, x: Tensor, hour: int, count: int = 1) -> Tensor:
        c = self.channels
        return x[..., hour * c : (hour + count) * c]

    def anomalies(self, w: Tensor, degrees: slice = slice(None)) -> Tensor:
        """``w`` ``(B, T, M, 1, L C)`` -> the hours' coefficient anomalies ``d``, same shape.

        ``degrees``: the degrees ``w`` holds (its second axis), all by default.
        """
        k = self.segment
        factor, regression = self.factor[degrees], self.regression[degrees]
        innovation = self.innovation[degrees]
        first = torch.einsum("tmgpq,btmgq->btmgp", factor, self._block(w, 0, k))
        blocks = list(first.split(self.channels, dim=-1))
        for hour in range(k, self.hours):
            before = torch.cat(blocks[-(k - 1) :], dim=-1)
            blocks.append(
                torch.einsum("tmgpq,btmgq->btmgp", regression, before)
                + torch.einsum("tmgpq,btmgq->btmgp", innovation, self._block(w, hour))
            )
        return torch.cat(blocks, dim=-1)

    def means(self, hours: Any, batch: int) -> Tensor:
        """The hours' mean coefficients ``(B, T, M, 1, L C)`` for a first hour at UT ``hours``.

        Hour ``t >= K`` takes the last state's mean of the segment that ends at it.
        """
        k = self.segment
        first = self.whitening.mean_at(hours, batch)
        blocks = [first]
        for hour in range(k, self.hours):
            later = None if hours is None else np.asarray(hours, dtype=np.float64) + hour - k + 1
            blocks.append(self._block(self.whitening.mean_at(later, batch), k - 1))
        return torch.cat(blocks, dim=-1)

    def decode(self, z: Tensor, hours: Any = None) -> Tensor:
        """States ``(B, L V, Lev, D)`` -> normalised fields ``(B, L V, Lev, H, W)``."""
        w = self._groups(z)
        a = self.means(hours, z.shape[0]) + self.anomalies(w)
        nlev = self.whitening.field_shape[1]
        coefficients = from_groups(a, "causal", self.state_shape[0], nlev, self.hours)
        return self.whitening._synthesise(coefficients, self.hours).to(z.dtype)

    def encode_leading(self, x: Tensor, states: int, hours: Any = None) -> Tensor:
        """The ``z`` of the window's first ``states < K`` hours (the first segment's).

        ``x``: ``(B, L V, Lev, H, W)`` normalised fields; the hours after the
        first ``K`` are ignored. Returns ``(B, L V, Lev, D)`` with zeros beyond.
        """
        if not 1 <= int(states) < self.segment:
            raise InvalidValueError(
                f"1..{self.segment - 1} leading hours of a window can be fixed, not {states}"
            )
        width = self.segment * self.state_variables
        lead = self.whitening.encode_leading(x[:, :width], states, hours)
        out = lead.new_zeros((x.shape[0], *self.state_shape))
        out[:, :width] = lead
        return out

    # ------------------------------------------------------------------ segments
    def split(self, z: Tensor) -> Tensor:
        """States ``(B, L V, Lev, D)`` -> each segment's ``z`` ``(B S, K V, Lev, D)``, window-major."""
        k, c = self.segment, self.channels
        w = self._groups(z)
        d = self.anomalies(w)
        lead = (k - 1) * c
        parts = [self._block(w, 0, k)]  # the first segment's z is the window's first K hours
        for first in range(1, self.segments):
            window = self._block(d, first, k)
            head = torch.einsum("tmgpq,btmgq->btmgp", self.lead_inverse, window[..., :lead])
            rest = window[..., lead:] - torch.einsum("tmgpq,btmgq->btmgp", self.cross, head)
            tail = torch.einsum("tmgpq,btmgq->btmgp", self.innovation_inverse, rest)
            own = self._block(w, first + k - 1)
            tail = tail + torch.einsum("tmgpq,btmgq->btmgp", self.innovation_null, own)
            parts.append(torch.cat([head, tail], dim=-1))
        stacked = torch.stack(parts, dim=1).flatten(0, 1)  # (B S, T, M, 1, K C)
        nlev = self.whitening.field_shape[1]
        groups = from_groups(stacked, "causal", k * self.state_variables, nlev, k)
        return self.whitening._pack(groups).to(z.dtype)

    def compose(self, segments: Tensor, batch: int) -> Tensor:
        """Each segment's ``z`` ``(B S, K V, Lev, D)`` -> the window's ``(B, L V, Lev, D)``.

        The first segment gives the first ``K`` hours; each later hour is the
        last hour of the segment that ends at it.
        """
        v, k = self.state_variables, self.segment
        per = segments.reshape(batch, self.segments, *segments.shape[1:])
        later = per[:, 1:, (k - 1) * v :]  # (B, S - 1, V, Lev, D)
        return torch.cat([per[:, 0], later.flatten(1, 2)], dim=1)


class LongWindowDenoiser(nn.Module):
    """``D(z (B, L V, Lev, D), sigma)`` of a window of ``L`` hours from a segment prior's denoiser.

    Args:
        denoiser: the segment prior's :class:`~genda.models.diffusion.EDMDenoiser`.
        hours: ``L``.

    ``cond``: the calendar features of the window's first hour (a network that
    sees the time); segment ``j`` is told the hour ``j`` later.
    """

    def __init__(self, denoiser: nn.Module, hours: int) -> None:
        super().__init__()
        self.inner = denoiser
        self.coordinates = LongCoordinates(denoiser.coordinates, hours)

    @property
    def backbone(self) -> Any:
        """The segment prior's backbone (its calendar, if any)."""
        return getattr(self.inner, "backbone", None)

    @property
    def sigma_data(self) -> float:
        return float(self.inner.sigma_data)

    @property
    def tides(self) -> int:
        return self.coordinates.tides

    def state_shape(self, field_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(self.coordinates.state_shape)

    def decode(self, state: Tensor, hours: Any = None) -> Tensor:
        with torch.autocast(device_type=state.device.type, enabled=False):
            return self.coordinates.decode(state, hours)

    def forward(self, x: Tensor, sigma: Tensor | float, cond: Tensor | None = None) -> Tensor:
        batch, count = x.shape[0], self.coordinates.segments
        with torch.autocast(device_type=x.device.type, enabled=False):
            segments = self.coordinates.split(x)
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
        sigma = sigma.expand(batch).repeat_interleave(count)
        if cond is None:
            out = self.inner(segments, sigma)
        else:
            calendar = calendar_of(self.inner)
            if calendar is None:
                raise InvalidValueError("this prior's network sees no time; pass no cond")
            shifted = [calendar.shift(cond, float(j)) for j in range(count)]
            out = self.inner(segments, sigma, torch.stack(shifted, dim=1).flatten(0, 1))
        return self.coordinates.compose(out, batch)


def long_window_prior(prior: LoadedPrior, hours: int) -> LoadedPrior:
    """``prior`` (a trajectory prior of ``K`` hours) as a prior of windows of ``hours``.

    ``hours == K`` gives ``prior`` itself. The result has the grid and
    normalisation of ``hours`` stacked states and a :class:`LongWindowDenoiser`;
    everything that takes a trajectory prior (observations at their own
    time, fixed first states, the store's hourly slots) takes it.

    Raises:
        InvalidValueError: not a trajectory prior in whitened coordinates with
            the causal square root, or ``hours`` outside ``K..MAX_STATES``.
    """
    if not is_trajectory(prior.grid) or prior.denoiser.coordinates is None:
        raise InvalidValueError(
            "a window longer than the prior's is composed from a trajectory prior in whitened "
            f"coordinates (genda train --states K); this prior models {prior.grid.variables}"
        )
    if int(hours) == trajectory_states(prior.grid):
        return prior
    denoiser = LongWindowDenoiser(prior.denoiser, int(hours))
    state = state_grid(prior.grid)
    normalization = state_normalization(prior.normalization, prior.grid)
    return replace(
        prior,
        denoiser=denoiser,  # type: ignore[arg-type]
        grid=trajectory_grid(state, int(hours)),
        normalization=trajectory_normalization(normalization, int(hours)),
    )
