"""The training forward pass: CRIS's BCE loss, an optional Dice loss, an optional referent-category
loss, and CM-MaskSD's distillation losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..model import CRIS
from ..model.cris import text_inputs
from .config import MaskSDSettings
from .masksd import distillation_loss, image_guided_word_mask, mask_image, text_guided_patch_mask


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Mean over the batch of ``1 - (2 |P.T| + smooth) / (|P| + |T| + smooth)`` with ``P`` the
    sigmoid of ``logits`` and ``T`` the target, both float ``[B, 1, H, W]``."""
    prob = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1)
    overlap = (prob * target).sum(1)
    return (1 - (2 * overlap + smooth) / (prob.sum(1) + target.sum(1) + smooth)).mean()


def masked_average(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``features [B, C, h, w]`` averaged over each of ``mask [B*K, 1, H, W]`` (in [0, 1],
    area-resized to ``h x w``; masks ``k*K .. k*K+K-1`` belong to image ``k``) -> float32
    ``[B*K, C]``; a mask that covers nothing gives zeros. Computed in float32 on the
    un-repeated features (one small batched matmul, not a copy per mask)."""
    batch, channels, h, w = features.shape
    if mask.shape[0] % batch:
        raise ValueError(f"{mask.shape[0]} masks do not divide among {batch} images")
    weight = F.adaptive_avg_pool2d(mask.float(), (h, w)).view(batch, -1, h * w)
    with torch.autocast(device_type=features.device.type, enabled=False):
        summed = torch.bmm(weight, features.float().reshape(batch, channels, h * w).transpose(1, 2))
    return (summed / weight.sum(2, keepdim=True).clamp_min(1e-6)).flatten(0, 1)


class CategoryLoss(nn.Module):
    """The training-only referent-category loss: a linear classifier on a referent's C3 and C4
    features averaged over its mask, cross-entropy against its category (-1: ignored).
    Supervising what the referent *is* gives the visual features attributes (shape, say) that
    the referring loss alone picks up slowly; the classifier is dropped after training."""

    def __init__(self, c3_channels: int, c4_channels: int, num_categories: int):
        super().__init__()
        if num_categories < 2:
            raise ValueError(f"a category loss needs at least 2 categories, got {num_categories}")
        self.classifier = nn.Linear(c3_channels + c4_channels, num_categories)

    def forward(self, c3: torch.Tensor, c4: torch.Tensor, mask: torch.Tensor,
                category: torch.Tensor) -> torch.Tensor:
        """``c3 [B, C3, S/8, S/8]``, ``c4 [B, C4, S/16, S/16]`` (one per image), ``mask [B*K, 1, S,
        S]`` and ``category`` int ``[B*K]`` (K referents per image, image-major) -> scalar loss (0
        when no referent has a category)."""
        known = category >= 0
        if bool((category >= self.classifier.out_features).any()):
            raise ValueError(f"category {int(category.max())} is out of range for a classifier with "
                             f"{self.classifier.out_features} outputs (set train.num_categories)")
        if not bool(known.any()):
            return self.classifier.weight.sum() * 0.0  # keeps every parameter in the graph (DDP)
        pooled = torch.cat([masked_average(c3, mask), masked_average(c4, mask)], dim=1)
        return F.cross_entropy(self.classifier(pooled)[known], category[known])


class CRISObjective(nn.Module):
    """The training forward pass as one module (so DDP sees one forward and one backward).

    ``forward(image [B, 3, S, S], tokens int [B, K, L], mask float [B, K, 1, S, S], category
    int [B, K] or None)`` ->
    ``(logits [B*K, 1, S/4, S/4], losses)``: K (referent, sentence) pairs per image, the
    backbone run once per image (``tokens [B, L]`` and ``mask [B, 1, S, S]`` mean K = 1); ``losses["bce"]`` is CRIS's BCE, with
    ``loss_at="logits"`` on the logits against the mask resized (nearest) to their size, with
    ``loss_at="input"`` on the logits upsampled to ``S`` (bicubic, ``align_corners=True``, as
    inference does) against the mask; ``"dice"`` (when ``dice_weight > 0``) is the soft Dice
    loss on the same pair; ``"category"`` (when ``category_weight > 0``) is `CategoryLoss`;
    with CM-MaskSD, ``"sd_image"`` and ``"sd_text"`` are the distillation losses; ``"loss"`` is
    the weighted total.
    """

    def __init__(self, model: CRIS, masksd: MaskSDSettings | None = None, loss_at: str = "logits",
                 dice_weight: float = 0.0, category_weight: float = 0.0, num_categories: int = 0):
        super().__init__()
        self.model = model
        self.masksd = masksd if masksd is not None and masksd.enabled else None
        self.loss_at = loss_at
        self.dice_weight = float(dice_weight)
        self.category_weight = float(category_weight)
        c3_channels, c4_channels = model.config.fpn_in[:2]
        self.category_loss = (CategoryLoss(c3_channels, c4_channels, num_categories)
                              if self.category_weight else None)

    def forward(self, image: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor,
                category: torch.Tensor | None = None):
        model = self.model
        pairs = tokens.shape[1] if tokens.dim() == 3 else 1
        tokens, mask = tokens.flatten(0, tokens.dim() - 2), mask.flatten(0, mask.dim() - 4)
        pad_mask, eot_index = text_inputs(tokens)
        image_c3, image_c4, c5 = model.encode_image(image)
        c3, c4 = image_c3, image_c4
        if pairs > 1:
            c3, c4, c5 = (c.repeat_interleave(pairs, 0) for c in (c3, c4, c5))
        word, state = model.encode_text(tokens, eot_index)
        logits = model.head(c3, c4, c5, word, pad_mask, state)
        if self.loss_at == "input":
            pred = F.interpolate(logits.float(), mask.shape[-2:], mode="bicubic", align_corners=True)
            target = mask.float()
        else:
            pred, target = logits.float(), F.interpolate(mask, logits.shape[-2:], mode="nearest").float()
        losses = {"bce": F.binary_cross_entropy_with_logits(pred, target)}
        total = losses["bce"]
        if self.dice_weight:
            losses["dice"] = dice_loss(pred, target)
            total = total + self.dice_weight * losses["dice"]
        if self.category_loss is not None:
            if category is None:
                raise ValueError("train.category_weight > 0 needs each pair's category")
            losses["category"] = self.category_loss(image_c3, image_c4, mask, category.flatten().long())
            total = total + self.category_weight * losses["category"]
        if self.masksd is None:
            return logits, {**losses, "loss": total}
        cfg = self.masksd
        patches = text_guided_patch_mask(c5, state, cfg.image_ratio)
        m3, m4, m5 = model.encode_image(mask_image(image.repeat_interleave(pairs, 0) if pairs > 1 else image,
                                                   patches))
        losses["sd_image"] = distillation_loss(model.head(m3, m4, m5, word, pad_mask, state), logits)
        words = image_guided_word_mask(word, model.backbone.text_projection, c5, tokens, cfg.word_ratio)
        masked_tokens = tokens.masked_fill(words, 0)
        masked_pad, _ = text_inputs(masked_tokens)
        m_word, m_state = model.encode_text(masked_tokens, eot_index)
        losses["sd_text"] = distillation_loss(model.head(c3, c4, c5, m_word, masked_pad, m_state), logits)
        total = total + cfg.image_weight * losses["sd_image"] + cfg.text_weight * losses["sd_text"]
        return logits, {**losses, "loss": total}
