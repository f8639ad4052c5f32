"""A `Segmenter` as the predictor ``cris-eval`` scores (:class:`cris_edge.eval.predictor.Predictor`):
``predict(frame, sentences)`` -> one uint8 ``[H, W]`` mask per sentence."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .segmenter import Segmenter


class SegmenterPredictor:
    """Predicts with a deployed model: all of a frame's sentences in one `Segmenter.run` (the
    visual graph once per frame). Over-long sentences are cut to ``word_len`` tokens quietly, as
    the official evaluation does."""

    def __init__(self, segmenter: Segmenter):
        self.segmenter = segmenter

    @classmethod
    def from_engine(cls, engine, backend: str = "auto", device=None, threshold: Optional[float] = None,
                    **kwargs) -> "SegmenterPredictor":
        """``Segmenter(engine, backend, device, threshold, **kwargs)`` as a predictor."""
        return cls(Segmenter(engine, backend, device, threshold, **kwargs))

    def predict(self, frame: np.ndarray, sentences: Sequence[str]) -> list[np.ndarray]:
        """uint8 BGR ``[H, W, 3]`` frame + sentences -> one uint8 ``[H, W]`` mask in {0, 1} each."""
        if len(sentences) == 0:
            return []
        return [r.mask for r in self.segmenter.run(frame, list(sentences), warn_truncated=False)]
