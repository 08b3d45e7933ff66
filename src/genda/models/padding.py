"""Padding on the sphere for convolutions on latitude-longitude grids.

A 3x3 convolution near the edge of a latitude-longitude image needs values
beyond the edge. Zero padding invents a wall at the poles and at the date
line; on the sphere neither exists:

* in longitude the field is periodic, so the columns beyond the east edge are
  the first columns (circular padding);
* beyond a pole lie the rows nearest that pole, in reverse order, on the
  opposite meridian: the point a small angle beyond the north pole along
  meridian ``lambda`` is the point that small angle before it along meridian
  ``lambda + 180 deg``. On a grid of ``W`` evenly spaced longitudes (``W``
  even) that meridian is ``W / 2`` columns away.

Scalars (temperature) keep their value across the pole. Horizontal vector
components do not: the local east and north directions of the continued
coordinates are the opposite of those of the point across the pole, so the
eastward and northward wind change sign (a solid-body rotation ``u = U cos(lat)``
continues to ``U cos(180 deg - lat) = -U cos(lat)``). ``pole_sign`` says per
channel which is which (``+1`` scalars, ``-1`` wind components).

The continuation assumes that no row lies on a pole, as on the Gauss-Legendre
grid (and on the grids a U-Net makes from it by averaging pairs of rows): the
padded rows then sit at the latitudes ``180 deg - lat`` (``-180 deg - lat``)
beyond the pole. On an equiangular grid that contains the pole rows, those
rows would be duplicated by this padding rather than continued past.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from genda.errors import InvalidValueError
from genda.grid import state_variable

VECTOR_COMPONENTS: frozenset[str] = frozenset({"u", "v"})
"""Variables that are horizontal vector components (they change sign across a pole)."""


def pole_signs(variables: Iterable[str]) -> list[float]:
    """Pole sign per variable: ``-1.0`` for horizontal wind components, ``+1.0`` otherwise.

    The vertical wind ``w`` and geopotential height are scalars under the
    rotation that carries a point across the pole, so they keep ``+1``.
    """
    return [-1.0 if state_variable(name)[0] in VECTOR_COMPONENTS else 1.0 for name in variables]


def _as_sign_tensor(pole_sign: Sequence[float] | torch.Tensor | None) -> torch.Tensor | None:
    if pole_sign is None:
        return None
    sign = torch.as_tensor(pole_sign, dtype=torch.float32).reshape(-1)
    if sign.numel() == 0:
        raise InvalidValueError("pole_sign must have one entry per channel, got an empty sequence")
    if not bool(torch.all((sign == 1.0) | (sign == -1.0))):
        raise InvalidValueError(f"pole_sign entries must be +1 or -1, got {sign.tolist()}")
    return sign


def spherical_pad(x: torch.Tensor, pad: int, pole_sign: torch.Tensor | None = None) -> torch.Tensor:
    """Pad ``x`` of shape ``(N, C, H, W)`` by ``pad`` cells on the sphere.

    Args:
        x: ``(N, C, H, W)``, latitudes north to south, ``W`` evenly spaced
            longitudes (``W`` even).
        pad: cells added on each side, ``0 <= pad <= min(H, W)``.
        pole_sign: ``(C,)`` of ``+1`` / ``-1``, the factor applied to a channel's
            values carried across a pole; ``None`` means all ``+1``.

    Returns:
        ``(N, C, H + 2 pad, W + 2 pad)``. Rows ``0 .. pad-1`` hold the ``pad``
        northernmost rows in reverse order, rolled by ``W / 2`` columns and
        multiplied by ``pole_sign``; likewise at the south; then every row is
        padded circularly in longitude (the corners are the circular
        continuation of the across-pole rows).
    """
    if x.ndim != 4:
        raise InvalidValueError(
            f"spherical padding expects (N, C, H, W), got shape {tuple(x.shape)}"
        )
    if pad == 0:
        return x
    _, c, h, w = x.shape
    if pad < 0:
        raise InvalidValueError(f"pad must be >= 0, got {pad}")
    if w % 2:
        raise InvalidValueError(
            f"spherical padding needs an even number of longitudes (the point across "
            f"the pole is W/2 columns away), got W={w}"
        )
    if pad > h or pad > w:
        raise InvalidValueError(f"pad={pad} exceeds the grid (H={h}, W={w})")
    north = x[:, :, :pad].flip(-2).roll(w // 2, dims=-1)
    south = x[:, :, h - pad :].flip(-2).roll(w // 2, dims=-1)
    if pole_sign is not None:
        if pole_sign.numel() != c:
            raise InvalidValueError(f"pole_sign has {pole_sign.numel()} entries for {c} channels")
        sign = pole_sign.to(device=x.device, dtype=x.dtype).reshape(1, c, 1, 1)
        north = north * sign
        south = south * sign
    x = torch.cat([north, x, south], dim=-2)
    return torch.cat([x[..., w - pad :], x, x[..., :pad]], dim=-1)


class SphericalPad2d(nn.Module):
    """Module form of :func:`spherical_pad`: ``(N, C, H, W) -> (N, C, H + 2p, W + 2p)``.

    Args:
        pad: cells added on each side.
        pole_sign: ``(C,)`` per-channel sign across the poles (``+1`` scalars,
            ``-1`` horizontal wind components; see :func:`pole_signs`), or
            ``None`` for all scalars. Kept as a non-persistent buffer: it is
            configuration, not a learned weight, and stays out of checkpoints.
    """

    pole_sign: torch.Tensor | None

    def __init__(self, pad: int, pole_sign: Sequence[float] | torch.Tensor | None = None) -> None:
        super().__init__()
        if pad < 0:
            raise InvalidValueError(f"pad must be >= 0, got {pad}")
        self.pad = int(pad)
        self.register_buffer("pole_sign", _as_sign_tensor(pole_sign), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return spherical_pad(x, self.pad, self.pole_sign)

    def extra_repr(self) -> str:
        signs = None if self.pole_sign is None else self.pole_sign.tolist()
        return f"pad={self.pad}, pole_sign={signs}"


class SphericalConv2d(nn.Module):
    """A ``kernel_size`` x ``kernel_size`` convolution (odd size, stride 1) with spherical padding.

    ``(N, C_in, H, W) -> (N, C_out, H, W)``; no zero padding anywhere, so the
    operation commutes exactly with rolls in longitude.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        pole_sign: Sequence[float] | torch.Tensor | None = None,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise InvalidValueError(f"kernel_size must be odd, got {kernel_size}")
        if pole_sign is not None and len(torch.as_tensor(pole_sign).reshape(-1)) != in_channels:
            raise InvalidValueError(
                f"pole_sign has {len(torch.as_tensor(pole_sign).reshape(-1))} entries "
                f"for {in_channels} input channels"
            )
        self.pad = SphericalPad2d(kernel_size // 2, pole_sign)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=0, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pad(x))
