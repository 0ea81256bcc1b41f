"""The MNIST CNN of the fixed-point reference flow (train, quantize, export to ONNX).

The reference trains it with ``train_mnist_model.py`` to 99 % accuracy but does not reproduce the
definition; this is the PyTorch examples MNIST network that such scripts train (two 3x3
convolutions, max-pool, dropout, two linear layers, log-softmax). It is the smallest zoo model, so
it is the first one a regression shows up on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.zoo.registry import ZooModel, register, seeded_normal, torchscript_export

OPSET = 17


class MnistNet(nn.Module):
    """conv(1->32) - relu - conv(32->64) - relu - maxpool - dropout - fc(9216->128) - relu - dropout - fc(->10)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = self.dropout2(x)
        return F.log_softmax(self.fc2(x), dim=1)


def mnist_inputs(batch: int) -> dict[str, np.ndarray]:
    """Seeded normalised 28x28 digits (MNIST inputs are normalised to ~zero mean, unit variance)."""
    return {"input": seeded_normal((batch, 1, 28, 28))}


def export_mnist(path: Path, dynamic_batch: bool) -> None:
    """TorchScript exporter at opset 17; the reference exports with a fixed batch, ``_dynamic`` frees it."""
    model = MnistNet().eval()
    example = torch.from_numpy(mnist_inputs(1)["input"])
    axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
    torchscript_export(model, (example,), path, OPSET, ["input"], ["output"], axes)


register(
    ZooModel(
        name="mnist",
        title="MNIST CNN",
        library="faithful definition (PyTorch examples MNIST network)",
        export=export_mnist,
        inputs=mnist_inputs,
        ci=True,
        notes="1x1x28x28 -> 10 log-probabilities; ~1.2M parameters.",
        tags=("classification", "cnn"),
    )
)
