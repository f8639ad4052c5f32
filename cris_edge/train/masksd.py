"""CM-MaskSD: cross-modality masked self-distillation (Wang et al., "CM-MaskSD: Cross-Modality
Masked Self-Distillation for Referring Image Segmentation", IEEE TMM 2024, arXiv 2305.11481),
adapted to CRIS.

Beside the main branch, training runs two masked branches through the *same* weights:

* text-guided image masking: each C5 cell (a 32x32 patch of the input) is scored by the cosine
  similarity of its CLIP feature with the sentence feature (both in CLIP's joint space); the
  ``image_ratio`` most text-relevant patches are set to 0 in the normalised input (the CLIP
  mean colour) and the masked image goes through the whole network with the unmasked text;
* image-guided word masking: each word's feature, projected into the joint space by CLIP's
  ``text_projection``, is scored by its cosine similarity with the image feature (the mean of
  C5); the ``word_ratio`` most image-relevant words (never SOT/EOT/padding; none when the
  sentence has a single word) are replaced by the padding id 0, so the text encoder sees them
  blanked and the decoder ignores them, and the masked text goes through the network with the
  unmasked image.

Each masked branch's logits are distilled towards the main branch's (detached) prediction by
a per-pixel Bernoulli KL divergence. The scores are computed without gradient from features the
main branch computes anyway. Nothing is added to the model: inference and export are unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..model.cris import text_inputs


@torch.no_grad()
def text_guided_patch_mask(c5: torch.Tensor, state: torch.Tensor, ratio: float) -> torch.Tensor:
    """bool ``[B, h, w]``, True for the ``round(ratio * h * w)`` (at least 1) C5 cells most
    similar to the sentence. ``c5`` float ``[B, E, h, w]``, ``state`` float ``[B, E]``."""
    b, _, h, w = c5.shape
    sim = F.cosine_similarity(c5.flatten(2).float(), state.float()[:, :, None], dim=1)  # [B, h*w]
    k = max(1, round(ratio * h * w))
    mask = torch.zeros_like(sim, dtype=torch.bool)
    mask.scatter_(1, sim.topk(k, dim=1).indices, True)
    return mask.reshape(b, h, w)


def mask_image(image: torch.Tensor, patch_mask: torch.Tensor) -> torch.Tensor:
    """``image`` float ``[B, 3, S, S]`` with the patches of ``patch_mask`` (bool ``[B, h, w]``,
    each cell ``S/h`` pixels) set to 0, the CLIP mean colour after normalisation."""
    keep = (~patch_mask).to(image.dtype)[:, None]
    return image * F.interpolate(keep, size=image.shape[-2:], mode="nearest")


@torch.no_grad()
def image_guided_word_mask(word: torch.Tensor, text_projection, c5: torch.Tensor,
                           tokens: torch.Tensor, ratio: float) -> torch.Tensor:
    """bool ``[B, L]``, True for the words to mask: per sentence with ``n >= 2`` words (tokens
    between SOT and EOT), the ``min(n - 1, max(1, round(ratio * n)))`` words whose projected
    features are most similar to the image feature (mean of ``c5``).

    ``word`` float ``[B, L, D]`` (text transformer output), ``text_projection`` the CLIP
    ``[D, E]`` matrix (or Linear), ``c5`` float ``[B, E, h, w]``, ``tokens`` int ``[B, L]``.
    """
    proj = text_projection(word) if isinstance(text_projection, nn.Module) else word @ text_projection
    image = c5.float().mean(dim=(2, 3))
    sim = F.cosine_similarity(proj.float(), image[:, None, :], dim=-1)  # [B, L]
    pad_mask, eot_index = text_inputs(tokens)
    positions = torch.arange(tokens.shape[1], device=tokens.device)[None]
    candidate = (~pad_mask) & (positions > 0) & (positions < eot_index[:, None])
    n = candidate.sum(dim=1)
    k = torch.clamp(torch.round(ratio * n.float()).long(), min=1)
    k = torch.where(n >= 2, torch.minimum(k, n - 1), torch.zeros_like(k))
    order = sim.masked_fill(~candidate, -math.inf).argsort(dim=1, descending=True)
    rank = torch.empty_like(order).scatter_(1, order, positions.expand_as(order))
    return candidate & (rank < k[:, None])


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean per-pixel KL(teacher || student) of Bernoulli predictions given as logits; the
    teacher is detached. Same gradient as BCE against ``sigmoid(teacher)``, and 0 when equal."""
    teacher = teacher.detach().float()
    target = torch.sigmoid(teacher)
    return (F.binary_cross_entropy_with_logits(student.float(), target)
            - F.binary_cross_entropy_with_logits(teacher, target))
