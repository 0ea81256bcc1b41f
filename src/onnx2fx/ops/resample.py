"""Sampling at computed positions: GridSample, AffineGrid, Col2Im, RoiAlign and DeformConv.

Resize and Upsample are in :mod:`.resize`.
"""

from __future__ import annotations

import torch

from ..codegen.emitter import Emitter
from ..codegen.values import Value
from .registry import onnx_op

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
