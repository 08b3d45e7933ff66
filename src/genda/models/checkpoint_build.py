"""Objects from a checkpoint's configuration, and the configuration of objects.

:func:`model_config` describes a denoiser (with its grid and normalisation)
as ``config.json``'s entries: the grid (:meth:`genda.grid.Grid.to_dict`), the
strategy (name and options), the architecture
(:attr:`genda.models.unet.UNet.config`), ``sigma_data``, the skip (``null``
for EDM's scalar ``c_skip``, or the settings of a
:class:`genda.models.gaussian_skip.GaussianSkip`, whose statistics are
buffers among the weights; absent in older checkpoints, read as ``null``),
the coordinates (absent for grid coordinates) and the normalisation
statistics (:meth:`genda.normalization.Normalization.to_dict`).
:func:`restore_denoiser` builds the objects back from these entries and
checks the weights against them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from genda.errors import InvalidValueError
from genda.grid import Grid, GridMismatchError
from genda.json_values import json_round_trip
from genda.models.calendar import Calendar
from genda.models.checkpoint_format import (
    CONFIG_FILE,
    MODEL_FILE,
    CheckpointContents,
    CheckpointError,
    CheckpointGridMismatchError,
    check_tensors,
)
from genda.models.coordinates import build_coordinates, coordinates_config, unfitted_statistics
from genda.models.diffusion import EDMDenoiser
from genda.models.gaussian_skip import SKIP_KIND, GaussianSkip
from genda.models.strategies import (
    Strategy,
    StrategyBackbone,
    build_backbone,
    get_strategy,
    network_shape,
)
from genda.models.unet import UNet
from genda.normalization import Normalization

__all__ = [
    "build_denoiser",
    "build_skip",
    "describe_denoiser",
    "model_config",
    "restore_denoiser",
    "skip_config",
]


# ---------------------------------------------------------------------------- objects -> config


def describe_denoiser(denoiser: EDMDenoiser) -> tuple[Strategy, UNet, StrategyBackbone]:
    """The strategy, U-Net and field backbone of a checkpointable denoiser.

    Raises:
        TypeError: ``denoiser`` is not ``EDMDenoiser(StrategyBackbone(strategy, UNet))``,
            the only structure a checkpoint describes.
    """
    if not isinstance(denoiser, EDMDenoiser):
        raise TypeError(f"expected an EDMDenoiser, got {type(denoiser).__name__}")
    backbone = denoiser.backbone
    if not isinstance(backbone, StrategyBackbone) or not isinstance(backbone.network, UNet):
        raise TypeError(
            "checkpoints describe EDMDenoiser(StrategyBackbone(strategy, UNet)) "
            "(genda.models.strategies.build_backbone); got a backbone of type "
            f"{type(backbone).__name__}"
        )
    return backbone.strategy, backbone.network, backbone


def skip_config(denoiser: EDMDenoiser) -> dict[str, Any] | None:
    """``config.json``'s ``"skip"``: ``None`` for EDM's scalar ``c_skip``."""
    skip = denoiser.skip
    if skip is None:
        return None
    if not isinstance(skip, GaussianSkip):
        raise TypeError(f"checkpoints describe a GaussianSkip or none, not {type(skip).__name__}")
    return skip.config()


def model_config(denoiser: EDMDenoiser, grid: Grid, normalization: Normalization) -> dict[str, Any]:
    """The entries of ``config.json`` that describe the model, from ``"grid"`` to ``"normalization"``.

    Raises:
        TypeError: the denoiser has another structure (:func:`describe_denoiser`).
        GridMismatchError: ``grid`` or ``normalization`` do not fit the model.
    """
    strategy, network, backbone = describe_denoiser(denoiser)
    if not np.allclose(backbone.altitudes, grid.altitude, atol=1e-6, rtol=0):
        raise GridMismatchError(
            f"the backbone's levels {backbone.altitudes.tolist()} km are not the grid's "
            f"{grid.altitude.tolist()} km"
        )
    expected = network_shape(strategy, grid, backbone.calendar)
    actual = (network.in_channels, network.out_channels, network.cond_dim)
    if expected != actual:
        raise GridMismatchError(
            f"the network has (in, out, cond) channels {actual}; strategy {strategy.name!r} "
            f"needs {expected} on this grid"
        )
    if normalization.variables != grid.variables or normalization.mean.shape != (
        len(grid.variables),
        grid.nlevels,
    ):
        raise GridMismatchError(
            f"normalisation for {list(normalization.variables)} x {normalization.mean.shape[1]} "
            f"levels does not fit the grid's {list(grid.variables)} x {grid.nlevels}"
        )
    return {
        "grid": grid.to_dict(),
        "strategy": {"name": strategy.name, "options": strategy.options()},
        "architecture": {"backbone": "unet", "config": network.config},
        "sigma_data": denoiser.sigma_data,
        "skip": skip_config(denoiser),
        # absent for grid coordinates, so that such checkpoints read as before
        **({"coordinates": c} if (c := coordinates_config(denoiser)) else {}),
        # absent without time inputs, so that such checkpoints read as before
        **({"calendar": backbone.calendar.config()} if backbone.calendar else {}),
        "normalization": normalization.to_dict(),
    }


# ---------------------------------------------------------------------------- config -> objects
def build_skip(grid: Grid, config: Mapping[str, Any] | None) -> GaussianSkip | None:
    """The (unfitted) skip module that ``config.json``'s ``"skip"`` describes.

    Raises:
        CheckpointError: an unknown kind, or settings that do not fit ``grid``.
    """
    if config is None:
        return None
    if not isinstance(config, Mapping) or config.get("kind") != SKIP_KIND:
        raise CheckpointError(f"unknown skip {config!r}; this genda builds {SKIP_KIND!r} or none")
    try:
        return GaussianSkip(
            grid, truncation=config.get("truncation"), channels=config.get("channels")
        )
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"invalid skip {dict(config)}: {error}") from error


def build_denoiser(
    strategy: Strategy,
    grid: Grid,
    architecture: Mapping[str, Any],
    sigma_data: float = 1.0,
    skip: Mapping[str, Any] | None = None,
    coordinates: Mapping[str, Any] | None = None,
    normalization: Normalization | None = None,
    calendar: Mapping[str, Any] | None = None,
) -> EDMDenoiser:
    """``EDMDenoiser(build_backbone(strategy, grid, ...))`` from a stored ``UNet.config``.

    The channel counts, ``cond_dim`` and ``pole_sign`` of ``architecture`` must
    be those that ``strategy`` gives on ``grid``. ``skip`` is the stored skip
    configuration (``None``: EDM's scalar ``c_skip``); its buffers come with the weights.
    ``coordinates`` is the stored ``"coordinates"`` entry (``None``: grid
    coordinates; :mod:`genda.models.coordinates`), which needs ``normalization``.
    ``calendar`` is the stored ``"calendar"`` entry (``None``: the network sees
    no time; :mod:`genda.models.calendar`).

    Raises:
        CheckpointError: the architecture or skip does not fit the strategy and grid,
            or is not a valid U-Net configuration.
    """
    fixed = ("in_channels", "out_channels", "cond_dim", "pole_sign")
    options = {k: v for k, v in architecture.items() if k not in fixed}
    try:
        backbone = build_backbone(strategy, grid, Calendar.from_config(calendar), **options)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"invalid architecture {dict(architecture)}: {error}") from error
    built = backbone.network.config
    wrong = [
        f"{k}: {architecture.get(k)!r} stored, {built[k]!r} for strategy {strategy.name!r} on this grid"
        for k in built
        if k in architecture and json_round_trip(architecture[k]) != json_round_trip(built[k])
    ]
    missing = [k for k in built if k not in architecture]
    if wrong or missing:
        details = "; ".join(wrong + [f"{k}: missing" for k in missing])
        raise CheckpointError(f"architecture does not match strategy and grid: {details}")
    transform = None
    if coordinates is not None:
        if normalization is None:
            raise CheckpointError("coordinates need the checkpoint's normalization")
        try:
            transform = build_coordinates(grid, normalization, coordinates)
        except InvalidValueError as error:
            raise CheckpointError(str(error)) from error
    return EDMDenoiser(
        backbone, sigma_data=sigma_data, skip=build_skip(grid, skip), coordinates=transform
    )


def _objects_from_config(
    config: Mapping[str, Any], config_file: Path, expected_grid: Grid | None
) -> tuple[Grid, Normalization, Strategy, EDMDenoiser]:
    """Grid, normalisation, strategy and an (untrained) denoiser from ``config.json``."""
    grid = _grid_from_config(config, config_file, expected_grid)
    normalization = _normalization_from_config(config, config_file, grid)
    strategy = _strategy_from_config(config, config_file)
    denoiser = _denoiser_from_config(config, config_file, strategy, grid, normalization)
    return grid, normalization, strategy, denoiser


def _grid_from_config(
    config: Mapping[str, Any], config_file: Path, expected_grid: Grid | None
) -> Grid:
    try:
        grid = Grid.from_dict(config["grid"])
    except (GridMismatchError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{config_file}: invalid grid: {error}") from error
    if expected_grid is not None:
        problems = grid.differences(expected_grid)
        if problems:
            raise CheckpointGridMismatchError(
                f"{config_file}: the checkpoint's grid differs from the expected grid (checkpoint "
                "vs expected): " + "; ".join(problems)
            )
    return grid


def _normalization_from_config(
    config: Mapping[str, Any], config_file: Path, grid: Grid
) -> Normalization:
    try:
        normalization = Normalization.from_dict(config["normalization"])
    except (GridMismatchError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{config_file}: invalid normalization: {error}") from error
    if normalization.variables != grid.variables or normalization.mean.shape != (
        len(grid.variables),
        grid.nlevels,
    ):
        raise CheckpointError(
            f"{config_file}: normalization for {list(normalization.variables)} x "
            f"{normalization.mean.shape[1]} levels does not fit the grid "
            f"({list(grid.variables)} x {grid.nlevels})"
        )
    return normalization


def _strategy_from_config(config: Mapping[str, Any], config_file: Path) -> Strategy:
    spec = config["strategy"]
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
        raise CheckpointError(f"{config_file}: 'strategy' must be {{'name': ..., 'options': ...}}")
    try:
        strategy = get_strategy(spec["name"], **dict(spec.get("options") or {}))
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{config_file}: invalid strategy: {error}") from error
    return strategy


def _denoiser_from_config(
    config: Mapping[str, Any],
    config_file: Path,
    strategy: Strategy,
    grid: Grid,
    normalization: Normalization,
) -> EDMDenoiser:
    """The (untrained) denoiser of the architecture, ``sigma_data``, skip and coordinates."""
    arch = config["architecture"]
    if not isinstance(arch, Mapping) or arch.get("backbone") != "unet":
        raise CheckpointError(
            f"{config_file}: unknown architecture {arch!r}; this genda builds 'unet' backbones"
        )
    if not isinstance(arch.get("config"), Mapping):
        raise CheckpointError(f"{config_file}: architecture has no 'config' object")
    sigma_data = config["sigma_data"]
    if not isinstance(sigma_data, int | float) or not (
        math.isfinite(sigma_data) and sigma_data > 0
    ):
        raise CheckpointError(
            f"{config_file}: sigma_data must be a positive number, got {sigma_data!r}"
        )
    try:
        denoiser = build_denoiser(
            strategy,
            grid,
            arch["config"],
            float(sigma_data),
            config.get("skip"),
            config.get("coordinates"),
            normalization,
            config.get("calendar"),
        )
    except CheckpointError as error:
        raise CheckpointError(f"{config_file}: {error}") from error
    return denoiser


def restore_denoiser(
    contents: CheckpointContents,
    expected_grid: Grid | None = None,
    weights: str = "ema",
) -> tuple[EDMDenoiser, Grid, Normalization, Strategy]:
    """Rebuild the denoiser of ``contents`` with its ``"ema"`` or ``"model"`` (raw) weights, on the CPU.

    Both weight sets are checked against the architecture (names, shapes).

    Raises:
        CheckpointError: see :func:`genda.models.checkpoint.load_checkpoint`.
    """
    config_file = contents.path / CONFIG_FILE
    grid, normalization, strategy, denoiser = _objects_from_config(
        contents.config, config_file, expected_grid
    )
    if weights not in ("ema", "model"):
        raise InvalidValueError(f"weights must be 'ema' or 'model', got {weights!r}")
    model_file = contents.path / MODEL_FILE
    ema = check_tensors(contents.ema, denoiser, "EMA", model_file)
    raw = check_tensors(contents.model, denoiser, "raw", model_file)
    denoiser.load_state_dict(ema if weights == "ema" else raw, strict=True)
    if unfitted_statistics(denoiser.coordinates):
        raise CheckpointError(
            f"{model_file}: the statistics of the whitened coordinates are all zero "
            "(never fitted, or damaged); retrain or restore the checkpoint"
        )
    return denoiser, grid, normalization, strategy
