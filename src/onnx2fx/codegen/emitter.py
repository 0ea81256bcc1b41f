"""The emitter: what op handlers call to produce generated PyTorch code.

Every call both *writes a line* of the generated ``forward`` (or ``__init__``) and *evaluates*
the same torch function on fake tensors with symbolic sizes (:mod:`.fake_eval`), so the next
handler knows the dtype and shape of what it receives without running the model. When every input
of a call is a compile-time constant (and none of them is a trainable weight) the call is evaluated
for real instead and no code is written: this is how shape arithmetic folds away.

What has been emitted so far is one :class:`~.state.EmitterState` (undone by :meth:`Emitter.attempt`);
the finished result is an :class:`~.emitted.EmittedModule`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from ..conversion_record import ParameterOrigin
from ..errors import ConversionError, UnsupportedOperatorError
from .emitted import EmittedCall, EmittedModule, Helper, NodeInfo
from .fake_eval import (
    SAME_SHAPE_FLOAT_FUNCTIONS,
    SOFTMAX_FUNCTIONS,
    OutSpec,
    evaluate_on_fakes,
    evaluate_on_meta,
    linear_on_meta,
    meta_like,
    same_layout_on_meta,
    softmax_on_meta,
    symbolic,
    unknown_tensor,
)
from .formatting import format_arguments, format_code, format_index, literal_tensor
from .helpers import copied_helper
from .names import NameScope, layer_name, sanitize_identifier
from .nested import as_tuple, map_leaves, walk
from .shape_env import ConversionShapeEnv
from .shape_rules import module_result_sizes, subscript
from .specialisation import DynamicDim, Specialisation, new_specialisations
from .state import EmitterState
from .uninitialised import initialisers_skipped
from .values import SymElem, Value

# A constant computation whose result has more elements than this is left to run time.
MAX_FOLDED_ELEMENTS = 1 << 20
# Integer or bool constants up to this many elements are written inline as literals.
MAX_LITERAL_ELEMENTS = 16


def _builtin_as_shape_tensor(values: list) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)


# Code such as "torch.relu" or "F.pad" -> the function it names (resolved once per process).
_LIBRARY_FUNCTIONS: dict[str, Callable[..., Any]] = {}
_LIBRARY_MODULES = frozenset({"torch", "nn", "F", "math"})
# "nn.Conv2d(64, 64, ...)" -> that layer on the meta device, shared by every layer declared so.
_LIBRARY_LAYERS: dict[str, nn.Module] = {}


class Emitter:
    """Accumulates the generated module while the graph is lowered node by node."""

    def __init__(self, fake_mode: FakeTensorMode | None = None) -> None:
        self.fake_mode = fake_mode or FakeTensorMode(shape_env=ConversionShapeEnv(), allow_non_fake_inputs=True)
        self.attrs = NameScope()
        self.locals = NameScope()
        self.generated = EmitterState()
        self.node: NodeInfo | None = None
        self._namespace: dict[str, Any] = {"torch": torch, "nn": nn, "F": F, "math": math}
        # id(constant) -> (the constant, its fake). The constant is kept so that its id cannot be
        # reused by a later tensor, which would otherwise be given this one's shape.
        self._fake_cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.nodes: dict[str, NodeInfo] = {}
        self.scope: Any = None  # set by lowering while a node is lowered (for subgraphs)
        # In a generated function (a loop body): constants that became its parameters, with their values.
        self.lifted: list[tuple[str, Value]] | None = None
        # Layers named after the subgraph node that declares them rather than the enclosing node
        # (in a generated module, where that node's name would be every layer's).
        self.layers_by_own_node = False
        # Dynamic input dimensions by their symbol, and those an op fixed to one size (shared with
        # child emitters, which evaluate in the same shape environment).
        self.dynamic_dims: dict[Any, DynamicDim] = {}
        self.specialised: dict[Any, Specialisation] = {}
        self._last_said: tuple[Any, list[tuple[Any, Any]]] | None = None

    # ----------------------------------------------------------------------------- node context
    def begin_node(self, node: NodeInfo) -> None:
        self.node = node
        self.nodes[node.name] = node

    def unsupported(self, attribute: str | None, detail: str) -> UnsupportedOperatorError:
        """An error naming this node, op, domain, opset and what is not handled. Raise it."""
        n = self.node
        assert n is not None
        where = f"node {n.name!r} ({n.op_type}, domain {n.domain or 'ai.onnx'!r}, opset {n.opset})"
        what = f"attribute {attribute}: {detail}" if attribute else detail
        return UnsupportedOperatorError(
            f"{where}: {what}", node=n.name, op_type=n.op_type, domain=n.domain, opset=n.opset,
            attribute=attribute,
        )

    def error(self, detail: str) -> ConversionError:
        n = self.node
        where = f"node {n.name!r} ({n.op_type})" if n else "graph"
        return ConversionError(f"{where}: {detail}")

    def warn(self, message: str) -> None:
        prefix = f"node {self.node.name!r} ({self.node.op_type}): " if self.node else ""
        self.generated.warnings.append(prefix + message)

    # ----------------------------------------------------------------------------- values
    def input(self, onnx_name: str, fake: torch.Tensor | None) -> Value:
        ident = self.locals.fresh(onnx_name, "input")
        return Value(onnx_name, fake, code=ident)

    def graph_input(self, onnx_name: str, fake: torch.Tensor | None) -> Value:
        """An input of the main graph: a parameter of ``forward`` whose dynamic dimensions are
        watched for specialisation (:meth:`_note_specialisations`)."""
        value = self.input(onnx_name, fake)
        for axis, size in enumerate(fake.shape if fake is not None else ()):
            if isinstance(size, torch.SymInt) and size.node.expr.is_symbol:
                self.dynamic_dims[size.node.expr] = DynamicDim(value.code or "", onnx_name, axis)
                # The cache of fake results hits for repeated static sizes; on symbolic sizes it
                # rarely does, and building its entries cost a third of a dynamic conversion.
                self.fake_mode.cache_enabled = False
        return value

    def const(self, tensor: torch.Tensor, onnx_name: str = "const", initializer: str | None = None) -> Value:
        return Value(onnx_name, None, const=tensor, origin_initializer=initializer)

    def elements_value(self, elements: Sequence[SymElem | int], scalar: bool = False,
                       dtype: torch.dtype = torch.int64) -> Value:
        """A small integer tensor whose elements are known (possibly symbolically)."""
        elems = [SymElem.of(e) for e in elements]
        if all(e.is_static for e in elems):
            data = torch.tensor([e.value for e in elems], dtype=dtype)
            return Value("shape", None, const=data.reshape(()) if scalar else data, elements=elems,
                         scalar=scalar)
        with self.fake_mode:
            fake = torch.empty(() if scalar else (len(elems),), dtype=dtype)
        return Value("shape", fake, elements=elems, scalar=scalar)

    def fake(self, v: Value) -> torch.Tensor:
        if v.fake is not None:
            return v.fake
        assert v.const is not None
        key = id(v.const)
        cached = self._fake_cache.get(key)
        if cached is None or cached[0] is not v.const:
            cached = (v.const, meta_like(v.const))
            self._fake_cache[key] = cached
        v.fake = cached[1]
        return v.fake

    def dim(self, x: Value, axis: int) -> SymElem:
        """Size of ``x`` along ``axis``: an int when static, else ``x.shape[axis]`` in code."""
        if x.const is not None:
            return SymElem.of(int(x.const.shape[axis]))
        size = self.fake(x).shape[axis]
        if isinstance(size, int):
            return SymElem.of(size)
        return SymElem(f"{self.ref(x)}.shape[{axis if axis >= 0 else axis + x.rank}]", size)

    def shape(self, x: Value) -> list[SymElem]:
        return [self.dim(x, i) for i in range(x.rank)]

    def int_list(self, v: Value | None) -> list[SymElem] | None:
        """The elements of a small integer tensor known at conversion time, else ``None``."""
        if v is None:
            return None
        if v.elements is not None:
            return list(v.elements)
        if v.const is not None and not v.const.is_floating_point() and v.const.numel() <= 4096:
            return [SymElem.of(int(e)) for e in v.const.reshape(-1).tolist()]
        return None

    def static_ints(self, v: Value | None, what: str) -> list[int] | None:
        """Integers that must be known at conversion time (axes, pads, ...)."""
        if v is None:
            return None
        elems = self.int_list(v)
        if elems is None or not all(e.is_static for e in elems):
            raise self.unsupported(None, f"input {what!r} must be a constant known at conversion time")
        return [int(e.value) for e in elems]

    def static_floats(self, v: Value | None, what: str) -> list[float] | None:
        if v is None:
            return None
        if v.const is None:
            raise self.unsupported(None, f"input {what!r} must be a constant known at conversion time")
        return [float(e) for e in v.const.reshape(-1).tolist()]

    # ----------------------------------------------------------------------------- references
    def ref(self, v: Value) -> str:
        """Code for ``v`` inside ``forward``, materialising a constant the first time it is used."""
        if v.code is not None:
            return v.code
        if "sequence" in v.meta:  # a sequence of known length is a list of tensors
            return "[" + ", ".join(self.ref(e) for e in v.meta["sequence"]) + "]"
        if "optional" in v.meta:  # an optional known at conversion time: its value or None
            return self.ref(v.meta["optional"]) if v.meta["optional"] is not None else "None"
        if v.const is None:
            assert v.elements is not None, f"value {v.onnx_name!r} was never produced"
            helper = self.helper(_builtin_as_shape_tensor, leaf=True)
            items = ", ".join(e.code for e in v.elements)
            code = f"{helper}([{items}])" + (".reshape(())" if v.scalar else "")
            return self._materialise(v, self._assign(code, v.onnx_name))
        t = v.const
        if t.numel() <= MAX_LITERAL_ELEMENTS and (not t.is_floating_point() or t.numel() == 1) \
                and t.dtype not in (torch.bfloat16, torch.float16) and not t.is_complex() and not v.trainable:
            return literal_tensor(t)
        if self.lifted is not None:  # in a generated function: the constant becomes a parameter
            code = self._materialise(v, self.locals.fresh(v.origin_initializer or v.onnx_name, "const"))
            self.lifted.append((code, v))
            return code
        attrs = self.generated.initializer_attrs
        if v.origin_initializer is not None and v.origin_initializer in attrs:
            return self._materialise(v, f"self.{attrs[v.origin_initializer]}")
        attr = self.attrs.fresh(v.origin_initializer or v.onnx_name, "const")
        if t.is_floating_point():
            self.generated.init_lines.append(
                f"self.{attr} = nn.Parameter(torch.empty({tuple(t.shape)!r}, dtype={t.dtype}))")
        else:
            self.generated.init_lines.append(
                f"self.register_buffer({attr!r}, torch.empty({tuple(t.shape)!r}, dtype={t.dtype}))")
        self.generated.state[attr] = t
        self.generated.parameter_origins[attr] = ParameterOrigin(v.origin_initializer)
        if v.origin_initializer is not None:
            attrs[v.origin_initializer] = attr
        return self._materialise(v, f"self.{attr}")

    def _materialise(self, v: Value, code: str) -> str:
        """Give ``v`` its code, remembered so that :meth:`attempt` can take it back."""
        v.code = code
        self.generated.materialised.append(v)
        return code

    def scalar_or_ref(self, v: Value, other: Value | None = None) -> str:
        """A Python number for a one-element constant when that cannot change the result's shape."""
        t = v.const
        if t is not None and t.numel() == 1 and not t.is_complex() and v.origin_initializer is None:
            if t.dim() == 0 or (other is not None and other.rank >= t.dim()):
                number = t.reshape(()).item()
                return SymElem.of(number if not isinstance(number, bool) else bool(number)).code
        return self.ref(v)

    # ----------------------------------------------------------------------------- helpers
    def helper(self, fn: Callable[..., Any], leaf: bool = False) -> str:
        """Copy a module-level torch-only function into the generated file; return its name.

        ``leaf=True`` registers it with ``torch.fx.wrap`` so tracing records one call instead of
        tracing through it (for helpers whose body cannot take fx proxies).
        """
        copied = copied_helper(fn, leaf)
        if copied.name not in self.generated.helpers:
            self.generated.helpers[copied.name] = copied
            self._namespace[copied.name] = fn
        return copied.name

    def generated_helper(self, hint: str, source: str, leaf: bool = False) -> str:
        """Add a function written by a lowering (``def {name}(...)``) to the generated file.

        ``source`` uses ``{name}`` for the function's own name and may call the helpers already
        added; the function is also compiled here, for conversion-time evaluation."""
        name = f"_{sanitize_identifier(hint)}"
        counter = 1
        while name in self.generated.helpers or name in self._namespace:
            name = f"_{sanitize_identifier(hint)}_{counter}"
            counter += 1
        text = source.replace("{name}", name)
        exec(compile(text, f"<onnx2fx {name}>", "exec"), self._namespace)  # noqa: S102 - code built by lowerings
        self.generated.helpers[name] = Helper(name, text, self._namespace[name], leaf)
        return name

    def child(self) -> Emitter:
        """An emitter for the body of a generated function: its own local names, the same fake
        tensor mode, helpers and namespace as this one."""
        child = Emitter(self.fake_mode)
        child.generated.helpers, child._namespace = self.generated.helpers, self._namespace
        child.node = self.node
        child.lifted = []
        child.dynamic_dims, child.specialised = self.dynamic_dims, self.specialised
        return child

    # ----------------------------------------------------------------------------- emission
    def call(self, fn: str, *args: Any, n_outputs: int = 1, fold: bool = True,
             out_spec: Sequence[OutSpec] | None = None, **kwargs: Any) -> Any:
        """Emit ``out = fn(*args, **kwargs)``; ``fn`` is code such as ``torch.relu`` or ``F.pad``.

        ``out_spec`` (one ``(sizes, dtype)`` per output) is for calls whose result shape depends on
        tensor data (a shape or axes given as a run-time input): the call is then not evaluated on
        fake tensors; a size given as ``None`` is known only at run time (an unbacked symbol).
        """
        target = self._resolve(fn)
        if out_spec is None and fn in SAME_SHAPE_FLOAT_FUNCTIONS and args and isinstance(args[0], Value) \
                and args[0].const is None and args[0].dtype.is_floating_point \
                and all(type(a) in (int, float, bool) for a in args[1:]) \
                and not any(isinstance(v, Value) for v in walk(list(kwargs.values()))):
            # An elementwise function of one float tensor (and numbers: ``F.leaky_relu(x, 0.2)``) keeps
            # its sizes (and, on a dense input, its strides): no need to run torch's reference
            # implementation to learn them (with symbolic sizes: sympy on every size; on meta tensors:
            # Python reference code, milliseconds the first time in a process).
            fake = self.fake(args[0])
            if symbolic(fake):
                out_spec = [(self.shape(args[0]), args[0].dtype)]
            elif (same := same_layout_on_meta(fake)) is not None:  # not a constant: nothing to fold
                return self._emit(fn, lambda *_: same, args, kwargs, n_outputs, fold, evaluated=True)
        elif out_spec is None and fn in SOFTMAX_FUNCTIONS and len(args) == 1 and isinstance(args[0], Value) \
                and args[0].const is None and args[0].dtype.is_floating_point and set(kwargs) == {"dim"} \
                and type(kwargs["dim"]) is int and not symbolic(fake := self.fake(args[0])) \
                and (result := softmax_on_meta(fake, kwargs["dim"])) is not None:
            return self._emit(fn, lambda *_: result, args, kwargs, n_outputs, fold, evaluated=True)
        return self._emit(fn, target, args, kwargs, n_outputs, fold, out_spec=out_spec)

    def unknown(self, sizes: Sequence[SymElem | int | None], dtype: torch.dtype) -> torch.Tensor:
        """A fake tensor whose ``None`` sizes are only known at run time."""
        return unknown_tensor(self.fake_mode, sizes, dtype)

    @contextmanager
    def attempt(self) -> Iterator[None]:
        """Undo everything emitted inside the block when it raises (the exception propagates), so a
        handler can try one lowering and fall back to another."""
        snapshot = self.generated.snapshot()
        try:
            yield
        except Exception:
            self.generated.restore(snapshot)
            raise

    def method(self, obj: Value, name: str, *args: Any, n_outputs: int = 1, **kwargs: Any) -> Any:
        """Emit ``out = obj.name(*args, **kwargs)``."""
        target = getattr(torch.Tensor, name)
        return self._emit(f"{{obj}}.{name}", target, (obj, *args), kwargs, n_outputs, True, method=True)

    def operator(self, symbol: str, left: Any, right: Any) -> Value:
        """Emit ``out = left <symbol> right`` for Python's arithmetic operators."""
        import operator as op

        fns = {"+": op.add, "-": op.sub, "*": op.mul, "/": op.truediv, "//": op.floordiv,
               "%": op.mod, "**": op.pow, "@": op.matmul, "&": op.and_, "|": op.or_, "^": op.xor}
        return self._emit(f"{{0}} {symbol} {{1}}", fns[symbol], (left, right), {}, 1, True, infix=True)

    def getitem(self, x: Value, index: Sequence[Any]) -> Value:
        """Emit ``out = x[i0, i1, ...]``: items are ``slice`` objects (bounds SymElem/int/None),
        ints, or Values used as index tensors. Trailing full slices are dropped."""
        items = list(index)
        while items and items[-1] == slice(None):
            items.pop()
        if not items:
            return x
        code = ", ".join(format_index(i, self.ref) for i in items)
        # Slices travel as dicts of their bounds, so that the evaluation sees their symbolic sizes
        # and index tensors among its arguments (and gives them the right kind of shape-only tensor).
        index = [{"start": i.start, "stop": i.stop, "step": i.step} if isinstance(i, slice) else i for i in items]
        return self._emit(f"{{obj}}[{code}]", subscript, (x, index), {}, 1, True, subscript=True)

    def add_module(self, hint: str, ctor: str, *ctor_args: Any, **ctor_kwargs: Any) -> str:
        """Declare ``self.<name> = <ctor>(...)`` in ``__init__`` and return the attribute name.

        The module is built on the meta device so that no memory is spent on its random
        initial weights; its parameters are then bound with :meth:`bind_parameter`. It only lends
        its parameters' shapes and its meta runs, so layers declared alike share one (a network
        repeats a few layer configurations hundreds of times).
        """
        attr = self.attrs.fresh(self._layer_name(hint), "layer")
        call = f"{ctor}({self._format_args(ctor_args, ctor_kwargs)})"
        self.generated.init_lines.append(f"self.{attr} = {call}")
        module = _LIBRARY_LAYERS.get(call)
        if module is None:
            with torch.device("meta"), initialisers_skipped():
                module = eval(call, self._namespace)  # noqa: S307 - code built from literals above
            if ctor.startswith("nn.") and type(module).__module__.startswith("torch.nn.modules."):
                if len(_LIBRARY_LAYERS) >= 4096:
                    _LIBRARY_LAYERS.clear()
                _LIBRARY_LAYERS[call] = module
        self.generated.modules[attr] = module
        if self.node is not None:
            self.generated.module_origins[attr] = self.node.name
        return attr

    def add_generated_module(self, hint: str, class_name: str, body: Emitter) -> str:
        """Declare ``self.<name> = <class_name>()``, a module class a lowering generated from the
        lines and layers of ``body`` (a child emitter), and take over ``body``'s weights under the
        new attribute (``<name>.<weight>``): they stay parameters of the whole model, trained with
        it and saved in its state dict. Returns the attribute name."""
        attr = self.attrs.fresh(f"{self._layer_name('if')}_{hint}", "layer")
        self.generated.init_lines.append(f"self.{attr} = {class_name}()")
        with torch.device("meta"), initialisers_skipped():
            self.generated.modules[attr] = self._namespace[class_name]()
        if self.node is not None:
            self.generated.module_origins[attr] = self.node.name
        inner = body.generated
        self.generated.state.update({f"{attr}.{k}": t for k, t in inner.state.items()})
        self.generated.parameter_origins.update({f"{attr}.{k}": o for k, o in inner.parameter_origins.items()})
        self.generated.module_origins.update({f"{attr}.{k}": n for k, n in inner.module_origins.items()})
        self.generated.warnings.extend(inner.warnings)
        return attr

    def module_ref(self, attr: str) -> Value:
        """A declared submodule as an argument of an emitted call (``self.<attr>``); it is no tensor,
        so calls given it must say their results' sizes (``out_spec``)."""
        return Value(attr, None, code=f"self.{attr}")

    def _layer_name(self, hint: str) -> str:
        """The ONNX node's module path (``/layer1/conv1/Conv`` -> ``layer1_conv1``), else ``hint``;
        inside a generated module the declaring subgraph node's own path."""
        if self.node is None:
            return hint
        node_name = self.node.own_name if self.layers_by_own_node and self.node.own_name else self.node.name
        return layer_name(hint, node_name, self.node.op_type)

    def bind_parameter(self, module_attr: str, param: str, value: torch.Tensor,
                       initializer: str | None, transform: str | None = None) -> None:
        """Give a declared submodule's parameter (or buffer) its real tensor."""
        qualified = f"{module_attr}.{param}"
        module = self.generated.modules[module_attr]
        current = getattr(module, param)
        if tuple(current.shape) != tuple(value.shape):
            raise self.error(f"{param} of shape {tuple(value.shape)} does not fit {type(module).__name__} "
                             f"expecting {tuple(current.shape)}")
        self.generated.state[qualified] = value.to(current.dtype) if value.dtype != current.dtype else value
        self.generated.parameter_origins[qualified] = ParameterOrigin(initializer, transform)

    def call_module(self, attr: str, *args: Any, n_outputs: int = 1, unpack: str | None = None,
                    out_spec: Sequence[OutSpec] | None = None) -> Any:
        """Emit ``out = self.<attr>(*args)`` for a module declared with :meth:`add_module`.

        A module returning nested tuples (``nn.LSTM``: ``y, (h, c)``) gives ``n_outputs`` values
        and ``unpack``, the left-hand side with ``{0}``, ``{1}``, ... for their names. ``out_spec``
        gives the results' sizes for a module that is not to be evaluated on fake tensors (the
        recurrent layers: their decompositions iterate over the time steps, which fixes a dynamic
        sequence length to its hint and costs a traced step per hint)."""
        module = self.generated.modules[attr].eval()
        if out_spec is None and len(args) == 1 and isinstance(args[0], Value) and args[0].const is None \
                and symbolic(self.fake(args[0])) and (sizes := module_result_sizes(module, self.fake(args[0]))):
            out_spec = [(sizes, args[0].dtype)]  # a layer whose sizes follow from a formula (shape_rules)
        if out_spec is not None:
            return self._emit(f"self.{attr}", lambda *_: None, args, {}, n_outputs, fold=False, unpack=unpack,
                              out_spec=out_spec)
        if not symbolic([self.fake(a) for a in args if isinstance(a, Value)]):
            if len(args) == 1 and isinstance(args[0], Value) \
                    and (linear := linear_on_meta(module, self.fake(args[0]))) is not None:
                return self._emit(f"self.{attr}", lambda *_: linear, args, {}, n_outputs, fold=False,
                                  unpack=unpack, evaluated=True)
            # Static sizes: the layer, built on the meta device, runs on meta tensors as it is.
            done, result = evaluate_on_meta(module, [self.fake(a) if isinstance(a, Value) else a for a in args], {})
            if done:
                result = tuple(walk(result)) if n_outputs > 1 else result
                return self._emit(f"self.{attr}", lambda *_: result, args, {}, n_outputs, fold=False, unpack=unpack,
                                  evaluated=True)
        names = [n for n, _ in (*module.named_parameters(), *module.named_buffers())]
        with self.fake_mode:  # parameters only lend their shapes: fresh fakes, not copies of the real ones
            fakes = {n: torch.empty_strided(t.shape, t.stride(), dtype=t.dtype)
                     for n in names if (t := self.generated.state.get(f"{attr}.{n}")) is not None}

        def run(*inputs: torch.Tensor) -> Any:
            result = torch.func.functional_call(module, fakes, inputs)
            return tuple(walk(result)) if n_outputs > 1 else result

        return self._emit(f"self.{attr}", run, args, {}, n_outputs, fold=False, unpack=unpack)

    # ----------------------------------------------------------------------------- internals
    def _resolve(self, fn: str) -> Callable[..., Any]:
        resolved = _LIBRARY_FUNCTIONS.get(fn)
        if resolved is not None:
            return resolved
        try:
            resolved = eval(fn, self._namespace)  # noqa: S307 - fn is code written by op handlers
        except Exception as exc:  # pragma: no cover - programming error in a handler
            raise self.error(f"cannot resolve {fn!r}: {exc}") from exc
        if fn.split(".", 1)[0] in _LIBRARY_MODULES and fn.replace(".", "").replace("_", "").isalnum():
            _LIBRARY_FUNCTIONS[fn] = resolved  # a library's function, not a generated helper: the same everywhere
        return resolved

    def _emit(self, fn_code: str, target: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any],
              n_outputs: int, fold: bool, method: bool = False, infix: bool = False,
              subscript: bool = False, out_spec: Sequence[OutSpec] | None = None, unpack: str | None = None,
              evaluated: bool = False) -> Any:
        """Write the call and give its results as Values. ``evaluated``: ``target`` returns results
        already found (no evaluation on shape-only tensors)."""
        if fold and self.foldable(args, kwargs) and not subscript:
            real = target(*self._concrete(args), **self._concrete(kwargs))
            results = as_tuple(real, n_outputs)
            if all(isinstance(r, torch.Tensor) and r.numel() <= MAX_FOLDED_ELEMENTS for r in results):
                values = [self.const(r, self._output_name(i)) for i, r in enumerate(results)]
                return values[0] if n_outputs == 1 else tuple(values)
        try:
            if evaluated:
                fake_result = target()
            elif out_spec is not None:  # a None entry: a Python object (a list of tensors, an optional)
                fakes = tuple(None if spec is None else self.unknown(*spec) for spec in out_spec)
                fake_result = fakes[0] if n_outputs == 1 else fakes
            else:
                fake_result = evaluate_on_fakes(self.fake_mode, target, self._fakes(args), self._fakes(kwargs))
        except UnsupportedOperatorError:
            raise
        except Exception as exc:
            raise self.error(f"{fn_code.replace('{obj}', 'tensor.')} failed on inputs of shapes "
                             f"{self._describe(args[:1] if subscript else args)}: {exc}") from exc
        self._note_specialisations()
        results = as_tuple(fake_result, n_outputs)
        if infix:
            code = fn_code.format(self._format(args[0]), self._format(args[1]))
        elif subscript:
            code = fn_code.format(obj=self._format(args[0]))
        elif method:
            code = fn_code.format(obj=self._format(args[0])) + f"({self._format_args(args[1:], kwargs)})"
        else:
            code = f"{fn_code}({self._format_args(args, kwargs)})"
        names = [self.locals.fresh(self._output_name(i), "v") for i in range(len(results))]
        self.generated.forward_lines.append(EmittedCall(code, self.node.name if self.node else None, names, unpack))
        values = [Value(self._output_name(i), fake, code=name) for i, (fake, name) in enumerate(zip(results, names))]
        return values[0] if n_outputs == 1 else tuple(values)

    def _note_specialisations(self) -> None:
        """Record the dynamic input dimensions that the last evaluation fixed to a constant.

        Torch decides a comparison of a symbolic size on its hint and records the outcome in the
        shape environment; an equality with a number replaces the symbol by that number, and every
        size computed afterwards is a plain int that would be written into ``model.py`` as a
        literal. This is the one place that sees every such specialisation, whichever op or torch
        function caused it."""
        env = self.fake_mode.shape_env
        if env is None or not self.dynamic_dims:
            return
        # What the environment says of each input symbol; unchanged since the last call, nothing new
        # can be found (held, not compared by id: a freed range's address can be reused).
        said = [(env.replacements.get(symbol), env.var_to_range.get(symbol)) for symbol in self.dynamic_dims]
        last = self._last_said
        if last is not None and last[0] is env and len(last[1]) == len(said) \
                and all(a is c and b is d for (a, b), (c, d) in zip(said, last[1])):
            return
        self._last_said = (env, said)
        for symbol, special in new_specialisations(env, self.dynamic_dims, self.specialised, self.node).items():
            self.specialised[symbol] = special
            self.generated.warnings.append(special.describe())

    def _assign(self, code: str, onnx_name: str) -> str:
        name = self.locals.fresh(onnx_name, "v")
        self.generated.forward_lines.append(EmittedCall(code, self.node.name if self.node else None, [name]))
        return name

    def _output_name(self, index: int) -> str:
        if self.node is None or not self.node.outputs:
            return "v"
        outputs = self.node.outputs
        return outputs[index] if index < len(outputs) and outputs[index] else outputs[0]

    def foldable(self, args: Sequence[Any], kwargs: dict[str, Any]) -> bool:
        """Whether a call on these arguments is computed now, its result a constant, instead of
        being written into ``forward``: every tensor is a constant and none is a trainable weight."""
        leaves = walk([*args, *kwargs.values()])
        if any(isinstance(e, SymElem) and not e.is_static for e in leaves):
            return False
        values = [v for v in leaves if isinstance(v, Value)]
        if not all(v.const is not None for v in values):
            return False
        # A trainable weight stays a parameter: ops on it are run-time code, not folded constants.
        return not any(v.trainable for v in values)

    def _concrete(self, obj: Any) -> Any:
        return map_leaves(obj, lambda v: v.const if isinstance(v, Value) else v.value if isinstance(v, SymElem) else v)

    def _fakes(self, obj: Any) -> Any:
        return map_leaves(obj, lambda v: self.fake(v) if isinstance(v, Value) else v.value
                          if isinstance(v, SymElem) else v)

    def _describe(self, args: Sequence[Any]) -> str:
        shapes = [tuple(self.fake(a).shape) if isinstance(a, Value) else a for a in args]
        return ", ".join(str(s) for s in shapes)

    def _format(self, obj: Any) -> str:
        return format_code(obj, self.ref)

    def _format_args(self, args: Sequence[Any], kwargs: dict[str, Any]) -> str:
        return format_arguments(args, kwargs, self.ref)

    def finish(self, inputs: list[Value], outputs: list[Value], input_onnx: list[str],
               output_onnx: list[str], env: dict[str, Value]) -> EmittedModule:
        self.node = None
        output_codes = [self.ref(v) for v in outputs]
        self._check_layers_complete()
        checks = [EmittedCall(s.check_line(), s.node) for s in self.specialised.values()]
        return EmittedModule(
            init_lines=self.generated.init_lines,
            forward_lines=checks + self.generated.forward_lines,
            input_names=[v.code or "" for v in inputs],
            input_onnx_names=input_onnx,
            output_codes=output_codes,
            output_onnx_names=output_onnx,
            helpers=list(self.generated.helpers.values()),
            state=self.generated.state,
            parameter_origins=self.generated.parameter_origins,
            module_origins=self.generated.module_origins,
            nodes=self.nodes,
            tensor_codes={name: v.code or "" for name, v in env.items()},
            warnings=self.generated.warnings,
            specialisations=list(self.specialised.values()),
        )

    def _check_layers_complete(self) -> None:
        """Every parameter and buffer of a declared layer must have been bound to a tensor."""
        for attr, module in self.generated.modules.items():
            for name, _ in [*module.named_parameters(), *module.named_buffers()]:
                qualified = f"{attr}.{name}"
                if qualified not in self.generated.state:
                    raise ConversionError(f"layer {attr} ({type(module).__name__}) has no value for {name}")

