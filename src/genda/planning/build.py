"""The real objects of a planned run, on the ``meta`` device (shapes, no data) or for real.

:func:`planned_denoiser` builds the denoiser of a :class:`~genda.planning.spec.RunSpec`
with :func:`genda.models.checkpoint_build.build_denoiser`, the constructor that
restores checkpoints, so the network traced is the network a checkpoint of
these settings holds. On ``meta`` nothing is allocated: every tensor factory
is sent to the meta device while the modules are built (:class:`MetaFactories`),
except tensors made from Python data (``torch.tensor``, ``torch.as_tensor``:
a few signs and index tables whose values the constructors check), which are
moved after. The spherical-harmonic tables of a whitened prior are built as
torch-harmonics modules whose tables have the shapes torch-harmonics gives
them but no values (:func:`harmonic_tables_on_meta`): torch-harmonics fills
them by a Python loop over every ``(l, m)``, minutes and tens of GB in float64
at 0.25 degrees, while their cost depends on their shapes only.

:func:`planned_likelihood` is a window of ``M`` point observations (each a
bilinear stencil on two levels of one variable, as a radar or lidar point):
the guidance's operator, whose size only the number of observations sets.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import partial
from typing import Any

import numpy as np
import torch
import torch_harmonics as th
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode, unset_fake_temporarily
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors

from genda.assimilation.guidance import GaussianLikelihood, guided_denoiser
from genda.assimilation.state_operator import StateOperator
from genda.grid import Grid
from genda.models import whitening
from genda.models.checkpoint_build import build_denoiser
from genda.models.coordinates import coupling_for
from genda.models.diffusion import EDMDenoiser
from genda.models.sampling import Denoiser
from genda.models.strategies import get_strategy
from genda.models.whitening_harmonics import HarmonicTransforms
from genda.normalization import Normalization
from genda.observations.operators import ObservationOperator
from genda.planning.spec import RunSpec

__all__ = [
    "STENCIL",
    "MetaFactories",
    "harmonic_table_shapes",
    "harmonic_tables_on_meta",
    "planned_denoiser",
    "planned_grid",
    "planned_guidance",
    "planned_likelihood",
    "to_fake",
]

STENCIL = 8
"""Grid values per synthetic observation: bilinear in the horizontal (4) on two levels."""

_PYTHON_DATA = {torch.tensor, torch.as_tensor, torch.asarray}


class MetaFactories(TorchFunctionMode):
    """Send tensor factories without an explicit device to ``meta`` (as
    ``torch.device("meta")`` does), except those made from Python data, whose
    values constructors check (they are moved after)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = dict(kwargs or {})
        if (
            func in _device_constructors()
            and func not in _PYTHON_DATA
            and kwargs.get("device") is None
        ):
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def to_fake(denoiser: EDMDenoiser, mode: FakeTensorMode) -> EDMDenoiser:
    """A denoiser built on ``meta`` as fake CPU tensors of ``mode`` (in place).

    Fake tensors carry shapes like meta tensors but report the device they
    stand for, which ``torch.autocast`` (in the denoiser and the whitening)
    needs: it knows no ``meta`` device. The whitening's float64 tables go too.
    """

    def fake(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.device.type != "meta":
            return tensor
        return FakeTensor(mode, tensor, torch.device("cpu"))

    denoiser._apply(fake)
    master = getattr(denoiser.coordinates, "_master", None)
    for transform in master or ():
        transform._apply(fake)
    return denoiser


def planned_grid(spec: RunSpec) -> Grid:
    """The Gauss-Legendre grid of ``spec`` with evenly spaced levels from 80 to 115 km."""
    return Grid.gaussian(spec.nlat, spec.nlon, spec.levels, spec.variable_names)


def harmonic_table_shapes(nlat: int, nlon: int, truncation: int) -> dict[str, tuple[int, ...]]:
    """The shapes of torch-harmonics' tables for ``lmax = mmax = truncation`` (0.8).

    ``RealSHT.weights`` and ``InverseRealSHT.pct`` ``(mmax, lmax, nlat)``; the
    vector transforms' ``weights`` and ``dpct`` ``(2, mmax, lmax, nlat)``.
    """
    scalar = (truncation, truncation, nlat)
    return {
        "RealSHT.weights": scalar,
        "InverseRealSHT.pct": scalar,
        "RealVectorSHT.weights": (2, *scalar),
        "InverseRealVectorSHT.dpct": (2, *scalar),
    }


def harmonic_tables_on_meta(nlat: int, nlon: int, options: dict[str, Any]) -> HarmonicTransforms:
    """torch-harmonics' four transforms of a grid with float64 tables on ``meta``.

    The stand-in for :func:`genda.models.whitening_harmonics.float64_transforms`:
    the modules are torch-harmonics' own classes, so their ``forward`` is the
    one traced, but ``__init__`` (which computes the tables) is skipped and the
    tables are empty tensors of :func:`harmonic_table_shapes` (the tests check
    them against torch-harmonics' own at small sizes).
    """
    t = int(options["lmax"])
    shapes = harmonic_table_shapes(nlat, nlon, t)
    modules = []
    for kind, (name, shape) in zip(
        whitening.HarmonicTransforms._fields, shapes.items(), strict=True
    ):
        cls = {"sht": th.RealSHT, "isht": th.InverseRealSHT}.get(kind) or {
            "vsht": th.RealVectorSHT,
            "ivsht": th.InverseRealVectorSHT,
        }[kind]
        module = cls.__new__(cls)
        nn.Module.__init__(module)
        module.nlat, module.nlon, module.grid = nlat, nlon, options["grid"]
        module.norm, module.csphase = "ortho", options["csphase"]
        module.lmax, module.mmax = t, int(options["mmax"])
        module.register_buffer(
            name.split(".")[1], torch.empty(shape, dtype=torch.float64, device="meta"), False
        )
        modules.append(module)
    return HarmonicTransforms(*modules)


@contextlib.contextmanager
def _harmonic_tables_on_meta() -> Iterator[None]:
    """Within: the whitening builds its harmonic tables with :func:`harmonic_tables_on_meta`.

    :class:`~genda.models.whitening.SpectralWhitening` calls the module-level
    ``float64_transforms`` in its constructor; this swaps that name for the
    duration and restores it after, also on errors.
    """
    original = whitening.float64_transforms
    whitening.float64_transforms = harmonic_tables_on_meta  # type: ignore[assignment]
    try:
        yield
    finally:
        whitening.float64_transforms = original  # type: ignore[assignment]


def _unit_normalization(grid: Grid) -> Normalization:
    shape = (len(grid.variables), grid.nlevels)
    return Normalization(grid.variables, np.zeros(shape), np.ones(shape))


def _full_architecture(spec: RunSpec, grid: Grid) -> dict[str, Any]:
    strategy = get_strategy(spec.strategy, **_strategy_options(spec))
    in_channels, out_channels, cond_dim = strategy.network_channels(grid)
    return {
        **spec.architecture(),
        "in_channels": in_channels,
        "out_channels": out_channels,
        "cond_dim": cond_dim,
        "pole_sign": strategy.pole_sign(grid),
    }


def _strategy_options(spec: RunSpec) -> dict[str, Any]:
    if spec.strategy == "layer2d":
        return {"window": spec.window, "layers_per_batch": spec.layers_per_batch}
    return {}


def planned_denoiser(spec: RunSpec, device: torch.device | str = "meta") -> EDMDenoiser:
    """The (untrained) denoiser of ``spec`` on ``device``, in eval mode with frozen weights.

    ``meta``: built without allocating (module docstring); else built on the
    CPU as a checkpoint is restored, then moved.
    """
    grid = planned_grid(spec)
    strategy = get_strategy(spec.strategy, **_strategy_options(spec))
    coordinates = None
    if spec.coordinates == "whitened":
        coordinates = {
            "kind": whitening.WHITENING_KIND,
            "truncation": spec.truncation,
            "coupling": coupling_for(spec.strategy),
            "tides": spec.tides,
        }
    arguments = (strategy, grid, _full_architecture(spec, grid))
    options = {"coordinates": coordinates, "normalization": _unit_normalization(grid)}
    if str(device) == "meta":
        with MetaFactories(), _harmonic_tables_on_meta():
            denoiser = build_denoiser(*arguments, **options)
    else:
        denoiser = build_denoiser(*arguments, **options)
    denoiser = denoiser.to(device).eval()
    denoiser.requires_grad_(False)
    return denoiser


def planned_likelihood(
    spec: RunSpec, denoiser: EDMDenoiser, device: torch.device | str = "cpu"
) -> GaussianLikelihood:
    """``spec.observations`` point observations (:data:`STENCIL` grid values each) on the
    denoiser's states: through ``A = H U`` for a whitened prior, as
    :func:`genda.assimilation.posterior.likelihood_for` makes it.

    The observed values and errors are real CPU tensors also under a fake
    mode, since the likelihood checks their values.
    """
    grid = planned_grid(spec)
    m = spec.observations
    size = int(np.prod(grid.shape))
    # spread over the field; the values do not change the cost, the shapes do
    flat = (np.arange(m * STENCIL, dtype=np.int64) * 7919) % size
    fields = ObservationOperator(
        torch.as_tensor(flat.reshape(m, STENCIL)).clone().to(device),
        torch.as_tensor(np.full((m, STENCIL), 1.0 / STENCIL, np.float32)).clone().to(device),
        torch.as_tensor(np.zeros(m, np.float32)).clone().to(device),
        grid.shape,
    )
    operator: ObservationOperator | StateOperator = fields
    if denoiser.coordinates is not None:
        decode = partial(denoiser.decode, hours=0.0 if denoiser.tides else None)
        operator = StateOperator(fields, decode, denoiser.state_shape(grid.shape))
    with unset_fake_temporarily():  # real values to check, also inside a fake mode
        y, sigma = torch.zeros(m), torch.ones(m)
        likelihood = GaussianLikelihood(operator, y, sigma)
    if torch.device(device).type != "cpu":  # checked on the CPU, then moved
        object.__setattr__(likelihood, "y", likelihood.y.to(device))
        object.__setattr__(likelihood, "sigma", likelihood.sigma.to(device))
    return likelihood


def planned_guidance(
    spec: RunSpec, denoiser: EDMDenoiser, device: torch.device | str = "cpu"
) -> Denoiser:
    """The denoiser a window samples with: the prior's, or guided as ``spec.guidance`` says."""
    if spec.guidance == "none":
        return denoiser
    likelihood = planned_likelihood(spec, denoiser, device)
    if spec.guidance == "dps":
        return guided_denoiser(denoiser, likelihood, "dps")
    covariance = "prior" if spec.guidance == "mmps-prior" else "jacobian"
    options: dict[str, Any] = {"covariance": covariance}
    if covariance == "jacobian":
        options["iterations"] = spec.iterations
    return guided_denoiser(denoiser, likelihood, "mmps", **options)
