"""What a planned run is: grid, levels, variables, network, coordinates, guidance and sampler.

:class:`RunSpec` holds the settings that decide the memory and the FLOPs of a
posterior member; :mod:`genda.planning.build` builds the real objects of one
(the network through the constructor checkpoints use), and
:mod:`genda.planning.model` prices it. Its checks raise :class:`PlanError`
with what is wrong and what would do instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from genda.errors import InvalidValueError, UnknownNameError
from genda.grid import VARIABLES
from genda.models.sampling import METHODS as SAMPLERS

__all__ = [
    "GUIDANCES",
    "STRATEGY_NAMES",
    "Guidance",
    "PlanError",
    "RunSpec",
    "poolable_sizes",
]

Guidance = Literal["none", "mmps-prior", "mmps-jacobian", "dps"]
GUIDANCES: tuple[str, ...] = get_args(Guidance)
"""``none``: the prior alone; ``mmps-prior``: MMPS with the whitened prior's Gaussian
Tweedie covariance (no backward pass; ``genda assimilate``'s default for whitened
priors); ``mmps-jacobian``: MMPS with the network's Jacobian (one vector-Jacobian
product per solver iteration and one for the gradient); ``dps``: one backward pass."""

STRATEGY_NAMES: tuple[str, ...] = ("joint3d", "layer2d")

DEFAULT_ARCHITECTURE: dict[str, object] = {
    "base_channels": 24,
    "channel_mult": (1, 2, 2, 2),
    "blocks_per_level": 1,
    "attention_levels": (),
    "noise_embedding_dim": 128,
}
"""The architecture of the shipped priors (``default``, ``default-layer2d``)."""


class PlanError(InvalidValueError):
    """A planned run genda cannot make: the message says what is wrong and what would do."""


def poolable_sizes(size: int, factor: int) -> list[int]:
    """The multiples of ``factor`` just below and above ``size`` (for error messages)."""
    lower = size // factor * factor
    return [s for s in (lower, lower + factor) if s > 0]


@dataclass(frozen=True)
class RunSpec:
    """The settings of a posterior run that decide its cost per member.

    Attributes:
        nlat, nlon: the horizontal grid (a Gauss-Legendre grid, latitudes north to south).
        levels: altitude levels ``L``.
        variables: how many of genda's variables (``u, v, T, w, geopotential_height``
            in this order).
        strategy: ``joint3d`` or ``layer2d``.
        window: ``layer2d``'s neighbouring layers each side.
        layers_per_batch: ``layer2d``'s layer samples per network call (``None``: all).
        base_channels, channel_mult, blocks_per_level, attention_levels,
            noise_embedding_dim: the U-Net (:class:`genda.models.unet.UNet`).
        coordinates: ``whitened`` (spectral whitening, as the shipped priors) or ``grid``.
        truncation: the whitening's degrees ``T`` (``None``: the largest the grid allows).
        tides: solar-day harmonics of the whitening's mean.
        guidance: :data:`GUIDANCES`.
        iterations: MMPS's solver iterations (``mmps-jacobian``).
        steps: sampler steps.
        sampler: ``exponential``, ``heun``, ``euler`` or ``stochastic``.
        observations: observations in the window (the guidance's operator).
    """

    nlat: int
    nlon: int
    levels: int
    variables: int = 3
    strategy: str = "joint3d"
    window: int = 1
    layers_per_batch: int | None = None
    base_channels: int = 24
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    blocks_per_level: int = 1
    attention_levels: tuple[int, ...] = ()
    noise_embedding_dim: int = 128
    coordinates: str = "whitened"
    truncation: int | None = None
    tides: int = 3
    guidance: str = "mmps-prior"
    iterations: int = 3
    steps: int = 32
    sampler: str = "exponential"
    observations: int = 5000

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mult", tuple(int(m) for m in self.channel_mult))
        object.__setattr__(self, "attention_levels", tuple(int(a) for a in self.attention_levels))
        for name in ("nlat", "nlon", "levels", "variables", "base_channels", "steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PlanError(f"{name} must be a whole number >= 1, got {value!r}")
        if self.variables > len(VARIABLES):
            raise PlanError(
                f"variables must be 1..{len(VARIABLES)} ({', '.join(VARIABLES)}), "
                f"got {self.variables}"
            )
        if self.strategy not in STRATEGY_NAMES:
            raise UnknownNameError(
                f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGY_NAMES)}"
            )
        if self.guidance not in GUIDANCES:
            raise UnknownNameError(
                f"unknown guidance {self.guidance!r}; choose one of {', '.join(GUIDANCES)}"
            )
        if self.sampler not in SAMPLERS:
            raise UnknownNameError(
                f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}"
            )
        if self.coordinates not in ("whitened", "grid"):
            raise UnknownNameError(
                f"unknown coordinates {self.coordinates!r}; choose whitened or grid"
            )
        if self.guidance == "mmps-prior" and self.coordinates != "whitened":
            raise PlanError(
                "mmps-prior (the whitened prior's Gaussian Tweedie covariance) needs whitened "
                "coordinates; use mmps-jacobian for a prior in grid coordinates"
            )
        if self.layers_per_batch is not None and self.layers_per_batch < 1:
            raise PlanError(f"layers_per_batch must be >= 1, got {self.layers_per_batch}")
        if self.window < 0 or self.iterations < 1 or self.observations < 1:
            raise PlanError("window must be >= 0, iterations and observations >= 1")
        self.check_pooling()

    @property
    def variable_names(self) -> tuple[str, ...]:
        return tuple(VARIABLES)[: self.variables]

    @property
    def downsampling(self) -> int:
        """The U-Net's total downsampling ``2 ** (len(channel_mult) - 1)``."""
        return 2 ** (len(self.channel_mult) - 1)

    def check_pooling(self) -> None:
        """Raise :class:`PlanError` when the U-Net cannot pool this grid, naming sizes it can.

        :class:`genda.models.unet.UNet` halves the grid ``len(channel_mult) - 1``
        times and needs an even number of longitudes on the coarsest grid, so
        ``nlat`` must be a multiple of ``2 ** (n - 1)`` and ``nlon`` of ``2 ** n``.
        """
        levels = len(self.channel_mult)
        factor = self.downsampling
        if self.nlat % factor == 0 and self.nlon % (2 * factor) == 0:
            return
        # the deepest U-Net that pools the grid as it is
        depth = 0
        while self.nlat % (2**depth) == 0 and self.nlon % (2 ** (depth + 1)) == 0:
            depth += 1
        hint = (
            f"on this grid at most {depth} levels pool (e.g. --channel-mult "
            f"{','.join(['1'] + ['2'] * (depth - 1))})"
            if depth
            else "no U-Net pools an odd number of longitudes"
        )
        raise PlanError(
            f"a U-Net with {levels} levels (channel_mult {list(self.channel_mult)}) cannot pool a "
            f"{self.nlat} x {self.nlon} grid: nlat must be a multiple of {factor} and nlon of "
            f"{2 * factor} (nearest: nlat {poolable_sizes(self.nlat, factor)}, nlon "
            f"{poolable_sizes(self.nlon, 2 * factor)}); {hint}"
        )

    def architecture(self) -> dict[str, object]:
        """The U-Net options besides the channels that the strategy sets."""
        return {
            "base_channels": self.base_channels,
            "channel_mult": list(self.channel_mult),
            "blocks_per_level": self.blocks_per_level,
            "attention_levels": list(self.attention_levels),
            "noise_embedding_dim": self.noise_embedding_dim,
            "dropout": 0.0,
        }

    def calls_per_member(self) -> int:
        """Denoiser calls of one member: ``2 steps - 1`` for the second-order samplers
        (the last step, to ``sigma = 0``, is Euler's), ``steps`` for Euler's
        (:mod:`genda.models.sampling`)."""
        return self.steps if self.sampler == "euler" else 2 * self.steps - 1
