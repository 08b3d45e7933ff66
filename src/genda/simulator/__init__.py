"""The built-in numerical model of the mesosphere and lower thermosphere.

A stand-in for UA-ICON / HIAMCM output: stacked isentropic layers on the
sphere, forced to a statistically steady perpetual-solstice state with jets,
planetary waves, migrating tides and small-scale stochastic forcing. See
docs/simulator.md.
"""

from genda.simulator.config import PlanetaryWave, SimulatorConfig, TidalForcing
from genda.simulator.model import START_TIME, SimulationError, Simulator, Snapshot

__all__ = [
    "START_TIME",
    "PlanetaryWave",
    "SimulationError",
    "Simulator",
    "SimulatorConfig",
    "Snapshot",
    "TidalForcing",
]
