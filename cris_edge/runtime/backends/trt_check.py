"""Whether a bundle's TensorRT engines can run here, and the plugin library they need, found
without creating any TensorRT object (TensorRT's lean runtime crashes on a machine without a
GPU, so tensorrt is imported only once one is found). `Segmenter`'s backend choice asks this
before the TensorRT backend itself is imported."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

from ...bundle import Bundle, BundleError, check_engines
from ...paths import TRT_PLUGIN_ENV, LibraryNotFoundError, find_library
from ..device import cuda_index
from . import cuda
from .base import BackendUnavailableError


def tensorrt_installed() -> bool:
    """Whether the ``tensorrt`` Python package is installed (without importing it). A directory
    ``tensorrt`` without ``__init__.py`` (a namespace package, e.g. what ``tensorrt-stubs`` leaves
    in site-packages) is not TensorRT."""
    spec = importlib.util.find_spec("tensorrt")
    return spec is not None and spec.origin is not None


def check_tensorrt(bundle_dir: Path, bundle: Bundle, device: Optional[str] = None) -> None:
    """Raise `BackendUnavailableError` (TensorRT, cuda-python, a GPU or the engines missing) or
    `EngineMismatchError` (engines of another TensorRT version or GPU) unless the bundle's
    engines can run on (parsed) ``device`` here."""
    if device == "cpu":
        raise BackendUnavailableError("device 'cpu' was asked for")
    if not bundle.tensorrt_compatible:
        raise BackendUnavailableError("the bundle is INT8 placed for ONNX Runtime (--int8-placement onnxruntime)")
    if not bundle.has_engines:
        raise BackendUnavailableError(f"the bundle has no TensorRT engines; build them on this machine with "
                                      f"`cris-export --engine-only {bundle_dir}`")
    if not tensorrt_installed():
        raise BackendUnavailableError("TensorRT is not installed (pip install 'cris-edge[trt]', or JetPack's "
                                      "python3-libnvinfer)")
    try:
        cuda.runtime()
    except ImportError as err:
        raise BackendUnavailableError(str(err)) from None
    index, count = cuda_index(device), cuda.device_count()
    if count == 0:
        raise BackendUnavailableError("no CUDA GPU found (or no NVIDIA driver)")
    if index >= count:
        raise BackendUnavailableError(f"no CUDA device {index}: {count} found")
    import tensorrt as trt

    check_engines(bundle_dir, bundle, trt.__version__, *cuda.gpu_info(index))


def plugin_library(bundle_dir: Path, bundle: Bundle) -> Path:
    """The TensorRT plugin library the bundle's engines need: ``$CRIS_EDGE_TRT_PLUGIN``, else the
    bundle's own copy when it lists (and so verified) one, else ``build/`` of a source checkout;
    never a path the bundle chooses. BundleError says how to build it."""
    if bundle.plugins is None:
        raise BundleError(f"bundle {bundle_dir} needs no TensorRT plugin")
    name = bundle.plugins.library
    places = [Path(bundle_dir)] if name in bundle.files else []
    try:
        return find_library(name, TRT_PLUGIN_ENV, places)
    except LibraryNotFoundError as err:
        raise BundleError(f"bundle {bundle_dir} needs the TensorRT plugin library (its head holds the SimUpsample "
                          f"node): {err}; build it on this device with `cmake -S cpp -B build && cmake --build "
                          f"build` and set {TRT_PLUGIN_ENV} to its path") from None
