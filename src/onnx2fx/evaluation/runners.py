"""Model forms and how each is run: ONNX files in onnxruntime, converted or quantized GraphModules in torch.

:func:`model_forms` turns what the user points at into the forms to evaluate:

- ``x.onnx`` (float, QDQ or QOperator): onnxruntime;
- ``model_full.pt`` or any pickled GraphModule ``.pt``: torch;
- a converted folder (``model_full.pt``): torch;
- a PTQ or QFT output folder: its torch simulation (``model_ptq.pt`` / ``model_qft.pt``) and every
  ONNX file beside it (the QDQ ``model_ptq.onnx`` / ``model_qft.onnx`` and any other integer export).

Every runner takes and returns numpy arrays keyed by the ONNX input and output names, so the
postprocessing cannot tell the forms apart. A torch form learns those names from an ONNX file of
the same model: the one beside it, else the source recorded at conversion.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EvaluationError

TORCH_FILES = ("model_full.pt", "model_ptq.pt", "model_qft.pt")


@dataclass(frozen=True)
class ModelForm:
    """One model to evaluate: a label for folders and comparisons, its runtime and its file."""

    label: str
    runtime: str  # "onnxruntime" or "torch"
    path: Path
    names_from: Path | None = None  # an ONNX file giving a torch form its input and output names
    # The path records name when the file is read from elsewhere: a batch evaluates a model folder
    # while it is still in its staging folder, and records where the folder is moved afterwards.
    recorded_path: str | None = None

    @property
    def recorded(self) -> str:
        """The model path that evaluation.json, comparison.json and reports record."""
        return self.recorded_path or str(self.path)

    def open(self) -> Runner:
        return OnnxRunner(self.path) if self.runtime == "onnxruntime" else TorchRunner(self.path, self.names_from)

    def notes(self) -> list[str]:
        """What a reader of this form's metrics should know about how it ran here (evaluation.json,
        comparison.json): onnxruntime clipping the sums of this file's int8 weights on this CPU."""
        if self.runtime != "onnxruntime":
            return []
        from ..quantization.ort_cpu import u8s8_saturates

        return [INT8_WEIGHTS_NOTE] if u8s8_saturates() and reads_int8_weights(self.path) else []


# ONNX ops whose inputs at these positions are weights that onnxruntime multiplies in its integer
# kernels (a DequantizeLinear's weight reaches them when onnxruntime fuses DQ -> Conv/MatMul -> Q)
_INTEGER_WEIGHT_INPUTS = {"DequantizeLinear": (0,), "QLinearConv": (3,), "QLinearMatMul": (3,), "QGemm": (3,),
                          "MatMulInteger": (1,), "ConvInteger": (1,), "MatMulIntegerToFloat": (1,),
                          "DynamicQuantizeMatMul": (1,), "DynamicQuantizeLSTM": (1, 2), "QAttention": (1,)}

INT8_WEIGHTS_NOTE = ("onnxruntime on this CPU (x86-64 without VNNI) adds uint8 x int8 products in pairs clipped to "
                     "16 bits, and this file has int8 weights: its metrics can fall short of the model's definition "
                     "(onnx2fx's QOperator and fixed-point files store uint8 weights, which it computes exactly)")


def reads_int8_weights(path: Path) -> bool:
    """Whether the ONNX file at ``path`` has int8 initializers that onnxruntime's integer products read
    as weights (the native reader maps the file; no tensor data is copied)."""
    import onnx

    from .. import _core

    try:
        graph = _core.load_model(path, run_passes=False).graph
    except Exception:  # an unreadable file fails with onnxruntime's own message when the form is opened
        return False
    int8 = {t.name for t in graph.initializers if t.data_type == onnx.TensorProto.INT8}
    return any(position < len(node.inputs) and node.inputs[position] in int8
               for node in graph.nodes for position in _INTEGER_WEIGHT_INPUTS.get(node.op_type, ()))


def _label(path: Path) -> str:
    return f"{path.stem}_{path.suffix.lstrip('.')}"


def model_forms(path: str | os.PathLike[str]) -> list[ModelForm]:
    """The forms found at ``path`` (see the module docstring), in a fixed order."""
    path = Path(path)
    if path.is_file():
        if path.suffix == ".onnx":
            return [ModelForm(_label(path), "onnxruntime", path)]
        if path.suffix == ".pt":
            sibling = next((p for p in (path.with_suffix(".onnx"),) if p.is_file()), None)
            return [ModelForm(_label(path), "torch", path, sibling)]
        raise EvaluationError(f"model {path}: expected an .onnx file, a .pt GraphModule or a model folder")
    if not path.is_dir():
        raise EvaluationError(f"model {path} does not exist")
    forms: list[ModelForm] = []
    onnx_files = sorted(path.glob("*.onnx"))
    for name in TORCH_FILES:
        pt = path / name
        if pt.is_file():
            beside = pt.with_suffix(".onnx")
            forms.append(ModelForm(_label(pt), "torch", pt, beside if beside.is_file() else None))
    if forms:
        forms += [ModelForm(_label(p), "onnxruntime", p) for p in onnx_files]
    if not forms:
        raise EvaluationError(f"model folder {path} holds none of {', '.join(TORCH_FILES)}: give a converted, PTQ "
                              "or QFT output folder, or the model file itself")
    return forms


class Runner:
    """Runs a batch: ``runner({input name: array}) -> {output name: array}``."""

    input_names: list[str]
    output_names: list[str]
    input_shapes: dict[str, list[int | None]]

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def image_size(self, name: str) -> tuple[int, int] | None:
        """The static (height, width) of a 4-D image input, if the model fixes them."""
        shape = self.input_shapes.get(name) or []
        if len(shape) != 4:
            return None
        hw = shape[2:] if shape[1] in (1, 3, 4) else shape[1:3]
        return (hw[0], hw[1]) if all(isinstance(v, int) and v > 0 for v in hw) else None


class OnnxRunner(Runner):
    def __init__(self, path: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own non-exported exception types
            raise EvaluationError(f"onnxruntime cannot load {path}: {exc}") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_shapes = {i.name: [d if isinstance(d, int) else None for d in i.shape]
                             for i in self.session.get_inputs()}

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(None, dict(feeds))))


class TorchRunner(Runner):
    def __init__(self, path: Path, names_from: Path | None) -> None:
        import torch

        from ..conversion_record import find_conversion_record
        from ..validator import load_torch_model

        try:
            self.module = load_torch_model(path)
        except Exception as exc:  # a pickle can fail in many ways; the file is the user's
            raise EvaluationError(f"{path} cannot be loaded as a torch model: {exc}") from None
        self.torch = torch
        record = find_conversion_record(self.module)
        source = names_from or Path((record.source if record is not None else None) or "")
        if not source.is_file():
            raise EvaluationError(f"{path}: no ONNX file gives its input and output names (none beside it, and the "
                                  "source recorded at conversion is missing)")
        self.input_names, self.output_names, self.input_shapes = _onnx_signature(source)

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self.torch.inference_mode():
            produced = self.module(*[self.torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self.input_names])
        values = produced if isinstance(produced, (tuple, list)) else (produced,)
        if len(values) != len(self.output_names):
            raise EvaluationError(f"the torch model returned {len(values)} outputs, its ONNX model has "
                                  f"{len(self.output_names)}")
        return {n: v.detach().cpu().numpy() for n, v in zip(self.output_names, values)}


def _onnx_signature(path: Path) -> tuple[list[str], list[str], dict[str, list[Any]]]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    shapes = {i.name: [d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim]
              for i in inputs}
    return [i.name for i in inputs], [o.name for o in model.graph.output], shapes
