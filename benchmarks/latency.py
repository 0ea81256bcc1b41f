"""Inference latency of the converted model against the original PyTorch module and onnxruntime.

For each zoo model (``benchmarks/zoo``; exported first if missing), one process holds six
callables and runs them on the model's seeded input (batch 1):

- **original**: the PyTorch module the ONNX file was exported from, rebuilt by the zoo's own export
  code under the registry's seed (``benchmarks.zoo.originals``), so it has the file's weights; its
  output is checked against onnxruntime's;
- **eager**: ``OnnxToFxConverter(path).convert()``, the converted module as it runs by default;
- **compiled**: ``torch.compile`` of that module (default inductor backend, which compiles C++ for
  the CPU with the system compiler); the first call, which compiles, is timed separately;
- **frozen**: ``torch.compile`` of a second conversion with inductor's ``freezing`` on, its setting
  for inference: weights become constants, folded and pre-packed for oneDNN's convolutions, which
  then take the following activation as a fused post-op;
- **onnxruntime**: an ``InferenceSession`` on the CPU provider with its default graph
  optimizations (``ORT_ENABLE_ALL``); a second session at ``ORT_ENABLE_EXTENDED`` (the same fusions
  without the layout level, which rewrites 2-D convolutions into MLAS's blocked NCHWc kernels)
  shows how much of onnxruntime's lead that layout is.

Everything runs single-threaded (``torch.set_num_threads(1)``, onnxruntime's intra- and inter-op
thread pools of 1, inductor compiling in one worker), because the machine is shared: all six are
called round-robin (the order rotating each round) so that load from elsewhere hits all alike,
after warm-up calls that are not counted, until ``--runs`` rounds or ``--budget`` seconds, with at
least three rounds. Medians (and the fastest calls) are reported with the ratios eager / original
and compiled / onnxruntime, and the goals: the converted model's eager latency within 5 % of the
original's, and the faster of compiled and frozen at or below onnxruntime's. Usage::

    python benchmarks/latency.py [--models mnist,resnet50] [--runs 20] [--budget 60] [--no-compile]
    python benchmarks/latency.py --render    # rewrite the section from the stored JSON, measuring nothing

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
from functools import partial
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
VARIANTS = ("original", "eager", "compiled", "frozen", "onnxruntime", "onnxruntime_extended")
COMPILED = ("compiled", "frozen")  # torch.compile with inductor's defaults, and with freezing on
WARM_UP_CALLS = 3  # inductor's first call compiles; the next ones settle its caches
MIN_ROUNDS = 3
EAGER_TOLERANCE = 0.05  # goal: converted eager latency within 5 % of the original module's
AGREEMENT_PERCENT = 1e-2  # outputs that differ by more than this (relative, %) are not the same model

# Why the figures are what they are, from reading each generated model.py against the original module
# and from the checks named; rendered under the table (key: a model's name, "compiled" where the run
# compiled, "*" always).
FINDINGS: dict[str, str] = {
    "*": "**Eager.** The generated `forward` of these models adds no work to the original's: no "
         "`.contiguous()`, cast, `clone` or run-time shape arithmetic; its reshapes and permutes are the "
         "model's own (MNIST's flatten, ConvNeXt's channels-last permutes around each LayerNorm, EfficientViT's "
         "attention reshapes, the YOLO heads' reshapes); GELU, SiLU and HardSwish are one call each; BatchNorm "
         "arrives folded into the convolutions by the exporters. That folding, and the absence of Dropout and "
         "wrapper modules, is why the converted model is often faster than the original. Ratios near 1 move by "
         "several per cent from run to run with the machine's load; **fastest** is the steadier figure. "
         "torch.compile finds one graph without a graph break in every model (`torch._dynamo.explain`).",
    "convnext_tiny": "**ConvNeXt-Tiny, MatMul + Add.** Its 36 pointwise layers run as `nn.Linear(bias=False)` then "
                     "`+ bias`, because the `linear` idiom is opt-in (architecture.md says why: `F.linear` rounds "
                     "differently, which moved RT-DETR's TopK). That is no extra work: the original's `addmm` "
                     "makes the same elementwise pass the other way round, copying the bias into the output before "
                     "the product. In torch.profiler over three calls the matrix products take the same time "
                     "(`mm` 460 ms, `addmm` 463 ms) and so do the bias passes (the converted module's extra `add` "
                     "27 ms, the original's `copy_` 27 ms); fusing with `idioms={*DEFAULT_IDIOMS, \"linear\"}` was "
                     "no measurably faster in a round-robin check. On this zoo file the idiom finds only 4 "
                     "of the 36: the exporter deduplicated the identical (all-zero, random-initialised) biases "
                     "behind `Identity` nodes, and the matcher takes a bias only as an initializer itself.",
}


def _names(rows: list[dict[str, Any]], holds: Callable[[dict[str, Any]], bool]) -> str:
    return ", ".join(r["name"] for r in rows if holds(r)) or "none"


def _compiled_note(rows: list[dict[str, Any]]) -> str:
    """Why the compiled model is where it is against onnxruntime: the mechanisms, and which rows show them."""
    def best(r: dict[str, Any]) -> float | None:
        times = [r[f"{variant}_ms"] for variant in COMPILED if r.get(f"{variant}_ms")]
        return min(times) if times else None

    frozen_helps = _names(rows, lambda r: bool(r.get("frozen_ms") and r.get("compiled_ms")
                                               and r["frozen_ms"] < 0.9 * r["compiled_ms"]))
    layout_lead = _names(rows, lambda r: bool(best(r) and r.get("onnxruntime_extended_ms")
                                              and r["onnxruntime_extended_ms"] >= best(r) > r["onnxruntime_ms"]))
    return (
        "**Compiled against onnxruntime.** With inductor's defaults the convolutions, most of these models' time, "
        "stay aten's oneDNN calls in NCHW with the weights reordered on every call, and only the elementwise work "
        "between them is fused. Freezing pre-packs the weights once and fuses the activation into the "
        f"convolution; it is more than 10 % faster than the defaults for: {frozen_helps}. onnxruntime's lead "
        "comes from its layout level (MLAS's blocked NCHWc kernels for the 2-D convolutions, with activations "
        "and residual adds fused in): onnxruntime is ahead of the better compiled module with that level and no "
        f"faster than it without (ORT extended) for: {layout_lead}. inductor has no such layout pass for CPU "
        "convolutions; channels-last weights and inputs were no faster than NCHW (both frozen) in a check on "
        "ResNet-50. X3D-M's "
        "convolutions are 3-D, which NCHWc does not cover. MNIST takes half a millisecond, where fixed per-call "
        "costs weigh most; freezing's pre-packed path is slower than the defaults there.")


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


def _in_place_of_examples(example_args: tuple[Any, ...], tensors: tuple[Any, ...]) -> tuple[Any, ...]:
    """The export's example arguments with their tensors replaced, in order, by the seeded inputs.

    The ONNX inputs are the export's tensors flattened, so this keeps whatever structure the module
    takes (torchvision's detection models take a list of images, exported as one image input).
    """
    import torch
    from torch.utils._pytree import tree_flatten, tree_unflatten

    leaves, spec = tree_flatten(example_args)
    slots = [index for index, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor)]
    if len(slots) != len(tensors):
        raise ValueError(f"the export took {len(slots)} tensors, the ONNX file has {len(tensors)} inputs")
    for index, tensor in zip(slots, tensors):
        leaves[index] = tensor
    return tuple(tree_unflatten(leaves, spec))


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:400]


def _measure(name: str, path: Path, runs: int, budget: float, compile_model: bool) -> dict[str, Any]:
    """The child's work for one model: build the callables, check their outputs, time them."""
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    import onnxruntime as ort
    import torch
    import torch._inductor.config

    from benchmarks.zoo.originals import build_original
    from benchmarks.zoo.registry import load_all
    from onnx2fx import OnnxToFxConverter

    torch.set_num_threads(1)
    inputs = load_all()[name].inputs(1)
    tensors = tuple(torch.from_numpy(value) for value in inputs.values())
    sessions = {}
    for variant, level in (("onnxruntime", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
                           ("onnxruntime_extended", ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.graph_optimization_level = level
        sessions[variant] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    reference = sessions["onnxruntime"].run(None, inputs)

    result: dict[str, Any] = {"name": name}
    calls: dict[str, Callable[[], Any]] = {variant: partial(session.run, None, inputs)
                                           for variant, session in sessions.items()}
    with torch.no_grad():
        try:
            original, example_args = build_original(name)
            original_args = _in_place_of_examples(example_args, tensors)
            result["original_rel_err_pct"] = _relative_error_percent(_flat_tensors(original(*original_args)),
                                                                     reference)
            calls["original"] = lambda: original(*original_args)
        except Exception as exc:  # a library that cannot rebuild its model leaves the other three
            result["original_error"] = _error_text(exc)
        converted = OnnxToFxConverter(path).convert().eval()
        result["eager_rel_err_pct"] = _relative_error_percent(_flat_tensors(converted(*tensors)), reference)
        calls["eager"] = lambda: converted(*tensors)
        for variant in COMPILED if compile_model else ():
            try:
                # Each compiles its own conversion: freezing turns the module's weights into constants of
                # the compiled graph. The setting is read when the first call compiles, hence the patch.
                module = converted if variant == "compiled" else OnnxToFxConverter(path).convert().eval()
                with torch._inductor.config.patch(freezing=variant == "frozen"):
                    compiled = torch.compile(module)
                    start = time.perf_counter()
                    output = compiled(*tensors)
                result[f"{variant}_compile_s"] = round(time.perf_counter() - start, 1)
                result[f"{variant}_rel_err_pct"] = _relative_error_percent(_flat_tensors(output), reference)
                calls[variant] = partial(compiled, *tensors)
            except Exception as exc:  # recorded: the table says why there is no compiled figure
                result[f"{variant}_error"] = _error_text(exc)

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
        ort_ms = row.get(f"onnxruntime_{suffix}")
        row[f"eager_over_original{key}"] = round(eager / original, 3) if eager and original else None
        for variant in COMPILED:
            compiled = row.get(f"{variant}_{suffix}")
            row[f"{variant}_over_onnxruntime{key}"] = round(compiled / ort_ms, 3) if compiled and ort_ms else None
    row["eager_goal_holds"] = (None if row["eager_over_original"] is None
                               else row["eager_over_original"] <= 1 + EAGER_TOLERANCE)
    # A user compiles with whichever inductor setting is faster for the model, so the goal takes the better one.
    for key in ("", "_min"):
        ratios = [row[f"{variant}_over_onnxruntime{key}"] for variant in COMPILED
                  if row.get(f"{variant}_over_onnxruntime{key}") is not None]
        row[f"best_compiled_over_onnxruntime{key}"] = min(ratios) if ratios else None
    row["compiled_goal_holds"] = (None if row["best_compiled_over_onnxruntime"] is None
                                  else row["best_compiled_over_onnxruntime"] <= 1)
    agreement = row.get("original_rel_err_pct")
    row["original_matches_onnx"] = None if agreement is None else agreement <= AGREEMENT_PERCENT
    return row


def _f(value: Any, fmt: str = "{:.2f}") -> str:
    return "–" if value is None else fmt.format(value)


def _goal(value: bool | None) -> str:
    return "–" if value is None else "holds" if value else "misses"


def render_section(rows: list[dict[str, Any]], command: str, env: dict[str, str], runs: int, budget: float,
                   minutes: float) -> str:
    """The ``latency`` section of docs/benchmarks.md, between its markers."""
    begin, end = markers(SECTION)
    lines = [
        begin,
        "## Inference latency: original PyTorch model, converted (eager and compiled), onnxruntime",
        "",
        f"Generated by `{command}` on {env['machine']}, shared with other work; {env['versions']}. "
        f"The run took {minutes:.1f} minutes. Do not edit by hand: rerun the command.",
        "",
        "One process per model holds the module the ONNX file was exported from (**original**: rebuilt by the "
        "zoo's export code under the same seed, so with the file's weights), the converted module "
        "(`OnnxToFxConverter(path).convert()`, **eager**), `torch.compile` of it with inductor's defaults "
        "(**compiled**: C++ for the CPU) and with inductor's `freezing` on (**frozen**: weights become "
        "constants, pre-packed for oneDNN's convolutions with the activation fused), and onnxruntime sessions "
        "(CPU provider) at its default `ORT_ENABLE_ALL` and, as **ORT extended ms**, at `ORT_ENABLE_EXTENDED`: "
        "the same fusions without the layout level that rewrites 2-D convolutions into MLAS's blocked NCHWc "
        "kernels with pre-packed weights. All run single-threaded (torch, and onnxruntime's intra- and "
        "inter-op pools), round-robin on the same seeded batch-1 input with the order rotating each round, "
        f"after {WARM_UP_CALLS} uncounted warm-up calls each; medians of up to {runs} rounds, fewer (at least "
        f"{MIN_ROUNDS}) where the rounds pass {budget:g} s. **compile s** is the first call of the compiled and "
        "frozen modules. The goals are judged on the medians: **eager goal**, eager within "
        f"{EAGER_TOLERANCE:.0%} of the original (faster counts as holding); **compiled goal**, the faster of "
        "compiled and frozen at or below onnxruntime. **fastest** is the ratio of the fastest calls (for the "
        "compiled goal, of the faster compiled module), which other work on the machine disturbs least; "
        "**load** is the 1-minute load average when the model's rounds ended (2 CPUs). **errors** are the "
        "largest relative differences of the original, eager, compiled and frozen outputs from onnxruntime's, "
        "in percent.",
        "",
        "| model | original ms | eager ms | eager / original | fastest | eager goal | compiled ms | frozen ms | "
        "onnxruntime ms | compiled / onnxruntime | frozen / onnxruntime | fastest | compiled goal | "
        "ORT extended ms | compile s | rounds | load | errors % |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        errors = " / ".join(_f(r.get(f"{variant}_rel_err_pct"), "{:.0e}") for variant in ("original", "eager",
                                                                                         *COMPILED))
        compile_s = " / ".join(_f(r.get(f"{variant}_compile_s"), "{:.0f}") for variant in COMPILED)
        lines.append(
            f"| {r['name']} | {_f(r.get('original_ms'))} | {_f(r.get('eager_ms'))} | "
            f"{_f(r.get('eager_over_original'))} | {_f(r.get('eager_over_original_min'))} | "
            f"{_goal(r.get('eager_goal_holds'))} | {_f(r.get('compiled_ms'))} | {_f(r.get('frozen_ms'))} | "
            f"{_f(r.get('onnxruntime_ms'))} | {_f(r.get('compiled_over_onnxruntime'))} | "
            f"{_f(r.get('frozen_over_onnxruntime'))} | {_f(r.get('best_compiled_over_onnxruntime_min'))} | "
            f"{_goal(r.get('compiled_goal_holds'))} | {_f(r.get('onnxruntime_extended_ms'))} | {compile_s} | "
            f"{r.get('rounds', '–')} | {_f(r.get('load_average'), '{:.1f}')} | {errors} |")
    errors = [f"- **{r['name']}**, {what}: {r[f'{what}_error']}" for r in rows
              for what in ("original", *COMPILED, "run") if r.get(f"{what}_error")]
    if errors:
        lines += ["", "Errors, as raised:", "", *errors]
    notes = [f"- {text}" for key, text in FINDINGS.items() if key == "*" or any(r["name"] == key for r in rows)]
    if any(r.get("compiled_goal_holds") is not None for r in rows):
        notes.append(f"- {_compiled_note(rows)}")
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
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per model's process")
    parser.add_argument("--render", action="store_true",
                        help="measure nothing: rewrite the section of docs/benchmarks.md from "
                        "benchmarks/results/latency.json (after a change to the text or the goals)")
    parser.add_argument("--child", nargs=2, metavar=("NAME", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        emit(_measure(args.child[0], Path(args.child[1]), args.runs, args.budget, args.compile))
        return
    if args.render:
        stored = json.loads((RESULTS / "latency.json").read_text())
        rows = [judge(row) for row in stored["models"]]
        write_section(DOC, SECTION, render_section(rows, stored["command"], stored["environment"], stored["runs"],
                                                   stored["budget"], stored["minutes"]))
        print(f"rewrote the {SECTION} section of {DOC.relative_to(REPO)} from benchmarks/results/latency.json")
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
                 "--budget", str(args.budget)] + ([] if args.compile else ["--no-compile"])
        measured = run_child(child, args.timeout, threads=1)
        row = judge({"name": name, "run_error": measured["error"]} if "error" in measured else measured)
        rows.append(row)
        print(f"    original {row.get('original_ms')} ms, eager {row.get('eager_ms')} ms, compiled "
              f"{row.get('compiled_ms')} ms, frozen {row.get('frozen_ms')} ms, onnxruntime "
              f"{row.get('onnxruntime_ms')} ms", flush=True)
    minutes = (time.perf_counter() - started) / 60

    from benchmarks.zoo_parity import environment

    env = environment()
    command = f"python benchmarks/latency.py --runs {args.runs} --budget {args.budget:g}"
    if not args.compile:
        command += " --no-compile"
    if tuple(names) != DEFAULT_MODELS:
        command += f" --models {','.join(names)}"
    document = {"command": command, "environment": env, "minutes": round(minutes, 1), "runs": args.runs,
                "budget": args.budget, "models": rows}
    section = render_section(rows, command, env, args.runs, args.budget, minutes)
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
