"""Conversion time of models with dynamic dimensions against the same models made static.

Every dynamic dimension is a symbol during conversion (``torch.SymInt`` in a ``ShapeEnv``); the
symbolic reasoning must not make conversion much slower than with fixed sizes (the goal: dynamic
at most 2x static). Each model is exported here with torch.onnx.export (dynamic axes), then
converted twice from the same file: as it is (dynamic) and with every input size fixed through
``input_shapes`` (static). Each conversion runs in a fresh process (imports and a warm-up conversion
of a tiny model not counted), ``--runs`` times; the table shows medians and the ratio.

Usage::

    python benchmarks/dynamic_convert_speed.py [--runs 3] [--models gru_encoder,cnn_fpn] [--zoo yolov8n,resnet50]

Writes ``benchmarks/results/dynamic_convert_speed.json`` and ``docs/dynamic_convert_speed.md``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.zoo.measure import emit, run_child  # noqa: E402
from benchmarks.zoo_parity import environment, warm_up_converter  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "dynamic_convert_speed.json"
DOC = REPO / "docs" / "dynamic_convert_speed.md"
GOAL_RATIO = 2.0  # dynamic conversion at most this many times the static one
WORK = REPO / "build" / "dynamic_convert_speed"
ZOO_DIR = REPO / "build" / "zoo"


# ------------------------------------------------------------------------------------ models
def _gru_encoder() -> tuple[Any, tuple[Any, ...], dict[str, dict[int, str]]]:
    """A speech encoder's recurrent core: two bidirectional GRU layers over filterbank frames."""
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru = torch.nn.GRU(80, 256, num_layers=2, batch_first=True, bidirectional=True)
            self.proj = torch.nn.Linear(512, 64)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.proj(self.gru(x)[0])

    return Encoder(), (torch.randn(2, 50, 80),), {"x": {0: "batch", 1: "frames"}}


def _cnn_fpn() -> tuple[Any, tuple[Any, ...], dict[str, dict[int, str]]]:
    """A detector's backbone and FPN: strided convolutions, nearest and bilinear upsampling."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Fpn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stages = nn.ModuleList(nn.Sequential(nn.Conv2d(c_in, c_out, 3, 2, 1), nn.BatchNorm2d(c_out), nn.ReLU())
                                        for c_in, c_out in ((3, 16), (16, 32), (32, 64), (64, 128)))
            self.lateral = nn.ModuleList(nn.Conv2d(c, 32, 1) for c in (16, 32, 64, 128))
            self.head = nn.Conv2d(32, 1, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            features = []
            for stage in self.stages:
                x = stage(x)
                features.append(x)
            top = self.lateral[-1](features[-1])
            for lateral, feature in zip(reversed(self.lateral[:-1]), reversed(features[:-1])):
                top = F.interpolate(top, scale_factor=2.0, mode="nearest") + lateral(feature)
            return torch.sigmoid(F.interpolate(self.head(top), scale_factor=2.0, mode="bilinear"))

    return Fpn(), (torch.randn(1, 3, 128, 128),), {"x": {0: "batch", 2: "height", 3: "width"}}


def _attention_encoder() -> tuple[Any, tuple[Any, ...], dict[str, dict[int, str]]]:
    """Two pre-norm self-attention blocks whose head split is a reshape built from the input's shape."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, dim: int = 64, heads: int = 4) -> None:
            super().__init__()
            self.heads = heads
            self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
            self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, t, d = x.shape
            q, k, v = self.qkv(self.norm1(x)).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            attention = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, -1)
            x = x + self.out((attention @ v).transpose(1, 2).reshape(b, t, d))
            return x + self.mlp(self.norm2(x))

    return nn.Sequential(Block(), Block()), (torch.randn(2, 20, 64),), {"x": {0: "batch", 1: "tokens"}}


MODELS: dict[str, Callable[[], tuple[Any, tuple[Any, ...], dict[str, dict[int, str]]]]] = {
    "gru_encoder": _gru_encoder, "cnn_fpn": _cnn_fpn, "attention_encoder": _attention_encoder}


def export_model(name: str) -> tuple[Path, dict[str, list[int]]]:
    """Export ``name`` (TorchScript exporter, dynamic axes) once; its path and its example sizes."""
    import torch

    path = WORK / f"{name}.onnx"
    torch.manual_seed(0)
    module, args, axes = MODELS[name]()
    shapes = {input_name: list(a.shape) for input_name, a in zip(axes, args)}
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        torch.onnx.export(module.eval(), args, str(partial), dynamo=False, opset_version=17,
                          input_names=list(axes), dynamic_axes=axes)
        partial.replace(path)
    return path, shapes


def zoo_model(name: str) -> tuple[Path, dict[str, list[int]]]:
    """A zoo model's dynamic variant (exported by ``benchmarks/zoo`` unless it is there) and the input
    sizes of its static variant."""
    import onnx

    from benchmarks.zoo.registry import export_model as export_zoo_model

    static = onnx.load(str(export_zoo_model(name, ZOO_DIR)), load_external_data=False)
    initializers = {t.name for t in static.graph.initializer}
    shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim]
              for i in static.graph.input if i.name not in initializers}
    return export_zoo_model(name, ZOO_DIR, dynamic_batch=True), shapes


# ------------------------------------------------------------------------------------ child side
def child(path: str, shapes_json: str) -> None:
    """Convert ``path`` once (with ``input_shapes`` when given) after a warm-up; emit the time."""
    warm_up_converter()
    from onnx2fx import OnnxToFxConverter

    shapes = json.loads(shapes_json) or None
    start = time.perf_counter()
    converter = OnnxToFxConverter(path, input_shapes=shapes)
    converter.convert()
    seconds = time.perf_counter() - start
    assert converter.result is not None
    emit({"seconds": seconds, "warnings": converter.result.emitted.warnings})


# ------------------------------------------------------------------------------------ parent side
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--zoo", default="all",
                        help="zoo models (their dynamic variants), comma-separated; all: every one that has one")
    parser.add_argument("--child", nargs=2, metavar=("PATH", "SHAPES_JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    names = [n for n in args.models.split(",") if n]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {sorted(MODELS)}")
    rows = []
    if args.zoo == "all":
        from benchmarks.zoo.registry import load_all

        zoo = [name for name, model in load_all().items() if model.dynamic_batch]
    else:
        zoo = [n for n in args.zoo.split(",") if n]
    for name in [*names, *(f"zoo:{n}" for n in zoo)]:
        try:
            path, shapes = zoo_model(name[4:]) if name.startswith("zoo:") else export_model(name)
        except Exception as exc:  # noqa: BLE001 - a zoo model whose package is missing: recorded, the rest go on
            rows.append({"model": name, "input_shapes": None, "static_s": None, "dynamic_s": None, "ratio": None,
                         "runs": {}, "errors": [f"export: {type(exc).__name__}: {exc}"], "warnings": []})
            continue
        times: dict[str, list[float]] = {"static": [], "dynamic": []}
        errors: list[str] = []
        warnings: list[str] = []
        for _ in range(args.runs):  # alternating, so that machine noise hits both alike
            for mode, given in (("static", shapes), ("dynamic", {})):
                result = run_child(["benchmarks.dynamic_convert_speed", "--child", str(path), json.dumps(given)],
                                   timeout=600)
                if "error" in result:
                    errors.append(f"{mode}: {result['error']}")
                else:
                    times[mode].append(result["seconds"])
                    warnings += [w for w in result["warnings"] if w not in warnings]
        static = statistics.median(times["static"]) if times["static"] else None
        dynamic = statistics.median(times["dynamic"]) if times["dynamic"] else None
        rows.append({"model": name, "input_shapes": shapes, "static_s": static, "dynamic_s": dynamic,
                     "ratio": dynamic / static if static and dynamic else None, "runs": times,
                     "errors": errors, "warnings": warnings})
    print(f"{'model':<20} {'static s':>9} {'dynamic s':>10} {'ratio':>6}")
    for row in rows:
        cells = [f"{row[k]:.3f}" if row[k] is not None else "failed" for k in ("static_s", "dynamic_s")]
        ratio = f"{row['ratio']:.2f}" if row["ratio"] is not None else "-"
        print(f"{row['model']:<20} {cells[0]:>9} {cells[1]:>10} {ratio:>6}")
        for error in row["errors"]:
            print(f"  {error}")
    doc = {"environment": environment(), "runs": args.runs, "command": shlex.join(["python", *sys.argv]),
           "models": rows}
    for path, text in ((RESULTS, json.dumps(doc, indent=2) + "\n"), (DOC, markdown(doc))):
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_text(text)
        partial.replace(path)


def markdown(doc: dict[str, Any]) -> str:
    """The results as a table with the goal (dynamic at most :data:`GOAL_RATIO` times static)."""
    lines = ["# Conversion time with dynamic dimensions", "",
             f"Generated by `{doc.get('command', 'python benchmarks/dynamic_convert_speed.py')}` "
             f"({doc['runs']} runs per model and mode, alternating, each a fresh process; wall-clock medians). "
             "Each model is converted from one file as it is (dynamic) and with every input size fixed by "
             "`input_shapes` (static). Do not edit by hand.", "",
             f"**Goal: dynamic at most {GOAL_RATIO:g}x static.**", "",
             "| model | input sizes (static) | static s | dynamic s | ratio | goal |", "|---|---|---:|---:|---:|---|"]
    for row in doc["models"]:
        shapes = "; ".join(f"{k} {'x'.join(map(str, v))}" for k, v in (row["input_shapes"] or {}).items()) or "–"
        cells = [f"{row[k]:.3f}" if row[k] is not None else "–" for k in ("static_s", "dynamic_s")]
        ratio = row["ratio"]
        goal = "–" if ratio is None else "holds" if ratio <= GOAL_RATIO else "**does not hold**"
        error = f" {'; '.join(row['errors'])}" if row["errors"] else ""
        lines.append(f"| {row['model']} | {shapes} | {cells[0]} | {cells[1]} | "
                     f"{'–' if ratio is None else f'{ratio:.2f}'} | {goal}{error} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
