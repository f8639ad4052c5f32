"""The TensorRT backend of a ``zeroshot`` bundle: its ``text``, ``global`` and ``local`` engines
with cuda-python (TensorRT 10.3 - 11.x), one CUDA stream, pinned host buffers. Never imports
torch.

Each call copies its inputs from pinned memory, runs one engine and copies the features back
(one synchronisation). The engines' profile covers batch 1 .. the bundle's ``max_batch``
(``cris-export --max-proposals``); `cris_edge.runtime.zeroshot` splits larger sets of
proposals into passes of at most that many. Nothing of TensorRT is touched before a GPU is
found (`cris_edge.runtime.backends.trt_check`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional

import numpy as np

from ...bundle import Bundle, graph_path
from ...tokenizer import TokenBatch
from ..device import cuda_index
from . import cuda
from .base import ModelInfo, ZeroShotBackend
from .trt_check import check_tensorrt
from .trt_engine import TrtEngine

if TYPE_CHECKING:  # imported at run time only after a GPU is found
    import tensorrt as trt


class TensorRTZeroShot(ZeroShotBackend):
    """A zero-shot bundle's engines on CUDA device ``device``."""

    def __init__(self, bundle_dir: Path, bundle: Bundle, device: Optional[str] = None):
        check_tensorrt(bundle_dir, bundle, device)
        import tensorrt as trt

        self._device = cuda_index(device)
        cuda.call(cuda.runtime().cudaSetDevice(self._device))
        self.info = ModelInfo.from_bundle(bundle_dir, bundle)
        self._logger: trt.Logger = trt.Logger(trt.Logger.WARNING)
        runtime: trt.Runtime = trt.Runtime(self._logger)
        self._engines = {
            name: TrtEngine(trt, runtime, graph_path(bundle_dir, bundle, name, "engine"),
                            [io.name for io in graph.inputs], [io.name for io in graph.outputs])
            for name, graph in bundle.graphs.items()}
        self.max_batch = min(e.max_batch for e in self._engines.values())
        self._stream = cuda.Stream()
        self._host: dict[str, cuda.PinnedBuffer] = {}
        gpu, capability = cuda.gpu_info(self._device)
        self.name = f"tensorrt {trt.__version__} ({gpu}, sm {capability})"

    def _pinned(self, name: str, nbytes: int) -> cuda.PinnedBuffer:
        """The grow-only pinned buffer ``name`` of at least ``nbytes``."""
        buffer = self._host.get(name)
        if buffer is None or buffer.nbytes < nbytes:
            buffer = cuda.PinnedBuffer(nbytes)
            self._host[name] = buffer
        return buffer

    def _run(self, name: str, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """Engine ``name`` on ``feeds`` (batch = the first dimension of its batched inputs) ->
        float32 copy of its output."""
        cuda.call(cuda.runtime().cudaSetDevice(self._device))
        engine = self._engines[name]
        batch = max(len(v) for v in feeds.values())
        engine.set_batch(batch)
        specs: list[Any] = [*engine.inputs, *engine.outputs]
        counts = {s.name: (len(feeds[s.name]) if s.name in feeds else batch) for s in specs}
        host = self._pinned(name, sum(counts[s.name] * s.item_bytes for s in specs))
        views, offset = {}, 0
        for spec in specs:
            views[spec.name] = host.view(spec.dtype, (counts[spec.name], *spec.item), offset)
            offset += counts[spec.name] * spec.item_bytes
        for spec in engine.inputs:
            np.copyto(views[spec.name], feeds[spec.name], casting="same_kind")
            cuda.copy_async(engine.buffers[spec.name].ptr, views[spec.name].ctypes.data,
                            counts[spec.name] * spec.item_bytes, "htod", self._stream)
        engine.enqueue(self._stream)
        out = engine.outputs[0]
        cuda.copy_async(views[out.name].ctypes.data, engine.buffers[out.name].ptr, batch * out.item_bytes, "dtoh",
                        self._stream)
        self._stream.synchronize()
        return views[out.name].astype(np.float32)

    def encode_text(self, tokens: TokenBatch) -> np.ndarray:
        return self._run("text", {"tokens": tokens.tokens, "eot_index": tokens.eot_index})

    def global_features(self, image: np.ndarray, masks: np.ndarray) -> np.ndarray:
        return self._run("global", {"image": image, "masks": masks})

    def local_features(self, crops: np.ndarray) -> np.ndarray:
        return self._run("local", {"crops": crops})

    def close(self) -> None:
        self._host.clear()
        self._engines.clear()
