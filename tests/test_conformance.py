"""ONNX backend conformance (benchmarks/conformance.py): a fast subset, one or two cases per op
family, run in this process; and the full suite (slow: ``python -m pytest -m slow``)."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import conformance  # noqa: E402

# (onnx test module, case): chosen to touch every lowering family and the mechanisms behind them
# (run-time shapes, unsigned and sub-byte types, function bodies, unrolled and generated loops).
SUBSET = [
    ("add", "test_add"), ("add", "test_add_uint32"), ("relu", "test_relu"),
    ("cast", "test_cast_FLOAT_to_FLOAT8E4M3FN"), ("cast", "test_cast_FLOAT_to_INT4"),
    ("bitcast", "test_bitcast_float32_to_int32"),
    ("reshape", "test_reshape_extended_dims"), ("slice", "test_slice"), ("expand", "test_expand_dim_changed"),
    ("tile", "test_tile"), ("pad", "test_constant_pad"),
    ("reducesum", "test_reduce_sum_keepdims_example"), ("reducemax", "test_reduce_max_empty_set"),
    ("conv", "test_conv_with_strides_padding"), ("convtranspose", "test_convtranspose"),
    ("averagepool", "test_averagepool_2d_dilations"), ("maxpool", "test_maxpool_with_argmax_2d_precomputed_pads"),
    ("lppool", "test_lppool_2d_dilations"),
    ("einsum", "test_einsum_batch_matmul"), ("bitshift", "test_bitshift_left_uint16"),
    ("cumsum", "test_cumsum_1d_exclusive"), ("trilu", "test_triu"),
    ("scatternd", "test_scatternd_add"), ("gathernd", "test_gathernd_example_int32_batch_dim1"),
    ("topk", "test_top_k_same_values"), ("nonzero", "test_nonzero_example"), ("unique", "test_unique_sorted_with_axis"),
    ("nonmaxsuppression", "test_nonmaxsuppression_two_batches"),
    ("groupnormalization", "test_group_normalization_example"), ("rmsnormalization", "test_rms_normalization_2d_axis0"),
    ("lrn", "test_lrn"), ("meanvariancenormalization", "test_mvn"),
    ("lstm", "test_lstm_with_peepholes"), ("gru", "test_gru_defaults"),
    ("if_", "test_if"), ("loop", "test_loop11"), ("scan", "test_scan9_sum"),
    ("rangeop", "test_range_float_type_positive_delta_expanded"),
    ("sequenceinsert", "test_sequence_insert_at_back"), ("sequence_map", "test_sequence_map_add_2_sequences"),
    ("splittosequence", "test_split_to_sequence_1"),
    ("optionalhaselement", "test_optional_has_element_empty_optional_input"),
    ("quantizelinear", "test_quantizelinear_int4"), ("dequantizelinear", "test_dequantizelinear_axis"),
    ("qlinearmatmul", "test_qlinearmatmul_2D_uint8_float32"),
    ("resize", "test_resize_downsample_scales_cubic_antialias"), ("gridsample", "test_gridsample_bilinear"),
    ("roialign", "test_roialign_aligned_true"), ("col2im", "test_col2im_5d"), ("affinegrid", "test_affine_grid_2d"),
    ("deformconv", "test_deform_conv_with_mask_bias"),
    ("dft", "test_dft_rfft"), ("stft", "test_stft"),
    ("tfidfvectorizer", "test_tfidfvectorizer_tf_batch_uniandbigrams_skip5"),
    ("softmax_cross_entropy_loss", "test_sce_mean_weight"), ("attention", "test_attention_4d_with_past_and_present"),
    ("linear_attention", "test_linear_attention_gated_delta"), ("rotaryembedding", "test_rotary_embedding"),
]


@pytest.fixture(scope="module")
def subset_cases() -> dict[str, conformance.Case]:
    cases, _ = conformance.node_cases(sorted({module for module, _ in SUBSET}))
    return {c.name: c for c in cases}


@pytest.mark.parametrize("name", [name for _, name in SUBSET])
def test_case_passes(subset_cases: dict[str, conformance.Case], name: str) -> None:
    result = conformance.run_case(subset_cases[name])
    assert result.status == "passed", f"{result.stage}: {result.reason}"


def test_model_folder_case() -> None:
    cases = {c.name: c for c in conformance.model_cases(("pytorch-converted", "simple"))}
    for name in ("test_PReLU_1d_multiparam", "test_sequence_model1", "test_expand_shape_model1"):
        result = conformance.run_case(cases[name])
        assert result.status == "passed", f"{name}: {result.stage}: {result.reason}"


def test_exclusions_have_reasons() -> None:
    assert conformance.exclusion_reason("test_string_concat") is not None
    assert conformance.exclusion_reason("test_cast_FLOAT_to_FLOAT4E2M1") is not None
    assert conformance.exclusion_reason("test_add") is None
    assert all(len(reason) > 40 for _, reason in conformance.EXCLUSIONS)


def test_worker_pool_replaces_a_worker_past_its_timeout() -> None:
    """A case over its time limit is recorded as failed and its worker replaced; the next case runs."""
    import numpy as np
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    data = [([np.array([-1.0, 2.0], np.float32)], [np.array([0.0, 2.0], np.float32)])]
    slow = conformance.Case("test_slow", "node", "Relu", model, data, timeout=1e-4)
    good = conformance.Case("test_good", "node", "Relu", model, data)
    results = conformance.run_cases([slow, good], jobs=1, timeout=60, progress=False)
    assert (results[0].status, results[0].stage) == ("failed", "timeout")
    assert results[1].status == "passed"


@pytest.mark.slow
def test_full_conformance_suite(tmp_path: Path) -> None:
    """Every node test case and model folder: the coverage recorded in docs/conformance.md holds."""
    out = tmp_path / "conformance.json"
    assert conformance.main(["--output-json", str(out), "--output-md", str(tmp_path / "c.md")]) == 0
    record = json.loads(out.read_text())
    totals = record["totals"]
    assert totals["coverage_percent"] >= 95.0, totals
    by_stage: dict[str, list[str]] = defaultdict(list)
    for case in record["cases"]:
        by_stage[case["stage"]].append(case["name"])
    assert not by_stage.get("timeout") and not by_stage.get("crash"), dict(by_stage)
