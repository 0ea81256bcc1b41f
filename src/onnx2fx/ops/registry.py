"""The op table: ONNX (domain, op type, since_version) -> lowering function.

A lowering function's signature mirrors the operator's schema: the emitter first, then the
inputs positionally (``None`` for an omitted optional input; a ``*inputs`` parameter for variadic
ones), then the attributes as keyword-only parameters with the specification's defaults. The
implementation chosen for a model is the newest one whose ``since_version`` is at most the
model's opset for that domain, so a new opset never breaks an old op.

A registration also declares what the table does around the call, where an op needs it:
``widened_for_unsigned`` (torch has no kernel for uint16/32/64 inputs: they are computed as int64
and the outputs listed in ``narrowed_outputs`` cast back) and ``sub_byte_aware`` (the lowering
takes 4/2-bit inputs in their own dtype instead of the int8/uint8 storage view).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

DEFAULT_DOMAIN = ""
_DOMAIN_ALIASES = {"ai.onnx": DEFAULT_DOMAIN}

Lowering = Callable[..., Any]


@dataclass(frozen=True)
class OpImpl:
    """One registered lowering."""

    op_type: str
    domain: str
    since_version: int
    fn: Lowering
    # Inputs of uint16/uint32/uint64 are widened to int64 before the call (torch implements few ops
    # for them); the results at ``narrowed_outputs`` are cast back to the input's type. Exact,
    # except that uint64 values of 2**63 and more compare, divide and shift as negative int64 values.
    widened_for_unsigned: bool = False
    narrowed_outputs: tuple[int, ...] = (0,)
    # 4/2-bit inputs are passed as they are (the lowering needs the type's range), not viewed as
    # their int8/uint8 storage as for every other op.
    sub_byte_aware: bool = False

    # The signature is read for every node lowered; computing it once per lowering (not per node)
    # saves a tenth of a second on a model of a thousand nodes.
    @cached_property
    def parameters(self) -> tuple[inspect.Parameter, ...]:
        return tuple(inspect.signature(self.fn).parameters.values())

    @cached_property
    def attribute_names(self) -> frozenset[str]:
        return frozenset(p.name for p in self.parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)

    @cached_property
    def accepts_any_attribute(self) -> bool:
        return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in self.parameters)

    @cached_property
    def inputs(self) -> tuple[inspect.Parameter, ...]:
        """The positional parameters after the emitter: the node's inputs, in order."""
        kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        return tuple(p for p in self.parameters if p.kind in kinds)[1:]

    @cached_property
    def variadic(self) -> bool:
        """Whether the lowering takes any number of inputs (``*inputs``)."""
        return any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in self.parameters)

    @cached_property
    def attribute_defaults(self) -> dict[str, Any]:
        """Each attribute's default, by name (its type is the type the attribute must have)."""
        return {p.name: p.default for p in self.parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


_TABLE: dict[tuple[str, str], list[OpImpl]] = {}


def normalize_domain(domain: str) -> str:
    return _DOMAIN_ALIASES.get(domain, domain)


def onnx_op(op_type: str, since_version: int = 1, domain: str = DEFAULT_DOMAIN, *,
            widened_for_unsigned: bool = False, narrowed_outputs: tuple[int, ...] = (0,),
            sub_byte_aware: bool = False) -> Callable[[Lowering], Lowering]:
    """Register ``fn`` as the lowering of ``op_type`` from ``since_version`` on.

    Registering the same (domain, op, version) again replaces the earlier function, which is how
    users override a built-in lowering; the replacement declares its own ``widened_for_unsigned``,
    ``narrowed_outputs`` and ``sub_byte_aware`` (see :class:`OpImpl`).
    """

    def register(fn: Lowering) -> Lowering:
        key = (normalize_domain(domain), op_type)
        impls = [i for i in _TABLE.get(key, []) if i.since_version != since_version]
        impls.append(OpImpl(op_type, key[0], since_version, fn, widened_for_unsigned, tuple(narrowed_outputs),
                            sub_byte_aware))
        _TABLE[key] = sorted(impls, key=lambda i: i.since_version)
        return fn

    return register


def add_converter(operation_type: str, version: int = 1,
                  domain: str = DEFAULT_DOMAIN) -> Callable[[Lowering], Lowering]:
    """``@add_converter(operation_type="MyOp", version=1, domain="com.example")``: the same as
    :func:`onnx_op`, spelled as in onnx2torch. The decorated function has the handler signature
    (the emitter, the inputs, the attributes as keyword-only parameters)."""
    return onnx_op(operation_type, since_version=version, domain=domain)


def lookup(op_type: str, domain: str, opset: int) -> OpImpl | None:
    """The newest implementation of ``op_type`` whose ``since_version`` <= ``opset``."""
    candidates = [i for i in _TABLE.get((normalize_domain(domain), op_type), []) if i.since_version <= opset]
    return candidates[-1] if candidates else None


def registered_ops() -> dict[tuple[str, str], list[int]]:
    """(domain, op_type) -> sorted since_versions, for reports."""
    return {key: [i.since_version for i in impls] for key, impls in sorted(_TABLE.items())}
