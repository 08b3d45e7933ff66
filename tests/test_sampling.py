"""Ensemble samplers and per-member seeding (genda.models.sampling).

The Gaussian data distribution N(mu, diag(s^2)) has the exact denoiser
``D(x, sigma) = mu + s^2 / (s^2 + sigma^2) (x - mu)``, and its probability-flow
ODE ``dx/dsigma = (x - D) / sigma`` keeps ``(x - mu) / sqrt(s^2 + sigma^2)``
constant. A member started at ``x_T = T z`` (``T = sigma_max``) therefore ends
exactly at ``mu + s (T z - mu) / sqrt(s^2 + T^2)``: the deterministic samplers
are checked member by member against that map (discretisation error and its
order), the ensembles statistically (mean and standard deviation).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from genda.models import (
    Denoiser,
    EDMDenoiser,
    EDMPreconditioning,
    karras_sigmas,
    member_generator,
    member_noise,
    member_seed,
    sample,
)
from genda.threads import cpu_threads

T = 80.0
METHODS = ("heun", "euler", "stochastic", "exponential")


class GaussianDenoiser:
    """Exact denoiser of N(mu, diag(s^2)); ``mu``, ``s`` broadcast against one member."""

    def __init__(self, mu: Tensor, s: Tensor) -> None:
        self.mu, self.s = mu, s
        self.calls = 0

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        self.calls += 1
        mu, s = self.mu.to(x), self.s.to(x)
        sig = sigma.reshape(-1, *([1] * (x.ndim - 1)))
        return mu + s**2 / (s**2 + sig**2) * (x - mu)


def flow_map(z: Tensor, mu: Tensor, s: Tensor) -> Tensor:
    """Exact end point of the probability-flow ODE from ``x_T = T z``."""
    return mu + s * (T * z - mu) / torch.sqrt(s**2 + T**2)


def initial_normals(members: range | list[int], window_seed: int, shape: tuple[int, ...]) -> Tensor:
    return member_noise([member_generator(window_seed, m) for m in members], shape)


# two parameter sets (rows) x 16 independent copies (columns) per member
MU = torch.tensor([1.0, -0.5]).reshape(2, 1)
S = torch.tensor([0.5, 2.0]).reshape(2, 1)
SHAPE = (2, 16)


# ---------------------------------------------------------------------- seeding
def test_member_seed_is_stable_and_distinct() -> None:
    # pinned: a change here silently changes every archived ensemble
    assert member_seed(0, 0) == 4496070761369693216
    assert member_seed(2024, 7) == 6229024533206149874
    seeds = {member_seed(w, m) for w in range(20) for m in range(50)}
    assert len(seeds) == 1000
    assert member_seed(1, 23) != member_seed(12, 3)
    assert member_seed(-5, 0) != member_seed(5, 0)
    assert 0 <= member_seed(2**70, 3) < 2**64
    a = torch.randn(5, generator=member_generator(3, 4))
    b = torch.randn(5, generator=member_generator(3, 4))
    assert torch.equal(a, b)


def test_member_seed_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        member_seed(0, -1)
    with pytest.raises(TypeError, match="member"):
        member_seed(0, True)
    with pytest.raises(TypeError, match="window_seed"):
        member_seed(1.5, 0)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- accuracy
@pytest.mark.parametrize(("method", "order"), [("heun", 2), ("euler", 1)])
def test_deterministic_samplers_follow_the_exact_flow(method: str, order: int) -> None:
    """Member by member against the exact flow map (float64): the error at 32 steps is
    below 2 % (Heun) / 10 % (Euler) of the member's spread ``|x - mu|``, and halving the
    step count multiplies it by about 2^order (measured: 4.5 and 2.0)."""
    members = range(40)
    mu, s = MU.double(), S.double()
    exact = flow_map(initial_normals(members, 11, SHAPE).double(), mu, s)
    errors = {}
    for steps in (16, 32):
        x = sample(GaussianDenoiser(mu, s), SHAPE, members, 11, steps, method, dtype=torch.float64)
        errors[steps] = ((x - exact) / (exact - mu)).abs().max().item()
    assert errors[32] < (0.02 if method == "heun" else 0.10)
    ratio = errors[16] / errors[32]
    assert 0.75 * 2**order < ratio < 1.5 * 2**order


def test_exponential_sampler_follows_unit_variance_gaussians_whatever_the_step_count() -> None:
    """For ``N(mu, I)`` (``Q = mu``) the exponential steps are the exact flow, which keeps
    ``(x - mu) / sqrt(1 + sigma^2)``; below ``EXPONENTIAL_FLOOR`` Heun's short steps add
    little. Member by member against the exact flow map: within 0.3 % at 16 steps and 0.1 %
    at 32, where Heun alone is off by over 4 % at 16 (13 % too much variance)."""
    members = range(40)
    mu, one = MU.double(), torch.ones(2, 1, dtype=torch.float64)
    exact = flow_map(initial_normals(members, 5, SHAPE).double(), mu, one)

    def error(steps: int, method: str) -> float:
        x = sample(GaussianDenoiser(mu, one), SHAPE, members, 5, steps, method, dtype=torch.float64)
        return ((x - exact) / (exact - mu)).abs().max().item()

    assert error(16, "exponential") < 3e-3 and error(32, "exponential") < 1e-3
    assert error(16, "heun") > 0.04
    # at 8 steps the one long step below EXPONENTIAL_FLOOR is Heun's: still 3 times closer
    assert error(8, "exponential") < error(8, "heun") / 3


def test_exponential_sampler_errs_less_than_heun_where_observations_shrink_the_variance() -> None:
    """Directions of standard deviation 0.5, 0.3, 0.1 and 0.03 (a posterior's observed ones)
    from ``sigma = 80``: the members' variance over the exact flow's is within 12 % at 16
    steps and 3 % at 32, closer to 1 than Heun's (+15 % to +38 % at 16 steps)."""
    members = range(400)
    stds = torch.tensor([0.5, 0.3, 0.1, 0.03], dtype=torch.float64).reshape(4, 1)
    zero = torch.zeros_like(stds)
    exact = flow_map(initial_normals(members, 3, (4, 16)).double(), zero, stds)
    for steps, bound in ((16, 0.12), (32, 0.03)):
        ratio = {}
        for method in ("heun", "exponential"):
            x = sample(
                GaussianDenoiser(zero, stds),
                (4, 16),
                members,
                3,
                steps,
                method,
                dtype=torch.float64,
            )
            ratio[method] = x.square().mean(dim=(0, 2)) / exact.square().mean(dim=(0, 2))
        assert ((ratio["exponential"] - 1).abs() < bound).all(), ratio
        assert ((ratio["exponential"] - 1).abs() < (ratio["heun"] - 1).abs()).all(), ratio


def test_exponential_sampler_does_not_amplify_the_denoisers_errors_at_small_noise() -> None:
    """A denoiser with relative errors of 1e-6 (float32 round-off, batch-dependent kernels)
    moves members by no more than it moves Heun's, also at 4 steps where the last step
    before 0 is long."""
    members = range(40)
    mu, one = MU.double(), torch.ones(2, 1, dtype=torch.float64)
    clean = GaussianDenoiser(mu, one)

    def noisy(x: Tensor, sigma: Tensor) -> Tensor:
        g = torch.Generator().manual_seed(int(1e6 * float(sigma[0])))
        wobble = 1e-6 * torch.randn(x.shape, generator=g, dtype=x.dtype)
        return clean(x, sigma) * (1 + wobble)

    for steps in (4, 16):
        moved = {
            method: (
                sample(noisy, SHAPE, members, 5, steps, method, dtype=torch.float64)
                - sample(clean, SHAPE, members, 5, steps, method, dtype=torch.float64)
            )
            .abs()
            .max()
            .item()
            for method in ("heun", "exponential")
        }
        assert moved["exponential"] < 2 * moved["heun"] + 1e-9, moved


def test_exponential_sampler_is_second_order_elsewhere() -> None:
    """Other Gaussians (std 0.5 and 2, means 1 and -0.5): error below Heun's at 32 steps and
    falling by about 4 per halving of the step, member by member against the exact flow."""
    members = range(40)
    mu, s = MU.double(), S.double()
    exact = flow_map(initial_normals(members, 11, SHAPE).double(), mu, s)
    errors = {}
    for method in ("heun", "exponential"):
        for steps in (16, 32):
            x = sample(
                GaussianDenoiser(mu, s), SHAPE, members, 11, steps, method, dtype=torch.float64
            )
            errors[method, steps] = ((x - exact) / (exact - mu)).abs().max().item()
    assert errors["exponential", 32] < errors["heun", 32]
    assert 3.0 < errors["exponential", 16] / errors["exponential", 32] < 6.0


def test_heun_counts_denoiser_calls() -> None:
    denoiser = GaussianDenoiser(MU, S)
    sample(denoiser, SHAPE, [0, 1], 0, steps=10, method="heun")
    assert denoiser.calls == 2 * 10 - 1  # EDM Algorithm 1: the last step is Euler
    denoiser.calls = 0
    sample(denoiser, SHAPE, [0, 1], 0, steps=10, method="euler")
    assert denoiser.calls == 10
    denoiser.calls = 0
    sample(denoiser, SHAPE, [0, 1], 0, steps=10, method="exponential")
    assert denoiser.calls == 2 * 10 - 1


def ensemble_statistics(x: Tensor) -> tuple[Tensor, Tensor, int]:
    """Mean and std per parameter set (row) over members and copies, and the sample size."""
    rows = x.transpose(0, 1).reshape(x.shape[1], -1).double()
    return rows.mean(dim=1), rows.std(dim=1), rows.shape[1]


@pytest.mark.parametrize("method", ["heun", "stochastic"])
def test_ensemble_reproduces_the_gaussian(method: str) -> None:
    """2000 members x 16 copies, 32 steps, float32.

    Targets: the exact flow from ``x_T ~ N(0, T^2)`` has mean
    ``mu (1 - s / sqrt(s^2 + T^2))`` and std ``s T / sqrt(s^2 + T^2)``; the
    initial-noise offset ``|mu| s / T`` (<= 0.0125) is allowed for, since the
    churned sampler partly forgets it. Tolerances: 5 standard errors
    (``s / sqrt(n)`` for the mean, ``s / sqrt(2 n)`` for the std, n = 32000: 0.4 %
    relative) plus the discretisation bias of the std at 32 steps: Heun <= 2 %
    (checked member by member above; measured 1.5 %), stochastic (churn 5)
    <= 4 % (measured 2.8 %, 0.5 % at 64 steps: churned steps overdisperse).
    """
    members = range(2000)
    with cpu_threads(1):
        x = sample(GaussianDenoiser(MU, S), SHAPE, members, window_seed=2, steps=32, method=method)
    assert x.shape == (2000, *SHAPE) and x.dtype == torch.float32
    mean, std, n = ensemble_statistics(x)
    mu, s = MU.flatten().double(), S.flatten().double()
    target_mean = mu * (1 - s / torch.sqrt(s**2 + T**2))
    target_std = s * T / torch.sqrt(s**2 + T**2)
    mean_tol = 5 * s / math.sqrt(n) + (mu.abs() * s / T if method == "stochastic" else 0)
    assert ((mean - target_mean).abs() < mean_tol).all(), (mean, target_mean, mean_tol)
    bias = 0.02 if method == "heun" else 0.04
    std_tol = target_std * (5 / math.sqrt(2 * n) + bias)
    assert ((std - target_std).abs() < std_tol).all(), (std, target_std, std_tol)


def test_stochastic_without_churn_is_heun() -> None:
    denoiser = GaussianDenoiser(MU, S)
    heun = sample(denoiser, SHAPE, [0, 5], 9, steps=12, method="heun")
    no_churn = sample(denoiser, SHAPE, [0, 5], 9, steps=12, method="stochastic", churn=0.0)
    outside = sample(denoiser, SHAPE, [0, 5], 9, 12, "stochastic", churn=5.0, s_tmin=100.0)
    churned = sample(denoiser, SHAPE, [0, 5], 9, steps=12, method="stochastic", churn=5.0)
    assert torch.equal(heun, no_churn)
    assert torch.equal(heun, outside)
    assert not torch.equal(heun, churned)


def test_edm_denoiser_through_the_sampler() -> None:
    """The EDM-preconditioned form of the exact denoiser samples what the exact one does."""

    class ExactBackbone(nn.Module):
        def forward(self, x_in: Tensor, c_noise: Tensor, cond: Tensor | None = None) -> Tensor:
            p = EDMPreconditioning(1.0)
            sigma = torch.exp(4 * c_noise).reshape(-1, 1, 1)
            x = x_in / p.c_in(sigma)
            exact = GaussianDenoiser(MU, S)(x, sigma.flatten())
            return (exact - p.c_skip(sigma) * x) / p.c_out(sigma)

    denoiser = EDMDenoiser(ExactBackbone())
    assert isinstance(denoiser, Denoiser)
    a = sample(denoiser, SHAPE, range(8), 4, steps=16, dtype=torch.float64)
    b = sample(GaussianDenoiser(MU, S), SHAPE, range(8), 4, steps=16, dtype=torch.float64)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------- reproducibility
@pytest.mark.parametrize("method", METHODS)
def test_members_are_bit_identical_whatever_the_batch(method: str) -> None:
    # an odd member size, so that members sit at different SIMD alignments in each batch
    mu, s = torch.linspace(-1, 1, 15).reshape(3, 5), torch.linspace(0.3, 2, 15).reshape(3, 5)
    denoiser = GaussianDenoiser(mu, s)
    kwargs = {"steps": 12, "method": method, "churn": 10.0}
    pair = sample(denoiser, (3, 5), [3, 7], 42, **kwargs)
    full = sample(denoiser, (3, 5), range(10), 42, **kwargs)
    alone = torch.cat([sample(denoiser, (3, 5), [m], 42, **kwargs) for m in (3, 7)])
    reversed_pair = sample(denoiser, (3, 5), [7, 3], 42, **kwargs)
    assert torch.equal(pair, full[[3, 7]])
    assert torch.equal(pair, alone)
    assert torch.equal(pair, reversed_pair.flip(0))
    other_window = sample(denoiser, (3, 5), [3, 7], 43, **kwargs)
    assert not torch.isclose(pair, other_window).any()
    assert not torch.isclose(full[3], full[7]).any()
    if method == "stochastic":  # the churn noise is per member too, not only the start
        no_churn = sample(denoiser, (3, 5), [3, 7], 42, **{**kwargs, "churn": 0.0})
        assert not torch.equal(pair, no_churn)


def test_initial_noise_comes_from_the_member_generator() -> None:
    """A denoiser returning 0 makes one Euler step from sigma T to T/2 halve the state:
    x = x_T + (T/2 - T) x_T / T = T z / 2, z the member's first draw."""

    def zero(x: Tensor, sigma: Tensor) -> Tensor:
        return torch.zeros_like(x)

    x = sample(zero, (4,), [2, 9], 5, method="euler", sigmas=[T, T / 2], dtype=torch.float64)
    z = initial_normals([2, 9], 5, (4,)).double()
    torch.testing.assert_close(x, T / 2 * z, rtol=1e-14, atol=0)


# ---------------------------------------------------------------------- azula cross-check
@pytest.mark.parametrize("method", ["heun", "euler"])
def test_matches_azula_samplers(method: str) -> None:
    """azula's HeunSampler / EulerSampler on a schedule whose uniform time grid is the
    Karras grid (no final zero: full steps throughout) agree with ours to round-off."""
    azula_denoise = pytest.importorskip("azula.denoise")
    azula_noise = pytest.importorskip("azula.noise")
    azula_sample = pytest.importorskip("azula.sample")
    lo, hi, rho = 0.002 ** (1 / 7), T ** (1 / 7), 7.0

    class KarrasSchedule(azula_noise.Schedule):
        def __call__(self, t: Tensor) -> tuple[Tensor, Tensor]:
            return torch.ones_like(t), (lo + t * (hi - lo)) ** rho

    mu, s = MU.double(), S.double()
    gaussian = GaussianDenoiser(mu, s)

    class Wrapped(azula_denoise.Denoiser):
        schedule = KarrasSchedule()

        def forward(self, x_t: Tensor, t: Tensor, **kwargs: object) -> object:
            sigma = self.schedule(t)[1].expand(x_t.shape[0])
            return azula_denoise.DiracPosterior(mean=gaussian(x_t, sigma))

    steps, members = 20, range(6)
    sampler_cls = azula_sample.HeunSampler if method == "heun" else azula_sample.EulerSampler
    theirs_sampler = sampler_cls(Wrapped(), steps=steps, silent=True, dtype=torch.float64)
    x_T = T * initial_normals(members, 8, SHAPE).double()
    theirs = theirs_sampler(x_T)
    sigmas = karras_sigmas(steps + 1, append_zero=False)
    ours = sample(gaussian, SHAPE, members, 8, method=method, sigmas=sigmas, dtype=torch.float64)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------- input checks
def test_sample_rejects_bad_input_and_handles_no_members() -> None:
    denoiser = GaussianDenoiser(MU, S)
    with pytest.raises(ValueError, match="unknown sampling method"):
        sample(denoiser, SHAPE, [0], 0, method="rk4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="repeated: \\[3\\]"):
        sample(denoiser, SHAPE, [3, 1, 3], 0)
    with pytest.raises(ValueError, match="non-negative"):
        sample(denoiser, SHAPE, [-1], 0)
    with pytest.raises(ValueError, match="decreasing"):
        sample(denoiser, SHAPE, [0], 0, sigmas=[1.0, 2.0])
    with pytest.raises(ValueError, match="at least 1"):
        sample(denoiser, SHAPE, [0], 0, steps=0)
    empty = sample(denoiser, SHAPE, [], 0)
    assert empty.shape == (0, *SHAPE) and denoiser.calls == 0
