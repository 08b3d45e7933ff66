"""Errors of the storage layer, and the message that names damaged ensemble members."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from genda.errors import GendaError


class ArchiveError(GendaError, ValueError):
    """An archive or model-output file is missing, incomplete or inconsistent.

    The message names the file and what is wrong with it.
    """


class EnsembleStoreError(ArchiveError):
    """An ensemble store is missing, not ours, inconsistent, or asked for something it lacks."""


def damaged_members_message(path: Path, window: str, members: Sequence[int], what: str = "") -> str:
    """The error for members flagged complete whose data are missing or NaN."""
    shown = ", ".join(map(str, members[:20])) + (" ..." if len(members) > 20 else "")
    return (
        f"window {window} of {path}: member{'s' if len(members) > 1 else ''} {shown} "
        f"{'are' if len(members) > 1 else 'is'} flagged complete but {what or 'the'} data are "
        f"missing or NaN (a chunk file was removed or damaged); 'genda validate --repair {path}' "
        "clears the flags so that a rerun of the window regenerates them"
    )
