"""Planning a posterior run: memory and time per member, traced without running.

* :mod:`~genda.planning.dispatch`: dispatch modes that count FLOPs and the bytes of live tensors;
* :mod:`~genda.planning.spec`: :class:`RunSpec`, the settings that decide the cost;
* :mod:`~genda.planning.build`: the real network and guidance of a spec, built on ``meta``;
* :mod:`~genda.planning.trace`: one traced stretch of sampling;
* :mod:`~genda.planning.measure`: the same stretch run for real and measured (validation);
* :mod:`~genda.planning.model`: the cost of a member, the largest batch, time on a GPU;
* :mod:`~genda.planning.plan`: :func:`recommend`, the strategy to run and why;
* :mod:`~genda.planning.table`: the planning table of ``docs/strategies.md``.
"""

from genda.planning.plan import Plan, StrategyPlan, recommend
from genda.planning.spec import PlanError, RunSpec

__all__ = ["Plan", "PlanError", "RunSpec", "StrategyPlan", "recommend"]
