"""Module-level torch functions copied into ``model.py`` (``Emitter.helper``).

A copied function is named in the generated file by its Python name with one leading underscore
(``mlas_tanh`` and ``_mlas_tanh`` both become ``_mlas_tanh``), so it cannot collide with the
generated module's own names. A helper that calls other helpers calls them by their Python names;
in the copy, those calls (names in code, not in strings or comments) are renamed to the copied
names, which is why a helper shared between op modules can be a public function of the module that
owns it. The functions it calls must be copied as well: a lowering registers them with
``Emitter.helper`` before the helper that calls them.
"""

from __future__ import annotations

import dis
import inspect
import io
import textwrap
import tokenize
import types
from collections.abc import Callable, Iterator
from typing import Any

from .emitted import Helper

PACKAGE = __name__.split(".")[0]


def helper_name(fn: Callable[..., Any]) -> str:
    """The name ``fn`` has in the generated file."""
    return "_" + fn.__name__.lstrip("_")


def copied_helper(fn: Callable[..., Any], leaf: bool) -> Helper:
    """``fn``'s source under its generated name, its calls of other helpers renamed the same way."""
    name = helper_name(fn)
    source = textwrap.dedent(inspect.getsource(fn))
    source = source.replace(f"def {fn.__name__}(", f"def {name}(", 1)
    renamed = {f.__name__: helper_name(f) for f in _called_functions(fn)
               if f.__name__ != fn.__name__ and not f.__name__.startswith("_")}
    return Helper(name, _rename_globals(source, renamed) if renamed else source, fn, leaf)


def _called_functions(fn: Callable[..., Any]) -> Iterator[types.FunctionType]:
    """The functions of this package that ``fn``'s body (nested functions included) loads by a
    global name."""
    namespace = getattr(fn, "__globals__", {})
    codes = [fn.__code__]
    while codes:
        code = codes.pop()
        codes += [c for c in code.co_consts if isinstance(c, types.CodeType)]
        for instruction in dis.get_instructions(code):
            if instruction.opname != "LOAD_GLOBAL":
                continue
            value = namespace.get(instruction.argval)
            if isinstance(value, types.FunctionType) and value.__module__.split(".")[0] == PACKAGE:
                yield value


def _rename_globals(source: str, renamed: dict[str, str]) -> str:
    """``source`` with the names in ``renamed`` replaced where they are code: not an attribute
    (``x.name``), not a keyword argument (``f(name=...)``), not inside a string or a comment."""
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)
              if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.COMMENT)]
    edits = []
    for i, token in enumerate(tokens):
        if token.type != tokenize.NAME or token.string not in renamed:
            continue
        if i > 0 and tokens[i - 1].string == ".":
            continue
        if i + 1 < len(tokens) and tokens[i + 1].string == "=":
            continue
        edits.append((*token.start, token.string))
    lines = source.splitlines(keepends=True)
    for row, col, old in sorted(edits, reverse=True):  # from the end, so earlier columns stay valid
        line = lines[row - 1]
        lines[row - 1] = line[:col] + renamed[old] + line[col + len(old):]
    return "".join(lines)
