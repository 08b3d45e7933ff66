"""One assimilation window in one process: observations file + checkpoint -> ensemble store.

``assimilate_window`` is what ``genda assimilate`` runs: it loads and checks
everything before any sampling (a bad checkpoint, observation table or time
fails in seconds and writes nothing), samples the posterior members, and
writes the store atomically (:mod:`genda.storage.ensemble`) with the window's
provenance.
"""

from __future__ import annotations

import hashlib
import os
import time as clock
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from genda import __version__
from genda.assimilation.posterior import (
    PosteriorSettings,
    observation_fit,
    posterior_members,
    window_seed,
)
from genda.models.checkpoint import load_checkpoint
from genda.observations.operators import ObservationOperator
from genda.observations.table import (
    as_datetime64,
    read_observations,
    validate_observations,
    window_bounds,
)
from genda.storage.ensemble import write_ensemble


def observation_fingerprint(obs: pd.DataFrame) -> str:
    """SHA-256 of a canonical table's CSV text: the identity of an observation set."""
    text = obs.to_csv(index=False, float_format="%.9g", date_format="%Y-%m-%dT%H:%M:%S")
    return hashlib.sha256(text.encode()).hexdigest()


def load_window_observations(
    path: str | os.PathLike[str], grid: Any, time: np.datetime64, window_hours: float
) -> pd.DataFrame:
    """Read and validate the observations of the window ``time +- window_hours / 2``."""
    window = window_bounds(time, window_hours)
    return validate_observations(read_observations(path), grid, window=window, source=str(path))


def assimilate_window(
    checkpoint: str | os.PathLike[str],
    observations: str | os.PathLike[str] | None,
    time: str | np.datetime64,
    out: str | os.PathLike[str],
    *,
    members: int = 16,
    settings: PosteriorSettings | None = None,
    seed: int = 0,
    window_hours: float = 1.0,
    layers_per_batch: int | None = None,
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Sample ``members`` posterior members for the window at ``time`` and write ``out``.

    Args:
        checkpoint: a checkpoint directory or a shipped name (``default``, ``default-layer2d``).
        observations: CSV, Parquet or NetCDF table (docs/observations.md);
            ``None`` samples the prior (the unconditional baseline).
        time: the window's centre (ISO text or datetime64), naive UTC.
        out: the ensemble store to write (Zarr v3 directory).
        members: ensemble size.
        settings: guidance method, steps, batch size (:class:`PosteriorSettings`;
            its defaults when ``None``).
        seed: the experiment's seed; the window seed is a hash of it and ``time``.
        window_hours: observations within ``time +- window_hours / 2`` are accepted.
        layers_per_batch: ``layer2d`` only: layers per network call (the memory knob).
        device: torch device.
        overwrite: replace an existing store.
        progress: progress bar over members.

    Returns:
        A summary: paths, counts, timing, and the fit to the observations.
    """
    if members < 1:
        raise ValueError(f"members must be >= 1, got {members}")
    if not (window_hours >= 0 and np.isfinite(window_hours)):
        raise ValueError(f"--window-hours must be a finite number >= 0, got {window_hours}")
    if layers_per_batch is not None and layers_per_batch < 1:
        raise ValueError(f"--layers-per-batch must be >= 1, got {layers_per_batch}")
    settings = settings or PosteriorSettings()
    out = Path(out)
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    when = as_datetime64(time)
    prior = load_checkpoint(checkpoint, device=device)
    if layers_per_batch is not None:
        if not hasattr(prior.strategy, "layers_per_batch"):
            raise ValueError(
                f"--layers-per-batch applies to layer2d priors, not {prior.strategy.name}"
            )
        prior.strategy.layers_per_batch = layers_per_batch  # type: ignore[attr-defined]
    obs = None
    if observations is not None:
        obs = load_window_observations(observations, prior.grid, when, window_hours)
    seed_of_window = window_seed(seed, when)

    started = clock.perf_counter()
    fields = posterior_members(
        prior, obs, range(members), seed_of_window, settings, device=device, progress=progress
    )
    elapsed = clock.perf_counter() - started
    attrs = {
        "title": "genda posterior ensemble" if obs is not None else "genda prior ensemble",
        "source": f"genda {__version__}",
        "genda_version": __version__,
        "genda_window_time": str(np.datetime64(when, "s")),
        "genda_window_hours": window_hours,
        "genda_checkpoint": str(prior.path),
        "genda_checkpoint_strategy": prior.strategy.name,
        "genda_checkpoint_archive_fingerprint": prior.fingerprint or "",
        "genda_checkpoint_step": prior.step,
        "genda_method": settings.method if obs is not None else "prior",
        "genda_settings": settings.to_dict(),
        "genda_seed": seed,
        "genda_window_seed": str(seed_of_window),
        "genda_observations": "" if observations is None else str(observations),
        "genda_observations_fingerprint": "" if obs is None else observation_fingerprint(obs),
        "genda_observations_count": 0 if obs is None else len(obs),
        "genda_sampling_seconds": round(elapsed, 3),
    }
    write_ensemble(out, fields.numpy(), prior.grid, when, attrs, overwrite=overwrite)
    summary: dict[str, Any] = {
        "store": str(out),
        "members": members,
        "strategy": prior.strategy.name,
        "method": attrs["genda_method"],
        "steps": settings.steps,
        "seconds": elapsed,
        "members_per_second": members / elapsed if elapsed > 0 else float("nan"),
        "observations": 0 if obs is None else len(obs),
    }
    if obs is not None:
        operator = ObservationOperator.from_table(obs, prior.grid)  # once, for both fits
        summary["fit"] = observation_fit(fields, obs, prior.grid, operator)
        # The reference: the prior's training mean per variable and level.
        summary["level_mean_fit"] = observation_fit(
            prior.normalization.denormalize(torch.zeros(1, *prior.grid.shape)),
            obs,
            prior.grid,
            operator,
        )
    return summary
