"""The PyTorch backend: a CRIS model run by :mod:`cris_edge.model` itself (a checkpoint, or a
model in memory during training), for reference, evaluation and training-side checks (eager;
the official grouped convolution in the head). The only backend that imports torch."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import numpy as np

from ...tokenizer import TokenBatch
from ..text_cache import TextFeatures
from .base import HostBackend, ModelInfo, plural


class TorchBackend(HostBackend):
    """``model`` (a `cris_edge.model.CRIS`) on ``device`` (None: where it is; another device
    moves the model there, as ``model.to`` does) run in eval mode under ``torch.inference_mode``; a model in training mode is put back in training mode
    after each call. ``max_batch`` frames, texts and head pairs per forward pass. Threads are
    torch's own (``torch.set_num_threads``, a process-wide setting, is left to the caller)."""

    def __init__(self, model, device: Optional[str] = None, max_batch: int = 32):
        import torch

        self._torch = torch
        self.device = torch.device(device) if device else next(model.parameters()).device
        self.model = model.to(self.device)
        self.max_batch = int(max_batch)
        cfg = model.config
        self.info = ModelInfo(cfg.input_size, cfg.word_len)
        self.name = f"pytorch ({self.device}, {plural(torch.get_num_threads(), 'thread')})" \
            if self.device.type == "cpu" else f"pytorch ({self.device})"

    @classmethod
    def from_checkpoint(cls, checkpoint: Path, config=None, device: Optional[str] = None,
                        max_batch: int = 32) -> "TorchBackend":
        """``load_cris(checkpoint, config)`` on ``device`` (None: CUDA when available, else CPU)."""
        import torch

        from ...model import load_cris

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(load_cris(checkpoint, config), device, max_batch)

    @contextmanager
    def _inference(self):
        training = self.model.training
        self.model.eval()
        try:
            with self._torch.inference_mode():
                yield
        finally:
            self.model.train(training)

    def _tensor(self, array: np.ndarray, dtype=None):
        return self._torch.from_numpy(np.ascontiguousarray(array)).to(self.device, dtype)

    def encode_text(self, tokens: TokenBatch) -> list[TextFeatures]:
        torch = self._torch
        with self._inference():
            word, state = self.model.encode_text(self._tensor(tokens.tokens, torch.long),
                                                 self._tensor(tokens.eot_index, torch.long))
        word, state = word.float().cpu().numpy(), state.float().cpu().numpy()
        return [TextFeatures(word[i], state[i], tokens.pad_mask[i]) for i in range(len(word))]

    def _visual(self, images: np.ndarray):
        with self._inference():
            return self.model.encode_image(self._tensor(images))

    def _head(self, features, frame_index, word, pad_mask, state) -> np.ndarray:
        with self._inference():
            index = self._tensor(frame_index)
            c3, c4, c5 = (f.index_select(0, index) for f in features)
            logits = self.model.head(c3, c4, c5, self._tensor(word), self._tensor(pad_mask), self._tensor(state))
        return logits.float().cpu().numpy()
