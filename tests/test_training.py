"""Training the prior: data split and batches, a tiny run, determinism, resume, DDP, the CLI."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import TINY_ARCHIVE_CHUNK_HOURS
from genda.cli import app
from genda.grid import Grid
from genda.models.checkpoint import CheckpointError, load_checkpoint, read_checkpoint
from genda.models.data import (
    ChunkShuffleSampler,
    FieldDataset,
    StepBatches,
    TrainingData,
    archive_fingerprint,
    split_by_time,
)
from genda.models.diffusion import edm_loss
from genda.models.training import (
    EMA,
    TrainConfig,
    learning_rate,
    validation_loss,
)
from genda.models.training_step import weighted_loss
from genda.orchestration.train import train_prior
from genda.storage import open_archive
from genda.threads import cpu_threads

TINY = {"base_channels": 8, "channel_mult": (1, 2), "noise_embedding_dim": 16}
CHUNK = TINY_ARCHIVE_CHUNK_HOURS
runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with cpu_threads(1):
        yield


@pytest.fixture
def archive(tiny_archive: Path) -> Path:
    return tiny_archive


def tiny_config(**changes) -> TrainConfig:
    base = {
        "steps": 6,
        "batch_size": 2,
        "lr": 2e-3,
        "warmup_steps": 2,
        "val_every": 1000,
        "log_every": 2,
        "val_samples": 3,
        "device": "cpu",
    }
    return TrainConfig(**(base | changes))


def run(archive: Path, out: Path, **kwargs):
    kwargs.setdefault("config", tiny_config())
    kwargs.setdefault("architecture", TINY)
    kwargs.setdefault("val_gap_hours", 3.0)
    return train_prior(archive, out, progress=False, **kwargs)


# ---------------------------------------------------------------------------- data
def test_split_holds_out_the_end_behind_a_gap() -> None:
    times = np.datetime64("2000-01-01T00") + np.arange(48) * np.timedelta64(1, "h")
    split = split_by_time(times, val_fraction=0.1, gap_hours=24)
    np.testing.assert_array_equal(split.validation, np.arange(43, 48))
    np.testing.assert_array_equal(split.train, np.arange(20))
    assert split.dropped == 23
    separation = times[split.validation].min() - times[split.train].max()
    assert separation == np.timedelta64(24, "h")
    assert split.to_dict(times)["validation_range"] == [
        "2000-01-02T19:00:00",
        "2000-01-02T23:00:00",
    ]

    no_val = split_by_time(times, val_fraction=0.0)
    assert no_val.train.size == 48 and no_val.validation.size == 0
    with pytest.raises(
        ValueError, match=r"leave no training time.*lower val_fraction or gap_hours"
    ):
        split_by_time(times[:20], val_fraction=0.1, gap_hours=24)
    with pytest.raises(ValueError, match="val_fraction"):
        split_by_time(times, val_fraction=1.0)


def test_dataset_normalises_and_reads_whole_chunks(archive, monkeypatch) -> None:
    ds = open_archive(archive)
    grid = Grid.from_dataset(ds)
    split = split_by_time(ds["time"].values, 0.25, gap_hours=6)  # validation: 12 times, 1 chunk
    memory = FieldDataset(ds, split.train)
    assert memory.in_memory and len(memory) == split.train.size
    norm = memory.normalization
    raw = np.stack([ds[v].values for v in grid.variables], axis=1)  # (T, V, L, H, W)
    expected = (raw[split.train] - norm.mean[None, :, :, None, None]) / norm.std[
        None, :, :, None, None
    ]
    np.testing.assert_allclose(memory.batch(np.arange(len(memory))).numpy(), expected, atol=1e-5)
    assert memory[3].shape == grid.shape and memory[3].dtype == torch.float32

    reads: list[tuple[int, int]] = []
    original = FieldDataset._read

    def counting(self, start: int, stop: int):
        reads.append((start, stop))
        return original(self, start, stop)

    monkeypatch.setattr(FieldDataset, "_read", counting)
    lazy = FieldDataset(ds, split.train, memory_limit_bytes=0, cache_chunks=1)
    assert not lazy.in_memory and reads == []
    np.testing.assert_array_equal(lazy.chunk_ids, split.train // CHUNK)
    order = lazy.sampler(seed=3).order(0)
    items = torch.stack([lazy[int(i)] for i in order])
    # one read per chunk and epoch, each of a whole chunk
    assert sorted(reads) == [(c * CHUNK, (c + 1) * CHUNK) for c in np.unique(lazy.chunk_ids)]
    assert torch.equal(items, memory.batch(order))


def test_step_batches_are_a_pure_function_of_the_step() -> None:
    chunk_ids = np.repeat(np.arange(3), 4)  # 12 items in 3 chunks
    sampler = ChunkShuffleSampler(chunk_ids, seed=7)
    for epoch in range(3):
        order = sampler.order(epoch)
        assert sorted(order.tolist()) == list(range(12))
        # items of a chunk come together
        assert all(len(set(chunk_ids[order[i : i + 4]])) == 1 for i in range(0, 12, 4))
    assert not np.array_equal(sampler.order(0), sampler.order(1))
    batches = StepBatches(sampler, batch_size=5)
    sequence = np.concatenate([sampler.order(e) for e in range(4)])
    for step in (0, 1, 2, 3, 7):  # step 2 spans the first epoch boundary
        np.testing.assert_array_equal(batches.positions(step), sequence[5 * step : 5 * step + 5])
        np.testing.assert_array_equal(
            StepBatches(ChunkShuffleSampler(chunk_ids, seed=7), 5).positions(step),
            batches.positions(step),
        )


def test_fingerprint_follows_the_data_not_the_path(archive) -> None:
    ds = open_archive(archive)
    fingerprint = archive_fingerprint(ds)
    assert len(fingerprint) == 64
    assert archive_fingerprint(ds.assign_attrs(genda_source="elsewhere")) == fingerprint
    assert archive_fingerprint(ds.isel(time=slice(0, 40))) != fingerprint
    assert archive_fingerprint(ds.assign_attrs(seed=2)) != fingerprint


# ---------------------------------------------------------------------------- schedules
def test_learning_rate_and_ema_schedules() -> None:
    config = TrainConfig(steps=100, lr=1e-3, warmup_steps=10, final_lr_fraction=0.1)
    assert learning_rate(config, 0) == pytest.approx(1e-4)
    assert learning_rate(config, 9) == pytest.approx(1e-3)
    assert learning_rate(config, 10) == pytest.approx(1e-3)
    assert learning_rate(config, 55) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert learning_rate(config, 100) == pytest.approx(1e-4)
    assert learning_rate(config.replace(lr_schedule="constant"), 80) == 1e-3

    model = torch.nn.Linear(2, 2)
    ema = EMA(model, TrainConfig(ema_decay=0.999))
    assert ema.beta(0, 16) == pytest.approx(0.1) and ema.beta(10**6, 16) == 0.999
    halflife = EMA(model, TrainConfig(ema_halflife_samples=1000, ema_rampup=None))
    assert halflife.beta(5, 10) == pytest.approx(0.5 ** (10 / 1000))
    with torch.no_grad():
        model.weight.fill_(1.0)
        ema.module.weight.zero_()
    ema.update(model, beta=0.75)
    assert torch.allclose(ema.module.weight, torch.full((2, 2), 0.25))

    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match=r"unknown training options \['stepz'\]"):
        TrainConfig.from_dict({"stepz": 3})
    assert TrainConfig.from_dict(TrainConfig(val_sigmas=(1.0, 2.0)).to_dict()).val_sigmas == (
        1.0,
        2.0,
    )


def test_training_loss_is_the_edm_loss() -> None:
    from genda.models.diffusion import EDMDenoiser
    from genda.models.strategies import Joint3D, build_backbone

    grid = Grid.gaussian(16, 32, 4)
    torch.manual_seed(0)
    model = EDMDenoiser(build_backbone(Joint3D(), grid, **TINY))
    x0 = torch.randn(2, *grid.shape)
    gen = torch.Generator().manual_seed(1)
    expected = edm_loss(model, x0, generator=gen)
    gen = torch.Generator().manual_seed(1)
    sigma = torch.exp(-1.2 + 1.2 * torch.randn(2, generator=gen))
    noise = torch.randn(x0.shape, generator=gen)
    assert torch.allclose(weighted_loss(model, model, x0, sigma, noise), expected)


# ---------------------------------------------------------------------------- training
def test_tiny_training_lowers_the_validation_loss(archive, tmp_path) -> None:
    config = tiny_config(steps=40, batch_size=4, warmup_steps=5, val_every=20, log_every=10)
    # EDM's scalar skip, the default. (The tiny archive starts from rest, so its validation
    # hours hold small-scale energy that its first 41 hours lack: a Gaussian skip fitted
    # to those scores 10 at sigma = 0.05 on them, more than 40 steps can undo.)
    result = run(archive, tmp_path / "prior", config=config).result
    assert result.step == 40 and result.parameters > 0 and result.samples_per_second > 0
    assert result.initial_val_loss is not None and result.val_loss is not None
    assert result.val_loss < 0.95 * result.initial_val_loss, result.history
    assert all(math.isfinite(r["train_loss"]) for r in result.history if "train_loss" in r)

    lines = (result.loss_csv).read_text().splitlines()
    assert lines[0].startswith("step,train_loss,val_loss,lr,wall_s,val_loss_sigma_0.05")
    assert [line.split(",")[0] for line in lines[1:]] == ["0", "10", "20", "30", "40"]
    assert result.loss_plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    ds = open_archive(archive)
    prior = load_checkpoint(result.checkpoint, expected_grid=Grid.from_dataset(ds))
    assert prior.step == 40 and prior.fingerprint == archive_fingerprint(ds)
    assert prior.config["training"]["steps"] == 40
    assert prior.config["archive"]["split"]["gap_hours"] == 3.0
    # the recorded validation loss is reproducible, whatever the batch size
    data = TrainingData.from_dataset(ds, 0.1, 3.0)
    assert data.validation is not None
    again, per_sigma = validation_loss(
        prior.denoiser, data.validation, config.val_sigmas, max_samples=3, batch_size=1
    )
    assert again == pytest.approx(result.val_loss, rel=1e-5)
    assert len(per_sigma) == len(config.val_sigmas)


def test_resume_equals_the_uninterrupted_run(archive, tmp_path) -> None:
    config = tiny_config(checkpoint_every=3, keep_checkpoints=True)
    full = run(archive, tmp_path / "full", config=config, skip="gaussian").result
    assert full.periodic == [tmp_path / "full-step00000003"]
    # same seed, fresh
    again = run(archive, tmp_path / "again", config=tiny_config(), skip="gaussian").result
    resumed = run(archive, tmp_path / "resumed", config=config, resume=full.periodic[0]).result
    assert resumed.step == 6

    reference = read_checkpoint(full.checkpoint, with_optimizer=True)
    for other in (again.checkpoint, resumed.checkpoint):
        contents = read_checkpoint(other, with_optimizer=True)
        for kind in ("model", "ema", "optimizer"):
            ours, theirs = getattr(contents, kind), getattr(reference, kind)
            assert ours.keys() == theirs.keys()
            for name in ours:
                assert torch.equal(ours[name], theirs[name]), (other, kind, name)
    steps = [r["step"] for r in resumed.history]
    assert steps == [r["step"] for r in full.history] == [0, 2, 4, 6]
    assert resumed.history[-1]["train_loss"] == pytest.approx(full.history[-1]["train_loss"])

    subset = open_archive(archive).isel(time=slice(0, 40))
    with pytest.raises(CheckpointError, match="cannot resume: archive fingerprint"):
        train_prior(subset, tmp_path / "other", resume=full.checkpoint, progress=False)
    with pytest.raises(CheckpointError, match="cannot change the architecture"):
        run(archive, tmp_path / "x", architecture={"base_channels": 16}, resume=full.checkpoint)
    # the default skip is the Gaussian one; its statistics are in the weights (compared above)
    assert (
        "skip.eigenvalues" in reference.model and reference.config["skip"]["kind"] == "gaussian-sht"
    )
    with pytest.raises(CheckpointError, match="trained with the gaussian skip, not 'scalar'"):
        run(archive, tmp_path / "x", skip="scalar", resume=full.checkpoint)
    with pytest.raises(ValueError, match="unknown skip 'wiener'; choose one of"):
        run(archive, tmp_path / "x", skip="wiener")


DDP_WORKER = textwrap.dedent(
    """
    import sys
    import torch
    import torch.distributed as dist
    from genda.models.data import TrainingData
    from genda.models.diffusion import EDMDenoiser
    from genda.models.strategies import Joint3D, build_backbone
    from genda.models.training import TrainConfig, train
    from genda.storage import open_archive

    torch.set_num_threads(1)
    archive, out, config = sys.argv[1], sys.argv[2], eval(sys.argv[3])
    dist.init_process_group("gloo")
    data = TrainingData.from_dataset(open_archive(archive), 0.1, 3.0)
    torch.manual_seed(0)
    model = EDMDenoiser(build_backbone(Joint3D(), data.grid, **eval(sys.argv[4])))
    result = train(model, data, TrainConfig(**config), out, progress=False)
    print("rank", dist.get_rank(), result.train_loss, flush=True)
    dist.destroy_process_group()
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_two_gloo_ranks_train_like_one_process(archive, tmp_path) -> None:
    """DDP on the CPU: 2 ranks with half the batch each give the weights of one process."""
    settings = {"steps": 3, "batch_size": 4, "lr": 2e-3, "warmup_steps": 1, "val_samples": 2}
    settings |= {"val_every": 1000, "log_every": 1, "device": "cpu"}
    base = os.environ | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    base |= {"WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-c", DDP_WORKER, str(archive), str(tmp_path / "ddp")]
    args += [repr(settings), repr(TINY)]
    procs = [
        subprocess.Popen(
            args,
            env=base | {"RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(2)
    ]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    losses = {
        line.split()[1]: float(line.split()[2])
        for o in outputs
        for line in o.splitlines()
        if line.startswith("rank")
    }
    assert losses["0"] == losses["1"]

    single = run(
        archive,
        tmp_path / "single",
        config=TrainConfig(**settings),
        architecture=TINY,
    ).result
    assert single.train_loss == pytest.approx(losses["0"], rel=1e-5)
    ddp, ref = read_checkpoint(tmp_path / "ddp"), read_checkpoint(single.checkpoint)
    assert ddp.config["run"]["world_size"] == 2 and ref.config["run"]["world_size"] == 1
    for name, tensor in ref.model.items():
        torch.testing.assert_close(ddp.model[name], tensor, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------- CLI
def test_genda_train_end_to_end(archive, tmp_path) -> None:
    out = tmp_path / "cli"
    common = ["--data", str(archive), "--out", str(out), "--no-progress", "--device", "cpu"]
    tiny = ["--base-channels", "8", "--channel-mult", "1,2", "--val-gap-hours", "2"]
    result = runner.invoke(
        app,
        [
            "train",
            *common,
            *tiny,
            *("--strategy", "layer2d", "--window", "1", "--steps", "4", "--batch-size", "2"),
            *("--warmup-steps", "1", "--val-fraction", "0.1", "--seed", "3"),
        ],
    )
    assert result.exit_code == 0, result.output
    text = result.stdout
    for label in ("parameters", "samples/s", "train loss", "val loss", "checkpoint", "layer2d"):
        assert label in text, text
    assert str(out) in "".join(text.split())
    prior = load_checkpoint(out)
    assert prior.strategy.name == "layer2d" and prior.step == 4
    assert prior.config["training"]["seed"] == 3
    assert prior.config["architecture"]["config"]["channel_mult"] == [1, 2]
    assert "genda train" in prior.config["run"]["command"]

    resumed = runner.invoke(app, ["train", *common, "--steps", "6", "--resume", str(out)])
    assert resumed.exit_code == 0, resumed.output
    assert "6 (batch 2" in resumed.stdout
    assert load_checkpoint(out).step == 6

    refused = runner.invoke(app, ["train", *common, "--steps", "2"])
    assert refused.exit_code == 1 and "exists" in refused.stderr and "--resume" in refused.stderr
    conflict = runner.invoke(app, ["train", *common, "--resume", str(out), "--strategy", "joint3d"])
    assert conflict.exit_code == 1 and "trained with strategy 'layer2d'" in conflict.stderr
    unknown = runner.invoke(app, ["train", *common, "--overwrite", "--strategy", "joint4d"])
    assert unknown.exit_code == 1 and "unknown strategy 'joint4d'" in unknown.stderr
    window = runner.invoke(app, ["train", *common, "--overwrite", "--window", "2"])
    assert window.exit_code == 1 and "--window applies to --strategy layer2d" in window.stderr
