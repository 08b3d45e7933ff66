"""The optimizer's state in a checkpoint: tensors named by parameter, for resuming.

``optimizer.safetensors`` holds AdamW's per-parameter state as
``"<parameter name>.<key>"``; hyper-parameters come from the training config.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from genda.errors import InvalidValueError
from genda.models.checkpoint_format import OPTIMIZER_FILE, CheckpointError

__all__ = ["load_optimizer_state", "optimizer_tensors"]


def optimizer_tensors(
    optimizer: torch.optim.Optimizer, model: nn.Module
) -> dict[str, torch.Tensor]:
    """The optimizer's per-parameter state as ``{"<parameter name>.<key>": tensor}`` on the CPU.

    Parameters are named by ``model.named_parameters()``; hyper-parameters
    (learning rate, betas) are not stored: they come from the training config.

    Raises:
        TypeError: a state entry is not a tensor (the format holds tensors only).
    """
    names = {id(p): name for name, p in model.named_parameters()}
    out: dict[str, torch.Tensor] = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            if id(param) not in names:
                raise InvalidValueError("the optimizer holds a parameter that is not in the model")
            for key, value in optimizer.state.get(param, {}).items():
                if not isinstance(value, torch.Tensor):
                    raise TypeError(
                        f"optimizer state {key!r} of {names[id(param)]} is a {type(value).__name__}, "
                        "not a tensor"
                    )
                out[f"{names[id(param)]}.{key}"] = value.detach().to("cpu").clone().contiguous()
    return out


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, model: nn.Module, tensors: Mapping[str, torch.Tensor]
) -> None:
    """Restore the state written by :func:`optimizer_tensors` into a fresh ``optimizer``.

    Raises:
        CheckpointError: a tensor names no parameter of ``model``, or has the wrong shape.
    """
    params = dict(model.named_parameters())
    index = {
        id(p): i
        for i, p in enumerate(p for group in optimizer.param_groups for p in group["params"])
    }
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        name, _, entry = key.rpartition(".")
        if name not in params or id(params[name]) not in index:
            raise CheckpointError(
                f"{OPTIMIZER_FILE}: tensor {key!r} names no parameter of the model"
            )
        if entry != "step" and value.shape != params[name].shape:
            raise CheckpointError(
                f"{OPTIMIZER_FILE}: {key!r} has shape {tuple(value.shape)}, "
                f"the parameter has {tuple(params[name].shape)}"
            )
        state.setdefault(index[id(params[name])], {})[entry] = value
    current = optimizer.state_dict()
    optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})
