"""Posterior ensembles made by workers that hold the prior: in one process or on Ray actors.

- :mod:`genda.distributed.work`: :class:`WindowJob` (what determines a window's
  members) and :class:`MemberGenerator` (a resident prior writing members
  straight into the store), with the fixed batch and task layout;
- :mod:`genda.distributed.actors`: one Ray actor per GPU, or per CPU thread budget;
- :mod:`genda.distributed.scheduler`: tasks over actors, replacing lost actors;
- :mod:`genda.distributed.cluster`: connect to a Ray cluster or start a local one;
- :mod:`genda.distributed.window`: :func:`complete_window`, the entry point.

See docs/distributed.md.
"""

from genda.distributed.actors import EnsembleWorker, WorkerSpec
from genda.distributed.cluster import RaySession, ray_session
from genda.distributed.scheduler import ActorPool, EnsembleRunError, RunReport, run_tasks
from genda.distributed.window import WindowReport, complete_window
from genda.distributed.work import (
    MemberGenerator,
    TaskReport,
    TrajectoryWindow,
    WindowJob,
    member_blocks,
    writer_tasks,
)

__all__ = [
    "ActorPool",
    "EnsembleRunError",
    "EnsembleWorker",
    "MemberGenerator",
    "RaySession",
    "RunReport",
    "TaskReport",
    "TrajectoryWindow",
    "WindowJob",
    "WindowReport",
    "WorkerSpec",
    "complete_window",
    "member_blocks",
    "ray_session",
    "run_tasks",
    "writer_tasks",
]
