"""Orchestration: the pipelines behind the ``genda`` commands (and, later, Prefect flows).

Functions here compose the lower layers; each is usable and tested without the CLI.
"""

from genda.orchestration.demo import DemoResult, circulation_metrics, run_demo
from genda.orchestration.fidelity import FidelityRun, prior_fidelity
from genda.orchestration.simulate import fit_time_step, simulate_archive, simulation_attrs, spin_up
from genda.orchestration.train import TrainingRun, train_prior

__all__ = [
    "DemoResult",
    "FidelityRun",
    "TrainingRun",
    "circulation_metrics",
    "fit_time_step",
    "prior_fidelity",
    "run_demo",
    "simulate_archive",
    "simulation_attrs",
    "spin_up",
    "train_prior",
]
