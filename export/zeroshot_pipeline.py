"""``export_zeroshot``: a CLIP -> the ``text``, ``global`` and ``local`` graphs of the zero-shot
Global-Local CLIP method (`cris_edge.export.zeroshot_graphs`), precision baked -> TensorRT
engines where TensorRT and a GPU are present -> a bundle of kind ``zeroshot``.

The same stages and rules as `cris_edge.export.pipeline` (checked graphs, FP16 with the
overflow scan, INT8 Q/DQ in either placement, staging, engines). Calibration and the FP16 scan
run on the calibration set's images with two proposals each (the referent's mask and its
complement). INT8 quantizes the two image graphs (``global``, ``local``); the text graph, whose
features are cached per prompt, stays in the unquantized precision, as in a CRIS bundle. The
INT8 accuracy check scores the bundle against its FP32 graphs on held-out data with the
dataset's instance masks as proposals (`cris-eval --proposals oracle`).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import numpy as np
import onnx
import torch

from cris_edge import bundle as bundle_format
from cris_edge.bundle import (Bundle, Checkpoint, Int8Accuracy, NounPhrase, PrecisionDetails, ZeroShotMethod,
                              sha256_file)
from cris_edge.data.synthetic_scene import COLOURS
from cris_edge.constants import CLIP_CONTEXT, IMAGENET_MEAN, IMAGENET_STD, THRESHOLD
from cris_edge.paths import cache_dir
from cris_edge.runtime import regions
from cris_edge.tokenizer import find_vocab, get_tokenizer

from . import fp16, int8
from .card import model_card
from .checks import check_graph
from .engines import DEFAULT_WORKSPACE_MIB, build_all, engine_instructions
from .manifest import graph_entry, utc_now, versions
from .pipeline import OVERFLOW_SCAN_SAMPLES, ExportResult, _fp16_details, bake_int8, record_accuracy
from .calibration import CalibrationSpec, records
from .progress import Stages
from .staging import check_output, staged_directory
from .tensorrt_build import engine_unavailable_reason
from .zeroshot_graphs import GRAPH_NAMES, MASKED_BLOCKS, describe, export_graph, grid_size, image_size, is_resnet

#: Proposals per pass of the TensorRT engines unless --max-proposals says otherwise.
DEFAULT_MAX_PROPOSALS = 64
PRECISIONS = ("fp32", "fp16", "int8")
#: Graphs quantized in an INT8 zero-shot bundle: the image tower's two passes.
INT8_GRAPHS = ("global", "local")


@dataclass
class ZeroShotExportOptions:
    """What `export_zeroshot` makes. ``clip``: a CLIP file or name for
    `cris_edge.zeroshot.load_clip`, or an open_clip ``CLIP`` module (tests, tools that built one).
    ``proposals``: ``"builtin"`` makes the synthetic scenes' generator the bundle's default.
    ``calibration`` feeds INT8 calibration and the FP16 overflow scan (its first
    `OVERFLOW_SCAN_SAMPLES`); ``accuracy_samples``: held-out samples an INT8 bundle is scored on
    against its FP32 graphs (0: none)."""

    clip: Union[Path, str, torch.nn.Module]
    output: Path
    precision: str = "fp32"
    alpha: float = 0.95
    beta: float = 0.5
    max_proposals: int = DEFAULT_MAX_PROPOSALS
    noun_phrase: NounPhrase = "spacy"
    spacy_pipeline: str = "en_core_web_sm"
    proposals: Optional[str] = None
    calibration: CalibrationSpec = field(default_factory=CalibrationSpec)
    int8_placement: str = "tensorrt"
    accuracy_samples: int = 0
    workspace_mib: int = DEFAULT_WORKSPACE_MIB
    cache_dir: Path = field(default_factory=cache_dir)
    build_engines: bool = True
    progress: bool = True

    def __post_init__(self):
        self.output = Path(self.output)
        if self.precision not in PRECISIONS:
            raise ValueError(f"a zero-shot bundle's precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.int8_placement not in int8.PLACEMENTS:
            raise ValueError(f"int8 placement must be one of {sorted(int8.PLACEMENTS)}, got {self.int8_placement!r}")
        if self.accuracy_samples < 0:
            raise ValueError(f"accuracy samples must be >= 0, got {self.accuracy_samples}")
        for name in ("alpha", "beta"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.max_proposals < 1:
            raise ValueError(f"max proposals must be >= 1, got {self.max_proposals}")
        if self.proposals not in (None, "builtin"):
            raise ValueError(f"proposals must be 'builtin' or None, got {self.proposals!r}")


def method_of(clip: torch.nn.Module, options: ZeroShotExportOptions) -> ZeroShotMethod:
    """The bundle's `ZeroShotMethod` for ``clip``: the official scoring rule of its backbone."""
    resnet = is_resnet(clip)
    return ZeroShotMethod(
        backbone="resnet" if resnet else "vit", alpha=float(options.alpha), beta=float(options.beta),
        scoring="dot" if resnet else "cosine", logit_scale=float(clip.logit_scale.detach().exp()), grid=grid_size(clip),
        masked_blocks=0 if resnet else MASKED_BLOCKS, crop_fill=IMAGENET_MEAN, noun_phrase=options.noun_phrase,
        spacy_pipeline=options.spacy_pipeline, proposals=options.proposals,
        palette=dict(COLOURS) if options.proposals == "builtin" else {})


def _load(clip: Union[Path, str, torch.nn.Module]) -> tuple[torch.nn.Module, Optional[Path]]:
    if isinstance(clip, torch.nn.Module):
        return clip.eval(), None
    from cris_edge.zeroshot.clip_loading import load_clip

    path = Path(clip)
    return load_clip(clip).eval(), (path if path.is_file() else None)


def export_zeroshot(options: ZeroShotExportOptions) -> ExportResult:
    """Export a zero-shot bundle as ``options`` say; the output appears only once complete."""
    check_output(options.output)
    engines_reason = "not requested (--no-engines)" if not options.build_engines else engine_unavailable_reason()
    tensorrt_target = not (options.precision == "int8" and options.int8_placement == "onnxruntime")
    if not tensorrt_target:
        engines_reason = "INT8 with ONNX Runtime's Q/DQ placement is for ONNX Runtime, not TensorRT"
    check_accuracy = options.precision == "int8" and options.accuracy_samples > 0
    stages = Stages(total=3 + len(GRAPH_NAMES) + (options.precision != "fp32") + (engines_reason is None)
                    + check_accuracy, enabled=options.progress)
    accuracy_note = None
    try:
        with stages.step("loading the CLIP"):
            clip, path = _load(options.clip)
            method = method_of(clip, options)
        graphs = {}
        for name in GRAPH_NAMES:
            with stages.step(f"exporting the {name} graph"):
                graphs[name] = export_graph(clip, name)
        final, precisions, details = graphs, dict.fromkeys(graphs, "fp32"), PrecisionDetails("float32")
        if options.precision != "fp32":
            with stages.step(f"baking {options.precision}"):
                bake = _bake_fp16 if options.precision == "fp16" else _bake_int8
                final, precisions, details = bake(graphs, clip, method, options, stages)
        with stages.step("checking the graphs"):
            for name, graph in final.items():
                check_graph(graph, name, single_inputs=bundle_format.SINGLE_INPUTS["zeroshot"].get(name, ()),
                            tensorrt=tensorrt_target)
        with staged_directory(options.output) as stage:
            with stages.step("writing the bundle"):
                record = _write(stage, final, precisions, clip, path, method, options, details, tensorrt_target)
            if engines_reason is None:
                with stages.step("building TensorRT engines"):
                    record = build_all(stage, record, options.max_proposals, options.workspace_mib,
                                       options.cache_dir)
            record = bundle_format.write(stage, record)
            if check_accuracy:
                with stages.step("checking INT8 accuracy against FP32"):
                    checked, accuracy_note = _int8_accuracy(stage, graphs, clip, path, method, options)
                if checked is not None:
                    record = record_accuracy(stage, record, checked)
    finally:
        stages.close()
    note = None if engines_reason is None else engine_instructions(options.output, record, engines_reason,
                                                                   options.workspace_mib)
    return ExportResult(options.output, record, stages.timings, note, sum(g.ByteSize() for g in graphs.values()),
                        accuracy_note)


def _overflow_scan(graphs, clip, method, options: ZeroShotExportOptions):
    """``(spec, {graph: names of nodes that must stay FP32})`` from the FP16 overflow scan."""
    scan = options.calibration.scan(OVERFLOW_SCAN_SAMPLES)
    return scan, {name: sorted(fp16.overflowing_nodes(graph, feeds(name, clip, method, scan)))
                  for name, graph in graphs.items()}


def _bake_fp16(graphs, clip, method, options: ZeroShotExportOptions, stages: Stages):
    """``(graphs, {graph: precision}, PrecisionDetails)`` of the FP16 bundle."""
    scan, kept = _overflow_scan(graphs, clip, method, options)
    out = {name: fp16.convert_to_fp16(graph, kept[name]) for name, graph in graphs.items()}
    return out, dict.fromkeys(graphs, "fp16"), PrecisionDetails("float16", fp16=_fp16_details(scan, kept))


def _bake_int8(graphs, clip, method, options: ZeroShotExportOptions, stages: Stages):
    """INT8 Q/DQ in `INT8_GRAPHS` (`cris_edge.export.pipeline.bake_int8`)."""
    return bake_int8(graphs, INT8_GRAPHS, options.calibration, options.int8_placement, options.cache_dir,
                     lambda name: feeds(name, clip, method, options.calibration),
                     lambda: _overflow_scan(graphs, clip, method, options), stages, cache_prefix="zeroshot-")


def _int8_accuracy(stage: Path, graphs, clip: torch.nn.Module, path: Optional[Path], method: ZeroShotMethod,
                   options: ZeroShotExportOptions) -> tuple[Optional[Int8Accuracy], Optional[str]]:
    """``(accuracy, None)`` of the INT8 bundle in ``stage`` against the FP32 ``graphs`` (written
    to a temporary FP32 bundle) on held-out data, every sentence choosing among the image's
    instance masks; or ``(None, why not)``."""
    from cris_edge.eval.metrics import SegmentationScores
    from cris_edge.eval.zeroshot import each_image, proposal_source
    from cris_edge.runtime.postprocess import mask_iou
    from cris_edge.runtime.segmenter import Segmenter

    try:
        held_out, data = options.calibration.held_out(options.accuracy_samples)
        cases = [(record, masks) for _, record, masks in each_image(held_out, proposal_source("oracle", held_out),
                                                                    None, False, "") if len(masks)]
    except ValueError as err:
        return None, str(err)
    if not cases:
        return None, f"no held-out image of {data} has an instance mask"
    with tempfile.TemporaryDirectory(prefix="cris_fp32_reference_") as tmp:
        reference = Path(tmp)
        fp32 = _write(reference, graphs, dict.fromkeys(graphs, "fp32"), clip, path, method,
                      replace(options, precision="fp32"), PrecisionDetails("float32"), True)
        bundle_format.write(reference, fp32)
        chosen, scores = {}, {}
        for name, bundle in (("fp32", reference), ("int8", stage)):
            scores[name], chosen[name] = SegmentationScores(), []
            with Segmenter(bundle, "onnxruntime", "cpu", text_cache_size=0) as seg:
                for record, masks in cases:
                    for result in seg.run(record.image, list(record.sentences), proposals=masks):
                        scores[name].add(result.mask, record.mask)
                        chosen[name].append(result.mask)
    agreement = [mask_iou(a, b) for a, b in zip(chosen["int8"], chosen["fp32"])]
    return Int8Accuracy(data, len(cases), len(agreement), round(100 * scores["fp32"].summary()["mIoU"], 3),
                        round(100 * scores["int8"].summary()["mIoU"], 3), round(float(np.mean(agreement)), 4)), None


def feeds(name: str, clip: torch.nn.Module, method: ZeroShotMethod, spec: CalibrationSpec) -> Iterator[dict[str, Any]]:
    """Inputs of graph ``name`` from the samples of ``spec`` (each with two proposals: the
    referent's mask and its complement), pre-processed as the runtime does: the calibration
    and FP16 overflow scan data."""
    size = image_size(clip)
    tokenizer = get_tokenizer()
    for sample in records(spec):
        if name == "text":
            tokens = tokenizer.batch(sample.sentences[:1], CLIP_CONTEXT)
            yield {"tokens": tokens.tokens, "eot_index": tokens.eot_index}
            continue
        image = regions.normalized_frame(sample.image[..., ::-1], IMAGENET_MEAN, IMAGENET_STD)
        masks = np.stack([sample.mask != 0, sample.mask == 0])
        masks = masks[masks.any(axis=(1, 2))]
        if name == "global":
            yield {"image": regions.resize_bilinear(image, size, size)[None],
                   "masks": regions.soft_masks(masks, method.grid)}
        else:
            yield {"crops": regions.crops(image, masks, regions.tight_boxes(masks), size, method.crop_fill)}


def _write(stage: Path, graphs: dict[str, onnx.ModelProto], precisions: dict[str, str], clip: torch.nn.Module,
           path: Optional[Path], method: ZeroShotMethod, options: ZeroShotExportOptions, details: PrecisionDetails,
           tensorrt_target: bool) -> Bundle:
    """Save the vocabulary and graphs in ``stage``; their `Bundle` record (files listed by `write`)."""
    vocab = find_vocab()
    shutil.copyfile(vocab, stage / vocab.name)
    entries = {}
    for name, graph in graphs.items():
        onnx.save(graph, stage / f"{name}.onnx")
        entries[name] = graph_entry(graph, f"{name}.onnx", precisions[name])
    checkpoint = Checkpoint(path.name, sha256_file(path)) if path else Checkpoint(_name(options.clip),
                                                                                   _weights_sha256(clip))
    return Bundle(
        kind="zeroshot", created=utc_now(), model=describe(clip), checkpoint=checkpoint,
        input_size=image_size(clip), word_len=CLIP_CONTEXT, mean=IMAGENET_MEAN, std=IMAGENET_STD, threshold=THRESHOLD,
        precision=options.precision, precision_details=details, vocabulary=vocab.name,
        max_batch=options.max_proposals, tensorrt_compatible=tensorrt_target, head_output="logits", plugins=None,
        graphs=entries, versions=versions(), card=model_card(path) if path else None, zeroshot=method)


def _name(clip: Union[Path, str, torch.nn.Module]) -> str:
    return "CLIP module" if isinstance(clip, torch.nn.Module) else str(clip)


def _weights_sha256(clip: torch.nn.Module) -> str:
    """sha256 of the CLIP's weights (names and bytes, in order): a CLIP given by name or as a module."""
    digest = hashlib.sha256()
    for name, tensor in clip.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
