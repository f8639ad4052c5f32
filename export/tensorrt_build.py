"""TensorRT engines from the bundle's ONNX graphs, with TensorRT's Python builder API (10.3 on
JetPack 6 through 11.x).

The precision is already in the ONNX file (FP16 casts, INT8 Q/DQ), so the network is built
strongly typed (TensorRT 10: the STRONGLY_TYPED creation flag; 11: always) with no precision
flags. One optimisation profile covers batch 1..max on every input; a timing cache is loaded
and saved across builds; the workspace pool is capped.

The GPU is found (`find_gpu`, from :mod:`cris_edge.runtime.backends.cuda`) before anything of
TensorRT is touched: some TensorRT wheels crash when a runtime or builder is created on a machine
without one. tensorrt is imported for type checking only at module level (see
tests/test_typing_tensorrt.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Optional, Sequence

from cris_edge.paths import atomic_output
from cris_edge.runtime.backends.cuda import find_gpu
from cris_edge.runtime.backends.trt_check import tensorrt_installed

if TYPE_CHECKING:
    import tensorrt as trt

__all__ = ["EngineBuildError", "Profile", "build_engine", "engine_unavailable_reason", "trtexec_command"]


@dataclass(frozen=True)
class Profile:
    """Shapes of one input for the optimisation profile (min, opt, max)."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


def engine_unavailable_reason() -> Optional[str]:
    """Why engines cannot be built here (no GPU, no TensorRT), or None when they can."""
    if not tensorrt_installed():
        return "TensorRT is not installed (pip install 'cris-edge[trt]' on the target device)"
    if find_gpu() is None:
        return "no CUDA GPU found"
    return None


class EngineBuildError(RuntimeError):
    """TensorRT could not parse a graph or build its engine."""


def build_engine(onnx_path: Path, engine_path: Path, profiles: Mapping[str, Profile], workspace_bytes: int,
                 timing_cache: Path, plugin_libraries: Sequence[Path] = ()) -> dict:
    """Build and save the engine of one ONNX graph; return its metadata (``file``,
    ``tensorrt``, ``gpu``, ``compute_capability``, ``bytes``).

    Requires `engine_unavailable_reason` to be None. ``plugin_libraries`` are loaded into
    TensorRT's plugin registry first (for graphs holding plugin nodes).
    """
    gpu = find_gpu()
    if gpu is None:  # checked before TensorRT is imported: see the module docstring
        raise EngineBuildError("no CUDA GPU found; build engines on the target device")
    import tensorrt as trt

    logger: trt.Logger = trt.Logger(trt.Logger.WARNING)
    for library in plugin_libraries:
        trt.get_plugin_registry().load_library(str(library))
    builder: trt.Builder = trt.Builder(logger)
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network: trt.INetworkDefinition = builder.create_network(0 if flag is None else 1 << int(flag))
    parser: trt.OnnxParser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n  ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT {trt.__version__} cannot parse {onnx_path.name}:\n  {errors}")
    config: trt.IBuilderConfig = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    profile: trt.IOptimizationProfile = builder.create_optimization_profile()
    for name, shapes in profiles.items():
        profile.set_shape(name, trt.Dims(list(shapes.min)), trt.Dims(list(shapes.opt)), trt.Dims(list(shapes.max)))
    config.add_optimization_profile(profile)
    cache: trt.ITimingCache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized: Optional[trt.IHostMemory] = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT {trt.__version__} failed to build {onnx_path.name} (see its log above)")
    engine_path.write_bytes(memoryview(serialized))
    with atomic_output(timing_cache) as partial:  # whole or not at all: a later build reads it
        partial.write_bytes(memoryview(config.get_timing_cache().serialize()))
    return {"file": engine_path.name, "tensorrt": trt.__version__, "gpu": gpu.name,
            "compute_capability": gpu.compute_capability, "bytes": engine_path.stat().st_size}


def trtexec_command(onnx_file: str, engine_file: str, profiles: Mapping[str, Profile], workspace_mib: int,
                    plugin_libraries: Sequence[str] = ()) -> str:
    """The ``trtexec`` line that builds the same engine as `build_engine` (run in the bundle
    directory on the target device)."""
    def shapes(which: str) -> str:
        return ",".join(f"{name}:{'x'.join(map(str, getattr(p, which)))}" for name, p in profiles.items())

    parts = ["trtexec", f"--onnx={onnx_file}", f"--saveEngine={engine_file}", "--stronglyTyped",
             f"--minShapes={shapes('min')}", f"--optShapes={shapes('opt')}", f"--maxShapes={shapes('max')}",
             f"--memPoolSize=workspace:{workspace_mib}M", "--timingCacheFile=timing.cache"]
    parts += [f"--dynamicPlugins={lib}" for lib in plugin_libraries]
    return " ".join(parts)
