"""Generated ``model.py`` code as an importable module, in this process and in the next.

A converted model's classes and helper functions live in a module built from its generated source
(``onnx2fx_generated_<digest>``), not in a file Python can import. A pickled GraphModule refers to
them by module name: its branch modules by class, its wrapped helpers in the import block that
unpickling executes. So that ``model_full.pt`` (and the PTQ/QFT ``.pt`` files) load in a fresh
process with a plain ``torch.load``, :func:`save_module` pickles every such reference together with
the source it comes from, and loading rebuilds the module from that source the first time it is
needed. Use this module as torch's ``pickle_module``: it provides the ``Pickler``.
"""

from __future__ import annotations

import linecache
import os
import pickle
import re
import sys
import types
from typing import Any

import torch

PREFIX = "onnx2fx_generated_"
SOURCE_ATTRIBUTE = "__onnx2fx_source__"
_IMPORTED = re.compile(rf"from ({PREFIX}\w+) import")


def register(name: str, source: str) -> types.ModuleType:
    """The module ``name`` executed from ``source`` (once per process)."""
    module = sys.modules.get(name)
    if module is not None:
        return module
    filename = f"<onnx2fx-generated {name.removeprefix(PREFIX)}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module = types.ModuleType(name)
    module.__file__ = filename
    setattr(module, SOURCE_ATTRIBUTE, source)
    sys.modules[name] = module
    try:
        exec(compile(source, filename, "exec"), module.__dict__)  # noqa: S102 - source written by onnx2fx
    except BaseException:
        del sys.modules[name]
        raise
    return module


def resolve(name: str, source: str, qualname: str) -> Any:
    """A class or function of a generated module, rebuilding the module if this process lacks it."""
    target: Any = register(name, source)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


def load_graph_module(sources: list[tuple[str, str]], rebuild: Any, arguments: tuple) -> Any:
    """Register the generated modules a GraphModule's import block names, then rebuild it."""
    for name, source in sources:
        register(name, source)
    return rebuild(*arguments)


def _source_of(name: str) -> str | None:
    module = sys.modules.get(name)
    return getattr(module, SOURCE_ATTRIBUTE, None) if module is not None else None


class Pickler(pickle.Pickler):
    """Pickles references into generated modules with their source (see the module docstring)."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, torch.fx.GraphModule):
            rebuild, arguments = obj.__reduce__()
            import_block = arguments[1] if len(arguments) > 1 and isinstance(arguments[1], str) else ""
            sources = [(name, source) for name in dict.fromkeys(_IMPORTED.findall(import_block))
                       if (source := _source_of(name)) is not None]
            if sources:
                return load_graph_module, (sources, rebuild, arguments)
            return NotImplemented
        if isinstance(obj, (type, types.FunctionType)):
            module = getattr(obj, "__module__", None) or ""
            if module.startswith(PREFIX) and (source := _source_of(module)) is not None:
                return resolve, (module, source, obj.__qualname__)
        return NotImplemented


def save_module(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` with references into generated modules made loadable in any process."""
    torch.save(obj, path, pickle_module=sys.modules[__name__])
