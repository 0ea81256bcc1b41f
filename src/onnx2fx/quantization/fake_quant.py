"""The quantization-simulation FX pass: fake-quant modules inserted into a converted GraphModule.

This is our own pass rather than ``torch.ao.quantization``'s prepare_fx/convert_fx, which are
deprecated: it only needs the ONNX origins the tracer recorded.

The rounding is QuantizeLinear's to the bit: ``round_half_to_even(x / scale)`` in float32. torch's
``fake_quantize_per_tensor_affine`` multiplies by ``1 / scale`` instead, which differs in the last
bit often enough to put a few values per million on the other side of a rounding tie; in a deep
network such one-step differences spread, and the simulation would drift away from the QDQ model
it is meant to predict.

- An activation quantizer is a ``call_module`` node placed right after the FX node whose
  ``meta["onnx_outputs"]`` names the quantized ONNX tensor (or after the graph input's
  placeholder); every user of that node is rewired to the quantizer.
- A weight quantizer of a standard layer (``nn.Conv*d``, ``nn.ConvTranspose*d``, ``nn.Linear``)
  lives inside the layer: the layer's class is swapped for a subclass whose ``forward`` quantizes
  ``self.weight`` on the fly. Parameter names stay the same, so the conversion record's
  ``parameters`` and ``weights.safetensors`` still line up, the graph keeps its ``call_module``
  nodes and the weights stay trainable (straight-through gradients). A parameter read by ``get_attr`` (MatMul
  with a constant operand) gets a quantizer node after the ``get_attr``.
- A bias the QDQ export stores as int32 (Conv, ConvTranspose, Gemm) gets a bias quantizer the same
  way (``bias_quantizer`` inside a standard layer, a node after a ``get_attr`` otherwise). Its
  encoding, ``input scale x weight scale``, exists only once activations are calibrated: until
  :func:`set_bias_encodings` gives it one, it passes the bias through.

The modules are plain classes of this package, so the simulated model pickles like the float one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from ..conversion_record import conversion_record, copy_converted
from ..errors import QuantizationError
from .calibrators import Calibrator
from .config import QuantSpec
from .grid import Encoding, QuantGrid
from .placement import OnnxGraphView, Placement, WeightSite


class _QuantizeDequantize(torch.autograd.Function):
    """``(clamp(round(x / scale) + zero_point) - zero_point) * scale`` in float32, as
    QuantizeLinear -> DequantizeLinear computes it, with straight-through gradients inside the grid
    (zero outside, like torch's fake-quant ops).

    A NaN becomes ``quant_min``, as in onnxruntime (and torch's fake-quant ops): a 0 / 0 inside a
    quantized graph, such as a LayerNorm decomposition whose variance rounds to zero on a constant
    row, must give the same value in both rather than NaN in one of them.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, quant_min: int,
                quant_max: int) -> torch.Tensor:
        q = torch.div(x, scale).round_().add_(zero_point)  # round() is half to even, like QuantizeLinear
        q.nan_to_num_(nan=float(quant_min))
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward((q >= quant_min) & (q <= quant_max))
        return q.clamp_(quant_min, quant_max).sub_(zero_point).mul_(scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None, None]:
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None


def quantize_dequantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, quant_min: int,
                        quant_max: int, axis: int | None = None) -> torch.Tensor:
    """Fake-quantize float32 ``x`` per tensor or per channel along ``axis``, bit for bit what
    onnxruntime's QuantizeLinear -> DequantizeLinear give (see the module docstring)."""
    zero_point = zero_point.to(x.dtype)
    if axis is not None:
        shape = [1] * x.dim()
        shape[axis] = -1
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    return _QuantizeDequantize.apply(x, scale, zero_point, quant_min, quant_max)


class FakeQuantize(nn.Module):
    """Quantize-dequantize one tensor with a fixed scale and zero point.

    While ``calibrator`` is set the module only observes (values pass through unchanged); after
    :meth:`set_encoding` it rounds to its grid. Gradients pass straight through inside the range.
    """

    def __init__(self, onnx_name: str, kind: str, spec: QuantSpec, axis: int | None = None,
                 onnx_axis: int | None = None, channels: int = 1) -> None:
        super().__init__()
        self.onnx_name = onnx_name
        self.kind = kind  # "activation", "weight" or "bias"
        self.bits = spec.bits
        self.symmetric = spec.symmetric
        self.signed = kind != "activation" and spec.symmetric
        self.axis = axis  # channel axis in the torch tensor; None = per tensor
        self.onnx_axis = onnx_axis  # the same axis in the ONNX tensor's layout
        self.quant_min, self.quant_max = QuantGrid(spec.bits, self.signed).qmin, QuantGrid(spec.bits, self.signed).qmax
        self.register_buffer("scale", torch.ones(channels))
        self.register_buffer("zero_point", torch.zeros(channels, dtype=torch.int32))
        self.enabled = True
        self.initialized = False
        self.calibrator: Calibrator | None = None

    @property
    def grid(self) -> QuantGrid:
        return QuantGrid(self.bits, self.signed)

    def set_encoding(self, encoding: Encoding) -> None:
        self.signed = encoding.grid.signed
        self.quant_min, self.quant_max = encoding.grid.qmin, encoding.grid.qmax
        self.scale = torch.from_numpy(encoding.scale.astype(np.float32).copy())
        self.zero_point = torch.from_numpy(encoding.zero_point.astype(np.int32).copy())
        self.initialized = True

    def encoding(self) -> Encoding:
        return Encoding(self.scale.detach().cpu().numpy().astype(np.float32),
                        self.zero_point.detach().cpu().numpy().astype(np.int64),
                        self.grid, self.symmetric, self.onnx_axis if self.axis is not None else None)

    def forward(self, x: Any) -> Any:
        if self.calibrator is not None:
            if isinstance(x, torch.Tensor) and x.is_floating_point():
                self.calibrator.observe(x)
            return x
        if not (self.enabled and self.initialized) or not isinstance(x, torch.Tensor) or not x.is_floating_point():
            return x
        y = x if x.dtype == torch.float32 else x.float()
        y = quantize_dequantize(y, self.scale, self.zero_point, self.quant_min, self.quant_max, self.axis)
        return y if y.dtype == x.dtype else y.to(x.dtype)

    def extra_repr(self) -> str:
        granularity = "per tensor" if self.axis is None else f"per channel (axis {self.axis})"
        grid = self.grid.dtype
        state = "calibrating" if self.calibrator is not None else "on" if self.enabled and self.initialized else "off"
        return f"{self.onnx_name!r}, {grid}, {'symmetric' if self.symmetric else 'asymmetric'}, {granularity}, {state}"


# ---------------------------------------------------------------------------------- quantized layers
def _bias(layer: nn.Module) -> torch.Tensor | None:
    """The layer's bias as the exported model adds it: on its int32 grid once the bias quantizer
    has an encoding (see :func:`set_bias_encodings`)."""
    quantizer = layer._modules.get("bias_quantizer")
    bias = layer.bias
    return bias if quantizer is None or bias is None else quantizer(bias)


class QuantConv1d(nn.Conv1d):
    weight_quantizer: FakeQuantize

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(input, self.weight_quantizer(self.weight), _bias(self))


class QuantConv2d(nn.Conv2d):
    weight_quantizer: FakeQuantize

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(input, self.weight_quantizer(self.weight), _bias(self))


class QuantConv3d(nn.Conv3d):
    weight_quantizer: FakeQuantize

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(input, self.weight_quantizer(self.weight), _bias(self))


class QuantConvTranspose1d(nn.ConvTranspose1d):
    weight_quantizer: FakeQuantize

    def forward(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        return F.conv_transpose1d(input, self.weight_quantizer(self.weight), _bias(self), self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation)


class QuantConvTranspose2d(nn.ConvTranspose2d):
    weight_quantizer: FakeQuantize

    def forward(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        return F.conv_transpose2d(input, self.weight_quantizer(self.weight), _bias(self), self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation)


class QuantConvTranspose3d(nn.ConvTranspose3d):
    weight_quantizer: FakeQuantize

    def forward(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        return F.conv_transpose3d(input, self.weight_quantizer(self.weight), _bias(self), self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation)


class QuantLinear(nn.Linear):
    weight_quantizer: FakeQuantize

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.linear(input, self.weight_quantizer(self.weight), _bias(self))


QUANT_MODULES: dict[type[nn.Module], type[nn.Module]] = {
    nn.Conv1d: QuantConv1d, nn.Conv2d: QuantConv2d, nn.Conv3d: QuantConv3d,
    nn.ConvTranspose1d: QuantConvTranspose1d, nn.ConvTranspose2d: QuantConvTranspose2d,
    nn.ConvTranspose3d: QuantConvTranspose3d, nn.Linear: QuantLinear,
}
FLOAT_MODULES = {v: k for k, v in QUANT_MODULES.items()}


# ---------------------------------------------------------------------------------- the pass
@dataclass
class SimModel:
    """The simulated model and its quantizers, by ONNX name."""

    gm: torch.fx.GraphModule
    activations: dict[str, FakeQuantize] = field(default_factory=dict)  # ONNX tensor -> quantizer
    weights: dict[str, FakeQuantize] = field(default_factory=dict)  # ONNX initializer -> quantizer
    biases: dict[str, FakeQuantize] = field(default_factory=dict)  # int32 bias initializer -> quantizer
    weight_params: dict[str, str] = field(default_factory=dict)  # ONNX initializer -> torch parameter name
    unmapped: list[str] = field(default_factory=list)  # planned names with no FX counterpart

    def quantizers(self) -> list[FakeQuantize]:
        seen: dict[int, FakeQuantize] = {}
        for q in [*self.activations.values(), *self.weights.values()]:
            seen.setdefault(id(q), q)
        return list(seen.values())


def insert_fake_quant(gm: torch.fx.GraphModule, graph: OnnxGraphView, placement: Placement) -> SimModel:
    """A copy of ``gm`` with fake-quant modules at the places ``placement`` names (not yet calibrated)."""
    sim_gm = copy_converted(gm)
    record = conversion_record(sim_gm)
    sim_gm.add_module("quantizers", nn.Module())
    sim = SimModel(sim_gm)
    producers = _tensor_producers(sim_gm, graph)
    by_node: dict[torch.fx.Node, FakeQuantize] = {}

    for site in placement.activations:
        node = producers.get(site.tensor)
        if node is None:
            sim.unmapped.append(site.tensor)
            continue
        if node in by_node:  # two ONNX names for one value (e.g. an alias): one quantizer
            sim.activations[site.tensor] = by_node[node]
            continue
        quantizer = FakeQuantize(site.tensor, "activation", site.spec)
        _insert_after(sim_gm, node, quantizer, f"{node.name}_out" if node.op != "placeholder" else f"{node.name}_in",
                      site.tensor, "activation")
        by_node[node] = quantizer
        sim.activations[site.tensor] = quantizer

    parameters = {o.initializer: (name, o.transform) for name, o in record.parameters.items() if o.initializer}
    for site in placement.weights:
        if site.initializer not in parameters:
            sim.unmapped.append(site.initializer)
            continue
        param_name, transform = parameters[site.initializer]
        if not _quantize_weight(sim, site, param_name, transform):
            sim.unmapped.append(site.initializer)
            continue
        if site.bias and site.bias in parameters:
            _quantize_bias(sim, site, *parameters[site.bias])
    sim_gm.graph.lint()
    sim_gm.recompile()
    return sim


def _tensor_producers(gm: torch.fx.GraphModule, graph: OnnxGraphView) -> dict[str, torch.fx.Node]:
    producers: dict[str, torch.fx.Node] = {}
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(graph.inputs):
        raise QuantizationError(f"the GraphModule has {len(placeholders)} inputs but the source ONNX graph has "
                                f"{len(graph.inputs)} ({graph.inputs}): is it the model it was converted from?")
    producers.update(zip(graph.inputs, placeholders))
    for node in gm.graph.nodes:
        for tensor in node.meta.get("onnx_outputs", []) or []:
            producers[tensor] = node
    return producers


def _insert_after(gm: torch.fx.GraphModule, node: torch.fx.Node, quantizer: FakeQuantize, key: str,
                  onnx_name: str, kind: str) -> torch.fx.Node:
    container = gm.get_submodule("quantizers")
    key = _unique(container, key)
    container.add_module(key, quantizer)
    with gm.graph.inserting_after(node):
        qnode = gm.graph.call_module(f"quantizers.{key}", (node,))
    node.replace_all_uses_with(qnode, delete_user_cb=lambda user: user is not qnode)
    origin = {"quantizes": onnx_name, "quantizer_kind": kind}
    qnode.meta.update(origin)
    conversion_record(gm).node_origins[qnode.name] = origin
    return qnode


def _quantize_weight(sim: SimModel, site: WeightSite, param_name: str, transform: str | None) -> bool:
    gm = sim.gm
    module_path, _, attr = param_name.rpartition(".")
    try:
        owner = gm.get_submodule(module_path) if module_path else gm
    except AttributeError:
        return False
    param = getattr(owner, attr, None)
    if not isinstance(param, torch.Tensor) or not param.is_floating_point():
        return False
    torch_axis = _torch_axis(site, transform, param.dim())
    if torch_axis is None:
        site.axis = None
    channels = param.shape[torch_axis] if torch_axis is not None else 1
    quantizer = FakeQuantize(site.initializer, "weight", site.spec, torch_axis, site.axis, channels)
    if attr == "weight" and type(owner) in QUANT_MODULES:
        owner.__class__ = QUANT_MODULES[type(owner)]
        owner.add_module("weight_quantizer", quantizer)
    else:
        readers = [n for n in gm.graph.nodes if n.op == "get_attr" and n.target == param_name]
        if not readers:
            return False
        for reader in readers:
            _insert_after(gm, reader, quantizer, f"{reader.name}_w", site.initializer, "weight")
    sim.weights[site.initializer] = quantizer
    sim.weight_params[site.initializer] = param_name
    return True


def _quantize_bias(sim: SimModel, site: WeightSite, param_name: str, transform: str | None) -> None:
    """A pass-through quantizer on the int32 bias of ``site`` (its encoding comes after calibration).

    Per output channel when the weight is, which needs the bias's channel axis in the torch
    parameter: a 1-D parameter, or one in the initializer's own layout. Otherwise the bias stays
    float in the simulation (the export still stores it as int32, a difference of at most half an
    ``input scale x weight scale`` step per channel).
    """
    gm = sim.gm
    module_path, _, attr = param_name.rpartition(".")
    try:
        owner = gm.get_submodule(module_path) if module_path else gm
    except AttributeError:
        return
    param = getattr(owner, attr, None)
    if not isinstance(param, torch.Tensor) or not param.is_floating_point():
        return
    per_channel = sim.weights[site.initializer].axis is not None and site.bias_axis is not None
    axis = None
    if per_channel:
        axis = 0 if param.dim() == 1 else site.bias_axis if transform is None else None
        if axis is None or axis >= param.dim():
            return
    spec = QuantSpec(bits=32, symmetric=True, per_channel=per_channel)
    quantizer = FakeQuantize(site.bias, "bias", spec, axis, site.bias_axis if per_channel else None,
                             param.shape[axis] if axis is not None else 1)
    if attr == "bias" and type(owner) in FLOAT_MODULES:
        owner.add_module("bias_quantizer", quantizer)
    else:
        readers = [n for n in gm.graph.nodes if n.op == "get_attr" and n.target == param_name]
        if not readers:
            return
        for reader in readers:
            _insert_after(gm, reader, quantizer, f"{reader.name}_b", site.bias, "bias")
    sim.biases[site.bias] = quantizer


def set_bias_encodings(sim: SimModel, encodings: Mapping[str, Encoding]) -> None:
    """Give each bias quantizer the int32 encoding the QDQ export uses, so that the simulation adds
    the same rounded biases as the exported model; a bias without one is passed through."""
    for name, quantizer in sim.biases.items():
        encoding = encodings.get(name)
        if encoding is None or (encoding.axis is not None and encoding.channels != quantizer.scale.numel()):
            quantizer.initialized = False
            continue
        if encoding.axis is None:
            quantizer.axis = quantizer.onnx_axis = None
        quantizer.set_encoding(encoding)


def _torch_axis(site: WeightSite, transform: str | None, rank: int) -> int | None:
    """Map the ONNX channel axis onto the torch parameter's layout (``transform`` is how the
    parameter was derived from the initializer)."""
    if site.axis is None:
        return None
    if transform is None:
        return site.axis if site.axis < rank else None
    if transform == "transpose" and rank == 2:
        return 1 - site.axis
    return None  # reshaped parameters fall back to one encoding per tensor


def _unique(container: nn.Module, key: str) -> str:
    key = "".join(c if c.isalnum() or c == "_" else "_" for c in key) or "q"
    if key[0].isdigit():
        key = f"q_{key}"
    candidate, i = key, 1
    while hasattr(container, candidate):
        candidate = f"{key}_{i}"
        i += 1
    return candidate


def strip_calibrators(sim: SimModel) -> None:
    for quantizer in sim.quantizers():
        quantizer.calibrator = None
