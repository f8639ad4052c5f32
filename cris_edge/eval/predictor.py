"""Predictors: anything that turns a frame and sentences into masks, so `evaluate` measures a
PyTorch model and a deployed bundle the same way. Imports no torch.

A predictor has one method, ``predict(frame, sentences) -> masks``: ``frame`` uint8
``[H, W, 3]`` BGR, ``sentences`` a list of str, each predicted on its own; it returns one uint8
``[H, W]`` mask in {0, 1} per sentence, at the frame's size. Taking all of a frame's sentences
at once lets a predictor encode the image once.
"""

from __future__ import annotations

from typing import Optional, Protocol, Sequence

import numpy as np

from ..runtime.segmenter import Segmenter


class Predictor(Protocol):
    """Frame (uint8 BGR ``[H, W, 3]``) + sentences -> one uint8 ``[H, W]`` mask per sentence."""

    def predict(self, frame: np.ndarray, sentences: Sequence[str]) -> list[np.ndarray]: ...


class SegmenterPredictor:
    """Predicts with a `Segmenter` (a bundle on any backend, or a PyTorch model): all of a
    frame's sentences in one `Segmenter.run` (the visual graph once per frame). Over-long
    sentences are cut to ``word_len`` tokens quietly, as the official evaluation does."""

    def __init__(self, segmenter: Segmenter):
        self.segmenter = segmenter

    @classmethod
    def from_engine(cls, engine, backend: str = "auto", device=None, threshold: Optional[float] = None,
                    **kwargs) -> "SegmenterPredictor":
        """``Segmenter(engine, backend, device, threshold, **kwargs)`` as a predictor."""
        return cls(Segmenter(engine, backend, device, threshold, **kwargs))

    @classmethod
    def from_model(cls, model, device=None, batch_size: int = 32) -> "SegmenterPredictor":
        """A `cris_edge.model.CRIS` in memory (e.g. during training) on ``device`` (None: where it
        is), through the PyTorch backend: ``batch_size`` sentences per head pass."""
        from ..runtime.backends.pytorch import TorchBackend

        return cls(Segmenter.from_backend(TorchBackend(model, device, batch_size), "a model in memory",
                                          text_cache_size=0))

    def predict(self, frame: np.ndarray, sentences: Sequence[str]) -> list[np.ndarray]:
        """uint8 BGR ``[H, W, 3]`` frame + sentences -> one uint8 ``[H, W]`` mask in {0, 1} each."""
        if len(sentences) == 0:
            return []
        return [r.mask for r in self.segmenter.run(frame, list(sentences), warn_truncated=False)]
