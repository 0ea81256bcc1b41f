"""Calibration cost against the float forwards: ``ptq()``'s calibration pass plus its range search,
over the float forward passes of the converted model on the same batches (goal: at most 2x).

    python benchmarks/calibration_overhead.py [--resolution 224] [--samples 32,256] [--batch-size 16]
                                              [--runs 3] [--configs minmax,percentile,mse,percentile+search]
                                              [--markdown PATH] [--json PATH]

The model is quant_compare.py's ResNet-50 (random weights, seeded), fed seeded standard-normal images.
In each run and for each configuration, ``ptq()`` calibrates on batches that time the float forward of
the converted GraphModule on each batch right before ``ptq()`` receives it; the calibration forward is
the time until ``ptq()`` asks for the next batch (every activation observer on, the per-layer input
statistics the weight search weighs its errors with, the data checks). Pairing batch by batch keeps both
under the same machine load. The range search is the time ``ptq()`` reports for choosing every encoding
from the statistics once the pass is over (``calibration.range_search_seconds``: histogram searches for
activations, per-channel grid searches for weights). The ratio is (pass + search) / float forwards, per
run; medians over runs are shown, for each calibration set size. Writes its section of
``docs/quantization.md`` (between its markers; quant_compare.py keeps it) and
``benchmarks/results/calibration_overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quant_compare  # noqa: E402  (the ResNet-50 builder, the converter call, the machine line)
from doc_sections import markers, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
GOAL_RATIO = 2.0

# configuration name -> ptq() keywords: the calibration schemes, and the plain configuration of
# quant_compare_aimet.py that searches weight grids (per channel, symmetric or not) as well
CONFIGS: dict[str, dict[str, Any]] = {
    "minmax": {"scheme": "minmax"},
    "percentile": {"scheme": "percentile"},
    "mse": {"scheme": "mse"},
    "percentile+search": {"scheme": "percentile", "config": {"weight_scheme": "mse", "weight_symmetry": "search"}},
}


class PairedBatches:
    """Calibration batches that time, right before handing each batch to ``ptq()``, the float model's
    forward on that batch; the time until ``ptq()`` asks for the next batch is its calibration forward."""

    def __init__(self, gm: nn.Module, batches: list[torch.Tensor]) -> None:
        self.gm, self.batches = gm, batches
        self.float_seconds: list[float] = []
        self.calibration_seconds: list[float] = []

    def __iter__(self) -> Any:
        for x in self.batches:
            started = time.perf_counter()
            with torch.no_grad():
                self.gm(x)
            self.float_seconds.append(time.perf_counter() - started)
            handed = time.perf_counter()
            yield x
            self.calibration_seconds.append(time.perf_counter() - handed)


def summarize(runs: list[dict[str, dict[str, float]]], configs: list[str]) -> dict[str, Any]:
    """Per configuration: the medians over runs of the float forwards, the pass and the range search,
    the per-run ratios (pass + search) / float, and whether their median is within the goal."""
    by_config: dict[str, Any] = {}
    for name in configs:
        rows = [r[name] for r in runs]
        ratios = [(r["pass"] + r["search"]) / r["float"] for r in rows]
        by_config[name] = {
            **{f"{key}_seconds_median": round(statistics.median(r[key] for r in rows), 3)
               for key in ("float", "pass", "search")},
            "ratio_median": round(statistics.median(ratios), 3), "ratios": [round(x, 3) for x in ratios],
            "goal_holds": statistics.median(ratios) <= GOAL_RATIO}
    return by_config


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from onnx2fx.quantization import ptq
    from onnx2fx.validator import load_torch_model

    settings = argparse.Namespace(seed=args.seed, resolution=args.resolution, batch_size=args.batch_size,
                                  calib_samples=1, eval_samples=1)
    model_path = quant_compare.convert(quant_compare.build_resnet50(work, settings), work)
    gm = load_torch_model(model_path)
    results = []
    for samples in args.samples:
        data = np.random.default_rng(args.seed + 2).standard_normal(
            (samples, 3, args.resolution, args.resolution), dtype=np.float32)
        batches = [torch.from_numpy(data[i:i + args.batch_size]) for i in range(0, samples, args.batch_size)]
        with torch.no_grad():
            gm(batches[0])  # warm-up
        runs: list[dict[str, dict[str, float]]] = []
        for run in range(args.runs):
            timings: dict[str, dict[str, float]] = {}
            for name in args.configs:
                paired = PairedBatches(gm, batches)
                # one sample more than there is, so that ptq() asks for (and times) the end of the data
                report = ptq(model_path, paired, samples=samples + 1, batch_size=args.batch_size, eval_samples=1,
                             progress=False, **CONFIGS[name]).report
                calibration = report["calibration"]
                if calibration["samples"] != samples or len(paired.calibration_seconds) != len(batches):
                    raise RuntimeError(f"the calibration pass saw {calibration['samples']} samples")
                timings[name] = {"float": sum(paired.float_seconds), "pass": sum(paired.calibration_seconds),
                                 "search": float(calibration["range_search_seconds"])}
            runs.append(timings)
            print(f"{samples} samples, run {run + 1}: " + ", ".join(
                f"{k} pass {v['pass']:.2f} s + search {v['search']:.2f} s / float {v['float']:.2f} s"
                for k, v in timings.items()), flush=True)
        results.append({"samples": samples, "by_config": summarize(runs, args.configs),
                        "per_run": [{k: {t: round(x, 3) for t, x in v.items()} for k, v in r.items()} for r in runs]})
    return {"model": "resnet50", "resolution": args.resolution, "batch_size": args.batch_size, "runs": args.runs,
            "by_samples": results}


def markdown(doc: dict[str, Any]) -> str:
    begin, end = markers("calibration_overhead")
    r = doc["result"]
    counts = " and ".join(str(x["samples"]) for x in r["by_samples"])
    lines = [begin, "", f"## Calibration overhead (goal: pass + range search <= {GOAL_RATIO:g}x the float forwards)",
             "", f"Generated by `{doc['command']}` on {doc['machine']}. "
             f"The run took {doc['seconds'] / 60:.1f} minutes.", "",
             f"ResNet-50 at {r['resolution']}x{r['resolution']} (random weights), {counts} seeded random samples in "
             f"batches of {r['batch_size']}, {r['runs']} runs. In each run and for each configuration, `ptq()` "
             "calibrates on the batches while the float forward of the converted GraphModule on each batch is timed "
             "right before `ptq()` receives it; the **pass** is the time until `ptq()` asks for the next batch (the "
             "forwards with every activation observer on, the per-layer input statistics a weight search weighs its "
             "errors with, the data checks). The **range search** is what `ptq()` reports as "
             "`calibration.range_search_seconds`: choosing every activation and weight encoding from the "
             "statistics after the pass. The ratio is (pass + range search) / float forwards per run; medians over "
             "runs are shown. `percentile+search` is the plain configuration of the AIMET comparison that searches "
             "weight grids per channel (`weight_scheme='mse'`, `weight_symmetry='search'`). The range search does "
             "not depend on the number of samples: it is a fixed cost that a small calibration set pays in full.", "",
             "| samples | configuration | float forwards s | calibration pass s | range search s | ratio "
             "| ratios per run | goal |",
             "|---|---|---|---|---|---|---|---|"]
    for entry in r["by_samples"]:
        for name, v in entry["by_config"].items():
            lines.append(f"| {entry['samples']} | {name} | {v['float_seconds_median']:.2f} | "
                         f"{v['pass_seconds_median']:.2f} | {v['search_seconds_median']:.2f} | "
                         f"{v['ratio_median']:.2f}x | {', '.join(f'{x:.2f}' for x in v['ratios'])} | "
                         f"{'holds' if v['goal_holds'] else '**does not hold**'} |")
    lines += ["", end]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--samples", default="32,256",
                        help="calibration set sizes, comma-separated (each is measured; default 32,256)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"a comma-separated subset of {list(CONFIGS)}")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", type=Path, default=ROOT / "docs" / "quantization.md",
                        help="the Markdown file whose section this is (default docs/quantization.md)")
    parser.add_argument("--json", type=Path, default=RESULTS / "calibration_overhead.json")
    args = parser.parse_args()
    args.configs = [c for c in args.configs.split(",") if c]
    unknown = sorted(set(args.configs) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; choose from {list(CONFIGS)}")
    try:
        args.samples = [int(x) for x in args.samples.split(",") if x]
    except ValueError:
        parser.error(f"--samples takes comma-separated whole numbers, got {args.samples!r}")
    if not args.samples or min(args.samples) < args.batch_size:
        parser.error("every --samples count must be at least --batch-size")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="calibration_overhead.") as folder:
        result = measure(args, Path(folder))
    m = quant_compare.machine(args.threads)
    doc = {"command": ("python benchmarks/calibration_overhead.py " + shlex.join(sys.argv[1:])).strip(),
           "machine": f"{m.get('processor', 'this machine')}, {args.threads} torch threads, torch {torch.__version__}",
           "seconds": round(time.perf_counter() - started, 1), "result": result}
    section = markdown(doc)
    print(section)
    write_section(args.markdown, "calibration_overhead", section)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
