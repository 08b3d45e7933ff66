"""A prior in whitened coordinates: exact Kalman posterior, training, checkpoints, bad input."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from genda.assimilation import gaussian_tweedie
from genda.assimilation.gaussian import GaussianFieldPrior
from genda.assimilation.guidance import (
    TWEEDIE_COVARIANCES,
    GaussianLikelihood,
    MMPSGuidance,
    guided_denoiser,
    resolve_covariance,
)
from genda.assimilation.state_operator import StateOperator, diagonal_aat
from genda.cli import app
from genda.errors import InvalidValueError
from genda.grid import Grid
from genda.models.checkpoint import CheckpointError, load_checkpoint
from genda.models.diffusion import EDMDenoiser
from genda.models.sampling import sample
from genda.models.whitening import SpectralWhitening
from genda.normalization import Normalization
from genda.observations.operators import ObservationOperator
from genda.storage import EnsembleStore
from point_tables import point_table

runner = CliRunner()
GRID = Grid.gaussian(8, 16, 2)
MEMBERS = 1024


class ZeroNetwork(nn.Module):
    """An untrained network's limit: output 0, so ``D(z, sigma) = c_skip z``."""

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond=None) -> torch.Tensor:
        return torch.zeros_like(x)


def _observations() -> pd.DataFrame:
    rows = [
        ("u", -30.0, 45.0, 80.0, 2.0),
        ("v", 10.0, 100.0, 95.0, 2.0),
        ("T", 60.0, 200.0, 80.0, 1.0),
        ("T", -70.0, 300.0, 110.0, 1.0),
        ("u", 5.0, 10.0, 110.0, 2.0),
    ]
    return point_table(rows, [pd.Timestamp("2000-01-01")])


def _dense_problem(whitening: SpectralWhitening, obs: pd.DataFrame, hour: float | None = None):
    """``A = H U`` on the whitened states (mean at ``hour``) and its dense Jacobian ``(M, Kz)``."""
    fields_operator = ObservationOperator.from_table(obs, GRID).to(dtype=torch.float64)
    state_shape = tuple(whitening.state_shape)
    operator = StateOperator(fields_operator, partial(whitening.decode, hours=hour), state_shape)
    size = int(np.prod(state_shape))
    jacobian = torch.func.jacrev(lambda z: operator(z.reshape(1, *state_shape))[0])(
        torch.zeros(size, dtype=torch.float64)
    )
    return operator, jacobian


@pytest.fixture(scope="module")
def whitening() -> SpectralWhitening:
    """Fitted to 400 smooth correlated Gaussian fields of a known prior (float64)."""
    torch.manual_seed(0)
    corr = np.array([[1.0, 0.3, 0.0], [0.3, 1.0, 0.0], [0.0, 0.0, 1.0]])
    field_prior = GaussianFieldPrior.on_grid(GRID, length_km=3000.0, variable_correlation=corr)
    fields = field_prior.sample(400, generator=torch.Generator().manual_seed(1))
    normalization = Normalization(
        GRID.variables, np.zeros((3, GRID.nlevels)), np.ones((3, GRID.nlevels))
    )
    module = SpectralWhitening(GRID, normalization, coupling="columns")
    return module.fit([fields.float()]).double()


@pytest.fixture(scope="module")
def tidal_whitening() -> SpectralWhitening:
    """Fitted to 480 fields of a known prior plus a diurnal cycle of 3 std, at hours 0..23 (float64)."""
    torch.manual_seed(0)
    field_prior = GaussianFieldPrior.on_grid(GRID, length_km=3000.0)
    fields = field_prior.sample(480, generator=torch.Generator().manual_seed(2))
    cycle = field_prior.sample(1, generator=torch.Generator().manual_seed(3))
    hours = np.arange(480) % 24.0
    phase = torch.from_numpy(np.cos(2 * np.pi * hours / 24))[:, None, None, None, None]
    module = SpectralWhitening(GRID, coupling="columns", tides=1)
    return module.fit([(fields.float() + 3 * phase.float() * cycle.float(), hours)]).double()


@pytest.mark.parametrize(
    ("which", "hour", "covariance"),
    [
        # the network's Jacobian (MMPS's own covariance, 25 s) once, on the harder prior
        pytest.param("tidal_whitening", 5.0, "jacobian", marks=pytest.mark.slow),
        ("whitening", None, "prior"),
        ("tidal_whitening", 5.0, "prior"),
    ],
)
def test_the_guidance_recovers_the_exact_posterior_in_whitened_coordinates(
    request, which: str, hour: float | None, covariance: str
) -> None:
    """Prior z ~ N(0, I), x = mu + U z, y = H x + e: MMPS's ensemble is Kalman's, mean and spread.

    With a mean that follows the time of day, ``A z = H (mu(h) + U z)`` at the
    window's hour ``h``: still affine, so the analysis stays exact.
    """
    whitening = request.getfixturevalue(which)
    obs = _observations()
    operator, jacobian = _dense_problem(whitening, obs, hour)  # A: (M, Kz)
    if hour is not None:  # the mean really moves with the hour
        zero = torch.zeros((1, *operator.state_shape), dtype=torch.float64)
        other = StateOperator(
            operator.fields, partial(whitening.decode, hours=hour + 12), operator.state_shape
        )
        assert float((operator(zero) - other(zero)).abs().max()) > 1.0
    state_shape, size = operator.state_shape, jacobian.shape[1]
    offset = operator(torch.zeros((1, *state_shape), dtype=torch.float64))[0]
    sigma_y = torch.tensor(obs["sigma"].to_numpy(), dtype=torch.float64)
    truth = torch.randn(size, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    y = (
        jacobian @ truth
        + offset
        + sigma_y
        * torch.randn(len(obs), generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    )
    # Kalman in z: P = (I + A^T R^-1 A)^-1, m = P A^T R^-1 (y - A 0)
    r_inv = torch.diag(1.0 / sigma_y**2)
    precision = torch.eye(size, dtype=torch.float64) + jacobian.T @ r_inv @ jacobian
    cov = torch.linalg.inv(precision)
    mean = cov @ jacobian.T @ r_inv @ (y - offset)

    denoiser = EDMDenoiser(ZeroNetwork(), coordinates=whitening).double()
    likelihood = GaussianLikelihood(operator, y, sigma_y)
    guided = guided_denoiser(
        denoiser, likelihood, "mmps", iterations=len(obs), covariance=covariance
    )
    z = sample(
        guided,
        state_shape,
        members=range(MEMBERS),
        window_seed=3,
        steps=32,
        sigma_max=20.0,
        dtype=torch.float64,
    ).reshape(MEMBERS, -1)
    # Compare through the observed directions, where the posterior differs from the prior.
    seen = (z @ jacobian.T).mean(0)
    expected = jacobian @ mean
    spread = (jacobian @ cov @ jacobian.T).diagonal().sqrt()
    assert torch.all((seen - expected).abs() < 4 * spread / MEMBERS**0.5 + 0.02 * spread)
    sample_spread = (z @ jacobian.T).std(0)
    np.testing.assert_allclose(sample_spread, spread, rtol=0.1)
    # and away from them the prior is kept: unit variance per control variable
    assert abs(float(z.var(0).mean()) - float(cov.diagonal().mean())) < 0.05


@pytest.mark.parametrize(("sigma", "dense"), [(0.05, True), (1.0, True), (20.0, False)])
def test_the_prior_covariance_step_is_the_gaussian_posterior_mean(
    tidal_whitening, sigma, dense, monkeypatch
) -> None:
    """One guided denoiser call is ``E[z | z_t, y]`` of the Gaussian prior, to round-off.

    ``z ~ N(0, I)``, ``z_t = z + sigma eps``, ``y = A z + b + e``: the posterior
    precision is ``(1 + sigma^-2) I + A^T R^-1 A``, so
    ``E[z | z_t, y] = P^-1 (z_t / sigma^2 + A^T R^-1 (y - b))``.
    """
    obs = _observations()
    operator, jacobian = _dense_problem(tidal_whitening, obs, 17.0)
    state_shape, size = operator.state_shape, jacobian.shape[1]
    offset = operator(torch.zeros((1, *state_shape), dtype=torch.float64))[0]
    sigma_y = torch.tensor(obs["sigma"].to_numpy(), dtype=torch.float64)
    g = torch.Generator().manual_seed(11)
    y = offset + 3 * torch.randn(len(obs), generator=g, dtype=torch.float64)
    z_t = sigma * torch.randn(2, size, generator=g, dtype=torch.float64)
    if not dense:  # A and A^T through the operator instead of a stored matrix
        monkeypatch.setattr(gaussian_tweedie, "DENSE_ROWS_LIMIT", 0)
    denoiser = EDMDenoiser(ZeroNetwork(), coordinates=tidal_whitening).double()
    guided = guided_denoiser(
        denoiser, GaussianLikelihood(operator, y, sigma_y), "mmps", covariance="prior"
    )
    assert (guided.rows is not None) == dense
    result = guided(z_t.reshape(2, *state_shape), torch.full((2,), sigma, dtype=torch.float64))
    r_inv = torch.diag(1.0 / sigma_y**2)
    precision = (1 + sigma**-2) * torch.eye(size, dtype=torch.float64)
    precision = precision + jacobian.T @ r_inv @ jacobian
    expected = torch.linalg.solve(
        precision, (z_t / sigma**2 + (jacobian.T @ r_inv @ (y - offset))[None]).T
    ).T
    torch.testing.assert_close(result.reshape(2, -1), expected, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize(("dense", "exact"), [(True, True), (False, True), (True, False)])
def test_the_observation_space_solves_and_applies_a_exactly(
    tidal_whitening, dense, exact, monkeypatch
) -> None:
    """``A``, ``A^T`` and ``(Sigma_y + c A A^T)^-1`` against the dense Jacobian, per member ``c``.

    Beyond the exact-solve limit, conjugate gradients: exact here too, since 5
    observations need at most 5 of its 24 iterations.
    """
    if not dense:
        monkeypatch.setattr(gaussian_tweedie, "DENSE_ROWS_LIMIT", 0)
    if not exact:
        monkeypatch.setattr(gaussian_tweedie, "EXACT_SOLVE_LIMIT", 0)
    obs = _observations()
    operator, jacobian = _dense_problem(tidal_whitening, obs, 9.5)
    sigma_y = torch.tensor(obs["sigma"].to_numpy(), dtype=torch.float64)
    space = gaussian_tweedie.ObservationSpace(operator, sigma_y)
    assert (space.rows is not None) == dense
    assert (space.eigenvalues is not None) == exact
    g = torch.Generator().manual_seed(4)
    z = torch.randn(3, *operator.state_shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(space.apply(z), operator(z))
    w = torch.randn(3, len(obs), generator=g, dtype=torch.float64)
    torch.testing.assert_close(space.adjoint(w).reshape(3, -1), w @ jacobian)
    c = torch.tensor([0.0, 0.3, 40.0], dtype=torch.float64)
    for row in range(3):
        system = torch.diag(sigma_y**2) + c[row] * jacobian @ jacobian.T
        expected = torch.linalg.solve(system, w[row])
        torch.testing.assert_close(space.solve(w, c)[row], expected, atol=1e-10, rtol=1e-8)


def test_the_prior_covariance_needs_whitened_states(whitening) -> None:
    obs = _observations()
    fields_operator = ObservationOperator.from_table(obs, GRID).to(dtype=torch.float64)
    sigma_y = torch.tensor(obs["sigma"].to_numpy(), dtype=torch.float64)
    likelihood = GaussianLikelihood(fields_operator, torch.zeros(len(obs)).double(), sigma_y)
    denoiser = EDMDenoiser(ZeroNetwork()).double()
    with pytest.raises(InvalidValueError, match="whitened"):
        guided_denoiser(denoiser, likelihood, "mmps", covariance="prior")
    with pytest.raises(InvalidValueError, match="covariance"):
        guided_denoiser(denoiser, likelihood, "mmps", covariance="diagonal")


def test_auto_takes_the_gaussian_covariance_for_whitened_states_and_the_jacobian_otherwise(
    whitening,
) -> None:
    obs = _observations()
    sigma_y = torch.tensor(obs["sigma"].to_numpy(), dtype=torch.float64)
    zeros = torch.zeros(len(obs)).double()
    operator, _ = _dense_problem(whitening, obs)
    fields_operator = ObservationOperator.from_table(obs, GRID).to(dtype=torch.float64)
    denoiser = EDMDenoiser(ZeroNetwork()).double()
    whitened = guided_denoiser(
        denoiser, GaussianLikelihood(operator, zeros, sigma_y), "mmps", covariance="auto"
    )
    on_fields = guided_denoiser(
        denoiser, GaussianLikelihood(fields_operator, zeros, sigma_y), "mmps", covariance="auto"
    )
    assert isinstance(whitened, gaussian_tweedie.GaussianTweedieGuidance)
    assert isinstance(on_fields, MMPSGuidance)
    assert [resolve_covariance(c, w) for c in TWEEDIE_COVARIANCES for w in (True, False)] == [
        *("prior", "jacobian"),
        *("jacobian", "jacobian"),
        *("prior", "prior"),
    ]


def test_sda_sees_the_observations_sensitivity_in_whitened_coordinates(whitening) -> None:
    """diag(A A^T) by reverse mode equals the dense Jacobian's row norms."""
    obs = _observations()
    operator, jacobian = _dense_problem(whitening, obs)
    np.testing.assert_allclose(diagonal_aat(operator, block=2), (jacobian**2).sum(1), rtol=1e-8)


def test_unguided_members_keep_the_fitted_spectrum(whitening) -> None:
    """An untrained prior in whitened coordinates samples its Gaussian: decoded variance as fitted."""
    denoiser = EDMDenoiser(ZeroNetwork(), coordinates=whitening).double()
    z = sample(
        denoiser,
        tuple(whitening.state_shape),
        members=range(512),
        window_seed=9,
        steps=24,
        sigma_max=20.0,
        dtype=torch.float64,
    )
    np.testing.assert_allclose(float(z.var()), 1.0, rtol=0.05)
    fields = whitening.decode(z)
    reference = whitening.decode(torch.randn(z.shape, dtype=torch.float64))
    ratio = fields.var(0).mean((-1, -2)) / reference.var(0).mean((-1, -2))
    assert torch.all((ratio - 1).abs() < 0.15), ratio


# ---------------------------------------------------------------------------- end to end
def _train(archive: Path, out: Path, strategy: str, *extra: str):
    return runner.invoke(
        app,
        [
            *("train", "--data", str(archive), "--out", str(out), "--strategy", strategy),
            *("--coordinates", "whitened", "--no-progress", "--base-channels", "8"),
            *("--channel-mult", "1,2", "--val-gap-hours", "2", "--steps", "6"),
            *("--batch-size", "4", "--warmup-steps", "2", "--lr", "2e-3", *extra),
        ],
    )


@pytest.fixture(scope="module")
def whitened_priors(tiny_archive: Path, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("whitened")
    priors = {}
    for strategy in ("joint3d", "layer2d"):
        result = _train(tiny_archive, root / strategy, strategy)
        assert result.exit_code == 0, result.output
        priors[strategy] = root / strategy
    return priors


@pytest.mark.parametrize("strategy", ["joint3d", "layer2d"])
def test_train_and_assimilate_in_whitened_coordinates(
    whitened_priors, tiny_archive: Path, tmp_path: Path, strategy: str
) -> None:
    prior = load_checkpoint(whitened_priors[strategy])
    config = json.loads((whitened_priors[strategy] / "config.json").read_text())
    assert config["coordinates"]["kind"] == "spectral-whitening"
    assert isinstance(prior.denoiser.coordinates, SpectralWhitening)
    assert prior.state_shape == tuple(prior.denoiser.coordinates.state_shape)
    time = "2000-01-02T07:00:00"
    obs = tmp_path / "obs.parquet"
    result = runner.invoke(
        app,
        [
            *("observe", "--truth", str(tiny_archive), "--time", time, "--out", str(obs)),
            *("--network", "radars"),
        ],
    )
    assert result.exit_code == 0, result.output
    store = tmp_path / "ens.zarr"
    result = runner.invoke(
        app,
        [
            *("assimilate", "--checkpoint", str(whitened_priors[strategy]), "--obs", str(obs)),
            *("--time", time, "--out", str(store), "--members", "2", "--steps", "4"),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    import xarray as xr

    ds = xr.open_zarr(store)
    assert np.isfinite(ds["T"].values).all() and ds["T"].dims[1] == "member"
    # the default covariance ("auto") is recorded as what it meant for this prior
    assert EnsembleStore.open(store).provenance(time)["settings"]["covariance"] == "prior"


def test_layer2d_coordinates_are_the_cascade_and_joint3d_the_columns(whitened_priors) -> None:
    prior = load_checkpoint(whitened_priors["layer2d"])
    assert prior.denoiser.coordinates.config()["coupling"] == "cascade"
    assert load_checkpoint(whitened_priors["joint3d"]).denoiser.coordinates.config()[
        "coupling"
    ] == ("columns")


def test_missing_transform_statistics_are_named(whitened_priors, tmp_path: Path) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    from genda.models.checkpoint import CONFIG_FILE, MODEL_FILE

    damaged = tmp_path / "damaged"
    shutil.copytree(whitened_priors["joint3d"], damaged)
    tensors = load_file(damaged / MODEL_FILE)
    kept = {k: v for k, v in tensors.items() if "coordinates" not in k}
    assert len(kept) < len(tensors)
    save_file(kept, damaged / MODEL_FILE)
    # keep the checksum right so that the missing statistics themselves are what is found
    import hashlib

    config = json.loads((damaged / CONFIG_FILE).read_text())
    digest = hashlib.sha256((damaged / MODEL_FILE).read_bytes()).hexdigest()
    config["files"][MODEL_FILE]["sha256"] = digest
    (damaged / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="coordinates"):
        load_checkpoint(damaged)


def test_the_cascade_rotation_is_derived_not_saved(whitened_priors) -> None:
    """The checkpoint holds the eigen-decomposition only; loading rebuilds the rotation
    that fitting made, to round-off, and a unitary one."""
    from safetensors import safe_open

    from genda.models.checkpoint import MODEL_FILE
    from genda.models.whitening import _triangular_rotation

    with safe_open(str(whitened_priors["layer2d"] / MODEL_FILE), "pt") as handle:
        assert not [k for k in handle.keys() if "rotation" in k]
    module = load_checkpoint(whitened_priors["layer2d"]).denoiser.coordinates
    vectors = torch.view_as_complex(module.eigenvectors.double().contiguous())
    expected = _triangular_rotation(vectors, module.eigenvalues.double())
    rotation = torch.view_as_complex(module.rotation.double().contiguous())
    torch.testing.assert_close(rotation, expected.to(rotation.dtype), atol=1e-6, rtol=0)
    eye = torch.eye(rotation.shape[-1], dtype=rotation.dtype).expand_as(rotation)
    torch.testing.assert_close(rotation @ rotation.mH, eye, atol=1e-5, rtol=0)


def test_damaged_transform_statistics_fail_the_checksum(whitened_priors, tmp_path: Path) -> None:
    import shutil

    from genda.models.checkpoint import MODEL_FILE

    damaged = tmp_path / "damaged"
    shutil.copytree(whitened_priors["joint3d"], damaged)
    data = bytearray((damaged / MODEL_FILE).read_bytes())
    data[-100] ^= 0xFF
    (damaged / MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"sha256|checksum"):
        load_checkpoint(damaged)


def test_transform_of_another_grid_is_refused(whitened_priors, tmp_path: Path) -> None:
    import shutil

    from genda.models.checkpoint import CONFIG_FILE

    damaged = tmp_path / "other"
    shutil.copytree(whitened_priors["joint3d"], damaged)
    config = json.loads((damaged / CONFIG_FILE).read_text())
    config["coordinates"]["truncation"] = 4  # statistics of another truncation
    (damaged / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError):
        load_checkpoint(damaged)


def test_unknown_coordinates_kind(whitened_priors, tmp_path: Path) -> None:
    import shutil

    from genda.models.checkpoint import CONFIG_FILE

    damaged = tmp_path / "unknown"
    shutil.copytree(whitened_priors["joint3d"], damaged)
    config = json.loads((damaged / CONFIG_FILE).read_text())
    config["coordinates"]["kind"] = "wavelets"
    (damaged / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="wavelets"):
        load_checkpoint(damaged)


def test_bad_coordinates_settings_are_refused(tiny_archive: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            *("train", "--data", str(tiny_archive), "--out", str(tmp_path / "p")),
            *("--coordinates", "polar", "--steps", "1", "--no-progress"),
        ],
    )
    assert result.exit_code == 1 and "polar" in result.output
    assert not (tmp_path / "p").exists()
    result = _train(tiny_archive, tmp_path / "q", "joint3d", "--skip", "gaussian")
    assert result.exit_code == 1 and "skip" in result.output
    assert not (tmp_path / "q").exists()


def test_sda_in_whitened_coordinates_uses_the_whole_covariance(whitening) -> None:
    """With many observations of shared large scales, SDA stays near Kalman's mean, not beyond."""
    obs = pd.concat([_observations()] * 1, ignore_index=True)
    rng = np.random.default_rng(4)
    extra = pd.DataFrame(
        {
            "time": pd.Timestamp("2000-01-01"),
            "variable": "T",
            "lat": rng.uniform(-60, 60, 300),
            "lon": rng.uniform(0, 360, 300),
            "alt_km": 95.0,
            "value": 0.0,
            "sigma": 0.3,
        }
    )
    obs = pd.concat([obs, extra], ignore_index=True)
    operator, jacobian = _dense_problem(whitening, obs)
    state_shape, size = operator.state_shape, jacobian.shape[1]
    offset = operator(torch.zeros((1, *state_shape), dtype=torch.float64))[0]
    sigma_y = torch.tensor(obs["sigma"].to_numpy(), dtype=torch.float64)
    truth = torch.randn(size, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    y = jacobian @ truth + offset
    r_inv = torch.diag(1.0 / sigma_y**2)
    cov = torch.linalg.inv(torch.eye(size, dtype=torch.float64) + jacobian.T @ r_inv @ jacobian)
    mean = cov @ jacobian.T @ r_inv @ (y - offset)
    denoiser = EDMDenoiser(ZeroNetwork(), coordinates=whitening).double()
    guided = guided_denoiser(denoiser, GaussianLikelihood(operator, y, sigma_y), "sda", gamma=1.0)
    z = sample(
        guided,
        state_shape,
        members=range(64),
        window_seed=3,
        steps=32,
        sigma_max=20.0,
        dtype=torch.float64,
    ).reshape(64, -1)
    assert torch.isfinite(z).all() and float(z.abs().max()) < 10
    seen, expected = (z @ jacobian.T).mean(0), jacobian @ mean
    # SDA is an approximation: its mean follows Kalman's, a little short of it
    # (the diagonal of A A^T alone overshoots it and runs away instead)
    slope = float(seen @ expected / (expected @ expected))
    correlation = float(torch.corrcoef(torch.stack([seen, expected]))[0, 1])
    assert 0.5 < slope < 1.05 and correlation > 0.9, (slope, correlation)


def test_a_time_of_day_prior_needs_the_window_time(whitened_priors) -> None:
    """The shipped kind of prior decodes at the window's hour: without it, a sentence."""
    from genda.assimilation.posterior import PosteriorSettings, sample_members, state_hours

    prior = load_checkpoint(whitened_priors["joint3d"])
    assert prior.denoiser.tides == 3  # genda train's default for whitened coordinates
    settings = PosteriorSettings(steps=2, batch_size=2)
    with pytest.raises(InvalidValueError, match="valid time"):
        sample_members(prior, prior.denoiser, [0, 1], 0, settings, guided=False)
    with pytest.raises(InvalidValueError, match="one per member"):
        state_hours(
            prior, np.array(["2000-01-01T03", "2000-01-01T04", "2000-01-01T05"], "M8[s]"), 2
        )
    noon = sample_members(
        prior, prior.denoiser, [0], 0, settings, guided=False, time=np.datetime64("2000-01-01T12")
    )
    midnight = sample_members(
        prior, prior.denoiser, [0], 0, settings, guided=False, time=np.datetime64("2000-01-02T00")
    )
    # the same z decoded at two hours: the members differ by the tidal mean only
    assert float((noon - midnight).abs().max()) > 0


def test_tides_need_whitened_coordinates(tiny_archive: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            *("train", "--data", str(tiny_archive), "--out", str(tmp_path / "p")),
            *("--coordinates", "grid", "--tides", "2", "--steps", "1", "--no-progress"),
        ],
    )
    assert result.exit_code != 0
    assert "whitened coordinates" in result.output
    assert not (tmp_path / "p").exists()


def test_auto_is_resolved_to_what_a_window_runs(whitened_priors) -> None:
    from dataclasses import replace

    from genda.assimilation.posterior import PosteriorSettings

    prior, settings = load_checkpoint(whitened_priors["joint3d"]), PosteriorSettings()
    assert settings.covariance == "auto"
    assert settings.for_prior(prior).covariance == "prior"
    # nothing uses a Tweedie covariance: the record stays as before "auto" existed
    assert settings.for_prior(prior, guided=False).covariance == "jacobian"
    for method in ("dps", "sda"):
        resolved = replace(settings, method=method).for_prior(prior)
        assert "covariance" not in resolved.to_dict()
    assert replace(settings, covariance="jacobian").for_prior(prior).covariance == "jacobian"
    with pytest.raises(InvalidValueError, match="auto"):
        settings.to_dict()  # an unresolved choice is never recorded
