"""The CUDA runtime through cuda-python, as the TensorRT backend uses it: device and pinned host
memory, one stream, timing events, CUDA graphs.

cuda-python's runtime module is ``cuda.bindings.runtime`` (cuda-python >= 12.6, and the only one
in 13.x) or ``cuda.cudart`` (12.2 - 12.5); both are found. Its calls return ``(error, *values)``
tuples; `call` unpacks them and raises `CudaError`. Install the cuda-python major version of your
driver's CUDA (12.x on JetPack 6 and CUDA 12 drivers, 13.x on CUDA 13 drivers).

This module is also the one place that finds the GPU (`find_gpu`, for `cris-export` and the
benchmarks): importing it needs neither cuda-python nor a GPU, and it never imports TensorRT.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import subprocess
import weakref
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np


class CudaError(RuntimeError):
    """A CUDA runtime call failed."""


@functools.lru_cache(maxsize=None)
def runtime():
    """cuda-python's CUDA runtime module; ImportError saying what to install if absent."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise ImportError("the TensorRT backend needs cuda-python: pip install 'cuda-python>=12.2,<13' "
                              "(CUDA 12 drivers, JetPack 6) or 'cuda-python>=13,<14' (CUDA 13 drivers)") from None
    return cudart


def call(result):
    """Check a cuda-python result ``(error, *values)``: raise `CudaError` on an error, else return
    None, the one value, or the tuple of values."""
    err, *values = result
    if int(err) != 0:
        rt = runtime()
        name = rt.cudaGetErrorName(err)[1]
        raise CudaError(f"CUDA error {int(err)} ({name.decode() if isinstance(name, bytes) else name})")
    return None if not values else values[0] if len(values) == 1 else tuple(values)


def device_count() -> int:
    """CUDA devices visible to this process; 0 without a driver (cuda-python 12.x raises instead
    of returning an error then) or without cuda-python."""
    try:
        err, count = runtime().cudaGetDeviceCount()
    except (ImportError, RuntimeError):
        return 0
    return int(count) if int(err) == 0 else 0


def gpu_info(index: int) -> tuple[str, str]:
    """``(name, compute capability "8.7")`` of CUDA device ``index``, as `cris-export` records
    them in a bundle's engine metadata."""
    props = call(runtime().cudaGetDeviceProperties(index))
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return name.rstrip("\0").strip(), f"{props.major}.{props.minor}"


@dataclass(frozen=True)
class GpuInfo:
    """A CUDA device as engines are built for it: its name and compute capability (``"8.7"``)."""

    name: str
    compute_capability: str


def find_gpu(index: int = 0) -> Optional[GpuInfo]:
    """CUDA device ``index`` as cuda-python sees it, else as ``nvidia-smi`` reports it; None
    when neither finds a GPU. Never imports TensorRT (which some wheels need a GPU to import
    safely)."""
    if device_count() > index:
        try:
            return GpuInfo(*gpu_info(index))
        except (CudaError, RuntimeError):
            pass
    return _gpu_from_nvidia_smi(index)


def _gpu_from_nvidia_smi(index: int = 0) -> Optional[GpuInfo]:
    """GPU ``index`` from ``nvidia-smi``, which lists GPUs in PCI order and ignores
    ``CUDA_VISIBLE_DEVICES``: answered only where that is CUDA's order too (one GPU and no
    device mask, or ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` and no mask), else None."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        return None
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    lines = out.strip().splitlines()
    if len(lines) > 1 and os.environ.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID":
        return None
    name, _, capability = (lines[index] if index < len(lines) else "").rpartition(",")
    return GpuInfo(name.strip(), capability.strip()) if name and capability.strip() else None


def _free_device(ptr: int) -> None:
    runtime().cudaFree(ptr)


def _free_host(ptr: int) -> None:
    runtime().cudaFreeHost(ptr)


class DeviceBuffer:
    """``nbytes`` of device memory at ``ptr`` (freed when the object is collected or `free`d)."""

    def __init__(self, nbytes: int):
        self.nbytes = int(nbytes)
        self.ptr = int(call(runtime().cudaMalloc(max(self.nbytes, 1))))
        self.free = weakref.finalize(self, _free_device, self.ptr)


class PinnedBuffer:
    """``nbytes`` of page-locked host memory (fast, truly asynchronous copies); `view` gives
    numpy arrays over it."""

    def __init__(self, nbytes: int):
        self.nbytes = int(nbytes)
        self.ptr = int(call(runtime().cudaMallocHost(max(self.nbytes, 1))))
        self.free = weakref.finalize(self, _free_host, self.ptr)

    def view(self, dtype, shape: tuple[int, ...], offset: int = 0) -> np.ndarray:
        """A numpy array of ``dtype`` and ``shape`` over the buffer from byte ``offset``."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if offset + nbytes > self.nbytes:
            raise ValueError(f"view of {nbytes} bytes at {offset} exceeds the {self.nbytes}-byte pinned buffer")
        raw = (ctypes.c_ubyte * nbytes).from_address(self.ptr + offset)
        return np.frombuffer(raw, dtype=dtype).reshape(shape)


class Stream:
    """A non-blocking CUDA stream; ``handle`` is its address for TensorRT and the C kernels."""

    def __init__(self):
        rt = runtime()
        self._stream = call(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking))
        self.handle = int(self._stream)
        self.close = weakref.finalize(self, rt.cudaStreamDestroy, self._stream)

    def synchronize(self) -> None:
        call(runtime().cudaStreamSynchronize(self._stream))


def copy_async(dst: int, src: int, nbytes: int, kind: str, stream: Stream) -> None:
    """``cudaMemcpyAsync``; ``kind`` is "htod", "dtoh" or "dtod"."""
    rt = runtime()
    kinds = {"htod": rt.cudaMemcpyKind.cudaMemcpyHostToDevice, "dtoh": rt.cudaMemcpyKind.cudaMemcpyDeviceToHost,
             "dtod": rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice}
    call(rt.cudaMemcpyAsync(dst, src, int(nbytes), kinds[kind], stream.handle))


def copy_rows_async(dst: int, dst_pitch: int, src: int, src_pitch: int, width: int, rows: int,
                    stream: Stream) -> None:
    """Device-to-device ``cudaMemcpy2DAsync``: ``rows`` rows of ``width`` bytes, pitches in bytes."""
    rt = runtime()
    call(rt.cudaMemcpy2DAsync(dst, int(dst_pitch), src, int(src_pitch), int(width), int(rows),
                              rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream.handle))


class EventTimer:
    """Stage timing with CUDA events on one stream: `start`, then `mark(stage)` after each
    stage's work is enqueued; once the stream is synchronised, `elapsed` gives the summed
    milliseconds per stage. Events are recorded as external event nodes, so they also time the
    stages inside a captured CUDA graph."""

    def __init__(self, stream: Stream):
        self._stream = stream
        self._pool: list = []
        self._stages: list[Optional[str]] = []

    def _record(self, stage: Optional[str]) -> None:
        rt = runtime()
        if len(self._pool) == len(self._stages):
            event = call(rt.cudaEventCreate())
            weakref.finalize(self, rt.cudaEventDestroy, event)
            self._pool.append(event)
        call(rt.cudaEventRecordWithFlags(self._pool[len(self._stages)], self._stream.handle,
                                         rt.cudaEventRecordExternal))
        self._stages.append(stage)

    def start(self) -> None:
        """Forget earlier marks and record the starting event."""
        self._stages = []
        self._record(None)

    def mark(self, stage: str) -> None:
        """Attribute the work enqueued since the previous mark to ``stage``."""
        self._record(stage)

    def elapsed(self) -> dict[str, float]:
        """Milliseconds per stage (call after synchronising the stream)."""
        rt = runtime()
        out: dict[str, float] = {}
        for i, stage in enumerate(self._stages[1:], start=1):
            ms = call(rt.cudaEventElapsedTime(self._pool[i - 1], self._pool[i]))
            out[stage] = out.get(stage, 0.0) + float(ms)
        return out


class CudaGraph:
    """A CUDA graph captured from the work one function enqueues on a stream; `launch` replays it."""

    def __init__(self, stream: Stream, enqueue: Callable[[], None], key):
        rt = runtime()
        self.key = key
        call(rt.cudaStreamBeginCapture(stream.handle, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
        try:
            enqueue()
        except BaseException:
            rt.cudaStreamEndCapture(stream.handle)  # end the capture, or the stream stays unusable
            raise
        graph = call(rt.cudaStreamEndCapture(stream.handle))
        weakref.finalize(self, rt.cudaGraphDestroy, graph)
        self._exec = call(rt.cudaGraphInstantiate(graph, 0))
        weakref.finalize(self, rt.cudaGraphExecDestroy, self._exec)

    def launch(self, stream: Stream) -> None:
        call(runtime().cudaGraphLaunch(self._exec, stream.handle))
