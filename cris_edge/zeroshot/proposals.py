"""Mask proposals for the zero-shot method from segment-anything (SAM), the class-agnostic
segmenter used on real photographs. The formats, `as_masks` and the built-in generator of the
synthetic scenes live in `cris_edge.runtime.proposals` (no torch); this module adds the one
generator that needs torch.

    proposals = SamProposals.from_checkpoint("sam_vit_h_4b8939.pth", "vit_h", points_per_side=16)
    masks = proposals(frame_bgr)                    # bool [N, H, W]
    result = GlobalLocal(load_clip("ViT-B-32.pt")).run(frame_bgr, "the dog on the left", masks)
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from ..model._torchvision_compat import import_torchvision_user
from ..runtime.preprocess import to_rgb
from ..runtime.proposals import ProposalGenerator, as_masks

__all__ = ["ProposalGenerator", "SamProposals", "as_masks"]

_INSTALL = "SamProposals needs segment-anything: pip install -c constraints.txt 'cris-edge[zeroshot]'"


def import_segment_anything():
    """The ``segment_anything`` module (through the torchvision workaround of `cris_edge.model`)."""
    return import_torchvision_user("segment_anything", _INSTALL)


class SamProposals:
    """A `ProposalGenerator` over segment-anything's ``SamAutomaticMaskGenerator``: the frame
    (uint8 BGR) is given to SAM as RGB; each mask SAM keeps is a proposal, in SAM's order;
    masks with no pixel are dropped. SAM's own ``bbox`` (XYWH) is not used.
    """

    def __init__(self, generator):
        if getattr(generator, "output_mode", "binary_mask") != "binary_mask":
            raise ValueError(f"SamProposals needs a generator with output_mode='binary_mask', got "
                             f"{generator.output_mode!r}")
        self.generator = generator

    @classmethod
    def from_checkpoint(cls, checkpoint: Union[str, Path], model_type: str = "vit_h",
                        device: Optional[str] = None, **options) -> "SamProposals":
        """SAM ``model_type`` (``vit_h``, ``vit_l``, ``vit_b``) with the weights of ``checkpoint``
        (a state dict, read with ``weights_only``), on ``device`` (default: CUDA when available);
        ``options`` go to ``SamAutomaticMaskGenerator`` (``points_per_side``, ``pred_iou_thresh`` ...)."""
        sam_module = import_segment_anything()
        if model_type not in sam_module.sam_model_registry:
            raise ValueError(f"unknown SAM model type {model_type!r}; expected one of "
                             f"{', '.join(sorted(sam_module.sam_model_registry))}")
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"SAM checkpoint not found: {path}")
        sam = sam_module.sam_model_registry[model_type]()
        state = torch.load(path, map_location="cpu", weights_only=True)
        try:
            sam.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"{path} does not hold SAM {model_type} weights: {str(err).splitlines()[0][:200]}") from None
        sam.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()
        return cls(sam_module.SamAutomaticMaskGenerator(sam, **options))

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """uint8 BGR ``[H, W, 3]`` -> bool ``[N, H, W]`` (N may be 0)."""
        rgb = np.ascontiguousarray(to_rgb(frame, "bgr"))
        with torch.inference_mode():
            records = self.generator.generate(rgb)
        masks = [np.asarray(r["segmentation"], bool) for r in records]
        return as_masks([m for m in masks if m.any()], *rgb.shape[:2])
