"""Observations: tables and their validation, operators ``H``, observing networks.

- :mod:`genda.observations.table`: the table format (:data:`OBSERVATION_COLUMNS`),
  :func:`validate_observations` (-> canonical table or :class:`ObservationError`
  naming the rows);
- :mod:`genda.observations.files`: :func:`read_observations` /
  :func:`write_observations` (CSV, Parquet, NetCDF);
- :mod:`genda.observations.operators`: :class:`ObservationOperator`, fields ->
  observation space;
- :mod:`genda.observations.catalog`: the stations, limb sounders and error
  models;
- :mod:`genda.observations.geometry`: where they observe on a grid (radar and
  lidar columns, limb tracks);
- :mod:`genda.observations.networks`: :func:`draw_observations` of a truth by
  named networks, for synthetic experiments;
- :mod:`genda.observations.observe`: :func:`observe_to_file`, drawing from an
  archive and writing the tables (``genda observe``), and its
  :class:`ObservationDraw`.

See docs/observations.md.
"""

from genda.observations.catalog import (
    LIDARS,
    METEOR_RADARS,
    STATIONS,
    ErrorModel,
    LimbInstrument,
    Station,
)
from genda.observations.files import read_observations, write_observations
from genda.observations.geometry import limb_track
from genda.observations.networks import draw_observations, split_withheld
from genda.observations.observe import ObservationDraw, observe_to_file
from genda.observations.operators import ObservationOperator
from genda.observations.table import (
    OBSERVATION_COLUMNS,
    OPTIONAL_COLUMNS,
    ObservationError,
    validate_observations,
)

__all__ = [
    "LIDARS",
    "METEOR_RADARS",
    "OBSERVATION_COLUMNS",
    "OPTIONAL_COLUMNS",
    "STATIONS",
    "ErrorModel",
    "LimbInstrument",
    "ObservationDraw",
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
