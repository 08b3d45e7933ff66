"""A window's ``A A^T`` and its steps' ``A``, ``A^T``: through the decode's factor against brute force.

    python benchmarks/observation_space.py --prior PATH [default] --work outputs/cycled_osse
    python benchmarks/observation_space.py --quick --work W  # after trajectory_osse.py --quick

Run after ``benchmarks/trajectory_osse.py``: it takes that run's first
hourly observation tables (``--work``) and priors in whitened coordinates
(its trajectory prior, the shipped ``default``). For windows of each prior's
hours (``K``, or 1) with ``M`` observations (drawn from those tables, at
most all of them), side by side in one process:

- **factor**: the window's ``ObservationSpace`` as genda builds it: ``A A^T``
  from the observations' spectral point functionals, and a step's ``A``,
  ``A^T`` of a batch of states through the decode's per-mode factor, or as
  two products with ``A`` built from the factor while it is small
  (:mod:`genda.assimilation.spectral_factor`); and the step through the
  factor alone (``step_through_factor_s``), also where genda keeps ``A``,
  to show where the two ways cross (``FACTOR_ROWS_LIMIT``);
- **brute force**: the same space from an operator that does not know its
  factor: ``A A^T`` from the rows of ``A`` by reverse-mode products through
  the whole decode (kept as a matrix when they fit), and a step's ``A``,
  ``A^T`` through them or through the decode and its reverse mode.

Both builds include the eigen-decomposition of ``A A^T``. Reports the seconds
of each, their ratios and the largest difference of the two spaces'
eigenvalues relative to the largest. Writes
``benchmarks/results/observation_space-cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from _common import RESULTS, machine, print_table
from genda.assimilation.gaussian_tweedie import ObservationSpace
from genda.assimilation.posterior import likelihood_for
from genda.assimilation.state_operator import StateOperator
from genda.atomic import write_file
from genda.models.checkpoint import load_checkpoint
from genda.trajectory import is_trajectory, trajectory_states

BATCH = 16
"""States per step (a batch of members)."""


def seconds(call: Any, repeats: int = 3) -> float:
    """The best of ``repeats`` timed calls, after one to warm up."""
    call()
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best


def measure(prior: Any, table: pd.DataFrame, start: np.datetime64) -> dict[str, Any]:
    """One window's observation space and one step, with the factor and without."""
    likelihood = likelihood_for(prior, table, "cpu", start)
    operator = likelihood.operator
    plain = StateOperator(operator.fields, operator.decode, operator.state_shape)
    started = time.perf_counter()
    fast = ObservationSpace(operator, likelihood.sigma)
    build_fast = time.perf_counter() - started
    started = time.perf_counter()
    slow = ObservationSpace(plain, likelihood.sigma)
    build_slow = time.perf_counter() - started
    assert fast.eigenvalues is not None and slow.eigenvalues is not None
    difference = float(
        (fast.eigenvalues - slow.eigenvalues).abs().max() / slow.eigenvalues.abs().max()
    )
    z = torch.randn((BATCH, *operator.state_shape), generator=torch.Generator().manual_seed(0))
    w = torch.randn((BATCH, operator.n_obs), generator=torch.Generator().manual_seed(1))

    def step(space: ObservationSpace) -> float:
        return seconds(lambda: space.apply(z)) + seconds(lambda: space.adjoint(w))

    step_fast, step_slow = step(fast), step(slow)
    factor, modes = operator.factor, operator.factor.modes()
    through_factor = seconds(lambda: operator.fields.linear(factor.linear(z, modes))) + seconds(
        lambda: factor.adjoint(operator.fields.adjoint(w), modes)
    )  # the factor's step even where genda keeps A: where the two cross
    return {
        "observations": operator.n_obs,
        "factor_keeps_a": fast.rows is not None,
        "brute_force_keeps_a": slow.rows is not None,
        "build_factor_s": build_fast,
        "build_brute_s": build_slow,
        "build_ratio": build_slow / build_fast,
        "step_factor_s": step_fast,
        "step_brute_s": step_slow,
        "step_ratio": step_slow / step_fast,
        "step_through_factor_s": through_factor,
        "eigenvalues_max_relative_difference": difference,
    }


def window_table(work: Path, states: int) -> tuple[pd.DataFrame, np.datetime64]:
    """The OSSE's observations of its first ``states`` hours and the first hour."""
    tables = sorted((work / "obs").glob("*.parquet"))[:states]
    if len(tables) < states:
        raise SystemExit(f"{work / 'obs'} has fewer than {states} hourly tables")
    table = pd.concat([pd.read_parquet(path) for path in tables], ignore_index=True)
    return table, np.datetime64(pd.Timestamp(table["time"].min()).floor("h"), "ns")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--prior", nargs="+", help="priors in whitened coordinates (trajectory or one instant)"
    )
    parser.add_argument("--work", type=Path, default=Path("outputs") / "cycled_osse")
    parser.add_argument("--counts", type=int, nargs="+", default=[300, 1000, 2200])
    parser.add_argument("--quick", action="store_true", help="the quick OSSE's prior, 200 rows")
    args = parser.parse_args()
    if args.quick:
        args.prior = args.prior or [str(args.work / "quick-prior")]
        args.counts = [200]
    if not args.prior:
        parser.error("--prior is needed (the trajectory OSSE's prior)")
    torch.manual_seed(0)
    rows = []
    for path in args.prior:
        prior = load_checkpoint(path)
        states = trajectory_states(prior.grid) if is_trajectory(prior.grid) else 1
        table, start = window_table(args.work, states)
        measure(prior, table.iloc[:50], start)  # one-time set-up (transform tables) left out
        for count in sorted({min(count, len(table)) for count in args.counts}):
            chosen = np.random.default_rng(count).choice(len(table), count, False)
            row = measure(prior, table.iloc[np.sort(chosen)], start)
            rows.append({"prior": Path(path).name, "hours": states, **row})
    title = (
        f"a window's A A^T and one step's A and A^T ({BATCH} states): through the "
        f"decode's factor against brute force, seconds on this CPU "
        f"({torch.get_num_threads()} threads)"
    )
    print_table(title, rows)
    payload = {"benchmark": "observation_space", "machine": machine(), "batch": BATCH, "rows": rows}
    if not args.quick:
        RESULTS.mkdir(parents=True, exist_ok=True)
        write_file(RESULTS / "observation_space-cpu.json", json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
