"""The TensorRT backend: a bundle's engines with cuda-python, for Jetson Orin (JetPack 6,
TensorRT 10.3) through desktop and data-centre GPUs (TensorRT 10.x / 11.x). Never imports torch.

Per call, on one CUDA stream: frames go from pinned host buffers to the GPU and through the fused
Preprocess kernel into the visual engine's input (or, without the kernels library, are
pre-processed in numpy and copied); the visual engine runs once for all prompts; the head engine
reads the visual outputs in place (or gathers them per prompt) and the cached text features;
then SimUpsample writes each uint8 mask and its probabilities (for the score) at the frame's
size (``head_output`` "features"), or the logits / probabilities come back and the official
numpy post-processing finishes them. One
synchronisation per call. Repeated calls with the same shapes (a stream at batch 1) are replayed
as a CUDA graph; stages are timed with CUDA events (recorded inside the graph too).

Nothing of TensorRT is touched before a GPU is found (TensorRT's lean runtime crashes without
one), and engines built by another TensorRT version or on another GPU are refused
(`cris_edge.runtime.backends.trt_check`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from ...bundle import Bundle, BundleError, graph_path
from ...tokenizer import TokenBatch
from ..device import cuda_index
from ..postprocess import logits_to_prob, mask_score
from ..preprocess import Frame, letterbox_frames, letterbox_matrices
from ..text_cache import TextFeatures
from . import cuda, fused
from .base import Backend, ModelInfo, Output, Pair, head_to_logits, to_frame
from .trt_check import check_tensorrt, plugin_library
from .trt_engine import TrtEngine

if TYPE_CHECKING:  # imported at run time only after a GPU is found (see trt_check.check_tensorrt)
    import tensorrt as trt

log = logging.getLogger("cris_edge.runtime")

_FEATURES = ("c3", "c4", "c5")
_TEXT = ("word", "pad_mask", "state")


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

    def __init__(self, bundle_dir: Path, bundle: Bundle, device: Optional[str] = None):
        check_tensorrt(bundle_dir, bundle, device)
        import tensorrt as trt

        self._device = cuda_index(device)
        cuda.call(cuda.runtime().cudaSetDevice(self._device))
        self.info = ModelInfo.from_bundle(bundle_dir, bundle)
        self.head_output = bundle.head_output
        self._logger: trt.Logger = trt.Logger(trt.Logger.WARNING)
        if bundle.plugins is not None:
            path = plugin_library(bundle_dir, bundle)
            if trt.get_plugin_registry().load_library(str(path)) is None:
                raise BundleError(f"TensorRT {trt.__version__} could not load the plugin library {path}: rebuild it "
                                  "against this TensorRT (cmake -S cpp -B build && cmake --build build)")
        runtime: trt.Runtime = trt.Runtime(self._logger)
        self._engines = {
            name: TrtEngine(trt, runtime, graph_path(bundle_dir, bundle, name, "engine"),
                            [io.name for io in graph.inputs], [io.name for io in graph.outputs])
            for name, graph in bundle.graphs.items()}
        self._text, self._visual, self._head = (self._engines[n] for n in ("text", "visual", "head"))
        self.max_batch = min(self._text.max_batch, self._visual.max_batch)
        self._stream = cuda.Stream()
        self._timer = cuda.EventTimer(self._stream)
        self._kernels = fused.load_kernels(self.info.mean, self.info.std)
        self._gpu_post = self._kernels is not None and self.head_output == "features" and (
            self._head.spec("kernel").item[0] == self._head.spec("z_v").item[0] * fused.SIM_UPSAMPLE_TAPS + 1)
        self._buffers: dict[str, Any] = {}  # cuda.PinnedBuffer or cuda.DeviceBuffer
        self._graph: Optional[cuda.CudaGraph] = None
        self._graphs_enabled, self._last_key = True, None
        if self._gpu_post:  # SimUpsample's dense weights, biases and workspace, for a whole head batch
            z_v, batch = self._head.spec("z_v"), self._head.max_batch
            self._weight = cuda.DeviceBuffer(batch * z_v.item[0] * fused.SIM_UPSAMPLE_TAPS * z_v.dtype.itemsize)
            self._bias = cuda.DeviceBuffer(batch * z_v.dtype.itemsize)
            self._workspace = cuda.DeviceBuffer(
                fused.workspace_size(self._kernels, batch, z_v.item[1:]))  # type: ignore[arg-type]
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
        engine, n = self._text, len(tokens.tokens)
        if not 1 <= n <= engine.max_batch:
            raise ValueError(f"{n} texts for a text engine of batch 1..{engine.max_batch}: run them in batches")
        feeds = {"tokens": tokens.tokens, "eot_index": tokens.eot_index}
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
        return [TextFeatures(word[i], state[i], tokens.pad_mask[i]) for i in range(n)]

    # -- segment: host-side preparation --------------------------------------------------------
    def _stage_frames(self, frames: Sequence[Frame]) -> list[_Frame]:
        """Frames into pinned memory (raw, for the Preprocess kernel; or pre-processed in numpy)."""
        size, spec = self.info.input_size, self._visual.inputs[0]
        if self._kernels is None:
            images, boxes = letterbox_frames(frames, size, self.info.mean, self.info.std, spec.dtype)
            host = self._buffer("images", images.nbytes, pinned=True)
            np.copyto(host.view(images.dtype, images.shape), images)
            return [_Frame(b.frame_size, False, b.matrix, b.inverse) for b in boxes]
        total = sum(f.image.nbytes for f in frames)
        host = self._buffer("frames", total, pinned=True)
        self._buffer("frames_device", total, pinned=False)
        out, offset = [], 0
        for frame in frames:
            np.copyto(host.view(np.uint8, frame.image.shape, offset), frame.image)
            out.append(_Frame(frame.hw, frame.bgr, *letterbox_matrices(frame.hw, size), offset, frame.image.nbytes))
            offset += frame.image.nbytes
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

    def _output_layout(self, frames: list[_Frame], pairs: Sequence[Pair]) -> dict[str, list[int]]:
        """Byte offsets of each pair's outputs in the result buffers (grown to fit). On the GPU
        path SimUpsample writes the probabilities too, always: every result's score needs them."""
        if self._gpu_post:
            sizes = {"mask": [frames[i].hw[0] * frames[i].hw[1] for i, _ in pairs]}
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
        """SimUpsample on one chunk's head outputs: the kernel output ``[n, C*9+1]`` (3x3, the only size the fused kernel takes) is split into
        dense weights and biases, then one launch per run of pairs on the same frame writes their
        masks (and probabilities) at the frame's size, which are copied to pinned memory."""
        stream, head, n = self._stream, self._head, len(chunk.frames)
        z_v, kernel = head.spec("z_v"), head.spec("kernel")
        channels, grid, itemsize = z_v.item[0], z_v.item[1:], z_v.dtype.itemsize
        weight_bytes, weight, bias = channels * fused.SIM_UPSAMPLE_TAPS * itemsize, self._weight, self._bias
        source = head.buffers["kernel"].ptr
        cuda.copy_rows_async(weight.ptr, weight_bytes, source, kernel.item_bytes, weight_bytes, n, stream)
        cuda.copy_rows_async(bias.ptr, itemsize, source + weight_bytes, kernel.item_bytes, itemsize, n, stream)
        j = 0
        while j < n:
            frame = frames[chunk.frames[j]]
            m = next((e for e in range(j + 1, n) if chunk.frames[e] != chunk.frames[j]), n) - j
            for name in layout:  # "mask" and "prob"
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

    def segment(self, frames, pairs, threshold, want_prob) -> Output:
        cuda.call(cuda.runtime().cudaSetDevice(self._device))
        start = time.perf_counter()
        staged = self._stage_frames(frames)
        self._visual.set_batch(len(staged))
        host_pre = time.perf_counter() - start
        text = self._stage_text(pairs)
        chunks = self._chunks(pairs, len(staged))
        layout = self._output_layout(staged, pairs)
        self._bind(chunks[0])
        key = None if len(chunks) > 1 else (tuple((f.hw, f.bgr) for f in staged), chunks[0], float(threshold),
                                            self._kernels is None)
        self._launch(key, lambda: self._enqueue(staged, chunks, text, layout, threshold))
        self._stream.synchronize()
        timings = self._timer.elapsed()
        finish = time.perf_counter()
        masks, probs, scores = self._finish(staged, pairs, layout, threshold, want_prob)
        timings["preprocess"] += 1e3 * host_pre
        timings["postprocess"] += 1e3 * (time.perf_counter() - finish)
        return Output(masks, probs, timings, scores)

    # -- segment: results ----------------------------------------------------------------------
    def _finish(self, frames: list[_Frame], pairs: Sequence[Pair], layout: dict, threshold: float,
                want_prob: bool) -> tuple[list, list, list]:
        """Masks, probabilities (if asked) and scores out of pinned memory; for logits,
        probabilities or features without the kernels library, the official numpy
        post-processing first."""
        n = len(pairs)
        if self._gpu_post:
            masks, probs, scores = [], [], []
            dtype = self._head.spec("z_v").dtype
            for p, (i, _) in enumerate(pairs):
                hw = frames[i].hw
                mask = self._buffers["out_mask"].view(np.uint8, hw, layout["mask"][p]).copy()
                prob = self._buffers["out_prob"].view(dtype, hw, layout["prob"][p]).astype(np.float32)
                masks.append(mask)
                probs.append(prob if want_prob else None)
                scores.append(mask_score(mask, prob))
            return masks, probs, scores
        out = {s.name: self._buffers[f"out_{s.name}"].view(s.dtype, (n, *s.item)) for s in self._head.outputs}
        size = self.info.input_size
        if self.head_output == "plugin":
            prob = [out["prob"][p, 0].astype(np.float32) for p in range(n)]
        else:
            logits = head_to_logits(self.head_output, [out[s.name] for s in self._head.outputs])
            prob = [logits_to_prob(logits[p], size) for p in range(n)]
        results = [to_frame(prob[p], frames[i].inverse, frames[i].hw, threshold, want_prob)
                   for p, (i, _) in enumerate(pairs)]
        return [m for m, _, _ in results], [q for _, q, _ in results], [s for _, _, s in results]

    def close(self) -> None:
        self._graph = None
        self._buffers.clear()
        self._engines.clear()
        self._text = self._visual = self._head = None  # type: ignore[assignment]  # closed
