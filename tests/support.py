"""Shared checks for conversion tests: parity with onnxruntime, traceability, trainability."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.fx

from onnx2fx import OnnxToFxConverter

# The gate for float32 models: max relative error <= 1e-4 % of each output's scale.
FLOAT32_TOLERANCE_PERCENT = 1e-4


def export_torch(module: torch.nn.Module, args: tuple[torch.Tensor, ...], *, opset: int = 17,
                 dynamo: bool = False, dynamic_batch: bool = True, path: Path | None = None,
                 input_names: Sequence[str] | None = None) -> onnx.ModelProto:
    """Export ``module`` with torch.onnx.export (TorchScript or dynamo exporter)."""
    module = module.eval()
    names = list(input_names or [f"input_{i}" for i in range(len(args))])
    buffer = io.BytesIO()
    if dynamo:
        dynamic = ({0: torch.export.Dim("batch", min=1, max=64)},) * len(args) if dynamic_batch else None
        program = torch.onnx.export(module, args, dynamo=True, opset_version=opset, input_names=names,
                                    dynamic_shapes=dynamic, verbose=False)
        program.save(str(path) if path else buffer)
    else:
        axes = {n: {0: "batch"} for n in names} if dynamic_batch else None
        torch.onnx.export(module, args, str(path) if path else buffer, dynamo=False, opset_version=opset,
                          input_names=names, dynamic_axes=axes)
    return onnx.load(str(path)) if path else onnx.load_from_string(buffer.getvalue())


def convert_and_save(onnx_path: Path, out: Path, *, idioms: bool | frozenset[str] = True) -> Path:
    """Convert ``onnx_path`` and write the output folder, as ``onnx2fx convert`` does; returns its
    ``model_full.pt`` (the form PTQ and QFT load, with the source ONNX path recorded).
    ``idioms`` as for :class:`OnnxToFxConverter` (False: node by node, ``--no-idioms``)."""
    converter = OnnxToFxConverter(onnx_path, idioms=idioms)
    converter.convert()
    converter.save(out)
    return out / "model_full.pt"


def ort_run(model: onnx.ModelProto | str | Path, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    return session.run(None, dict(feeds))


def relative_error_percent(reference: np.ndarray, produced: np.ndarray) -> float:
    reference = np.asarray(reference, dtype=np.float64)
    produced = np.asarray(produced, dtype=np.float64)
    assert reference.shape == produced.shape, f"shape {produced.shape} != onnxruntime's {reference.shape}"
    if reference.size == 0:
        return 0.0
    diff = float(np.abs(reference - produced).max())
    scale = float(np.abs(reference).max())
    return 0.0 if diff == 0 else diff / scale * 100 if scale else float("inf")


def check_conversion(model: onnx.ModelProto | str | Path, feeds: Mapping[str, np.ndarray], *,
                     tolerance_percent: float = FLOAT32_TOLERANCE_PERCENT, dynamic_batch: bool | None = None,
                     trainable: bool = True, export: bool = True) -> torch.fx.GraphModule:
    """Convert and assert: parity with onnxruntime, symbolic_trace, torch.export (dynamic batch when
    the ONNX batch is dynamic), and that one SGD step changes every float parameter."""
    gm = OnnxToFxConverter(model).convert()
    assert isinstance(gm, torch.fx.GraphModule)
    inputs = [torch.from_numpy(np.ascontiguousarray(a)) for a in feeds.values()]
    expected = ort_run(model, feeds)
    with torch.no_grad():
        produced = gm(*inputs)
    produced = list(produced) if isinstance(produced, (tuple, list)) else [produced]
    assert len(produced) == len(expected)
    for ref, out in zip(expected, produced):
        error = relative_error_percent(ref, out.detach().numpy())
        assert error <= tolerance_percent, f"relative error {error:.3g}% > {tolerance_percent}%"

    torch.fx.symbolic_trace(gm)
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False)
    if dynamic_batch is None:
        dims = proto.graph.input[0].type.tensor_type.shape.dim
        dynamic_batch = bool(dims) and not dims[0].HasField("dim_value")
    if export:
        dynamic: Any = None
        if dynamic_batch:
            batch = torch.export.Dim("batch", min=1, max=1024)
            dynamic = tuple({0: batch} for _ in inputs)
        program = torch.export.export(gm, tuple(inputs), dynamic_shapes=dynamic)
        if dynamic_batch:
            bigger = [torch.cat([t, t[:1]]) for t in inputs]
            out = program.module()(*bigger)
            first = out[0] if isinstance(out, (tuple, list)) else out
            assert first.shape[0] == inputs[0].shape[0] + 1

    if trainable:
        check_one_sgd_step_changes_parameters(gm, inputs)
    return gm


def check_one_sgd_step_changes_parameters(gm: torch.nn.Module, inputs: list[torch.Tensor]) -> None:
    params = [p for p in gm.parameters() if p.is_floating_point()]
    assert params, "the converted model has no trainable parameters"
    before = [p.detach().clone() for p in params]
    gm.train()
    optimizer = torch.optim.SGD(params, lr=0.1)
    out = gm(*[t.float() if t.is_floating_point() else t for t in inputs])
    outs = out if isinstance(out, (tuple, list)) else [out]
    loss = sum((o.float() ** 2).mean() for o in outs if o.is_floating_point())
    loss.backward()
    optimizer.step()
    gm.eval()
    unchanged = [i for i, (b, p) in enumerate(zip(before, params)) if torch.equal(b, p.detach())]
    assert not unchanged, f"{len(unchanged)} of {len(params)} parameters did not change after one SGD step"
