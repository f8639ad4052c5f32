"""``export_zeroshot``: a CLIP -> the ``text``, ``global`` and ``local`` graphs of the zero-shot
Global-Local CLIP method (`cris_edge.export.zeroshot_graphs`), precision baked -> TensorRT
engines where TensorRT and a GPU are present -> a bundle of kind ``zeroshot``.

The same stages and rules as `cris_edge.export.pipeline` (checked graphs, FP16 with the
overflow scan, staging, engines); the FP16 scan runs on synthetic scenes and their target masks.
INT8 is not offered for this kind yet.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import numpy as np
import onnx
import torch

from cris_edge import bundle as bundle_format
from cris_edge.bundle import Bundle, Checkpoint, NounPhrase, PrecisionDetails, ZeroShotMethod, sha256_file
from cris_edge.data.synthetic_scene import COLOURS
from cris_edge.constants import CLIP_CONTEXT, IMAGENET_MEAN, IMAGENET_STD, THRESHOLD
from cris_edge.paths import cache_dir
from cris_edge.runtime import regions
from cris_edge.tokenizer import find_vocab, get_tokenizer

from . import fp16
from .card import model_card
from .checks import check_graph
from .engines import DEFAULT_WORKSPACE_MIB, build_all, engine_instructions
from .manifest import graph_entry, utc_now, versions
from .pipeline import OVERFLOW_SCAN_SAMPLES, ExportResult, _fp16_details
from .calibration import CalibrationSpec
from .progress import Stages
from .staging import check_output, staged_directory
from .tensorrt_build import engine_unavailable_reason
from .zeroshot_graphs import GRAPH_NAMES, MASKED_BLOCKS, describe, export_graph, grid_size, image_size, is_resnet

#: Proposals per pass of the TensorRT engines unless --max-proposals says otherwise.
DEFAULT_MAX_PROPOSALS = 64
PRECISIONS = ("fp32", "fp16")


@dataclass
class ZeroShotExportOptions:
    """What `export_zeroshot` makes. ``clip``: a CLIP file or name for
    `cris_edge.zeroshot.load_clip`, or an open_clip ``CLIP`` module (tests, tools that built one).
    ``proposals``: ``"builtin"`` makes the synthetic scenes' generator the bundle's default."""

    clip: Union[Path, str, torch.nn.Module]
    output: Path
    precision: str = "fp32"
    alpha: float = 0.95
    beta: float = 0.5
    max_proposals: int = DEFAULT_MAX_PROPOSALS
    noun_phrase: NounPhrase = "spacy"
    spacy_pipeline: str = "en_core_web_sm"
    proposals: Optional[str] = None
    workspace_mib: int = DEFAULT_WORKSPACE_MIB
    cache_dir: Path = field(default_factory=cache_dir)
    build_engines: bool = True
    progress: bool = True

    def __post_init__(self):
        self.output = Path(self.output)
        if self.precision not in PRECISIONS:
            raise ValueError(f"a zero-shot bundle's precision must be one of {PRECISIONS} (INT8 is not offered for "
                             f"this kind yet), got {self.precision!r}")
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
    stages = Stages(total=3 + len(GRAPH_NAMES) + (options.precision != "fp32") + (engines_reason is None),
                    enabled=options.progress)
    try:
        with stages.step("loading the CLIP"):
            clip, path = _load(options.clip)
            method = method_of(clip, options)
        graphs = {}
        for name in GRAPH_NAMES:
            with stages.step(f"exporting the {name} graph"):
                graphs[name] = export_graph(clip, name)
        details = PrecisionDetails("float32")
        if options.precision == "fp16":
            with stages.step("baking fp16"):
                scan = CalibrationSpec("synthetic", OVERFLOW_SCAN_SAMPLES)
                kept = {name: sorted(fp16.overflowing_nodes(graph, feeds(name, clip, method, scan.size)))
                        for name, graph in graphs.items()}
                graphs = {name: fp16.convert_to_fp16(graph, kept[name]) for name, graph in graphs.items()}
                details = PrecisionDetails("float16", fp16=_fp16_details(scan, kept))
        with stages.step("checking the graphs"):
            for name, graph in graphs.items():
                check_graph(graph, name, single_inputs=bundle_format.SINGLE_INPUTS["zeroshot"].get(name, ()))
        with staged_directory(options.output) as stage:
            with stages.step("writing the bundle"):
                record = _write(stage, graphs, clip, path, method, options, details)
            if engines_reason is None:
                with stages.step("building TensorRT engines"):
                    record = build_all(stage, record, options.max_proposals, options.workspace_mib,
                                       options.cache_dir)
            record = bundle_format.write(stage, record)
    finally:
        stages.close()
    note = None if engines_reason is None else engine_instructions(options.output, record, engines_reason,
                                                                   options.workspace_mib)
    return ExportResult(options.output, record, stages.timings, note)


def feeds(name: str, clip: torch.nn.Module, method: ZeroShotMethod, samples: int) -> Iterator[dict[str, Any]]:
    """Inputs of graph ``name`` from ``samples`` synthetic scenes (their target mask and its
    complement as the proposals), pre-processed as the runtime does: the FP16 overflow scan's data."""
    from cris_edge.data.synthetic import make_sample

    size = image_size(clip)
    tokenizer = get_tokenizer()
    for seed in range(samples):
        sample = make_sample(seed)
        if name == "text":
            tokens = tokenizer.batch(sample.sentences[:1], CLIP_CONTEXT)
            yield {"tokens": tokens.tokens, "eot_index": tokens.eot_index}
            continue
        image = regions.normalized_frame(sample.image[..., ::-1], IMAGENET_MEAN, IMAGENET_STD)
        masks = np.stack([sample.mask != 0, sample.mask == 0])
        if name == "global":
            yield {"image": regions.resize_bilinear(image, size, size)[None],
                   "masks": regions.soft_masks(masks, method.grid)}
        else:
            yield {"crops": regions.crops(image, masks, regions.tight_boxes(masks), size, method.crop_fill)}


def _write(stage: Path, graphs: dict[str, onnx.ModelProto], clip: torch.nn.Module, path: Optional[Path],
           method: ZeroShotMethod, options: ZeroShotExportOptions, details: PrecisionDetails) -> Bundle:
    """Save the vocabulary and graphs in ``stage``; their `Bundle` record (files listed by `write`)."""
    vocab = find_vocab()
    shutil.copyfile(vocab, stage / vocab.name)
    entries = {}
    for name, graph in graphs.items():
        onnx.save(graph, stage / f"{name}.onnx")
        entries[name] = graph_entry(graph, f"{name}.onnx", options.precision)
    checkpoint = Checkpoint(path.name, sha256_file(path)) if path else Checkpoint(_name(options.clip),
                                                                                   _weights_sha256(clip))
    return Bundle(
        kind="zeroshot", created=utc_now(), model=describe(clip), checkpoint=checkpoint,
        input_size=image_size(clip), word_len=CLIP_CONTEXT, mean=IMAGENET_MEAN, std=IMAGENET_STD, threshold=THRESHOLD,
        precision=options.precision, precision_details=details, vocabulary=vocab.name,
        max_batch=options.max_proposals, tensorrt_compatible=True, head_output="logits", plugins=None,
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
