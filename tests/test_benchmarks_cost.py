"""The reference denoisers of ``benchmarks/cost.py`` are the ones it claims to compare with."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from genda.grid import Grid
from genda.models.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cost() -> ModuleType:
    """The benchmark script as a module (it imports ``_common`` from its own folder)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import cost as module
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


def test_old_prior_constants_build_the_recorded_network(cost: ModuleType) -> None:
    denoiser = cost.old_prior_denoiser(Grid.gaussian(32, 64, 8))
    parameters = sum(p.numel() for p in denoiser.parameters())
    assert parameters == cost.OLD_PRIOR["parameters"] == 612888
    assert denoiser.coordinates is None and denoiser.skip is None


def test_old_prior_refuses_another_grid(cost: ModuleType) -> None:
    with pytest.raises(SystemExit, match=r"not genda 0\.1's"):
        cost.old_prior_denoiser(Grid.gaussian(16, 32, 8))


def test_grid_twin_is_the_shipped_network_without_the_transform(cost: ModuleType) -> None:
    prior = load_checkpoint("default")
    twin = cost.grid_twin(prior)
    assert twin.coordinates is None
    shipped = prior.denoiser.backbone.state_dict()
    for name, tensor in twin.backbone.state_dict().items():
        assert torch.equal(tensor, shipped[name]), name
    x = torch.randn(1, *prior.grid.shape)
    with torch.no_grad():
        assert twin(x, torch.ones(1)).shape == x.shape
