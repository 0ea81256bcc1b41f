"""What this CPU's onnxruntime computes for 8-bit integer products.

onnxruntime's MLAS kernels for uint8 x int8 products on x86-64 CPUs without VNNI (AVX2, AVX-512F)
use ``vpmaddubsw``, which adds each pair of products ``a0*b0 + a1*b1`` in int16 and clips at 32767;
with VNNI, on ARM, and in its uint8 x uint8 kernels (which widen first) the sums are exact. A QDQ
model with int8 weights that onnxruntime fully optimizes runs on those u8 x s8 kernels, so on such a
CPU it can differ from the model's definition (and from the simulation) by more than a rounding
step; onnxruntime's quantizer offers ``reduce_range`` (7-bit weights) for the same reason.
"""

from __future__ import annotations

import functools

import numpy as np


@functools.cache
def u8s8_saturates() -> bool:
    """Whether onnxruntime on this CPU clips uint8 x int8 pair sums at int16: 255 x 127 twice gives
    32767 there, and 64770 where it computes exactly."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
    graph = helper.make_graph([node], "probe", [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
                              [numpy_helper.from_array(np.full((2, 1), 127, np.int8), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"a": np.full((1, 2), 255, np.uint8)})
    return int(y[0, 0]) != 2 * 255 * 127
