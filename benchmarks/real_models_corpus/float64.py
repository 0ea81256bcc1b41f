"""A float64 run of a float32 ONNX model: the referee when torch and onnxruntime disagree by a
float32-level amount.

Both float32 results are roundings of the same exact computation; which one is the better
rounding shows only against a more precise run. The model is rewritten to double (every float32
tensor type, initializer, constant and Cast target), fed the same inputs, and run in onnxruntime
where it has double kernels, else in onnx's reference evaluator. If onnxruntime is as far from
that run as torch is, the difference is float32 rounding, not a conversion defect.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

FLOAT = onnx.TensorProto.FLOAT
DOUBLE = onnx.TensorProto.DOUBLE


def _double_tensor(tensor: onnx.TensorProto) -> None:
    if tensor.data_type == FLOAT:
        array = numpy_helper.to_array(tensor).astype(np.float64)
        tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))


def _double_value_info(value: onnx.ValueInfoProto) -> None:
    if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type == FLOAT:
        value.type.tensor_type.elem_type = DOUBLE


def _double_graph(graph: onnx.GraphProto) -> None:
    for tensor in graph.initializer:
        _double_tensor(tensor)
    for value in (*graph.input, *graph.output, *graph.value_info):
        _double_value_info(value)
    for node in graph.node:
        for attribute in node.attribute:
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i == FLOAT:
                attribute.i = DOUBLE
            if attribute.type == onnx.AttributeProto.TENSOR:
                _double_tensor(attribute.t)
            if attribute.type == onnx.AttributeProto.GRAPH:
                _double_graph(attribute.g)
            for sub in attribute.graphs:
                _double_graph(sub)


def _reference_fixes() -> list[type]:
    """Operators that onnx's reference evaluator gets wrong on these models, done right.

    Its GlobalMaxPool reduces one axis too many on rank-3 inputs (the maximum over axes
    ``(n - 2, n - 1)`` counted from the wrong end), and its BatchNormalization of opsets 9 to 14
    computes batch statistics (training mode) whenever the node carries a ``momentum`` attribute,
    which paddle2onnx always writes; a one-output BatchNormalization is inference."""
    from onnx.reference.op_run import OpRun

    class GlobalMaxPool(OpRun):
        op_domain = ""

        def _run(self, x: np.ndarray) -> tuple[np.ndarray]:
            return (x.max(axis=tuple(range(2, x.ndim)), keepdims=True),)

    class BatchNormalization(OpRun):
        op_domain = ""

        def _run(self, x: np.ndarray, scale: np.ndarray, bias: np.ndarray, mean: np.ndarray, var: np.ndarray,
                 epsilon: float = 1e-5, momentum: float | None = None, spatial: int | None = None,
                 training_mode: int = 0) -> tuple[np.ndarray]:
            if training_mode:
                raise NotImplementedError("BatchNormalization in training mode")
            shape = (-1,) + (1,) * (x.ndim - 2)
            y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + epsilon) * scale.reshape(shape)
            return ((y + bias.reshape(shape)).astype(x.dtype),)

    return [GlobalMaxPool, BatchNormalization]


def float64_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` that computes in double wherever it computed in float32."""
    double = onnx.ModelProto()
    double.CopyFrom(model)
    _double_graph(double.graph)
    return double


def run_float64(path: Path, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """The model's outputs computed in double, float32 inputs widened (exactly) to double."""
    model = float64_model(onnx.load(str(path)))
    wide = {name: a.astype(np.float64) if a.dtype == np.float32 else a for name, a in feeds.items()}
    try:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 3
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - no double kernel for some op: the reference evaluator has them all
        from onnx.reference import ReferenceEvaluator

        evaluator = ReferenceEvaluator(model, new_ops=_reference_fixes())
        return [np.asarray(o) for o in evaluator.run(None, wide)]
    return session.run(None, wide)


def distances_to_float64(reference: Sequence[np.ndarray], *runs: Sequence[np.ndarray]) -> list[float]:
    """For each float32 run, its worst output's relative error (%) against the float64 run."""
    from benchmarks.real_models_corpus.check import relative_error_percent

    return [max(relative_error_percent(r, p) for r, p in zip(reference, run)) for run in runs]


def main() -> None:
    """``python -m benchmarks.real_models_corpus.float64 KEY``: at each size of the corpus file,
    torch vs onnxruntime, and torch, onnxruntime and onnxruntime without graph optimisations each
    vs the float64 run (worst output, relative error %)."""
    import sys

    import torch

    from benchmarks.real_models_corpus.cache import model_path
    from benchmarks.real_models_corpus.check import make_feeds, ort_session, relative_error_percent, run_torch
    from benchmarks.real_models_corpus.entries import by_key
    from onnx2fx import OnnxToFxConverter

    torch.set_num_threads(1)
    entry = by_key(sys.argv[1])
    path = model_path(entry)
    model = onnx.load(str(path), load_external_data=False)
    module = OnnxToFxConverter(path).convert()
    session = ort_session(path)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    plain = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for sizes in entry.sizes:
        feeds = make_feeds(entry, model, sizes)
        expected, produced = session.run(None, feeds), run_torch(module, feeds)
        reference = run_float64(path, feeds)
        torch_vs_ort = max(relative_error_percent(e, p) for e, p in zip(expected, produced))
        ort_off, plain_off, torch_off = distances_to_float64(reference, expected, plain.run(None, feeds), produced)
        print(f"{dict(sizes)}: torch vs onnxruntime {torch_vs_ort:.3g} %; vs float64: onnxruntime {ort_off:.3g} %"
              f" (unoptimised {plain_off:.3g} %), torch {torch_off:.3g} %", flush=True)


if __name__ == "__main__":
    main()
