"""``--batch-size auto``: members per batch from the memory model, then confirmed on the device.

:func:`run_spec_for` describes a loaded prior and a window's settings as a
:class:`~genda.planning.spec.RunSpec`, so that the traced memory model of
``genda plan`` (:func:`genda.planning.model.member_cost`) prices the very
network, coordinates, sampler and guidance the window runs.
:func:`planned_batch` turns a memory budget into the largest batch the model
allows; :func:`confirm_batch` then asks the device (one guided denoiser call
per candidate, on a GPU) and steps down where the model was too optimistic.
The model saves the probe's guesswork: without it a probe starts from a
linear fit of two small batches, which misses the window's transient (the
``A A^T`` of MMPS with the prior's covariance) and the autograd graph's
growth.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from genda.errors import InvalidValueError
from genda.planning.model import GIB, MemberCost
from genda.planning.plan import cached_cost
from genda.planning.spec import STRATEGY_NAMES, RunSpec

if TYPE_CHECKING:
    from genda.assimilation.posterior import PosteriorSettings
    from genda.models.checkpoint import LoadedPrior

__all__ = [
    "BatchPlan",
    "available_host_bytes",
    "confirm_batch",
    "planned_batch",
    "run_spec_for",
]

_MEMINFO = Path("/proc/meminfo")
_CGROUP = Path("/sys/fs/cgroup")
_SELF_CGROUP = Path("/proc/self/cgroup")


def run_spec_for(
    prior: LoadedPrior, settings: PosteriorSettings, observations: int | None
) -> RunSpec | None:
    """The :class:`RunSpec` of sampling ``prior`` with ``settings`` and ``observations``
    point observations (``None``: the prior alone); ``None`` where the model has no
    such run (SDA's corrector steps, a backbone other than the U-Net)."""
    config = prior.config
    architecture = config.get("architecture", {})
    if architecture.get("backbone", "unet") != "unet" or prior.strategy.name not in STRATEGY_NAMES:
        return None
    unet = architecture["config"]
    settings = settings.for_prior(prior, guided=observations is not None)
    if observations is None:
        guidance = "none"
    elif settings.method == "dps":
        guidance = "dps"
    elif settings.method == "mmps":
        guidance = "mmps-prior" if settings.covariance == "prior" else "mmps-jacobian"
    else:
        return None
    coordinates = config.get("coordinates") or {}
    whitened = prior.denoiser.coordinates is not None
    options = prior.strategy.options() if hasattr(prior.strategy, "options") else {}
    nvar, nlev, nlat, nlon = prior.grid.shape
    return RunSpec(
        nlat=nlat,
        nlon=nlon,
        levels=nlev,
        variables=nvar,
        strategy=prior.strategy.name,
        window=int(options.get("window", 1)),
        layers_per_batch=getattr(prior.strategy, "layers_per_batch", None),
        base_channels=int(unet["base_channels"]),
        channel_mult=tuple(unet["channel_mult"]),
        blocks_per_level=int(unet["blocks_per_level"]),
        attention_levels=tuple(unet.get("attention_levels", ())),
        noise_embedding_dim=int(unet.get("noise_embedding_dim", 128)),
        coordinates="whitened" if whitened else "grid",
        truncation=coordinates.get("truncation") if whitened else None,
        tides=int(coordinates.get("tides", 0)) if whitened else 0,
        guidance=guidance,
        iterations=settings.iterations,
        steps=settings.steps,
        sampler=settings.sampler,
        observations=max(1, observations or 1),
    )


@dataclass(frozen=True)
class BatchPlan:
    """What the memory model allows on a budget.

    Attributes:
        batch: members at once (0: not one fits).
        budget_bytes: the memory the batch may take beyond the loaded weights.
        one_member_bytes: what one member takes beyond the weights (window included).
        per_member_bytes: what each further member adds.
    """

    batch: int
    budget_bytes: int
    one_member_bytes: int
    per_member_bytes: int

    def refusal(self, where: str) -> str:
        """Why not one member fits, for an error message."""
        return (
            f"one posterior member needs {self.one_member_bytes / GIB:.2f} GiB beyond the "
            f"prior's weights (memory model of `genda plan`), but {where} offers "
            f"{self.budget_bytes / GIB:.2f} GiB; use a smaller window of observations, "
            "a layer2d prior with --layers-per-batch, or a device with more memory"
        )


def planned_batch(cost: MemberCost, budget_bytes: int, largest: int) -> BatchPlan:
    """The largest batch (at most ``largest``) whose memory beyond the weights, which
    are loaded already, stays within ``budget_bytes``."""

    one = cost.batch_bytes(1) - cost.weights_bytes
    per_member = cost.per_member_bytes
    if one > budget_bytes:
        batch = 0
    elif per_member <= 0:
        batch = largest
    else:
        # window + max(base + B per_member, transient) <= budget, and one member fits
        batch = max(1, (budget_bytes - cost.window_bytes - cost.base_bytes) // per_member)
    return BatchPlan(int(min(batch, largest)), int(budget_bytes), int(one), int(per_member))


def prior_batch(
    prior: LoadedPrior,
    settings: PosteriorSettings,
    observations: int | None,
    budget_bytes: int,
    largest: int,
) -> BatchPlan | None:
    """:func:`planned_batch` for ``prior``'s run (``None`` where the model has none)."""
    spec = run_spec_for(prior, settings, observations)
    if spec is None:
        return None
    # traced once per run spec (plan.cached_cost): a cycle's windows share it
    return planned_batch(cached_cost(spec), budget_bytes, largest)


def confirm_batch(predicted: int, fits: Callable[[int], bool]) -> int:
    """The largest batch ``<= predicted`` that ``fits`` accepts, assuming that a batch
    fits when a larger one does: halving from ``predicted``, then bisection between the
    last refused and the first accepted size. 0 when not even one member fits."""
    if predicted < 1:
        return 0
    refused, batch = None, predicted
    while batch >= 1 and not fits(batch):
        refused, batch = batch, batch // 2
    if batch < 1:
        return 0
    if refused is None:
        return batch
    low, high = batch, refused  # low fits, high does not
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return low


def available_host_bytes() -> int | None:
    """The memory a new allocation may take: the kernel's ``MemAvailable``, within the
    limit of this process's control group where it has one (a container, a batch job);
    ``None`` where ``/proc/meminfo`` does not exist."""
    available = None
    try:
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        return None
    limit = _cgroup_room()
    if available is not None and limit is not None:
        return min(available, limit)
    return available


def _cgroup_room() -> int | None:
    """``memory.max - memory.current`` of the cgroup v2 this process is in (``None``:
    no limit, or no cgroup v2; ``/proc/self/cgroup``'s ``0::<path>`` names it)."""
    try:
        lines = _SELF_CGROUP.read_text().splitlines()
        relative = next(line[3:] for line in lines if line.startswith("0::"))
        group = _CGROUP / relative.lstrip("/")
        maximum = (group / "memory.max").read_text().strip()
        current = int((group / "memory.current").read_text().strip())
    except (OSError, ValueError, StopIteration):
        return None
    if maximum == "max":
        return None
    try:
        return max(0, int(maximum) - current)
    except ValueError:
        return None


def refuse(plan: BatchPlan, where: str) -> None:
    """Raise the error of a plan that fits no member."""
    raise InvalidValueError(plan.refusal(where))
