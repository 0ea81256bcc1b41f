"""Export zoo models to ONNX: ``python -m benchmarks.zoo.export -o build/zoo [--model NAME ...]``.

Every model is built with random weights under the registry's seed and exported by its own library's
exporter (see ``benchmarks/zoo/models``). A file whose manifest matches the current export code is
reused, so rerunning is cheap; ``--force`` re-exports. ``--dynamic`` also writes the dynamic-batch
variant (``<name>_dynamic.onnx``) of every model that has one.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from benchmarks.zoo.registry import export_model, load_all


def _stamp(path: Path) -> float | None:
    """Modification time of ``path``, or None; tells a fresh export from a reused file."""
    return path.stat().st_mtime if path.exists() else None


def _variant_path(out_dir: Path, name: str, dynamic: bool) -> Path:
    return out_dir / (f"{name}_dynamic.onnx" if dynamic else f"{name}.onnx")


def main(argv: list[str] | None = None) -> int:
    """Export the selected models and print one progress line per export, then a summary table."""
    zoo = load_all()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.zoo.export", description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=Path("build/zoo"), help="output folder")
    parser.add_argument(
        "--model",
        action="append",
        choices=sorted(zoo),
        metavar="NAME",
        help=f"model to export (repeatable; default: all): {', '.join(sorted(zoo))}",
    )
    parser.add_argument("--dynamic", action="store_true", help="also export the dynamic-batch variants")
    parser.add_argument("--force", action="store_true", help="re-export even when a matching file exists")
    args = parser.parse_args(argv)

    names = args.model or list(zoo)
    jobs = [(name, False) for name in names]
    if args.dynamic:
        jobs += [(name, True) for name in names if zoo[name].dynamic_batch]
    rows: list[tuple[str, str, str, str]] = []
    failed = 0
    for index, (name, dynamic) in enumerate(jobs, 1):
        label = f"{name}{' (dynamic batch)' if dynamic else ''}"
        print(f"[{index}/{len(jobs)}] {label} ...", end=" ", flush=True)
        before = _stamp(_variant_path(args.output, name, dynamic))
        start = time.perf_counter()
        try:
            path = export_model(name, args.output, dynamic_batch=dynamic, force=args.force)
        except Exception as exc:  # one library's failure must not stop the other exports
            seconds = time.perf_counter() - start
            print(f"failed after {seconds:.1f} s: {type(exc).__name__}: {exc}", flush=True)
            rows.append((label, "-", "-", "failed"))
            failed += 1
            continue
        seconds = time.perf_counter() - start
        reused = before is not None and _stamp(path) == before
        size = f"{path.stat().st_size / 2**20:.1f}"
        timing = "reused" if reused else f"{seconds:.1f}"
        print(f"{'reused' if reused else f'done in {seconds:.1f} s'} -> {path} ({size} MiB)", flush=True)
        rows.append((label, str(path), size, timing))

    header = ("model", "path", "MiB", "seconds")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    print()
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
