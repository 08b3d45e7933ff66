"""The run planner: traced cost against the real run, the closed forms, ``recommend`` and ``genda plan``."""

from __future__ import annotations

import json
import resource
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch_harmonics as th
from typer.testing import CliRunner

from genda.cli import app
from genda.errors import GendaError, UnknownNameError
from genda.planning.build import harmonic_table_shapes, planned_denoiser
from genda.planning.dispatch import CostMode, FlopCount, onednn_workspace
from genda.planning.measure import allocator_peak, measure_sampling
from genda.planning.model import (
    GIB,
    chunked_cost,
    full_truncation,
    member_cost,
    usable_bytes,
    whitening_bytes,
)
from genda.planning.plan import recommend
from genda.planning.spec import PlanError, RunSpec
from genda.planning.table import (
    BEGIN,
    END,
    TABLE_GRIDS,
    TABLE_LEVELS,
    TABLE_VARIABLES,
    table_header,
    table_markdown,
    table_rows,
)
from genda.planning.trace import device_bytes, trace_sampling
from genda.threads import cpu_threads

DOC = Path(__file__).resolve().parents[1] / "docs" / "strategies.md"


@pytest.fixture(autouse=True)
def one_thread():
    with cpu_threads(1):
        yield


# ------------------------------------------------------------------ the counters
def test_cost_mode_counts_a_storage_once_and_frees_it() -> None:
    """A view adds nothing; a new tensor adds its bytes until it is dropped."""
    x = torch.zeros(1000)
    with CostMode() as mode:
        y = x * 2  # 4000 bytes
        view = y[:10]
        assert mode.live == 4000
        del y, view
        assert mode.live == 0
        z = torch.ones(250)
        del z
    assert mode.peak == 4000


def test_flop_count_matches_a_matrix_product_by_hand() -> None:
    a, b = torch.ones(8, 16), torch.ones(16, 4)
    with FlopCount() as counter:
        a @ b
    assert counter.total == 2 * 8 * 16 * 4


def test_allocator_peak_sees_what_the_tensors_hold() -> None:
    peak, kept, result = allocator_peak(lambda: torch.ones(1 << 20).sum())
    assert peak >= 4 << 20 and kept <= 64
    assert float(result) == 1 << 20


# ------------------------------------------------------------------ traced vs real
SMALL = [
    pytest.param(
        RunSpec(16, 32, 8, strategy="joint3d", guidance="mmps-prior", observations=200),
        2,
        id="joint3d-prior",
    ),
    pytest.param(
        RunSpec(
            16,
            32,
            4,
            strategy="layer2d",
            coordinates="grid",
            guidance="mmps-jacobian",
            observations=100,
            channel_mult=(1, 2),
        ),
        1,
        id="layer2d-jacobian",
    ),
]


@pytest.mark.parametrize(("spec", "batch"), SMALL)
def test_trace_on_meta_equals_the_real_run(spec: RunSpec, batch: int) -> None:
    """FLOPs exactly; memory against the CPU allocator within 10 %, tensors exactly."""
    traced = trace_sampling(spec, batch)
    real = trace_sampling(spec, batch, device="cpu")
    assert traced.flops_per_call == real.flops_per_call > 0
    assert traced.sampling_peak_bytes == real.sampling_peak_bytes
    assert traced.weights_bytes == real.weights_bytes
    assert traced.window_bytes == real.window_bytes
    measured = measure_sampling(spec, batch)
    assert measured.flops_per_call == traced.flops_per_call
    with_workspace = trace_sampling(spec, batch, workspace=onednn_workspace)
    ratio = with_workspace.sampling_peak_bytes / measured.sampling_peak_bytes
    assert 0.9 <= ratio <= 1.1, ratio
    assert measured.weights_bytes == traced.weights_bytes


def test_meta_build_allocates_nothing_at_a_quarter_degree() -> None:
    """The 0.25 degree, 150-level, 5-variable whitened prior is built without its memory."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    spec = RunSpec(720, 1440, 150, 5, truncation=16)
    denoiser = planned_denoiser(spec)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert all(p.device.type == "meta" for p in denoiser.parameters())
    assert grown_mib < 200
    network = sum(p.numel() * 4 for p in denoiser.parameters())
    expected = network + sum(b.numel() * b.element_size() for b in denoiser.backbone.buffers())
    assert device_bytes(denoiser) == expected + whitening_bytes(spec, 16)


@pytest.mark.parametrize("strategy", ["joint3d", "layer2d"])
@pytest.mark.parametrize("tides", [0, 3])
def test_whitening_closed_form_equals_the_module(strategy: str, tides: int) -> None:
    spec = RunSpec(16, 32, 6, 3, strategy=strategy, tides=tides)
    denoiser = planned_denoiser(spec, "cpu")
    network = sum(
        t.numel() * t.element_size()
        for t in [*denoiser.backbone.parameters(), *denoiser.backbone.buffers()]
    )
    assert device_bytes(denoiser) - network == whitening_bytes(spec, full_truncation(spec))


def test_harmonic_table_shapes_are_torch_harmonics() -> None:
    nlat, nlon, t = 12, 24, 10
    shapes = harmonic_table_shapes(nlat, nlon, t)
    options = {"lmax": t, "mmax": t, "grid": "legendre-gauss", "csphase": False}
    real = {
        "RealSHT.weights": th.RealSHT(nlat, nlon, **options).weights,
        "InverseRealSHT.pct": th.InverseRealSHT(nlat, nlon, **options).pct,
        "RealVectorSHT.weights": th.RealVectorSHT(nlat, nlon, **options).weights,
        "InverseRealVectorSHT.dpct": th.InverseRealVectorSHT(nlat, nlon, **options).dpct,
    }
    assert {k: tuple(v.shape) for k, v in real.items()} == shapes


# ------------------------------------------------------------------ the model
def test_memory_and_flops_are_linear_in_the_batch() -> None:
    spec = RunSpec(16, 32, 8, strategy="joint3d", coordinates="grid", guidance="none")
    cost = member_cost(spec)
    three = trace_sampling(spec, 3)
    assert cost.batch_bytes(3) == three.peak_bytes
    assert cost.flops_per_call * 3 + cost.call_flops == three.flops_per_call


def test_chunked_layer2d_extended_in_levels_equals_a_full_trace() -> None:
    spec = RunSpec(
        16, 32, 12, strategy="layer2d", coordinates="grid", guidance="none", channel_mult=(1, 2)
    )
    whole = member_cost(spec)
    extended = chunked_cost(spec, 3, whole)
    direct = member_cost(replace(spec, layers_per_batch=3))
    for batch in (1, 2):
        # exact but for a few bytes of per-level conditioning
        assert extended.batch_bytes(batch) == pytest.approx(direct.batch_bytes(batch), abs=64)
        assert extended.flops_per_member(batch) == pytest.approx(direct.flops_per_member(batch))
    assert extended.batch_bytes(1) < whole.batch_bytes(1)


def test_calls_per_member_follow_the_sampler() -> None:
    assert RunSpec(16, 32, 8, steps=32).calls_per_member() == 63
    assert RunSpec(16, 32, 8, steps=32, sampler="euler").calls_per_member() == 32


# ------------------------------------------------------------------ recommend
GRID_RUN = {"coordinates": "grid", "guidance": "none"}


def test_recommend_prefers_joint3d_and_fills_the_device() -> None:
    plan = recommend(16, 32, 8, gpu="a100-40", **GRID_RUN)
    assert plan.recommended == "joint3d"
    joint = plan.option("joint3d")
    assert joint is not None and joint.fits
    cost = member_cost(RunSpec(16, 32, 8, strategy="joint3d", **GRID_RUN))
    usable = usable_bytes(40.0)
    assert (
        cost.batch_bytes(joint.members_at_once)
        <= usable
        < cost.batch_bytes(joint.members_at_once + 1)
    )
    layer = plan.option("layer2d")
    assert layer is not None and layer.tflop_per_member > joint.tflop_per_member
    assert "joint3d" in plan.reason and "layer2d" in plan.reason


@pytest.mark.slow
def test_recommend_chunks_layer2d_when_a_whole_member_does_not_fit() -> None:
    spec = RunSpec(16, 32, 8, strategy="layer2d", coordinates="grid", guidance="none")
    whole = member_cost(spec)
    one = chunked_cost(spec, 1, whole)
    # a device between one sample per call and the whole member
    gib = 1.0 + (one.batch_bytes(1) + whole.batch_bytes(1)) / 2 / 0.95 / GIB
    plan = recommend(
        16, 32, 8, strategy="layer2d", gpu_memory=gib, coordinates="grid", guidance="none"
    )
    layer = plan.option("layer2d")
    assert plan.recommended == "layer2d" and layer is not None
    assert layer.layers_per_batch is not None and 1 <= layer.layers_per_batch < 8
    assert layer.one_member_gib * GIB <= usable_bytes(gib)


@pytest.mark.parametrize(
    ("arguments", "error", "words"),
    [
        ({"levels": 0}, PlanError, "levels must be"),
        ({"nlat": 180, "nlon": 360}, PlanError, "multiple of 8"),
        ({"strategy": "joint4d"}, UnknownNameError, "unknown strategy"),
        ({"gpu": "v100"}, UnknownNameError, "unknown GPU"),
        ({"gpu_memory": 0.5}, PlanError, "smaller than the weights"),
        ({"coordinates": "grid"}, PlanError, "needs whitened"),
    ],
)
def test_recommend_refuses_clearly(arguments: dict, error: type, words: str) -> None:
    options = {"nlat": 16, "nlon": 32, "levels": 8, **arguments}
    with pytest.raises(error, match=words):
        recommend(options.pop("nlat"), options.pop("nlon"), options.pop("levels"), **options)


def test_unpoolable_grid_names_the_sizes_that_pool() -> None:
    with pytest.raises(GendaError) as caught:
        RunSpec(180, 360, 100)
    message = str(caught.value)
    assert "176, 184" in message and "352, 368" in message and "--channel-mult 1,2,2" in message
    RunSpec(180, 360, 100, channel_mult=(1, 2, 2))  # three levels pool it


# ------------------------------------------------------------------ genda plan
def test_genda_plan_json_and_errors() -> None:
    runner = CliRunner()
    args = [
        "plan",
        "--grid",
        "16x32",
        "--levels",
        "8",
        "--coordinates",
        "grid",
        "--guidance",
        "none",
    ]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["recommended"] == "joint3d"
    assert {o["strategy"] for o in plan["options"]} == {"joint3d", "layer2d"}
    shown = runner.invoke(app, args)
    assert shown.exit_code == 0 and "recommended" in shown.output
    for bad, words in [
        (["--grid", "180x360", "--levels", "8"], "cannot pool"),
        (["--grid", "16x32", "--levels", "0"], "levels must be"),
        (["--grid", "16x32", "--levels", "8", "--gpu", "x"], "unknown GPU"),
        (["--grid", "16x32", "--levels", "8", "--strategy", "x"], "unknown strategy"),
    ]:
        failed = runner.invoke(app, ["plan", *bad])
        assert failed.exit_code == 1 and words in failed.output, failed.output
    # text that is no grid size is a usage error, like every option that does not parse
    malformed = runner.invoke(app, ["plan", "--grid", "16by32", "--levels", "8"])
    assert malformed.exit_code == 2 and "NLATxNLON" in malformed.output, malformed.output


# ------------------------------------------------------------------ the doc's table
def _doc_table() -> list[str]:
    text = DOC.read_text()
    return text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip().splitlines()


def test_doc_table_has_the_functions_header_and_every_field() -> None:
    table = _doc_table()
    assert table[:2] == table_header()
    fields = [
        f"| {name} {nlat}x{nlon} | {levels} | {nvar} |"
        for name, (nlat, nlon) in TABLE_GRIDS.items()
        for levels in TABLE_LEVELS
        for nvar in TABLE_VARIABLES
    ]
    assert [row[: len(field)] for row, field in zip(table[2:], fields, strict=True)] == fields


@pytest.mark.slow
@pytest.mark.parametrize(("resolution", "levels", "variables"), [("1°", 50, 3), ("0.5°", 150, 5)])
def test_doc_table_rows_are_the_functions_output(
    resolution: str, levels: int, variables: int
) -> None:
    """Rows of ``genda plan --table`` remade here equal the doc's (all of it: about 4 minutes)."""
    rows = table_rows(
        grids={resolution: TABLE_GRIDS[resolution]}, levels=(levels,), variables=(variables,)
    )
    (line,) = table_markdown(rows).splitlines()[2:]
    assert line in _doc_table()
