"""Posterior ensembles made by workers that hold the prior: in one process or on Ray actors.

- :mod:`genda.ensemble.work`: :class:`WindowJob` (what determines a window's
  members) and :class:`MemberGenerator` (a resident prior writing members
  straight into the store), with the fixed batch and task layout;
- :mod:`genda.ensemble.actors`: one Ray actor per GPU, or per CPU thread budget;
- :mod:`genda.ensemble.scheduler`: tasks over actors, replacing lost actors;
- :mod:`genda.ensemble.cluster`: connect to a Ray cluster or start a local one;
- :mod:`genda.ensemble.window`: :func:`complete_window`, the entry point.

See docs/ensemble.md.
"""

from genda.ensemble.actors import EnsembleWorker, WorkerSpec
from genda.ensemble.cluster import RaySession, ray_session
from genda.ensemble.scheduler import ActorPool, EnsembleRunError, RunReport, run_tasks
from genda.ensemble.window import WindowReport, complete_window
from genda.ensemble.work import MemberGenerator, TaskReport, WindowJob, member_blocks, writer_tasks

__all__ = [
    "ActorPool",
    "EnsembleRunError",
    "EnsembleWorker",
    "MemberGenerator",
    "RaySession",
    "RunReport",
    "TaskReport",
    "WindowJob",
    "WindowReport",
    "WorkerSpec",
    "complete_window",
    "member_blocks",
    "ray_session",
    "run_tasks",
    "writer_tasks",
]
