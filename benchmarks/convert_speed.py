"""Conversion speed and memory against onnx2torch, and inference latency of both converted models.

For each zoo model (``benchmarks/zoo``; exported first if missing), in one run:

- **conversion**: ``OnnxToFxConverter(path).convert()`` and ``onnx2torch.convert(path)``, each from
  the same ONNX file path to a ready ``nn.Module``, each in a fresh process (imports and a warm-up
  conversion of a tiny model not counted), ``--runs`` times alternating between the two tools; wall
  time and the growth of the resident-memory high-water mark; medians and the ratio ours / theirs.
- **inference**: one process converts with both tools and runs the two eager models and an
  onnxruntime session (CPU provider, default optimizations, as many threads as torch) on the same
  seeded inputs, round-robin so machine noise hits all three alike: median latency of
  ``--latency-runs`` calls after warm-up. The largest relative error of each against onnxruntime is
  recorded too.

- **the weight-read floor**: the time to memory-map the ONNX file and its external-data files and touch
  every page (page cache warm, as for the conversions), in a fresh process: what a conversion cannot
  go below. The goals, judged in the table: onnx2fx converts in at most twice the floor
  plus 0.1 ms per ONNX node, and at least 5x faster than onnx2torch where onnx2torch converts.

``--corpus`` adds the real third-party files of ``benchmarks/real_models_corpus`` (conversion and
floor only; their inputs are not the zoo's, so no latency rows). Where onnx2torch fails, its error is
recorded. Usage::

    python benchmarks/convert_speed.py [--models clip_vit_l14,resnet50] [--runs 3] [--latency-runs 10] [--corpus]

Writes ``docs/benchmarks.md`` and ``benchmarks/results/convert_speed.json`` (a run limited with
``--models`` writes ``benchmarks/results/convert_speed_subset.json`` and prints the table only).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.doc_sections import kept_sections  # noqa: E402
from benchmarks.zoo.measure import PeakMemory, emit, run_child  # noqa: E402
from benchmarks.zoo.registry import load_all, select_models  # noqa: E402
from benchmarks.zoo_parity import environment, onnx_facts, warm_up_converter  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
DOC = REPO / "docs" / "benchmarks.md"
TOOLS = ("onnx2fx", "onnx2torch")
MIN_LATENCY_RUNS = 3
NODE_ALLOWANCE_S = 1e-4  # goal: conversion <= 2 x weight-read floor + 0.1 ms per node
SPEEDUP_GOAL = 5  # goal: at least 5x faster than onnx2torch where it converts
KEPT_SECTIONS = ("latency",)  # generated sections of docs/benchmarks.md that other scripts own


# ------------------------------------------------------------------------------------ child side
def _converter(tool: str) -> Any:
    """The tool's path-to-module function, imported and warmed up: it gives the module and, for
    onnx2fx, the phase timings its conversion recorded (``None`` for onnx2torch)."""
    if tool == "onnx2fx":
        from onnx2fx import OnnxToFxConverter

        warm_up_converter()

        def ours(path: Path) -> tuple[Any, dict[str, float]]:
            converter = OnnxToFxConverter(path)
            module = converter.convert()
            assert converter.result is not None
            return module, converter.result.info["phase_seconds"]

        return ours
    from benchmarks.zoo.torchvision_ops import import_torchvision

    import_torchvision()  # onnx2torch imports torchvision
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    from onnx2torch import convert

    tiny = helper.make_model(
        helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "warm",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])],
                          [numpy_helper.from_array(np.ones((2, 2, 1, 1), np.float32), "w")]),
        opset_imports=[helper.make_opsetid("", 17)])
    convert(tiny)
    return lambda path: (convert(str(path)), None)


def _convert_once(tool: str, path: Path) -> dict[str, Any]:
    convert = _converter(tool)
    with PeakMemory() as peak:
        module, phases = convert(path)
    result = {"seconds": peak.seconds, "peak_rss_bytes": peak.growth}
    if phases is not None:  # onnx2fx: where its time went (conversion.json's record)
        result["phases"] = phases
    fx_floor = _fx_floor(module)
    if fx_floor is not None:
        result["fx_floor_seconds"] = fx_floor
    del module
    return result


def _fx_floor(module: Any, repeats: int = 3) -> float | None:
    """Median time torch.fx takes to build this GraphModule again from its graph: a node for every
    node (``Graph.graph_copy``) and the generated ``forward`` (``GraphModule.__init__`` compiles it).

    Any conversion to a GraphModule of this graph pays at least that much, however it finds the
    nodes; where it is more than a fifth of onnx2torch's time, being 5x faster is out of reach.
    """
    import torch.fx

    if not isinstance(module, torch.fx.GraphModule):
        return None
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        graph = torch.fx.Graph()
        graph.output(graph.graph_copy(module.graph, {}))
        torch.fx.GraphModule(module, graph)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _data_files(path: Path) -> list[Path]:
    """The ONNX file and every external-data file it names (each once)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    files = [path]
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location" and (path.parent / entry.value) not in files:
                files.append(path.parent / entry.value)
    return files


def _read_floor(path: Path, repeats: int = 3) -> dict[str, Any]:
    """Median time to map the model's files and touch one byte of every page: the physical floor."""
    import mmap

    import numpy as np

    files = _data_files(path)
    samples = []
    for _ in range(repeats + 1):  # the first pass only warms the page cache
        start = time.perf_counter()
        checksum = 0
        for file in files:
            with file.open("rb") as handle:
                if file.stat().st_size == 0:
                    continue
                with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                    pages = np.frombuffer(mapped, dtype=np.uint8)[::mmap.PAGESIZE]
                    checksum += int(pages.sum(dtype=np.uint64))
                    del pages
        samples.append(time.perf_counter() - start)
    return {"seconds": statistics.median(samples[1:]), "files": len(files), "checksum": checksum}


def _relative_error(ours: Any, reference: list[Any]) -> float:
    import numpy as np
    import torch

    outs = ours if isinstance(ours, (tuple, list)) else [ours]
    flat = [o.detach().numpy() if isinstance(o, torch.Tensor) else np.asarray(o) for o in outs]
    worst = 0.0
    for got, ref in zip(flat, reference):
        if got.shape != ref.shape:
            return float("inf")
        if ref.size and np.issubdtype(ref.dtype, np.floating):
            scale = float(np.abs(ref).max()) or 1.0
            worst = max(worst, float(np.abs(got.astype(np.float64) - ref).max()) / scale * 100)
    return worst


def _latency(name: str, path: Path, runs: int, threads: int, budget: float) -> dict[str, Any]:
    import onnxruntime as ort
    import torch

    if threads:
        torch.set_num_threads(threads)
    model = load_all()[name]
    inputs = model.inputs(1)
    tensors = tuple(torch.from_numpy(v) for v in inputs.values())
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    reference = session.run(None, inputs)
    callables: dict[str, Any] = {"onnxruntime": lambda: session.run(None, inputs)}
    result: dict[str, Any] = {}
    for tool in TOOLS:
        try:
            module, _ = _converter(tool)(path)
            module.eval()
            with torch.no_grad():
                result[f"{tool}_rel_err_pct"] = _relative_error(module(*tensors), reference)
            callables[tool] = lambda module=module: module(*tensors)
        except Exception as exc:  # onnx2torch's failures are part of the result
            result[f"{tool}_error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:400]
    times: dict[str, list[float]] = {key: [] for key in callables}
    with torch.no_grad():
        for _ in range(2):
            for fn in callables.values():
                fn()
        began = time.perf_counter()
        for done in range(1, runs + 1):
            for key, fn in callables.items():
                start = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - start)
            if done >= MIN_LATENCY_RUNS and time.perf_counter() - began > budget:
                break  # a heavy model: enough rounds for a median within the time budget
    for key, samples in times.items():
        result[f"{key}_ms"] = round(statistics.median(samples) * 1000, 2)
    result["latency_rounds"] = len(times["onnxruntime"])
    return result


# ----------------------------------------------------------------------------------- parent side
def _median(samples: list[dict[str, Any]], key: str) -> float | None:
    values = [s[key] for s in samples if key in s]
    return statistics.median(values) if values else None


def measure_model(name: str, path: Path, runs: int, latency_runs: int, threads: int, budget: float,
                  timeout: float, latency: bool = True) -> dict[str, Any]:
    row: dict[str, Any] = {"name": name}
    row.update(onnx_facts(path))
    floor = run_child(["benchmarks.convert_speed", "--read-floor", str(path)], timeout)
    row["read_floor_s"] = None if "error" in floor else round(floor["seconds"], 4)
    samples: dict[str, list[dict[str, Any]]] = {tool: [] for tool in TOOLS}
    for _ in range(runs):
        for tool in TOOLS:
            if samples[tool] and "error" in samples[tool][-1]:
                continue  # a tool that failed once fails the same way again
            samples[tool].append(run_child(["benchmarks.convert_speed", "--convert", tool, str(path)], timeout))
    for tool in TOOLS:
        errors = [s["error"] for s in samples[tool] if "error" in s]
        if errors:
            row[f"{tool}_error"] = errors[0]
        seconds = _median(samples[tool], "seconds")
        rss = _median(samples[tool], "peak_rss_bytes")
        row[f"{tool}_convert_s"] = None if seconds is None else round(seconds, 3)
        row[f"{tool}_peak_rss_bytes"] = None if rss is None else int(rss)
        row[f"{tool}_convert_s_runs"] = [round(s["seconds"], 3) for s in samples[tool] if "seconds" in s]
        fx_floor = _median(samples[tool], "fx_floor_seconds")
        row[f"{tool}_fx_floor_s"] = None if fx_floor is None else round(fx_floor, 4)
    phases = [s["phases"] for s in samples["onnx2fx"] if "phases" in s]
    if phases:  # each phase's median over the runs (so they need not add up to the median total)
        row["onnx2fx_phase_s"] = {k: round(statistics.median(p[k] for p in phases), 4) for k in phases[0]}
    ours, theirs = row["onnx2fx_convert_s"], row["onnx2torch_convert_s"]
    row["time_ratio"] = round(ours / theirs, 4) if ours and theirs else None
    ours_rss, theirs_rss = row["onnx2fx_peak_rss_bytes"], row["onnx2torch_peak_rss_bytes"]
    row["rss_ratio"] = round(ours_rss / theirs_rss, 3) if ours_rss and theirs_rss else None
    if row["read_floor_s"] is not None:
        row["goal_s"] = round(2 * row["read_floor_s"] + NODE_ALLOWANCE_S * row["nodes"], 4)
        row["floor_goal_holds"] = ours is not None and ours <= row["goal_s"]
    row["onnx2torch_goal_holds"] = None if not theirs else bool(ours and ours * SPEEDUP_GOAL <= theirs)
    fx_floor = row["onnx2fx_fx_floor_s"]
    # the 5x goal asks for less time than torch.fx alone takes to build our GraphModule
    row["onnx2torch_goal_below_fx_floor"] = None if not theirs or fx_floor is None \
        else fx_floor * SPEEDUP_GOAL > theirs
    if not latency:
        return row
    latency = run_child(["benchmarks.convert_speed", "--latency", name, str(path), "--latency-runs",
                         str(latency_runs), "--threads", str(threads), "--latency-budget", str(budget)], timeout)
    if "error" in latency:
        row["latency_error"] = latency["error"]
    else:
        for key, value in latency.items():
            if key.endswith("_error") and key in row:
                continue  # the conversion runs already recorded this tool's error
            row[key] = value
    return row


def _corpus_rows(keys: str, runs: int, threads: int, timeout: float) -> list[dict[str, Any]]:
    """Conversion rows for the corpus files named (``all``: every one) that can be fetched; the
    others are skipped with the reason."""
    from benchmarks.real_models_corpus.cache import CorpusUnavailable, model_path
    from benchmarks.real_models_corpus.entries import CORPUS, by_key

    entries = CORPUS if keys == "all" else tuple(by_key(key.strip()) for key in keys.split(",") if key.strip())
    rows = []
    for index, entry in enumerate(entries, 1):
        print(f"[corpus {index}/{len(entries)}] {entry.key}", flush=True)
        try:
            path = model_path(entry)
        except CorpusUnavailable as exc:
            print(f"    skipped: {exc}", flush=True)
            continue
        row = measure_model(entry.key, path, runs, 0, threads, 0, timeout, latency=False)
        row["corpus"] = True
        rows.append(row)
        print(f"    onnx2fx {row['onnx2fx_convert_s']} s, onnx2torch {row['onnx2torch_convert_s']} s, "
              f"floor {row['read_floor_s']} s", flush=True)
    return rows


def _last_line(error: str) -> str:
    """The exception line of a child's error (its traceback lines are joined with " | ")."""
    return error.rsplit(" | ", 1)[-1].strip()


def _f(value: Any, fmt: str = "{:.2f}") -> str:
    return "–" if value is None else fmt.format(value)


def _holds(value: bool | None) -> str:
    return "–" if value is None else "holds" if value else "misses"


def _speedup_goal(row: dict[str, Any]) -> str:
    verdict = _holds(row.get("onnx2torch_goal_holds"))
    return verdict + " (fx floor)" if verdict == "misses" and row.get("onnx2torch_goal_below_fx_floor") else verdict


def _conversion_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| model | nodes | weights | onnx2fx s | onnx2torch s | time ours / theirs | floor s | goal s | "
             "floor goal | fx floor s | 5x goal | onnx2fx peak RSS | onnx2torch peak RSS | onnx2fx RSS / weights |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        weights = r.get("weight_bytes") or 0
        ours_rss = r.get("onnx2fx_peak_rss_bytes")
        lines.append(
            f"| {r['name']} | {r.get('nodes', '–')} | {weights / 2**20:,.0f} MiB | "
            f"{_f(r.get('onnx2fx_convert_s'), '{:.3f}')} | "
            f"{_f(r.get('onnx2torch_convert_s'), '{:.3f}') if r.get('onnx2torch_convert_s') else 'failed'} | "
            f"{_f(r.get('time_ratio'), '{:.3f}')} | {_f(r.get('read_floor_s'), '{:.4f}')} | "
            f"{_f(r.get('goal_s'), '{:.3f}')} | {_holds(r.get('floor_goal_holds'))} | "
            f"{_f(r.get('onnx2fx_fx_floor_s'), '{:.4f}')} | "
            f"{_speedup_goal(r)} | {_f(ours_rss and ours_rss / 2**20, '{:,.0f} MiB')} | "
            f"{_f(r.get('onnx2torch_peak_rss_bytes') and r['onnx2torch_peak_rss_bytes'] / 2**20, '{:,.0f} MiB')} | "
            f"{_f(ours_rss and weights and ours_rss / weights, '{:.2f}')} |")
    return lines


PHASES = ("read", "weights", "lower", "render", "instantiate", "trace")


def _ms(seconds: float | None, fmt: str = "{:.1f}") -> str:
    return _f(None if seconds is None else seconds * 1e3, fmt)


def _phase_table(rows: list[dict[str, Any]]) -> list[str]:
    """Where onnx2fx's conversion time goes, from the phase timings each conversion records."""
    timed = [r for r in rows if r.get("onnx2fx_phase_s")]
    if not timed:
        return []
    lines = ["", "## Where onnx2fx's time goes", "",
             "The phases each conversion records in `conversion.json` (`phase_seconds`), medians of the runs above, "
             "in ms: **read** the file (the native reader: graph and memory map), **weights** the initializers as "
             "torch tensors (zero-copy views; a tensor whose bytes the file leaves misaligned for its type is "
             "copied), **lower** the nodes (the op table, and each emitted call's sizes on meta tensors, by a shape "
             "rule or on FakeTensors), **render** `model.py`, **instantiate** `Model` on the meta device with the "
             "weights bound, **trace** it into the GraphModule with torch.fx (the **fx floor** of the tables above "
             "is the part of that torch.fx pays whatever the conversion does). **lower / node** is the lowering's "
             "time per ONNX node; **total** is the conversion's median as in the tables above (to the ms).", "",
             "| model | nodes | total | read | weights | lower | lower / node | render | instantiate | trace | "
             "fx floor |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in timed:
        p = r["onnx2fx_phase_s"]
        total, fx_floor = r.get("onnx2fx_convert_s"), r.get("onnx2fx_fx_floor_s")
        per_node = p["lower"] / r["nodes"] if r.get("nodes") else None
        cells = [_ms(total, "{:.0f}"), *(_ms(p.get(k)) for k in PHASES[:3]), _ms(per_node, "{:.3f}"),
                 *(_ms(p.get(k)) for k in PHASES[3:]), _ms(fx_floor)]
        lines.append(f"| {r['name']} | {r.get('nodes', '–')} | " + " | ".join(cells) + " |")
    return lines


def render(rows: list[dict[str, Any]], command: str, env: dict[str, str], runs: int, latency_runs: int,
           threads: int, minutes: float) -> str:
    thread_text = f"{threads} intra-op thread{'s' if threads > 1 else ''} each" if threads else \
        "torch's default thread count, and the same for onnxruntime"
    lines = [
        "# Conversion benchmark: onnx2fx against onnx2torch",
        "",
        f"Generated by `{command}` on {env['machine']}; {env['versions']}, onnx2torch {env['onnx2torch']}. "
        f"The run took {minutes:.1f} minutes. Do not edit by hand: rerun the command.",
        "",
        "Both tools convert the same zoo ONNX file (`benchmarks/zoo`, random weights, fixed seed) from its path to "
        "a ready `nn.Module`: `OnnxToFxConverter(path).convert()` and `onnx2torch.convert(path)`. Each conversion "
        f"runs in a fresh process after the imports and a warm-up conversion of a tiny model; {runs} runs per tool, "
        "alternating, medians shown. **peak RSS** is the growth of the resident-memory high-water mark during the "
        "conversion (file pages of a memory-mapped model count). **ours / theirs** below 1 means onnx2fx is faster "
        "or smaller. Latency: one process holds both converted models and an onnxruntime session (CPU, default "
        f"optimizations; {thread_text}) and calls them round-robin on the same input; median of "
        f"up to {latency_runs} calls after two warm-up calls each (a model whose rounds pass the time budget stops "
        f"after at least {MIN_LATENCY_RUNS}; **rounds** says how many). **rel. err** is each converted model's "
        "largest relative error against onnxruntime's output, in percent.",
        "",
        "**floor s** is the weight-read floor (map the files, touch every page); **goal s** is twice the floor "
        f"plus {NODE_ALLOWANCE_S * 1000:g} ms per node, and **floor goal** says whether onnx2fx's time is within it; "
        f"**5x goal** whether onnx2fx is at least {SPEEDUP_GOAL}x faster than onnx2torch (– where onnx2torch fails). "
        "**fx floor s** is what torch.fx alone takes to build onnx2fx's GraphModule again from its graph (a node "
        "for every node, then the generated `forward` compiled), which any conversion to that GraphModule pays; "
        f"**misses (fx floor)** marks a model where that alone is more than a {SPEEDUP_GOAL}th of onnx2torch's time, "
        "so the 5x goal cannot be met by a conversion that returns a GraphModule.",
        "",
        "## Conversion",
        "",
        *_conversion_table([r for r in rows if not r.get("corpus")]),
    ]
    corpus = [r for r in rows if r.get("corpus")]
    if corpus:
        converted = sum(1 for r in corpus if r.get("onnx2torch_convert_s"))
        lines += ["", "## Conversion: real third-party files (`benchmarks/real_models_corpus`)", "",
                  f"onnx2torch converts {converted} of these {len(corpus)} files; **nodes** counts the top-level "
                  "graph only (an If's branches are not counted). Why it stops on the others, the last line of its "
                  "error:", "",
                  *[f"- {r['name']}: {_last_line(r['onnx2torch_error'])}" for r in corpus if r.get("onnx2torch_error")],
                  "", *_conversion_table(corpus)]
    lines += _phase_table(rows)
    rows = [r for r in rows if not r.get("corpus")]
    lines += ["", "## Inference latency (eager, CPU)", "",
              "| model | onnx2fx ms | onnx2torch ms | onnxruntime ms | onnx2fx / onnx2torch | rounds | "
              "onnx2fx rel. err % | onnx2torch rel. err % |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ours, theirs = r.get("onnx2fx_ms"), r.get("onnx2torch_ms")
        lines.append(
            f"| {r['name']} | {_f(ours)} | {_f(theirs) if theirs else 'failed'} | {_f(r.get('onnxruntime_ms'))} | "
            f"{_f(ours / theirs if ours and theirs else None, '{:.2f}')} | {r.get('latency_rounds', '–')} | "
            f"{_f(r.get('onnx2fx_rel_err_pct'), '{:.2e}')} | {_f(r.get('onnx2torch_rel_err_pct'), '{:.2e}')} |")
    failures = [f"- **{r['name']}**, {tool}: {r[f'{tool}_error']}" for r in rows for tool in TOOLS
                if r.get(f"{tool}_error")]
    failures += [f"- **{r['name']}**, latency run: {r['latency_error']}" for r in rows if r.get("latency_error")]
    if failures:
        lines += ["", "## Errors, as each tool raised them", "", *failures]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="", help="comma-separated zoo names (default: all)")
    parser.add_argument("--zoo-dir", type=Path, default=REPO / "build" / "zoo")
    parser.add_argument("--runs", type=int, default=3, help="conversions per tool and model")
    parser.add_argument("--latency-runs", type=int, default=10)
    parser.add_argument("--latency-budget", type=float, default=60,
                        help="seconds of latency rounds per model; heavy models stop early, after at least "
                        f"{MIN_LATENCY_RUNS} rounds")
    parser.add_argument("--threads", type=int, default=0,
                        help="intra-op threads for the latency runs, torch and onnxruntime alike (0: torch's default); "
                        "1 keeps the figures stable on a machine that runs other work")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per child process")
    parser.add_argument("--convert", nargs=2, metavar=("TOOL", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--corpus", nargs="?", const="all", default="",
                        help="also convert the real third-party files of benchmarks/real_models_corpus "
                        "(conversion and floor only): all of them, or the comma-separated keys given")
    parser.add_argument("--latency", nargs=2, metavar=("NAME", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--read-floor", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read_floor:
        emit(_read_floor(args.read_floor))
        return
    if args.convert:
        emit(_convert_once(args.convert[0], Path(args.convert[1])))
        return
    if args.latency:
        emit(_latency(args.latency[0], Path(args.latency[1]), args.latency_runs, args.threads, args.latency_budget))
        return

    try:
        names = select_models(args.models)
    except ValueError as exc:
        parser.error(str(exc))
    started = time.perf_counter()
    rows = []
    for index, name in enumerate(names, 1):
        print(f"[{index}/{len(names)}] {name}", flush=True)
        exported = run_child(["benchmarks.zoo_parity", "--export", name, "--zoo-dir", str(args.zoo_dir.resolve())],
                             args.timeout)
        if "error" in exported:
            rows.append({"name": name, "onnx2fx_error": f"export failed: {exported['error']}"})
            continue
        row = measure_model(name, Path(exported["paths"]["static"]), args.runs, args.latency_runs, args.threads,
                            args.latency_budget, args.timeout)
        rows.append(row)
        print(f"    onnx2fx {row['onnx2fx_convert_s']} s, onnx2torch {row['onnx2torch_convert_s']} s, "
              f"latency {row.get('onnx2fx_ms')} / {row.get('onnx2torch_ms')} / {row.get('onnxruntime_ms')} ms",
              flush=True)
    if args.corpus:
        rows += _corpus_rows(args.corpus, args.runs, args.threads, args.timeout)
    minutes = (time.perf_counter() - started) / 60
    from importlib.metadata import version

    env = environment() | {"onnx2torch": version("onnx2torch")}
    command = (f"python benchmarks/convert_speed.py --runs {args.runs} --latency-runs {args.latency_runs} "
               f"--latency-budget {args.latency_budget:g}")
    if args.threads:
        command += f" --threads {args.threads}"
    if args.models:
        command += f" --models {','.join(names)}"
    if args.corpus:
        command += " --corpus" + ("" if args.corpus == "all" else f" {args.corpus}")
    document = {"command": command, "environment": env, "minutes": round(minutes, 1), "models": rows}
    RESULTS.mkdir(exist_ok=True)
    text = render(rows, command, env, args.runs, args.latency_runs, args.threads, minutes)
    if args.models or args.corpus not in ("", "all"):
        (RESULTS / "convert_speed_subset.json").write_text(json.dumps(document, indent=2) + "\n")
        print(text)
        return
    (RESULTS / "convert_speed.json").write_text(json.dumps(document, indent=2) + "\n")
    DOC.write_text(text + kept_sections(DOC, KEPT_SECTIONS))  # the sections other scripts write stay
    print(f"wrote {DOC.relative_to(REPO)} and benchmarks/results/convert_speed.json")


if __name__ == "__main__":
    main()
