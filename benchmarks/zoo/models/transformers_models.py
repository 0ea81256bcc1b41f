"""Hugging Face transformers models: ResNet-50, ConvNeXt-Tiny, CLIP ViT-L/14 (vision tower), RT-DETRv2.

Each is built from its configuration with random weights under the registry's seed (nothing comes
from the hub; RT-DETRv2's ResNet backbone is transformers' own ``rt_detr_resnet`` configuration, so
no timm or hub backbone is fetched either). They are exported as Hugging Face optimum exports them:
the TorchScript exporter (``dynamo=False``) at opset 17, weights embedded in the one ``.onnx`` file,
the task's named outputs only, and a dynamic batch axis in the ``_dynamic`` variant.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from benchmarks.zoo.registry import ZooModel, register, seeded_normal, torchscript_export
from benchmarks.zoo.torchvision_ops import import_torchvision

OPSET = 17
LIBRARY = "transformers 5.23.0"


class NamedOutputs(torch.nn.Module):
    """Return the chosen fields of a transformers ``ModelOutput`` as a tuple.

    The TorchScript exporter flattens whatever ``forward`` returns; optimum exports only the
    fields a task needs (e.g. ``logits`` and ``pred_boxes`` for detection), and so do we, so the
    ONNX graph does not carry auxiliary decoder outputs that no deployment reads.
    """

    def __init__(self, model: torch.nn.Module, fields: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.fields = tuple(fields)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        output = self.model(pixel_values=pixel_values, return_dict=True)
        return tuple(getattr(output, name) for name in self.fields)


def export_pixel_model(
    model: torch.nn.Module, fields: Sequence[str], size: int, path: Path, dynamic_batch: bool
) -> None:
    """Export a vision model whose one input is ``pixel_values`` (1x3xHxW) with optimum's settings."""
    wrapper = NamedOutputs(model.eval(), fields).eval()
    example = torch.from_numpy(pixel_inputs(size)(1)["pixel_values"])
    axes = {name: {0: "batch_size"} for name in ("pixel_values", *fields)} if dynamic_batch else None
    torchscript_export(wrapper, (example,), path, OPSET, ["pixel_values"], list(fields), axes)


def pixel_inputs(size: int) -> Callable[[int], dict[str, np.ndarray]]:
    """Seeded ``pixel_values`` of shape batch x 3 x size x size (normalised images are ~N(0, 1))."""

    def inputs(batch: int) -> dict[str, np.ndarray]:
        return {"pixel_values": seeded_normal((batch, 3, size, size))}

    return inputs


# --------------------------------------------------------------------------------------- ResNet-50
def export_resnet50(path: Path, dynamic_batch: bool) -> None:
    """microsoft/resnet-50's architecture: ResNetConfig's defaults are ResNet-50 (bottleneck 3-4-6-3)."""
    import_torchvision()
    from transformers import ResNetConfig, ResNetForImageClassification

    model = ResNetForImageClassification(ResNetConfig(num_labels=1000))
    export_pixel_model(model, ["logits"], 224, path, dynamic_batch)


register(
    ZooModel(
        name="resnet50",
        title="ResNet-50",
        library=LIBRARY,
        export=export_resnet50,
        inputs=pixel_inputs(224),
        ci=True,
        notes="ResNetForImageClassification (microsoft/resnet-50 configuration, 1000 classes), 1x3x224x224.",
        tags=("classification", "cnn"),
    )
)


# ------------------------------------------------------------------------------------ ConvNeXt-Tiny
def export_convnext_tiny(path: Path, dynamic_batch: bool) -> None:
    """facebook/convnext-tiny-224's architecture: ConvNextConfig's defaults (3-3-9-3, 96..768)."""
    import_torchvision()
    from transformers import ConvNextConfig, ConvNextForImageClassification

    model = ConvNextForImageClassification(ConvNextConfig(num_labels=1000))
    export_pixel_model(model, ["logits"], 224, path, dynamic_batch)


register(
    ZooModel(
        name="convnext_tiny",
        title="ConvNeXt-Tiny",
        library=LIBRARY,
        export=export_convnext_tiny,
        inputs=pixel_inputs(224),
        notes="ConvNextForImageClassification (facebook/convnext-tiny-224 configuration), 1x3x224x224.",
        tags=("classification", "cnn"),
    )
)


# ------------------------------------------------------------------------------ CLIP ViT-L/14 vision
def export_clip_vit_l14(path: Path, dynamic_batch: bool) -> None:
    """openai/clip-vit-large-patch14's vision tower: 24 layers of width 1024, 16 heads, patch 14."""
    import_torchvision()
    from transformers import CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        patch_size=14,
        image_size=224,
        projection_dim=768,
        hidden_act="quick_gelu",
    )
    model = CLIPVisionModel(config)
    export_pixel_model(model, ["last_hidden_state", "pooler_output"], 224, path, dynamic_batch)
    del model


register(
    ZooModel(
        name="clip_vit_l14",
        title="CLIP ViT-L/14 (vision tower)",
        library=LIBRARY,
        export=export_clip_vit_l14,
        inputs=pixel_inputs(224),
        notes="CLIPVisionModel with openai/clip-vit-large-patch14's vision configuration (~303M parameters, "
        "~1.2 GB fp32), 1x3x224x224; outputs last_hidden_state and pooler_output as optimum does.",
        tags=("classification", "transformer", "large"),
    )
)


# -------------------------------------------------------------------------------------- RT-DETRv2
def export_rtdetr_v2(path: Path, dynamic_batch: bool) -> None:
    """PekingU/rtdetr_v2_r50vd's architecture: RTDetrV2Config's defaults, 80 COCO classes.

    The default backbone configuration is transformers' own ResNet-50-vd (``rt_detr_resnet``), built
    locally with random weights, so no pretrained backbone is requested.
    """
    import_torchvision()
    from transformers import RTDetrV2Config, RTDetrV2ForObjectDetection

    model = RTDetrV2ForObjectDetection(RTDetrV2Config(num_labels=80))
    export_pixel_model(model, ["logits", "pred_boxes"], 640, path, dynamic_batch)


register(
    ZooModel(
        name="rtdetr_v2",
        title="RT-DETRv2",
        library=LIBRARY,
        export=export_rtdetr_v2,
        inputs=pixel_inputs(640),
        notes="RTDetrV2ForObjectDetection with its default configuration (R50-vd backbone, 300 queries, 80 classes, "
        "as PekingU/rtdetr_v2_r50vd), 1x3x640x640; outputs logits and pred_boxes.",
        tags=("detection", "transformer"),
    )
)
