"""Zoo parity: every target model converted, checked against onnxruntime and by PyTorch's tools.

For each model of ``benchmarks/zoo`` (exported first if its ONNX file is missing or stale):

1. a fresh process converts it with ``OnnxToFxConverter(path).convert()`` and records the wall
   time and the peak resident-memory growth (imports and one warm-up conversion excluded);
2. the converted model runs on the model's seeded inputs beside onnxruntime (CPU provider, all
   graph optimizations off, so its arithmetic is the ONNX graph's): the largest relative error over
   all outputs, ``max|ours - ort| / max|ort|`` in percent (gate: 1e-3 %);
3. ``symbolic_trace``, ``torch.export`` (static inputs; with a dynamic batch on the model's
   dynamic-batch export where it has one), ``torch.compile`` and a backward pass are tried on it.

Usage::

    python benchmarks/zoo_parity.py [--models resnet50,yolov8n] [--zoo-dir build/zoo] [--timeout 3600]

Writes ``docs/zoo.md`` and ``benchmarks/results/zoo.json`` (a run limited with ``--models`` writes
``benchmarks/results/zoo_subset.json`` and no Markdown, so the documented table always covers the zoo).
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.zoo.measure import PeakMemory, emit, run_child  # noqa: E402
from benchmarks.zoo.registry import export_model, load_all, select_models  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
DOC = REPO / "docs" / "zoo.md"
GATE_PERCENT = 1e-3


# ------------------------------------------------------------------------------------ child side
def _export(name: str, zoo_dir: Path) -> dict[str, Any]:
    model = load_all()[name]
    start = time.perf_counter()
    paths = {"static": str(export_model(name, zoo_dir))}
    if model.dynamic_batch:
        paths["dynamic"] = str(export_model(name, zoo_dir, dynamic_batch=True))
    return {"paths": paths, "export_s": round(time.perf_counter() - start, 1)}


def onnx_facts(path: Path) -> dict[str, Any]:
    """Opset, node and operator counts and weight bytes, read through the memory-mapped core reader."""
    from onnx2fx.converter import load_core_model

    core = load_core_model(path)
    ops: dict[str, int] = {}
    for node in core.graph.nodes:
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        ops[key] = ops.get(key, 0) + 1
    params = sum(_numel(t.dims) for t in core.graph.initializers if t.data_type in (1, 10, 11, 16))
    weight_bytes = sum(int(t.nbytes) for t in core.graph.initializers)
    return {"opset": core.opset_imports.get("", core.opset_imports.get("ai.onnx")), "nodes": sum(ops.values()),
            "op_types": dict(sorted(ops.items())), "params": params, "weight_bytes": weight_bytes,
            "file_bytes": path.stat().st_size}


def _numel(dims: Any) -> int:
    count = 1
    for d in dims:
        count *= int(d)
    return count


def warm_up_converter() -> None:
    """Convert a tiny model once so lazy imports and first-call set-up are not measured."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from onnx2fx import OnnxToFxConverter

    tiny = helper.make_model(helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["y"])], "warm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ones((2, 2, 1, 1), np.float32), "w")]),
        opset_imports=[helper.make_opsetid("", 17)])
    OnnxToFxConverter(tiny).convert()


def _parity(name: str, zoo_dir: Path) -> dict[str, Any]:
    import gc

    import torch

    from onnx2fx import AccuracyValidator, OnnxToFxConverter
    from onnx2fx.fx_tracer import check_traceability

    model = load_all()[name]
    static_path = zoo_dir / f"{name}.onnx"
    dynamic_path = zoo_dir / f"{name}_dynamic.onnx"
    torch.manual_seed(0)
    warm_up_converter()
    with PeakMemory() as peak:
        gm = OnnxToFxConverter(static_path).convert()
    row: dict[str, Any] = {"convert_s": round(peak.seconds, 2), "peak_rss_bytes": peak.growth}
    row.update(onnx_facts(static_path))
    row["rss_over_weights"] = round(peak.growth / max(row["weight_bytes"], 1), 3)
    inputs = model.inputs(1)
    metrics = AccuracyValidator(static_path, gm, tolerance=GATE_PERCENT, inputs=inputs,
                                ort_optimization="disable").validate()
    row["max_rel_err_pct"] = metrics.relative_error
    row["max_abs_err"] = metrics.max_abs_error
    if model.dynamic_batch and dynamic_path.exists():
        del gm
        gc.collect()
        gm = OnnxToFxConverter(dynamic_path).convert()
        batch2 = model.inputs(2)
        dyn = AccuracyValidator(dynamic_path, gm, tolerance=GATE_PERCENT, inputs=batch2,
                                ort_optimization="disable").validate()
        row["dynamic_max_rel_err_pct"] = dyn.relative_error
        # Every dynamic dimension at the sizes of its sweep (batch 1, 3, 8), seeded random inputs.
        sweep = AccuracyValidator(dynamic_path, gm, tolerance=GATE_PERCENT, num_samples=1, sweep=True,
                                  input_shapes={k: list(v.shape) for k, v in batch2.items()},
                                  ort_optimization="disable").validate().sweep or []
        row["sweep"] = [{"dimension": p.dimension, "size": p.size, "status": p.status,
                         "relative_error": p.relative_error, "note": p.note} for p in sweep]
    dynamic = model.dynamic_batch and dynamic_path.exists()
    # torch.export specialises a size-1 dimension, so the dynamic-batch check needs batch 2 examples
    example = tuple(torch.from_numpy(v) for v in (model.inputs(2) if dynamic else inputs).values())
    report = check_traceability(gm, example, dynamic_batch=dynamic)
    row["traceability"] = report.to_dict()
    return row


# ----------------------------------------------------------------------------------- parent side
def _sweep(row: dict[str, Any]) -> str:
    """``passed/tried`` sizes of the row's size sweep, with the worst error; "–" without one."""
    points = row.get("sweep")
    if not points:
        return "–"
    ok = sum(p["status"] in ("passed", "onnxruntime_rejects") for p in points)
    worst = max((p["relative_error"] or 0.0 for p in points), default=0.0)
    return f"{ok}/{len(points)} ({worst:.1e})"


def _status(check: dict[str, Any] | None) -> str:
    if not check:
        return "–"
    if check["ok"] is None:
        return "skipped"
    return "yes" if check["ok"] else "**no**"


def _fmt_bytes(n: int | None) -> str:
    return "–" if n is None else f"{n / 2**20:,.0f} MiB" if n >= 2**20 else f"{n / 1024:.0f} KiB"


def _fmt_params(n: int | None) -> str:
    return "–" if n is None else f"{n / 1e6:.1f} M" if n >= 1e5 else f"{n / 1e3:.1f} k"


def render(rows: list[dict[str, Any]], command: str, env: dict[str, str], minutes: float) -> str:
    passed = [r for r in rows if r.get("max_rel_err_pct") is not None and r["max_rel_err_pct"] <= GATE_PERCENT]
    lines = [
        "# Model zoo parity",
        "",
        f"Generated by `{command}` on {env['machine']}; {env['versions']}. The run took {minutes:.1f} minutes. "
        "Do not edit by hand: rerun the command.",
        "",
        "Each model is built by the library that defines it, with random weights under a fixed seed, and "
        "exported to ONNX the way its users export it (`benchmarks/zoo/README.md` lists the libraries and "
        "exporters). Each conversion runs in a fresh process. **rel. error** is the largest "
        "`max|onnx2fx - onnxruntime| / max|onnxruntime|` over all outputs, in percent, on the model's seeded "
        f"inputs (gate: {GATE_PERCENT:g} %; the specification's is 1 %); **dyn. rel. error** is the same at batch 2 "
        "on the dynamic-batch export, and **size sweep** the sizes of the dynamic-batch export's size sweep "
        "(`validate --sweep`: every dynamic dimension at 1, 3 and 8, seeded random inputs) within the gate. "
        "**convert s** is one conversion in that process, after a warm-up on a tiny "
        "model (`docs/benchmarks.md` has medians of several runs, against onnx2torch). "
        "**peak RSS** is the resident-memory high-water mark's growth during "
        "`OnnxToFxConverter(path).convert()`; **/ weights** divides it by the initializer bytes. "
        "**export (dyn.)** is `torch.export` with a dynamic batch dimension, on the dynamic-batch export.",
        "",
        f"**{len(passed)} of {len(rows)} models convert within the gate.**",
        "",
        "| model | library | params | ONNX nodes (op types) | opset | convert s | peak RSS | / weights | "
        "rel. error % | dyn. rel. error % | size sweep | symbolic_trace | export | export (dyn.) | compile | "
        "backward |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t = r.get("traceability", {})
        err = r.get("max_rel_err_pct")
        dyn = r.get("dynamic_max_rel_err_pct")
        lines.append(
            f"| {r['title']} | {r['library']} | {_fmt_params(r.get('params'))} | "
            f"{r.get('nodes', '–')} ({len(r.get('op_types', {})) or '–'}) | {r.get('opset', '–')} | "
            f"{r.get('convert_s', '–')} | {_fmt_bytes(r.get('peak_rss_bytes'))} | {r.get('rss_over_weights', '–')} | "
            f"{'–' if err is None else f'{err:.2e}'} | {'–' if dyn is None else f'{dyn:.2e}'} | {_sweep(r)} | "
            f"{_status(t.get('symbolic_trace'))} | {_status(t.get('export_static'))} | "
            f"{_status(t.get('export_dynamic_batch'))} | {_status(t.get('compile'))} | {_status(t.get('backward'))} |")
    problems = []
    for r in rows:
        if r.get("error"):
            problems.append(f"- **{r['name']}**: {r['error']}")
        for check, result in r.get("traceability", {}).items():
            if result.get("ok") is False:
                problems.append(f"- **{r['name']}** `{check}`: {result['error']}")
    if problems:
        lines += ["", "## Failures, as the tools reported them", "", *problems]
    lines += ["", "## Operators per model", "", "| model | ONNX operator types (count) |", "|---|---|"]
    for r in rows:
        ops = ", ".join(f"{op} ({n})" for op, n in r.get("op_types", {}).items())
        lines.append(f"| {r['name']} | {ops or '–'} |")
    notes = [f"- **{r['name']}**: {r['notes']}" for r in rows if r.get("notes")]
    if notes:
        lines += ["", "## Notes", "", *notes]
    return "\n".join(lines) + "\n"


def environment() -> dict[str, str]:
    import onnxruntime
    import torch

    import onnx2fx

    cpus = len(__import__("os").sched_getaffinity(0))
    return {"machine": f"a machine with {cpus} CPUs ({platform.machine()}, {platform.system()})",
            "versions": f"Python {platform.python_version()}, torch {torch.__version__}, "
                        f"onnxruntime {onnxruntime.__version__}, onnx2fx {onnx2fx.__version__}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="", help="comma-separated zoo names (default: all)")
    parser.add_argument("--zoo-dir", type=Path, default=REPO / "build" / "zoo")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per model and step")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--export", help=argparse.SUPPRESS)
    args = parser.parse_args()
    zoo_dir = args.zoo_dir.resolve()
    if args.export:
        emit(_export(args.export, zoo_dir))
        return
    if args.child:
        emit(_parity(args.child, zoo_dir))
        return

    zoo = load_all()
    try:
        names = select_models(args.models)
    except ValueError as exc:
        parser.error(str(exc))
    started = time.perf_counter()
    rows = []
    for index, name in enumerate(names, 1):
        model = zoo[name]
        print(f"[{index}/{len(names)}] {name}: exporting", flush=True)
        row: dict[str, Any] = {"name": name, "title": model.title, "library": model.library, "notes": model.notes}
        exported = run_child(["benchmarks.zoo_parity", "--export", name, "--zoo-dir", str(zoo_dir)], args.timeout)
        row["export_s"] = exported.get("export_s")
        if "error" in exported:
            row["error"] = f"export failed: {exported['error']}"
        else:
            print(f"[{index}/{len(names)}] {name}: converting and checking", flush=True)
            result = run_child(["benchmarks.zoo_parity", "--child", name, "--zoo-dir", str(zoo_dir)], args.timeout)
            row.update(result)
        rows.append(row)
        err = row.get("max_rel_err_pct")
        print(f"    convert {row.get('convert_s', '–')} s, rel. error {err if err is not None else '–'} %"
              + (f", error: {row['error']}" if row.get("error") else ""), flush=True)
    minutes = (time.perf_counter() - started) / 60
    command = "python benchmarks/zoo_parity.py" + (f" --models {','.join(names)}" if args.models else "")
    env = environment()
    RESULTS.mkdir(exist_ok=True)
    document = {"command": command, "environment": env, "minutes": round(minutes, 1), "gate_percent": GATE_PERCENT,
                "models": rows}
    if args.models:
        (RESULTS / "zoo_subset.json").write_text(json.dumps(document, indent=2) + "\n")
        print(render(rows, command, env, minutes))
        return
    (RESULTS / "zoo.json").write_text(json.dumps(document, indent=2) + "\n")
    DOC.write_text(render(rows, shlex.join(command.split()), env, minutes))
    print(f"wrote {DOC.relative_to(REPO)} and benchmarks/results/zoo.json")


if __name__ == "__main__":
    main()
