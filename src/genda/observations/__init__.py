"""Observations: tables and their validation, operators ``H``, observing networks.

- :mod:`genda.observations.table`: the table format (:data:`OBSERVATION_COLUMNS`),
  :func:`validate_observations` (-> canonical table or :class:`ObservationError`
  naming the rows), :func:`read_observations` / :func:`write_observations`
  (CSV, Parquet, NetCDF);
- :mod:`genda.observations.operators`: :class:`ObservationOperator`, fields ->
  observation space;
- :mod:`genda.observations.networks`: the station catalog, error models, limb
  tracks and :func:`draw_observations` for synthetic experiments.

See docs/observations.md.
"""

from genda.observations.networks import (
    LIDARS,
    METEOR_RADARS,
    STATIONS,
    ErrorModel,
    LimbInstrument,
    Station,
    draw_observations,
    limb_track,
    observe_to_file,
    split_withheld,
)
from genda.observations.operators import ObservationOperator
from genda.observations.table import (
    OBSERVATION_COLUMNS,
    OPTIONAL_COLUMNS,
    ObservationError,
    read_observations,
    validate_observations,
    write_observations,
)

__all__ = [
    "LIDARS",
    "METEOR_RADARS",
    "OBSERVATION_COLUMNS",
    "OPTIONAL_COLUMNS",
    "STATIONS",
    "ErrorModel",
    "LimbInstrument",
    "ObservationError",
    "ObservationOperator",
    "Station",
    "draw_observations",
    "limb_track",
    "observe_to_file",
    "read_observations",
    "split_withheld",
    "validate_observations",
    "write_observations",
]
