"""The ``genda`` command.

Commands are thin: they parse options, call a library function
(:mod:`genda.orchestration`, :mod:`genda.storage`) and print the result.

    genda --version
    genda simulate --out archive.zarr --days 30 --seed 1
    genda summary archive.zarr
    genda train --data archive.zarr --strategy joint3d --out prior/
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import click
import numpy as np
import typer
from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

import genda
from genda.errors import GendaError
from genda.storage import ArchiveSummary, open_archive, summarize


class GendaGroup(TyperGroup):
    """The command group: an error genda raises on purpose is one sentence and exit code 1.

    Anything else is a bug and keeps its traceback.
    """

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except GendaError as error:
            raise _fail(str(error)) from error


app = typer.Typer(
    name="genda",
    cls=GendaGroup,
    help="Generative data assimilation for the mesosphere and lower thermosphere.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
errors = Console(stderr=True)


InsecureOption = Annotated[
    bool,
    typer.Option(
        "--insecure",
        help="Allow a local Ray cluster without token authentication (RAY_AUTH_MODE="
        "disabled; its ports are open to the network; also GENDA_RAY_INSECURE=1).",
    ),
]
"""``--insecure`` of the commands that may start a local Ray cluster."""


def render_summary(summary: ArchiveSummary, wall_seconds: float | None = None) -> Group:
    """Rich renderable of an :class:`~genda.storage.ArchiveSummary`: facts, then per-variable stats."""
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column(overflow="fold")
    facts.add_row("archive", summary.source)
    facts.add_row("shape", " x ".join(f"{name} {size}" for name, size in summary.sizes.items()))
    if summary.time_range is not None:
        facts.add_row("time", f"{summary.time_range[0]} .. {summary.time_range[1]}")
    if wall_seconds is not None:
        facts.add_row("wall time", f"{wall_seconds:.1f} s")
    stats = Table(show_header=True, header_style="bold")
    for name in ("variable", "units"):
        stats.add_column(name)
    for name in ("min", "mean", "max"):
        stats.add_column(name, justify="right")
    for var in summary.variables:
        stats.add_row(
            var.name, var.units, f"{var.minimum:.4g}", f"{var.mean:.4g}", f"{var.maximum:.4g}"
        )
    return Group(facts, stats)


def _fail(message: str) -> typer.Exit:
    # The message is text, not markup: a path such as /data/[run]/x stays as it is.
    errors.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False)
    return typer.Exit(code=1)


def _version(value: bool) -> None:
    if value:
        console.print(f"genda {genda.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Generative data assimilation for the mesosphere and lower thermosphere."""


@app.command()
def simulate(
    out: Annotated[Path, typer.Option("--out", help="Archive to write (Zarr v3 directory).")],
    days: Annotated[float, typer.Option(help="Days of output after the spin-up.")],
    seed: Annotated[int, typer.Option(help="Seed of the stochastic forcing.")],
    nlat: Annotated[int, typer.Option(help="Gaussian latitudes.")] = 32,
    nlon: Annotated[int, typer.Option(help="Longitudes.")] = 64,
    levels: Annotated[int, typer.Option(help="Output altitude levels (80-115 km).")] = 8,
    layers: Annotated[
        int | None, typer.Option(help="Model layers (default: as many as --levels).")
    ] = None,
    spinup_days: Annotated[float, typer.Option(help="Model days before the first output.")] = 30.0,
    every_hours: Annotated[float, typer.Option(help="Output interval in hours.")] = 1.0,
    device: Annotated[str, typer.Option(help="torch device of the model.")] = "cpu",
    chunk_hours: Annotated[int, typer.Option(help="Snapshots per chunk along time.")] = 24,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an existing genda archive (nothing else).")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm a very large output.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Run the built-in MLT model and write a training archive."""
    from genda.orchestration import simulate_archive
    from genda.simulator import SimulatorConfig

    history = (
        f"genda simulate --out {out} --days {days} --seed {seed} --nlat {nlat} --nlon {nlon} "
        f"--levels {levels} --layers {layers or levels} --spinup-days {spinup_days} "
        f"--every-hours {every_hours} --device {device}"
    )
    start = time.perf_counter()
    config = SimulatorConfig(
        nlat=nlat, nlon=nlon, levels=levels, layers=layers or levels, device=device
    )
    path = simulate_archive(
        out,
        config,
        days=days,
        seed=seed,
        spinup_days=spinup_days,
        every_hours=every_hours,
        overwrite=overwrite,
        progress=progress,
        chunk_hours=chunk_hours,
        history=history,
        yes=yes,
    )
    wall = time.perf_counter() - start
    console.print(
        render_summary(summarize(open_archive(path), source=str(path)), wall_seconds=wall)
    )


@app.command()
def summary(
    path: Annotated[
        Path, typer.Argument(help="Archive or model output (Zarr directory or NetCDF file).")
    ],
) -> None:
    """Print shape, time range and per-variable min/mean/max of an archive."""
    start = time.perf_counter()
    ds = open_archive(path)
    table = render_summary(
        summarize(ds, source=str(path)), wall_seconds=time.perf_counter() - start
    )
    console.print(table)


def _channel_mult(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise typer.BadParameter(f"expected integers separated by commas, got {text!r}") from None
    if not values:
        raise typer.BadParameter("expected at least one multiplier, e.g. 1,2,2")
    return values


def _command_line(ctx: typer.Context) -> str:
    """The command as given, rebuilt from its parsed options (for provenance)."""
    parts = [f"genda {ctx.info_name}"]
    for name, value in ctx.params.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            default = next((p.default for p in ctx.command.params if p.name == name), None)
            if value != default:
                parts.append(flag if value else "--no-" + name.replace("_", "-"))
        elif value is not None:
            parts.append(f"{flag} {value}")
    return " ".join(parts)


@app.command("train")
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
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train a diffusion prior on an archive and write a checkpoint."""
    from genda.orchestration.train import train_prior

    strategy_options: dict[str, object] = {}
    if window is not None:
        if (strategy or "joint3d") != "layer2d" and resume is None:
            raise _fail("--window applies to --strategy layer2d only")
        strategy_options["window"] = window
    architecture: dict[str, object] = {}
    if base_channels is not None:
        architecture["base_channels"] = base_channels
    if channel_mult is not None:
        architecture["channel_mult"] = _channel_mult(channel_mult)
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
        overwrite=overwrite,
        progress=progress,
        command=_command_line(ctx),
    )
    r = run.result
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column(overflow="fold")
    options = ", ".join(f"{k}={v}" for k, v in run.strategy_options.items())
    facts.add_row("strategy", f"{run.strategy} ({options})" if options else run.strategy)
    _, lev, h, w = run.grid.shape
    facts.add_row("grid", f"{', '.join(run.grid.variables)} x {lev} levels x {h} x {w}")
    split = run.split
    facts.add_row(
        "data",
        f"{split.train.size} training, {split.validation.size} validation fields "
        f"(gap {split.gap_hours:g} h, {split.dropped} dropped)",
    )
    facts.add_row("parameters", f"{r.parameters:,}")
    facts.add_row("steps", f"{r.step} (batch {run.config.batch_size}, device {run.device})")
    facts.add_row("samples/s", f"{r.samples_per_second:.1f}")
    facts.add_row("train loss", "-" if r.train_loss is None else f"{r.train_loss:.4f}")
    start = "" if r.initial_val_loss is None else f" (start {r.initial_val_loss:.4f})"
    facts.add_row("val loss", "-" if r.val_loss is None else f"{r.val_loss:.4f}{start}")
    facts.add_row("wall time", f"{r.wall_seconds:.1f} s")
    facts.add_row("checkpoint", str(r.checkpoint))
    facts.add_row("loss log", f"{r.loss_csv}, {r.loss_plot}")
    console.print(facts)


@app.command()
def fidelity(
    checkpoint: Annotated[
        str, typer.Option(help="Checkpoint directory, or default / default-layer2d.")
    ],
    data: Annotated[Path, typer.Option(help="Held-out model data (archive or NetCDF).")],
    out: Annotated[Path, typer.Option(help="Directory for fidelity.json and the plots.")],
    members: Annotated[int, typer.Option(help="Unconditional members to draw.")] = 64,
    steps: Annotated[int, typer.Option(help="Sampler steps.")] = 32,
    method: Annotated[str, typer.Option(help="heun, euler or stochastic.")] = "heun",
    seed: Annotated[int, typer.Option(help="Window seed of the members.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Members per denoiser batch.")] = 8,
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
    from genda.orchestration.fidelity import prior_fidelity

    if method not in ("heun", "euler", "stochastic"):
        raise _fail(f"unknown sampling method {method!r}; use heun, euler or stochastic")
    run = prior_fidelity(
        checkpoint,
        data,
        out,
        members=members,
        steps=steps,
        method=method,
        seed=seed,  # type: ignore[arg-type]
        batch_size=batch_size,
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


@app.command()
def observe(
    truth: Annotated[Path, typer.Option(help="Archive (Zarr or NetCDF) to observe.")],
    time_: Annotated[str, typer.Option("--time", help="Time of the archive, ISO (UTC).")],
    out: Annotated[Path, typer.Option(help="Observation table to write (.parquet, .csv, .nc).")],
    network: Annotated[
        str, typer.Option(help="Comma-separated networks: radars, lidars, limb (mls, saber).")
    ] = "radars,lidars,limb",
    seed: Annotated[int, typer.Option(help="Seed of the observation errors.")] = 0,
    withhold: Annotated[
        str, typer.Option(help="Comma-separated stations kept out, written to <out>-withheld.")
    ] = "",
    overwrite: Annotated[
        bool, typer.Option(help="Replace existing observation tables at --out.")
    ] = False,
) -> None:
    """Draw synthetic observations (with their errors) from a truth archive."""
    from genda.observations import observe_to_file

    stations = [name.strip() for name in withhold.split(",") if name.strip()]
    result = observe_to_file(
        truth, time_, network, out, seed, withhold=stations, overwrite=overwrite
    )
    table = Table(title=f"observations at {result['time']}", header_style="bold")
    table.add_column("network")
    table.add_column("variables")
    table.add_column("count", justify="right")
    for name, counts in result["counts"].items():
        table.add_row(name, ", ".join(counts), str(sum(counts.values())))
    console.print(table)
    console.print(f"observations  {result['paths']['observations']} ({result['observations']})")
    if result["paths"]["withheld"]:
        console.print(f"withheld      {result['paths']['withheld']} ({result['withheld']})")


def _batch_size(text: str) -> tuple[int, bool]:
    """``--batch-size``: a positive integer, or ``auto`` (probe the device) -> (size, auto)."""
    if text.strip().lower() == "auto":
        return 8, True
    try:
        value = int(text)
    except ValueError:
        raise _fail(f"--batch-size takes a positive integer or 'auto', got {text!r}") from None
    if value < 1:
        raise _fail(f"--batch-size must be >= 1, got {value}")
    return value, False


@app.command()
def assimilate(
    obs: Annotated[
        Path | None, typer.Option(help="Observation table; omit to sample the prior.")
    ] = None,
    time_: Annotated[str, typer.Option("--time", help="Centre of the window, ISO (UTC).")] = "",
    out: Annotated[
        Path, typer.Option(help="Ensemble store (Zarr v3); created, or the window added.")
    ] = Path("ensemble.zarr"),
    checkpoint: Annotated[
        str, typer.Option(help="Checkpoint directory, or default / default-layer2d.")
    ] = "default",
    members: Annotated[int, typer.Option(help="Ensemble size.")] = 16,
    method: Annotated[str, typer.Option(help="Guidance: mmps, dps or sda.")] = "mmps",
    steps: Annotated[int, typer.Option(help="Sampler steps.")] = 32,
    sampler: Annotated[str, typer.Option(help="heun, euler or stochastic.")] = "heun",
    iterations: Annotated[int, typer.Option(help="MMPS solver (GMRES) iterations.")] = 3,
    covariance: Annotated[
        str,
        typer.Option(
            help="MMPS's Tweedie covariance: jacobian (the network's) or prior (the whitened "
            "prior's Gaussian part: no backward pass, whitened priors only)."
        ),
    ] = "jacobian",
    zeta: Annotated[float, typer.Option(help="DPS guidance strength.")] = 1.0,
    gamma: Annotated[float, typer.Option(help="SDA likelihood inflation gamma.")] = 0.1,
    corrections: Annotated[
        int | None, typer.Option(help="Langevin corrections per step (SDA default 1).")
    ] = None,
    batch_size: Annotated[
        str, typer.Option(help="Members per denoiser batch, or 'auto' (probe each GPU).")
    ] = "8",
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
    ] = 5.0,  # genda.observations.qc.DEFAULT_OUTLIER_K (not imported: it loads torch)
    keep_outliers: Annotated[
        bool, typer.Option(help="Assimilate the observations the background check flags.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Experiment seed (hashed with the time).")] = 0,
    device: Annotated[str, typer.Option(help="torch device: cpu or cuda.")] = "cpu",
    workers: Annotated[
        int, typer.Option(help="Ray actors (one per GPU with cuda); 0: in this process.")
    ] = 0,
    threads_per_worker: Annotated[
        int, typer.Option(help="CPU workers: torch threads (Ray CPUs) per actor.")
    ] = 1,
    ray_address: Annotated[
        str | None,
        typer.Option(help="Running Ray cluster (else RAY_ADDRESS, else start a local one)."),
    ] = None,
    insecure: InsecureOption = False,
    members_per_shard: Annotated[
        int | None, typer.Option(help="New store: members per shard file (1: no sharding).")
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(help="Replace an existing genda store (all its windows; nothing else)."),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm a very large store.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Sample a posterior ensemble for one window into a Zarr store; a rerun fills what is missing."""
    from genda.assimilation.posterior import PosteriorSettings
    from genda.orchestration.assimilate import assimilate_window

    if not time_:
        raise _fail("--time is required (the centre of the window, e.g. 2000-02-10T12:00)")
    size, auto_batch = _batch_size(batch_size)
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
    result = assimilate_window(
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
    )
    table = Table(title=f"{result['method']} ensemble", header_style="bold", show_header=False)
    table.add_row("store", f"{result['store']} (window {result['time']})")
    table.add_row("members", f"{result['members']} ({result['strategy']}, {result['steps']} steps)")
    where = "this process" if not result["workers"] else f"{result['workers']} Ray workers"
    if result["cluster"]:
        where += f" on {result['cluster']}"
    if result["written"]:
        rate = f"{result['members_per_second']:.2f} members/s"
        table.add_row(
            "made now",
            f"{result['written']} in {result['seconds']:.1f} s ({rate}, {where}, "
            f"batch {result['batch_size']})",
        )
    if result["already_complete"]:
        table.add_row("already stored", str(result["already_complete"]))
    table.add_row("failures retried", str(result["failures_retried"]))
    if "fit" in result:
        fit, clim = result["fit"], result["level_mean_fit"]
        table.add_row("observations", str(result["observations"]))
        outliers = ", ".join(f"{k} {n}" for k, n in result["outliers_by_variable"].items())
        table.add_row(
            "outliers",
            f"{result['outliers']}"
            + (f" ({outliers})" if outliers else "")
            + (", kept" if result["outliers_kept"] else ", left out" if outliers else ""),
        )
        table.add_row(
            "fit (rms (y - Hx)/sigma)",
            f"{fit['rms_normalised_innovation']:.2f} ensemble mean, "
            f"{clim['rms_normalised_innovation']:.2f} training mean per level",
        )
        table.add_row("spread at obs / sigma", f"{fit['mean_spread_over_sigma']:.2f}")
    console.print(table)


@app.command()
def query(
    store: Annotated[Path, typer.Argument(help="Ensemble store (Zarr).")],
    var: Annotated[str, typer.Option(help="Variable: u, v or T.")],
    alt: Annotated[float, typer.Option(help="Altitude (km); the nearest level is used.")],
    time_: Annotated[
        str | None, typer.Option("--time", help="One window (ISO); default: every window.")
    ] = None,
    stat: Annotated[str, typer.Option(help="mean, std, q05, q50, q95, or members.")] = "mean",
    out: Annotated[
        Path | None, typer.Option(help="Write the result to .csv or .nc; else print a summary.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out file.")] = False,
) -> None:
    """One variable of an ensemble store at one level: a statistic or the members."""
    from genda.ownership import check_file_replaceable
    from genda.storage import query as query_store
    from genda.storage.ensemble_export import to_file

    if out is not None:
        check_file_replaceable(out, overwrite)
    da = query_store(store, var, alt, time=time_, stat=stat)  # type: ignore[arg-type]
    if out is not None:
        to_file(da, out)
    values = da.values
    table = Table(
        title=f"{var} {stat} at {float(da['altitude']):g} km",
        header_style="bold",
        show_header=False,
    )
    table.add_row("dims", ", ".join(f"{d} {n}" for d, n in da.sizes.items()))
    if "time" in da.dims:
        times = [str(t)[:19] for t in da["time"].values]
        table.add_row("windows", f"{times[0]} .. {times[-1]}" if times else "none")
    if values.size:
        units = da.attrs.get("units", "")
        table.add_row(
            "min / mean / max",
            f"{np.nanmin(values):.4g} / {np.nanmean(values):.4g} / {np.nanmax(values):.4g} {units}",
        )
    if out is not None:
        table.add_row("written", str(out))
    console.print(table)


@app.command("validate")
def validate_command(
    store: Annotated[Path, typer.Argument(help="Ensemble store (Zarr).")],
    repair: Annotated[
        bool,
        typer.Option(
            help="Remove undecodable chunk files and clear the complete flags of damaged "
            "members, so that a rerun of their windows regenerates them."
        ),
    ] = False,
) -> None:
    """Check an ensemble store (every member flagged complete, every statistic); exit 1 on problems."""
    from genda.storage import EnsembleStore

    ensemble = EnsembleStore.open(store)
    check = ensemble.validate()
    if check.ok:
        count = len(ensemble.windows())
        console.print(
            f"{store}: no problems ({count} window{'s' if count != 1 else ''} checked)",
            soft_wrap=True,
            highlight=False,
        )
        return
    for problem in check.problems:
        console.print(f"problem: {problem}", soft_wrap=True, highlight=False)
    if not repair:
        hint = (
            "; 'genda validate --repair' makes a rerun regenerate them" if check.repairable else ""
        )
        raise _fail(f"{store} has {len(check.problems)} problems{hint}")
    done = ensemble.repair(check)
    for file in done.removed:
        console.print(f"removed: {file}", soft_wrap=True, highlight=False)
    for window, members in done.unflagged.items():
        console.print(
            f"a rerun of window {window} (same settings) regenerates members {list(members)}",
            soft_wrap=True,
            highlight=False,
        )
    for window in done.unfinalised:
        if window not in done.unflagged:
            console.print(
                f"a rerun of window {window} recomputes its statistics",
                soft_wrap=True,
                highlight=False,
            )
    remaining = ensemble.validate()
    for problem in remaining.problems:
        console.print(f"remaining: {problem}", soft_wrap=True, highlight=False)
    if not remaining.ok:
        raise _fail(f"{store} keeps {len(remaining.problems)} problems that a repair cannot fix")
    console.print(f"{store}: repaired", soft_wrap=True, highlight=False)


@app.command()
def cycle(
    config: Annotated[Path, typer.Option(help="Cycle configuration (YAML, docs/cycles.md).")],
) -> None:
    """Run an assimilation cycle now: every window of the configuration, as Prefect flows."""
    from genda.orchestration.config import load_cycle_config

    settings = load_cycle_config(config)
    from genda.orchestration.flows import assimilation_cycle

    results = assimilation_cycle(settings)
    table = Table(title=f"cycle {config.name}", header_style="bold")
    for name in ("window", "observations", "members made", "members/s", "retried", "result"):
        table.add_column(name)
    failed = 0
    for result in results:
        if "error" in result:
            failed += 1
            table.add_row(
                result["time"], "", "", "", "", f"[red]{escape(str(result['error']))}[/red]"
            )
            continue
        ensemble = result["ensemble"]
        outcome = "stored"
        if result["evaluation"]:
            outcome = f"report {Path(result['evaluation']['metrics_path']).parent}"
        table.add_row(
            result["time"],
            str(result["observations"]),
            f"{ensemble['written']} (+{ensemble['already_complete']} stored)",
            f"{ensemble['members_per_second']:.2f}" if ensemble["written"] else "-",
            str(ensemble["failures_retried"]),
            outcome,
        )
    console.print(table)
    console.print(f"store  {settings.store}")
    if failed:
        raise _fail(f"{failed} of {len(results)} windows failed; rerun to resume them")


@app.command()
def serve(
    config: Annotated[Path, typer.Option(help="Cycle configuration (YAML, docs/cycles.md).")],
    cron: Annotated[
        str | None, typer.Option(help="Cron schedule, e.g. '0 * * * *' (hourly).")
    ] = None,
    interval: Annotated[
        float | None, typer.Option(help="Or a schedule every INTERVAL seconds.")
    ] = None,
    name: Annotated[str, typer.Option(help="Deployment name.")] = "genda-cycle",
    server_log: Annotated[
        Path | None, typer.Option(help="Output of a Prefect server started here.")
    ] = None,
) -> None:
    """Serve a cycle as a scheduled Prefect deployment: each run takes the next due window."""
    from genda.orchestration.flows import prefect_environment

    prefect_environment()
    from genda.orchestration.serve import serve_cycle

    serve_cycle(config, cron=cron, interval_seconds=interval, name=name, log=server_log)


@app.command()
def evaluate(
    ensemble: Annotated[Path, typer.Option(help="Ensemble store (Zarr) to verify.")],
    truth: Annotated[Path, typer.Option(help="Truth archive or model output.")],
    out: Annotated[Path, typer.Option(help="Directory for metrics.json and the plots.")],
    obs: Annotated[
        Path | None, typer.Option(help="Assimilated observations (marked on the maps).")
    ] = None,
    withheld: Annotated[
        Path | None, typer.Option(help="Withheld observations, scored at their points.")
    ] = None,
    baseline: Annotated[
        list[str] | None,
        typer.Option(help="NAME=STORE of a baseline ensemble; repeat for several."),
    ] = None,
    level: Annotated[float | None, typer.Option(help="Altitude (km) of the maps.")] = None,
    time_: Annotated[
        str | None, typer.Option("--time", help="Time to verify when the store has several.")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an earlier report at --out (nothing else).")
    ] = False,
) -> None:
    """Score an ensemble against the truth: CRPS, RMSE, spread, spread-skill, rank histograms."""
    from genda.evaluation.report import evaluate_paths
    from genda.evaluation.scores import format_table

    baselines: dict[str, str] = {}
    for item in baseline or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise _fail(f"--baseline takes NAME=STORE, got {item!r}")
        baselines[name] = path
    metrics = evaluate_paths(
        ensemble,
        truth,
        out,
        time=time_,
        obs_path=obs,
        withheld_path=withheld,
        baseline_paths=baselines,
        level_km=level,
        overwrite=overwrite,
    )
    console.print(format_table(metrics["ensemble"], title=f"{ensemble.name} against the truth"))
    for name, scores in metrics["baselines"].items():
        console.print(format_table(scores, title=f"baseline {name}"))
    if metrics.get("withheld"):
        console.print(format_table(metrics["withheld"], title="at the withheld observations"))
    fidelity = metrics.get("posterior_fidelity")
    if fidelity:
        table = Table(title="members against model data", header_style="bold")
        start = fidelity["worst_power_error_from_degree"]
        for name in ("variable", f"max |power ratio - 1|, l >= {start}", "vertical corr. error"):
            table.add_column(name, justify="left" if name == "variable" else "right")
        for name, error in fidelity["worst_power_error"].items():
            correlation = fidelity["vertical_correlation_error"][name]
            table.add_row(name, f"{error:.2f}", f"{correlation:.3f}")
        console.print(table)
    console.print(f"metrics  {out / 'metrics.json'}")
    for path in metrics["plots"].values():
        console.print(f"figure   {path}")


@app.command()
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

    result = baseline_window(
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
    table = Table(title=f"{result['method']} baseline", header_style="bold", show_header=False)
    table.add_row("store", result["store"])
    table.add_row("members", str(result["members"]))
    table.add_row(
        "archive states",
        f"{result['states']} {'hour-matched' if result['hour_matched'] else 'of any hour'}",
    )
    if result["horizontal_km"] is not None:
        half_widths = [
            f"{value:g} km" if isinstance(value, int | float) else f"{value} km"
            for value in (result["horizontal_km"], result["vertical_km"])
        ]
        table.add_row("localisation", f"horizontal {half_widths[0]}, vertical {half_widths[1]}")
    table.add_row("time", f"{result['seconds']:.1f} s")
    if result.get("fit"):
        table.add_row("observations", str(result["observations"]))
        table.add_row(
            "fit (rms (y - Hx)/sigma)",
            f"{result['fit']['rms_normalised_innovation']:.2f} ensemble mean, "
            f"{result['climatology_fit']['rms_normalised_innovation']:.2f} climatology",
        )
    console.print(table)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Directory for the demo's files.")] = Path(
        "outputs/demo"
    ),
    members: Annotated[int, typer.Option(help="Ensemble size.")] = 16,
    steps: Annotated[int, typer.Option(help="Sampler steps.")] = 16,
    workers: Annotated[int, typer.Option(help="Ray actors; 0: in this process.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the truth run and the observations.")] = 2,
    insecure: InsecureOption = False,
) -> None:
    """The main job on the embedded default: simulate, observe, assimilate, evaluate."""
    import os

    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")  # the summary below says it all
    from genda.orchestration.flows import prefect_environment

    prefect_environment()
    from genda.orchestration import run_demo

    start = time.perf_counter()
    result = run_demo(
        out, members=members, steps=steps, workers=workers, seed=seed, insecure=insecure
    )
    wall = time.perf_counter() - start
    window = result.window
    ensemble, evaluation = window["ensemble"], window["evaluation"]
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column(overflow="fold")
    facts.add_row("window", f"{window['time']} ({window['observations']} observations)")
    facts.add_row(
        "ensemble",
        f"{ensemble['members']} members, {ensemble['method']}, {ensemble['steps']} steps, "
        f"{ensemble['strategy']} prior, {ensemble['workers'] or 'no'} Ray workers",
    )
    fit = ensemble["fit"]["rms_normalised_innovation"]
    reference = ensemble["level_mean_fit"]["rms_normalised_innovation"]
    facts.add_row("fit", f"rms (y - Hx)/sigma {fit:.2f} (training mean per level {reference:.2f})")
    facts.add_row("wall time", f"{wall:.0f} s")
    console.print(facts)
    scores = Table(title="against the truth (global)", header_style="bold")
    for name in ("variable", "ensemble", "CRPS", "RMSE", "spread", "spread/skill"):
        scores.add_column(name, justify="left" if name in ("variable", "ensemble") else "right")
    rows = [("genda", evaluation["scores"]), *evaluation["baselines"].items()]
    for variable, units in evaluation["units"].items():
        for label, table in rows:
            s = table[variable]
            scores.add_row(
                f"{variable} ({units})",
                label,
                f"{s['crps']:.2f}",
                f"{s['rmse']:.2f}",
                f"{s['spread']:.2f}",
                f"{s['spread_skill']:.2f}",
            )
    console.print(scores)
    report = Path(evaluation["metrics_path"]).parent
    console.print(
        f"truth         {result.truth}\n"
        f"observations  {result.observations}"
        + (f" (withheld: {result.withheld})" if result.withheld else "")
        + f"\nensemble      {result.store}   (xarray.open_zarr; genda query)\n"
        f"baseline      {result.baseline}\n"
        f"report        {report} (metrics.json and the plots)"
    )


if __name__ == "__main__":  # pragma: no cover
    app()
