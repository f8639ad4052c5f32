"""Engines for a bundle: build them beside its graphs (at export, or later on the target with
``cris-export --engine-only BUNDLE``), or say how to build them with ``trtexec``."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from pathlib import Path
from typing import Optional, Sequence

from cris_edge import bundle as bundle_format
from cris_edge.bundle import Bundle, Engine, Graph
from cris_edge.runtime.backends.cuda import find_gpu

from .plugin import LIBRARY, PLUGIN_ENV, find_library
from .progress import Stages
from .staging import check_output, staged_directory
from .tensorrt_build import EngineBuildError, Profile, build_engine, engine_unavailable_reason, trtexec_command

DEFAULT_WORKSPACE_MIB = 1024


def profiles(graph: Graph, max_batch: int) -> dict[str, Profile]:
    """Optimisation profile of one graph: every input at batch 1 (min, opt) to ``max_batch``
    (max), its other dimensions as exported; an input of static shape (the zero-shot global
    graph's image) at that shape."""
    shapes = {}
    for io in graph.inputs:
        rest = tuple(int(d) for d in io.shape[1:])
        last = io.shape[0] if isinstance(io.shape[0], int) else max_batch
        shapes[io.name] = Profile((1, *rest), (1, *rest), (last, *rest))
    return shapes


def _timing_cache(cache_dir: Path) -> Path:
    gpu = find_gpu()
    slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu.name if gpu else "gpu").strip("-")
    return cache_dir / "tensorrt" / f"timing-{slug}-sm{gpu.compute_capability if gpu else 'x'}.cache"


def build_all(bundle_dir: Path, bundle: Bundle, max_batch: int, workspace_mib: int, cache_dir: Path,
              plugin_libraries: Sequence[Path] = ()) -> Bundle:
    """Build ``<graph>.engine`` for every graph in ``bundle_dir``; return ``bundle`` with the
    engines recorded (the caller writes it). ``plugin_libraries`` are loaded for the head (its
    SimUpsample node needs one)."""
    timing = _timing_cache(cache_dir)
    graphs, versions = {}, set()
    for name, graph in bundle.graphs.items():
        engine = Engine(**build_engine(bundle_dir / graph.onnx, bundle_dir / f"{name}.engine",
                                       profiles(graph, max_batch), workspace_mib << 20, timing,
                                       plugin_libraries if name == "head" else ()))
        graphs[name] = dataclasses.replace(graph, engine=engine)
        versions.add(engine.tensorrt)
    return dataclasses.replace(bundle, graphs=graphs, max_batch=max_batch,
                               versions={**bundle.versions, "tensorrt": versions.pop()})


def build_bundle_engines(bundle: Path, max_batch: Optional[int], workspace_mib: int, cache_dir: Path,
                         progress: bool = True, plugin_library: Optional[Path] = None) -> Bundle:
    """``cris-export --engine-only``: (re)build the engines of an existing bundle on this
    machine, atomically (the bundle is rebuilt in a staging directory, then swapped in).
    Returns the new `Bundle`. ``max_batch`` None keeps the bundle's; ``plugin_library`` is used
    when the bundle has plugin nodes (default: `cris_edge.export.plugin.find_library`)."""
    bundle = Path(bundle)
    if max_batch is not None and max_batch < 1:
        raise ValueError(f"max batch must be >= 1, got {max_batch}")
    if workspace_mib < 1:
        raise ValueError(f"workspace must be >= 1 MiB, got {workspace_mib}")
    record = bundle_format.read(bundle)
    check_output(bundle, "bundle")  # swapped whole at the end: anything in it the bundle does not list would go
    reason = engine_unavailable_reason()
    if reason is not None:
        raise EngineBuildError(f"cannot build TensorRT engines here: {reason}")
    if not record.tensorrt_compatible:
        raise EngineBuildError(f"bundle {bundle} is not meant for TensorRT (INT8 with ONNX Runtime's Q/DQ "
                               "placement); re-export it with --int8-placement tensorrt")
    plugins = [find_library(plugin_library)] if record.plugins else []
    stages = Stages(total=2, enabled=progress, title="cris-export --engine-only")
    try:
        with staged_directory(bundle) as stage:
            with stages.step("copying the bundle"):
                engines = {g.engine.file for g in record.graphs.values() if g.engine}
                for name in record.files:  # the bundle's own files, nothing else of the directory
                    if name not in engines:
                        _link_or_copy(bundle / name, stage / name)
            with stages.step("building TensorRT engines"):
                batch = record.max_batch if max_batch is None else max_batch
                record = build_all(stage, record, batch, workspace_mib, cache_dir, plugins)
            record = bundle_format.write(stage, record)
    finally:
        stages.close()
    return record


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def engine_instructions(bundle: Path, record: Bundle, reason: str, workspace_mib: int) -> str:
    """The note printed when an export built no engines: why, and the commands that build them
    on the target device (``cris-export --engine-only`` and the equivalent ``trtexec`` lines)."""
    first = f"No TensorRT engines built: {reason}. The ONNX bundle is complete."
    if not record.tensorrt_compatible:
        return first
    lines = [first, "On the target device (TensorRT 10.3+ and its GPU), build them with:",
             f"  cris-export --engine-only {bundle}",
             f"Equivalent trtexec lines, run in {bundle} (to inspect or profile a build; only "
             "--engine-only records the engines, their TensorRT version and GPU in config.json):"]
    libraries = []
    if record.plugins:
        libraries = [f"${PLUGIN_ENV}"]
        lines.append(f"(the head holds the SimUpsample plugin node: build {LIBRARY} on the device with "
                     f"`cmake -S cpp -B build && cmake --build build` and set {PLUGIN_ENV} to its path)")
    for name, graph in record.graphs.items():
        lines.append("  " + trtexec_command(graph.onnx, f"{name}.engine", profiles(graph, record.max_batch),
                                            workspace_mib, libraries if name == "head" else ()))
    return "\n".join(lines)
