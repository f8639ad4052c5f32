"""The OpenVINO backend: a bundle's three ONNX graphs compiled by OpenVINO for the CPU (or an
Intel GPU / NPU: ``device="openvino:GPU"``). Never imports torch.

Compiled for one inference at a time: the latency hint, ``threads`` inference threads (default:
the physical cores; CPU only), one infer request per graph. INT8 bundles run as integer kernels
whichever Q/DQ placement they were exported with (OpenVINO's low-precision transformations fuse
the Q/DQ pairs).

Inference precision is never changed silently. OpenVINO's CPU default on CPUs with bfloat16
units is bf16 for every float layer; here it is the bundle's (`inference_precision`): ``f32`` for
FP32 bundles and the float layers of INT8 bundles, ``f16`` for FP16 bundles where the device
computes in FP16 (Intel GPUs and NPUs, CPUs with AVX512-FP16 / AMX-FP16) and ``f32`` where it
does not; ``bf16`` only when asked (``inference_precision="bf16"``). Dynamic quantization of
activations is off. The choice is in the backend's name and logged. Compiled models are cached
under ``<cache_dir>/openvino`` (keyed by OpenVINO on the graph file and these settings).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Optional

import numpy as np

from ...bundle import GRAPHS, Bundle, BundleError, graph_path
from ...paths import cache_dir
from ..device import openvino_device, physical_cores
from .base import (BackendUnavailableError, GraphBackend, GraphZeroShot, ModelInfo, check_graph_io, plural,
                   refuse_plugin_head)

log = logging.getLogger("cris_edge.runtime")

#: ``inference_precision`` values a user may ask for -> OpenVINO's element type names.
PRECISIONS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}
#: The OPTIMIZATION_CAPABILITIES entry a device lists when it computes in that precision.
_CAPABILITY = {"f32": "FP32", "f16": "FP16", "bf16": "BF16"}


def inference_precision(bundle: Bundle, capabilities, asked: Optional[str] = None) -> tuple[str, str]:
    """(OpenVINO inference precision ``"f32"`` / ``"f16"`` / ``"bf16"``, why) for ``bundle`` on a
    device with ``capabilities`` (its OPTIMIZATION_CAPABILITIES). ``asked`` (``"fp32"``,
    ``"fp16"``, ``"bf16"``; None: the bundle's) must be one the device has
    (`BackendUnavailableError` otherwise)."""
    if asked is not None:
        if asked not in PRECISIONS:
            raise ValueError(f"inference_precision must be None (the bundle's) or one of {tuple(PRECISIONS)}, "
                             f"got {asked!r}")
        precision = PRECISIONS[asked]
        if _CAPABILITY[precision] not in capabilities:
            raise BackendUnavailableError(f"inference_precision={asked!r} was asked for, but this OpenVINO device "
                                          f"does not compute in it (its capabilities: {', '.join(capabilities)})")
        return precision, "asked for"
    float_layers = bundle.precision
    if bundle.precision == "int8":
        float_layers = bundle.precision_details.int8.unquantized_layers
    if float_layers == "fp16":
        if "FP16" in capabilities:
            return "f16", "the bundle's FP16 layers"
        return "f32", "the bundle's FP16 layers, computed in f32: the device has no FP16 arithmetic"
    return "f32", f"the bundle's {'float layers' if bundle.precision == 'int8' else 'precision'} (FP32)"


@functools.lru_cache(maxsize=None)
def openvino_core():
    """The process's one ``openvino.Core``, created on first use and kept for the process's life.

    One Core, never released, because OpenVINO's CPU plugin installs an alternate signal stack on
    the thread that creates it and unmaps that stack when the plugin is destroyed, putting the
    previous one back only if its own is still the current one. Two Cores (two plugins) released in
    the order they were created leave the thread's alternate stack pointing at unmapped memory, and
    the next signal handled there (CPython installs its handlers with SA_ONSTACK: the SIGCHLD
    handler of torch's DataLoader, asyncio's) kills the process with SIGSEGV.
    """
    import openvino as ov

    return ov.Core()


class _OpenVinoGraphs:
    """The graphs of a bundle (either kind) compiled by OpenVINO, one infer request each: what
    `OpenVinoBackend` and `OpenVinoZeroShot` share."""

    def _compile(self, bundle_dir: Path, bundle: Bundle, device: Optional[str], threads: Optional[int],
                 precision: Optional[str]) -> None:
        core = openvino_core()
        target = openvino_device(device)
        if target.split(".")[0] not in {d.split(".")[0] for d in core.available_devices}:
            raise BackendUnavailableError(f"OpenVINO has no {target} device here (it has: "
                                          f"{', '.join(core.available_devices) or 'none'})")
        if threads is not None and target != "CPU":
            raise ValueError(f"threads applies to OpenVINO's CPU device, not {target}")
        self.info = ModelInfo.from_bundle(bundle_dir, bundle)
        self.precision, why = inference_precision(bundle, core.get_property(target, "OPTIMIZATION_CAPABILITIES"),
                                                  precision)
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": self.precision}
        if target == "CPU":
            self.threads = int(threads) if threads else physical_cores()
            config.update(INFERENCE_NUM_THREADS=self.threads, DYNAMIC_QUANTIZATION_GROUP_SIZE=0)
        compiled_cache = cache_dir() / "openvino"
        try:
            compiled_cache.mkdir(parents=True, exist_ok=True)
            config["CACHE_DIR"] = str(compiled_cache)
        except OSError as err:
            log.info("OpenVINO compiled-model cache off: cannot create %s (%s)", compiled_cache, err.strerror)
        self._requests, self._outputs = {}, {}
        for name in GRAPHS[bundle.kind]:
            path = graph_path(bundle_dir, bundle, name)
            try:
                compiled = core.compile_model(str(path), target, config)
            except RuntimeError as err:  # OpenVINO raises RuntimeError (or subclasses) for a graph it cannot read
                raise BundleError(f"OpenVINO cannot load {path}: {str(err).strip().splitlines()[0]}\n"
                                  f"re-export the bundle (cris-export ... --output {bundle_dir})") from err
            graph = bundle.graph(name)
            check_graph_io(path, graph, name, _ports(compiled.inputs, graph.inputs),
                           _ports(compiled.outputs, graph.outputs))
            self._requests[name] = compiled.create_infer_request()
            self._outputs[name] = [compiled.output(o.name) for o in graph.outputs]
        where = f"CPU, {plural(self.threads, 'thread')}" if target == "CPU" else target
        self.name = f"openvino ({where}, {self.precision} inference)"
        log.info("OpenVINO on %s: inference precision %s (%s)", target, self.precision, why)

    def _run(self, name: str, feeds: dict) -> list[np.ndarray]:
        results = self._requests[name].infer({k: np.ascontiguousarray(v) for k, v in feeds.items()},
                                             share_inputs=True)
        return [results[port] for port in self._outputs[name]]

    def close(self) -> None:
        self._requests.clear()


class OpenVinoBackend(_OpenVinoGraphs, GraphBackend):
    """A bundle's ``text``, ``visual`` and ``head`` ONNX graphs compiled by OpenVINO on ``device``
    (parsed: None / ``"cpu"`` or ``"openvino:NAME"``), ``threads`` CPU inference threads (None:
    physical cores), in ``precision`` (None: the bundle's; ``"bf16"`` on request: see the module)."""

    def __init__(self, bundle_dir: Path, bundle: Bundle, device: Optional[str] = None,
                 threads: Optional[int] = None, precision: Optional[str] = None):
        refuse_plugin_head(bundle_dir, bundle, "OpenVINO")
        self._compile(bundle_dir, bundle, device, threads, precision)
        self.head_output = bundle.head_output
        self.image_dtype = np.dtype(bundle.graph("visual").input("image").dtype)


class OpenVinoZeroShot(_OpenVinoGraphs, GraphZeroShot):
    """A ``zeroshot`` bundle's ``text``, ``global`` and ``local`` graphs compiled by OpenVINO, as
    `OpenVinoBackend` compiles a CRIS bundle's; float32 in and out."""

    def __init__(self, bundle_dir: Path, bundle: Bundle, device: Optional[str] = None,
                 threads: Optional[int] = None, precision: Optional[str] = None):
        self._compile(bundle_dir, bundle, device, threads, precision)
        self._dtype = np.dtype(bundle.precision_details.io)


def _ports(ports, declared) -> list[tuple[str, str, list]]:
    """OpenVINO ports -> (name, numpy dtype name, shape with None for a dynamic dimension). A port
    may carry several tensor names (the ONNX graph's and its producers'): the ``declared`` one
    (`TensorSpec` s, in order) where it is among them."""
    names = [d.name for d in declared]
    return [(names[i] if i < len(names) and names[i] in p.get_names() else p.get_any_name(),
             np.dtype(p.get_element_type().to_dtype()).name,
             [d.get_length() if d.is_static else None for d in p.get_partial_shape()]) for i, p in enumerate(ports)]
