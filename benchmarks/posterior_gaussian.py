"""Guidance methods against the exact posterior of a Gaussian prior (Kalman's).

    python benchmarks/posterior_gaussian.py [--members 1024] [--steps 32]

A Gaussian random field on a 4 x 8 x 3 grid (u, v, T; 2000 km horizontal,
10 km vertical correlation; u-v correlation 0.3) is the prior, with its exact
denoiser; eight observations (point u, v, T, a line-of-sight wind, a profile
point with a 6 km kernel) of one draw, errors 0.3 prior standard deviations.
For each method the posterior ensemble is compared with Kalman's mean and
variance: the mean error (RMS over the field, in prior standard deviations)
and the ratio of ensemble to exact variance, over the field and at the
observations (where the update is largest). Writes
``benchmarks/results/posterior_gaussian-<machine>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from _common import print_table, write_result
from genda.assimilation.gaussian import GaussianFieldPrior, kalman_problem, reference_observations
from genda.assimilation.guidance import GaussianLikelihood, guided_denoiser
from genda.grid import Grid
from genda.models.sampling import sample
from genda.observations.operators import ObservationOperator

GRID = Grid.gaussian(4, 8, 3)
OBSERVATIONS = reference_observations()

METHODS = {
    "mmps": {"iterations": 8},
    "dps": {"zeta": 1.0},
    "sda": {"gamma": 0.01, "corrections": 1},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=32)
    args = parser.parse_args()

    corr = np.array([[1.0, 0.3, 0.0], [0.3, 1.0, 0.0], [0.0, 0.0, 1.0]])
    prior = GaussianFieldPrior.on_grid(GRID, length_km=2000.0, variable_correlation=corr)
    operator = ObservationOperator.from_table(OBSERVATIONS, GRID)
    case = kalman_problem(prior, operator, torch.tensor(OBSERVATIONS["sigma"].to_numpy()), seed=1)
    likelihood = GaussianLikelihood(case.operator, case.y, case.sigma_y)
    h = case.operator.adjoint(torch.eye(case.operator.n_obs, dtype=torch.float64))
    h = h.reshape(case.operator.n_obs, -1)
    prior_std = prior.covariance.diagonal().sqrt()
    exact_at_obs = (h @ case.cov @ h.T).diagonal()
    rows = []
    for name, options in {"prior (unguided)": None, **METHODS}.items():
        options = dict(options or {})
        corrections = int(options.pop("corrections", 0))
        denoiser = (
            prior
            if name.startswith("prior")
            else guided_denoiser(prior, likelihood, name, **options)
        )
        start = time.perf_counter()
        members = sample(
            denoiser,
            GRID.shape,
            range(args.members),
            window_seed=7,
            steps=args.steps,
            sigma_max=20.0,
            corrections=corrections,
            dtype=torch.float64,
        )
        seconds = time.perf_counter() - start
        flat = members.reshape(args.members, -1)
        error = (flat.mean(0) - case.mean.reshape(-1)) / prior_std
        ratio_obs = (flat @ h.T).var(0) / exact_at_obs
        rows.append(
            {
                "method": name,
                "options": options | ({"corrections": corrections} if corrections else {}),
                "mean_error_rms": float(error.square().mean().sqrt()),
                "mean_error_max": float(error.abs().max()),
                "variance_ratio_field": float((flat.var(0) / case.cov.diagonal()).mean()),
                "variance_ratio_obs_min": float(ratio_obs.min()),
                "variance_ratio_obs_max": float(ratio_obs.max()),
                "seconds": seconds,
            }
        )
    extra = {
        "members": args.members,
        "steps": args.steps,
        "grid": list(GRID.shape),
        "observations": len(OBSERVATIONS),
        "posterior_to_prior_variance_at_obs": float(
            (exact_at_obs / (h @ prior.covariance @ h.T).diagonal()).mean()
        ),
    }
    path = write_result("posterior_gaussian", rows, extra)
    print_table(
        "guidance vs the Kalman posterior (mean error in prior std; variance ratio ensemble/exact)",
        [{k: v for k, v in row.items() if k != "options"} for row in rows],
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
