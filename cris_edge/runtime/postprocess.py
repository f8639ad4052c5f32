"""CRIS output post-processing in numpy + OpenCV, equal to the official pipeline. Never imports torch.

The official inference (``engine/engine.py`` of CRIS.pytorch) turns the network's logits
``[1, 1, h, w]`` (``h = H / 4``) into a frame mask: sigmoid -> ``F.interpolate(mode='bicubic',
align_corners=True)`` to the input size ``(H, W)`` -> ``cv2.warpAffine`` with the inverse letterbox
matrix (``cv2.INTER_CUBIC``, border 0) to the frame size -> ``> 0.35``. Before the sigmoid, a
head that returns features (``z_v`` and the dynamic kernel) needs the similarity step,
:func:`similarity_logits` of :func:`split_kernel`.

Sizes are ``(height, width)``; an ``int`` input size ``S`` means ``(S, S)``.
"""

from __future__ import annotations

from functools import lru_cache

import math

import cv2
import numpy as np

from ..constants import THRESHOLD
from .preprocess import Letterbox, _size_hw

_CUBIC_A = -0.75  # torch's bicubic kernel constant


def split_kernel(z_v: np.ndarray, kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The head's ``kernel [N, C*k*k + 1]`` output (the projector's dynamic weights, then the
    bias) -> ``(weight [N, C, k, k], bias [N])`` for ``z_v [N, C, h, w]``; ``k`` is the
    projector's kernel size, read from the shapes."""
    n, channels = z_v.shape[:2]
    taps = (kernel.shape[1] - 1) / channels
    k = math.isqrt(int(taps)) if taps == int(taps) else 0
    if kernel.shape[0] != n or k * k != taps or k % 2 == 0:
        raise ValueError(f"kernel {kernel.shape} is not [N, C*k*k + 1] (odd k) for z_v {z_v.shape}")
    return kernel[:, :-1].reshape(n, channels, k, k), kernel[:, -1]


def similarity_logits(z_v, weight, bias) -> np.ndarray:
    """``z_v [B, C, h, w]``, ``weight [B, C, k, k]`` (odd k), ``bias [B]`` -> float32 logits
    ``[B, 1, h, w]``: each sample's correlation with its own kernel, zero padding ``k // 2`` (the
    official grouped ``F.conv2d``), accumulated in float64."""
    z = np.asarray(z_v, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    batch, _, h, width = z.shape
    k = w.shape[-1]
    pad = k // 2
    padded = np.pad(z, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    logits = np.zeros((batch, h, width))
    for dy in range(k):
        for dx in range(k):
            logits += np.einsum("bchw,bc->bhw", padded[:, :, dy:dy + h, dx:dx + width], w[:, :, dy, dx])
    logits += np.asarray(bias, dtype=np.float64).reshape(batch, 1, 1)
    return logits.astype(np.float32)[:, None]


def features_to_logits(z_v: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """A ``features`` head's outputs (``z_v [N, C, h, w]``, ``kernel [N, C*k*k + 1]``) ->
    float32 logits ``[N, 1, h, w]``: what the SimUpsample kernel computes first."""
    return similarity_logits(z_v, *split_kernel(z_v, kernel))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function; any shape, returns float32 (no overflow warnings)."""
    x = np.asarray(x, dtype=np.float32)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(np.float32, copy=False)


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    """``[n]`` fractions -> ``[n, 4]`` float64 weights of taps ``-1, 0, 1, 2``."""
    a, t = _CUBIC_A, np.asarray(t, np.float64)

    def near(d):  # kernel for |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d):  # kernel for 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


@lru_cache(maxsize=32)
def _interp_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` float32 matrix of 1-D bicubic interpolation, ``align_corners=True``.

    Source coordinates ``dst * (n_in - 1) / (n_out - 1)`` are float32 as in torch; the weights are
    evaluated in float64 at them and rounded once. Taps outside ``[0, n_in - 1]`` are clamped to
    the border (their weights add up there).
    """
    scale = np.float32(n_in - 1) / np.float32(n_out - 1) if n_out > 1 else np.float32(0)
    src = np.arange(n_out, dtype=np.float32) * scale
    base = np.floor(src)
    weights = _cubic_weights(src - base)
    taps = np.clip(base.astype(np.int64)[:, None] + np.arange(-1, 3), 0, n_in - 1)
    matrix = np.zeros((n_out, n_in), np.float64)
    np.add.at(matrix, (np.repeat(np.arange(n_out), 4), taps.ravel()), weights.ravel())
    matrix = matrix.astype(np.float32)
    matrix.flags.writeable = False
    return matrix


def upsample_bicubic_align_corners(x: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """``[..., h, w]`` -> float32 ``[..., H, W]``, as ``F.interpolate(mode='bicubic',
    align_corners=True)``: separable cubic convolution (A = -0.75), two cached matrix products."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim < 2 or 0 in x.shape:
        raise ValueError(f"x must be a non-empty [..., h, w] array, got shape {x.shape}")
    out_h, out_w = _size_hw(size, "size")
    rows = _interp_matrix(x.shape[-2], out_h)
    cols = _interp_matrix(x.shape[-1], out_w)
    return rows @ (x @ cols.T)


def logits_to_prob(logits: np.ndarray, input_size: int | tuple[int, int]) -> np.ndarray:
    """Logits ``[h, w]``, ``[1, h, w]`` or ``[1, 1, h, w]`` (any float dtype) -> float32 ``[H, W]``
    probabilities at the input size (sigmoid, then bicubic ``align_corners=True`` upsampling)."""
    logits = np.asarray(logits)
    if not 2 <= logits.ndim <= 4 or any(d != 1 for d in logits.shape[:-2]):
        raise ValueError(f"logits must be [h, w], [1, h, w] or [1, 1, h, w], got {logits.shape}")
    return upsample_bicubic_align_corners(sigmoid(logits.reshape(logits.shape[-2:])), input_size)


def prob_to_frame(
    prob: np.ndarray, inverse: np.ndarray, frame_hw: tuple[int, int]
) -> np.ndarray:
    """Input-size probabilities ``[H, W]`` -> float32 ``[frame_h, frame_w]`` through the ``[2, 3]``
    inverse letterbox matrix (``cv2.INTER_CUBIC``, border 0, as the official code)."""
    prob = np.asarray(prob, dtype=np.float32)
    if prob.ndim != 2:
        raise ValueError(f"prob must be [H, W], got shape {prob.shape}")
    frame_h, frame_w = _size_hw(frame_hw, "frame_hw")
    return cv2.warpAffine(
        prob, np.asarray(inverse, np.float64), (frame_w, frame_h),
        flags=cv2.INTER_CUBIC, borderValue=0.0,
    )


def prob_to_mask(prob_frame: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """Probabilities (any shape) -> uint8 mask of the same shape, 1 where ``prob > threshold``."""
    return (np.asarray(prob_frame, dtype=np.float32) > float(threshold)).view(np.uint8)


def mask_score(mask: np.ndarray, prob_frame: np.ndarray) -> float:
    """The mean probability inside ``mask`` (probabilities clipped to [0, 1], as
    `SegmentationResult.prob`), in [0, 1]; 0.0 for an empty mask."""
    inside = np.asarray(prob_frame, dtype=np.float32)[np.asarray(mask).astype(bool, copy=False)]
    if inside.size == 0:
        return 0.0
    return float(np.clip(inside, 0.0, 1.0).mean(dtype=np.float64))


def logits_to_mask(
    logits: np.ndarray,
    inverse: np.ndarray,
    frame_hw: tuple[int, int],
    input_size: int | tuple[int, int],
    threshold: float = THRESHOLD,
) -> np.ndarray:
    """Network logits (see :func:`logits_to_prob`) -> uint8 ``[frame_h, frame_w]`` mask in {0, 1}."""
    prob = logits_to_prob(logits, input_size)
    return prob_to_mask(prob_to_frame(prob, inverse, frame_hw), threshold)


def postprocess(logits: np.ndarray, letterbox: Letterbox, threshold: float = THRESHOLD) -> np.ndarray:
    """:func:`logits_to_mask` with the inverse matrix and sizes taken from a :class:`Letterbox`."""
    return logits_to_mask(
        logits, letterbox.inverse, letterbox.frame_size, letterbox.input_size, threshold
    )


def mask_overlap(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """``(intersection, union)`` pixel counts of two same-shape masks (non-zero = inside)."""
    a, b = np.asarray(a) != 0, np.asarray(b) != 0
    if a.shape != b.shape:
        raise ValueError(f"masks must have the same shape, got {a.shape} and {b.shape}")
    return int(np.count_nonzero(a & b)), int(np.count_nonzero(a | b))


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two same-shape masks (non-zero = inside).

    Two empty masks give 1.0 (they agree). Exact ratio, without the official code's ``+ 1e-6``.
    """
    inter, union = mask_overlap(a, b)
    return 1.0 if union == 0 else inter / union
