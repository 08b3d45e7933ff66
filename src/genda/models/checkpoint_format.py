"""The checkpoint format: file names, ``config.json``, checksums, atomic writing and checked reading.

A checkpoint is a directory::

    config.json             everything needed to rebuild and check the model
    model.safetensors       EMA weights "ema.<name>" and raw weights "model.<name>"
                            (names of EDMDenoiser.state_dict())
    optimizer.safetensors   optional: AdamW state "<parameter name>.<key>" (resuming)
    loss.csv, loss.png      optional: the training log and its plot (not checksummed)

``config.json`` names the format and its version and lists the SHA-256 of
each safetensors file. This module knows files, JSON and tensors by name;
what the entries describe (grid, strategy, architecture, ...) is built in
:mod:`genda.models.checkpoint_build`. Weights are read with ``safetensors``
and the configuration with ``json``; nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

import genda
from genda.atomic import partial_path, publish_directory, remove_path
from genda.errors import GendaError, InvalidValueError, OutputExistsError
from genda.grid import GridMismatchError
from genda.ownership import CHECKPOINT_FORMAT, is_empty_directory, written_kind

__all__ = [
    "CONFIG_FILE",
    "EMA_PREFIX",
    "FORMAT",
    "FORMAT_VERSION",
    "MODEL_FILE",
    "OPTIMIZER_FILE",
    "RAW_PREFIX",
    "REQUIRED_KEYS",
    "CheckpointContents",
    "CheckpointError",
    "CheckpointGridMismatchError",
    "check_replaceable",
    "check_tensors",
    "config_text",
    "file_checksums",
    "read_directory",
    "safetensors_blob",
    "state_tensors",
    "without_derived",
    "write_directory",
]

FORMAT = CHECKPOINT_FORMAT
FORMAT_VERSION = 1
"""The version written; :func:`read_directory` reads this version only."""
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
EMA_PREFIX = "ema."
RAW_PREFIX = "model."

REQUIRED_KEYS = (
    "format",
    "format_version",
    "genda_version",
    "grid",
    "strategy",
    "architecture",
    "sigma_data",
    "normalization",
    "training",
    "step",
    "archive",
    "files",
)


class CheckpointError(GendaError, ValueError):
    """A checkpoint is missing, corrupt, inconsistent or does not fit; the message says which file and why."""


class CheckpointGridMismatchError(CheckpointError, GridMismatchError):
    """The checkpoint's grid is not the expected one (also a :class:`~genda.grid.GridMismatchError`)."""


# ---------------------------------------------------------------------------- write
def state_tensors(module: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` on the CPU, each name prefixed with ``prefix``."""
    return {
        prefix + name: t.detach().to("cpu").clone().contiguous()
        for name, t in module.state_dict().items()
    }


def safetensors_blob(tensors: Mapping[str, torch.Tensor]) -> bytes:
    """The bytes of a safetensors file of ``tensors``, marked as genda's."""
    return save_safetensors(dict(tensors), metadata={"format": "pt", "genda": FORMAT})


def file_checksums(blobs: Mapping[str, bytes]) -> dict[str, dict[str, Any]]:
    """``config.json``'s ``"files"``: the SHA-256 and size of each file."""
    return {
        name: {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
        for name, blob in blobs.items()
    }


def _json_clean(value: Any) -> Any:
    """NaN and infinities -> ``None`` (valid JSON), numpy scalars -> Python, tuples -> lists."""
    if isinstance(value, Mapping):
        return {str(k): _json_clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


_NUMBER_LIST = re.compile(r"\[\s*(-?[0-9][-+0-9.eE]*(?:,\s*-?[0-9][-+0-9.eE]*)*)\s*\]")


def _compact_number_lists(text: str) -> str:
    """Indented JSON with each list of numbers on one line (coordinates stay readable)."""
    return _NUMBER_LIST.sub(
        lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text
    )


def config_text(config: Mapping[str, Any]) -> str:
    """The text of ``config.json``: indented, number lists on one line, no NaN."""
    return _compact_number_lists(json.dumps(_json_clean(config), indent=2, allow_nan=False)) + "\n"


def check_replaceable(path: str | os.PathLike[str]) -> None:
    """Refuse to let a checkpoint replace something that is not a checkpoint.

    ``path`` may be absent, an empty directory, or an earlier genda checkpoint,
    recognised by its ``config.json`` naming genda's format and its weights
    (:func:`genda.ownership.written_kind`): another tool's ``config.json`` does not count.

    Raises:
        OutputExistsError: ``path`` is a file, a link, or a non-empty directory
            that is not a genda checkpoint.
    """
    path = Path(path)
    if not (path.exists() or path.is_symlink()) or is_empty_directory(path):
        return
    if written_kind(path) == "checkpoint":
        return
    raise OutputExistsError(
        f"{path} exists and is not a genda checkpoint (no {CONFIG_FILE} of format {FORMAT!r} "
        f"with {MODEL_FILE}); refusing to replace it: choose another directory"
    )


def write_directory(
    path: str | os.PathLike[str],
    blobs: Mapping[str, bytes],
    text: str,
    extra_files: Mapping[str, bytes] | None = None,
) -> Path:
    """Write ``blobs``, ``extra_files`` and the ``config.json`` ``text`` atomically at ``path``.

    The files go into a temporary sibling directory, ``config.json`` last, which
    is then renamed into place: a reader never sees a half-written checkpoint
    and a crash leaves the previous one intact.

    Raises:
        ValueError: an extra file name is reserved or not a plain file name.
        FileExistsError: ``path`` exists and is not a checkpoint (:func:`check_replaceable`).
    """
    for name in extra_files or {}:
        if name in (CONFIG_FILE, MODEL_FILE, OPTIMIZER_FILE) or Path(name).name != name:
            raise InvalidValueError(
                f"extra file name {name!r} is reserved or not a plain file name"
            )
    path = Path(os.path.abspath(path))
    check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(path)
    remove_path(partial)
    try:
        partial.mkdir()
        for name, blob in {**blobs, **(extra_files or {})}.items():
            (partial / name).write_bytes(blob)
        (partial / CONFIG_FILE).write_text(text, encoding="utf-8")  # last: marks completeness
        publish_directory(partial, path)
    except BaseException:
        remove_path(partial)
        raise
    return path


# ---------------------------------------------------------------------------- read
@dataclass
class CheckpointContents:
    """A checkpoint's files, read and checked against their checksums (not yet against a model).

    Attributes:
        path: the directory.
        config: the parsed ``config.json``.
        ema: EMA weights by state-dict name (prefix removed), on the CPU.
        model: raw weights by state-dict name.
        optimizer: optimizer state tensors, if read and present.
    """

    path: Path
    config: dict[str, Any]
    ema: dict[str, torch.Tensor]
    model: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor] | None = None


def _read_verified(path: Path, name: str, files: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Read ``path / name`` once, check its SHA-256 against ``files[name]``, parse it."""
    entry = files.get(name)
    if not isinstance(entry, Mapping) or not isinstance(entry.get("sha256"), str):
        raise CheckpointError(f"{path / CONFIG_FILE}: 'files' has no sha256 for {name}")
    file = path / name
    if not file.is_file():
        raise CheckpointError(f"{file}: missing (the checkpoint lists it in {CONFIG_FILE})")
    blob = file.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != entry["sha256"]:
        raise CheckpointError(
            f"{file}: checksum mismatch (SHA-256 {digest[:16]}..., {CONFIG_FILE} says "
            f"{entry['sha256'][:16]}...); the file is corrupt or was changed after saving"
        )
    try:
        return load_safetensors(blob)
    except (SafetensorError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{file}: not a readable safetensors file: {error}") from error


def _read_config(path: Path) -> dict[str, Any]:
    """``config.json`` of the directory ``path``: a JSON object of this format and version."""
    config_file = path / CONFIG_FILE
    if not config_file.is_file():
        present = sorted(p.name for p in path.iterdir())
        raise CheckpointError(
            f"{path}: not a checkpoint, {CONFIG_FILE} is missing (files present: {present})"
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise CheckpointError(f"{config_file}: not UTF-8 text ({error})") from error
    except json.JSONDecodeError as error:
        raise CheckpointError(
            f"{config_file}: not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})"
        ) from error
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_file}: expected a JSON object, got {type(config).__name__}")
    if config.get("format") != FORMAT:
        raise CheckpointError(
            f"{config_file}: not a genda checkpoint (format {config.get('format')!r}, expected {FORMAT!r})"
        )
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{config_file}: checkpoint format version {version!r} is not supported by genda "
            f"{genda.__version__}, which reads version {FORMAT_VERSION}"
            + ("; upgrade genda" if isinstance(version, int) and version > FORMAT_VERSION else "")
        )
    missing = [key for key in REQUIRED_KEYS if key not in config]
    if missing:
        raise CheckpointError(f"{config_file}: missing keys {missing}")
    if not isinstance(config["files"], Mapping):
        raise CheckpointError(f"{config_file}: 'files' must be an object of file checksums")
    return config


def read_directory(path: Path, *, with_optimizer: bool = False) -> CheckpointContents:
    """Read and check the files of the checkpoint directory ``path``.

    Checks: the files exist, ``config.json`` is a JSON object of this format
    and version with all keys, each safetensors file matches its SHA-256, and
    every weight is named ``ema.*`` or ``model.*``.

    Raises:
        CheckpointError: naming the file and the problem.
    """
    config = _read_config(path)
    files = config["files"]
    if not (path / MODEL_FILE).is_file():
        raise CheckpointError(f"{path / MODEL_FILE}: missing; the checkpoint has no weights")
    tensors = _read_verified(path, MODEL_FILE, files)
    ema = {k.removeprefix(EMA_PREFIX): v for k, v in tensors.items() if k.startswith(EMA_PREFIX)}
    raw = {k.removeprefix(RAW_PREFIX): v for k, v in tensors.items() if k.startswith(RAW_PREFIX)}
    stray = sorted(k for k in tensors if not k.startswith((EMA_PREFIX, RAW_PREFIX)))
    if stray:
        raise CheckpointError(
            f"{path / MODEL_FILE}: tensors {stray[:5]} are neither EMA ('{EMA_PREFIX}') "
            f"nor raw ('{RAW_PREFIX}') weights"
        )
    optimizer = None
    if with_optimizer and OPTIMIZER_FILE in files:
        optimizer = _read_verified(path, OPTIMIZER_FILE, files)
    return CheckpointContents(path, config, ema, raw, optimizer)


def without_derived(
    tensors: Mapping[str, torch.Tensor], module: nn.Module
) -> dict[str, torch.Tensor]:
    """``tensors`` without those that ``module`` derives on loading (its non-persistent buffers).

    Earlier checkpoints of the cascade saved its rotation, which is now rebuilt
    from the saved eigen-decomposition after loading; the saved copy is ignored.
    """
    derived = {
        f"{name}.{buffer}" if name else buffer
        for name, child in module.named_modules()
        for buffer in child._non_persistent_buffers_set
    }
    return {key: value for key, value in tensors.items() if key not in derived}


def check_tensors(
    tensors: Mapping[str, torch.Tensor], module: nn.Module, what: str, file: Path
) -> dict[str, torch.Tensor]:
    """Check names, shapes and dtype kinds of ``tensors`` against ``module.state_dict()``.

    Returns:
        The tensors to load into ``module``: ``tensors`` without those it
        derives on loading (:func:`without_derived`).

    Raises:
        CheckpointError: naming ``file``, with up to five examples of each problem.
    """
    tensors = without_derived(tensors, module)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [
        f"{name} {tuple(tensors[name].shape)} (expected {tuple(t.shape)})"
        for name, t in expected.items()
        if name in tensors and tensors[name].shape != t.shape
    ]
    dtypes = [
        f"{name} {tensors[name].dtype}"
        for name, t in expected.items()
        if name in tensors and tensors[name].is_floating_point() != t.is_floating_point()
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensors, e.g. {missing[:5]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors, e.g. {unexpected[:5]}")
    if wrong:
        problems.append(f"{len(wrong)} with the wrong shape, e.g. {wrong[:5]}")
    if dtypes:
        problems.append(f"wrong dtypes: {dtypes[:5]}")
    if problems:
        raise CheckpointError(
            f"{file}: {what} weights do not match the architecture in {CONFIG_FILE}: "
            + "; ".join(problems)
        )
    return tensors
