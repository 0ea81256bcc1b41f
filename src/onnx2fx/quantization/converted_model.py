"""The converted model a quantization stage starts from: the GraphModule, its source ONNX file and
the report of the folder it was converted into.

PTQ and QFT accept the same inputs (a GraphModule converted by onnx2fx or its ``model_full.pt``,
and optionally the source ONNX file where the recorded one moved) and refuse the same wrong ones,
with the same messages.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.fx

from ..conversion_record import conversion_record
from ..errors import Onnx2FxError, QuantizationError
from .fake_quant import FakeQuantize


def load_converted_model(model: Any) -> tuple[torch.fx.GraphModule, Path | None]:
    """The float GraphModule from ``model`` (a GraphModule or a ``model_full.pt`` path) with its
    ONNX origins in ``node.meta``, and the path it was loaded from (None for a module)."""
    from ..fx_tracer import restore_origins
    from ..validator import load_torch_model

    path = None
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise QuantizationError(f"model {path} does not exist")
        try:
            model = load_torch_model(path)
        except (Onnx2FxError, OSError, RuntimeError, EOFError, ValueError) as exc:
            raise QuantizationError(f"{path} cannot be loaded as a converted model: {exc}") from None
    if not isinstance(model, torch.fx.GraphModule):
        raise QuantizationError(f"expected a torch.fx.GraphModule converted by onnx2fx, got {type(model).__name__}")
    if not any("onnx_outputs" in n.meta for n in model.graph.nodes):
        restore_origins(model)
    if not any("onnx_outputs" in n.meta for n in model.graph.nodes):
        raise QuantizationError("the GraphModule carries no ONNX origins (node.meta['onnx_outputs']): convert the "
                                "model with onnx2fx and load model_full.pt with onnx2fx.validator.load_torch_model")
    conversion_record(model)  # placement, weights and the export all need it
    if any(isinstance(m, FakeQuantize) for m in model.modules()):
        raise QuantizationError("the model is already quantized (it contains fake-quant modules)")
    return model, path


def source_onnx(gm: torch.fx.GraphModule, onnx_path: str | os.PathLike[str] | None) -> Path:
    """The source ONNX file: ``onnx_path`` when given, else the one recorded at conversion."""
    if onnx_path is not None:
        path = Path(onnx_path)
        if not path.is_file():
            raise QuantizationError(f"source ONNX model {path} does not exist")
        return path.resolve()
    recorded = conversion_record(gm).source
    if not recorded:
        raise QuantizationError("the model does not record its source ONNX file (it was converted from an "
                                "in-memory model): pass it with --onnx / onnx_path")
    path = Path(recorded)
    if not path.is_file():
        raise QuantizationError(f"the model's source ONNX {path} (recorded at conversion) does not exist: "
                                "pass its new location with --onnx / onnx_path")
    return path


def base_report(model_path: Path | None, source: Path) -> dict[str, Any]:
    """The model's own report.json when it sits beside model_full.pt, else a fresh one (with the
    conversion facts of conversion.json when that is there): the report a stage adds its section to."""
    from ..reports import new_report

    if model_path is not None and (model_path.parent / "report.json").is_file():
        try:
            existing = json.loads((model_path.parent / "report.json").read_text())
            if isinstance(existing, dict) and "quantization" in existing:
                return existing
        except (OSError, json.JSONDecodeError):
            pass
    report = new_report(source)
    conversion = {"status": "ok", "error": None, "seconds": 0.0}
    record = model_path.parent / "conversion.json" if model_path is not None else None
    if record is not None and record.is_file():
        try:
            info = json.loads(record.read_text())
            conversion.update(seconds=float(info.get("conversion_seconds", 0.0)),
                              node_count=int(info.get("node_count", 0)), op_counts=info.get("op_counts", {}))
            report["model"].update(opset=info.get("opset_imports", {}).get(""), ir_version=info.get("ir_version"),
                                   producer=info.get("producer") or None)
        except (OSError, ValueError, TypeError, AttributeError):
            pass
    report["conversion"] = conversion
    return report
