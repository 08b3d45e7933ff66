"""Seeds are fixed integers: changing one would change every member and training run."""

from __future__ import annotations

import pytest

from genda.models.data import stable_seed as data_stable_seed
from genda.models.sampling import member_seed as sampling_member_seed
from genda.seeds import member_seed, stable_seed


@pytest.mark.parametrize(
    ("parts", "seed"),
    [
        (("window", 0, "2000-01-01T00:00:00"), 1143700973579400429),
        (("train", 3, 4, 5), 2726327049432678753),
        (("validation", 2, 7), 7450356120665577115),
        (("epoch", 1), 3527848976056350011),
        (("global", 0, 1, 0), 7541925588844122910),
    ],
)
def test_stable_seed_values(parts: tuple[object, ...], seed: int) -> None:
    assert stable_seed(*parts) == seed


def test_the_model_modules_reexport_the_same_functions() -> None:
    assert data_stable_seed is stable_seed and sampling_member_seed is member_seed
    assert member_seed(0, 0) == 4496070761369693216
