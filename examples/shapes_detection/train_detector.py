"""Train the small shapes detector on the CPU and export it to ONNX with reference 004's interface.

    python examples/shapes_detection/train_detector.py  # writes examples/shapes_detection/shapes_detector.onnx

The detector is CenterNet-like: a stride-8 fully convolutional network predicts, per grid cell, a
heat map per class, the object's size and the centre's offset inside the cell. Decoding is part of
the exported graph and uses only standard operators (a 3x3 max-pool keeps local peaks, TopK picks
the best ``K``), so no NMS is needed and the ONNX model returns, like reference 004's models:

- input ``input``: float32 [B, 3, 320, 320], RGB scaled to [0, 1];
- ``location`` [B, K, 4]: x1, y1, x2, y2 normalized to [0, 1];
- ``score`` [B, K]; ``category`` [B, K] (int64, 1-indexed: 1 triangle, 2 square, 3 circle).

Images are generated on the fly by ``onnx2fx.evaluation.shapes`` (seed 1; the evaluation data uses
seed 0), so training never sees an evaluation image.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from onnx2fx.evaluation.shapes import make_shapes_image

SIZE, STRIDE, CLASSES, TOP_K = 320, 8, 3, 50
HERE = Path(__file__).resolve().parent


def _block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ShapesDetector(nn.Module):
    """Backbone to stride 8 with dilated layers for context, then heat map / size / offset heads."""

    def __init__(self, decode: bool = False) -> None:
        super().__init__()
        self.decode = decode
        self.body = nn.Sequential(_block(3, 16, 2), _block(16, 32, 2), _block(32, 48, 2), _block(48, 48),
                                  _block(48, 48, dilation=2), _block(48, 48, dilation=4))
        self.heat = nn.Conv2d(48, CLASSES, 1)
        self.size = nn.Conv2d(48, 2, 1)
        self.offset = nn.Conv2d(48, 2, 1)
        nn.init.constant_(self.heat.bias, -2.19)  # prior 0.1, as CenterNet

    def forward(self, x: torch.Tensor):  # noqa: ANN201 - a tuple of tensors or the decoded detections
        features = self.body(x)
        heat, size, offset = self.heat(features), self.size(features), self.offset(features)
        if not self.decode:
            return heat, size, offset
        return self._decode(heat.sigmoid(), size, offset.sigmoid())

    @staticmethod
    def _decode(heat: torch.Tensor, size: torch.Tensor, offset: torch.Tensor):  # noqa: ANN205
        batch, classes, height, width = heat.shape
        peaks = heat * (nn.functional.max_pool2d(heat, 3, 1, 1) == heat).to(heat.dtype)
        score, index = peaks.reshape(batch, classes * height * width).topk(TOP_K, dim=1)
        category = index // (height * width) + 1
        cell = index % (height * width)
        ys, xs = (cell // width).to(heat.dtype), (cell % width).to(heat.dtype)
        gather = cell.unsqueeze(1).expand(batch, 2, TOP_K)
        wh = size.reshape(batch, 2, height * width).gather(2, gather)
        off = offset.reshape(batch, 2, height * width).gather(2, gather)
        cx, cy = (xs + off[:, 0]) / width, (ys + off[:, 1]) / height
        w, h = wh[:, 0].clamp(min=0), wh[:, 1].clamp(min=0)
        location = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=2).clamp(0, 1)
        return location, score, category


def _targets(boxes: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """CenterNet targets on the stride-8 grid: gaussian heat maps, size (normalized) and offset at centres."""
    grid = SIZE // STRIDE
    heat = np.zeros((CLASSES, grid, grid), np.float32)
    size = np.zeros((2, grid, grid), np.float32)
    offset = np.zeros((2, grid, grid), np.float32)
    mask = np.zeros((grid, grid), np.float32)
    yy, xx = np.mgrid[0:grid, 0:grid].astype(np.float32)
    for (x1, y1, x2, y2), label in zip(boxes, labels):
        cx, cy = (x1 + x2) / 2 / STRIDE, (y1 + y2) / 2 / STRIDE
        ix, iy = min(int(cx), grid - 1), min(int(cy), grid - 1)
        sigma = max((x2 - x1) / STRIDE / 6, 0.5)
        g = np.exp(-((xx - ix) ** 2 + (yy - iy) ** 2) / (2 * sigma**2))
        heat[label - 1] = np.maximum(heat[label - 1], g)
        heat[label - 1, iy, ix] = 1.0
        size[:, iy, ix] = ((x2 - x1) / SIZE, (y2 - y1) / SIZE)
        offset[:, iy, ix] = (cx - ix, cy - iy)
        mask[iy, ix] = 1.0
    return heat, size, offset, mask


def _batch(seed: int, start: int, count: int) -> tuple[torch.Tensor, ...]:
    images, heats, sizes, offsets, masks = [], [], [], [], []
    for i in range(start, start + count):
        sample = make_shapes_image(seed, i, SIZE)
        images.append(sample.pixels.transpose(2, 0, 1).astype(np.float32) / 255.0)
        heat, size, offset, mask = _targets(sample.boxes, sample.labels)
        heats.append(heat), sizes.append(size), offsets.append(offset), masks.append(mask)
    return tuple(torch.from_numpy(np.stack(a)) for a in (images, heats, sizes, offsets, masks))


def _loss(heat: torch.Tensor, size: torch.Tensor, offset: torch.Tensor, targets: tuple[torch.Tensor, ...]
          ) -> torch.Tensor:
    t_heat, t_size, t_offset, mask = targets
    p = heat.sigmoid().clamp(1e-4, 1 - 1e-4)
    positive = t_heat.eq(1).float()
    focal = -(positive * (1 - p) ** 2 * p.log() + (1 - positive) * (1 - t_heat) ** 4 * p**2 * (1 - p).log())
    count = positive.sum().clamp(min=1)
    m = mask.unsqueeze(1)
    box = ((size - t_size).abs() * m).sum() * 10 + ((offset.sigmoid() - t_offset).abs() * m).sum()
    return (focal.sum() + box) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=HERE / "shapes_detector.onnx")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = ShapesDetector()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=args.steps, pct_start=0.1)
    start = time.perf_counter()
    for step in range(args.steps):
        images, *targets = _batch(1, step * args.batch_size, args.batch_size)
        loss = _loss(*model(images), tuple(targets))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  {time.perf_counter() - start:.0f} s", flush=True)
    model.eval()
    model.decode = True
    example = torch.rand(1, 3, SIZE, SIZE)
    torch.onnx.export(model, (example,), str(args.output), input_names=["input"],
                      output_names=["location", "score", "category"], opset_version=17, dynamo=False,
                      dynamic_axes={"input": {0: "batch"}, "location": {0: "batch"}, "score": {0: "batch"},
                                    "category": {0: "batch"}})
    print(f"wrote {args.output} ({args.output.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
