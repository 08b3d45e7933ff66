"""Unit strings as genda compares them."""

from __future__ import annotations

import re

__all__ = ["LENGTH_UNITS_M", "canonical_units"]

LENGTH_UNITS_M: dict[str, float] = {
    **dict.fromkeys(("m", "meter", "meters", "metre", "metres"), 1.0),
    **dict.fromkeys(("km", "kilometer", "kilometers", "kilometre", "kilometres"), 1000.0),
}
"""Metres per unit of a length, by its canonical spelling (:func:`canonical_units`).

Geopotential metres (``gpm``) are not in it: a geopotential height is no
geometric height (1.3 km apart at 90 km); the model-output readers add them
where a geopotential height is meant."""


def canonical_units(units: str) -> str:
    """Lower case, single spaces, ``**``/``^`` dropped: ``"m s**-1"`` -> ``"m s-1"``."""
    text = re.sub(r"\s+", " ", units.strip().lower())
    return text.replace("**", "").replace("^", "")
