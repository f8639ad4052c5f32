"""Random-weight CLIPs in OpenAI's key layout for the zero-shot tests: tiny ResNet and ViT CLIPs,
and the full-size RN50 and ViT-B/32 architectures (slow parity cases).

Deterministic: every tensor comes from `parity_weights` (seeded by its key and the case's seed),
so the weights fed to the official code by ``tests/reference/zeroshot_official.py`` are the ones
the tests rebuild.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from parity_weights import _draw  # noqa: E402

from cris_edge.model._torchvision_compat import import_open_clip  # noqa: E402

_TEXT = dict(context_length=77, vocab_size=49408, width=64, heads=1, layers=2)
_FULL_TEXT = dict(context_length=77, vocab_size=49408, width=512, heads=8, layers=12)


@dataclass(frozen=True)
class ClipCase:
    """A CLIP architecture (open_clip vision/text configs; heads = width // 64 as CLIP's
    build_model infers them, ResNet: width * 32 // 64) and the seed of its weights."""

    name: str
    backbone: str  # "resnet" or "vit"
    vision: dict
    text: dict
    embed_dim: int
    seed: int
    full_size: bool = False


CASES = (
    ClipCase("resnet", "resnet", dict(image_size=224, layers=(1, 1, 1, 1), width=8), _TEXT, 32, seed=17),
    ClipCase("vit", "vit", dict(image_size=224, layers=4, width=64, patch_size=32), _TEXT, 32, seed=23),
    ClipCase("rn50", "resnet", dict(image_size=224, layers=(3, 4, 6, 3), width=64), _FULL_TEXT, 1024, seed=29,
             full_size=True),
    ClipCase("vit_b32", "vit", dict(image_size=224, layers=12, width=768, patch_size=32), _FULL_TEXT, 512,
             seed=31, full_size=True),
)
BY_NAME = {case.name: case for case in CASES}


def clip_state(name: str) -> dict:
    """OpenAI-layout float32 state dict of the case ``name`` (`CASES`)."""
    case = BY_NAME[name]
    open_clip = import_open_clip()
    model = open_clip.model.CLIP(case.embed_dim, vision_cfg=open_clip.model.CLIPVisionCfg(**case.vision),
                                 text_cfg=open_clip.model.CLIPTextCfg(**case.text), quick_gelu=True)
    return {k: _draw(k, tuple(v.shape), case.seed) for k, v in model.state_dict().items()}


def tiny_clip_state(kind: str) -> dict:
    """The tiny ``kind`` ("resnet" or "vit") CLIP's state dict."""
    return clip_state(kind)
