"""A short run of each libFuzzer target in cpp/fuzz/ (build with clang, seed corpus, dictionary):
any crash, sanitizer report, leak or timeout fails the test. ``ONNX2FX_FUZZ_SECONDS`` sets the
seconds per target (default 20); docs/security.md has the long run's figures and command."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECONDS = int(os.environ.get("ONNX2FX_FUZZ_SECONDS", "20"))


def _clang_with_libfuzzer() -> str | None:
    """A clang++ of version 16 or newer (older ones cannot compile libstdc++ 12's ranges)."""
    for name in ("clang++-19", "clang++-18", "clang++-17", "clang++-16", "clang++"):
        path = shutil.which(name)
        if path is None:
            continue
        version = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
        match = re.search(r"clang version (\d+)", version)
        if match and int(match.group(1)) >= 16:
            return path
    return None


def test_fuzz_targets_run_without_crashes(tmp_path: Path):
    clang = _clang_with_libfuzzer()
    if clang is None:
        pytest.skip("clang >= 16 with libFuzzer is not installed (apt-get install clang-19 libclang-rt-19-dev)")
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    env = {**os.environ, "CLANGXX": clang, "TMPDIR": str(tmp_path)}
    result = subprocess.run(["bash", "cpp/fuzz/run_fuzzers.sh", str(SECONDS), str(tmp_path / "build")],
                            cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    runs = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+): (\d+) executions in", result.stdout, re.M)}
    assert set(runs) == {"reader", "external_data", "qdq_writer"}, result.stdout
    assert all(count > 0 for count in runs.values()), result.stdout
