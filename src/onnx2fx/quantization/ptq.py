"""Post-training quantization, end to end.

``ptq(model, data)`` places quantizers on the source ONNX graph (:mod:`.placement`), inserts
fake-quant modules into a copy of the converted GraphModule (:mod:`.fake_quant`), calibrates
activation ranges on the data (:mod:`.calibrators`), derives weight and int32 bias encodings,
measures what quantization costs against the float model (:mod:`.metrics`) and, with an output
folder, writes::

    model_ptq.pt      the simulated GraphModule (load with onnx2fx.validator.load_torch_model)
    encodings.json    AIMET format (1.0.0 by default), keyed by ONNX names
    model_ptq.onnx    QDQ ONNX from the original graph (native writer)
    report.json/.md   the per-model report with quantization.ptq filled in (and report.html)
    sensitivity.png   with ``sensitivity=True``, the per-layer table drawn (when matplotlib is installed)

``sensitivity=True`` measures each weight layer's share of the output error (:mod:`.sensitivity`);
``mixed_precision_target_db`` raises the bit widths of the layers that cost most until the output
SQNR reaches it (:mod:`.mixed_precision`), before AdaRound and bias correction, which then work on
the chosen widths.

The folder is assembled in a temporary folder beside the destination and renamed into place, so
an error leaves no partial output.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import tempfile
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.fx

from .._core import QdqPlan
from ..conversion_record import conversion_record, find_conversion_record
from ..errors import Onnx2FxError, QuantizationError
from .adaround import SAMPLES as ADAROUND_SAMPLES
from .adaround import adaround as adaround_weights
from .adaround import first_samples
from .bias_correction import SAMPLES as BIAS_CORRECTION_SAMPLES
from .bias_correction import correct_biases, keep_batches
from .calibrators import make_calibrator
from .cle import equalized_copy
from .config import ENCODING_VERSIONS, QuantConfig
from .converted_model import base_report, load_converted_model, source_onnx
from .data import CalibrationSource, calibration_source, input_specs
from .encodings import build_encodings, encoded_names
from .fake_quant import FakeQuantize, SimModel, insert_fake_quant, set_bias_encodings, strip_calibrators
from .grid import Encoding, QuantGrid
from .initializers import get_tensor, initializer_values
from .integer import INTEGER_FORMATS, check_formats, compare_integer, integer_plan, onnx_file_name, write_integer_model
from .integer import integer_model as convert_integer_model
from .metrics import evaluate, weight_errors
from .mixed_precision import LayerPrecision, promoted_config, search_mixed_precision
from .placement import OnnxGraphView, Placement, check_names, plan_placement
from .progress import CountProgress, show_progress
from .ptq_options import PtqOptions
from .ptq_report import PtqReport
from .qdq import build_plan, compare_with_sim, write_qdq_model
from .sensitivity import PLOT_FILE, OutputScorer, QuantizedLayer, quantized_layers, sensitivity_analysis, write_plot
from .simulation import concat_shared_input, follow_shared, graph_order, int32_bias_encodings, run_model, weight_param
from .unfused_attention import fused_attentions, without_fused_attention
from .weight_search import LayerInputs, weight_encoding

OUTPUT_FILES = ("model_ptq.pt", "encodings.json", "model_ptq.onnx", "report.json", "report.md", "report.html")


@dataclass
class PTQResult:
    """The simulated model, its encodings and the report section, ready to save."""

    STAGE: ClassVar[str] = "ptq"  # file names model_<stage>.pt/.onnx and the report's quantization.<stage>

    sim_model: torch.fx.GraphModule
    config: QuantConfig
    source_onnx: Path
    activation_encodings: dict[str, Encoding]  # every encoded tensor, incl. ones sharing an encoding
    param_encodings: dict[str, Encoding]  # weights and int32 biases
    plan: QdqPlan  # the QDQ writer's plan
    report: MutableMapping[str, Any]  # quantization.<stage> of report.json (a PtqReport for PTQ)
    encoding_version: str = "1.0.0"
    eval_batches: list[tuple[torch.Tensor, ...]] = field(default_factory=list, repr=False)
    input_names: list[str] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)
    base_report: dict[str, Any] | None = field(default=None, repr=False)
    source_opset: int | None = None
    files: dict[str, Path] = field(default_factory=dict)
    formats: tuple[str, ...] = ("qdq",)  # ONNX forms :meth:`save` writes: qdq, qoperator, fixed-point
    float_islands: bool = False  # integer forms keep nodes without an integer form in float (listed)

    @property
    def output_sqnr_db(self) -> float | None:
        return self.report.get("sqnr_db")

    def encodings(self, version: str | None = None) -> dict[str, Any]:
        """The ``encodings.json`` document (``version`` defaults to the one chosen at ``ptq``)."""
        from .. import __version__

        return build_encodings(version or self.encoding_version, self.activation_encodings, self.param_encodings,
                               self.config, self.report.get("excluded_nodes", []), __version__)

    def save(self, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
        """Write the output folder atomically (see the module docstring)."""
        from ..atomic_folder import atomic_folder
        from ..generated_modules import save_module
        from ..reports import write_report

        out = Path(out_dir)
        model_file, onnx_file = f"model_{self.STAGE}.pt", f"model_{self.STAGE}.onnx"
        with atomic_folder(out, merge=True) as staging:
            save_module(self.sim_model, staging / model_file)
            document = self.encodings()
            (staging / "encodings.json").write_text(json.dumps(document, indent=2) + "\n")
            self.report["files"] = {"model": model_file, "encodings": "encodings.json"}
            output_encodings = {n: self.activation_encodings.get(n) for n in self.output_names}
            if "qdq" in self.formats:
                started = time.perf_counter()
                info = write_qdq_model(self.source_onnx, staging / onnx_file, self.plan, self.source_opset)
                check = compare_with_sim(staging / onnx_file, self.sim_model, self.eval_batches,
                                         self.input_names, self.output_names, output_encodings)
                self.report["qdq"] = {"status": "ok", "path": onnx_file, "writer": info,
                                      "seconds": round(time.perf_counter() - started, 3), **check,
                                      **self._qdq_extras(staging / onnx_file)}
                self.report["files"]["qdq_onnx"] = onnx_file
            sensitivity = self.report.get("sensitivity")
            if sensitivity:
                note = write_plot(sensitivity, staging / PLOT_FILE)
                sensitivity["plot"], sensitivity["plot_note"] = (PLOT_FILE, None) if note is None else (None, note)
                if note is None:
                    self.report["files"]["sensitivity_plot"] = PLOT_FILE
            for fmt in (f for f in INTEGER_FORMATS if f in self.formats):
                self._write_integer(fmt, staging, output_encodings,
                                    staging / onnx_file if "qdq" in self.formats else None)
            report = dict(self.base_report or {})
            report.setdefault("quantization", {"ptq": None, "qft": None})
            report["quantization"] = {**report["quantization"], self.STAGE: dict(self.report)}
            write_report(report, staging)
            written = sorted(p.name for p in staging.iterdir())
        self.files = {name: out / name for name in written}
        return self.files

    def _write_integer(self, fmt: str, staging: Path, output_encodings: Mapping[str, Encoding | None],
                       qdq_path: Path | None) -> None:
        """Write the ``fmt`` integer model into ``staging`` and check it (report section
        ``fixed_point`` / ``qoperator``): onnxruntime against the integer simulation and the QDQ model."""
        name = onnx_file_name(self.STAGE, fmt)
        started = time.perf_counter()
        info = write_integer_model(self.source_onnx, staging / name, integer_plan(self.plan, self.activation_encodings),
                                   fmt, self.float_islands, self._fused_functions())
        try:
            check = compare_integer(staging / name, self.eval_batches, self.input_names, self.output_names,
                                    output_encodings, qdq_path)
        except Onnx2FxError as exc:  # the simulation is a conversion of the file: an op it cannot convert
            check = {"equal_to_simulation": None, "simulation_error": str(exc)}
        key = fmt.replace("-", "_")
        self.report[key] = {"status": "ok", "path": name, "writer": info,
                            "seconds": round(time.perf_counter() - started, 3), **check}
        self.report["files"][f"{key}_onnx"] = name

    def integer_model(self, fmt: str = "fixed-point") -> torch.fx.GraphModule:
        """The integer simulation of the ``fmt`` model: the written file converted to torch (written
        to a temporary folder first when :meth:`save` has not written it)."""
        name = onnx_file_name(self.STAGE, fmt)
        if name in self.files:
            return convert_integer_model(self.files[name])
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / name
            write_integer_model(self.source_onnx, path, integer_plan(self.plan, self.activation_encodings), fmt,
                                self.float_islands, self._fused_functions())
            return convert_integer_model(path)

    def _fused_functions(self) -> tuple[Any, ...]:
        """The functions the conversion fused (their inner tensors have no encodings)."""
        record = find_conversion_record(self.sim_model)
        return record.idioms if record is not None else ()

    def _qdq_extras(self, onnx_path: Path) -> dict[str, Any]:
        """More checks of the written QDQ model for the report (none for PTQ)."""
        return {}


def ptq(model: Any, calibration_data: Any = None, *, options: PtqOptions | None = None,
        **keywords: Any) -> PTQResult:
    """Quantize a converted model after training.

    Args:
        model: the ``torch.fx.GraphModule`` from :class:`~onnx2fx.OnnxToFxConverter` or a
            ``model_full.pt`` path.
        calibration_data: a DataLoader or any iterable of input batches, a ``.npy``/``.npz`` file,
            or a folder of ``.npy``/``.npz``/image files (see :mod:`.data`).
        options: how to quantize and where to write (:class:`PtqOptions`); the defaults when
            not given.
        **keywords: fields of :class:`PtqOptions` (``output_dir=``, ``scheme=``, ``samples=``,
            ...), each replacing the value in ``options``.
    """
    started = time.perf_counter()
    opts = (options or PtqOptions()).with_keywords(keywords)
    samples, batch_size, seed, eval_data = opts.samples, opts.batch_size, opts.seed, opts.eval_data
    formats = check_formats(opts.formats)
    if opts.encoding_version not in ENCODING_VERSIONS:
        raise QuantizationError(f"encoding version {opts.encoding_version!r} is not one of "
                                f"{list(ENCODING_VERSIONS)}")
    target = opts.mixed_precision_target_db
    if target is not None and (isinstance(target, bool) or not isinstance(target, (int, float))
                               or not math.isfinite(target) or target <= 0):
        raise QuantizationError(f"the mixed-precision target must be a positive output SQNR in dB, got {target!r}")
    gm, model_path = load_converted_model(model)
    source = source_onnx(gm, opts.onnx_path)
    gm, attention_note = without_fused_attention(gm, source, opts.input_shapes)
    cfg = _config(opts.config).with_overrides(
        scheme=opts.scheme, weight_bits=opts.weight_bits, activation_bits=opts.activation_bits,
        per_channel=opts.per_channel, cle=opts.cle, bias_correction=opts.bias_correction, adaround=opts.adaround,
        adaround_iterations=opts.adaround_iterations)
    graph = OnnxGraphView.load(source)
    specs = input_specs(graph.inputs, graph.input_types, opts.input_shapes)
    data = calibration_source(calibration_data, specs, samples=samples, batch_size=batch_size,
                              random=opts.random_calibration, seed=seed, image_options=opts.image_options)
    placement = plan_placement(graph, cfg, formats, idioms=conversion_record(gm).idioms)
    check_names(graph, _fx_onnx_names(gm))
    reference, equalization = equalized_copy(gm, graph, placement) if cfg.cle else (gm, None)
    sim = insert_fake_quant(reference, graph, placement)
    # bias correction and AdaRound need calibration samples again once the encodings are fixed
    kept_samples = max(BIAS_CORRECTION_SAMPLES if cfg.bias_correction else 0, ADAROUND_SAMPLES if cfg.adaround else 0)
    kept_batches: list[tuple[torch.Tensor, ...]] = []
    if kept_samples:
        data.batches, kept_batches = keep_batches(data.batches, min(samples, kept_samples))

    keep = opts.eval_samples if eval_data is None else 0
    # the searched weight ranges weigh each weight error by the layer's input statistics
    layer_inputs = LayerInputs.of_weights(sim.gm, sim.weight_params) if cfg.resolved_weight_scheme == "mse" else None
    with layer_inputs or contextlib.nullcontext():
        calibration = _calibrate(sim, cfg, placement, data, samples, keep, show_progress(opts.progress))
    searching = time.perf_counter()
    activation_encodings, shared, dropped, float_outputs = _activation_encodings(
        sim, placement, graph, float_outputs=set(formats) <= {"qdq"})
    weight_encodings = _weight_encodings(sim, cfg, layer_inputs)
    # the ranges chosen from the observed statistics (histogram searches, per-channel weight searches;
    # also the removal of quantizers on tensors that were never observed, a few milliseconds)
    calibration["range_search_seconds"] = round(time.perf_counter() - searching, 3)
    bias_encodings = int32_bias_encodings(sim, placement, activation_encodings, weight_encodings, graph)
    set_bias_encodings(sim, bias_encodings)  # the simulation adds the int32 biases the export stores
    # mixed precision encodes promoted activations again on wider grids, with their own calibrators
    calibrators = {id(q): q.calibrator for q in sim.activations.values() if q.calibrator is not None} \
        if opts.mixed_precision_target_db is not None else {}
    strip_calibrators(sim)
    sim.gm.eval()
    if eval_data is None:
        eval_batches, eval_description = calibration.pop("kept"), "the first calibration samples"
    else:
        eval_source = calibration_source(eval_data, specs, samples=opts.eval_samples, batch_size=batch_size)
        eval_batches, eval_description = list(eval_source.batches), eval_source.description.get("source", "eval data")
        calibration.pop("kept")
    mixed, sensitivity = None, None
    if opts.mixed_precision_target_db is not None or opts.sensitivity:
        layers = quantized_layers(sim, placement, graph)
        scorer = OutputScorer(reference, eval_batches)
        if opts.mixed_precision_target_db is not None:
            mixed = _mixed_precision(sim, cfg, placement, graph, shared, layers, scorer, calibrators, layer_inputs,
                                     opts.mixed_precision_target_db)
            cfg = promoted_config(cfg, layers, mixed["promoted"], {n.name: n.op_type for n in graph.nodes})
            activation_encodings, weight_encodings = _current_encodings(sim, graph, shared)
            bias_encodings = int32_bias_encodings(sim, placement, activation_encodings, weight_encodings, graph)
            set_bias_encodings(sim, bias_encodings)
        if opts.sensitivity:
            sensitivity = run_model("sensitivity analysis", lambda: sensitivity_analysis(sim, layers, scorer))
            sensitivity["data"] = eval_description
    quantized = {t: activation_encodings[t] for t in sim.activations if t in activation_encodings}
    rounding = None
    if cfg.adaround:
        quantized_weights = sum(q.enabled and q.initialized for q in sim.weights.values())
        with CountProgress(show_progress(opts.progress), quantized_weights, "AdaRound", "weights") as advance:
            rounding = run_model("AdaRound", lambda: adaround_weights(
                sim, graph, placement, first_samples(kept_batches, ADAROUND_SAMPLES), cfg.adaround_iterations, seed,
                advance))
    # the float weights AdaRound replaced: the reference of bias correction and of the weight figures
    float_weights = {init: get_tensor(reference, sim.weight_params[init])
                     for init in (rounding or {}).get("initializers", [])}
    correction = run_model("bias correction", lambda: correct_biases(
        sim, graph, placement, first_samples(kept_batches, BIAS_CORRECTION_SAMPLES), float_weights)) \
        if cfg.bias_correction else None
    changed = sorted({*(equalization or {}).get("initializers", []), *(rounding or {}).get("initializers", []),
                      *(correction or {}).get("initializers", [])})
    plan = build_plan(quantized, weight_encodings, bias_encodings, initializer_values(sim.gm, graph, changed))

    float_nodes = _float_nodes(gm, graph)
    evaluation = run_model("evaluating", lambda: evaluate(
        reference, sim.gm, eval_batches, graph.outputs, float_nodes,
        {t: q for t, q in sim.activations.items() if t in activation_encodings}))
    weights = weight_errors({init: (float_weights.get(init, weight_param(sim, init)), q)
                             for init, q in sim.weights.items()},
                            {init: weight_param(sim, init) for init in float_weights})

    output_rows = evaluation["outputs"]
    sqnrs = [r["sqnr_db"] for r in output_rows if r.get("sqnr_db") is not None]
    report = PtqReport(
        status="ok",
        source_onnx=str(source),
        model=str(model_path) if model_path else None,
        settings={**cfg.to_dict(), "encoding_version": opts.encoding_version},
        calibration={**data.description, **calibration},
        evaluation={"samples": evaluation["samples"], "data": eval_description},
        counts={**placement.counts(), "activation_quantizers": len({id(q) for q in sim.activations.values()}),
                "weight_quantizers": len(sim.weights), "bias_encodings": len(bias_encodings),
                "encoded_activations": len(activation_encodings), "shared": len(shared)},
        sqnr_db=min(sqnrs) if sqnrs else None,
        outputs=output_rows,
        per_layer=evaluation["per_layer"],
        weights=weights,
        fused=dict(placement.fused),
        shared=shared,
        excluded_nodes=sorted(set(cfg.float_nodes)),
        unmapped=sim.unmapped,
        not_float=dropped,
        equalization=equalization,
        adaround=rounding,
        bias_correction=correction,
        changed_initializers=changed,
        mixed_precision=mixed,
        sensitivity=sensitivity,
        qdq=None,
        warnings=[*data.warnings, *[f"{n} has no FX counterpart and is left unquantized" for n in sim.unmapped],
                  *([attention_note] if attention_note and fused_attentions(gm) else []), *float_outputs],
        seconds=0.0,
    )
    report.seconds = round(time.perf_counter() - started, 3)
    result = PTQResult(sim.gm, cfg, source, activation_encodings, {**weight_encodings, **bias_encodings}, plan, report,
                       opts.encoding_version, eval_batches, list(graph.inputs), list(graph.outputs),
                       base_report(model_path, source), graph.opset, formats=formats, float_islands=opts.float_islands)
    if opts.output_dir is not None:
        result.save(opts.output_dir)
    return result


# ---------------------------------------------------------------------------------- inputs
def _config(config: Any) -> QuantConfig:
    if config is None:
        return QuantConfig()
    if isinstance(config, QuantConfig):
        config.validate()
        return config
    if isinstance(config, Mapping):
        return QuantConfig.from_dict(config)
    return QuantConfig.load(config)


# ---------------------------------------------------------------------------------- calibration
def _calibrate(sim: SimModel, config: QuantConfig, placement: Placement, data: CalibrationSource, samples: int,
               keep: int, visible: bool) -> dict[str, Any]:
    """Run every calibration batch through the model with the activation quantizers observing
    (with the config's scheme; outputs of ``minmax_ops`` with minmax)."""
    full_range = {id(q) for site in placement.activations if site.op_type in config.minmax_ops
                  if (q := sim.activations.get(site.tensor)) is not None}
    for quantizer in {id(q): q for q in sim.activations.values()}.values():
        scheme = "minmax" if id(quantizer) in full_range else config.scheme
        quantizer.calibrator = make_calibrator(scheme, percentile=config.percentile, bins=config.bins)
    sim.gm.eval()
    kept: list[tuple[torch.Tensor, ...]] = []
    kept_count = seen = batches = 0
    started = time.perf_counter()
    with CountProgress(visible, samples) as advance, torch.no_grad():
        for batch in data.batches:
            n = int(batch[0].shape[0]) if batch[0].dim() else 1
            run_model(f"running calibration batch {batches + 1} ({n} samples; a model converted with a fixed "
                       "batch size needs a matching --batch-size)", functools.partial(sim.gm, *batch))
            if kept_count < keep:
                take = min(n, keep - kept_count)
                kept.append(tuple(t[:take].clone() for t in batch))
                kept_count += take
            seen += n
            batches += 1
            advance(n)
    return {"scheme": config.scheme, "minmax_tensors": len(full_range), "samples": seen, "batches": batches,
            "seconds": round(time.perf_counter() - started, 3), "kept": kept}


# ---------------------------------------------------------------------------------- encodings
def _activation_encodings(sim: SimModel, placement: Placement, graph: OnnxGraphView, *, float_outputs: bool = False,
                          ) -> tuple[dict[str, Encoding], dict[str, str], list[str], list[str]]:
    """Encodings of quantized tensors from their calibrators, then of tensors that share one; the
    tensors never observed, and a note per output left float (see :func:`_share_concats`; only where
    ``float_outputs``: QDQ alone is written, as the integer writers need every Concat's encoding)."""
    encodings: dict[str, Encoding] = {}
    dropped: list[str] = []
    for tensor, quantizer in sim.activations.items():
        calibrator = quantizer.calibrator
        if calibrator is None or not calibrator.observed:  # not a float tensor, or never computed
            quantizer.enabled = False
            dropped.append(tensor)
            continue
        if not quantizer.initialized:
            nonneg = calibrator.min >= 0
            signed = quantizer.symmetric and not nonneg
            grid = QuantGrid(quantizer.bits, signed)
            quantizer.set_encoding(calibrator.encoding(grid, quantizer.symmetric))
        encodings[tensor] = quantizer.encoding()
    removed: set[int] = set()
    for tensor in dropped:
        quantizer = sim.activations.pop(tensor)
        if id(quantizer) not in removed:
            removed.add(id(quantizer))
            _remove_quantizer_node(sim.gm, quantizer)
    shared = dict(placement.shared)
    notes = _share_concats(sim, placement, graph, encodings, shared, float_outputs=float_outputs)
    ordered: dict[str, Encoding] = {}
    for tensor in graph_order(graph):
        enc = encodings.get(tensor) or follow_shared(tensor, shared, encodings)
        if enc is not None:
            ordered[tensor] = enc
    return ordered, {t: s for t, s in shared.items() if t in ordered}, dropped, notes


# A graph output made by a Concat stays float when its inputs' scales differ by more than this: one
# 8-bit grid for all of them would leave the finest input fewer than 6 of its 8 bits (a detector's
# boxes in pixels beside its class probabilities: a step of about a pixel turns every probability
# into 0 or one step, and no box passes a confidence threshold).
FLOAT_OUTPUT_CONCAT_SCALE_RATIO = 4.0


def _share_concats(sim: SimModel, placement: Placement, graph: OnnxGraphView, encodings: dict[str, Encoding],
                   shared: dict[str, str], *, float_outputs: bool) -> list[str]:
    """A Concat whose inputs all carry one encoding needs no requantization: drop its quantizer. A
    Concat that is a graph output and whose inputs lie on grids of very different scales loses its
    quantizer too and stays float (its inputs keep theirs). Returns a warning per float output."""
    producers = graph.producer_map()
    outputs = set(graph.outputs)
    notes = []
    for tensor in sorted(placement.concats):
        if tensor not in encodings or tensor not in sim.activations:
            continue
        source = concat_shared_input(producers[tensor], encodings, shared)
        ratio = None if source is not None or not float_outputs or tensor not in outputs else _input_scale_ratio(
            producers[tensor], encodings, shared)
        if source is None and (ratio is None or ratio <= FLOAT_OUTPUT_CONCAT_SCALE_RATIO):
            continue
        quantizer = sim.activations.pop(tensor)
        _remove_quantizer_node(sim.gm, quantizer)
        del encodings[tensor]
        if source is not None:
            shared[tensor] = source
        else:
            notes.append(f"output {tensor} (Concat) stays float: its inputs' scales differ {ratio:.0f}x, and one "
                         f"8-bit grid would leave the finest input {max(8 - math.log2(ratio), 0):.1f} bits")
    return notes


def _input_scale_ratio(concat: Any, encodings: Mapping[str, Encoding], shared: Mapping[str, str]) -> float | None:
    """The largest over the smallest per-tensor scale of a Concat's quantized inputs (None when
    fewer than two are quantized per tensor)."""
    scales = []
    for name in (i for i in concat.inputs if i):
        encoding = encodings.get(name) or follow_shared(name, shared, encodings)
        if encoding is not None and encoding.axis is None:
            scales.append(float(encoding.scale.max()))
    return max(scales) / min(scales) if len(scales) >= 2 and min(scales) > 0 else None


def _current_encodings(sim: SimModel, graph: OnnxGraphView,
                       shared: Mapping[str, str]) -> tuple[dict[str, Encoding], dict[str, Encoding]]:
    """The activation encodings (tensors sharing one included, in graph order) and the weight
    encodings the quantizers hold now: after calibration, or after mixed precision changed some."""
    own = {tensor: quantizer.encoding() for tensor, quantizer in sim.activations.items()}
    ordered: dict[str, Encoding] = {}
    for tensor in graph_order(graph):
        enc = own.get(tensor) or follow_shared(tensor, shared, own)
        if enc is not None:
            ordered[tensor] = enc
    return ordered, {initializer: quantizer.encoding() for initializer, quantizer in sim.weights.items()}


def _mixed_precision(sim: SimModel, config: QuantConfig, placement: Placement, graph: OnnxGraphView,
                     shared: Mapping[str, str], layers: list[QuantizedLayer], scorer: OutputScorer,
                     calibrators: Mapping[int, Any], layer_inputs: LayerInputs | None,
                     target_db: float) -> dict[str, Any]:
    """Promote layers until the output SQNR reaches ``target_db`` (:mod:`.mixed_precision`)."""
    def refresh_biases() -> None:
        activations, weights = _current_encodings(sim, graph, shared)
        set_bias_encodings(sim, int32_bias_encodings(sim, placement, activations, weights, graph))

    started = time.perf_counter()
    precision = LayerPrecision(sim, config, {site.initializer: site.spec.symmetric for site in placement.weights},
                               layer_inputs.moments if layer_inputs else {}, calibrators, refresh_biases)
    sizes = {name: int(math.prod(graph.initializers[name][1])) for name in sim.weights}
    section = run_model("mixed precision", lambda: search_mixed_precision(sim, layers, scorer, precision, target_db,
                                                                           sizes))
    section["seconds"] = round(time.perf_counter() - started, 3)
    return section


def _remove_quantizer_node(gm: torch.fx.GraphModule, quantizer: FakeQuantize) -> None:
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and gm.get_submodule(node.target) is quantizer:
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
            conversion_record(gm).node_origins.pop(node.name, None)
            container, _, key = node.target.rpartition(".")
            delattr(gm.get_submodule(container), key)
    gm.recompile()


def _weight_encodings(sim: SimModel, config: QuantConfig,
                      layer_inputs: LayerInputs | None = None) -> dict[str, Encoding]:
    encodings = {}
    for initializer, quantizer in sim.weights.items():
        param = weight_param(sim, initializer)
        encoding = weight_encoding(param, quantizer.axis, quantizer.onnx_axis, quantizer.bits, quantizer.symmetric,
                                   config.resolved_weight_scheme, config.weight_symmetry,
                                   layer_inputs.moments.get(initializer) if layer_inputs else None)
        quantizer.symmetric = encoding.symmetric  # weight_symmetry "search" may pick an asymmetric grid
        quantizer.set_encoding(encoding)
        encodings[initializer] = quantizer.encoding()
    return encodings


def _fx_onnx_names(gm: torch.fx.GraphModule) -> list[str]:
    """The ONNX tensor and initializer names the GraphModule refers to (all must be in the source)."""
    names = [t for n in gm.graph.nodes for t in (n.meta.get("onnx_outputs") or [])]
    names += [o.initializer for o in conversion_record(gm).parameters.values() if o.initializer]
    return names


def _float_nodes(gm: torch.fx.GraphModule, graph: OnnxGraphView) -> dict[str, str]:
    placeholders = [n.name for n in gm.graph.nodes if n.op == "placeholder"]
    nodes = dict(zip(graph.inputs, placeholders))
    for node in gm.graph.nodes:
        for tensor in node.meta.get("onnx_outputs", []) or []:
            nodes[tensor] = node.name
    return nodes


# ---------------------------------------------------------------------------------- report
def encodings_names_exist(document: Mapping[str, Any], graph: OnnxGraphView) -> list[str]:
    """Names in an encodings document that the graph does not have (empty when all exist)."""
    known = graph.tensor_names()
    return [n for n in encoded_names(document) if n not in known]

