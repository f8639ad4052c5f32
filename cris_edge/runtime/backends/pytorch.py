"""The PyTorch backend: a CRIS checkpoint run by :mod:`cris_edge.model` itself, for reference and
training-side checks (float32, eager; the official grouped convolution in the head)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np

from ...tokenizer import TokenBatch
from ..text_cache import TextFeatures
from .base import HostBackend, ModelInfo, plural

log = logging.getLogger("cris_edge.runtime")


class TorchBackend(HostBackend):
    """``load_cris(checkpoint, config)`` on ``device`` (None: CUDA when available, else CPU).

    ``threads`` has no effect here (a warning is logged when it is given): torch's intra-op
    thread count is process-wide (``torch.set_num_threads``), so a library call does not change
    it; a program that wants it set calls ``torch.set_num_threads`` itself. ``threads`` applies
    to the ONNX Runtime backend only. The name reports the thread count torch uses."""

    def __init__(self, checkpoint: Path, config=None, device: Optional[str] = None, threads: Optional[int] = None):
        import torch

        from ...model import load_cris

        self._torch = torch
        if threads:
            log.warning("threads=%s ignored by the PyTorch backend: torch's thread count is process-wide; call "
                        "torch.set_num_threads(%s) in your program to set it", threads, threads)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = load_cris(checkpoint, config).to(self.device).eval()
        cfg = self.model.config
        self.info = ModelInfo(cfg.input_size, cfg.word_len)
        self.name = f"pytorch ({self.device}, {plural(torch.get_num_threads(), 'thread')})" \
            if self.device.type == "cpu" else f"pytorch ({self.device})"

    def _tensor(self, array: np.ndarray, dtype=None):
        return self._torch.from_numpy(np.ascontiguousarray(array)).to(self.device, dtype)

    def encode_text(self, tokens: TokenBatch) -> list[TextFeatures]:
        torch = self._torch
        with torch.inference_mode():
            word, state = self.model.encode_text(self._tensor(tokens.tokens, torch.long),
                                                 self._tensor(tokens.eot_index, torch.long))
        word, state = word.float().cpu().numpy(), state.float().cpu().numpy()
        return [TextFeatures(word[i], state[i], tokens.pad_mask[i]) for i in range(len(word))]

    def _visual(self, images: np.ndarray):
        with self._torch.inference_mode():
            return self.model.encode_image(self._tensor(images))

    def _head(self, features, frame_index, word, pad_mask, state) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            index = self._tensor(frame_index)
            c3, c4, c5 = (f.index_select(0, index) for f in features)
            logits = self.model.head(c3, c4, c5, self._tensor(word), self._tensor(pad_mask), self._tensor(state))
        return logits.float().cpu().numpy()
