"""Which coordinates a prior's diffusion runs in, as a checkpoint records them.

``grid`` (no entry in ``config.json``): the normalised fields themselves, as
genda 0.1's priors. ``whitened``: the control variables ``z`` of
:class:`genda.models.whitening.SpectralWhitening` (``x = mu + U z``), the
entry ``"coordinates": {"kind": "spectral-whitening", ...}``; the transform's
statistics are buffers of the denoiser, saved (and checksummed) with the
weights. The square root of the covariance follows the strategy: ``joint3d``
takes the eigen-directions of every variable and level of a mode;
``layer2d`` the cascade, lower-triangular in level order, so that each layer
of ``z`` belongs to one level while the Gaussian part's vertical covariance
stays in the transform. Priors whose levels were whitened apart
(``"levels"``) still load. Trajectory priors (``genda train --states K``) take
the ``"causal"`` square root, lower-triangular in time order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from genda.errors import InvalidValueError
from genda.grid import Grid
from genda.models.diffusion import EDMDenoiser
from genda.models.whitening import SpectralWhitening
from genda.normalization import Normalization
from genda.trajectory import trajectory_states

__all__ = [
    "COORDINATES",
    "DEFAULT_TIDES",
    "build_coordinates",
    "coordinates_config",
    "coupling_for",
    "fit_coordinates",
    "unfitted_statistics",
]

COORDINATES = ("grid", "whitened")
"""The coordinates a prior can be trained in (``genda train --coordinates``)."""

_KIND = "spectral-whitening"

DEFAULT_TIDES = 3
"""Solar-day harmonics in a new whitened prior's mean: the diurnal, semidiurnal
and terdiurnal tides, which carry nearly all the migrating tides' variance."""


def coupling_for(strategy: str, states: int = 1) -> str:
    """The covariance coupling of a new prior: eigen-directions of whole columns for ``joint3d``;
    for ``layer2d``, whose network sees one layer of ``z`` and its neighbours, the cascade,
    whose ``z`` layer ``k`` is level ``k``'s innovation on the levels below. A trajectory
    of ``states > 1`` hourly states takes the causal square root with either strategy: the
    cascade in time order, so that its first states are made of their own ``z`` alone
    (:mod:`genda.assimilation.conditioning`) and each ``z`` layer is still one level's."""
    if states > 1:
        return "causal"
    return "cascade" if strategy == "layer2d" else "columns"


def coordinates_config(denoiser: EDMDenoiser) -> dict[str, Any] | None:
    """``config.json``'s ``"coordinates"``: ``None`` for grid coordinates."""
    module = denoiser.coordinates
    if module is None:
        return None
    if not isinstance(module, SpectralWhitening):
        raise TypeError(f"checkpoints describe SpectralWhitening or none, not {type(module)}")
    return dict(module.config())


def build_coordinates(
    grid: Grid, normalization: Normalization, config: Mapping[str, Any] | None
) -> SpectralWhitening | None:
    """The (unfitted) transform that a ``"coordinates"`` entry describes, or ``None``.

    Raises:
        InvalidValueError: an unknown kind, or settings the grid cannot carry.
    """
    if config is None:
        return None
    if not isinstance(config, Mapping) or config.get("kind") != _KIND:
        raise InvalidValueError(
            f"unknown coordinates {config!r}; this genda builds {_KIND!r} or none"
        )
    options = {k: v for k, v in config.items() if k != "kind"}
    try:
        return SpectralWhitening(grid, normalization, **options)
    except TypeError as error:  # an unknown or missing option of the entry
        raise InvalidValueError(f"invalid coordinates {dict(config)}: {error}") from None


def fit_coordinates(
    coordinates: str,
    strategy: str,
    grid: Grid,
    normalization: Normalization,
    batches: Iterable[tuple[torch.Tensor, Any]],
    tides: int | None = None,
) -> SpectralWhitening | None:
    """The transform of a new prior in ``coordinates``, fitted to normalised training fields.

    ``batches`` yields ``(fields (B, V, L, H, W), UT hours (B,))``; ``tides``
    (default :data:`DEFAULT_TIDES`) solar-day harmonics go into the mean.

    Raises:
        InvalidValueError: unknown ``coordinates``, tides for grid coordinates,
            or fields that cannot estimate the transform.
    """
    if coordinates not in COORDINATES:
        raise InvalidValueError(f"unknown coordinates {coordinates!r}; choose one of {COORDINATES}")
    if coordinates == "grid":
        if tides:
            raise InvalidValueError(
                "a time-of-day mean (tides) needs whitened coordinates; "
                "grid coordinates have no mean to make follow the hour"
            )
        return None
    count = DEFAULT_TIDES if tides is None else tides
    coupling = coupling_for(strategy, trajectory_states(grid))
    module = SpectralWhitening(grid, normalization, coupling=coupling, tides=count)
    return module.fit(batches)


def unfitted_statistics(module: nn.Module | None) -> bool:
    """The transform's covariances are all zero: it was never fitted (a damaged checkpoint)."""
    if not isinstance(module, SpectralWhitening):
        return False
    return not bool(torch.any(module.eigenvalues != 0))
