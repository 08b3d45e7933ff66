"""MMPS with the prior's Gaussian Tweedie covariance: guidance without backward passes.

MMPS (Rozet et al. 2024) approximates ``p(y | x_t)`` by ``N(A x_hat, Sigma_y
+ A V A^T)`` with the Tweedie covariance ``V = V[x | x_t] = sigma^2 dD/dx_t``
and moves the denoiser's estimate by ``sigma^2 grad_{x_t} log p(y | x_t)``.
Both the covariance and the gradient go through the network's Jacobian:
one backward pass per solver iteration, the cost that makes MMPS several
times dearer than an unconditional sample.

A prior in whitened coordinates (:mod:`genda.models.whitening`) has the
Gaussian part ``z ~ N(0, sigma_data^2 I)``, whose denoiser is EDM's
``c_skip z_t`` and whose Tweedie covariance is exactly

    V = c I,   c = sigma^2 sigma_data^2 / (sigma^2 + sigma_data^2).

Taking ``V`` and the Jacobian from this Gaussian part, and the estimate
``x_hat = D(z_t, sigma)`` from the trained network, MMPS's update becomes a
Kalman update of ``x_hat`` with prior covariance ``c I``:

    D_y = x_hat + c A^T (Sigma_y + c A A^T)^-1 (y - A(x_hat)),

which needs one network call per step and no Jacobian. Once per window:

* ``A A^T`` (``M x M``), the prior covariance of the observations, with
  ``A = H U`` the linear part of the observation operator on ``z``
  (``(M, N)``, ``N`` the size of a state). When the operator knows its
  decode's per-mode factor (every whitened prior,
  :mod:`genda.assimilation.spectral_factor`), from the observations' spectral
  point functionals, and each step applies ``A`` and ``A^T`` through that
  factor. Otherwise from the rows of ``A``, by ``ceil(M / block)``
  reverse-mode products through ``U`` (never through the network), kept
  when they fit :data:`DENSE_ROWS_LIMIT` so that each step applies ``A`` and
  ``A^T`` as two small matrix products;
* ``S = Sigma_y^-1/2 A A^T Sigma_y^-1/2 = Q diag(lam) Q^T`` diagonalised, so that
  each noise level is solved exactly by ``(I + c S)^-1 = Q diag(1 / (1 + c
  lam)) Q^T`` (up to :data:`EXACT_SOLVE_LIMIT` observations; beyond, a fixed
  number of conjugate-gradient steps on ``A (A^T v)``).

For the Gaussian prior itself (an untrained network) this is MMPS exactly,
and the Kalman test holds with no solver tolerance. With a trained network
it keeps the network's estimate but not the network's correction to the
covariance, which in whitened coordinates is small: the network learns the
non-Gaussian remainder of a prior whose second moments are already fitted.

Shapes: states ``z`` ``(B, *state)``, observations ``(M,)``.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Callable, Hashable
from typing import Any

import torch
from torch import Tensor, nn

from genda.assimilation.spectral_factor import factor_rows, spectral_gram, spectral_rows
from genda.assimilation.state_operator import StateOperator
from genda.errors import InvalidValueError
from genda.models.sampling import Denoiser

__all__ = [
    "CG_ITERATIONS",
    "DENSE_ROWS_LIMIT",
    "EXACT_SOLVE_LIMIT",
    "FACTOR_ROWS_LIMIT",
    "GaussianTweedieGuidance",
    "ObservationSpace",
    "clear_observation_spaces",
    "conjugate_gradients",
    "content_digest",
    "observation_covariance",
    "observation_space",
    "operator_rows",
]

DENSE_ROWS_LIMIT = 2**28
"""Most entries of ``A`` (``M x N``) kept as a matrix (1 GiB in float32); beyond,
each step applies ``A`` and ``A^T`` through the operator."""

FACTOR_ROWS_LIMIT = 2**27
"""With the decode's factor, most entries of ``A`` kept as a matrix (512 MiB): up
to about there two matrix products of a batch beat a synthesis and ``F`` on every
mode (``benchmarks/observation_space.py``); beyond, the factor is faster."""

EXACT_SOLVE_LIMIT = 6000
"""Most observations whose ``A A^T`` is built and diagonalised (``O(M^3)``, 288 MB at
the limit); beyond, each solve runs :data:`CG_ITERATIONS` conjugate-gradient steps."""

CG_ITERATIONS = 24
"""Conjugate-gradient iterations of a solve beyond :data:`EXACT_SOLVE_LIMIT`."""


def _adjoint_rows(operator: StateOperator, start: int, count: int) -> Tensor:
    """``A^T e_m`` for ``m = start .. start + count - 1``: ``(count, *state)``."""
    fields = operator.fields
    dtype, device = fields.weight.dtype, fields.weight.device
    unit = torch.zeros((count, fields.n_obs), dtype=dtype, device=device)
    unit[torch.arange(count), torch.arange(start, start + count)] = 1.0
    state = torch.zeros((count, *operator.state_shape), dtype=dtype, device=device)
    with torch.enable_grad():
        _, pullback = torch.func.vjp(operator.linear, state)
        (rows,) = pullback(unit)
    return rows.detach()


def operator_rows(operator: StateOperator, block: int = 256) -> Tensor:
    """``A`` ``(M, N)``: the rows of the linear part of ``operator``, ``block`` at a time."""
    m = operator.fields.n_obs
    return torch.cat(
        [
            _adjoint_rows(operator, start, min(block, m - start)).reshape(min(block, m - start), -1)
            for start in range(0, m, block)
        ]
    )


def observation_covariance(
    operator: StateOperator, block: int = 256, keep_rows: bool = False
) -> tuple[Tensor, Tensor | None]:
    """``A A^T`` ``(M, M)`` float64 of the linear part of ``operator``, ``block`` rows at a time.

    With ``keep_rows``, also ``A`` ``(M, N)`` in the operator's dtype (else ``None``).
    """
    m = operator.fields.n_obs
    if keep_rows:
        rows = operator_rows(operator, block)
        covariance = (rows @ rows.T).double()
        return 0.5 * (covariance + covariance.T), rows
    out = torch.empty((m, m), dtype=torch.float64, device=operator.fields.weight.device)
    for start in range(0, m, block):
        count = min(block, m - start)
        out[:, start : start + count] = (
            operator.linear(_adjoint_rows(operator, start, count)).double().T
        )
    return 0.5 * (out + out.T), None


class ObservationSpace:
    """``Sigma_y + c A A^T`` for any ``c >= 0`` (per member), solved once per window.

    Built from the linear part of ``operator`` (``A = H U`` on whitened
    states) and the observation errors ``sigma_y`` ``(M,)``. Up to
    :data:`EXACT_SOLVE_LIMIT` observations, ``S = Sigma_y^-1/2 A A^T
    Sigma_y^-1/2 = Q diag(lam) Q^T`` is diagonalised and every solve is exact;
    beyond, solves run conjugate gradients on ``A (A^T v)``. With the
    operator's :attr:`~StateOperator.factor`, ``A A^T``, ``A`` and ``A^T`` go
    through it (:mod:`genda.assimilation.spectral_factor`); without, ``A``
    itself is kept ``(M, N)`` when it fits :data:`DENSE_ROWS_LIMIT`.
    """

    def __init__(self, operator: StateOperator, sigma_y: Tensor) -> None:
        self.operator = operator
        self.sigma_y = sigma_y
        m = operator.fields.n_obs
        self.rows: Tensor | None = None
        self.offset: Tensor | None = None
        self.eigenvalues: Tensor | None = None
        self.eigenvectors: Tensor | None = None
        self.modes: Tensor | None = None  # the decode's F on its modes, when known
        structured = operator.factor is not None
        entries = m * math.prod(operator.state_shape)
        # With the decode's factor, A A^T comes from the spectral point functionals,
        # and A is a matrix only while two products of a batch beat the factor's.
        keep_rows = entries <= (FACTOR_ROWS_LIMIT if structured else DENSE_ROWS_LIMIT)
        if structured:
            self.modes = operator.factor.modes()
            if keep_rows or m <= EXACT_SOLVE_LIMIT:
                functionals = spectral_rows(operator.factor, operator.fields)
            if keep_rows:
                self.rows = factor_rows(operator.factor, functionals, self.modes)
        if m <= EXACT_SOLVE_LIMIT:
            if structured:
                covariance = spectral_gram(
                    operator.factor, operator.fields, self.modes, functionals
                )
            else:
                covariance, self.rows = observation_covariance(operator, keep_rows=keep_rows)
            scale = sigma_y.double()
            values, vectors = torch.linalg.eigh(covariance / scale[:, None] / scale[None, :])
            self.eigenvalues = values.clamp(min=0.0).to(sigma_y.dtype)
            self.eigenvectors = vectors.to(sigma_y.dtype)
        elif keep_rows and not structured:
            self.rows = operator_rows(operator)
        if self.rows is not None:
            self.modes = None  # the steps take A: F on the modes is not needed again
        if self.rows is not None or structured:
            weight = operator.fields.weight
            zero = torch.zeros((1, *operator.state_shape), dtype=weight.dtype, device=weight.device)
            self.offset = operator(zero)[0].detach()  # A(0) = H mu

    def apply(self, z: Tensor) -> Tensor:
        """``A(z)`` ``(B, M)`` of states ``(B, *state)``."""
        if self.offset is None:
            return self.operator(z)
        return self.linear(z) + self.offset.to(z.dtype)

    def adjoint(self, weights: Tensor) -> Tensor:
        """``A^T w`` ``(B, *state)`` of ``w`` ``(B, M)`` (the linear part's adjoint)."""
        if self.rows is not None:
            flat = weights @ self.rows.to(weights.dtype)
            return flat.reshape(weights.shape[0], *self.operator.state_shape)
        if self.modes is not None:
            return self.operator.factor.adjoint(self.operator.fields.adjoint(weights), self.modes)
        state = torch.zeros(
            (weights.shape[0], *self.operator.state_shape),
            dtype=weights.dtype,
            device=weights.device,
        )
        with torch.enable_grad():  # the adjoint of A (affine: its linear part's), not of a network
            _, pullback = torch.func.vjp(self.operator, state)
            (out,) = pullback(weights)
        return out.detach()

    def linear(self, z: Tensor) -> Tensor:
        """``A z`` without the offset: ``(B, *state) -> (B, M)``."""
        if self.rows is not None:
            return z.reshape(z.shape[0], -1) @ self.rows.T.to(z.dtype)
        if self.modes is not None:
            return self.operator.fields.linear(self.operator.factor.linear(z, self.modes))
        return self.operator.linear(z)

    def solve(self, innovation: Tensor, c: Tensor) -> Tensor:
        """``(Sigma_y + c A A^T)^-1 d`` row by row: ``d`` ``(B, M)``, ``c`` ``(B,)``."""
        dtype = innovation.dtype
        sigma_y = self.sigma_y.to(dtype)
        c = c.to(dtype)
        if self.eigenvalues is None or self.eigenvectors is None:
            variance = sigma_y**2

            def system(v: Tensor) -> Tensor:
                return variance * v + c[:, None] * self.linear(self.adjoint(v))

            return conjugate_gradients(system, innovation, variance, CG_ITERATIONS)
        q = self.eigenvectors.to(dtype)
        gain = 1.0 / (1.0 + c[:, None] * self.eigenvalues.to(dtype))
        return (((innovation / sigma_y) @ q) * gain) @ q.T / sigma_y


def content_digest(*tensors: Tensor) -> str:
    """A content hash of tensors (their bytes, dtypes and shapes)."""
    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


_SPACES: dict[Hashable, ObservationSpace] = {}
_SPACES_LOCK = threading.Lock()


def observation_space(operator: StateOperator, sigma_y: Tensor) -> ObservationSpace:
    """:class:`ObservationSpace` of ``operator`` and ``sigma_y``, the last one built reused.

    A window's guidance is built where its settings are checked (before the
    store is touched) and again where its members are sampled; in one process
    the second finds the first when the operator is the same: the same
    decode (``operator.key``: the prior's weights, the hour, the fixed
    components), the same rows of ``H`` and the same errors. One space is
    kept (it may hold ``A``, up to :data:`DENSE_ROWS_LIMIT` entries); the
    one before is let go before the next is built, and the build runs
    outside the lock, so that windows checked by several threads of a driver
    do not wait for each other.
    """
    if operator.key is None:
        return ObservationSpace(operator, sigma_y)
    fields = operator.fields
    key = (
        operator.key,
        content_digest(fields.index, fields.weight, fields.offset, sigma_y),
        str(fields.weight.device),
    )
    with _SPACES_LOCK:  # driver threads check windows concurrently
        space = _SPACES.get(key)
        if space is not None:
            return space
        _SPACES.clear()
    space = ObservationSpace(operator, sigma_y)
    with _SPACES_LOCK:
        _SPACES.clear()
        _SPACES[key] = space
    return space


def clear_observation_spaces() -> None:
    """Let the kept observation space go (before measuring free memory)."""
    with _SPACES_LOCK:
        _SPACES.clear()


def conjugate_gradients(
    matvec: Callable[[Tensor], Tensor], b: Tensor, diagonal: Tensor, iterations: int
) -> Tensor:
    """Solve ``C u = b`` row by row for symmetric positive definite ``C``, ``(B, M)``.

    Jacobi-preconditioned with ``diagonal`` (``(M,)``, e.g. ``Sigma_y``'s), a
    fixed number of iterations so that every member does the same work.
    """
    u = torch.zeros_like(b)
    r = b.clone()
    z = r / diagonal
    p = z.clone()
    rz = (r * z).sum(-1, keepdim=True)
    for _ in range(iterations):
        cp = matvec(p)
        alpha = rz / (p * cp).sum(-1, keepdim=True).clamp(min=1e-30)
        u = u + alpha * p
        r = r - alpha * cp
        z = r / diagonal
        rz_next = (r * z).sum(-1, keepdim=True)
        p = z + (rz_next / rz.clamp(min=1e-30)) * p
        rz = rz_next
    return u


class GaussianTweedieGuidance(nn.Module):
    """MMPS whose Tweedie covariance is the whitened prior's Gaussian part (module docstring).

    Args:
        denoiser: the prior ``D(z (B, *state), sigma (B,))`` in whitened coordinates.
        likelihood: the observations, with a :class:`StateOperator` on ``z``.
        sigma_data: the prior's data standard deviation (EDM's, 1 in whitened coordinates).

    Raises:
        InvalidValueError: the operator does not act on whitened states.
    """

    def __init__(
        self,
        denoiser: Denoiser,
        likelihood: Any,
        sigma_data: float = 1.0,
        space: ObservationSpace | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(getattr(likelihood, "operator", None), StateOperator):
            raise InvalidValueError(
                "the prior's Gaussian Tweedie covariance exists only for a prior in whitened "
                "coordinates; use the Jacobian (MMPS's default) for this prior"
            )
        self.denoiser = denoiser
        self.likelihood = likelihood
        self.sigma_data = float(sigma_data)
        # ``space``: one already built for this operator and these errors (the
        # batches of a window with fixed states share it; only their y differ)
        self.space = space or observation_space(likelihood.operator, likelihood.sigma)

    @property
    def rows(self) -> Tensor | None:
        """``A`` ``(M, N)`` when kept as a matrix."""
        return self.space.rows

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        with torch.no_grad():
            x_hat = self.denoiser(x, sigma)
            s2 = sigma.to(x_hat.dtype) ** 2
            c = s2 * self.sigma_data**2 / (s2 + self.sigma_data**2)  # (B,)
            innovation = self.likelihood.y.to(x_hat.dtype) - self.space.apply(x_hat)
            weights = self.space.solve(innovation, c)  # (Sigma_y + c A A^T)^-1 (y - A x_hat)
        step = self.space.adjoint(weights)
        factor = c.reshape(-1, *([1] * (x.ndim - 1)))
        return (x_hat + factor * step).detach()
