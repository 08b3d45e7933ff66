"""Contract tests for genda.evaluation.fidelity: each acceptance criterion catches its own defect.

The data are a long synthetic stationary time series on a small Gaussian grid:
smooth random fields from random spherical-harmonic coefficients (degrees
1..T, so the spectra are defined to the truncation), AR(1) in time,
correlated between levels, plus a migrating diurnal tide whose local-time
phase is known. Its two halves are the "reference" and the "samples".
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch_harmonics as th
import xarray as xr
from scipy.signal import lfilter

from genda.evaluation.fidelity import fidelity_report
from genda.evaluation.fidelity_checks import CRITERIA, AcceptanceThresholds
from genda.evaluation.fidelity_records import FidelityReport
from genda.grid import Grid, GridMismatchError

GRID = Grid.gaussian(16, 32, 4)
TRUNC = (GRID.nlon - 1) // 3  # 10, the 2/3-rule truncation
NMODES = TRUNC + 1
DAYS = 30  # per half
HOURS = 2 * 24 * DAYS
PHI = 0.3  # hour-to-hour correlation of the AR(1) coefficients
LEVEL_CORRELATION = np.exp(-np.abs(np.subtract.outer(np.arange(4), np.arange(4))) / 1.5)
TIDE_LT = 15.0  # local solar time of the diurnal maximum (h)
START = np.datetime64("2030-01-01T06:00", "ns")  # not 00 UTC: local time must account for it
T_LEVEL_MEAN = 190.0 + 5.0 * np.arange(4)  # K


def inverse_transforms() -> tuple[th.InverseRealSHT, th.InverseRealVectorSHT]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # Legendre tables in float64
    try:
        kw = {"lmax": NMODES, "mmax": NMODES, "grid": "legendre-gauss", "csphase": False}
        return (
            th.InverseRealSHT(GRID.nlat, GRID.nlon, **kw),
            th.InverseRealVectorSHT(GRID.nlat, GRID.nlon, **kw),
        )
    finally:
        torch.set_default_dtype(previous)


def synthetic_series(hours: int = HOURS, seed: int = 0) -> xr.Dataset:
    """Hourly u, v, T ``(time, altitude, latitude, longitude)`` from ``START``, float32."""
    rng = np.random.default_rng(seed)
    burn = 30  # AR(1) spin-up to stationarity
    shape = (hours + burn, 3, GRID.nlevels, NMODES, NMODES)  # fields: 2 wind potentials, T
    white = rng.normal(size=shape) + 1j * rng.normal(size=shape)
    coeffs = lfilter([np.sqrt(1 - PHI**2)], [1.0, -PHI], white, axis=0)[burn:]
    degree, order = np.meshgrid(np.arange(NMODES), np.arange(NMODES), indexing="ij")
    exists = (order <= degree) & (degree >= 1)
    spectrum = np.where(exists, 1.0 / np.maximum(degree * (degree + 1), 1), 0.0)
    coeffs = coeffs * spectrum
    coeffs[..., 0] = np.sqrt(2.0) * coeffs[..., 0].real  # m = 0 of a real field is real
    coeffs = np.einsum("kj,tfjlm->tfklm", np.linalg.cholesky(LEVEL_CORRELATION), coeffs)
    # migrating diurnal tide: cos(lambda + 2 pi (t_UTC - TIDE_LT) / 24), growing with altitude
    t_utc = (np.arange(hours) + 6.0)[:, None]
    rotation = np.exp(2j * np.pi * (t_utc - TIDE_LT) / 24.0) * np.exp(0.3 * np.arange(4))
    coeffs[:, 2, :, 1, 1] += 0.8 * rotation  # T, degree 1
    coeffs[:, 0, :, 2, 1] += 0.1 * rotation  # winds, degree 2
    scalar, vector = inverse_transforms()
    with torch.no_grad():
        winds = vector(torch.as_tensor(coeffs[:, :2].transpose(0, 2, 1, 3, 4))).numpy()
        temperature = scalar(torch.as_tensor(coeffs[:, 2])).numpy()  # (T, L, H, W)
    winds = winds.transpose(0, 2, 1, 3, 4)  # (T, 2, L, H, W)
    winds = winds * (15.0 / winds.std())  # m s-1
    temperature = T_LEVEL_MEAN[:, None, None] + temperature * (8.0 / temperature.std())
    field = np.concatenate([winds, temperature[:, None]], axis=1).astype(np.float32)
    times = START + np.arange(hours) * np.timedelta64(1, "h")
    return GRID.to_dataset(field, time=times)


@pytest.fixture(scope="module")
def halves() -> tuple[xr.Dataset, xr.Dataset]:
    """(reference, samples): the first and second 30 days of one series."""
    series = synthetic_series()
    return series.isel(time=slice(0, HOURS // 2)), series.isel(time=slice(HOURS // 2, None))


@pytest.fixture(scope="module")
def split_report(halves: tuple[xr.Dataset, xr.Dataset]) -> FidelityReport:
    reference, samples = halves
    return fidelity_report(samples, reference, GRID, strategy="joint3d")


def failed(report: FidelityReport) -> set[tuple[str, str, float | None]]:
    return {(c.criterion, c.variable, c.altitude_km) for c in report.failed_checks()}


def as_members(ds: xr.Dataset) -> xr.Dataset:
    return ds.drop_vars("time").rename(time="member")


def level_mean(da: xr.DataArray) -> xr.DataArray:
    weights = xr.DataArray(GRID.area_weights(), dims="latitude")
    return da.weighted(weights).mean([d for d in da.dims if d != "altitude"])


# ---------------------------------------------------------------------- acceptance
def test_reference_against_itself_passes_with_zero_errors(
    halves: tuple[xr.Dataset, xr.Dataset],
) -> None:
    reference, _ = halves
    report = fidelity_report(reference, reference, GRID)
    assert report.passed
    for moments in report.moments.values():
        np.testing.assert_allclose(moments.mean_difference, 0.0, atol=1e-12)
        np.testing.assert_allclose(moments.std_ratio, 1.0, rtol=1e-12)
    assert report.spectra is not None
    np.testing.assert_allclose(report.spectra.relative_error, 0.0, atol=1e-12)
    assert all(c.max_abs_difference < 1e-12 for c in report.vertical_correlation.values())


def test_two_halves_of_a_stationary_series_pass_every_criterion(
    split_report: FidelityReport,
) -> None:
    report = split_report
    assert report.passed, report.summary()
    assert {c.criterion for c in report.checks} == set(CRITERIA)
    # 4 levels: spectra 4, means 3 x 4, std ratios 3 x 4, correlations 3
    assert len(report.checks) == 4 + 12 + 12 + 3
    assert report.n_samples == report.n_reference == HOURS // 2
    assert report.sample_dims == ("time",)
    # well inside the thresholds, not just under them
    assert max(m.mean_difference.max() for m in report.moments.values()) < 0.07
    assert max(np.abs(m.std_ratio - 1).max() for m in report.moments.values()) < 0.05
    assert report.spectra is not None
    assert report.spectra.max_relative_error.max() < 0.12
    assert report.spectra.wavenumber.tolist() == list(range(1, TRUNC + 1))
    assert max(c.max_abs_difference for c in report.vertical_correlation.values()) < 0.05
    # the vertical correlation built in is recovered where the tide is weak (the winds);
    # in T the tide, coherent through the column, dominates the anomalies
    for name in ("u", "v"):
        np.testing.assert_allclose(
            report.vertical_correlation[name].reference, LEVEL_CORRELATION, atol=0.05
        )


def test_bias_at_one_level_fails_exactly_that_mean(
    halves: tuple[xr.Dataset, xr.Dataset],
) -> None:
    reference, samples = halves
    level = 2
    std_r = float(np.sqrt(level_mean((reference["T"] - level_mean(reference["T"])) ** 2))[level])
    biased = samples.copy()
    biased["T"] = samples["T"] + xr.DataArray(
        np.where(np.arange(4) == level, 0.5 * std_r, 0.0), dims="altitude"
    )
    report = fidelity_report(biased, reference, GRID)
    assert failed(report) == {("mean", "T", float(GRID.altitude[level]))}
    (check,) = report.failed_checks()
    assert check.value == pytest.approx(0.5, abs=0.05)
    assert check.passed is False and check.upper == 0.1


def test_scaled_winds_fail_the_spectra_by_44_percent(
    halves: tuple[xr.Dataset, xr.Dataset], split_report: FidelityReport
) -> None:
    reference, samples = halves
    scaled = samples.copy()
    scaled["u"] = 1.2 * samples["u"]
    scaled["v"] = 1.2 * samples["v"]
    report = fidelity_report(scaled, reference, GRID)
    assert report.spectra is not None and split_report.spectra is not None
    # E is quadratic: exactly 1.44 times the unscaled comparison, and ~0.44 at every l
    np.testing.assert_allclose(
        1 + report.spectra.relative_error,
        1.44 * (1 + split_report.spectra.relative_error),
        rtol=1e-6,  # 1.2 u in float32
    )
    np.testing.assert_allclose(report.spectra.relative_error, 0.44, atol=0.1)
    spectral = [c for c in report.checks if c.criterion == "spectrum"]
    assert len(spectral) == GRID.nlevels and not any(c.passed for c in spectral)
    # the winds' std ratios (1.2) fail too; nothing about T does
    assert {(c, v) for c, v, _ in failed(report)} == {
        ("spectrum", "kinetic_energy"),
        ("std_ratio", "u"),
        ("std_ratio", "v"),
    }


def test_levels_shuffled_independently_fail_only_vertical_correlation(
    halves: tuple[xr.Dataset, xr.Dataset],
) -> None:
    """Each level draws its fields from a different permutation of the samples.

    Every level keeps exactly its own fields (so means, stds and spectra are
    unchanged) but the levels become independent.
    """
    reference, samples = halves
    rng = np.random.default_rng(7)
    perms = [rng.permutation(samples.sizes["time"]) for _ in range(GRID.nlevels)]
    shuffled = samples.copy()
    for name in GRID.variables:
        values = samples[name].values
        shuffled[name] = samples[name].copy(
            data=np.stack([values[perm, k] for k, perm in enumerate(perms)], axis=1)
        )
    report = fidelity_report(shuffled, reference, GRID)
    assert failed(report) == {("vertical_correlation", name, None) for name in GRID.variables}
    for name in GRID.variables:
        comparison = report.vertical_correlation[name]
        offdiag = ~np.eye(GRID.nlevels, dtype=bool)
        assert np.abs(comparison.sample[offdiag]).max() < 0.1  # levels now independent
        assert comparison.max_abs_difference > 0.4  # adjacent levels correlate ~0.5


@pytest.fixture(scope="module")
def damped_report(halves: tuple[xr.Dataset, xr.Dataset]) -> FidelityReport:
    """Samples whose T anomalies from the level means are scaled by 0.8."""
    reference, samples = halves
    damped = samples.copy()
    mean = level_mean(samples["T"])
    damped["T"] = mean + 0.8 * (samples["T"] - mean)
    return fidelity_report(damped, reference, GRID, strategy="layer2d")


def test_damped_temperature_anomalies_fail_the_std_ratio(damped_report: FidelityReport) -> None:
    report = damped_report
    assert failed(report) == {("std_ratio", "T", float(z)) for z in GRID.altitude}
    np.testing.assert_allclose(report.moments["T"].std_ratio, 0.8, atol=0.03)


# ---------------------------------------------------------------------- computation
def test_moments_and_correlations_match_brute_force(
    halves: tuple[xr.Dataset, xr.Dataset],
) -> None:
    """Small blocks and dask chunks give the xarray brute-force numbers."""
    reference, _ = halves
    small = reference.isel(time=slice(0, 50))
    report = fidelity_report(small.chunk(time=16), small, GRID, block_size=7)
    weights = xr.DataArray(GRID.area_weights(), dims="latitude")
    for name in GRID.variables:
        da = small[name].astype(np.float64)
        mean = da.weighted(weights).mean(["time", "latitude", "longitude"])
        std = np.sqrt(((da - mean) ** 2).weighted(weights).mean(["time", "latitude", "longitude"]))
        anomaly = (da - da.mean("time")).transpose("altitude", "time", "latitude", "longitude")
        a = anomaly.values.reshape(GRID.nlevels, -1)
        w = np.broadcast_to(GRID.area_weights()[None, :, None], anomaly.shape[1:]).ravel()
        covariance = (a * w) @ a.T
        correlation = covariance / np.sqrt(np.outer(np.diag(covariance), np.diag(covariance)))
        moments = report.moments[name]
        for got in (moments.sample_mean, moments.reference_mean):
            np.testing.assert_allclose(got, mean.values, rtol=1e-10)
        for got in (moments.sample_std, moments.reference_std):
            np.testing.assert_allclose(got, std.values, rtol=1e-8)
        for got in (
            report.vertical_correlation[name].sample,
            report.vertical_correlation[name].reference,
        ):
            np.testing.assert_allclose(got, correlation, atol=1e-10)


def test_tides_of_time_series_recover_the_built_in_tide(split_report: FidelityReport) -> None:
    report = split_report
    assert set(report.tides) == {"reference", "samples"}
    for source in ("reference", "samples"):
        diurnal = report.tides[source]["T"][1]
        assert np.all(np.diff(diurnal.amplitude) > 0)  # grows with altitude, as built
        for phase in (diurnal.phase_north_hours, diurnal.phase_south_hours):
            np.testing.assert_allclose(phase, TIDE_LT, atol=0.5)
    np.testing.assert_allclose(
        report.tides["samples"]["T"][1].amplitude,
        report.tides["reference"]["T"][1].amplitude,
        rtol=0.1,
    )
    assert not any("tides" in note for note in report.notes)


def test_member_only_samples_skip_their_tides_with_a_note(
    halves: tuple[xr.Dataset, xr.Dataset], split_report: FidelityReport
) -> None:
    reference, samples = halves
    report = fidelity_report(as_members(samples), reference, GRID, strategy="layer2d")
    assert report.sample_dims == ("member",)
    assert set(report.tides) == {"reference"}
    assert any(note.startswith("tides of the samples: no time axis") for note in report.notes)
    # everything else does not depend on what the sample axis is called
    assert [c.to_dict() for c in report.checks] == [c.to_dict() for c in split_report.checks]


def test_members_of_time_series_pool_both_axes(
    halves: tuple[xr.Dataset, xr.Dataset], split_report: FidelityReport
) -> None:
    """Samples ``(member, time)``: two 15-day members on one time axis, same fields as the split."""
    reference, samples = halves
    days = DAYS // 2
    pieces = [samples.isel(time=slice(i * 24 * days, (i + 1) * 24 * days)) for i in range(2)]
    times = pieces[0]["time"].values
    members = xr.concat([p.assign_coords(time=times) for p in pieces], dim="member")
    report = fidelity_report(members, reference, GRID)
    assert report.sample_dims == ("member", "time") and report.n_samples == HOURS // 2
    # moments, spectra and correlations pool the same fields as the time-only samples
    for got, want in zip(report.checks, split_report.checks, strict=True):
        assert got.label == want.label
        assert got.value == pytest.approx(want.value, rel=1e-9, abs=1e-12)
    # tides are analysed per member (15 days each) and averaged
    diurnal = report.tides["samples"]["T"][1]
    np.testing.assert_allclose(diurnal.phase_north_hours, TIDE_LT, atol=0.5)


def test_irregular_time_axis_skips_tides(halves: tuple[xr.Dataset, xr.Dataset]) -> None:
    reference, samples = halves
    ragged = samples.isel(time=slice(0, 24 * 5 + 7))
    report = fidelity_report(ragged, reference, GRID)
    assert "samples" not in report.tides
    assert any("not a whole number" in note for note in report.notes)


# ---------------------------------------------------------------------- outputs
def test_json_round_trip(split_report: FidelityReport, tmp_path: Path) -> None:
    path = split_report.to_json(tmp_path / "report.json")
    data = json.loads(path.read_text())
    assert data["strategy"] == "joint3d" and data["passed"] is True
    assert set(data["criteria"]) == set(CRITERIA)
    assert all(check["passed"] for check in data["checks"])
    again = FidelityReport.from_json(path)
    assert again.to_dict() == split_report.to_dict()
    assert again.grid == GRID
    assert again.tides["reference"]["T"][1].amplitude.shape == (GRID.nlevels,)
    assert not list(tmp_path.glob("*.partial*"))


def test_plots_are_written(split_report: FidelityReport, tmp_path: Path) -> None:
    paths = split_report.plot(tmp_path / "figures")
    names = {p.name for p in paths}
    assert names == {
        "fidelity_joint3d_profiles_u.png",
        "fidelity_joint3d_profiles_v.png",
        "fidelity_joint3d_profiles_T.png",
        "fidelity_joint3d_spectra.png",
        "fidelity_joint3d_spectral_ratio.png",
        "fidelity_joint3d_vertical_correlation.png",
        "fidelity_joint3d_tides.png",
    }
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 5000


def test_custom_thresholds_change_the_verdicts(split_report: FidelityReport) -> None:
    strict = AcceptanceThresholds(spectrum=1e-6)
    report = dataclasses.replace(split_report, thresholds=strict)
    assert {c.criterion for c in report.failed_checks()} == {"spectrum"}


# ---------------------------------------------------------------------- bad input
def test_bad_input_is_named(halves: tuple[xr.Dataset, xr.Dataset]) -> None:
    reference, samples = halves
    small = samples.isel(time=slice(0, 10))
    with pytest.raises(KeyError, match="'v'"):
        fidelity_report(small.drop_vars("v"), reference, GRID)
    with pytest.raises(GridMismatchError, match="samples is on a different grid"):
        fidelity_report(small, reference, Grid.gaussian(16, 32, 5))
    with pytest.raises(GridMismatchError, match="expected member and/or time"):
        fidelity_report(small.isel(time=0), reference, GRID)
    broken = small.copy(deep=True)
    broken["T"][3, 1, 2, 4] = np.nan
    with pytest.raises(ValueError, match="samples variable 'T' contains NaN"):
        fidelity_report(broken, reference, GRID)
