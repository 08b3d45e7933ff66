"""The ``genda`` command.

Commands are thin: they parse options, call a library function
(:mod:`genda.orchestration`, :mod:`genda.storage`) and print the result.

    genda --version
    genda simulate --out archive.zarr --days 30 --seed 1
    genda summary archive.zarr
    genda train --data archive.zarr --strategy joint3d --out prior/

The package, one module per group of commands:

- :mod:`~genda.cli.group`: the Typer app, its consoles, how an error is printed;
- :mod:`~genda.cli.options`: shared options and option text parsed into settings;
- :mod:`~genda.cli.render`: what the commands print, built from the library's results;
- :mod:`~genda.cli.archives`: ``simulate``, ``summary``, ``observe``;
- :mod:`~genda.cli.ingest`: ``ingest`` (instrument files to an observation table);
- :mod:`~genda.cli.priors`: ``train``, ``fidelity``;
- :mod:`~genda.cli.windows`: ``assimilate``, ``baseline``;
- :mod:`~genda.cli.stores`: ``query``, ``validate``, ``evaluate``;
- :mod:`~genda.cli.products`: ``plot``, ``export``;
- :mod:`~genda.cli.cycles`: ``cycle``, ``serve``, ``demo``;
- :mod:`~genda.cli.plan`: ``plan`` (memory and time per member, the strategy to run).

The commands are registered below, in the order ``genda --help`` lists them.
"""

from __future__ import annotations

from genda.cli.archives import observe, simulate, summary
from genda.cli.cycles import cycle, demo, serve
from genda.cli.enkf import enkf_cycle
from genda.cli.forecast import forecast
from genda.cli.group import GendaGroup, app, main
from genda.cli.ingest import ingest
from genda.cli.plan import plan
from genda.cli.priors import fidelity, train_command
from genda.cli.products import export, plot
from genda.cli.render import render_summary
from genda.cli.stores import evaluate, query, validate_command
from genda.cli.windows import assimilate, baseline

app.command()(simulate)
app.command()(summary)
app.command("train")(train_command)
app.command()(fidelity)
app.command()(observe)
app.command()(ingest)
app.command()(assimilate)
app.command()(forecast)
app.command()(query)
app.command("validate")(validate_command)
app.command()(cycle)
app.command()(serve)
app.command()(evaluate)
app.command()(plot)
app.command()(export)
app.command()(baseline)
app.command("enkf-cycle")(enkf_cycle)
app.command()(demo)
app.command()(plan)

__all__ = [
    "GendaGroup",
    "app",
    "assimilate",
    "baseline",
    "cycle",
    "demo",
    "enkf_cycle",
    "evaluate",
    "export",
    "fidelity",
    "forecast",
    "ingest",
    "main",
    "observe",
    "plan",
    "plot",
    "query",
    "render_summary",
    "serve",
    "simulate",
    "summary",
    "train_command",
    "validate_command",
]
