"""Damaged chunk and shard files: reads that fail name the file on disk.

A Zarr chunk file that was truncated or overwritten fails deep inside a
codec (``RuntimeError: Zstd decompression error``, ``ValueError: Stored and
computed checksum do not match``) with no word of which file it was. Every
genda read of a Zarr store (archives through :func:`genda.storage.open_raw`,
ensemble stores through :mod:`genda.storage.ensemble_store`) goes through
:class:`NamingCodecPipeline` instead, which turns such a failure into a
:class:`DamagedFileError` naming the chunk or shard file. The pipeline is
Zarr's own (``BatchedCodecPipeline``) and decodes exactly as it does; it only
catches, and it is chosen per array with :func:`naming_reads`, leaving the
process's Zarr configuration as it was.

A deleted chunk file is not an error to Zarr: it reads as the fill value
(NaN for genda's floats). Callers that know a chunk must exist (a member
flagged complete) check for that themselves (:mod:`genda.storage.integrity`).
"""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import zarr
from zarr.core.codec_pipeline import BatchedCodecPipeline
from zarr.registry import register_pipeline

from genda.storage.errors import ArchiveError

READ_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    RuntimeError,
    ValueError,
    EOFError,
    IndexError,
    struct.error,
)
"""What a damaged or unreadable chunk file raises while it is read and decoded
(codecs raise ``RuntimeError`` or ``ValueError``, the file system ``OSError``)."""


class DamagedFileError(ArchiveError):
    """A chunk or shard file of a Zarr store cannot be read or decoded.

    Attributes:
        file: the file on disk (or the store key where the store is not a directory).
        reason: what reading it raised, e.g. ``RuntimeError: Zstd decompression error: ...``.
    """

    def __init__(self, message: str, file: Path | str, reason: str) -> None:
        super().__init__(message)
        self.file = file
        self.reason = reason


def _file_of(byte_getter: Any) -> Path | str:
    """The file behind a Zarr ``StorePath``: a path for a local store, else the URL-like key."""
    root = getattr(getattr(byte_getter, "store", None), "root", None)
    key = getattr(byte_getter, "path", None)
    if root is not None and key is not None:
        return Path(root) / key
    return str(byte_getter)


def is_ensemble_store(root: Path) -> bool:
    """Whether ``root`` holds a genda ensemble store (its ``zarr.json`` says so); no error."""
    try:
        attrs = json.loads((root / "zarr.json").read_text()).get("attributes", {})
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(attrs, dict) and attrs.get("genda_store") == "ensemble"


def reason_of(error: BaseException) -> str:
    """``Type: message`` of an exception, as the problem lists show it."""
    return f"{type(error).__name__}: {error}"


def damaged_message(file: Path | str, error: BaseException, root: Path | None = None) -> str:
    """One sentence: ``file`` cannot be read, why, and (in an ensemble store) how to recover."""
    text = f"{file} cannot be read ({reason_of(error)}): the file is damaged (truncated or overwritten)"
    if root is not None and is_ensemble_store(root):
        text += (
            f"; 'genda validate --repair {root}' removes it and clears the complete flags of "
            "the members it held, so that a rerun of their window regenerates them"
        )
    return text


class NamingCodecPipeline(BatchedCodecPipeline):
    """Zarr's batched pipeline whose failed reads name the chunk or shard file (module docstring)."""

    async def read(
        self,
        batch_info: Iterable[Any],
        out: Any,
        drop_axes: tuple[int, ...] = (),
    ) -> None:
        batch = list(batch_info)
        try:
            await super().read(batch, out, drop_axes)
        except READ_ERRORS as error:
            # Chunks inside a shard have no file of their own: the shard's
            # pipeline (the caller) names the shard file.
            if isinstance(error, ArchiveError) or not isinstance(_file_of(batch[0][0]), Path):
                raise
            # One batch holds many chunks: read them one by one to find the bad file.
            for item in batch:
                try:
                    await super().read([item], out, drop_axes)
                except READ_ERRORS as single:
                    raise _damaged(item[0], single) from single
            # Every file reads on its own: not a damaged file, so keep the traceback.
            raise


def _damaged(byte_getter: Any, error: BaseException) -> DamagedFileError:
    file = _file_of(byte_getter)
    root = Path(byte_getter.store.root) if isinstance(file, Path) else None
    return DamagedFileError(damaged_message(file, error, root), file, reason_of(error))


register_pipeline(NamingCodecPipeline)
_PIPELINE_PATH = f"{NamingCodecPipeline.__module__}.{NamingCodecPipeline.__qualname__}"


_CONFIG_LOCK = threading.RLock()
"""Zarr's configuration is global: two threads setting and restoring it in
overlapping blocks would leave it changed for good, so blocks take turns."""


@contextmanager
def naming_reads() -> Iterator[None]:
    """Zarr arrays opened inside this block read through :class:`NamingCodecPipeline`.

    An array takes its pipeline when it is opened, so the arrays of a Dataset
    opened inside the block keep naming files after it; those of a group
    opened inside it but indexed later do not (:class:`NamingGroup` does that).
    """
    with _CONFIG_LOCK, zarr.config.set({"codec_pipeline.path": _PIPELINE_PATH}):
        yield


class NamingGroup(zarr.Group):
    """A Zarr group whose arrays, opened when indexed, read through :class:`NamingCodecPipeline`."""

    def __getitem__(self, path: str) -> Any:
        with naming_reads():
            return super().__getitem__(path)


def open_naming_group(path: str | Path, mode: Literal["r", "r+"]) -> NamingGroup:
    """The Zarr v3 group at ``path`` (consolidated metadata skipped) as a :class:`NamingGroup`."""
    group = zarr.open_group(str(path), mode=mode, zarr_format=3, use_consolidated=False)
    return NamingGroup(group._async_group)


def chunk_file(array: zarr.Array, element: Sequence[int]) -> Path | str:
    """The file holding element ``element`` of ``array``: its shard file, else its chunk file."""
    grid = array.shards or array.chunks
    coords = tuple(int(e) // int(g) for e, g in zip(element, grid, strict=True))
    key = array.metadata.encode_chunk_key(coords)  # type: ignore[union-attr]
    store = array.store_path.store
    root = getattr(store, "root", None)
    if root is None:
        return f"{array.store_path}/{key}"
    return Path(root) / array.path / key


__all__ = [
    "READ_ERRORS",
    "DamagedFileError",
    "NamingCodecPipeline",
    "NamingGroup",
    "chunk_file",
    "damaged_message",
    "is_ensemble_store",
    "naming_reads",
    "open_naming_group",
    "reason_of",
]
