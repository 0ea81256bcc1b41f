"""RTMDet-L: a faithful definition of mmdet's model, exported as mmdeploy exports it (without NMS).

mmdet 3.x cannot be installed next to torch 2.13 on CPU: it needs ``mmcv>=2.0.0rc4,<2.2.0``, whose
only PyPI distribution is an sdist that compiles C++ operators against the installed torch (the
prebuilt wheels live on OpenMMLab's own index, which is not reachable here); its ``setup.py`` does
not even run under current setuptools (``pkg_resources`` is gone), and mmcv 2.1 predates torch
2.13's C++ API. ``mmcv-lite`` 2.2.0 (no compiled operators) is rejected by mmdet 3.3.0's version
check (``mmcv<2.2.0``). So the architecture is written out here from mmdet 3.3.0's sources and
``configs/rtmdet/rtmdet_l_8xb32-300e_coco.py``:

* backbone ``CSPNeXt`` (arch P5, deepen_factor 1, widen_factor 1, expand_ratio 0.5, channel
  attention, SPP kernels 5/9/13), outputs of stages 2-4 (256, 512, 1024 channels);
* neck ``CSPNeXtPAFPN`` (in 256/512/1024, out 256, 3 CSP blocks, nearest x2 upsampling);
* head ``RTMDetSepBNHead`` (80 classes, 2 stacked 3x3 convs of 256 channels whose weights are
  shared by the three levels while each level keeps its own BatchNorm, 1x1 prediction convs per
  level, ``exp_on_reg``: distances are ``exp(conv) * stride``);
* ``ConvModule`` = conv (no bias) -> BatchNorm (SyncBN in the config; plain BN at inference,
  eps 1e-5) -> SiLU; ``DepthwiseSeparableConvModule`` = two of them (depthwise, then pointwise).

Module and parameter names follow mmdet's, so an mmdet RTMDet-L checkpoint's ``state_dict`` loads
into :class:`RTMDet` unchanged. The weights are PyTorch's default initialisation under the zoo's seed,
which is what ``MODELS.build(cfg)`` leaves before a training runner calls ``init_weights()`` (whose
head init, N(0, 0.01), would make every output nearly constant and hide conversion errors).

The output is what mmdeploy's ``RTMDetHead.predict_by_feat`` rewrite computes before NMS
(``with_nms=False``): boxes decoded from the level grids, ``(batch, 8400, 4)`` as x1, y1, x2, y2 in
input pixels, and sigmoid class scores ``(batch, 8400, 80)``. mmdeploy exports with the
TorchScript-based ``torch.onnx.export`` at opset 11; the zoo does the same (the dynamic variant makes
batch, height and width dynamic, as mmdeploy's ``detection_onnxruntime_dynamic`` config does).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from benchmarks.zoo.registry import SEED, ZooModel, register, torchscript_export

IMAGE_SIZE = 640
OPSET = 11
NUM_CLASSES = 80
STRIDES = (8, 16, 32)
BN_EPS = 1e-5  # SyncBN with mmcv's defaults, as the RTMDet-L config builds it


class ConvModule(nn.Module):
    """mmcv's ``ConvModule`` with a norm and an activation: conv (bias off, as mmcv's ``bias='auto'``
    does before a norm) -> BatchNorm -> SiLU. Attribute names are mmcv's."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0, groups: int = 1
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS)
        self.activate = nn.SiLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.activate(self.bn(self.conv(x)))


class DepthwiseSeparableConvModule(nn.Module):
    """mmcv's depthwise-separable module: depthwise ConvModule, then a pointwise (1x1) ConvModule."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0
    ) -> None:
        super().__init__()
        self.depthwise_conv = ConvModule(in_channels, in_channels, kernel_size, stride, padding, groups=in_channels)
        self.pointwise_conv = ConvModule(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class ChannelAttention(nn.Module):
    """mmdet's ``ChannelAttention``: ``x * hardsigmoid(fc(avgpool(x)))``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(channels, channels, 1, 1, 0, bias=True)
        self.act = nn.Hardsigmoid(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.act(self.fc(self.global_avgpool(x)))


class CSPNeXtBlock(nn.Module):
    """mmdet's ``CSPNeXtBlock`` (expansion 1.0 inside CSP layers): 3x3 ConvModule, then a 5x5
    depthwise-separable module, plus the identity when ``add_identity``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expansion: float = 0.5,
        add_identity: bool = True,
        kernel_size: int = 5,
    ) -> None:
        super().__init__()
        hidden = int(out_channels * expansion)
        self.conv1 = ConvModule(in_channels, hidden, 3, 1, 1)
        self.conv2 = DepthwiseSeparableConvModule(hidden, out_channels, kernel_size, 1, kernel_size // 2)
        self.add_identity = add_identity and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.conv1(x))
        return out + x if self.add_identity else out


class CSPLayer(nn.Module):
    """mmdet's ``CSPLayer`` with ``use_lk_block=True`` (CSPNeXt blocks)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expand_ratio: float = 0.5,
        num_blocks: int = 1,
        add_identity: bool = True,
        channel_attention: bool = False,
    ) -> None:
        super().__init__()
        mid = int(out_channels * expand_ratio)
        self.channel_attention = channel_attention
        self.main_conv = ConvModule(in_channels, mid, 1)
        self.short_conv = ConvModule(in_channels, mid, 1)
        self.final_conv = ConvModule(2 * mid, out_channels, 1)
        self.blocks = nn.Sequential(*[CSPNeXtBlock(mid, mid, 1.0, add_identity) for _ in range(num_blocks)])
        if channel_attention:
            self.attention = ChannelAttention(2 * mid)

    def forward(self, x: Tensor) -> Tensor:
        x_short = self.short_conv(x)
        x_main = self.blocks(self.main_conv(x))
        x_final = torch.cat((x_main, x_short), dim=1)
        if self.channel_attention:
            x_final = self.attention(x_final)
        return self.final_conv(x_final)


class SPPBottleneck(nn.Module):
    """mmdet's ``SPPBottleneck``: 1x1 reduce, max pools 5/9/13 (stride 1) concatenated, 1x1 out."""

    def __init__(self, in_channels: int, out_channels: int, kernel_sizes: tuple[int, ...] = (5, 9, 13)) -> None:
        super().__init__()
        mid = in_channels // 2
        self.conv1 = ConvModule(in_channels, mid, 1)
        self.poolings = nn.ModuleList([nn.MaxPool2d(k, stride=1, padding=k // 2) for k in kernel_sizes])
        self.conv2 = ConvModule(mid * (len(kernel_sizes) + 1), out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [pool(x) for pool in self.poolings], dim=1))


class CSPNeXt(nn.Module):
    """mmdet's ``CSPNeXt`` backbone, arch P5, returning the outputs of stages 2, 3 and 4."""

    # in_channels, out_channels, num_blocks, add_identity, use_spp
    ARCH_P5 = (
        (64, 128, 3, True, False),
        (128, 256, 6, True, False),
        (256, 512, 6, True, False),
        (512, 1024, 3, False, True),
    )

    def __init__(
        self,
        deepen_factor: float = 1.0,
        widen_factor: float = 1.0,
        expand_ratio: float = 0.5,
        out_indices: tuple[int, ...] = (2, 3, 4),
    ) -> None:
        super().__init__()
        self.out_indices = out_indices
        stem = int(self.ARCH_P5[0][0] * widen_factor)
        self.stem = nn.Sequential(
            ConvModule(3, stem // 2, 3, 2, 1),
            ConvModule(stem // 2, stem // 2, 3, 1, 1),
            ConvModule(stem // 2, stem, 3, 1, 1),
        )
        self.layers = ["stem"]
        for i, (in_channels, out_channels, num_blocks, add_identity, use_spp) in enumerate(self.ARCH_P5):
            in_channels, out_channels = int(in_channels * widen_factor), int(out_channels * widen_factor)
            stage: list[nn.Module] = [ConvModule(in_channels, out_channels, 3, 2, 1)]
            if use_spp:
                stage.append(SPPBottleneck(out_channels, out_channels))
            stage.append(
                CSPLayer(
                    out_channels,
                    out_channels,
                    expand_ratio,
                    max(round(num_blocks * deepen_factor), 1),
                    add_identity,
                    channel_attention=True,
                )
            )
            self.add_module(f"stage{i + 1}", nn.Sequential(*stage))
            self.layers.append(f"stage{i + 1}")

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        outs = []
        for i, name in enumerate(self.layers):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


class CSPNeXtPAFPN(nn.Module):
    """mmdet's ``CSPNeXtPAFPN``: top-down then bottom-up CSP paths, a 3x3 output conv per level."""

    def __init__(
        self,
        in_channels: tuple[int, ...] = (256, 512, 1024),
        out_channels: int = 256,
        num_csp_blocks: int = 3,
        expand_ratio: float = 0.5,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.reduce_layers = nn.ModuleList()
        self.top_down_blocks = nn.ModuleList()
        for idx in range(len(in_channels) - 1, 0, -1):
            self.reduce_layers.append(ConvModule(in_channels[idx], in_channels[idx - 1], 1))
            self.top_down_blocks.append(
                CSPLayer(
                    in_channels[idx - 1] * 2, in_channels[idx - 1], expand_ratio, num_csp_blocks, add_identity=False
                )
            )
        self.downsamples = nn.ModuleList()
        self.bottom_up_blocks = nn.ModuleList()
        for idx in range(len(in_channels) - 1):
            self.downsamples.append(ConvModule(in_channels[idx], in_channels[idx], 3, 2, 1))
            self.bottom_up_blocks.append(
                CSPLayer(in_channels[idx] * 2, in_channels[idx + 1], expand_ratio, num_csp_blocks, add_identity=False)
            )
        self.out_convs = nn.ModuleList([ConvModule(c, out_channels, 3, 1, 1) for c in in_channels])

    def forward(self, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        levels = len(self.in_channels)
        inner_outs = [inputs[-1]]
        for idx in range(levels - 1, 0, -1):
            feat_high = self.reduce_layers[levels - 1 - idx](inner_outs[0])
            inner_outs[0] = feat_high
            upsampled = self.upsample(feat_high)
            inner_outs.insert(0, self.top_down_blocks[levels - 1 - idx](torch.cat([upsampled, inputs[idx - 1]], 1)))
        outs = [inner_outs[0]]
        for idx in range(levels - 1):
            downsampled = self.downsamples[idx](outs[-1])
            outs.append(self.bottom_up_blocks[idx](torch.cat([downsampled, inner_outs[idx + 1]], 1)))
        return tuple(conv(out) for conv, out in zip(self.out_convs, outs))


class RTMDetSepBNHead(nn.Module):
    """mmdet's ``RTMDetSepBNHead`` (share_conv, exp_on_reg, pred_kernel_size 1, no objectness)."""

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        in_channels: int = 256,
        feat_channels: int = 256,
        stacked_convs: int = 2,
        strides: tuple[int, ...] = STRIDES,
    ) -> None:
        super().__init__()
        self.strides = strides
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        self.rtm_cls = nn.ModuleList()
        self.rtm_reg = nn.ModuleList()
        for _ in strides:
            self.cls_convs.append(
                nn.ModuleList(
                    [
                        ConvModule(in_channels if i == 0 else feat_channels, feat_channels, 3, 1, 1)
                        for i in range(stacked_convs)
                    ]
                )
            )
            self.reg_convs.append(
                nn.ModuleList(
                    [
                        ConvModule(in_channels if i == 0 else feat_channels, feat_channels, 3, 1, 1)
                        for i in range(stacked_convs)
                    ]
                )
            )
            self.rtm_cls.append(nn.Conv2d(feat_channels, num_classes, 1))
            self.rtm_reg.append(nn.Conv2d(feat_channels, 4, 1))
        # share_conv: every level runs the first level's conv weights through its own BatchNorm.
        for level in range(len(strides)):
            for i in range(stacked_convs):
                self.cls_convs[level][i].conv = self.cls_convs[0][i].conv
                self.reg_convs[level][i].conv = self.reg_convs[0][i].conv

    def forward(self, feats: tuple[Tensor, ...]) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        cls_scores, bbox_preds = [], []
        for idx, (x, stride) in enumerate(zip(feats, self.strides)):
            cls_feat, reg_feat = x, x
            for layer in self.cls_convs[idx]:
                cls_feat = layer(cls_feat)
            for layer in self.reg_convs[idx]:
                reg_feat = layer(reg_feat)
            cls_scores.append(self.rtm_cls[idx](cls_feat))
            bbox_preds.append(self.rtm_reg[idx](reg_feat).exp() * stride)
        return tuple(cls_scores), tuple(bbox_preds)


def grid_priors(height: int, width: int, stride: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """mmdet's ``MlvlPointGenerator.single_level_grid_priors`` with offset 0: (x, y) per cell, x fastest."""
    shift_x = torch.arange(0, width, device=device).to(dtype) * stride
    shift_y = torch.arange(0, height, device=device).to(dtype) * stride
    xx = shift_x.repeat(shift_y.shape[0])
    yy = shift_y.view(-1, 1).repeat(1, shift_x.shape[0]).view(-1)
    return torch.stack([xx, yy], dim=-1)


class RTMDet(nn.Module):
    """Backbone, neck and head, then mmdeploy's pre-NMS decoding (boxes and sigmoid scores)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = CSPNeXt()
        self.neck = CSPNeXtPAFPN()
        self.bbox_head = RTMDetSepBNHead()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        cls_scores, bbox_preds = self.bbox_head(self.neck(self.backbone(x)))
        batch = bbox_preds[0].shape[0]
        priors = torch.cat(
            [
                grid_priors(c.shape[2], c.shape[3], s, c.dtype, c.device)
                for c, s in zip(cls_scores, self.bbox_head.strides)
            ]
        )
        scores = torch.cat([c.permute(0, 2, 3, 1).reshape(batch, -1, NUM_CLASSES) for c in cls_scores], 1).sigmoid()
        dist = torch.cat([b.permute(0, 2, 3, 1).reshape(batch, -1, 4) for b in bbox_preds], 1)
        boxes = torch.stack(
            [
                priors[..., 0] - dist[..., 0],
                priors[..., 1] - dist[..., 1],
                priors[..., 0] + dist[..., 2],
                priors[..., 1] + dist[..., 3],
            ],
            -1,
        )
        return boxes, scores


def image_inputs(batch: int) -> dict[str, np.ndarray]:
    """A seeded batch of 640x640 images after mmdet's mean/std normalisation (roughly N(0, 1))."""
    rng = np.random.default_rng(SEED)
    return {"input": rng.standard_normal((batch, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)}


def export_rtmdet_l(path: Path, dynamic_batch: bool) -> None:
    """TorchScript-based ``torch.onnx.export`` at opset 11 with mmdeploy's input name."""
    model = RTMDet().eval()
    example = torch.from_numpy(image_inputs(1)["input"])
    axes = {
        "input": {0: "batch", 2: "height", 3: "width"},
        "boxes": {0: "batch", 1: "num_priors"},
        "scores": {0: "batch", 1: "num_priors"},
    }
    torchscript_export(model, (example,), path, OPSET, ["input"], ["boxes", "scores"],
                       axes if dynamic_batch else None)


register(
    ZooModel(
        name="rtmdet_l",
        title="RTMDet-Large",
        library="faithful definition of mmdet 3.3.0's RTMDet-L (mmdet needs mmcv<2.2, which has no installable "
        "build for torch 2.13 CPU; see benchmarks/zoo/README.md)",
        export=export_rtmdet_l,
        inputs=image_inputs,
        notes="CSPNeXt-L + CSPNeXtPAFPN + RTMDetSepBNHead, mmdeploy's decoding without NMS; "
        "torch.onnx.export TorchScript opset 11; 1x3x640x640",
        tags=("detection", "cnn"),
    )
)
