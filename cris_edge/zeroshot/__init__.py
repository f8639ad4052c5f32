"""Zero-shot referring segmentation: the Global-Local CLIP method in PyTorch (docs/zeroshot.md).

    from cris_edge.zeroshot import GlobalLocal, load_clip
    method = GlobalLocal(load_clip("ViT-B-32.pt"), alpha=0.95, beta=0.5)
    result = method.run(frame_bgr, "the man in the red shirt", masks)   # bool [N, H, W] proposals
    result.index, result.mask, result.scores

This package is model code (torch). What a zero-shot bundle's torch-free runtime shares with it
lives in the core: noun phrases (`cris_edge.phrases`) and proposal formats
(`cris_edge.runtime.proposals`, `cris_edge.runtime.rle`).
"""

from ..phrases import DEFAULT_PIPELINE, ParsedText, noun_phrase, parse_text
from .clip_loading import ClipUnavailableError, load_clip
from .method import GlobalLocal, ZeroShotResult

__all__ = ["ClipUnavailableError", "DEFAULT_PIPELINE", "GlobalLocal", "ParsedText", "ZeroShotResult", "load_clip",
           "noun_phrase", "parse_text"]
