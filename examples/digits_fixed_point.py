"""From a float CNN to an integer-only ONNX model, evaluated on real data.

The workflow: train a small CNN on scikit-learn's 8x8 digits, export it to ONNX, convert it with
onnx2fx, quantize it (W8A8 PTQ) with real calibration images, write the QDQ, QOperator and
fixed-point ONNX models, and evaluate all of them in onnxruntime on the held-out test images.

    python examples/digits_fixed_point.py --out digits_fixed_point/

prints the test accuracy of the float, QDQ, QOperator and fixed-point models, how many fixed-point
logits equal the integer simulation (the fixed-point file converted back to torch by onnx2fx), and
each layer's requantization multiplier and shift. Needs scikit-learn (``pip install scikit-learn``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from onnx2fx import OnnxToFxConverter
from onnx2fx.quantization import ptq
from onnx2fx.quantization.integer import float_tensors_inside


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1),
                                      nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def load_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The 1797 images scaled to [0, 1] as (N, 1, 8, 8) float32, split in half (stratified, seed 0)."""
    from sklearn import datasets, model_selection

    data = datasets.load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]
    return model_selection.train_test_split(x, data.target.astype(np.int64), test_size=0.5, random_state=0,
                                            stratify=data.target)


def train(x: np.ndarray, y: np.ndarray, epochs: int) -> nn.Module:
    torch.manual_seed(0)
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    inputs, labels = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        order = torch.randperm(len(inputs))
        for start in range(0, len(inputs), 32):
            idx = order[start:start + 32]
            loss = nn.functional.cross_entropy(model(inputs[idx]), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def accuracy(onnx_path: Path, x: np.ndarray, y: np.ndarray, optimized: bool = False) -> float:
    """Test accuracy in onnxruntime (basic graph optimizations, or all of them)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized
                                        else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: x})[0]
    return float((logits.argmax(1) == y).mean())


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("digits_fixed_point"), help="output folder")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs")
    parser.add_argument("--calibration", type=int, default=200, help="calibration images (training set)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)

    x_train, x_test, y_train, y_test = load_digits()
    model = train(x_train, y_train, args.epochs)
    float_onnx = args.out / "digits.onnx"
    torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), str(float_onnx), dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["logits"], dynamic_axes={"image": {0: "batch"}})
    converter = OnnxToFxConverter(float_onnx)
    converter.convert()
    converter.save(args.out / "converted")

    quantized = args.out / "quantized"
    result = ptq(args.out / "converted" / "model_full.pt", x_train[:args.calibration], batch_size=50,
                 output_dir=quantized, formats=["qdq", "qoperator", "fixed-point"], progress=False)
    fixed_point = quantized / "model_ptq_fixed_point.onnx"
    assert float_tensors_inside(fixed_point) == [], "a float tensor inside the fixed-point graph"

    figures = {"float": accuracy(float_onnx, x_test, y_test),
               "qdq": accuracy(quantized / "model_ptq.onnx", x_test, y_test),
               "qoperator": accuracy(quantized / "model_ptq_qoperator.onnx", x_test, y_test),
               "fixed-point": accuracy(fixed_point, x_test, y_test),
               "fixed-point (all optimizations)": accuracy(fixed_point, x_test, y_test, optimized=True)}
    with torch.no_grad():
        simulated = result.integer_model("fixed-point")(torch.from_numpy(x_test)).numpy()
    session = ort.InferenceSession(str(fixed_point), providers=["CPUExecutionProvider"])
    figures["fixed-point = integer simulation"] = float(np.mean(session.run(None, {"image": x_test})[0] == simulated))

    print(f"test accuracy on {len(y_test)} held-out digits (onnxruntime):")
    for name, value in figures.items():
        print(f"  {name:34s} {value:.4f}")
    print("fixed-point requantization per layer (y = zp + round_half_up(acc * M0 / 2^n)):")
    for row in result.report["fixed_point"]["writer"]["requantizations"]:
        print(f"  {row['node']:34s} M0 {row['multiplier'][0]}, n {row['shift'][0]} "
              f"({len(row['multiplier'])} channel(s)), worst relative error {row['max_relative_error']:.2e}")
    return figures


if __name__ == "__main__":
    main()
