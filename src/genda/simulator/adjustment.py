"""Mass adjustment of layers that become too thin (a convective adjustment).

Isentropic layers can thin to nothing where static stability collapses
(isentropes converge), which the layered equations cannot represent; in the
atmosphere the air overturns and mixes there. Where a layer's pseudo-density
falls below ``floor_fraction`` of its reference value, the deficit is filled
from the layers directly below and above, in proportion to how much each has
above its own floor: a diabatic mass exchange that keeps every column's mass
(Bleck & Benjamin 1993, Mon. Wea. Rev. 121, use the same device in isentropic
coordinates). Where no layer is below its floor the state is left untouched,
bit for bit.
"""

from __future__ import annotations

import torch


def thickness_adjustment(
    sigma: torch.Tensor, reference: torch.Tensor, floor_fraction: float
) -> torch.Tensor | None:
    """Increment ``(K, H, W)`` that lifts thin layers to their floor, or ``None`` if none is thin.

    Args:
        sigma: ``(K, H, W)`` pseudo-density of each layer (kg m-2).
        reference: ``(K,)`` reference pseudo-density of each layer.
        floor_fraction: the floor as a fraction of the reference.

    The increment sums to zero over each column (to round-off).
    """
    floor = floor_fraction * reference[:, None, None]
    deficit = (floor - sigma).clamp(min=0.0)
    if not bool((deficit > 0).any()):
        return None
    spare = (sigma - floor).clamp(min=0.0)
    zero = torch.zeros_like(spare[:1])
    below = torch.cat((zero, spare[:-1]), 0)  # spare mass of the layer under each layer
    above = torch.cat((spare[1:], zero), 0)  # ... and of the layer over it
    available = below + above
    # a layer can give only what it has: scale the fill where neighbours are short
    fill = torch.minimum(deficit, available)
    share_below = torch.where(available > 0, below / available.clamp(min=1e-30), 0.0)
    take_below = fill * share_below  # taken from layer k-1 for layer k
    take_above = fill - take_below  # taken from layer k+1 for layer k
    increment = fill.clone()
    increment[:-1] -= take_below[1:]
    increment[1:] -= take_above[:-1]
    return increment
