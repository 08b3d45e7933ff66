"""Orchestration: the pipelines behind the ``genda`` commands, and the Prefect flows.

Functions here compose the lower layers; each is usable and tested without the
CLI. The flows (:mod:`genda.orchestration.flows`) import Prefect and are not
imported here.
"""

from genda.orchestration.demo import DemoResult, run_demo
from genda.orchestration.fidelity import FidelityRun, prior_fidelity
from genda.orchestration.simulate import fit_time_step, simulate_archive, simulation_attrs, spin_up
from genda.orchestration.train import TrainingRun, train_prior

__all__ = [
    "DemoResult",
    "FidelityRun",
    "TrainingRun",
    "fit_time_step",
    "prior_fidelity",
    "run_demo",
    "simulate_archive",
    "simulation_attrs",
    "spin_up",
    "train_prior",
]
