"""Zero-shot referring segmentation: the Global-Local CLIP method in PyTorch (docs/zeroshot.md).

    from cris_edge.zeroshot import GlobalLocal, load_clip
    method = GlobalLocal(load_clip("ViT-B-32.pt"), alpha=0.95, beta=0.5)
    result = method.run(frame_bgr, "the man in the red shirt", masks)   # bool [N, H, W] proposals
    result.index, result.mask, result.scores

The names load lazily: the torch-free modules (`phrases`, the proposal formats) are imported by
the runtime of a zero-shot bundle, which never imports torch (docs/design.md).
"""

import importlib

_NAMES = {"ClipUnavailableError": "clip_loading", "load_clip": "clip_loading", "GlobalLocal": "method",
          "ZeroShotResult": "method", "DEFAULT_PIPELINE": "phrases", "ParsedText": "phrases",
          "noun_phrase": "phrases", "parse_text": "phrases"}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
