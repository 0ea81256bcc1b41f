"""Control flow: If, Loop, Scan and SequenceMap.

- ``If`` with a condition known at conversion time becomes the chosen branch; otherwise both
  branches are computed and ``torch.where`` selects (ONNX branches have no side effects); branches
  giving sequences are chosen between by a helper. Branches whose outputs differ in shape become
  generated functions, and branches with weights of their own generated ``nn.Module`` classes
  (submodules of the model), of which a helper runs the chosen one (``torch.cond`` under export).
- ``Loop`` with a trip count and continuation known at conversion time, and ``Scan`` over a
  sequence of static length, are unrolled (at most :data:`MAX_UNROLL` iterations).
- Any other ``Loop``, and ``SequenceMap`` over a sequence of run-time length, become two generated
  functions: the body, and the loop calling it, which ``torch.fx`` records as one call.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from ..codegen.emitter import Emitter
from ..codegen.render import comment_text, statement
from ..codegen.values import Value
from ..errors import UnsupportedOperatorError
from .registry import onnx_op

MAX_UNROLL = 256


def _subgraph(g: Emitter, graph: Any, inputs: list[Value | None]) -> list[Value]:
    from ..lowering import lower_subgraph  # lowering imports the op table

    return lower_subgraph(g, graph, inputs)


def _known_bool(v: Value | None) -> bool | None:
    if v is None:
        return True
    if v.const is not None and v.const.numel() == 1:
        return bool(v.const.reshape(()).item())
    if v.elements is not None and len(v.elements) == 1 and v.elements[0].is_static:
        return bool(v.elements[0].value)
    return None


@onnx_op("If", 1)
def if_(g: Emitter, cond: Value, *, then_branch: Any, else_branch: Any) -> tuple[Value, ...]:
    known = _known_bool(cond)
    if known is not None:
        return tuple(_subgraph(g, then_branch if known else else_branch, []))
    try:
        with g.attempt():
            return _if_by_where(g, cond, then_branch, else_branch)
    except UnsupportedOperatorError as exc:
        if _SHAPES_DIFFER in str(exc):
            return _runtime_if(g, cond, then_branch, else_branch, as_modules=False)
        if _HOLD_WEIGHTS in str(exc):
            return _runtime_if(g, cond, then_branch, else_branch, as_modules=True)
        raise


_SHAPES_DIFFER = "branches give outputs of different shapes"
_HOLD_WEIGHTS = "branches hold weights"


def _if_by_where(g: Emitter, cond: Value, then_branch: Any, else_branch: Any) -> tuple[Value, ...]:
    """Both branches inline, ``torch.where`` selecting: straight-line code that every tracer takes.

    Only for branches without weights of their own (float tensors from their Constant nodes or
    initializers; the model's initializers that a branch reads do not count). Such a branch is a
    network of its own (silero-vad has one per sample rate, exported as two inlined copies), which
    is costly to run for nothing and, more to the point, often cannot run on the other branch's
    inputs at all (a 16 kHz chunk through the 8 kHz encoder); onnxruntime never runs the branch
    not taken, so neither may the conversion."""
    weights = set(g.generated.state)
    then_out = _subgraph(g, then_branch, [])
    else_out = _subgraph(g, else_branch, [])
    origins = g.generated.parameter_origins
    if any(name not in weights and t.is_floating_point() and name in origins and origins[name].initializer is None
           for name, t in g.generated.state.items()):
        raise g.unsupported(None, f"If whose {_HOLD_WEIGHTS} of their own, on a condition known only at run time")
    results = []
    for t, e in zip(then_out, else_out):
        if not _is_tensor(t) or not _is_tensor(e):  # sequences, optionals: pick one at run time
            chosen = g.call(g.helper(_choose, leaf=True), cond, t, e, out_spec=[None])
            chosen.meta.update(_runtime_meta(t))
            results.append(chosen)
            continue
        if not _same_sizes(t, e) or t.dtype != e.dtype:
            raise g.unsupported(None, f"If whose {_SHAPES_DIFFER} or types, on a condition known only at run time")
        results.append(g.call("torch.where", g.method(cond, "reshape", []), t, e))
    return tuple(results)


def _same_sizes(a: Value, b: Value) -> bool:
    """Whether two branch outputs have the same sizes at every input size: equal numbers, or the
    same expression of the input sizes (``(L - 3) // 2 + 1`` against ``L`` differ, though both are
    unknown at conversion; ``torch.where`` could not merge them at run time)."""
    if a.static_shape() != b.static_shape():
        return False
    if a.fake is None or b.fake is None:
        return a.fake is None and b.fake is None
    return [str(d) for d in a.fake.shape] == [str(d) for d in b.fake.shape]


def _runtime_if(g: Emitter, cond: Value, then_branch: Any, else_branch: Any, as_modules: bool) -> tuple[Value, ...]:
    """Only the chosen branch runs, as onnxruntime does.

    Branches whose outputs differ in shape (an empty result against a data-dependent one, as
    torchvision's ``batched_nms`` exports) cannot be merged with ``torch.where``, and computing
    both would also run the branch the condition guards against (``max`` of no boxes fails).
    Each branch becomes a generated function (``as_modules``: a generated ``nn.Module`` whose
    weights and layers are its own, held by the model as a submodule) and a leaf helper runs only
    the chosen one: ``torch.fx`` records one call (with the branch modules as ``get_attr``
    arguments, so a traced GraphModule keeps them), ``torch.compile`` breaks its graph at the
    condition, and under ``torch.export`` the helper calls ``torch.cond``, which traces both
    branches and gives sizes that differ between them an unbacked symbol."""
    build = _body_module if as_modules else _body_function
    then_callee, then_captured, then_results = build(g, then_branch, "then_branch", [])
    else_callee, else_captured, else_results = build(g, else_branch, "else_branch", [])
    specs: list[Any] = []
    for t, e in zip(then_results, else_results):
        if _is_tensor(t) != _is_tensor(e) or (_is_tensor(t) and (t.dtype != e.dtype or t.rank != e.rank)):
            raise g.unsupported(None, "If whose branches give outputs of different types or ranks, on a "
                                      "condition known only at run time")
        if not _is_tensor(t):
            specs.append(None)
            continue
        sizes = [a if a is not None and a == b else None for a, b in zip(t.static_shape(), e.static_shape())]
        specs.append((sizes, t.dtype))
    dense = g.helper(_cond_result)
    then_args = [f"t{i}" for i in range(len(then_captured))]
    else_args = [f"e{i}" for i in range(len(else_captured))]
    branches: list[str] = []
    tracing: list[str] = []
    if as_modules:  # the modules are arguments: a traced GraphModule holds what its graph names
        branches = ["then_branch", "else_branch"]
        then_call, else_call = "then_branch", "else_branch"
        tracing = [f"            with {g.helper(_cond_tracing)}(then_branch, else_branch):"]
    else:
        then_call, else_call = then_callee, else_callee
    single = "[0]" if len(specs) == 1 else ""
    then_traced = f"lambda *a: tuple({dense}(o) for o in {then_call}(*a[:{len(then_args)}]))"
    else_traced = f"lambda *a: tuple({dense}(o) for o in {else_call}(*a[{len(then_args)}:]))"
    node = comment_text(g.node.name if g.node else "If")
    traced_both = (f"ONNX If {node!r}: torch.cond traces both branches on the same inputs, and one failed on them "
                   "(onnxruntime runs only the chosen branch, which may need other input sizes): ")
    one_branch = f"ONNX If {node!r}: torch.jit.trace would record only the branch that these inputs take"
    lines = [f"def {{name}}({', '.join(['cond', *branches, *then_args, *else_args])}):",
             '    """ONNX If on a run-time condition: only the chosen branch runs."""',
             "    if torch.compiler.is_exporting():",
             f"        operands = ({''.join(a + ', ' for a in then_args + else_args)})",
             "        try:",
             *tracing,
             f"            {'    ' * len(tracing)}chosen = torch.cond(cond.reshape(()), {then_traced}, {else_traced}, "
             "operands)",
             "        except Exception as exc:",
             f"            raise RuntimeError({traced_both!r} + {g.helper(_root_cause)}(exc)) from exc",
             f"        return chosen{single}" if single else "        return tuple(chosen)",
             "    if torch.jit.is_tracing():",
             f"        raise RuntimeError({one_branch!r})",
             "    if bool(cond):",
             f"        return {then_call}({', '.join(then_args)}){single}",
             f"    return {else_call}({', '.join(else_args)}){single}"]
    name = g.generated_helper("if", "\n".join(lines) + "\n", leaf=True)
    modules = [g.module_ref(then_callee), g.module_ref(else_callee)] if as_modules else []
    values = g.call(name, cond, *modules, *then_captured, *else_captured, n_outputs=len(specs), out_spec=specs)
    values = values if isinstance(values, tuple) else (values,)
    for value, result in zip(values, then_results):
        if not _is_tensor(result):
            value.meta.update(_runtime_meta(result))
    return values


def _root_cause(error: BaseException) -> str:
    """The first line of the innermost cause of ``error``: what actually failed inside a tracer."""
    while (inner := error.__cause__ or error.__context__) is not None:
        error = inner
    return type(error).__name__ + ": " + (str(error).strip().splitlines() or [""])[0]


# The annotation stays a string: model.py, where this is copied, does not import contextlib.
def _cond_tracing(*branches: nn.Module) -> "contextlib.AbstractContextManager[object]":  # noqa: UP037
    """What ``torch.cond`` needs to trace branches that hold recurrent layers under ``torch.export``.
    ``nn.LSTM``/``GRU``/``RNN`` rebuild their list of flat weights when export swaps their parameters,
    an attribute write that ``torch.cond`` refuses inside a branch: it is done here, before. And
    Dynamo, which traces the branches, takes recurrent layers only with ``allow_rnn``."""
    for branch in branches:
        for layer in branch.modules():
            if isinstance(layer, nn.RNNBase):
                layer._update_flat_weights()
    return torch._dynamo.config.patch(allow_rnn=True)


def _cond_result(output: torch.Tensor) -> torch.Tensor:
    """A branch output as ``torch.cond`` takes it: a fresh tensor (not a view of an input) whose
    strides are plain products of its sizes. ``torch.cond`` merges the strides of branches whose
    sizes differ only in that form, and torch writes the symbolic strides of a contiguous result as
    ``Max(1, size)`` wherever a size may be 0 (a convolution over a dynamic length)."""
    strides = [1] * output.dim()
    for axis in range(output.dim() - 2, -1, -1):
        strides[axis] = strides[axis + 1] * output.shape[axis + 1]
    return torch.empty_strided(output.shape, strides, dtype=output.dtype, device=output.device).copy_(output)


def _int(v: Value | None) -> int | None:
    if v is None:
        return None
    if v.const is not None and v.const.numel() == 1:
        return int(v.const.reshape(()).item())
    if v.elements is not None and len(v.elements) == 1 and v.elements[0].is_static:
        return int(v.elements[0].value)
    return None


def _choose(cond: torch.Tensor, then_value: object, else_value: object) -> object:
    return then_value if bool(cond) else else_value


def _is_tensor(v: Value) -> bool:
    return v.fake is not None or v.const is not None or v.elements is not None


def _runtime_meta(v: Value) -> dict:
    """How to describe ``v`` (a sequence or optional) once it only exists at run time."""
    if "runtime" in v.meta:
        return {k: v.meta[k] for k in ("runtime", "element", "elem_dtype", "elem_rank") if k in v.meta}
    if "sequence" in v.meta:
        items = v.meta["sequence"]
        return {"runtime": "sequence", "elem_dtype": v.meta.get("elem_dtype"),
                "elem_rank": items[0].rank if items else None}
    return {"runtime": "optional"}


@onnx_op("Loop", 1)
def loop(g: Emitter, max_trip_count: Value | None, cond: Value | None, *initial: Value,
         body: Any) -> tuple[Value, ...]:
    """Unrolled when the trip count (or a condition that becomes false) is known at conversion
    time; otherwise a generated loop function calling a generated body function."""
    try:
        with g.attempt():
            return _unrolled_loop(g, max_trip_count, cond, initial, body)
    except UnsupportedOperatorError as exc:
        if "run time" not in str(exc) and "tensor data" not in str(exc) and "iterations" not in str(exc):
            raise
    return _runtime_loop(g, max_trip_count, cond, initial, body)


def _unrolled_loop(g: Emitter, max_trip_count: Value | None, cond: Value | None, initial: tuple[Value, ...],
                   body: Any) -> tuple[Value, ...]:
    trips = _int(max_trip_count) if max_trip_count is not None else None
    if max_trip_count is not None and trips is None:
        raise g.unsupported(None, "Loop trip count known only at run time")
    going = _known_bool(cond)
    if going is None:
        raise g.unsupported(None, "Loop condition known only at run time")
    state = list(initial)
    scans: list[list[Value]] = []
    i = 0
    while going and (trips is None or i < trips):
        if i >= MAX_UNROLL:
            raise g.unsupported(None, f"Loop of more than {MAX_UNROLL} iterations")
        counter = g.const(torch.tensor(i, dtype=torch.int64))
        flag = g.const(torch.tensor(True))
        outputs = _subgraph(g, body, [counter, flag, *state])
        going = _known_bool(outputs[0])
        if going is None:
            raise g.unsupported(None, "Loop whose condition is computed from tensor data")
        state = outputs[1:1 + len(initial)]
        scans.append(outputs[1 + len(initial):])
        i += 1
    n_scan = len(body.outputs) - 1 - len(initial)
    if n_scan and not scans:
        raise g.unsupported(None, "Loop with scan outputs that runs no iteration")
    stacked = [g.call("torch.stack", [s[j] for s in scans]) for j in range(n_scan)]
    return (*state, *stacked)


@onnx_op("Scan", 9)
def scan(g: Emitter, *inputs: Value, body: Any, num_scan_inputs: int, scan_input_axes: list[int] | None = None,
         scan_input_directions: list[int] | None = None, scan_output_axes: list[int] | None = None,
         scan_output_directions: list[int] | None = None) -> tuple[Value, ...]:
    """Unrolled over the scan axis (its length must be static)."""
    n_state = len(inputs) - num_scan_inputs
    state, sequences = list(inputs[:n_state]), list(inputs[n_state:])
    axes = [a % s.rank for a, s in zip(scan_input_axes or [0] * num_scan_inputs, sequences)]
    directions = scan_input_directions or [0] * num_scan_inputs
    lengths = {s.static_shape()[a] for s, a in zip(sequences, axes)}
    if None in lengths or len(lengths) != 1:
        raise g.unsupported(None, "Scan over a sequence of run-time length")
    steps = lengths.pop()
    if steps > MAX_UNROLL:
        raise g.unsupported(None, f"Scan of more than {MAX_UNROLL} steps")
    per_step: list[list[Value]] = []
    for t in range(steps):
        slices = [g.call("torch.select", s, a, steps - 1 - t if d else t)
                  for s, a, d in zip(sequences, axes, directions)]
        outputs = _subgraph(g, body, [*state, *slices])
        state = outputs[:n_state]
        per_step.append(outputs[n_state:])
    n_out = len(body.outputs) - n_state
    out_axes = scan_output_axes or [0] * n_out
    out_directions = scan_output_directions or [0] * n_out
    results = []
    for j in range(n_out):
        items = [step[j] for step in per_step]
        if out_directions[j]:
            items = items[::-1]
        axis = out_axes[j] % (items[0].rank + 1) if steps else 0
        results.append(g.call("torch.stack", items, axis) if axis else g.call("torch.stack", items))
    return (*state, *results)


@onnx_op("Scan", 8)
def scan8(g: Emitter, sequence_lens: Value | None, *inputs: Value, body: Any, num_scan_inputs: int,
          directions: list[int] | None = None) -> tuple[Value, ...]:
    """Scan-8 has a batch axis first: the body runs per batch entry on axis 1 of the sequences."""
    if sequence_lens is not None:
        raise g.unsupported(None, "Scan-8 sequence_lens")
    batch = inputs[0].static_shape()[0] if inputs else None
    if batch is None:
        raise g.unsupported(None, "Scan-8 with a batch of run-time size")
    per_batch = []
    for b in range(batch):
        items = [g.call("torch.select", v, 0, b) for v in inputs]
        per_batch.append(scan(g, *items, body=body, num_scan_inputs=num_scan_inputs,
                              scan_input_directions=directions))
    return tuple(g.call("torch.stack", [r[j] for r in per_batch]) for j in range(len(per_batch[0])))


# ---------------------------------------------------------------------------------- generated functions
def _names_used(graph: Any) -> set[str]:
    """Values a subgraph reads that it does not define itself (it sees them from outside)."""
    defined = {vi.name for vi in graph.inputs} | {t.name for t in graph.initializers}
    used: set[str] = set()
    for node in graph.nodes:
        used.update(i for i in node.inputs if i)
        for attr in node.attributes.values():
            for sub in ([attr.value] if attr.type == "GRAPH" else attr.value if attr.type == "GRAPHS" else []):
                used |= _names_used(sub)
        defined.update(node.outputs)
    return used - defined


def _formal(child: Emitter, name: str, template: Value, varies: bool) -> Value:
    """A parameter of a generated function shaped like ``template`` (sizes unknown if ``varies``)."""
    if not _is_tensor(template):
        value = child.input(name, None)
        value.meta.update(_runtime_meta(template))
        return value
    if varies:
        fake = child.unknown([None] * template.rank, template.dtype)
    else:
        fake = template.fake if template.fake is not None else child.fake(template)
    return child.input(name, fake)


def _child_for(g: Emitter, graph: Any, formals: list[Value], lift_constants: bool
               ) -> tuple[Emitter, list[Value], list[Value], list[str]]:
    """A child emitter ready to lower ``graph`` as the body of a generated function or module:
    the child, the body's formal inputs (from ``formals``), the outer values it is passed after
    them, and the names of the parameters those arrive in. Small outer constants are copied in
    (not learned ones, such as a one-channel bias: those arrive as the model's parameters);
    ``lift_constants``: the body's own constants become parameters too (a function has no place
    to keep them), else attributes of the child (a module's weights)."""
    from ..lowering import Scope

    scope = g.scope
    child = g.child()
    if not lift_constants:
        child.lifted, child.layers_by_own_node = None, True
    outer = {}
    captured: list[Value] = []
    params: list[str] = []
    for name in sorted(_names_used(graph)):
        if name not in scope.env:
            continue
        v = scope.env[name]
        if v.const is not None and v.const.numel() <= 16 and not v.trainable:
            outer[name] = child.const(v.const)
        else:
            param = _formal(child, name, v, varies=False)
            outer[name], params = param, params + [param.code]
            captured.append(v)
    child.scope = Scope(outer, scope.opsets, scope.functions)
    inputs = [_formal(child, vi.name, template, varies=True) for vi, template in zip(graph.inputs, formals)]
    return child, inputs, captured, params


def _body_function(g: Emitter, graph: Any, hint: str, formals: list[Value]) -> tuple[str, list[Value], list[Value]]:
    """The subgraph as a generated function: its name, the outer values it is passed after the
    formal inputs, and its results (values of the child emitter, for their types)."""
    from ..lowering import lower_subgraph

    child, inputs, captured, params = _child_for(g, graph, formals, lift_constants=True)
    results = lower_subgraph(child, graph, inputs)
    returned = [child.ref(r) for r in results]
    if child.generated.init_lines or child.generated.state:
        raise g.unsupported(None, "a loop body using a layer with weights")
    for param, value in child.lifted or []:  # constants the body uses: passed in like outer values
        params.append(param)
        captured.append(Value(value.onnx_name, None, const=value.const, origin_initializer=value.origin_initializer))
    lines = "\n".join(f"    {statement(call)}" for call in child.generated.forward_lines)
    signature = ", ".join([v.code for v in inputs] + params)
    source = f"def {{name}}({signature}):\n{lines}\n    return ({', '.join(returned)},)\n"
    return g.generated_helper(hint, source), captured, results


def _body_module(g: Emitter, graph: Any, hint: str, formals: list[Value]) -> tuple[str, list[Value], list[Value]]:
    """The subgraph as a generated ``nn.Module`` class whose layers and constants are its own
    (declared in its ``__init__``), held by the model as a submodule: the attribute name, the outer
    values its ``forward`` is passed after the formal inputs, and its results."""
    from ..lowering import lower_subgraph

    child, inputs, captured, params = _child_for(g, graph, formals, lift_constants=False)
    results = lower_subgraph(child, graph, inputs)
    returned = [child.ref(r) for r in results]
    body = [f"    {statement(call)}" for call in child.generated.forward_lines]
    title = hint.replace("_", " ")
    lines = ["class {name}(nn.Module):",
             f'    """ONNX If\'s {title} as a layer: its weights are its own parameters, and it runs',
             '    only when the condition chooses it."""',
             "",
             "    def __init__(self) -> None:",
             "        super().__init__()",
             *(f"        {line}" for line in child.generated.init_lines),
             "",
             f"    def forward({', '.join(['self', *(v.code for v in inputs), *params])}):",
             *(f"    {line}" for line in body),
             f"        return ({', '.join(returned)},)"]
    class_name = g.generated_helper(f"{hint}_layer", "\n".join(lines) + "\n")
    return g.add_generated_module(hint, class_name, child), captured, results


def _spec(v: Value, extra_leading: int = 0) -> Any:
    return None if not _is_tensor(v) else ([None] * (v.rank + extra_leading), v.dtype)


def _runtime_loop(g: Emitter, max_trip_count: Value | None, cond: Value | None, initial: tuple[Value, ...],
                  body: Any) -> tuple[Value, ...]:
    counter = g.const(torch.tensor(0, dtype=torch.int64))
    flag = g.const(torch.tensor(True))
    body_name, captured, results = _body_function(g, body, "loop_body", [counter, flag, *initial])
    n_state, n_scan = len(initial), len(body.outputs) - 1 - len(initial)
    state = [f"v{i}" for i in range(n_state)]
    extra = [f"c{i}" for i in range(len(captured))]
    scans = [f"scan{i}" for i in range(n_scan)]
    targets = ", ".join(["going", *state, *[f"{s}_item" for s in scans]])
    lines = [f"def {{name}}(max_trip_count, cond, {', '.join(state + extra)}):".replace(", )", ")"),
             '    """ONNX Loop: runs the body while the condition holds, at most max_trip_count times."""',
             "    i = 0",
             "    going = True if cond is None else bool(cond)"]
    lines += [f"    {s} = []" for s in scans]
    lines += ["    while going and (max_trip_count is None or i < int(max_trip_count)):",
              f"        {targets}, = {body_name}(torch.tensor(i), torch.tensor(going), {', '.join(state + extra)})"
              .replace("(torch.tensor(i), torch.tensor(going), )", "(torch.tensor(i), torch.tensor(going))"),
              "        going = bool(going)"]
    lines += [f"        {s}.append({s}_item)" for s in scans]
    lines += ["        i += 1"]
    outputs = state + [f"torch.stack({s}) if {s} else torch.zeros(0)" for s in scans]
    lines += [f"    return ({', '.join(outputs)},)" if len(outputs) > 1 else f"    return {outputs[0]}"]
    name = g.generated_helper("loop", "\n".join(lines) + "\n", leaf=True)
    specs = [_spec(r) for r in results[1:1 + n_state]] + [_spec(r, 1) for r in results[1 + n_state:]]
    values = g.call(name, max_trip_count, cond, *initial, *captured, n_outputs=len(specs), out_spec=specs)
    values = values if isinstance(values, tuple) else (values,)
    for value, result in zip(values, results[1:]):
        if not _is_tensor(result):
            value.meta.update(_runtime_meta(result))
    return values


def runtime_sequence_map(g: Emitter, seq: Value, additional: tuple[Value, ...], body: Any) -> tuple[Value, ...]:
    """SequenceMap over a sequence of run-time length: a generated loop over its elements."""
    from .sequence import element_template

    inputs = [seq, *additional]
    is_sequence = [not _is_tensor(v) for v in inputs]
    templates = [element_template(g, v) if s else v for v, s in zip(inputs, is_sequence)]
    body_name, captured, results = _body_function(g, body, "sequence_map_body", templates)
    names = [f"x{i}" for i in range(len(inputs))]
    extra = [f"c{i}" for i in range(len(captured))]
    outs = [f"out{i}" for i in range(len(results))]
    items = ", ".join(f"{n}[i]" if s else n for n, s in zip(names, is_sequence))
    lines = [f"def {{name}}({', '.join(names + extra)}):",
             '    """ONNX SequenceMap: the body applied to each element (and the same other tensors)."""']
    lines += [f"    {o} = []" for o in outs]
    lines += [f"    for i in range(len({names[0]})):",
              f"        {', '.join(o + '_item' for o in outs)}, = {body_name}({', '.join([items] + extra)})"]
    lines += [f"        {o}.append({o}_item)" for o in outs]
    lines += [f"    return ({', '.join(outs)},)" if len(outs) > 1 else f"    return {outs[0]}"]
    name = g.generated_helper("sequence_map", "\n".join(lines) + "\n", leaf=True)
    values = g.call(name, *inputs, *captured, n_outputs=len(outs), out_spec=[None] * len(outs))
    values = values if isinstance(values, tuple) else (values,)
    for value, result in zip(values, results):
        value.meta.update(runtime="sequence", elem_dtype=result.dtype if _is_tensor(result) else None,
                          elem_rank=result.rank if _is_tensor(result) else None)
    return values
