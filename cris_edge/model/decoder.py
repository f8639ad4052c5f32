"""The CRIS vision-language transformer decoder with fixed sine positional encodings."""

from __future__ import annotations

import math

import torch
from torch import nn


def sine_positions_1d(dim: int, length: int) -> torch.Tensor:
    """Sine/cosine encoding of ``length`` positions: float32 ``[length, 1, dim]``.

    Channel ``2i`` holds ``sin(p * f_i)`` and ``2i + 1`` holds ``cos(p * f_i)`` with
    ``f_i = 10000 ** (-2i / dim)``.
    """
    if dim % 2:
        raise ValueError(f"1-D sine positions need an even dimension, got {dim}")
    freqs = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    angles = torch.arange(length, dtype=torch.float32)[:, None] * freqs
    pe = torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(length, dim)
    return pe[:, None, :]


def sine_positions_2d(dim: int, height: int, width: int) -> torch.Tensor:
    """2-D sine/cosine encoding of an ``height x width`` grid: float32 ``[H*W, 1, dim]``.

    The first ``dim/2`` channels encode the column (interleaved sin/cos), the last ``dim/2``
    the row, each with frequencies ``10000 ** (-2i / (dim/2))``; positions are flattened
    row-major, matching ``x.flatten(2)`` of a ``[B, C, H, W]`` map.
    """
    if dim % 4:
        raise ValueError(f"2-D sine positions need a dimension divisible by 4, got {dim}")
    half = dim // 2
    cols = sine_positions_1d(half, width)[:, 0, :]   # [W, half]
    rows = sine_positions_1d(half, height)[:, 0, :]  # [H, half]
    pe = torch.cat([cols[None, :, :].expand(height, width, half),
                    rows[:, None, :].expand(height, width, half)], dim=-1)
    return pe.reshape(height * width, 1, dim)


class TransformerDecoderLayer(nn.Module):
    """Pre-norm decoder layer: self-attention over visual tokens, cross-attention to words, FFN.

    Each attention output is layer-normed again before its residual (as in CRIS). Sequence-first
    tensors: ``vis [N, B, D]``, ``txt [L, B, D]``, positions ``[N, 1, D]`` / ``[L, 1, D]``,
    ``pad_mask`` bool ``[B, L]`` (True = padding, ignored).
    """

    def __init__(self, d_model: int = 512, nhead: int = 8, dim_feedforward: int = 2048,
                 dropout: float = 0.1):
        super().__init__()
        self.self_attn_norm = nn.LayerNorm(d_model)
        self.cross_attn_norm = nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout,
                                                    kdim=d_model, vdim=d_model)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, dim_feedforward), nn.ReLU(True), nn.Dropout(dropout),
            nn.LayerNorm(dim_feedforward), nn.Linear(dim_feedforward, d_model))
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(self, vis: torch.Tensor, txt: torch.Tensor, vis_pos: torch.Tensor,
                txt_pos: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        q = self.norm1(vis)
        # need_weights stays at its default (True) as in CRIS.pytorch: it selects the explicit
        # softmax path, whose rounding the official logits carry.
        attended = self.self_attn(q + vis_pos, q + vis_pos, value=q)[0]
        vis = vis + self.dropout1(self.self_attn_norm(attended))
        q = self.norm2(vis)
        attended = self.multihead_attn(q + vis_pos, txt + txt_pos, value=txt,
                                       key_padding_mask=pad_mask)[0]
        vis = vis + self.dropout2(self.cross_attn_norm(attended))
        return vis + self.dropout3(self.ffn(self.norm3(vis)))


class TransformerDecoder(nn.Module):
    """Stack of `TransformerDecoderLayer` and a final LayerNorm.

    ``vis [B, D, H, W]``, ``txt [B, L, D]`` (word features), ``pad_mask`` bool ``[B, L]`` ->
    ``[B, D, H*W]``.
    """

    def __init__(self, num_layers: int, d_model: int, nhead: int, dim_ffn: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerDecoderLayer(d_model, nhead, dim_ffn, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, vis: torch.Tensor, txt: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        b, c, h, w = vis.shape
        vis_pos = sine_positions_2d(c, h, w).to(vis)
        txt_pos = sine_positions_1d(txt.shape[-1], txt.shape[1]).to(txt)
        out = vis.flatten(2).permute(2, 0, 1)
        txt = txt.permute(1, 0, 2)
        for layer in self.layers:
            out = layer(out, txt, vis_pos, txt_pos, pad_mask)
        return self.norm(out).permute(1, 2, 0)
