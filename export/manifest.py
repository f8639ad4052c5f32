"""The bundle's ``config.json``: what the runtime needs to run the graphs, and the file hashes.

Schema (format version 1)::

    format, format_version          "cris_edge.bundle", 1
    created                          UTC ISO-8601 time of the export
    model                            the CRIS config dict (CRISConfig.to_dict())
    checkpoint                       {"file": name, "sha256": hex} of the exported checkpoint
    input_size, word_len             S (image side) and L (tokens per text)
    mean, std                        CLIP normalisation, RGB in [0, 1]
    threshold                        mask threshold on the sigmoid (0.35)
    precision                        "fp32" | "fp16" | "int8"
    precision_details                how the precision was baked (see cris_edge.export.pipeline)
    vocabulary                       file name of the tokenizer's BPE vocabulary
    max_batch                        the largest batch engines are built for
    tensorrt_compatible              whether the graphs are meant for TensorRT (False only for
                                     INT8 with ONNX Runtime's Q/DQ placement)
    head_output                      "logits" | "features" (z_v, kernel) | "plugin" (prob)
    plugins                          null, or {"ops": ["cris_edge::SimUpsample"], "library":
                                     "libcris_edge_trt_plugin.so"}: needed to build and run engines
    graphs.{text,visual,head}        {"onnx": file, "precision": ..., "opset": n, "inputs": [io], "outputs": [io],
                                      "engine": null | {"file", "tensorrt", "gpu",
                                      "compute_capability", "bytes"}}
                                     io = {"name", "dtype" (numpy name), "shape" (["batch", 3, ...])}
    files                            {name: {"sha256": hex, "bytes": n}} for every other file
    versions                         cris_edge, torch, onnx, onnxruntime, export opset (and tensorrt
                                     once engines are built)
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

import onnx

from .bundle import CONFIG_FILE, FORMAT, FORMAT_VERSION, sha256_file


def graph_io(model: onnx.ModelProto) -> dict[str, list[dict[str, Any]]]:
    """``{"inputs": [...], "outputs": [...]}`` of a graph: name, numpy dtype name and shape
    (the dynamic dimension by its name, ``"batch"``)."""
    def describe(value: onnx.ValueInfoProto) -> dict[str, Any]:
        tensor = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        return {"name": value.name, "dtype": dtype.name,
                "shape": [d.dim_param or d.dim_value for d in tensor.shape.dim]}

    return {"inputs": [describe(v) for v in model.graph.input],
            "outputs": [describe(v) for v in model.graph.output]}


def utc_now() -> str:
    """The current UTC time, ISO-8601 to the second."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def write_config(bundle_dir: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Fill ``config["files"]`` with the size and sha256 of every file in ``bundle_dir`` (but
    ``config.json``) and write ``config.json``; return the config."""
    config["files"] = {
        path.name: {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        for path in sorted(bundle_dir.iterdir()) if path.is_file() and path.name != CONFIG_FILE}
    config["format"], config["format_version"] = FORMAT, FORMAT_VERSION
    (bundle_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return config
