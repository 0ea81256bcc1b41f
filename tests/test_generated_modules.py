"""A saved model_full.pt whose graph uses generated helpers and generated branch modules loads with
a plain ``torch.load`` in a fresh process (where the generated module does not exist yet) and
computes what onnxruntime computes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from support import ort_run
from test_runtime_if import _conv_if_model

from onnx2fx import OnnxToFxConverter


def test_model_full_with_branch_modules_loads_in_a_fresh_process(tmp_path: Path) -> None:
    model = _conv_if_model()
    source = tmp_path / "if.onnx"
    onnx.save(model, source)
    converter = OnnxToFxConverter(source)
    converter.convert()
    converter.save(tmp_path / "out")
    code = (tmp_path / "out" / "model.py").read_text()
    assert "class _then_branch_layer" in code  # the case this is about: classes of the generated module
    rng = np.random.default_rng(3)
    cases = [(rng.standard_normal((2, 3, 20)).astype(np.float32), rate) for rate in (16000, 8000)]
    script = (
        "import json, sys, numpy as np, torch\n"
        f"model = torch.load({str(tmp_path / 'out' / 'model_full.pt')!r}, weights_only=False)\n"
        "out = []\n"
        f"for x, rate in {[(x.tolist(), r) for x, r in cases]!r}:\n"
        "    with torch.no_grad():\n"
        "        out.append(model(torch.tensor(x), torch.tensor(rate)).tolist())\n"
        "print(json.dumps(out))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    produced = json.loads(done.stdout.strip().splitlines()[-1])
    for (x, rate), got in zip(cases, produced):
        (expected,) = ort_run(model, {"x": x, "rate": np.array(rate, np.int64)})
        np.testing.assert_allclose(np.array(got, np.float32), expected, rtol=1e-5, atol=1e-6)
