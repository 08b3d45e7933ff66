"""Observation tables of a few points, the rows the closed-form tests observe."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def point_table(
    rows: Sequence[tuple], times: Sequence[pd.Timestamp], fwhm_km: Sequence[float | None] = ()
) -> pd.DataFrame:
    """``rows`` of ``(variable, lat, lon, alt_km, sigma)`` at each of ``times``, values 0.

    ``fwhm_km``: per row, a vertical weighting width (``None``: a point), when given.
    """
    table = pd.DataFrame(
        [
            {
                "time": when,
                "variable": v,
                "lat": lat,
                "lon": lon,
                "alt_km": alt,
                "value": 0.0,
                "sigma": sigma,
            }
            for when in times
            for v, lat, lon, alt, sigma in rows
        ]
    )
    if fwhm_km:
        widths = [np.nan if w is None else w for w in fwhm_km] * len(times)
        table["fwhm_km"] = widths
    return table
