"""Where fine-tuning starts: a PTQ result, in memory or as a folder written by ``ptq``.

The simulated model of the PTQ is the starting point as it is: its weights (AdaRounded ones
included), biases (bias-corrected ones included), equalized layers and encodings. The checks
here make sure it belongs to the float model given as the teacher and that its encodings file
lists what its quantizers hold, so fine-tuning does not silently start from something else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.fx

from ..conversion_record import copy_converted, find_conversion_record
from ..errors import Onnx2FxError, QuantizationError
from .config import QuantConfig
from .encodings import encoded_names
from .fake_quant import FakeQuantize
from .grid import Encoding
from .ptq import PTQResult


def load_ptq_folder(folder: Path, loader: Any) -> dict[str, Any]:
    """``model_ptq.pt``, ``encodings.json`` and the settings from ``report.json`` of a PTQ folder."""
    if not folder.is_dir():
        raise QuantizationError(f"--from folder {folder} does not exist")
    missing = [n for n in ("model_ptq.pt", "encodings.json") if not (folder / n).is_file()]
    if missing:
        raise QuantizationError(f"--from folder {folder} holds no PTQ results (missing {', '.join(missing)}): "
                                "run `onnx2fx ptq` into it first")
    try:
        sim = loader(folder / "model_ptq.pt")
    except (Onnx2FxError, OSError, RuntimeError, EOFError, ValueError) as exc:
        raise QuantizationError(f"{folder / 'model_ptq.pt'} cannot be loaded: {exc}") from None
    if not isinstance(sim, torch.fx.GraphModule) or not any(isinstance(m, FakeQuantize) for m in sim.modules()):
        raise QuantizationError(f"{folder / 'model_ptq.pt'} is not a quantized model written by `onnx2fx ptq`")
    try:
        document = json.loads((folder / "encodings.json").read_text())
        names = encoded_names(document)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise QuantizationError(f"{folder / 'encodings.json'} is not an encodings file: {exc}") from None
    ptq_report: dict[str, Any] | None = None
    if (folder / "report.json").is_file():
        try:
            ptq_report = json.loads((folder / "report.json").read_text())["quantization"]["ptq"]
        except (OSError, ValueError, KeyError, TypeError):
            ptq_report = None
    settings = dict((ptq_report or {}).get("settings") or {})
    version = settings.pop("encoding_version", None) or document.get("version", "1.0.0")
    config = QuantConfig.from_dict(settings, source=str(folder / "report.json")) if settings else QuantConfig()
    if not names:
        raise QuantizationError(f"{folder / 'encodings.json'} lists no encodings")
    return {"sim": sim, "document": document, "config": config, "encoding_version": version,
            "ptq_report": ptq_report or {"status": "ok", "from": str(folder)}, "where": str(folder)}


def from_result(result: PTQResult) -> dict[str, Any]:
    """Start from an in-memory PTQ result (its simulated model is copied, not trained in place)."""
    from ..fx_tracer import restore_origins

    sim = copy_converted(result.sim_model)
    restore_origins(sim)
    return {"sim": sim, "document": result.encodings(), "config": result.config,
            "encoding_version": result.encoding_version, "ptq_report": result.report, "where": "the PTQ result"}


def check_same_model(teacher: torch.fx.GraphModule, sim: torch.fx.GraphModule) -> None:
    if _initializers_by_parameter(teacher) != _initializers_by_parameter(sim):
        raise QuantizationError("the PTQ model in --from was not made from this float model (their parameters and "
                                "ONNX initializers differ)")


def _initializers_by_parameter(gm: torch.fx.GraphModule) -> dict[str, str | None]:
    record = find_conversion_record(gm)
    return {name: origin.initializer for name, origin in (record.parameters if record is not None else {}).items()}


def check_encodings(document: Mapping[str, Any], current: tuple[dict[str, Encoding], ...], where: str) -> None:
    """The encodings the model's quantizers hold must be the ones its ``encodings.json`` lists."""
    activations, weights, biases, _ = current
    ours = {**activations, **weights, **biases}
    listed = encoded_names(document)
    missing = [n for n in listed if n not in ours]
    extra = [n for n in ours if n not in set(listed)]
    if missing or extra:
        raise QuantizationError(f"the encodings of {where} do not match its model: "
                                f"{len(missing)} name(s) the model does not quantize {missing[:3]}, "
                                f"{len(extra)} quantized name(s) it does not list {extra[:3]}")
    scales = _document_scales(document)
    for name, scale in scales.items():
        if not np.allclose(np.asarray(scale, dtype=np.float64), ours[name].scale.astype(np.float64), rtol=1e-6):
            raise QuantizationError(f"the encodings of {where} do not match its model: the scale of {name!r} differs")


def _document_scales(document: Mapping[str, Any]) -> dict[str, list[float]]:
    if document.get("version") == "2.0.0":
        return {e["name"]: list(np.atleast_1d(e["y_scale"])) for e in document["encodings"]}
    scales: dict[str, list[float]] = {}
    for section in ("activation_encodings", "param_encodings"):
        value = document.get(section, {})
        if isinstance(value, Mapping):
            scales.update({n: [e["scale"] for e in entries] for n, entries in value.items()})
        else:
            scales.update({e["name"]: list(e["scale"]) for e in value})
    return scales
