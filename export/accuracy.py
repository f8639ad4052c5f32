"""Accuracy of exported bundles with ONNX Runtime on CPU, on held-out synthetic scenes.

    python -m cris_edge.export.accuracy --bundle bundles/demo_fp32 bundles/demo_fp16 bundles/demo_int8

Each scene runs the full chain: official pre-processing -> text, visual and head graphs in ONNX
Runtime -> official post-processing to a mask at the frame's size. Reported per bundle: mIoU
against the ground truth (%), mean mask IoU against the first bundle (the reference, normally
FP32), and the mean milliseconds of each graph. Torch is not needed.

`ort_cpu_precision` tells what ONNX Runtime's CPU provider really does with an FP16 graph: it
has float16 kernels for few ops, so it inserts Casts and computes the others in float32; an
FP16 figure measured here is then the rounding of FP16 storage at op boundaries, not FP16
arithmetic, which only a GPU shows.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
import onnxruntime as ort

from cris_edge.data.synthetic import HELD_OUT_SEED_OFFSET, make_sample
from cris_edge.kernels.reference import similarity_logits
from cris_edge.runtime.postprocess import mask_iou, postprocess
from cris_edge.runtime.preprocess import preprocess
from cris_edge.tokenizer import get_tokenizer

from .bundle import BundleError, graph_path, load_bundle_config


class OrtBundle:
    """A bundle's three graphs in ONNX Runtime (CPU): ``predict(frame, text)`` -> uint8 mask."""

    def __init__(self, bundle_dir: Path, threads: int = 0):
        self.config = load_bundle_config(bundle_dir)
        if self.config.get("head_output") == "plugin":
            raise ValueError(f"bundle {bundle_dir}: its head holds the SimUpsample TensorRT plugin node, which "
                             "ONNX Runtime cannot run; evaluate a logits or features bundle, or its engines")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads
        self.sessions = {name: ort.InferenceSession(str(graph_path(bundle_dir, self.config, name)), options,
                                                    providers=["CPUExecutionProvider"])
                         for name in ("text", "visual", "head")}
        self.image_dtype = np.dtype(self.config["graphs"]["visual"]["inputs"][0]["dtype"])
        self.tokenizer = get_tokenizer(bundle_dir=bundle_dir)
        self.seconds: Counter = Counter()

    def _run(self, name: str, feed: dict) -> list[np.ndarray]:
        start = time.perf_counter()
        out = self.sessions[name].run(None, feed)
        self.seconds[name] += time.perf_counter() - start
        return out

    def predict(self, frame: np.ndarray, text: str) -> np.ndarray:
        """BGR uint8 ``[H, W, 3]`` frame and a text -> uint8 ``[H, W]`` mask in {0, 1}."""
        cfg = self.config
        box = preprocess(frame, cfg["input_size"], mean=cfg["mean"], std=cfg["std"], dtype=self.image_dtype)
        tokens = self.tokenizer.batch(text, cfg["word_len"])
        word, state = self._run("text", {"tokens": tokens.tokens, "eot_index": tokens.eot_index})
        c3, c4, c5 = self._run("visual", {"image": box.image})
        head = self._run("head", {"c3": c3, "c4": c4, "c5": c5, "word": word,
                                  "pad_mask": tokens.pad_mask, "state": state})
        if cfg.get("head_output") == "features":  # what SimUpsample computes after the engine
            z_v, kernel = head
            weight = kernel[:, :-1].reshape(z_v.shape[0], z_v.shape[1], 3, 3)
            head = [similarity_logits(z_v, weight, kernel[:, -1])]
        return postprocess(head[0].astype(np.float32), box, cfg["threshold"])


@dataclass
class BundleScore:
    """Scores of one bundle over ``samples`` scenes."""

    bundle: str
    precision: str
    miou: float                                   # % against the ground truth
    iou_vs_reference: float                       # mean mask IoU against the first bundle
    ms_per_graph: dict[str, float] = field(default_factory=dict)


def evaluate(bundles: Sequence[Path], samples: int, seed_offset: int = HELD_OUT_SEED_OFFSET,
             threads: int = 0) -> list[BundleScore]:
    """Score each bundle on scenes ``seed_offset .. seed_offset + samples - 1`` (first sentence of
    each); the first bundle is the reference of ``iou_vs_reference``."""
    models = [OrtBundle(Path(b), threads) for b in bundles]
    warmup = make_sample(seed_offset)
    for m in models:  # first runs allocate and pick kernels: keep them out of the timings
        m.predict(warmup.image, warmup.sentences[0])
        m.seconds.clear()
    gt_iou = np.zeros((len(models), samples))
    ref_iou = np.zeros((len(models), samples))
    for i in range(samples):
        sample = make_sample(seed_offset + i)
        masks = [m.predict(sample.image, sample.sentences[0]) for m in models]
        for k, mask in enumerate(masks):
            gt_iou[k, i] = mask_iou(mask, sample.mask)
            ref_iou[k, i] = mask_iou(mask, masks[0])
    return [BundleScore(str(b), m.config["precision"], 100 * float(gt_iou[k].mean()), float(ref_iou[k].mean()),
                        {n: 1000 * s / samples for n, s in m.seconds.items()})
            for k, (b, m) in enumerate(zip(bundles, models))]


def ort_cpu_precision(onnx_path: Path) -> dict[str, dict[str, int]]:
    """What ONNX Runtime's CPU provider runs in float16 and in float32 for a graph, after its
    own optimisations: ``{"float16": {op: n}, "float32": {op: n}, "casts": {"graph": n,
    "session": n}}`` (Casts in the file and in the optimised session graph)."""
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        optimized = onnx.load(options.optimized_model_filepath)
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
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    args = p.parse_args(argv)
    try:
        scores = evaluate(args.bundle, args.samples, threads=args.threads)
    except (BundleError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{args.samples} held-out synthetic scenes (seeds {HELD_OUT_SEED_OFFSET}+), ONNX Runtime CPU")
    print(f"{'bundle':<40} {'prec':<5} {'mIoU %':>7} {'IoU vs ref':>10}  ms text/visual/head")
    for s in scores:
        ms = "/".join(f"{s.ms_per_graph.get(n, 0):.1f}" for n in ("text", "visual", "head"))
        print(f"{s.bundle:<40} {s.precision:<5} {s.miou:7.2f} {s.iou_vs_reference:10.4f}  {ms}")
    for s in scores:
        if s.precision == "fp16":
            for graph in ("text", "visual", "head"):
                config = load_bundle_config(s.bundle, verify=False)
                print(f"ORT CPU with {s.bundle}/{graph}: {ort_cpu_precision(graph_path(s.bundle, config, graph))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
