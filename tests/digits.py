"""Models trained on scikit-learn's 8x8 digits (fixed seeds), exported to ONNX and converted: real data
with a real accuracy for the quantization tests; and the agreement measure those tests share."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from support import convert_and_save
from torch import nn

from onnx2fx.validator import load_torch_model


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1),
                                      nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def load_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``x_train, x_test, y_train, y_test``: the images scaled to [0, 1] as (N, 1, 8, 8) float32, split in
    half (stratified, fixed seed), so that every digits model sees the same 898 training and 899 test images."""
    from sklearn import datasets, model_selection

    data = datasets.load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]
    y = data.target.astype(np.int64)
    x_train, x_test, y_train, y_test = model_selection.train_test_split(x, y, test_size=0.5, random_state=0,
                                                                        stratify=y)
    return x_train, x_test, y_train, y_test


def train_classifier(model: nn.Module, x_train: np.ndarray, y_train: np.ndarray, *, epochs: int, lr: float,
                     batch_size: int = 32, weight_decay: float = 0.0, one_cycle: bool = False,
                     seed: int = 0) -> nn.Module:
    """Cross-entropy training with AdamW (plain Adam when ``weight_decay`` is 0) on seeded shuffles; returns
    ``model`` in eval mode.

    ``one_cycle`` warms the learning rate up and anneals it (``OneCycleLR``): a ViT trained from scratch on
    898 images needs that to pass 95 % test accuracy in 40 epochs (at a constant rate of 1e-3 to 4e-3 it ends
    at 88-94 %).
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = -(-len(x_train) // batch_size)
    schedule = (torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=epochs * steps_per_epoch)
                if one_cycle else None)
    inputs, labels = torch.from_numpy(x_train), torch.from_numpy(y_train)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(inputs), batch_size):
            idx = order[start:start + batch_size]
            loss = nn.functional.cross_entropy(model(inputs[idx]), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
    return model.eval()


def within_one_step(a: np.ndarray, b: np.ndarray, step: float) -> float:
    """Share of elements of ``a`` and ``b`` at most one quantization step apart: two valid float summation
    orders may round a value on either side of a grid midpoint, so one step is the tolerance (in float64,
    with a relative margin for the subtraction itself)."""
    return float((np.abs(a.astype(np.float64) - b.astype(np.float64)) <= step * (1 + 1e-3)).mean())


def train_digits(root: Path) -> SimpleNamespace:
    """Train the CNN on half of the digits (10 epochs), export it (opset 17) and convert it into ``root``."""
    x_train, x_test, y_train, y_test = load_digits()
    torch.manual_seed(0)
    model = train_classifier(DigitsCNN(), x_train, y_train, epochs=10, lr=3e-3)
    torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), str(root / "digits.onnx"), dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["logits"], dynamic_axes={"image": {0: "batch"}})
    path = convert_and_save(root / "digits.onnx", root / "converted")
    gm = load_torch_model(path)
    with torch.no_grad():
        float_acc = float((gm(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean())
    return SimpleNamespace(root=root, model=path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                           float_acc=float_acc)
