"""The observation operator on a prior's diffusion states: ``A = H U``.

A prior in whitened coordinates samples states ``z`` with normalised fields
``x = mu + U z`` (:class:`genda.models.whitening.SpectralWhitening`, the
control-variable transform of variational assimilation). Observations enter
through ``A(z) = H(mu + U z)``: still affine, so the guidance (MMPS's
Jacobian-vector products, DPS and SDA gradients) and the Kalman test work
unchanged, with ``A`` in place of ``H``.

Shapes: ``z`` ``(B, *state)``, ``A(z)`` ``(B, M)``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import torch
from torch import Tensor

from genda.observations.operators import ObservationOperator

__all__ = ["StateOperator", "diagonal_aat"]


class StateOperator:
    """``A(z) = H(decode(z))`` for an affine ``decode`` (states -> normalised fields).

    Args:
        fields: ``H`` on normalised fields (:meth:`ObservationOperator.normalized`).
        decode: the prior's states -> fields map (``EDMDenoiser.decode``), affine
            and differentiable in forward and reverse mode.
        state_shape: the shape of one state.
        key: what identifies ``decode`` (the prior's weights, the hour, a mask),
            so that what is built from this operator once can be found again
            (:func:`genda.assimilation.gaussian_tweedie.observation_space`);
            ``None``: never shared.
        factor: ``decode``'s linear part by parts
            (:class:`genda.assimilation.spectral_factor.SpectralFactor`), from which
            ``A A^T`` is built without going through ``decode``; ``None``: unknown.
    """

    def __init__(
        self,
        fields: ObservationOperator,
        decode: Callable[[Tensor], Tensor],
        state_shape: tuple[int, ...],
        key: Hashable | None = None,
        factor: Any = None,
    ) -> None:
        self.fields = fields
        self.decode = decode
        self.state_shape = tuple(state_shape)
        self.key = key
        self.factor = factor

    @property
    def n_obs(self) -> int:
        return self.fields.n_obs

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> StateOperator:
        """``H`` moved; ``decode`` runs where its module lives and in the state's dtype."""
        return StateOperator(
            self.fields.to(device, dtype), self.decode, self.state_shape, self.key, self.factor
        )

    def __call__(self, z: Tensor) -> Tensor:
        return self.fields(self.decode(z))

    def linear(self, z: Tensor) -> Tensor:
        """``A z - A 0``: the linear part."""
        zero = torch.zeros((1, *self.state_shape), dtype=z.dtype, device=z.device)
        return self(z) - self(zero)


def diagonal_aat(operator: ObservationOperator | StateOperator, block: int = 256) -> Tensor:
    """``diag(A A^T)`` ``(M,)``: each observation's sensitivity to unit white noise.

    For a grid operator the sum of its squared weights; for a state operator
    ``|U^T h_m|^2``, by reverse-mode products of ``block`` rows at a time.
    """
    if isinstance(operator, ObservationOperator):
        return (operator.weight.double() ** 2).sum(-1)
    fields = operator.fields
    dtype = fields.weight.dtype
    device = fields.weight.device
    out = []
    for start in range(0, fields.n_obs, block):
        count = min(block, fields.n_obs - start)
        rows = torch.zeros((count, fields.n_obs), dtype=dtype, device=device)
        rows[torch.arange(count), torch.arange(start, start + count)] = 1.0
        h = fields.adjoint(rows)  # (b, V, L, H, W): H^T e_m on normalised fields
        z = torch.zeros((h.shape[0], *operator.state_shape), dtype=dtype, device=device)
        _, pullback = torch.func.vjp(operator.decode, z)
        (ut_h,) = pullback(h)
        out.append(ut_h.reshape(h.shape[0], -1).double().square().sum(-1))
    return torch.cat(out)
