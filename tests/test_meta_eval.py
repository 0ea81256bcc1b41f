"""Shape-only evaluation on meta tensors where every size is static, checked against FakeTensors."""

from __future__ import annotations

import gc

import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

from onnx2fx.codegen import fake_eval
from onnx2fx.codegen.fake_eval import as_fakes, evaluate_on_fakes, evaluate_on_meta, meta_like
from onnx2fx.codegen.shape_env import ConversionShapeEnv
from onnx2fx.fx_tracer import OriginMap, OriginTracer
from onnx2fx.gc_pause import collector_paused


def _fake_mode() -> FakeTensorMode:
    return FakeTensorMode(shape_env=ConversionShapeEnv(), allow_non_fake_inputs=True)


def _signature(result: object) -> list[tuple[tuple[int, ...], tuple[int, ...], torch.dtype]]:
    leaves = result if isinstance(result, (list, tuple)) else [result]
    return [(tuple(t.shape), tuple(t.stride()), t.dtype) for t in leaves]


CASES = [
    ("conv", lambda x, w: F.conv2d(x, w, stride=2, padding=1), [(2, 3, 17, 23), (8, 3, 3, 3)]),
    ("layer_norm", lambda x, w: F.layer_norm(x, (7,), w), [(2, 5, 7), (7,)]),
    ("gelu", lambda x: F.gelu(x, approximate="tanh"), [(4, 9)]),
    ("broadcast_add", lambda a, b: a + b, [(3, 1, 5), (4, 1)]),
    ("cat", lambda a, b: torch.cat([a, b], 1), [(2, 3, 4), (2, 5, 4)]),
    ("permute_reshape", lambda x: x.permute(0, 2, 1).reshape(2, -1), [(2, 3, 4)]),
    ("interpolate", lambda x: F.interpolate(x, scale_factor=2.0, mode="nearest"), [(1, 2, 5, 7)]),
    ("topk", lambda x: torch.topk(x, 3, dim=1), [(2, 10)]),
]


@pytest.mark.parametrize(("name", "fn", "shapes"), CASES, ids=[c[0] for c in CASES])
def test_meta_results_equal_fake_results(name: str, fn, shapes: list[tuple[int, ...]]) -> None:
    mode = _fake_mode()
    with mode:
        fakes = [torch.empty(s) for s in shapes]
    done, on_meta = evaluate_on_meta(fn, [meta_like(f) for f in fakes], {})
    assert done
    with mode:
        on_fakes = fn(*fakes)
    assert _signature(on_meta) == _signature(on_fakes)
    assert all(t.device.type == "meta" for t in (on_meta if isinstance(on_meta, tuple) else [on_meta]))


def test_data_dependent_results_are_left_to_fake_tensors() -> None:
    mode = _fake_mode()
    x = torch.empty(4, 5, device="meta")
    assert evaluate_on_meta(torch.nonzero, [x], {}) == (False, None)
    result = evaluate_on_fakes(mode, torch.nonzero, [x], {})  # an unbacked size for the count
    assert result.shape[1] == 2 and isinstance(result.shape[0], torch.SymInt)


def test_a_call_that_makes_real_tensors_is_left_to_fake_tensors() -> None:
    assert evaluate_on_meta(lambda x: x + torch.arange(5), [torch.empty(5, device="meta")], {}) == (False, None)
    assert evaluate_on_meta(torch.zeros, [3], {}) == (False, None)  # no tensor argument at all


def test_cached_results_are_fresh_tensors_and_closures_are_not_cached() -> None:
    fake_eval._META_RESULTS.clear()
    x = torch.empty(2, 6, device="meta")
    _, first = evaluate_on_meta(torch.relu, [x], {})
    _, second = evaluate_on_meta(torch.relu, [torch.empty(2, 6, device="meta")], {})
    assert second is not first and _signature(second) == _signature(first)
    assert len(fake_eval._META_RESULTS) == 1
    evaluate_on_meta(lambda t: t * 2, [x], {})
    scale = 3
    evaluate_on_meta(lambda t: t * scale, [x], {})
    assert len(fake_eval._META_RESULTS) == 1
    # sizes and dtype are part of the key
    _, other = evaluate_on_meta(torch.relu, [torch.empty(3, 6, dtype=torch.float16, device="meta")], {})
    assert _signature(other) == [((3, 6), (6, 1), torch.float16)]


@pytest.mark.parametrize(("shape", "dtype"), [((4, 6), torch.float32), ((2, 3, 6), torch.float32),
                                             ((6,), torch.float32), ((5, 6), torch.float16)])
def test_a_linear_layer_written_out_matches_its_meta_run(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    with torch.device("meta"):
        layer = torch.nn.Linear(6, 3, dtype=dtype)
    x = torch.empty(shape, dtype=dtype, device="meta")
    assert _signature(fake_eval.linear_on_meta(layer, x)) == _signature(layer(x))
    assert fake_eval.linear_on_meta(layer, torch.empty(4, 5, device="meta")) is None  # torch's error, not ours
    assert fake_eval.linear_on_meta(layer, x.to(torch.float64)) is None


@pytest.mark.parametrize("fn", sorted(fake_eval.SAME_SHAPE_FLOAT_FUNCTIONS))
def test_an_elementwise_result_written_out_matches_its_meta_run(fn: str) -> None:
    target = eval(fn, {"torch": torch, "F": F})  # noqa: S307 - names from the table above
    contiguous = torch.empty(2, 3, 5, 4, dtype=torch.float16, device="meta")
    channels_last = torch.empty(2, 3, 5, 4, device="meta").contiguous(memory_format=torch.channels_last)
    for x in (contiguous, channels_last, torch.empty(7, device="meta"), torch.empty((), device="meta"),
              torch.empty(1, 4, 1, 1, device="meta").permute(0, 2, 3, 1)):
        kwargs = {"min": -1.0} if fn == "torch.clamp" else {}
        assert _signature(fake_eval.same_layout_on_meta(x)) == _signature(target(x, **kwargs)), (fn, x.stride())
    transposed = torch.empty(3, 5, device="meta").t()  # another layout: left to the meta run
    assert fake_eval.same_layout_on_meta(transposed) is None


def test_meta_tensors_become_cpu_fakes_for_symbolic_runs() -> None:
    mode = _fake_mode()
    x = torch.empty(2, 3, device="meta")
    (fake,) = as_fakes(mode, [x])
    assert fake.device.type == "cpu" and fake.shape == (2, 3)
    assert as_fakes(mode, [x])[0] is fake


def test_unpacking_a_proxy_traces_as_torch_does() -> None:
    class Split(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a, b = torch.split(x, 2, 1)
            c, d, e = x.chunk(3, 0)
            return a * b + c + d + e

    ours = OriginTracer(OriginMap("<none>", {}, {}, {})).trace(Split())
    theirs = torch.fx.Tracer().trace(Split())
    assert [(n.op, str(n.target), str(n.args)) for n in ours.nodes] == \
        [(n.op, str(n.target), str(n.args)) for n in theirs.nodes]


def test_layers_are_built_without_their_initialisers_which_come_back_afterwards() -> None:
    from onnx2fx.codegen.uninitialised import initialisers_skipped

    originals = (torch.nn.modules.conv._ConvNd.reset_parameters, torch.nn.init.kaiming_uniform_)
    calls: list[str] = []
    with pytest.raises(ValueError), torch.device("meta"), initialisers_skipped():
        torch.nn.init.uniform_(torch.empty(2))
        layers = [torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4, 2), torch.nn.BatchNorm2d(4), torch.nn.LSTM(4, 5)]
        calls.append("built")
        raise ValueError
    assert calls == ["built"] and [tuple(p.shape) for p in layers[0].parameters()] == [(4, 3, 3, 3), (4,)]
    assert (torch.nn.modules.conv._ConvNd.reset_parameters, torch.nn.init.kaiming_uniform_) == originals
    assert torch.nn.Conv2d(1, 1, 1).weight.abs().sum() > 0  # initialised as usual outside the block


def test_the_collector_is_paused_and_restored() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValueError), collector_paused():
        raise ValueError
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


class _CnnAndEncoder(torch.nn.Module):
    """Convolutions, normalisation, pooling, slicing, concatenation, resizing and a transformer
    encoder layer: the ops whose static sizes now come from meta tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.BatchNorm2d(8),
                                        torch.nn.Hardswish(), torch.nn.MaxPool2d(2, ceil_mode=True))
        self.proj = torch.nn.Conv2d(16, 32, 1)
        self.encoder = torch.nn.TransformerEncoderLayer(32, 4, 64, batch_first=True, dropout=0.0)
        self.head = torch.nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.stem(x), 0.2)
        y = torch.cat([y, F.interpolate(y[:, :, ::2, 1:], size=y.shape[2:], mode="bilinear")], 1)
        tokens = self.proj(y).flatten(2).transpose(1, 2)
        return self.head(self.encoder(tokens)[:, 0]).softmax(-1)


def test_meta_evaluation_generates_the_code_fake_tensors_generate(tmp_path, monkeypatch) -> None:
    from onnx2fx import OnnxToFxConverter

    path = tmp_path / "model.onnx"
    torch.onnx.export(_CnnAndEncoder().eval(), (torch.randn(2, 3, 29, 37),), str(path), dynamo=False,
                      opset_version=17)
    fake_eval._META_RESULTS.clear()
    with_meta = OnnxToFxConverter(path)
    with_meta.convert()
    assert len(fake_eval._META_RESULTS) >= 20  # the static path was taken
    # the linear head's, the softmaxes' and the leaky ReLU's results are written out, not found by meta runs
    assert not [key for key in fake_eval._META_RESULTS
                if isinstance(key[0], tuple) and key[0][:2] == ("module", torch.nn.Linear)
                or key[0] in (torch.softmax, torch.log_softmax, F.leaky_relu)]
    assert "torch.softmax(" in with_meta.source_code and "F.leaky_relu(" in with_meta.source_code
    monkeypatch.setattr(fake_eval, "META_EVALUATION", False)
    fakes_only = OnnxToFxConverter(path)
    fakes_only.convert()
    assert with_meta.source_code == fakes_only.source_code


_LAYOUTS = {
    "contiguous-fp16": lambda: torch.empty(2, 3, 5, 4, dtype=torch.float16, device="meta"),
    "channels-last": lambda: torch.empty(2, 3, 5, 4, device="meta").contiguous(memory_format=torch.channels_last),
    "1-d": lambda: torch.empty(7, device="meta"),
    "0-d": lambda: torch.empty((), device="meta"),
    "permuted-ones": lambda: torch.empty(1, 4, 1, 1, device="meta").permute(0, 2, 3, 1),
    "transposed": lambda: torch.empty(3, 5, device="meta").t(),
}


@pytest.mark.parametrize("fn", ["torch.softmax", "torch.log_softmax"])
@pytest.mark.parametrize("layout", sorted(_LAYOUTS))
def test_a_softmax_result_written_out_matches_its_meta_and_cpu_runs(fn: str, layout: str) -> None:
    target = eval(fn, {"torch": torch})  # noqa: S307 - two names above
    x = _LAYOUTS[layout]()
    for dim in range(-max(x.dim(), 1), max(x.dim(), 1)):
        written = fake_eval.softmax_on_meta(x, dim)
        if layout in ("channels-last", "permuted-ones", "transposed"):  # left to the meta run
            assert written is None
            continue
        assert _signature(written) == _signature(target(x, dim=dim)), (dim, x.stride())
        real = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype)
        assert _signature(written) == _signature(target(real, dim=dim)), (dim, x.stride())
    assert fake_eval.softmax_on_meta(x, max(x.dim(), 1)) is None  # torch's IndexError, not ours


@pytest.mark.parametrize(("fn", "numbers"), [("F.leaky_relu", (0.2,)), ("F.elu", (0.5,)), ("F.celu", (1.5,)),
                                              ("F.softshrink", (0.3,)), ("F.hardshrink", (0.3,)),
                                              ("torch.clamp", (-1.0, 6.0)), ("F.hardtanh", (-2.0, 2.0))])
def test_elementwise_calls_with_numbers_are_written_out_like_their_meta_runs(fn: str, numbers: tuple) -> None:
    target = eval(fn, {"torch": torch, "F": F})  # noqa: S307 - names from the list above
    for layout in ("contiguous-fp16", "channels-last", "1-d", "0-d", "permuted-ones"):
        x = _LAYOUTS[layout]()
        assert _signature(fake_eval.same_layout_on_meta(x)) == _signature(target(x, *numbers)), (fn, layout)
