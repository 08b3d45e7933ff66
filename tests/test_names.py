"""Sampler, guidance and covariance names are spelled once; the cycle config accepts exactly them."""

from __future__ import annotations

from typing import get_args

from genda.assimilation.guidance import GUIDANCE_METHODS, TWEEDIE_COVARIANCES, GuidanceMethod
from genda.models.sampling import METHODS, SamplingMethod
from genda.orchestration.config import CycleConfig


def test_the_cycle_config_accepts_the_library_names() -> None:
    fields = CycleConfig.model_fields
    assert get_args(fields["sampler"].annotation) == METHODS == get_args(SamplingMethod)
    assert get_args(fields["method"].annotation) == GUIDANCE_METHODS == get_args(GuidanceMethod)
    assert get_args(fields["covariance"].annotation) == TWEEDIE_COVARIANCES
