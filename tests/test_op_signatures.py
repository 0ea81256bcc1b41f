"""Every built-in lowering's signature against its operator's schema.

A lowering's parameters are the op table's contract (``ops/registry.py``): the table passes the
node's inputs positionally (``None`` for an omitted one), refuses a required input that is missing
and an attribute the lowering does not declare, and fills every attribute the node leaves out from
the lowering's keyword default. So the signature must say what the schema says, for every schema
version the lowering serves (from its ``since_version`` up to the next lowering of the op):

- inputs: an optional input has a default (``None``), a required one has none; a variadic input
  is ``*inputs``; positions past a version's inputs are optional (they belong to a later version);
  optional trailing inputs may be left out (the table refuses a node that gives them);
- attributes: every keyword parameter is an attribute of the schema; ``**legacy`` takes the
  attributes of old versions that the lowering ignores;
- defaults: where the schema has a default, the keyword parameter has the same one.

Schemas are onnx's (``onnx.defs``), and onnxruntime's for its com.microsoft operators and for the
operators it registers in the default domain (LayerNormalization before opset 17). Where a
lowering differs on purpose, the difference is listed in ``EXCEPTIONS`` with the reason; a listed
difference that no longer occurs fails the test too, so the list stays true.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import defs, helper
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

import onnx2fx.ops  # noqa: F401 - registers the built-in op table
from onnx2fx.ops.registry import OpImpl, lookup, registered_ops

SINGLE, OPTIONAL, VARIADIC = 0, 1, 2
NO_DEFAULT = inspect.Parameter.empty

# Keyword catch-alls a lowering may declare, with what they take.
CATCH_ALLS = {
    "legacy": "attributes of old versions that the lowering ignores (consumed_inputs, Gemm-1's broadcast, ...)",
    "attributes": "Upsample-7's scales attribute, named like Upsample-9's scales input",
}

# Registrations whose domain has no schema of its own: checked against another domain's schema.
SCHEMA_ALIASES = {
    ("com.microsoft", "LayerNormalization"): "",  # exporters write onnxruntime's default-domain op
    ("com.microsoft", "SimplifiedLayerNormalization"): "",  # under onnxruntime's domain name too
}

EXCEPTIONS: dict[str, str] = {
    # ---- inputs
    "Loop-1..25: input 0 (M) is optional, parameter max_trip_count has no default": (
        "M and cond come before the variadic loop-carried values, so a Loop node names both slots "
        "(empty for an omitted one) and they arrive as None; a node with no inputs at all is an "
        "infinite loop without state, which has nothing to convert"),
    "Loop-1..25: input 1 (cond) is optional, parameter cond has no default": "as for M",
    "Scan-8: input 0 (sequence_lens) is optional, parameter sequence_lens has no default": (
        "the scanned inputs follow it, so a Scan-8 node always names its slot"),
    # ---- attribute defaults
    "BatchNormalization-1, BatchNormalization-6: attribute is_test defaults to 0, the lowering's to 1": (
        "is_test=0 asked old runtimes for training; the lowering always computes inference (is_test=1), and "
        "training mode is the training_mode attribute of BatchNormalization-14"),
    "Clip-6: attribute min defaults to -3.4028234663852886e+38, the lowering's to -inf": (
        "-inf stands for no bound: the two differ only on infinite inputs, which onnxruntime clips to "
        "the float32 limits and the lowering leaves infinite; the bounds as constants would add a clamp to "
        "every Clip-6 that gives only one of them"),
    "Clip-6: attribute max defaults to 3.4028234663852886e+38, the lowering's to inf": "as for min",
    "Selu-1: attribute alpha defaults to 1.673200011253357, the lowering's to 1.6732631921768188": (
        "one lowering serves Selu-1 and Selu-6 and takes Selu-6's more precise constants; onnxruntime has no "
        "Selu-1 kernel, so no model of Selu-1 can be checked against it"),
    "Selu-1: attribute gamma defaults to 1.0506999492645264, the lowering's to 1.0507010221481323": "as for alpha",
    "GridSample-16: attribute mode defaults to 'bilinear', the lowering's to 'linear'": (
        "GridSample-20 renamed the mode; the lowering takes both spellings, so the default means the same"),
    "MeanVarianceNormalization-9, MeanVarianceNormalization-13: attribute axes defaults to [0, 2, 3], "
    "the lowering's to None": "None (no mutable default) is replaced by [0, 2, 3] in the lowering",
    "RNN-7, RNN-14, RNN-22: attribute activations defaults to ['Tanh', 'Tanh'], the lowering's to None": (
        "None (no mutable default) is replaced by the kind's activations in the lowering"),
}


@dataclass(frozen=True)
class Schema:
    """What the checks need of one schema version, from onnx or from onnxruntime."""

    since_version: int
    inputs: list[tuple[str, int]]  # (name, SINGLE / OPTIONAL / VARIADIC)
    attributes: dict[str, Any]  # name -> default (NO_DEFAULT when the schema has none)


def _onnx_schema(schema: defs.OpSchema) -> Schema:
    attributes = {}
    for name, attribute in schema.attributes.items():
        default = attribute.default_value
        attributes[name] = helper.get_attribute_value(default) if default.name else NO_DEFAULT
    return Schema(schema.since_version, [(i.name, int(i.option.value)) for i in schema.inputs], attributes)


def _ort_schema(schema: Any) -> Schema:
    attributes = {}
    for name, attribute in schema.attributes.items():
        raw = attribute._default_value  # a serialized AttributeProto, empty without a default
        if raw:
            proto = onnx.AttributeProto()
            proto.ParseFromString(raw)
            attributes[name] = helper.get_attribute_value(proto)
        else:
            attributes[name] = NO_DEFAULT
    return Schema(schema.since_version, [(i.name, int(i.option.value)) for i in schema.inputs], attributes)


def _schema_histories() -> tuple[dict[tuple[str, str], list[Schema]], dict[tuple[str, str], list[Schema]]]:
    onnx_schemas: dict[tuple[str, str], list[Schema]] = {}
    for s in defs.get_all_schemas_with_history():
        onnx_schemas.setdefault((s.domain, s.name), []).append(_onnx_schema(s))
    ort_schemas: dict[tuple[str, str], list[Schema]] = {}
    for s in ort_state.get_all_operator_schema():
        ort_schemas.setdefault((s.domain, s.name), []).append(_ort_schema(s))
    return onnx_schemas, ort_schemas


def _served_versions(history: list[Schema], since: int, until: int) -> list[Schema]:
    """The schema in effect at ``since`` and every later version before ``until``."""
    ordered = sorted(history, key=lambda s: s.since_version)
    in_effect = [s for s in ordered if s.since_version <= since][-1:]
    return in_effect + [s for s in ordered if since < s.since_version < until]


def _builtin_lowerings() -> Iterator[tuple[OpImpl, int]]:
    """Every built-in registration (not one a test added) with the opset where the next one starts."""
    for (domain, op), versions in registered_ops().items():
        impls = [lookup(op, domain, v) for v in versions]
        builtin = [i for i in impls if i is not None and i.fn.__module__.startswith("onnx2fx.ops.")]
        for index, impl in enumerate(builtin):
            yield impl, builtin[index + 1].since_version if index + 1 < len(builtin) else 1 << 30


def _shown(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [_shown(v) for v in value]
    return value


def _same_default(schema_default: Any, default: Any) -> bool:
    if isinstance(schema_default, float):  # schema floats are float32 values
        return isinstance(default, (int, float)) and np.float32(default) == np.float32(schema_default)
    return _shown(schema_default) == default


def _input_findings(impl: OpImpl, versions: list[Schema]) -> Iterator[tuple[int, str]]:
    params = impl.parameters[1:]
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    variadic_param = any(p.kind is p.VAR_POSITIONAL for p in params)
    most_inputs = max(len([i for i in s.inputs if i[1] != VARIADIC]) for s in versions)
    for schema in versions:
        version = schema.since_version
        fixed = [i for i in schema.inputs if i[1] != VARIADIC]
        if len(fixed) < len(schema.inputs) and not variadic_param:
            yield version, f"the variadic input {schema.inputs[-1][0]} has no *inputs parameter"
        if len(fixed) == len(schema.inputs) and variadic_param:
            yield version, "*inputs for an operator without a variadic input"
        for index, (name, option) in enumerate(fixed):
            if index >= len(positional):
                if option != OPTIONAL and not variadic_param:
                    yield version, f"input {index} ({name}) is required, the lowering has no parameter for it"
                continue
            param = positional[index]
            has_default = param.default is not NO_DEFAULT
            optional_somewhere = any(index >= len(s.inputs) or s.inputs[index][1] == OPTIONAL for s in versions)
            # Python allows no default before a required parameter, and needs one after a default.
            later_required = any(option_ != OPTIONAL for _, option_ in fixed[index + 1:len(positional)])
            earlier_optional = any(option_ == OPTIONAL for _, option_ in fixed[:index])
            if option == OPTIONAL and not has_default and not later_required:
                yield version, f"input {index} ({name}) is optional, parameter {param.name} has no default"
            if option != OPTIONAL and has_default and not optional_somewhere and not earlier_optional:
                yield version, f"input {index} ({name}) is required, parameter {param.name} has a default"
        for param in positional[len(fixed):]:
            index = positional.index(param)
            if index >= most_inputs or param.default is NO_DEFAULT:
                yield version, f"parameter {param.name} has no input in any version the lowering serves"


def _attribute_findings(impl: OpImpl, versions: list[Schema]) -> Iterator[tuple[int, str]]:
    keywords = {p.name: p for p in impl.parameters if p.kind is p.KEYWORD_ONLY}
    for p in impl.parameters:
        if p.kind is p.VAR_KEYWORD and p.name not in CATCH_ALLS:
            yield versions[0].since_version, f"**{p.name} is not one of the catch-alls {sorted(CATCH_ALLS)}"
    known = set().union(*(s.attributes for s in versions))
    for name in sorted(set(keywords) - known):
        yield versions[0].since_version, f"parameter {name} is not an attribute of any version it serves"
    for schema in versions:
        for name, param in keywords.items():
            schema_default = schema.attributes.get(name, NO_DEFAULT)
            if schema_default is NO_DEFAULT or _same_default(schema_default, param.default):
                continue
            lowering_default = "none" if param.default is NO_DEFAULT else repr(param.default)
            yield (schema.since_version,
                   f"attribute {name} defaults to {_shown(schema_default)!r}, the lowering's to {lowering_default}")


def signature_findings() -> list[str]:
    """Each difference as ``Op-versions: what``, the versions where it occurs joined."""
    onnx_schemas, ort_schemas = _schema_histories()
    found: dict[tuple[str, str, str], list[int]] = {}
    for impl, until in _builtin_lowerings():
        key = (SCHEMA_ALIASES.get((impl.domain, impl.op_type), impl.domain), impl.op_type)
        history = onnx_schemas.get(key, [])
        if not any(s.since_version <= impl.since_version for s in history):
            history = ort_schemas.get(key, [])
        versions = _served_versions(history, impl.since_version, until)
        if not versions:
            found.setdefault((impl.domain, impl.op_type, "no schema"), []).append(impl.since_version)
            continue
        for version, what in [*_input_findings(impl, versions), *_attribute_findings(impl, versions)]:
            found.setdefault((impl.domain, impl.op_type, what), []).append(version)
    findings = []
    for (domain, op, what), versions_found in found.items():
        prefix = f"{domain}::" if domain else ""
        ordered = sorted(set(versions_found))
        runs = f"{op}-{ordered[0]}..{ordered[-1]}" if len(ordered) > 3 else ", ".join(f"{op}-{v}" for v in ordered)
        findings.append(f"{prefix}{runs}: {what}")
    return sorted(findings)


def test_every_lowering_has_a_schema() -> None:
    assert [f for f in signature_findings() if f.endswith(": no schema")] == []


def test_signatures_match_their_schemas() -> None:
    findings = signature_findings()
    unexplained = [f for f in findings if f not in EXCEPTIONS]
    stale = [e for e in EXCEPTIONS if e not in findings]
    assert unexplained == [], "signature differs from the schema (fix it, or list it in EXCEPTIONS with the reason)"
    assert stale == [], "listed in EXCEPTIONS but no longer found: remove it"


def test_the_checks_find_what_they_look_for() -> None:
    """A lowering that gets each rule wrong is reported (so an empty list means something)."""

    def wrong(g: Any, x: Any, min: Any, *, mode: str = "nearest", ceil: int = 0, **options: Any) -> Any:  # noqa: A002
        raise AssertionError("never lowered")

    impl = OpImpl("Clip", "", 11, wrong)
    onnx_schemas, _ = _schema_histories()
    clip = _served_versions(onnx_schemas[("", "Clip")], 11, 12)
    resize = _served_versions(onnx_schemas[("", "Resize")], 19, 1 << 30)
    grid = _served_versions(onnx_schemas[("", "GridSample")], 16, 17)
    assert [s.since_version for s in clip] == [11]
    assert list(_input_findings(impl, clip)) == [(11, "input 1 (min) is optional, parameter min has no default")]
    catch_all = (19, f"**options is not one of the catch-alls {sorted(CATCH_ALLS)}")
    assert list(_attribute_findings(impl, resize)) == [
        catch_all, (19, "parameter ceil is not an attribute of any version it serves")]
    assert list(_attribute_findings(impl, grid)) == [
        (16, catch_all[1]), (16, "parameter ceil is not an attribute of any version it serves"),
        (16, "attribute mode defaults to 'bilinear', the lowering's to 'nearest'")]
