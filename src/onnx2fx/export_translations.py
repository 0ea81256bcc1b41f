"""ONNX translations of onnx2fx's registered operators, for the dynamo exporter (``onnx2fx export``).

Some lowerings run as registered operators (``torch.ops.onnx2fx``) so that ``torch.export`` records
one node instead of tracing their loops. The exporter has no ONNX form for them; the table built
here gives one: onnxruntime's DynamicQuantizeLSTM is written back as the ``com.microsoft`` node it
was converted from, which onnxruntime runs with the kernel that the lowering reproduces bit for bit,
at any sequence length.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .export_lstm import translate_onnx_lstm_layer
from .ops.ort_lstm import ORT_QUANTIZED_LSTM_PREFIX

MS_DOMAIN = "com.microsoft"


def _dynamic_quantize_lstm_schema() -> Any:
    """onnxruntime's DynamicQuantizeLSTM schema (contrib ops are not in onnx's registry)."""
    from onnx import defs

    optional = defs.OpSchema.FormalParameterOption.Optional
    attribute = defs.OpSchema.AttrType

    def inputs(*names: str) -> list[Any]:
        return [defs.OpSchema.FormalParameter(name.rstrip("?"), kind, param_option=optional if name.endswith("?")
                                              else defs.OpSchema.FormalParameterOption.Single)
                for name, kind in (n.split(":") for n in names)]

    return defs.OpSchema(
        "DynamicQuantizeLSTM", MS_DOMAIN, 1,
        inputs=inputs("X:T", "W:T2", "R:T2", "B?:T", "sequence_lens?:T1", "initial_h?:T", "initial_c?:T", "P?:T",
                      "W_scale:T", "W_zero_point:T2", "R_scale:T", "R_zero_point:T2"),
        outputs=inputs("Y?:T", "Y_h?:T", "Y_c?:T"),
        type_constraints=[("T", ["tensor(float)"], ""), ("T1", ["tensor(int32)"], ""),
                          ("T2", ["tensor(uint8)", "tensor(int8)"], "")],
        attributes=[defs.OpSchema.Attribute(name, kind, "", required=False) for name, kind in (
            ("activation_alpha", attribute.FLOATS), ("activation_beta", attribute.FLOATS),
            ("activations", attribute.STRINGS), ("clip", attribute.FLOAT), ("direction", attribute.STRING),
            ("hidden_size", attribute.INT), ("input_forget", attribute.INT))])


def _floats(values: list[float], what: str) -> list[float] | None:
    """An activation_alpha/beta list: all given, or none (NaN marks a missing one)."""
    missing = [v != v for v in values]
    if all(missing):
        return None
    if any(missing):
        raise ValueError(f"DynamicQuantizeLSTM with {what} given for some activations only cannot be written back")
    return list(values)


def _translate_dynamic_quantize_lstm(x: Any, w: Any, r: Any, b: Any, h0: Any, c0: Any, p: Any, directions: str,
                                     activations: str, alphas: list[float], betas: list[float], clip: float | None,
                                     input_forget: bool, hidden_size: int, w_scale: Any, w_zero_point: Any,
                                     r_scale: Any, r_zero_point: Any) -> Any:
    from onnxscript import values

    node = values.Op(values.Opset(MS_DOMAIN, 1), "DynamicQuantizeLSTM", _dynamic_quantize_lstm_schema())
    names = directions.split(",")
    attributes: dict[str, Any] = {
        "activations": activations.split(","), "hidden_size": hidden_size, "input_forget": int(input_forget),
        "direction": "bidirectional" if len(names) == 2 else names[0]}
    for key, given in (("activation_alpha", _floats(alphas, "alphas")), ("activation_beta", _floats(betas, "betas")),
                       ("clip", clip)):
        if given is not None:
            attributes[key] = given
    return node(x, w, r, b, None, h0, c0, p, w_scale, w_zero_point, r_scale, r_zero_point, **attributes)


def translation_table() -> dict[Callable[..., Any], Callable[..., Any]]:
    """The exporter's ``custom_translation_table`` for every such operator registered in this
    process (the converted modules register theirs when their code is loaded)."""
    table: dict[Callable[..., Any], Callable[..., Any]] = {
        torch.ops.onnx2fx.onnx_lstm_layer.default: translate_onnx_lstm_layer}
    for name in dir(torch.ops.onnx2fx):
        if name.startswith(ORT_QUANTIZED_LSTM_PREFIX):
            table[getattr(torch.ops.onnx2fx, name).default] = _translate_dynamic_quantize_lstm
    return table
