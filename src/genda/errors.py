"""The one base of every error genda raises on purpose.

An error raised on purpose says, in one sentence, what is wrong with what the
user gave (a setting, a file, a row, a device) and names it. The ``genda``
command prints such an error as that sentence with exit code 1; anything else
is a bug and keeps its traceback.

Each class also derives from the built-in exception it replaces
(``ValueError``, ``KeyError``, ...), so code that catches the built-in keeps
working.
"""

from __future__ import annotations


class GendaError(Exception):
    """Base of every error genda raises on purpose; its message is for the user."""


class InvalidValueError(GendaError, ValueError):
    """A setting, argument or piece of data is outside what genda accepts."""


class UnknownNameError(GendaError, KeyError):
    """A name (variable, station, strategy, criterion, column) genda does not know."""

    def __str__(self) -> str:
        # KeyError quotes its message; this one is a sentence.
        return str(self.args[0]) if self.args else ""


class InvalidTypeError(GendaError, TypeError):
    """An argument of the wrong kind (a table that is not a DataFrame, ...)."""


class OutputExistsError(GendaError, FileExistsError):
    """An output path exists and may not be replaced (no overwrite, or not genda's)."""


class MissingInputError(GendaError, FileNotFoundError):
    """An input file or store does not exist."""


class DeviceError(GendaError, RuntimeError):
    """A requested torch device is not available in this build or on this machine."""


class RunFailedError(GendaError, RuntimeError):
    """A run (a window, a server start) failed for a reason stated in the message."""


__all__ = [
    "DeviceError",
    "GendaError",
    "InvalidTypeError",
    "InvalidValueError",
    "MissingInputError",
    "OutputExistsError",
    "RunFailedError",
    "UnknownNameError",
]
