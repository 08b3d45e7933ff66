"""Orchestration: the pipelines behind the ``genda`` commands (and, later, Prefect flows).

Functions here compose the lower layers; each is usable and tested without the CLI.
"""

from genda.orchestration.demo import DemoResult, circulation_metrics, run_demo
from genda.orchestration.simulate import fit_time_step, simulate_archive, simulation_attrs, spin_up

__all__ = [
    "DemoResult",
    "circulation_metrics",
    "fit_time_step",
    "run_demo",
    "simulate_archive",
    "simulation_attrs",
    "spin_up",
]
