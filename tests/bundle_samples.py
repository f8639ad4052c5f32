"""A small valid `Bundle` record (no files behind it), for tests of what reads bundles."""

from __future__ import annotations

import dataclasses

from cris_edge.bundle import Bundle, Checkpoint, FileEntry, Graph, PrecisionDetails, TensorSpec
from cris_edge.constants import CLIP_MEAN, CLIP_STD, THRESHOLD

SHA = "0" * 64


def make_bundle(**changes) -> Bundle:
    """A cris bundle record at input 64 with three one-tensor graphs; ``changes`` replace fields."""
    def graph(name: str) -> Graph:
        return Graph(f"{name}.onnx", "fp32", 18, (TensorSpec("x", "float32", ("batch", 3)),),
                     (TensorSpec("y", "float32", ("batch", 3)),), None)

    graphs = {name: graph(name) for name in ("text", "visual", "head")}
    files = {name: FileEntry(SHA, 1) for name in ("text.onnx", "visual.onnx", "head.onnx", "vocab.txt.gz")}
    record = Bundle(kind="cris", created="2026-12-02T00:00:00+00:00", model={}, checkpoint=Checkpoint("c.pth", SHA),
                    input_size=64, word_len=17, mean=CLIP_MEAN, std=CLIP_STD, threshold=THRESHOLD, precision="fp32",
                    precision_details=PrecisionDetails("float32"), vocabulary="vocab.txt.gz", max_batch=1,
                    tensorrt_compatible=True, head_output="logits", plugins=None, graphs=graphs,
                    versions={"cris_edge": "0.1.0"}, files=files)
    return dataclasses.replace(record, **changes)
