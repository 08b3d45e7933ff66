"""What genda wrote, recognised by its own metadata: nothing else is ever replaced.

Every command that writes refuses an existing output unless told to replace
it (the ``overwrite`` setting), and even then replaces only an output of the
same kind that genda itself wrote:

- an archive: a Zarr directory whose root ``zarr.json`` carries ``genda_variables``;
- an ensemble store: a Zarr directory whose root attributes carry ``genda_windows``;
- a checkpoint: a directory holding ``model.safetensors`` and a ``config.json``
  whose ``format`` is ``genda-checkpoint``;
- a report: a directory holding ``metrics.json`` (``genda evaluate``) or
  ``fidelity.json`` (``genda fidelity``);
- a demo folder: a directory holding the marker file ``.genda-demo``.

An empty directory holds nothing to lose and may always be written into.
Reading ``zarr.json`` as plain JSON keeps this module free of the storage
stack, so every layer can use it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from genda.errors import OutputExistsError

Kind = Literal[
    "archive", "ensemble store", "checkpoint", "evaluation report", "fidelity report", "demo folder"
]

CHECKPOINT_FORMAT = "genda-checkpoint"
"""The ``format`` a genda checkpoint's ``config.json`` names (``genda.models.checkpoint.FORMAT``)."""

DEMO_MARKER = ".genda-demo"
"""The file that marks a folder as written by ``genda demo``."""

# An ensemble store also carries its variables (genda_variables): its own key is looked for first.
_ZARR_MARKERS: dict[str, str] = {"ensemble store": "genda_windows", "archive": "genda_variables"}
_DIRECTORY_FILES: dict[str, tuple[str, ...]] = {
    "checkpoint": ("config.json", "model.safetensors"),
    "evaluation report": ("metrics.json",),
    "fidelity report": ("fidelity.json",),
    "demo folder": (DEMO_MARKER,),
}


def _zarr_attributes(path: Path) -> dict[str, object]:
    """The root attributes of a Zarr v3 directory (empty when it is not one)."""
    try:
        meta = json.loads((path / "zarr.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    attributes = meta.get("attributes") if isinstance(meta, dict) else None
    return attributes if isinstance(attributes, dict) else {}


def written_kind(path: str | os.PathLike[str]) -> Kind | None:
    """Which kind of genda output ``path`` is, or ``None`` (absent, foreign, or a plain file)."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return None
    attributes = _zarr_attributes(path)
    for kind, key in _ZARR_MARKERS.items():
        if key in attributes:
            return kind  # type: ignore[return-value]
    for kind, names in _DIRECTORY_FILES.items():
        if all((path / name).is_file() for name in names):
            if kind == "checkpoint" and not _is_genda_checkpoint(path / names[0]):
                continue  # another tool's config.json (a model folder, a project)
            return kind  # type: ignore[return-value]
    return None


def _is_genda_checkpoint(config: Path) -> bool:
    """``config.json`` names genda's checkpoint format."""
    try:
        meta = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == CHECKPOINT_FORMAT


def is_empty_directory(path: Path) -> bool:
    """``path`` is a real directory with nothing in it."""
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def _describe(path: Path, found: Kind | None) -> str:
    """What an existing ``path`` is, for a refusal: ``"a file"``, ``"a genda archive"``, ..."""
    if path.is_symlink():
        return "a symbolic link (genda replaces no links: give the path it points to)"
    if found is not None:
        return f"a genda {found}"
    if path.is_file():
        return "a file"
    if not (path / "zarr.json").is_file():
        return "a directory genda did not write (not a Zarr v3 store)"
    return "a Zarr v3 store that genda did not write"


def _refuse_other_kind(path: Path, kind: Kind, advice: str) -> None:
    """Raise unless the existing ``path`` is genda's ``kind``; the message says what it is."""
    found = written_kind(path)
    if found != kind:
        raise OutputExistsError(f"{path} exists and is {_describe(path, found)}; {advice}")


def check_replaceable(path: str | os.PathLike[str], kind: Kind, overwrite: bool) -> None:
    """Refuse to replace ``path`` unless it may be: absent, empty, or genda's ``kind`` with overwrite.

    Args:
        path: the output about to be written.
        kind: what is about to be written there.
        overwrite: the user asked to replace an existing output.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is false, or it is
            not a genda ``kind`` (a file, a foreign directory, another kind of
            genda output): genda never deletes what it did not create.
    """
    path = Path(path)
    if not (path.exists() or path.is_symlink()) or is_empty_directory(path):
        return
    _refuse_other_kind(
        path,
        kind,
        f"genda replaces only a {kind} it wrote itself: choose another path, "
        "or move it away yourself",
    )
    if not overwrite:
        raise OutputExistsError(
            f"{path} exists (a genda {kind}); set overwrite (--overwrite) to replace it"
        )


def check_extendable(path: str | os.PathLike[str], kind: Kind) -> None:
    """Refuse to add to ``path`` unless it is absent, empty, or genda's ``kind`` (e.g. a store).

    Raises:
        OutputExistsError: ``path`` is a file or a directory that is not a genda ``kind``.
    """
    path = Path(path)
    if path.is_symlink() and path.exists():
        path = path.resolve()  # adding to a store through a link is adding to the store
    if not (path.exists() or path.is_symlink()) or is_empty_directory(path):
        return
    _refuse_other_kind(path, kind, f"not a genda {kind}; choose another path")


def check_store_output(path: str | os.PathLike[str], overwrite: bool) -> None:
    """Refuse an ensemble store ``path`` that may not be extended (or, with ``overwrite``, replaced).

    Without ``overwrite`` the window is added to the store (:func:`check_extendable`);
    with it the store is replaced whole (:func:`check_replaceable`).

    Raises:
        OutputExistsError: as :func:`check_extendable` or :func:`check_replaceable`.
    """
    if overwrite:
        check_replaceable(path, "ensemble store", overwrite=True)
    else:
        check_extendable(path, "ensemble store")


def check_file_replaceable(path: str | os.PathLike[str], overwrite: bool) -> None:
    """Refuse to write a single-file export over a directory, or over a file without overwrite.

    Raises:
        OutputExistsError: ``path`` is a directory (or a link to one), or a
            file and ``overwrite`` is false.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputExistsError(f"{path} is a directory; give a file name")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise OutputExistsError(f"{path} exists; set overwrite (--overwrite) to replace it")


__all__ = [
    "DEMO_MARKER",
    "Kind",
    "check_extendable",
    "check_file_replaceable",
    "check_replaceable",
    "check_store_output",
    "is_empty_directory",
    "written_kind",
]
