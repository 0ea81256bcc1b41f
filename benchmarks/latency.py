"""Inference latency of the converted model against the original PyTorch module and onnxruntime.

For each zoo model (``benchmarks/zoo``; exported first if missing), one process holds four
callables and runs them on the model's seeded input (batch 1):

- **original**: the PyTorch module the ONNX file was exported from, rebuilt by the zoo's own export
  code under the registry's seed (``benchmarks.zoo.originals``), so it has the file's weights; its
  output is checked against onnxruntime's;
- **eager**: ``OnnxToFxConverter(path).convert()``, the converted module as it runs by default;
- **compiled**: ``torch.compile`` of that module (default inductor backend, which compiles C++ for
  the CPU with the system compiler); the first call, which compiles, is timed separately;
- **onnxruntime**: an ``InferenceSession`` on the CPU provider with its default graph
  optimizations.

Everything runs single-threaded (``torch.set_num_threads(1)``, onnxruntime's intra- and inter-op
thread pools of 1, inductor compiling in one worker), because the machine is shared: the four are
called round-robin (the order rotating each round) so that load from elsewhere hits all alike,
after warm-up calls that are not counted, until ``--runs`` rounds or ``--budget`` seconds, with at
least three rounds. Medians are reported with the ratios eager / original and compiled /
onnxruntime, and the goals: the converted model's eager latency within 5 % of the original's, and
the compiled model at or below onnxruntime's. Usage::

    python benchmarks/latency.py [--models mnist,resnet50] [--runs 20] [--budget 60] [--no-compile]

The default models are the small and medium ones (``DEFAULT_MODELS``); ``--models`` names others.
A run over the defaults writes ``benchmarks/results/latency.json`` and its section of
``docs/benchmarks.md`` (between the ``latency`` markers; ``convert_speed.py`` keeps it when it
rewrites the file); any other selection writes ``benchmarks/results/latency_subset.json`` and
prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.doc_sections import markers, write_section  # noqa: E402
from benchmarks.zoo.measure import emit, run_child  # noqa: E402
from benchmarks.zoo.registry import select_models  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
DOC = REPO / "docs" / "benchmarks.md"
SECTION = "latency"
DEFAULT_MODELS = ("mnist", "resnet50", "convnext_tiny", "efficientvit", "yolov8n", "yolo11n", "x3d_m")
VARIANTS = ("original", "eager", "compiled", "onnxruntime")
WARM_UP_CALLS = 3  # inductor's first call compiles; the next ones settle its caches
MIN_ROUNDS = 3
EAGER_TOLERANCE = 0.05  # goal: converted eager latency within 5 % of the original module's
AGREEMENT_PERCENT = 1e-2  # outputs that differ by more than this (relative, %) are not the same model

# Why a model misses a goal, from reading its generated model.py against the original module and
# from the measurements above; rendered under the table so that the generated section says why.
FINDINGS: dict[str, str] = {}


# ------------------------------------------------------------------------------------ child side
def _flat_tensors(value: Any) -> list[Any]:
    """The tensors of a module's output, in order, whatever nesting of tuples, lists and dicts holds them."""
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _flat_tensors(item)]
    return []


def _relative_error_percent(got: list[Any], reference: list[Any]) -> float:
    """``max|got - ref| / max|ref|`` over all floating outputs, in percent (inf when shapes differ)."""
    import numpy as np

    if len(got) != len(reference):
        return float("inf")
    worst = 0.0
    for value, ref in zip(got, reference):
        value = value.detach().numpy() if hasattr(value, "detach") else np.asarray(value)
        if value.shape != ref.shape:
            return float("inf")
        if ref.size and np.issubdtype(ref.dtype, np.floating):
            scale = float(np.abs(ref).max()) or 1.0
            worst = max(worst, float(np.abs(value.astype(np.float64) - ref).max()) / scale * 100)
    return worst


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:400]


def _measure(name: str, path: Path, runs: int, budget: float, compile_model: bool,
             freezing: bool = False) -> dict[str, Any]:
    """The child's work for one model: build the four callables, check their outputs, time them."""
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    import onnxruntime as ort
    import torch
    import torch._inductor.config

    torch._inductor.config.freezing = freezing

    from benchmarks.zoo.originals import build_original
    from benchmarks.zoo.registry import load_all
    from onnx2fx import OnnxToFxConverter

    torch.set_num_threads(1)
    inputs = load_all()[name].inputs(1)
    tensors = tuple(torch.from_numpy(value) for value in inputs.values())
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    reference = session.run(None, inputs)

    result: dict[str, Any] = {"name": name}
    calls: dict[str, Callable[[], Any]] = {"onnxruntime": lambda: session.run(None, inputs)}
    with torch.no_grad():
        try:
            original, _ = build_original(name)
            result["original_rel_err_pct"] = _relative_error_percent(_flat_tensors(original(*tensors)), reference)
            calls["original"] = lambda: original(*tensors)
        except Exception as exc:  # a library that cannot rebuild its model leaves the other three
            result["original_error"] = _error_text(exc)
        converted = OnnxToFxConverter(path).convert().eval()
        result["eager_rel_err_pct"] = _relative_error_percent(_flat_tensors(converted(*tensors)), reference)
        calls["eager"] = lambda: converted(*tensors)
        if compile_model:
            try:
                compiled = torch.compile(converted)
                start = time.perf_counter()
                output = compiled(*tensors)
                result["compile_s"] = round(time.perf_counter() - start, 1)
                result["compiled_rel_err_pct"] = _relative_error_percent(_flat_tensors(output), reference)
                calls["compiled"] = lambda: compiled(*tensors)
            except Exception as exc:  # recorded: the table says why there is no compiled figure
                result["compiled_error"] = _error_text(exc)

        order = [variant for variant in VARIANTS if variant in calls]
        for _ in range(WARM_UP_CALLS):
            for variant in order:
                calls[variant]()
        times: dict[str, list[float]] = {variant: [] for variant in order}
        began = time.perf_counter()
        for round_index in range(runs):
            shift = round_index % len(order)
            for variant in order[shift:] + order[:shift]:
                start = time.perf_counter()
                calls[variant]()
                times[variant].append(time.perf_counter() - start)
            if round_index + 1 >= MIN_ROUNDS and time.perf_counter() - began > budget:
                break
    for variant, samples in times.items():
        result[f"{variant}_ms"] = round(statistics.median(samples) * 1000, 3)
        result[f"{variant}_min_ms"] = round(min(samples) * 1000, 3)
    result["rounds"] = len(times["onnxruntime"])
    result["load_average"] = round(os.getloadavg()[0], 1)  # other work on the machine while this ran
    return result


# ----------------------------------------------------------------------------------- parent side
def judge(row: dict[str, Any]) -> dict[str, Any]:
    """Add the ratios and the two goals to a measured row (None where a figure is missing)."""
    for suffix in ("ms", "min_ms"):  # medians judge the goals; the fastest calls show the unloaded ratio
        key = "" if suffix == "ms" else "_min"
        original, eager = row.get(f"original_{suffix}"), row.get(f"eager_{suffix}")
        compiled, ort_ms = row.get(f"compiled_{suffix}"), row.get(f"onnxruntime_{suffix}")
        row[f"eager_over_original{key}"] = round(eager / original, 3) if eager and original else None
        row[f"compiled_over_onnxruntime{key}"] = round(compiled / ort_ms, 3) if compiled and ort_ms else None
    row["eager_goal_holds"] = (None if row["eager_over_original"] is None
                               else row["eager_over_original"] <= 1 + EAGER_TOLERANCE)
    row["compiled_goal_holds"] = (None if row["compiled_over_onnxruntime"] is None
                                  else row["compiled_over_onnxruntime"] <= 1)
    agreement = row.get("original_rel_err_pct")
    row["original_matches_onnx"] = None if agreement is None else agreement <= AGREEMENT_PERCENT
    return row


def _f(value: Any, fmt: str = "{:.2f}") -> str:
    return "–" if value is None else fmt.format(value)


def _goal(value: bool | None) -> str:
    return "–" if value is None else "holds" if value else "misses"


def render_section(rows: list[dict[str, Any]], command: str, env: dict[str, str], runs: int, budget: float,
                   minutes: float, freezing: bool = False) -> str:
    """The ``latency`` section of docs/benchmarks.md, between its markers."""
    begin, end = markers(SECTION)
    compile_text = "with inductor's freezing (weights folded in and pre-packed)" if freezing else \
        "default inductor backend, C++ for the CPU"
    lines = [
        begin,
        "## Inference latency: original PyTorch model, converted (eager and compiled), onnxruntime",
        "",
        f"Generated by `{command}` on {env['machine']}, shared with other work; {env['versions']}. "
        f"The run took {minutes:.1f} minutes. Do not edit by hand: rerun the command.",
        "",
        "One process per model holds the module the ONNX file was exported from (**original**: rebuilt by the "
        "zoo's export code under the same seed, so with the file's weights), the converted module "
        f"(`OnnxToFxConverter(path).convert()`, **eager**), `torch.compile` of it ({compile_text}; "
        "**compile s** is its first call) and an onnxruntime session (CPU provider, default graph "
        "optimizations). All run single-threaded (torch and onnxruntime intra- and inter-op), round-robin on "
        f"the same seeded batch-1 input with the order rotating each round, after {WARM_UP_CALLS} uncounted "
        f"warm-up calls each; medians of up to {runs} rounds, fewer (at least {MIN_ROUNDS}) where the rounds "
        f"pass {budget:g} s. The goals are judged on the medians: **eager goal**, eager within "
        f"{EAGER_TOLERANCE:.0%} of the original (faster counts as holding); **compiled goal**, compiled at or "
        "below onnxruntime. **fastest** is the same ratio of the fastest calls, which other work on the machine "
        "disturbs least; **load** is the 1-minute load average when the model's rounds ended (2 CPUs). **errors** "
        "are the largest relative differences of the original, eager and compiled outputs from onnxruntime's, "
        "in percent.",
        "",
        "| model | original ms | eager ms | eager / original | fastest | eager goal | compiled ms | onnxruntime ms | "
        "compiled / onnxruntime | fastest | compiled goal | compile s | rounds | load | errors % |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for r in rows:
        errors = " / ".join(_f(r.get(f"{variant}_rel_err_pct"), "{:.0e}") for variant in ("original", "eager",
                                                                                         "compiled"))
        lines.append(
            f"| {r['name']} | {_f(r.get('original_ms'))} | {_f(r.get('eager_ms'))} | "
            f"{_f(r.get('eager_over_original'))} | {_f(r.get('eager_over_original_min'))} | "
            f"{_goal(r.get('eager_goal_holds'))} | {_f(r.get('compiled_ms'))} | {_f(r.get('onnxruntime_ms'))} | "
            f"{_f(r.get('compiled_over_onnxruntime'))} | {_f(r.get('compiled_over_onnxruntime_min'))} | "
            f"{_goal(r.get('compiled_goal_holds'))} | {_f(r.get('compile_s'), '{:.0f}')} | "
            f"{r.get('rounds', '–')} | {_f(r.get('load_average'), '{:.1f}')} | {errors} |")
    errors = [f"- **{r['name']}**, {what}: {r[f'{what}_error']}" for r in rows
              for what in ("original", "compiled", "run") if r.get(f"{what}_error")]
    if errors:
        lines += ["", "Errors, as raised:", "", *errors]
    notes = [f"- {text}" for key, text in FINDINGS.items() if key == "*" or any(r["name"] == key for r in rows)]
    if notes:
        lines += ["", "Why the figures are what they are (from the generated `model.py` files, the original "
                  "modules and the checks named):", "", *notes]
    lines.append(end)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated zoo names")
    parser.add_argument("--zoo-dir", type=Path, default=REPO / "build" / "zoo")
    parser.add_argument("--runs", type=int, default=20, help="most timed rounds per model")
    parser.add_argument("--budget", type=float, default=60,
                        help=f"seconds of timed rounds per model; a slow model stops after at least {MIN_ROUNDS}")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="leave out torch.compile")
    parser.add_argument("--freezing", action="store_true",
                        help="compile with inductor's freezing (weights folded in as constants and pre-packed)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per model's process")
    parser.add_argument("--child", nargs=2, metavar=("NAME", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        emit(_measure(args.child[0], Path(args.child[1]), args.runs, args.budget, args.compile, args.freezing))
        return

    try:
        names = select_models(args.models)
    except ValueError as exc:
        parser.error(str(exc))
    started = time.perf_counter()
    rows = []
    for index, name in enumerate(names, 1):
        print(f"[{index}/{len(names)}] {name}", flush=True)
        path = args.zoo_dir.resolve() / f"{name}.onnx"
        if not path.exists():  # an existing file is used as it is: the original's output check catches a stale one
            exported = run_child(["benchmarks.zoo_parity", "--export", name, "--zoo-dir", str(path.parent)],
                                 args.timeout)
            if "error" in exported:
                rows.append({"name": name, "run_error": f"export failed: {exported['error']}"})
                continue
        child = ["benchmarks.latency", "--child", name, str(path), "--runs", str(args.runs),
                 "--budget", str(args.budget)] + ([] if args.compile else ["--no-compile"]) \
            + (["--freezing"] if args.freezing else [])
        measured = run_child(child, args.timeout, threads=1)
        row = judge({"name": name, "run_error": measured["error"]} if "error" in measured else measured)
        rows.append(row)
        print(f"    original {row.get('original_ms')} ms, eager {row.get('eager_ms')} ms, compiled "
              f"{row.get('compiled_ms')} ms, onnxruntime {row.get('onnxruntime_ms')} ms", flush=True)
    minutes = (time.perf_counter() - started) / 60

    from benchmarks.zoo_parity import environment

    env = environment()
    command = f"python benchmarks/latency.py --runs {args.runs} --budget {args.budget:g}"
    if not args.compile:
        command += " --no-compile"
    if args.freezing:
        command += " --freezing"
    if tuple(names) != DEFAULT_MODELS:
        command += f" --models {','.join(names)}"
    document = {"command": command, "environment": env, "minutes": round(minutes, 1), "models": rows}
    section = render_section(rows, command, env, args.runs, args.budget, minutes, args.freezing)
    RESULTS.mkdir(exist_ok=True)
    if tuple(names) != DEFAULT_MODELS:
        (RESULTS / "latency_subset.json").write_text(json.dumps(document, indent=2) + "\n")
        print(section)
        return
    (RESULTS / "latency.json").write_text(json.dumps(document, indent=2) + "\n")
    write_section(DOC, SECTION, section)
    print(f"wrote benchmarks/results/latency.json and the {SECTION} section of {DOC.relative_to(REPO)}")


if __name__ == "__main__":
    main()
