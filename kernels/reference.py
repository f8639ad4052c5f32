"""Reference results of the fused kernels: the official CRIS steps, batched.

The similarity (the model's per-sample 3x3 convolution) is computed here in float64; everything
after it is :mod:`cris_edge.runtime.postprocess`, the numpy + OpenCV reproduction of the official
post-processing. (The Preprocess kernel's reference is :func:`cris_edge.runtime.preprocess.
preprocess` itself.) No torch.
"""

from __future__ import annotations

import numpy as np

from cris_edge.runtime import postprocess


def similarity_logits(z_v, kernel, bias) -> np.ndarray:
    """``z_v [B, C, h, w]``, ``kernel [B, C, 3, 3]``, ``bias [B]`` -> float32 logits
    ``[B, 1, h, w]``: each sample's 3x3 correlation with its own kernel, zero padding (the official
    grouped ``F.conv2d``), accumulated in float64."""
    z = np.asarray(z_v, dtype=np.float64)
    k = np.asarray(kernel, dtype=np.float64)
    batch, _, h, w = z.shape
    padded = np.pad(z, ((0, 0), (0, 0), (1, 1), (1, 1)))
    logits = np.zeros((batch, h, w))
    for dy in range(3):
        for dx in range(3):
            logits += np.einsum("bchw,bc->bhw", padded[:, :, dy:dy + h, dx:dx + w], k[:, :, dy, dx])
    logits += np.asarray(bias, dtype=np.float64).reshape(batch, 1, 1)
    return logits.astype(np.float32)[:, None]


def sim_upsample(z_v, kernel, bias, input_size: int | tuple[int, int], inverse=None, frame_hw=None,
                 mask: bool = False, threshold: float = 0.35) -> np.ndarray:
    """What the SimUpsample kernel computes, the official way.

    Without ``inverse``: ``[B, 1, H, W]`` float32 probabilities at the input size (``S`` or
    ``(H, W)``). With ``inverse`` (``[B, 2, 3]`` or one ``[2, 3]``: input -> frame,
    ``Letterbox.inverse``) and ``frame_hw``: ``[B, 1, frame_h, frame_w]`` probabilities warped to
    the frame. ``mask`` thresholds them (uint8 {0, 1}).
    """
    logits = similarity_logits(z_v, kernel, bias)
    outs = []
    for b, logit in enumerate(logits):
        prob = postprocess.logits_to_prob(logit, input_size)
        if inverse is not None:
            inv = np.asarray(inverse, dtype=np.float64)
            prob = postprocess.prob_to_frame(prob, inv[b] if inv.ndim == 3 else inv, frame_hw)
        outs.append(postprocess.prob_to_mask(prob, threshold) if mask else prob)
    return np.stack(outs)[:, None]

