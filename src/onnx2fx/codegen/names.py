"""Turning ONNX names into Python identifiers.

ONNX names are arbitrary strings from an untrusted file. They become identifiers in generated
source, so they pass through :func:`sanitize` (letters, digits and underscores only, never a
keyword or builtin) and :class:`NameScope` (unique within one scope). A name is data: it never
reaches generated code except through these functions or ``repr``.
"""

from __future__ import annotations

import builtins
import functools
import keyword
import re

import torch

_NON_IDENT = re.compile(r"[^0-9a-zA-Z_]+")
_REPEATED_UNDERSCORE = re.compile(r"_+")
_NOISE_SUFFIX = re.compile(r"_output_\d+$|_output$")
MAX_IDENTIFIER_LENGTH = 48
# Layers become attributes of the generated nn.Module: a layer called "forward" or "training" would
# replace the module's own, so nn.Module's attribute names are reserved too.
_RESERVED = set(keyword.kwlist) | set(keyword.softkwlist) | set(dir(builtins)) | set(dir(torch.nn.Module)) | {
    "self", "torch", "nn", "F", "math", "json", "os", "Model", "load_model",
}


@functools.lru_cache(maxsize=65536)
def sanitize(name: str, fallback: str = "v") -> str:
    """A readable identifier derived from ``name`` (not yet unique).

    TorchScript-exported names such as ``/layer1/layer1.0/conv1/Conv_output_0`` lose their path
    noise and become ``layer1_0_conv1_conv``-like identifiers; anything unusable becomes ``fallback``.
    """
    text = _NOISE_SUFFIX.sub("", name.strip())
    parts = [p for p in re.split(r"[/.:]+", text) if p]
    # Exporters repeat the module path ("layer1/layer1.0"): drop a part that the next one repeats.
    deduped = [p for i, p in enumerate(parts) if not (i + 1 < len(parts) and parts[i + 1].startswith(p))]
    ident = _NON_IDENT.sub("_", "_".join(deduped)).lower()
    ident = _REPEATED_UNDERSCORE.sub("_", ident).strip("_")
    if not ident:
        ident = fallback
    if ident[0].isdigit():
        ident = f"{fallback}_{ident}"
    if len(ident) > MAX_IDENTIFIER_LENGTH:
        ident = ident[-MAX_IDENTIFIER_LENGTH:].lstrip("_") or fallback
        if ident[0].isdigit():
            ident = f"{fallback}_{ident}"
    if ident in _RESERVED or keyword.iskeyword(ident):
        ident = f"{ident}_"
    return ident



def sanitize_identifier(text: str) -> str:
    """A function name for generated code (``fn`` when nothing usable is left)."""
    return sanitize(text, "fn").strip("_") or "fn"


def layer_name(hint: str, node_name: str | None, op_type: str) -> str:
    """The ONNX node's module path (``/layer1/conv1/Conv`` -> ``layer1_conv1``), else ``hint``."""
    if not node_name:
        return hint
    parts = [p for p in re.split(r"[/:]+", node_name) if p]
    op = re.escape(op_type)
    if len(parts) > 1 and re.fullmatch(rf"{op}(_\d+)?", parts[-1], re.IGNORECASE):
        return "/".join(parts[:-1])  # a module path such as /layer1/conv1/Conv
    name = re.sub(r"^node_", "", "/".join(parts))  # the dynamo exporter prefixes node names
    if not name or re.fullmatch(rf"{op}(_?\d+)?", name, re.IGNORECASE):
        return hint  # a generated name such as "Conv_12" says less than the layer kind
    return name

class NameScope:
    """Hands out unique identifiers within one Python scope (a method body, a class namespace)."""

    def __init__(self, taken: set[str] | None = None) -> None:
        self._taken: set[str] = set(taken or ())
        # base -> the suffix its last numbered name took: names are never given back, so the
        # search for a free one starts there (a name used a thousand times costs no more)
        self._last_suffix: dict[str, int] = {}

    def fresh(self, name: str, fallback: str = "v") -> str:
        base = sanitize(name, fallback)
        candidate, counter = base, self._last_suffix.get(base, 0) + 1
        while candidate in self._taken:
            candidate = f"{base}_{counter}"
            counter += 1
        if candidate != base:
            self._last_suffix[base] = counter - 1
        self._taken.add(candidate)
        return candidate

    def reserve(self, ident: str) -> None:
        self._taken.add(ident)
