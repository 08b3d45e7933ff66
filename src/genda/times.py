"""Times in genda: naive UTC ``datetime64``, written as ISO 8601 text to the second.

Every time genda takes (a window centre, an observation time, a store's
window) is a :data:`TimeLike` and becomes a naive UTC ``datetime64[ns]``
through :func:`as_datetime64`; every time it shows or uses as a key is
:func:`iso` text, ``"2000-01-01T06:00:00"``.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

__all__ = ["TimeLike", "as_datetime64", "iso"]

TimeLike = str | np.datetime64 | datetime | pd.Timestamp
"""A time as genda accepts it: ISO text, numpy, Python or pandas; naive means UTC."""


def as_datetime64(value: object) -> np.datetime64:
    """A time (ISO string, datetime, numpy or pandas; with a zone or UTC) as naive UTC ``datetime64[ns]``.

    Raises:
        ValueError: text that is not a time, or a time outside ``datetime64[ns]``.
        TypeError: a value of a type that is no time.
    """
    stamp = pd.Timestamp(value)  # type: ignore[arg-type]
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return np.datetime64(stamp.as_unit("ns").to_datetime64(), "ns")


def iso(time: object) -> str:
    """``time`` as ISO 8601 text to the second, e.g. ``"2000-01-01T06:00:00"``.

    A ``datetime64`` of any unit is cut to the second (``"NaT"`` for NaT);
    another value with an ``isoformat`` method (a datetime, a pandas
    Timestamp, the ``cftime`` date of a model calendar) gives that; anything
    else its ``str``.
    """
    if isinstance(time, np.datetime64):
        return str(np.datetime_as_string(time, unit="s"))
    if hasattr(time, "isoformat"):
        return str(time.isoformat())
    return str(time)
