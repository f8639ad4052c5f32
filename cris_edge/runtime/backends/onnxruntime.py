"""The ONNX Runtime backend: a bundle's three ONNX graphs, CUDA provider when present, else CPU.

Sessions are tuned for one inference at a time: all graph optimisations (``ORT_ENABLE_ALL``:
constant folding, fusions, and for INT8 bundles the fusion of Q/DQ pairs into integer kernels
where the placement allows it), intra-op threads = physical cores, sequential execution. Inputs
and outputs are bound by the names in ``config.json``. Never imports torch.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ...bundle import GRAPHS, Bundle, BundleError, graph_path
from ...tokenizer import TokenBatch
from ..device import cuda_index, physical_cores
from .base import GraphBackend, GraphZeroShot, ModelInfo, check_graph_io, plural, refuse_plugin_head

log = logging.getLogger("cris_edge.runtime")

CUDA_PROVIDER, CPU_PROVIDER = "CUDAExecutionProvider", "CPUExecutionProvider"
#: ONNX Runtime's element type names -> numpy dtype names (as a bundle records them).
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int32)": "int32",
               "tensor(int64)": "int64", "tensor(bool)": "bool"}


def cuda_provider_available() -> bool:
    """Whether the installed onnxruntime has the CUDA execution provider (onnxruntime-gpu)."""
    import onnxruntime as ort
    return CUDA_PROVIDER in ort.get_available_providers()


def _io(args) -> list[tuple[str, str, list]]:
    """ONNX Runtime's input or output descriptions -> (name, numpy dtype name, shape: a dynamic
    dimension by its name, None where the graph does not name it)."""
    return [(a.name, _ORT_DTYPES.get(a.type, a.type), list(a.shape)) for a in args]


def _providers(device: Optional[str]) -> list:
    """Execution providers for a parsed ``device`` (None: CUDA when available; "cpu"; "cuda:N")."""
    if device == "cpu":
        return [CPU_PROVIDER]
    if device is None:
        return [CUDA_PROVIDER, CPU_PROVIDER] if cuda_provider_available() else [CPU_PROVIDER]
    if not cuda_provider_available():
        raise ValueError(f"device {device!r} needs ONNX Runtime's CUDA provider, which this onnxruntime lacks "
                         "(pip install onnxruntime-gpu), or use device='cpu'")
    return [(CUDA_PROVIDER, {"device_id": cuda_index(device)}), CPU_PROVIDER]


def session(model: Union[str, os.PathLike, bytes], threads: Optional[int] = None, device: Optional[str] = "cpu",
            optimize: bool = True, optimized_path: Optional[str] = None, fp16: bool = False):
    """An ONNX Runtime session of ``model`` (a file, or serialized bytes), tuned for one
    inference at a time: sequential execution, ``threads`` intra-op threads (None: ONNX Runtime's
    default), idle threads sleeping rather than spinning, warnings and below not logged.
    ``optimize`` False disables graph optimisations (exact reference runs); ``optimized_path``
    saves the optimised graph there. Providers follow ``device`` (see `_providers`). ``fp16``
    (a graph computing in FP16) leaves out the NCHWc layout pass, whose kernels are FP32 only and
    which crashes on some FP16 graphs (the zero-shot text graph's QuickGELU)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                         else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads:
        options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # Idle threads sleep instead of spinning: the numpy/OpenCV stages between graph runs (and
    # the demo's capture and render threads) need those cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if optimized_path:
        options.optimized_model_filepath = optimized_path
    source = model if isinstance(model, bytes) else str(model)
    disabled = ["NchwcTransformer"] if fp16 else None
    return ort.InferenceSession(source, options, providers=_providers(device), disabled_optimizers=disabled)


def open_sessions(bundle_dir: Path, bundle: Bundle, device: Optional[str], threads: int
                  ) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """A checked session per graph of the bundle's kind and each graph's output names."""
    _providers(device)  # a device this onnxruntime cannot use: ValueError before any work
    sessions, outputs = {}, {}
    for name in GRAPHS[bundle.kind]:
        path = graph_path(bundle_dir, bundle, name)
        try:
            sessions[name] = session(path, threads, device, fp16=bundle.precision_details.io == "float16")
        except Exception as err:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
            raise BundleError(f"ONNX Runtime cannot load {path}: {str(err).strip().splitlines()[0]}\n"
                              f"re-export the bundle (cris-export ... --output {bundle_dir})") from err
        check_graph_io(path, bundle.graph(name), name, _io(sessions[name].get_inputs()),
                       _io(sessions[name].get_outputs()))
        outputs[name] = [o.name for o in bundle.graph(name).outputs]
    return sessions, outputs


def _backend_name(provider: str, threads: int) -> str:
    return f"onnxruntime ({provider}, {plural(threads, 'thread')})" if provider == CPU_PROVIDER else \
        f"onnxruntime ({provider})"


class OnnxRuntimeBackend(GraphBackend):
    """A bundle's ``text``, ``visual`` and ``head`` ONNX graphs in ONNX Runtime sessions."""

    def __init__(self, bundle_dir: Path, bundle: Bundle, device: Optional[str] = None,
                 threads: Optional[int] = None):
        refuse_plugin_head(bundle_dir, bundle, "ONNX Runtime")
        self.info = ModelInfo.from_bundle(bundle_dir, bundle)
        self.head_output = bundle.head_output
        self.image_dtype = np.dtype(bundle.graph("visual").input("image").dtype)
        self.threads = int(threads) if threads else physical_cores()
        self._sessions, self._outputs = open_sessions(bundle_dir, bundle, device, self.threads)
        used = self._sessions["visual"].get_providers()[0]
        self.name = _backend_name(used, self.threads)
        int8 = bundle.precision_details.int8
        if int8 is not None and int8.placement == "tensorrt" and used == CPU_PROVIDER:
            log.info("bundle %s holds INT8 Q/DQ placed for TensorRT (FP16 elsewhere): ONNX Runtime's CPU provider "
                     "runs it as dequantize + float ops, slower than FP32; for CPUs export with "
                     "--int8-placement onnxruntime (FP32 accuracy; integer kernels on OpenVINO)", bundle_dir)

    def _run(self, name: str, feeds: dict) -> list[np.ndarray]:
        return self._sessions[name].run(self._outputs[name], feeds)

    def close(self) -> None:
        self._sessions.clear()


class OnnxRuntimeZeroShot(GraphZeroShot):
    """A ``zeroshot`` bundle's ``text``, ``global`` and ``local`` ONNX graphs in ONNX Runtime
    sessions; float32 in and out whatever precision the graphs compute in."""

    def __init__(self, bundle_dir: Path, bundle: Bundle, device: Optional[str] = None,
                 threads: Optional[int] = None):
        self.info = ModelInfo.from_bundle(bundle_dir, bundle)
        self.threads = int(threads) if threads else physical_cores()
        self._sessions, self._outputs = open_sessions(bundle_dir, bundle, device, self.threads)
        self._dtype = np.dtype(bundle.precision_details.io)
        self.name = _backend_name(self._sessions["global"].get_providers()[0], self.threads)

    def _run(self, name: str, feeds: dict) -> list[np.ndarray]:
        return self._sessions[name].run(self._outputs[name], feeds)

    def close(self) -> None:
        self._sessions.clear()
