"""``export_bundle``: checkpoint -> ONNX graphs (precision baked) -> TensorRT engines -> bundle.

Stages: load the model; export ``text``, ``visual`` and ``head`` in FP32 (checked against the
deployment rules); bake the precision (FP16: `cris_edge.export.fp16`; INT8: `..int8`, calibrated
on `..calibration` feeds); check every graph against TensorRT's ONNX parser; write the bundle
in a staging directory; build the engines there when TensorRT and a GPU are present (else say
how to build them on the target); for INT8, score the bundle against the FP32 graphs on held-out
data (`cris_edge.export.accuracy`, recorded as ``precision_details.int8.accuracy``); rename the
staging directory into place.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import onnx
import torch

from cris_edge import bundle as bundle_format
from cris_edge.assets import demo_checkpoint
from cris_edge.bundle import (Bundle, Calibration, Checkpoint, Fp16Details, Int8Accuracy, Int8Details, Plugins,
                              PrecisionDetails, sha256_file)
from cris_edge.constants import CLIP_MEAN, CLIP_STD, THRESHOLD
from cris_edge.model import load_cris
from cris_edge.paths import cache_dir
from cris_edge.tokenizer import find_vocab

from . import accuracy, fp16, int8, plugin
from .calibration import CalibrationSpec, graph_feeds
from .checks import check_graph, rule_problems
from .engines import DEFAULT_WORKSPACE_MIB, build_all, engine_instructions
from .graphs import GRAPH_NAMES, HEAD_OUTPUTS, export_graph
from .card import model_card
from .manifest import graph_entry, utc_now, versions
from .progress import Stages
from .staging import check_output, staged_directory
from .tensorrt_build import engine_unavailable_reason

PRECISIONS = bundle_format.PRECISIONS
DEFAULT_MAX_BATCH = 8
#: Calibration samples the FP16 overflow scan runs (the first of the calibration set).
OVERFLOW_SCAN_SAMPLES = 16
#: Held-out samples an INT8 export is scored on by default by cris-export (synthetic scenes hold
#: about 10 sentences each: the demo model's 16 scenes, 160 pairs per bundle, took 73 s on 2 CPU
#: cores shared with other jobs).
ACCURACY_SAMPLES = 16


@dataclass
class ExportOptions:
    """What `export_bundle` makes. ``checkpoint`` None exports the shipped demo model;
    ``config`` (name or path) overrides the checkpoint's own or inferred config; ``head_output``
    is one of `HEAD_OUTPUTS` (``plugin`` needs ``plugin_library`` or the default one to build
    engines, see `cris_edge.export.plugin.find_library`); ``accuracy_samples``: held-out samples
    an INT8 bundle is scored on against the FP32 graphs (`CalibrationSpec.held_out`; 0: none)."""

    output: Path
    precision: str = "fp16"
    checkpoint: Optional[Path] = None
    config: Optional[str] = None
    calibration: CalibrationSpec = field(default_factory=CalibrationSpec)
    int8_placement: str = "tensorrt"
    head_output: str = "logits"
    plugin_library: Optional[Path] = None
    max_batch: int = DEFAULT_MAX_BATCH
    workspace_mib: int = DEFAULT_WORKSPACE_MIB
    cache_dir: Path = field(default_factory=cache_dir)
    build_engines: bool = True
    progress: bool = True
    accuracy_samples: int = 0

    def __post_init__(self):
        self.output = Path(self.output)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.int8_placement not in int8.PLACEMENTS:
            raise ValueError(f"int8 placement must be one of {sorted(int8.PLACEMENTS)}, got {self.int8_placement!r}")
        if self.head_output not in HEAD_OUTPUTS:
            raise ValueError(f"head output must be one of {sorted(HEAD_OUTPUTS)}, got {self.head_output!r}")
        if self.head_output == "plugin" and self.precision == "int8" and self.int8_placement == "onnxruntime":
            raise ValueError("the SimUpsample plugin runs in TensorRT only; it cannot go with --int8-placement onnxruntime")
        if self.max_batch < 1:
            raise ValueError(f"max batch must be >= 1, got {self.max_batch}")
        if self.workspace_mib < 1:
            raise ValueError(f"workspace must be >= 1 MiB, got {self.workspace_mib}")
        if self.accuracy_samples < 0:
            raise ValueError(f"accuracy samples must be >= 0, got {self.accuracy_samples}")


@dataclass
class ExportResult:
    """A finished export: the bundle's directory, its ``config.json`` as a `Bundle`, seconds per
    stage, (when no engines were built) the reason and the commands that build them on the
    target, the bytes of the FP32 graphs that the precision was baked into, and why an INT8
    bundle's accuracy was not checked (None when it was, or was not asked for)."""

    bundle: Path
    config: Bundle
    timings: dict[str, float]
    engine_note: Optional[str] = None
    fp32_bytes: int = 0
    accuracy_note: Optional[str] = None


def export_bundle(options: ExportOptions) -> ExportResult:
    """Export a bundle as ``options`` say; the output appears only once complete (see
    `cris_edge.export.staging`)."""
    check_output(options.output)
    engines_reason = "not requested (--no-engines)" if not options.build_engines else engine_unavailable_reason()
    tensorrt_target = not (options.precision == "int8" and options.int8_placement == "onnxruntime")
    if not tensorrt_target:
        engines_reason = "INT8 with ONNX Runtime's Q/DQ placement is for ONNX Runtime, not TensorRT"
    plugins = [plugin.find_library(options.plugin_library)] if (
        options.head_output == "plugin" and engines_reason is None) else []
    check_accuracy = options.precision == "int8" and options.accuracy_samples > 0
    stages = Stages(total=3 + len(GRAPH_NAMES) + (options.precision != "fp32") + (engines_reason is None)
                    + check_accuracy, enabled=options.progress)
    accuracy_note = None
    try:
        with stages.step("loading the model"):
            checkpoint = options.checkpoint or demo_checkpoint()
            model = load_cris(checkpoint, options.config)
        graphs = {}
        for name in GRAPH_NAMES:
            with stages.step(f"exporting the {name} graph"), torch.no_grad():
                graphs[name] = export_graph(model, name, options.head_output)
                _check_rules(graphs[name], name)
        cfg = model.config
        final, precisions, details = graphs, {name: "fp32" for name in graphs}, PrecisionDetails("float32")
        if options.precision != "fp32":
            with stages.step(f"baking {options.precision}"):
                bake = _bake_fp16 if options.precision == "fp16" else _bake_int8
                final, precisions, details = bake(graphs, options, cfg.input_size, cfg.word_len, stages)
        if options.head_output == "plugin":
            final = {**final, "head": plugin.attach_sim_upsample(final["head"], cfg.input_size)}
        with stages.step("checking the graphs"):
            for name, graph in final.items():
                if tensorrt_target:
                    check_graph(graph, name, plugin_ops=[plugin.QUALIFIED_OP])
                else:
                    _check_rules(graph, name)
        with staged_directory(options.output) as stage:
            with stages.step("writing the bundle"):
                record = _write_graphs(stage, final, precisions, model, checkpoint, options, details, tensorrt_target)
            if engines_reason is None:
                with stages.step("building TensorRT engines"):
                    record = build_all(stage, record, options.max_batch, options.workspace_mib, options.cache_dir,
                                       plugins)
            record = bundle_format.write(stage, record)
            if check_accuracy:
                with stages.step("checking INT8 accuracy against FP32"):
                    checked, accuracy_note = _int8_accuracy(stage, graphs, model, checkpoint, options)
                if checked is not None:
                    record = record_accuracy(stage, record, checked)
    finally:
        stages.close()
    note = None if engines_reason is None else engine_instructions(options.output, record, engines_reason,
                                                                   options.workspace_mib)
    return ExportResult(options.output, record, stages.timings, note, sum(g.ByteSize() for g in graphs.values()),
                        accuracy_note)


def _int8_accuracy(stage: Path, graphs, model, checkpoint: Path,
                   options: ExportOptions) -> tuple[Optional[Int8Accuracy], Optional[str]]:
    """``(accuracy, None)`` of the INT8 bundle in ``stage`` against the FP32 ``graphs`` (written
    to a temporary FP32 bundle), or ``(None, why not)``."""
    if options.head_output == "plugin":
        return None, "the SimUpsample plugin head runs in TensorRT only, and the check runs ONNX Runtime"
    try:
        records, data = options.calibration.held_out(options.accuracy_samples)
    except ValueError as err:
        return None, str(err)
    with tempfile.TemporaryDirectory(prefix="cris_fp32_reference_") as tmp:
        reference = Path(tmp)
        fp32 = _write_graphs(reference, graphs, dict.fromkeys(graphs, "fp32"), model, checkpoint,
                             replace(options, precision="fp32"), PrecisionDetails("float32"), True)
        bundle_format.write(reference, fp32)
        before, after = accuracy.score([reference, stage], records)
    return Int8Accuracy(data, len(records), after.pairs, round(before.miou, 3), round(after.miou, 3),
                        round(after.iou_vs_reference, 4)), None


def _check_rules(graph: onnx.ModelProto, name: str) -> None:
    problems = rule_problems(graph)
    if problems:
        raise ValueError(f"graph {name!r} breaks the deployment rules: {problems}")


def _overflow_scan(graphs, options: ExportOptions, input_size: int, word_len: int, stages: Stages):
    """``(spec, {graph: names of nodes that must stay FP32})`` from the FP16 overflow scan."""
    scan = options.calibration.scan(OVERFLOW_SCAN_SAMPLES)
    kept = {}
    for name, graph in graphs.items():
        feeds = stages.items(graph_feeds(scan, name, graphs, input_size, word_len), scan.size,
                             f"FP16 overflow scan of {name}")
        kept[name] = sorted(fp16.overflowing_nodes(graph, feeds))
    return scan, kept


def _fp16_details(scan: CalibrationSpec, kept: dict) -> Fp16Details:
    return Fp16Details(tuple(sorted(fp16.FP32_OPS)), float(fp16.FP16_SAFE_MAX), scan.describe(),
                       {name: tuple(nodes) for name, nodes in kept.items()})


def _bake_fp16(graphs, options: ExportOptions, input_size: int, word_len: int, stages: Stages):
    """``(graphs, {graph: precision}, PrecisionDetails)`` of the FP16 bundle."""
    scan, kept = _overflow_scan(graphs, options, input_size, word_len, stages)
    out = {name: fp16.convert_to_fp16(graph, kept[name]) for name, graph in graphs.items()}
    return out, {name: "fp16" for name in graphs}, PrecisionDetails("float16", fp16=_fp16_details(scan, kept))


def _bake_int8(graphs, options: ExportOptions, input_size: int, word_len: int, stages: Stages):
    """INT8 Q/DQ in `int8.INT8_GRAPHS` (`bake_int8`)."""
    return bake_int8(graphs, int8.INT8_GRAPHS, options.calibration, options.int8_placement, options.cache_dir,
                     lambda name: graph_feeds(options.calibration, name, graphs, input_size, word_len),
                     lambda: _overflow_scan(graphs, options, input_size, word_len, stages), stages)


def bake_int8(graphs: dict, quantized: Sequence[str], spec: CalibrationSpec, placement: str, cache_dir: Path,
              feeds_of: Callable[[str], Iterable], overflow_scan: Callable[[], tuple], stages: Stages,
              cache_prefix: str = ""):
    """``(graphs, {graph: precision}, PrecisionDetails)`` of an INT8 bundle: Q/DQ at ``placement``'s
    positions in the ``quantized`` graphs, calibrated on ``feeds_of(name)`` (``spec``'s data) or
    on ranges cached under ``cache_dir/calibration``. For TensorRT everything else is FP16 (after
    ``overflow_scan()``: ``(scan spec, {graph: nodes kept FP32})``); for ONNX Runtime it stays FP32."""
    out, keys, reused = dict(graphs), {}, {}
    for name in quantized:
        key = int8.cache_key(graphs[name], spec.describe(), placement)
        cache_file = cache_dir / "calibration" / f"{cache_prefix}{name}-{key[:24]}.json"
        reused[name] = cache_file.is_file()
        feeds = None if reused[name] else stages.items(feeds_of(name), spec.size, f"calibrating {name}")
        out[name] = int8.quantize_int8(graphs[name], feeds, cache_file, placement)
        keys[name] = key
    high = "fp16" if placement == "tensorrt" else "fp32"
    precisions = {name: "int8" if name in quantized else high for name in graphs}
    calibration = Calibration(spec.describe(), spec.size, int8.CALIBRATION_METHOD.name, keys, reused)
    fp16_details = None
    if high == "fp16":
        scan, kept = overflow_scan()
        out = {name: fp16.convert_to_fp16(graph, kept[name]) for name, graph in out.items()}
        fp16_details = _fp16_details(scan, kept)
    details = PrecisionDetails("float16" if high == "fp16" else "float32", fp16=fp16_details,
                               int8=Int8Details(placement, high, calibration))
    return out, precisions, details


def record_accuracy(stage: Path, record: Bundle, checked: Int8Accuracy) -> Bundle:
    """``record`` with ``checked`` as its INT8 accuracy, written to ``stage``'s config.json."""
    int8_details = replace(record.precision_details.int8, accuracy=checked)
    return bundle_format.write(stage, replace(record, precision_details=replace(record.precision_details,
                                                                                int8=int8_details)))


def _write_graphs(stage: Path, graphs, precisions: dict, model, checkpoint: Path, options: ExportOptions,
                  details: PrecisionDetails, tensorrt_target: bool) -> Bundle:
    """Save the vocabulary and the graphs in ``stage``; their `Bundle` record (no engines yet;
    `cris_edge.bundle.write` lists the files)."""
    vocab = find_vocab()
    shutil.copyfile(vocab, stage / vocab.name)
    entries = {}
    for name, graph in graphs.items():
        onnx.save(graph, stage / f"{name}.onnx")
        entries[name] = graph_entry(graph, f"{name}.onnx", precisions[name])
    cfg = model.config
    return Bundle(
        kind="cris", created=utc_now(), model=cfg.to_dict(),
        checkpoint=Checkpoint(Path(checkpoint).name, sha256_file(checkpoint)),
        input_size=cfg.input_size, word_len=cfg.word_len, mean=CLIP_MEAN, std=CLIP_STD, threshold=THRESHOLD,
        precision=options.precision, precision_details=details, vocabulary=vocab.name,
        max_batch=options.max_batch, tensorrt_compatible=tensorrt_target, head_output=options.head_output,
        plugins=Plugins((plugin.QUALIFIED_OP,), plugin.LIBRARY) if options.head_output == "plugin" else None,
        graphs=entries, versions=versions(), card=model_card(checkpoint))
