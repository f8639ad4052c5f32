"""The official CRIS inference written plainly in the tests, independent of the runtime: the
model's own forward per sentence on the official pre-processed image."""

from __future__ import annotations

import numpy as np
import torch

from cris_edge.runtime.preprocess import Letterbox, preprocess
from cris_edge.tokenizer import get_tokenizer


@torch.no_grad()
def reference_logits(model, frame: np.ndarray, sentences) -> tuple[np.ndarray, Letterbox]:
    """``(float32 logits [N, 1, S/4, S/4], letterbox)`` of ``model`` (eval mode) for each sentence
    (over-long ones cut to ``word_len`` tokens, as the official code does)."""
    config = model.config
    box = preprocess(frame, config.input_size)
    image = torch.from_numpy(box.image)
    out = []
    for sentence in sentences:
        tokens = get_tokenizer().batch(sentence, config.word_len, warn=False).tokens
        out.append(model(image, torch.from_numpy(tokens).long()).float().numpy())
    return np.concatenate(out), box
