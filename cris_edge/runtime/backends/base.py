"""What every backend provides, the shared host-side (numpy + OpenCV) pipeline of the ONNX
Runtime, OpenVINO and PyTorch backends, and what the two ONNX graph runners share.

A backend runs the three graphs of a CRIS bundle (``text``, ``visual``, ``head``: see
docs/design.md) with the official pre- and post-processing around them:

* `Backend.encode_text`: a `TokenBatch` of at most ``max_batch`` rows -> one `TextFeatures` per
  text (the text graph);
* `Backend.segment`: validated `Frame` s (at most ``max_batch``) + (frame index, text features)
  pairs -> one mask per pair, and the milliseconds of its stages (``preprocess``, ``visual``,
  ``head``, ``postprocess``): the visual graph runs once per frame, the head once per pair.

`Segmenter` adds validation, tokenization, the text cache, batching, locking and the results.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ...bundle import Bundle, BundleError, Graph, file_path
from ...constants import CLIP_MEAN, CLIP_STD
from ...tokenizer import TokenBatch
from ..postprocess import features_to_logits, logits_to_prob, mask_score, prob_to_frame, prob_to_mask
from ..preprocess import Frame, letterbox_frames
from ..text_cache import TextFeatures

#: A (frame index, text features) pair: one head run.
Pair = tuple[int, TextFeatures]
#: Frames, texts and head pairs per graph run on the host backends: enough to fill the CPU's
#: kernels, small enough that memory does not grow with the number of prompts of a call.
HOST_MAX_BATCH = 16


class BackendUnavailableError(RuntimeError):
    """A backend cannot run here (its package, a GPU or engines are missing); the message says why."""


@dataclass(frozen=True)
class ModelInfo:
    """What the runtime needs to know of a model: input side ``S``, tokens per text ``L``, the
    normalisation, the precision and the tokenizer vocabulary file (a bundle's own, verified;
    None: the one installed with open_clip)."""

    input_size: int
    word_len: int
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD
    precision: str = "fp32"
    vocabulary: Optional[str] = None

    @classmethod
    def from_bundle(cls, bundle_dir, bundle: Bundle) -> "ModelInfo":
        """From a bundle's `Bundle` record."""
        return cls(bundle.input_size, bundle.word_len, bundle.mean, bundle.std, bundle.precision,
                   str(file_path(bundle_dir, bundle, bundle.vocabulary)))


def refuse_plugin_head(bundle_dir, bundle: Bundle, runtime: str) -> None:
    """BundleError when ``bundle``'s head holds the SimUpsample TensorRT plugin node, which only
    TensorRT runs: ``runtime`` (e.g. "ONNX Runtime") cannot run the bundle."""
    if bundle.head_output == "plugin":
        raise BundleError(f"bundle {bundle_dir}: its head holds the SimUpsample TensorRT plugin node, which {runtime} "
                          "cannot run; run its TensorRT engines on an NVIDIA GPU, or export the bundle with "
                          "--head-output logits")


def check_graph_io(path, graph: Graph, name: str, inputs: Sequence[tuple], outputs: Sequence[tuple]) -> None:
    """BundleError unless the graph file at ``path`` has the inputs and outputs config.json
    declares for graph ``name`` (names, dtypes, shapes, in order): a config that does not describe
    its graphs is refused at load, not at the first run. ``inputs`` / ``outputs``: the framework's
    view, (name, numpy dtype name, shape) with a dynamic dimension given by its name, or None where
    the framework does not keep names (it then matches any named dimension)."""
    for what, declared, actual in (("inputs", graph.inputs, inputs), ("outputs", graph.outputs, outputs)):
        want = [(t.name, t.dtype, list(t.shape)) for t in declared]
        got = [(n, dtype, ["?" if d is None else d for d in shape]) for n, dtype, shape in actual]
        same = len(want) == len(got) and all(
            (w[0], w[1], len(w[2])) == (g[0], g[1], len(g[2]))
            and all(wd == gd or (gd == "?" and isinstance(wd, str)) for wd, gd in zip(w[2], g[2]))
            for w, g in zip(want, got))
        if not same:
            path = Path(path)
            raise BundleError(f"{path.parent}: config.json graphs.{name}.{what} declares {want}, but {path.name} "
                              f"has {got}: the config does not describe this graph; re-export the bundle")


def head_to_logits(head_output: str, outputs: Sequence[np.ndarray]) -> np.ndarray:
    """The head graph's outputs (in the bundle's order) -> float32 logits ``[N, 1, h, w]``:
    ``logits`` as they are; ``features`` (``z_v``, ``kernel``) through the similarity step."""
    if head_output == "features":
        return features_to_logits(outputs[0], outputs[1])
    if head_output == "logits":
        return np.asarray(outputs[0]).astype(np.float32, copy=False)
    raise ValueError(f"a {head_output!r} head has no logits output")


@dataclass
class Output:
    """`Backend.segment`'s result: per pair a uint8 ``[H, W]`` mask, (if asked) a float32
    ``[H, W]`` probability map and the mask's score (`postprocess.mask_score`: the mean clipped
    probability inside the mask, 0.0 when empty), and milliseconds per stage."""

    masks: list[np.ndarray]
    probs: list[Optional[np.ndarray]]
    timings: dict[str, float]
    scores: list[float]


def plural(n: int, noun: str) -> str:
    """``"1 thread"``, ``"2 threads"``."""
    return f"{n} {noun}{'s' if n != 1 else ''}"


def to_frame(prob: np.ndarray, inverse: np.ndarray, frame_hw: tuple[int, int], threshold: float,
             want_prob: bool) -> tuple[np.ndarray, Optional[np.ndarray], float]:
    """Input-size probabilities ``[S, S]`` -> (uint8 ``[H, W]`` mask, float32 ``[H, W]``
    probabilities or None, the mask's score): the official inverse letterbox warp and threshold."""
    prob = prob_to_frame(prob, inverse, frame_hw)
    mask = prob_to_mask(prob, threshold)
    return mask, (prob if want_prob else None), mask_score(mask, prob)


class Backend(ABC):
    """One way of running a model. ``name`` says which (and on what); ``max_batch`` is the
    largest batch of texts (`encode_text`) and of frames (`segment`) one call takes (None: any)."""

    name: str
    info: ModelInfo
    max_batch: Optional[int] = None

    @abstractmethod
    def encode_text(self, tokens: TokenBatch) -> list[TextFeatures]:
        """The text graph on ``tokens`` (B rows) -> B `TextFeatures`."""

    @abstractmethod
    def segment(self, frames: Sequence[Frame], pairs: Sequence[Pair], threshold: float, want_prob: bool) -> Output:
        """Masks of ``pairs`` on ``frames``, thresholded at ``threshold``."""

    def close(self) -> None:
        """Release what the backend holds (GPU memory, sessions); it cannot be used afterwards."""


class ZeroShotBackend(ABC):
    """One way of running the three graphs of a ``zeroshot`` bundle (docs/zeroshot-device.md):
    features in, features out, float32 host arrays (the pre-processing, scoring and choice are
    `cris_edge.runtime.zeroshot`'s). ``max_batch``: the most texts, masks or crops one call
    takes (None: any)."""

    name: str
    info: ModelInfo
    max_batch: Optional[int] = None

    @abstractmethod
    def encode_text(self, tokens: TokenBatch) -> np.ndarray:
        """The text graph on ``tokens`` (B rows) -> float32 ``[B, D]``."""

    @abstractmethod
    def global_features(self, image: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """``image [1, 3, S, S]``, soft ``masks [N, 1, g, g]`` float32 -> float32 ``[N, D]``."""

    @abstractmethod
    def local_features(self, crops: np.ndarray) -> np.ndarray:
        """``crops [N, 3, S, S]`` float32 -> float32 ``[N, D]``."""

    def close(self) -> None:
        """Release what the backend holds; it cannot be used afterwards."""


class GraphZeroShot(ZeroShotBackend):
    """A ``zeroshot`` bundle's ONNX graphs run by a framework (ONNX Runtime, OpenVINO): subclasses
    give ``_dtype`` (the bundle's float input dtype, `PrecisionDetails.io`) and `_run` (graph name,
    feeds by input name -> the graph's outputs); the three steps are the same for all."""

    _dtype: np.dtype

    @abstractmethod
    def _run(self, name: str, feeds: dict) -> list[np.ndarray]:
        ...

    def _features(self, name: str, feeds: dict) -> np.ndarray:
        return self._run(name, feeds)[0].astype(np.float32, copy=False)

    def encode_text(self, tokens: TokenBatch) -> np.ndarray:
        return self._features("text", {"tokens": tokens.tokens, "eot_index": tokens.eot_index})

    def global_features(self, image: np.ndarray, masks: np.ndarray) -> np.ndarray:
        return self._features("global", {"image": image.astype(self._dtype, copy=False),
                                         "masks": masks.astype(self._dtype, copy=False)})

    def local_features(self, crops: np.ndarray) -> np.ndarray:
        return self._features("local", {"crops": crops.astype(self._dtype, copy=False)})


class HostBackend(Backend):
    """The official numpy + OpenCV pre/post-processing around a framework's visual and head
    graphs. Subclasses give `_visual` (``images [B, 3, S, S]`` -> opaque features) and `_head`
    (features, frame indices, stacked text features -> float32 logits ``[N, 1, S/4, S/4]``)."""

    image_dtype = np.dtype(np.float32)
    max_batch: Optional[int] = HOST_MAX_BATCH

    @abstractmethod
    def _visual(self, images: np.ndarray) -> Any:
        ...

    @abstractmethod
    def _head(self, features: Any, frame_index: np.ndarray, word: np.ndarray, pad_mask: np.ndarray,
              state: np.ndarray) -> np.ndarray:
        ...

    def segment(self, frames, pairs, threshold, want_prob) -> Output:
        info = self.info
        start = time.perf_counter()
        images, boxes = letterbox_frames(frames, info.input_size, info.mean, info.std, self.image_dtype)
        t_pre = time.perf_counter()
        features = self._visual(images)
        timings = {"preprocess": 1e3 * (t_pre - start), "visual": 1e3 * (time.perf_counter() - t_pre),
                   "head": 0.0, "postprocess": 0.0}
        masks, probs, scores = [], [], []
        step = self.max_batch or len(pairs)
        for first in range(0, len(pairs), step):  # the head on at most max_batch pairs at a time
            t_head = time.perf_counter()
            chunk = pairs[first:first + step]
            index = np.array([i for i, _ in chunk], dtype=np.int64)
            logits = self._head(features, index, np.stack([t.word for _, t in chunk]),
                                np.stack([t.pad_mask for _, t in chunk]), np.stack([t.state for _, t in chunk]))
            t_post = time.perf_counter()
            for k, i in enumerate(index):
                box = boxes[i]
                mask, prob, score = to_frame(logits_to_prob(logits[k], box.input_size), box.inverse,
                                             box.frame_size, threshold, want_prob)
                masks.append(mask)
                probs.append(prob)
                scores.append(score)
            timings["head"] += 1e3 * (t_post - t_head)
            timings["postprocess"] += 1e3 * (time.perf_counter() - t_post)
        return Output(masks, probs, timings, scores)


class GraphBackend(HostBackend):
    """A bundle's ONNX graphs run by a framework (ONNX Runtime, OpenVINO): subclasses give
    ``head_output`` (the bundle's) and `_run` (graph name, feeds by input name -> the graph's
    outputs in the bundle's order); the text, visual and head steps are the same for all."""

    head_output: str

    @abstractmethod
    def _run(self, name: str, feeds: dict) -> list[np.ndarray]:
        ...

    def encode_text(self, tokens: TokenBatch) -> list[TextFeatures]:
        word, state = self._run("text", {"tokens": tokens.tokens, "eot_index": tokens.eot_index})
        return [TextFeatures(word[i], state[i], tokens.pad_mask[i]) for i in range(len(word))]

    def _visual(self, images: np.ndarray) -> list[np.ndarray]:
        return self._run("visual", {"image": images})

    def _head(self, features, frame_index, word, pad_mask, state) -> np.ndarray:
        c3, c4, c5 = features
        if len(frame_index) != len(c3) or np.any(frame_index != np.arange(len(c3))):
            c3, c4, c5 = (np.take(c, frame_index, axis=0) for c in (c3, c4, c5))
        out = self._run("head", {"c3": c3, "c4": c4, "c5": c5, "word": word, "pad_mask": pad_mask, "state": state})
        return head_to_logits(self.head_output, out)
