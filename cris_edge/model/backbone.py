"""The CLIP backbone of CRIS, built from open_clip modules.

The backbone is an open_clip ``CLIP`` (ModifiedResNet vision tower + text transformer) whose
attention pool is replaced by CRIS's dense `AttentionPool`: it attends over every spatial
position (no class token) and adds a 1x1-conv ``connect`` residual, keeping the C5 map instead
of pooling it. State-dict keys equal OpenAI CLIP's and CRIS.pytorch's ``backbone.*``.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping, Union

import torch
import torch.nn.functional as F
from torch import nn

from ._torchvision_compat import import_open_clip


class AttentionPool(nn.Module):
    """Dense multi-head attention pool with a convolutional residual.

    ``x [B, C, H, W]`` -> ``[B, output_dim, H, W]``. The learnt ``(spacial_dim**2 + 1) x C``
    positional embedding (its first row, the class token's, is unused) is resized bicubically
    to ``H x W``; attention runs over the ``H*W`` positions; the output adds ``connect(x)``
    (1x1 conv + BN) and goes through a ReLU.
    """

    def __init__(self, spacial_dim: int, embed_dim: int, num_heads: int, output_dim: int):
        super().__init__()
        self.spacial_dim = spacial_dim
        self.num_heads = num_heads
        self.positional_embedding = nn.Parameter(torch.randn(spacial_dim ** 2 + 1, embed_dim) / embed_dim ** 0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.connect = nn.Sequential(nn.Conv2d(embed_dim, output_dim, 1, bias=False),
                                     nn.BatchNorm2d(output_dim))

    def resized_positions(self, height: int, width: int) -> torch.Tensor:
        """The spatial positional embedding resized to ``[C, height*width]``."""
        side = self.spacial_dim
        grid = self.positional_embedding[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=False)
        return grid.flatten(2)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        residual = self.connect(x)
        tokens = (x.flatten(2) + self.resized_positions(h, w).to(x.dtype)).permute(2, 0, 1)  # [HW, B, C]
        out, _ = F.multi_head_attention_forward(
            query=tokens, key=tokens, value=tokens, embed_dim_to_check=c, num_heads=self.num_heads,
            q_proj_weight=self.q_proj.weight, k_proj_weight=self.k_proj.weight,
            v_proj_weight=self.v_proj.weight, in_proj_weight=None,
            in_proj_bias=torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
            out_proj_weight=self.c_proj.weight, out_proj_bias=self.c_proj.bias,
            use_separate_proj_weight=True, training=self.training, need_weights=False)
        out = out.permute(1, 2, 0).reshape(b, -1, h, w)
        return F.relu(out + residual, inplace=True)


ClipModelLike = Union[str, Mapping[str, Any]]


def clip_model_config(clip_model: ClipModelLike) -> dict:
    """The open_clip model-config dict for a name (``RN50-quickgelu``) or a dict (copied).

    Raises ValueError for an unknown name or a vision tower that is not a ModifiedResNet.
    """
    if isinstance(clip_model, str):
        open_clip = import_open_clip()
        cfg = open_clip.get_model_config(clip_model)
        if cfg is None:
            raise ValueError(f"unknown open_clip model {clip_model!r}; CRIS needs a ModifiedResNet "
                             "model such as 'RN50-quickgelu' or 'RN101-quickgelu', or a config dict")
    else:
        cfg = copy.deepcopy(dict(clip_model))
    layers = cfg.get("vision_cfg", {}).get("layers")
    if not isinstance(layers, (list, tuple)) or len(layers) != 4:
        raise ValueError(f"CRIS needs a ModifiedResNet CLIP (vision_cfg.layers = 4 stage depths); got {layers!r}")
    return cfg


def build_clip_backbone(clip_model: ClipModelLike) -> nn.Module:
    """An open_clip ``CLIP`` with its attention pool replaced by `AttentionPool` (random init)."""
    open_clip = import_open_clip()
    cfg = clip_model_config(clip_model)
    clip = open_clip.model.CLIP(**cfg)
    pool = clip.visual.attnpool
    clip.visual.attnpool = AttentionPool(
        spacial_dim=clip.visual.image_size // 32, embed_dim=pool.k_proj.in_features,
        num_heads=pool.num_heads, output_dim=pool.c_proj.out_features)
    _run_text_sequence_first(clip.transformer)
    return clip


def _run_text_sequence_first(transformer: nn.Module) -> None:
    """Make open_clip's text transformer run its attention on ``[L, B, D]`` tensors, as OpenAI's
    CLIP (and so CRIS.pytorch) does: the same function, but PyTorch's attention kernels round
    differently for the two layouts, and the official logits carry the sequence-first rounding.
    Inputs and outputs stay batch-first: open_clip's ``Transformer`` transposes when
    ``batch_first`` is False."""
    transformer.batch_first = False
    for block in transformer.resblocks:
        block.attn.batch_first = False


def encode_image(clip: nn.Module, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``image [B, 3, S, S]`` (CLIP-normalised) -> ``(C3 [B, 8w, S/8, S/8], C4 [B, 16w, S/16,
    S/16], C5 [B, embed_dim, S/32, S/32])`` for a ModifiedResNet of width ``w``."""
    visual = clip.visual
    x = visual.stem(image.to(visual.conv1.weight.dtype))
    c3 = visual.layer2(visual.layer1(x))
    c4 = visual.layer3(c3)
    c5 = visual.attnpool(visual.layer4(c4))
    return c3, c4, c5


def encode_text(clip: nn.Module, tokens: torch.Tensor, eot_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``tokens`` int ``[B, L]``, ``eot_index`` int ``[B]`` -> ``(word [B, L, width], state
    [B, embed_dim])``: per-token features after the causal transformer and final LayerNorm,
    and the EOT token's feature projected by ``text_projection``."""
    length = tokens.shape[1]
    x = clip.token_embedding(tokens) + clip.positional_embedding[:length]
    x = clip.transformer(x, attn_mask=clip.attn_mask[:length, :length])
    word = clip.ln_final(x)
    eot = word[torch.arange(word.shape[0], device=word.device), eot_index.long()]
    proj = clip.text_projection
    state = proj(eot) if isinstance(proj, nn.Linear) else eot @ proj
    return word, state
