"""Unit strings as genda compares them."""

from __future__ import annotations

import re

__all__ = ["canonical_units"]


def canonical_units(units: str) -> str:
    """Lower case, single spaces, ``**``/``^`` dropped: ``"m s**-1"`` -> ``"m s-1"``."""
    text = re.sub(r"\s+", " ", units.strip().lower())
    return text.replace("**", "").replace("^", "")
