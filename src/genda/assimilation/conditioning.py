"""A trajectory window whose first hourly states are fixed: filtering and forecasts.

A trajectory prior (:mod:`genda.trajectory`) in whitened coordinates with the
``"causal"`` square root has ``x = mu + L z`` with ``L`` lower-triangular in
time order, so the first ``j`` states are made of the ``z`` of those states
only. Fixing those states (to member ``m`` of the previous window: filtering;
to the last analysis with no observations after it: a forecast) fixes those
components of ``z``, and under the Gaussian part the remaining components stay
``N(0, I)`` and independent of them: ``L`` already holds the regression of the
later states on the earlier ones, ``x_2 | x_1 ~ N(mu_2 + L_21 L_11^-1 (x_1 -
mu_1), L_22 L_22^T)``, which is the Kalman filter's forecast step of the
Gaussian part (Bannister 2008's control-variable transform, taken along time).

So the diffusion runs as before, with two changes:

* the denoiser returns the fixed components as they are
  (:class:`FixedComponents`): a prior that puts all its mass there. The
  sampler's state then carries them at exactly the noise of each level, which
  is what the network expects to see;
* the observations see the free components only: ``A_free(z) = A(z (1 -
  mask))`` and ``y_m = y - A_lin(mask z_m)`` per member ``m``, so that the
  guidance's covariance (MMPS's Jacobian, or the Gaussian Tweedie covariance
  ``c I``) gives the fixed components no uncertainty.

With a Gaussian prior (a network that outputs 0) the members are exact
samples of the Kalman filter's analysis (tests/test_trajectory_prior.py).

Shapes: ``z`` ``(B, K V, L, D)`` (``D`` real spectral dofs); fields
``(B, K V, L, H, W)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from genda.assimilation.gaussian_tweedie import (
    GaussianTweedieGuidance,
    content_digest,
    observation_covariance,
    observation_space,
)
from genda.assimilation.guidance import GaussianLikelihood, guided_denoiser
from genda.assimilation.state_operator import StateOperator
from genda.errors import InvalidValueError
from genda.models.calendar import denoiser_at
from genda.models.checkpoint import LoadedPrior
from genda.trajectory import is_trajectory, trajectory_states

__all__ = [
    "ConditionedGuidance",
    "FixedComponents",
    "FixedStates",
    "conditioned_denoiser",
    "fixed_states",
    "leading_mask",
]


@dataclass(frozen=True, eq=False)
class FixedStates:
    """The first ``count`` hourly states of each member's trajectory, as the ``z`` they fix.

    Attributes:
        count: states fixed, ``1 <= count < K``.
        mask: ``(K V, L, D)`` bool, the components of ``z`` they fix.
        values: ``(N, K V, L, D)``: those components per member (0 elsewhere).
        members: the member of each row of ``values``.
    """

    count: int
    mask: Tensor
    values: Tensor
    members: tuple[int, ...]

    def rows(self, members: Sequence[int]) -> Tensor:
        """``values`` of ``members``, in their order.

        Raises:
            InvalidValueError: a member without fixed states.
        """
        position = {m: i for i, m in enumerate(self.members)}
        missing = [int(m) for m in members if int(m) not in position]
        if missing:
            raise InvalidValueError(
                f"no fixed states for member(s) {missing[:5]}; the conditioning window has "
                f"members {self.members[0]}..{self.members[-1]} ({len(self.members)})"
            )
        return self.values[[position[int(m)] for m in members]]


def leading_mask(prior: LoadedPrior, count: int = 1) -> Tensor:
    """``(K V, L, D)`` bool: the components of ``z`` of a trajectory's first ``count`` states."""
    per_state = prior.grid.shape[0] // trajectory_states(prior.grid)
    mask = torch.zeros(prior.state_shape, dtype=torch.bool)
    mask[: count * per_state] = True
    return mask


def fixed_states(
    prior: LoadedPrior,
    fields: Tensor,
    members: Sequence[int],
    hours: float | None = None,
) -> FixedStates:
    """The ``z`` that the first states ``fields`` of each member fix.

    Args:
        prior: a trajectory prior in whitened coordinates with the causal square root.
        fields: ``(N, j V, L, H, W)`` physical fields of the first ``j < K`` states.
        members: the member of each row.
        hours: the UT hour of the trajectory's first state (a prior with tides).

    Raises:
        InvalidValueError: a prior that cannot be conditioned this way, fields
            of another shape, NaN, or a member count that does not match.
    """
    coordinates = prior.denoiser.coordinates
    if not is_trajectory(prior.grid) or coordinates is None:
        raise InvalidValueError(
            "fixing a window's first states needs a trajectory prior in whitened coordinates "
            f"(genda train --states K --coordinates whitened); this prior's variables are "
            f"{prior.grid.variables}"
        )
    if getattr(coordinates, "coupling", None) != "causal":
        raise InvalidValueError(
            f"this prior's square root is {coordinates.coupling!r}, not 'causal': its first "
            "states are not made of the first components of z alone"
        )
    states = trajectory_states(prior.grid)
    per_state, rest = prior.grid.shape[0] // states, tuple(prior.grid.shape[1:])
    count, remainder = divmod(fields.shape[1], per_state) if fields.dim() == 5 else (0, 1)
    if remainder or tuple(fields.shape[2:]) != rest or not 1 <= count < states:
        raise InvalidValueError(
            f"the fixed states must have shape (N, j * {per_state}, {', '.join(map(str, rest))}) "
            f"with 1 <= j < {states}, got {tuple(fields.shape)}"
        )
    if fields.shape[0] != len(members):
        raise InvalidValueError(f"{fields.shape[0]} fixed states for {len(members)} members")
    if not torch.isfinite(fields).all():
        raise InvalidValueError("the fixed states hold NaN or infinite values")
    norm = prior.normalization
    mean = torch.as_tensor(norm.mean[: count * per_state], dtype=torch.float64)[..., None, None]
    std = torch.as_tensor(norm.std[: count * per_state], dtype=torch.float64)[..., None, None]
    full = torch.zeros((fields.shape[0], *prior.grid.shape), dtype=torch.float64)
    full[:, : count * per_state] = (fields.double() - mean) / std  # the later states are unused
    dtype = coordinates.mean.dtype
    with torch.no_grad():
        z = coordinates.encode_leading(full.to(dtype), count, hours).cpu()
    mask = leading_mask(prior, count)
    values = torch.where(mask, z, torch.zeros((), dtype=z.dtype)).float()
    return FixedStates(count, mask, values, tuple(int(m) for m in members))


class FixedComponents(nn.Module):
    """``D(x, sigma)`` with the fixed components of ``z`` returned as they are.

    Args:
        denoiser: the prior's denoiser (or any ``D(x, sigma)``).
        mask: ``(K V, L, D)`` bool.
        values: ``(B, K V, L, D)`` the fixed components of the batch's members.
    """

    def __init__(self, denoiser: Any, mask: Tensor, values: Tensor) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.mask = mask
        self.values = values
        self.sigma_data = float(getattr(denoiser, "sigma_data", 1.0))

    def forward(self, x: Tensor, sigma: Tensor | float, cond: Tensor | None = None) -> Tensor:
        out = self.denoiser(x, sigma) if cond is None else self.denoiser(x, sigma, cond)
        mask, values = self.mask.to(out.device), self.values.to(out.device, out.dtype)
        if values.shape[0] != out.shape[0]:
            raise InvalidValueError(
                f"fixed states for {values.shape[0]} members, a batch of {out.shape[0]}"
            )
        return torch.where(mask, values, out)


class ConditionedGuidance:
    """The guidance of one window whose first states are fixed, built once for every batch.

    The observations see the free components only, through the same masked
    operator for every member, so what the guidance precomputes from the
    operator (the Gaussian Tweedie covariance's ``A A^T``,
    :class:`~genda.assimilation.gaussian_tweedie.ObservationSpace`) is built
    here once per window; each batch then only shifts ``y`` by its members'
    fixed part.

    Args:
        prior: the trajectory prior.
        likelihood: the window's (:func:`genda.assimilation.posterior.likelihood_for`),
            ``None`` for a forecast with no observations.
        mask: ``(K V, L, D)`` bool, the fixed components (:attr:`FixedStates.mask`).
        method, options: as :func:`genda.assimilation.guidance.guided_denoiser`.
        time: the window's first hour, for a network that sees the time
            (:mod:`genda.models.calendar`).
    """

    def __init__(
        self,
        prior: LoadedPrior,
        likelihood: GaussianLikelihood | None,
        mask: Tensor,
        method: str = "mmps",
        time: Any = None,
        **options: Any,
    ) -> None:
        self.prior, self.likelihood, self.mask = prior, likelihood, mask
        self.method, self.options = method, options
        self.network = denoiser_at(prior.denoiser, time)
        self.template: Any = None
        if likelihood is None:
            return
        operator = likelihood.operator
        if not isinstance(operator, StateOperator):
            raise InvalidValueError(
                "fixed states need the observations on whitened states (A = H U)"
            )
        free = (~mask).to(likelihood.y.dtype)
        decode = operator.decode

        def free_decode(z: Tensor) -> Tensor:
            return decode(z * free.to(z.device, z.dtype))

        self.operator = operator
        key = None if operator.key is None else (operator.key, "free", content_digest(mask))
        factor = None if operator.factor is None else operator.factor.masked(mask)
        self.masked = GaussianLikelihood(
            StateOperator(operator.fields, free_decode, operator.state_shape, key, factor),
            likelihood.y,
            likelihood.sigma,
        )
        zeros = torch.zeros((1, *operator.state_shape), dtype=likelihood.y.dtype)
        self.template = guided_denoiser(
            FixedComponents(self.network, mask, zeros), self.masked, method, **options
        )

    def predicted(self, fixed: FixedStates) -> Tensor:
        """``(N, M)`` float64: each member's ``A(z)`` with its fixed components only, the
        observations' mean given the first states (their regression on them included)."""
        if self.likelihood is None:
            raise InvalidValueError("a window without observations predicts none")
        y = self.likelihood.y
        with torch.no_grad():
            return self.operator(fixed.values.to(y.device, y.dtype)).double()

    def error_covariance(self) -> Tensor:
        """``(M, M)`` float64: ``Sigma_y + A_free A_free^T``, the covariance of the
        observations given the first states: their errors and the free states' part."""
        if self.likelihood is None:
            raise InvalidValueError("a window without observations has no error covariance")
        sigma = self.likelihood.sigma.double()
        space = (
            self.template.space
            if isinstance(self.template, GaussianTweedieGuidance)
            else observation_space(self.masked.operator, self.likelihood.sigma)
        )
        if space.eigenvalues is not None and space.eigenvectors is not None:
            # S = Sigma^-1/2 A A^T Sigma^-1/2 = Q diag(lam) Q^T, kept by the space
            q, lam = space.eigenvectors.double(), space.eigenvalues.double()
            gram = sigma[:, None] * ((q * lam) @ q.T) * sigma[None, :]
        else:
            gram, _ = observation_covariance(self.masked.operator)
        return torch.diag(sigma**2) + 0.5 * (gram + gram.T)

    def for_batch(self, fixed: FixedStates, members: Sequence[int]) -> Any:
        """The denoiser of one batch of ``members`` whose first states are ``fixed``."""
        values = fixed.rows(members)
        inner = FixedComponents(self.network, self.mask, values)
        if self.likelihood is None:
            return inner
        y = self.likelihood.y
        with torch.no_grad():
            known = values.to(y.device, y.dtype)
            seen = self.operator(known) - self.operator(torch.zeros_like(known[:1]))
        likelihood = GaussianLikelihood(self.masked.operator, y - seen, self.likelihood.sigma)
        if isinstance(self.template, GaussianTweedieGuidance):  # shares the window's A A^T
            template = self.template
            return GaussianTweedieGuidance(inner, likelihood, template.sigma_data, template.space)
        return guided_denoiser(inner, likelihood, self.method, **self.options)


def conditioned_denoiser(
    prior: LoadedPrior,
    likelihood: GaussianLikelihood | None,
    fixed: FixedStates,
    members: Sequence[int],
    method: str = "mmps",
    time: Any = None,
    **options: Any,
) -> Any:
    """The denoiser of one batch of ``members`` whose first states are ``fixed``.

    ``likelihood``: the window's (:func:`genda.assimilation.posterior.likelihood_for`),
    ``None`` for a forecast with no observations; ``method`` and ``options``
    as :func:`genda.assimilation.guidance.guided_denoiser`. A window of many
    batches builds one :class:`ConditionedGuidance` instead.
    """
    guidance = ConditionedGuidance(prior, likelihood, fixed.mask, method, time, **options)
    return guidance.for_batch(fixed, members)
