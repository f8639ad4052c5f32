"""Accuracy of exported bundles on held-out synthetic scenes, side by side.

    python -m cris_edge.export.accuracy --bundle bundles/demo_fp32 bundles/demo_fp16 bundles/demo_int8

Each bundle runs in `Segmenter` (``--backend``, default ONNX Runtime; CPU) and is scored as ``cris-eval --engine``
scores it: every sentence of every scene, the official protocol (`cris_edge.eval`). Reported per
bundle: mIoU against the ground truth (%), mean mask IoU against the first bundle (the
reference, normally FP32), and the mean milliseconds of each stage. Torch is not needed.

`ort_cpu_precision` tells what ONNX Runtime's CPU provider really does with an FP16 graph: it
has float16 kernels for few ops, so it inserts Casts and computes the others in float32; an
FP16 figure measured here is then the rounding of FP16 storage at op boundaries, not FP16
arithmetic, which only a GPU shows.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from cris_edge import bundle as bundle_format
from cris_edge.bundle import BundleError, graph_path
from cris_edge.data.sources import open_records
from cris_edge.data.synthetic import HELD_OUT_SEED_OFFSET
from cris_edge.eval.metrics import SegmentationScores
from cris_edge.runtime.backends.base import BackendUnavailableError
from cris_edge.runtime.backends.onnxruntime import session
from cris_edge.runtime.postprocess import mask_iou
from cris_edge.runtime.result import STAGES
from cris_edge.runtime.segmenter import Segmenter


@dataclass
class BundleScore:
    """Scores of one bundle over the scenes' sentences."""

    bundle: str
    precision: str
    miou: float                                   # % against the ground truth
    iou_vs_reference: float                       # mean mask IoU against the first bundle
    pairs: int                                    # (image, sentence) pairs scored
    ms_per_stage: dict[str, float] = field(default_factory=dict)  # mean per scene (all its sentences)


def evaluate(bundles: Sequence[Path], samples: int, seed_offset: int = HELD_OUT_SEED_OFFSET,
             threads: int | None = None, backend: str = "onnxruntime") -> list[BundleScore]:
    """Score each bundle on scenes ``seed_offset .. seed_offset + samples - 1`` (`score`)."""
    return score(bundles, open_records("synthetic", seed_offset=seed_offset, num_samples=samples), threads, backend)


def score(bundles: Sequence[Path], records: Sequence, threads: int | None = None,
          backend: str = "onnxruntime") -> list[BundleScore]:
    """Score each bundle on ``records`` (image, mask, sentences; every sentence) with ``backend``
    on the CPU; the first bundle is the reference of ``iou_vs_reference``."""
    segmenters = [Segmenter(b, backend, "cpu", threads=threads, text_cache_size=0) for b in bundles]
    try:
        warmup = records[0]
        for seg in segmenters:  # first runs allocate and pick kernels: keep them out of the timings
            seg.run(warmup.image, warmup.sentences[0])
        scores = [SegmentationScores() for _ in segmenters]
        vs_reference = [[] for _ in segmenters]
        ms = [Counter() for _ in segmenters]
        for record in records:
            sentences = list(record.sentences)
            runs = [seg.run(record.image, sentences, warn_truncated=False) for seg in segmenters]
            for k, results in enumerate(runs):
                ms[k].update({s: results[0].timings.get(s, 0.0) for s in STAGES})
                for result, reference in zip(results, runs[0]):
                    scores[k].add(result.mask, record.mask)
                    vs_reference[k].append(mask_iou(result.mask, reference.mask))
    finally:
        for seg in segmenters:
            seg.close()
    return [BundleScore(str(b), seg.precision, 100 * scores[k].summary()["mIoU"], float(np.mean(vs_reference[k])),
                        len(vs_reference[k]), {s: v / len(records) for s, v in ms[k].items()})
            for k, (b, seg) in enumerate(zip(bundles, segmenters))]


def ort_cpu_precision(onnx_path: Path) -> dict[str, dict[str, int]]:
    """What ONNX Runtime's CPU provider runs in float16 and in float32 for a graph, after its
    own optimisations: ``{"float16": {op: n}, "float32": {op: n}, "casts": {"graph": n,
    "session": n}}`` (Casts in the file and in the optimised session graph)."""
    with tempfile.TemporaryDirectory() as tmp:
        session(onnx_path, optimized_path=str(Path(tmp) / "optimized.onnx"))
        optimized = onnx.load(str(Path(tmp) / "optimized.onnx"))
    types = {vi.name: vi.type.tensor_type.elem_type for vi in (*optimized.graph.input, *optimized.graph.value_info,
                                                               *optimized.graph.output)}
    types.update({init.name: init.data_type for init in optimized.graph.initializer})
    runs = {"float16": Counter(), "float32": Counter()}
    for node in optimized.graph.node:
        if node.op_type == "Cast" or not node.input:
            continue
        kinds = {types.get(name) for name in node.input if name}
        key = "float16" if onnx.TensorProto.FLOAT16 in kinds else "float32" if onnx.TensorProto.FLOAT in kinds else None
        if key:
            runs[key][node.op_type] += 1
    source = onnx.load(str(onnx_path), load_external_data=False)
    return {**{k: dict(v.most_common()) for k, v in runs.items()},
            "casts": {"graph": sum(n.op_type == "Cast" for n in source.graph.node),
                      "session": sum(n.op_type == "Cast" for n in optimized.graph.node)}}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cris_edge.export.accuracy", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, nargs="+", required=True, help="bundles; the first is the reference")
    p.add_argument("--samples", type=int, default=200, help="held-out synthetic scenes")
    p.add_argument("--seed", type=int, default=HELD_OUT_SEED_OFFSET,
                   help=f"first scene's seed (default {HELD_OUT_SEED_OFFSET}; keep it >= that: held out)")
    p.add_argument("--backend", default="onnxruntime", help="runtime backend on the CPU (default: onnxruntime)")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: physical cores)")
    args = p.parse_args(argv)
    try:
        scores = evaluate(args.bundle, args.samples, args.seed, args.threads, args.backend)
    except (BundleError, ValueError, BackendUnavailableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{args.samples} held-out synthetic scenes (seeds {args.seed}+, every sentence), {args.backend} CPU")
    print(f"{'bundle':<40} {'prec':<5} {'mIoU %':>7} {'IoU vs ref':>10}  ms per scene {'/'.join(STAGES)}")
    for s in scores:
        ms = "/".join(f"{s.ms_per_stage.get(n, 0):.1f}" for n in STAGES)
        print(f"{s.bundle:<40} {s.precision:<5} {s.miou:7.2f} {s.iou_vs_reference:10.4f}  {ms}")
    for s in scores:
        if s.precision == "fp16":
            config = bundle_format.read(s.bundle)
            for graph in config.graphs:
                print(f"ORT CPU with {s.bundle}/{graph}: {ort_cpu_precision(graph_path(s.bundle, config, graph))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
