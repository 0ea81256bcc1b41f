"""Peak extra resident memory of a conversion, against the model's weight bytes.

Builds an ONNX model with about ``--megabytes`` of float32 weights (Gemm layers that become
nn.Linear, MatMul weights that stay parameters, and a convolution), stored embedded in the .onnx
file and as external data, then converts each in a fresh process and reports:

- ``convert``: peak RSS growth during ``OnnxToFxConverter(path).convert()``;
- ``convert+save``: the same including ``save()`` (model.py, safetensors, model_full.pt).

Growth is the high-water mark of resident memory (VmHWM, reset after a warm-up conversion of a tiny
model so imports and one-off initialisation are not counted) minus the resident memory at that point.
Resident memory includes file pages of the memory-mapped model that were read. Usage::

    python benchmarks/convert_memory.py [--megabytes 256] [--runs 3]

Writes ``benchmarks/results/convert_memory.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RESULTS = Path(__file__).resolve().parent / "results"

_CHILD = r"""
import json, sys, tempfile
import numpy as np, onnx
from onnx import TensorProto, helper, numpy_helper
from onnx2fx import OnnxToFxConverter

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)

def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:  # "5" resets the VmHWM high-water mark
        f.write("5")

tiny = helper.make_model(helper.make_graph(
    [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], "tiny",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
    [numpy_helper.from_array(np.ones((4, 4), np.float32), "w")]), opset_imports=[helper.make_opsetid("", 17)])
warm = OnnxToFxConverter(tiny)
warm.convert()
warm.save(tempfile.mkdtemp())
reset_peak()
base = status("VmRSS")
converter = OnnxToFxConverter(sys.argv[1])
converter.convert()
after_convert = status("VmHWM")
anon, file = status("RssAnon"), status("RssFile")
if sys.argv[2] == "save":
    converter.save(tempfile.mkdtemp())
print(json.dumps({"convert": after_convert - base, "total": status("VmHWM") - base,
                  "anon_after_convert": anon, "file_after_convert": file}))
"""


def build_model(megabytes: int) -> tuple[onnx.ModelProto, int]:
    rng = np.random.default_rng(0)
    width = 1024
    layer_bytes = width * width * 4
    layers = max(2, megabytes * 2**20 // layer_bytes)
    nodes, inits = [], []
    current = "x"
    for i in range(layers):
        w = rng.standard_normal((width, width), dtype=np.float32) * 0.01
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        out = f"h{i}"
        if i % 2 == 0:
            inits.append(numpy_helper.from_array(np.zeros(width, np.float32), f"b{i}"))
            nodes.append(helper.make_node("Gemm", [current, f"w{i}", f"b{i}"], [out], transB=1, name=f"fc{i}"))
        else:
            nodes.append(helper.make_node("MatMul", [current, f"w{i}"], [out], name=f"mm{i}"))
        current = out
    graph = helper.make_graph(nodes, "memory_benchmark",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", width])],
                              [helper.make_tensor_value_info(current, TensorProto.FLOAT, ["n", width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    weight_bytes = sum(int(np.prod(t.dims)) * 4 for t in inits)
    return model, weight_bytes


def measure(path: Path, mode: str) -> dict[str, int]:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path), mode], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    model, weight_bytes = build_model(args.megabytes)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        embedded = Path(tmp) / "embedded.onnx"
        onnx.save(model, str(embedded))
        external = Path(tmp) / "external" / "model.onnx"
        external.parent.mkdir()
        onnx.save(model, str(external), save_as_external_data=True, location="weights.bin")
        for label, path in (("embedded", embedded), ("external data", external)):
            for mode in ("convert", "save"):
                samples = [measure(path, mode) for _ in range(args.runs)]
                key = "convert" if mode == "convert" else "total"
                extra = statistics.median(s[key] for s in samples)
                rows.append({"storage": label, "step": "convert" if mode == "convert" else "convert+save",
                             "weight_bytes": weight_bytes, "extra_rss_bytes": int(extra),
                             "ratio": round(extra / weight_bytes, 3), "runs": args.runs})
    header = "| storage | step | weights (MiB) | extra RSS (MiB, median) | extra / weights |"
    lines = [header, "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['storage']} | {r['step']} | {r['weight_bytes'] / 2**20:.1f} | "
                     f"{r['extra_rss_bytes'] / 2**20:.1f} | {r['ratio']:.3f} |")
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "convert_memory.json").write_text(json.dumps(rows, indent=2) + "\n")
    (RESULTS / "convert_memory.md").write_text(
        "# Conversion memory\n\nGenerated by `python benchmarks/convert_memory.py "
        f"--megabytes {args.megabytes} --runs {args.runs}`: peak resident-memory growth while converting "
        "a model, relative to its float32 weight bytes (goal: below 1.5).\n\n" + table + "\n")


if __name__ == "__main__":
    main()
