"""Regenerate ``tiny_cnn.onnx``, the small example model the README converts.

A seeded random-weight CNN (conv + batch norm + residual + pooling + linear) exported with
``torch.onnx.export`` at opset 17 with a dynamic batch dimension. Run: ``python make_tiny_cnn.py``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class TinyCNN(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                                   nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(16, classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.stem(image)
        x = torch.relu(x + self.block(x))
        x = self.pool(x).mean(dim=(2, 3))
        return self.head(x)


def main() -> None:
    torch.manual_seed(0)
    model = TinyCNN().eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    path = Path(__file__).with_name("tiny_cnn.onnx")
    torch.onnx.export(model, (torch.randn(1, 3, 32, 32),), str(path), dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["logits"], dynamic_axes={"image": {0: "batch"}})
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
