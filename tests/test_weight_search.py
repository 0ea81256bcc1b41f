"""Weight range search: per-channel clipping that lowers the weight error, the ranges it picks on
hand-made tensors, the symmetric/asymmetric choice, and a QDQ file with searched encodings that
onnxruntime runs as the simulation does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from digits import train_digits, within_one_step

from onnx2fx.errors import QuantizationError
from onnx2fx.quantization import Encoding, QuantConfig, QuantGrid, ptq
from onnx2fx.quantization.qdq import ort_session
from onnx2fx.quantization.weight_search import (
    InputMoments,
    LayerInputs,
    channel_rows,
    quantization_errors,
    search_ranges,
    searched_encoding,
    weight_encoding,
)
from onnx2fx.validator import load_torch_model

pytestmark = pytest.mark.usefixtures("one_thread")


def weight_encodings(result: Any) -> dict[str, Encoding]:
    """The weight encodings of a PTQ result (its parameter encodings less the int32 biases)."""
    return {name: e for name, e in result.param_encodings.items() if e.grid.bits != 32}


def _minmax_error(rows: torch.Tensor, grid: QuantGrid, symmetric: bool) -> np.ndarray:
    lo = rows.amin(dim=1).clamp(max=0).double().numpy()
    hi = rows.amax(dim=1).clamp(min=0).double().numpy()
    return quantization_errors(rows, lo, hi, grid, symmetric).numpy()


def test_candidates_scored_together_match_one_at_a_time() -> None:
    """Ranges of shape (candidates, channels) give each candidate's errors, with input moments too,
    and a search whose candidates fall into several chunks picks the same ranges."""
    rng = np.random.default_rng(3)
    layer = torch.nn.Linear(12, 6)
    inputs = LayerInputs({"fc": layer})
    with inputs, torch.no_grad():
        layer(torch.from_numpy(np.maximum(rng.normal(loc=0.5, size=(64, 12)), 0).astype(np.float32)))
    rows = channel_rows(layer.weight, 0)
    grid = QuantGrid(4, False)
    lo = -rng.uniform(0.05, 0.3, size=(5, 6))
    hi = rng.uniform(0.05, 0.3, size=(5, 6))
    for moments in (None, inputs.moments["fc"]):
        together = quantization_errors(rows, lo, hi, grid, False, moments).numpy()
        alone = np.stack([quantization_errors(rows, lo[k], hi[k], grid, False, moments).numpy() for k in range(5)])
        assert together.shape == (5, 6) and np.allclose(together, alone, rtol=1e-6)
        whole = search_ranges(rows, grid, False, moments=moments)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("onnx2fx.quantization.weight_search.CANDIDATE_VALUES", rows.numel() * 2)
            chunked = search_ranges(rows, grid, False, moments=moments)
        assert all(np.array_equal(a, b) for a, b in zip(whole, chunked, strict=True))


def test_search_beats_minmax_on_channels_with_outliers() -> None:
    """Gaussian channels (576 weights, sigma 0.05) with one weight of 0.3 each: at 4 bits the search
    clips every outlier and halves the squared error of every channel; at 8 bits it lowers the error
    and never does worse than min/max in any channel."""
    rng = np.random.default_rng(0)
    w = rng.normal(scale=0.05, size=(16, 64, 3, 3)).astype(np.float32)
    w.reshape(16, -1)[:, 0] = 0.3 * np.where(np.arange(16) % 2 == 0, 1.0, -1.0)  # an outlier per channel
    rows = channel_rows(torch.from_numpy(w), 0)
    for bits, gain in ((4, 2.0), (8, 1.0)):
        grid = QuantGrid(bits, True)
        lo, hi, err = search_ranges(rows, grid, True)
        minmax = _minmax_error(rows, grid, True)
        assert np.all(err <= minmax) and err.sum() * gain < minmax.sum()
        assert np.allclose(err, quantization_errors(rows, lo, hi, grid, True).numpy())
        assert np.all(-lo == hi) and np.all(hi <= 0.3 + 1e-7)
        if bits == 4:
            assert np.all(err * 1.5 < minmax) and np.all(hi < 0.2)


def test_searched_ranges_of_a_hand_made_tensor() -> None:
    """Seventy weights of 0.1 and one of 1.4, at 4 bits.

    Symmetric (qmax 7): a step s in (1/15, 0.2) rounds 0.1 to one step and clips 1.4 to 7 s, so the
    error is 70 (s - 0.1)^2 + (1.4 - 7 s)^2, smallest at s = 33.6 / 238: the range is +-7 s = 0.98824
    (found to within the fine search step, 0.9 / 20 / 5 of the min/max range). Asymmetric (15 steps
    over [0, hi]): any clip makes the error grow, so the min/max range [0, 1.4] stays.
    A row already on its min/max grid (k / 7) keeps its range exactly, and a zero row stays zero.
    """
    row = torch.tensor([0.1] * 70 + [1.4])
    on_grid = torch.arange(-7, 8, dtype=torch.float32) / 7
    rows = torch.stack([row, torch.cat([on_grid, torch.zeros(56)]),
                        torch.zeros(71)])
    lo, hi, err = search_ranges(rows, QuantGrid(4, True), True)
    assert hi[0] == pytest.approx(7 * 33.6 / 238, abs=1.4 * 0.009) and lo[0] == -hi[0]
    assert (lo[1], hi[1]) == (-1.0, 1.0) and err[1] == pytest.approx(0.0, abs=1e-12)
    assert (lo[2], hi[2], err[2]) == (0.0, 0.0, 0.0)
    a_lo, a_hi, a_err = search_ranges(rows[:1], QuantGrid(4, False), False)
    assert (a_lo[0], a_hi[0]) == (0.0, pytest.approx(1.4))
    assert a_err[0] == pytest.approx(70 * (1.4 / 15 - 0.1) ** 2, rel=1e-4)
    # the symmetric optimum costs 70 (s - 0.1)^2 + (1.4 - 7 s)^2 at s = 33.6 / 238: 0.288
    assert err[0] == pytest.approx(0.288, abs=0.002)

    # weight_symmetry "search" takes the asymmetric grid for this tensor; "config" keeps symmetric
    chosen = searched_encoding(row.reshape(1, -1), 0, 0, 4, True, choose_symmetry=True)
    assert not chosen.symmetric and chosen.grid == QuantGrid(4, False) and chosen.zero_point.tolist() == [0]
    assert chosen.scale[0] == np.float32(1.4 / 15)
    kept = searched_encoding(row.reshape(1, -1), 0, 0, 4, True)
    assert kept.symmetric and kept.grid == QuantGrid(4, True)
    # a symmetric tensor keeps its symmetric grid even when the choice is allowed
    both = searched_encoding(on_grid.reshape(1, -1), 0, 0, 4, True, choose_symmetry=True)
    assert both.symmetric and both.scale[0] == np.float32(1 / 7)


def test_weight_scheme_follows_the_activation_scheme_and_is_checked() -> None:
    assert QuantConfig().resolved_weight_scheme == "minmax"
    assert QuantConfig(scheme="mse").resolved_weight_scheme == "mse"
    assert QuantConfig(scheme="mse", weight_scheme="minmax").resolved_weight_scheme == "minmax"
    assert QuantConfig(scheme="percentile", weight_scheme="mse").resolved_weight_scheme == "mse"
    with pytest.raises(QuantizationError, match=r"weight_symmetry 'maybe' is not one of \['config', 'search'\]"):
        QuantConfig.from_dict({"weight_symmetry": "maybe"})
    w = torch.tensor([[0.5, -1.0], [0.25, 0.0]])
    minmax = weight_encoding(w, 0, 0, 8, True, "minmax")
    assert np.array_equal(minmax.scale, np.array([1.0 / 127, 0.25 / 127], dtype=np.float32))
    with pytest.raises(ValueError, match="unknown weight scheme 'kl'"):
        weight_encoding(w, 0, 0, 8, True, "kl")


def test_qdq_with_searched_weight_encodings_matches_the_simulation(tmp_path: Path) -> None:
    """The digits CNN at W4A8 with the mse scheme (searched weights) and the asymmetric choice allowed:
    the weight encodings are clipped against min/max, the QDQ file stores them, and onnxruntime
    computes what the simulation computes."""
    digits = train_digits(tmp_path)
    out = tmp_path / "quantized"
    result = ptq(digits.model, digits.x_train[:200], output_dir=out, config=QuantConfig(weight_symmetry="search"),
                 scheme="mse", weight_bits=4, samples=200, batch_size=25, progress=False)
    assert result.report["qdq"]["within_one_step"] >= 0.999
    source = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(tmp_path / "digits.onnx")).graph.initializer}
    shrunk = 0
    for name, encoding in weight_encodings(result).items():
        weight = torch.from_numpy(source[name].copy())
        minmax = weight_encoding(weight, encoding.axis, encoding.axis, 4, encoding.symmetric, "minmax")
        assert np.all(encoding.scale <= minmax.scale)  # the search only ever clips
        shrunk += int((encoding.scale < minmax.scale).sum())
    assert shrunk > 0
    x = digits.x_test
    ort_out = ort_session(out / "model_ptq.onnx", optimized=False).run(None, {"image": x})[0]
    with torch.no_grad():
        sim_out = load_torch_model(out / "model_ptq.pt")(torch.from_numpy(x)).numpy()
    step = float(result.activation_encodings["logits"].scale[0])
    assert within_one_step(ort_out, sim_out, step) >= 0.999
    assert (ort_out.argmax(1) == digits.y_test).mean() > digits.float_acc - 0.03
    # the QDQ file stores the searched weight scales
    qdq = onnx.load(str(out / "model_ptq.onnx"))
    written = [onnx.numpy_helper.to_array(i).reshape(-1) for i in qdq.graph.initializer
               if i.data_type == onnx.TensorProto.FLOAT]
    for encoding in weight_encodings(result).values():
        assert any(v.size == encoding.scale.size and np.array_equal(v, encoding.scale) for v in written)


def test_input_moments_give_the_expected_output_error() -> None:
    """``e^T E[x x^T] e`` from the gathered moments is the mean squared output of the layer run with the
    weight error ``e`` as its weights: exactly for a Linear and an unfolded Conv2d (padding included);
    the per-channel approximation of wide layers keeps the variance and the mean of the error."""
    rng = np.random.default_rng(0)
    linear = torch.nn.Linear(6, 3)
    conv = torch.nn.Conv2d(2, 4, 3, padding=1)
    xs = [torch.from_numpy(rng.normal(loc=0.5, size=(5, 6)).astype(np.float32)) for _ in range(2)]
    images = [torch.from_numpy(rng.uniform(size=(3, 2, 6, 6)).astype(np.float32)) for _ in range(2)]
    inputs = LayerInputs({"fc": linear, "conv": conv, "grouped": torch.nn.Conv2d(2, 2, 1, groups=2)})
    assert sorted(inputs.moments) == ["conv", "fc", "grouped"]  # grouped convolutions too (one matrix per group)
    with inputs, torch.no_grad():
        for x, image in zip(xs, images, strict=True):
            linear(x)
            conv(image)
    linear(xs[0])  # hooks are gone after the block
    e = torch.from_numpy(rng.normal(size=(3, 6)))
    x = torch.cat(xs).double()
    assert np.allclose(inputs.moments["fc"].output_errors(e).numpy(), ((x @ e.T) ** 2).mean(dim=0).numpy())
    assert inputs.moments["fc"].count == 10
    e_conv = torch.from_numpy(rng.normal(size=(4, 2, 3, 3)))
    out = torch.nn.functional.conv2d(torch.cat(images).double(), e_conv, padding=1)
    expected = out.square().mean(dim=(0, 2, 3)).numpy()
    assert np.allclose(inputs.moments["conv"].output_errors(e_conv.reshape(4, -1)).numpy(), expected)
    assert inputs.moments["conv"].fits(e_conv.reshape(4, -1)) and not inputs.moments["conv"].fits(e)

    strided = InputMoments(conv)  # 3 x 36 patches per batch, at most 50 kept: every third one
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("onnx2fx.quantization.weight_search.MAX_PATCHES", 50)
        for image in images:
            strided.observe(image)
    assert strided.count == 2 * 36 and strided.matrix is not None

    wide = InputMoments(torch.nn.Linear(6, 3))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("onnx2fx.quantization.weight_search.FULL_MOMENTS", 4)
        for part in xs:
            wide.observe(part)
    assert wide.matrix is None
    mean, var = x.mean(dim=0), x.var(dim=0, unbiased=False)
    approx = (e.square() @ var) + (e @ mean).square()
    assert np.allclose(wide.output_errors(e).numpy(), approx.numpy())


def test_search_with_moments_lowers_the_output_error() -> None:
    """With inputs of large mean (a ReLU output), the range that minimises the output error differs from
    the one that minimises the weight error, and the search finds one at least as good for the output."""
    rng = np.random.default_rng(1)
    layer = torch.nn.Linear(32, 8)
    inputs = LayerInputs({"fc": layer})
    with inputs, torch.no_grad():
        layer(torch.from_numpy(np.maximum(rng.normal(loc=1.0, size=(256, 32)), 0).astype(np.float32)))
    moments = inputs.moments["fc"]
    rows = channel_rows(layer.weight, 0)
    grid = QuantGrid(4, True)
    lo, hi, out_err = search_ranges(rows, grid, True, moments=moments)
    w_lo, w_hi, _ = search_ranges(rows, grid, True)
    plain_out_err = quantization_errors(rows, w_lo, w_hi, grid, True, moments).numpy()
    assert np.all(out_err <= plain_out_err) and out_err.sum() < plain_out_err.sum()
    assert np.allclose(out_err, quantization_errors(rows, lo, hi, grid, True, moments).numpy())


def test_grouped_convolution_moments_score_each_row_on_its_group() -> None:
    """A depthwise convolution (2x2 kernels, one per channel) over one 2x2 image: each output channel
    sees one patch, its own channel's [1, 2, 3, 4] or [1, 0, 0, 1], so a kernel error e costs
    (e . patch)^2: [1, 0, 0, -1] costs (1 - 4)^2 = 9 on the first and [.5, .5, .5, .5] costs
    (.5 + .5)^2 = 1 on the second. With the per-channel approximation (patch too wide for a matrix)
    the first channel has mean 2.5 and variance 1.25, the second mean 0.5 and variance 0.25:
    2 x 1.25 + 0^2 = 2.5 and 4 x .25 x .25 + 1^2 = 1.25."""
    depthwise = torch.nn.Conv2d(2, 2, 2, groups=2, bias=False)
    image = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[1.0, 0.0], [0.0, 1.0]]]])
    errors = torch.tensor([[1.0, 0.0, 0.0, -1.0], [0.5, 0.5, 0.5, 0.5]], dtype=torch.float64)
    moments = InputMoments(depthwise)
    moments.observe(image)
    assert moments.matrix is not None and tuple(moments.matrix.shape) == (2, 4, 4) and moments.count == 1
    assert moments.fits(errors) and not moments.fits(errors[:, :3])
    assert moments.output_errors(errors).tolist() == [9.0, 1.0]
    wide = InputMoments(depthwise)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("onnx2fx.quantization.weight_search.FULL_MOMENTS", 2)
        wide.observe(image)
    assert wide.matrix is None and wide.fits(errors)
    # (the mean squares come from float32 norms: exact to float32 precision)
    assert wide.output_errors(errors).numpy() == pytest.approx([2.5, 1.25], rel=1e-6)
    # a grouped convolution with several channels per group: the moments of the group's channels
    rng = np.random.default_rng(2)
    grouped = torch.nn.Conv2d(4, 6, 3, padding=1, stride=2, groups=2)
    images = torch.from_numpy(rng.uniform(size=(3, 4, 7, 5)).astype(np.float32))
    inputs = LayerInputs({"grouped": grouped})
    with inputs, torch.no_grad():
        grouped(images)
    e = torch.from_numpy(rng.normal(size=(6, 2, 3, 3)))
    out = torch.nn.functional.conv2d(images.double(), e, padding=1, stride=2, groups=2)
    assert np.allclose(inputs.moments["grouped"].output_errors(e.reshape(6, -1)).numpy(),
                       out.square().mean(dim=(0, 2, 3)).numpy())


def test_search_with_depthwise_moments_lowers_the_output_error() -> None:
    """Depthwise 3x3 kernels over smooth images (neighbouring pixels equal up to small noise): the
    output sees the sum of a kernel's rounding errors, which the squared weight error does not, and
    the search on the layer's moments finds ranges that cost the output no more in any channel and
    less than three quarters as much in all (0.68 here)."""
    rng = np.random.default_rng(3)
    depthwise = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
    with torch.no_grad():
        depthwise.weight.copy_(torch.from_numpy(rng.normal(scale=0.2, size=(8, 1, 3, 3)).astype(np.float32)))
    inputs = LayerInputs({"dw": depthwise})
    smooth = 1.0 + 0.05 * rng.normal(size=(16, 8, 6, 6))
    with inputs, torch.no_grad():
        depthwise(torch.from_numpy(smooth.astype(np.float32)))
    moments = inputs.moments["dw"]
    rows = channel_rows(depthwise.weight, 0)
    grid = QuantGrid(4, True)
    _, _, out_err = search_ranges(rows, grid, True, moments=moments)
    w_lo, w_hi, _ = search_ranges(rows, grid, True)
    plain_out_err = quantization_errors(rows, w_lo, w_hi, grid, True, moments).numpy()
    assert np.all(out_err <= plain_out_err) and out_err.sum() < 0.75 * plain_out_err.sum()


def test_native_scores_round_as_torch_does() -> None:
    """The kernel's squared errors are torch's float32 rounding chain, value for value (ties to even,
    the clamp at both ends; in the 8-value vectors and in a row's scalar tail), and its sums agree
    with torch's on whole rows, for the squared error and for the diagonal-and-mean output error."""
    from onnx2fx import _core

    rng = np.random.default_rng(7)
    n = 50_000
    w = (rng.normal(size=n) * 0.05).astype(np.float32)
    w[:2000] = rng.integers(-300, 300, 2000).astype(np.float32) * np.float32(0.0005)  # exact halves of a step
    scale = (rng.uniform(0.0005, 0.003, size=n)).astype(np.float32)
    scale[:2000] = 0.001
    zero = rng.integers(0, 16, size=n).astype(np.float32)
    # one value per row, at every position of a row of two 8-value vectors and a scalar tail (zeros
    # elsewhere, exact on any grid that holds zero): each score is that value's squared error
    width = 19
    rows_of_one = np.zeros((n, width), dtype=np.float32)
    rows_of_one[np.arange(n), np.arange(n) % width] = w
    out = np.empty((1, n))
    _core.rounding_errors(rows_of_one, scale.reshape(1, n), zero.reshape(1, n), 0.0, 15.0, None, None, out)
    tw, ts, tz = (torch.from_numpy(a) for a in (w, scale, zero))
    diff = torch.div(tw, ts).round_().add_(tz).clamp_(0, 15).sub_(tz).mul_(ts).sub_(tw)
    assert np.array_equal(out[0], diff.square().double().numpy())

    rows = torch.from_numpy((rng.normal(size=(24, 300)) * 0.1).astype(np.float32))
    lo, hi = -rng.uniform(0.05, 0.3, size=(3, 24)), rng.uniform(0.05, 0.3, size=(3, 24))
    grid = QuantGrid(4, False)
    enc = Encoding.from_range(lo, hi, grid, False)
    s = torch.from_numpy(enc.scale.reshape(3, 24, 1))
    z = torch.from_numpy(enc.zero_point.astype(np.float32).reshape(3, 24, 1))
    e = torch.div(rows, s).round_().add_(z).clamp_(grid.qmin, grid.qmax).sub_(z).mul_(s).sub_(rows)
    # row sums: each lane sums 16 values in float before the double sum
    assert np.allclose(quantization_errors(rows, lo, hi, grid, False).numpy(),
                       e.square().sum(dim=-1, dtype=torch.float64).numpy(), rtol=1e-6)
    wide = InputMoments(torch.nn.Linear(300, 24))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("onnx2fx.quantization.weight_search.FULL_MOMENTS", 4)
        wide.observe(torch.from_numpy(np.maximum(rng.normal(loc=0.3, size=(64, 300)), 0).astype(np.float32)))
    mean, var = (torch.from_numpy(a).double() for a in wide.diagonal_terms())
    expected = (e.double().square() @ var[0]) + (e.double() @ mean[0]).square()
    assert np.allclose(quantization_errors(rows, lo, hi, grid, False, wide).numpy(), expected.numpy(), rtol=1e-5)
    # rows without weights have no error (the kernel takes whole, non-empty rows)
    assert quantization_errors(torch.zeros(24, 0), lo, hi, grid, False).numpy().tolist() == np.zeros((3, 24)).tolist()


def test_principal_proxy_keeps_the_diagonal_and_the_principal_direction() -> None:
    """The proxy of a full matrix ``M`` is ``diag(rest) + m m^T`` with ``m`` along ``M``'s principal
    eigenvector and ``rest + m^2 = diag(M)``: exact on a matrix of one direction, and every weight's own
    term (the diagonal) kept on any matrix."""
    rng = np.random.default_rng(5)
    direction = rng.uniform(0.5, 1.5, size=16)
    e = torch.from_numpy(rng.normal(size=(4, 16)))
    one_direction = np.outer(direction, direction)
    for matrix in (one_direction, np.diag(rng.uniform(0.01, 0.1, size=16)) + one_direction):
        moments = InputMoments(torch.nn.Linear(16, 4))
        moments.matrix, moments.count = torch.from_numpy(matrix * 10)[None], 10
        mean, var = (torch.from_numpy(a).double()[0] for a in moments.principal_proxy().diagonal_terms())
        assert np.allclose((var + mean.square()).numpy(), np.diag(matrix), rtol=1e-5)
        top = np.linalg.eigh(matrix)[1][:, -1]
        assert abs(float(mean.numpy() @ top)) == pytest.approx(float(np.linalg.norm(mean.numpy())), rel=1e-5)
    proxy_errors = (e.square() @ var) + (e @ mean).square()
    assert not np.allclose(proxy_errors.numpy(), moments.output_errors(e).numpy(), rtol=1e-4)  # an approximation
    moments.matrix = torch.from_numpy(one_direction * 10)[None]
    moments._cache = None
    mean, var = (torch.from_numpy(a).double()[0] for a in moments.principal_proxy().diagonal_terms())
    assert np.allclose(((e.square() @ var) + (e @ mean).square()).numpy(), moments.output_errors(e).numpy(),
                       rtol=1e-4)


def test_finalists_are_each_rows_best_distinct_ranges_after_min_max() -> None:
    """Per row: min/max first, then the best ranges by score with a range scored twice taken once, and
    the best again where a row has fewer distinct ranges than EXACT_FINALISTS."""
    from onnx2fx.quantization.weight_search import EXACT_FINALISTS, _finalists

    assert EXACT_FINALISTS == 4
    minmax = (np.array([[-1.0, -2.0]]), np.array([[1.0, 2.0]]), np.array([[9.0, 9.0]]))
    # two candidates per chunk, two chunks; row 0 sees the range (-0.5, 0.5) twice with the same score
    first = (np.array([[-0.5, -1.0], [-0.8, -1.0]]), np.array([[0.5, 1.0], [0.8, 1.0]]),
             np.array([[1.0, 5.0], [3.0, 5.0]]))
    second = (np.array([[-0.5, -1.0], [-0.6, -1.0]]), np.array([[0.5, 1.0], [0.6, 1.0]]),
              np.array([[1.0, 5.0], [2.0, 5.0]]))
    lo, hi = _finalists([minmax, first, second])
    # row 0: min/max, then (-0.5, 0.5) once, (-0.6, 0.6), (-0.8, 0.8), (-1, 1) (min/max's own score, 9)
    assert lo[:, 0].tolist() == [-1.0, -0.5, -0.6, -0.8, -1.0]
    assert hi[:, 0].tolist() == [1.0, 0.5, 0.6, 0.8, 1.0]
    # row 1: one distinct range besides min/max, (-1, 1) scored four times: the best, then min/max's
    # (-2, 2), then the best again in the places left
    assert lo[:, 1].tolist() == [-2.0, -1.0, -2.0, -1.0, -1.0]
    assert hi[:, 1].tolist() == [2.0, 1.0, 2.0, 1.0, 1.0]


def test_two_stage_search_on_a_wide_layer_scores_its_pick_exactly() -> None:
    """A full matrix over a patch of TWO_STAGE_WIDTH or more is searched on the proxy, then its finalists
    exactly: the result is never worse than min/max on the exact score, its errors are the exact ones,
    and it is within a few per cent of the search run on the exact score throughout."""
    import onnx2fx.quantization.weight_search as weight_search

    rng = np.random.default_rng(2)
    layer = torch.nn.Linear(weight_search.TWO_STAGE_WIDTH, 16)
    inputs = LayerInputs({"fc": layer})
    with inputs, torch.no_grad():
        x = np.maximum(rng.normal(loc=0.5, size=(512, layer.in_features)), 0)
        x[:, 1::2] = x[:, ::2] * 0.8 + 0.2 * x[:, 1::2]  # neighbouring inputs move together
        layer(torch.from_numpy(x.astype(np.float32)))
    moments = inputs.moments["fc"]
    assert moments.matrix is not None
    rows = channel_rows(layer.weight, 0)
    for grid, symmetric in ((QuantGrid(4, True), True), (QuantGrid(4, False), False)):
        lo, hi, err = search_ranges(rows, grid, symmetric, moments=moments)
        assert np.allclose(err, quantization_errors(rows, lo, hi, grid, symmetric, moments).numpy())
        minmax = rows.abs().amax(dim=1).double().numpy()
        minmax_lo, minmax_hi = (-minmax, minmax) if symmetric else (
            rows.amin(dim=1).clamp(max=0).double().numpy(), rows.amax(dim=1).clamp(min=0).double().numpy())
        assert np.all(err <= quantization_errors(rows, minmax_lo, minmax_hi, grid, symmetric, moments).numpy())
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(weight_search, "TWO_STAGE_WIDTH", 1 << 30)
            _, _, exact_err = search_ranges(rows, grid, symmetric, moments=moments)
        assert err.sum() <= 1.03 * exact_err.sum()
