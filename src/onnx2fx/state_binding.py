"""Binding a state dict's tensors to a module built on the meta device, in one pass.

``nn.Module.load_state_dict`` filters the whole state dict once per submodule (by key prefix), so
binding the weights of a model with a thousand layers cost a million string comparisons, the
largest single step of converting such a model. This binds each tensor to its owner directly,
with ``load_state_dict(assign=True, strict=True)``'s checks and results: every key present and no
other, each shape as declared, parameters kept parameters (with their ``requires_grad``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .errors import ConversionError


def bind_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Make ``state``'s tensors the parameters and buffers of ``model`` (no copies)."""
    declared = model.state_dict(keep_vars=True)
    missing = sorted(declared.keys() - state.keys())
    unexpected = sorted(state.keys() - declared.keys())
    if missing or unexpected:
        raise ConversionError(f"generated module does not accept the model's weights: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
    owners = dict(model.named_modules(remove_duplicate=False))
    for key, tensor in state.items():
        current = declared[key]
        if tuple(tensor.shape) != tuple(current.shape):
            raise ConversionError(f"generated module does not accept the model's weights: {key} has shape "
                                  f"{tuple(tensor.shape)}, the module declares {tuple(current.shape)}")
        owner_name, _, name = key.rpartition(".")
        owner = owners[owner_name]
        if name in owner._parameters:
            owner._parameters[name] = nn.Parameter(tensor, requires_grad=current.requires_grad)
        else:
            owner._buffers[name] = tensor
