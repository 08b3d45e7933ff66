"""Cost of the shipped whitened prior, as ratios measured in one run on one machine.

    python benchmarks/cost.py [--steps 32] [--members 8] [--batch-size 8] [--device cpu|cuda]
        [--repeats 50] [--warmup 3] [--rounds 1] [--threads N]

1. Per denoiser call on the default grid (32 x 64 x 8; u, v, T), batches of
   1 and 8: the shipped ``default`` prior (``joint3d`` in whitened spectral
   coordinates, called as ``prior.denoiser(x, sigma)`` on states of shape
   ``prior.state_shape``) against

   * genda 0.1's prior, in grid coordinates: an untrained denoiser of its
     architecture (:data:`OLD_PRIOR`, copied from the ``config.json`` of
     ``git show 8b40dc0:src/genda/models/checkpoints/default/config.json``,
     embedded so that the benchmark also runs from a source tarball; the
     weights do not change the speed), built with
     :func:`genda.models.checkpoint.build_denoiser` as a checkpoint is;
   * the same architecture as the shipped prior, in grid coordinates, with
     the shipped network weights: the ratio isolates the cost of the
     coordinate transform.

   Each call runs under ``torch.no_grad`` (as unconditional sampling does) at
   ``sigma = 1``. After ``--warmup`` calls of each model, ``--repeats`` calls
   of each are timed one at a time, the models taking turns in a rotating
   order so that a change in the machine's load falls on all of them. The
   seconds are medians; a ratio is the median over the repeats of the ratio
   of the two calls of one turn, which a slow drift of the load cancels from. Target (the open issue on the whitened prior): at most
   1.3 times genda 0.1's prior per call. The old prior and the grid twin
   have one architecture: their ratio, printed as a control row, is 1 up to
   the timing noise of the machine.

2. Per posterior member with the shipped prior, the guidance methods against
   an unconditional sample, through the one sampling path of ``genda
   assimilate``: :func:`genda.assimilation.posterior.sample_members` with the
   denoiser of :func:`~genda.assimilation.posterior.posterior_denoiser`
   (``obs=None`` for the unconditional sample) and
   :class:`~genda.assimilation.posterior.PosteriorSettings` (``method``,
   ``--steps``, ``--batch-size``; every other setting its default: MMPS with
   its solver iterations, SDA with its Langevin corrections). The
   observations are the station catalogue's meteor radars and lidars plus the
   MLS-like limb track (:func:`genda.observations.draw_observations`) drawn
   from a truth that is one unconditional member of the prior in physical
   units (default settings), checked by
   :func:`genda.observations.validate_observations`. Each method samples its
   first batch with two steps to warm up, then ``--members`` members
   in batches of ``--batch-size``; the time per member is the wall time over
   the members, the median over ``--rounds`` rounds (methods in a rotating
   order; on a busy machine take several). Target: MMPS at most 2.5 times an
   unconditional member. ``mmps`` is MMPS with the network's Jacobian
   (``covariance="jacobian"``, azula's); ``mmps-prior`` is MMPS with the whitened
   prior's Gaussian Tweedie covariance (``covariance="prior"``, no backward pass),
   what ``genda assimilate`` runs for the shipped priors (``"auto"``); its
   once-per-window set-up (``A`` and ``A A^T``) is reported apart, as
   ``window_setup_s``, since an ensemble of any size shares it.

The denoiser calls per batch (counted with a forward hook on the prior's
denoiser) are reported as context: Heun sampling makes ``2 steps - 1``;
guidance adds backward passes that are not calls. Seconds are context only;
the ratios are the result. The window's time :data:`WINDOW_TIME` is passed
to ``posterior_denoiser`` and ``sample_members`` (a prior whose mean follows
the time of day needs it).

Writes ``benchmarks/results/cost-<machine>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from _common import print_table, write_result

WINDOW_TIME = np.datetime64("2000-02-01T00:00")
"""The window's valid time: the limb track's position, and ``time=`` where the API takes it."""

NETWORKS = "radars,lidars,mls"
"""The observing networks of the window (:data:`genda.observations.networks.NETWORKS`)."""

BATCHES = (1, 8)
"""Batch sizes of the per-call comparison."""

CALL_TARGET = 1.3
"""Per denoiser call: the whitened prior at most this many times genda 0.1's prior."""
MMPS_TARGET = 2.5
"""Per member: MMPS at most this many times an unconditional sample."""

OLD_PRIOR: dict[str, Any] = {
    "source": (
        "src/genda/models/checkpoints/default/config.json at commit 8b40dc0 "
        "(genda 0.1.0, created 2026-11-25, `genda train --strategy joint3d "
        "--base-channels 24 --channel-mult 1,2,2,2`)"
    ),
    "grid": {"nlat": 32, "nlon": 64, "levels": 8, "kind": "legendre-gauss"},
    "strategy": "joint3d",
    "architecture": {
        "in_channels": 24,
        "out_channels": 24,
        "base_channels": 24,
        "channel_mult": [1, 2, 2, 2],
        "blocks_per_level": 1,
        "attention_levels": [],
        "cond_dim": 0,
        "noise_embedding_dim": 128,
        "dropout": 0.0,
        # u and v (8 levels each) change sign across a pole, T does not
        "pole_sign": [-1.0] * 16 + [1.0] * 8,
    },
    "sigma_data": 1.0,
    "skip": None,
    "coordinates": None,
    "parameters": 612888,
}
"""genda 0.1's shipped prior as its ``config.json`` recorded it (grid coordinates, no skip)."""


def old_prior_denoiser(grid: Any) -> nn.Module:
    """An untrained denoiser of genda 0.1's prior (:data:`OLD_PRIOR`) on ``grid``.

    Raises:
        SystemExit: ``grid`` is not the old prior's, or the built network does
            not have the recorded parameter count (the architecture then is
            not genda 0.1's any more).
    """
    from genda.grid import Grid
    from genda.models.checkpoint import build_denoiser
    from genda.models.strategies import get_strategy

    spec = OLD_PRIOR["grid"]
    expected = Grid.gaussian(spec["nlat"], spec["nlon"], spec["levels"])
    problems = grid.differences(expected)
    if problems:
        raise SystemExit(f"the grid is not genda 0.1's prior's: {'; '.join(problems)}")
    denoiser = build_denoiser(
        get_strategy(OLD_PRIOR["strategy"]),
        grid,
        OLD_PRIOR["architecture"],
        OLD_PRIOR["sigma_data"],
        OLD_PRIOR["skip"],
        OLD_PRIOR["coordinates"],
    )
    parameters = sum(p.numel() for p in denoiser.parameters())
    if parameters != OLD_PRIOR["parameters"]:
        raise SystemExit(
            f"genda 0.1's architecture builds {parameters} parameters here, "
            f"{OLD_PRIOR['parameters']} were recorded; the comparison would not be with that prior"
        )
    return denoiser


def grid_twin(prior: Any) -> nn.Module:
    """The shipped prior's architecture and network weights, in grid coordinates."""
    from genda.models.checkpoint import build_denoiser

    twin = build_denoiser(
        prior.strategy,
        prior.grid,
        prior.config["architecture"]["config"],
        prior.sigma_data,
        prior.config.get("skip"),
        None,
    )
    twin.backbone.load_state_dict(prior.denoiser.backbone.state_dict())
    return twin


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_calls(
    models: dict[str, tuple[nn.Module, tuple[int, ...]]],
    batch: int,
    warmup: int,
    repeats: int,
    device: str,
) -> dict[str, list[float]]:
    """Seconds of each of ``repeats`` calls per model, the models taking turns."""
    generator = torch.Generator().manual_seed(batch)
    inputs = {
        name: torch.randn((batch, *shape), generator=generator).to(device)
        for name, (_, shape) in models.items()
    }
    sigma = torch.ones(batch, device=device)
    names = list(models)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    with torch.no_grad():
        for _ in range(warmup):
            for name in names:
                models[name][0](inputs[name], sigma)
        for repeat in range(repeats):
            shift = repeat % len(names)
            for name in names[shift:] + names[:shift]:
                _sync(device)
                start = time.perf_counter()
                models[name][0](inputs[name], sigma)
                _sync(device)
                seconds[name].append(time.perf_counter() - start)
    return seconds


def paired_ratio(seconds: list[float], reference: list[float]) -> float:
    """Median over the repeats of the ratio of two calls made in one turn."""
    return statistics.median(a / b for a, b in zip(seconds, reference, strict=True))


def per_call(prior: Any, args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows of the per-call comparison, and its details."""
    torch.manual_seed(0)
    grid_shape = tuple(prior.grid.shape)
    models = {
        "whitened": (prior.denoiser, tuple(prior.state_shape)),
        "old": (old_prior_denoiser(prior.grid), grid_shape),
        "twin": (grid_twin(prior), grid_shape),
    }
    for name in ("old", "twin"):
        module = models[name][0].to(args.device).eval().requires_grad_(False)
        models[name] = (module, grid_shape)
    labels = {
        "whitened": "shipped default (whitened)",
        "old": "genda 0.1 prior (grid coordinates)",
        "twin": "same architecture (grid coordinates)",
    }
    rows, samples = [], {}
    for batch in BATCHES:
        seconds = time_calls(models, batch, args.warmup, args.repeats, args.device)
        samples[str(batch)] = seconds
        median = {name: statistics.median(values) for name, values in seconds.items()}
        comparisons = [  # a control last: one architecture twice, 1 up to the timing noise
            ("whitened", "old", f"<= {CALL_TARGET}"),
            ("whitened", "twin", "-"),
            ("twin", "old", "1 (control)"),
        ]
        for name, reference, target in comparisons:
            ratio = paired_ratio(seconds[name], seconds[reference])
            meets = "-" if target[0] != "<" else "yes" if ratio <= CALL_TARGET else "no"
            rows.append(
                {
                    "measurement": f"denoiser call, {labels[name]}",
                    "reference": labels[reference],
                    "batch": batch,
                    "seconds": median[name],
                    "reference_seconds": median[reference],
                    "ratio": ratio,
                    "target": target,
                    "meets": meets,
                    "denoiser_calls": 1,
                    "window_setup_s": "-",
                }
            )
    details = {
        "models": {
            name: {
                "parameters": sum(p.numel() for p in module.parameters()),
                "state_shape": list(shape),
                "coordinates": (
                    type(module.coordinates).__name__ if module.coordinates is not None else "grid"
                ),
            }
            for name, (module, shape) in models.items()
        },
        "call_seconds": samples,
    }
    return rows, details


def window_observations(prior: Any, args: argparse.Namespace) -> Any:
    """The window's observations, drawn from one unconditional member of the prior."""
    from genda.assimilation.posterior import (
        PosteriorSettings,
        posterior_denoiser,
        sample_members,
        window_seed,
    )
    from genda.observations import draw_observations, validate_observations

    settings = PosteriorSettings(batch_size=1)
    denoiser = posterior_denoiser(prior, None, settings, device=args.device, time=WINDOW_TIME)
    truth = sample_members(
        prior,
        denoiser,
        [0],
        window_seed(1, WINDOW_TIME),
        settings,
        guided=False,
        device=args.device,
        time=WINDOW_TIME,
    )
    dataset = prior.grid.to_dataset(truth[0])
    obs = draw_observations(dataset, prior.grid, WINDOW_TIME, NETWORKS, seed=0)
    return validate_observations(obs, prior.grid, source="the benchmark's observations")


def per_member(prior: Any, args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows of the per-member comparison of the guidance methods, and its details."""
    from genda.assimilation.posterior import (
        PosteriorSettings,
        posterior_denoiser,
        sample_members,
        window_seed,
    )

    obs = window_observations(prior, args)
    seed = window_seed(0, WINDOW_TIME)
    members = list(range(args.members))
    batches = [members[i : i + args.batch_size] for i in range(0, len(members), args.batch_size)]
    # "mmps-prior": MMPS with the whitened prior's Gaussian Tweedie covariance
    methods = ("unconditional", "mmps", "mmps-prior", "dps", "sda")
    runs = {}
    setup: dict[str, float] = {}
    for method in methods:
        guidance, *variant = method.split("-")
        settings = PosteriorSettings(
            method="mmps" if method == "unconditional" else guidance,
            covariance="prior" if "prior" in variant else "jacobian",
            steps=args.steps,
            batch_size=args.batch_size,
        )
        table = None if method == "unconditional" else obs
        start = time.perf_counter()
        denoiser = posterior_denoiser(prior, table, settings, device=args.device, time=WINDOW_TIME)
        setup[method] = time.perf_counter() - start  # once per window and worker
        runs[method] = (settings, denoiser, table is not None)

    calls = [0]

    def count(*_: Any) -> None:
        calls[0] += 1

    def run(method: str, chosen: list[list[int]], settings: Any) -> float:
        _, denoiser, guided = runs[method]
        _sync(args.device)
        start = time.perf_counter()
        for batch in chosen:
            sample_members(
                prior,
                denoiser,
                batch,
                seed,
                settings,
                guided=guided,
                device=args.device,
                time=WINDOW_TIME,
            )
        _sync(args.device)
        return time.perf_counter() - start

    for method in methods:  # warm-up: the first batch, two steps
        run(method, batches[:1], replace(runs[method][0], steps=2))
    seconds: dict[str, list[float]] = {method: [] for method in methods}
    calls_per_batch: dict[str, float] = {}
    hook = prior.denoiser.register_forward_hook(count)
    try:
        for round_ in range(args.rounds):
            shift = round_ % len(methods)
            for method in methods[shift:] + methods[:shift]:
                calls[0] = 0
                seconds[method].append(run(method, batches, runs[method][0]) / len(members))
                calls_per_batch[method] = calls[0] / len(batches)
    finally:
        hook.remove()
    per = {method: statistics.median(values) for method, values in seconds.items()}
    rows = []
    for method in methods[1:]:
        ratio = per[method] / per["unconditional"]
        target = method.startswith("mmps")
        rows.append(
            {
                "measurement": f"posterior member, {method}",
                "reference": "unconditional member",
                "batch": len(batches[0]),
                "seconds": per[method],
                "reference_seconds": per["unconditional"],
                "ratio": ratio,
                "target": f"<= {MMPS_TARGET}" if target else "-",
                "meets": ("yes" if ratio <= MMPS_TARGET else "no") if target else "-",
                "denoiser_calls": calls_per_batch[method],
                "window_setup_s": setup[method],
            }
        )
    details = {
        "member_seconds": seconds,
        "window_setup_seconds": setup,
        "denoiser_calls_per_batch": calls_per_batch,
        "posterior_settings": {
            method: {**settings.to_dict(), "guided": guided}
            for method, (settings, _, guided) in runs.items()
        },
        "observations": {
            "count": len(obs),
            "networks": {str(k): int(v) for k, v in obs["network"].value_counts().items()},
            "variables": {str(k): int(v) for k, v in obs["variable"].value_counts().items()},
        },
    }
    return rows, details


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default: 32)")
    parser.add_argument("--members", type=int, default=8, help="members per method")
    parser.add_argument("--batch-size", type=int, default=None, help="members per batch (8)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per model")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per model first")
    parser.add_argument("--rounds", type=int, default=1, help="timed samplings per method")
    parser.add_argument("--threads", type=int, default=None, help="torch threads on the CPU")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    from genda.assimilation.posterior import PosteriorSettings
    from genda.models.checkpoint import load_checkpoint

    defaults = PosteriorSettings()
    args.steps = defaults.steps if args.steps is None else args.steps
    args.batch_size = defaults.batch_size if args.batch_size is None else args.batch_size
    for name in ("steps", "members", "batch_size", "repeats", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")

    prior = load_checkpoint("default", device=args.device)
    call_rows, call_details = per_call(prior, args)
    member_rows, member_details = per_member(prior, args)
    rows = call_rows + member_rows
    extra = {
        "device": args.device,
        "settings": {
            "steps": args.steps,
            "members": args.members,
            "batch_size": args.batch_size,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "threads": torch.get_num_threads(),
            "window_time": str(WINDOW_TIME),
        },
        "targets": {"call_vs_old": CALL_TARGET, "mmps_vs_unconditional": MMPS_TARGET},
        "prior": {
            "checkpoint": prior.path.name,  # the name, not where it lies
            "weights_sha256": prior.weights_sha256,
            "coordinates": prior.config.get("coordinates"),
            "state_shape": list(prior.state_shape),
        },
        "old_prior": OLD_PRIOR,
        **call_details,
        **member_details,
    }
    path = write_result("cost", rows, extra)
    title = (
        f"cost of the whitened prior ({args.device}, {torch.get_num_threads()} threads; "
        f"{args.steps} steps, {args.members} members; seconds are context, ratios the result)"
    )
    print_table(title, rows)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
