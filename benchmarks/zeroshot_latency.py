"""Zero-shot bundle latency (`latency.py --zeroshot BUNDLE`): per backend, precision and number
of proposals, per stage, with the local branch (alpha < 1) and without it (alpha = 1).

    python benchmarks/latency.py --zeroshot bundles/vitb32_zs_fp32 --zeroshot bundles/vitb32_zs_fp16 \\
        --backends onnxruntime --proposals 8,32,64 --warmup 1 --iters 5 --markdown zs.md

An iteration is one `Segmenter.run` on a 480 x 640 BGR frame with N rectangle proposals and one
prompt whose text features are cached (they are, after the first frame of a stream): the
pre-processing (squash, soft masks, crops), the global and local graphs and the scores. Stage
times are the runtime's own (`SegmentationResult.timings`); ``local_share`` is the local graph
and its crops' pre-processing over the total. Rows run in this process, which never imports
torch (ONNX Runtime, OpenVINO and TensorRT).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path
from typing import Sequence

import numpy as np

import common

FRAME_HW = (480, 640)
PROMPT = "the red circle on the left"


def proposals(count: int, seed: int = 0) -> np.ndarray:
    """bool ``[count, 480, 640]``: random rectangles of 1/50 to 1/4 of the frame."""
    rng = np.random.default_rng(seed)
    height, width = FRAME_HW
    masks = np.zeros((count, height, width), bool)
    for mask in masks:
        h, w = int(rng.integers(height // 7, height // 2)), int(rng.integers(width // 7, width // 2))
        y, x = int(rng.integers(0, height - h)), int(rng.integers(0, width - w))
        mask[y:y + h, x:x + w] = True
    return masks


def measure_row(segmenter, count: int, warmup: int, iters: int) -> dict:
    """Timings of ``iters`` runs with ``count`` proposals after ``warmup`` runs."""
    frame = np.random.default_rng(1).integers(0, 256, (*FRAME_HW, 3), dtype=np.uint8)
    masks = proposals(count)
    for _ in range(warmup):
        segmenter.run(frame, PROMPT, proposals=masks)
    totals, stages = [], {}
    load_start = common.load_average()
    for _ in range(iters):
        start = time.perf_counter()
        result = segmenter.run(frame, PROMPT, proposals=masks)
        totals.append(1e3 * (time.perf_counter() - start))
        for stage, ms in result.timings.items():
            stages.setdefault(stage, []).append(ms)
    mean = {stage: statistics.fmean(values) for stage, values in stages.items()}
    return {"proposals": count, "p50_ms": statistics.median(totals), "min_ms": min(totals),
            "stages_ms": mean, "load_average": [load_start, common.load_average()]}


def run(bundles: Sequence[Path], backends: Sequence[str], counts: Sequence[int], warmup: int, iters: int,
        threads=None, device=None) -> dict:
    """Rows for every bundle x backend x N, alpha as exported and alpha = 1."""
    from cris_edge import Segmenter
    from cris_edge.runtime.backends.base import BackendUnavailableError

    rows, skipped = [], []
    for bundle in bundles:
        for backend in backends:
            try:
                segmenter = Segmenter(bundle, backend, device, threads=threads if backend != "tensorrt" else None)
            except (BackendUnavailableError, ValueError) as err:
                skipped.append({"bundle": str(bundle), "backend": backend, "reason": str(err).splitlines()[0]})
                continue
            with segmenter:
                exported = segmenter.method
                for alpha in dict.fromkeys((exported.alpha, 1.0)):
                    segmenter.method = dataclasses.replace(exported, alpha=alpha)
                    for count in counts:
                        common.progress(f"zero-shot {bundle.name} {segmenter.backend} alpha {alpha} N {count}")
                        row = measure_row(segmenter, count, warmup, iters)
                        stages = row["stages_ms"]
                        local = stages.get("local", 0.0)
                        rows.append({"bundle": str(bundle), "backbone": exported.backbone,
                                     "precision": segmenter.precision, "backend": segmenter.backend, "alpha": alpha,
                                     **row, "local_share": local / stages["total"] if stages.get("total") else None})
    return {"machine": common.machine(), "versions": common.versions(), "frame": list(FRAME_HW), "warmup": warmup,
            "iters": iters, "rows": rows, "skipped": skipped}


def markdown(result: dict) -> str:
    """The rows as one markdown table (milliseconds, means of the stages, median of the totals)."""
    headers = ["backbone", "precision", "backend", "alpha", "N", "p50 ms", "preprocess", "text", "global", "local",
               "score", "local share"]
    body = []
    for r in result["rows"]:
        s = r["stages_ms"]
        body.append([r["backbone"], r["precision"], r["backend"], f"{r['alpha']:g}", r["proposals"], common.fmt(r["p50_ms"]),
                     *(common.fmt(s.get(k, 0.0)) for k in ("preprocess", "text", "global", "local", "score")),
                     "-" if r["local_share"] is None else f"{100 * r['local_share']:.0f}%"])
    lines = [common.markdown_table(headers, body)]
    lines += [f"- skipped {s['backend']} for {s['bundle']}: {s['reason']}" for s in result["skipped"]]
    return "\n".join(lines) + "\n"
