"""Evaluating emitted calls on shape-only tensors, so that each handler knows what it receives.

Each call the emitter writes is also run here, so that the next handler knows the ranks, dtypes
and sizes of what it receives. Where every size is static the call runs on plain ``meta`` tensors
(torch's C++ shape functions, no Python dispatch: several times faster than a FakeTensor); where a
size is symbolic, or a call cannot run on ``meta`` (data-dependent results, tensors made inside the
call), on FakeTensors in the conversion's ``FakeTensorMode``. Values may therefore hold either
kind; :func:`as_fakes` turns ``meta`` tensors into fakes where a FakeTensor run needs them. Where a
result's sizes are known without a run (an elementwise function, a layer whose shape rule is
simple, a data-dependent result) they are given as an :data:`OutSpec` instead, which is much faster
than torch's symbolic reference code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch._dispatch.python import enable_python_dispatcher
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.weak import WeakIdKeyDictionary

from .nested import map_leaves, walk
from .shape_env import ConversionShapeEnv, SpecialisationRefused
from .shape_rules import PendingFake, fake_of, module_result_sizes, result_by_rule
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
        if isinstance(leaf, (torch.Tensor, PendingFake)) and any(isinstance(d, torch.SymInt) for d in leaf.shape):
            return True
    return False


# Off: every call runs on FakeTensors (the tests compare the code generated either way).
META_EVALUATION = True


def meta_like(t: torch.Tensor) -> torch.Tensor:
    """A ``meta`` tensor with the static sizes, strides and dtype of ``t``."""
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")


# meta tensor -> the fake tensor standing for it in FakeTensor runs (one per meta tensor)
_FAKES_OF_META: WeakIdKeyDictionary = WeakIdKeyDictionary()


def as_fakes(fake_mode: FakeTensorMode, obj: Any) -> Any:
    """``obj`` with every ``meta`` tensor replaced by a FakeTensor of ``fake_mode`` (on the CPU,
    like the fakes it meets: a fake on ``meta`` would not mix with them), and every
    :class:`PendingFake` made."""
    def fake(leaf: Any) -> Any:
        if isinstance(leaf, PendingFake):
            return leaf.materialize()
        if not isinstance(leaf, torch.Tensor) or leaf.device.type != "meta":
            return leaf
        cached = _FAKES_OF_META.get(leaf)
        if cached is None or cached.fake_mode is not fake_mode:
            with fake_mode:
                cached = torch.empty_strided(leaf.shape, leaf.stride(), dtype=leaf.dtype)
            _FAKES_OF_META[leaf] = cached
        return cached
    return map_leaves(obj, fake)


def evaluate_on_meta(target: Callable[..., Any], args: Any, kwargs: dict[str, Any]) -> tuple[bool, Any]:
    """``target`` on ``meta`` tensors when every size is static: ``(True, result)``, or
    ``(False, None)`` where the call needs a FakeTensor run (a data-dependent result, a tensor made
    inside the call, an op without a meta kernel); any error is left to that run to report."""
    if not META_EVALUATION:
        return False, None
    leaves = walk([args, kwargs])
    if not any(isinstance(t, torch.Tensor) for t in leaves):
        return False, None  # nothing to take the device from: the call would make real tensors
    key = _cache_key(target, args, kwargs)
    cached = _META_RESULTS.get(key) if key is not None else None
    if cached is not None:
        return True, map_leaves(cached, _fresh_meta)
    try:
        result = target(*map_leaves(args, _to_meta), **map_leaves(kwargs, _to_meta))
    except Exception:  # noqa: BLE001 - the FakeTensor run decides, and words the error
        return False, None
    if any(isinstance(t, torch.Tensor) and t.device.type != "meta" for t in walk(result)):
        return False, None
    if key is not None:
        if len(_META_RESULTS) >= _META_RESULTS_LIMIT:
            _META_RESULTS.clear()
        _META_RESULTS[key] = result
    return True, result


def linear_on_meta(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """``module(x)`` for a linear layer and a static ``x``: a contiguous meta tensor of the sizes its
    shape rule gives (:func:`~.shape_rules.module_result_sizes`), as torch allocates it. Torch's
    meta run of a linear layer is Python reference code (the ``addmm`` decomposition) whose first
    call in a process costs milliseconds. ``None`` for another layer, where the rule declines (the
    layer's own run then words the error) or where meta evaluation is off."""
    if not META_EVALUATION or not isinstance(module, torch.nn.Linear):
        return None
    sizes = module_result_sizes(module, x)
    return None if sizes is None else torch.empty(sizes, dtype=x.dtype, device="meta")


def same_layout_on_meta(x: torch.Tensor) -> torch.Tensor | None:
    """The result of an elementwise function of one float tensor ``x`` of static sizes (one of
    :data:`SAME_SHAPE_FLOAT_FUNCTIONS`): a meta tensor of ``x``'s sizes, strides and dtype, where
    ``x`` is contiguous or channels-last (dense and non-overlapping: torch's elementwise kernels
    then keep its strides, even those of its length-1 dimensions). ``None`` for another layout (the
    call then runs on meta tensors) or where meta evaluation is off."""
    if not META_EVALUATION:
        return None
    if x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)):
        return meta_like(x)
    return None


SOFTMAX_FUNCTIONS = frozenset({"torch.softmax", "torch.log_softmax"})


def softmax_on_meta(x: torch.Tensor, dim: int) -> torch.Tensor | None:
    """The result of ``torch.softmax`` or ``torch.log_softmax`` along ``dim`` of a float tensor ``x``
    of static sizes laid out with torch's default strides, without a ``dtype``: a meta tensor of
    the same sizes, strides and dtype (the meta run is Python reference code, milliseconds the first
    time in a process). ``None`` for another layout (the meta run then answers: on some, such as
    odd strides on length-1 dimensions, it keeps strides the CPU kernel does not), for a ``dim`` out
    of range (torch's run words the error) or where meta evaluation is off."""
    rank = max(x.dim(), 1)
    if not META_EVALUATION or not -rank <= dim < rank or x.stride() != _default_strides(x.shape):
        return None
    return meta_like(x)


def _default_strides(sizes: Sequence[int]) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(sizes):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


# Results of meta runs by call: networks repeat the same layer on the same sizes many times, and
# several of torch's meta functions are Python reference code (layer_norm, gelu: milliseconds).
_META_RESULTS: dict[Any, Any] = {}
_META_RESULTS_LIMIT = 8192
_PLAIN_TYPES = (int, float, bool, str, type(None), torch.dtype, torch.device, torch.layout, torch.memory_format)


class _Uncacheable(Exception):
    pass


def _cache_key(target: Any, args: Any, kwargs: dict[str, Any]) -> Any:
    """What a meta run's result depends on, or ``None`` where that cannot be told: the target (a
    function that closes over nothing, or one of torch's own layers with its settings) and, per
    argument, a tensor's sizes, strides and dtype or a plain value."""
    if isinstance(target, torch.nn.Module):
        if not type(target).__module__.startswith("torch.nn.modules."):
            return None
        weight = next(iter(target.parameters()), None)
        target_key: Any = ("module", type(target), repr(target), target.training,
                           weight.dtype if weight is not None else None)
    elif getattr(target, "__closure__", None) is None and getattr(target, "__name__", "<lambda>") != "<lambda>":
        target_key = target
    else:
        return None
    try:
        return target_key, _argument_key(args), _argument_key(kwargs)
    except _Uncacheable:
        return None


def _argument_key(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return "tensor", tuple(obj.shape), obj.stride(), obj.dtype
    if isinstance(obj, (list, tuple)):
        return type(obj).__name__, tuple(_argument_key(o) for o in obj)
    if isinstance(obj, dict):
        return "dict", tuple((k, _argument_key(v)) for k, v in obj.items())
    if isinstance(obj, _PLAIN_TYPES) and not isinstance(obj, torch.SymInt):
        return type(obj), obj
    raise _Uncacheable


def _fresh_meta(leaf: Any) -> Any:
    return meta_like(leaf) if isinstance(leaf, torch.Tensor) else leaf


def _to_meta(leaf: Any) -> Any:
    if isinstance(leaf, torch.Tensor) and leaf.device.type != "meta":
        return meta_like(leaf)
    return leaf


def evaluate_on_fakes(fake_mode: FakeTensorMode, target: Callable[..., Any], fake_args: Any,
                      fake_kwargs: dict[str, Any]) -> Any:
    """``target`` on shape-only tensors: with static sizes on ``meta`` tensors where it runs there.
    With symbolic sizes, torch's C++ meta kernels on fakes first (fast); where one would fix a
    dynamic size to a number (``F.interpolate`` with ``scale_factor`` reads concrete sizes), the
    Python dispatcher's symbolic decompositions instead, as torch.export runs them (exact, but much
    slower: sympy on every size)."""
    env = fake_mode.shape_env
    sizes_symbolic = symbolic(fake_args, fake_kwargs)
    if not sizes_symbolic:
        done, result = evaluate_on_meta(target, fake_args, fake_kwargs)
        if done:
            return result
    elif isinstance(env, ConversionShapeEnv):
        ruled = result_by_rule(fake_mode, target, fake_args, fake_kwargs)  # sizes as written: no sympy decisions
        if ruled is not None:
            return ruled
    fake_args, fake_kwargs = as_fakes(fake_mode, fake_args), as_fakes(fake_mode, fake_kwargs)
    if not sizes_symbolic or not isinstance(env, ConversionShapeEnv):
        with fake_mode:
            return target(*fake_args, **fake_kwargs)
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
                   dtype: torch.dtype) -> torch.Tensor | PendingFake:
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
