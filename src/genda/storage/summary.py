"""A short description of an archive: shape, time range, per-variable statistics.

Library side of ``genda summary`` and of the table ``genda simulate`` prints;
rendering lives in :mod:`genda.cli`.
"""

from __future__ import annotations

from dataclasses import dataclass

import dask
import numpy as np
import xarray as xr

from genda.times import iso


@dataclass(frozen=True)
class VariableSummary:
    """Minimum, mean and maximum of one variable over all its points (unweighted)."""

    name: str
    units: str
    minimum: float
    mean: float
    maximum: float


@dataclass(frozen=True)
class ArchiveSummary:
    """What :func:`summarize` reports.

    Attributes:
        source: the path (or a description) of the archive.
        sizes: dimension sizes in ``(time, altitude, latitude, longitude)`` order.
        time_range: first and last time as ISO strings, ``None`` without time values.
        variables: one entry per data variable.
    """

    source: str
    sizes: dict[str, int]
    time_range: tuple[str, str] | None
    variables: tuple[VariableSummary, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.sizes.values())


def summarize(ds: xr.Dataset, source: str | None = None) -> ArchiveSummary:
    """Summarise a Dataset in genda's conventions (one dask pass over the data).

    Args:
        ds: e.g. from :func:`genda.storage.open_archive`.
        source: shown as the archive's name; default ``ds.attrs["genda_source"]``.
    """
    order = [d for d in ("time", "altitude", "latitude", "longitude") if d in ds.sizes]
    order += [str(d) for d in ds.sizes if d not in order]
    sizes = {str(d): int(ds.sizes[d]) for d in order}
    names = [str(n) for n in ds.data_vars]
    stats = dask.compute(*[(ds[n].min(), ds[n].mean(dtype=np.float64), ds[n].max()) for n in names])
    variables = tuple(
        VariableSummary(
            name,
            str(ds[name].attrs.get("units", "")),
            float(lo.values),
            float(mean.values),
            float(hi.values),
        )
        for name, (lo, mean, hi) in zip(names, stats, strict=True)
    )
    time_range = None
    if "time" in ds.coords and ds["time"].size > 0:
        times = ds["time"].values
        time_range = (iso(times[0]), iso(times[-1]))
    return ArchiveSummary(
        source or str(ds.attrs.get("genda_source", "dataset")), sizes, time_range, variables
    )
