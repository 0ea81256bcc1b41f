"""Evaluating emitted calls on FakeTensors whose dynamic sizes are symbolic.

Each call the emitter writes is also run here on fake tensors, so that the next handler knows the
ranks, dtypes and sizes of what it receives. Where a result's sizes are known without a run (an
elementwise function, a layer whose shape rule is simple, a data-dependent result) they are given
as an :data:`OutSpec` instead, which is much faster than torch's symbolic reference code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch._dispatch.python import enable_python_dispatcher
from torch._subclasses.fake_tensor import FakeTensorMode

from .nested import walk
from .shape_env import ConversionShapeEnv, SpecialisationRefused
from .shape_rules import fake_of, result_by_rule
from .values import SymElem

# Elementwise torch functions whose result has the sizes and dtype of their one float input.
SAME_SHAPE_FLOAT_FUNCTIONS = frozenset(
    f"torch.{name}" for name in (
        "relu", "sigmoid", "tanh", "erf", "exp", "log", "sqrt", "reciprocal", "neg", "abs", "floor", "ceil",
        "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "sign", "round",
        "rsqrt", "expm1", "log1p", "clamp")) | frozenset(
    f"F.{name}" for name in ("relu", "gelu", "silu", "mish", "softsign", "softplus", "elu", "selu", "celu",
                             "leaky_relu", "hardsigmoid", "hardswish", "hardtanh", "relu6", "tanhshrink",
                             "softshrink", "hardshrink", "logsigmoid"))

# The sizes (``None``: known only at run time) and dtype of one result of a data-dependent call;
# ``None`` for a result that is not a tensor (a list of tensors, an optional tensor).
OutSpec = tuple[Sequence["SymElem | int | None"], torch.dtype] | None


def symbolic(*objs: Any) -> bool:
    """Whether any tensor among ``objs`` has a size or an element that is symbolic (a SymInt)."""
    for leaf in walk(list(objs)):
        if isinstance(leaf, torch.SymInt):
            return True
        if isinstance(leaf, torch.Tensor) and any(isinstance(d, torch.SymInt) for d in leaf.shape):
            return True
    return False


def evaluate_on_fakes(fake_mode: FakeTensorMode, target: Callable[..., Any], fake_args: Any,
                      fake_kwargs: dict[str, Any]) -> Any:
    """``target`` on fake tensors. With symbolic sizes, torch's C++ meta kernels first (fast);
    where one would fix a dynamic size to a number (``F.interpolate`` with ``scale_factor``
    reads concrete sizes), the Python dispatcher's symbolic decompositions instead, as
    torch.export runs them (exact, but much slower: sympy on every size)."""
    env = fake_mode.shape_env
    if not symbolic(fake_args, fake_kwargs) or not isinstance(env, ConversionShapeEnv):
        with fake_mode:
            return target(*fake_args, **fake_kwargs)
    ruled = result_by_rule(fake_mode, target, fake_args, fake_kwargs)  # sizes as written: no sympy decisions
    if ruled is not None:
        return ruled
    try:
        with fake_mode, env.refusing_specialisation():
            return target(*fake_args, **fake_kwargs)
    except SpecialisationRefused:
        pass
    except Exception:  # noqa: BLE001 - some C++ kernels take no symbolic sizes (F.pad's list of
        pass  # pads computed from them): the symbolic path below handles those, or raises the error
    with fake_mode, enable_python_dispatcher():
        return target(*fake_args, **fake_kwargs)


def unknown_tensor(fake_mode: FakeTensorMode, sizes: Sequence[SymElem | int | None],
                   dtype: torch.dtype) -> torch.Tensor:
    """A fake tensor whose ``None`` sizes are only known at run time (unbacked symbols)."""
    env = fake_mode.shape_env
    dims: list[Any] = []
    for s in sizes:
        if s is None:
            u = env.create_unbacked_symint()
            torch._check(u >= 0)
            dims.append(u)
        else:
            dims.append(s.value if isinstance(s, SymElem) else s)
    if symbolic(dims) and all(isinstance(d, (int, torch.SymInt)) for d in dims):
        return fake_of(fake_mode, dims, dtype)  # sizes seen before: a detached template, not a new fake
    with fake_mode:
        return torch.empty(dims, dtype=dtype)
