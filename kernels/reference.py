"""Reference results of the fused kernels, for their tests: the official CRIS steps, batched.

Everything here is :mod:`cris_edge.runtime.postprocess`, the numpy + OpenCV reproduction of the
official post-processing, from the similarity (the per-sample convolution, in float64) on.
(The Preprocess kernel's reference is :func:`cris_edge.runtime.preprocess.preprocess` itself.)
Only tests and benchmarks import this module. No torch.
"""

from __future__ import annotations

import numpy as np

from cris_edge.constants import THRESHOLD
from cris_edge.runtime import postprocess
from cris_edge.runtime.postprocess import similarity_logits


def sim_upsample(z_v, kernel, bias, input_size: int | tuple[int, int], inverse=None, frame_hw=None,
                 mask: bool = False, threshold: float = THRESHOLD) -> np.ndarray:
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

