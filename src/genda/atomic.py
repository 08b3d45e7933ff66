"""Publishing a file or directory all at once: nothing half-written is ever seen at its path.

Archives and checkpoints are written into a sibling ``<name>.partial-<pid>``
directory and moved into place only when complete. A directory cannot replace
a non-empty one in a single rename, so an existing one is first moved aside to
``<name>.old-<pid>`` and restored if the second rename fails. A file
(:func:`write_file`) is written to the same sibling and renamed over its path
in one step. Nothing is flushed to disk (no ``fsync``): the renames guard
against readers and interrupted writers, not against a power cut.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from genda.errors import OutputExistsError


def remove_path(path: Path) -> None:
    """Remove a file, link or directory tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def partial_path(path: Path) -> Path:
    """The private sibling that a writer fills before :func:`publish_directory`."""
    return path.with_name(f"{path.name}.partial-{os.getpid()}")


def publish_directory(partial: Path, path: Path, replace: bool = True) -> None:
    """Move the complete directory ``partial`` to ``path``, replacing what is there.

    With ``replace`` false, ``path`` must be absent (or an empty directory) at
    the moment of the rename: one that another process published meanwhile is
    never replaced (the rename itself refuses a non-empty target).

    Raises:
        OutputExistsError: ``replace`` is false and ``path`` holds something.
    """
    if not replace:
        try:
            partial.rename(path)
        except OSError as error:
            raise OutputExistsError(
                f"{path} appeared while it was being written ({error.strerror}); not replacing it"
            ) from None
        return
    if path.exists() or path.is_symlink():
        old = path.with_name(f"{path.name}.old-{os.getpid()}")
        remove_path(old)
        path.rename(old)
        try:
            partial.rename(path)
        except BaseException:
            old.rename(path)
            raise
        remove_path(old)
    else:
        partial.rename(path)


def write_file(path: Path, content: str | bytes | Callable[[Path], object]) -> Path:
    """Write the file ``path`` all at once; returns ``path``.

    ``content`` is text, bytes, or a writer called with the path to fill. It
    goes to :func:`partial_path` first (its parent directories are created),
    which then replaces ``path`` in one rename: ``path`` holds either what it
    held before or the complete new file. The partial file is removed if
    writing fails.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(path)
    remove_path(partial)
    try:
        if isinstance(content, bytes):
            partial.write_bytes(content)
        elif isinstance(content, str):
            partial.write_text(content)
        else:
            content(partial)
        os.replace(partial, path)
    except BaseException:
        remove_path(partial)
        raise
    return path
