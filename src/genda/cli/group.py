"""The ``genda`` command group: the Typer app, its consoles and how an error is printed."""

from __future__ import annotations

from typing import Annotated

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

import genda
from genda.errors import GendaError


class GendaGroup(TyperGroup):
    """The command group: an error genda raises on purpose is one sentence and exit code 1.

    Anything else is a bug and keeps its traceback.
    """

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except GendaError as error:
            raise fail(str(error)) from error


app = typer.Typer(
    name="genda",
    cls=GendaGroup,
    help="Generative data assimilation for the mesosphere and lower thermosphere.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
"""Where the commands print their results (standard output)."""
errors = Console(stderr=True)
"""Where an error is printed (standard error)."""


def fail(message: str) -> typer.Exit:
    """Print ``message`` as an error and return the exit (code 1) for the caller to raise."""
    # The message is text, not markup: a path such as /data/[run]/x stays as it is.
    errors.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False)
    return typer.Exit(code=1)


def _version(value: bool) -> None:
    if value:
        console.print(f"genda {genda.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Generative data assimilation for the mesosphere and lower thermosphere."""


__all__ = ["GendaGroup", "app", "console", "errors", "fail", "main"]
