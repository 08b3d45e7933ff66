"""Diffusion models of genda's prior: EDM preconditioning, training loss, samplers.

This layer knows nothing of Ray, Prefect or Zarr (ruff ``TID251``).
"""

from genda.models.diffusion import (
    Backbone,
    EDMDenoiser,
    EDMPreconditioning,
    edm_loss,
    edm_sigma_sampler,
    karras_sigmas,
)
from genda.models.sampling import (
    Denoiser,
    SamplingMethod,
    member_generator,
    member_noise,
    member_seed,
    sample,
)

__all__ = [
    "Backbone",
    "Denoiser",
    "EDMDenoiser",
    "EDMPreconditioning",
    "SamplingMethod",
    "edm_loss",
    "edm_sigma_sampler",
    "karras_sigmas",
    "member_generator",
    "member_noise",
    "member_seed",
    "sample",
]
