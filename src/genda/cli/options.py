"""Options shared by several commands, and option text parsed into settings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Final

import typer

from genda.assimilation.posterior import PosteriorSettings
from genda.cli.group import fail
from genda.models.sampling import METHODS as SAMPLERS

POSTERIOR_DEFAULTS: Final = PosteriorSettings()
"""The defaults of the sampling options: :class:`PosteriorSettings`' own."""


def one_of(names: Sequence[str], first: str, notes: Mapping[str, str] | None = None) -> str:
    """``first``, then the other ``names`` in their order, as ``a (note), b or c``.

    ``notes``: a short explanation, in brackets after the name it explains.
    """
    notes = notes or {}
    ordered = [first, *(name for name in names if name != first)]
    shown = [f"{name} ({notes[name]})" if name in notes else name for name in ordered]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]


SAMPLER_HELP: Final = (
    one_of(
        SAMPLERS,
        POSTERIOR_DEFAULTS.sampler,
        {"exponential": "Heun with the unit Gaussian integrated exactly"},
    )
    + "."
)
"""``--sampler`` (``assimilate``, ``fidelity``): the sampler names, the default first."""

IconGridOption = Annotated[
    Path | None,
    typer.Option(help="ICON grid file (icon_grid_*.nc) for native output without clon/clat."),
]
"""``--icon-grid`` (``summary``, ``train``, ``ingest``): the mesh of ICON native output."""

IconTargetOption = Annotated[
    str | None,
    typer.Option(help="NLATxNLON Gaussian grid that ICON native output is remapped to."),
]
"""``--icon-target`` (``summary``, ``train``, ``ingest``): the grid ICON native output is remapped to."""

InsecureOption = Annotated[
    bool,
    typer.Option(
        "--insecure",
        help="Allow a local Ray cluster without token authentication (RAY_AUTH_MODE="
        "disabled; its ports are open to the network; also GENDA_RAY_INSECURE=1).",
    ),
]
"""``--insecure`` of the commands that may start a local Ray cluster."""

RayAddressOption = Annotated[
    str | None,
    typer.Option(help="Running Ray cluster (else RAY_ADDRESS, else start a local one)."),
]
"""``--ray-address`` of the commands that sample on Ray actors."""


def parse_channel_mult(text: str) -> list[int]:
    """``--channel-mult``: integers separated by commas, e.g. ``1,2,2``."""
    try:
        values = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise typer.BadParameter(f"expected integers separated by commas, got {text!r}") from None
    if not values:
        raise typer.BadParameter("expected at least one multiplier, e.g. 1,2,2")
    return values


def parse_grid_size(text: str, option: str = "--grid") -> tuple[int, int]:
    """``NLATxNLON`` (e.g. ``180x360``) -> ``(nlat, nlon)``; a usage error naming ``option``."""
    try:
        nlat, nlon = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(
            f"{option} must be NLATxNLON (e.g. 180x360), got {text!r}"
        ) from None
    return nlat, nlon


def parse_batch_size(text: str) -> tuple[int, bool]:
    """``--batch-size``: a positive integer, or ``auto`` (probe the device) -> (size, auto)."""
    from genda.orchestration.config import resolve_batch_size

    if text.strip().lower() == "auto":
        return resolve_batch_size("auto")
    try:
        value = int(text)
    except ValueError:
        raise fail(f"--batch-size takes a positive integer or 'auto', got {text!r}") from None
    if value < 1:
        raise fail(f"--batch-size must be >= 1, got {value}")
    return resolve_batch_size(value)


def command_line(ctx: typer.Context) -> str:
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


__all__ = [
    "POSTERIOR_DEFAULTS",
    "SAMPLER_HELP",
    "InsecureOption",
    "RayAddressOption",
    "command_line",
    "one_of",
    "parse_batch_size",
    "parse_channel_mult",
]
