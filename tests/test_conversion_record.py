"""The conversion record: what a converted GraphModule carries about its ONNX model, through
torch.save / torch.load, copies, and model_full.pt files written before the record existed."""

from __future__ import annotations

import copy
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.fx
from support import convert_and_save

from onnx2fx.conversion_record import (
    RECORD_ATTRIBUTE,
    ConversionRecord,
    conversion_record,
    copy_converted,
    find_conversion_record,
)
from onnx2fx.errors import QuantizationError
from onnx2fx.quantization import ptq
from onnx2fx.validator import load_torch_model

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tiny_cnn.onnx"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("record")
    model = convert_and_save(EXAMPLE, root / "converted")
    calib = np.random.default_rng(0).normal(size=(16, 3, 32, 32)).astype(np.float32)
    return SimpleNamespace(root=root, model=model, calib=calib)


def _origins(gm: torch.fx.GraphModule) -> dict[str, dict[str, object]]:
    return {n.name: {k: v for k, v in n.meta.items() if k.startswith("onnx_")} for n in gm.graph.nodes
            if "onnx_node" in n.meta}


def test_record_survives_model_full_pt(tiny: SimpleNamespace) -> None:
    loaded = load_torch_model(tiny.model)
    record = conversion_record(loaded)
    assert record.source == str(EXAMPLE)
    assert record.parameters["stem_0.weight"].initializer == "onnx::Conv_35"
    assert record.parameters["head.weight"].transform is None
    # node.meta is rebuilt from the record's copy of the origins
    assert _origins(loaded) == record.node_origins and len(record.node_origins) > 5
    assert "onnx_source" not in vars(loaded) and "onnx_parameters" not in vars(loaded)


def test_copies_keep_their_own_record(tiny: SimpleNamespace) -> None:
    gm = load_torch_model(tiny.model)
    assert find_conversion_record(copy.deepcopy(gm)) is None  # a GraphModule's deepcopy drops attributes
    copied = copy_converted(gm)
    assert conversion_record(copied) == conversion_record(gm)
    conversion_record(copied).node_origins["extra"] = {}
    assert "extra" not in conversion_record(gm).node_origins


def test_a_module_without_record_is_a_quantization_error(tiny: SimpleNamespace) -> None:
    with pytest.raises(QuantizationError, match="carries no onnx2fx conversion record"):
        conversion_record(torch.nn.Linear(2, 2))
    assert find_conversion_record(torch.nn.Linear(2, 2)) is None
    with pytest.raises(QuantizationError, match="carries no onnx2fx conversion record"):
        ptq(copy.deepcopy(load_torch_model(tiny.model)), tiny.calib, onnx_path=EXAMPLE, progress=False)


def test_legacy_model_full_pt_loads_and_quantizes_the_same(tiny: SimpleNamespace) -> None:
    """model_full.pt files written before the record carry onnx_source, onnx_parameters and
    onnx_origins attributes: they load into a record and quantize exactly as a new file does."""
    gm = load_torch_model(tiny.model)
    record = conversion_record(gm)
    delattr(gm, RECORD_ATTRIBUTE)
    gm.onnx_source = record.source
    gm.onnx_parameters = {name: asdict(origin) for name, origin in record.parameters.items()}
    gm.onnx_origins = copy.deepcopy(record.node_origins)
    legacy = tiny.root / "legacy_model_full.pt"
    torch.save(gm, legacy)

    loaded = load_torch_model(legacy)
    assert conversion_record(loaded) == record
    assert _origins(loaded) == record.node_origins
    assert not {"onnx_source", "onnx_parameters", "onnx_origins"} & set(vars(loaded))

    old = ptq(legacy, tiny.calib, samples=16, progress=False)
    new = ptq(tiny.model, tiny.calib, samples=16, progress=False)
    assert old.activation_encodings.keys() == new.activation_encodings.keys()
    assert all(e.same_as(new.activation_encodings[t]) for t, e in old.activation_encodings.items())
    assert all(e.same_as(new.param_encodings[t]) for t, e in old.param_encodings.items())
    assert isinstance(find_conversion_record(old.sim_model), ConversionRecord)


def test_quantized_model_pickles_its_record(tiny: SimpleNamespace, tmp_path: Path) -> None:
    result = ptq(tiny.model, tiny.calib, samples=16, progress=False, output_dir=tmp_path / "q")
    sim = load_torch_model(tmp_path / "q" / "model_ptq.pt")
    record = conversion_record(sim)
    assert record == conversion_record(result.sim_model)
    quantizers = {name: origin["quantizes"] for name, origin in record.node_origins.items() if "quantizes" in origin}
    assert "image" in quantizers.values()
    assert all(n.meta["quantizes"] == quantizers[n.name] for n in sim.graph.nodes if n.name in quantizers)
    # the source float model is left without quantizer origins
    assert not any("quantizes" in origin for origin in conversion_record(load_torch_model(tiny.model))
                   .node_origins.values())
