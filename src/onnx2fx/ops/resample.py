"""Resampling: Resize in every mode ONNX defines, GridSample, AffineGrid, Col2Im.

Resize becomes ``F.interpolate`` where torch's interpolation is exactly ONNX's (see
:func:`onnx2fx.ops.nn.resize`); a 4-D bilinear resize by a ratio that is not a power of two uses
:func:`_resize_bilinear`, which reproduces onnxruntime's float32 coordinates; every other
combination of mode, coordinate transformation, rounding, antialiasing, region of interest and
run-time scales uses :func:`_resize` below, a separable implementation of the specification copied
into ``model.py``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..codegen.emitter import Emitter
from ..codegen.values import Value
from ..errors import UnsupportedOperatorError
from . import nn as nn_ops
from .registry import onnx_op


# ---------------------------------------------------------------------------------- Resize (general)
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
    ``nn.MAX_SCALE_DENOMINATOR`` and ``nn.MAX_SCALE_NUMERATOR`` (this function is copied into model.py)."""
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


# ---------------------------------------------------------------------------------- Resize (bilinear, exact)
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


def exact_bilinear(g: Emitter, x: Value, scales: Value | None, sizes: Value | None, *, antialias: int,
                   axes: list[int] | None, coordinate_transformation_mode: str, mode: str,
                   keep_aspect_ratio_policy: str) -> Value | None:
    """:func:`_resize_bilinear` for a 4-D float32 bilinear Resize whose scale is not a power of two
    (``F.interpolate`` matches onnxruntime's coordinates otherwise); else None.

    With static spatial sizes, constant scales or sizes. With dynamic ones, constant scales that
    are small binary fractions (1.5, 0.75, 3): the output size ``floor(n * scale)``, which
    onnxruntime computes in float32, is then exactly ``n * p // q`` and stays an expression of the
    input's size in ``model.py``; onnxruntime's float32 coordinates are reproduced at every size."""
    transform = coordinate_transformation_mode
    if mode != "linear" or x.rank != 4 or x.dtype != torch.float32 or antialias or axes is not None \
            or transform not in ("half_pixel", "pytorch_half_pixel", "asymmetric", "align_corners") \
            or keep_aspect_ratio_policy != "stretch":
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
        if q > nn_ops.MAX_SCALE_DENOMINATOR or p > nn_ops.MAX_SCALE_NUMERATOR:
            return None
        outs.append(g.dim(x, axis) * p // q if (p, q) != (1, 1) else g.dim(x, axis))
    g.helper(_bilinear_taps)
    return g.call(g.helper(_resize_bilinear, leaf=True), x, outs[0], outs[1], ratios[0], ratios[1], transform)


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
            shape[a] = int(f * static[a]) if static[a] is not None else nn_ops.scaled_size(g, x, a, f)
        return shape
    return [d if i not in axes else None for i, d in enumerate(shape)]


def resize_general(g: Emitter, x: Value, roi: Value | None, scales: Value | None, sizes: Value | None, *,
                   antialias: int = 0, axes: list[int] | None = None,
                   coordinate_transformation_mode: str = "half_pixel", cubic_coeff_a: float = -0.75,
                   exclude_outside: int = 0, extrapolation_value: float = 0.0,
                   keep_aspect_ratio_policy: str = "stretch", mode: str = "nearest",
                   nearest_mode: str = "round_prefer_floor") -> Value:
    if mode not in ("nearest", "linear", "cubic"):
        raise g.unsupported("mode", f"value {mode!r}")
    if sizes is not None and sizes.const is not None and not sizes.const.numel():
        sizes = None
    if scales is not None and scales.const is not None and not scales.const.numel():
        scales = None
    spec = [(_output_sizes(g, x, scales, sizes, axes, keep_aspect_ratio_policy), x.dtype)]
    g.helper(_resize_weights)
    g.helper(_resize_axis)
    g.helper(_scaled_length)
    if scales is not None and scales.const is not None and sizes is None:
        scales = [float(f) for f in scales.const.reshape(-1).tolist()]  # type: ignore[assignment]
    return g.call(g.helper(_resize, leaf=True), x, roi, scales, sizes, axes, mode, coordinate_transformation_mode,
                  nearest_mode, cubic_coeff_a, bool(exclude_outside), extrapolation_value, keep_aspect_ratio_policy,
                  bool(antialias), out_spec=spec)


@onnx_op("Resize", 10)
def resize(g: Emitter, x: Value, roi: Value | None = None, scales: Value | None = None,
           sizes: Value | None = None, *, antialias: int = 0, axes: list[int] | None = None,
           coordinate_transformation_mode: str = "half_pixel", cubic_coeff_a: float = -0.75,
           exclude_outside: int = 0, extrapolation_value: float = 0.0,
           keep_aspect_ratio_policy: str = "stretch", mode: str = "nearest",
           nearest_mode: str = "round_prefer_floor") -> Value:
    """``F.interpolate`` where it is exactly ONNX's Resize, else the general implementation."""
    attributes = dict(antialias=antialias, axes=axes, coordinate_transformation_mode=coordinate_transformation_mode,
                      cubic_coeff_a=cubic_coeff_a, exclude_outside=exclude_outside,
                      extrapolation_value=extrapolation_value, keep_aspect_ratio_policy=keep_aspect_ratio_policy,
                      mode=mode, nearest_mode=nearest_mode)
    assert g.node is not None
    if g.node.opset >= 11:
        exact = exact_bilinear(g, x, scales, sizes, antialias=antialias, axes=axes, mode=mode,
                               coordinate_transformation_mode=coordinate_transformation_mode,
                               keep_aspect_ratio_policy=keep_aspect_ratio_policy)
        if exact is not None:
            return exact
    try:
        with g.attempt():
            return nn_ops.resize(g, x, roi, scales, sizes, **attributes)
    except UnsupportedOperatorError:
        pass
    if g.node.opset < 11:  # Resize-10: (X, scales), asymmetric coordinates, nearest rounds down
        roi, scales = None, roi
        attributes = {**attributes, "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    return resize_general(g, x, roi, scales, sizes, **attributes)  # type: ignore[arg-type]


@onnx_op("Upsample", 7)
def upsample(g: Emitter, x: Value, scales: Value | None = None, *, mode: str = "nearest",
             **attributes: object) -> Value:
    """Upsample is Resize with asymmetric coordinates (nearest rounding down)."""
    try:
        with g.attempt():
            return nn_ops.upsample(g, x, scales, mode=mode, **attributes)
    except UnsupportedOperatorError:
        pass
    given = attributes.get("scales")
    if isinstance(given, list):
        scales = g.const(torch.tensor(given, dtype=torch.float32))
    return resize_general(g, x, None, scales, None, mode="linear" if mode in ("linear", "bilinear") else mode,
                          coordinate_transformation_mode="asymmetric", nearest_mode="floor")


# ---------------------------------------------------------------------------------- grids
_GRID_MODES = {"linear": "bilinear", "bilinear": "bilinear", "nearest": "nearest", "cubic": "bicubic",
               "bicubic": "bicubic"}


@onnx_op("GridSample", 16)
def grid_sample(g: Emitter, x: Value, grid: Value, *, align_corners: int = 0, mode: str = "linear",
                padding_mode: str = "zeros") -> Value:
    """``F.grid_sample`` (4-D: bilinear, nearest, bicubic; 5-D: bilinear, nearest)."""
    torch_mode = _GRID_MODES.get(mode)
    if torch_mode is None or (x.rank == 5 and torch_mode == "bicubic") or x.rank not in (4, 5):
        raise g.unsupported("mode", f"{mode!r} on a {x.rank}-D input")
    if padding_mode not in ("zeros", "border", "reflection"):
        raise g.unsupported("padding_mode", f"value {padding_mode!r}")
    return g.call("F.grid_sample", x, grid, mode=torch_mode, padding_mode=padding_mode,
                  align_corners=bool(align_corners))


def _affine_grid(theta: torch.Tensor, size: torch.Tensor, align_corners: bool) -> torch.Tensor:
    return torch.nn.functional.affine_grid(theta, size.tolist(), align_corners=align_corners)


@onnx_op("AffineGrid", 20)
def affine_grid(g: Emitter, theta: Value, size: Value, *, align_corners: int = 0) -> Value:
    """``F.affine_grid``."""
    sizes = g.int_list(size)
    if sizes is not None:
        return g.call("F.affine_grid", theta, sizes, align_corners=bool(align_corners))
    n = size.static_shape()[0]
    if n is None:
        raise g.unsupported(None, "AffineGrid size of run-time length")
    spec = [([None] * (n - 1) + [n - 2], theta.dtype)]
    return g.call(g.helper(_affine_grid, leaf=True), theta, size, bool(align_corners), out_spec=spec)


# ---------------------------------------------------------------------------------- Col2Im
def _col2im(x: torch.Tensor, image_shape: torch.Tensor, block_shape: torch.Tensor, dilations: list[int] | None,
            pads: list[int] | None, strides: list[int] | None) -> torch.Tensor:
    """ONNX Col2Im in any number of dimensions: every column entry is added at its image position."""
    image, block = image_shape.tolist(), block_shape.tolist()
    nd = len(image)
    dilations, strides, pads = dilations or [1] * nd, strides or [1] * nd, pads or [0] * (2 * nd)
    padded = [image[i] + pads[i] + pads[nd + i] for i in range(nd)]
    counts = [(padded[i] - dilations[i] * (block[i] - 1) - 1) // strides[i] + 1 for i in range(nd)]
    kernel = torch.stack(torch.meshgrid(*[torch.arange(b) for b in block], indexing="ij"), -1).reshape(-1, nd)
    blocks = torch.stack(torch.meshgrid(*[torch.arange(c) for c in counts], indexing="ij"), -1).reshape(-1, nd)
    position = kernel[:, None, :] * torch.tensor(dilations) + blocks[None, :, :] * torch.tensor(strides)
    flat = position[..., 0]
    for i in range(1, nd):
        flat = flat * padded[i] + position[..., i]
    n, channels = x.shape[0], x.shape[1] // kernel.shape[0]
    total = 1
    for p in padded:
        total *= p
    out = torch.zeros(n, channels, total, dtype=x.dtype)
    out = out.index_add(2, flat.reshape(-1), x.reshape(n, channels, -1)).reshape(n, channels, *padded)
    index = tuple(slice(pads[i], pads[i] + image[i]) for i in range(nd))
    return out[(slice(None), slice(None), *index)]


@onnx_op("Col2Im", 18)
def col2im(g: Emitter, x: Value, image_shape: Value, block_shape: Value, *, dilations: list[int] | None = None,
           pads: list[int] | None = None, strides: list[int] | None = None) -> Value:
    """``F.fold`` for 2-D images with symmetric pads, else the general :func:`_col2im`."""
    image, block = g.int_list(image_shape), g.int_list(block_shape)
    static = image is not None and block is not None and all(e.is_static for e in image + block)
    if static and len(image) == 2 and (not pads or list(pads[:2]) == list(pads[2:])):
        return g.call("F.fold", x, [int(e.value) for e in image], [int(e.value) for e in block],
                      dilation=list(dilations or [1, 1]), padding=list(pads or [0, 0])[:2],
                      stride=list(strides or [1, 1]))
    nd = image_shape.static_shape()[0]
    sizes = [int(e.value) for e in image] if static else [None] * (nd or 0)
    spec = [([g.dim(x, 0), None] + sizes, x.dtype)]
    return g.call(g.helper(_col2im, leaf=True), x, image_shape, block_shape, dilations, pads, strides,
                  out_spec=spec)


# ---------------------------------------------------------------------------------- RoiAlign
def _roi_align_axis(coords: torch.Tensor, size: int) -> tuple[torch.Tensor, ...]:
    """Bilinear taps along one axis as onnxruntime computes them: samples more than one pixel
    outside the map are invalid, negative coordinates clamp to 0, the last row/column is clamped.
    Returns (valid, low, high, low weight, high weight)."""
    valid = (coords >= -1.0) & (coords <= size)
    c = coords.clamp(min=0)
    low = c.floor().long()
    at_end = low >= size - 1
    low = torch.where(at_end, torch.full_like(low, size - 1), low)
    high = torch.where(at_end, low, low + 1)
    c = torch.where(at_end, low.to(c.dtype), c)
    frac = c - low.to(c.dtype)
    return valid, low, high, 1 - frac, frac


def _roi_align_group(table: torch.Tensor, boxes: torch.Tensor, batch: torch.Tensor, bin_h: torch.Tensor,
                     bin_w: torch.Tensor, grid_h: int, grid_w: int, height: int, width: int, map_h: int,
                     map_w: int, mode: str) -> torch.Tensor:
    """Regions sharing one sampling grid, (regions, height, width, channels).

    The arithmetic follows onnxruntime's kernel step by step in the input's precision (sample
    positions, the four weighted taps summed left to right, samples accumulated row by row, then
    divided by their count): region features feed fully connected heads whose random or trained
    weights amplify a last-bit difference far beyond the validation tolerance."""
    dtype = table.dtype
    rows = torch.arange(height, dtype=dtype)
    cols = torch.arange(width, dtype=dtype)
    start_y = boxes[:, 1:2] + rows * bin_h[:, None]  # (regions, height)
    start_x = boxes[:, 0:1] + cols * bin_w[:, None]  # (regions, width)
    base = (batch * (map_h * map_w))[:, None, None]
    acc = None
    for iy in range(grid_h):
        y = start_y + ((iy + 0.5) * bin_h / grid_h)[:, None]
        y_ok, y_low, y_high, hy, ly = _roi_align_axis(y, map_h)
        for ix in range(grid_w):
            x = start_x + ((ix + 0.5) * bin_w / grid_w)[:, None]
            x_ok, x_low, x_high, hx, lx = _roi_align_axis(x, map_w)
            valid = y_ok[:, :, None] & x_ok[:, None, :]
            zero = torch.zeros((), dtype=dtype)
            taps = []
            for yi, xi, wy, wx in ((y_low, x_low, hy, hx), (y_low, x_high, hy, lx), (y_high, x_low, ly, hx),
                                   (y_high, x_high, ly, lx)):
                weight = torch.where(valid, wy[:, :, None] * wx[:, None, :], zero)[..., None]
                index = torch.where(valid, base + yi[:, :, None] * map_w + xi[:, None, :], 0)
                taps.append(weight * table[index])
            if mode == "avg":
                value = taps[0] + taps[1] + taps[2] + taps[3]
                acc = value if acc is None else acc + value
            else:
                value = torch.maximum(torch.maximum(torch.maximum(taps[0], taps[1]), taps[2]), taps[3])
                acc = value if acc is None else torch.maximum(acc, value)
    if acc is None:  # an empty grid (a region of negative size): onnxruntime writes zeros
        return table.new_zeros((boxes.shape[0], height, width, table.shape[1]))
    return acc / max(grid_h * grid_w, 1) if mode == "avg" else acc


def _roi_align(x: torch.Tensor, rois: torch.Tensor, batch_indices: torch.Tensor, mode: str, height: int,
               width: int, sampling_ratio: int, spatial_scale: float, half_pixel: bool) -> torch.Tensor:
    """ONNX RoiAlign: per region, ``sampling_ratio`` (or an adaptive number of) bilinear samples per
    output bin, averaged or (as ONNX defines max mode) the largest weighted tap.

    All regions with the same sampling grid are computed at once from a (pixels, channels) table of
    the feature maps, so the cost no longer grows with a Python loop over regions; with a fixed
    ``sampling_ratio`` (torchvision's detection heads) there is one group and no data-dependent
    control flow."""
    channels, map_h, map_w = x.shape[1], x.shape[2], x.shape[3]
    table = x.permute(0, 2, 3, 1).reshape(-1, channels)
    boxes = rois.to(x.dtype) * spatial_scale - (0.5 if half_pixel else 0.0)
    roi_w = boxes[:, 2] - boxes[:, 0]
    roi_h = boxes[:, 3] - boxes[:, 1]
    if not half_pixel:  # malformed regions are forced to 1x1
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    bin_h, bin_w = roi_h / height, roi_w / width
    batch = batch_indices.long()
    if sampling_ratio > 0:
        out = _roi_align_group(table, boxes, batch, bin_h, bin_w, sampling_ratio, sampling_ratio, height, width,
                               map_h, map_w, mode)
    else:
        grids = torch.stack([torch.ceil(bin_h), torch.ceil(bin_w)], 1).long().clamp(min=0)
        out = x.new_zeros((rois.shape[0], height, width, channels))
        for grid_h, grid_w in torch.unique(grids, dim=0).tolist():
            members = torch.nonzero((grids[:, 0] == grid_h) & (grids[:, 1] == grid_w))[:, 0]
            out[members] = _roi_align_group(table, boxes[members], batch[members], bin_h[members], bin_w[members],
                                            grid_h, grid_w, height, width, map_h, map_w, mode)
    return out.permute(0, 3, 1, 2).contiguous()


@onnx_op("RoiAlign", 10)
def roi_align(g: Emitter, x: Value, rois: Value, batch_indices: Value, *,
              coordinate_transformation_mode: str = "half_pixel", mode: str = "avg", output_height: int = 1,
              output_width: int = 1, sampling_ratio: int = 0, spatial_scale: float = 1.0) -> Value:
    assert g.node is not None
    if g.node.opset < 16:  # RoiAlign-10 had no coordinate_transformation_mode and no half-pixel offset
        coordinate_transformation_mode = "output_half_pixel"
    if mode not in ("avg", "max"):
        raise g.unsupported("mode", f"value {mode!r}")
    spec = [([g.dim(rois, 0), g.dim(x, 1), output_height, output_width], x.dtype)]
    g.helper(_roi_align_axis)
    g.helper(_roi_align_group)
    return g.call(g.helper(_roi_align, leaf=True), x, rois, batch_indices, mode, output_height, output_width,
                  sampling_ratio, spatial_scale, coordinate_transformation_mode == "half_pixel", out_spec=spec)


# ---------------------------------------------------------------------------------- DeformConv
def _deform_conv(x: torch.Tensor, w: torch.Tensor, offset: torch.Tensor, b: torch.Tensor | None,
                 mask: torch.Tensor | None, strides: list[int], pads: list[int], dilations: list[int], groups: int,
                 offset_groups: int) -> torch.Tensor:
    """2-D deformable convolution: every kernel tap reads the input at its offset position
    (bilinear, zero outside), scaled by the mask, then the taps are combined like a convolution."""
    n, channels, height, width = x.shape
    out_channels, per_group, kh, kw = w.shape
    oh, ow = offset.shape[2], offset.shape[3]
    taps = kh * kw
    off = offset.reshape(n, offset_groups, taps, 2, oh, ow).to(x.dtype)
    rows = (torch.arange(oh) * strides[0] - pads[0]).reshape(1, 1, 1, oh, 1) \
        + (torch.arange(kh) * dilations[0]).repeat_interleave(kw).reshape(1, 1, taps, 1, 1) + off[:, :, :, 0]
    cols = (torch.arange(ow) * strides[1] - pads[1]).reshape(1, 1, 1, 1, ow) \
        + (torch.arange(kw) * dilations[1]).repeat(kh).reshape(1, 1, taps, 1, 1) + off[:, :, :, 1]
    grid = torch.stack([2 * cols / max(width - 1, 1) - 1, 2 * rows / max(height - 1, 1) - 1], -1)
    sampled = torch.nn.functional.grid_sample(
        x.reshape(n * offset_groups, channels // offset_groups, height, width),
        grid.reshape(n * offset_groups, taps * oh, ow, 2), mode="bilinear", padding_mode="zeros", align_corners=True)
    sampled = sampled.reshape(n, offset_groups, channels // offset_groups, taps, oh, ow)
    if mask is not None:
        sampled = sampled * mask.reshape(n, offset_groups, 1, taps, oh, ow)
    columns = sampled.reshape(n, groups, per_group * taps, oh * ow)
    out = torch.einsum("gok,ngkl->ngol", w.reshape(groups, out_channels // groups, per_group * taps), columns)
    out = out.reshape(n, out_channels, oh, ow)
    return out + b.reshape(1, -1, 1, 1) if b is not None else out


@onnx_op("DeformConv", 19)
def deform_conv(g: Emitter, x: Value, w: Value, offset: Value, b: Value | None = None, mask: Value | None = None, *,
                dilations: list[int] | None = None, group: int = 1, kernel_shape: list[int] | None = None,
                offset_group: int = 1, pads: list[int] | None = None, strides: list[int] | None = None) -> Value:
    if x.rank != 4:
        raise g.unsupported(None, f"{x.rank - 2}-D DeformConv (2-D is supported)")
    spec = [([g.dim(x, 0), g.dim(w, 0), g.dim(offset, 2), g.dim(offset, 3)], x.dtype)]
    return g.call(g.helper(_deform_conv, leaf=True), x, w, offset, b, mask, list(strides or [1, 1]),
                  list(pads or [0] * 4)[:2], list(dilations or [1, 1]), group, offset_group, out_spec=spec)
