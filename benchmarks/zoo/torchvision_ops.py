"""Make the registry's torchvision importable on a CPU-only PyTorch.

The torchvision wheels on PyPI link their C++ operators (``torchvision/_C.so``) against
``libtorch_cuda``; with the CPU build of torch that library cannot load, and torchvision's import
then fails in its meta registrations (``operator torchvision::nms does not exist``). There is no CPU
wheel and no sdist to build one from. Timm, ultralytics, pytorchvideo, spandrel and onnx2torch all
import torchvision, so without it no zoo model could be built and onnx2torch could not be measured.

This module defines the ``torchvision::*`` operator schemas before torchvision is imported and backs
the two that detection models run (``nms`` and ``roi_align``) with pure-torch CPU kernels; the rest
raise a clear error if called. torchvision's own meta registrations and ONNX symbolics then attach to
these operators unchanged, so a FasterRCNN still exports ``NonMaxSuppression`` and ``RoiAlign``.
Model definitions stay torchvision's own. Call :func:`import_torchvision` before importing any
library that imports torchvision.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch

# Schemas match the arities of torchvision's meta kernels (torchvision/_meta_registrations.py).
_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "roi_align": (
        "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
        "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor"
    ),
    "_roi_align_backward": (
        "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, "
        "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width, "
        "int sampling_ratio, bool aligned) -> Tensor"
    ),
    "qroi_align": (
        "qroi_align(Tensor input, Tensor rois, float input_scale, int input_zero_point, float rois_scale, "
        "int rois_zero_point, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
        "int sampling_ratio, bool aligned) -> Tensor"
    ),
    "ps_roi_align": (
        "ps_roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
        "SymInt pooled_width, int sampling_ratio) -> (Tensor, Tensor)"
    ),
    "_ps_roi_align_backward": (
        "_ps_roi_align_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, "
        "SymInt pooled_height, SymInt pooled_width, int sampling_ratio, SymInt batch_size, SymInt channels, "
        "SymInt height, SymInt width) -> Tensor"
    ),
    "roi_pool": (
        "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
        "SymInt pooled_width) -> (Tensor, Tensor)"
    ),
    "_roi_pool_backward": (
        "_roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, SymInt pooled_height, "
        "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width) -> Tensor"
    ),
    "ps_roi_pool": (
        "ps_roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
        "SymInt pooled_width) -> (Tensor, Tensor)"
    ),
    "_ps_roi_pool_backward": (
        "_ps_roi_pool_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, "
        "SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, "
        "SymInt width) -> Tensor"
    ),
    "deform_conv2d": (
        "deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, SymInt stride_h, "
        "SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, SymInt dilation_w, SymInt groups, "
        "SymInt offset_groups, bool use_mask) -> Tensor"
    ),
    "_deform_conv2d_backward": (
        "_deform_conv2d_backward(Tensor grad, Tensor input, Tensor weight, Tensor offset, Tensor mask, "
        "Tensor bias, SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, "
        "SymInt dilation_w, SymInt groups, SymInt offset_groups, bool use_mask) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor)"
    ),
}

_library: torch.library.Library | None = None


def _nms_cpu(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS with torchvision's semantics: indices sorted by decreasing score."""
    if dets.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=dets.device)
    x1, y1, x2, y2 = dets.unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    order = scores.argsort(descending=True, stable=True)
    suppressed = torch.zeros(dets.shape[0], dtype=torch.bool)
    keep: list[int] = []
    for position in range(order.numel()):
        i = int(order[position])
        if suppressed[i]:
            continue
        keep.append(i)
        rest = order[position + 1 :]
        width = (torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest])).clamp(min=0)
        height = (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest])).clamp(min=0)
        inter = width * height
        iou = inter / (areas[i] + areas[rest] - inter)
        suppressed[rest[iou > iou_threshold]] = True
    return torch.tensor(keep, dtype=torch.int64, device=dets.device)


def _roi_align_cpu(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    """torchvision's own pure-torch RoIAlign (the path it takes on devices without its kernels)."""
    from torchvision.ops.roi_align import _roi_align

    return _roi_align(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)


def _unavailable(name: str):
    def kernel(*args, **kwargs):
        raise NotImplementedError(
            f"torchvision::{name} has no CPU kernel here: the registry's torchvision wheel needs a CUDA build "
            "of torch, and benchmarks/zoo/torchvision_ops.py implements only nms and roi_align."
        )

    return kernel


def _define_operators() -> None:
    global _library
    if _library is not None or hasattr(torch.ops.torchvision, "nms"):
        return
    _library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS.values():
        _library.define(schema)
    kernels = {"nms": _nms_cpu, "roi_align": _roi_align_cpu}
    for name in _SCHEMAS:
        _library.impl(name, kernels.get(name, _unavailable(name)), "CPU")


def _native_kernels_load() -> bool:
    """Whether torchvision's own ``_C`` extension loads against this torch (it does on CUDA builds)."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("torchvision is not installed: pip install -r benchmarks/zoo/requirements.txt")
    candidates = list(Path(spec.submodule_search_locations[0]).glob("_C*.so"))
    if not candidates:
        return False
    try:
        torch.ops.load_library(str(candidates[0]))
    except (OSError, RuntimeError):
        return False
    return True


def _has_ops() -> bool:
    """Stands in for torchvision's ``_has_ops``: a named function, not a lambda, because tracing a
    detection model for ONNX scripts torchvision helpers that call it, and TorchScript cannot
    compile a lambda."""
    return True


def import_torchvision() -> ModuleType:
    """Import torchvision with working nms/roi_align on CPU torch; idempotent."""
    if "torchvision" in sys.modules:
        return sys.modules["torchvision"]
    if _native_kernels_load():
        return importlib.import_module("torchvision")
    _define_operators()
    torchvision = importlib.import_module("torchvision")
    # torchvision asks "are my kernels loaded?" before calling them; ours are, under its names.
    torchvision.extension._has_ops = _has_ops
    importlib.import_module("torchvision.ops.roi_align")._has_ops = _has_ops
    return torchvision
