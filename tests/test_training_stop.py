"""Ending a training run early: the plateau rule on hand-made logs, and the loop's stop hook."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from genda.errors import GendaError
from genda.models.checkpoint import read_checkpoint
from genda.models.loss_log import read_history
from genda.models.training import TrainConfig
from genda.models.training_stop import PLATEAU, TIME_LIMIT, PlateauStop, trained_validations
from genda.orchestration.train import train_prior
from genda.threads import cpu_threads

TINY = {"base_channels": 8, "channel_mult": (1, 2), "noise_embedding_dim": 16}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with cpu_threads(1):
        yield


def log(losses: Sequence[float], initial: float | None = None, every: int = 10) -> list[dict]:
    """A loss log: an initial validation row (no training loss), then one row per loss."""
    rows: list[dict[str, Any]] = []
    if initial is not None:
        rows.append({"step": 0, "val_loss": initial, "wall_s": 0.0})
    for i, loss in enumerate(losses, start=1):
        rows.append({"step": i * every, "train_loss": 1.0, "val_loss": loss, "wall_s": float(i)})
    return rows


def first_stop(rule: PlateauStop, rows: list[dict]) -> tuple[int, str] | None:
    """The first prefix of ``rows`` the rule stops at: ``(rows kept, reason)``."""
    for n in range(1, len(rows) + 1):
        reason = rule(rows[:n])
        if reason is not None:
            return n, reason
    return None


# ------------------------------------------------------------------------- the rule
def test_plateau_is_the_best_loss_improving_less_than_tol_over_the_window() -> None:
    rule = PlateauStop(tol=0.01, window=3)
    losses = [1.0, 0.9, 0.8, 0.795, 0.794, 0.7935]
    # n=4: best before 1.0 -> 0.795 (20 %); n=5: 0.9 -> 0.794 (12 %);
    # n=6: 0.8 -> 0.7935, 0.81 % < 1 %: the plateau
    assert first_stop(rule, log(losses)) == (6, PLATEAU)
    # 0.0085 improvement over 0.8 is 1.06 %: not yet
    assert first_stop(rule, log([1.0, 0.9, 0.8, 0.795, 0.794, 0.7915])) is None
    # at most `window` trained validations: never a plateau, however flat
    assert first_stop(rule, log([1.0, 1.0, 1.0])) is None
    # a loss that rises still compares the best: rising for a window is a plateau
    assert first_stop(PlateauStop(tol=1e-3, window=2), log([1.0, 1.1, 1.2])) == (3, PLATEAU)


def test_the_untrained_validation_is_not_part_of_the_curve() -> None:
    rule = PlateauStop(tol=0.01, window=2)
    # the untrained network (0.5) beats every trained loss, which still fall 5 % a time
    falling = [1.0 * 0.95**i for i in range(8)]
    assert first_stop(rule, log(falling, initial=0.5)) is None
    assert trained_validations(log([0.7, 0.6], initial=0.5)) == [(10, 0.7), (20, 0.6)]


def test_time_limit_minimum_steps_and_rows_without_validation() -> None:
    flat = log([1.0] * 6)  # wall_s 1..6, steps 10..60
    assert first_stop(PlateauStop(tol=0.01, window=2, max_wall_s=1.5), flat) == (2, TIME_LIMIT)
    assert first_stop(PlateauStop(tol=0.01, window=2), flat) == (3, PLATEAU)
    assert first_stop(PlateauStop(tol=0.01, window=2, min_steps=50), flat) == (5, PLATEAU)
    # a log row without a validation never ends a run for a plateau
    rows = [*flat[:3], {"step": 35, "train_loss": 1.0, "wall_s": 3.5}]
    assert PlateauStop(tol=0.01, window=2)(rows) is None
    assert PlateauStop()([]) is None


@pytest.mark.parametrize(
    "kwargs",
    [{"tol": -0.1}, {"tol": float("nan")}, {"window": 0}, {"max_wall_s": 0.0}, {"min_steps": -1}],
)
def test_invalid_rules_are_refused(kwargs: Mapping[str, Any]) -> None:
    with pytest.raises(GendaError, match="PlateauStop"):
        PlateauStop(**kwargs)


# ------------------------------------------------------------------------- the hook
def config(**changes: Any) -> TrainConfig:
    base = {
        "steps": 20,
        "batch_size": 2,
        "lr": 2e-3,
        "lr_schedule": "constant",
        "warmup_steps": 1,
        "val_every": 1000,
        "log_every": 2,
        "val_samples": 2,
        "device": "cpu",
    }
    return TrainConfig(**(base | changes))


def test_a_stop_rule_ends_the_run_validated_and_checkpointed(
    tiny_archive: Path, tmp_path: Path
) -> None:
    seen: list[int] = []

    def at_step_6(history: Sequence[Mapping[str, Any]]) -> str | None:
        seen.append(int(history[-1]["step"]))
        return "enough" if history[-1]["step"] >= 6 else None

    out = tmp_path / "prior"
    run = train_prior(
        tiny_archive,
        out,
        architecture=TINY,
        config=config(),
        val_gap_hours=3.0,
        progress=False,
        stop=at_step_6,
    )
    result = run.result
    # called after every log row (every 2 steps), stopped at the first row it asked for
    assert seen == [2, 4, 6]
    assert result.step == 6 and result.stopped == "enough"
    # step 6 is no validation step (val_every 1000), yet the run ends validated there
    assert result.history[-1]["step"] == 6 and result.history[-1]["val_loss"] is not None
    assert result.val_loss == result.history[-1]["val_loss"]
    assert read_checkpoint(out).config["step"] == 6
    assert [r["step"] for r in read_history(out / "loss.csv", 10**9)] == [0, 2, 4, 6]


def test_plateau_stop_in_a_run_and_a_run_without_a_rule(tiny_archive: Path, tmp_path: Path) -> None:
    # tol 1: any improvement short of 100 % is flat; window 1: the second trained validation
    rule = PlateauStop(tol=1.0, window=1)
    common = {"architecture": TINY, "val_gap_hours": 3.0, "progress": False}
    stopped = train_prior(
        tiny_archive, tmp_path / "a", config=config(val_every=4), stop=rule, **common
    ).result
    assert stopped.step == 8 and stopped.stopped == PLATEAU
    full = train_prior(tiny_archive, tmp_path / "b", config=config(steps=8), **common).result
    assert full.step == 8 and full.stopped is None
    # the same run up to the stop: the hook changes when the run ends, not what it does
    assert stopped.train_loss == pytest.approx(full.train_loss, rel=1e-6)


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
    archive, out, config, tiny = sys.argv[1], sys.argv[2], eval(sys.argv[3]), eval(sys.argv[4])
    dist.init_process_group("gloo")
    data = TrainingData.from_dataset(open_archive(archive), 0.1, 3.0)
    torch.manual_seed(0)
    model = EDMDenoiser(build_backbone(Joint3D(), data.grid, **tiny))
    calls = []

    def rule(history):
        calls.append(history[-1]["step"])
        return "rank0" if history[-1]["step"] >= 4 else None

    result = train(model, data, TrainConfig(**config), out, progress=False, stop=rule)
    print("rank", dist.get_rank(), result.step, result.stopped, len(calls), flush=True)
    dist.destroy_process_group()
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_every_rank_stops_where_rank_0_decides(tiny_archive: Path, tmp_path: Path) -> None:
    """Under DDP only rank 0 asks the rule; the others follow its answer (no hang)."""
    settings = config(steps=20, batch_size=4).to_dict()
    env = os.environ | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    env |= {"WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-c", DDP_WORKER, str(tiny_archive), str(tmp_path / "ddp")]
    args += [repr(settings), repr(TINY)]
    procs = [
        subprocess.Popen(
            args,
            env=env | {"RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(2)
    ]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    lines = sorted(line for o in outputs for line in o.splitlines() if line.startswith("rank"))
    # rank 0 asked the rule at steps 2 and 4; rank 1 never, and stopped with it
    assert lines == ["rank 0 4 rank0 2", "rank 1 4 rank0 0"]
    assert read_checkpoint(tmp_path / "ddp").config["step"] == 4
