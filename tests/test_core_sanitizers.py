"""Builds the C++ unit tests of the native core with AddressSanitizer and UBSan and runs them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_cpp_unit_tests_under_sanitizers(tmp_path: Path):
    if shutil.which("cmake") is None or shutil.which("ctest") is None:
        pytest.skip("cmake is not installed")
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    build = tmp_path / "build"
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=1", "UBSAN_OPTIONS": "print_stacktrace=1"}

    def run(*command: str) -> None:
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"

    run(
        "cmake", "-S", str(ROOT), "-B", str(build), *generator,
        "-DCMAKE_BUILD_TYPE=Debug", "-DONNX2FX_BUILD_TESTS=ON", "-DONNX2FX_SANITIZE=ON",
    )  # fmt: skip
    run("cmake", "--build", str(build), "--parallel", "2")
    run("ctest", "--test-dir", str(build), "--output-on-failure")
