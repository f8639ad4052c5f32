"""A bundle as a Triton model repository for the full Triton Inference Server containers on GPU
servers (``cris-export --bundle BUNDLE --triton-repository DIR``):

    DIR/cris_text/config.pbtxt     + 1/model.plan (TensorRT engine) or 1/model.onnx (ONNX Runtime)
    DIR/cris_visual/...            the bundle's graphs, dynamic batching, GPU instances
    DIR/cris_head/...
    DIR/cris/config.pbtxt          Python backend: the ``cris-serve`` wire format (`cris_edge.serve.wire`)
    DIR/cris/1/model.py            tokenizer, pre- and post-processing in cris-edge, the three graphs
                                   through BLS (`cris_edge.serve.triton_bls`); the vocabulary beside it

The container needs cris-edge installed for its Python backend (``pip install cris-edge``: numpy,
OpenCV, the tokenizer). Engines run only on the GPU and TensorRT version that built them (the
container's); ``onnxruntime`` graphs run anywhere Triton's ONNX Runtime backend does.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import numpy as np

from cris_edge.bundle import GRAPHS, Bundle, BundleError, file_path, graph_path
from cris_edge.bundle import read as read_bundle
from cris_edge.runtime.backends.base import ModelInfo
from cris_edge.serve import wire
from cris_edge.serve.repository import MAX_FRAME_PIXELS, parameters_block, tensor_block
from cris_edge.serve.triton_bls import GRAPH_MODELS, settings_parameters

from .staging import staged_directory

#: Bundle dtypes as Triton datatypes.
TRITON_DTYPES = {"float32": "FP32", "float16": "FP16", "int32": "INT32", "int64": "INT64", "bool": "BOOL",
                 "uint8": "UINT8", "int8": "INT8"}
PLATFORMS = {"tensorrt": ("tensorrt_plan", "model.plan"), "onnxruntime": ("onnxruntime_onnx", "model.onnx")}
BLS_MODEL_PY = ("# Triton loads this file; the model is cris-edge's (pip install cris-edge in the container).\n"
                "from cris_edge.serve.triton_bls import TritonPythonModel  # noqa: F401\n")


def graph_tensors(bundle: Bundle, graph: str) -> tuple[list[wire.TensorSpec], list[wire.TensorSpec]]:
    """The inputs and outputs of ``graph`` as Triton tensors (the batch dimension left out)."""
    def spec(t) -> wire.TensorSpec:
        return wire.TensorSpec(t.name, np.dtype(t.dtype).type, TRITON_DTYPES[t.dtype],
                               tuple(d if isinstance(d, int) else -1 for d in t.shape[1:]))

    entry = bundle.graph(graph)
    return [spec(t) for t in entry.inputs], [spec(t) for t in entry.outputs]


def graph_config(bundle: Bundle, graph: str, platform: str, instances: int, queue_delay_us: int) -> str:
    """``config.pbtxt`` of the model that runs ``graph``."""
    inputs, outputs = graph_tensors(bundle, graph)
    return (f'name: "{GRAPH_MODELS[graph]}"\nplatform: "{PLATFORMS[platform][0]}"\nmax_batch_size: {bundle.max_batch}\n'
            + tensor_block("input", inputs) + tensor_block("output", outputs)
            + f"dynamic_batching {{ max_queue_delay_microseconds: {queue_delay_us} }}\n"
            + f"instance_group [ {{ count: {instances} kind: KIND_GPU }} ]\n")


def bls_config(bundle_dir: Path, bundle: Bundle, instances: int, queue_delay_us: int, max_frame_pixels: int) -> str:
    """``config.pbtxt`` of model ``cris`` (Python backend, BLS to the graph models)."""
    info = ModelInfo.from_bundle(bundle_dir, bundle)
    info = ModelInfo(info.input_size, info.word_len, info.mean, info.std, info.precision, bundle.vocabulary)
    outputs = {g: [t.name for t in bundle.graph(g).outputs] for g in GRAPHS[bundle.kind]}
    params = settings_parameters(info, bundle.head_output, bundle.graph("visual").input("image").dtype, outputs,
                                 bundle.threshold, bundle.max_batch, max_frame_pixels)
    return (f'name: "{wire.MODEL_NAME}"\nbackend: "python"\nmax_batch_size: {bundle.max_batch}\n'
            + tensor_block("input", wire.INPUTS) + tensor_block("output", wire.OUTPUTS)
            + f"dynamic_batching {{ max_queue_delay_microseconds: {queue_delay_us} }}\n"
            + f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]\n" + parameters_block(params))


def write_triton_repository(bundle_dir: Path, output: Path, platform: Optional[str] = None, instances: int = 1,
                            queue_delay_us: int = 2000, max_frame_pixels: int = MAX_FRAME_PIXELS) -> Path:
    """Write the repository of the bundle ``bundle_dir`` to ``output`` (a new or empty directory,
    built in a staging directory beside it and renamed into place). ``platform``: ``"tensorrt"``
    (the bundle's engines; BundleError without them), ``"onnxruntime"``, or None (TensorRT when
    the bundle has engines). ``instances``: of each model. Returns ``output``."""
    bundle_dir = Path(bundle_dir)
    bundle = read_bundle(bundle_dir)
    if bundle.kind != "cris":
        raise BundleError(f"bundle {bundle_dir} is a {bundle.kind!r} bundle: the Triton repository is written for "
                          "'cris' bundles")
    if bundle.head_output == "plugin":
        raise BundleError(f"bundle {bundle_dir}: its head holds the SimUpsample plugin node, whose output the "
                          "repository's Python model does not post-process: export with --head-output logits")
    platform = platform or ("tensorrt" if bundle.has_engines else "onnxruntime")
    if platform not in PLATFORMS:
        raise ValueError(f"platform must be one of {sorted(PLATFORMS)}, got {platform!r}")
    with staged_directory(Path(output)) as stage:
        for graph in GRAPHS[bundle.kind]:
            model = stage / GRAPH_MODELS[graph]
            (model / "1").mkdir(parents=True)
            source = graph_path(bundle_dir, bundle, graph, "engine" if platform == "tensorrt" else "onnx")
            shutil.copyfile(source, model / "1" / PLATFORMS[platform][1])
            (model / "config.pbtxt").write_text(graph_config(bundle, graph, platform, instances, queue_delay_us))
        cris = stage / wire.MODEL_NAME
        (cris / "1").mkdir(parents=True)
        shutil.copyfile(file_path(bundle_dir, bundle, bundle.vocabulary), cris / "1" / bundle.vocabulary)
        (cris / "1" / "model.py").write_text(BLS_MODEL_PY)
        (cris / "config.pbtxt").write_text(bls_config(bundle_dir, bundle, instances, queue_delay_us, max_frame_pixels))
    return Path(output)
