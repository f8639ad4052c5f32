"""What a `Segmenter` runs: the model files given (`locate`), the backend that runs them
(`choose`, which for ``"auto"`` picks the fastest one available and says why) and opening it
(`open_backend`). Imports no backend's framework until it is opened.

``"auto"`` on a bundle: TensorRT when its engines match this machine's TensorRT and NVIDIA GPU;
else OpenVINO when it is installed, the device is the CPU (or an OpenVINO device) and the CPU is
x86-64 (OpenVINO's CPU plugin has INT8 kernels there: VNNI / AMX), unless onnxruntime-gpu is
installed and no device was named (its CUDA provider then runs the graphs); else ONNX Runtime."""

from __future__ import annotations

import importlib.util
import logging
import os
import platform
from importlib import metadata
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from .. import bundle as bundle_format
from ..bundle import CONFIG_FILE, Bundle, BundleError, EngineMismatchError
from .backends import BACKENDS
from .backends.base import Backend, BackendUnavailableError, ZeroShotBackend, refuse_plugin_head
from .device import is_openvino

log = logging.getLogger("cris_edge.runtime")

_GRAPH_SUFFIXES = {".onnx": "onnx", ".engine": "engine", ".plan": "engine"}


@dataclass(frozen=True)
class ModelFiles:
    """A bundle (``path`` = its directory, ``bundle`` its validated config.json; ``graph_kind``
    "onnx" or "engine" when one of its graph files was given) or a PyTorch checkpoint (``path``)."""

    path: Path
    bundle: Optional[Bundle] = None
    graph_kind: Optional[str] = None

    @property
    def is_bundle(self) -> bool:
        return self.bundle is not None


def locate(engine) -> ModelFiles:
    """``engine``: a bundle directory, one of its ``.onnx`` / ``.engine`` files, or a checkpoint.
    A bundle's config and file hashes are verified (BundleError naming a damaged file)."""
    if not isinstance(engine, (str, os.PathLike)):
        raise ValueError(f"engine must be a path (bundle directory, .engine, .onnx or checkpoint), "
                         f"got {type(engine).__name__}")
    path = Path(engine)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: pass a bundle directory written by cris-export, one of its "
                                ".engine/.onnx files, or a PyTorch checkpoint")
    if path.is_dir():
        return ModelFiles(path, bundle_format.read(path))
    kind = _GRAPH_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        return ModelFiles(path)
    if not (path.parent / CONFIG_FILE).is_file():
        raise BundleError(f"{path} is not inside a cris-export bundle (no {CONFIG_FILE} beside it): the runtime needs "
                          "the bundle's three graphs and its config; pass the directory cris-export wrote")
    bundle = bundle_format.read(path.parent)
    names = [(g.engine.file if g.engine else None) if kind == "engine" else g.onnx for g in bundle.graphs.values()]
    if path.name not in names:
        raise BundleError(f"{path.name} is not one of the {kind} files of bundle {path.parent} "
                          f"({[n for n in names if n]})")
    return ModelFiles(path.parent, bundle, kind)


def openvino_instead(device) -> Optional[str]:
    """Why OpenVINO runs a bundle that TensorRT does not (see the module), or None when ONNX
    Runtime should."""
    if importlib.util.find_spec("openvino") is None:
        return None
    if is_openvino(device):
        return f"device {device} is an OpenVINO device"
    if device not in (None, "cpu") or platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    if device is None and _installed("onnxruntime-gpu"):
        return None
    return "OpenVINO is installed and this is an x86-64 CPU (where it runs INT8 bundles of either Q/DQ placement " \
           "as integer kernels)"


def _installed(distribution: str) -> bool:
    try:
        metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def choose(files: ModelFiles, backend: str, device) -> tuple[str, str]:
    """``(backend name, why)`` for ``files``. ``"auto"``: a checkpoint runs on PyTorch; an
    ``.onnx`` file on ONNX Runtime (OpenVINO for an OpenVINO device), an ``.engine`` on TensorRT;
    a bundle on TensorRT when its engines match this machine's TensorRT and GPU, else on OpenVINO
    or ONNX Runtime (`openvino_instead`)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if is_openvino(device):
        if backend not in ("auto", "openvino"):
            raise ValueError(f"device {device!r} is an OpenVINO device, which only backend='openvino' runs")
        if not files.is_bundle:
            raise ValueError(f"{files.path} is a PyTorch checkpoint; OpenVINO runs a bundle: export it first: "
                             f"cris-export --checkpoint {files.path} --precision fp32 --output BUNDLE")
        if backend == "auto":
            return "openvino", f"device {device} is an OpenVINO device"
    if not files.is_bundle:
        if backend not in ("auto", "pytorch"):
            raise ValueError(f"{files.path} is a PyTorch checkpoint, which runs on the pytorch backend; for {backend}, "
                             f"export it first: cris-export --checkpoint {files.path} --precision fp16 --output BUNDLE")
        return "pytorch", "a PyTorch checkpoint was given"
    if backend == "pytorch":
        raise ValueError(f"the pytorch backend runs a checkpoint, not a bundle: pass the checkpoint bundle "
                         f"{files.path} was exported from ({files.bundle.checkpoint.file})")
    if backend != "auto":
        return backend, "asked for"
    if files.graph_kind == "onnx":
        return "onnxruntime", "an .onnx file was given"
    if files.graph_kind == "engine":
        return "tensorrt", "an .engine file was given"
    from .backends.trt_check import check_tensorrt

    try:
        check_tensorrt(files.path, files.bundle, device)
    except (BackendUnavailableError, EngineMismatchError) as err:
        try:
            refuse_plugin_head(files.path, files.bundle, "ONNX Runtime")
        except BundleError as refusal:
            raise BackendUnavailableError(f"{refusal}; TensorRT cannot run it here: {err}") from None
        why_openvino = openvino_instead(device)
        if isinstance(err, EngineMismatchError):
            log.warning("%s\nusing %s until then", err, "OpenVINO" if why_openvino else "ONNX Runtime")
        not_used = "TensorRT not used: " + " ".join(str(err).split())
        if why_openvino:
            return "openvino", f"{not_used}; {why_openvino}"
        return "onnxruntime", not_used
    return "tensorrt", "its engines match this machine's TensorRT and GPU"


def open_backend(name: str, files: ModelFiles, device, threads: Optional[int], config,
                 inference_precision: Optional[str] = None) -> Union[Backend, ZeroShotBackend]:
    """Open backend ``name`` on ``files`` (a `ZeroShotBackend` for a ``zeroshot`` bundle);
    BackendUnavailableError when its package is missing. ``inference_precision`` is OpenVINO's
    alone (ValueError for the others)."""
    if inference_precision is not None and name != "openvino":
        raise ValueError(f"inference_precision applies to the OpenVINO backend; {name} runs a bundle in the "
                         "precision it was exported in")
    zeroshot = files.is_bundle and files.bundle.kind == "zeroshot"
    if name == "tensorrt":
        if threads is not None:
            raise ValueError("threads applies to ONNX Runtime and OpenVINO; the TensorRT backend runs on the GPU")
        if zeroshot:
            from .backends.tensorrt_zeroshot import TensorRTZeroShot
            return TensorRTZeroShot(files.path, files.bundle, device)
        from .backends.tensorrt import TensorRTBackend
        return TensorRTBackend(files.path, files.bundle, device)
    if name == "openvino":
        if importlib.util.find_spec("openvino") is None:
            raise BackendUnavailableError("openvino is not installed: pip install -c constraints.txt "
                                          "'cris-edge[openvino]'")
        from .backends.openvino import OpenVinoBackend, OpenVinoZeroShot
        return (OpenVinoZeroShot if zeroshot else OpenVinoBackend)(files.path, files.bundle, device, threads,
                                                                   inference_precision)
    if name == "onnxruntime":
        if importlib.util.find_spec("onnxruntime") is None:
            raise BackendUnavailableError("onnxruntime is not installed: pip install -c constraints.txt "
                                          "'cris-edge[onnxruntime]' (or 'cris-edge[onnxruntime-gpu]' for its CUDA provider)")
        from .backends.onnxruntime import OnnxRuntimeBackend, OnnxRuntimeZeroShot
        return (OnnxRuntimeZeroShot if zeroshot else OnnxRuntimeBackend)(files.path, files.bundle, device, threads)
    if importlib.util.find_spec("torch") is None:
        raise BackendUnavailableError("the pytorch backend needs torch: pip install -c constraints.txt "
                                      "'cris-edge[torch]'")
    if threads is not None:
        raise ValueError("threads applies to ONNX Runtime and OpenVINO; torch's threads are process-wide: call "
                         "torch.set_num_threads in your program")
    from .backends.pytorch import TorchBackend
    return TorchBackend.from_checkpoint(files.path, config, device)
