"""EDM diffusion maths: preconditioning, denoiser, training loss, noise levels.

genda's prior follows Karras et al. (2022), "Elucidating the Design Space of
Diffusion-Based Generative Models" (EDM, https://arxiv.org/abs/2206.00364),
in the variance-exploding form ``x_sigma = x + sigma n``, ``n ~ N(0, I)``
(signal scale 1): a noise level ``sigma`` is the only "time" there is.

* :class:`EDMPreconditioning` holds the coefficients of EDM Table 1,
  :class:`EDMDenoiser` wraps a backbone ``F(x_in, c_noise, cond=None)`` into
  ``D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)``.
* :func:`edm_loss` is the per-sample EDM training loss with log-normal noise
  levels and the weighting ``lambda(sigma)`` that makes the optimal loss 1 at
  every ``sigma`` when the data have standard deviation ``sigma_data``.
* :func:`karras_sigmas` is the ``rho = 7`` discretisation of the sampling
  noise levels (EDM eq. 5).

Why not azula (0.11.1) here, although it is installed:

* ``azula.denoise.KarrasDenoiser`` is the EDM preconditioning generalised to
  a signal scale ``alpha_t``; with ``alpha_t = 1`` its coefficients are EDM's
  for ``sigma_data = 1`` only (``sigma_data`` is not a parameter), its noise
  conditioning is ``c_time = log(sigma)`` instead of EDM's ``log(sigma) / 4``,
  it is indexed by a time ``t`` through a ``Schedule`` rather than by
  ``sigma``, returns a ``DiracPosterior`` rather than a tensor, and its
  ``loss`` draws noise from the global RNG (no ``torch.Generator``) and
  returns a batch mean. The formulas are a few lines; we write them with an
  explicit ``sigma_data`` and keep azula as an independent reference: the
  tests check that for ``sigma_data = 1`` our ``D`` equals azula's.
* azula's schedules (``VESchedule``: geometric in ``sigma``) have no ``rho``
  discretisation, so :func:`karras_sigmas` is written here.

Shapes: ``x`` is ``(B, ...)`` (any trailing field shape, e.g. ``(B, V, L, H, W)``),
``sigma`` is ``(B,)`` (a scalar is broadcast to the batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from genda.errors import InvalidValueError

__all__ = [
    "Backbone",
    "EDMDenoiser",
    "EDMPreconditioning",
    "edm_loss",
    "edm_sigma_sampler",
    "karras_sigmas",
]

SIGMA_MIN = 0.002
"""Smallest sampling noise level of EDM (its image setting; fields normalised to unit std)."""
SIGMA_MAX = 80.0
"""Largest sampling noise level of EDM: ``sigma_max >> sigma_data`` so that ``N(0, sigma_max^2)``
is indistinguishable from the noised data distribution."""
RHO = 7.0
"""EDM's ``rho``: larger values spend more steps at small noise levels."""


class Backbone(Protocol):
    """The network ``F`` inside :class:`EDMDenoiser`.

    ``x_in`` is ``(B, ...)``, ``c_noise`` is ``(B,)``, the result has the shape of ``x_in``;
    ``cond`` is optional conditioning passed through unchanged.
    """

    def __call__(self, x_in: Tensor, c_noise: Tensor, cond: Tensor | None = None) -> Tensor: ...


def _batch_sigma(sigma: Tensor | float, x: Tensor) -> Tensor:
    """``sigma`` as a ``(B,)`` tensor in ``x``'s dtype and device."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma.ndim == 0:
        return sigma.expand(x.shape[0])
    if sigma.shape != (x.shape[0],):
        raise ValueError(  # a caller's bug, not a user's input
            f"sigma must be a scalar or have shape (B,) = ({x.shape[0]},), got {tuple(sigma.shape)}"
        )
    return sigma


def _expand(values: Tensor, x: Tensor) -> Tensor:
    """``(B,)`` -> ``(B, 1, ..., 1)`` broadcastable against ``x`` of shape ``(B, ...)``."""
    return values.reshape(values.shape[0], *([1] * (x.ndim - 1)))


@dataclass(frozen=True)
class EDMPreconditioning:
    """The preconditioning of EDM, Table 1 (Karras et al. 2022, column "EDM").

    With ``sigma_d = sigma_data``:

    * ``c_skip(sigma) = sigma_d^2 / (sigma^2 + sigma_d^2)``
    * ``c_out(sigma) = sigma sigma_d / sqrt(sigma^2 + sigma_d^2)``
    * ``c_in(sigma) = 1 / sqrt(sigma^2 + sigma_d^2)``
    * ``c_noise(sigma) = log(sigma) / 4``
    * ``weight(sigma) = lambda(sigma) = (sigma^2 + sigma_d^2) / (sigma sigma_d)^2``

    They make the network's input and training target unit-variance at every
    noise level when the data have standard deviation ``sigma_data``
    (1.0 for genda's normalised fields, :mod:`genda.normalization`).
    All methods take and return tensors of any shape, elementwise.
    """

    sigma_data: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sigma_data) and self.sigma_data > 0):
            raise InvalidValueError(
                f"sigma_data must be positive and finite, got {self.sigma_data}"
            )

    def c_skip(self, sigma: Tensor) -> Tensor:
        sd2 = self.sigma_data**2
        return sd2 / (sigma**2 + sd2)

    def c_out(self, sigma: Tensor) -> Tensor:
        return sigma * self.sigma_data / torch.sqrt(sigma**2 + self.sigma_data**2)

    def c_in(self, sigma: Tensor) -> Tensor:
        return 1 / torch.sqrt(sigma**2 + self.sigma_data**2)

    def c_noise(self, sigma: Tensor) -> Tensor:
        return torch.log(sigma) / 4

    def weight(self, sigma: Tensor) -> Tensor:
        """The loss weighting ``lambda(sigma)``, equal to ``1 / c_out(sigma)^2``."""
        sd2 = self.sigma_data**2
        return (sigma**2 + sd2) / (sigma**2 * sd2)


class EDMDenoiser(nn.Module):
    """``D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)`` (EDM, eq. 7 and Table 1).

    Args:
        backbone: ``F(x_in (B, ...), c_noise (B,), cond=None) -> (B, ...)``, a module.
        sigma_data: standard deviation of the (normalised) data, 1.0 for genda's fields.

    ``forward(x, sigma, cond=None)``: ``x`` ``(B, ...)``, ``sigma`` ``(B,)`` or scalar,
    strictly positive (``c_noise = log(sigma) / 4``). Returns the denoised
    estimate of ``E[x_0 | x]``, shape ``(B, ...)``, in ``x``'s dtype. The
    preconditioning is computed in ``x``'s dtype; the backbone sees its input
    in its own parameter dtype (mixed precision), as in NVlabs/edm ``EDMPrecond``.

    It satisfies :class:`genda.models.sampling.Denoiser`.

    ``coordinates``: a control-variable transform (e.g.
    :class:`genda.models.whitening.SpectralWhitening`) that makes the model
    data white: the diffusion then runs on its states ``z`` (``x = mu + U z``),
    the network sees the grid image ``image(c_in z)`` and its output is read
    back with ``coefficients``. The fields of a state are :meth:`decode`'s.

    ``skip``: a module ``skip(x, sigma) -> (B, ...)`` that replaces ``c_skip x``,
    e.g. :class:`genda.models.gaussian_skip.GaussianSkip` (the posterior mean of
    a Gaussian fitted to the data, which for steep spectra removes the noise
    at scales the scalar skip keeps). ``c_in``, ``c_out``, ``c_noise`` and the
    loss weight stay EDM's.
    """

    def __init__(
        self,
        backbone: nn.Module,
        sigma_data: float = 1.0,
        skip: nn.Module | None = None,
        coordinates: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if skip is not None and coordinates is not None:
            raise InvalidValueError(
                "a denoiser in whitened coordinates needs no skip: there the scalar "
                "c_skip is already the Gaussian posterior mean"
            )
        self.backbone = backbone
        self.precond = EDMPreconditioning(sigma_data)
        self.skip = skip
        self.coordinates = coordinates

    # ------------------------------------------------------------------ state <-> fields
    def state_shape(self, field_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of one state the diffusion runs on (``field_shape`` without coordinates)."""
        if self.coordinates is None:
            return tuple(field_shape)
        return tuple(self.coordinates.state_shape)

    @property
    def tides(self) -> int:
        """Solar-day harmonics in the coordinates' mean: ``> 0`` when states need their hour."""
        return int(getattr(self.coordinates, "tides", 0))

    def encode(self, fields: Tensor, hours: Any = None) -> Tensor:
        """Normalised fields ``(B, V, L, H, W)`` -> diffusion states (the fields themselves by default).

        ``hours``: the fields' UT hours (``(B,)`` or one number), used when
        the coordinates' mean follows the time of day (:attr:`tides`).
        """
        if self.coordinates is None:
            return fields
        with torch.autocast(device_type=fields.device.type, enabled=False):
            return self.coordinates.encode(fields, hours)

    def decode(self, state: Tensor, hours: Any = None) -> Tensor:
        """Diffusion states -> normalised fields ``(B, V, L, H, W)`` (:meth:`encode`'s inverse)."""
        if self.coordinates is None:
            return state
        with torch.autocast(device_type=state.device.type, enabled=False):
            return self.coordinates.decode(state, hours)

    @property
    def sigma_data(self) -> float:
        return self.precond.sigma_data

    def _backbone_dtype(self, default: torch.dtype) -> torch.dtype:
        for parameter in self.backbone.parameters():
            if parameter.is_floating_point():
                return parameter.dtype
        return default

    def forward(self, x: Tensor, sigma: Tensor | float, cond: Tensor | None = None) -> Tensor:
        sigma = _batch_sigma(sigma, x)
        s = _expand(sigma, x)
        p = self.precond
        dtype = self._backbone_dtype(x.dtype)
        x_in = p.c_in(s) * x
        if self.coordinates is not None:  # the network looks at a grid image of the state
            with torch.autocast(device_type=x.device.type, enabled=False):
                x_in = self.coordinates.image(x_in)
        x_in = x_in.to(dtype)
        c_noise = p.c_noise(sigma).to(dtype)
        if cond is None:
            out = self.backbone(x_in, c_noise)
        else:
            out = self.backbone(x_in, c_noise, cond=cond)
        if self.coordinates is not None:  # and its output image is read back as a state
            with torch.autocast(device_type=x.device.type, enabled=False):
                out = self.coordinates.coefficients(out.to(x.dtype))
        if self.skip is None:
            skip = p.c_skip(s) * x
        else:  # transforms in float32 even under mixed precision
            with torch.autocast(device_type=x.device.type, enabled=False):
                skip = self.skip(x, sigma)
        return skip + p.c_out(s) * out.to(x.dtype)


def edm_sigma_sampler(
    batch: int,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Training noise levels ``ln(sigma) ~ N(p_mean, p_std^2)`` (EDM Table 1), shape ``(batch,)``.

    Drawn on ``generator``'s device (the default RNG of ``device`` without one),
    then moved to ``device``.
    """
    gen_device = generator.device if generator is not None else device
    normal = torch.randn(batch, generator=generator, device=gen_device, dtype=dtype)
    return torch.exp(p_mean + p_std * normal).to(device)


def edm_loss(
    denoiser: EDMDenoiser,
    x0: Tensor,
    generator: torch.Generator | None = None,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    *,
    sigma: Tensor | None = None,
    cond: Tensor | None = None,
) -> Tensor:
    """Per-sample EDM training loss, shape ``(B,)`` (Karras et al. 2022, eq. 8 and Table 1).

    ``loss_b = lambda(sigma_b) * mean_i (D(x0_b + sigma_b n_b, sigma_b) - x0_b)_i^2`` with
    ``ln(sigma_b) ~ N(p_mean, p_std^2)`` and ``n_b ~ N(0, I)``; the mean runs over all
    non-batch elements, so the loss does not grow with the field size. With
    ``lambda = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 = 1 / c_out^2`` the
    backbone's effective target has unit variance, and for data of standard
    deviation ``sigma_data`` the exact denoiser scores 1 at every ``sigma``.

    Args:
        denoiser: the :class:`EDMDenoiser` (its ``sigma_data`` sets ``lambda``).
        x0: clean (normalised) samples ``(B, ...)``.
        generator: source of ``sigma`` and of the noise; draws happen on its
            device, then move to ``x0``'s (the global RNG of ``x0``'s device without one).
        p_mean, p_std: the log-normal of the training noise levels.
        sigma: ``(B,)`` noise levels to use instead of drawing them (diagnostics:
            loss as a function of ``sigma``).
        cond: conditioning passed to the backbone.

    Returns:
        ``(B,)`` losses; reduce (e.g. ``.mean()``) before ``backward``.
    """
    batch = x0.shape[0]
    if sigma is None:
        sigma = edm_sigma_sampler(
            batch, p_mean, p_std, generator=generator, device=x0.device, dtype=x0.dtype
        )
    else:
        sigma = _batch_sigma(sigma, x0)
    gen_device = generator.device if generator is not None else x0.device
    noise = torch.randn(x0.shape, generator=generator, device=gen_device, dtype=x0.dtype)
    noise = noise.to(x0.device)
    x_noisy = x0 + _expand(sigma, x0) * noise
    denoised = denoiser(x_noisy, sigma, cond=cond)
    weight = denoiser.precond.weight(sigma)
    return weight * (denoised - x0).square().reshape(batch, -1).mean(dim=1)


def karras_sigmas(
    steps: int,
    sigma_min: float = SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
    rho: float = RHO,
    append_zero: bool = True,
) -> Tensor:
    """Sampling noise levels of EDM eq. 5, float64, decreasing.

    ``sigma_i = (sigma_max^(1/rho) + i / (steps - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``
    for ``i = 0 .. steps - 1``, followed by ``sigma_steps = 0`` when ``append_zero``
    (the sampler's last step then lands on clean data). Shape ``(steps + 1,)``
    with the zero, ``(steps,)`` without. ``steps = 1`` gives ``[sigma_max(, 0)]``.
    """
    if steps < 1:
        raise InvalidValueError(f"steps must be at least 1, got {steps}")
    if not (0 < sigma_min <= sigma_max):
        raise InvalidValueError(
            f"need 0 < sigma_min <= sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}"
        )
    if rho <= 0:
        raise InvalidValueError(f"rho must be positive, got {rho}")
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    # the ends exactly, not up to the round-off of the 1/rho power
    sigmas[0] = sigma_max
    if steps > 1:
        sigmas[-1] = sigma_min
    if append_zero:
        sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    return sigmas
