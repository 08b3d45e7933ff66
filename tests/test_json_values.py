"""Values as they read back from JSON."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genda.json_values import json_round_trip
from genda.storage.ensemble_windows import canonical
from genda.storage.errors import EnsembleStoreError
from genda.units import canonical_units


def test_round_trip_makes_equal_settings_compare_equal() -> None:
    assert json_round_trip({"b": (1, 2), "a": np.float32(1.5)}) == {"a": 1.5, "b": [1, 2]}
    assert json_round_trip({"arr": np.arange(3), "p": Path("/x")}) == {
        "arr": [0, 1, 2],
        "p": "/x",
    }
    assert json_round_trip({1: "x"}) == {"1": "x"}
    with pytest.raises(TypeError, match="object is not JSON-serialisable"):
        json_round_trip({"bad": object()})


def test_store_provenance_names_what_cannot_be_stored() -> None:
    assert canonical({"seed": np.int64(3)}, "provenance") == {"seed": 3}
    with pytest.raises(EnsembleStoreError, match="provenance is not JSON-serialisable"):
        canonical({"bad": object()}, "provenance")


def test_unit_spellings() -> None:
    assert canonical_units("  M  s**-1 ") == "m s-1"
    assert canonical_units("m s^-1") == "m s-1"
