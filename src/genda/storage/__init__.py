"""Storage: training archives (Zarr v3), readers of model output, regridding.

- :func:`write_archive` streams snapshots into an atomic, chunked Zarr v3 archive
  with CF attributes, provenance and normalisation statistics;
- :func:`open_archive` opens our archives and other models' NetCDF/Zarr output
  lazily in genda's conventions (UA-ICON's native grid remapped, :class:`IconRemap`),
  optionally regridded to a :class:`~genda.grid.Grid`
  (:func:`genda.storage.regrid.regrid`; the function is not re-exported here so
  that ``genda.storage.regrid`` stays the module);
- :func:`summarize` gives the shape, time range and per-variable statistics;
- :class:`EnsembleStore` holds posterior ensembles of many windows
  (:mod:`~genda.storage.ensemble_store` writes them in the layout of
  :mod:`~genda.storage.ensemble_layout`); :func:`open_ensemble` opens one
  lazily, :func:`query` picks a level and a statistic
  (:mod:`~genda.storage.ensemble_query`, docs/store.md).
"""

from genda.storage.archive import consolidate, provenance_attrs, read_normalization, write_archive
from genda.storage.ensemble_query import open_ensemble, query
from genda.storage.ensemble_store import EnsembleStore
from genda.storage.errors import ArchiveError, EnsembleStoreError
from genda.storage.icon_native import IconRemap
from genda.storage.readers import open_archive, open_raw, to_genda_conventions
from genda.storage.summary import ArchiveSummary, VariableSummary, summarize

__all__ = [
    "ArchiveError",
    "ArchiveSummary",
    "EnsembleStore",
    "EnsembleStoreError",
    "IconRemap",
    "VariableSummary",
    "consolidate",
    "open_archive",
    "open_ensemble",
    "open_raw",
    "provenance_attrs",
    "query",
    "read_normalization",
    "summarize",
    "to_genda_conventions",
    "write_archive",
]
