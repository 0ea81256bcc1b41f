"""Resize and Upsample: every form ONNX has defined, in one place.

**Forms.** Resize-10 is ``(X, scales)`` with asymmetric coordinates and nearest rounding down;
Resize-11 and later are ``(X, roi, scales, sizes)`` with the coordinate transformation, rounding,
cubic, antialias, axes and aspect-ratio attributes. Upsample-7 gives ``scales`` as an attribute,
Upsample-9 as an input; both are Resize with asymmetric coordinates and nearest rounding down.
Each registered lowering (one per op: Resize from opset 10, Upsample from opset 7) only hands its
arguments to the one normaliser, :meth:`ResizeRequest.of_resize` / :meth:`ResizeRequest.of_upsample`,
which states the node in Resize-11's terms.

**Tiers**, tried in this order by :func:`_lower`; the first that applies writes the code:

1. :func:`_exact_bilinear` (Resize-11 and later): a 4-D float32 bilinear resize by a ratio that is
   not a power of two uses :func:`_resize_bilinear`, which reproduces onnxruntime's float32
   coordinates (``F.interpolate`` differs from them in the last bit there).
2. :func:`_interpolate_resize` / :func:`_interpolate_upsample`: ``F.interpolate`` where torch's
   interpolation is exactly ONNX's (nearest with asymmetric/floor or half-pixel rounding it
   reproduces, linear with half-pixel or aligned corners, bicubic); anything else raises
   ``UnsupportedOperatorError``, and whatever it emitted is undone (``Emitter.attempt``).
3. :func:`_separable`: every other combination of mode, coordinate transformation, rounding,
   antialiasing, region of interest and run-time scales or sizes, through :func:`_resize`, a
   separable implementation of the specification copied into ``model.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..codegen.emitter import Emitter
from ..codegen.values import SymElem, Value
from ..errors import UnsupportedOperatorError
from .registry import onnx_op

_LINEAR_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}

# The largest denominator and numerator of a scale whose output size is computed exactly as
# ``n * p // q`` for dynamic sizes: onnxruntime's float32 product ``scale * n`` is exact while
# ``n * p`` stays below 2**24, which these bounds keep for every n below 2**24 / MAX_NUMERATOR.
MAX_SCALE_DENOMINATOR = 1 << 8
MAX_SCALE_NUMERATOR = 1 << 10


# ---------------------------------------------------------------------------------- the normaliser
@dataclass(frozen=True)
class ResizeRequest:
    """A Resize or Upsample node in the terms of Resize-11 and later, which every tier takes.

    ``form`` is what the node was (``"Resize-10"``, ``"Resize"`` for Resize-11 and later,
    ``"Upsample"``): tiers 1 and 2 differ by form; tier 3 needs only the normalised fields."""

    form: str
    roi: Value | None
    scales: Value | None
    sizes: Value | None
    antialias: int = 0
    axes: list[int] | None = None
    coordinate_transformation_mode: str = "half_pixel"
    cubic_coeff_a: float = -0.75
    exclude_outside: int = 0
    extrapolation_value: float = 0.0
    keep_aspect_ratio_policy: str = "stretch"
    mode: str = "nearest"
    nearest_mode: str = "round_prefer_floor"
    # Upsample's mode as the node gives it ("bilinear" is normalised to "linear" above).
    given_mode: str = "nearest"

    @classmethod
    def of_resize(cls, g: Emitter, roi: Value | None, scales: Value | None, sizes: Value | None,
                  **attributes: object) -> ResizeRequest:
        """Resize-10's second input is ``scales`` (there is no ``roi``) and its coordinates are
        asymmetric with nearest rounding down, whatever attributes the node carries."""
        assert g.node is not None
        if g.node.opset < 11:
            attributes.update(coordinate_transformation_mode="asymmetric", nearest_mode="floor")
            return cls("Resize-10", None, roi, sizes, **attributes)  # type: ignore[arg-type]
        return cls("Resize", roi, scales, sizes, **attributes)  # type: ignore[arg-type]

    @classmethod
    def of_upsample(cls, g: Emitter, scales: Value | None, mode: str,
                    attributes: dict[str, object]) -> ResizeRequest:
        """Upsample-7's ``scales`` attribute becomes the ``scales`` input of Upsample-9."""
        given = attributes.get("scales")
        if isinstance(given, list):
            scales = g.const(torch.tensor(given, dtype=torch.float32))
        return cls("Upsample", None, scales, None, mode="linear" if mode in ("linear", "bilinear") else mode,
                   coordinate_transformation_mode="asymmetric", nearest_mode="floor", given_mode=mode)


# ---------------------------------------------------------------------------------- the registered lowerings
@onnx_op("Resize", 10)
def resize(g: Emitter, x: Value, roi: Value | None = None, scales: Value | None = None,
           sizes: Value | None = None, *, antialias: int = 0, axes: list[int] | None = None,
           coordinate_transformation_mode: str = "half_pixel", cubic_coeff_a: float = -0.75,
           exclude_outside: int = 0, extrapolation_value: float = 0.0,
           keep_aspect_ratio_policy: str = "stretch", mode: str = "nearest",
           nearest_mode: str = "round_prefer_floor") -> Value:
    """Resize-10 ``(X, scales)`` and Resize-11 and later ``(X, roi, scales, sizes)``."""
    return _lower(g, x, ResizeRequest.of_resize(
        g, roi, scales, sizes, antialias=antialias, axes=axes,
        coordinate_transformation_mode=coordinate_transformation_mode, cubic_coeff_a=cubic_coeff_a,
        exclude_outside=exclude_outside, extrapolation_value=extrapolation_value,
        keep_aspect_ratio_policy=keep_aspect_ratio_policy, mode=mode, nearest_mode=nearest_mode))


@onnx_op("Upsample", 7)
def upsample(g: Emitter, x: Value, scales: Value | None = None, *, mode: str = "nearest",
             **attributes: object) -> Value:
    """Upsample-7 (``scales`` attribute) and Upsample-9 (``scales`` input)."""
    return _lower(g, x, ResizeRequest.of_upsample(g, scales, mode, attributes))


def _lower(g: Emitter, x: Value, request: ResizeRequest) -> Value:
    """The tiers of the module docstring, in order."""
    if request.form == "Resize":
        exact = _exact_bilinear(g, x, request)
        if exact is not None:
            return exact
    interpolate = _interpolate_upsample if request.form == "Upsample" else _interpolate_resize
    try:
        with g.attempt():
            return interpolate(g, x, request)
    except UnsupportedOperatorError:
        pass
    return _separable(g, x, request)


# ---------------------------------------------------------------------------------- tier 1: exact bilinear
def _exact_bilinear(g: Emitter, x: Value, request: ResizeRequest) -> Value | None:
    """:func:`_resize_bilinear` for a 4-D float32 bilinear Resize whose scale is not a power of two
    (``F.interpolate`` matches onnxruntime's coordinates otherwise); else None.

    With static spatial sizes, constant scales or sizes. With dynamic ones, constant scales that
    are small binary fractions (1.5, 0.75, 3): the output size ``floor(n * scale)``, which
    onnxruntime computes in float32, is then exactly ``n * p // q`` and stays an expression of the
    input's size in ``model.py``; onnxruntime's float32 coordinates are reproduced at every size."""
    transform, scales, sizes = request.coordinate_transformation_mode, request.scales, request.sizes
    if request.mode != "linear" or x.rank != 4 or x.dtype != torch.float32 or request.antialias \
            or request.axes is not None \
            or transform not in ("half_pixel", "pytorch_half_pixel", "asymmetric", "align_corners") \
            or request.keep_aspect_ratio_policy != "stretch":
        return None
    in_h, in_w = x.static_shape()[2:]
    if in_h is None or in_w is None:
        return _dynamic_exact_bilinear(g, x, scales, sizes, transform)
    if sizes is not None and sizes.const is not None and sizes.const.numel() == 4:
        out = [int(v) for v in sizes.const.tolist()]
        if out[:2] != [d for d in x.static_shape()[:2]] and None not in x.static_shape()[:2]:
            return None
        ratios = [float(np.float32(o) / np.float32(i)) for o, i in zip(out[2:], (in_h, in_w))]
        out_h, out_w = out[2:]
    elif (sizes is None or sizes.const is not None and not sizes.const.numel()) and scales is not None \
            and scales.const is not None and scales.const.numel() == 4:
        given = [float(v) for v in scales.const.to(torch.float32).tolist()]
        if given[:2] != [1.0, 1.0]:
            return None
        ratios = given[2:]
        out_h, out_w = (int(np.float32(r) * np.float32(n)) for r, n in zip(ratios, (in_h, in_w)))
    else:
        return None
    if transform == "align_corners":
        exact = all(o == 1 or i == o or _power_of_two((i - 1) / (o - 1)) for i, o in ((in_h, out_h), (in_w, out_w)))
    else:
        exact = all(_power_of_two(r) for r in ratios)
    if exact:
        return None
    g.helper(_bilinear_taps)
    return g.call(g.helper(_resize_bilinear, leaf=True), x, out_h, out_w, ratios[0], ratios[1], transform)


def _dynamic_exact_bilinear(g: Emitter, x: Value, scales: Value | None, sizes: Value | None,
                            transform: str) -> Value | None:
    if sizes is not None and not (sizes.const is not None and not sizes.const.numel()):
        return None
    if scales is None or scales.const is None or scales.const.numel() != 4:
        return None
    given = [float(v) for v in scales.const.to(torch.float32).tolist()]
    if given[:2] != [1.0, 1.0] or any(r <= 0 for r in given[2:]):
        return None
    ratios = given[2:]
    if transform != "align_corners" and all(_power_of_two(r) for r in ratios):
        return None  # F.interpolate computes the same coordinates
    outs = []
    for axis, ratio in zip((2, 3), ratios):
        p, q = ratio.as_integer_ratio()  # q is a power of two: the scale is a binary fraction
        if q > MAX_SCALE_DENOMINATOR or p > MAX_SCALE_NUMERATOR:
            return None
        outs.append(_times_fraction(g.dim(x, axis), p, q))
    g.helper(_bilinear_taps)
    return g.call(g.helper(_resize_bilinear, leaf=True), x, outs[0], outs[1], ratios[0], ratios[1], transform)


# ---------------------------------------------------------------------------------- tier 2: F.interpolate
def _scaled_size(g: Emitter, x: Value, axis: int, scale: float) -> SymElem | None:
    """``floor(n * scale)`` for a dynamic size ``n``, as an expression of it, when the scale is a
    small binary fraction ``p / q`` (then it is exactly ``n * p // q``, in float32 as onnxruntime
    computes it and in float64 as :func:`_resize` does); else ``None`` (known only at run time)."""
    if scale <= 0:
        return None
    p, q = float(scale).as_integer_ratio()  # scales are float32 values: q is a power of two
    if q > MAX_SCALE_DENOMINATOR or p > MAX_SCALE_NUMERATOR:
        return None
    return _times_fraction(g.dim(x, axis), p, q)


def _times_fraction(size: SymElem, p: int, q: int) -> SymElem:
    """``size * p // q`` written without the operations that change nothing (a whole-number scale
    needs no division): each symbolic operation costs a simplification during conversion."""
    if p != 1:
        size = size * p
    return size // q if q != 1 else size


def _interpolate_resize(g: Emitter, x: Value, request: ResizeRequest) -> Value:
    """``F.interpolate`` for a Resize whose mode, coordinates and rounding torch reproduces."""
    scales, sizes, axes, mode, nearest_mode = (request.scales, request.sizes, request.axes, request.mode,
                                               request.nearest_mode)
    rank = x.rank
    nd = rank - 2
    if axes is not None and sorted(a + rank if a < 0 else a for a in axes) != list(range(2, rank)):
        raise g.unsupported("axes", f"{axes}: only the spatial axes can be resized")
    if request.antialias:
        raise g.unsupported("antialias", "1")
    if request.keep_aspect_ratio_policy != "stretch" and sizes is not None:
        raise g.unsupported("keep_aspect_ratio_policy", repr(request.keep_aspect_ratio_policy))
    size_list = g.int_list(sizes) if sizes is not None and (sizes.const is None or sizes.const.numel()) else None
    scale_list = g.static_floats(scales, "scales") if scales is not None and (
        scales.const is None or scales.const.numel()) else None
    kwargs: dict[str, object] = {}
    if size_list is not None:
        kwargs["size"] = size_list[-nd:]
    elif scale_list is not None:
        if any(s != 1.0 for s in scale_list[:-nd]) and len(scale_list) == rank:
            raise g.unsupported(None, f"Resize scales {scale_list} change the batch or channel dimension")
        kwargs["scale_factor"] = scale_list[-nd:]
    else:
        raise g.unsupported(None, "Resize needs constant scales or sizes")
    ctm = request.coordinate_transformation_mode
    if mode == "nearest":
        # torch's nearest-exact rounds half-pixel coordinates with ties up; integer upscaling has no ties.
        exact = nearest_mode == "round_prefer_ceil" or (
            nearest_mode == "round_prefer_floor" and _integer_upscale(x, nd, scale_list, size_list))
        if (ctm, nearest_mode) == ("asymmetric", "floor"):
            kwargs["mode"] = "nearest"
        elif ctm in ("half_pixel", "pytorch_half_pixel") and exact:
            kwargs["mode"] = "nearest-exact"
        else:
            raise g.unsupported("coordinate_transformation_mode",
                                f"{ctm!r} with nearest_mode {nearest_mode!r} for mode 'nearest'")
    elif mode == "linear":
        kwargs["mode"] = _LINEAR_MODES.get(nd, "linear")
        if ctm == "align_corners":
            kwargs["align_corners"] = True
        elif ctm in ("half_pixel", "pytorch_half_pixel"):
            kwargs["align_corners"] = False
        else:
            raise g.unsupported("coordinate_transformation_mode", f"{ctm!r} for mode 'linear'")
    elif mode == "cubic" and nd == 2 and ctm in ("half_pixel", "align_corners") and request.cubic_coeff_a == -0.75 \
            and not request.exclude_outside:
        kwargs["mode"] = "bicubic"
        kwargs["align_corners"] = ctm == "align_corners"
    else:
        raise g.unsupported("mode", f"{mode!r} with coordinate_transformation_mode {ctm!r} on a {rank}-D input")
    # The result's sizes, written out where they are expressions of the input's: evaluating
    # F.interpolate on symbolic sizes runs its Python decomposition, which is slow.
    if size_list is not None:
        out: list[SymElem | None] = list(size_list[-nd:])
    else:
        assert scale_list is not None
        out = [_scaled_size(g, x, rank - nd + i, f) for i, f in enumerate(scale_list[-nd:])]
    spec = None
    if None not in out and any(not d.is_static for d in g.shape(x)):
        spec = [([*g.shape(x)[:2], *out], x.dtype)]
    return g.call("F.interpolate", x, out_spec=spec, **kwargs)


def _integer_upscale(x: Value, nd: int, scales: list[float] | None, sizes: list[SymElem] | None) -> bool:
    """Whether every spatial axis is enlarged by a whole factor (known at conversion time)."""
    if scales is not None:
        return all(float(s).is_integer() and s >= 1 for s in scales[-nd:])
    spatial = x.static_shape()[2:]
    return sizes is not None and all(isinstance(n, int) and n > 0 and s.is_static and int(s.value) % n == 0
                                     for n, s in zip(spatial, sizes[-nd:]))


def _interpolate_upsample(g: Emitter, x: Value, request: ResizeRequest) -> Value:
    """Upsample's coordinates are asymmetric: only nearest maps exactly onto torch."""
    if request.given_mode != "nearest":
        raise g.unsupported("mode", f"{request.given_mode!r} (asymmetric linear upsampling has no torch equivalent)")
    scale_list = g.static_floats(request.scales, "scales")
    assert scale_list is not None
    return g.call("F.interpolate", x, scale_factor=scale_list[-(x.rank - 2):], mode="nearest")


# ---------------------------------------------------------------------------------- tier 3: separable
def _separable(g: Emitter, x: Value, request: ResizeRequest) -> Value:
    """:func:`_resize` (copied into ``model.py``) for every form the tiers above do not take."""
    r = request
    scales, sizes, mode = r.scales, r.sizes, r.mode
    if mode not in ("nearest", "linear", "cubic"):
        raise g.unsupported("mode", f"value {mode!r}")
    if sizes is not None and sizes.const is not None and not sizes.const.numel():
        sizes = None
    if scales is not None and scales.const is not None and not scales.const.numel():
        scales = None
    spec = [(_output_sizes(g, x, scales, sizes, r.axes, r.keep_aspect_ratio_policy), x.dtype)]
    g.helper(_resize_weights)
    g.helper(_resize_axis)
    g.helper(_scaled_length)
    if scales is not None and scales.const is not None and sizes is None:
        scales = [float(f) for f in scales.const.reshape(-1).tolist()]  # type: ignore[assignment]
    return g.call(g.helper(_resize, leaf=True), x, r.roi, scales, sizes, r.axes, mode, r.coordinate_transformation_mode,
                  r.nearest_mode, r.cubic_coeff_a, bool(r.exclude_outside), r.extrapolation_value,
                  r.keep_aspect_ratio_policy, bool(r.antialias), out_spec=spec)


def _output_sizes(g: Emitter, x: Value, scales: Value | None, sizes: Value | None, axes: list[int] | None,
                  policy: str) -> list:
    """The output sizes when they are known at conversion time (``None`` where they are not)."""
    rank = x.rank
    axes = list(range(rank)) if axes is None else [a % rank for a in axes]
    shape: list = g.shape(x)
    if sizes is not None and sizes.const is not None and sizes.const.numel() and policy == "stretch":
        for a, s in zip(axes, sizes.const.tolist()):
            shape[a] = int(s)
        return shape
    static = x.static_shape()
    if scales is not None and scales.const is not None and scales.const.numel():
        for a, f in zip(axes, scales.const.tolist()):
            shape[a] = int(f * static[a]) if static[a] is not None else _scaled_size(g, x, a, f)
        return shape
    return [d if i not in axes else None for i, d in enumerate(shape)]


# ---------------------------------------------------------------------------------- model.py helpers
def _resize_weights(ratio: torch.Tensor, scale: float, mode: str, nearest_mode: str, cubic_a: float,
                    antialias: bool) -> torch.Tensor:
    """Interpolation weights of the taps around each output position (one row per position);
    ``ratio`` is the source coordinate's fractional part (1.0 when it is a whole number)."""
    r = ratio.unsqueeze(-1)
    if mode == "nearest":
        whole = r == 1.0
        if nearest_mode == "round_prefer_floor":
            second = r > 0.5
        elif nearest_mode == "round_prefer_ceil":
            second = r >= 0.5
        else:
            second = torch.full_like(r, nearest_mode == "ceil", dtype=torch.bool)
        second = second | whole
        return torch.cat([(~second).double(), second.double()], -1)
    if antialias:  # the filter is widened by 1 / scale when downsampling
        s = min(scale, 1.0)
        start = int((-(1 if mode == "linear" else 2) / s) // 1) + 1
        x = (torch.arange(start, 2 - start, dtype=torch.float64) - r).abs() * s
        if mode == "linear":
            w = (1 - x).clamp(0, 1)
        else:
            a = cubic_a
            w = torch.where(x <= 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                            torch.where(x < 2, ((a * x - 5 * a) * x + 8 * a) * x - 4 * a, torch.zeros_like(x)))
        return w / w.sum(-1, keepdim=True)
    if mode == "linear":
        return torch.cat([1 - r, r], -1)
    a, s = cubic_a, 1 - r
    return torch.cat([((a * (r + 1) - 5 * a) * (r + 1) + 8 * a) * (r + 1) - 4 * a,
                      ((a + 2) * r - (a + 3)) * r * r + 1,
                      ((a + 2) * s - (a + 3)) * s * s + 1,
                      ((a * (s + 1) - 5 * a) * (s + 1) + 8 * a) * (s + 1) - 4 * a], -1)


def _resize_axis(x: torch.Tensor, axis: int, scale: float, size: int, roi: tuple[float, float] | None, mode: str,
                 transform: str, nearest_mode: str, cubic_a: float, exclude_outside: bool,
                 extrapolation_value: float, antialias: bool) -> torch.Tensor:
    """Resize ``x`` (float64) along one axis to ``size`` elements."""
    length = x.shape[axis]
    y = torch.arange(size, dtype=torch.float64)
    scaled = scale * length
    extrapolated = None
    if transform == "align_corners":
        source = torch.zeros_like(y) if scaled == 1 else y * (length - 1) / (scaled - 1)
    elif transform == "asymmetric":
        source = y / scale
    elif transform == "tf_crop_and_resize":
        start, end = roi if roi is not None else (0.0, 1.0)
        if scaled == 1:
            source = torch.full_like(y, (end - start) * (length - 1) / 2)
        else:
            source = y * (end - start) * (length - 1) / (scaled - 1)
        source = source + start * (length - 1)
        extrapolated = (source < 0) | (source > length - 1)
    elif transform == "pytorch_half_pixel":
        source = torch.full_like(y, -0.5) if scaled == 1 else (y + 0.5) / scale - 0.5
    elif transform == "half_pixel_symmetric":
        offset = length / 2 * (1 - size / scaled)
        source = offset + (y + 0.5) / scale - 0.5
    else:  # half_pixel
        source = (y + 0.5) / scale - 0.5
    floor = torch.floor(source)
    ratio = torch.where(source == floor, torch.ones_like(source), source - floor)
    weights = _resize_weights(ratio, scale, mode, nearest_mode, cubic_a, antialias)
    n = weights.shape[-1]
    pad = (n + 1) // 2
    padded = source + pad
    base = torch.floor(padded)
    frac = padded - base
    if n % 2 == 0:
        offset = torch.where(frac == 0, -(n // 2), -(n // 2) + 1)
    else:
        offset = torch.where(frac <= 0.5, -((n - 1) // 2), -((n - 1) // 2) + 1)
    taps = (base.long() + offset).unsqueeze(-1) + torch.arange(n) - pad  # (size, n)
    if exclude_outside:
        weights = torch.where((taps < 0) | (taps >= length), torch.zeros_like(weights), weights)
        total = weights.sum(-1, keepdim=True)
        weights = weights / torch.where(total == 0, torch.ones_like(total), total)
    gathered = x.index_select(axis, taps.clamp(0, length - 1).reshape(-1))
    gathered = gathered.reshape(*x.shape[:axis], size, n, *x.shape[axis + 1:])
    result = (gathered * weights.reshape(size, n, *[1] * (x.dim() - axis - 1))).sum(axis + 1)
    if extrapolated is not None:
        mask = extrapolated.reshape(size, *[1] * (x.dim() - axis - 1))
        result = torch.where(mask, torch.full_like(result, extrapolation_value), result)
    return result


def _scaled_length(n: int, scale: float) -> int:
    """``floor(n * scale)``; for a small binary fraction ``p / q`` computed as ``n * p // q``, which
    is exact and keeps a symbolic ``n`` an integer expression (torch.export). The bounds are
    ``MAX_SCALE_DENOMINATOR`` and ``MAX_SCALE_NUMERATOR`` (this function is copied into model.py)."""
    p, q = float(scale).as_integer_ratio()
    if q <= 256 and p <= 1024:
        return n * p // q if (p, q) != (1, 1) else n
    return torch.sym_int(scale * n)


def _resize(x: torch.Tensor, roi: torch.Tensor | None, scales: torch.Tensor | list[float] | None,
            sizes: torch.Tensor | None, axes: list[int] | None, mode: str, transform: str, nearest_mode: str,
            cubic_a: float, exclude_outside: bool, extrapolation_value: float, keep_aspect_ratio_policy: str,
            antialias: bool) -> torch.Tensor:
    """ONNX Resize, one axis after another, computed in float64 and cast back. Constant scales come
    as a list, so that the output sizes stay expressions of the input's sizes under torch.export."""
    rank = x.dim()
    axes = list(range(rank)) if axes is None else [a % rank for a in axes]
    if isinstance(scales, list):
        scale_list = scales or None
    else:
        scale_list = scales.tolist() if scales is not None and scales.numel() else None
    size_list = sizes.tolist() if sizes is not None and sizes.numel() else None
    roi_list = roi.tolist() if roi is not None and roi.numel() else None
    n = len(axes)
    if size_list is not None:
        factors = [size_list[i] / x.shape[a] for i, a in enumerate(axes)]
        if keep_aspect_ratio_policy != "stretch":
            factor = min(factors) if keep_aspect_ratio_policy == "not_larger" else max(factors)
            factors = [factor] * n
            size_list = [int(factor * x.shape[a] + 0.5) for a in axes]
    else:
        factors = list(scale_list)
        size_list = [_scaled_length(x.shape[a], f) for f, a in zip(factors, axes)]
    result = x.to(torch.float64)
    for i, a in enumerate(axes):
        region = (roi_list[i], roi_list[n + i]) if roi_list is not None else None
        if abs(factors[i] - 1.0) < 1e-9 and size_list[i] == result.shape[a] and (
                region is None or (abs(region[0]) < 1e-9 and abs(region[1] - 1.0) < 1e-9)):
            continue
        result = _resize_axis(result, a, factors[i], size_list[i], region, mode, transform, nearest_mode, cubic_a,
                              exclude_outside, extrapolation_value, antialias)
    if x.is_floating_point():
        return result.to(x.dtype)
    info = torch.iinfo(x.dtype)
    return result.round().clamp(info.min, info.max).to(x.dtype)


def _bilinear_taps(out_size: int, in_size: int, scale: float, transform: str) -> tuple[torch.Tensor, ...]:
    """Source taps and weights along one axis, computed in float32 exactly as onnxruntime does:
    ``(x + 0.5) / scale - 0.5`` (a division by the float32 scale, where torch multiplies by the
    inverse), clamped to the input, ``|src - tap|`` weights, 0.5/0.5 on a clamped edge."""
    dst = torch.arange(out_size, dtype=torch.float32)
    factor = torch.tensor(scale, dtype=torch.float32)
    if scale == 1.0:
        src = dst
    elif transform == "align_corners":
        src = torch.zeros_like(dst) if out_size == 1 else dst * (in_size - 1) / (out_size - 1)
    elif transform == "asymmetric":
        src = dst / factor
    elif transform == "pytorch_half_pixel" and out_size <= 1:
        src = torch.zeros_like(dst)
    else:  # half_pixel, pytorch_half_pixel
        src = (dst + 0.5) / factor - 0.5
    src = src.clamp(0, in_size - 1)
    low = src.long().clamp(max=in_size - 1)
    high = (low + 1).clamp(max=in_size - 1)
    same = low == high
    half = torch.full_like(src, 0.5)
    return low, high, torch.where(same, half, (src - low).abs()), torch.where(same, half, (src - high).abs())


def _resize_bilinear(x: torch.Tensor, out_h: int, out_w: int, scale_h: float, scale_w: float,
                     transform: str) -> torch.Tensor:
    """Bilinear Resize of an NCHW float32 tensor with onnxruntime's coordinates, weights and sum
    order (corner weight products, four taps added left to right).

    ``F.interpolate`` computes the source coordinate with the inverse scale; for a ratio that is
    not a power of two it differs from onnxruntime's in the last bit, which on an image with sharp
    gradients (a photo entering a detector's own resize) already exceeds the validation gate."""
    y1, y2, dy1, dy2 = _bilinear_taps(out_h, x.shape[2], scale_h, transform)
    x1, x2, dx1, dx2 = _bilinear_taps(out_w, x.shape[3], scale_w, transform)
    top, bottom = x.index_select(2, y1), x.index_select(2, y2)
    dy1, dy2 = dy1[:, None], dy2[:, None]
    return (dx2 * dy2 * top.index_select(3, x1) + dx1 * dy2 * top.index_select(3, x2)
            + dx2 * dy1 * bottom.index_select(3, x1) + dx1 * dy1 * bottom.index_select(3, x2))


def _power_of_two(ratio: float) -> bool:
    mantissa, _ = math.frexp(ratio)
    return mantissa == 0.5
