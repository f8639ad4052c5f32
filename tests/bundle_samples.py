"""A small valid `Bundle` record (no files behind it), for tests of what reads bundles."""

from __future__ import annotations

import dataclasses

from cris_edge.bundle import Bundle, Checkpoint, FileEntry, Graph, ModelCard, PrecisionDetails, TensorSpec
from cris_edge.constants import CLIP_MEAN, CLIP_STD, THRESHOLD

SHA = "0" * 64
#: A model card as the exporter records it from a demo-style card JSON.
CARD = ModelCard(name="cris_tiny_synthetic", summary="CRIS tiny trained on synthetic scenes",
                 limits="knows only synthetic shapes and colours", dataset="synthetic",
                 metrics={"mIoU": 0.86, "oIoU": 0.85})


def _specs(*items) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(name, dtype, ("batch", *dims)) for name, dtype, dims in items)


def make_bundle(**changes) -> Bundle:
    """A cris bundle record at input 64 with its three graphs (a cris_tiny's shapes, no files
    behind it); ``changes`` replace fields."""
    features = (("c3", "float32", (32, 8, 8)), ("c4", "float32", (64, 4, 4)), ("c5", "float32", (64, 2, 2)))
    text = (("word", "float32", (17, 64)), ("state", "float32", (64,)))
    graphs = {
        "text": Graph("text.onnx", "fp32", 18, _specs(("tokens", "int32", (17,)), ("eot_index", "int32", ())),
                      _specs(*text), None),
        "visual": Graph("visual.onnx", "fp32", 18, _specs(("image", "float32", (3, 64, 64))), _specs(*features),
                        None),
        "head": Graph("head.onnx", "fp32", 18, _specs(*features, text[0], ("pad_mask", "bool", (17,)), text[1]),
                      _specs(("logits", "float32", (1, 16, 16))), None),
    }
    files = {name: FileEntry(SHA, 1) for name in ("text.onnx", "visual.onnx", "head.onnx", "vocab.txt.gz")}
    record = Bundle(kind="cris", created="2026-12-02T00:00:00+00:00", model={}, checkpoint=Checkpoint("c.pth", SHA),
                    input_size=64, word_len=17, mean=CLIP_MEAN, std=CLIP_STD, threshold=THRESHOLD, precision="fp32",
                    precision_details=PrecisionDetails("float32"), vocabulary="vocab.txt.gz", max_batch=1,
                    tensorrt_compatible=True, head_output="logits", plugins=None, graphs=graphs,
                    versions={"cris_edge": "0.1.0"}, files=files)
    return dataclasses.replace(record, **changes)
