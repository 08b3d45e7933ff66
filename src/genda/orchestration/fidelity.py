"""Fidelity of a trained prior (``genda fidelity``): sample, compare, report.

Draws unconditional members from a checkpoint (per-member generators of
window seed ``seed``, so any member can be regenerated), turns them into a
physical-units Dataset with a ``member`` dimension, and compares them with
held-out model data through :func:`genda.evaluation.fidelity.fidelity_report`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from genda.assimilation.posterior import PosteriorSettings, sample_members
from genda.errors import InvalidValueError
from genda.evaluation.fidelity import FidelityReport, fidelity_report
from genda.grid import Grid, lookup_variable
from genda.models.checkpoint import LoadedPrior, load_checkpoint
from genda.ownership import check_replaceable
from genda.storage import open_archive


@dataclass
class FidelityRun:
    report: FidelityReport
    json_path: Path
    figures: list[Path]
    samples_path: Path | None


def sample_prior(
    prior: LoadedPrior,
    members: int,
    seed: int,
    settings: PosteriorSettings,
    device: str,
    progress: bool = True,
    times: np.ndarray | None = None,
) -> xr.Dataset:
    """``members`` unconditional samples of ``prior`` as a Dataset ``(member, altitude, latitude, longitude)``.

    ``settings``: the sampler, its steps and the members per denoiser batch
    (the guidance settings are not used). ``times`` ``(members,)``: the valid
    time of each member, for a prior whose mean follows the time of day (kept
    as the coordinate ``time(member)``).
    """
    grid = prior.grid
    batch_size = settings.batch_size
    chunks = []
    for start in tqdm(
        range(0, members, batch_size), desc="sampling", unit="batch", disable=not progress
    ):
        ids = list(range(start, min(start + batch_size, members)))
        # The one sampling path of the package: the same members as `genda assimilate`
        # without observations, decoded from the prior's coordinates.
        when = None if times is None else times[ids[0] : ids[-1] + 1]
        fields = sample_members(
            prior, prior.denoiser, ids, seed, settings, guided=False, device=device, time=when
        )
        chunks.append(fields.numpy().astype(np.float32))
    fields = np.concatenate(chunks)  # (N, V, L, H, W)
    samples = members_dataset(fields, grid)
    if times is not None:
        samples = samples.assign_coords(time=("member", np.asarray(times)))
    return samples


def members_dataset(fields: np.ndarray, grid: Grid) -> xr.Dataset:
    """``(N, V, L, H, W)`` physical fields -> Dataset with a ``member`` dimension and CF attributes."""
    grid.check_shape(fields.shape, what="samples")
    coords = {**grid.coords(), "member": np.arange(fields.shape[0])}
    data = {
        name: xr.Variable(
            ("member", "altitude", "latitude", "longitude"),
            fields[:, i],
            lookup_variable(name).cf_attrs(),
        )
        for i, name in enumerate(grid.variables)
    }
    return xr.Dataset(data, coords=coords, attrs={"Conventions": "CF-1.10"})


def prior_fidelity(
    checkpoint: str | Path,
    data: str | Path,
    out: Path,
    members: int = 64,
    settings: PosteriorSettings | None = None,
    seed: int = 0,
    device: str = "cpu",
    save_samples: bool = False,
    progress: bool = True,
    overwrite: bool = False,
) -> FidelityRun:
    """Sample ``members`` from ``checkpoint`` and compare them with the archive ``data``.

    ``settings``: the sampler, its steps and batch size (:class:`PosteriorSettings`;
    its defaults when ``None``, as ``genda assimilate``'s). Every setting, the
    checkpoint, the data and ``out`` are checked before anything is sampled or written; ``overwrite`` replaces an earlier fidelity
    report at ``out`` (a file or a folder that is not one is never written into).
    """
    settings = settings or PosteriorSettings()
    if isinstance(members, bool) or not isinstance(members, int) or members < 1:
        raise InvalidValueError(f"members must be a positive integer, got {members!r}")
    if members < 2:
        raise InvalidValueError(
            f"members must be >= 2 to estimate the samples' spread, got {members}"
        )
    check_replaceable(out, "fidelity report", overwrite)
    prior = load_checkpoint(checkpoint, device=device)
    reference = open_archive(data, grid=None)
    prior.grid.check_same(
        Grid.from_dataset(reference, prior.grid.variables), what=f"archive {data}"
    )
    out.mkdir(parents=True, exist_ok=True)
    # Members at valid times spread evenly over the reference run: a prior whose
    # mean follows the time of day is compared at the hours the run covers.
    available = np.asarray(reference["time"].values)
    times = available[np.linspace(0, available.size - 1, members).round().astype(int)]
    samples = sample_prior(prior, members, seed, settings, device, progress, times=times)
    samples_path = None
    if save_samples:
        samples_path = out / "samples.nc"
        samples.to_netcdf(samples_path)
    report = fidelity_report(samples, reference, prior.grid, strategy=prior.strategy.name)
    json_path = report.to_json(out / "fidelity.json")
    figures = report.plot(out)
    return FidelityRun(report, json_path, figures, samples_path)
