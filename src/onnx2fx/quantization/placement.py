"""Where quantizers go, decided on the ONNX graph the model came from.

Quantization is described in ONNX terms because that is what it is exported to: encodings are
keyed by ONNX tensor and initializer names and the QDQ writer edits the original graph. Deciding
placement on the ONNX graph also keeps the rules simple and exact: "a Conv whose only consumer is
a Relu" is a question about ONNX consumers, not about whatever FX nodes lowering produced.

Rules, in order, for each output tensor of each node:

1. A node the config leaves in float gets no output quantizer and no weight quantizers.
2. Data-movement ops (Reshape, Transpose, MaxPool, ...) share their input's encoding.
3. Inside a fused group (Conv+Relu, Conv+BatchNormalization(+Relu), Gemm/MatMul+Relu, Add+Relu,
   MatMul+Add of a constant bias, ...) the producer's output is never materialised by an integer
   kernel: no quantizer. MatMul+Add only for the QDQ form: the integer writers lower a MatMul
   (QLinearMatMul, MatMulInteger) with its own output encoding. The same holds inside a standard
   function that conversion fused from several nodes (``idioms``: GELU, LayerNorm, MatMul + bias
   as ``nn.Linear``, ...): only its result exists in the converted model.
4. Inside an elementwise chain of one tensor (see :func:`_elementwise_interior`: a decomposed
   HardSwish ``x * Clip(x + 3, 0, 6) / 6``, a SiLU ``x * Sigmoid(x)``, a scalar affine
   ``x * a + b``, ...) the intermediate values are never materialised either: each is a function
   of the chain's 8-bit input alone, which an integer kernel evaluates in one step (a lookup
   table of 256 entries, or one requantization for an affine). Only the chain's input and its
   results that leave the chain are quantized. Not when an integer form (QOperator, fixed point)
   is written: those writers lower each op on its own and need its operands in 8 bits.
5. A tensor computed from sizes alone (Shape/Size and constants: a detector's anchor grid, a
   position index) is not data and gets no quantizer; it is the same for every input of a size.
6. Everything else gets an activation quantizer; so does every float graph input.

Weights of Conv, ConvTranspose, Gemm (B) and MatMul (constant operand) are quantized per output
channel along the ONNX initializer's channel axis; Conv/ConvTranspose/Gemm biases get the int32
convention at export.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import QuantizationError
from .config import QuantConfig, QuantSpec

FLOAT = 1  # TensorProto.FLOAT
_NO_ACTIVATION_OPS = {"Constant", "ConstantOfShape", "Shape", "Size", "NonZero", "Range", "ArgMax", "ArgMin",
                      "EyeLike", "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike"}
_WEIGHT_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
# Fused groups that only the QDQ form keeps (rule 3): the integer writers give these producers
# their own output encoding.
_QDQ_ONLY_GROUPS = {("MatMul", "Add")}
# Elementwise ops whose output, with every operand but one data tensor constant and scalar, is a
# function of that tensor's value alone (rule 4).
_ELEMENTWISE_OPS = {"Add", "Sub", "Mul", "Div", "Pow", "Min", "Max", "Clip", "Relu", "LeakyRelu", "PRelu", "Elu",
                    "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Softplus", "Softsign", "Gelu",
                    "Mish", "Erf", "Exp", "Log", "Sqrt", "Reciprocal", "Neg", "Abs"}


@dataclass
class OnnxNodeInfo:
    name: str
    op_type: str
    inputs: list[str]
    outputs: list[str]
    attributes: dict[str, Any]


@dataclass
class OnnxGraphView:
    """The parts of an ONNX graph placement needs, read once through the native core."""

    nodes: list[OnnxNodeInfo]
    inputs: list[str]  # graph inputs that are not initializers, in order
    input_types: dict[str, tuple[int, list[int | str | None] | None]]  # elem_type, shape
    outputs: list[str]
    initializers: dict[str, tuple[int, list[int]]]  # name -> (data type, dims)
    opset: int
    consumers: dict[str, list[OnnxNodeInfo]] = field(default_factory=dict)
    constant_dims: dict[str, list[int]] = field(default_factory=dict)  # Constant node output -> its dims

    @classmethod
    def load(cls, path: str | Path) -> OnnxGraphView:
        from .. import _core

        return cls.from_core(_core.load_model(str(path)))

    @classmethod
    def from_core(cls, model: Any) -> OnnxGraphView:
        graph = model.graph
        initializers = {t.name: (t.data_type, list(t.dims)) for t in graph.initializers}
        nodes = [OnnxNodeInfo(n.name, n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}",
                              list(n.inputs), list(n.outputs),
                              {k: a.value for k, a in n.attributes.items() if a.type in ("INT", "FLOAT", "INTS")})
                 for n in graph.nodes]
        inputs = [v for v in graph.inputs if v.name not in initializers]
        view = cls(nodes=nodes, inputs=[v.name for v in inputs],
                   input_types={v.name: (v.type.elem_type, v.type.shape) for v in inputs},
                   outputs=[v.name for v in graph.outputs], initializers=initializers,
                   opset=int(model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))))
        for node in nodes:
            for name in node.inputs:
                if name:
                    view.consumers.setdefault(name, []).append(node)
        for node in graph.nodes:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.outputs:
                view.constant_dims[node.outputs[0]] = _constant_dims(node)
        return view

    def producer_map(self) -> dict[str, OnnxNodeInfo]:
        return {out: node for node in self.nodes for out in node.outputs if out}

    def tensor_names(self) -> set[str]:
        return set(self.inputs) | set(self.initializers) | {o for n in self.nodes for o in n.outputs if o}


def _constant_dims(node: Any) -> list[int]:
    """The dims of a Constant node's value ([] for a scalar; [-1] when unknown, never scalar)."""
    for name, attribute in node.attributes.items():
        if name in ("value_float", "value_int"):
            return []
        if name in ("value_floats", "value_ints"):
            return [len(attribute.value)]
        if name == "value" and attribute.type == "TENSOR":
            return list(attribute.value.dims)
    return [-1]


@dataclass
class ActivationSite:
    """One ONNX tensor that gets an activation quantizer."""

    tensor: str
    node: str  # producing ONNX node ("" for graph inputs)
    op_type: str  # producing op type ("input" for graph inputs)
    spec: QuantSpec


@dataclass
class WeightSite:
    """One float initializer quantized as a weight, and the bias that follows its convention."""

    initializer: str
    node: str
    op_type: str
    axis: int | None  # channel axis in the ONNX layout; None = per tensor
    spec: QuantSpec
    dims: list[int]
    input_tensor: str  # the activation multiplied with the weight (for the bias scale)
    bias: str | None = None
    bias_axis: int | None = None


@dataclass
class Placement:
    activations: list[ActivationSite]
    weights: list[WeightSite]
    shared: dict[str, str]  # tensor -> tensor whose encoding it reuses
    fused: dict[str, str]  # tensor -> the ONNX node it feeds inside a fused group
    float_tensors: list[str]  # outputs of nodes left in float by the config
    concats: set[str]  # quantized Concat outputs; shared after calibration when all inputs agree

    def counts(self) -> dict[str, int]:
        return {"activations": len(self.activations), "weights": len(self.weights),
                "biases": sum(1 for w in self.weights if w.bias), "shared": len(self.shared),
                "fused": len(self.fused), "float": len(self.float_tensors)}


def plan_placement(graph: OnnxGraphView, config: QuantConfig, formats: Sequence[str] = ("qdq",), *,
                   idioms: Sequence[Any] = ()) -> Placement:
    """Apply the rules in the module docstring to every tensor of ``graph``, for the ONNX forms
    ``formats`` that will be written. ``idioms`` are the functions the conversion fused
    (:class:`onnx2fx.idioms.IdiomUse`, from the conversion record)."""
    internal = {tensor: use.terminal for use in idioms for tensor in use.internal}
    outputs = set(graph.outputs)
    activations: list[ActivationSite] = []
    shared: dict[str, str] = {}
    fused: dict[str, str] = {}
    floats: list[str] = []
    concats: set[str] = set()
    qdq_only = set(formats) <= {"qdq"}
    supergroups = set(config.supergroups) if config.fuse else set()
    if not qdq_only:
        supergroups -= _QDQ_ONLY_GROUPS
    shared_ops = set(config.shared_ops)

    if config.quantize_inputs:
        for name in graph.inputs:
            elem_type, _ = graph.input_types[name]
            if elem_type in (FLOAT, 0):
                activations.append(ActivationSite(name, "", "input", config.activations))

    from_data = _data_dependent(graph)
    chains = config.fuse and config.fuse_elementwise and qdq_only
    interior = _elementwise_interior(graph, from_data, outputs) if chains else {}
    for node in graph.nodes:
        if config.is_float(node.op_type, node.name):
            floats.extend(o for o in node.outputs if o)
            continue
        if node.op_type in _NO_ACTIVATION_OPS:
            continue
        for out in node.outputs:
            if not out or out not in from_data:
                continue
            if out in internal:
                fused[out] = internal[out]
                continue
            if node.op_type in shared_ops and node.inputs and node.inputs[0]:
                shared[out] = node.inputs[0]
                continue
            follower = _fused_follower(graph, node, out, outputs, supergroups, fused, config, from_data)
            if follower is None:
                follower = interior.get(out)
            if follower is not None:
                fused[out] = follower
                continue
            activations.append(ActivationSite(out, node.name, node.op_type,
                                              config.spec_for("activations", node.op_type, node.name)))
            if node.op_type == "Concat":
                concats.add(out)
    weights = _weight_sites(graph, config, _linear_biases(graph, idioms))
    return Placement(activations, weights, shared, fused, floats, concats)


def _data_dependent(graph: OnnxGraphView) -> set[str]:
    """Tensors whose values depend on the graph inputs' values, not only on their sizes."""
    data = set(graph.inputs)
    for node in graph.nodes:  # in topological order, as the core sorts them
        if node.op_type in ("Shape", "Size"):
            continue
        if any(name in data for name in node.inputs if name):
            data.update(o for o in node.outputs if o)
    return data


def _fused_follower(graph: OnnxGraphView, node: OnnxNodeInfo, out: str, outputs: set[str],
                    supergroups: set[tuple[str, str]], fused: dict[str, str], config: QuantConfig,
                    from_data: set[str]) -> str | None:
    """The consumer ``out`` is fused into, or None. Only a sole consumer fuses, and a graph output
    is always materialised."""
    consumers = graph.consumers.get(out, [])
    if out in outputs or len(consumers) != 1:
        return None
    follower = consumers[0]
    if config.is_float(follower.op_type, follower.name) or (node.op_type, follower.op_type) not in supergroups:
        return None
    if follower.op_type == "Add":
        # an Add fuses as a bias only: its other operand is a constant (a residual Add is not fused)
        others = [name for name in follower.inputs if name and name != out]
        if len(others) != 1 or others[0] in from_data:
            return None
    elif follower.inputs[0] != out:
        return None
    # A BatchNormalization only fuses onward when it is itself inside a convolution's group.
    if node.op_type == "BatchNormalization" and node.inputs[0] not in fused:
        return None
    return follower.name


def _linear_biases(graph: OnnxGraphView, idioms: Sequence[Any]) -> dict[str, str]:
    """MatMul output -> the bias initializer of its Add, for each ``MatMul + Add`` the conversion
    fused into one ``nn.Linear``: the bias then takes the int32 convention, as a Gemm's does (the
    integer writers absorb the Add into the MatMul's accumulator)."""
    producers = graph.producer_map()
    biases: dict[str, str] = {}
    for use in idioms:
        if use.kind != "linear" or len(use.internal) != 1 or use.output not in producers:
            continue
        product = use.internal[0]
        others = [name for name in producers[use.output].inputs if name != product]
        if len(others) == 1 and _is_float_initializer(graph, others[0]):
            biases[product] = others[0]
    return biases


def _is_scalar_constant(graph: OnnxGraphView, name: str, from_data: set[str]) -> bool:
    """A constant (initializer or Constant node) of one element, whose broadcast changes no shape."""
    if name in from_data:
        return False
    dims = graph.initializers[name][1] if name in graph.initializers else graph.constant_dims.get(name)
    return dims is not None and all(d == 1 for d in dims)


def _elementwise_interior(graph: OnnxGraphView, from_data: set[str], outputs: set[str]) -> dict[str, str]:
    """Rule 4: tensor -> a consumer, for the intermediate tensors of elementwise chains.

    A node of ``_ELEMENTWISE_OPS`` whose data operands all descend, through such nodes, from one
    tensor (its *root*) and whose other operands are scalar constants computes a function of the
    root's value alone: ``Mul(x, Clip(Add(x, 3), 0, 6))`` has root ``x`` (both data operands
    descend from it), ``Mul(x, Sigmoid(x))`` too. A tensor with a root is interior when it is no
    graph output and every consumer is such a node of the same root: the chain's values meet the
    rest of the graph only through the root and the chain's exits, so only those are quantized.
    Per-channel constants (a LayerNorm's gamma, a BatchNorm written as Mul/Add) keep their
    quantizers: one table per channel is not what integer kernels do.
    """
    root: dict[str, str] = {}
    for node in graph.nodes:
        if node.op_type not in _ELEMENTWISE_OPS or len([o for o in node.outputs if o]) != 1:
            continue
        operands = [name for name in node.inputs if name]
        data = [name for name in operands if name in from_data]
        if not data or not all(_is_scalar_constant(graph, name, from_data) for name in operands if name not in data):
            continue
        roots = {root.get(name, name) for name in data}
        if len(roots) == 1:
            root[node.outputs[0]] = roots.pop()
    interior: dict[str, str] = {}
    for tensor, origin in root.items():
        consumers = graph.consumers.get(tensor, [])
        if tensor in outputs or not consumers:
            continue
        if all(c.outputs and root.get(c.outputs[0]) == origin for c in consumers):
            interior[tensor] = consumers[0].name
    return interior


def _weight_sites(graph: OnnxGraphView, config: QuantConfig,
                  linear_biases: dict[str, str] | None = None) -> list[WeightSite]:
    sites: dict[str, WeightSite] = {}
    for node in graph.nodes:
        if node.op_type not in _WEIGHT_OPS or config.is_float(node.op_type, node.name):
            continue
        spec = config.spec_for("weights", node.op_type, node.name)
        found = _weight_of(graph, node)
        if found is None:
            continue
        weight, data_input, axis = found
        dims = graph.initializers[weight][1]
        if not spec.per_channel:
            axis = None
        bias, bias_axis = _bias_of(graph, node, dims)
        fused_bias = (linear_biases or {}).get(node.outputs[0]) if node.op_type == "MatMul" and node.outputs else None
        if fused_bias is not None and axis is not None and graph.initializers[fused_bias][1] == [dims[-1]]:
            bias, bias_axis = fused_bias, 0
        if weight in sites:  # a tied weight: keep one encoding, per tensor unless the axes agree
            if sites[weight].axis != axis:
                sites[weight].axis = None
            continue
        sites[weight] = WeightSite(weight, node.name, node.op_type, axis, spec, dims, data_input, bias, bias_axis)
    return list(sites.values())


def _is_float_initializer(graph: OnnxGraphView, name: str) -> bool:
    return bool(name) and name in graph.initializers and graph.initializers[name][0] == FLOAT


def _weight_of(graph: OnnxGraphView, node: OnnxNodeInfo) -> tuple[str, str, int | None] | None:
    """(weight initializer, the other (data) input, ONNX output-channel axis) of a weight op."""
    ins = node.inputs
    if len(ins) < 2:
        return None
    if node.op_type == "Conv" and _is_float_initializer(graph, ins[1]):
        return ins[1], ins[0], 0
    if node.op_type == "ConvTranspose" and _is_float_initializer(graph, ins[1]):
        # Weight (C_in, C_out / group, k...): channel axis 1 is an output channel only for group 1.
        return ins[1], ins[0], 1 if int(node.attributes.get("group", 1)) == 1 else None
    if node.op_type == "Gemm" and _is_float_initializer(graph, ins[1]):
        return ins[1], ins[0], 0 if int(node.attributes.get("transB", 0)) else 1
    if node.op_type == "MatMul":
        if _is_float_initializer(graph, ins[1]):
            rank = len(graph.initializers[ins[1]][1])
            return ins[1], ins[0], rank - 1 if rank >= 2 else None
        if _is_float_initializer(graph, ins[0]):
            return ins[0], ins[1], None
    return None


def _bias_of(graph: OnnxGraphView, node: OnnxNodeInfo, weight_dims: Sequence[int]) -> tuple[str | None, int | None]:
    """The bias initializer that can take the int32 convention, and its channel axis."""
    if node.op_type not in ("Conv", "ConvTranspose", "Gemm") or len(node.inputs) < 3:
        return None, None
    bias = node.inputs[2]
    if not _is_float_initializer(graph, bias):
        return None, None
    dims = graph.initializers[bias][1]
    if node.op_type == "Gemm":
        if float(node.attributes.get("alpha", 1.0)) != 1.0 or float(node.attributes.get("beta", 1.0)) != 1.0:
            return None, None
        channels = weight_dims[0 if int(node.attributes.get("transB", 0)) else 1]
        if dims == [channels]:
            return bias, 0
        if dims == [1, channels]:
            return bias, 1
        return None, None
    return (bias, 0) if len(dims) == 1 else (None, None)


def check_names(graph: OnnxGraphView, names: Sequence[str]) -> None:
    """Every name quantization refers to must exist in the source graph."""
    known = graph.tensor_names()
    missing = sorted({n for n in names if n not in known})
    if missing:
        raise QuantizationError(f"the source ONNX graph has no tensor(s) {missing[:5]}"
                                f"{f' and {len(missing) - 5} more' if len(missing) > 5 else ''}: is it the model "
                                "this GraphModule was converted from (--onnx)?")
