"""Errors of the storage layer."""

from __future__ import annotations

from genda.errors import GendaError


class ArchiveError(GendaError, ValueError):
    """An archive or model-output file is missing, incomplete or inconsistent.

    The message names the file and what is wrong with it.
    """
