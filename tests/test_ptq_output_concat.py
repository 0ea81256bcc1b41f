"""A graph output made by a Concat of tensors on very different scales stays float after PTQ.

A detector's single output concatenates box coordinates in pixels with class probabilities; one
8-bit grid over both has a step of about a pixel, which turns every probability into 0 or one step.
The Concat's inputs keep their own encodings and the Concat runs in float (QDQ: DequantizeLinear
into it, no QuantizeLinear after it), so the probabilities keep their 8-bit resolution.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from support import convert_and_save, ort_run

from onnx2fx.quantization import ptq

pytestmark = pytest.mark.usefixtures("one_thread")


def _detector_head(path: Path, box_scale: float) -> None:
    """x [n, 8] -> Concat(MatMul(x, w1) * box_scale, Sigmoid(MatMul(x, w2))) on axis 1."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32) * 0.3, "w_box"),
             numpy_helper.from_array(rng.standard_normal((8, 3)).astype(np.float32) * 0.3, "w_cls"),
             numpy_helper.from_array(np.array(box_scale, np.float32), "scale")]
    nodes = [helper.make_node("MatMul", ["x", "w_box"], ["box_raw"], name="box_matmul"),
             helper.make_node("Relu", ["box_raw"], ["box_pos"], name="box_relu"),
             helper.make_node("Mul", ["box_pos", "scale"], ["boxes"], name="box_scale"),
             helper.make_node("MatMul", ["x", "w_cls"], ["logits"], name="cls_matmul"),
             helper.make_node("Sigmoid", ["logits"], ["probs"], name="cls_sigmoid"),
             helper.make_node("Concat", ["boxes", "probs"], ["y"], name="output_concat", axis=1)]
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 7])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.mark.parametrize("box_scale", [320.0, 2.0])
def test_output_concat_of_far_apart_scales_stays_float(tmp_path: Path, box_scale: float) -> None:
    _detector_head(tmp_path / "head.onnx", box_scale)
    model = convert_and_save(tmp_path / "head.onnx", tmp_path / "converted")
    rng = np.random.default_rng(1)
    calib = rng.standard_normal((64, 8)).astype(np.float32)
    result = ptq(model, calib, output_dir=tmp_path / "q", batch_size=32, progress=False)
    encodings = result.activation_encodings
    assert {"boxes", "probs"} <= set(encodings)
    ratio = float(encodings["boxes"].scale.max() / encodings["probs"].scale.max())
    notes = [w for w in result.report["warnings"] if "Concat" in w]

    x = rng.standard_normal((32, 8)).astype(np.float32)
    (reference,) = ort_run(tmp_path / "head.onnx", {"x": x})
    (quantized,) = ort_run(tmp_path / "q" / "model_ptq.onnx", {"x": x})
    probability_error = float(np.abs(quantized[:, 4:] - reference[:, 4:]).max())
    if box_scale == 320.0:
        assert ratio > 100
        assert "y" not in encodings  # float: no QuantizeLinear after the Concat
        assert len(notes) == 1 and re.fullmatch(
            r"output y \(Concat\) stays float: its inputs' scales differ \d+x, and one 8-bit grid would leave "
            r"the finest input 0\.0 bits", notes[0]), notes
        # int8 weights and inputs move the logits a little; one grid of the boxes' step (> 2) would
        # round every probability to 0 or to that step
        assert probability_error < 0.15 < encodings["boxes"].scale.max() / 10
    else:
        assert ratio < 4
        assert "y" in encodings and notes == []  # close grids: requantized as before
        assert probability_error < 0.15
    producers = {o: n.op_type for n in onnx.load(tmp_path / "q" / "model_ptq.onnx").graph.node for o in n.output}
    assert producers["y"] == ("Concat" if box_scale == 320.0 else "DequantizeLinear")


def test_output_concat_keeps_its_encoding_when_integer_forms_are_written(tmp_path: Path) -> None:
    """The QOperator and fixed-point writers lower a Concat with its own output encoding."""
    _detector_head(tmp_path / "head.onnx", 320.0)
    model = convert_and_save(tmp_path / "head.onnx", tmp_path / "converted")
    calib = np.random.default_rng(1).standard_normal((64, 8)).astype(np.float32)
    result = ptq(model, calib, output_dir=tmp_path / "q", batch_size=32, progress=False,
                 formats=("qdq", "qoperator"), float_islands=True)
    assert "y" in result.activation_encodings
    assert [w for w in result.report["warnings"] if "Concat" in w] == []
    assert result.report["qoperator"]["equal_to_simulation"] == 1.0
