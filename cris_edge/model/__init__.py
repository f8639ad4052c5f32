"""The CRIS model in PyTorch, built on open_clip's CLIP modules.

    from cris_edge.model import build_cris, load_cris
    model = load_cris("exp/best.pth")                  # official, ours, or a bare state dict
    logits = model(image, tokens)                      # [B, 1, S/4, S/4]
"""

from .build import build_cris, infer_config, load_cris
from .checkpoint import CheckpointError, load_clip_weights, save_checkpoint
from .config import CRISConfig, available_configs, resolve_config
from .cris import CRIS

__all__ = ["CRIS", "CRISConfig", "CheckpointError", "available_configs", "build_cris", "infer_config", "load_clip_weights",
           "load_cris", "resolve_config", "save_checkpoint"]
