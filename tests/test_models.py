"""End-to-end conversions of small vision models exported from PyTorch with both exporters.

Each model is built here with random weights (and non-trivial BatchNorm statistics), exported
with the TorchScript exporter at several opsets and with the dynamo exporter, then converted and
checked against onnxruntime, ``torch.fx.symbolic_trace``, ``torch.export`` with a dynamic batch
and one SGD step (see :func:`support.check_conversion`).
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from support import check_conversion, export_torch
from torch import nn


def randomized(module: nn.Module) -> nn.Module:
    """``module`` in eval mode with reproducible random weights and BatchNorm statistics."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.3 if p.dim() > 1 else 0.5))
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return module.eval()


# ---------------------------------------------------------------------------------- ResNet
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + identity)


class TinyResNet(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = BasicBlock(8, 8, 1)
        self.layer2 = BasicBlock(8, 16, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ---------------------------------------------------------------------------------- ConvNeXt
class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


# ---------------------------------------------------------------------------------- ViT
class SelfAttention(nn.Module):
    """Multi-head self-attention: ``explicit`` matmul/softmax, ``sdpa`` or ``nn.MultiheadAttention``."""

    def __init__(self, dim: int, heads: int, kind: str) -> None:
        super().__init__()
        self.heads, self.kind = heads, kind
        if kind == "mha":
            self.mha = nn.MultiheadAttention(dim, heads, batch_first=True)
        else:
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "mha":
            return self.mha(x, x, x, need_weights=False)[0]
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if self.kind == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5
            y = attn.softmax(dim=-1) @ v
        return self.proj(y.transpose(1, 2).reshape(b, n, c))


class TinyViT(nn.Module):
    def __init__(self, attention: str, dim: int = 16, heads: int = 2, patch: int = 8, image: int = 32,
                 classes: int = 10) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, (image // patch) ** 2 + 1, dim))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, attention)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return self.head(self.norm(x)[:, 0])


# ---------------------------------------------------------------------------------- cases
MODELS = {
    "resnet": (TinyResNet, (2, 3, 32, 32)),
    "convnext": (ConvNeXtBlock, (2, 16, 12, 12)),
    "vit": (lambda: TinyViT("explicit"), (2, 3, 32, 32)),
    "vit_sdpa": (lambda: TinyViT("sdpa"), (2, 3, 32, 32)),
    "vit_mha": (lambda: TinyViT("mha"), (2, 3, 32, 32)),
}
# TorchScript exporter: opsets 11 .. 20 (its newest); it needs opset 14 for SDPA. The dynamo
# exporter writes opset 18 and up; at 23 it emits the Attention operator for SDPA. Each dynamo
# export takes seconds, so the opset pairs are spread over the models rather than multiplied.
TORCHSCRIPT_OPSETS = {"resnet": (11, 13, 17, 20), "convnext": (11, 13, 17, 20), "vit": (11, 13, 17, 20),
                      "vit_sdpa": (14, 17), "vit_mha": (14, 17)}
DYNAMO_OPSETS = {"resnet": (18, 23), "convnext": (18,), "vit": (18,), "vit_sdpa": (18, 23), "vit_mha": (23,)}

CASES = [pytest.param(name, "torchscript", opset, id=f"{name}-torchscript-opset{opset}")
         for name, opsets in TORCHSCRIPT_OPSETS.items() for opset in opsets]
CASES += [pytest.param(name, "dynamo", opset, id=f"{name}-dynamo-opset{opset}")
          for name, opsets in DYNAMO_OPSETS.items() for opset in opsets]


@pytest.mark.parametrize(("name", "exporter", "opset"), CASES)
def test_model_matches_onnxruntime(name: str, exporter: str, opset: int) -> None:
    build, shape = MODELS[name]
    torch.manual_seed(0)
    module = randomized(build())
    x = torch.randn(shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = export_torch(module, (x,), opset=opset, dynamo=exporter == "dynamo")
    assert model.opset_import[0].version == opset or exporter == "dynamo"
    check_conversion(model, {"input_0": x.numpy()})
