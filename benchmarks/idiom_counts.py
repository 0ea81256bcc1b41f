"""How many ONNX nodes become how many lines of ``forward``, with and without idioms.

For each zoo model (exported first if its file is missing or stale), converts it twice, node by node
(``idioms=False``) and with the exporters' decompositions of standard functions fused
(``onnx2fx.idioms``), and records: ONNX nodes, statements of ``forward`` each way, the functions
recognised, and the largest relative error of each conversion against onnxruntime on the model's
seeded inputs. ``--runs N`` also times N eager calls of each form (in the JSON only: on a
shared machine such timings say little).

Usage::

    python benchmarks/idiom_counts.py [--models mnist,resnet50] [--zoo-dir build/zoo] [--runs 0]

Writes ``docs/idioms.md`` and ``benchmarks/results/idiom_counts.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.zoo.registry import export_model, load_all, select_models  # noqa: E402
from onnx2fx import OnnxToFxConverter  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
DOC = REPO / "docs" / "idioms.md"
DEFAULT_MODELS = "mnist,resnet50,convnext_tiny,efficientvit,yolov8n,yolo11n,x3d_m,rtdetr_v2,clip_vit_l14"


def _latencies_ms(forms: dict[str, torch.nn.Module], inputs: list[torch.Tensor], runs: int) -> dict[str, float]:
    """Median eager time of each form; the forms take turns, after two warm-up calls each, so that
    a busy machine slows both alike."""
    times: dict[str, list[float]] = {key: [] for key in forms}
    with torch.no_grad():
        for gm in forms.values():
            gm(*inputs)
            gm(*inputs)
        for _ in range(runs):
            for key, gm in forms.items():
                start = time.perf_counter()
                gm(*inputs)
                times[key].append(time.perf_counter() - start)
    return {key: round(statistics.median(t) * 1000, 2) for key, t in times.items()}


def _onnxruntime_outputs(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, feeds)


def _relative_error(expected: list[np.ndarray], gm: torch.nn.Module, feeds: dict[str, np.ndarray]) -> float:
    with torch.no_grad():
        produced = gm(*[torch.from_numpy(a) for a in feeds.values()])
    produced = list(produced) if isinstance(produced, (tuple, list)) else [produced]
    worst = 0.0
    for ref, out in zip(expected, produced):
        ref64, out64 = np.asarray(ref, np.float64), out.detach().numpy().astype(np.float64)
        scale = float(np.abs(ref64).max()) or 1.0
        worst = max(worst, float(np.abs(ref64 - out64).max()) / scale)
    return worst


def measure(name: str, zoo_dir: Path, runs: int) -> dict[str, Any]:
    path = export_model(name, zoo_dir)
    feeds = load_all()[name].inputs(1)
    inputs = [torch.from_numpy(a) for a in feeds.values()]
    expected = _onnxruntime_outputs(path, feeds)
    row: dict[str, Any] = {"model": name}
    forms: dict[str, torch.nn.Module] = {}
    for idioms in (False, True):
        converter = OnnxToFxConverter(path, idioms=idioms)
        key = "fused" if idioms else "node_by_node"
        forms[key] = converter.convert()
        record = converter.conversion_record()
        row["onnx_nodes"] = record["node_count"]
        row[f"forward_lines_{key}"] = record["forward_lines"]
        if idioms:
            row["idioms"] = record["idioms"]
        row["relative_error" if idioms else "relative_error_node_by_node"] = _relative_error(expected, forms[key],
                                                                                            feeds)
    if runs:
        row.update({f"latency_ms_{key}": ms for key, ms in _latencies_ms(forms, inputs, runs).items()})
    del forms
    gc.collect()
    return row


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | ONNX nodes | forward lines, node by node | forward lines, idioms | functions recognised | "
             "rel. error, node by node | rel. error, idioms |", "|---|---:|---:|---:|---|---:|---:|"]
    for r in rows:
        found = ", ".join(f"{k} {v}" for k, v in r["idioms"].items()) or "—"
        lines.append(f"| {r['model']} | {r['onnx_nodes']} | {r['forward_lines_node_by_node']} | "
                     f"{r['forward_lines_fused']} | {found} | {r['relative_error_node_by_node']:.1e} | "
                     f"{r['relative_error']:.1e} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated zoo names")
    parser.add_argument("--zoo-dir", type=Path, default=REPO / "build" / "zoo")
    parser.add_argument("--runs", type=int, default=0, help="timed eager calls per form (0: none)")
    args = parser.parse_args()
    rows = []
    for name in select_models(args.models):
        rows.append(measure(name, args.zoo_dir, args.runs))
        print(json.dumps(rows[-1]), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "idiom_counts.json").write_text(json.dumps(rows, indent=2) + "\n")
    table = markdown(rows)
    print(table)
    DOC.write_text(_document(table))


def _document(table: str) -> str:
    import platform

    import onnxruntime

    return f"""# Standard functions recognised in exporters' decompositions

Generated by `python benchmarks/idiom_counts.py` on a machine with {os.cpu_count()} CPUs ({platform.machine()}, \
{platform.system()}), shared with other work; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}. \
Do not edit by hand: rerun the command.

Each zoo model (`benchmarks/zoo`, exported by its own library) is converted node by node
(`onnx2fx convert --no-idioms`) and with the decompositions of GELU, SiLU, HardSwish, LayerNorm,
RMSNorm and scaled dot-product attention written as one call each (the default; see
[architecture.md](architecture.md#standard-functions-from-their-decompositions-srconnx2fxidioms)).
**forward lines** are the statements of the generated `forward`; **rel. error** is
`max|onnx2fx - onnxruntime| / max|onnxruntime|` over all outputs of each conversion on the
model's seeded inputs (onnxruntime with graph optimisations off).

{table}

These exports are at opset 17 or later, where `LayerNormalization` and `HardSwish` are single ONNX
nodes already (and were `nn.LayerNorm` / `F.hardswish` before); what the recognition adds here is
the GELU of the transformers models, the SiLU of the ultralytics, pytorchvideo and RT-DETR models
and the attention of CLIP (`MatMul -> Mul -> Softmax -> Cast -> Cast -> MatMul` in each layer) and
of RT-DETR's `nn.MultiheadAttention` layers (the query scaled before the `MatMul`), each now one
`F.scaled_dot_product_attention`: the fused conversion is as close to onnxruntime as the nodes one
by one. Older exports decompose LayerNorm and HardSwish too. `MatMul + Add` as `nn.Linear` is not
fused by default (`idioms={{*DEFAULT_IDIOMS, "linear"}}` does; architecture.md says why), so the
Linear layers of these models are still `nn.Linear(bias=False)` followed by `+ bias`.
"""


if __name__ == "__main__":
    main()
