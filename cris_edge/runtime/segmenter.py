"""`Segmenter`: a deployed CRIS model as one object, ``run(frame, text)`` -> masks.

    from cris_edge import Segmenter
    seg = Segmenter("bundles/r50_fp16")              # bundle dir, .engine, .onnx or a checkpoint
    result = seg.run(frame_bgr, "the red car")       # result.mask: uint8 [H, W] at the frame's size
    left, right = seg.run(frame_bgr, ["the left dog", "the right dog"])   # visual graph once

A zero-shot bundle (kind ``zeroshot``, docs/zeroshot-device.md) runs the same way on a frame and
its proposal masks: ``seg.run(frame, "the red car", proposals=masks)`` -> the chosen proposal,
with ``index`` and every proposal's ``scores`` (`cris_edge.runtime.zeroshot`).

Thread safety: a Segmenter runs one call at a time. Concurrent calls from several threads are
safe: they wait on the Segmenter's lock and run one after the other (a TensorRT context, its
buffers and CUDA graph, and the text cache are per Segmenter). For parallel inference, create one
Segmenter per thread.
"""

from __future__ import annotations

import logging
import numbers
import threading
import time
from typing import Optional, Sequence, Union

import numpy as np

from ..bundle import ModelCard, ZeroShotMethod
from ..constants import THRESHOLD
from ..tokenizer import EmptyTextError, get_tokenizer
from .backends.base import Backend, Pair, ZeroShotBackend
from .device import parse_device
from .inputs import check_frame, check_frames, check_texts
from .preprocess import Frame, check_color
from .result import SegmentationResult
from .selection import choose, locate, open_backend
from .text_cache import TextCache, TextFeatures
from .zeroshot import ZeroShotPipeline

log = logging.getLogger("cris_edge.runtime")


def _check_threshold(threshold) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1) (a number), got {threshold!r}")
    return float(threshold)


class Segmenter:
    """Referring segmentation with a deployed CRIS model.

    Args:
        engine: a bundle directory (``cris-export --output``), one of its ``.engine`` / ``.onnx``
            files (which picks the TensorRT / ONNX Runtime backend), or a PyTorch checkpoint.
        backend: ``"auto"`` (TensorRT when the bundle has engines for this machine's TensorRT
            and GPU; else OpenVINO on an x86-64 CPU where it is installed; else ONNX Runtime, with
            its CUDA provider when present; PyTorch for a checkpoint), ``"tensorrt"``,
            ``"openvino"``, ``"onnxruntime"`` or ``"pytorch"``. The choice and the reason are
            logged and kept in ``backend`` / ``backend_reason``.
        device: None (the backend's default: the GPU when one is used), ``"cpu"``, ``"cuda"``,
            ``"cuda:N"``, a GPU index, or ``"openvino:NAME"`` (an OpenVINO device: ``"openvino:GPU"``,
            ``"openvino:NPU"``).
        threshold: mask threshold on the probability (default: the bundle's; 0.35 for a checkpoint).
        config: for a checkpoint, its CRIS config (name or path) where the weights cannot tell.
        threads: CPU threads of ONNX Runtime and OpenVINO (default: physical cores).
        inference_precision: OpenVINO only: None (the bundle's precision; f32 for the float
            layers of FP32 and INT8 bundles), or ``"bf16"`` / ``"fp16"`` / ``"fp32"`` to ask for
            one the device computes in (see docs/runtime.md).
        text_cache_size: prompts whose text features are kept (LRU; 0 disables the cache).

    Raises ValueError for bad arguments, FileNotFoundError for a missing path, BundleError (a
    ValueError) for a damaged bundle or engines built for another TensorRT version or GPU
    (`EngineMismatchError`), BackendUnavailableError when the requested backend cannot run here;
    every message says how to fix it.
    """

    def __init__(self, engine, backend: str = "auto", device=None, threshold: Optional[float] = None, *,
                 config=None, threads: Optional[int] = None, text_cache_size: int = 256,
                 inference_precision: Optional[str] = None):
        device = parse_device(device)
        if threshold is not None:
            threshold = _check_threshold(threshold)
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, numbers.Integral)
                                    or threads < 1):
            raise ValueError(f"threads must be a positive int or None (physical cores), got {threads!r}")
        files = locate(engine)
        if config is not None and files.is_bundle:
            raise ValueError("config applies to a PyTorch checkpoint; a bundle carries its own")
        name, reason = choose(files, backend, device)
        if threshold is None:
            threshold = files.bundle.threshold if files.is_bundle else THRESHOLD
        self._attach(open_backend(name, files, device, threads, config, inference_precision), reason, threshold,
                     text_cache_size, files.bundle.zeroshot if files.is_bundle else None)
        if files.is_bundle:
            self.card = files.bundle.card
            checkpoint = files.bundle.checkpoint.file
            self.model = checkpoint if self.card is None else f"{self.card.name} ({checkpoint})"
        else:
            self.model = files.path.name
        log.info("Segmenter(%s): model %s, %s backend, because %s", files.path, self.model, self.backend, reason)

    @classmethod
    def from_backend(cls, backend: Backend, reason: str = "given", threshold: float = THRESHOLD, *,
                     text_cache_size: int = 256, model: Optional[str] = None,
                     card: Optional[ModelCard] = None) -> "Segmenter":
        """A Segmenter around an already opened `Backend` (a custom or instrumented one, e.g. the
        benchmarks' PyTorch FP16 and CUDA-graph variants): the same validation, tokenization,
        text cache, batching, locking and per-stage timings as a Segmenter opened from files.
        ``model`` names the model (default: ``"<backend name> backend"``); ``card`` is its card."""
        segmenter = cls.__new__(cls)
        segmenter._attach(backend, reason, _check_threshold(threshold), text_cache_size)
        segmenter.model = model if model is not None else f"{backend.name} backend"
        segmenter.card = card
        return segmenter

    def _attach(self, backend: Union[Backend, ZeroShotBackend], reason: str, threshold: float, text_cache_size: int,
                method: Optional[ZeroShotMethod] = None) -> None:
        self._backend = backend
        #: A short name of the model: the bundle's checkpoint file (with its card's name when the
        #: bundle has a card) or the checkpoint's file name. ``card``: the bundle's `ModelCard` or None.
        self.model: str = ""
        self.card: Optional[ModelCard] = None
        self.backend, self.backend_reason = backend.name, reason
        info = backend.info
        self.input_size, self.word_len, self.precision = info.input_size, info.word_len, info.precision
        self.threshold = threshold
        self._tokenizer = get_tokenizer(info.vocabulary)
        self.text_cache = TextCache(text_cache_size)
        self._lock = threading.Lock()
        #: The bundle's kind: ``"cris"``, or ``"zeroshot"`` (then ``method`` holds its parameters).
        self.kind = "cris" if method is None else "zeroshot"
        self._zeroshot = None if method is None else ZeroShotPipeline(
            backend, method, self._tokenizer, self.word_len, self.text_cache)  # type: ignore[arg-type]

    @property
    def method(self) -> Optional[ZeroShotMethod]:
        """A zero-shot bundle's `ZeroShotMethod` (None for CRIS). Its host-side settings (alpha,
        beta, scoring, noun phrases, generator) may be replaced: ``seg.method =
        dataclasses.replace(seg.method, alpha=1.0)``; what the graphs baked (backbone, grid,
        masked blocks) may not."""
        return None if self._zeroshot is None else self._zeroshot.method

    @method.setter
    def method(self, method: ZeroShotMethod) -> None:
        if self._zeroshot is None:
            raise ValueError("method applies to zero-shot bundles; this is a CRIS model")
        old = self._zeroshot.method
        if (method.backbone, method.grid, method.masked_blocks) != (old.backbone, old.grid, old.masked_blocks):
            raise ValueError("the backbone, grid and masked blocks are baked into the bundle's graphs")
        if not (0.0 <= method.alpha <= 1.0 and 0.0 <= method.beta <= 1.0):
            raise ValueError(f"alpha and beta must be in [0, 1], got {method.alpha}, {method.beta}")
        with self._lock:
            self._zeroshot.set_method(method)

    def __repr__(self) -> str:
        return (f"Segmenter(model={self.model!r}, backend={self.backend!r}, input_size={self.input_size}, "
                f"precision={self.precision!r})")

    def run(self, frame: np.ndarray, text: Union[str, Sequence[str]], *, color: str = "bgr",
            return_prob: bool = False, warn_truncated: bool = True, proposals=None,
            noun_phrase: Optional[str] = None, boxes=None
            ) -> Union[SegmentationResult, list[SegmentationResult]]:
        """Segment what ``text`` names in ``frame``.

        Args:
            frame: uint8 ``[H, W, 3]`` BGR (``color="rgb"`` for RGB), ``[H, W, 4]`` BGRA/RGBA or
                grayscale ``[H, W]`` / ``[H, W, 1]``.
            text: one prompt, or a list of prompts: the visual graph then runs once for all.
                Over-long prompts are cut to the model's ``word_len`` tokens with a
                `TextTruncatedWarning`.
            return_prob: also return each float32 ``[H, W]`` probability map.
            warn_truncated: False cuts over-long prompts quietly, as the official evaluation does
                (no warning, and no warnings filter touched: safe with other threads). A prompt
                warns when it is tokenized, i.e. not again while its features are cached.

            proposals: zero-shot bundles only: bool/uint8 ``[N, H, W]`` proposal masks at the
                frame's size, or any format of `cris_edge.runtime.proposals.as_masks` (COCO RLE
                dicts, a COCO results JSON file of one image); None runs the bundle's proposal
                generator (``method.proposals``), or is a ValueError saying what to pass.
            noun_phrase: zero-shot bundles only: the target noun phrase of every prompt (default:
                extracted from each prompt, `ZeroShotMethod.noun_phrase`).
            boxes: zero-shot bundles only: ``[N, 4]`` crop boxes ``(x1, y1, x2, y2)``,
                end-exclusive (default: each mask's tight box).

        Returns one `SegmentationResult` for a str, a list of them (in order) for a list; for a
        zero-shot bundle its ``mask`` is the chosen proposal, with ``index`` and ``scores``.
        Raises ValueError naming the problem for a bad frame, text or proposal masks (wrong
        size, not binary, empty).
        """
        texts, single = check_texts(text)
        checked = check_frame(frame, color)
        if self._zeroshot is None:
            given = [name for name, value in (("proposals", proposals), ("noun_phrase", noun_phrase),
                                              ("boxes", boxes)) if value is not None]
            if given:
                raise ValueError(f"{', '.join(given)} apply to zero-shot bundles; this is a {self.kind!r} model")
            results = self._segment([checked], [(0, t) for t in texts], return_prob, warn_truncated)
        else:
            if return_prob:
                raise ValueError("return_prob applies to CRIS bundles: a zero-shot result's mask is a proposal")
            with self._lock:
                if self._backend is None:
                    raise RuntimeError("this Segmenter is closed")
                results = self._zeroshot.run(checked, texts, proposals, noun_phrase, boxes)
        return results[0] if single else results

    def run_batch(self, frames: Sequence[np.ndarray], texts: Union[str, Sequence[str]], *, color: str = "bgr",
                  return_prob: bool = False, warn_truncated: bool = True) -> list[SegmentationResult]:
        """Segment a batch of frames in one pass per graph (for throughput): ``texts`` is one
        prompt for every frame, or one prompt per frame. Returns one result per frame."""
        if self._zeroshot is not None:
            raise ValueError("run_batch runs CRIS bundles; a zero-shot bundle takes one frame and its proposals "
                             "per call: use run")
        frames = check_frames(frames)
        prompts, single = check_texts(texts)
        if single:
            prompts = prompts * len(frames)
        elif len(prompts) != len(frames):
            raise ValueError(f"texts must be one str or one per frame: {len(prompts)} texts for {len(frames)} frames")
        check_color(color)
        checked = [check_frame(frame, color, f"frames[{i}]") for i, frame in enumerate(frames)]
        return self._segment(checked, list(enumerate(prompts)), return_prob, warn_truncated)

    def run_many(self, frames: Sequence[np.ndarray], texts: Sequence[Union[str, Sequence[str]]], *,
                 color: str = "bgr", warn_truncated: bool = True) -> list[list[SegmentationResult]]:
        """Segment several frames, each with its own prompts (``texts[i]``: a str or a list of str
        for ``frames[i]``), in one pass per graph (at most ``max_batch`` frames at a time), as a
        server that batches its requests does. Returns, per frame, its results in prompt order."""
        frames = check_frames(frames)
        if isinstance(texts, str) or not isinstance(texts, Sequence) or len(texts) != len(frames):
            raise ValueError(f"texts must hold one str or list of str per frame ({len(frames)} frames), "
                             f"got {texts!r}")
        check_color(color)
        checked = [check_frame(frame, color, f"frames[{i}]") for i, frame in enumerate(frames)]
        prompts = [check_texts(t)[0] for t in texts]
        flat = self._segment(checked, [(i, t) for i, group in enumerate(prompts) for t in group], False,
                             warn_truncated)
        bounds = np.cumsum([0] + [len(group) for group in prompts])
        return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def _segment(self, frames: list[Frame], requests: list[tuple[int, str]], want_prob: bool,
                 warn_truncated: bool) -> list[SegmentationResult]:
        with self._lock:
            if self._backend is None:
                raise RuntimeError("this Segmenter is closed")
            start = time.perf_counter()
            features = self._text_features([t for _, t in requests], warn_truncated)
            text_ms = 1e3 * (time.perf_counter() - start)
            step = self._backend.max_batch or len(frames)
            masks, probs, scores, timings = [], [], [], {"text": text_ms}
            for first in range(0, len(frames), step):  # frames beyond the backend's batch: several passes
                pairs: list[Pair] = [(i - first, features[k]) for k, (i, _) in enumerate(requests)
                                     if first <= i < first + step]
                out = self._backend.segment(frames[first:first + step], pairs, self.threshold, want_prob)
                masks += out.masks
                probs += out.probs
                scores += out.scores
                for stage, ms in out.timings.items():
                    timings[stage] = timings.get(stage, 0.0) + ms
            timings["total"] = 1e3 * (time.perf_counter() - start)
        return [SegmentationResult(text, mask, None if prob is None else np.clip(prob, 0.0, 1.0, out=prob),
                                   dict(timings), score)
                for (_, text), mask, prob, score in zip(requests, masks, probs, scores)]

    def _text_features(self, texts: list[str], warn_truncated: bool) -> list[TextFeatures]:
        """Features of ``texts`` from the cache, running the text graph on the misses (at most
        the backend's batch per run)."""
        found = {t: self.text_cache.get(t) for t in dict.fromkeys(texts)}
        missing = [t for t, f in found.items() if f is None]
        step = self._backend.max_batch or len(missing) or 1
        for first in range(0, len(missing), step):
            chunk = missing[first:first + step]
            try:
                tokens = self._tokenizer.batch(chunk, self.word_len, warn=warn_truncated)
            except EmptyTextError as err:  # named by the user's text, not its index among the misses
                raise ValueError(f"text {err.text!r} is empty once cleaned (HTML entities and spacing removed): "
                                 "give the sentence that names the object to segment") from None
            for t, f in zip(chunk, self._backend.encode_text(tokens)):
                found[t] = f
                self.text_cache.put(t, f)
        return [found[t] for t in texts]

    def close(self) -> None:
        """Release the backend (GPU memory, sessions); the Segmenter cannot be used afterwards."""
        with self._lock:
            if self._backend is not None:
                self._backend.close()
                self._backend = None

    def __enter__(self) -> "Segmenter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
