"""Measurement plumbing shared by the zoo scripts: peak resident memory and isolated child runs.

Each measurement runs in a fresh Python process so that one model's memory high-water mark, a
crash, or a hang never leaks into another's numbers. The child prints one line starting with
``RESULT_MARKER`` followed by JSON; everything else it prints is kept as a log tail for errors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RESULT_MARKER = "ZOO-RESULT "


def proc_status(field: str) -> int:
    """A ``/proc/self/status`` memory field in bytes (VmRSS, VmHWM, RssAnon, RssFile)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak_rss() -> int:
    """Reset the VmHWM high-water mark and return the current RSS, the baseline for a peak."""
    with open("/proc/self/clear_refs", "w") as refs:  # "5" resets VmHWM to the current RSS
        refs.write("5")
    return proc_status("VmRSS")


class PeakMemory:
    """``with PeakMemory() as peak: ...`` then ``peak.growth``: bytes the high-water mark rose."""

    def __enter__(self) -> PeakMemory:
        self.base = reset_peak_rss()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
        self.growth = proc_status("VmHWM") - self.base


def emit(result: dict[str, Any]) -> None:
    print(RESULT_MARKER + json.dumps(result), flush=True)


def run_child(args: list[str], timeout: float, threads: int | None = None) -> dict[str, Any]:
    """Run ``python -m <args>`` from the repository root and return its result (or the failure)."""
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", str(REPO))
    env["HF_HUB_OFFLINE"] = "1"
    env["YOLO_OFFLINE"] = "1"
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "wall_s": round(time.perf_counter() - start, 1)}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER):])
    tail = (done.stderr or done.stdout).strip().splitlines()[-6:]
    reason = f"exit code {done.returncode}" if done.returncode >= 0 else f"killed by signal {-done.returncode}"
    return {"error": f"{reason}: " + " | ".join(tail)[-600:]}
