"""How a field ``(B, V, L, H, W)`` is split into what a 2D backbone sees.

genda's open question is whether to denoise the full 3D field at once
(``joint3d``) or horizontal layers separately (``layer2d``), given GPU memory.
A :class:`Strategy` hides that choice behind one interface:

* :meth:`Strategy.network_channels` gives the backbone's ``(in_channels,
  out_channels, cond_dim)`` for a grid, and :meth:`Strategy.pole_sign` the
  sign of each input channel across the poles (see
  :mod:`genda.models.padding`);
* :meth:`Strategy.to_network` turns the field into the backbone's input
  ``(N, C_in, H, W)`` and conditioning ``(N, cond_dim)`` (or ``None``);
* :meth:`Strategy.from_network` turns the backbone's output ``(N, C_out, H, W)``
  back into a field ``(B, V, L, H, W)``;
* :meth:`Strategy.denoise` does all three around a backbone call
  ``F(x_in, c_noise, cond=None)``;
* :class:`StrategyBackbone` packs a strategy, a network and the levels into a
  field-level backbone module ``(B, V, L, H, W) -> (B, V, L, H, W)``, the
  ``backbone`` of :class:`genda.models.diffusion.EDMDenoiser`;
  :func:`build_backbone` makes one with a :class:`~genda.models.unet.UNet`
  sized for a grid.

Strategies are built by name through the explicit registry
:data:`STRATEGIES` / :func:`get_strategy`, and :meth:`Strategy.options`
returns the JSON-serialisable options that rebuild them (checkpoints).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from genda.errors import InvalidTypeError, InvalidValueError, UnknownNameError
from genda.grid import Grid, GridMismatchError
from genda.models.calendar import NEEDS_TIME, Calendar
from genda.models.padding import pole_signs
from genda.models.unet import UNet

Backbone = Callable[..., torch.Tensor]
"""A backbone ``F(x_in (N, C_in, H, W), c_noise (N,), cond (N, cond_dim) | None) -> (N, C_out, H, W)``."""

Levels = Grid | torch.Tensor | np.ndarray | Sequence[float]
"""Altitudes of the field's levels in km, ``(L,)``, or the :class:`Grid` that holds them."""


def _altitudes(levels: Levels) -> np.ndarray:
    altitude = levels.altitude if isinstance(levels, Grid) else levels
    if isinstance(altitude, torch.Tensor):
        altitude = altitude.detach().cpu().numpy()
    values = np.array(altitude, dtype=np.float64).reshape(-1)  # a writable copy
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise InvalidValueError("levels must be a non-empty sequence of finite altitudes (km)")
    return values


def _check_field(x: torch.Tensor, altitudes: np.ndarray | None = None) -> None:
    if x.ndim != 5:
        raise GridMismatchError(f"expected a field (B, V, L, H, W), got shape {tuple(x.shape)}")
    if altitudes is not None and altitudes.size != x.shape[2]:
        raise GridMismatchError(
            f"field has L={x.shape[2]} levels but {altitudes.size} altitudes were given"
        )


def _noise_per_sample(c_noise: torch.Tensor | float, batch: int, x: torch.Tensor) -> torch.Tensor:
    c = torch.as_tensor(c_noise, dtype=x.dtype, device=x.device).reshape(-1)
    if c.numel() == 1:
        c = c.expand(batch)
    if c.numel() != batch:
        raise InvalidValueError(f"c_noise has {c.numel()} entries for a batch of {batch} fields")
    return c


class Strategy(ABC):
    """How a field is presented to a 2D backbone and reassembled (see module docstring)."""

    name: ClassVar[str]

    @abstractmethod
    def options(self) -> dict[str, Any]:
        """JSON-serialisable options; ``get_strategy(self.name, **self.options())`` rebuilds it."""

    @abstractmethod
    def network_channels(self, grid: Grid) -> tuple[int, int, int]:
        """``(in_channels, out_channels, cond_dim)`` of the backbone for fields on ``grid``."""

    @abstractmethod
    def pole_sign(self, grid: Grid) -> list[float]:
        """``(in_channels,)`` sign of each backbone input channel across the poles."""

    @abstractmethod
    def to_network(
        self, x: torch.Tensor, levels: Levels
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Field ``(B, V, L, H, W)`` -> backbone input ``(N, C_in, H, W)`` and ``cond`` ``(N, cond_dim)`` or ``None``."""

    @abstractmethod
    def from_network(self, y: torch.Tensor, field_shape: Sequence[int]) -> torch.Tensor:
        """Backbone output ``(N, C_out, H, W)`` -> field of shape ``field_shape`` ``(B, V, L, H, W)``."""

    @abstractmethod
    def network_noise(self, c_noise: torch.Tensor, field_shape: Sequence[int]) -> torch.Tensor:
        """Per-field noise ``(B,)`` -> per-network-sample noise ``(N,)``."""

    def chunk_size(self) -> int | None:
        """Network samples per backbone call (``None``: all at once)."""
        return None

    def denoise(
        self,
        backbone: Backbone,
        x: torch.Tensor,
        c_noise: torch.Tensor | float,
        levels: Levels,
        extra: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Apply ``backbone`` to a whole field: ``(B, V, L, H, W) -> (B, V, L, H, W)``.

        Args:
            backbone: ``F(x_in, c_noise, cond=None)`` (e.g. a
                :class:`genda.models.unet.UNet`).
            x: the (preconditioned) noisy field ``(B, V, L, H, W)``.
            c_noise: ``(B,)`` noise conditioning per field (EDM: ``log(sigma) / 4``),
                or a scalar for all.
            levels: altitudes ``(L,)`` in km, or the grid.
            extra: ``(B, F)`` field-level conditioning (the calendar,
                :mod:`genda.models.calendar`), given to every network sample
                of its field after the strategy's own conditioning.

        Returns:
            The backbone's outputs assembled into a field. With EDM
            preconditioning, whose factors are per-field scalars, the denoiser
            is ``c_skip * x + c_out * strategy.denoise(F, c_in * x, c_noise, levels)``.
            Backbone calls are split into chunks of :meth:`chunk_size` network
            samples (the memory knob). Under autograd (training, and the
            guidance's vector-Jacobian products) each chunk is checkpointed
            (``torch.utils.checkpoint``, non-reentrant): only its inputs are
            kept and its activations are recomputed chunk by chunk in each
            backward pass, so the knob bounds the memory there too, for one
            extra forward pass per backward. Every sample gets bit-identical inputs
            whatever the chunking, so the result is bit-identical whenever the
            backbone's output for a sample does not depend on the batch it is
            computed in. Stock kernels do not promise that: CPU ``sgemm``
            blocks by batch size and convolution algorithms are chosen per
            shape, which moves a :class:`~genda.models.unet.UNet`'s output by
            float32 round-off (~1e-7) between chunkings.
        """
        _check_field(x)
        shape = tuple(x.shape)
        x_net, cond = self.to_network(x, levels)
        c_net = self.network_noise(_noise_per_sample(c_noise, shape[0], x), shape)
        if extra is not None:
            if extra.shape[0] != shape[0]:
                raise InvalidValueError(
                    f"conditioning for {extra.shape[0]} fields, a batch of {shape[0]}"
                )
            # the samples of a field are contiguous, as in network_noise
            per_sample = extra.to(x_net.dtype).repeat_interleave(x_net.shape[0] // shape[0], 0)
            cond = per_sample if cond is None else torch.cat([cond, per_sample], dim=1)
        size = self.chunk_size() or x_net.shape[0]
        checkpointed = torch.is_grad_enabled() and size < x_net.shape[0]
        outputs = []
        for start in range(0, x_net.shape[0], size):
            part = slice(start, start + size)
            args = (x_net[part], c_net[part], None if cond is None else cond[part])
            if checkpointed:
                out = checkpoint(backbone, *args, use_reentrant=False)
            else:
                out = backbone(*args)
            outputs.append(out)
        y = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=0)
        return self.from_network(y, shape)


class Joint3D(Strategy):
    """The whole 3D field at once: variables x levels as channels.

    ``(B, V, L, H, W) <-> (B, V * L, H, W)``, channel ``v * L + l``; no ``cond``
    (``cond_dim = 0``). The backbone couples all levels directly; its
    activations scale with ``B`` only, but its first and last layers with ``V * L``.
    """

    name: ClassVar[str] = "joint3d"

    def options(self) -> dict[str, Any]:
        return {}

    def network_channels(self, grid: Grid) -> tuple[int, int, int]:
        channels = len(grid.variables) * grid.nlevels
        return channels, channels, 0

    def pole_sign(self, grid: Grid) -> list[float]:
        return [s for s in pole_signs(grid.variables) for _ in range(grid.nlevels)]

    def to_network(
        self, x: torch.Tensor, levels: Levels
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        _check_field(x, _altitudes(levels))
        b, v, lev, h, w = x.shape
        return x.reshape(b, v * lev, h, w), None

    def from_network(self, y: torch.Tensor, field_shape: Sequence[int]) -> torch.Tensor:
        b, v, lev, h, w = field_shape
        if tuple(y.shape) != (b, v * lev, h, w):
            raise InvalidValueError(
                f"joint3d network output has shape {tuple(y.shape)}, expected {(b, v * lev, h, w)}"
            )
        return y.reshape(b, v, lev, h, w)

    def network_noise(self, c_noise: torch.Tensor, field_shape: Sequence[int]) -> torch.Tensor:
        return c_noise


class Layer2D(Strategy):
    """Each altitude layer separately, seeing ``window`` neighbouring layers each side.

    The backbone denoises layer ``l`` from the noisy layers ``l - window ..
    l + window`` (all at the same noise level) and returns layer ``l`` only; the
    field is reassembled from all layers. This is the altitude analogue of the
    local score network of score-based data assimilation (Rozet & Louppe 2023,
    "Score-based Data Assimilation", NeurIPS), where a Markov chain's score is
    built from networks that see short windows of states: the vertical
    coupling of the generated field comes from the overlapping windows, so
    layers further apart than ``window`` interact only through the iterations
    of the sampler.

    Shapes: ``(B, V, L, H, W)`` -> network input ``(B * L, (2 window + 1) V, H, W)``,
    sample ``b * L + l``, channel ``k * V + v`` holding variable ``v`` of layer
    ``clamp(l + k - window, 0, L - 1)``: the layer windows are stacked bottom to
    top, the centre layer's variables at channels ``window * V .. (window+1) V - 1``.
    Beyond the bottom and top layers the edge layer is repeated. Network output
    ``(B * L, V, H, W)``.

    Conditioning ``cond`` ``(B * L, cond_dim)``, ``cond_dim = 3 + 2 * altitude_frequencies``:

    * ``s = 2 (z - z_lo) / (z_hi - z_lo) - 1``, the layer's altitude ``z`` in km
      scaled by ``altitude_range = (z_lo, z_hi)`` (not clipped);
    * ``sin(pi k s), cos(pi k s)`` for ``k = 1 .. altitude_frequencies``;
    * the number of repeated (missing) layers below and above, divided by
      ``window`` (0 when ``window = 0``): the edge marks.

    Args:
        window: neighbouring layers each side (``>= 0``).
        layers_per_batch: layer samples per backbone call (``None``: all
            ``B * L`` at once); the memory knob, the results are the same.
        altitude_range: ``(z_lo, z_hi)`` km mapped to ``s = -1 .. 1``; fixed
            rather than taken from the grid so that the same altitude gets the
            same conditioning whatever levels a field has.
        altitude_frequencies: number of sin/cos pairs of ``s``.
    """

    name: ClassVar[str] = "layer2d"

    def __init__(
        self,
        window: int = 1,
        layers_per_batch: int | None = None,
        altitude_range: Sequence[float] = (50.0, 120.0),
        altitude_frequencies: int = 2,
    ) -> None:
        if int(window) != window or window < 0:
            raise InvalidValueError(f"layer2d window must be an integer >= 0, got {window!r}")
        if layers_per_batch is not None and (
            int(layers_per_batch) != layers_per_batch or layers_per_batch < 1
        ):
            raise InvalidValueError(
                f"layer2d layers_per_batch must be None or an integer >= 1, got {layers_per_batch!r}"
            )
        lo, hi = (float(a) for a in altitude_range)
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            raise InvalidValueError(
                f"altitude_range must be (low, high) km with high > low, got {altitude_range}"
            )
        if int(altitude_frequencies) != altitude_frequencies or altitude_frequencies < 0:
            raise InvalidValueError(
                f"altitude_frequencies must be an integer >= 0, got {altitude_frequencies!r}"
            )
        self.window = int(window)
        self.layers_per_batch = None if layers_per_batch is None else int(layers_per_batch)
        self.altitude_range = (lo, hi)
        self.altitude_frequencies = int(altitude_frequencies)

    @property
    def cond_dim(self) -> int:
        """``3 + 2 * altitude_frequencies`` (see class docstring)."""
        return 3 + 2 * self.altitude_frequencies

    def options(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "layers_per_batch": self.layers_per_batch,
            "altitude_range": list(self.altitude_range),
            "altitude_frequencies": self.altitude_frequencies,
        }

    def chunk_size(self) -> int | None:
        return self.layers_per_batch

    def network_channels(self, grid: Grid) -> tuple[int, int, int]:
        v = len(grid.variables)
        return v * (2 * self.window + 1), v, self.cond_dim

    def pole_sign(self, grid: Grid) -> list[float]:
        return pole_signs(grid.variables) * (2 * self.window + 1)

    def window_indices(self, levels: int) -> torch.Tensor:
        """``(L, 2 window + 1)`` layer index of each window slot, edges repeated."""
        offsets = torch.arange(-self.window, self.window + 1)
        return (torch.arange(levels)[:, None] + offsets[None, :]).clamp(0, levels - 1)

    def altitude_features(self, levels: Levels) -> torch.Tensor:
        """``(L, cond_dim)`` float64 conditioning per layer (see class docstring)."""
        z = torch.as_tensor(_altitudes(levels), dtype=torch.float64)
        count = z.numel()
        lo, hi = self.altitude_range
        s = 2.0 * (z - lo) / (hi - lo) - 1.0
        features = [s]
        for k in range(1, self.altitude_frequencies + 1):
            features += [torch.sin(math.pi * k * s), torch.cos(math.pi * k * s)]
        index = torch.arange(count, dtype=torch.float64)
        scale = 1.0 / self.window if self.window else 0.0
        below = (self.window - index).clamp(min=0) * scale
        above = (index + self.window - (count - 1)).clamp(min=0) * scale
        features += [below, above]
        return torch.stack(features, dim=1)

    def to_network(
        self, x: torch.Tensor, levels: Levels
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        altitudes = _altitudes(levels)
        _check_field(x, altitudes)
        b, v, lev, h, w = x.shape
        index = self.window_indices(lev).to(x.device)
        windows = x[:, :, index]  # (B, V, L, 2w+1, H, W)
        x_net = windows.permute(0, 2, 3, 1, 4, 5).reshape(b * lev, (2 * self.window + 1) * v, h, w)
        cond = self.altitude_features(altitudes).to(device=x.device, dtype=x.dtype)
        return x_net, cond.repeat(b, 1)

    def centre_layer(self, x_net: torch.Tensor) -> torch.Tensor:
        """The centre layer's channels of a network input: ``(N, (2w+1) V, H, W) -> (N, V, H, W)``."""
        width = 2 * self.window + 1
        if x_net.ndim != 4 or x_net.shape[1] % width:
            raise InvalidValueError(
                f"layer2d network input must be (N, (2*{self.window}+1) V, H, W), got {tuple(x_net.shape)}"
            )
        v = x_net.shape[1] // width
        return x_net[:, self.window * v : (self.window + 1) * v]

    def from_network(self, y: torch.Tensor, field_shape: Sequence[int]) -> torch.Tensor:
        b, v, lev, h, w = field_shape
        if tuple(y.shape) != (b * lev, v, h, w):
            raise InvalidValueError(
                f"layer2d network output has shape {tuple(y.shape)}, expected {(b * lev, v, h, w)}"
            )
        return y.reshape(b, lev, v, h, w).transpose(1, 2)

    def network_noise(self, c_noise: torch.Tensor, field_shape: Sequence[int]) -> torch.Tensor:
        return c_noise.repeat_interleave(field_shape[2])


STRATEGIES: dict[str, type[Strategy]] = {"joint3d": Joint3D, "layer2d": Layer2D}
"""Registry of strategies by name."""


def get_strategy(name: str, **options: Any) -> Strategy:
    """The strategy registered as ``name``, built with ``options``; a clear error otherwise."""
    try:
        cls = STRATEGIES[name]
    except KeyError:
        known = ", ".join(sorted(STRATEGIES))
        raise UnknownNameError(f"unknown strategy {name!r}; known strategies: {known}") from None
    try:
        return cls(**options)
    except TypeError as error:
        raise InvalidTypeError(
            f"invalid options {sorted(options)} for strategy {name!r}: {error}"
        ) from None


class StrategyBackbone(nn.Module):
    """A field-level backbone: ``strategy.denoise(network, x_in, c_noise, levels)``.

    ``forward(x_in (B, V, L, H, W), c_noise (B,), cond=None) -> (B, V, L, H, W)``,
    the signature :class:`genda.models.diffusion.EDMDenoiser` expects. The
    strategy makes the network's own conditioning (layer2d: altitude); the
    field-level ``cond`` is the calendar's features ``(B, F)``
    (:mod:`genda.models.calendar`), required with a calendar and refused without.

    Args:
        strategy: how the field is presented to ``network``.
        network: ``F(x_in (N, C_in, H, W), c_noise (N,), cond) -> (N, C_out, H, W)``
            with the channels of ``strategy.network_channels(grid)`` and the
            calendar's features after the strategy's conditioning.
        levels: the altitudes (km) of the fields' levels, or their grid.
        calendar: the time inputs (``None``: the network sees no time).
    """

    def __init__(
        self,
        strategy: Strategy,
        network: nn.Module,
        levels: Levels,
        calendar: Calendar | None = None,
    ) -> None:
        super().__init__()
        self.strategy = strategy
        self.network = network
        self.altitudes = _altitudes(levels)
        self.calendar = calendar

    def forward(
        self, x_in: torch.Tensor, c_noise: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.calendar is None and cond is not None:
            raise InvalidValueError(
                f"strategy {self.strategy.name!r} makes the network's conditioning itself "
                "and this network sees no time; a field-level cond is not supported"
            )
        if self.calendar is not None:
            if cond is None:
                raise InvalidValueError(NEEDS_TIME)
            if cond.dim() != 2 or cond.shape[1] != self.calendar.size:
                raise InvalidValueError(
                    f"calendar features must be (B, {self.calendar.size}), got {tuple(cond.shape)}"
                )
        return self.strategy.denoise(self.network, x_in, c_noise, self.altitudes, cond)


def network_shape(
    strategy: Strategy, grid: Grid, calendar: Calendar | None = None
) -> tuple[int, int, int]:
    """``(in_channels, out_channels, cond_dim)`` of the network: the strategy's, and the calendar's features."""
    in_channels, out_channels, cond_dim = strategy.network_channels(grid)
    return in_channels, out_channels, cond_dim + (0 if calendar is None else calendar.size)


def build_backbone(
    strategy: Strategy, grid: Grid, calendar: Calendar | None = None, **unet_options: Any
) -> StrategyBackbone:
    """A :class:`~genda.models.unet.UNet` sized for ``strategy`` on ``grid``, wrapped as a field backbone.

    ``in_channels``, ``out_channels``, ``cond_dim`` and ``pole_sign`` come from
    the strategy (and ``calendar``, the time inputs); ``unet_options`` are the
    remaining :class:`UNet` arguments.
    """
    fixed = {"in_channels", "out_channels", "cond_dim", "pole_sign"} & set(unet_options)
    if fixed:
        raise InvalidTypeError(f"{sorted(fixed)} are set by the strategy, not by unet_options")
    in_channels, out_channels, cond_dim = network_shape(strategy, grid, calendar)
    network = UNet(
        in_channels,
        out_channels,
        cond_dim=cond_dim,
        pole_sign=strategy.pole_sign(grid),
        **unet_options,
    )
    return StrategyBackbone(strategy, network, grid, calendar)
