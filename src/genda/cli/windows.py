"""Commands that fill one window of an ensemble store: ``assimilate`` and ``baseline``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from genda.assimilation.guidance import GUIDANCE_METHODS, TWEEDIE_COVARIANCES
from genda.assimilation.posterior import PosteriorSettings
from genda.assimilation.start_update import StartUpdate
from genda.cli.group import console
from genda.cli.options import (
    POSTERIOR_DEFAULTS,
    SAMPLER_HELP,
    InsecureOption,
    RayAddressOption,
    one_of,
    parse_batch_size,
)
from genda.cli.render import render_baseline, render_window
from genda.observations.qc import DEFAULT_OUTLIER_K

_COVARIANCE_NOTES: dict[str, str] = {
    "jacobian": "the network's",
    "auto": "prior for a whitened prior, else jacobian",
    "prior": "the whitened prior's Gaussian part: no backward pass, whitened priors only",
}
"""What ``--covariance``'s help says of each Tweedie covariance."""


def assimilate(
    time_: Annotated[
        str,
        typer.Option(
            "--time",
            help="Centre of the window, ISO (UTC), e.g. 2000-02-01T12:00; for a trajectory "
            "prior, its first hour.",
        ),
    ],
    obs: Annotated[
        Path | None, typer.Option(help="Observation table; omit to sample the prior.")
    ] = None,
    filter_: Annotated[
        bool,
        typer.Option(
            "--filter",
            help="Trajectory prior: fix each member's first state to that member of the "
            "store's finalised window at --time (the previous window's last hour), and "
            "write the hours after it (docs/cycles.md).",
        ),
    ] = False,
    update_start: Annotated[
        float | None,
        typer.Option(
            "--update-start",
            min=0.0,
            help="With --filter: update the members' starts by the window's observations "
            "before fixing them (a localised EnKF step, docs/cycles.md); its horizontal "
            "localisation half-width in km (inf: none). Default: fix them as they are.",
        ),
    ] = None,
    start_rtps: Annotated[
        float | None,
        typer.Option(
            "--start-rtps",
            min=0.0,
            max=1.0,
            help="With --update-start: relax the updated starts' spread towards their spread "
            "before the update (RTPS). Default 0.5.",
        ),
    ] = None,
    states: Annotated[
        int | None,
        typer.Option(
            min=2,
            help="Trajectory prior: hourly states of the window; more than the prior's K "
            "compose a longer window from its overlapping K-hour segments (docs/cycles.md). "
            "Default: K.",
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Ensemble store (Zarr v3); created, or the window added.")
    ] = Path("ensemble.zarr"),
    checkpoint: Annotated[
        str, typer.Option(help="Checkpoint directory, or default / default-layer2d.")
    ] = "default",
    members: Annotated[int, typer.Option(help="Ensemble size.")] = 16,
    method: Annotated[
        str,
        typer.Option(help=f"Guidance: {one_of(GUIDANCE_METHODS, POSTERIOR_DEFAULTS.method)}."),
    ] = POSTERIOR_DEFAULTS.method,
    steps: Annotated[int, typer.Option(help="Sampler steps.")] = POSTERIOR_DEFAULTS.steps,
    sampler: Annotated[str, typer.Option(help=SAMPLER_HELP)] = POSTERIOR_DEFAULTS.sampler,
    iterations: Annotated[
        int, typer.Option(help="MMPS solver (GMRES) iterations.")
    ] = POSTERIOR_DEFAULTS.iterations,
    covariance: Annotated[
        str,
        typer.Option(
            help="MMPS's Tweedie covariance: "
            f"{one_of(TWEEDIE_COVARIANCES, POSTERIOR_DEFAULTS.covariance, _COVARIANCE_NOTES)}."
        ),
    ] = POSTERIOR_DEFAULTS.covariance,
    zeta: Annotated[float, typer.Option(help="DPS guidance strength.")] = POSTERIOR_DEFAULTS.zeta,
    gamma: Annotated[
        float, typer.Option(help="SDA likelihood inflation gamma.")
    ] = POSTERIOR_DEFAULTS.gamma,
    corrections: Annotated[
        int | None, typer.Option(help="Langevin corrections per step (SDA default 1).")
    ] = POSTERIOR_DEFAULTS.corrections,
    batch_size: Annotated[
        str,
        typer.Option(
            help="Members per denoiser batch, or 'auto' (the memory model of genda plan, confirmed on each GPU)."
        ),
    ] = str(POSTERIOR_DEFAULTS.batch_size),
    layers_per_batch: Annotated[
        int | None,
        typer.Option(
            help="layer2d: layer samples per network call, the memory knob (also under "
            "guidance: each call's activations are recomputed in the backward passes)."
        ),
    ] = None,
    window_hours: Annotated[
        float, typer.Option(help="Observations within time +- window/2 are used.")
    ] = 1.0,
    outlier_k: Annotated[
        float,
        typer.Option(
            help="Background check: observations more than k standard deviations "
            "(climatology and observation error) from the prior's mean are left out."
        ),
    ] = DEFAULT_OUTLIER_K,
    keep_outliers: Annotated[
        bool, typer.Option(help="Assimilate the observations the background check flags.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Experiment seed (hashed with the time).")] = 0,
    device: Annotated[str, typer.Option(help="torch device: cpu or cuda.")] = "cpu",
    workers: Annotated[
        int, typer.Option(help="Ray actors (one per GPU with cuda); 0: in this process.")
    ] = 0,
    threads_per_worker: Annotated[
        int,
        typer.Option(
            help="torch threads of CPU sampling: per Ray actor (its Ray CPUs), or of this "
            "process with --workers 0 (docs/distributed.md)."
        ),
    ] = 1,
    ray_address: RayAddressOption = None,
    insecure: InsecureOption = False,
    members_per_shard: Annotated[
        int | None, typer.Option(help="New store: members per shard file (1: no sharding).")
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(help="Replace an existing genda store (all its windows; nothing else)."),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm a very large store.")] = False,
    progress: Annotated[
        bool,
        typer.Option(help="Show the sampling's progress, per sampler step (on a terminal only)."),
    ] = True,
) -> None:
    """Sample a posterior ensemble for one window into a Zarr store; a rerun fills what is missing."""
    from genda.orchestration.assimilate import assimilate_window

    size, auto_batch = parse_batch_size(batch_size)
    settings = PosteriorSettings(
        method=method,
        steps=steps,
        sampler=sampler,
        iterations=iterations,
        covariance=covariance,
        zeta=zeta,
        gamma=gamma,
        corrections=corrections,
        batch_size=size,
    )
    summary = assimilate_window(
        checkpoint,
        obs,
        time_,
        out,
        members=members,
        settings=settings,
        seed=seed,
        window_hours=window_hours,
        outlier_k=outlier_k,
        keep_outliers=keep_outliers,
        layers_per_batch=layers_per_batch,
        device=device,
        workers=workers,
        threads_per_worker=threads_per_worker,
        ray_address=ray_address,
        auto_batch=auto_batch,
        members_per_shard=members_per_shard,
        overwrite=overwrite,
        progress=progress,
        yes=yes,
        insecure=insecure,
        filtering=filter_,
        states=states,
        start_update=_start_update(update_start, start_rtps),
    )
    console.print(render_window(summary))


def _start_update(width_km: float | None, rtps: float | None) -> StartUpdate | None:
    """The start update of ``--update-start`` and ``--start-rtps``, checked."""
    if width_km is None:
        if rtps is not None:
            raise typer.BadParameter("--start-rtps needs --update-start", param_hint="--start-rtps")
        return None
    if not width_km > 0:
        raise typer.BadParameter(
            f"a localisation half-width > 0 km (inf: none), got {width_km}",
            param_hint="--update-start",
        )
    return StartUpdate(horizontal_km=width_km, rtps=0.5 if rtps is None else rtps)


def baseline(
    archive: Annotated[Path, typer.Option(help="Archive the climatological states come from.")],
    time_: Annotated[str, typer.Option("--time", help="Centre of the window, ISO (UTC).")],
    out: Annotated[Path, typer.Option(help="Ensemble store to write (Zarr v3).")],
    obs: Annotated[
        Path | None, typer.Option(help="Observation table (not needed for climatology).")
    ] = None,
    method: Annotated[
        str,
        typer.Option(
            help="enkf, enoi (every eligible archive state behind the covariance), oi or "
            "climatology."
        ),
    ] = "enkf",
    members: Annotated[
        int, typer.Option(help="Ensemble size (oi and enoi write one member).")
    ] = 16,
    hour_matched: Annotated[
        bool,
        typer.Option(
            "--hour-matched/--any-hour",
            help="Draw archive states only within 1 h of the window's time of day, so that "
            "their tides share its phase (the default), or at any hour.",
        ),
    ] = True,
    climatology_size: Annotated[
        int | None,
        typer.Option(
            help="Archive states behind the covariance (oi, enkf); default: every "
            "hour-matched state, or 200 with --any-hour."
        ),
    ] = None,
    horizontal_km: Annotated[
        float | None,
        typer.Option(
            help="Gaspari-Cohn half-width in the horizontal (km); default: tuned per method "
            "(docs/baselines.md)."
        ),
    ] = None,
    vertical_km: Annotated[
        float | None,
        typer.Option(help="Gaspari-Cohn half-width in altitude (km); default: tuned per method."),
    ] = None,
    exclude_hours: Annotated[
        float, typer.Option(help="Archive times this close to the window are not drawn.")
    ] = 48.0,
    window_hours: Annotated[
        float, typer.Option(help="Observations within time +- window/2 are used.")
    ] = 1.0,
    seed: Annotated[int, typer.Option(help="Experiment seed (hashed with the time).")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing store.")] = False,
) -> None:
    """Classical baselines on the same footing: climatology, localised OI, EnOI, EnKF.

    Archive states are hour-matched unless --any-hour is given; the localisation
    defaults to the half-widths tuned for the method (docs/baselines.md).
    """
    from genda.orchestration.baseline import baseline_window

    summary = baseline_window(
        archive,
        obs,
        time_,
        out,
        method=method,
        members=members,
        climatology_size=climatology_size,
        hour_matched=hour_matched,
        seed=seed,
        window_hours=window_hours,
        horizontal_km=horizontal_km,
        vertical_km=vertical_km,
        exclude_hours=exclude_hours,
        overwrite=overwrite,
    )
    console.print(render_baseline(summary))


__all__ = ["assimilate", "baseline"]
