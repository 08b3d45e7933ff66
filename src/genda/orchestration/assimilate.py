"""One assimilation window: observations file + checkpoint -> a window of an ensemble store.

``assimilate_window`` is what ``genda assimilate`` runs. It loads and checks
everything before any sampling (a bad checkpoint, observation table, time or
store fails in seconds and writes nothing), registers the window in the
multi-window store (:class:`genda.storage.ensemble_store.EnsembleStore`) with
its provenance, makes the members that are missing (all of them the first
time, the gaps after an interruption), in this process or on Ray actors
(:mod:`genda.distributed`), and writes the window's statistics.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import nullcontext
from typing import Any

import numpy as np
import pandas as pd
import torch

from genda import __version__
from genda.assimilation.conditioning import leading_mask
from genda.assimilation.posterior import (
    PosteriorSettings,
    check_guidance,
    fit_of_values,
    window_seed,
)
from genda.assimilation.start_update import StartUpdate
from genda.budget import check_output_size, human_bytes
from genda.devices import check_device
from genda.distributed import MemberGenerator, WindowJob, WindowReport, WorkerSpec, complete_window
from genda.distributed.cluster import check_cluster, ray_session
from genda.distributed.cluster import ray_address as ray_address_of
from genda.distributed.scheduler import ActorPool
from genda.distributed.work import set_layers_per_batch
from genda.errors import InvalidValueError
from genda.models.checkpoint import LoadedPrior, load_checkpoint
from genda.models.long_window import long_window_prior
from genda.observations.diagnostics import observation_diagnostics
from genda.observations.files import read_observations
from genda.observations.operators import ObservationOperator
from genda.observations.qc import (
    DEFAULT_OUTLIER_K,
    BackgroundCheck,
    check_outlier_k,
    screen_observations,
)
from genda.observations.table import (
    as_datetime64,
    validate_observations,
    window_bounds,
)
from genda.orchestration.summaries import ObservationFit, WindowSummary
from genda.orchestration.trajectory_window import (
    check_condition,
    stored_rows,
    trajectory_job,
    trajectory_observations,
    trajectory_operator,
    trajectory_provenance,
    trajectory_values,
)
from genda.ownership import check_store_output
from genda.storage.ensemble_diagnostics import write_diagnostics
from genda.storage.ensemble_store import EnsembleStore
from genda.trajectory import is_trajectory, state_grid, state_normalization

FIT_BLOCK_MEMBERS = 32
"""Members read back at a time to compute the fit to the observations."""


def observation_fingerprint(obs: pd.DataFrame) -> str:
    """SHA-256 of a canonical table's CSV text: the identity of an observation set."""
    text = obs.to_csv(index=False, float_format="%.9g", date_format="%Y-%m-%dT%H:%M:%S")
    return hashlib.sha256(text.encode()).hexdigest()


def load_window_observations(
    path: str | os.PathLike[str], grid: Any, time: np.datetime64, window_hours: float
) -> pd.DataFrame:
    """Read and validate the observations of the window ``time +- window_hours / 2``."""
    window = window_bounds(time, window_hours)
    return validate_observations(read_observations(path), grid, window=window, source=str(path))


def window_provenance(
    prior: LoadedPrior,
    obs: pd.DataFrame | None,
    settings: PosteriorSettings,
    seed: int,
    time: np.datetime64,
    window_hours: float,
) -> dict[str, Any]:
    """What determines a window's members, recorded in the store and compared on reruns.

    The batch size is left out: it is a memory knob, and members made with
    another one differ only by float rounding (~1e-5 of the field).
    """
    resolved = settings.for_prior(prior, guided=obs is not None).to_dict()
    sampling = {k: v for k, v in resolved.items() if k != "batch_size"}
    return {
        "kind": "posterior" if obs is not None else "prior",
        "method": settings.method if obs is not None else "prior",
        "settings": sampling,
        "checkpoint_sha256": prior.weights_sha256,
        "checkpoint_strategy": prior.strategy.name,
        "checkpoint_step": prior.step,
        "checkpoint_archive_fingerprint": prior.fingerprint or "",
        "seed": int(seed),
        "window_seed": str(window_seed(seed, time)),
        "window_hours": float(window_hours),
        "observations_sha256": "" if obs is None else observation_fingerprint(obs),
        "observations_count": 0 if obs is None else len(obs),
        "genda_version": __version__,
    }


def ensemble_fit(
    store: EnsembleStore, time: np.datetime64, obs: pd.DataFrame, operator: ObservationOperator
) -> dict[str, float]:
    """:func:`~genda.assimilation.posterior.observation_fit` of a stored window, read in blocks.

    ``operator`` is the table's physical operator in float64.
    """
    values = []
    for lo in range(0, store.n_members, FIT_BLOCK_MEMBERS):
        block = range(lo, min(lo + FIT_BLOCK_MEMBERS, store.n_members))
        values.append(operator(torch.from_numpy(store.read_members(time, block)).double()))
    return fit_of_values(torch.cat(values), obs)


def assimilate_window(
    checkpoint: str | os.PathLike[str],
    observations: str | os.PathLike[str] | None,
    time: str | np.datetime64,
    out: str | os.PathLike[str],
    *,
    members: int = 16,
    settings: PosteriorSettings | None = None,
    seed: int = 0,
    window_hours: float = 1.0,
    outlier_k: float = DEFAULT_OUTLIER_K,
    keep_outliers: bool = False,
    layers_per_batch: int | None = None,
    device: str = "cpu",
    workers: int = 0,
    threads_per_worker: int = 1,
    ray_address: str | None = None,
    pool: ActorPool | None = None,
    auto_batch: bool = False,
    members_per_shard: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    yes: bool = False,
    insecure: bool = False,
    filtering: bool = False,
    writes_first: bool = True,
    states: int | None = None,
    start_update: StartUpdate | None = None,
) -> WindowSummary:
    """Complete the window at ``time`` in the ensemble store ``out`` (created when absent).

    With a trajectory prior (``genda train --states K``) the window is its
    ``K`` hours from ``time``, each observation acting at its own time, and
    each hour goes to its own slot of the store
    (:mod:`genda.orchestration.trajectory_window`).

    Args:
        checkpoint: a checkpoint directory or a shipped name (``default``, ``default-layer2d``).
        observations: CSV, Parquet or NetCDF table (docs/observations.md);
            ``None`` samples the prior (the unconditional baseline).
        time: the window's centre (ISO text or datetime64), naive UTC.
        out: the ensemble store (Zarr v3 directory); it may hold other windows.
        members: ensemble size (a store's is fixed at its creation).
        settings: guidance method, steps, batch size (:class:`PosteriorSettings`;
            its defaults when ``None``).
        seed: the experiment's seed; the window seed is a hash of it and ``time``.
        window_hours: observations within ``time +- window_hours / 2`` are accepted.
        outlier_k: the background check's threshold: observations farther than
            ``outlier_k`` standard deviations from the prior's climatology are
            flagged (:mod:`genda.observations.qc`); finite, > 0.
        keep_outliers: assimilate the flagged observations too (they are counted
            either way).
        layers_per_batch: ``layer2d`` only: layers per network call (the memory knob).
        device: torch device: ``cpu`` or ``cuda`` (Ray workers take one GPU each).
        workers: Ray actors to spread the members over; 0 samples in this process.
        threads_per_worker: torch threads of CPU sampling: per Ray actor (and its Ray
            CPUs), or of this process's sampling with ``workers=0`` (the caller's
            count is restored afterwards).
        ray_address: a running Ray cluster (else ``RAY_ADDRESS``, else a local one).
        pool: live Ray actors to use (overrides ``workers``; left running).
        auto_batch: probe the device for the batch size (GPUs; CPUs keep ``settings``').
        members_per_shard: sharding of a new store (``None``: automatic).
        overwrite: replace an existing genda store (every window in it); nothing
            that is not a genda ensemble store is ever replaced.
        progress: progress bar over sampler steps (batches x steps), on a terminal only.
        yes: confirm a store larger than :data:`genda.budget.CONFIRM_BYTES`.
        insecure: allow a local Ray cluster without token authentication
            (``RAY_AUTH_MODE=disabled``; :func:`genda.distributed.cluster.check_local_cluster`).
        filtering: a trajectory prior's window whose first state is fixed, member
            by member, to the store's finalised window at ``time`` (the previous
            window's last hour); the hours after it are written.
        writes_first: a cold trajectory window writes its first hour; ``False``
            leaves that hour to the window before it (a cycle's cold start after
            a failed window, whose rerun may still complete it).
        states: a trajectory prior's window of this many hourly states; more
            than its ``K`` composes the window from overlapping segments
            (:mod:`genda.models.long_window`). Default ``K``.
        start_update: a filtering window updates its members' starts by its
            observations (a localised EnKF step, then RTPS) before fixing them
            (:mod:`genda.assimilation.start_update`); ``None`` fixes them as they are.

    Returns:
        The window's :class:`~genda.orchestration.summaries.WindowSummary`
        (store, counts, timing in members/s over the members made now, retries,
        and the fit to the observations); its JSON form is
        :meth:`~genda.orchestration.summaries.WindowSummary.to_dict`.

    Raises:
        EnsembleStoreError: the store holds another grid or ensemble size, or
            this window with other provenance (other observations, settings or
            checkpoint).
    """
    # Everything is checked before the store is created, replaced or a window
    # registered: a refused run leaves the store as it was and the window free.
    _check_arguments(members, workers, threads_per_worker, window_hours, layers_per_batch)
    outlier_k = check_outlier_k(outlier_k)
    settings = settings or PosteriorSettings()
    when = as_datetime64(time)
    in_process = workers == 0 and pool is None
    driver_device = device if in_process else "cpu"
    if in_process:  # Ray workers check their own devices; a driver may have no GPU
        check_device(device)
    check_store_output(out, overwrite)
    prior = _load_prior(checkpoint, driver_device, layers_per_batch)
    if states is not None:  # a window of its own length (genda.models.long_window)
        segment = prior
        prior = long_window_prior(prior, states)
        if auto_batch and prior is not segment:
            raise InvalidValueError(
                "--batch-size auto plans the memory of one network call; a window longer "
                "than the prior's calls it once per segment: give a batch size"
            )
    trajectory = is_trajectory(prior.grid)
    if filtering and not trajectory:
        raise InvalidValueError(
            "filtering fixes a window's first hourly state: it needs a trajectory prior "
            "(genda train --states K)"
        )
    if filtering and overwrite:
        raise InvalidValueError(
            "filtering conditions on the store's previous window; replacing the store "
            "(overwrite) would delete it first"
        )
    if start_update is not None and not filtering:
        raise InvalidValueError(
            "--update-start updates the states a filtering window fixes: it needs --filter"
        )
    if start_update is not None and (observations is None or members < 2):
        raise InvalidValueError(
            "--update-start updates an ensemble's starts by the window's observations: it "
            f"needs --obs and at least 2 members (got {members})"
        )
    _check_store_size(prior, members, out, yes)
    table, obs, qc = _load_observations(
        observations, prior, when, window_hours, outlier_k, keep_outliers
    )
    if start_update is not None and obs is not None and "time" in obs:
        times = obs["time"].to_numpy().astype("datetime64[s]")
        if not (times != np.datetime64(when, "s")).any():
            raise InvalidValueError(
                f"--update-start: the window has no observation after its start {when}, "
                "whose own observations the window before it assimilated"
            )
    if filtering:
        check_condition(out, prior, when, members)
    provenance = window_provenance(prior, obs, settings, seed, when, window_hours)
    if trajectory:
        provenance = trajectory_provenance(
            provenance, prior, when, filtering, writes_first, start_update
        )
    check_guidance(
        prior, obs, settings, driver_device, when, leading_mask(prior) if filtering else None
    )
    spec = None
    if not in_process:
        spec = _worker_spec(
            prior, device, threads_per_worker, layers_per_batch, pool, ray_address, insecure
        )

    store = _register_window(
        out,
        prior,
        members,
        None if trajectory else when,
        provenance,
        posterior=obs is not None,
        members_per_shard=members_per_shard,
        overwrite=overwrite,
    )
    if trajectory:
        job = trajectory_job(
            store,
            prior,
            when,
            seed,
            settings,
            obs,
            provenance,
            filtering,
            writes_first,
            start_update=start_update,
        )
    else:
        job = WindowJob(
            store,
            when,
            window_seed(seed, when),
            settings,
            obs,
            provenance["observations_sha256"],
            provenance,
        )
    report = _make_members(
        job,
        prior,
        spec=spec,
        device=device,
        workers=workers,
        threads_per_worker=threads_per_worker,
        ray_address=ray_address,
        pool=pool,
        auto_batch=auto_batch,
        progress=progress,
        insecure=insecure,
    )
    if table is not None and qc is not None and not trajectory:  # complete and finalised
        _write_diagnostics(store, when, table, qc, prior, keep_outliers, checkpoint)
    return _summarise(
        store,
        when,
        prior,
        report,
        members=members,
        method=provenance["method"],
        steps=settings.steps,
        obs=obs,
        qc=qc,
        keep_outliers=keep_outliers,
    )


def _check_arguments(
    members: int,
    workers: int,
    threads_per_worker: int,
    window_hours: float,
    layers_per_batch: int | None,
) -> None:
    """Refuse a bad count or window before anything is loaded."""
    if members < 1:
        raise InvalidValueError(f"members must be >= 1, got {members}")
    if workers < 0:
        raise InvalidValueError(f"workers must be >= 0, got {workers}")
    if threads_per_worker < 1:
        raise InvalidValueError(f"threads_per_worker must be >= 1, got {threads_per_worker}")
    if not (window_hours >= 0 and np.isfinite(window_hours)):
        raise InvalidValueError(f"window_hours must be a finite number >= 0, got {window_hours}")
    if layers_per_batch is not None and layers_per_batch < 1:
        raise InvalidValueError(f"layers_per_batch must be >= 1, got {layers_per_batch}")


def _load_prior(
    checkpoint: str | os.PathLike[str], device: str, layers_per_batch: int | None
) -> LoadedPrior:
    """The driver's prior on ``device``, with ``layers_per_batch`` applied when given.

    The driver loads it to check the grid and the observations; it samples
    with it only in-process (Ray actors load their own copy).
    """
    prior = load_checkpoint(checkpoint, device=device)
    if layers_per_batch is not None:
        set_layers_per_batch(prior, layers_per_batch)
    return prior


def _check_store_size(
    prior: LoadedPrior, members: int, out: str | os.PathLike[str], yes: bool
) -> None:
    """Refuse a window of float32 members too large for the disk, or unconfirmed."""
    field_bytes = int(np.prod(prior.grid.shape)) * 4  # float32 members
    check_output_size(
        members * field_bytes, out, f"{members} members of {human_bytes(field_bytes)}", yes=yes
    )


def _load_observations(
    observations: str | os.PathLike[str] | None,
    prior: LoadedPrior,
    when: np.datetime64,
    window_hours: float,
    outlier_k: float,
    keep_outliers: bool,
) -> tuple[pd.DataFrame | None, pd.DataFrame | None, BackgroundCheck | None]:
    """``(table, screened, check)``: the window's table checked on the prior's grid, the
    table to assimilate (screened by the background check) and the check.

    All are ``None`` without observations (the prior is sampled). The
    provenance fingerprints the table assimilated (after the background
    check): ``outlier_k`` and ``keep_outliers`` enter it through what they
    change, so windows made before the check, with nothing flagged, still match.
    """
    if observations is None:
        return None, None, None
    grid = state_grid(prior.grid)
    if is_trajectory(prior.grid):
        obs = trajectory_observations(observations, prior.grid, when)
    else:
        obs = load_window_observations(observations, grid, when, window_hours)
    normalization = state_normalization(prior.normalization, prior.grid)
    screened, check = screen_observations(
        obs, grid, normalization, outlier_k, keep_outliers, str(observations)
    )
    return obs, screened, check


def _worker_spec(
    prior: LoadedPrior,
    device: str,
    threads_per_worker: int,
    layers_per_batch: int | None,
    pool: ActorPool | None,
    ray_address: str | None,
    insecure: bool,
) -> WorkerSpec:
    """How Ray actors load the prior; without a ``pool`` the cluster is checked first.

    The cluster must answer, or be allowed, before the store is touched.
    """
    spec = WorkerSpec(str(prior.path), device, threads_per_worker, layers_per_batch)
    if pool is None:
        check_cluster(ray_address_of(ray_address), insecure=insecure)
    return spec


def _register_window(
    out: str | os.PathLike[str],
    prior: LoadedPrior,
    members: int,
    when: np.datetime64 | None,
    provenance: dict[str, Any],
    *,
    posterior: bool,
    members_per_shard: int | None,
    overwrite: bool,
) -> EnsembleStore:
    """Open (or create, or replace) the store and register the window at ``when`` in it.

    The run's first write: every check has passed by now. ``posterior``: there
    are observations (the store's title says so). ``when=None`` registers
    nothing (a trajectory window registers its hours itself). The store holds
    one hourly state per slot: a trajectory prior's state grid.
    """
    title = "genda posterior ensemble" if posterior else "genda prior ensemble"
    store = EnsembleStore.open_or_create(
        out,
        state_grid(prior.grid),
        members,
        {"title": title, "source": f"genda {__version__}"},
        members_per_shard=members_per_shard,
        overwrite=overwrite,
    )
    if when is not None:
        store.add_window(when, provenance)
    return store


def _make_members(
    job: WindowJob,
    prior: LoadedPrior,
    *,
    spec: WorkerSpec | None,
    device: str,
    workers: int,
    threads_per_worker: int,
    ray_address: str | None,
    pool: ActorPool | None,
    auto_batch: bool,
    progress: bool,
    insecure: bool,
) -> WindowReport:
    """Make the window's missing members, in this process (no ``spec``) or on Ray actors.

    Ray is attached here so that the insecure setting reaches a local
    cluster; :func:`~genda.distributed.complete_window` then uses the
    initialised Ray as it is.
    """
    in_process = spec is None
    cpus = workers * threads_per_worker if device == "cpu" else None
    attach = spec is not None and pool is None
    with ray_session(ray_address, num_cpus=cpus, insecure=insecure) if attach else nullcontext():
        return complete_window(
            job,
            workers=workers,
            spec=spec,
            # In this process, too, sampling runs on threads_per_worker torch threads
            # (restored afterwards): all of them oversubscribe a busy machine.
            generator=(
                MemberGenerator(str(prior.path), device, threads_per_worker, prior=prior)
                if in_process
                else None
            ),
            pool=pool,
            address=ray_address,
            auto_batch=auto_batch,
            progress=progress,
        )


def _fits(
    store: EnsembleStore, when: np.datetime64, obs: pd.DataFrame, prior: LoadedPrior
) -> tuple[ObservationFit, ObservationFit]:
    """``(ensemble, reference)``: the fit of the stored members and of the prior's training mean.

    The reference is the training mean per variable and level, a
    ``(1, V, L, H, W)`` field; both go through the table's operator in float64.
    """
    if is_trajectory(prior.grid):
        # rows at an hour this window left to a failed one are not its to fit
        obs = obs[stored_rows(store, prior, when, obs)].reset_index(drop=True)
        operator = trajectory_operator(obs, prior, when)
        n = store.n_members
        blocks = [
            operator(
                trajectory_values(store, prior, when, range(lo, min(lo + FIT_BLOCK_MEMBERS, n)))
            )
            for lo in range(0, n, FIT_BLOCK_MEMBERS)
        ]
        fit = ObservationFit.from_dict(fit_of_values(torch.cat(blocks), obs))
    else:
        operator = ObservationOperator.from_table(obs, prior.grid).to(dtype=torch.float64)
        fit = ObservationFit.from_dict(ensemble_fit(store, when, obs, operator))
    level_mean = prior.normalization.denormalize(torch.zeros(1, *prior.grid.shape))
    level_mean_fit = ObservationFit.from_dict(fit_of_values(operator(level_mean.double()), obs))
    return fit, level_mean_fit


def _write_diagnostics(
    store: EnsembleStore,
    when: np.datetime64,
    table: pd.DataFrame,
    qc: BackgroundCheck,
    prior: LoadedPrior,
    keep_outliers: bool,
    checkpoint: str | os.PathLike[str],
) -> None:
    """Write the window's observation-space diagnostics into the store, beside the window.

    Every row of ``table`` (the rejected ones flagged): the prior climatology,
    the stored members and the background check at each observation
    (:mod:`genda.observations.diagnostics`, :mod:`genda.storage.ensemble_diagnostics`).
    """
    blocks = (
        store.read_members(when, range(lo, min(lo + FIT_BLOCK_MEMBERS, store.n_members)))
        for lo in range(0, store.n_members, FIT_BLOCK_MEMBERS)
    )
    diagnostics = observation_diagnostics(
        table, qc, prior.grid, prior.normalization, blocks, keep_outliers=keep_outliers
    )
    attrs = {
        "checkpoint": str(checkpoint),
        "checkpoint_path": str(prior.path),
        "outlier_k": qc.k,
        "keep_outliers": keep_outliers,
    }
    write_diagnostics(store.path, when, diagnostics, attrs)


def _summarise(
    store: EnsembleStore,
    when: np.datetime64,
    prior: LoadedPrior,
    report: WindowReport,
    *,
    members: int,
    method: str,
    steps: int,
    obs: pd.DataFrame | None,
    qc: BackgroundCheck | None,
    keep_outliers: bool,
) -> WindowSummary:
    """The window's :class:`~genda.orchestration.summaries.WindowSummary`, with the fits."""
    run = report.run
    fit = level_mean_fit = None
    if obs is not None:
        fit, level_mean_fit = _fits(store, when, obs, prior)
    return WindowSummary(
        store=str(store.path),
        time=str(np.datetime64(when, "s")),
        members=members,
        written=run.written,
        already_complete=report.already_complete,
        strategy=prior.strategy.name,
        method=method,
        steps=steps,
        batch_size=report.batch_size,
        workers=report.workers,
        cluster=report.cluster,
        seconds=run.seconds,
        members_per_second=run.members_per_second,
        failures_retried=run.failures_retried,
        by_worker=run.by_worker,
        peak_memory_mib=run.peak_memory_mib,
        observations=0 if obs is None else len(obs),
        outliers=0 if qc is None else qc.n_flagged,
        outliers_by_variable={} if qc is None else {k: v for k, v in qc.flagged.items() if v},
        outliers_kept=keep_outliers,
        fit=fit,
        level_mean_fit=level_mean_fit,
    )
