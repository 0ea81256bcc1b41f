"""A small CNN trained on scikit-learn's 8x8 digits (fixed seeds), exported to ONNX and converted:
real data with a real accuracy for the quantization tests."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from onnx2fx import OnnxToFxConverter
from onnx2fx.validator import load_torch_model


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1),
                                      nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def convert(onnx_path: Path, out: Path) -> Path:
    converter = OnnxToFxConverter(onnx_path)
    converter.convert()
    converter.save(out)
    return out / "model_full.pt"


def train_digits(root: Path) -> SimpleNamespace:
    """Train the CNN on half of the digits (10 epochs), export it (opset 17) and convert it into ``root``."""
    from sklearn import datasets, model_selection

    data = datasets.load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]
    y = data.target.astype(np.int64)
    x_train, x_test, y_train, y_test = model_selection.train_test_split(x, y, test_size=0.5, random_state=0,
                                                                        stratify=y)
    torch.manual_seed(0)
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    inputs, labels = torch.from_numpy(x_train), torch.from_numpy(y_train)
    generator = torch.Generator().manual_seed(0)
    for _ in range(10):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(inputs), 32):
            idx = order[start:start + 32]
            loss = nn.functional.cross_entropy(model(inputs[idx]), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), str(root / "digits.onnx"), dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["logits"], dynamic_axes={"image": {0: "batch"}})
    path = convert(root / "digits.onnx", root / "converted")
    gm = load_torch_model(path)
    with torch.no_grad():
        float_acc = float((gm(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean())
    return SimpleNamespace(root=root, model=path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                           float_acc=float_acc)
