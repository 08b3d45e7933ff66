"""A small U-Net backbone on the sphere for EDM-style denoisers.

The backbone ``F(x_in, c_noise, cond=None)`` maps ``(B, C_in, H, W)`` to
``(B, C_out, H, W)`` on a latitude-longitude grid (latitudes north to south).
It follows the DDPM++/ADM family as used in EDM (Karras et al. 2022,
"Elucidating the Design Space of Diffusion-Based Generative Models", NeurIPS;
``NVlabs/edm`` ``training/networks.py``) with changes for the sphere:

* every 3x3 convolution pads spherically (:mod:`genda.models.padding`):
  circular in longitude, continued across the poles; there is no zero padding
  anywhere, so the network commutes with longitude rolls by multiples of its
  total downsampling factor ``2 ** (len(channel_mult) - 1)``;
* the input convolution knows which channels are wind components
  (``pole_sign``), which change sign across a pole; hidden features are
  padded as scalars (they have no defined vector character);
* downsampling is 2x2 average pooling, parameter-free and exactly equivariant
  to even longitude shifts; upsampling is nearest-neighbour then a spherical
  3x3 convolution.

The noise level ``c_noise`` (EDM: ``log(sigma) / 4``, shape ``(B,)``) is
embedded with sinusoidal (positional / Fourier) features and an MLP, and an
optional conditioning vector ``cond`` ``(B, cond_dim)`` is mapped linearly and
added to the sinusoidal features before the MLP (as EDM adds class labels).
The embedding modulates every residual block as FiLM, ``h <- norm(h) * (1 +
scale) + shift`` (Perez et al. 2018; EDM's "adaptive scale"). The output
convolution is zero-initialised, so an untrained network outputs exactly 0,
the usual starting point of EDM's preconditioned denoiser ``D = c_skip x``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genda.errors import InvalidValueError
from genda.models.padding import SphericalConv2d


def _groups(channels: int, max_groups: int = 32, min_channels_per_group: int = 4) -> int:
    """Number of GroupNorm groups: at most 32, at least 4 channels each, dividing ``channels``."""
    groups = max(1, min(max_groups, channels // min_channels_per_group))
    while channels % groups:
        groups -= 1
    return groups


class NoiseEmbedding(nn.Module):
    """Sinusoidal features of ``c_noise``: ``(B,) -> (B, dim)``.

    Frequencies are geometric from 1 to ``1 / max_positions`` (Vaswani et al.
    2017; EDM's ``PositionalEmbedding``), the cosines first, then the sines.
    """

    freqs: torch.Tensor

    def __init__(self, dim: int, max_positions: float = 10_000.0) -> None:
        super().__init__()
        if dim < 2 or dim % 2:
            raise InvalidValueError(f"noise_embedding_dim must be even and >= 2, got {dim}")
        half = dim // 2
        freqs = (1.0 / max_positions) ** (torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        angles = c_noise[:, None].to(self.freqs.dtype) * self.freqs[None, :]
        return torch.cat([angles.cos(), angles.sin()], dim=1)


class ResBlock(nn.Module):
    """Residual block ``(B, C_in, H, W) -> (B, C_out, H, W)`` with FiLM conditioning.

    ``GroupNorm -> SiLU -> conv3x3 -> GroupNorm -> FiLM(emb) -> SiLU -> dropout
    -> conv3x3``, plus a 1x1 convolution on the skip path when the channel
    count changes; the sum is scaled by ``1/sqrt(2)`` to keep unit variance.
    """

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_channels), in_channels)
        self.conv1 = SphericalConv2d(in_channels, out_channels, 3)
        self.film = nn.Linear(emb_dim, 2 * out_channels)
        self.norm2 = nn.GroupNorm(_groups(out_channels), out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = SphericalConv2d(out_channels, out_channels, 3)
        self.skip: nn.Module = (
            nn.Conv2d(in_channels, out_channels, 1)
            if in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1.0 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return (self.skip(x) + h) * (1.0 / math.sqrt(2.0))


class SelfAttention(nn.Module):
    """Multi-head self-attention over all ``H * W`` grid points, residual.

    ``(B, C, H, W) -> (B, C, H, W)``. Permutation-equivariant over grid points,
    hence equivariant to longitude rolls; position comes from the convolutions.
    """

    def __init__(self, channels: int, head_channels: int = 32) -> None:
        super().__init__()
        heads = max(1, channels // head_channels)
        while channels % heads:
            heads -= 1
        self.heads = heads
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = (t.transpose(-1, -2) for t in qkv.unbind(1))  # (B, heads, HW, C/heads)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return (x + self.proj(out)) * (1.0 / math.sqrt(2.0))


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a spherical 3x3 convolution: ``(B, C, H, W) -> (B, C, 2H, 2W)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = SphericalConv2d(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """The residual blocks (and optional attention) of one resolution."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        blocks: int,
        emb_dim: int,
        dropout: float,
        attention: bool,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            ResBlock(in_channels if i == 0 else channels, channels, emb_dim, dropout)
            for i in range(blocks)
        )
        self.attention = nn.ModuleList(
            SelfAttention(channels) if attention else nn.Identity() for _ in range(blocks)
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for block, attn in zip(self.blocks, self.attention, strict=True):
            x = attn(block(x, emb))
        return x


def _check_unet_arguments(
    in_channels: int,
    out_channels: int,
    base_channels: int,
    channel_mult: tuple[int, ...],
    blocks_per_level: int,
    attention_levels: tuple[int, ...],
    cond_dim: int,
    dropout: float,
) -> None:
    """Raise :class:`InvalidValueError` for :class:`UNet` arguments out of range."""
    if in_channels < 1 or out_channels < 1 or base_channels < 1:
        raise InvalidValueError("in_channels, out_channels and base_channels must be >= 1")
    if not channel_mult or min(channel_mult) < 1:
        raise InvalidValueError(
            f"channel_mult must be a non-empty sequence of >= 1, got {channel_mult}"
        )
    if blocks_per_level < 1:
        raise InvalidValueError(f"blocks_per_level must be >= 1, got {blocks_per_level}")
    bad = [a for a in attention_levels if not 0 <= a < len(channel_mult)]
    if bad:
        raise InvalidValueError(
            f"attention_levels {bad} outside the levels 0..{len(channel_mult) - 1}"
        )
    if cond_dim < 0:
        raise InvalidValueError(f"cond_dim must be >= 0, got {cond_dim}")
    if not 0.0 <= dropout < 1.0:
        raise InvalidValueError(f"dropout must lie in [0, 1), got {dropout}")


def _pole_signs(pole_sign: Sequence[float] | None, in_channels: int) -> list[float] | None:
    """``pole_sign`` as floats, checked against ``in_channels`` (``None`` stays ``None``)."""
    signs = None if pole_sign is None else [float(s) for s in pole_sign]
    if signs is not None and len(signs) != in_channels:
        raise InvalidValueError(f"pole_sign has {len(signs)} entries for in_channels={in_channels}")
    return signs


def _embedding_mlp(noise_embedding_dim: int, emb_dim: int) -> nn.Sequential:
    """The MLP from the sinusoidal (plus conditioning) features to the block embedding."""
    return nn.Sequential(
        nn.Linear(noise_embedding_dim, emb_dim),
        nn.SiLU(),
        nn.Linear(emb_dim, emb_dim),
        nn.SiLU(),
    )


def _encoder_levels(
    in_channels: int,
    widths: Sequence[int],
    blocks: int,
    emb_dim: int,
    dropout: float,
    attention_levels: tuple[int, ...],
) -> nn.ModuleList:
    """The encoder's levels, finest first: ``in_channels`` to ``widths[0]``, then on."""
    encoder = nn.ModuleList()
    previous = in_channels
    for level, width in enumerate(widths):
        attention = level in attention_levels
        encoder.append(_Level(previous, width, blocks, emb_dim, dropout, attention))
        previous = width
    return encoder


def _decoder_levels(
    in_channels: int,
    widths: Sequence[int],
    blocks: int,
    emb_dim: int,
    dropout: float,
    attention_levels: tuple[int, ...],
) -> tuple[nn.ModuleList, nn.ModuleList]:
    """The decoder's levels (input: the previous output and the skip) and upsamplings, coarsest first."""
    decoder = nn.ModuleList()
    upsample = nn.ModuleList()
    previous = in_channels
    for level in reversed(range(len(widths))):
        width = widths[level]
        attention = level in attention_levels
        decoder.append(_Level(previous + width, width, blocks, emb_dim, dropout, attention))
        upsample.append(Upsample(width) if level > 0 else nn.Identity())
        previous = width
    return decoder, upsample


class UNet(nn.Module):
    """Spherical U-Net backbone ``F(x_in, c_noise, cond=None)`` (see module docstring).

    Args:
        in_channels: channels of ``x_in``.
        out_channels: channels of the output.
        base_channels: channels of the finest level.
        channel_mult: channel multiplier per level, finest first; the grid is
            halved between levels, ``len(channel_mult) - 1`` times.
        blocks_per_level: residual blocks per level in the encoder and in the decoder.
        attention_levels: level indices (0 = finest) with self-attention after
            each residual block; the bottleneck has attention when the
            coarsest level is listed.
        cond_dim: length of the extra conditioning vector ``cond`` (0: none).
        noise_embedding_dim: number of sinusoidal features of ``c_noise``.
        dropout: dropout probability inside the residual blocks.
        pole_sign: ``(in_channels,)`` sign of each input channel across the
            poles (``+1`` scalars, ``-1`` wind components); ``None``: all scalars.

    Shapes:
        ``x_in``: ``(B, in_channels, H, W)`` with ``H`` divisible by
        ``2 ** (len(channel_mult) - 1)`` and ``W`` by ``2 ** len(channel_mult)``
        (the coarsest grid must keep an even number of longitudes so that the
        point across the pole is a grid column); ``c_noise``: ``(B,)`` (or a
        scalar, broadcast); ``cond``: ``(B, cond_dim)``; output
        ``(B, out_channels, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        base_channels: int = 32,
        channel_mult: Sequence[int] = (1, 2, 2),
        blocks_per_level: int = 1,
        attention_levels: Sequence[int] = (),
        cond_dim: int = 0,
        noise_embedding_dim: int = 128,
        dropout: float = 0.0,
        pole_sign: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        channel_mult = tuple(int(m) for m in channel_mult)
        attention_levels = tuple(sorted({int(a) for a in attention_levels}))
        _check_unet_arguments(
            in_channels,
            out_channels,
            base_channels,
            channel_mult,
            blocks_per_level,
            attention_levels,
            cond_dim,
            dropout,
        )
        signs = _pole_signs(pole_sign, in_channels)

        self.config: dict[str, Any] = {
            "in_channels": int(in_channels),
            "out_channels": int(out_channels),
            "base_channels": int(base_channels),
            "channel_mult": list(channel_mult),
            "blocks_per_level": int(blocks_per_level),
            "attention_levels": list(attention_levels),
            "cond_dim": int(cond_dim),
            "noise_embedding_dim": int(noise_embedding_dim),
            "dropout": float(dropout),
            "pole_sign": signs,
        }
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.cond_dim = cond_dim
        self.levels = len(channel_mult)
        emb_dim = 4 * base_channels

        self.noise_embedding = NoiseEmbedding(noise_embedding_dim)
        self.cond_embedding = (
            nn.Linear(cond_dim, noise_embedding_dim, bias=False) if cond_dim > 0 else None
        )
        self.embedding_mlp = _embedding_mlp(noise_embedding_dim, emb_dim)

        self.conv_in = SphericalConv2d(in_channels, base_channels, 3, pole_sign=signs)
        widths = [base_channels * m for m in channel_mult]
        self.encoder = _encoder_levels(
            base_channels, widths, blocks_per_level, emb_dim, dropout, attention_levels
        )
        bottleneck, coarsest = widths[-1], self.levels - 1
        self.middle = _Level(
            bottleneck, bottleneck, 2, emb_dim, dropout, attention=coarsest in attention_levels
        )
        self.decoder, self.upsample = _decoder_levels(
            bottleneck, widths, blocks_per_level, emb_dim, dropout, attention_levels
        )
        self.norm_out = nn.GroupNorm(_groups(widths[0]), widths[0])
        self.conv_out = SphericalConv2d(widths[0], out_channels, 3)
        nn.init.zeros_(self.conv_out.conv.weight)
        if self.conv_out.conv.bias is not None:
            nn.init.zeros_(self.conv_out.conv.bias)

    @property
    def downsampling_factor(self) -> int:
        """Total downsampling factor ``2 ** (len(channel_mult) - 1)``."""
        return 2 ** (self.levels - 1)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> UNet:
        """Rebuild from :attr:`config` (JSON-serialisable constructor arguments)."""
        return cls(**config)

    def count_parameters(self, trainable_only: bool = True) -> int:
        """Number of (trainable) parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def check_input_shape(self, shape: Sequence[int]) -> None:
        """Raise a clear ``ValueError`` if ``(B, C, H, W)`` does not suit this network."""
        if len(shape) != 4:
            raise InvalidValueError(f"UNet expects x_in of shape (B, C, H, W), got {tuple(shape)}")
        _, c, h, w = shape
        if c != self.in_channels:
            raise InvalidValueError(f"UNet expects {self.in_channels} input channels, got {c}")
        factor = self.downsampling_factor
        if h % factor or w % (2 * factor):
            raise InvalidValueError(
                f"grid (H, W) = ({h}, {w}) does not suit a U-Net with {self.levels} levels: "
                f"H must be divisible by 2**{self.levels - 1} = {factor} and W by "
                f"2**{self.levels} = {2 * factor} (the coarsest grid needs an even number "
                "of longitudes for the padding across the poles)"
            )

    def forward(
        self, x_in: torch.Tensor, c_noise: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(B, C_in, H, W), (B,), (B, cond_dim) | None -> (B, C_out, H, W)``."""
        self.check_input_shape(x_in.shape)
        batch = x_in.shape[0]
        c_noise = torch.as_tensor(c_noise, device=x_in.device).reshape(-1)
        if c_noise.numel() == 1:
            c_noise = c_noise.expand(batch)
        if c_noise.numel() != batch:
            raise InvalidValueError(f"c_noise has {c_noise.numel()} entries for a batch of {batch}")
        emb = self.noise_embedding(c_noise.to(x_in.dtype)).to(x_in.dtype)
        if self.cond_embedding is not None:
            if cond is None:
                raise InvalidValueError(f"this UNet needs cond of shape (B, {self.cond_dim})")
            if tuple(cond.shape) != (batch, self.cond_dim):
                raise InvalidValueError(
                    f"cond has shape {tuple(cond.shape)}, expected ({batch}, {self.cond_dim})"
                )
            emb = emb + self.cond_embedding(cond.to(emb.dtype))
        elif cond is not None:
            raise InvalidValueError("cond given to a UNet built with cond_dim=0")
        emb = self.embedding_mlp(emb)

        h = self.conv_in(x_in)
        skips = []
        for level, stage in enumerate(self.encoder):
            h = stage(h, emb)
            skips.append(h)
            if level < self.levels - 1:
                h = F.avg_pool2d(h, 2)
        h = self.middle(h, emb)
        for stage, up in zip(self.decoder, self.upsample, strict=True):
            h = stage(torch.cat([h, skips.pop()], dim=1), emb)
            h = up(h)
        return self.conv_out(F.silu(self.norm_out(h)))
