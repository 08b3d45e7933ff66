"""``--batch-size auto`` from the memory model of ``genda plan`` (genda.planning.batch)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from genda.assimilation.posterior import PosteriorSettings
from genda.distributed.work import MemberGenerator, WindowJob
from genda.errors import InvalidValueError
from genda.models.checkpoint import load_checkpoint
from genda.planning import batch as batch_module
from genda.planning.batch import confirm_batch, planned_batch, prior_batch, run_spec_for
from genda.planning.build import planned_denoiser
from genda.planning.model import member_cost
from genda.planning.trace import device_bytes


@pytest.mark.parametrize("name", ["default", "default-layer2d"])
def test_the_planned_network_is_the_loaded_prior(name: str) -> None:
    """The spec built from a checkpoint builds the same network and statistics:
    parameter count and device bytes equal, to the byte."""
    prior = load_checkpoint(name)
    spec = run_spec_for(prior, PosteriorSettings(), observations=120)
    assert spec is not None
    assert (spec.strategy, spec.levels, spec.coordinates) == (
        prior.strategy.name,
        prior.grid.nlevels,
        "whitened",
    )
    assert spec.guidance == "mmps-prior"  # MMPS's "auto" covariance on a whitened prior
    planned = planned_denoiser(spec)
    assert sum(p.numel() for p in planned.parameters()) == prior.config["parameters"]
    assert device_bytes(planned) == device_bytes(prior.denoiser)


def test_guidance_follows_the_settings() -> None:
    prior = load_checkpoint("default")
    jacobian = PosteriorSettings(covariance="jacobian", iterations=5)
    assert run_spec_for(prior, jacobian, 10).guidance == "mmps-jacobian"
    assert run_spec_for(prior, jacobian, 10).iterations == 5
    assert run_spec_for(prior, PosteriorSettings(method="dps"), 10).guidance == "dps"
    assert run_spec_for(prior, PosteriorSettings(), None).guidance == "none"
    assert run_spec_for(prior, PosteriorSettings(method="sda"), 10) is None  # no model of SDA


def _cost():
    prior = load_checkpoint("default")
    return member_cost(run_spec_for(prior, PosteriorSettings(), observations=200))


def test_the_planned_batch_is_the_largest_within_the_budget() -> None:
    """Against brute force over the model's memory of each batch, with the window's
    transient (building MMPS's A A^T for 200 observations: larger than 80 members'
    sampling here) and without it."""
    real = _cost()
    assert real.window_transient_bytes > real.base_bytes + 80 * real.per_member_bytes
    for cost in (real, replace(real, window_transient_bytes=0)):
        one = cost.batch_bytes(1) - cost.weights_bytes
        for budget in np.linspace(one, one + 300 * cost.per_member_bytes, 7).astype(int):
            plan = planned_batch(cost, int(budget), largest=1000)
            brute = max(
                b for b in range(1, 1001) if cost.batch_bytes(b) - cost.weights_bytes <= budget
            )
            assert plan.batch == brute
            assert plan.one_member_bytes == one
    assert planned_batch(real, 10**15, largest=12).batch == 12
    one = real.batch_bytes(1) - real.weights_bytes
    refused = planned_batch(real, one - 1, largest=8)
    assert refused.batch == 0
    assert "one posterior member needs" in refused.refusal("here")


def test_the_window_transient_bounds_small_batches() -> None:
    """Building MMPS's A A^T may need more than sampling: a batch never fits on a budget
    the window's build exceeds, and the sampling term decides once it is larger."""
    cost = replace(_cost(), window_transient_bytes=0)
    big = replace(cost, window_transient_bytes=cost.base_bytes + 10 * cost.per_member_bytes)
    budget = big.batch_bytes(1) - big.weights_bytes
    assert planned_batch(big, budget - 1, largest=100).batch == 0
    # up to 10 members the transient is the peak; the budget of the transient fits them all
    assert planned_batch(big, budget, largest=100).batch == 10


@pytest.mark.parametrize(
    ("threshold", "predicted", "expected"),
    [(5, 5, 5), (5, 64, 5), (37, 64, 37), (1, 9, 1), (0, 9, 0), (100, 64, 64)],
)
def test_confirm_batch_finds_the_largest_accepted(
    threshold: int, predicted: int, expected: int
) -> None:
    tried: list[int] = []

    def fits(batch: int) -> bool:
        tried.append(batch)
        return batch <= threshold

    assert confirm_batch(predicted, fits) == expected
    assert all(b <= predicted for b in tried)
    assert len(tried) <= 2 * predicted.bit_length() + 1  # halving, then bisection


def _job(observations: int | None, batch_size: int = 8) -> WindowJob:
    table = None
    if observations is not None:
        table = pd.DataFrame({"value": np.zeros(observations)})
    return WindowJob(
        store=None,  # the probe reads the settings and the observations only
        time=np.datetime64("2000-02-01T12:00"),
        seed=0,
        settings=PosteriorSettings(batch_size=batch_size),
        observations=table,
    )


def test_a_cpu_keeps_the_settings_batch_when_it_fits(monkeypatch) -> None:
    generator = MemberGenerator("default")
    monkeypatch.setattr(batch_module, "available_host_bytes", lambda: 64 * 2**30)
    assert generator.probe_batch_size(_job(200, batch_size=8)) == 8


def test_a_cpu_lowers_the_batch_to_what_memory_holds(monkeypatch) -> None:
    generator = MemberGenerator("default")
    cost = member_cost(run_spec_for(generator.prior, PosteriorSettings(), 200))
    members = 90  # beyond the window's transient, so that the sampling decides
    assert cost.batch_bytes(members) > cost.batch_bytes(1)
    beyond = cost.batch_bytes(members) - cost.weights_bytes
    host = int((beyond + cost.per_member_bytes // 2) / 0.8)  # within 0.8 of it
    monkeypatch.setattr(batch_module, "available_host_bytes", lambda: host)
    assert generator.probe_batch_size(_job(200, batch_size=128)) == members
    assert generator.probe_batch_size(_job(200, batch_size=8)) == 8
    # not one member: a clear error that says what one needs and what there is
    monkeypatch.setattr(batch_module, "available_host_bytes", lambda: 1024)
    with pytest.raises(InvalidValueError, match=r"one posterior member needs .* GiB"):
        generator.probe_batch_size(_job(200))
    # no /proc/meminfo: the settings' batch, as before the model
    monkeypatch.setattr(batch_module, "available_host_bytes", lambda: None)
    assert generator.probe_batch_size(_job(200, batch_size=5)) == 5


def test_host_memory_is_read(tmp_path, monkeypatch) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  1000 kB\nMemFree:  10 kB\nMemAvailable:  512 kB\n")
    monkeypatch.setattr(batch_module, "_MEMINFO", meminfo)
    assert batch_module.available_host_bytes() == 512 * 1024
    monkeypatch.setattr(batch_module, "_MEMINFO", tmp_path / "absent")
    assert batch_module.available_host_bytes() is None


def test_prior_batch_without_a_model_is_none() -> None:
    prior = load_checkpoint("default")
    assert prior_batch(prior, PosteriorSettings(method="sda"), 10, 2**30, 8) is None


def test_a_control_groups_limit_bounds_the_host_memory(tmp_path, monkeypatch) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemAvailable:  1048576 kB\n")  # 1 GiB
    group = tmp_path / "cgroup" / "job"
    group.mkdir(parents=True)
    (group / "memory.max").write_text(f"{512 * 2**20}\n")
    (group / "memory.current").write_text(f"{128 * 2**20}\n")
    own = tmp_path / "self-cgroup"
    own.write_text("0::/job\n")
    monkeypatch.setattr(batch_module, "_MEMINFO", meminfo)
    monkeypatch.setattr(batch_module, "_CGROUP", tmp_path / "cgroup")
    monkeypatch.setattr(batch_module, "_SELF_CGROUP", own)
    assert batch_module.available_host_bytes() == 384 * 2**20  # the group's room
    (group / "memory.max").write_text("max\n")
    assert batch_module.available_host_bytes() == 2**30  # no limit: the kernel's
    own.write_text("4:memory:/job\n")  # cgroup v1 only
    assert batch_module.available_host_bytes() == 2**30


def test_workers_sharing_a_host_share_its_memory(monkeypatch) -> None:
    generator = MemberGenerator("default")
    cost = member_cost(run_spec_for(generator.prior, PosteriorSettings(), 200))
    host = int((cost.batch_bytes(400) - cost.weights_bytes + 1) / 0.8)
    monkeypatch.setattr(batch_module, "available_host_bytes", lambda: host)
    alone = generator.probe_batch_size(_job(200, batch_size=1000))
    shared = generator.probe_batch_size(_job(200, batch_size=1000), share=2)
    assert alone == 400 and 0 < shared < 250
    assert cost.batch_bytes(shared) - cost.weights_bytes <= 0.8 * host / 2
