"""Predictors: anything that turns a frame and sentences into masks, so `evaluate` can measure
a PyTorch checkpoint today and a deployed bundle (through the runtime) later.

A predictor has one method, ``predict(frame, sentences) -> masks``: ``frame`` uint8
``[H, W, 3]`` BGR, ``sentences`` a list of str, each predicted on its own; it returns one uint8
``[H, W]`` mask in {0, 1} per sentence, at the frame's size. Taking all of a frame's sentences
at once only lets a predictor encode the image once.
"""

from __future__ import annotations

from typing import Optional, Protocol, Sequence

import numpy as np
import torch

from ..data.transforms import tokenize_quietly
from ..model import CRIS, load_cris
from ..model.config import ConfigLike
from ..model.cris import text_inputs
from ..runtime.postprocess import postprocess
from ..runtime.preprocess import Letterbox, preprocess


class Predictor(Protocol):
    """Frame (uint8 BGR ``[H, W, 3]``) + sentences -> one uint8 ``[H, W]`` mask per sentence."""

    def predict(self, frame: np.ndarray, sentences: Sequence[str]) -> list[np.ndarray]: ...


class TorchPredictor:
    """A PyTorch CRIS model as a `Predictor`, with the official pre/post-processing of
    :mod:`cris_edge.runtime` (letterbox to ``input_size``; sigmoid, bicubic upsampling, inverse
    letterbox, ``> threshold``). The image goes through the backbone once per frame; sentences
    go through the text encoder and the head in batches of ``batch_size``.
    """

    def __init__(self, model: CRIS, device: str | torch.device = "cpu", threshold: float = 0.35,
                 batch_size: int = 32):
        self.model = model
        self.device = torch.device(device)
        self.threshold = float(threshold)
        self.batch_size = int(batch_size)

    @classmethod
    def from_checkpoint(cls, checkpoint, config: Optional[ConfigLike] = None,
                        device: str | torch.device = "cpu", **kwargs) -> "TorchPredictor":
        """Load ``checkpoint`` with `load_cris` (``config`` where the weights cannot tell it)."""
        return cls(load_cris(checkpoint, config).to(device), device, **kwargs)

    @torch.no_grad()
    def logits(self, frame: np.ndarray, sentences: Sequence[str]) -> tuple[np.ndarray, Letterbox]:
        """``(logits float32 [N, 1, S/4, S/4], letterbox)`` for the N sentences (over-long
        sentences are cut to ``word_len`` tokens, as the official code does)."""
        was_training = self.model.training
        self.model.eval()
        try:
            config = self.model.config
            box = preprocess(frame, config.input_size)
            image = torch.from_numpy(box.image).to(self.device)
            c3, c4, c5 = self.model.encode_image(image)
            out = []
            for start in range(0, len(sentences), self.batch_size):
                chunk = sentences[start:start + self.batch_size]
                tokens = torch.from_numpy(np.stack([tokenize_quietly(s, config.word_len) for s in chunk]))
                tokens = tokens.long().to(self.device)
                pad_mask, eot_index = text_inputs(tokens)
                word, state = self.model.encode_text(tokens, eot_index)
                n = len(chunk)
                out.append(self.model.head(c3.expand(n, -1, -1, -1), c4.expand(n, -1, -1, -1),
                                           c5.expand(n, -1, -1, -1), word, pad_mask, state))
            return torch.cat(out).float().cpu().numpy(), box
        finally:
            self.model.train(was_training)

    def predict(self, frame: np.ndarray, sentences: Sequence[str]) -> list[np.ndarray]:
        """One uint8 ``[H, W]`` mask in {0, 1} per sentence, at the frame's size."""
        logits, box = self.logits(frame, sentences)
        return [postprocess(one[0], box, self.threshold) for one in logits]
