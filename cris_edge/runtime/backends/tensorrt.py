"""The TensorRT backend: a bundle's engines with cuda-python, for Jetson Orin (JetPack 6,
TensorRT 10.3) through desktop and data-centre GPUs (TensorRT 10.x / 11.x). Never imports torch.

Per call, on one CUDA stream: frames go from pinned host buffers to the GPU and through the fused
Preprocess kernel into the visual engine's input (or, without the kernels library, are
pre-processed in numpy and copied); the visual engine runs once for all prompts; the head engine
reads the visual outputs in place (or gathers them per prompt) and the cached text features;
then SimUpsample writes each uint8 mask at the frame's size (``head_output`` "features"), or the
logits / probabilities come back and the official numpy post-processing finishes them. One
synchronisation per call. Repeated calls with the same shapes (a stream at batch 1) are replayed
as a CUDA graph; stages are timed with CUDA events (recorded inside the graph too).

Nothing of TensorRT is touched before a GPU is found (TensorRT's lean runtime crashes without
one), and engines built by another TensorRT version or on another GPU are refused
(`check_tensorrt`).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from ...export.bundle import BundleError, check_engines, graph_path
from ...kernels.reference import similarity_logits
from ...tokenizer import TokenBatch
from ..postprocess import logits_to_prob
from ..preprocess import three_channels, letterbox_matrices, preprocess_batch
from ..text_cache import TextFeatures
from . import cuda, fused
from .base import Backend, BackendUnavailableError, ModelInfo, Output, Pair, to_frame
from .trt_engine import TrtEngine

if TYPE_CHECKING:  # imported at run time only after a GPU is found (see check_tensorrt)
    import tensorrt as trt

log = logging.getLogger("cris_edge.runtime")

PLUGIN_ENV = "CRIS_EDGE_TRT_PLUGIN"
_CHECKOUT_BUILD = Path(__file__).resolve().parents[3] / "build"
_FEATURES = ("c3", "c4", "c5")
_TEXT = ("word", "pad_mask", "state")


def device_index(device) -> int:
    """CUDA device index of ``device``: None, ``"cuda"`` -> 0, ``"cuda:N"`` or ``N`` -> N."""
    if device is None or device == "cuda":
        return 0
    if isinstance(device, int) and not isinstance(device, bool) and device >= 0:
        return device
    if isinstance(device, str) and device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    raise ValueError(f"the TensorRT backend runs on a CUDA device: None, 'cuda', 'cuda:N' or N; got {device!r}")


def check_tensorrt(bundle_dir: Path, config: dict, device=None) -> None:
    """Raise `BackendUnavailableError` (TensorRT, cuda-python, a GPU or the engines missing) or
    `EngineMismatchError` (engines of another TensorRT version or GPU) unless the bundle's
    engines can run here. Imports tensorrt only after a GPU is found; creates no TensorRT object."""
    if device == "cpu":
        raise BackendUnavailableError("device 'cpu' was asked for")
    if not config.get("tensorrt_compatible", True):
        raise BackendUnavailableError("the bundle is INT8 placed for ONNX Runtime (--int8-placement onnxruntime)")
    if any(not entry.get("engine") for entry in config["graphs"].values()):
        raise BackendUnavailableError(f"the bundle has no TensorRT engines; build them on this machine with "
                                      f"`cris-export --engine-only {bundle_dir}`")
    if importlib.util.find_spec("tensorrt") is None:
        raise BackendUnavailableError("TensorRT is not installed (pip install 'cris-edge[trt]', or JetPack's "
                                      "python3-libnvinfer)")
    try:
        cuda.runtime()
    except ImportError as err:
        raise BackendUnavailableError(str(err)) from None
    index, count = device_index(device), cuda.device_count()
    if count == 0:
        raise BackendUnavailableError("no CUDA GPU found (or no NVIDIA driver)")
    if index >= count:
        raise BackendUnavailableError(f"no CUDA device {index}: {count} found")
    import tensorrt as trt

    check_engines(bundle_dir, config, trt.__version__, *cuda.gpu_info(index))


def plugin_library(bundle_dir: Path, name: str) -> Path:
    """The TensorRT plugin library ``name``: ``$CRIS_EDGE_TRT_PLUGIN``, else the bundle's
    directory, else ``build/`` of a source checkout. BundleError says how to build it."""
    candidates = ([Path(os.environ[PLUGIN_ENV])] if os.environ.get(PLUGIN_ENV)
                  else [Path(bundle_dir) / name, _CHECKOUT_BUILD / name])
    for path in candidates:
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in candidates)
    raise BundleError(f"bundle {bundle_dir} needs the TensorRT plugin library {name} (its head holds the "
                      f"SimUpsample node), not found (looked at {looked}): build it on this device with "
                      f"`cmake -S cpp -B build && cmake --build build` and set {PLUGIN_ENV} to its path")


@dataclass(frozen=True)
class _Frame:
    """One frame of a call: size, channel order, letterbox maps, and its pinned/device bytes."""

    hw: tuple[int, int]
    bgr: bool
    matrix: np.ndarray
    inverse: np.ndarray
    offset: int = 0
    nbytes: int = 0


@dataclass(frozen=True)
class _Chunk:
    """Pairs ``start .. start + len(frames)`` of a call, run by one head enqueue; ``alias``: the
    head reads the visual outputs in place (frame index k for pair k)."""

    start: int
    frames: tuple[int, ...]
    alias: bool


class TensorRTBackend(Backend):
    """A bundle's ``text``, ``visual`` and ``head`` engines on CUDA device ``device``."""

    def __init__(self, bundle_dir: Path, config: dict, device=None):
        check_tensorrt(bundle_dir, config, device)
        import tensorrt as trt

        self._device = device_index(device)
        cuda.call(cuda.runtime().cudaSetDevice(self._device))
        self.info = ModelInfo.from_bundle(bundle_dir, config)
        self.head_output = config.get("head_output", "logits")
        self._logger: trt.Logger = trt.Logger(trt.Logger.WARNING)
        if config.get("plugins"):
            path = plugin_library(bundle_dir, config["plugins"]["library"])
            if trt.get_plugin_registry().load_library(str(path)) is None:
                raise BundleError(f"TensorRT {trt.__version__} could not load the plugin library {path}: rebuild it "
                                  "against this TensorRT (cmake -S cpp -B build && cmake --build build)")
        runtime: trt.Runtime = trt.Runtime(self._logger)
        self._engines = {
            name: TrtEngine(trt, runtime, graph_path(bundle_dir, config, name, "engine"),
                            [io["name"] for io in entry["inputs"]], [io["name"] for io in entry["outputs"]])
            for name, entry in config["graphs"].items()}
        self._text, self._visual, self._head = (self._engines[n] for n in ("text", "visual", "head"))
        self.max_frames = self._visual.max_batch
        self._stream = cuda.Stream()
        self._timer = cuda.EventTimer(self._stream)
        self._kernels = fused.load_kernels(self.info.mean, self.info.std)
        self._gpu_post = self._kernels is not None and self.head_output == "features"
        self._buffers: dict[str, Any] = {}  # cuda.PinnedBuffer or cuda.DeviceBuffer
        self._graph: Optional[cuda.CudaGraph] = None
        self._graphs_enabled, self._last_key = True, None
        if self._gpu_post:  # SimUpsample's dense weights, biases and workspace, for a whole head batch
            z_v, batch = self._head.spec("z_v"), self._head.max_batch
            self._weight = cuda.DeviceBuffer(batch * z_v.item[0] * 9 * z_v.dtype.itemsize)
            self._bias = cuda.DeviceBuffer(batch * z_v.dtype.itemsize)
            self._workspace = cuda.DeviceBuffer(fused.workspace_size(self._kernels, batch, z_v.item[1:]))  # type: ignore[arg-type]
        gpu, capability = cuda.gpu_info(self._device)
        where = {True: "CUDA kernel", False: "numpy"}
        self.name = (f"tensorrt {trt.__version__} ({gpu}, sm {capability}; pre-processing: "
                     f"{where[self._kernels is not None]}, post-processing: {where[self._gpu_post]})")

    # -- buffers -------------------------------------------------------------------------------
    def _buffer(self, name: str, nbytes: int, pinned: bool):
        """The grow-only buffer ``name`` (pinned host or device) of at least ``nbytes``; growing it
        drops the captured graph, whose addresses it bakes in."""
        buffer = self._buffers.get(name)
        if buffer is None or buffer.nbytes < nbytes:
            buffer = (cuda.PinnedBuffer if pinned else cuda.DeviceBuffer)(nbytes)
            self._buffers[name] = buffer
            self._graph = None
        return buffer

    # -- text ----------------------------------------------------------------------------------
    def encode_text(self, tokens: TokenBatch) -> list[TextFeatures]:
        cuda.call(cuda.runtime().cudaSetDevice(self._device))
        engine, out = self._text, []
        for start in range(0, len(tokens.tokens), engine.max_batch):
            n = min(engine.max_batch, len(tokens.tokens) - start)
            feeds = {"tokens": tokens.tokens[start:start + n], "eot_index": tokens.eot_index[start:start + n]}
            specs = (*engine.inputs, *engine.outputs)
            host = self._buffer("text_io", sum(engine.max_batch * s.item_bytes for s in specs), pinned=True)
            views, offset = {}, 0
            for spec in specs:
                views[spec.name] = host.view(spec.dtype, (n, *spec.item), offset)
                offset += engine.max_batch * spec.item_bytes
            engine.set_batch(n)
            for spec in engine.inputs:
                np.copyto(views[spec.name], feeds[spec.name].astype(spec.dtype, copy=False))
                cuda.copy_async(engine.buffers[spec.name].ptr, views[spec.name].ctypes.data, n * spec.item_bytes,
                                "htod", self._stream)
            engine.enqueue(self._stream)
            for spec in engine.outputs:
                cuda.copy_async(views[spec.name].ctypes.data, engine.buffers[spec.name].ptr, n * spec.item_bytes,
                                "dtoh", self._stream)
            self._stream.synchronize()
            word, state = views["word"].copy(), views["state"].copy()
            out += [TextFeatures(word[i], state[i], tokens.pad_mask[start + i]) for i in range(n)]
        return out

    # -- segment: host-side preparation --------------------------------------------------------
    def _stage_frames(self, frames: Sequence[np.ndarray], color: str) -> list[_Frame]:
        """Frames into pinned memory (raw, for the Preprocess kernel; or pre-processed in numpy)."""
        size, spec = self.info.input_size, self._visual.inputs[0]
        if self._kernels is None:
            images, boxes = preprocess_batch(frames, size, color, self.info.mean, self.info.std, spec.dtype)
            host = self._buffer("images", images.nbytes, pinned=True)
            np.copyto(host.view(images.dtype, images.shape), images)
            return [_Frame(b.frame_size, False, b.matrix, b.inverse) for b in boxes]
        staged, offset = [], 0
        for frame in frames:
            image, bgr = three_channels(frame, color)
            staged.append((image, bgr))
            offset += image.nbytes
        host = self._buffer("frames", offset, pinned=True)
        self._buffer("frames_device", offset, pinned=False)
        out, offset = [], 0
        for image, bgr in staged:
            np.copyto(host.view(np.uint8, image.shape, offset), image)
            hw = image.shape[:2]
            out.append(_Frame(hw, bgr, *letterbox_matrices(hw, size), offset, image.nbytes))
            offset += image.nbytes
        return out

    def _stage_text(self, pairs: Sequence[Pair]) -> dict[str, tuple[int, int]]:
        """Every pair's text features into pinned memory: ``{input: (address, bytes per pair)}``."""
        specs = [self._head.spec(name) for name in _TEXT]
        host = self._buffer("text", len(pairs) * sum(s.item_bytes for s in specs), pinned=True)
        out, offset = {}, 0
        for spec in specs:
            view = host.view(spec.dtype, (len(pairs), *spec.item), offset)
            np.stack([getattr(t, spec.name) for _, t in pairs], out=view, casting="same_kind")
            out[spec.name] = (view.ctypes.data, spec.item_bytes)
            offset += view.nbytes
        return out

    def _chunks(self, pairs: Sequence[Pair], n_frames: int) -> list[_Chunk]:
        step, chunks = self._head.max_batch, []
        for start in range(0, len(pairs), step):
            frames = tuple(i for i, _ in pairs[start:start + step])
            chunks.append(_Chunk(start, frames, frames == tuple(range(n_frames))))
        return chunks

    def _output_layout(self, frames: list[_Frame], pairs: Sequence[Pair], want_prob: bool) -> dict[str, list[int]]:
        """Byte offsets of each pair's outputs in the result buffers (grown to fit)."""
        if self._gpu_post:
            sizes = {"mask": [frames[i].hw[0] * frames[i].hw[1] for i, _ in pairs]}
            if want_prob:
                itemsize = self._head.spec("z_v").dtype.itemsize
                sizes["prob"] = [s * itemsize for s in sizes["mask"]]
        else:
            sizes = {s.name: [s.item_bytes] * len(pairs) for s in self._head.outputs}
        layout = {}
        for name, nbytes in sizes.items():
            self._buffer(f"out_{name}", sum(nbytes), pinned=True)
            if self._gpu_post:
                self._buffer(f"out_{name}_device", sum(nbytes), pinned=False)
            layout[name] = [int(v) for v in np.cumsum([0, *nbytes])]
        return layout

    def _bind(self, chunk: _Chunk) -> None:
        self._head.set_batch(len(chunk.frames))
        for name in _FEATURES:
            self._head.bind(name, (self._visual if chunk.alias else self._head).buffers[name].ptr)

    # -- segment: the enqueued work (eager, or captured into a CUDA graph) ---------------------
    def _enqueue(self, frames: list[_Frame], chunks: list[_Chunk], text: dict, layout: dict,
                 threshold: float) -> None:
        stream, visual, head, timer = self._stream, self._visual, self._head, self._timer
        timer.start()
        image = visual.inputs[0]
        if self._kernels is None:
            cuda.copy_async(visual.buffers[image.name].ptr, self._buffers["images"].ptr,
                            len(frames) * image.item_bytes, "htod", stream)
        else:
            host, device = self._buffers["frames"], self._buffers["frames_device"]
            for b, f in enumerate(frames):
                cuda.copy_async(device.ptr + f.offset, host.ptr + f.offset, f.nbytes, "htod", stream)
                fused.preprocess(self._kernels, device.ptr + f.offset, f.hw, f.bgr, f.matrix,
                                 visual.buffers[image.name].ptr + b * image.item_bytes, image.dtype,
                                 self.info.input_size, stream.handle)
        timer.mark("preprocess")
        visual.enqueue(stream)
        timer.mark("visual")
        for k, chunk in enumerate(chunks):
            if k:  # the first chunk is bound before the call (and before any graph capture)
                self._bind(chunk)
            n = len(chunk.frames)
            for name, (address, item_bytes) in text.items():
                cuda.copy_async(head.buffers[name].ptr, address + chunk.start * item_bytes, n * item_bytes, "htod",
                                stream)
            if not chunk.alias:
                for j, i in enumerate(chunk.frames):
                    for name in _FEATURES:
                        nbytes = visual.spec(name).item_bytes
                        cuda.copy_async(head.buffers[name].ptr + j * nbytes, visual.buffers[name].ptr + i * nbytes,
                                        nbytes, "dtod", stream)
            head.enqueue(stream)
            timer.mark("head")
            if self._gpu_post:
                self._enqueue_sim_upsample(frames, chunk, layout, threshold)
            else:
                for spec in head.outputs:
                    offset = layout[spec.name][chunk.start]
                    cuda.copy_async(self._buffers[f"out_{spec.name}"].ptr + offset, head.buffers[spec.name].ptr,
                                    n * spec.item_bytes, "dtoh", stream)
            timer.mark("postprocess")

    def _enqueue_sim_upsample(self, frames: list[_Frame], chunk: _Chunk, layout: dict, threshold: float) -> None:
        """SimUpsample on one chunk's head outputs: the kernel output ``[n, C*9+1]`` is split into
        dense weights and biases, then one launch per run of pairs on the same frame writes their
        masks (and probabilities) at the frame's size, which are copied to pinned memory."""
        stream, head, n = self._stream, self._head, len(chunk.frames)
        z_v, kernel = head.spec("z_v"), head.spec("kernel")
        channels, grid, itemsize = z_v.item[0], z_v.item[1:], z_v.dtype.itemsize
        weight_bytes, weight, bias = channels * 9 * itemsize, self._weight, self._bias
        source = head.buffers["kernel"].ptr
        cuda.copy_rows_async(weight.ptr, weight_bytes, source, kernel.item_bytes, weight_bytes, n, stream)
        cuda.copy_rows_async(bias.ptr, itemsize, source + weight_bytes, kernel.item_bytes, itemsize, n, stream)
        j = 0
        while j < n:
            frame = frames[chunk.frames[j]]
            m = next((e for e in range(j + 1, n) if chunk.frames[e] != chunk.frames[j]), n) - j
            for name in layout:  # "mask", and "prob" when asked for
                offset = layout[name][chunk.start + j]
                fused.sim_upsample(self._kernels, head.buffers["z_v"].ptr + j * z_v.item_bytes,  # type: ignore[arg-type]
                                   weight.ptr + j * weight_bytes, bias.ptr + j * itemsize, z_v.dtype, m, channels,
                                   grid, self.info.input_size, frame.inverse,
                                   self._buffers[f"out_{name}_device"].ptr + offset, frame.hw, name == "mask",
                                   threshold, self._workspace.ptr, self._workspace.nbytes, stream.handle)
            j += m
        for name, offsets in layout.items():
            start, stop = offsets[chunk.start], offsets[chunk.start + n]
            cuda.copy_async(self._buffers[f"out_{name}"].ptr + start, self._buffers[f"out_{name}_device"].ptr + start,
                            stop - start, "dtoh", stream)

    def _launch(self, key, enqueue) -> None:
        """Run ``enqueue``'s work: replay the graph captured for ``key``; capture one when the
        previous call had the same key (steady state: TensorRT has run these shapes once);
        else run it eagerly. A failed capture disables graphs for this backend, with a note."""
        graphable = key is not None and self._graphs_enabled
        if graphable and self._graph is not None and self._graph.key == key:
            self._graph.launch(self._stream)
        elif graphable and key == self._last_key:
            try:
                self._graph = cuda.CudaGraph(self._stream, enqueue, key)
            except (cuda.CudaError, RuntimeError) as err:
                log.warning("CUDA graph capture failed (%s); running without CUDA graphs", err)
                self._graph, self._graphs_enabled = None, False
                cuda.runtime().cudaGetLastError()  # clear the sticky capture error
                enqueue()
            else:
                self._graph.launch(self._stream)
        else:
            self._graph = None
            enqueue()
        self._last_key = key

    def segment(self, frames, color, pairs, threshold, want_prob) -> Output:
        cuda.call(cuda.runtime().cudaSetDevice(self._device))
        start = time.perf_counter()
        staged = self._stage_frames(frames, color)
        self._visual.set_batch(len(staged))
        host_pre = time.perf_counter() - start
        text = self._stage_text(pairs)
        chunks = self._chunks(pairs, len(staged))
        layout = self._output_layout(staged, pairs, want_prob)
        self._bind(chunks[0])
        key = None if len(chunks) > 1 else (tuple((f.hw, f.bgr) for f in staged), chunks[0], bool(want_prob),
                                            float(threshold), self._kernels is None)
        self._launch(key, lambda: self._enqueue(staged, chunks, text, layout, threshold))
        self._stream.synchronize()
        timings = self._timer.elapsed()
        finish = time.perf_counter()
        masks, probs = self._finish(staged, pairs, layout, threshold, want_prob)
        timings["preprocess"] += 1e3 * host_pre
        timings["postprocess"] += 1e3 * (time.perf_counter() - finish)
        return Output(masks, probs, timings)

    # -- segment: results ----------------------------------------------------------------------
    def _finish(self, frames: list[_Frame], pairs: Sequence[Pair], layout: dict, threshold: float,
                want_prob: bool) -> tuple[list, list]:
        """Masks (and probabilities) out of pinned memory; for logits, probabilities or features
        without the kernels library, the official numpy post-processing first."""
        n = len(pairs)
        if self._gpu_post:
            masks, probs = [], []
            dtype = self._head.spec("z_v").dtype
            for p, (i, _) in enumerate(pairs):
                hw = frames[i].hw
                masks.append(self._buffers["out_mask"].view(np.uint8, hw, layout["mask"][p]).copy())
                probs.append(self._buffers["out_prob"].view(dtype, hw, layout["prob"][p]).astype(np.float32)
                             if want_prob else None)
            return masks, probs
        out = {s.name: self._buffers[f"out_{s.name}"].view(s.dtype, (n, *s.item)) for s in self._head.outputs}
        size = self.info.input_size
        if self.head_output == "plugin":
            prob = [out["prob"][p, 0].astype(np.float32) for p in range(n)]
        else:
            if self.head_output == "features":
                z_v, kernel = out["z_v"], out["kernel"]
                logits = similarity_logits(z_v, kernel[:, :-1].reshape(n, z_v.shape[1], 3, 3), kernel[:, -1])
            else:
                logits = out["logits"]
            prob = [logits_to_prob(logits[p].astype(np.float32), size) for p in range(n)]
        results = [to_frame(prob[p], frames[i].inverse, frames[i].hw, threshold, want_prob)
                   for p, (i, _) in enumerate(pairs)]
        return [m for m, _ in results], [q for _, q in results]

    def close(self) -> None:
        self._graph = None
        self._buffers.clear()
        self._engines.clear()
        self._text = self._visual = self._head = None  # type: ignore[assignment]  # closed
