"""Trajectory priors: K hourly states as one field, observations at their own times, fixed states.

The closed forms: a linear AR(1) model, ``x_{k+1} = phi x_k + sqrt(1 - phi^2) e``,
whose trajectories a Gaussian prior in causal whitened coordinates is fitted
to. With a network that outputs 0 the prior is that Gaussian, so

* the smoother (a whole window, observations at 0.5 h, 1 h and 2 h) is the
  joint Gaussian posterior of the trajectory, and
* the filter (the first state fixed to a previous analysis, observations
  after it) is the Kalman filter's analysis: forecast step ``x_1 | x_0``, then
  the update,

both computed here by dense linear algebra in ``x = mu + J z`` that knows
nothing of the causal square root, the fixed components or the time axis of
the operator.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ar1_trajectories import (
    GRID,
    PHI,
    START,
    STATES,
    ZeroNetwork,
    gaussian_trajectory_prior,
)
from ar1_trajectories import ar1_trajectories as _ar1_trajectories
from ar1_trajectories import compare as _compare
from ar1_trajectories import dense_posterior as _dense_posterior
from ar1_trajectories import jacobian as _jacobian
from ar1_trajectories import observations as _observations
from ar1_trajectories import points as _points
from genda.assimilation.conditioning import (
    ConditionedGuidance,
    FixedComponents,
    conditioned_denoiser,
    fixed_states,
    leading_mask,
)
from genda.assimilation.guidance import GaussianLikelihood
from genda.assimilation.posterior import likelihood_for
from genda.assimilation.start_update import StartUpdate, update_start
from genda.errors import InvalidValueError
from genda.grid import Grid, GridMismatchError, lookup_variable
from genda.models.checkpoint import LoadedPrior
from genda.models.diffusion import EDMDenoiser
from genda.models.padding import pole_signs
from genda.models.sampling import sample
from genda.models.strategies import get_strategy
from genda.models.whitening import SpectralWhitening
from genda.normalization import Normalization
from genda.observations.operators import ObservationOperator
from genda.trajectory import (
    split_states,
    stack_states,
    state_grid,
    state_offsets,
    trajectory_grid,
    trajectory_normalization,
    trajectory_states,
)

MEMBERS = 512
JACOBIAN_MEMBERS = 256  # MMPS's Jacobian costs a backward pass per step: half the members


@pytest.fixture(scope="module")
def prior() -> LoadedPrior:
    """The Gaussian trajectory prior of 800 AR(1) trajectories (float64, zero network)."""
    return gaussian_trajectory_prior()


# ----------------------------------------------------------------------------- names
def test_a_trajectory_grid_names_its_hourly_states_in_time_order() -> None:
    grid = trajectory_grid(GRID, 2)
    assert grid.variables == ("u+0h", "v+0h", "T+0h", "u+1h", "v+1h", "T+1h")
    assert trajectory_states(grid) == 2 and trajectory_states(GRID) == 1
    assert state_grid(grid) == GRID and state_grid(GRID) == GRID
    assert lookup_variable("T+1h").units == "K" and "1 h after" in lookup_variable("T+1h").long_name
    assert pole_signs(grid.variables) == [-1.0, -1.0, 1.0] * 2
    x = torch.randn(2, 2, 3, 2, 8, 16)
    assert torch.equal(split_states(stack_states(x), 2), x)
    with pytest.raises(GridMismatchError, match="time order"):
        trajectory_states(Grid.gaussian(8, 16, 2, variables=("u+1h", "u+0h")))
    with pytest.raises(GridMismatchError, match="mixes"):
        trajectory_states(Grid.gaussian(8, 16, 2, variables=("u+0h", "T")))
    with pytest.raises(InvalidValueError, match="already"):
        trajectory_grid(grid, 2)
    with pytest.raises(InvalidValueError, match="1 to"):
        trajectory_grid(GRID, 0)


def test_observations_act_at_their_own_time_linearly_between_states() -> None:
    grid = trajectory_grid(GRID, STATES)
    obs = _observations([0.0, 0.25, 2.0])
    operator = ObservationOperator.from_table(obs, grid, START)
    single = ObservationOperator.from_table(obs, GRID)
    states = torch.randn(1, STATES, 3, 2, 8, 16, dtype=torch.float64)
    seen = operator(stack_states(states))[0].reshape(3, 4)
    at = [single(states[:, k])[0].reshape(3, 4) for k in range(STATES)]
    torch.testing.assert_close(seen[0], at[0][0])
    torch.testing.assert_close(seen[1], 0.75 * at[0][1] + 0.25 * at[1][1])
    torch.testing.assert_close(seen[2], at[2][2])
    # the adjoint is the transpose of the time-interpolating rows
    r = torch.randn(1, operator.n_obs, dtype=torch.float64)
    lhs = (operator.linear(stack_states(states)) * r).sum()
    rhs = (stack_states(states) * operator.adjoint(r)).sum()
    torch.testing.assert_close(lhs, rhs)


def test_observations_outside_the_window_or_without_its_start_are_refused() -> None:
    grid = trajectory_grid(GRID, STATES)
    with pytest.raises(InvalidValueError, match=r"outside the window 2000-01-01T00:00:00 \.\."):
        ObservationOperator.from_table(_observations([2.5]), grid, START)
    with pytest.raises(InvalidValueError, match="outside the window"):
        ObservationOperator.from_table(_observations([-0.5]), grid, START)
    with pytest.raises(InvalidValueError, match="time of its first state"):
        ObservationOperator.from_table(_observations([1.0]), grid)
    np.testing.assert_allclose(
        state_offsets(np.array([START + np.timedelta64(90, "m")]), START, STATES), [1.5]
    )


# ----------------------------------------------------------------------------- whitening
def test_the_causal_square_root_makes_the_first_states_of_their_own_z(prior) -> None:
    whitening = prior.denoiser.coordinates
    fields = stack_states(_ar1_trajectories(4, 50)).double()
    later = fields.clone()
    later[:, 3:] += torch.randn_like(later[:, 3:])
    change = (whitening.encode(later) - whitening.encode(fields)).abs().amax(dim=(0, 2, 3))
    assert float(change[:3].max()) < 1e-9  # the first state's z does not see later states
    assert float(change[3:].min()) > 0.1
    # exact round trips on what the transform represents, and white z on the training law
    z = torch.randn(3, *prior.state_shape, dtype=torch.float64)
    x = whitening.decode(z)
    torch.testing.assert_close(whitening.decode(whitening.encode(x)), x)
    z = whitening.encode(stack_states(_ar1_trajectories(400, 70)).double())
    assert abs(float(z.var(0).mean()) - 1.0) < 0.1


def test_the_fitted_regression_of_the_second_state_on_the_first_is_phi(prior) -> None:
    """With ``z`` of the later states at 0, the decoded state 1 is ``E[x_1 | x_0] = phi x_0``."""
    x0 = stack_states(_ar1_trajectories(16, 90)).double()[:, :3]
    fixed = fixed_states(prior, x0, range(16))
    fields = prior.denoiser.decode(fixed.values.double())
    regression = float((fields[:, 3:6] * x0).sum() / (x0 * x0).sum())
    assert abs(regression - PHI) < 0.05
    # the fixed state is the first state's part that the transform represents
    padded = torch.cat([x0, torch.zeros_like(x0), torch.zeros_like(x0)], dim=1)
    whitening = prior.denoiser.coordinates
    represented = whitening.decode(whitening.encode(padded))[:, :3]
    torch.testing.assert_close(fields[:, :3], represented, atol=1e-5, rtol=0)


def test_fixed_states_are_exact_when_few_trajectories_leave_the_covariance_rank_deficient() -> None:
    """10 trajectories for 18 channels a mode: most eigen-directions are dropped, yet a first
    state the prior can make is fixed exactly, whatever the later states hold."""
    grid = trajectory_grid(GRID, STATES)
    normalization = trajectory_normalization(
        Normalization(GRID.variables, np.zeros((3, 2)), np.ones((3, 2))), STATES
    )
    whitening = SpectralWhitening(grid, normalization, coupling="causal").double()
    whitening.fit([stack_states(_ar1_trajectories(10, 1))])
    assert int((whitening.eigenvalues == 0).sum()) > whitening.eigenvalues.numel() // 2
    few = LoadedPrior(
        EDMDenoiser(ZeroNetwork(), coordinates=whitening).double(),
        get_strategy("joint3d"),
        grid,
        normalization,
        {},
        Path("."),
    )
    made = whitening.decode(torch.randn(4, *few.state_shape, dtype=torch.float64))
    fixed = fixed_states(few, made[:, :3], range(4))
    torch.testing.assert_close(
        whitening.decode(fixed.values.double())[:, :3], made[:, :3], atol=1e-4, rtol=0
    )
    with pytest.raises(InvalidValueError, match="causal square root"):
        SpectralWhitening(grid, coupling="columns").encode_leading(made, 1)


# ----------------------------------------------------------------------------- closed forms
@pytest.mark.parametrize("covariance", ["prior", pytest.param("jacobian", marks=pytest.mark.slow)])
def test_the_smoother_is_the_joint_gaussian_posterior_of_the_trajectory(prior, covariance) -> None:
    obs = _observations([0.5, 1.0, 2.0])
    truth = stack_states(_ar1_trajectories(1, 200)).double()
    likelihood = likelihood_for(prior, obs, time=START).to("cpu", torch.float64)
    y = likelihood.operator.fields(truth)[0] + 0.3 * torch.randn(
        len(obs), generator=torch.Generator().manual_seed(7), dtype=torch.float64
    )
    likelihood = GaussianLikelihood(likelihood.operator, y, likelihood.sigma)
    from genda.assimilation.guidance import guided_denoiser

    guided = guided_denoiser(prior.denoiser, likelihood, "mmps", covariance=covariance)
    count = MEMBERS if covariance == "prior" else JACOBIAN_MEMBERS
    z = sample(
        guided, prior.state_shape, range(count), 3, steps=32, sigma_max=20.0, dtype=torch.float64
    )
    members = prior.denoiser.decode(z)
    jacobian = _jacobian(prior)
    rows = likelihood.operator.fields.adjoint(torch.eye(len(obs), dtype=torch.float64))
    mean, cov = _dense_posterior(jacobian, rows.reshape(len(obs), -1), y, likelihood.sigma)
    for state in range(STATES):
        _compare(members, mean, cov, _points(prior, state))


@pytest.mark.parametrize("covariance", ["prior", pytest.param("jacobian", marks=pytest.mark.slow)])
def test_the_filter_with_the_first_state_fixed_is_the_kalman_analysis(prior, covariance) -> None:
    """State 0 fixed to a previous analysis, observations at 1 h and 1.5 h: forecast, then update."""
    previous = stack_states(_ar1_trajectories(1, 300)).double()
    truth = stack_states(_ar1_trajectories(1, 300)).double()  # the same first state
    obs = _observations([1.0, 1.5])
    likelihood = likelihood_for(prior, obs, time=START).to("cpu", torch.float64)
    y = likelihood.operator.fields(truth)[0] + 0.3 * torch.randn(
        len(obs), generator=torch.Generator().manual_seed(8), dtype=torch.float64
    )
    likelihood = GaussianLikelihood(likelihood.operator, y, likelihood.sigma)
    count = MEMBERS if covariance == "prior" else JACOBIAN_MEMBERS
    members = range(count)
    fixed = fixed_states(prior, previous[:, :3].expand(count, -1, -1, -1, -1), members)
    denoiser = conditioned_denoiser(prior, likelihood, fixed, members, covariance=covariance)
    z = sample(
        denoiser, prior.state_shape, members, 4, steps=32, sigma_max=20.0, dtype=torch.float64
    )
    fields = prior.denoiser.decode(z)

    # dense Kalman: the first state observed exactly (1e-4), the others through H
    jacobian = _jacobian(prior)
    per_state = jacobian.shape[0] // STATES
    first = torch.eye(jacobian.shape[0], dtype=torch.float64)[:per_state]
    fixed_x = prior.denoiser.decode(fixed.values[:1].double()).reshape(-1)[:per_state]
    rows = likelihood.operator.fields.adjoint(torch.eye(len(obs), dtype=torch.float64))
    all_rows = torch.cat([first, rows.reshape(len(obs), -1)])
    values = torch.cat([fixed_x, y])
    sigma = torch.cat([torch.full((per_state,), 1e-4, dtype=torch.float64), likelihood.sigma])
    mean, cov = _dense_posterior(jacobian, all_rows, values, sigma)
    torch.testing.assert_close(fields[:, :3].reshape(count, -1), fixed_x.expand(count, -1))
    for state in (1, 2):
        _compare(fields, mean, cov, _points(prior, state))
    # the forecast alone (no observations) is the AR(1) forecast step's spread
    forecast = conditioned_denoiser(prior, None, fixed, members)
    z = sample(
        forecast, prior.state_shape, members, 5, steps=32, sigma_max=20.0, dtype=torch.float64
    )
    spread = prior.denoiser.decode(z)[:, 3:6].std(0).mean()
    assert abs(float(spread) - (1 - PHI**2) ** 0.5) < 0.1


def test_each_member_of_a_batch_is_conditioned_on_its_own_fixed_state(prior) -> None:
    """Members 0..5 fixed to two different previous states in one batch come out as they do
    in a batch where every member has its own: rows, shifted observations and noise line up."""
    previous = stack_states(_ar1_trajectories(2, 400)).double()[:, :3]
    obs = _observations([1.0, 2.0])
    likelihood = likelihood_for(prior, obs, time=START).to("cpu", torch.float64)
    members = list(range(6))
    mixed = previous[[m % 2 for m in members]]
    results = {}
    for label, fields in (
        ("mixed", mixed),
        ("first", previous[[0] * 6]),
        ("second", previous[[1] * 6]),
    ):
        fixed = fixed_states(prior, fields, members)
        denoiser = conditioned_denoiser(prior, likelihood, fixed, members)
        z = sample(
            denoiser, prior.state_shape, members, 9, steps=8, sigma_max=20.0, dtype=torch.float64
        )
        results[label] = prior.denoiser.decode(z)
    torch.testing.assert_close(results["mixed"][0::2], results["first"][0::2], atol=1e-4, rtol=0)
    torch.testing.assert_close(results["mixed"][1::2], results["second"][1::2], atol=1e-4, rtol=0)
    assert float((results["first"][1::2] - results["second"][1::2]).abs().max()) > 0.1


def test_fixed_states_of_the_wrong_shape_prior_or_members_are_refused(prior) -> None:
    x0 = torch.zeros(2, 3, 2, 8, 16, dtype=torch.float64)
    with pytest.raises(InvalidValueError, match=r"shape \(N, j \* 3"):
        fixed_states(prior, torch.zeros(2, 9, 2, 8, 16), range(2))  # all states: nothing free
    with pytest.raises(InvalidValueError, match="2 fixed states for 3 members"):
        fixed_states(prior, x0, range(3))
    with pytest.raises(InvalidValueError, match="NaN"):
        fixed_states(prior, x0 * float("nan"), range(2))
    fixed = fixed_states(prior, x0, [4, 5])
    with pytest.raises(InvalidValueError, match=r"member\(s\) \[6\]"):
        fixed.rows([5, 6])
    wrapper = FixedComponents(prior.denoiser, fixed.mask, fixed.rows([4, 5]))
    with pytest.raises(InvalidValueError, match="a batch of 3"):
        wrapper(torch.zeros(3, *prior.state_shape, dtype=torch.float64), torch.ones(3))


def _exact_ensemble(count: int, rank: int, seed: int) -> torch.Tensor:
    """``(count, rank)`` centred draws whose sample covariance is exactly ``I``."""
    draws = torch.randn(count, rank, generator=torch.Generator().manual_seed(seed))
    q, _ = torch.linalg.qr((draws - draws.mean(0)).double())
    return q * (count - 1) ** 0.5


def test_a_filter_that_updates_its_starts_is_the_kalman_filter_of_an_uncertain_start(
    prior,
) -> None:
    """The previous analysis is uncertain: ``x_0 = c + B xi``, ``xi ~ N(0, I_3)``, held by
    512 members whose mean and covariance are exactly ``c`` and ``B B^T``. The exact filter
    is the joint Gaussian posterior of the window with that start. With the start update
    (no localisation, no RTPS) the members' start and later states are that posterior's,
    within sampling error; with the starts fixed as they are, the window's observations
    move the later states' mean less than the Kalman filter does (its gain ignores the
    start's uncertainty)."""
    count, rank = MEMBERS, 3
    mask = leading_mask(prior)
    per_state = int(np.prod(prior.grid.shape)) // STATES
    generator = torch.Generator().manual_seed(31)
    centre = 0.5 * torch.randn(per_state, generator=generator, dtype=torch.float64)
    directions = 0.7 * torch.randn(rank, per_state, generator=generator, dtype=torch.float64)
    starts = centre + _exact_ensemble(count, rank, 32) @ directions
    starts = starts.reshape(count, 3, *prior.grid.shape[1:])

    obs = _observations([0.5, 1.0, 2.0])
    likelihood = likelihood_for(prior, obs, time=START).to("cpu", torch.float64)
    truth = stack_states(_ar1_trajectories(1, 500)).double()
    y = likelihood.operator.fields(truth)[0] + 0.3 * torch.randn(
        len(obs), generator=torch.Generator().manual_seed(9), dtype=torch.float64
    )
    likelihood = GaussianLikelihood(likelihood.operator, y, likelihood.sigma)
    guidance = ConditionedGuidance(prior, likelihood, mask, "mmps", covariance="prior")
    exact = StartUpdate(math.inf, math.inf, rtps=0.0)
    updated = update_start(guidance, starts.numpy(), range(count), obs, exact, seed=5)
    fields = {}
    for label, fixed in (("updated", updated), ("kept", fixed_states(prior, starts, range(count)))):
        z = sample(
            guidance.for_batch(fixed, range(count)),
            prior.state_shape,
            range(count),
            6,
            steps=32,
            sigma_max=20.0,
            dtype=torch.float64,
        )
        fields[label] = prior.denoiser.decode(z)

    # dense: the start's part of x = mu + J z, through the whitening, is c + B xi; the
    # window is x = mu_w + [J_0 B', J_free] [xi; z_free] with [xi; z_free] ~ N(0, I)
    jacobian = _jacobian(prior)
    whitening = prior.denoiser.coordinates
    padded = torch.zeros(rank + 1, *prior.grid.shape, dtype=torch.float64)
    padded[0, :3] = centre.reshape(3, *prior.grid.shape[1:])
    padded[1:, :3] = (directions + centre).reshape(rank, 3, *prior.grid.shape[1:])
    z_start = whitening.encode(padded).reshape(rank + 1, -1)
    flat_mask = mask.reshape(-1)
    z_centre = torch.where(flat_mask, z_start[0], 0.0)
    z_directions = torch.where(flat_mask, z_start[1:] - z_start[:1], 0.0)
    reduced = torch.cat([jacobian @ z_directions.T, jacobian[:, ~flat_mask]], dim=1)
    prior_mean = prior.denoiser.decode(z_centre.reshape(1, *prior.state_shape))[0].reshape(-1)
    rows = likelihood.operator.fields.adjoint(torch.eye(len(obs), dtype=torch.float64))
    rows = rows.reshape(len(obs), -1)
    mean, cov = _dense_posterior(reduced, rows, y - rows @ prior_mean, likelihood.sigma)
    mean = mean + prior_mean
    for state in (0, 1, 2):
        _compare(fields["updated"], mean, cov, _points(prior, state))

    late = _points(prior, 2)
    kalman_shift = (mean[late] - prior_mean[late]).norm()
    kept_shift = (fields["kept"].reshape(count, -1)[:, late].mean(0) - prior_mean[late]).norm()
    assert float(kept_shift) < 0.9 * float(kalman_shift), (kept_shift, kalman_shift)


def test_a_start_update_is_refused_without_two_members_or_observations(prior) -> None:
    mask = leading_mask(prior)
    obs = _observations([1.0])
    likelihood = likelihood_for(prior, obs, time=START).to("cpu", torch.float64)
    guidance = ConditionedGuidance(prior, likelihood, mask, "mmps", covariance="prior")
    one = np.zeros((1, 3, *prior.grid.shape[1:]))
    with pytest.raises(InvalidValueError, match="at least 2 members"):
        update_start(guidance, one, [0], obs, StartUpdate(), seed=0)
    forecast = ConditionedGuidance(prior, None, mask)
    with pytest.raises(InvalidValueError, match="nothing to update"):
        update_start(forecast, np.zeros((2, *one.shape[1:])), [0, 1], obs, StartUpdate(), seed=0)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(InvalidValueError, match=r"must lie in \[0, 1\]"):
            StartUpdate(rtps=bad)
    with pytest.raises(InvalidValueError, match="horizontal_km must be a number > 0"):
        StartUpdate(horizontal_km=0.0)


@pytest.mark.parametrize("covariance", ["prior", "jacobian"])
def test_the_error_covariance_of_a_window_with_fixed_starts_is_sigma_plus_a_free_a_free_t(
    prior, covariance
) -> None:
    """``Sigma_y + A_free A_free^T`` from the observation space (the Gaussian Tweedie
    template's, or one built for MMPS's Jacobian) against the dense rows of ``A``."""
    mask = leading_mask(prior)
    obs = _observations([0.5, 1.0, 2.0])
    likelihood = likelihood_for(prior, obs, time=START).to("cpu", torch.float64)
    guidance = ConditionedGuidance(prior, likelihood, mask, "mmps", covariance=covariance)
    jacobian = _jacobian(prior)
    rows = likelihood.operator.fields.adjoint(torch.eye(len(obs), dtype=torch.float64))
    a_free = rows.reshape(len(obs), -1) @ jacobian[:, ~mask.reshape(-1)]
    expected = torch.diag(likelihood.sigma**2) + a_free @ a_free.T
    torch.testing.assert_close(guidance.error_covariance(), expected, rtol=1e-8, atol=1e-10)
