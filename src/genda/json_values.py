"""Values as they read back from JSON, so that settings and provenance compare alike.

Tuples and lists, numpy and Python numbers, dictionaries in any key order:
after :func:`json_round_trip` each is what a JSON file would give back.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any

import numpy as np

__all__ = ["json_default", "json_round_trip"]


def json_default(value: Any) -> Any:
    """The JSON form of what :mod:`json` does not know: numpy values, paths and times (as text).

    Raises:
        TypeError: any other type.
    """
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike | datetime | np.datetime64):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def json_round_trip(value: Any) -> Any:
    """``value`` written as JSON (keys sorted, :func:`json_default` for numpy) and read back.

    Raises:
        TypeError: a value JSON cannot hold.
        ValueError: a circular reference.
    """
    return json.loads(json.dumps(value, sort_keys=True, default=json_default))
