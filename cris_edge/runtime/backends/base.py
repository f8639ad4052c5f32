"""What every backend provides, and the shared host-side (numpy + OpenCV) pipeline of the
ONNX Runtime and PyTorch backends.

A backend runs the three stages of CRIS (DESIGN.md section 3) with the official pre- and
post-processing around them:

* `Backend.encode_text`: a `TokenBatch` -> one `TextFeatures` per text (the text graph);
* `Backend.segment`: frames + (frame index, text features) pairs -> one mask per pair, and the
  milliseconds of its stages (``preprocess``, ``visual``, ``head``, ``postprocess``): the
  visual graph runs once per frame, the head once per pair.

`Segmenter` adds validation, tokenization, the text cache, locking and the results.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from ...tokenizer import TokenBatch
from ..postprocess import logits_to_prob, prob_to_frame, prob_to_mask
from ..preprocess import CLIP_MEAN, CLIP_STD, preprocess_batch
from ..text_cache import TextFeatures

#: A (frame index, text features) pair: one head run.
Pair = tuple[int, TextFeatures]


class BackendUnavailableError(RuntimeError):
    """A backend cannot run here (its package, a GPU or engines are missing); the message says why."""


@dataclass(frozen=True)
class ModelInfo:
    """What the runtime needs to know of a model: input side ``S``, tokens per text ``L``, the
    normalisation, the default mask threshold, the precision and the tokenizer vocabulary's
    bundle directory (None: the installed one)."""

    input_size: int
    word_len: int
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD
    threshold: float = 0.35
    precision: str = "fp32"
    vocabulary_dir: Optional[str] = None

    @classmethod
    def from_bundle(cls, bundle_dir, config: dict) -> "ModelInfo":
        """From a bundle's ``config.json``."""
        return cls(int(config["input_size"]), int(config["word_len"]), tuple(config["mean"]),
                   tuple(config["std"]), float(config["threshold"]), config["precision"], str(bundle_dir))


@dataclass
class Output:
    """`Backend.segment`'s result: per pair a uint8 ``[H, W]`` mask and (if asked) a float32
    ``[H, W]`` probability map, and milliseconds per stage."""

    masks: list[np.ndarray]
    probs: list[Optional[np.ndarray]]
    timings: dict[str, float]


def plural(n: int, noun: str) -> str:
    """``"1 thread"``, ``"2 threads"``."""
    return f"{n} {noun}{'s' if n != 1 else ''}"


def to_frame(prob: np.ndarray, inverse: np.ndarray, frame_hw: tuple[int, int], threshold: float,
             want_prob: bool) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Input-size probabilities ``[S, S]`` -> (uint8 ``[H, W]`` mask, float32 ``[H, W]``
    probabilities or None): the official inverse letterbox warp and threshold."""
    prob = prob_to_frame(prob, inverse, frame_hw)
    return prob_to_mask(prob, threshold), (prob if want_prob else None)


class Backend(ABC):
    """One way of running a model. ``name`` says which (and on what); ``max_frames`` is the
    largest number of frames one `segment` call takes (None: any)."""

    name: str
    info: ModelInfo
    max_frames: Optional[int] = None

    @abstractmethod
    def encode_text(self, tokens: TokenBatch) -> list[TextFeatures]:
        """The text graph on ``tokens`` (B rows) -> B `TextFeatures`."""

    @abstractmethod
    def segment(self, frames: Sequence[np.ndarray], color: str, pairs: Sequence[Pair], threshold: float,
                want_prob: bool) -> Output:
        """Masks of ``pairs`` on ``frames`` (validated uint8 frames in ``color`` order)."""

    def close(self) -> None:
        """Release what the backend holds (GPU memory, sessions); it cannot be used afterwards."""


class HostBackend(Backend):
    """The official numpy + OpenCV pre/post-processing around a framework's visual and head
    graphs. Subclasses give `_visual` (``images [B, 3, S, S]`` -> opaque features) and `_head`
    (features, frame indices, stacked text features -> float32 logits ``[N, 1, S/4, S/4]``)."""

    image_dtype = np.dtype(np.float32)

    @abstractmethod
    def _visual(self, images: np.ndarray) -> Any:
        ...

    @abstractmethod
    def _head(self, features: Any, frame_index: np.ndarray, word: np.ndarray, pad_mask: np.ndarray,
              state: np.ndarray) -> np.ndarray:
        ...

    def segment(self, frames, color, pairs, threshold, want_prob) -> Output:
        info = self.info
        start = time.perf_counter()
        images, boxes = preprocess_batch(frames, info.input_size, color, info.mean, info.std, self.image_dtype)
        t_pre = time.perf_counter()
        features = self._visual(images)
        t_visual = time.perf_counter()
        index = np.array([i for i, _ in pairs], dtype=np.int64)
        texts = [t for _, t in pairs]
        logits = self._head(features, index, np.stack([t.word for t in texts]),
                            np.stack([t.pad_mask for t in texts]), np.stack([t.state for t in texts]))
        t_head = time.perf_counter()
        masks, probs = [], []
        for k, i in enumerate(index):
            box = boxes[i]
            mask, prob = to_frame(logits_to_prob(logits[k], box.input_size), box.inverse, box.frame_size,
                                  threshold, want_prob)
            masks.append(mask)
            probs.append(prob)
        end = time.perf_counter()
        return Output(masks, probs, {"preprocess": 1e3 * (t_pre - start), "visual": 1e3 * (t_visual - t_pre),
                                     "head": 1e3 * (t_head - t_visual), "postprocess": 1e3 * (end - t_head)})
