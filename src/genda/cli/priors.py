"""Commands about a prior: ``train`` one, and check its ``fidelity`` to model data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from genda.cli.group import console, fail
from genda.cli.options import (
    POSTERIOR_DEFAULTS,
    SAMPLER_HELP,
    IconGridOption,
    IconTargetOption,
    command_line,
    parse_channel_mult,
)
from genda.cli.render import render_training


def train_command(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option("--data", help="Training archive (Zarr or NetCDF).")],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint directory to write.")],
    strategy: Annotated[
        str | None,
        typer.Option(help="joint3d (whole 3D field) or layer2d (layers); default joint3d."),
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="Total optimizer steps (default 10000).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Fields per step (default 16).")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (default 2e-4).")] = None,
    ema_decay: Annotated[
        float | None, typer.Option(help="EMA decay per step (default 0.999).")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of weights, batches and noise (default 0).")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="auto, cpu, cuda, cuda:1, ... (default auto).")
    ] = None,
    val_fraction: Annotated[
        float | None, typer.Option(help="Fraction of the times held out at the end (default 0.1).")
    ] = None,
    val_gap_hours: Annotated[
        float | None,
        typer.Option(
            help="Hours between the last training and first validation time (default 24)."
        ),
    ] = None,
    base_channels: Annotated[int | None, typer.Option(help="U-Net width (default 32).")] = None,
    channel_mult: Annotated[
        str | None, typer.Option(help="U-Net channel multipliers per level (default 1,2,2).")
    ] = None,
    window: Annotated[
        int | None, typer.Option(help="layer2d: neighbouring layers seen each side (default 1).")
    ] = None,
    warmup_steps: Annotated[
        int | None, typer.Option(help="Learning-rate warm-up (default 500).")
    ] = None,
    log_every: Annotated[
        int | None, typer.Option(help="Steps per loss-log row (default 50).")
    ] = None,
    val_every: Annotated[
        int | None, typer.Option(help="Steps per validation (default 500).")
    ] = None,
    checkpoint_every: Annotated[
        int | None, typer.Option(help="Steps per checkpoint save (default 1000).")
    ] = None,
    mixed_precision: Annotated[
        bool, typer.Option(help="bf16 autocast on CUDA (ignored on the CPU).")
    ] = False,
    compile: Annotated[bool, typer.Option(help="torch.compile the model.")] = False,
    resume: Annotated[
        Path | None, typer.Option(help="Checkpoint to continue (settings default to its own).")
    ] = None,
    skip: Annotated[
        str | None,
        typer.Option(
            help="scalar (EDM's c_skip; default) or gaussian (posterior mean of a "
            "Gaussian fitted to the data; docs/training.md)."
        ),
    ] = None,
    coordinates: Annotated[
        str | None,
        typer.Option(
            help="grid (diffusion on the normalised fields; default) or whitened (on "
            "spectral control variables in which the model data are white; docs/training.md)."
        ),
    ] = None,
    tides: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Solar-day harmonics in the whitened prior's mean, so that it follows the "
            "time of day (default 3: diurnal, semidiurnal, terdiurnal; 0: one mean).",
        ),
    ] = None,
    states: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Hourly states per sample: K > 1 trains a trajectory prior of K consecutive "
            "hours (whitened coordinates), which windows with observations at their own "
            "times, filtering and forecasts use (docs/cycles.md). Default 1.",
        ),
    ] = None,
    time_inputs: Annotated[
        bool | None,
        typer.Option(
            "--time-inputs/--no-time-inputs",
            help="Give the network the UT hour and the day of the year (diurnal, semidiurnal, "
            "annual and semiannual harmonics), so that what it learns can follow the tides "
            "and the season; windows are then sampled at their time (docs/training.md). "
            "Default: off, or the resumed checkpoint's.",
        ),
    ] = None,
    icon_grid: IconGridOption = None,
    icon_target: IconTargetOption = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train a diffusion prior on an archive and write a checkpoint."""
    from genda.orchestration.train import train_prior
    from genda.storage.icon_native import icon_options

    strategy_options: dict[str, object] = {}
    if window is not None:
        if (strategy or "joint3d") != "layer2d" and resume is None:
            raise fail("--window applies to --strategy layer2d only")
        strategy_options["window"] = window
    architecture: dict[str, object] = {}
    if base_channels is not None:
        architecture["base_channels"] = base_channels
    if channel_mult is not None:
        architecture["channel_mult"] = parse_channel_mult(channel_mult)
    overrides = {
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "ema_decay": ema_decay,
        "seed": seed,
        "device": device,
        "warmup_steps": warmup_steps,
        "log_every": log_every,
        "val_every": val_every,
        "checkpoint_every": checkpoint_every,
        "mixed_precision": True if mixed_precision else None,
        "compile": True if compile else None,
    }
    run = train_prior(
        data,
        out,
        strategy=strategy,
        strategy_options=strategy_options,
        architecture=architecture,
        overrides=overrides,
        val_fraction=val_fraction,
        val_gap_hours=val_gap_hours,
        resume=resume,
        skip=skip,
        coordinates=coordinates,
        tides=tides,
        states=states,
        time_inputs=time_inputs,
        overwrite=overwrite,
        progress=progress,
        command=command_line(ctx),
        icon=icon_options(icon_grid, icon_target),
    )
    console.print(render_training(run))


def fidelity(
    checkpoint: Annotated[
        str, typer.Option(help="Checkpoint directory, or default / default-layer2d.")
    ],
    data: Annotated[Path, typer.Option(help="Held-out model data (archive or NetCDF).")],
    out: Annotated[Path, typer.Option(help="Directory for fidelity.json and the plots.")],
    members: Annotated[int, typer.Option(help="Unconditional members to draw.")] = 64,
    steps: Annotated[int, typer.Option(help="Sampler steps.")] = POSTERIOR_DEFAULTS.steps,
    sampler: Annotated[
        str, typer.Option("--sampler", "--method", help=SAMPLER_HELP)
    ] = POSTERIOR_DEFAULTS.sampler,
    seed: Annotated[int, typer.Option(help="Window seed of the members.")] = 0,
    batch_size: Annotated[
        int, typer.Option(help="Members per denoiser batch.")
    ] = POSTERIOR_DEFAULTS.batch_size,
    device: Annotated[str, typer.Option(help="torch device.")] = "cpu",
    save_samples: Annotated[
        bool, typer.Option(help="Also write the members as samples.nc.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an earlier fidelity report at --out (nothing else).")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Compare unconditional samples of a prior with held-out model data."""
    from genda.assimilation.posterior import PosteriorSettings
    from genda.orchestration.fidelity import prior_fidelity

    run = prior_fidelity(
        checkpoint,
        data,
        out,
        members=members,
        settings=PosteriorSettings(steps=steps, sampler=sampler, batch_size=batch_size),
        seed=seed,
        device=device,
        save_samples=save_samples,
        progress=progress,
        overwrite=overwrite,
    )
    console.print(run.report.summary(), highlight=False)
    console.print(
        f"{'PASSED' if run.report.passed else 'FAILED'}: the acceptance criteria of the prior"
    )
    console.print(f"report   {run.json_path}")
    for figure in run.figures:
        console.print(f"figure   {figure}")


__all__ = ["fidelity", "train_command"]
