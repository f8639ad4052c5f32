"""What `Segmenter.run` returns: one `SegmentationResult` per (frame, prompt)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

#: Keys of ``SegmentationResult.timings``, in pipeline order (milliseconds).
STAGES = ("preprocess", "text", "visual", "head", "postprocess")
#: The same for a zero-shot bundle.
ZEROSHOT_STAGES = ("preprocess", "text", "global", "local", "score")


@dataclass(frozen=True, eq=False)
class SegmentationResult:
    """The segmentation of one frame for one prompt.

    Attributes:
        text: the prompt, as given.
        mask: uint8 ``[H, W]`` in {0, 1} at the frame's height and width (1 = the referred object).
        prob: float32 ``[H, W]`` probabilities at the frame's size, in [0, 1] (the bicubic
            resampling's overshoot is clipped; ``mask = prob > threshold`` either way), or None
            unless ``return_prob=True`` was asked for.
        timings: milliseconds per stage (`STAGES`) and ``"total"``, of the whole call that made
            this result: every result of a multi-prompt `run` or a `run_batch` carries the same
            dict (the visual graph ran once for all of them). ``"text"`` is near zero when the
            prompt's features came from the cache. GPU stages are measured with CUDA events.
        score: the mean probability inside the mask, in [0, 1] (of the clipped probabilities,
            computed whether or not ``prob`` was asked for); 0.0 for an empty mask. A low score
            says the model is unsure the prompt's object is there at all: threshold it to drop
            such results. Zero-shot bundles: the chosen proposal's softmax share of ``scores``.
        index: zero-shot bundles: the chosen proposal's index (-1 when there were none); else None.
        scores: zero-shot bundles: float32 ``[N]``, every proposal's score (the bundle's scoring
            rule); else None. Their ``timings`` stages are `ZEROSHOT_STAGES`.
    """

    text: str
    mask: np.ndarray
    prob: Optional[np.ndarray] = None
    timings: dict[str, float] = field(default_factory=dict)
    score: float = 0.0
    index: Optional[int] = None
    scores: Optional[np.ndarray] = None
