"""The zero-shot method's host-side steps in numpy: the image and soft masks resized as the official code does (torch's bilinear interpolation, align_corners=False, no
antialias, reproduced exactly), the local crops, and the scores.

OpenCV's ``INTER_LINEAR`` is not used: it equals torch's rule when enlarging, but when shrinking
by a large factor torch still samples 2 pixels per output pixel and OpenCV does not.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..bundle import ZeroShotMethod


def _bilinear_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Torch's source taps for one axis: ``(i0, i1, w0, w1)``, float32 weights, computed in
    float32 as torch's CPU kernel does (``src = max((dst + 0.5) * in / out - 0.5, 0)``)."""
    scale = np.float32(size_in) / np.float32(size_out)
    src = (np.arange(size_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    src = np.maximum(src, np.float32(0.0))
    i0 = src.astype(np.int64)
    i1 = np.minimum(i0 + 1, size_in - 1)
    w1 = (src - i0.astype(np.float32)).astype(np.float32)
    return i0, i1, (np.float32(1.0) - w1).astype(np.float32), w1


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``[..., H, W]`` (any real dtype) -> float32 ``[..., height, width]``: torch's
    ``F.interpolate(mode="bilinear", align_corners=False, antialias=False)`` (every output pixel
    mixes 2 x 2 input pixels, whatever the scale), in torch's order of operations: each of the two
    source rows mixed along the columns, then the two rows mixed. Reads only the rows it needs."""
    r0, r1, a0, a1 = _bilinear_taps(image.shape[-2], height)
    c0, c1, b0, b1 = _bilinear_taps(image.shape[-1], width)
    rows, where = np.unique(np.concatenate([r0, r1]), return_inverse=True)
    source = image[..., rows, :].astype(np.float32)
    mixed = b0 * source[..., c0] + b1 * source[..., c1]
    return a0[:, None] * mixed[..., where[:height], :] + a1[:, None] * mixed[..., where[height:], :]


def tight_boxes(masks: np.ndarray) -> np.ndarray:
    """bool ``[N, H, W]`` (none empty) -> int64 ``[N, 4]`` ``(x_min, y_min, x_max + 1, y_max + 1)``."""
    out = np.zeros((len(masks), 4), np.int64)
    for n, mask in enumerate(masks):
        cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
        out[n] = cols[0], rows[0], cols[-1] + 1, rows[-1] + 1
    return out


def check_boxes(boxes, count: int, height: int, width: int) -> np.ndarray:
    """int64 ``[count, 4]`` ``(x1, y1, x2, y2)`` from the caller's boxes, truncated to int as the
    official code does; ValueError unless ``0 <= x1 < x2 <= width`` and ``0 <= y1 < y2 <= height``."""
    try:
        boxes = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("boxes must be numbers [N, 4] (x1, y1, x2, y2)") from None
    if boxes.shape != (count, 4):
        raise ValueError(f"boxes must be [{count}, 4] (x1, y1, x2, y2), one per proposal, got shape {boxes.shape}")
    if not np.isfinite(boxes).all():
        raise ValueError("boxes must be finite numbers")
    boxes = np.trunc(boxes).astype(np.int64)
    x1, y1, x2, y2 = boxes.T
    bad = np.flatnonzero((x1 < 0) | (y1 < 0) | (x2 > width) | (y2 > height) | (x2 <= x1) | (y2 <= y1))
    if bad.size:
        raise ValueError(f"boxes {bad[:10].tolist()} are empty or outside the {width}x{height} frame "
                         f"(first: {boxes[bad[0]].tolist()})")
    return boxes


def normalized_frame(rgb: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 RGB ``[H, W, 3]`` -> float32 ``[3, H, W]``: /255, then mean/std."""
    image = rgb.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
    return (image - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[:, None, None]


def soft_masks(masks: np.ndarray, grid: int) -> np.ndarray:
    """bool ``[N, H, W]`` -> float32 ``[N, 1, grid, grid]``, soft (never re-binarised)."""
    return resize_bilinear(masks, grid, grid)[:, None]


def crops(image: np.ndarray, masks: np.ndarray, boxes: np.ndarray, size: int,
          fill: Sequence[float]) -> np.ndarray:
    """The local branch's inputs: ``image [3, H, W]`` normalised, ``masks [N, H, W]`` bool,
    ``boxes [N, 4]`` -> float32 ``[N, 3, size, size]``: outside its mask each crop holds
    ``fill`` (normalised space); the box is cut out and stretched to ``size`` square."""
    background = np.asarray(fill, np.float32)[:, None, None]
    out = np.empty((len(masks), 3, size, size), np.float32)
    for n, (x1, y1, x2, y2) in enumerate(boxes):
        inside = masks[n, y1:y2, x1:x2].astype(np.float32)
        filled = image[:, y1:y2, x1:x2] * inside + (np.float32(1.0) - inside) * background
        out[n] = resize_bilinear(filled, size, size)
    return out


def scores(method: ZeroShotMethod, global_f: np.ndarray, local_f: Optional[np.ndarray], sentence_f: np.ndarray,
           phrase_f: np.ndarray) -> np.ndarray:
    """float32 ``[N]``: ``v = alpha * global + (1 - alpha) * local`` (global alone when
    ``local_f`` is None, i.e. alpha = 1), ``t = beta * sentence + (1 - beta) * phrase``; the
    `ZeroShotMethod.scoring` rule times ``logit_scale``."""
    g = np.asarray(global_f, np.float32)
    visual = g if local_f is None else method.alpha * g + (1 - method.alpha) * np.asarray(local_f, np.float32)
    text = method.beta * np.asarray(sentence_f, np.float32) + (1 - method.beta) * np.asarray(phrase_f, np.float32)
    if method.scoring == "cosine":
        visual = visual / np.linalg.norm(visual, axis=-1, keepdims=True)
        text = text / np.linalg.norm(text)
    return (np.float32(method.logit_scale) * (visual @ text)).astype(np.float32)


def softmax_at(scores: np.ndarray, index: int) -> float:
    """The softmax of ``scores`` at ``index``: the chosen proposal's share, in (0, 1]."""
    weights = np.exp(scores.astype(np.float64) - scores.max())
    return float(weights[index] / weights.sum())
