"""Sampler, guidance and covariance names are spelled once; the cycle config accepts exactly them.

The sampling defaults are written once too, in ``PosteriorSettings``: ``genda
assimilate``'s options and the cycle configuration's keys start from them.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import get_args

import typer.main

from genda.assimilation.guidance import GUIDANCE_METHODS, TWEEDIE_COVARIANCES, GuidanceMethod
from genda.assimilation.posterior import PosteriorSettings
from genda.cli import app
from genda.models.sampling import METHODS, SamplingMethod
from genda.orchestration.config import CycleConfig, resolve_batch_size


def command_options(name: str = "assimilate") -> dict[str, typer.core.TyperOption]:
    """A ``genda`` command's options by parameter name."""
    command = typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]
    return {param.name: param for param in command.params}


def assimilate_options() -> dict[str, typer.core.TyperOption]:
    """``genda assimilate``'s options by parameter name."""
    return command_options("assimilate")


def test_the_cycle_config_accepts_the_library_names() -> None:
    fields = CycleConfig.model_fields
    assert get_args(fields["sampler"].annotation) == METHODS == get_args(SamplingMethod)
    assert get_args(fields["method"].annotation) == GUIDANCE_METHODS == get_args(GuidanceMethod)
    assert get_args(fields["covariance"].annotation) == TWEEDIE_COVARIANCES


def test_the_cli_and_cycle_defaults_are_the_posterior_settings() -> None:
    defaults = asdict(PosteriorSettings())
    options, fields = assimilate_options(), CycleConfig.model_fields
    # every setting is an option and a key, but the first noise level
    assert set(defaults) - set(options) == set(defaults) - set(fields) == {"sigma_max"}
    for name, default in defaults.items():
        if name == "sigma_max":
            continue
        option = options[name].default
        if name == "batch_size":  # the option is text: a number or 'auto'
            option = resolve_batch_size(int(option))[0]
        assert option == default, f"--{name.replace('_', '-')}: {option!r} != {default!r}"
        assert fields[name].default == default, (
            f"cycle key {name}: {fields[name].default!r} != {default!r}"
        )


def test_the_fidelity_sampling_defaults_are_the_posterior_settings() -> None:
    defaults, options = PosteriorSettings(), command_options("fidelity")
    for name in ("steps", "sampler", "batch_size"):
        assert options[name].default == getattr(defaults, name), f"fidelity --{name}"
    assert {"--sampler", "--method"} <= set(options["sampler"].opts)


def test_the_assimilate_help_names_every_choice() -> None:
    options = assimilate_options()
    for name, choices in (
        ("method", GUIDANCE_METHODS),
        ("sampler", METHODS),
        ("covariance", TWEEDIE_COVARIANCES),
    ):
        missing = [choice for choice in choices if choice not in (options[name].help or "")]
        assert not missing, f"--{name}'s help leaves out {missing}"
