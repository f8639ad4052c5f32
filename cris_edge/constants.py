"""Numbers that define the models cris-edge runs, written once. Imports nothing."""

from __future__ import annotations

#: Mask threshold on the sigmoid probability (the official CRIS inference and evaluation).
THRESHOLD = 0.35

#: CLIP's image normalisation, RGB, on the [0, 1] scale.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: The ids of CLIP's start- and end-of-text tokens.
SOT_ID, EOT_ID = 49406, 49407
#: CLIP's text context: the most tokens (SOT and EOT included) its positional embedding covers.
CLIP_CONTEXT = 77

#: ImageNet's image normalisation, RGB, on the [0, 1] scale: what the official zero-shot
#: Global-Local CLIP code feeds CLIP (not CLIP's own mean/std).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
