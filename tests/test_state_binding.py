"""Binding weights to a module built on the meta device, as load_state_dict(assign=True) would."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from onnx2fx.errors import ConversionError
from onnx2fx.state_binding import bind_state


def _meta_model() -> nn.Module:
    with torch.device("meta"):
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.Linear(4, 2)))
    model[2][0].weight.requires_grad_(False)
    return model


def _state() -> dict[str, torch.Tensor]:
    reference = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.Linear(4, 2)))
    return {k: v.detach().clone() for k, v in reference.state_dict().items()}


def test_tensors_become_parameters_and_buffers_uncopied() -> None:
    model, state = _meta_model(), _state()
    bind_state(model, state)
    assert isinstance(model[0].weight, nn.Parameter) and model[0].weight.requires_grad
    assert model[0].weight.data_ptr() == state["0.weight"].data_ptr()
    assert isinstance(model[2][0].weight, nn.Parameter) and not model[2][0].weight.requires_grad
    assert not isinstance(model[1].running_mean, nn.Parameter)
    assert model[1].running_mean.data_ptr() == state["1.running_mean"].data_ptr()
    assert model[1].num_batches_tracked.dtype == torch.int64
    expected = _meta_model()
    expected.load_state_dict(state, assign=True, strict=True)
    ours, theirs = model.state_dict(keep_vars=True), expected.state_dict(keep_vars=True)
    assert list(ours) == list(theirs)
    assert all(type(ours[k]) is type(theirs[k]) and ours[k].requires_grad == theirs[k].requires_grad
               and ours[k].data_ptr() == theirs[k].data_ptr() for k in ours)


def test_missing_and_unexpected_keys_are_named() -> None:
    state = _state()
    del state["1.running_var"]
    state["extra"] = torch.zeros(1)
    with pytest.raises(ConversionError, match=r"^generated module does not accept the model's weights: "
                       r"missing \['1.running_var'\], unexpected \['extra'\]$"):
        bind_state(_meta_model(), state)


def test_a_wrong_shape_is_named() -> None:
    state = _state()
    state["0.bias"] = torch.zeros(5)
    with pytest.raises(ConversionError, match=r"^generated module does not accept the model's weights: "
                       r"0.bias has shape \(5,\), the module declares \(4,\)$"):
        bind_state(_meta_model(), state)
