"""ONNX -> readable PyTorch source -> ``torch.fx.GraphModule``.

:class:`OnnxToFxConverter` is the public entry point. Reading, graph checks and ordering happen
in the native core; lowering writes ``model.py``; the module is instantiated on the meta device
and its parameters bound to the model's memory-mapped weights (no copy), then traced with ONNX
origins recorded on every FX node.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.fx

from . import _core, generated_modules
from .atomic_folder import atomic_folder
from .codegen.emitted import EmittedModule
from .codegen.render import RenderedModule, render
from .codegen.specialisation import DynamicDim
from .codegen.uninitialised import initialisers_skipped
from .conversion_record import ConversionRecord, attach_conversion_record
from .errors import ConversionError
from .fx_tracer import OriginMap, node_origins, onnx_origin_table, trace_with_origins
from .gc_pause import collector_paused
from .lowering import lower_graph
from .state_binding import bind_state

__all__ = ["OnnxToFxConverter", "ConversionResult", "convert_onnx_to_fx", "load_core_model"]

def load_core_model(model: Any) -> _core.Model:
    """A core ``Model`` from a path, serialized bytes or an ``onnx.ModelProto``."""
    if isinstance(model, (str, os.PathLike)):
        return _core.load_model(os.fspath(model))
    if isinstance(model, (bytes, bytearray, memoryview)):
        return _core.load_model_from_bytes(bytes(model))
    if hasattr(model, "SerializeToString"):
        return _core.load_model_from_bytes(model.SerializeToString())
    raise TypeError(f"expected a path, bytes or onnx.ModelProto, got {type(model).__name__}")


@dataclass
class ConversionResult:
    """Everything a conversion produced, kept for ``save`` and for reports."""

    graph_module: torch.fx.GraphModule
    module: torch.nn.Module
    source: str
    emitted: EmittedModule
    info: dict[str, Any] = field(default_factory=dict)


class OnnxToFxConverter:
    """Convert an ONNX model into a ``torch.fx.GraphModule`` and a plain-PyTorch ``model.py``.

    >>> gm = OnnxToFxConverter("model.onnx").convert()     # doctest: +SKIP
    >>> converter.save("out/")                              # doctest: +SKIP

    ``input_shapes`` fixes the sizes of inputs whose shape the model leaves open (name -> sizes);
    dims that stay open are traced symbolically, so the result accepts any batch size.
    ``idioms`` turns exporters' decompositions of standard functions back into one call each: True
    (GELU, SiLU, HardSwish, LayerNorm, RMSNorm, scaled dot-product attention), False (node by
    node), or the kinds to fuse, such as ``{*onnx2fx.idioms.DEFAULT_IDIOMS, "linear"}`` to write
    ``MatMul + Add`` as ``nn.Linear`` too.
    """

    def __init__(self, model: Any, input_shapes: Mapping[str, Sequence[int]] | None = None,
                 debug: bool = False, idioms: bool | Collection[str] = True) -> None:
        self.source_model = model
        self.input_shapes = dict(input_shapes or {})
        self.debug = debug
        self.idioms = idioms
        self.result: ConversionResult | None = None

    # ------------------------------------------------------------------------------ conversion
    def convert(self) -> torch.fx.GraphModule:
        with collector_paused():
            return self._convert()

    def _convert(self) -> torch.fx.GraphModule:
        start = time.perf_counter()
        core_model = load_core_model(self.source_model)
        read = time.perf_counter()
        emitted = lower_graph(core_model, self.input_shapes, idioms=self.idioms)
        lowered = time.perf_counter()
        title = _title(self.source_model, core_model)
        rendered = render(emitted, title)
        rendered_at = time.perf_counter()
        module = instantiate(rendered, emitted)
        instantiated = time.perf_counter()
        origins = _origin_map(rendered, emitted, module)
        gm = trace_with_origins(module, origins)
        gm.eval()
        traced = time.perf_counter()
        # Pickled with model_full.pt: quantization needs the source graph and where weights came from.
        source = os.path.abspath(self.source_model) if isinstance(self.source_model, (str, os.PathLike)) else None
        attach_conversion_record(gm, ConversionRecord(source, dict(emitted.parameter_origins), node_origins(gm),
                                                      tuple(emitted.idioms)))
        info = {
            "source": _source_name(self.source_model),
            "ir_version": core_model.ir_version,
            "opset_imports": dict(core_model.opset_imports),
            "producer": f"{core_model.producer_name} {core_model.producer_version}".strip(),
            "node_count": len(core_model.graph.nodes),
            "op_counts": _op_counts(core_model),
            # How compact the generated code is: statements of forward for the ONNX nodes above, and
            # the standard functions recognised in the exporter's decomposition (kind -> count).
            "forward_lines": len(emitted.forward_lines),
            "idioms": _idiom_counts(emitted),
            "inputs": emitted.input_onnx_names,
            "input_shapes": emitted.input_shapes,
            "outputs": emitted.output_onnx_names,
            "conversion_seconds": round(time.perf_counter() - start, 4),
            # Where that time went: reading the file, the initializers as torch tensors (copies of
            # misaligned ones), lowering the nodes, writing model.py, building Model on the meta
            # device with the weights bound, and tracing it into the GraphModule (torch.fx).
            "phase_seconds": {"read": round(read - start, 4), "weights": round(emitted.weight_seconds, 4),
                              "lower": round(lowered - read - emitted.weight_seconds, 4),
                              "render": round(rendered_at - lowered, 4),
                              "instantiate": round(instantiated - rendered_at, 4),
                              "trace": round(traced - instantiated, 4)},
            "warnings": list(emitted.warnings),
            # Dynamic input dimensions an op fixed to one size (model.py checks them at run time).
            # "size" is a number, or {"input", "axis"} where the dimension must equal another one.
            "specialised_dimensions": [{"input": s.dim.onnx_name, "axis": s.dim.axis, "size": _size_record(s.value),
                                        "node": s.node} for s in emitted.specialisations],
        }
        self.result = ConversionResult(gm, module, rendered.source, emitted, info)
        if self.debug:
            print(gm.graph)
        return gm

    @property
    def source_code(self) -> str:
        return self._require().source

    def _require(self) -> ConversionResult:
        if self.result is None:
            self.convert()
        assert self.result is not None
        return self.result

    # ------------------------------------------------------------------------------ saving
    def save(self, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
        """Write ``model.py``, ``weights.safetensors``, ``model_full.pt`` and ``conversion.json``.

        Everything is written into a staging folder beside ``out_dir`` and moved into place at
        the end (:func:`onnx2fx.atomic_folder.atomic_folder`), so a failure never leaves a
        half-written output folder behind. Other files already in ``out_dir`` stay.
        """
        result = self._require()
        out = Path(out_dir)
        with atomic_folder(out, merge=True) as staging:
            (staging / "model.py").write_text(result.source)
            save_weights(result.emitted.state, staging / "weights.safetensors")
            generated_modules.save_module(result.graph_module, staging / "model_full.pt")
            (staging / "conversion.json").write_text(json.dumps(self.conversion_record(), indent=2) + "\n")
        names = ("model.py", "weights.safetensors", "model_full.pt", "conversion.json")
        return {n: out / n for n in names}

    def conversion_record(self) -> dict[str, Any]:
        """The content of ``conversion.json``: model facts, ONNX -> FX mapping, weight origins."""
        result = self._require()
        emitted = result.emitted
        return {
            "format_version": 1,
            **result.info,
            "tensors": {name: code for name, code in emitted.tensor_codes.items()},
            "parameters": {
                name: {"initializer": o.initializer, "transform": o.transform,
                       "shape": list(emitted.state[name].shape), "dtype": str(emitted.state[name].dtype)}
                for name, o in emitted.parameter_origins.items()
            },
            "modules": emitted.module_origins,
            "fx_nodes": onnx_origin_table(result.graph_module),
        }


def convert_onnx_to_fx(model: Any, debug: bool = False,
                       input_shapes: Mapping[str, Sequence[int]] | None = None,
                       idioms: bool | Collection[str] = True) -> torch.fx.GraphModule:
    """Convert an ``onnx.ModelProto`` or a path to a ``torch.fx.GraphModule``.

    ``debug=True`` prints the FX graph; ``idioms`` as for :class:`OnnxToFxConverter`.
    """
    return OnnxToFxConverter(model, input_shapes=input_shapes, debug=debug, idioms=idioms).convert()


# ---------------------------------------------------------------------------------- helpers
def instantiate(rendered: RenderedModule, emitted: EmittedModule) -> torch.nn.Module:
    """Execute the generated source and build ``Model`` with the ONNX weights bound, uncopied."""
    digest = hashlib.sha1(rendered.source.encode()).hexdigest()[:12]
    namespace = generated_modules.register(f"{generated_modules.PREFIX}{digest}", rendered.source)
    with torch.device("meta"), initialisers_skipped():
        model = namespace.Model()
    bind_state(model, emitted.state)
    return model.eval()


def _origin_map(rendered: RenderedModule, emitted: EmittedModule, module: torch.nn.Module) -> OriginMap:
    holders: dict[str, list[str]] = {}
    for tensor, code in emitted.tensor_codes.items():
        if code:
            holders.setdefault(code, []).append(tensor)
    line_outputs = {line: [holders.get(var, []) for var in targets]
                    for line, targets in rendered.line_targets.items()}
    filename = type(module).forward.__code__.co_filename
    return OriginMap(filename, rendered.line_nodes, {n: i.op_type for n, i in emitted.nodes.items()}, line_outputs)


_SAFETENSORS_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64",
    torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
    torch.uint16: "U16", torch.uint32: "U32", torch.uint64: "U64", torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
}


def save_weights(state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Write a .safetensors file tensor by tensor, straight from each tensor's memory.

    The usual writer first builds the whole file in memory, which would double the resident
    memory of a large model. Tensors are ordered by element size (largest first) so that every
    tensor starts at an offset aligned for its type, as the format's reference writer does.
    """
    tensors = sorted(((name, t.detach()) for name, t in state.items()),
                     key=lambda item: (-item[1].element_size(), item[0]))
    header: dict[str, Any] = {"__metadata__": {"format": "pt", "producer": "onnx2fx"}}
    offset = 0
    for name, t in tensors:
        if t.dtype not in _SAFETENSORS_DTYPES:
            raise ConversionError(f"weight {name!r} has dtype {t.dtype}, which safetensors cannot store")
        size = t.numel() * t.element_size()
        header[name] = {"dtype": _SAFETENSORS_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset,
                                                                                                        offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as f:
        f.write(len(encoded).to_bytes(8, "little"))
        f.write(encoded)
        for _, t in tensors:
            flat = t.contiguous().reshape(-1)
            if flat.numel():
                f.write(memoryview(flat.view(torch.uint8).numpy()))


def _size_record(value: int | DynamicDim) -> int | dict[str, Any]:
    return value if isinstance(value, int) else {"input": value.onnx_name, "axis": value.axis}


def _op_counts(core_model: _core.Model) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in core_model.graph.nodes:
        key = node.op_type if not node.domain or node.domain == "ai.onnx" else f"{node.domain}::{node.op_type}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def _idiom_counts(emitted: EmittedModule) -> dict[str, int]:
    counts: dict[str, int] = {}
    for use in emitted.idioms:
        counts[use.kind] = counts.get(use.kind, 0) + 1
    return dict(sorted(counts.items()))


def _source_name(model: Any) -> str:
    return os.fspath(model) if isinstance(model, (str, os.PathLike)) else "<in-memory model>"


def _title(model: Any, core_model: _core.Model) -> str:
    name = Path(os.fspath(model)).name if isinstance(model, (str, os.PathLike)) else "an in-memory ONNX model"
    opset = core_model.opset_imports.get("", "?")
    return f"PyTorch module converted from {name} (opset {opset})."
