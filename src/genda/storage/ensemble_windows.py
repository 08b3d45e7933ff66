"""The window registry of an ensemble store: a slot along ``time`` and a provenance per window.

A window is registered when its time is in the ``time`` coordinate and its
ISO time is a key of the ``genda_windows`` attribute
(:mod:`genda.storage.ensemble_layout`), which records the window's
provenance and whether it is finalised. Provenance is compared after a
round trip through JSON (:func:`canonical`), so tuples and lists, numpy and
Python numbers compare alike. :func:`register_window` is the registration
behind :meth:`~genda.storage.ensemble_store.EnsembleStore.add_window`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from genda.json_values import json_round_trip
from genda.storage.archive import consolidate
from genda.storage.ensemble_layout import (
    _EPOCH,
    COMPLETE,
    TIME_FILL,
    WINDOWS_ATTR,
    _open_group,
    _seconds,
)
from genda.storage.errors import EnsembleStoreError
from genda.times import iso

if TYPE_CHECKING:
    from genda.storage.ensemble_store import EnsembleStore


def canonical(value: Any, what: str) -> Any:
    """``value`` through JSON (:func:`~genda.json_values.json_round_trip`), so tuples and
    lists, numpy and Python numbers compare alike; ``what`` names it in the error."""
    try:
        return json_round_trip(value)
    except (TypeError, ValueError) as err:
        raise EnsembleStoreError(f"{what} is not JSON-serialisable: {err}") from None


ABSENT = "<absent>"
"""How a difference shows a key that one side does not have."""


def provenance_differences(
    old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = ""
) -> list[str]:
    """Keys whose values differ, or that only one side has, sorted.

    Nested mappings (a window's ``settings``) are compared key by key, so a
    difference is named by its dotted path (``settings.steps``), not by the
    whole mapping it sits in.
    """
    found: list[str] = []
    for key in sorted(set(old) | set(new), key=str):
        name = f"{prefix}{key}"
        if key in old and key in new and old[key] == new[key]:
            continue
        if isinstance(old.get(key), Mapping) and isinstance(new.get(key), Mapping):
            found.extend(provenance_differences(old[key], new[key], f"{name}."))
        else:
            found.append(name)
    return sorted(found)


def provenance_value(record: Mapping[str, Any], dotted: str) -> Any:
    """The value at a dotted path of :func:`provenance_differences`, or :data:`ABSENT`."""
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return ABSENT
        value = value[part]
    return value


def describe_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """``"settings.steps: stored 16, given 32; seed: ..."``: each differing key and its two values.

    Only what differs is shown (keys that agree stay out of the message).
    """
    return "; ".join(
        f"{key}: stored {_shown(provenance_value(old, key))}, "
        f"given {_shown(provenance_value(new, key))}"
        for key in provenance_differences(old, new)
    )


def _shown(value: Any) -> str:
    return ABSENT if value is ABSENT else repr(value)


def register_window(store: EnsembleStore, t: np.datetime64, record: dict[str, Any]) -> int:
    """Register window ``t`` with provenance ``record`` (canonical); returns its slot.

    The caller holds the store's metadata lock. The rules are those of
    :meth:`~genda.storage.ensemble_store.EnsembleStore.add_window`: a window
    already registered keeps its slot if ``record`` is its provenance (or if
    no member of it is complete yet), a slot left by an interrupted
    registration is reused, and otherwise every array grows by one slot.
    """
    key = iso(t)
    group = _open_group(store.path, "r+")
    arrays = store._time_arrays(group)
    length = max(a.shape[0] for a in arrays)
    for array in arrays:  # finish a registration that stopped half way through resizing
        if array.shape[0] != length:
            array.resize((length, *array.shape[1:]))
    times = store._times(group)
    windows = store._windows(group)
    found = np.flatnonzero(times == _seconds(t))
    if found.size:
        index = int(found[0])
        if key in windows:
            old = windows[key]["provenance"]
            differ = provenance_differences(old, record)
            # A window no member was written for holds nothing to mix with:
            # it is registered again under the new settings.
            if differ and not np.any(group[COMPLETE][index]):
                windows[key] = {"provenance": record, "finalized": False}
                group.attrs[WINDOWS_ATTR] = json.dumps(windows, sort_keys=True)
                consolidate(store.path)
                return index
            if differ:
                raise EnsembleStoreError(
                    f"window {key} is in {store.path} with other provenance "
                    f"({describe_differences(old, record)}); "
                    "members of different settings must not be mixed: use another store "
                    "or the stored settings"
                )
            return index
    else:
        index = length
        last_orphan = (
            length > 0
            and (
                times[-1] == TIME_FILL
                or iso(_EPOCH + np.timedelta64(int(times[-1]), "s")) not in windows
            )
            and not np.any(group[COMPLETE][length - 1])
        )
        if last_orphan:
            index = length - 1
        else:
            for array in arrays:
                array.resize((length + 1, *array.shape[1:]))
        group["time"][index] = _seconds(t)
    windows[key] = {"provenance": record, "finalized": False}
    group.attrs[WINDOWS_ATTR] = json.dumps(windows, sort_keys=True)
    consolidate(store.path)
    return index
