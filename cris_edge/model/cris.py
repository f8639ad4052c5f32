"""`CRIS`: CLIP-Driven Referring Image Segmentation (Wang et al., CVPR 2022)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import build_clip_backbone, encode_image, encode_text
from .config import CRISConfig
from .decoder import TransformerDecoder
from .neck import FPN
from .projector import Projector


def text_inputs(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pad_mask bool [B, L], eot_index int64 [B])`` from CLIP token ids ``[B, L]``: padding is
    id 0 and EOT is the largest id in the vocabulary, so it sits at the argmax."""
    return tokens == 0, tokens.argmax(dim=-1)


class CRIS(nn.Module):
    """The CRIS model. Submodules (and so state-dict keys) follow CRIS.pytorch: ``backbone``
    (open_clip CLIP), ``neck`` (`FPN`), ``decoder`` (`TransformerDecoder`), ``proj``
    (`Projector`).

    The stages are exposed separately because deployment runs them as separate graphs:
    `encode_image` once per frame, `encode_text` once per prompt, `head` per pair.
    """

    def __init__(self, config: CRISConfig):
        super().__init__()
        self.config = config
        self.backbone = build_clip_backbone(config.clip_model)
        self.neck = FPN(config.fpn_in, config.fpn_out)
        self.decoder = TransformerDecoder(config.num_layers, config.vis_dim, config.num_head,
                                          config.dim_ffn, config.dropout)
        self.proj = Projector(config.word_dim, config.vis_dim // 2, 3)

    def encode_image(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``image`` float ``[B, 3, S, S]`` -> ``(C3, C4, C5)`` at strides 8, 16, 32."""
        return encode_image(self.backbone, image)

    def encode_text(self, tokens: torch.Tensor, eot_index: Optional[torch.Tensor] = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``tokens`` int ``[B, L]`` -> ``(word [B, L, vis_dim], state [B, word_dim])``."""
        if eot_index is None:
            eot_index = tokens.argmax(dim=-1)
        return encode_text(self.backbone, tokens, eot_index)

    def fuse(self, c3: torch.Tensor, c4: torch.Tensor, c5: torch.Tensor, word: torch.Tensor,
             pad_mask: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """Neck + decoder: the multi-modal map ``[B, vis_dim, S/16, S/16]``."""
        fq = self.neck(c3, c4, c5, state)
        b, c, h, w = fq.shape
        return self.decoder(fq, word, pad_mask).reshape(b, c, h, w)

    def head(self, c3: torch.Tensor, c4: torch.Tensor, c5: torch.Tensor, word: torch.Tensor,
             pad_mask: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """Everything after the encoders: logits ``[B, 1, S/4, S/4]``."""
        return self.proj(self.fuse(c3, c4, c5, word, pad_mask, state), state)

    def forward(self, image: torch.Tensor, tokens: torch.Tensor, mask: Optional[torch.Tensor] = None):
        """``image`` float ``[B, 3, S, S]`` (CLIP-normalised), ``tokens`` int ``[B, L]``.

        Returns logits ``[B, 1, S/4, S/4]``. In training mode with ``mask`` (float ``[B, 1,
        H, W]`` in [0, 1]) returns ``(logits, loss)``: BCE-with-logits against the mask resized
        (nearest) to the logits' size.
        """
        pad_mask, eot_index = text_inputs(tokens)
        c3, c4, c5 = self.encode_image(image)
        word, state = self.encode_text(tokens, eot_index)
        logits = self.head(c3, c4, c5, word, pad_mask, state)
        if mask is None or not self.training:
            return logits
        if mask.shape[-2:] != logits.shape[-2:]:
            mask = F.interpolate(mask, logits.shape[-2:], mode="nearest")
        return logits, F.binary_cross_entropy_with_logits(logits, mask)
