"""Small random-weight CLIPs (ResNet and ViT) in OpenAI's key layout, for the zero-shot tests.

Deterministic: every tensor comes from `parity_weights` (seeded by its key), so the weights fed
to the official code by ``tests/reference/zeroshot_official.py`` are the ones the tests rebuild.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from parity_weights import _draw  # noqa: E402

from cris_edge.model._torchvision_compat import import_open_clip  # noqa: E402

#: Architectures: heads = width // 64 as CLIP's build_model infers (ResNet: width * 32 // 64).
TEXT = dict(context_length=77, vocab_size=49408, width=64, heads=1, layers=2)
VISION = {
    "resnet": dict(image_size=224, layers=(1, 1, 1, 1), width=8),
    "vit": dict(image_size=224, layers=4, width=64, patch_size=32),
}
EMBED_DIM = 32
SEEDS = {"resnet": 17, "vit": 23}


def tiny_clip_state(kind: str, seed: int | None = None) -> dict:
    """OpenAI-layout float32 state dict of a tiny ``kind`` ("resnet" or "vit") CLIP."""
    open_clip = import_open_clip()
    model = open_clip.model.CLIP(EMBED_DIM, vision_cfg=open_clip.model.CLIPVisionCfg(**VISION[kind]),
                                 text_cfg=open_clip.model.CLIPTextCfg(**TEXT), quick_gelu=True)
    seed = SEEDS[kind] if seed is None else seed
    return {k: _draw(k, tuple(v.shape), seed) for k, v in model.state_dict().items()
            if k != "attn_mask"}
