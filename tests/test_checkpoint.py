"""Checkpoints: bit-identical round trips, corrupt and mismatched checkpoints rejected clearly."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import genda
import genda.models.checkpoint as ckpt
from genda.grid import Grid, GridMismatchError
from genda.models.checkpoint import (
    CheckpointError,
    CheckpointGridMismatchError,
    build_denoiser,
    load_checkpoint,
    load_optimizer_state,
    optimizer_tensors,
    read_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from genda.models.diffusion import EDMDenoiser
from genda.models.gaussian_skip import GaussianSkip
from genda.models.strategies import Joint3D, Layer2D, Strategy, build_backbone
from genda.normalization import Normalization
from genda.threads import cpu_threads

GRID = Grid.gaussian(16, 32, 4)
TINY = {"base_channels": 8, "channel_mult": (1, 2), "noise_embedding_dim": 16}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with cpu_threads(1):
        yield


def normalization() -> Normalization:
    rng = np.random.default_rng(0)
    return Normalization(
        GRID.variables, rng.normal(size=(3, 4)) + 200.0, rng.uniform(1.0, 20.0, size=(3, 4))
    )


def denoiser(strategy: Strategy, seed: int = 0, skip: bool = False) -> EDMDenoiser:
    """A tiny denoiser with random (non-zero) weights everywhere (and a fitted Gaussian skip)."""
    torch.manual_seed(seed)
    gaussian = None
    if skip:
        fields = torch.randn(6, *GRID.shape, generator=torch.Generator().manual_seed(seed))
        gaussian = GaussianSkip(GRID).fit([fields])
    model = EDMDenoiser(build_backbone(strategy, GRID, **TINY), sigma_data=0.5, skip=gaussian)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def save(path: Path, model: EDMDenoiser, **kwargs) -> Path:
    # distinct EMA weights
    ema = denoiser(model.backbone.strategy, seed=1, skip=model.skip is not None)
    defaults = {
        "grid": GRID,
        "normalization": normalization(),
        "ema": ema,
        "training": {"steps": 3, "lr": 1e-3},
        "step": 3,
        "archive": {"fingerprint": "abc123"},
    }
    return save_checkpoint(path, model, **(defaults | kwargs))


@pytest.fixture
def saved(tmp_path) -> tuple[Path, EDMDenoiser]:
    model = denoiser(Joint3D())
    return save(tmp_path / "ckpt", model), model


def rewrite_config(path: Path, change) -> None:
    config = json.loads((path / "config.json").read_text())
    change(config)
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("strategy", "skip"),
    [(Joint3D(), False), (Layer2D(window=1), False), (Joint3D(), True)],
    ids=["joint3d", "layer2d", "joint3d-gaussian-skip"],
)
def test_round_trip_is_bit_identical(tmp_path, strategy: Strategy, skip: bool) -> None:
    model = denoiser(strategy, skip=skip)
    path = save(tmp_path / "ckpt", model)
    ema = denoiser(strategy, seed=1, skip=skip)

    prior = load_checkpoint(path, expected_grid=GRID)
    assert prior.step == 3 and prior.path == path and prior.fingerprint == "abc123"
    assert prior.strategy.name == strategy.name
    assert prior.strategy.options() == strategy.options()
    assert prior.grid == GRID and prior.sigma_data == 0.5
    np.testing.assert_array_equal(prior.normalization.mean, normalization().mean)
    np.testing.assert_array_equal(prior.normalization.std, normalization().std)
    assert not prior.denoiser.training
    assert not any(p.requires_grad for p in prior.denoiser.parameters())
    for weights, reference in (("ema", ema), ("model", model)):
        loaded = (
            prior.denoiser if weights == "ema" else load_checkpoint(path, weights="model").denoiser
        )
        state = loaded.state_dict()
        assert state.keys() == reference.state_dict().keys()
        for name, tensor in reference.state_dict().items():
            assert torch.equal(state[name], tensor), name
    x = torch.randn(2, *GRID.shape, generator=torch.Generator().manual_seed(5))
    sigma = torch.tensor([0.3, 2.0])
    with torch.no_grad():
        assert torch.equal(prior.denoiser(x, sigma), ema.eval()(x, sigma))

    config = json.loads((path / "config.json").read_text())
    assert config["format"] == "genda-checkpoint" and config["format_version"] == 1
    assert config["genda_version"] == genda.__version__
    assert config["architecture"]["config"]["base_channels"] == 8
    assert config["skip"] == (
        {"kind": "gaussian-sht", "truncation": 16, "channels": 12} if skip else None
    )
    assert isinstance(prior.denoiser.skip, GaussianSkip) == skip
    assert config["training"] == {"steps": 3, "lr": 1e-3}
    digest = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    assert config["files"]["model.safetensors"]["sha256"] == digest
    assert not list(tmp_path.glob("*.partial-*")) and not list(tmp_path.glob("*.old-*"))


def test_optimizer_state_round_trip(tmp_path) -> None:
    model = denoiser(Joint3D())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(2, *GRID.shape)
    model(x, torch.tensor([0.5, 1.0])).square().mean().backward()
    opt.step()
    path = save(tmp_path / "ckpt", model, optimizer=opt)
    contents = read_checkpoint(path, with_optimizer=True)
    assert contents.optimizer is not None

    fresh = torch.optim.AdamW(model.parameters(), lr=1e-3)
    load_optimizer_state(fresh, model, contents.optimizer)
    for p in model.parameters():
        for key, value in opt.state[p].items():
            assert torch.equal(fresh.state[p][key], value), key
    assert optimizer_tensors(fresh, model).keys() == optimizer_tensors(opt, model).keys()


def test_save_replaces_atomically_and_keeps_the_old_one_on_failure(saved, tmp_path) -> None:
    path, model = saved
    before = (path / "model.safetensors").read_bytes()
    with pytest.raises(TypeError):
        save(path, model, step=4, extra_files={"notes.txt": object()})  # fails mid-write
    assert (path / "model.safetensors").read_bytes() == before
    assert read_checkpoint(path).config["step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]

    save(path, model, step=5, extra_files={"loss.csv": b"step\n"})
    assert read_checkpoint(path).config["step"] == 5
    assert (path / "loss.csv").read_bytes() == b"step\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_save_never_replaces_something_else(saved, tmp_path) -> None:
    _, model = saved
    other = tmp_path / "notes"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="is not a genda checkpoint"):
        save(other, model)
    assert (other / "thesis.tex").read_text() == "precious"
    (tmp_path / "empty").mkdir()
    assert load_checkpoint(save(tmp_path / "empty", model)).step == 3


def test_flipped_bytes_fail_the_checksum(saved) -> None:
    path, _ = saved
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-100] ^= 0xFF  # inside the tensor data: still a parseable file
    (path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: checksum mismatch.*corrupt"):
        load_checkpoint(path)


def test_missing_tensor_is_named(saved) -> None:
    path, _ = saved
    tensors = load_file(path / "model.safetensors")
    victim = "ema.backbone.network.conv_in.conv.weight"
    del tensors[victim]
    save_file(tensors, path / "model.safetensors")
    digest = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    rewrite_config(path, lambda c: c["files"]["model.safetensors"].update(sha256=digest))
    with pytest.raises(
        CheckpointError, match=r"EMA weights do not match.*missing 1 tensors"
    ) as info:
        load_checkpoint(path)
    assert "backbone.network.conv_in.conv.weight" in str(info.value)


def test_architecture_change_gives_shape_mismatch(saved) -> None:
    path, _ = saved
    rewrite_config(path, lambda c: c["architecture"]["config"].update(base_channels=16))
    with pytest.raises(CheckpointError, match=r"wrong shape.*conv_in\.conv\.weight"):
        load_checkpoint(path)


def test_grid_mismatch_names_the_differences(saved) -> None:
    path, _ = saved
    other = Grid.gaussian(16, 32, [85.0, 90.0, 100.0, 110.0])
    with pytest.raises(CheckpointGridMismatchError, match=r"altitude: values differ") as info:
        load_checkpoint(path, expected_grid=other)
    assert isinstance(info.value, GridMismatchError) and isinstance(info.value, CheckpointError)

    def shift(config: dict) -> None:
        config["grid"]["latitude"] = (np.asarray(config["grid"]["latitude"]) * 0.9).tolist()
        config["grid"]["variables"] = ["u", "v", "w"]

    rewrite_config(path, shift)
    with pytest.raises(CheckpointGridMismatchError) as info:
        load_checkpoint(path, expected_grid=GRID)
    message = str(info.value)
    assert "latitude: values differ" in message and "variables: ['u', 'v', 'w']" in message
    assert "longitude" not in message


@pytest.mark.parametrize(
    ("damage", "pattern"),
    [
        (
            lambda p: (p / "config.json").write_text('{"format": "genda-checkpoint",'),
            "not valid JSON",
        ),
        (lambda p: (p / "config.json").write_text("[1, 2]"), "expected a JSON object"),
        (lambda p: (p / "config.json").unlink(), r"config\.json is missing"),
        (lambda p: (p / "model.safetensors").unlink(), r"model\.safetensors: missing"),
        (
            lambda p: rewrite_config(p, lambda c: c.update(format_version=2)),
            "format version 2 is not supported.*upgrade genda",
        ),
        (lambda p: rewrite_config(p, lambda c: c.update(format="other")), "not a genda checkpoint"),
        (
            lambda p: rewrite_config(p, lambda c: c.pop("normalization")),
            r"missing keys \['normalization'\]",
        ),
        (
            lambda p: rewrite_config(p, lambda c: c["strategy"].update(name="joint4d")),
            "invalid strategy.*unknown strategy 'joint4d'",
        ),
        (
            lambda p: rewrite_config(p, lambda c: c.update(sigma_data=-1)),
            "sigma_data must be a positive number",
        ),
        (
            lambda p: rewrite_config(p, lambda c: c.update(skip={"kind": "wiener"})),
            "unknown skip.*'wiener'.*builds 'gaussian-sht'",
        ),
        (
            lambda p: rewrite_config(
                p, lambda c: c.update(skip={"kind": "gaussian-sht", "truncation": 99})
            ),
            "invalid skip.*truncation must be in 1..16, got 99",
        ),
        (
            lambda p: rewrite_config(
                p, lambda c: c.update(skip={"kind": "gaussian-sht", "truncation": 16})
            ),
            "missing.*skip.eigenvalues",
        ),
    ],
    ids=[
        "truncated-json",
        "not-object",
        "no-config",
        "no-weights",
        "version",
        "format",
        "keys",
        "strategy",
        "sigma",
        "skip-kind",
        "skip-truncation",
        "skip-without-its-statistics",
    ],
)
def test_damaged_checkpoints_are_rejected_clearly(saved, damage, pattern) -> None:
    path, _ = saved
    damage(path)
    with pytest.raises(CheckpointError, match=pattern):
        load_checkpoint(path)


def test_a_checkpoint_without_a_skip_entry_has_the_scalar_skip(saved) -> None:
    path, model = saved
    rewrite_config(path, lambda c: c.pop("skip"))  # as written before the Gaussian skip
    prior = load_checkpoint(path, weights="model")
    assert prior.denoiser.skip is None
    x = torch.randn(2, *GRID.shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(
            prior.denoiser(x, torch.tensor([0.3, 2.0])), model.eval()(x, torch.tensor([0.3, 2.0]))
        )


def test_shipped_names_resolve_inside_the_package(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(ckpt, "CHECKPOINTS_DIR", tmp_path / "checkpoints")
    with pytest.raises(CheckpointError, match="no shipped checkpoint named 'default'"):
        resolve_checkpoint("default")
    with pytest.raises(CheckpointError, match="no shipped checkpoint named 'default-layer2d'"):
        load_checkpoint("default-layer2d")
    with pytest.raises(CheckpointError, match=r"no checkpoint at .*nowhere \(no such directory"):
        resolve_checkpoint(str(tmp_path / "nowhere"))
    with pytest.raises(CheckpointError, match=r"no checkpoint directory 'defualt'.*shipped names"):
        load_checkpoint("defualt")
    save(tmp_path / "checkpoints" / "default", denoiser(Joint3D()))
    assert resolve_checkpoint("default") == tmp_path / "checkpoints" / "default"
    assert load_checkpoint("default", expected_grid=GRID).strategy.name == "joint3d"
    assert ckpt.CHECKPOINTS_DIR.name == "checkpoints"


def test_build_denoiser_refuses_an_architecture_for_another_strategy() -> None:
    stored = build_backbone(Joint3D(), GRID, **TINY).network.config
    with pytest.raises(CheckpointError, match=r"does not match strategy and grid.*in_channels"):
        build_denoiser(Layer2D(window=1), GRID, stored)
    assert isinstance(build_denoiser(Joint3D(), GRID, stored), EDMDenoiser)


def test_nothing_is_unpickled() -> None:
    source = Path(ckpt.__file__).read_text()
    assert not re.search(r"torch\.load\b|\bimport pickle|pickle\.load", source)


def test_tensors_a_module_derives_on_loading_are_set_aside() -> None:
    """A checkpoint that saved a derived buffer (the cascade's rotation once) still loads."""
    from torch import nn

    from genda.models.checkpoint_format import without_derived

    class Derives(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("saved", torch.ones(2))
            self.register_buffer("derived", torch.zeros(2), persistent=False)

    parent = nn.Sequential(Derives())
    tensors = {"0.saved": torch.ones(2), "0.derived": torch.zeros(2), "0.other": torch.ones(1)}
    assert set(without_derived(tensors, parent)) == {"0.saved", "0.other"}
