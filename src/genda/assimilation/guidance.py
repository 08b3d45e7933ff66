"""Posterior denoisers: a prior denoiser guided by Gaussian point observations.

Observations ``y = A(x) + e``, ``e ~ N(0, diag(sigma_y^2))``, with ``A`` the
affine observation operator on the prior's (normalised) fields
(:meth:`genda.observations.operators.ObservationOperator.normalized`). Posterior
sampling replaces the prior denoiser ``D(x_t, sigma) ~ E[x | x_t]`` by an
estimate of ``E[x | x_t, y]`` (Tweedie's formula with the score of
``p(x_t | y) ∝ p(x_t) p(y | x_t)``):

    D_y(x_t, sigma) = D(x_t, sigma) + sigma^2 grad_{x_t} log p(y | x_t),

and each method approximates the intractable ``p(y | x_t)`` by a Gaussian
around ``A(D(x_t, sigma))``. A guided denoiser is a denoiser (azula's design):
:func:`genda.models.sampling.sample` runs it unchanged, member by member
reproducibly.

* ``"mmps"``: moment-matching posterior sampling (Rozet et al. 2024, "Learning
  Diffusion Priors from Observations by Expectation Maximization", NeurIPS,
  https://arxiv.org/abs/2405.13712): ``p(y | x_t) ~ N(A x_hat, Sigma_y + A V A^T)``
  with the Tweedie covariance ``V[x | x_t] = sigma^2 dD/dx_t`` applied through
  vector-Jacobian products and the ``M x M`` system solved by a Krylov
  method (GMRES). Exact for a Gaussian prior (linear denoiser) once the solver
  converges, which the Kalman test checks. This is ``azula.guidance.MMPSDenoiser``; genda
  presents its denoiser to azula through a variance-exploding schedule
  ``alpha = 1, sigma(t) = t`` (:class:`_AzulaView`).
* ``"dps"``: diffusion posterior sampling (Chung et al. 2023, "Diffusion
  Posterior Sampling for General Noisy Inverse Problems", ICLR,
  https://arxiv.org/abs/2209.14687): ``p(y | x_t) ~ N(A x_hat, Sigma_y)``, the
  Tweedie covariance neglected, the gradient scaled by ``zeta``. azula ships
  DPS as a DDPM sampler that draws its noise from the global random stream
  and takes the norm of the residual over the whole batch (members would
  depend on each other and on their batch), so genda writes it as a denoiser.
* ``"sda"``: score-based data assimilation (Rozet & Louppe 2023, NeurIPS,
  https://arxiv.org/abs/2306.10574): ``p(y | x_t) ~ N(A x_hat, Sigma_y + gamma
  sigma^2 diag(A A^T))`` (their ``gamma (sigma_t / mu_t)^2 A A^T`` term with
  ``A A^T`` kept on its diagonal), used with Langevin corrections in the
  sampler (``sample(..., corrections=C)``). azula has no SDA guidance.

All three act row by row: a member's guidance never sees the other members
of its batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from azula.denoise import Denoiser as AzulaDenoiser
from azula.denoise import DiracPosterior
from azula.guidance import MMPSDenoiser
from azula.linalg.covariance import DiagonalCovariance
from azula.noise import Schedule
from torch import Tensor, nn

from genda.assimilation.gaussian_tweedie import GaussianTweedieGuidance, ObservationSpace
from genda.assimilation.state_operator import StateOperator, diagonal_aat
from genda.errors import InvalidValueError
from genda.models.sampling import Denoiser
from genda.observations.operators import ObservationOperator

GuidanceMethod = Literal["mmps", "dps", "sda"]
GUIDANCE_METHODS: tuple[str, ...] = get_args(GuidanceMethod)
TweedieCovariance = Literal["auto", "jacobian", "prior"]
TWEEDIE_COVARIANCES: tuple[str, ...] = get_args(TweedieCovariance)
"""MMPS's Tweedie covariance: the denoiser's Jacobian, a whitened prior's Gaussian part, or
``"auto"``: the Gaussian part for a prior in whitened coordinates, else the Jacobian
(:func:`resolve_covariance`)."""


def resolve_covariance(covariance: str, whitened: bool) -> str:
    """``"jacobian"`` or ``"prior"``: what ``covariance`` means for a prior (whitened or not).

    ``"auto"`` takes the whitened prior's Gaussian part where there is one: on
    the multi-window OSSE it scored as the Jacobian did (CRPS and RMSE within
    1 %, member power alike) at a sixth of the cost per member
    (docs/assimilation.md).

    Raises:
        InvalidValueError: an unknown name.
    """
    if covariance not in TWEEDIE_COVARIANCES:
        raise InvalidValueError(
            f"unknown covariance {covariance!r}; choose one of {TWEEDIE_COVARIANCES}"
        )
    if covariance == "auto":
        return "prior" if whitened else "jacobian"
    return covariance


@dataclass(frozen=True)
class GaussianLikelihood:
    """``y ~ N(A(x), diag(sigma^2))`` for fields ``x`` of shape ``(B, V, L, H, W)``.

    Attributes:
        operator: ``A``, affine, on the fields the denoiser works with.
        y: ``(M,)`` observed values, or ``(B, M)``: one row per member of the batch
            (a window whose first states are fixed per member,
            :mod:`genda.assimilation.conditioning`).
        sigma: ``(M,)`` observation error standard deviations (> 0).
    """

    operator: ObservationOperator | StateOperator
    y: Tensor
    sigma: Tensor

    def __post_init__(self) -> None:
        m = self.operator.n_obs
        if self.y.shape[-1:] != (m,) or self.y.dim() > 2 or self.sigma.shape != (m,):
            raise InvalidValueError(
                f"y {tuple(self.y.shape)} must be ({m},) or one row per member (B, {m}), "
                f"sigma {tuple(self.sigma.shape)} ({m},)"
            )
        if not torch.all(self.sigma > 0):
            raise InvalidValueError("observation errors sigma must be strictly positive")

    def to(self, device: torch.device | str, dtype: torch.dtype) -> GaussianLikelihood:
        return GaussianLikelihood(
            self.operator.to(device, dtype), self.y.to(device, dtype), self.sigma.to(device, dtype)
        )

    def residual(self, x: Tensor) -> Tensor:
        """``(y - A(x)) / sigma``, ``(B, M)``: the normalised innovations."""
        return (self.y - self.operator(x)) / self.sigma


class _SigmaSchedule(Schedule):
    """azula schedule whose time is genda's noise level: ``alpha_t = 1``, ``sigma_t = t``."""

    def __call__(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.ones_like(t), t


class _AzulaView(AzulaDenoiser):
    """A genda denoiser ``D(x, sigma (B,))`` seen as an azula denoiser of ``(x_t, t)``.

    ``t`` arrives shaped to broadcast against ``x`` (``(B, 1, ..., 1)``), which
    is what azula's guidance needs to scale fields by ``sigma_t^2``.
    """

    def __init__(self, denoiser: Denoiser) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.schedule = _SigmaSchedule()

    def forward(self, x_t: Tensor, t: Tensor, **kwargs: object) -> DiracPosterior:
        return DiracPosterior(mean=self.denoiser(x_t, t.reshape(x_t.shape[0])))


class MMPSGuidance(nn.Module):
    """MMPS posterior denoiser (module docstring): azula's ``MMPSDenoiser`` around ``denoiser``.

    Args:
        denoiser: the prior ``D(x (B, ...), sigma (B,))``.
        likelihood: the observations.
        iterations: solver iterations for ``(Sigma_y + A V A^T) u = y - A x_hat``
            (each costs one vector-Jacobian product through the denoiser, a
            backward pass, and a Jacobian-vector product through the cheap
            ``A``); ``Sigma_y`` makes the system well conditioned,
            so a few iterations suffice when observation errors are not tiny.
        solver: ``"cg"`` (conjugate gradients) needs a symmetric positive
            definite system, which it is for an exact denoiser; a trained
            network's Jacobian is neither exactly symmetric nor positive at
            every noise level, and CG then divides by ``p^T A p <= 0`` and
            blows up, so ``"gmres"`` (azula's default) is the default here.
    """

    def __init__(
        self,
        denoiser: Denoiser,
        likelihood: GaussianLikelihood,
        iterations: int = 3,
        solver: str = "gmres",
    ) -> None:
        super().__init__()
        if iterations < 1:
            raise InvalidValueError(f"MMPS needs at least one solver iteration, got {iterations}")
        self.mmps = MMPSDenoiser(
            _AzulaView(denoiser),
            y=likelihood.y,
            A=likelihood.operator,
            cov_y=DiagonalCovariance(likelihood.sigma**2),
            solver=solver,
            iterations=iterations,
        )

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        t = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        return self.mmps(x, t).mean


class _GradientGuidance(nn.Module):
    """``D(x_t) - sigma^2 grad_{x_t} sum_b penalty_b``, the penalty from :meth:`penalty`.

    The penalty of member ``b`` depends on its own row only, so summing over
    the batch before differentiating keeps the members independent.
    """

    def __init__(self, denoiser: Denoiser, likelihood: GaussianLikelihood) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.likelihood = likelihood

    def penalty(self, innovation: Tensor, sigma: Tensor) -> Tensor:
        """``(B, M)`` innovations ``y - A x_hat`` and ``(B,)`` noise levels -> ``(B,)``."""
        raise NotImplementedError

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        with torch.enable_grad():
            x_t = x.detach().requires_grad_(True)
            x_hat = self.denoiser(x_t, sigma)
            innovation = self.likelihood.y - self.likelihood.operator(x_hat)
            (grad,) = torch.autograd.grad(self.penalty(innovation, sigma).sum(), x_t)
        factor = sigma.reshape(-1, *([1] * (x.ndim - 1))) ** 2
        return (x_hat - factor * grad).detach()


class DPSGuidance(_GradientGuidance):
    """DPS (module docstring) with Chung et al.'s normalised step.

    ``penalty = zeta ||r||^2 / ||r||`` with ``r = (y - A x_hat) / sigma_y`` and
    the denominator held constant (their Algorithm 1: ``zeta_i = zeta /
    ||y - A x_hat||``), so the step's size does not grow with the misfit; in the
    denoiser form of Rozet & Louppe's reference code (``DPSGaussianScore``).
    """

    def __init__(
        self, denoiser: Denoiser, likelihood: GaussianLikelihood, zeta: float = 1.0
    ) -> None:
        super().__init__(denoiser, likelihood)
        if zeta < 0:
            raise InvalidValueError(f"zeta must be non-negative, got {zeta}")
        self.zeta = float(zeta)

    def penalty(self, innovation: Tensor, sigma: Tensor) -> Tensor:
        squared = (innovation / self.likelihood.sigma).square().sum(-1)
        return self.zeta * squared / squared.detach().sqrt().clamp(min=1e-12)


class SDAGuidance(_GradientGuidance):
    """SDA (module docstring): ``-log N(y | A x_hat, Sigma_y + gamma sigma^2 diag(A A^T))``."""

    def __init__(
        self, denoiser: Denoiser, likelihood: GaussianLikelihood, gamma: float = 0.1
    ) -> None:
        super().__init__(denoiser, likelihood)
        if gamma < 0:
            raise InvalidValueError(f"gamma must be non-negative, got {gamma}")
        self.gamma = float(gamma)
        # A state operator's penalty solves with the whole A A^T instead: no diagonal needed.
        aat = (
            torch.zeros(0)
            if isinstance(likelihood.operator, StateOperator)
            else diagonal_aat(likelihood.operator)
        )
        self.register_buffer("aat", aat.to(likelihood.sigma.dtype), persistent=False)
        self.space: ObservationSpace | None = None

    def penalty(self, innovation: Tensor, sigma: Tensor) -> Tensor:
        operator = self.likelihood.operator
        if isinstance(operator, StateOperator):
            return self._correlated_penalty(operator, innovation, sigma)
        variance = self.likelihood.sigma**2 + self.gamma * sigma[:, None] ** 2 * self.aat
        return 0.5 * (innovation.square() / variance).sum(-1)

    def _correlated_penalty(
        self, operator: StateOperator, innovation: Tensor, sigma: Tensor
    ) -> Tensor:
        """``0.5 r^T (Sigma_y + gamma sigma^2 A A^T)^-1 r`` with the whole ``A A^T``.

        On whitened states ``A A^T = H B H^T`` is the prior covariance of the
        observations: neighbouring observations share most of it, and its
        diagonal alone would count their common information once per
        observation (the members then run away). The system is solved exactly
        through the window's diagonalised ``A A^T`` (:class:`ObservationSpace`,
        built on first use) and held constant: the surrogate ``u . r`` has the
        penalty's gradient ``-A^T u``.
        """
        if self.space is None:
            self.space = ObservationSpace(operator, self.likelihood.sigma)
        scale = self.gamma * sigma.detach() ** 2
        u = self.space.solve(innovation.detach(), scale)
        return (u.detach() * innovation).sum(-1)


def guided_denoiser(
    denoiser: Denoiser,
    likelihood: GaussianLikelihood,
    method: GuidanceMethod = "mmps",
    **options: Any,
) -> Callable[[Tensor, Tensor], Tensor]:
    """The posterior denoiser of ``method``.

    Options: ``iterations`` and ``covariance`` (:data:`TWEEDIE_COVARIANCES`;
    ``"auto"``, the default, looks at the likelihood's operator) for MMPS,
    ``zeta`` for DPS, ``gamma`` for SDA.
    """
    if method == "mmps":
        whitened = isinstance(getattr(likelihood, "operator", None), StateOperator)
        covariance = resolve_covariance(options.pop("covariance", "auto"), whitened)
        if covariance == "prior":
            sigma_data = float(getattr(denoiser, "sigma_data", 1.0))
            return GaussianTweedieGuidance(denoiser, likelihood, sigma_data=sigma_data)
        iterations = int(options.pop("iterations", 3))
        return MMPSGuidance(denoiser, likelihood, iterations=iterations, **options)  # type: ignore[arg-type]
    if method == "dps":
        return DPSGuidance(denoiser, likelihood, **options)
    if method == "sda":
        return SDAGuidance(denoiser, likelihood, **options)
    raise InvalidValueError(f"unknown guidance method {method!r}; choose one of {GUIDANCE_METHODS}")
