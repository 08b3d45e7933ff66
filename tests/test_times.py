"""Times: one conversion to naive UTC datetime64 and one ISO text."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from genda.storage.ensemble_layout import _as_time
from genda.storage.errors import EnsembleStoreError
from genda.times import as_datetime64, iso

SIX = np.datetime64("2000-01-01T06:00:00", "ns")


@pytest.mark.parametrize(
    "value",
    [
        "2000-01-01T06:00",
        "2000-01-01T08:00+02:00",
        "2000-01-01T06:00Z",
        np.datetime64("2000-01-01T06", "h"),
        datetime(2000, 1, 1, 6),
        datetime(2000, 1, 1, 6, tzinfo=UTC),
        pd.Timestamp("2000-01-01T07:00", tz="Europe/Berlin"),
    ],
)
def test_every_spelling_is_the_same_utc_time(value: object) -> None:
    converted = as_datetime64(value)
    assert converted == SIX and converted.dtype == np.dtype("datetime64[ns]")
    assert _as_time(value) == SIX and _as_time(value).dtype == np.dtype("datetime64[s]")


def test_iso_is_cut_to_the_second() -> None:
    assert iso(np.datetime64("2000-01-01T06:00:00.9", "ms")) == "2000-01-01T06:00:00"
    assert iso(np.datetime64("2000-01-01", "D")) == "2000-01-01T00:00:00"
    assert iso(np.datetime64("1960-01-01T00:00:00.5", "ms")) == "1960-01-01T00:00:00"
    assert iso(np.datetime64("NaT")) == "NaT"
    assert iso(datetime(2000, 1, 1, 6)) == "2000-01-01T06:00:00"
    assert iso(pd.Timestamp("2000-01-01T06:00")) == "2000-01-01T06:00:00"
    assert iso("2000-01-01T06") == "2000-01-01T06"


def test_store_times_are_whole_seconds_and_not_nat() -> None:
    with pytest.raises(EnsembleStoreError, match="not a whole second"):
        _as_time("2000-01-01T06:00:00.5")
    with pytest.raises(EnsembleStoreError, match="cannot be NaT"):
        _as_time("NaT")
    with pytest.raises(EnsembleStoreError, match="cannot read 'garbage' as a time"):
        _as_time("garbage")
    with pytest.raises(EnsembleStoreError, match="cannot read"):
        _as_time(np.datetime64("2500-01-01", "D"))  # beyond datetime64[ns]
