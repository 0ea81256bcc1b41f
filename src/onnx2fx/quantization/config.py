"""Quantization settings: what is quantized, with how many bits, and how ranges are calibrated.

A :class:`QuantConfig` plays the role of a backend config: the defaults describe the common
integer backends (weights int8 symmetric per output channel, activations 8-bit asymmetric per
tensor, int32 bias, Conv/Gemm/MatMul/Add fused with a following activation), and a YAML or JSON
file can change bit widths, symmetry, granularity, the fused patterns and which ops or nodes stay
in float. Every key is checked, so a typo is an error rather than a silently ignored setting::

    weights:     {bits: 8, symmetric: true, per_channel: true, scheme: minmax}
    activations: {bits: 8, symmetric: false}
    scheme: percentile          # activation calibration: minmax | percentile | mse | entropy
    weight_scheme: auto         # weight ranges: minmax | mse (searched per channel, weight_search.py);
                                # auto: mse when scheme is mse, else minmax
    weight_symmetry: config     # config | search: per weight tensor, asymmetric when clearly better
    percentile: 99.999          # the default, as in onnxruntime
    minmax_ops: [Softmax]       # op types whose outputs keep their observed range under any scheme
    float_ops: [Softmax]        # ONNX op types left in float
    float_nodes: [/head/Gemm]   # ONNX node names left in float
    fuse_elementwise: true      # no quantizer inside an elementwise chain of one tensor (a decomposed
                                # HardSwish, a SiLU, a scalar affine; placement.py, rule 4)
    op_types:  {Sigmoid: {activations: {bits: 16}}}
    nodes:     {/stem/Conv: {weights: {bits: 4}}}
    cle: true                   # cross-layer equalization before calibration (see cle.py)
    bias_correction: true       # empirical bias correction after calibration (see bias_correction.py)
    adaround: true              # learned weight rounding after calibration (see adaround.py)
    adaround_iterations: 500    # its optimisation steps per layer
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import QuantizationError

SCHEMES = ("minmax", "percentile", "mse", "entropy")
WEIGHT_SCHEMES = ("auto", "minmax", "mse")
WEIGHT_SYMMETRIES = ("config", "search")
BITS = (4, 8, 16)
ENCODING_VERSIONS = ("0.6.1", "1.0.0", "2.0.0")

# Producer -> follower pairs computed as one kernel by integer backends: the producer's output is
# never materialised, so it gets no quantizer.
DEFAULT_SUPERGROUPS: tuple[tuple[str, str], ...] = (
    ("Conv", "Relu"), ("Conv", "Clip"), ("Conv", "BatchNormalization"),
    ("ConvTranspose", "Relu"), ("ConvTranspose", "Clip"), ("ConvTranspose", "BatchNormalization"),
    ("BatchNormalization", "Relu"), ("BatchNormalization", "Clip"),
    ("Gemm", "Relu"), ("Gemm", "Clip"), ("MatMul", "Relu"), ("Add", "Relu"),
    # MatMul followed by the Add of a constant bias is a Gemm (an Add fuses only as a bias: its
    # other operand must be a constant, so a residual Add still gets its quantizer)
    ("MatMul", "Add"),
)

# Ops whose outputs keep their observed range whatever the calibration scheme. A Softmax output is a
# probability: bounded by construction, with its information in the rare large values (sharp
# attention), exactly the tail that KL or percentile clipping cuts; the entropy scheme clipped a
# trained ViT's attention probabilities to a quarter of their range and lost most of its output
# SQNR (tests/test_ptq.py checks both settings on an attention block).
DEFAULT_MINMAX_OPS: tuple[str, ...] = ("Softmax",)

# Ops whose output holds (a subset or rearrangement of) their first input's values: requantizing
# would only add error, so the output shares the input's encoding. Concat is decided after
# calibration (shared only when all its inputs carry the same encoding).
DEFAULT_SHARED_OPS: tuple[str, ...] = (
    "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "MaxPool", "GlobalMaxPool", "Identity",
    "Dropout", "Slice", "Split", "Gather", "GatherElements", "Expand", "Tile", "DepthToSpace",
    "SpaceToDepth", "ReduceMax", "ReduceMin",
)


@dataclass(frozen=True)
class QuantSpec:
    """How one kind of tensor is quantized."""

    bits: int = 8
    symmetric: bool = False
    per_channel: bool = False

    def validate(self, where: str) -> None:
        if self.bits not in BITS:
            raise QuantizationError(f"{where}.bits is {self.bits!r}; supported bit widths are {list(BITS)}")


@dataclass(frozen=True)
class QuantConfig:
    """Everything that decides the quantized model, apart from the calibration data."""

    weights: QuantSpec = QuantSpec(bits=8, symmetric=True, per_channel=True)
    activations: QuantSpec = QuantSpec(bits=8, symmetric=False, per_channel=False)
    scheme: str = "minmax"
    weight_scheme: str = "auto"  # "auto": the searched weight ranges go with the mse scheme
    weight_symmetry: str = "config"  # "search": each weight tensor may switch to an asymmetric grid
    percentile: float = 99.999  # onnxruntime's Percentile default
    bins: int = 2048
    bias_bits: int = 32
    quantize_inputs: bool = True
    fuse: bool = True
    # no quantizer inside an elementwise chain of one tensor (a decomposed HardSwish, SiLU, scalar
    # affine): its values are a function of the chain's 8-bit input, computed in one step
    fuse_elementwise: bool = True
    supergroups: tuple[tuple[str, str], ...] = DEFAULT_SUPERGROUPS
    shared_ops: tuple[str, ...] = DEFAULT_SHARED_OPS
    minmax_ops: tuple[str, ...] = DEFAULT_MINMAX_OPS
    float_ops: tuple[str, ...] = ()
    float_nodes: tuple[str, ...] = ()
    op_types: Mapping[str, Mapping[str, QuantSpec]] = field(default_factory=dict)
    nodes: Mapping[str, Mapping[str, QuantSpec]] = field(default_factory=dict)
    cle: bool = False
    bias_correction: bool = False
    adaround: bool = False
    adaround_iterations: int = 500  # steps per layer

    # ------------------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path) -> QuantConfig:
        """Read a ``.yaml``/``.yml`` or ``.json`` config file."""
        path = Path(path)
        if not path.is_file():
            raise QuantizationError(f"quantization config {path} does not exist")
        text = path.read_text()
        if path.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise QuantizationError(f"{path} is YAML but PyYAML is not installed; "
                                        "install it or write the config as JSON") from None
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise QuantizationError(f"{path} is not valid YAML: {exc}") from None
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise QuantizationError(f"{path} is not valid JSON: {exc}") from None
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise QuantizationError(f"{path} must hold a mapping of settings, not a {type(data).__name__}")
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> QuantConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise QuantizationError(f"{source}: unknown key(s) {unknown}; known keys are {sorted(known)}")
        kwargs: dict[str, Any] = {}
        base = cls()
        for key, value in data.items():
            where = f"{source}: {key}"
            if key in ("weights", "activations"):
                kwargs[key] = _spec(value, getattr(base, key), where)
            elif key in ("op_types", "nodes"):
                if not isinstance(value, Mapping):
                    raise QuantizationError(f"{where} must map names to {{weights: ..., activations: ...}}")
                kwargs[key] = {str(name): _overrides(v, f"{where}.{name}") for name, v in value.items()}
            elif key in ("float_ops", "float_nodes", "shared_ops", "minmax_ops"):
                kwargs[key] = tuple(_str_list(value, where))
            elif key == "supergroups":
                groups = []
                for item in _list(value, where):
                    pair = _str_list(item, where)
                    if len(pair) != 2:
                        raise QuantizationError(f"{where}: a supergroup is a [producer, follower] pair, got {item!r}")
                    groups.append((pair[0], pair[1]))
                kwargs[key] = tuple(groups)
            elif key in ("quantize_inputs", "fuse", "fuse_elementwise", "cle", "bias_correction", "adaround"):
                kwargs[key] = _bool(value, where)
            elif key in ("bins", "bias_bits", "adaround_iterations"):
                kwargs[key] = _int(value, where)
            elif key == "percentile":
                kwargs[key] = _float(value, where)
            else:
                kwargs[key] = str(value)
        config = replace(base, **kwargs)
        config.validate()
        return config

    def with_overrides(self, *, scheme: str | None = None, weight_bits: int | None = None,
                       activation_bits: int | None = None, per_channel: bool | None = None,
                       cle: bool | None = None, bias_correction: bool | None = None, adaround: bool | None = None,
                       adaround_iterations: int | None = None) -> QuantConfig:
        """The command-line flags win over the file: apply those that were given."""
        config = self
        if adaround is not None:
            config = replace(config, adaround=adaround)
        if adaround_iterations is not None:
            config = replace(config, adaround_iterations=adaround_iterations)
        if cle is not None:
            config = replace(config, cle=cle)
        if bias_correction is not None:
            config = replace(config, bias_correction=bias_correction)
        if scheme is not None:
            config = replace(config, scheme=scheme)
        if weight_bits is not None:
            config = replace(config, weights=replace(config.weights, bits=weight_bits))
        if activation_bits is not None:
            config = replace(config, activations=replace(config.activations, bits=activation_bits))
        if per_channel is not None:
            config = replace(config, weights=replace(config.weights, per_channel=per_channel))
        config.validate()
        return config

    def validate(self) -> None:
        self.weights.validate("weights")
        self.activations.validate("activations")
        if self.scheme not in SCHEMES:
            raise QuantizationError(f"scheme {self.scheme!r} is not one of {list(SCHEMES)}")
        if self.weight_scheme not in WEIGHT_SCHEMES:
            raise QuantizationError(f"weight_scheme {self.weight_scheme!r} is not one of {list(WEIGHT_SCHEMES)}")
        if self.weight_symmetry not in WEIGHT_SYMMETRIES:
            raise QuantizationError(f"weight_symmetry {self.weight_symmetry!r} is not one of "
                                    f"{list(WEIGHT_SYMMETRIES)}")
        if not 50.0 < self.percentile <= 100.0:
            raise QuantizationError(f"percentile {self.percentile} must be in (50, 100]")
        if not 128 <= self.bins <= 1 << 16:
            raise QuantizationError(f"bins {self.bins} must be between 128 and 65536")
        if self.adaround_iterations < 1:
            raise QuantizationError(f"adaround_iterations {self.adaround_iterations} must be at least 1")
        if self.bias_bits != 32:
            raise QuantizationError(f"bias_bits {self.bias_bits}: only int32 biases are supported")
        for table, name in ((self.op_types, "op_types"), (self.nodes, "nodes")):
            for key, specs in table.items():
                for kind, spec in specs.items():
                    spec.validate(f"{name}.{key}.{kind}")

    # ------------------------------------------------------------------------------ lookup
    @property
    def resolved_weight_scheme(self) -> str:
        """How weight ranges are chosen: ``weight_scheme``, where ``auto`` follows the activation
        scheme (``mse`` searches weights too; the other schemes keep min/max weights)."""
        if self.weight_scheme != "auto":
            return self.weight_scheme
        return "mse" if self.scheme == "mse" else "minmax"

    def is_float(self, op_type: str, node_name: str) -> bool:
        """Whether the config leaves this ONNX node in float (no quantized output, no quantized weights)."""
        return op_type in self.float_ops or node_name in self.float_nodes

    def spec_for(self, kind: str, op_type: str, node_name: str) -> QuantSpec:
        """The spec for ``kind`` ("weights" or "activations") of one node: node override, then op
        type override, then the default."""
        for table, key in ((self.nodes, node_name), (self.op_types, op_type)):
            if key in table and kind in table[key]:
                return table[key][kind]
        return getattr(self, kind)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["supergroups"] = [list(p) for p in self.supergroups]
        for key in ("shared_ops", "minmax_ops", "float_ops", "float_nodes"):
            data[key] = list(data[key])
        return data


# ---------------------------------------------------------------------------------- parsing helpers
def _spec(value: Any, base: QuantSpec, where: str) -> QuantSpec:
    if not isinstance(value, Mapping):
        raise QuantizationError(f"{where} must be a mapping like {{bits: 8, symmetric: false}}")
    unknown = sorted(set(value) - set(QuantSpec.__dataclass_fields__))
    if unknown:
        raise QuantizationError(f"{where}: unknown key(s) {unknown}; known keys are bits, symmetric, per_channel")
    kwargs: dict[str, Any] = {}
    if "bits" in value:
        kwargs["bits"] = _int(value["bits"], f"{where}.bits")
    for key in ("symmetric", "per_channel"):
        if key in value:
            kwargs[key] = _bool(value[key], f"{where}.{key}")
    spec = replace(base, **kwargs)
    spec.validate(where)
    return spec


def _overrides(value: Any, where: str) -> dict[str, QuantSpec]:
    if not isinstance(value, Mapping) or set(value) - {"weights", "activations"}:
        raise QuantizationError(f"{where} must be a mapping with keys 'weights' and/or 'activations'")
    defaults = QuantConfig()
    return {kind: _spec(spec, getattr(defaults, kind), f"{where}.{kind}") for kind, spec in value.items()}


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise QuantizationError(f"{where} must be a list")
    return list(value)


def _str_list(value: Any, where: str) -> list[str]:
    items = _list(value, where)
    if not all(isinstance(v, str) for v in items):
        raise QuantizationError(f"{where} must be a list of strings")
    return items


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise QuantizationError(f"{where} must be true or false, not {value!r}")


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise QuantizationError(f"{where} must be an integer, not {value!r}")
    return value


def _float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise QuantizationError(f"{where} must be a number, not {value!r}")
    return float(value)
