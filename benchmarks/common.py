"""What `latency.py` and `stream.py` share: the machine and versions, process memory, bundle
sizes, tables and output files (bundles are exported once into the cache by
`cris_edge.export.cached`).

Memory figures are MiB (2**20 bytes); times are milliseconds unless a name says otherwise.
Nothing here imports torch, onnxruntime, OpenVINO or TensorRT.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Iterable, Optional, Sequence

MIB = float(1 << 20)
#: Packages whose versions every result records (absent ones are recorded as None).
PACKAGES = ("cris-edge", "numpy", "opencv-python-headless", "onnxruntime", "onnxruntime-gpu", "openvino", "torch",
            "tensorrt", "cuda-python")


# -- machine ----------------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> Optional[list[float]]:
    """The 1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def versions() -> dict[str, Optional[str]]:
    """Installed versions of `PACKAGES` (read from package metadata: nothing is imported)."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def machine() -> dict:
    """CPU model, logical CPUs usable by this process, OS, Python, GPU (None without one) and the
    load average now; every result file records it."""
    from cris_edge.runtime.backends.cuda import find_gpu  # cuda-python or nvidia-smi; imports no TensorRT

    gpu = find_gpu()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu_model(), "logical_cpus": usable, "os": platform.platform(),
            "python": platform.python_version(),
            "gpu": None if gpu is None else {"name": gpu.name, "compute_capability": gpu.compute_capability},
            "load_average_start": load_average()}


# -- memory -----------------------------------------------------------------------------------
def _status_kib(field: str) -> Optional[int]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_mib() -> Optional[float]:
    """This process's resident memory now (VmRSS), MiB; None where /proc is absent."""
    kib = _status_kib("VmRSS")
    return None if kib is None else round(kib / 1024, 1)


def peak_rss_mib() -> Optional[float]:
    """This process's peak resident memory (VmHWM, or ru_maxrss), MiB."""
    kib = _status_kib("VmHWM")
    if kib is None:
        try:
            import resource
            kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        except (ImportError, OSError):
            return None
    return round(kib / 1024, 1)


def device_used_mib() -> Optional[float]:
    """GPU memory in use on device 0 (all processes: cudaMemGetInfo total - free), MiB; None
    without cuda-python or a GPU."""
    try:
        from cris_edge.runtime.backends import cuda
        if cuda.device_count() == 0:
            return None
        free, total = cuda.call(cuda.runtime().cudaMemGetInfo())
    except Exception:  # no cuda-python, no driver, or a CUDA error: nothing to report
        return None
    return round((int(total) - int(free)) / MIB, 1)


# -- bundles ----------------------------------------------------------------------------------
def bundle_sizes(bundle: Path, config) -> dict[str, int]:
    """Bytes of a bundle's ONNX graphs and engines (``onnx_bytes``, ``engine_bytes``; 0 when it
    has none) and of the whole directory (``bundle_bytes``); ``config`` is its `Bundle`."""
    onnx = sum(config.files[g.onnx].bytes for g in config.graphs.values())
    engine = sum(config.files[g.engine.file].bytes for g in config.graphs.values() if g.engine)
    total = sum(p.stat().st_size for p in bundle.iterdir() if p.is_file())
    return {"onnx_bytes": onnx, "engine_bytes": engine, "bundle_bytes": total}


# -- output -----------------------------------------------------------------------------------
def fmt(value, digits: int = 1) -> str:
    """A table cell: numbers rounded to ``digits``, None as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A GitHub markdown table; cells go through `fmt`."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_text(path: Optional[Path], text: str, what: str) -> None:
    """Write ``text`` to ``path`` (parents made) and say so on stderr; nothing when ``path`` is None."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {what}: {path}", file=sys.stderr)


def write_json(path: Optional[Path], data: dict) -> None:
    """`write_text` of ``data`` as indented JSON."""
    write_text(path, json.dumps(data, indent=2) + "\n", "JSON")


def progress(message: str) -> None:
    """One progress line on stderr (stdout carries the results)."""
    print(message, file=sys.stderr, flush=True)
